//! The hub: interns symbols, keeps the last full quote and `seq` per symbol (the
//! snapshot source) and an index from each symbol to the sessions that want it.
//!
//! Fan-out is per symbol: a quote touches only that symbol's subscribers, and for
//! each it sets one "dirty" mark and wakes the session (see [`Inbox`]), or, for
//! sessions delivered by their worker's loop, rings each worker's [`Doorbell`]
//! once with all of them. The hub never
//! waits on a client; a session that is not reading keeps at most one mark per
//! symbol, and reads the latest state when it gets to it (conflation).
//!
//! The universe may grow at run time, up to a capacity fixed at start-up
//! ([`Hub::add`]): ids stay indexes into one array, so a symbol is reached
//! without a lock. The hub also keeps the set of symbols some session wants
//! ([`Demand`]), which feeds follow, and each symbol's source and status
//! ([`Sources`]): which feed it takes quotes from, or that it is stale.

mod demand;
mod doorbell;
mod inbox;
mod sources;

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use parking_lot::{Mutex, RwLock};

pub use demand::Demand;
pub use doorbell::Doorbell;
use doorbell::Rings;
use inbox::Subscriber;
pub use inbox::{Inbox, MAX_SLOTS as MAX_INBOX_SLOTS};
pub use sources::{FeedRank, Sources, Stale, SymbolStatus, Told, MAX_RANKED_FEEDS};

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

/// How many states of a symbol the hub keeps chained (the latest and those
/// it replaced): the most updates of one symbol a session sends at once.
pub const HISTORY: usize = 8;

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
    /// Serializes feeds that update the same symbol (seq must not repeat), and
    /// guards its source: the rank of the feed it takes quotes from.
    write: Mutex<Option<FeedRank>>,
    /// The ranked feeds that have published the symbol, one bit each.
    covered: AtomicU64,
    /// What clients are told of the symbol's source (section 10).
    status: ArcSwap<SymbolStatus>,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl SymbolSlot {
    fn new(info: SymbolInfo) -> SymbolSlot {
        SymbolSlot {
            sym: Arc::from(info.sym.as_str()),
            info,
            latest: ArcSwapOption::empty(),
            write: Mutex::new(None),
            covered: AtomicU64::new(0),
            status: ArcSwap::from_pointee(SymbolStatus::default()),
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
    sources: Sources,
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
            sources: Sources::default(),
        }
    }

    /// The hub with `sources` ranking its feeds (see [`Hub::ingest_from`]).
    pub fn with_sources(mut self, sources: Sources) -> Hub {
        self.sources = sources;
        self
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
        self.filled().map(|s| &s.info)
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
        let seq = store(slot, t, fields, seq, &slot.write.lock());
        self.mark_subscribers(slot);
        seq
    }

    /// [`Hub::ingest_numbered`] for a quote from a ranked feed: taken when that
    /// feed is the symbol's source (the highest-priority live feed that covers
    /// it), which it becomes if no better one is live; `None` when a feed of
    /// higher priority is the source (the quote is not used).
    pub fn ingest_from(
        &self,
        rank: FeedRank,
        id: SymbolId,
        t: i64,
        fields: &Fields,
        seq: Option<u64>,
    ) -> Option<u64> {
        let slot = self.slot(id);
        let me = sources::bit(rank);
        if slot.covered.load(Ordering::Acquire) & me == 0 {
            slot.covered.fetch_or(me, Ordering::AcqRel);
        }
        let seq = {
            let mut source = slot.write.lock();
            let best = self.sources.best(slot.covered.load(Ordering::Acquire), me);
            if best != Some(rank) {
                return None;
            }
            if *source != best {
                // Clients hear of a new source before its first quote.
                self.change_source(slot, &mut source, best, "");
            }
            store(slot, t, fields, seq, &source)
        };
        self.mark_subscribers(slot);
        Some(seq)
    }

    fn mark_subscribers(&self, slot: &SymbolSlot) {
        // Pairs with the fence in `Inbox::take`: either this pass sees the
        // session's cleared mark, or the session sees the quote just stored.
        fence(Ordering::SeqCst);
        Rings::with(|rings| {
            for sub in slot.subscribers.lock().iter() {
                sub.inbox().mark(sub.slot(), rings);
            }
        });
    }

    /// The ranked feeds and which are live.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// What clients are told of the symbol's source: live (from which feed)
    /// or stale.
    pub fn status(&self, id: SymbolId) -> Arc<SymbolStatus> {
        self.slot(id).status.load_full()
    }

    /// True while the symbol is stale.
    pub fn is_stale(&self, id: SymbolId) -> bool {
        self.slot(id).status.load().is_stale()
    }

    /// How many symbols are stale now.
    pub fn stale_count(&self) -> usize {
        self.filled().filter(|s| s.status.load().is_stale()).count()
    }

    fn filled(&self) -> impl Iterator<Item = &SymbolSlot> {
        self.slots[..self.len()].iter().filter_map(OnceLock::get)
    }

    /// A ranked feed can update its symbols again: those it covers take it
    /// as their source where it is the best live one.
    pub fn feed_up(&self, rank: FeedRank) {
        if !self.sources.set_live(rank, true) {
            return;
        }
        let me = sources::bit(rank);
        for slot in self.filled() {
            let covered = slot.covered.load(Ordering::Acquire);
            if covered & me == 0 {
                continue;
            }
            let mut source = slot.write.lock();
            let best = self.sources.best(covered, 0);
            if *source != best {
                self.change_source(slot, &mut source, best, "");
            }
        }
    }

    /// A ranked feed can no longer update its symbols (`why`: "down", "silent
    /// for 5s"): each symbol it was the source of moves to the next live feed
    /// that covers it, or turns stale.
    pub fn feed_down(&self, rank: FeedRank, why: &str) {
        if !self.sources.set_live(rank, false) {
            return;
        }
        let reason = format!("feed {} {why}", self.sources.name(rank));
        for slot in self.filled() {
            let mut source = slot.write.lock();
            if *source != Some(rank) {
                continue;
            }
            let best = self.sources.best(slot.covered.load(Ordering::Acquire), 0);
            self.change_source(slot, &mut source, best, &reason);
        }
    }

    /// Sets a symbol's source (its write lock held) and what clients are told
    /// of it; wakes its subscribers when that is news.
    fn change_source(
        &self,
        slot: &SymbolSlot,
        source: &mut Option<FeedRank>,
        new: Option<FeedRank>,
        reason: &str,
    ) {
        let had = std::mem::replace(source, new);
        let current = slot.status.load_full();
        let next = match new {
            Some(rank) => {
                // The first source a symbol gets is not news; a move to
                // another one, or out of staleness, is.
                let moved = had.is_some() && !current.is_stale();
                if moved {
                    self.sources.count_failover();
                }
                let news = moved || current.is_stale();
                SymbolStatus {
                    version: current.version + u64::from(news),
                    stale: None,
                    feed: Some(self.sources.name(rank).clone()),
                    rank: Some(rank),
                }
            }
            None if current.is_stale() => return,
            None => SymbolStatus {
                version: current.version + 1,
                stale: Some(Stale {
                    since: unix_micros() / 1000,
                    reason: Arc::from(reason),
                }),
                feed: None,
                rank: None,
            },
        };
        let news = next.version != current.version;
        slot.status.store(Arc::new(next));
        if news {
            for sub in slot.subscribers.lock().iter() {
                sub.inbox().status_changed();
            }
        }
    }

    /// Registers `inbox` as a subscriber of `id`, marking `slot` on changes.
    pub fn subscribe(&self, id: SymbolId, slot: u32, inbox: &Arc<Inbox>) {
        let mut subs = self.slot(id).subscribers.lock();
        subs.push(Subscriber::new(inbox, slot));
        // Under the symbol's lock, so demand changes apply in order.
        if subs.len() == 1 {
            self.demand.want(id);
        }
    }

    /// Removes a subscription made by [`Hub::subscribe`].
    pub fn unsubscribe(&self, id: SymbolId, slot: u32, inbox: &Arc<Inbox>) {
        let mut subs = self.slot(id).subscribers.lock();
        if let Some(pos) = subs.iter().position(|s| s.is(inbox, slot)) {
            subs.swap_remove(pos);
            if subs.is_empty() {
                self.demand.release(id);
            }
        }
    }
}

/// Merges an update into a symbol's state with the next `seq` (or the given
/// one when higher); the caller holds the symbol's write lock.
fn store(
    slot: &SymbolSlot,
    t: i64,
    fields: &Fields,
    seq: Option<u64>,
    _writer: &Option<FeedRank>,
) -> u64 {
    let base = slot.latest.load_full();
    let (next, mut merged) = match &base {
        Some(q) => (q.seq + 1, q.fields.clone()),
        None => (1, Fields::default()),
    };
    let seq = seq.map_or(next, |s| s.max(next));
    merged.merge(fields);
    let quote = Quote::new(
        slot.sym.clone(),
        seq,
        t,
        merged,
        Instant::now(),
        unix_micros(),
    );
    let quote = Arc::new(match &base {
        Some(b) => quote.after(b),
        None => quote,
    });
    quote.set_previous(base);
    keep_history(&quote);
    slot.latest.store(Some(quote));
    seq
}

/// Ends a symbol's chain of states after [`HISTORY`] of them, so a state a
/// session still holds keeps at most that many alive.
fn keep_history(latest: &Arc<Quote>) {
    let mut q = Arc::clone(latest);
    for _ in 1..HISTORY {
        match q.previous() {
            Some(p) => q = p,
            None => return,
        }
    }
    q.set_previous(None);
}

#[cfg(test)]
mod tests;
