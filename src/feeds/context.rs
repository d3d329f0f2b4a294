//! [`FeedContext`]: the one door from an adapter into the hub. An adapter
//! publishes through it (and is counted), learns of shutdown from it, and reads
//! the symbol universe through a [`Directory`]; it never reaches the hub itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::FeedStatus;
use crate::hub::{Hub, IngestError, SymbolId};
use crate::metrics::Metrics;
use crate::quote::{Fields, QuoteUpdate};
use crate::universe::SymbolInfo;

/// What an adapter gets to do its work.
#[derive(Clone)]
pub struct FeedContext {
    hub: Arc<Hub>,
    status: Arc<FeedStatus>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

/// A read-only view of the symbol universe, for adapters resolving their
/// settings.
pub struct Directory<'a>(&'a Hub);

impl<'a> Directory<'a> {
    pub fn new(hub: &'a Hub) -> Self {
        Directory(hub)
    }

    pub fn lookup(&self, sym: &str) -> Option<SymbolId> {
        self.0.lookup(sym)
    }

    pub fn universe(&self) -> impl Iterator<Item = &'a SymbolInfo> {
        self.0.universe()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
}

impl FeedContext {
    pub fn new(
        hub: Arc<Hub>,
        status: Arc<FeedStatus>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        FeedContext {
            hub,
            status,
            metrics,
            shutdown,
        }
    }

    /// The symbol universe.
    pub fn directory(&self) -> Directory<'_> {
        Directory(&self.hub)
    }

    /// This adapter's status (its name, state and counters).
    pub fn status(&self) -> &FeedStatus {
        &self.status
    }

    /// Hands one update to the hub (never waits on clients). Unknown symbols are
    /// counted as rejected.
    pub fn publish(&self, update: &QuoteUpdate) -> Result<u64, IngestError> {
        match self.hub.ingest(update) {
            Ok(seq) => {
                self.accepted(1);
                Ok(seq)
            }
            Err(e) => {
                self.rejected("unknown_symbol");
                Err(e)
            }
        }
    }

    /// Hands the fields of an already resolved symbol to the hub; returns its
    /// `seq`. Not counted: call [`FeedContext::accepted`] once per batch.
    pub fn publish_fields(&self, id: SymbolId, t: i64, fields: &Fields) -> u64 {
        self.hub.ingest_fields(id, t, fields)
    }

    /// Counts `n` accepted quotes.
    pub fn accepted(&self, n: u64) {
        self.status.received.fetch_add(n, Ordering::Relaxed);
        *self.status.last_quote_at.lock() = Some(Instant::now());
        self.metrics
            .feed_quotes_received
            .with_label_values(&[&self.status.name])
            .inc_by(n);
    }

    /// Counts one refused line or quote.
    pub fn rejected(&self, reason: &str) {
        self.status.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .feed_quotes_rejected
            .with_label_values(&[&self.status.name, reason])
            .inc();
    }

    /// True once shutdown has been signalled.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when shutdown is signalled.
    pub async fn shutdown_signal(&mut self) {
        let _ = self.shutdown.wait_for(|s| *s).await;
    }
}
