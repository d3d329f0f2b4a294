//! A session's subscriptions: per symbol its granted rate, throttle clock and
//! last state sent, stored by inbox slot (the inbox names changed symbols by
//! slot, so a delivered update finds its subscription without a search).
//! Client ops find a symbol by a scan (at most `max_symbols` entries, for ops
//! the message rate limit keeps rare) rather than through an index every
//! connection would carry.
//!
//! The vector is trimmed after each change, so it costs exactly its entries:
//! 32 bytes a symbol (640 bytes for 20, jemalloc's size class) instead of the
//! 2.3 KiB a hash map's spare buckets take. Idle connections are mostly this.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::hub::{SymbolId, Told, HISTORY};
use crate::quote::Quote;

/// One subscribed symbol of one session: 32 bytes (20 of them fit
/// jemalloc's 640-byte size class); its inbox slot is where it is stored.
pub(super) struct Subscription {
    pub sym: SymbolId,
    /// The granted `max_rate` (see [`granted_rate`]).
    rate: f32,
    /// The state this client last received (deltas are computed against it).
    pub sent: Option<Arc<Quote>>,
    /// When the last message of the symbol went to the client.
    last_sent: Stamp,
    /// The symbol's status as this client was last told it (section 10).
    pub told: Told,
    /// How many messages of the symbol the last send carried (see
    /// [`Subscription::budget`]).
    burst: u8,
}

/// A granted `max_rate` as the session keeps it: the nearest single-precision
/// value, written back with the fewest digits that name it (2.5 stays 2.5, 0.1
/// stays 0.1; 2.345678901234 becomes 2.3456788), so `subscribed` and
/// `subscriptions` tell the client the same rate the throttle uses.
pub(super) fn granted_rate(rate: f64) -> f64 {
    as_told(rate as f32)
}

fn as_told(rate: f32) -> f64 {
    // An f32's shortest decimal form always parses as an f64.
    rate.to_string().parse().unwrap_or(f64::from(rate))
}

/// The longest a burst of one symbol's updates may hold back its next message
/// beyond the throttle's spacing (section 5.4 allows 250 ms).
const BURST_SPAN_US: u64 = 100_000;

impl Subscription {
    pub fn new(sym: SymbolId, rate: f64, told: Told) -> Self {
        let mut sub = Subscription {
            sym,
            rate: 0.0,
            sent: None,
            last_sent: Stamp::NONE,
            told,
            burst: 1,
        };
        sub.set_rate(rate);
        sub
    }

    pub fn set_rate(&mut self, rate: f64) {
        self.rate = rate as f32;
    }

    /// The granted `max_rate`, as the client is told it.
    pub fn rate(&self) -> f64 {
        as_told(self.rate)
    }

    /// The earliest moment the throttle lets this symbol out again: one
    /// spacing after the last send for each message that send carried.
    pub fn next_allowed(&self) -> Option<Instant> {
        self.last_sent
            .get()
            .map(|t| t + Duration::from_micros(self.spacing_us() * u64::from(self.burst)))
    }

    /// `1 / rate` in microseconds (the throttle's spacing). Rates are
    /// clamped to positive bounds by the settings; saturate anyway.
    fn spacing_us(&self) -> u64 {
        (1e6 / f64::from(self.rate)).min(f64::from(u32::MAX)) as u64
    }

    /// How many messages of this symbol may go out together now (at least one
    /// once [`Subscription::next_allowed`] has passed). A send of `k` after a
    /// send of `j` needs `k + j - 1` spacings between them, which keeps any
    /// second at `ceil(rate) + 1` messages (section 5.3) however the bursts
    /// fall; a burst never holds back the next message more than
    /// [`BURST_SPAN_US`] beyond one spacing (section 5.4), so rates below 10
    /// never burst; and never more than the hub keeps.
    pub fn budget(&self, now: Instant) -> usize {
        let Some(last) = self.last_sent.get() else {
            return 1;
        };
        let spacing = self.spacing_us().max(1);
        let elapsed = now.saturating_duration_since(last).as_micros() as u64;
        let earned = (elapsed / spacing + 1).saturating_sub(u64::from(self.burst));
        let span = 1 + BURST_SPAN_US / spacing;
        earned.min(span).clamp(1, HISTORY as u64) as usize
    }

    /// Records a send of `messages` messages of this symbol, now.
    pub fn sent_at(&mut self, now: Instant, messages: usize) {
        self.last_sent = Stamp::at(now);
        self.burst = messages.clamp(1, HISTORY) as u8;
    }

    /// When this symbol is due to be sent again although nothing changed
    /// (`every` after the last send, never sooner than the throttle allows);
    /// `None` before the client has any state of it.
    pub fn refresh_due(&self, every: Duration) -> Option<Instant> {
        self.sent.as_ref()?;
        let spacing = Duration::from_micros(self.spacing_us()).max(every);
        self.last_sent.get().map(|t| t + spacing)
    }
}

/// An instant in 8 bytes, or none: nanoseconds from a process-wide origin
/// (an `Option<Instant>` takes 16, a third of a subscription).
#[derive(Clone, Copy)]
struct Stamp(i64);

static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Stamp {
    const NONE: Stamp = Stamp(i64::MIN);

    fn at(t: Instant) -> Stamp {
        let origin = *ORIGIN;
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match t.checked_duration_since(origin) {
            Some(after) => Stamp(nanos(after)),
            // An instant taken before the origin was (a test's).
            None => Stamp(-nanos(origin.duration_since(t))),
        }
    }

    fn get(self) -> Option<Instant> {
        let origin = *ORIGIN;
        match self.0 {
            i64::MIN => None,
            n if n >= 0 => Some(origin + Duration::from_nanos(n.unsigned_abs())),
            n => Some(origin - Duration::from_nanos(n.unsigned_abs())),
        }
    }
}

/// Subscriptions by inbox slot.
#[derive(Default)]
pub(super) struct Subscriptions {
    /// Indexed by inbox slot; `None` for a free slot.
    by_slot: Vec<Option<Subscription>>,
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.by_slot.iter().flatten().count()
    }

    /// The slot of a symbol's subscription.
    fn find(&self, sym: SymbolId) -> Option<u32> {
        let at = self
            .by_slot
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.sym == sym));
        at.map(|i| i as u32)
    }

    pub fn contains(&self, sym: SymbolId) -> bool {
        self.find(sym).is_some()
    }

    pub fn get_mut(&mut self, sym: SymbolId) -> Option<&mut Subscription> {
        let slot = self.find(sym)?;
        self.at_mut(slot)
    }

    /// Where the subscriptions are kept (for a prefetch).
    pub fn storage(&self) -> (*const Option<Subscription>, usize) {
        (self.by_slot.as_ptr(), self.by_slot.len())
    }

    /// The subscription in an inbox slot.
    pub fn at(&self, slot: u32) -> Option<&Subscription> {
        self.by_slot.get(slot as usize)?.as_ref()
    }

    pub fn at_mut(&mut self, slot: u32) -> Option<&mut Subscription> {
        self.by_slot.get_mut(slot as usize)?.as_mut()
    }

    /// The lowest free inbox slot: where the next subscription goes.
    pub fn free_slot(&self) -> u32 {
        self.by_slot
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.by_slot.len()) as u32
    }

    /// Adds a subscription for a symbol not subscribed yet, in its slot (which
    /// [`Subscriptions::free_slot`] gave).
    pub fn insert(&mut self, slot: u32, sub: Subscription) {
        debug_assert!(self.at(slot).is_none(), "slot {slot} is taken");
        debug_assert!(!self.contains(sub.sym), "symbol {} twice", sub.sym);
        let i = slot as usize;
        if self.by_slot.len() <= i {
            self.by_slot.resize_with(i + 1, || None);
        }
        self.by_slot[i] = Some(sub);
    }

    /// Removes a symbol's subscription; gives back its slot with it.
    pub fn remove(&mut self, sym: SymbolId) -> Option<(u32, Subscription)> {
        let slot = self.find(sym)?;
        Some((slot, self.by_slot.get_mut(slot as usize)?.take()?))
    }

    /// Every subscription, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.by_slot.iter().flatten()
    }

    /// Every subscription, mutable, in slot order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Subscription> {
        self.by_slot.iter_mut().flatten()
    }

    /// Gives back spare capacity after a batch of changes.
    pub fn trim(&mut self) {
        while matches!(self.by_slot.last(), Some(None)) {
            self.by_slot.pop();
        }
        self.by_slot.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(sym: SymbolId, rate: f64) -> Subscription {
        Subscription::new(sym, rate, Default::default())
    }

    fn add(subs: &mut Subscriptions, sym: SymbolId, rate: f64) -> u32 {
        let slot = subs.free_slot();
        subs.insert(slot, sub(sym, rate));
        slot
    }

    #[test]
    fn found_by_symbol_stored_by_slot() {
        let mut subs = Subscriptions::default();
        for sym in [7, 3, 9, 1] {
            add(&mut subs, sym, 2.0);
        }
        assert_eq!(subs.len(), 4);
        assert_eq!(subs.iter().map(|s| s.sym).collect::<Vec<_>>(), [7, 3, 9, 1]);
        assert_eq!(subs.at(1).map(|s| s.sym), Some(3), "slots in arrival order");
        subs.get_mut(3).unwrap().set_rate(5.0);
        assert_eq!(subs.at(1).map(|s| s.rate()), Some(5.0));
        assert!(subs.remove(3).is_some());
        assert!(subs.remove(3).is_none());
        assert!(!subs.contains(3) && subs.contains(9));
        assert_eq!(add(&mut subs, 4, 1.0), 1, "the freed slot is reused");
        assert!(subs.remove(1).is_some());
        subs.trim();
        assert_eq!(subs.by_slot.capacity(), 3, "trailing free slots go");
        assert_eq!(subs.free_slot(), 3);
    }

    /// Send times (one per message) of a symbol whose quotes come in bursts
    /// and pauses, looked at by its worker at every tick but now and then late,
    /// each look taking as many as the budget lets out.
    fn sends(rate: f64, seed: u64) -> Vec<Instant> {
        let mut x = seed;
        let mut random = move || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as f64 / (1u64 << 31) as f64
        };
        let mut s = sub(1, rate);
        let t0 = Instant::now();
        let (mut pending, mut busy, mut out) = (0usize, true, Vec::new());
        let mut late_until = t0;
        for tick in 0..20_000u64 {
            let now = t0 + Duration::from_micros(tick * 500);
            if random() < 0.002 {
                busy = !busy; // a quiet spell or a busy one, about a second each
            }
            if busy && random() < 0.5 {
                pending += 1;
            }
            // A turn every tick, but now and then one comes up to 150 ms late.
            if random() < 0.005 {
                late_until = now + Duration::from_micros((random() * 150_000.0) as u64);
            }
            let looks = now >= late_until;
            if looks && pending > 0 && s.next_allowed().is_none_or(|t| t <= now) {
                let k = s.budget(now).min(pending);
                out.extend(std::iter::repeat_n(now, k));
                s.sent_at(now, k);
                pending = 0;
            }
        }
        out
    }

    #[test]
    fn bursts_keep_every_second_within_the_rate() {
        for rate in [1.0f64, 9.0, 10.0, 50.0, 333.0, 1000.0] {
            let most = rate.ceil() as usize + 1;
            for seed in 1..20 {
                let times = sends(rate, seed);
                for (i, &start) in times.iter().enumerate() {
                    let within = times[i..]
                        .iter()
                        .take_while(|&&t| t < start + Duration::from_secs(1))
                        .count();
                    assert!(within <= most, "{within} > {most} at {rate}/s, seed {seed}");
                }
                if rate < 10.0 {
                    assert!(times.windows(2).all(|w| w[0] != w[1]), "{rate}/s burst");
                } else {
                    assert!(times.windows(2).any(|w| w[0] == w[1]), "{rate}/s: no burst");
                }
            }
        }
    }

    #[test]
    fn a_burst_holds_back_the_next_message_by_its_spacings() {
        let mut s = sub(1, 50.0);
        let t0 = Instant::now();
        assert_eq!(s.budget(t0), 1, "nothing sent yet: a snapshot");
        s.sent_at(t0, 1);
        assert_eq!(s.budget(t0 + Duration::from_millis(20)), 1);
        assert_eq!(s.budget(t0 + Duration::from_millis(60)), 3);
        assert_eq!(
            s.budget(t0 + Duration::from_secs(9)),
            6,
            "at most 100 ms of spacings"
        );
        s.sent_at(t0 + Duration::from_millis(60), 3);
        assert_eq!(s.next_allowed(), Some(t0 + Duration::from_millis(120)));
        assert_eq!(s.budget(t0 + Duration::from_millis(120)), 1);
    }

    #[test]
    fn a_subscription_takes_32_bytes() {
        // 20 of them fit jemalloc's 640-byte size class (48 bytes took 1 KiB).
        assert_eq!(std::mem::size_of::<Option<Subscription>>(), 32);
    }

    #[test]
    fn a_granted_rate_is_told_as_the_throttle_keeps_it() {
        for r in [0.1, 0.5, 2.0, 2.5, 10.0, 33.3, 50.0] {
            assert_eq!(granted_rate(r), r, "{r} is kept as asked");
            assert_eq!(sub(1, r).rate(), r);
        }
        let odd = granted_rate(2.345678901234);
        assert_eq!(odd, 2.3456788);
        assert_eq!(sub(1, odd).rate(), odd, "told the same twice");
    }

    #[test]
    fn a_stamp_gives_back_the_instant_it_was_made_from() {
        let now = Instant::now();
        for t in [
            now,
            now + Duration::from_nanos(1),
            now + Duration::from_secs(86_400 * 365),
            // Before the process-wide origin.
            now.checked_sub(Duration::from_millis(1500)).unwrap_or(now),
        ] {
            assert_eq!(Stamp::at(t).get(), Some(t));
        }
        assert_eq!(Stamp::NONE.get(), None);
    }

    #[test]
    fn the_throttle_spacing_follows_the_rate() {
        let mut s = sub(1, 4.0);
        let t0 = Instant::now();
        assert_eq!(s.next_allowed(), None, "nothing sent yet");
        s.last_sent = Stamp::at(t0);
        assert_eq!(s.next_allowed(), Some(t0 + Duration::from_millis(250)));
        s.set_rate(0.5);
        assert_eq!(s.next_allowed(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(s.refresh_due(Duration::from_secs(1)), None, "no state yet");
    }
}
