//! [`Publisher`]: republishes every quote this gateway's own feeds accept to the
//! bus, as a full quote with its `seq` and `pub`. At start-up, before the feeds
//! run, it reads the last-value stream (creating it if asked) and seeds the hub
//! with it, so each symbol's `seq` continues where the bus left it.

use std::sync::Arc;

use async_nats::Client;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::outbox::Published;
use super::{connect, wire, BusError, LastValues, Outbox, PublishSettings};
use crate::backoff::backoff;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// A running publisher.
pub struct Publisher {
    /// Where feeds queue the symbols that took a quote.
    pub outbox: Arc<Outbox>,
    /// This run's `pub`.
    pub id: Arc<str>,
    /// Resolves once the hub holds the bus's last values, or start-up gave up
    /// waiting for the bus (`start_timeout`).
    pub ready: oneshot::Receiver<()>,
    /// Ends after the outbox is closed and emptied (or at shutdown while the
    /// bus was never reached).
    pub task: JoinHandle<()>,
}

impl Publisher {
    /// Starts publishing until `shutdown`.
    pub fn start(
        settings: PublishSettings,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Publisher {
        let id: Arc<str> = Arc::from(format!("{}-{:08x}", settings.id, rand::random::<u32>()));
        let outbox = Arc::new(Outbox::default());
        let (ready_tx, ready) = oneshot::channel();
        let run = Run {
            settings,
            hub,
            metrics,
            outbox: outbox.clone(),
            id: id.clone(),
        };
        let task = tokio::spawn(run.run(ready_tx, shutdown));
        Publisher {
            outbox,
            id,
            ready,
            task,
        }
    }
}

struct Run {
    settings: PublishSettings,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    outbox: Arc<Outbox>,
    id: Arc<str>,
}

impl Run {
    async fn run(self, ready: oneshot::Sender<()>, mut shutdown: watch::Receiver<bool>) {
        let start = tokio::time::timeout(self.settings.start_timeout, self.start());
        let client = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            started = start => match started {
                Ok(Ok((client, last_values))) => {
                    self.seed(last_values);
                    Some(client)
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "publisher: the bus is not there yet; feeds start without its last values");
                    None
                }
                Err(_) => {
                    tracing::warn!(timeout = ?self.settings.start_timeout, "publisher: no bus in time; feeds start without its last values");
                    None
                }
            }
        };
        let _ = ready.send(());
        let client = match client {
            Some(c) => c,
            None => match self.connect_until(&mut shutdown).await {
                Some(c) => c,
                None => return,
            },
        };
        tracing::info!(url = %self.settings.url, id = %self.id, "publishing to the bus");
        let mut batch = Vec::new();
        let mut published = Published::default();
        // Until the feeds have stopped and what they left is out.
        while self.outbox.take(&mut batch).await {
            for id in batch.drain(..) {
                let Some(q) = self.hub.latest(id).filter(|q| published.is_new(id, q.seq)) else {
                    continue;
                };
                let payload = wire::encode(&q, &self.id);
                match client.publish(wire::subject(&q.sym), payload.into()).await {
                    Ok(()) => self.metrics.bus_published.inc(),
                    Err(e) => {
                        self.metrics.bus_publish_errors.inc();
                        tracing::debug!(error = %e, sym = %q.sym, "publish failed");
                    }
                }
            }
        }
        let _ = client.flush().await;
    }

    /// Connects, creates the stream if asked, and reads its last values.
    async fn start(&self) -> Result<(Client, Vec<(String, bytes::Bytes)>), BusError> {
        let name = format!("ticker-gateway publisher {}", self.id);
        let (client, _events) = connect(&self.settings.url, &name).await?;
        let stream = &self.settings.stream;
        if stream.is_empty() {
            return Ok((client, Vec::new()));
        }
        if self.settings.create_stream {
            LastValues::create(&client, stream).await?;
        }
        let last = LastValues::open(&client, stream).await?.all().await?;
        Ok((client, last))
    }

    /// Connects after start-up, retrying with backoff until shutdown.
    async fn connect_until(&self, shutdown: &mut watch::Receiver<bool>) -> Option<Client> {
        let name = format!("ticker-gateway publisher {}", self.id);
        for attempt in 0.. {
            match connect(&self.settings.url, &name).await {
                Ok((client, _events)) => return Some(client),
                Err(e) => tracing::warn!(error = %e, "publisher cannot reach the bus"),
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return None,
                _ = tokio::time::sleep(backoff(attempt)) => {}
            }
        }
        None
    }

    /// Puts the bus's last values into the hub, numbers and all.
    fn seed(&self, last_values: Vec<(String, bytes::Bytes)>) {
        let mut seeded = 0;
        for (subject, payload) in last_values {
            let q = match wire::decode(&subject, &payload) {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(%subject, error = %e, "skipping a bad last value");
                    continue;
                }
            };
            let Some(id) = self.hub.lookup(&q.sym) else {
                continue;
            };
            self.hub.ingest_numbered(id, q.t, &q.fields, q.seq);
            seeded += 1;
        }
        tracing::info!(stream = %self.settings.stream, symbols = seeded, "publisher continues seq from the last-value stream");
    }
}
