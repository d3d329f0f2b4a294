//! [`Outbox`]: the symbols whose latest quote a publisher still has to send.
//! A symbol is queued at most once however many quotes it takes meanwhile, so
//! the queue is bounded by the universe and a slow bus conflates instead of
//! piling up: the publisher sends the latest full state when it gets there.
//! [`Published`] keeps it from sending one state twice (a symbol queued again
//! while the publisher was already sending its newest quote).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::hub::SymbolId;

#[derive(Default)]
struct Queue {
    order: VecDeque<SymbolId>,
    queued: HashSet<SymbolId>,
}

/// Symbols to republish, in the order they first changed.
#[derive(Default)]
pub struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    /// No more pushes will come (the feeds have stopped).
    closed: AtomicBool,
}

impl Outbox {
    /// Queues a symbol that took a quote (a no-op while it is queued).
    pub fn push(&self, id: SymbolId) {
        let mut q = self.queue.lock();
        if q.queued.insert(id) {
            q.order.push_back(id);
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Waits until something is queued, then takes all of it into `out`;
    /// false once the outbox is closed and empty.
    pub async fn take(&self, out: &mut Vec<SymbolId>) -> bool {
        loop {
            {
                let mut q = self.queue.lock();
                if !q.order.is_empty() {
                    out.extend(q.order.drain(..));
                    q.queued.clear();
                    return true;
                }
                if self.closed.load(Ordering::Acquire) {
                    return false;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Says no more pushes will come: [`Outbox::take`] hands out what is left,
    /// then returns false.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// The `seq` last published per symbol.
#[derive(Default)]
pub struct Published(HashMap<SymbolId, u64>);

impl Published {
    /// True (and remembered) when `seq` is newer than what went out for `id`.
    pub fn is_new(&mut self, id: SymbolId, seq: u64) -> bool {
        let last = self.0.entry(id).or_insert(0);
        if seq > *last {
            *last = seq;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_goes_out_once() {
        let mut p = Published::default();
        assert!(p.is_new(1, 5));
        assert!(!p.is_new(1, 5), "queued again, nothing newer");
        assert!(p.is_new(2, 5));
        assert!(p.is_new(1, 7));
        assert!(!p.is_new(1, 6));
    }

    #[tokio::test]
    async fn a_symbol_is_queued_once_until_taken() {
        let outbox = Outbox::default();
        for id in [3, 1, 3, 3, 2, 1] {
            outbox.push(id);
        }
        let mut out = Vec::new();
        assert!(outbox.take(&mut out).await);
        assert_eq!(out, [3, 1, 2]);
        outbox.push(3);
        outbox.close();
        out.clear();
        assert!(
            outbox.take(&mut out).await,
            "what was queued still goes out"
        );
        assert_eq!(out, [3]);
        assert!(!outbox.take(&mut out).await);
    }
}
