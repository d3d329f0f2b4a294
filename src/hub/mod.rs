//! The hub: interns symbols, keeps the last full quote and `seq` per symbol (the
//! snapshot source) and an index from each symbol to the sessions that want it.
//!
//! Fan-out is per symbol: a quote touches only that symbol's subscribers, and for
//! each it sets one "dirty" mark and wakes the session (see [`Inbox`]). The hub never
//! waits on a client; a session that is not reading keeps at most one mark per
//! symbol, and reads the latest state when it gets to it (conflation).
//!
//! The universe may grow at run time, up to a capacity fixed at start-up
//! ([`Hub::add`]): ids stay indexes into one array, so a symbol is reached
//! without a lock. The hub also keeps the set of symbols some session wants
//! ([`Demand`]), which feeds follow.

mod demand;
mod inbox;

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::{ArcSwapOption, Guard};
use parking_lot::{Mutex, RwLock};

pub use demand::Demand;
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

/// Why the hub could not add a symbol to the universe.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddError {
    #[error("malformed symbol {0:?}")]
    Malformed(String),
    #[error("the universe is full ({0} symbols)")]
    Full(usize),
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

impl SymbolSlot {
    fn new(info: SymbolInfo) -> SymbolSlot {
        SymbolSlot {
            sym: Arc::from(info.sym.as_str()),
            info,
            latest: ArcSwapOption::empty(),
            write: Mutex::new(()),
            subscribers: Mutex::new(Vec::new()),
        }
    }
}

/// The shared market state. Cheap to share behind an `Arc`; every method is sync
/// and holds a lock only for the one symbol it touches.
pub struct Hub {
    /// Filled in id order up to `len`; the rest is room to grow.
    slots: Box<[OnceLock<SymbolSlot>]>,
    len: AtomicUsize,
    /// The universe loaded at start: name to id, never written (no lock).
    loaded: HashMap<Arc<str>, SymbolId>,
    /// Symbols added at run time, name to id; looked at only when `loaded`
    /// misses.
    added: RwLock<HashMap<Arc<str>, SymbolId>>,
    demand: Demand,
}

impl Hub {
    /// Builds the hub over a fixed universe.
    pub fn new(universe: Vec<SymbolInfo>) -> Hub {
        Hub::with_room(universe, 0)
    }

    /// Builds the hub over `universe`, with room for `extra` symbols added later.
    pub fn with_room(universe: Vec<SymbolInfo>, extra: usize) -> Hub {
        let slots: Box<[OnceLock<SymbolSlot>]> = (0..universe.len() + extra)
            .map(|_| OnceLock::new())
            .collect();
        let mut index = HashMap::with_capacity(universe.len());
        let len = universe.len();
        for (i, info) in universe.into_iter().enumerate() {
            let slot = SymbolSlot::new(info);
            index.insert(slot.sym.clone(), i as SymbolId);
            // A fresh OnceLock takes its value.
            let _ = slots[i].set(slot);
        }
        Hub {
            slots,
            len: AtomicUsize::new(len),
            loaded: index,
            added: RwLock::default(),
            demand: Demand::default(),
        }
    }

    fn slot(&self, id: SymbolId) -> &SymbolSlot {
        // unwrap: ids come from the hub, which hands out only ids of filled slots.
        self.slots[id as usize]
            .get()
            .expect("unwrap: a symbol id names a filled slot")
    }

    /// Adds a symbol a feed discovered (or finds it if known), while there is
    /// room; its info names the feed and has no reference price.
    pub fn add(&self, sym: &str, feed: &str) -> Result<SymbolId, AddError> {
        if !is_valid_symbol(sym) {
            return Err(AddError::Malformed(sym.to_owned()));
        }
        if let Some(&id) = self.loaded.get(sym) {
            return Ok(id);
        }
        let mut added = self.added.write();
        if let Some(&id) = added.get(sym) {
            return Ok(id);
        }
        let id = self.len.load(Ordering::Acquire);
        let Some(cell) = self.slots.get(id) else {
            return Err(AddError::Full(self.slots.len()));
        };
        let info = SymbolInfo::discovered(sym, feed);
        let slot = SymbolSlot::new(info);
        added.insert(slot.sym.clone(), id as SymbolId);
        // Only the holder of the write lock on `added` fills slots, in order.
        let _ = cell.set(slot);
        self.len.store(id + 1, Ordering::Release);
        Ok(id as SymbolId)
    }

    /// The id of a symbol in the universe (the loaded one without a lock).
    pub fn lookup(&self, sym: &str) -> Option<SymbolId> {
        match self.loaded.get(sym) {
            Some(&id) => Some(id),
            None if self.len.load(Ordering::Acquire) > self.loaded.len() => {
                self.added.read().get(sym).copied()
            }
            None => None,
        }
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
        &self.slot(id).sym
    }

    /// The universe, in id order.
    pub fn universe(&self) -> impl Iterator<Item = &SymbolInfo> {
        self.slots[..self.len()]
            .iter()
            .filter_map(OnceLock::get)
            .map(|s| &s.info)
    }

    /// Number of symbols in the universe now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True when the universe is empty (never, once built from a loaded universe).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest full quote of a symbol, if any feed has set it.
    pub fn latest(&self, id: SymbolId) -> Option<Arc<Quote>> {
        self.slot(id).latest.load_full()
    }

    /// [`Hub::latest`] without taking a reference count: for a quick look (such as
    /// comparing `seq`) before deciding to keep the quote.
    pub fn peek(&self, id: SymbolId) -> Guard<Option<Arc<Quote>>> {
        self.slot(id).latest.load()
    }

    /// How many sessions subscribe to the symbol.
    pub fn subscribers(&self, id: SymbolId) -> usize {
        self.slot(id).subscribers.lock().len()
    }

    /// The symbols at least one session wants, and when that set changes.
    pub fn demand(&self) -> &Demand {
        &self.demand
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
        self.ingest_numbered(id, t, fields, None)
    }

    /// [`Hub::ingest_fields`] for an update that comes with its own `seq` (a bus
    /// quote): that number is adopted when it is higher than the symbol's, else
    /// the next one is assigned; the update is never dropped for its number.
    pub fn ingest_numbered(&self, id: SymbolId, t: i64, fields: &Fields, seq: Option<u64>) -> u64 {
        let slot = self.slot(id);
        let seq = {
            let _writer = slot.write.lock();
            let (next, mut merged) = match slot.latest.load().as_ref() {
                Some(q) => (q.seq + 1, q.fields.clone()),
                None => (1, Fields::default()),
            };
            let seq = seq.map_or(next, |s| s.max(next));
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
        let mut subs = self.slot(id).subscribers.lock();
        subs.push(Subscriber {
            inbox: inbox.clone(),
            slot,
        });
        // Under the symbol's lock, so demand changes apply in order.
        if subs.len() == 1 {
            self.demand.want(id);
        }
    }

    /// Removes a subscription made by [`Hub::subscribe`].
    pub fn unsubscribe(&self, id: SymbolId, slot: u32, inbox: &Arc<Inbox>) {
        let mut subs = self.slot(id).subscribers.lock();
        if let Some(pos) = subs
            .iter()
            .position(|s| s.slot == slot && Arc::ptr_eq(&s.inbox, inbox))
        {
            subs.swap_remove(pos);
            if subs.is_empty() {
                self.demand.release(id);
            }
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
        assert_eq!(h.subscribers(0), 0);
    }

    #[test]
    fn demand_follows_the_first_and_last_subscriber() {
        let h = hub();
        let mut changes = h.demand().changes();
        let (a, b) = (Arc::new(Inbox::new(64)), Arc::new(Inbox::new(64)));
        h.subscribe(1, 0, &a);
        h.subscribe(1, 3, &b);
        assert_eq!(h.demand().wanted(), [1]);
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        h.unsubscribe(1, 0, &a);
        assert!(!changes.has_changed().unwrap(), "one subscriber left");
        h.unsubscribe(1, 3, &b);
        assert!(h.demand().wanted().is_empty());
        assert!(changes.has_changed().unwrap());
    }

    #[test]
    fn the_universe_grows_up_to_its_room() {
        let h = Hub::with_room(parse("h\nAAA\tA\t1.00\t0.01\tsim\n").unwrap(), 2);
        assert_eq!(h.add("AAA", "bus"), Ok(0));
        assert_eq!(h.add("NEW", "bus"), Ok(1));
        assert_eq!(h.add("NEW", "bus"), Ok(1));
        assert_eq!(
            h.add("bad sym", "bus"),
            Err(AddError::Malformed("bad sym".into()))
        );
        assert_eq!(h.add("TWO", "bus"), Ok(2));
        assert_eq!(h.add("MORE", "bus"), Err(AddError::Full(3)));
        assert_eq!(h.len(), 3);
        assert_eq!(h.lookup("TWO"), Some(2));
        let feeds: Vec<_> = h
            .universe()
            .map(|i| (i.sym.as_str(), i.feed.as_str()))
            .collect();
        assert_eq!(feeds, [("AAA", "sim"), ("NEW", "bus"), ("TWO", "bus")]);
        h.ingest(&upd("NEW", r#"{"sym":"","t":1,"bp":"1.5"}"#))
            .unwrap();
        assert_eq!(h.latest(1).unwrap().seq, 1);
    }

    #[test]
    fn a_numbered_update_adopts_a_higher_seq_and_never_goes_back() {
        let h = hub();
        let f = Fields::default();
        assert_eq!(h.ingest_numbered(0, 1, &f, Some(40)), 40);
        assert_eq!(
            h.ingest_numbered(0, 2, &f, Some(7)),
            41,
            "lower: the next one"
        );
        assert_eq!(h.ingest_numbered(0, 3, &f, None), 42);
        assert_eq!(h.ingest_numbered(0, 4, &f, Some(50)), 50);
    }
}
