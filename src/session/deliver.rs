//! What a session sends: the symbols its inbox has marked, taken once per
//! delivery; each goes out as a snapshot or a delta from the client's last
//! state, or waits for its throttle; a burst of states since the client's
//! last send goes out state by state when the throttle allows them together.

use std::sync::Arc;
use std::time::Instant;

use super::protocol::{QuoteKind, ServerMsg};
use super::subscriptions::{Subscription, Subscriptions};
use super::Session;
use crate::hub::{Hub, Inbox, HISTORY};
use crate::lend::lend;
use crate::quote::{FieldMask, Quote};

/// A state the hub accepted longer ago than this is merged into the next update
/// rather than sent on its own: a client that fell behind (its socket full, a
/// long poll not yet back) catches up with the latest state, not with history.
const SUPERSEDED_AGE: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// The slots one take found marked, per thread (see [`Session::take_ready`]).
    static MARKED: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Session {
    /// Where a delivery to this session reads first, outside the session
    /// itself, and how many bytes from there: its inbox and its
    /// subscriptions (for a prefetch; a marked slot may be any of them).
    pub fn hot(&self) -> [(*const u8, usize); 2] {
        let (subs, len) = self.subs.storage();
        [
            (Arc::as_ptr(&self.inbox).cast(), size_of::<Inbox>()),
            (subs.cast(), len * size_of::<Option<Subscription>>()),
        ]
    }

    /// Symbols with a change held back by their throttle.
    pub fn pending_count(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.throttled.len())
    }

    /// True when [`Session::take_ready`] would return something now.
    /// Looks at the throttled symbols only when nothing else is ready.
    pub fn has_ready(&self, now: Instant) -> bool {
        self.has_news() || self.next_deadline().is_some_and(|d| d <= now)
    }

    /// [`Session::has_ready`] and [`Session::next_deadline`] in one pass (what a
    /// session loop needs on every turn).
    pub fn readiness(&self, now: Instant) -> (bool, Option<Instant>) {
        let deadline = self.next_deadline();
        (
            self.has_news() || deadline.is_some_and(|d| d <= now),
            deadline,
        )
    }

    /// Replies queued or a subscribed symbol changed.
    fn has_news(&self) -> bool {
        !self.outbox.is_empty() || self.inbox.has_dirty()
    }

    /// The earliest moment a throttled symbol may be sent again (or, when
    /// refreshing, a quiet one is due again).
    pub fn next_deadline(&self) -> Option<Instant> {
        let throttled = self
            .held
            .iter()
            .flat_map(|h| &h.throttled)
            .filter_map(|&slot| self.subs.at(slot).and_then(Subscription::next_allowed))
            .min();
        let Some(every) = self.refresh else {
            return throttled;
        };
        let refresh = self
            .subs
            .iter()
            .filter_map(|sub| sub.refresh_due(every))
            .min();
        match (throttled, refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Everything that may be sent now: queued replies first, then one snapshot or
    /// delta per dirty symbol whose throttle allows it. Symbols still throttled stay
    /// pending (one merged state each) until [`Session::next_deadline`].
    pub fn take_ready(&mut self, now: Instant) -> Vec<ServerMsg> {
        let mut out = Vec::new();
        self.take_ready_into(now, &mut out);
        out
    }

    /// [`Session::take_ready`] appending to `out` (a buffer the caller keeps
    /// between takes: no allocation per take).
    pub fn take_ready_into(&mut self, now: Instant, out: &mut Vec<ServerMsg>) {
        // The replies' block is not kept: an idle session holds none.
        if out.capacity() == 0 {
            *out = std::mem::take(&mut self.outbox);
        } else if self.outbox.capacity() > 0 {
            out.append(&mut std::mem::take(&mut self.outbox));
        }
        let hub = &*self.hub;
        let stamp = self.limits.ingest_stamp;
        let refreshing = self.refresh.is_some();
        let mut conflated = 0;
        // Throttled symbols whose time has come leave the kept marks: the take
        // below collects them with the new ones (their marks are still set).
        if let Some(held) = &mut self.held {
            let subs = &self.subs;
            held.release_where(|slot| {
                subs.at(slot)
                    .is_none_or(|sub| sub.next_allowed().is_none_or(|t| t <= now))
            });
        }
        // The worker's buffer, kept between takes for its capacity (one per
        // session would be an allocation every idle connection holds; a take
        // marks at most `max_symbols`).
        lend(&MARKED, usize::MAX, |marked| {
            let kept = self.held.as_ref().map_or(&[][..], |h| &h.kept[..]);
            self.inbox.take(kept, |slot| marked.push(slot));
            // After the take: a status that changed before a quote was stored is
            // seen here, and told before that quote (section 10).
            if self.inbox.take_status() {
                tell_status(hub, &mut self.subs, out);
            }
            for &slot in &*marked {
                let Some(sub) = self.subs.at_mut(slot) else {
                    continue;
                };
                if sub.next_allowed().is_some_and(|t| t > now) {
                    // The mark goes back and stays set while the symbol waits for its
                    // throttle, so the hub neither marks it nor wakes us per quote.
                    self.inbox.remark(slot);
                    self.held.get_or_insert_default().hold(slot);
                    continue;
                }
                // Full states only (WebRTC) gain nothing from the ones between.
                let budget = if refreshing { 1 } else { sub.budget(now) };
                conflated += emit(hub, sub, now, stamp, budget, out);
            }
        });
        if conflated > 0 {
            self.metrics.updates_conflated.inc_by(conflated);
        }
        if let Some(every) = self.refresh {
            self.refresh_quiet(every, now, out);
        }
    }

    /// Symbols nothing was sent for in `every` go out again in full.
    fn refresh_quiet(
        &mut self,
        every: std::time::Duration,
        now: Instant,
        out: &mut Vec<ServerMsg>,
    ) {
        let mut refreshed = 0;
        for sub in self.subs.iter_mut() {
            if sub.refresh_due(every).is_none_or(|t| t > now) {
                continue;
            }
            let Some(latest) = self.hub.latest(sub.sym) else {
                continue;
            };
            sub.sent = Some(latest.clone());
            sub.sent_at(now, 1);
            refreshed += 1;
            out.push(snapshot_msg(
                latest,
                self.limits.ingest_stamp,
                self.hub.is_stale(sub.sym),
            ));
        }
        if refreshed > 0 {
            self.metrics.webrtc_refreshes.inc_by(refreshed);
        }
    }
}

/// Queues a `status` for every subscribed symbol whose status changed since
/// the client was last told (never throttled).
fn tell_status(hub: &Hub, subs: &mut Subscriptions, out: &mut Vec<ServerMsg>) {
    for sub in subs.iter_mut() {
        let status = hub.status(sub.sym);
        if sub.told.differs_for_client(&status) {
            out.push(ServerMsg::Status {
                sym: hub.symbol(sub.sym).clone(),
                status: status.clone(),
            });
        }
        sub.told = status.told();
    }
}

/// The symbols a session holds back for their throttle.
#[derive(Default)]
pub(super) struct Held {
    /// Their inbox slots.
    throttled: Vec<u32>,
    /// The same slots, one bit each: their marks stay set in the inbox until
    /// the throttle lets them out.
    kept: Vec<u64>,
}

impl Held {
    fn hold(&mut self, slot: u32) {
        keep_bit(&mut self.kept, slot, true);
        self.throttled.push(slot);
    }

    /// Lets go of `slot` (its symbol was unsubscribed).
    pub(super) fn release(&mut self, slot: u32) {
        self.release_where(|s| s == slot);
    }

    /// Lets go of every held slot `done` says may go.
    fn release_where(&mut self, mut done: impl FnMut(u32) -> bool) {
        let kept = &mut self.kept;
        self.throttled.retain(|&slot| {
            let go = done(slot);
            if go {
                keep_bit(kept, slot, false);
            }
            !go
        });
    }
}

/// Sets or clears a slot's bit in a word-per-64-slots mask.
fn keep_bit(mask: &mut Vec<u64>, slot: u32, set: bool) {
    let (word, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
    if mask.len() <= word {
        if !set {
            return;
        }
        mask.resize(word + 1, 0);
    }
    if set {
        mask[word] |= bit;
    } else {
        mask[word] &= !bit;
    }
}

/// Queues the snapshot or delta that brings this client's view of `sym` to the
/// latest quote (nothing if it already has it); returns how many feed updates the
/// delta merged beyond the one it carries (conflated).
fn emit(
    hub: &Hub,
    sub: &mut Subscription,
    now: Instant,
    stamp: bool,
    budget: usize,
    out: &mut Vec<ServerMsg>,
) -> u64 {
    let peek = hub.peek(sub.sym);
    let Some(latest) = peek.as_ref() else {
        return 0;
    };
    let Some(prev) = &sub.sent else {
        sub.sent = Some(latest.clone());
        sub.sent_at(now, 1);
        out.push(snapshot_msg(latest.clone(), stamp, hub.is_stale(sub.sym)));
        return 0;
    };
    if latest.seq <= prev.seq {
        return 0;
    }
    if budget == 1 || latest.seq - prev.seq == 1 {
        // The common case: one update, a delta from the client's state.
        let skipped = latest.seq - prev.seq - 1;
        out.push(update_msg(latest.clone(), latest.delta_from(prev), stamp));
        sub.sent = Some(latest.clone());
        sub.sent_at(now, 1);
        return skipped;
    }
    // The states since the client's, newest first, as many as the budget
    // allows: each goes out as its own update, a delta from the one before;
    // what is older is merged into the first of them.
    let mut states = [const { None::<Arc<Quote>> }; HISTORY];
    states[0] = Some(latest.clone());
    let mut n = 1;
    while n < budget.min(HISTORY) {
        let Some(older) = states[n - 1].as_ref().and_then(|q| q.previous()) else {
            break;
        };
        if older.seq <= prev.seq || now.saturating_duration_since(older.ingested) > SUPERSEDED_AGE {
            break;
        }
        states[n] = Some(older);
        n += 1;
    }
    let mut skipped = 0;
    let mut base: &Quote = prev;
    for quote in states[..n].iter().rev().flatten() {
        skipped += quote.seq - base.seq - 1;
        out.push(update_msg(quote.clone(), quote.delta_from(base), stamp));
        base = quote;
    }
    sub.sent = states[0].take();
    sub.sent_at(now, n);
    skipped
}

/// A symbol's whole state (`stale` as the hub has it now).
pub(super) fn snapshot_msg(quote: Arc<Quote>, stamp: bool, stale: bool) -> ServerMsg {
    ServerMsg::Quote {
        kind: QuoteKind::Snapshot,
        quote,
        mask: FieldMask::ALL,
        stamp,
        stale,
    }
}

/// A delta: the fields in `mask` changed since the client's last state.
fn update_msg(quote: Arc<Quote>, mask: FieldMask, stamp: bool) -> ServerMsg {
    ServerMsg::Quote {
        kind: QuoteKind::Update,
        quote,
        mask,
        stamp,
        stale: false,
    }
}
