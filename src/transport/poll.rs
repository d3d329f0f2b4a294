//! Long-polling at `/poll` (PROTOCOL.md section 6), on the same driver and
//! session core as every transport: `POST /poll` creates a session, whose
//! driver then runs on a [poll socket](super::socket::poll);
//! `GET /poll/{session}?wait=N` answers as soon as messages are pending, or
//! after `wait` seconds with an empty list; `POST /poll/{session}` takes one
//! client op and answers its replies (a body that is not an op: 400);
//! `DELETE /poll/{session}` ends it. A session not polled for
//! `session_timeout` expires; afterwards (and after DELETE) its id answers 410. Requests find their session's driver through
//! the [session registry](super::registry), whichever worker serves them.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::driver::{self, Connection, Input, Liveness, Wire};
use super::registry::{LookupError, SessionRegistry};
use super::socket::{PollRequest, PollSocket, Reader, Responder, SecondGet, Sink};
use super::{number, CloseCode, TransportContext};
use crate::http::ApiError;
use crate::session::encode::write_json_message;
use crate::session::protocol::{op_from_value, parse_op, ClientOp, ErrorCode, Format, ServerMsg};

/// Requests queued for one session's driver (a client has one or two in
/// flight; more wait for room).
const REQUEST_QUEUE: usize = 8;

/// The driver of session `id`: 404 if it never was, 410 once it ended or expired.
fn lookup(state: &TransportContext, id: &str) -> Result<mpsc::Sender<PollRequest>, ApiError> {
    state.sessions.get(id).map_err(|e| match e {
        LookupError::Unknown(_) => ApiError::new(404, ErrorCode::UnknownSession, e.to_string()),
        LookupError::Ended(_) => gone(id),
        LookupError::Unauthorized(_) => ApiError::of(ErrorCode::Unauthorized, e.to_string()),
    })
}

/// 410 for a session that ended.
fn gone(id: &str) -> ApiError {
    ApiError::new(
        410,
        ErrorCode::SessionExpired,
        format!("session {id} has ended or expired; create a new one with POST /poll"),
    )
}

/// Reads a request body up to `limit` bytes (413 beyond, before more is read).
pub(crate) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                413,
                ErrorCode::BadRequest,
                format!("body larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `{"session":..,"messages":[..]}` (`session` on creation only) from frames
/// of comma-joined messages.
fn respond(frames: &[Bytes], session: Option<&str>) -> HttpResponse {
    let mut body = BytesMut::with_capacity(64 + frames.iter().map(Bytes::len).sum::<usize>());
    body.put_slice(b"{");
    if let Some(id) = session {
        body.put_slice(b"\"session\":");
        // unwrap: a string always encodes.
        serde_json::to_writer((&mut body).writer(), id).expect("unwrap: JSON string");
        body.put_slice(b",");
    }
    body.put_slice(b"\"messages\":[");
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            body.put_slice(b",");
        }
        body.put_slice(frame);
    }
    body.put_slice(b"]}");
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(body.freeze())
}

/// Long-polling's wire protocol: a frame is messages joined by commas (the
/// response wraps them), client messages are JSON ops, and there is no
/// heartbeat or close frame: an unanswered `GET` ends empty.
struct PollJson;

impl Wire for PollJson {
    const TRANSPORT: &'static str = "poll";

    fn format(&self) -> Format {
        Format::Json
    }

    fn encode(&mut self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        if msgs.is_empty() {
            return;
        }
        let mut buf = BytesMut::with_capacity(msgs.len() * 96);
        for (i, m) in msgs.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            write_json_message(&mut buf, m);
        }
        emit(msgs, buf.freeze());
    }

    fn write(&self, out: &impl Sink, frame: &[u8]) {
        out.write(|buf| buf.extend_from_slice(frame));
    }

    fn heartbeat(&self, _out: &impl Sink) {}

    fn close(&self, out: &impl Sink, _close: Option<(u16, &str)>) {
        out.end();
    }

    fn decode(&mut self, payload: &[u8], _binary: bool, inputs: &mut dyn FnMut(Input)) {
        inputs(parse_op(payload, false).into());
    }
}

/// Runs a session that lives between requests on this worker until it ends,
/// then marks it ended in its `registry`.
pub(crate) fn spawn_parked<W: Wire + 'static>(
    conn: Connection<W, PollSocket>,
    ctx: Arc<TransportContext>,
    registry: fn(&TransportContext) -> &SessionRegistry<mpsc::Sender<PollRequest>>,
) {
    let id = conn.session.id().to_owned();
    let span = tracing::debug_span!("conn", transport = W::TRANSPORT, session = %id);
    actix_web::rt::spawn(
        async move {
            let closed = driver::drive(conn, ctx.clone()).await;
            let unauthorized = matches!(
                closed,
                Some(CloseCode::Unauthorized | CloseCode::TokenExpired)
            );
            registry(&ctx).end(&id, unauthorized);
        }
        .instrument(span),
    );
}

/// Sends `request` to session `id`'s driver and waits for its answer; 410 when
/// the session ends first.
async fn ask<T>(
    driver: &mpsc::Sender<PollRequest>,
    id: &str,
    request: impl FnOnce(oneshot::Sender<T>) -> PollRequest,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    driver.send(request(tx)).await.map_err(|_| gone(id))?;
    rx.await.map_err(|_| gone(id))
}

/// The subscribe op a `POST /poll` body (`{"symbols":[..],"max_rate":R}`, or
/// nothing) asks for, if any.
pub(crate) fn create_op(body: &[u8]) -> Result<Option<ClientOp>, ApiError> {
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?
    };
    let Value::Object(mut request) = request else {
        return Err(ApiError::bad_request(
            "body must be an object such as {\"symbols\":[\"AAPL\"],\"max_rate\":2}",
        ));
    };
    let subscribe = match request.remove("symbols") {
        None => {
            if let Some(k) = ["max_rate", "snapshot", "resume"]
                .iter()
                .find(|k| request.contains_key(**k))
            {
                return Err(ApiError::bad_request(format!(
                    "{k:?} applies to the \"symbols\" subscribed: send it with them"
                )));
            }
            None
        }
        Some(symbols) => {
            let mut op = json!({"op": "subscribe", "symbols": symbols});
            for key in ["max_rate", "snapshot", "resume"] {
                if let Some(v) = request.remove(key) {
                    op[key] = v;
                }
            }
            Some(op_from_value(op).map_err(|e| ApiError::bad_request(e.message))?)
        }
    };
    if let Some(k) = request.keys().next() {
        return Err(ApiError::bad_request(format!("unknown field {k:?}")));
    }
    Ok(subscribe)
}

/// `POST /poll`: `{"symbols":[..],"max_rate":R}` → a new session with its first
/// messages (welcome, subscribed, snapshots; errors for bad symbols).
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let access = state.authenticate_http(req.head())?;
    let body = read_body(payload, state.settings.session.max_frame_bytes).await?;
    let subscribe = create_op(&body)?;
    let permit = state.admit_http()?;
    let mut session = state.session(Format::Json, access);
    if let Some(op) = subscribe {
        session.handle_op(op, std::time::Instant::now());
        // A symbol the principal may not see refuses the session (403), as SSE
        // and the quote API do; other refusals are messages of the session.
        if let Some(e) = session
            .error_of(ErrorCode::NotEntitled)
            .and_then(ApiError::from_reply)
        {
            return Err(e);
        }
    }
    let id = session.id().to_owned();
    let cfg = &state.settings;
    let (requests, incoming) = mpsc::channel(REQUEST_QUEUE);
    let (out, input) = PollSocket::new(incoming, cfg.poll.session_timeout, SecondGet::TakesOver);
    let conn = Connection {
        wire: PollJson,
        out,
        input: Some(Reader::Poll(Box::new(input))),
        session,
        // No heartbeat: a `GET` that waits `wait` seconds ends empty.
        liveness: Liveness {
            heartbeat: cfg.poll.session_timeout,
            client_timeout: None,
        },
        permit,
    };
    state.sessions.insert(&id, requests.clone());
    spawn_parked(conn, state.clone().into_inner(), |ctx| &ctx.sessions);
    // What the session queued (welcome, the subscribe's replies), written by
    // its driver like every answer.
    let frames = ask(&requests, &id, |reply| PollRequest::Op {
        body: None,
        reply: Responder(reply),
    })
    .await?
    .map_err(|_| gone(&id))?;
    Ok(respond(&frames, Some(&id)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollParams {
    wait: Option<String>,
}

/// How long a `GET /poll/{session}` with `query` (`wait=N`) waits at most.
pub(crate) fn wait_of(query: &str, max_wait: Duration) -> Result<Duration, ApiError> {
    let params = web::Query::<PollParams>::from_query(query)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let Some(w) = params.wait.as_deref() else {
        return Ok(Duration::from_secs(25).min(max_wait));
    };
    match number::finite("wait", w).map_err(ApiError::bad_request)? {
        // Longer than a Duration can hold is longer than max_wait too.
        s if s >= 0.0 => Ok(Duration::try_from_secs_f64(s)
            .unwrap_or(max_wait)
            .min(max_wait)),
        _ => Err(ApiError::bad_request(format!(
            "wait must be a number of seconds at least 0, not {w:?}"
        ))),
    }
}

/// `GET /poll/{session}?wait=N`.
pub async fn poll(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let wait = wait_of(req.query_string(), state.settings.poll.max_wait)?;
    let driver = lookup(&state, &path)?;
    let until = tokio::time::Instant::now() + wait;
    let frames = ask(&driver, &path, |reply| PollRequest::Wait { until, reply }).await?;
    // A second GET takes over here: never refused.
    Ok(respond(&frames.unwrap_or_default(), None))
}

/// `POST /poll/{session}`: one client op; answers its replies.
pub async fn op(
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let driver = lookup(&state, &path)?;
    let body = read_body(payload, state.settings.session.max_frame_bytes).await?;
    // A body that is not an op is refused as a request (as `POST /poll` refuses
    // one); the replies to an op, errors included, come in the messages.
    parse_op(&body, false).map_err(|e| ApiError::bad_request(e.message))?;
    let replies = ask(&driver, &path, |reply| PollRequest::Op {
        body: Some(body),
        reply: Responder(reply),
    })
    .await?;
    match replies {
        Ok(frames) => Ok(respond(&frames, None)),
        Err(CloseCode::TooManyMessages) => Err(ApiError::new(
            429,
            ErrorCode::RateLimited,
            format!(
                "more than {} messages per second, again and again; session {} ended",
                state.settings.session.client_msgs_per_sec,
                path.as_str()
            ),
        )),
        Err(_) => Err(gone(&path)),
    }
}

/// `DELETE /poll/{session}`: ends the session.
pub async fn delete(
    path: web::Path<String>,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let driver = lookup(&state, &path)?;
    driver
        .send(PollRequest::End)
        .await
        .map_err(|_| gone(&path))?;
    Ok(HttpResponse::Ok().json(json!({"session": path.as_str(), "closed": true})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_absent_or_a_number_of_seconds_up_to_the_maximum() {
        let max = Duration::from_secs(30);
        assert_eq!(wait_of("", max).unwrap(), Duration::from_secs(25));
        assert_eq!(
            wait_of("wait=1.5", max).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(wait_of("wait=1e9", max).unwrap(), max);
        assert_eq!(wait_of("wait=0", max).unwrap(), Duration::ZERO);
        for bad in [
            "wait=",
            "wait=-1",
            "wait=soon",
            "wait=NaN",
            "wait=inf",
            "other=1",
        ] {
            let e = wait_of(bad, max).expect_err(bad);
            assert_eq!(e.status, 400, "{bad}");
        }
    }
}
