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
use actix_http::{h1, ConnectionType, Request, Response};
use actix_web::http::header;
use actix_web::rt::net::TcpStream;
use actix_web::{web, HttpResponse, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use serde::Deserialize;
use tracing::Instrument;

use super::driver::{self, Connection, Liveness, Wire, FRAME_BYTES};
use super::socket::{self, DirectSocket, Incoming, Sink};
use super::{CloseCode, Ended, TransportContext};
use crate::http::ApiError;
use crate::session::encode::encode_frames;
use crate::session::protocol::{self, BadRequest, ClientOp, ErrorCode, Format, ServerMsg};
use crate::session::Principal;

/// Subprotocols we speak, in no particular order (the client's order decides).
const SUBPROTOCOLS: [&str; 2] = ["ticker.v1.json", "ticker.v1.msgpack"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsParams {
    format: Option<String>,
}

/// The ticker.v1 wire protocol over WebSocket frames.
struct TickerV1(Format);

impl Wire for TickerV1 {
    const TRANSPORT: &'static str = "ws";

    fn format(&self) -> Format {
        self.0
    }

    fn encode(&self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        encode_frames(self.0, msgs, FRAME_BYTES, emit);
    }

    fn write(&self, out: &impl Sink, frame: &[u8]) {
        out.data(self.0, frame);
    }

    fn heartbeat(&self, out: &impl Sink) {
        out.ping();
    }

    fn pong(&self, out: &impl Sink, payload: &[u8]) {
        out.pong(payload);
    }

    fn close(&self, out: &impl Sink, close: Option<(u16, &str)>) {
        out.close(close);
    }

    fn decode(&self, payload: &[u8], binary: bool) -> Result<ClientOp, BadRequest> {
        protocol::parse_op(payload, binary)
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
pub async fn upgrade(
    ctx: Arc<TransportContext>,
    req: Request,
    mut framed: Framed<TcpStream, h1::Codec>,
) -> Result<(), actix_http::Error> {
    let accepted = accept(&ctx, &req);
    // Nothing of the request is kept for the connection's life.
    drop(req);
    let (response, format, principal) = match accepted {
        Ok(accepted) => accepted,
        Err(e) => {
            // Boxed: only refused upgrades pay for its state.
            Box::pin(refuse(&mut framed, &e)).await;
            return Ok(());
        }
    };
    if framed
        .send(Message::Item((response.drop_body(), BodySize::None)))
        .await
        .is_err()
    {
        return Ok(()); // the peer is gone
    }
    // The socket and what the client sent after the handshake; the codec and
    // its write buffer go.
    let FramedParts { io, read_buf, .. } = framed.into_parts();
    serve(ctx, Rc::new(io), read_buf, format, principal).await;
    Ok(())
}

/// Runs an accepted WebSocket on the driver.
async fn serve(
    ctx: Arc<TransportContext>,
    stream: Rc<TcpStream>,
    read: BytesMut,
    format: Format,
    principal: Principal,
) {
    let cfg = &ctx.settings.session;
    let out = DirectSocket::new(
        stream.clone(),
        cfg.write_stall_timeout,
        Some(ctx.metrics.ws_sockets_open.clone()),
    );
    let Some(permit) = ctx.try_admit() else {
        let full = CloseCode::ServerFull;
        ctx.metrics
            .connections_closed
            .with_label_values(&["ws", &Ended::from(full).label()])
            .inc();
        out.close(Some((full.code(), "server full, try again later")));
        out.finish(cfg.write_stall_timeout, Duration::from_secs(1))
            .await;
        return;
    };
    let session = ctx.session(format, principal);
    let span = tracing::debug_span!("conn", transport = "ws", session = session.id(), ?format);
    let conn = Connection {
        wire: TickerV1(format),
        out,
        input: Some(Incoming::from_stream(stream, read, cfg.max_frame_bytes)),
        session,
        liveness: Liveness {
            heartbeat: cfg.heartbeat_interval,
            client_timeout: Some(cfg.client_timeout),
        },
        permit,
    };
    driver::drive(conn, ctx.clone()).instrument(span).await;
}

/// Answers a refused upgrade with its JSON error, then the connection closes.
async fn refuse(framed: &mut Framed<TcpStream, h1::Codec>, e: &ApiError) {
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

/// The handshake's checks: the 101 response, the format and the principal.
fn accept(
    ctx: &TransportContext,
    req: &Request,
) -> Result<(actix_http::Response<()>, Format, Principal), ApiError> {
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
    if req.path() != "/ws" {
        return Err(ApiError::new(
            404,
            ErrorCode::NotFound,
            format!("no WebSocket endpoint at {}", req.path()),
        ));
    }
    let params = web::Query::<WsParams>::from_query(req.uri().query().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let query_format = match params.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("msgpack") => Format::Msgpack,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be json or msgpack, not {other:?}"
            )))
        }
    };
    let (mut response, protocol) = socket::handshake(req.head(), &SUBPROTOCOLS)
        .map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {e}")))?;
    let format = match protocol {
        Some("ticker.v1.msgpack") => Format::Msgpack,
        Some(_) => Format::Json,
        None => query_format,
    };
    let principal = ctx.authenticate(req.head())?;
    Ok((response.finish().drop_body(), format, principal))
}
