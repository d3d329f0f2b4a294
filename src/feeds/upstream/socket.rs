//! [`Socket`]: a WebSocket to an upstream, with a heartbeat: a ping goes out
//! every [`PING_EVERY`], and a connection silent for three of them is lost.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval};
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::feeds::FeedError;

/// How long connecting and each step of a handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping goes out this often; a connection silent for three of them is lost.
const PING_EVERY: Duration = Duration::from_secs(15);

/// A reconnectable error saying what was lost.
pub fn lost(what: impl std::fmt::Display) -> FeedError {
    FeedError::Reconnectable(what.to_string())
}

/// A close frame as an error text says it: "close 1013 server full".
pub fn close_text(code: u16, reason: &str) -> String {
    match reason {
        "" => format!("close {code}"),
        _ => format!("close {code} {reason}"),
    }
}

/// An open WebSocket to an upstream.
pub struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    ping: Interval,
    last_heard: Instant,
    /// What a close frame from the upstream means (its code and reason).
    on_close: fn(u16, &str) -> FeedError,
    /// The code of the upstream's close frame, once one came.
    close_code: Option<u16>,
}

impl Socket {
    /// Connects (within [`HANDSHAKE_TIMEOUT`]). `connector` is the TLS setup
    /// for wss (`None`: the system's roots). An upgrade refused with 401 or 403
    /// is fatal: the same request would be refused again. The request's headers
    /// (credentials) are never shown in an error.
    pub async fn connect(
        request: Request,
        connector: Option<Connector>,
        on_close: fn(u16, &str) -> FeedError,
    ) -> Result<Socket, FeedError> {
        let url = request.uri().clone();
        let connect =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
        let (ws, _) = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
            .await
            .map_err(|_| {
                lost(format!(
                    "no connection to {url} within {HANDSHAKE_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| match e {
                tungstenite::Error::Http(r) if matches!(r.status().as_u16(), 401 | 403) => {
                    FeedError::Fatal(format!("{url} refused the upgrade: {}", r.status()))
                }
                e => lost(format!("connecting to {url}: {e}")),
            })?;
        Ok(Socket {
            ws,
            ping: tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY),
            last_heard: Instant::now(),
            on_close,
            close_code: None,
        })
    }

    /// The next frame: `Some` text, or `None` for a ping, a pong, a binary
    /// frame or a heartbeat sent (pings are answered by the stream itself). A
    /// close frame gives the error `on_close` makes of it. Cancel-safe.
    pub async fn next_text(&mut self) -> Result<Option<String>, FeedError> {
        let frame = tokio::select! {
            frame = self.ws.next() => frame,
            _ = self.ping.tick() => {
                if self.last_heard.elapsed() > 3 * PING_EVERY {
                    return Err(lost("the upstream went silent"));
                }
                self.ws.send(Frame::Ping(Default::default())).await.map_err(|e| lost(format!("sending: {e}")))?;
                return Ok(None);
            }
        };
        self.last_heard = Instant::now();
        match frame {
            Some(Ok(Frame::Text(text))) => Ok(Some(text.as_str().to_owned())),
            Some(Ok(Frame::Close(close))) => {
                let (code, reason) = close.map_or((1005, Default::default()), |c| {
                    (u16::from(c.code), c.reason.to_string())
                });
                self.close_code = Some(code);
                Err((self.on_close)(code, &reason))
            }
            Some(Ok(_)) => Ok(None),
            Some(Err(e)) => Err(lost(format!("connection lost: {e}"))),
            None => Err(lost("connection lost")),
        }
    }

    /// The code of the upstream's close frame, once one came.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    pub async fn send(&mut self, text: String) -> Result<(), FeedError> {
        self.ws
            .send(Frame::Text(text.into()))
            .await
            .map_err(|e| lost(format!("sending: {e}")))
    }

    /// Reads text frames until `step` makes something of one: the handshake's
    /// next step, within [`HANDSHAKE_TIMEOUT`] (`what` names it in the error).
    pub async fn handshake<T>(
        &mut self,
        what: &str,
        mut step: impl FnMut(&str) -> Option<Result<T, FeedError>>,
    ) -> Result<T, FeedError> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next_text())
                .await
                .map_err(|_| lost(format!("no {what} within {HANDSHAKE_TIMEOUT:?}")))??;
            if let Some(done) = frame.as_deref().and_then(&mut step) {
                return done;
            }
        }
    }

    /// Closes the connection (shutdown).
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}
