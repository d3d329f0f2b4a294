//! A session's inbox: the set of its symbols that changed since it last looked,
//! plus the wake-up. Bounded by construction: a [`Subscriber`]'s `queued` flag lets
//! each symbol in at most once until the session drains it.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::SymbolId;

/// Dirty symbols of one session and the notifier that wakes it.
#[derive(Default)]
pub struct Inbox {
    dirty: Mutex<Vec<SymbolId>>,
    notify: Notify,
}

impl Inbox {
    pub fn new() -> Inbox {
        Inbox::default()
    }

    /// Marks a symbol dirty and wakes the session.
    pub(super) fn push(&self, id: SymbolId) {
        self.dirty.lock().push(id);
        self.notify.notify_one();
    }

    /// Takes every dirty mark by swapping lists with `buf` (which should be
    /// empty): the inbox keeps `buf`'s capacity, so neither side allocates.
    pub fn swap(&self, buf: &mut Vec<SymbolId>) {
        std::mem::swap(&mut *self.dirty.lock(), buf);
    }

    /// True when some symbol is marked dirty.
    pub fn has_dirty(&self) -> bool {
        !self.dirty.lock().is_empty()
    }

    /// Resolves after the next [`Inbox::push`] (or at once if one came since the
    /// last wake-up).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Wakes the session without marking anything (used to hand it new input).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// One (session, symbol) subscription as the hub sees it.
pub struct Subscriber {
    pub sym: SymbolId,
    /// Set by the hub when it marks the symbol dirty; cleared by the session when it
    /// takes the mark.
    pub queued: AtomicBool,
    pub(super) inbox: Arc<Inbox>,
}

impl Subscriber {
    /// The session took the dirty mark: the next change marks it again. Call before
    /// reading the symbol's latest quote.
    pub fn clear(&self) {
        self.queued.store(false, Ordering::Relaxed);
        // Pairs with the fence in `Hub::ingest_fields` (a store then a load on
        // each side: only sequentially consistent fences keep both from reading
        // stale values and losing an update).
        fence(Ordering::SeqCst);
    }

    pub(crate) fn new(sym: SymbolId, inbox: Arc<Inbox>) -> Subscriber {
        Subscriber {
            sym,
            queued: AtomicBool::new(false),
            inbox,
        }
    }
}
