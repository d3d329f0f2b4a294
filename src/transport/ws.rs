//! WebSocket ticker.v1 at `/ws`: subprotocol negotiation (`ticker.v1.json`,
//! `ticker.v1.msgpack`, or `?format=`), then the [driver](super::driver) with
//! the ticker.v1 wire protocol: every server frame an array of messages (text
//! for JSON, binary for MessagePack), client frames one op each, the heartbeat a
//! ping, and close frames with the codes of PROTOCOL.md section 8.
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
use actix_http::ws::OpCode;
use actix_http::{h1, ConnectionType, Request, Response};
use actix_web::http::header;
use actix_web::{web, HttpResponse, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::driver::{self, Connection, Input, Liveness, Wire, FRAME_BYTES};
use super::socket::{
    self, ws_close, ws_frame, ClientStream, DirectSocket, Incoming, IntoClientStream, PollRequest,
    Reader, Sink,
};
use super::socketio::{self, Carrier, Handshake, SocketIo};
use super::stomp::{self, Stomp, Wishes};
use super::{CloseCode, Ended, TransportContext};
use crate::auth::Refusal;
use crate::http::origins::{Origins, Verdict};
use crate::http::ApiError;
use crate::session::encode::{encode_frame, encode_frames};
use crate::session::protocol::{self, ErrorCode, Format, ServerMsg};
use crate::session::Access;

/// Subprotocols we speak, in no particular order (the client's order decides).
const SUBPROTOCOLS: [&str; 5] = [
    "ticker.v1.json",
    "ticker.v1.msgpack",
    stomp::SUBPROTOCOLS[0],
    stomp::SUBPROTOCOLS[1],
    stomp::SUBPROTOCOLS[2],
];

thread_local! {
    /// The worker's buffer a batch's payload is put together in before its
    /// frame header (see [`TickerV1`]'s `write_batch`).
    static PAYLOAD: std::cell::Cell<BytesMut> = std::cell::Cell::new(BytesMut::new());
}

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

/// The ticker.v1 wire protocol over WebSocket frames.
struct TickerV1(Format);

impl Wire for TickerV1 {
    const TRANSPORT: &'static str = "ws";

    fn format(&self) -> Format {
        self.0
    }

    fn encode(&mut self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        encode_frames(self.0, msgs, FRAME_BYTES, emit);
    }

    fn write_batch(
        &mut self,
        out: &impl Sink,
        msgs: &[ServerMsg],
        counted: &mut dyn FnMut(&[ServerMsg], usize),
    ) -> usize {
        if msgs.is_empty() {
            return 0;
        }
        let mut payload = PAYLOAD.take();
        let n = encode_frame(self.0, msgs, FRAME_BYTES, &mut payload);
        self.write(out, &payload);
        counted(&msgs[..n], payload.len());
        payload.clear();
        // A frame passes FRAME_BYTES by one message at most.
        if payload.capacity() <= FRAME_BYTES * 4 {
            PAYLOAD.set(payload);
        }
        n
    }

    fn write(&self, out: &impl Sink, frame: &[u8]) {
        let op = match self.0 {
            Format::Json => OpCode::Text,
            Format::Msgpack => OpCode::Binary,
        };
        ws_frame(out, op, frame);
    }

    fn heartbeat(&self, out: &impl Sink) {
        ws_frame(out, OpCode::Ping, &[]);
    }

    /// Answers a client ping (its payload is at most 125 bytes by RFC 6455, which
    /// the frame decoder enforces).
    fn pong(&self, out: &impl Sink, payload: &[u8]) {
        ws_frame(out, OpCode::Pong, payload);
    }

    fn close(&self, out: &impl Sink, close: Option<(u16, &str)>) {
        ws_close(out, close);
    }

    fn decode(&mut self, payload: &[u8], binary: bool, requests: &mut dyn FnMut(Input)) {
        requests(protocol::parse_op(payload, binary).into());
    }
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use actix_codec::Decoder;
    use actix_http::ws::{Codec, Frame};

    use super::*;

    /// A sink that keeps what is written.
    #[derive(Default)]
    struct Collect(RefCell<BytesMut>, RefCell<bool>);

    impl Sink for Collect {
        fn has_room(&self) -> bool {
            true
        }
        async fn writable(&self) {}
        async fn next_turn(&self) {}
        fn is_stalled(&self) -> bool {
            false
        }
        fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
            if !*self.1.borrow() {
                encode(&mut self.0.borrow_mut());
            }
        }
        fn end(&self) {
            *self.1.borrow_mut() = true;
        }
        fn abort(&self) {}
        fn flushed(&self) -> bool {
            true
        }
        fn unsent(&self) -> usize {
            0
        }
    }

    fn frames(out: &Collect) -> Vec<Frame> {
        let mut buf = out.0.borrow().clone();
        let mut codec = Codec::new().client_mode();
        let mut all = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            all.push(f);
        }
        assert!(buf.is_empty(), "trailing bytes");
        all
    }

    #[test]
    fn a_batch_written_in_place_is_the_frames_encode_and_write_make() {
        // Long enough that the batch makes three frames of FRAME_BYTES.
        let msgs: Vec<ServerMsg> = (0..3 * FRAME_BYTES / 200)
            .map(|i| ServerMsg::Pong {
                id: Some(serde_json::json!(format!("{i:0>180}"))),
            })
            .collect();
        for format in [Format::Json, Format::Msgpack] {
            let mut wire = TickerV1(format);
            let (direct, encoded) = (Collect::default(), Collect::default());
            let mut made = Vec::new();
            wire.encode(&msgs, &mut |part, frame| made.push((part.len(), frame)));
            assert_eq!(made.len(), 3, "{format:?}");
            for (_, frame) in &made {
                wire.write(&encoded, frame);
            }
            // In place, frame by frame, the same bytes and counts.
            let mut start = 0;
            for (n, frame) in &made {
                let mut told = Vec::new();
                let wrote = wire.write_batch(&direct, &msgs[start..], &mut |m, len| {
                    told.push((m.len(), len))
                });
                assert_eq!((wrote, &told[..]), (*n, &[(*n, frame.len())][..]));
                start += wrote;
            }
            assert_eq!(start, msgs.len());
            assert_eq!(*direct.0.borrow(), *encoded.0.borrow(), "{format:?}");
            assert_eq!(frames(&direct).len(), 3);
            assert_eq!(
                wire.write_batch(&direct, &[], &mut |_, _| panic!("counted")),
                0
            );
        }
    }

    #[test]
    fn frames_of_each_kind_and_nothing_after_the_close() {
        let out = Collect::default();
        TickerV1(Format::Json).write(&out, b"[1]");
        TickerV1(Format::Msgpack).write(&out, &[0x90]);
        TickerV1(Format::Json).pong(&out, b"p");
        TickerV1(Format::Json).heartbeat(&out);
        TickerV1(Format::Json).close(&out, Some((4008, &"é".repeat(200))));
        TickerV1(Format::Json).write(&out, b"[2]");
        let f = frames(&out);
        assert_eq!(f.len(), 5, "nothing after the close frame: {f:?}");
        assert_eq!(f[0], Frame::Text(Bytes::from_static(b"[1]")));
        assert_eq!(f[1], Frame::Binary(Bytes::from_static(&[0x90])));
        assert_eq!(f[2], Frame::Pong(Bytes::from_static(b"p")));
        assert_eq!(f[3], Frame::Ping(Bytes::new()));
        let Frame::Close(Some(reason)) = &f[4] else {
            panic!("close frame expected, got {:?}", f[4])
        };
        assert_eq!(u16::from(reason.code), 4008);
        // Cut to fit a control frame, on a character boundary.
        assert_eq!(reason.description.as_deref().map(str::len), Some(122));
    }
}
