//! WebSocket ticker.v1 at `/ws`: subprotocol negotiation (`ticker.v1.json`,
//! `ticker.v1.msgpack`, or `?format=`; STOMP and Socket.IO share the
//! upgrade), then the [driver](super::driver) with the ticker.v1 wire
//! protocol ([`TickerV1`]).
//!
//! The upgrade is served by actix-http's upgrade service ([`upgrade`]): after
//! the 101 the connection is the gateway's, read and written from its own task
//! without actix's dispatcher, read and write buffers (measured in
//! `bench/README.md`, "The delivery engine").

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_codec::{Framed, FramedParts};
use actix_http::body::BodySize;
use actix_http::h1::Message;
use actix_http::{h1, ConnectionType, Request, Response};
use actix_web::http::header;
use actix_web::{web, HttpResponse, ResponseError};
use bytes::BytesMut;
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::driver::{self, Connection, Liveness, Wire};
use super::socket::{
    self, ws_close, ClientStream, DirectSocket, Incoming, IntoClientStream, PollRequest, Reader,
    Sink,
};
use super::socketio::{self, Carrier, Handshake, SocketIo};
use super::stomp::{self, Stomp, Wishes};
use super::ticker_v1::TickerV1;
use super::{CloseCode, Ended, TransportContext};
use crate::auth::Refusal;
use crate::http::origins::{Origins, Verdict};
use crate::http::ApiError;
use crate::session::protocol::{ErrorCode, Format};
use crate::session::Access;

/// Subprotocols we speak, in no particular order (the client's order decides).
const SUBPROTOCOLS: [&str; 5] = [
    "ticker.v1.json",
    "ticker.v1.msgpack",
    stomp::SUBPROTOCOLS[0],
    stomp::SUBPROTOCOLS[1],
    stomp::SUBPROTOCOLS[2],
];

/// The protocol a new WebSocket session speaks.
#[derive(Clone, Copy, Debug)]
enum Speaks {
    TickerV1(Format),
    Stomp,
    /// With the test-only echo of the protocol suites, or serving quotes.
    SocketIo(Option<socketio::conformance::Level>),
}

/// What an accepted WebSocket is for.
enum Accepted {
    /// A new session.
    Session(Speaks),
    /// Engine.IO's upgrade of the polling session this driver runs (it has
    /// its place under the connection limit already).
    Upgrade(mpsc::Sender<PollRequest>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsParams {
    format: Option<String>,
    /// Credentials: read by the authentication hook (PROTOCOL.md section 9).
    #[serde(rename = "ticket")]
    _ticket: Option<serde::de::IgnoredAny>,
    #[serde(rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
}

/// `GET /ws` without `Connection: upgrade` (upgrades go to [`upgrade`]).
pub async fn ws_endpoint() -> Result<HttpResponse, ApiError> {
    Err(ApiError::bad_request(
        "expected a WebSocket upgrade: no Connection: upgrade header",
    ))
}

/// Every request that asks for a protocol upgrade. actix-http hands it over with
/// its connection; `/ws` becomes a WebSocket the gateway owns, anything else is
/// answered with a JSON error and closed.
///
/// Once the 101 is out, the connection's life is a task of its own and this
/// future ends, so actix's dispatcher for the connection (sized for any HTTP
/// request) is freed; the task's future is exactly its kind's size (a
/// ticker.v1 session carries no room for STOMP's or Socket.IO's state). The
/// connection keeps its place under `server.max_connections`, and shutdown
/// waits for those places (`app.rs`), not for actix's count. Idle memory per
/// connection is mostly this future (`bench/README.md`, "The delivery engine").
pub async fn upgrade<T>(
    ctx: Arc<TransportContext>,
    req: Request,
    framed: Framed<T, h1::Codec>,
) -> Result<(), actix_http::Error>
where
    T: IntoClientStream + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some((io, read_buf, speaks, hook)) = Box::pin(handshake(&ctx, req, framed)).await else {
        return Ok(());
    };
    let io = Rc::new(io.into_client_stream());
    match speaks {
        Accepted::Session(speaks) => {
            let access = ctx.access_or_pending(hook);
            serve(ctx, io, read_buf, speaks, access);
        }
        Accepted::Upgrade(driver) => {
            actix_web::rt::spawn(Box::pin(socketio::upgrade::probe(
                ctx, io, read_buf, driver,
            )));
        }
    }
    Ok(())
}

/// The socket, what the client sent after its request, and what it speaks.
type Handshaken<T> = (T, BytesMut, Accepted, Hook);

/// Answers the upgrade request: the 101, or a JSON error (then `None`).
async fn handshake<T>(
    ctx: &TransportContext,
    req: Request,
    mut framed: Framed<T, h1::Codec>,
) -> Option<Handshaken<T>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let accepted = accept(ctx, &req);
    // Nothing of the request is kept for the connection's life.
    drop(req);
    let (response, speaks, hook) = match accepted {
        Ok(accepted) => accepted,
        Err(e) => {
            refuse(&mut framed, &e).await;
            return None;
        }
    };
    if framed
        .send(Message::Item((response.drop_body(), BodySize::None)))
        .await
        .is_err()
    {
        return None; // the peer is gone
    }
    // The socket and what the client sent after the handshake; the codec and
    // its write buffer go.
    let FramedParts { io, read_buf, .. } = framed.into_parts();
    Some((io, read_buf, speaks, hook))
}

/// An accepted WebSocket on the driver: everything is set up here; what is
/// left is one task whose future is exactly the size its wire needs, held in
/// the task itself (no box beside it).
fn serve(
    ctx: Arc<TransportContext>,
    stream: Rc<ClientStream>,
    read: BytesMut,
    speaks: Speaks,
    access: Access,
) {
    let cfg = &ctx.settings.session;
    let out = DirectSocket::new(
        stream.clone(),
        cfg.write_stall_timeout,
        Some(ctx.metrics.ws_sockets_open.clone()),
    );
    let (format, transport) = match speaks {
        Speaks::TickerV1(format) => (format, TickerV1::TRANSPORT),
        Speaks::Stomp => (Format::Json, Stomp::TRANSPORT),
        Speaks::SocketIo(_) => (Format::Json, SocketIo::TRANSPORT),
    };
    let Some(permit) = ctx.try_admit() else {
        let full = CloseCode::ServerFull;
        ctx.metrics
            .connections_closed
            .with_label_values(&[transport, &Ended::from(full).label()])
            .inc();
        ws_close(&out, Some((full.code(), "server full, try again later")));
        let stall = cfg.write_stall_timeout;
        actix_web::rt::spawn(async move { out.finish(stall, Duration::from_secs(1)).await });
        return;
    };
    let mut session = ctx.session(format, access);
    if let Speaks::SocketIo(_) = speaks {
        session = session.retry_auth();
    }
    let span = tracing::debug_span!("conn", transport, session = session.id(), ?format);
    let conn = Connection {
        wire: (),
        out,
        input: Some(Reader::Ws(Incoming::from_stream(
            stream,
            read,
            cfg.max_frame_bytes,
        ))),
        session,
        liveness: Liveness {
            heartbeat: cfg.heartbeat_interval,
            client_timeout: Some(cfg.client_timeout),
        },
        permit,
    };
    match speaks {
        Speaks::TickerV1(format) => {
            spawn(conn.with_wire(TickerV1(format)), ctx, span);
        }
        Speaks::Stomp => {
            let wishes = Wishes {
                heartbeat: cfg.heartbeat_interval,
                client_timeout: cfg.client_timeout,
            };
            let pending = conn.session.awaits_auth();
            let wire = Stomp::new(conn.session.id(), wishes, cfg.max_frame_bytes, pending);
            spawn(conn.with_wire(wire), ctx, span);
        }
        Speaks::SocketIo(echo) => {
            let handshake = Handshake::new(&ctx.settings);
            let mut conn = conn;
            conn.liveness = socketio::liveness(&ctx.settings.socketio);
            let pending = conn.session.awaits_auth();
            let mut wire =
                SocketIo::new(conn.session.id(), &handshake, Carrier::WebSocket, pending);
            if let Some(level) = echo {
                wire = wire.echoing(level);
            }
            spawn(conn.with_wire(wire), ctx, span);
        }
    }
}

/// Runs the driver as a task of its own, in the connection's span when
/// there is one: a disabled span (debug logging off) would be 40 bytes of
/// every idle connection's future doing nothing.
fn spawn<W: Wire + 'static, S: Sink + 'static>(
    conn: Connection<W, S>,
    ctx: Arc<TransportContext>,
    span: tracing::Span,
) {
    let driver = driver::drive(conn, ctx);
    if span.is_disabled() {
        actix_web::rt::spawn(driver);
    } else {
        actix_web::rt::spawn(driver.instrument(span));
    }
}

/// Answers a refused upgrade with its JSON error, then the connection closes.
async fn refuse<T>(framed: &mut Framed<T, h1::Codec>, e: &ApiError)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let body = serde_json::to_vec(e).unwrap_or_default();
    let mut head = Response::build(e.status_code())
        .content_type("application/json")
        .finish()
        .drop_body();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let size = BodySize::Sized(body.len() as u64);
    // A peer that is gone already needs no answer.
    let _ = framed.send(Message::Item((head, size))).await;
    let _ = framed.send(Message::Chunk(Some(body.into()))).await;
    let _ = framed.send(Message::Chunk(None)).await;
}

/// `/ws?format=`: the format without a subprotocol.
pub(crate) fn ws_format(query: &str) -> Result<Format, ApiError> {
    let params = web::Query::<WsParams>::from_query(query)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    match params.format.as_deref() {
        None | Some("json") => Ok(Format::Json),
        Some("msgpack") => Ok(Format::Msgpack),
        Some(other) => Err(ApiError::bad_request(format!(
            "format must be json or msgpack, not {other:?}"
        ))),
    }
}

/// `/socket.io/?EIO=4&transport=websocket[&sid=..]`: Engine.IO 4 on a
/// WebSocket of its own, or the upgrade of polling session `sid` (its driver).
fn socketio_query(
    ctx: &TransportContext,
    query: &str,
) -> Result<Option<mpsc::Sender<PollRequest>>, ApiError> {
    let params = web::Query::<std::collections::HashMap<String, String>>::from_query(query)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    match params.get("EIO").map(String::as_str) {
        Some("4") => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "Engine.IO protocol version 4 is served (EIO=4), not {other:?}"
            )))
        }
    }
    match params.get("transport").map(String::as_str) {
        Some("websocket") => {}
        other => {
            return Err(ApiError::bad_request(format!(
                "a WebSocket upgrade needs transport=websocket, not {other:?}"
            )))
        }
    }
    params
        .get("sid")
        .map(|sid| {
            ctx.engines
                .get(sid)
                .map_err(|_| ApiError::bad_request(format!("session ID unknown: {sid}")))
        })
        .transpose()
}

/// What the authentication hook said of an upgrade request.
type Hook = Result<Option<Access>, Refusal>;

/// The handshake's checks: the 101 response, the protocol and what the
/// authentication hook said. The upgrade completes whatever it said (a refused
/// ticker.v1 or STOMP client is told on the WebSocket, then closed with 4001
/// or 1008); only Socket.IO refuses a bad credential at the handshake (401).
fn accept(
    ctx: &TransportContext,
    req: &Request,
) -> Result<(actix_http::Response<()>, Accepted, Hook), ApiError> {
    let websocket = req
        .head()
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !websocket {
        // actix-http hands over WebSocket upgrades only (an h2c upgrade is
        // served as a plain request); anything else that came here is refused.
        return Err(ApiError::bad_request(
            "only WebSocket upgrades are served; send the request without Upgrade",
        ));
    }
    if ctx.origins.judge(req.head()) == Verdict::Refused {
        return Err(Origins::refusal());
    }
    let query = req.uri().query().unwrap_or("");
    let socketio = match req.path() {
        "/ws" => None,
        path if path == socketio::PATH || socketio::echo_at(&ctx.settings, path).is_some() => {
            Some(socketio_query(ctx, query)?)
        }
        other => {
            return Err(ApiError::new(
                404,
                ErrorCode::NotFound,
                format!("no WebSocket endpoint at {other}"),
            ))
        }
    };
    let ours: &[&'static str] = if socketio.is_some() {
        &[]
    } else {
        &SUBPROTOCOLS
    };
    let (mut response, protocol) = socket::handshake(req.head(), ours)
        .map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {e}")))?;
    let speaks = match (socketio, protocol) {
        (Some(Some(driver)), _) => Accepted::Upgrade(driver),
        (Some(None), _) => {
            let echo = socketio::echo_at(&ctx.settings, req.path());
            Accepted::Session(Speaks::SocketIo(echo))
        }
        (None, Some("ticker.v1.msgpack")) => Accepted::Session(Speaks::TickerV1(Format::Msgpack)),
        (None, Some(p)) if stomp::SUBPROTOCOLS.contains(&p) => Accepted::Session(Speaks::Stomp),
        (None, Some(_)) => Accepted::Session(Speaks::TickerV1(Format::Json)),
        (None, None) => Accepted::Session(Speaks::TickerV1(ws_format(query)?)),
    };
    let hook = match speaks {
        // An upgrade joins a session that is authenticated already.
        Accepted::Upgrade(_) => Ok(None),
        Accepted::Session(Speaks::SocketIo(_)) => Ok(ctx.authenticate(req.head())?),
        Accepted::Session(_) => ctx.authenticate(req.head()),
    };
    Ok((response.finish().drop_body(), speaks, hook))
}
