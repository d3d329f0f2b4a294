//! Engine.IO's HTTP long-polling transport at `/socket.io/`: the handshake
//! `GET` creates a session whose driver runs on a [poll socket]; later `GET`s
//! (one at a time: a second one ends the session) take the packets written
//! meanwhile, joined by `\x1e`; `POST`s bring the client's packets, answered
//! `ok`. The handshake offers the upgrade to WebSocket (see `ws.rs`).
//!
//! [poll socket]: crate::transport::socket::poll

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::conformance::ENGINE_PATH;
use super::{echo_at, liveness, open_packet, Carrier, Handshake, SocketIo, SEPARATOR};
use crate::http::ApiError;
use crate::session::protocol::ErrorCode;
use crate::session::protocol::Format;
use crate::transport::driver::Connection;
use crate::transport::poll::{read_body, spawn_parked};
use crate::transport::socket::{PollRequest, PollSocket, Post, Reader, SecondGet};
use crate::transport::TransportContext;

/// Requests queued for one session's driver.
const REQUEST_QUEUE: usize = 8;

/// The query every Engine.IO request carries; `Ok(sid)` for polling.
fn polling_query(req: &HttpRequest, ctx: &TransportContext) -> Result<Option<String>, ApiError> {
    if req.path() == ENGINE_PATH && echo_at(&ctx.settings, ENGINE_PATH).is_none() {
        return Err(ApiError::new(404, ErrorCode::NotFound, "not found"));
    }
    let mut q = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?
        .into_inner();
    if q.get("EIO").map(String::as_str) != Some("4") {
        return Err(ApiError::bad_request(
            "unsupported protocol version: Engine.IO 4 is served (EIO=4)",
        ));
    }
    match q.get("transport").map(String::as_str) {
        Some("polling") => Ok(q.remove("sid")),
        Some("websocket") => Err(ApiError::bad_request(
            "transport=websocket needs a WebSocket upgrade",
        )),
        other => Err(ApiError::bad_request(format!(
            "transport unknown: {other:?} (polling or websocket)"
        ))),
    }
}

/// The driver of Engine.IO session `sid`, or 400.
fn lookup(ctx: &TransportContext, sid: &str) -> Result<mpsc::Sender<PollRequest>, ApiError> {
    ctx.engines
        .get(sid)
        .map_err(|_| ApiError::bad_request(format!("session ID unknown: {sid}")))
}

fn text(body: bytes::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=UTF-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(body)
}

/// `GET /socket.io/?EIO=4&transport=polling[&sid=..]`.
pub async fn get(
    req: HttpRequest,
    ctx: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let Some(sid) = polling_query(&req, &ctx)? else {
        return handshake(&req, &ctx);
    };
    let driver = lookup(&ctx, &sid)?;
    let sio = &ctx.settings.socketio;
    // The driver's ping answers it within ping_interval; this is the backstop.
    let until = tokio::time::Instant::now() + sio.ping_interval + sio.ping_timeout;
    let (reply, answer) = oneshot::channel();
    let ended = || ApiError::bad_request(format!("session {sid} has ended"));
    driver
        .send(PollRequest::Wait { until, reply })
        .await
        .map_err(|_| ended())?;
    let frames = answer.await.map_err(|_| ended())?.ok_or_else(|| {
        ApiError::bad_request("a second GET while one was waiting; session ended")
    })?;
    let mut body = BytesMut::new();
    for f in &frames {
        if !body.is_empty() {
            body.put_u8(SEPARATOR);
        }
        body.put_slice(f);
    }
    if body.is_empty() {
        body.put_u8(b'6'); // noop: Engine.IO has no empty payload
    }
    Ok(text(body.freeze()))
}

/// A new session: its driver starts, the answer is the open packet.
fn handshake(
    req: &HttpRequest,
    ctx: &web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    // A bad credential in the request is refused here; none at all waits for
    // the CONNECT packet's `auth: {token}`.
    let hook = ctx.authenticate(req.head()).map_err(ApiError::from)?;
    let permit = ctx.admit_http()?;
    let session = ctx
        .session(Format::Json, ctx.access_or_pending(Ok(hook)))
        .retry_auth();
    let sid = session.id().to_owned();
    let handshake = Handshake::new(&ctx.settings);
    let liveness = liveness(&ctx.settings.socketio);
    let silence = liveness
        .client_timeout
        .unwrap_or(ctx.settings.socketio.ping_timeout);
    let (requests, incoming) = mpsc::channel(REQUEST_QUEUE);
    let (out, input) = PollSocket::new(incoming, silence, SecondGet::EndsTheSession);
    let mut wire = SocketIo::new(&sid, &handshake, Carrier::Polling, session.awaits_auth());
    if let Some(level) = echo_at(&ctx.settings, req.path()) {
        wire = wire.echoing(level);
    }
    let conn = Connection {
        wire,
        out,
        input: Some(Reader::Poll(Box::new(input))),
        session,
        liveness,
        permit,
    };
    ctx.engines.insert(&sid, requests);
    spawn_parked(conn, ctx.clone().into_inner(), |ctx| &ctx.engines);
    Ok(text(open_packet(&sid, &handshake, Carrier::Polling).into()))
}

/// `POST /socket.io/?EIO=4&transport=polling&sid=..`: the client's packets,
/// answered `ok` once the session took them in (or closed as they asked); 400
/// when it ended instead (a malformed packet ends it) or another `POST` was
/// under way.
pub async fn post(
    req: HttpRequest,
    payload: web::Payload,
    ctx: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let sid = polling_query(&req, &ctx)?
        .ok_or_else(|| ApiError::bad_request("a POST needs the session's sid"))?;
    let driver = lookup(&ctx, &sid)?;
    let ended = || ApiError::bad_request(format!("session {sid} has ended"));
    // The session hears of the POST before its body is read: two at once end it.
    let (body_tx, body) = oneshot::channel();
    let (taken, taken_rx) = oneshot::channel();
    driver
        .send(PollRequest::Post(Post { body, taken }))
        .await
        .map_err(|_| ended())?;
    let limit = ctx.settings.session.max_frame_bytes;
    let body = read_body(payload, limit).await?;
    // A payload that ends with the close packet ended the session as it asked.
    let closes = body.rsplit(|&b| b == SEPARATOR).next() == Some(b"1");
    body_tx.send(body).map_err(|_| ended())?;
    if taken_rx.await.is_err() && !closes {
        return Err(ended());
    }
    Ok(HttpResponse::Ok().content_type("text/html").body("ok"))
}

/// Any other method on the Engine.IO path.
pub async fn other_method(
    req: HttpRequest,
    ctx: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    polling_query(&req, &ctx)?;
    Err(ApiError::bad_request("Engine.IO takes GET and POST"))
}
