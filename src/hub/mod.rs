//! The hub: interns symbols, keeps the last full quote and `seq` per symbol (the
//! snapshot source) and an index from each symbol to the sessions that want it.
//!
//! Fan-out is per symbol: a quote touches only that symbol's subscribers, and for
//! each it sets one "dirty" mark and wakes the session (see [`Inbox`]). The hub never
//! waits on a client; a session that is not reading keeps at most one mark per
//! symbol, and reads the latest state when it gets to it (conflation).

mod inbox;

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwapOption, Guard};
use parking_lot::Mutex;

pub use inbox::Inbox;
use inbox::Subscriber;

use crate::quote::{is_valid_symbol, Fields, Quote, QuoteUpdate};
use crate::universe::SymbolInfo;

/// Microseconds since the Unix epoch, now.
pub fn unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A symbol's interned id: its index in the universe.
pub type SymbolId = u32;

/// Why the hub refused a feed update.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestError {
    #[error("unknown symbol {0:?}")]
    UnknownSymbol(String),
}

struct SymbolSlot {
    info: SymbolInfo,
    sym: Arc<str>,
    /// Read on every delivered update by every session, so lock-free: a shared
    /// lock's counter bouncing between cores cost more than the rest of a delta.
    latest: ArcSwapOption<Quote>,
    /// Serializes feeds that update the same symbol (seq must not repeat).
    write: Mutex<()>,
    subscribers: Mutex<Vec<Subscriber>>,
}

/// The shared market state. Cheap to share behind an `Arc`; every method is sync
/// and holds a lock only for the one symbol it touches.
pub struct Hub {
    slots: Vec<SymbolSlot>,
    index: HashMap<String, SymbolId>,
}

impl Hub {
    /// Builds the hub over a fixed universe.
    pub fn new(universe: Vec<SymbolInfo>) -> Hub {
        let mut index = HashMap::with_capacity(universe.len());
        let slots = universe
            .into_iter()
            .enumerate()
            .map(|(i, info)| {
                index.insert(info.sym.clone(), i as SymbolId);
                SymbolSlot {
                    sym: Arc::from(info.sym.as_str()),
                    info,
                    latest: ArcSwapOption::empty(),
                    write: Mutex::new(()),
                    subscribers: Mutex::new(Vec::new()),
                }
            })
            .collect();
        Hub { slots, index }
    }

    /// The id of a symbol in the universe.
    pub fn lookup(&self, sym: &str) -> Option<SymbolId> {
        self.index.get(sym).copied()
    }

    /// The id of a well-formed symbol in the universe (malformed names: `None`).
    pub fn find(&self, name: &str) -> Option<SymbolId> {
        is_valid_symbol(name).then(|| self.lookup(name)).flatten()
    }

    /// Splits requested names into known ids (deduplicated, in request order) and
    /// the names that are malformed or not in the universe.
    pub fn resolve<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> (Vec<SymbolId>, Vec<String>) {
        let mut ids = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            match self.find(name) {
                Some(id) if !ids.contains(&id) => ids.push(id),
                Some(_) => {}
                None => unknown.push(name.to_owned()),
            }
        }
        (ids, unknown)
    }

    /// The symbol's text.
    pub fn symbol(&self, id: SymbolId) -> &Arc<str> {
        &self.slots[id as usize].sym
    }

    /// The universe, in id order.
    pub fn universe(&self) -> impl Iterator<Item = &SymbolInfo> {
        self.slots.iter().map(|s| &s.info)
    }

    /// Number of symbols in the universe.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the universe is empty (never, once built from a loaded universe).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The latest full quote of a symbol, if any feed has set it.
    pub fn latest(&self, id: SymbolId) -> Option<Arc<Quote>> {
        self.slots[id as usize].latest.load_full()
    }

    /// [`Hub::latest`] without taking a reference count: for a quick look (such as
    /// comparing `seq`) before deciding to keep the quote.
    pub fn peek(&self, id: SymbolId) -> Guard<Option<Arc<Quote>>> {
        self.slots[id as usize].latest.load()
    }

    /// How many sessions subscribe to the symbol (feeds use it to follow demand).
    pub fn demand(&self, id: SymbolId) -> usize {
        self.slots[id as usize].subscribers.lock().len()
    }

    /// Accepts one feed update: merges it into the symbol's state, assigns the next
    /// `seq`, and marks the symbol dirty in every subscribed session.
    /// Returns the new `seq`.
    pub fn ingest(&self, update: &QuoteUpdate) -> Result<u64, IngestError> {
        let id = self
            .lookup(&update.sym)
            .ok_or_else(|| IngestError::UnknownSymbol(update.sym.clone()))?;
        Ok(self.ingest_fields(id, update.t, &update.fields))
    }

    /// [`Hub::ingest`] for an already interned symbol.
    pub fn ingest_fields(&self, id: SymbolId, t: i64, fields: &Fields) -> u64 {
        let slot = &self.slots[id as usize];
        let seq = {
            let _writer = slot.write.lock();
            let (seq, mut merged) = match slot.latest.load().as_ref() {
                Some(q) => (q.seq + 1, q.fields.clone()),
                None => (1, Fields::default()),
            };
            merged.merge(fields);
            slot.latest.store(Some(Arc::new(Quote::new(
                slot.sym.clone(),
                seq,
                t,
                merged,
                Instant::now(),
                unix_micros(),
            ))));
            seq
        };
        // Pairs with the fence in `Inbox::take`: either this pass sees the
        // session's cleared mark, or the session sees the quote just stored.
        fence(Ordering::SeqCst);
        for sub in slot.subscribers.lock().iter() {
            sub.inbox.mark(sub.slot);
        }
        seq
    }

    /// Registers `inbox` as a subscriber of `id`, marking `slot` on changes.
    pub fn subscribe(&self, id: SymbolId, slot: u32, inbox: &Arc<Inbox>) {
        self.slots[id as usize].subscribers.lock().push(Subscriber {
            inbox: inbox.clone(),
            slot,
        });
    }

    /// Removes a subscription made by [`Hub::subscribe`].
    pub fn unsubscribe(&self, id: SymbolId, slot: u32, inbox: &Arc<Inbox>) {
        let mut subs = self.slots[id as usize].subscribers.lock();
        if let Some(pos) = subs
            .iter()
            .position(|s| s.slot == slot && Arc::ptr_eq(&s.inbox, inbox))
        {
            subs.swap_remove(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::universe::parse;

    fn hub() -> Hub {
        Hub::new(parse("h\nAAA\tA\t1.00\t0.01\tsim\nBBB\tB\t2.00\t0.01\tsim\n").unwrap())
    }

    fn upd(sym: &str, json: &str) -> QuoteUpdate {
        let mut u: QuoteUpdate = serde_json::from_str(json).unwrap();
        u.sym = sym.into();
        u
    }

    #[test]
    fn ingest_merges_and_counts_seq_per_symbol() {
        let h = hub();
        h.ingest(&upd("AAA", r#"{"sym":"","t":1,"bp":"1.00","bs":100}"#))
            .unwrap();
        let seq = h
            .ingest(&upd("AAA", r#"{"sym":"","t":2,"bs":200}"#))
            .unwrap();
        assert_eq!(seq, 2);
        let q = h.latest(0).unwrap();
        assert_eq!(&*q.sym, "AAA");
        assert_eq!(q.fields.bp.unwrap().to_string(), "1.00");
        assert_eq!(q.fields.bs, Some(200));
        assert_eq!(q.t, 2);
        assert_eq!(h.ingest(&upd("BBB", r#"{"sym":"","t":1}"#)).unwrap(), 1);
        assert_eq!(
            h.ingest(&upd("ZZZ", r#"{"sym":"","t":1}"#)),
            Err(IngestError::UnknownSymbol("ZZZ".into()))
        );
    }

    #[test]
    fn fanout_marks_each_subscriber_once_until_drained() {
        let h = hub();
        let inbox = Arc::new(Inbox::new(64));
        h.subscribe(0, 7, &inbox);
        for t in 0..5 {
            h.ingest(&upd("AAA", &format!(r#"{{"sym":"","t":{t}}}"#)))
                .unwrap();
        }
        h.ingest(&upd("BBB", r#"{"sym":"","t":1}"#)).unwrap();
        let mut dirty = Vec::new();
        inbox.take(&[], |slot| dirty.push(slot));
        assert_eq!(dirty, vec![7]);
        h.unsubscribe(0, 7, &inbox);
        h.ingest(&upd("AAA", r#"{"sym":"","t":9}"#)).unwrap();
        dirty.clear();
        inbox.take(&[], |slot| dirty.push(slot));
        assert!(dirty.is_empty());
        assert_eq!(h.demand(0), 0);
    }
}
