//! `nats`: follows the bus (PROTOCOL.md section 11). It subscribes to
//! `ticker.quotes.<SYM>` while sessions want the symbol (plus `linger`), or to
//! `ticker.quotes.>` with `follow = "all"`. A symbol it starts following gets
//! its last value from the JetStream last-value stream when one is named, and
//! again after the connection comes back. Messages seen before or older than
//! one taken (by `pub` and `seq`) are dropped and counted; the hub adopts a
//! bus quote's `seq` when it is higher than its own. The client reconnects by
//! itself with backoff; meanwhile the feed shows `reconnecting`.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::{Client, Event, Message};
use futures_util::stream::{SelectAll, StreamExt, TakeUntil};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::{
    AdapterSettings, DemandWatch, FeedAdapter, FeedContext, FeedError, FeedState, Invalid,
};
use crate::bus::{self, wire, BusOrder, LastValues, Verdict};
use crate::hub::SymbolId;

/// Which subjects the feed subscribes to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Follow {
    /// The symbols sessions want, each kept `linger` after its last session left.
    #[default]
    Demand,
    /// Every symbol on the bus.
    All,
}

/// Messages taken in one turn of the feed's loop at most.
const BATCH: usize = 256;

fn default_linger() -> Duration {
    Duration::from_secs(30)
}

/// `kind = "nats"`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// The NATS server, e.g. "nats://127.0.0.1:4222".
    pub url: String,
    /// `demand` or `all`.
    #[serde(default)]
    pub follow: Follow,
    /// How long a symbol stays subscribed after its last session left.
    #[serde(default = "default_linger", with = "crate::duration")]
    pub linger: Duration,
    /// The JetStream last-value stream for snapshots; empty: none (a symbol's
    /// first quote then comes with its next bus message).
    #[serde(default)]
    pub stream: String,
}

impl AdapterSettings for NatsSettings {
    type Adapter = NatsFeed;
    const FROM_BUS: bool = true;

    fn validate(&self) -> Result<(), Invalid> {
        if self.url.is_empty() {
            return Err(Invalid::new("url", "must name a NATS server"));
        }
        Ok(())
    }

    fn build(&self, _ctx: &FeedContext) -> Result<NatsFeed, FeedError> {
        Ok(NatsFeed {
            settings: self.clone(),
        })
    }
}

/// The bus follower.
pub struct NatsFeed {
    settings: NatsSettings,
}

/// One subscription's messages, until its cancel side is dropped.
type Subscription = TakeUntil<async_nats::Subscriber, oneshot::Receiver<()>>;

/// What the running feed holds.
struct Follower {
    ctx: FeedContext,
    client: Client,
    last_values: Option<LastValues>,
    order: BusOrder,
    messages: SelectAll<Subscription>,
    /// Dropping a symbol's sender ends its subscription (and unsubscribes).
    subscribed: HashMap<SymbolId, oneshot::Sender<()>>,
    /// The same for the subscription to every symbol (`follow = "all"`).
    all: Option<oneshot::Sender<()>>,
    /// The connection dropped and has not come back yet.
    lost: bool,
}

impl FeedAdapter for NatsFeed {
    async fn run(self, mut ctx: FeedContext) -> Result<(), FeedError> {
        let name = format!("ticker-gateway feed {}", ctx.status().name);
        let (client, mut events) = bus::connect(&self.settings.url, &name)
            .await
            .map_err(|e| FeedError::Reconnectable(e.to_string()))?;
        let last_values = match self.settings.stream.as_str() {
            "" => None,
            stream => Some(
                LastValues::open(&client, stream)
                    .await
                    .map_err(|e| FeedError::Reconnectable(e.to_string()))?,
            ),
        };
        let mut f = Follower {
            ctx: ctx.clone(),
            client,
            last_values,
            order: BusOrder::default(),
            messages: SelectAll::new(),
            subscribed: HashMap::new(),
            all: None,
            lost: false,
        };
        let mut demand = match self.settings.follow {
            Follow::All => {
                f.follow_all().await?;
                None
            }
            Follow::Demand => Some(ctx.demand(self.settings.linger)),
        };
        ctx.ready();
        tracing::info!(feed = %ctx.status().name, url = %self.settings.url, follow = ?self.settings.follow, "following the bus");
        loop {
            tokio::select! {
                _ = ctx.shutdown_signal() => return Ok(()),
                delta = changed(&mut demand) => {
                    for id in delta.removed {
                        f.subscribed.remove(&id);
                    }
                    for id in delta.added {
                        f.follow(id).await?;
                    }
                }
                Some(msg) = f.messages.next(), if !f.messages.is_empty() => {
                    f.take(&msg);
                    // What the client already holds is taken in this turn, not
                    // one message per turn of the select (bounded, so shutdown
                    // and demand are still looked at).
                    for _ in 1..BATCH {
                        match f.messages.next().now_or_never() {
                            Some(Some(msg)) => f.take(&msg),
                            _ => break,
                        }
                    }
                }
                Some(event) = events.recv() => f.on_event(event).await,
            }
        }
    }
}

/// The next change of demand; never, when the feed follows everything.
async fn changed(demand: &mut Option<DemandWatch>) -> super::DemandDelta {
    match demand {
        Some(d) => d.changed().await,
        None => std::future::pending().await,
    }
}

impl Follower {
    /// Subscribes to every symbol and reads every last value.
    async fn follow_all(&mut self) -> Result<(), FeedError> {
        let (sub, cancel) = self.subscribe(wire::ALL_SUBJECTS.to_owned()).await?;
        self.messages.push(sub);
        self.all = Some(cancel);
        self.bootstrap_all().await;
        Ok(())
    }

    /// Subscribes to one symbol, then reads its last value (a live message that
    /// arrives first wins: the older last value is then dropped by its number).
    async fn follow(&mut self, id: SymbolId) -> Result<(), FeedError> {
        let sym = self.ctx.directory().symbol(id).clone();
        let (sub, cancel) = self.subscribe(wire::subject(&sym)).await?;
        self.messages.push(sub);
        self.subscribed.insert(id, cancel);
        self.bootstrap(&sym).await;
        Ok(())
    }

    async fn subscribe(
        &self,
        subject: String,
    ) -> Result<(Subscription, oneshot::Sender<()>), FeedError> {
        let sub = self
            .client
            .subscribe(subject)
            .await
            .map_err(|e| FeedError::Reconnectable(e.to_string()))?;
        let (cancel, cancelled) = oneshot::channel();
        Ok((sub.take_until(cancelled), cancel))
    }

    /// Takes one symbol's last value from the stream, if there is a stream.
    /// While the bus is lost nothing is asked (the reconnect takes them all).
    async fn bootstrap(&mut self, sym: &str) {
        let Some(lv) = self.last_values.as_ref().filter(|_| !self.lost) else {
            return;
        };
        let subject = wire::subject(sym);
        match lv.last(&subject).await {
            Ok(Some(payload)) => self.apply(&subject, &payload),
            Ok(None) => {}
            Err(e) => tracing::warn!(feed = %self.ctx.status().name, error = %e, "no last value"),
        }
    }

    /// Takes every last value (following everything).
    async fn bootstrap_all(&mut self) {
        let Some(lv) = self.last_values.as_ref().filter(|_| !self.lost) else {
            return;
        };
        match lv.all().await {
            Ok(values) => {
                for (subject, payload) in values {
                    self.apply(&subject, &payload);
                }
            }
            Err(e) => tracing::warn!(feed = %self.ctx.status().name, error = %e, "no last values"),
        }
    }

    fn take(&mut self, msg: &Message) {
        self.apply(msg.subject.as_str(), &msg.payload);
    }

    /// Judges one bus message and hands it to the hub when it is new.
    fn apply(&mut self, subject: &str, payload: &[u8]) {
        let ctx = &self.ctx;
        let q = match wire::decode(subject, payload) {
            Ok(q) => q,
            Err(e) => {
                ctx.rejected("malformed");
                tracing::debug!(feed = %ctx.status().name, subject, error = %e, "dropping a bad bus message");
                return;
            }
        };
        if ctx.is_own_publisher(q.publisher.as_deref()) {
            return;
        }
        let Some(id) = ctx.resolve(&q.sym) else {
            return;
        };
        match self.order.check(id, q.publisher.as_deref(), q.seq) {
            Verdict::New => {
                ctx.publish_numbered(id, q.t, &q.fields, q.seq);
                ctx.accepted(1);
            }
            dropped => ctx.rejected(dropped.reason()),
        }
    }

    async fn on_event(&mut self, event: Event) {
        let name = &self.ctx.status().name;
        match event {
            Event::Disconnected => {
                self.lost = true;
                tracing::warn!(feed = %name, "bus lost; the client reconnects");
                self.ctx.set_state(FeedState::Reconnecting);
            }
            Event::Connected if self.lost => {
                self.lost = false;
                tracing::info!(feed = %name, "bus back");
                self.ctx.set_state(FeedState::Running);
                self.ctx.ready();
                // What changed meanwhile comes from the last-value stream.
                if self.all.is_some() {
                    self.bootstrap_all().await;
                } else {
                    let syms: Vec<_> = self
                        .subscribed
                        .keys()
                        .map(|&id| self.ctx.directory().symbol(id).clone())
                        .collect();
                    for sym in syms {
                        self.bootstrap(&sym).await;
                    }
                }
            }
            other => tracing::debug!(feed = %name, event = %other, "bus event"),
        }
    }
}
