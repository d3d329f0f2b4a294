//! One connection to the stream: connect, wait for `connected`, authenticate,
//! subscribe to the followed symbols, then apply quotes and trades and follow
//! demand until the connection ends, an `error` arrives, or shutdown.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::credentials::Credentials;
use super::wire::{self, provider_error, Message};
use super::Volumes;
use crate::feeds::{DemandWatch, FeedContext, FeedError, FeedState};
use crate::hub::SymbolId;

/// How long connecting and each step of the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping goes out this often; a connection silent for three of them is lost.
const PING_EVERY: Duration = Duration::from_secs(15);

/// What a connection achieved, for the backoff: the provider served it (it
/// confirmed a subscription or sent data).
#[derive(Default)]
pub struct Health {
    pub served: bool,
}

/// An authenticated connection.
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

fn lost(what: impl std::fmt::Display) -> FeedError {
    FeedError::Reconnectable(what.to_string())
}

impl Connection {
    /// Connects and authenticates.
    pub async fn open(
        url: &str,
        credentials: &Credentials,
        ctx: &FeedContext,
    ) -> Result<Connection, FeedError> {
        let (ws, _) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, tokio_tungstenite::connect_async(url))
                .await
                .map_err(|_| {
                    lost(format!(
                        "no connection to {url} within {HANDSHAKE_TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| lost(format!("connecting to {url}: {e}")))?;
        let mut conn = Connection { ws };
        conn.expect("connected").await?;
        let auth = json!({"action": "auth", "key": credentials.key, "secret": credentials.secret});
        conn.send(auth.to_string()).await?;
        conn.expect("authenticated").await?;
        tracing::info!(feed = %ctx.status().name, url, "alpaca stream authenticated");
        Ok(conn)
    }

    /// Reads until `success` with `msg`; an `error` ends the connection.
    async fn expect(&mut self, msg: &str) -> Result<(), FeedError> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next_frame())
                .await
                .map_err(|_| lost(format!("no {msg:?} within {HANDSHAKE_TIMEOUT:?}")))??;
            let Some(text) = frame else {
                continue;
            };
            for raw in wire::frame(&text).map_err(lost)? {
                match wire::message(raw) {
                    Ok(Message::Success(m)) if m == msg => return Ok(()),
                    Ok(Message::Error { code, msg }) => return Err(provider_error(code, &msg)),
                    _ => {}
                }
            }
        }
    }

    /// The next frame: `Some` text, or `None` for a ping, a pong or a binary
    /// frame (pings are answered by the stream itself).
    async fn next_frame(&mut self) -> Result<Option<String>, FeedError> {
        match self.ws.next().await {
            Some(Ok(Frame::Text(text))) => Ok(Some(text.as_str().to_owned())),
            Some(Ok(Frame::Close(close))) => Err(lost(match close {
                Some(c) => format!("closed by the provider ({} {})", c.code, c.reason),
                None => "closed by the provider".to_owned(),
            })),
            Some(Ok(_)) => Ok(None),
            Some(Err(e)) => Err(lost(format!("connection lost: {e}"))),
            None => Err(lost("connection lost")),
        }
    }

    async fn send(&mut self, text: String) -> Result<(), FeedError> {
        self.ws
            .send(Frame::Text(text.into()))
            .await
            .map_err(|e| lost(format!("sending: {e}")))
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
        let dir = ctx.directory();
        let syms: Vec<&str> = ids.iter().map(|&id| &**dir.symbol(id)).collect();
        tracing::debug!(feed = %ctx.status().name, action, symbols = syms.len(), "alpaca subscription change");
        self.send(json!({"action": action, "quotes": syms, "trades": syms}).to_string())
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
        ctx.status().set_state(FeedState::Running);
        self.change("subscribe", &demand.followed(), ctx).await?;
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                _ = ctx.shutdown_signal() => {
                    let _ = self.ws.close(None).await;
                    return Ok(());
                }
                delta = demand.changed() => {
                    self.change("unsubscribe", &delta.removed, ctx).await?;
                    self.change("subscribe", &delta.added, ctx).await?;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > 3 * PING_EVERY {
                        return Err(lost("the provider went silent"));
                    }
                    self.ws.send(Frame::Ping(Default::default())).await.map_err(|e| lost(format!("sending: {e}")))?;
                }
                frame = self.next_frame() => {
                    last_heard = Instant::now();
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
    let name = &ctx.status().name;
    let msgs = match wire::frame(text) {
        Ok(msgs) => msgs,
        Err(e) => {
            ctx.rejected("malformed");
            tracing::debug!(feed = %name, error = %e, "dropping a bad frame");
            return Ok(());
        }
    };
    let mut accepted = 0;
    let mut end = Ok(());
    for raw in msgs {
        match wire::message(raw) {
            Ok(Message::Data { sym, t, mut fields }) => {
                health.served = true;
                let Some(id) = ctx.resolve(&sym) else {
                    continue;
                };
                if let Some(size) = fields.ls {
                    fields.v = Some(volumes.add(id, t, size));
                }
                ctx.publish_fields(id, t, &fields);
                accepted += 1;
            }
            Ok(Message::Subscription { trades, quotes }) => {
                health.served = true;
                tracing::debug!(feed = %name, trades, quotes, "alpaca subscription");
            }
            Ok(Message::Error { code, msg }) => {
                end = Err(provider_error(code, &msg));
                break;
            }
            Ok(Message::Success(_) | Message::Other) => {}
            Err(e) => {
                ctx.rejected("malformed");
                tracing::debug!(feed = %name, error = %e, "dropping a bad message");
            }
        }
    }
    if accepted > 0 {
        ctx.accepted(accepted);
    }
    end
}
