//! [`Demand`]: the symbols at least one session subscribes to, kept by the hub
//! as subscriptions come and go (only the first subscriber and the last one
//! change it), with a watch that feeds await to follow it.

use std::collections::HashSet;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::SymbolId;

/// The set of wanted symbols and its change notification.
pub struct Demand {
    wanted: Mutex<HashSet<SymbolId>>,
    /// Bumped on every change; feeds hold receivers.
    changed: watch::Sender<u64>,
}

impl Default for Demand {
    fn default() -> Self {
        Demand {
            wanted: Mutex::new(HashSet::new()),
            changed: watch::Sender::new(0),
        }
    }
}

impl Demand {
    /// The wanted symbols now, in id order.
    pub fn wanted(&self) -> Vec<SymbolId> {
        let mut ids: Vec<SymbolId> = self.wanted.lock().iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// A receiver that sees every later change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The symbol got its first subscriber.
    pub(super) fn want(&self, id: SymbolId) {
        if self.wanted.lock().insert(id) {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The symbol lost its last subscriber.
    pub(super) fn release(&self, id: SymbolId) {
        if self.wanted.lock().remove(&id) {
            self.changed.send_modify(|n| *n += 1);
        }
    }
}
