//! One connection to the upstream gateway: connect, wait for `welcome`,
//! subscribe to the followed symbols, then apply snapshots and updates and
//! follow demand until the connection ends, a fatal error arrives, or shutdown.

use std::collections::HashMap;

use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::Connector;

use super::wire::{self, Message};
use crate::feeds::upstream::{apply_frame, lost, Health, Socket};
use crate::feeds::{DemandWatch, FeedContext, FeedError, FeedState, Follow};
use crate::hub::SymbolId;

/// A connection the upstream welcomed.
pub struct Connection {
    ws: Socket,
    /// The rate asked for: the most the upstream grants.
    max_rate: Option<f64>,
    /// The last `seq` taken per symbol on this connection.
    seen: HashMap<SymbolId, u64>,
}

impl Connection {
    /// Connects and waits for `welcome`.
    pub async fn open(
        request: Request,
        connector: Option<Connector>,
        ctx: &FeedContext,
    ) -> Result<Connection, FeedError> {
        let url = request.uri().to_string();
        let mut ws = Socket::connect(request, connector, wire::closed).await?;
        let limits = ws
            .handshake("welcome", |text| {
                let msgs = match wire::frame(text) {
                    Ok(msgs) => msgs,
                    Err(e) => return Some(Err(lost(e))),
                };
                msgs.into_iter().find_map(|raw| match wire::message(raw) {
                    Ok(Message::Welcome { limits }) => Some(Ok(limits)),
                    Ok(Message::Error { code, message, .. }) => {
                        wire::error(&code, &message).map(Err)
                    }
                    _ => None,
                })
            })
            .await?;
        tracing::info!(feed = %ctx.status().name, url, "upstream gateway connected");
        Ok(Connection {
            ws,
            max_rate: limits.max_rate,
            seen: HashMap::new(),
        })
    }

    /// Follows the upstream and demand (or every symbol) until the connection
    /// ends (an error) or shutdown (`Ok`). A close for being over the
    /// upstream's limits counts as not served, so the backoff keeps growing.
    pub async fn follow(
        mut self,
        follow: Follow,
        ctx: &mut FeedContext,
        demand: &mut DemandWatch,
        health: &mut Health,
    ) -> Result<(), FeedError> {
        let end = self.run(follow, ctx, demand, health).await;
        if wire::over_limits(self.ws.close_code()) {
            health.served = false;
        }
        end
    }

    async fn run(
        &mut self,
        follow: Follow,
        ctx: &mut FeedContext,
        demand: &mut DemandWatch,
        health: &mut Health,
    ) -> Result<(), FeedError> {
        ctx.ready();
        ctx.set_state(FeedState::Running);
        let wanted = match follow {
            Follow::All => {
                let dir = ctx.directory();
                dir.universe().filter_map(|s| dir.lookup(&s.sym)).collect()
            }
            Follow::Demand => demand.followed(),
        };
        self.change(true, &wanted, ctx).await?;
        loop {
            tokio::select! {
                _ = ctx.shutdown_signal() => {
                    self.ws.close().await;
                    return Ok(());
                }
                delta = demand.changed(), if follow == Follow::Demand => {
                    self.change(false, &delta.removed, ctx).await?;
                    self.change(true, &delta.added, ctx).await?;
                }
                frame = self.ws.next_text() => {
                    if let Some(text) = frame? {
                        self.apply(&text, ctx, health)?;
                    }
                }
            }
        }
    }

    /// Subscribes to (or unsubscribes from) `ids` upstream.
    async fn change(
        &mut self,
        subscribe: bool,
        ids: &[SymbolId],
        ctx: &FeedContext,
    ) -> Result<(), FeedError> {
        if ids.is_empty() {
            return Ok(());
        }
        let syms = ctx.directory().symbols(ids);
        tracing::debug!(feed = %ctx.status().name, subscribe, symbols = syms.len(), "upstream subscription change");
        let op = if subscribe {
            wire::subscribe(&syms, self.max_rate)
        } else {
            for id in ids {
                self.seen.remove(id);
            }
            wire::unsubscribe(&syms)
        };
        self.ws.send(op).await
    }

    /// Applies one text frame: snapshots and updates go to the hub; a refused
    /// credential ends the connection; other errors are logged; a malformed
    /// message is counted and skipped.
    fn apply(
        &mut self,
        text: &str,
        ctx: &FeedContext,
        health: &mut Health,
    ) -> Result<(), FeedError> {
        let name = &ctx.status().name;
        apply_frame(text, ctx, wire::frame, wire::message, |msg| {
            match msg {
                Message::Snapshot(q) => return Ok(self.take(q, true, ctx, health)),
                Message::Update(q) => return Ok(self.take(q, false, ctx, health)),
                Message::Subscribed { .. } => health.served = true,
                Message::Unsubscribed {
                    symbols,
                    reason: Some(reason),
                } => {
                    tracing::warn!(feed = %name, ?symbols, reason, "the upstream ended subscriptions");
                }
                Message::Error {
                    code,
                    message,
                    symbols,
                } => {
                    if let Some(e) = wire::error(&code, &message) {
                        return Err(e);
                    }
                    tracing::warn!(feed = %name, code, message, ?symbols, "upstream error");
                }
                _ => {}
            }
            Ok(false)
        })
    }

    /// Hands one snapshot or update to the hub with the upstream's `seq`; an
    /// update not newer than the last one taken is dropped. True when taken.
    fn take(
        &mut self,
        q: wire::Quote,
        snapshot: bool,
        ctx: &FeedContext,
        health: &mut Health,
    ) -> bool {
        health.served = true;
        let Some(id) = ctx.resolve(&q.sym) else {
            return false;
        };
        if let Some(&last) = self.seen.get(&id) {
            if !snapshot && q.seq <= last {
                ctx.rejected("out_of_order");
                return false;
            }
        }
        self.seen.insert(id, q.seq);
        ctx.publish_numbered(id, q.t, &q.fields, Some(q.seq));
        true
    }
}
