//! One connection to the stream: connect, wait for `connected`, authenticate,
//! subscribe to the followed symbols, then apply quotes and trades and follow
//! demand until the connection ends, an `error` arrives, or shutdown.

use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::wire::{self, provider_error, Message};
use super::{Credentials, Volumes};
use crate::feeds::upstream::{apply_frame, close_text, lost, Health, Socket};
use crate::feeds::{DemandWatch, FeedContext, FeedError, FeedState};
use crate::hub::SymbolId;

/// An authenticated connection.
pub struct Connection {
    ws: Socket,
}

/// Every close from the provider is worth a reconnect (its errors come as
/// messages).
fn closed(code: u16, reason: &str) -> FeedError {
    lost(format!(
        "closed by the provider ({})",
        close_text(code, reason)
    ))
}

impl Connection {
    /// Connects and authenticates.
    pub async fn open(
        url: &str,
        credentials: &Credentials,
        ctx: &FeedContext,
    ) -> Result<Connection, FeedError> {
        let request = url
            .into_client_request()
            .map_err(|e| FeedError::Fatal(format!("url: {e}")))?;
        let ws = Socket::connect(request, None, closed).await?;
        let mut conn = Connection { ws };
        conn.expect("connected").await?;
        let auth = json!({"action": "auth", "key": credentials.key, "secret": credentials.secret});
        conn.ws.send(auth.to_string()).await?;
        conn.expect("authenticated").await?;
        tracing::info!(feed = %ctx.status().name, url, "alpaca stream authenticated");
        Ok(conn)
    }

    /// Reads until `success` with `msg`; an `error` ends the connection.
    async fn expect(&mut self, msg: &str) -> Result<(), FeedError> {
        self.ws
            .handshake(&format!("{msg:?}"), |text| {
                let msgs = match wire::frame(text) {
                    Ok(msgs) => msgs,
                    Err(e) => return Some(Err(lost(e))),
                };
                msgs.into_iter().find_map(|raw| match wire::message(raw) {
                    Ok(Message::Success(m)) if m == msg => Some(Ok(())),
                    Ok(Message::Error { code, msg }) => Some(Err(provider_error(code, &msg))),
                    _ => None,
                })
            })
            .await
    }

    /// Subscribes to (or unsubscribes from) the quotes and trades of `ids`.
    async fn change(
        &mut self,
        action: &str,
        ids: &[SymbolId],
        ctx: &FeedContext,
    ) -> Result<(), FeedError> {
        if ids.is_empty() {
            return Ok(());
        }
        let syms = ctx.directory().symbols(ids);
        tracing::debug!(feed = %ctx.status().name, action, symbols = syms.len(), "alpaca subscription change");
        self.ws
            .send(json!({"action": action, "quotes": syms, "trades": syms}).to_string())
            .await
    }

    /// Follows the stream and demand until the connection ends (an error) or
    /// shutdown (`Ok`).
    pub async fn follow(
        mut self,
        ctx: &mut FeedContext,
        demand: &mut DemandWatch,
        volumes: &mut Volumes,
        health: &mut Health,
    ) -> Result<(), FeedError> {
        ctx.ready();
        ctx.set_state(FeedState::Running);
        self.change("subscribe", &demand.followed(), ctx).await?;
        loop {
            tokio::select! {
                _ = ctx.shutdown_signal() => {
                    self.ws.close().await;
                    return Ok(());
                }
                delta = demand.changed() => {
                    self.change("unsubscribe", &delta.removed, ctx).await?;
                    self.change("subscribe", &delta.added, ctx).await?;
                }
                frame = self.ws.next_text() => {
                    if let Some(text) = frame? {
                        apply(&text, ctx, volumes, health)?;
                    }
                }
            }
        }
    }
}

/// Applies one text frame: its quotes and trades go to the hub; an `error` ends
/// the connection; a malformed message is counted and skipped.
fn apply(
    text: &str,
    ctx: &FeedContext,
    volumes: &mut Volumes,
    health: &mut Health,
) -> Result<(), FeedError> {
    apply_frame(text, ctx, wire::frame, wire::message, |msg| match msg {
        Message::Data { sym, t, mut fields } => {
            health.served = true;
            let Some(id) = ctx.resolve(&sym) else {
                return Ok(false);
            };
            if let Some(size) = fields.ls {
                fields.v = Some(volumes.add(id, t, size));
            }
            ctx.publish_fields(id, t, &fields);
            Ok(true)
        }
        Message::Subscription { trades, quotes } => {
            health.served = true;
            tracing::debug!(feed = %ctx.status().name, trades, quotes, "alpaca subscription");
            Ok(false)
        }
        Message::Error { code, msg } => Err(provider_error(code, &msg)),
        Message::Success(_) | Message::Other => Ok(false),
    })
}
