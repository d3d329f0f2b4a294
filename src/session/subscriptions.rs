//! A session's subscriptions: a map from symbol to its granted rate, throttle
//! clock and last state sent, kept as one vector sorted by symbol id.
//!
//! A session holds tens of symbols and looks one up per delivered update; a
//! sorted vector answers as fast as a hash map at that size and, trimmed after
//! each change, costs exactly its entries: about 1 KiB for 20 symbols instead of
//! the 2.3 KiB a hash map's spare buckets take. Idle connections are mostly this.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hub::{Subscriber, SymbolId};
use crate::quote::Quote;

/// One subscribed symbol of one session.
pub(super) struct Subscription {
    /// The state this client last received (deltas are computed against it).
    pub sent: Option<Arc<Quote>>,
    /// The hub's side of the subscription (with its inbox slot).
    pub handle: Arc<Subscriber>,
    pub last_sent_at: Option<Instant>,
    /// The granted `max_rate`, as the client is told.
    pub rate: f64,
    /// `1 / rate` in microseconds (the throttle's spacing).
    interval_us: u32,
    /// Listed in the session's throttled set.
    pub throttled: bool,
}

impl Subscription {
    pub fn new(handle: Arc<Subscriber>, rate: f64) -> Self {
        let mut sub = Subscription {
            sent: None,
            handle,
            last_sent_at: None,
            rate,
            interval_us: 0,
            throttled: false,
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
}

/// Subscriptions by symbol id.
#[derive(Default)]
pub(super) struct Subscriptions {
    sorted: Vec<(SymbolId, Subscription)>,
}

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    fn find(&self, sym: SymbolId) -> Result<usize, usize> {
        self.sorted.binary_search_by_key(&sym, |(s, _)| *s)
    }

    pub fn contains(&self, sym: SymbolId) -> bool {
        self.find(sym).is_ok()
    }

    pub fn get(&self, sym: SymbolId) -> Option<&Subscription> {
        self.find(sym).ok().map(|i| &self.sorted[i].1)
    }

    pub fn get_mut(&mut self, sym: SymbolId) -> Option<&mut Subscription> {
        self.find(sym).ok().map(|i| &mut self.sorted[i].1)
    }

    /// Adds or replaces the subscription of `sym`.
    pub fn insert(&mut self, sym: SymbolId, sub: Subscription) {
        match self.find(sym) {
            Ok(i) => self.sorted[i].1 = sub,
            Err(i) => self.sorted.insert(i, (sym, sub)),
        }
    }

    pub fn remove(&mut self, sym: SymbolId) -> Option<Subscription> {
        self.find(sym).ok().map(|i| self.sorted.remove(i).1)
    }

    /// Every subscription, by ascending symbol id.
    pub fn iter(&self) -> impl Iterator<Item = (SymbolId, &Subscription)> {
        self.sorted.iter().map(|(s, sub)| (*s, sub))
    }

    /// Gives back spare capacity after a batch of changes.
    pub fn trim(&mut self) {
        self.sorted.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Inbox;

    fn sub(sym: SymbolId, rate: f64) -> Subscription {
        Subscription::new(
            Arc::new(Subscriber::new(sym, 0, Arc::new(Inbox::new(1)))),
            rate,
        )
    }

    #[test]
    fn behaves_as_a_map_sorted_by_symbol() {
        let mut subs = Subscriptions::default();
        for sym in [7, 3, 9, 1] {
            subs.insert(sym, sub(sym, 2.0));
        }
        subs.insert(3, sub(3, 5.0));
        assert_eq!(subs.len(), 4);
        assert_eq!(
            subs.iter().map(|(s, _)| s).collect::<Vec<_>>(),
            [1, 3, 7, 9]
        );
        assert_eq!(subs.get(3).map(|s| s.rate), Some(5.0));
        assert!(subs.remove(7).is_some());
        assert!(subs.remove(7).is_none());
        assert!(!subs.contains(7) && subs.contains(9));
        subs.trim();
        assert_eq!(subs.sorted.capacity(), 3);
    }

    #[test]
    fn the_throttle_spacing_follows_the_rate() {
        let mut s = sub(1, 4.0);
        let t0 = Instant::now();
        assert_eq!(s.next_allowed(), None, "nothing sent yet");
        s.last_sent_at = Some(t0);
        assert_eq!(s.next_allowed(), Some(t0 + Duration::from_millis(250)));
        s.set_rate(0.5);
        assert_eq!(s.next_allowed(), Some(t0 + Duration::from_secs(2)));
    }
}
