//! Feed adapters: each one produces [`QuoteUpdate`](crate::quote::QuoteUpdate)s and publishes them through its
//! [`FeedContext`] into the hub until shutdown. The set of adapters is a closed enum
//! ([`Feed`]) built from the `[[feeds]]` settings; each lives in its own file.

mod context;
mod replay;
mod sim;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

pub use context::{Directory, FeedContext};
pub use replay::ReplayFeed;
pub use sim::SimFeed;

use crate::metrics::Metrics;
use crate::settings::FeedSettings;

/// What an adapter can fail with. Reconnectable errors are retried with capped,
/// jittered backoff; fatal ones end the adapter (its state shows `failed`).
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("source unavailable: {0}")]
    Reconnectable(String),
    #[error("{0}")]
    Fatal(String),
}

/// One feed adapter.
pub trait FeedAdapter {
    /// Runs until `ctx.shutdown` fires or the source ends for good.
    fn run(self, ctx: FeedContext) -> impl Future<Output = Result<(), FeedError>> + Send;
}

/// The configured adapters.
pub enum Feed {
    Sim(SimFeed),
    Replay(ReplayFeed),
}

impl Feed {
    /// Builds the adapter a `[[feeds]]` entry describes.
    pub fn from_settings(settings: &FeedSettings, hub: &Directory) -> Result<Feed, FeedError> {
        Ok(match settings {
            FeedSettings::Sim(s) => Feed::Sim(SimFeed::new(s, hub)?),
            FeedSettings::Replay(r) => Feed::Replay(ReplayFeed::new(r)),
        })
    }

    async fn run_once(self, ctx: FeedContext) -> Result<(), FeedError> {
        match self {
            Feed::Sim(f) => f.run(ctx).await,
            Feed::Replay(f) => f.run(ctx).await,
        }
    }
}

/// An adapter's lifecycle state, as `/api/v1/feeds` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedState {
    Starting,
    Running,
    Reconnecting,
    Finished,
    Failed,
    Stopped,
}

impl FeedState {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedState::Starting => "starting",
            FeedState::Running => "running",
            FeedState::Reconnecting => "reconnecting",
            FeedState::Finished => "finished",
            FeedState::Failed => "failed",
            FeedState::Stopped => "stopped",
        }
    }
}

/// Every feed state, for the one-hot `ticker_feed_state` gauge.
pub const FEED_STATES: [FeedState; 6] = [
    FeedState::Starting,
    FeedState::Running,
    FeedState::Reconnecting,
    FeedState::Finished,
    FeedState::Failed,
    FeedState::Stopped,
];

/// Refreshes the feed gauges that are read off live state (states and ages).
pub fn refresh_metrics(feeds: &[Arc<FeedStatus>], metrics: &Metrics, uptime_secs: f64) {
    for f in feeds {
        let report = f.report();
        for s in FEED_STATES {
            metrics
                .feed_state
                .with_label_values(&[&f.name, s.as_str()])
                .set(i64::from(report.state == s));
        }
        let age = report
            .last_quote_age_ms
            .map_or(uptime_secs, |ms| ms as f64 / 1000.0);
        metrics
            .feed_last_quote_age
            .with_label_values(&[&f.name])
            .set(age);
    }
}

/// Live status and counters of one adapter.
pub struct FeedStatus {
    pub name: String,
    pub kind: &'static str,
    pub start_timeout: Duration,
    state: Mutex<FeedState>,
    received: AtomicU64,
    rejected: AtomicU64,
    last_quote_at: Mutex<Option<Instant>>,
}

/// A snapshot of a [`FeedStatus`] for the API.
#[derive(Debug, Serialize)]
pub struct FeedReport {
    pub name: String,
    pub kind: &'static str,
    pub state: FeedState,
    pub quotes_received: u64,
    pub quotes_rejected: u64,
    /// Milliseconds since the adapter's last accepted quote; null before the first.
    pub last_quote_age_ms: Option<u64>,
}

impl FeedStatus {
    pub fn new(settings: &FeedSettings) -> FeedStatus {
        FeedStatus {
            name: settings.name().to_owned(),
            kind: settings.kind(),
            start_timeout: settings.start_timeout(),
            state: Mutex::new(FeedState::Starting),
            received: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_quote_at: Mutex::new(None),
        }
    }

    pub fn state(&self) -> FeedState {
        *self.state.lock()
    }

    pub fn set_state(&self, s: FeedState) {
        *self.state.lock() = s;
    }

    /// True once the adapter has delivered at least one quote.
    pub fn has_delivered(&self) -> bool {
        self.received.load(Ordering::Relaxed) > 0
    }

    pub fn report(&self) -> FeedReport {
        FeedReport {
            name: self.name.clone(),
            kind: self.kind,
            state: self.state(),
            quotes_received: self.received.load(Ordering::Relaxed),
            quotes_rejected: self.rejected.load(Ordering::Relaxed),
            last_quote_age_ms: self
                .last_quote_at
                .lock()
                .map(|t| t.elapsed().as_millis() as u64),
        }
    }
}

/// Capped, jittered exponential backoff: 0.5 s, 1 s, 2 s ... up to 30 s, each ±25 %.
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.5 * 2f64.powi(attempt.min(6) as i32);
    let capped = base.min(30.0);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64(capped * jitter)
}

/// Runs an adapter until shutdown: a reconnectable error is retried after
/// [`backoff`], a fatal one ends it.
pub async fn supervise(settings: FeedSettings, mut ctx: FeedContext) {
    let name = settings.name().to_owned();
    let mut attempt = 0;
    loop {
        let feed = match Feed::from_settings(&settings, &ctx.directory()) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(feed = %name, error = %e, "feed cannot start");
                ctx.status().set_state(FeedState::Failed);
                return;
            }
        };
        ctx.status().set_state(FeedState::Running);
        match feed.run_once(ctx.clone()).await {
            Ok(()) if ctx.is_shutting_down() => {
                ctx.status().set_state(FeedState::Stopped);
                return;
            }
            Ok(()) => {
                tracing::info!(feed = %name, "feed finished");
                ctx.status().set_state(FeedState::Finished);
                return;
            }
            Err(FeedError::Fatal(e)) => {
                tracing::error!(feed = %name, error = %e, "feed failed");
                ctx.status().set_state(FeedState::Failed);
                return;
            }
            Err(FeedError::Reconnectable(e)) => {
                let wait = backoff(attempt);
                attempt += 1;
                tracing::warn!(feed = %name, error = %e, retry_in = ?wait, "feed dropped; reconnecting");
                ctx.status().set_state(FeedState::Reconnecting);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.shutdown_signal() => {
                        ctx.status().set_state(FeedState::Stopped);
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(625));
        assert!(backoff(3) >= Duration::from_secs(3));
        for a in 0..50 {
            assert!(backoff(a) <= Duration::from_secs_f64(37.5));
        }
    }
}
