//! Silence: a feed with `stale_after` that accepted nothing for that long
//! counts as down (PROTOCOL.md section 10) until its next quote.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::FeedStatus;
use crate::hub::{FeedRank, Hub};

/// One feed under watch.
pub struct Watched {
    pub status: Arc<FeedStatus>,
    pub rank: FeedRank,
    pub stale_after: Duration,
}

/// Checks the watched feeds a few times per shortest `stale_after`, until
/// shutdown. Nothing to watch: returns at once.
pub async fn watch_silence(
    hub: Arc<Hub>,
    feeds: Vec<Watched>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(shortest) = feeds.iter().map(|f| f.stale_after).min() else {
        return;
    };
    let every = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        for f in &feeds {
            if !hub.sources().is_live(f.rank) {
                continue;
            }
            let silent = f
                .status
                .last_quote_at()
                .is_some_and(|t| t.elapsed() >= f.stale_after);
            if silent {
                let why = format!("silent for {}", crate::duration::format(f.stale_after));
                hub.feed_down(f.rank, &why);
            }
        }
    }
}
