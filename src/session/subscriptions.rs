//! A session's subscriptions: per symbol its granted rate, throttle clock and
//! last state sent, stored by inbox slot (the inbox names changed symbols by
//! slot, so a delivered update finds its subscription without a search) with a
//! small index sorted by symbol id for client ops.
//!
//! Both are vectors trimmed after each change, so they cost exactly their
//! entries: about 1.3 KiB for 20 symbols instead of the 2.3 KiB a hash map's
//! spare buckets take. Idle connections are mostly this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::{SymbolId, SymbolStatus};
use crate::quote::Quote;

/// One subscribed symbol of one session.
pub(super) struct Subscription {
    pub sym: SymbolId,
    /// Its inbox slot (the bit the hub sets when the symbol changes).
    pub slot: u32,
    /// The state this client last received (deltas are computed against it).
    pub sent: Option<Arc<Quote>>,
    /// The hub's side of the subscription (with its inbox slot).
    pub last_sent_at: Option<Instant>,
    /// The symbol's status as this client was last told it (section 10).
    pub told: Arc<SymbolStatus>,
    /// The granted `max_rate`, as the client is told.
    pub rate: f64,
    /// `1 / rate` in microseconds (the throttle's spacing).
    interval_us: u32,
}

impl Subscription {
    pub fn new(sym: SymbolId, slot: u32, rate: f64, told: Arc<SymbolStatus>) -> Self {
        let mut sub = Subscription {
            sym,
            slot,
            sent: None,
            last_sent_at: None,
            told,
            rate,
            interval_us: 0,
        };
        sub.set_rate(rate);
        sub
    }

    pub fn set_rate(&mut self, rate: f64) {
        self.rate = rate;
        // Rates are clamped to positive bounds by the settings; saturate anyway.
        self.interval_us = (1e6 / rate).min(f64::from(u32::MAX)) as u32;
    }

    /// The earliest moment the throttle lets this symbol out again.
    pub fn next_allowed(&self) -> Option<Instant> {
        self.last_sent_at
            .map(|t| t + Duration::from_micros(u64::from(self.interval_us)))
    }

    /// When this symbol is due to be sent again although nothing changed
    /// (`every` after the last send, never sooner than the throttle allows);
    /// `None` before the client has any state of it.
    pub fn refresh_due(&self, every: Duration) -> Option<Instant> {
        self.sent.as_ref()?;
        let spacing = Duration::from_micros(u64::from(self.interval_us)).max(every);
        self.last_sent_at.map(|t| t + spacing)
    }
}

/// Subscriptions by inbox slot, with an index by symbol.
#[derive(Default)]
pub(super) struct Subscriptions {
    /// Indexed by inbox slot; `None` for a free slot.
    by_slot: Vec<Option<Subscription>>,
    /// `(symbol, slot)`, sorted by symbol.
    by_sym: Vec<(SymbolId, u32)>,
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.by_sym.len()
    }

    fn find(&self, sym: SymbolId) -> Result<usize, usize> {
        self.by_sym.binary_search_by_key(&sym, |&(s, _)| s)
    }

    pub fn contains(&self, sym: SymbolId) -> bool {
        self.find(sym).is_ok()
    }

    pub fn get_mut(&mut self, sym: SymbolId) -> Option<&mut Subscription> {
        let slot = self.by_sym[self.find(sym).ok()?].1;
        self.at_mut(slot)
    }

    /// The subscription in an inbox slot.
    pub fn at(&self, slot: u32) -> Option<&Subscription> {
        self.by_slot.get(slot as usize)?.as_ref()
    }

    pub fn at_mut(&mut self, slot: u32) -> Option<&mut Subscription> {
        self.by_slot.get_mut(slot as usize)?.as_mut()
    }

    /// Every subscription, in slot order.
    pub fn each_mut(&mut self) -> impl Iterator<Item = &mut Subscription> {
        self.by_slot.iter_mut().flatten()
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
    pub fn insert(&mut self, sub: Subscription) {
        let (sym, slot) = (sub.sym, sub.slot);
        debug_assert!(self.at(slot).is_none(), "slot {slot} is taken");
        if let Err(i) = self.find(sym) {
            self.by_sym.insert(i, (sym, slot));
        }
        let i = slot as usize;
        if self.by_slot.len() <= i {
            self.by_slot.resize_with(i + 1, || None);
        }
        self.by_slot[i] = Some(sub);
    }

    pub fn remove(&mut self, sym: SymbolId) -> Option<Subscription> {
        let (_, slot) = self.by_sym.remove(self.find(sym).ok()?);
        self.by_slot.get_mut(slot as usize)?.take()
    }

    /// Every subscription, by ascending symbol id.
    pub fn iter(&self) -> impl Iterator<Item = (SymbolId, &Subscription)> {
        self.by_sym
            .iter()
            .filter_map(|&(sym, slot)| Some((sym, self.at(slot)?)))
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
        self.by_sym.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(sym: SymbolId, slot: u32, rate: f64) -> Subscription {
        Subscription::new(sym, slot, rate, Default::default())
    }

    fn add(subs: &mut Subscriptions, sym: SymbolId, rate: f64) -> u32 {
        let slot = subs.free_slot();
        subs.insert(sub(sym, slot, rate));
        slot
    }

    #[test]
    fn a_map_by_symbol_stored_by_slot() {
        let mut subs = Subscriptions::default();
        for sym in [7, 3, 9, 1] {
            add(&mut subs, sym, 2.0);
        }
        assert_eq!(subs.len(), 4);
        assert_eq!(
            subs.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            [1, 3, 7, 9]
        );
        assert_eq!(subs.at(1).map(|s| s.sym), Some(3), "slots in arrival order");
        subs.get_mut(3).unwrap().set_rate(5.0);
        assert_eq!(subs.at(1).map(|s| s.rate), Some(5.0));
        assert!(subs.remove(3).is_some());
        assert!(subs.remove(3).is_none());
        assert!(!subs.contains(3) && subs.contains(9));
        assert_eq!(add(&mut subs, 4, 1.0), 1, "the freed slot is reused");
        assert!(subs.remove(1).is_some());
        subs.trim();
        assert_eq!(subs.by_slot.capacity(), 3, "trailing free slots go");
        assert_eq!(subs.free_slot(), 3);
    }

    #[test]
    fn the_throttle_spacing_follows_the_rate() {
        let mut s = sub(1, 0, 4.0);
        let t0 = Instant::now();
        assert_eq!(s.next_allowed(), None, "nothing sent yet");
        s.last_sent_at = Some(t0);
        assert_eq!(s.next_allowed(), Some(t0 + Duration::from_millis(250)));
        s.set_rate(0.5);
        assert_eq!(s.next_allowed(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(s.refresh_due(Duration::from_secs(1)), None, "no state yet");
    }
}
