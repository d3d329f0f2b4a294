//! [`DemandWatch`]: the symbols a feed should follow because sessions want them.
//! A symbol is followed from the moment its first session subscribes until
//! `linger` after its last one left (a client that reconnects, or flips between
//! symbols, does not make the feed drop and fetch the symbol again).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::hub::{Hub, SymbolId};

/// What changed in the followed set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DemandDelta {
    /// Newly followed symbols.
    pub added: Vec<SymbolId>,
    /// Symbols no longer followed (their linger ran out).
    pub removed: Vec<SymbolId>,
}

/// The followed set of one feed, derived from the hub's demand.
pub struct DemandWatch {
    hub: Arc<Hub>,
    changes: watch::Receiver<u64>,
    linger: Duration,
    /// Followed symbols: `None` while wanted, else when the linger ends.
    followed: HashMap<SymbolId, Option<Instant>>,
}

impl DemandWatch {
    pub(super) fn new(hub: Arc<Hub>, linger: Duration) -> DemandWatch {
        let mut changes = hub.demand().changes();
        // The first call to `changed` reports what is wanted already.
        changes.mark_changed();
        DemandWatch {
            hub,
            changes,
            linger,
            followed: HashMap::new(),
        }
    }

    /// The followed symbols now (wanted or lingering), in id order.
    pub fn followed(&self) -> Vec<SymbolId> {
        let mut ids: Vec<SymbolId> = self.followed.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Waits until the followed set changes and says how. Cancel-safe: a call
    /// dropped before it returns loses nothing.
    pub async fn changed(&mut self) -> DemandDelta {
        loop {
            let delta = self.settle();
            if delta != DemandDelta::default() {
                return delta;
            }
            let next_end = self.followed.values().flatten().min().copied();
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        // The hub is gone: nothing will change again.
                        std::future::pending::<()>().await;
                    }
                }
                _ = sleep_until(next_end) => {}
            }
        }
    }

    /// Applies the hub's wanted set and the lingers that ran out.
    fn settle(&mut self) -> DemandDelta {
        self.changes.mark_unchanged();
        let now = Instant::now();
        let wanted = self.hub.demand().wanted();
        let mut delta = DemandDelta::default();
        for &id in &wanted {
            if self.followed.insert(id, None).is_none() {
                delta.added.push(id);
            }
        }
        for (id, until) in self.followed.iter_mut() {
            if until.is_none() && wanted.binary_search(id).is_err() {
                *until = Some(now + self.linger);
            }
        }
        self.followed.retain(|id, until| match until {
            Some(t) if *t <= now => {
                delta.removed.push(*id);
                false
            }
            _ => true,
        });
        delta.removed.sort_unstable();
        delta
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Inbox;
    use crate::universe::parse;

    #[tokio::test(start_paused = true)]
    async fn follows_the_wanted_symbols_and_drops_them_after_the_linger() {
        let hub = Arc::new(Hub::new(
            parse("h\nAAA\tA\t1\t0.01\ts\nBBB\tB\t1\t0.01\ts\nCCC\tC\t1\t0.01\ts\n").unwrap(),
        ));
        let inbox = Arc::new(Inbox::new(64));
        hub.subscribe(0, 0, &inbox);
        let mut demand = DemandWatch::new(hub.clone(), Duration::from_secs(30));
        let delta = demand.changed().await;
        assert_eq!(delta.added, [0], "wanted before the watch began");

        hub.subscribe(2, 1, &inbox);
        assert_eq!(demand.changed().await.added, [2]);

        let left = Instant::now();
        hub.unsubscribe(0, 0, &inbox);
        // Back within the linger: nothing changes for the feed.
        tokio::time::sleep(Duration::from_secs(10)).await;
        hub.subscribe(0, 0, &inbox);
        hub.unsubscribe(0, 0, &inbox);
        hub.unsubscribe(2, 1, &inbox);
        let unsubscribed = Instant::now();
        assert_eq!(demand.followed(), [0, 2], "lingering");
        let delta = demand.changed().await;
        assert_eq!(delta.removed, [0, 2]);
        assert!(delta.added.is_empty());
        assert_eq!(Instant::now() - unsubscribed, Duration::from_secs(30));
        assert!(Instant::now() - left > Duration::from_secs(30));
        assert!(demand.followed().is_empty());
    }
}
