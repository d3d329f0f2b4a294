//! Each adapter's live status and counters ([`FeedStatus`]), as `/api/v1/feeds`,
//! `/readyz` and the feed gauges read them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::FeedSettings;
use crate::metrics::Metrics;

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
    /// The state and, for `reconnecting` and `failed`, why.
    state: Mutex<(FeedState, Option<String>)>,
    pub(super) received: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) ready: AtomicBool,
    pub(super) last_quote_at: Mutex<Option<Instant>>,
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
    /// Why the feed is `reconnecting` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl FeedStatus {
    pub fn new(settings: &FeedSettings) -> FeedStatus {
        FeedStatus {
            name: settings.name().to_owned(),
            kind: settings.kind(),
            start_timeout: settings.start_timeout(),
            state: Mutex::new((FeedState::Starting, None)),
            received: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            last_quote_at: Mutex::new(None),
        }
    }

    pub fn state(&self) -> FeedState {
        self.state.lock().0
    }

    pub(super) fn set_state(&self, s: FeedState) {
        *self.state.lock() = (s, None);
    }

    /// Sets a state with the reason for it (a lost or refused source).
    pub(super) fn set_state_because(&self, s: FeedState, reason: impl Into<String>) {
        *self.state.lock() = (s, Some(reason.into()));
    }

    /// True once the adapter has delivered at least one quote (or said it is
    /// ready without one).
    pub fn has_delivered(&self) -> bool {
        self.received.load(Ordering::Relaxed) > 0 || self.ready.load(Ordering::Relaxed)
    }

    /// When the adapter last accepted a quote.
    pub fn last_quote_at(&self) -> Option<Instant> {
        *self.last_quote_at.lock()
    }

    pub fn report(&self) -> FeedReport {
        let (state, reason) = self.state.lock().clone();
        FeedReport {
            name: self.name.clone(),
            kind: self.kind,
            state,
            quotes_received: self.received.load(Ordering::Relaxed),
            quotes_rejected: self.rejected.load(Ordering::Relaxed),
            last_quote_age_ms: self
                .last_quote_at
                .lock()
                .map(|t| t.elapsed().as_millis() as u64),
            reason,
        }
    }
}
