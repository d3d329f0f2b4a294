//! [`FeedContext`]: the one door from an adapter into the hub. An adapter
//! publishes through it (and is counted), learns of shutdown from it, follows
//! the symbols sessions want ([`DemandWatch`]), adds the symbols it discovers
//! (when its settings allow), and reads the symbol universe through a
//! [`Directory`]; it never reaches the hub itself.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{DemandWatch, FeedState, FeedStatus};
use crate::bus::Outbox;
use crate::hub::{AddError, FeedRank, Hub, IngestError, SymbolId};
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
    add_symbols: bool,
    /// Symbols that took a quote are queued here for the bus publisher.
    outbox: Option<Arc<Outbox>>,
    /// This gateway's own `pub` on the bus, when it publishes.
    own_publisher: Option<Arc<str>>,
    /// The feed's place among the sources of its symbols (section 10); an
    /// unranked feed's quotes are all taken.
    rank: Option<FeedRank>,
    /// `ticker_feed_quotes_received_total{feed}`, looked up once: a bus feed
    /// counts every message.
    received: prometheus::IntCounter,
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

    /// A symbol's text.
    pub fn symbol(&self, id: SymbolId) -> &'a Arc<str> {
        self.0.symbol(id)
    }

    /// The texts of `ids`.
    pub fn symbols(&self, ids: &[SymbolId]) -> Vec<&'a str> {
        ids.iter().map(|&id| &**self.0.symbol(id)).collect()
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
        let received = metrics
            .feed_quotes_received
            .with_label_values(&[&status.name]);
        FeedContext {
            hub,
            status,
            metrics,
            shutdown,
            received,
            add_symbols: false,
            outbox: None,
            own_publisher: None,
            rank: None,
        }
    }

    /// Makes the feed one of its symbols' possible sources, at `rank`.
    pub fn ranked(mut self, rank: FeedRank) -> Self {
        self.rank = Some(rank);
        self
    }

    /// Queues every symbol this feed updates for the bus publisher.
    pub fn republishing(mut self, outbox: Option<Arc<Outbox>>) -> Self {
        self.outbox = outbox;
        self
    }

    /// Tells a bus feed this gateway's own `pub`, whose echoes it ignores.
    pub fn publishing_as(mut self, publisher: Option<Arc<str>>) -> Self {
        self.own_publisher = publisher;
        self
    }

    /// True when `publisher` is this gateway itself.
    pub fn is_own_publisher(&self, publisher: Option<&str>) -> bool {
        matches!((&self.own_publisher, publisher), (Some(own), Some(p)) if &**own == p)
    }

    /// Lets the adapter add the symbols it discovers ([`FeedContext::resolve`]).
    pub fn adding_symbols(mut self, add: bool) -> Self {
        self.add_symbols = add;
        self
    }

    /// Follows the symbols sessions want, each kept `linger` after its last
    /// session left.
    pub fn demand(&self, linger: Duration) -> DemandWatch {
        DemandWatch::new(self.hub.clone(), linger)
    }

    /// The id of `sym`: a universe symbol, or one this feed adds when it is
    /// configured to (`add_symbols`, while the universe has room). A refusal is
    /// counted (`unknown_symbol`, `universe_full`).
    pub fn resolve(&self, sym: &str) -> Option<SymbolId> {
        if let Some(id) = self.hub.lookup(sym) {
            return Some(id);
        }
        if !self.add_symbols {
            self.rejected("unknown_symbol");
            return None;
        }
        match self.hub.add(sym, &self.status.name) {
            Ok(id) => {
                tracing::info!(feed = %self.status.name, sym, id, "symbol added to the universe");
                Some(id)
            }
            Err(AddError::Malformed(_)) => {
                self.rejected("malformed");
                None
            }
            Err(e @ AddError::Full(_)) => {
                tracing::debug!(feed = %self.status.name, sym, error = %e, "symbol not added");
                self.rejected("universe_full");
                None
            }
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

    /// Hands one update to the hub (never waits on clients). Symbols outside the
    /// universe are added or refused as [`FeedContext::resolve`] says. Returns
    /// its `seq`, or `None` when a feed of higher priority is the symbol's
    /// source.
    pub fn publish(&self, update: &QuoteUpdate) -> Result<Option<u64>, IngestError> {
        let id = self
            .resolve(&update.sym)
            .ok_or_else(|| IngestError::UnknownSymbol(update.sym.clone()))?;
        let seq = self.publish_fields(id, update.t, &update.fields);
        self.accepted(1);
        Ok(seq)
    }

    /// Hands the fields of an already resolved symbol to the hub; returns its
    /// `seq` (as [`FeedContext::publish`]). Not counted: call
    /// [`FeedContext::accepted`] once per batch.
    pub fn publish_fields(&self, id: SymbolId, t: i64, fields: &Fields) -> Option<u64> {
        self.publish_numbered(id, t, fields, None)
    }

    /// [`FeedContext::publish_fields`] for an update that carries its own `seq`
    /// (see [`Hub::ingest_numbered`]).
    pub fn publish_numbered(
        &self,
        id: SymbolId,
        t: i64,
        fields: &Fields,
        seq: Option<u64>,
    ) -> Option<u64> {
        let seq = match self.rank {
            None => self.hub.ingest_numbered(id, t, fields, seq),
            Some(rank) => {
                // A feed that brings quotes can update its symbols.
                self.hub.feed_up(rank);
                let Some(seq) = self.hub.ingest_from(rank, id, t, fields, seq) else {
                    self.metrics
                        .feed_quotes_standby
                        .with_label_values(&[&self.status.name])
                        .inc();
                    return None;
                };
                seq
            }
        };
        if let Some(outbox) = &self.outbox {
            outbox.push(id);
        }
        Some(seq)
    }

    /// Marks the feed ready without a quote (a bus feed that is connected but
    /// has nothing in demand yet), for `/readyz`; its symbols can be updated
    /// again.
    pub fn ready(&self) {
        self.status.ready.store(true, Ordering::Relaxed);
        if let Some(rank) = self.rank {
            self.hub.feed_up(rank);
        }
    }

    /// Sets the adapter's state. A lost or failed source hands its symbols to
    /// other feeds or leaves them stale (section 10: disconnected, failed);
    /// `running` waits for the first quote (or [`FeedContext::ready`]). A
    /// finished feed (a recording played to its end) is only silent, which
    /// counts after its `stale_after`; `stopped` is shutdown, the clients are
    /// leaving.
    pub fn set_state(&self, state: FeedState) {
        self.status.set_state(state);
        self.follow_state(state);
    }

    /// [`FeedContext::set_state`] with the reason (a lost or refused source).
    pub fn set_state_because(&self, state: FeedState, reason: impl Into<String>) {
        self.status.set_state_because(state, reason);
        self.follow_state(state);
    }

    fn follow_state(&self, state: FeedState) {
        let Some(rank) = self.rank else { return };
        match state {
            FeedState::Reconnecting | FeedState::Failed => self.hub.feed_down(rank, "down"),
            FeedState::Starting | FeedState::Running | FeedState::Finished | FeedState::Stopped => {
            }
        }
    }

    /// Counts `n` accepted quotes.
    pub fn accepted(&self, n: u64) {
        self.status.received.fetch_add(n, Ordering::Relaxed);
        *self.status.last_quote_at.lock() = Some(Instant::now());
        self.received.inc_by(n);
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
