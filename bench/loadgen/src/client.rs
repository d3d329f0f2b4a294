//! One simulated client: a lightweight task that binds its socket to a source
//! address, does the WebSocket handshake, subscribes once, then reads frames until
//! the run ends (or, in churn mode, closes after its snapshots and starts over).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::args::{Format, Protocol};
use crate::frame::{self, SioAction, Tally};
use crate::stats::Stats;
use crate::tls::Conn;

type Ws<S> = WebSocketStream<S>;

/// How long a client waits for all its snapshots before it counts as settled anyway.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(10);
/// Churn: how long a client waits for the server's side of the close handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What every client shares.
pub struct Plan {
    pub server: SocketAddr,
    pub url: String,
    pub format: Format,
    pub protocol: Protocol,
    pub ws_config: WebSocketConfig,
    pub connect_timeout: Duration,
    pub churn: bool,
    pub quickack: bool,
    /// wss: the client configuration that verifies the server (`--ca`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `--protocol webrtc`: what every peer is built from.
    pub rtc: Option<str0m::RtcConfig>,
    pub stats: Arc<Stats>,
}

/// One client's identity and subscription.
pub struct Client {
    pub id: usize,
    pub source: IpAddr,
    /// The subscribe op (or Socket.IO subscribe event), encoded once.
    pub subscribe: Message,
    /// How many snapshots make the subscription complete.
    pub symbols: u64,
}

#[derive(Serialize)]
struct SubscribeOp<'a> {
    op: &'static str,
    symbols: &'a [&'a str],
    max_rate: f64,
}

#[derive(Serialize)]
struct SioSubscribe<'a> {
    symbols: &'a [&'a str],
    max_rate: f64,
}

/// Encodes `{"op":"subscribe","symbols":[..],"max_rate":R}` as a message in
/// `format`, or for Socket.IO the event `42["subscribe",{"symbols":[..],"max_rate":R}]`.
pub fn subscribe_op(
    protocol: Protocol,
    format: Format,
    symbols: &[&str],
    max_rate: f64,
) -> anyhow::Result<Message> {
    match protocol {
        Protocol::Socketio | Protocol::SocketioPolling => {
            let event = ("subscribe", SioSubscribe { symbols, max_rate });
            return Ok(Message::Text(
                format!("42{}", serde_json::to_string(&event)?).into(),
            ));
        }
        Protocol::Stomp => {
            // Heart-beats off: the server's WebSocket pings keep the connection alive.
            let mut frames = String::from("CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0");
            for (i, sym) in symbols.iter().enumerate() {
                frames.push_str(&format!(
                    "SUBSCRIBE\nid:{i}\ndestination:/topic/quotes.{sym}\nmax-rate:{max_rate}\n\n\0"
                ));
            }
            return Ok(Message::Text(frames.into()));
        }
        Protocol::Ticker | Protocol::Webrtc => {}
    }
    let op = SubscribeOp {
        op: "subscribe",
        symbols,
        max_rate,
    };
    Ok(match format {
        Format::Json => Message::Text(serde_json::to_string(&op)?.into()),
        Format::Msgpack => Message::Binary(rmp_serde::to_vec_named(&op)?.into()),
    })
}

/// Microseconds since the Unix epoch (same clock as the gateway's `ti`).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A short, stable name for a WebSocket error, used as a counter key.
fn ws_error_key(stage: &str, e: &WsError) -> String {
    match e {
        WsError::Io(io) => format!("{stage}: io {:?}", io.kind()),
        WsError::Http(resp) => format!("{stage}: http {}", resp.status().as_u16()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => format!("{stage}: closed"),
        WsError::Protocol(p) => format!("{stage}: protocol {p}"),
        other => format!("{stage}: {other}"),
    }
}

/// TCP connect from `source`, then the WebSocket handshake with the subprotocol
/// (after the TLS handshake, for wss).
async fn connect<S: Conn>(plan: &Plan, source: IpAddr) -> Result<Ws<S>, String> {
    let stream = tcp_connect(plan.server, source).await?;
    let mut req = plan
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ws_error_key("request", &e))?;
    let subprotocol = match plan.protocol {
        Protocol::Ticker => Some(plan.format.subprotocol()),
        Protocol::Stomp => Some("v12.stomp"),
        Protocol::Socketio | Protocol::SocketioPolling | Protocol::Webrtc => None,
    };
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
    }
    S::handshake(plan, req, stream)
        .await
        .map_err(|e| ws_error_key("handshake", &e))
}

/// A TCP connection to `server` from `source` (TCP_NODELAY), or the error key
/// for the report.
pub async fn tcp_connect(server: SocketAddr, source: IpAddr) -> Result<TcpStream, String> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: io {:?}", e.kind()))?;
    // The source port is chosen by connect(), for the whole address pair
    // (IP_BIND_ADDRESS_NO_PORT), not by bind() alone: bind(addr, 0) searches
    // the port range for a port with no owner at all, and with an earlier
    // run's sockets in TIME_WAIT on the source address that search took the
    // loadgen's thread long enough to send some handshakes 5 s after their
    // connect (the ramp fell from 2,000 to about 500 connects/s and the
    // gateway answered 408; tcpdump, 2026-12-03).
    crate::sys::set_flag(&socket, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)
        .map_err(|e| format!("socket: io {:?}", e.kind()))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind: io {:?}", e.kind()))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect: io {:?}", e.kind()))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("connect: io {:?}", e.kind()))?;
    Ok(stream)
}

/// Runs `connecting` (any protocol's connection set-up) within the connect
/// timeout and records how long it took, or counts why it failed.
pub async fn timed<T>(
    plan: &Plan,
    connecting: impl std::future::Future<Output = Result<T, String>>,
) -> Option<T> {
    let start = Instant::now();
    match tokio::time::timeout(plan.connect_timeout, connecting).await {
        Ok(Ok(ws)) => {
            plan.stats
                .record_connect(start.elapsed().as_micros() as u64);
            Some(ws)
        }
        Ok(Err(key)) => {
            plan.stats.error(key);
            None
        }
        Err(_) => {
            plan.stats.error("connect: timeout");
            None
        }
    }
}

/// How a read loop ended.
enum End {
    /// Churn: all snapshots received, the client closes now.
    Snapshots,
    /// The server closed, the stream ended or failed (already counted).
    Gone,
}

/// One client for the whole run. `settle` is called once, when the first
/// connection attempt has either failed or received all its snapshots (or waited
/// `SNAPSHOT_WAIT` for them), so the driver knows when ramp-up is over.
pub async fn run<S: Conn>(plan: Arc<Plan>, client: Client, settle: impl FnOnce()) {
    let mut settle = Some(settle);
    let mut tally = Tally::default();
    loop {
        let ws = timed(&plan, connect::<S>(&plan, client.source)).await;
        let Some(mut ws) = ws else {
            if let Some(f) = settle.take() {
                f();
            }
            if !plan.churn || plan.stats.done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let stats = &plan.stats;
        stats.open.fetch_add(1, Ordering::Relaxed);
        // Socket.IO: the subscribe event goes out once the namespace is connected.
        let sent = match plan.protocol {
            Protocol::Ticker | Protocol::Stomp => ws.send(client.subscribe.clone()).await,
            Protocol::Socketio | Protocol::SocketioPolling | Protocol::Webrtc => Ok(()),
        };
        let end = match sent {
            Ok(()) => read_loop(&plan, &client, &mut ws, &mut tally, &mut settle).await,
            Err(e) => {
                stats.error(ws_error_key("send", &e));
                End::Gone
            }
        };
        if let Some(f) = settle.take() {
            f();
        }
        if let End::Snapshots = end {
            close(&plan, &mut ws).await;
        }
        stats.open.fetch_sub(1, Ordering::Relaxed);
        if !plan.churn || stats.done() {
            return;
        }
    }
}

/// Reads frames until the server goes away, or (churn) until all snapshots came.
async fn read_loop<S: Conn>(
    plan: &Plan,
    client: &Client,
    ws: &mut Ws<S>,
    tally: &mut Tally,
    settle: &mut Option<impl FnOnce()>,
) -> End {
    let stats = &plan.stats;
    let mut progress = Progress::start();
    let snapshot_deadline = tokio::time::sleep(SNAPSHOT_WAIT);
    tokio::pin!(snapshot_deadline);
    let end = loop {
        let next = tokio::select! {
            m = ws.next() => m,
            _ = &mut snapshot_deadline, if !progress.complete && settle.is_some() => {
                if let Some(f) = settle.take() {
                    f();
                }
                continue;
            }
        };
        let (bytes, result) = match next {
            Some(Ok(Message::Text(t))) if plan.protocol == Protocol::Socketio => {
                tally.reset();
                let reply = match frame::read_socketio(t.as_bytes(), now_us(), tally) {
                    Ok(SioAction::None) => None,
                    Ok(SioAction::Reply(packet)) => Some(Message::text(packet)),
                    Ok(SioAction::Subscribe) => {
                        progress = Progress::start();
                        Some(client.subscribe.clone())
                    }
                    Ok(SioAction::Closed) => {
                        stats.close("socketio");
                        break End::Gone;
                    }
                    Err(_) => {
                        stats.error("parse: socketio");
                        continue;
                    }
                };
                if let Some(m) = reply {
                    if let Err(e) = ws.send(m).await {
                        stats.error(ws_error_key("send", &e));
                        break End::Gone;
                    }
                    continue;
                }
                (t.len(), Ok(()))
            }
            Some(Ok(Message::Text(t))) if plan.protocol == Protocol::Stomp => {
                tally.reset();
                let r = frame::read_stomp(t.as_bytes(), now_us(), tally).map_err(|_| "stomp");
                (t.len(), r)
            }
            Some(Ok(Message::Text(t))) => {
                tally.reset();
                let r = frame::read_json(t.as_bytes(), now_us(), tally).map_err(|_| "json");
                (t.len(), r)
            }
            Some(Ok(Message::Binary(b))) => {
                tally.reset();
                let r = frame::read_msgpack(&b, now_us(), tally).map_err(|_| "msgpack");
                (b.len(), r)
            }
            Some(Ok(Message::Close(frame))) => {
                let code =
                    frame.map_or_else(|| "none".to_owned(), |f| u16::from(f.code).to_string());
                stats.close(code);
                break End::Gone;
            }
            Some(Ok(_)) => continue, // ping (answered by tungstenite), pong, raw frame
            Some(Err(e)) => {
                stats.error(ws_error_key("read", &e));
                break End::Gone;
            }
            None => {
                stats.close("eof");
                break End::Gone;
            }
        };
        if plan.quickack {
            crate::sys::quickack(ws.get_ref().tcp());
        }
        if let Err(kind) = result {
            stats.error(format!("parse: {kind}"));
            continue;
        }
        if progress.frame(stats, client, bytes, tally, settle) && plan.churn {
            break End::Snapshots;
        }
    };
    progress.end(stats);
    end
}

/// A subscription's way to completion: its snapshots counted until all came.
pub struct Progress {
    since: Instant,
    snapshots: u64,
    pub complete: bool,
}

impl Progress {
    /// Counting from now (the subscribe op is on its way).
    pub fn start() -> Progress {
        Progress {
            since: Instant::now(),
            snapshots: 0,
            complete: false,
        }
    }

    /// Records a frame of `bytes`; true when it completed the subscription
    /// (then the client counts as subscribed and is settled).
    pub fn frame(
        &mut self,
        stats: &Stats,
        client: &Client,
        bytes: usize,
        tally: &Tally,
        settle: &mut Option<impl FnOnce()>,
    ) -> bool {
        stats.record_frame(client.id, bytes, tally);
        self.snapshots += tally.snapshots;
        if self.complete || self.snapshots < client.symbols {
            return false;
        }
        self.complete = true;
        stats.record_all_snapshots(self.since.elapsed().as_micros() as u64);
        stats.subscribed.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = settle.take() {
            f();
        }
        true
    }

    /// The connection is gone: a complete subscription no longer counts.
    pub fn end(&self, stats: &Stats) {
        if self.complete {
            stats.subscribed.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Churn: a normal close; once the server's close frame is back (the WebSocket
/// close handshake is complete) the TCP connection is reset (SO_LINGER 0) instead
/// of waiting for the server's FIN, so neither side piles up TIME_WAIT sockets.
async fn close<S: Conn>(plan: &Plan, ws: &mut Ws<S>) {
    let stats = &plan.stats;
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if let Err(e) = ws.close(Some(frame)).await {
        stats.error(ws_error_key("close", &e));
        return;
    }
    let reply = tokio::time::timeout(CLOSE_WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return false,
            }
        }
    })
    .await;
    match reply {
        Ok(true) => {
            let _ = ws.get_ref().tcp().set_zero_linger();
            if stats.measuring() {
                stats.cycles_measured.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(false) => stats.error("close: no close frame from the server"),
        Err(_) => stats.error("close: timeout"),
    }
}
