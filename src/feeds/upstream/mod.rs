//! What the feeds that follow a WebSocket upstream (`alpaca`, `ticker`) share:
//! the reconnect loop ([`run`]) with capped, jittered backoff that keeps up with
//! demand between connections, the socket with its heartbeat ([`Socket`]), and
//! secrets read from a file or an environment variable ([`Place`]).

mod credentials;
mod socket;

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use serde_json::value::RawValue;

use super::{DemandWatch, FeedContext, FeedError, FeedState};
use crate::backoff::backoff;
pub use credentials::Place;
pub use socket::{close_text, lost, Socket};

/// What a connection achieved, for the backoff: the upstream served it (it
/// confirmed a subscription or sent data). A connection that was not served
/// (refused, closed at once, over the upstream's limits) waits longer each time.
#[derive(Default)]
pub struct Health {
    pub served: bool,
}

/// One kind of upstream: how to open a connection and follow it.
pub trait Upstream: Send + Sync {
    /// An open (handshaken, authenticated) connection.
    type Conn: Send;
    /// How logs name the source.
    const SOURCE: &'static str;

    /// Connects and does the handshake.
    fn open(&self, ctx: &FeedContext)
        -> impl Future<Output = Result<Self::Conn, FeedError>> + Send;

    /// Follows the connection and demand until the connection ends (an error)
    /// or shutdown (`Ok`).
    fn follow(
        &mut self,
        conn: Self::Conn,
        ctx: &mut FeedContext,
        demand: &mut DemandWatch,
        health: &mut Health,
    ) -> impl Future<Output = Result<(), FeedError>> + Send;
}

/// Runs `upstream` until shutdown or a fatal error: a lost connection is opened
/// again after [`backoff`] (reset once the upstream served a connection), with
/// the feed `reconnecting` and the reason meanwhile.
pub async fn run<U: Upstream>(
    mut upstream: U,
    linger: Duration,
    mut ctx: FeedContext,
) -> Result<(), FeedError> {
    let mut demand = ctx.demand(linger);
    let mut attempt = 0;
    let mut stop = ctx.clone();
    loop {
        let mut health = Health::default();
        let conn = tokio::select! {
            conn = upstream.open(&ctx) => conn,
            _ = stop.shutdown_signal() => return Ok(()),
        };
        let end = match conn {
            Ok(conn) => {
                upstream
                    .follow(conn, &mut ctx, &mut demand, &mut health)
                    .await
            }
            Err(e) => Err(e),
        };
        let reason = match end {
            Ok(()) => return Ok(()),
            Err(FeedError::Fatal(e)) => return Err(FeedError::Fatal(e)),
            Err(FeedError::Reconnectable(e)) => e,
        };
        if health.served {
            attempt = 0;
        }
        let wait = backoff(attempt);
        attempt = attempt.saturating_add(1);
        let name = &ctx.status().name;
        tracing::warn!(feed = %name, error = %reason, retry_in = ?wait, "{} lost; reconnecting", U::SOURCE);
        ctx.set_state_because(FeedState::Reconnecting, reason);
        if !wait_out(wait, &mut ctx, &mut demand).await {
            return Ok(());
        }
    }
}

/// Applies one text frame of messages: `split` makes its messages, `read`
/// reads each one, `take` applies it (true: it brought a quote; they are
/// counted once per frame; an error ends the connection). A malformed frame or
/// message is counted and skipped.
pub fn apply_frame<'t, M, E: Display, F: Display>(
    text: &'t str,
    ctx: &FeedContext,
    split: impl FnOnce(&'t str) -> Result<Vec<&'t RawValue>, F>,
    read: impl Fn(&'t RawValue) -> Result<M, E>,
    mut take: impl FnMut(M) -> Result<bool, FeedError>,
) -> Result<(), FeedError> {
    let name = &ctx.status().name;
    let msgs = match split(text) {
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
        match read(raw).map(&mut take) {
            Ok(Ok(quote)) => accepted += u64::from(quote),
            Ok(Err(e)) => {
                end = Err(e);
                break;
            }
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

/// Waits `wait` while keeping up with demand (so the next connection subscribes
/// to what is wanted then); false when shutdown came first.
async fn wait_out(wait: Duration, ctx: &mut FeedContext, demand: &mut DemandWatch) -> bool {
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = ctx.shutdown_signal() => return false,
            _ = demand.changed() => {}
        }
    }
}
