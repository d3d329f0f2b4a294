//! A session's inbox: one "dirty" bit per subscription slot, set by the hub when
//! that symbol changed, plus the wake-up. Bounded by construction: a symbol is
//! marked at most once until the session takes the mark, however many quotes
//! arrive meanwhile.
//!
//! Marking is one atomic `or` on a word the session owns (none at all while the
//! symbol is still marked), and the session takes up to 64 marks with one atomic
//! `and`: no lock, no list. Only the first mark after the session last looked
//! wakes it: its own task, or, once the inbox is routed to a worker's
//! [`Doorbell`], that worker's delivery loop (with the session's token).

use std::future::Future;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::doorbell::{Doorbell, Rings};

/// Dirty marks of one session's subscription slots and the notifier that wakes it.
pub struct Inbox {
    /// Slots 0..64: inline, so the hub reaches a mark with one pointer hop.
    first: AtomicU64,
    /// Slots from 64 on: `more_words` words, allocated when a slot past 64
    /// is first used (most sessions never do; an idle connection saves them).
    /// Boxed twice: a thin pointer keeps the inbox in 80 bytes (jemalloc's
    /// 96-byte class with the `Arc`'s counts, instead of 112).
    more: OnceLock<Box<Box<[AtomicU64]>>>,
    more_words: u32,
    /// Set by the first mark after the session last took its marks.
    signalled: AtomicBool,
    /// Set when a subscribed symbol's status changed (section 10): the session
    /// then compares each symbol's status with what it told the client.
    status: AtomicBool,
    /// The session's task, woken by the first mark (one consumer: no lock and
    /// no waiter list, unlike a `Notify`).
    waker: AtomicWaker,
    /// Where news goes instead, once set: a worker's doorbell and the
    /// session's token there.
    route: OnceLock<(Arc<Doorbell>, u32)>,
}

impl Inbox {
    /// An inbox for subscription slots `0..slots` (rounded up to a multiple of 64).
    pub fn new(slots: usize) -> Inbox {
        Inbox {
            first: AtomicU64::new(0),
            more: OnceLock::new(),
            more_words: u32::try_from(slots.div_ceil(64).saturating_sub(1)).unwrap_or(u32::MAX),
            signalled: AtomicBool::new(false),
            status: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            route: OnceLock::new(),
        }
    }

    /// From now on news rings `bell` with `token` instead of waking the
    /// session's task (set once; false if it was set already).
    pub fn route(&self, bell: Arc<Doorbell>, token: u32) -> bool {
        self.route.set((bell, token)).is_ok()
    }

    /// How many slots the inbox has.
    pub fn slots(&self) -> usize {
        (1 + self.more_words as usize) * 64
    }

    /// The words of slots 64 and on, allocated on first use.
    fn more(&self) -> &[AtomicU64] {
        self.more
            .get_or_init(|| Box::new((0..self.more_words).map(|_| AtomicU64::new(0)).collect()))
    }

    /// Marks a slot dirty and, if it is the first mark since the session last
    /// looked, wakes it (or adds its token to `rings`). The hub calls it after
    /// storing the quote and a SeqCst fence (which pairs with the one in
    /// [`Inbox::take`]).
    pub(super) fn mark(&self, slot: u32, rings: &mut Rings) {
        let (word, bit) = self.locate(slot);
        // Read before writing: a symbol still marked (the usual case under load,
        // and a throttled one) costs a shared read, not a cache-line transfer.
        if word.load(Ordering::Relaxed) & bit != 0
            || word.fetch_or(bit, Ordering::SeqCst) & bit != 0
        {
            return;
        }
        // SeqCst with the store in `take`: either this load sees the session's
        // "not signalled" or the session's `take` sees this mark.
        if !self.signalled.load(Ordering::SeqCst) && !self.signalled.swap(true, Ordering::SeqCst) {
            match self.route.get() {
                Some((bell, token)) => rings.add(bell, *token),
                None => self.waker.wake(),
            }
        }
    }

    /// Takes the marks: every set bit not in `keep` (one word per 64 slots; marks
    /// the session leaves set, such as throttled symbols, which then neither wake
    /// it nor get marked again) is cleared and its slot passed to `f`. Read the
    /// symbols' quotes only after this returns.
    pub fn take(&self, keep: &[u64], mut f: impl FnMut(u32)) {
        self.signalled.store(false, Ordering::SeqCst);
        let more = self.more.get().map_or(&[][..], |m| &m[..]);
        for (i, word) in std::iter::once(&self.first).chain(more).enumerate() {
            let keep = keep.get(i).copied().unwrap_or(0);
            if word.load(Ordering::SeqCst) & !keep == 0 {
                continue;
            }
            let mut taken = word.fetch_and(keep, Ordering::SeqCst) & !keep;
            while taken != 0 {
                f(i as u32 * 64 + taken.trailing_zeros());
                taken &= taken - 1;
            }
        }
        // Pairs with the fence in `Hub::ingest_fields` (a store then a load on
        // each side: only sequentially consistent fences keep both from reading
        // stale values and losing an update).
        fence(Ordering::SeqCst);
    }

    /// A subscribed symbol's status changed: wakes the session (throttled
    /// symbols included: a status is never held back).
    pub(super) fn status_changed(&self) {
        self.status.store(true, Ordering::SeqCst);
        if !self.signalled.swap(true, Ordering::SeqCst) {
            match self.route.get() {
                Some((bell, token)) => bell.ring(&[*token]),
                None => self.waker.wake(),
            }
        }
    }

    /// True (once) when a status changed since the last call. Call it after
    /// [`Inbox::take`], so that a status set before a quote was stored is seen
    /// with that quote's mark.
    pub fn take_status(&self) -> bool {
        self.status.load(Ordering::SeqCst) && self.status.swap(false, Ordering::SeqCst)
    }

    /// Sets a slot's mark again without waking anyone (the session keeps it).
    pub fn remark(&self, slot: u32) {
        let (word, bit) = self.locate(slot);
        word.fetch_or(bit, Ordering::SeqCst);
    }

    /// Clears a slot's mark (the slot is being given up).
    pub fn unmark(&self, slot: u32) {
        let (word, bit) = self.locate(slot);
        word.fetch_and(!bit, Ordering::SeqCst);
    }

    /// True when something was marked since the session last took its marks.
    pub fn has_dirty(&self) -> bool {
        self.signalled.load(Ordering::Relaxed)
    }

    /// Resolves once something is marked (at once if something is): for the
    /// session's one task (while the inbox is not routed to a doorbell).
    pub fn notified(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_notified(cx))
    }

    /// [`Inbox::notified`] as a poll: ready once something is marked,
    /// otherwise `cx` is woken by the next mark.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.signalled.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        // Registered before looking again: a mark in between either is
        // seen here or wakes the waker just registered.
        self.waker.register(cx.waker());
        if self.signalled.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn locate(&self, slot: u32) -> (&AtomicU64, u64) {
        let word = match slot / 64 {
            0 => &self.first,
            w => &self.more()[w as usize - 1],
        };
        (word, 1 << (slot % 64))
    }
}

/// One (session, symbol) subscription as the hub sees it, stored inline in
/// the symbol's subscriber list: whose inbox, which slot, in 8 bytes (a
/// symbol's list holds one per subscribing session, the largest part of the
/// hub an idle connection costs). The inbox's pointer (from [`Arc::into_raw`],
/// holding one reference) keeps the slot in the bits no inbox address uses:
/// the 3 below its 8-byte alignment and the 16 above the 48 bits of a
/// user-space address on the 64-bit targets Linux runs (a process gets
/// addresses beyond 2^47 only by asking `mmap` for them; the allocator does
/// not). So a slot is below [`MAX_SLOTS`], which `session.max_symbols` is
/// checked against.
pub(super) struct Subscriber(u64);

/// Address bits a user-space pointer uses.
const ADDR_BITS: u32 = 48;
/// The low bits an inbox's alignment leaves zero.
const LOW_BITS: u32 = 3;
const LOW_MASK: u64 = (1 << LOW_BITS) - 1;
const ADDR_MASK: u64 = ((1 << ADDR_BITS) - 1) & !LOW_MASK;

/// Inbox slots a [`Subscriber`] can name: 2^19.
pub const MAX_SLOTS: usize = 1 << (64 - ADDR_BITS + LOW_BITS);

const _: () = assert!(std::mem::align_of::<Inbox>() >= 1 << LOW_BITS);
const _: () = assert!(usize::BITS == 64, "Subscriber packs a 64-bit pointer");

impl Subscriber {
    /// `inbox`'s `slot`; takes a reference to the inbox.
    pub fn new(inbox: &Arc<Inbox>, slot: u32) -> Subscriber {
        let addr = Arc::into_raw(inbox.clone()) as u64;
        let slot = u64::from(slot);
        // Both hold by construction (the two constant checks above, the
        // settings' bound on slots); a violation would name another inbox.
        assert!(addr & !ADDR_MASK == 0, "an inbox address beyond 48 bits");
        assert!(slot < MAX_SLOTS as u64, "an inbox slot beyond MAX_SLOTS");
        Subscriber(addr | (slot & LOW_MASK) | (slot >> LOW_BITS) << ADDR_BITS)
    }

    pub fn inbox(&self) -> &Inbox {
        // SAFETY: the address came from `Arc::into_raw` in `new`, and the
        // reference it holds is given back only in `drop`.
        unsafe { &*((self.0 & ADDR_MASK) as *const Inbox) }
    }

    pub fn slot(&self) -> u32 {
        // At most 19 bits: fits.
        ((self.0 & LOW_MASK) | (self.0 >> ADDR_BITS) << LOW_BITS) as u32
    }

    /// Whether this is `inbox`'s `slot`.
    pub fn is(&self, inbox: &Arc<Inbox>, slot: u32) -> bool {
        std::ptr::eq(self.inbox(), Arc::as_ptr(inbox)) && self.slot() == slot
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // SAFETY: as in `inbox`; this gives back the reference `new` took.
        drop(unsafe { Arc::from_raw((self.0 & ADDR_MASK) as *const Inbox) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(inbox: &Inbox, keep: &[u64]) -> Vec<u32> {
        let mut out = Vec::new();
        inbox.take(keep, |s| out.push(s));
        out
    }

    #[test]
    fn marks_are_taken_once_and_kept_marks_stay_set_and_silent() {
        let inbox = Inbox::new(130);
        assert_eq!(inbox.slots(), 192);
        let mut rings = Rings::default();
        for slot in [3, 64, 129, 3] {
            inbox.mark(slot, &mut rings);
        }
        assert!(inbox.has_dirty());
        assert_eq!(taken(&inbox, &[]), [3, 64, 129]);
        assert!(!inbox.has_dirty());
        assert!(taken(&inbox, &[]).is_empty());

        // Slot 5 is kept (throttled): marking it again signals nothing.
        inbox.remark(5);
        inbox.mark(5, &mut rings);
        assert!(!inbox.has_dirty());
        inbox.mark(6, &mut rings);
        assert_eq!(taken(&inbox, &[1 << 5]), [6], "5 stays set");
        assert_eq!(taken(&inbox, &[]), [5], "released");
        inbox.remark(7);
        inbox.unmark(7);
        assert!(taken(&inbox, &[]).is_empty());
    }

    #[test]
    fn a_subscriber_is_8_bytes_and_names_its_inbox_and_slot() {
        assert_eq!(std::mem::size_of::<Subscriber>(), 8);
        // With the `Arc`'s two counts, jemalloc's 96-byte class.
        assert_eq!(std::mem::size_of::<Inbox>(), 80);
        let inbox = Arc::new(Inbox::new(MAX_SLOTS));
        let other = Arc::new(Inbox::new(64));
        let slots = [0, 1, 7, 8, 63, 64, 65_535, 65_536, MAX_SLOTS as u32 - 1];
        let subs: Vec<_> = slots.iter().map(|&s| Subscriber::new(&inbox, s)).collect();
        assert_eq!(Arc::strong_count(&inbox), 1 + slots.len());
        for (sub, &slot) in subs.iter().zip(&slots) {
            assert_eq!(sub.slot(), slot);
            assert!(std::ptr::eq(sub.inbox(), &*inbox));
            assert!(sub.is(&inbox, slot));
            assert!(!sub.is(&other, slot));
        }
        drop(subs);
        assert_eq!(Arc::strong_count(&inbox), 1, "each reference given back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mark_from_another_thread_wakes_the_waiting_session_once_until_taken() {
        let inbox = Arc::new(Inbox::new(64));
        for round in 0..200u32 {
            let waiting = tokio::spawn({
                let inbox = inbox.clone();
                async move { inbox.notified().await }
            });
            let slot = round % 64;
            std::thread::spawn({
                let inbox = inbox.clone();
                move || inbox.mark(slot, &mut Rings::default())
            })
            .join()
            .unwrap();
            // A lost wake-up hangs here.
            tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
                .await
                .expect("woken")
                .unwrap();
            // Still marked: waiting again returns at once, until the marks are taken.
            inbox.notified().await;
            assert_eq!(taken(&inbox, &[]), [slot]);
            assert!(!inbox.has_dirty());
        }
    }
}
