//! Long-polling at `/poll` (PROTOCOL.md section 6), over the same session core:
//! `POST /poll` creates a session; `GET /poll/{session}?wait=N` answers as soon as
//! messages are pending, or after `wait` seconds with an empty list;
//! `POST /poll/{session}` takes one client op and answers its replies (a body
//! that is not an op: 400);
//! `DELETE /poll/{session}` ends it. A session not polled for `session_timeout`
//! expires; afterwards (and after DELETE) its id answers 410. Sessions wait between
//! requests in the [session registry](super::registry).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::registry::{LookupError, Parked};
use super::{CloseCode, FrameCounters, TransportContext};
use crate::http::ApiError;
use crate::session::encode::write_json_message;
use crate::session::protocol::{op_from_value, parse_op, ErrorCode, Format, ServerMsg};

/// The parked session `id`: 404 if it never was, 410 once it ended or expired.
fn lookup(state: &TransportContext, id: &str) -> Result<Arc<Parked>, ApiError> {
    state.sessions.get(id).map_err(|e| match e {
        LookupError::Unknown(_) => ApiError::new(404, ErrorCode::UnknownSession, e.to_string()),
        LookupError::Ended(_) => ApiError::new(
            410,
            ErrorCode::SessionExpired,
            format!("{e}; create a new one with POST /poll"),
        ),
    })
}

/// Reads a request body up to `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
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

/// `{"session":..,"messages":[..]}` (`session` on creation only), the messages
/// written from their cached encodings as on every other transport.
fn respond(msgs: &[ServerMsg], session: Option<&str>, counters: &FrameCounters) -> HttpResponse {
    let mut body = BytesMut::with_capacity(64 + msgs.len() * 96);
    body.put_slice(b"{");
    if let Some(id) = session {
        body.put_slice(b"\"session\":");
        // unwrap: a string always encodes.
        serde_json::to_writer((&mut body).writer(), id).expect("unwrap: JSON string");
        body.put_slice(b",");
    }
    body.put_slice(b"\"messages\":[");
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            body.put_slice(b",");
        }
        write_json_message(&mut body, m);
    }
    body.put_slice(b"]}");
    if !msgs.is_empty() {
        counters.frame(msgs, body.len());
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(body.freeze())
}

/// `POST /poll`: `{"symbols":[..],"max_rate":R}` → a new session with its first
/// messages (welcome, subscribed, snapshots; errors for bad symbols).
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let principal = state.authenticate(req.head())?;
    let body = read_body(payload, state.settings.session.max_frame_bytes).await?;
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?
    };
    let Value::Object(mut request) = request else {
        return Err(ApiError::bad_request(
            "body must be an object such as {\"symbols\":[\"AAPL\"],\"max_rate\":2}",
        ));
    };
    let subscribe = match request.remove("symbols") {
        None => {
            if let Some(k) = ["max_rate", "snapshot"]
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
            for key in ["max_rate", "snapshot"] {
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
    let permit = state.admit_http()?;
    let now = Instant::now();
    let mut session = state.session(Format::Json, principal);
    if let Some(op) = subscribe {
        session.handle_op(op, now);
    }
    let msgs = session.take_ready(now);
    let id = session.id().to_owned();
    let counters = FrameCounters::open(&state.metrics, "poll", Format::Json);
    let parked = state
        .sessions
        .park(session, state.message_limit(), counters, permit);
    let response = respond(&msgs, Some(&id), &parked.counters.lock());
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollParams {
    wait: Option<String>,
}

/// `GET /poll/{session}?wait=N`.
pub async fn poll(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<PollParams>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let max_wait = state.settings.poll.max_wait;
    let wait = match params.wait.as_deref() {
        None | Some("") => Duration::from_secs(25).min(max_wait),
        Some(w) => match w.parse::<f64>() {
            // Longer than a Duration can hold is longer than max_wait too.
            Ok(s) if s.is_finite() && s >= 0.0 => Duration::try_from_secs_f64(s)
                .unwrap_or(max_wait)
                .min(max_wait),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "wait must be a number of seconds, not {w:?}"
                )))
            }
        },
    };
    let entry = lookup(&state, &path)?;
    let attached = entry.attach();
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = state.shutdown.clone();
    let msgs = loop {
        let next = {
            let mut s = entry.session.lock().await;
            let now = Instant::now();
            if s.has_ready(now) {
                let msgs = s.take_ready(now);
                if !msgs.is_empty() {
                    break msgs;
                }
            }
            s.next_deadline()
        };
        if tokio::time::Instant::now() >= deadline {
            break Vec::new();
        }
        let wake = next.map_or(deadline, |n| {
            deadline.min(tokio::time::Instant::from_std(n))
        });
        tokio::select! {
            _ = entry.inbox.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
            _ = shutdown.wait_for(|s| *s) => break Vec::new(),
        }
    };
    drop(attached);
    let response = respond(&msgs, None, &entry.counters.lock());
    Ok(response)
}

/// `POST /poll/{session}`: one client op; answers its replies.
pub async fn op(
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let entry = lookup(&state, &path)?;
    let body = read_body(payload, state.settings.session.max_frame_bytes).await?;
    entry.touch();
    // A body that is not an op is refused as a request (as `POST /poll` refuses
    // one); the replies to an op, errors included, come in the messages.
    let op = parse_op(&body, false).map_err(|e| ApiError::bad_request(e.message))?;
    let now = Instant::now();
    let mut session = entry.session.lock().await;
    let admitted = entry.limit.lock().admit(&mut session, now);
    match admitted {
        Ok(true) => session.handle_op(op, now),
        Ok(false) => {}
        Err(code) => {
            drop(session);
            state.sessions.end(&path, code.into());
            return Err(ApiError::new(
                429,
                ErrorCode::RateLimited,
                format!(
                    "more than {} messages per second, again and again; session {} ended",
                    state.settings.session.client_msgs_per_sec,
                    path.as_str()
                ),
            ));
        }
    }
    let replies = session.take_replies();
    drop(session);
    // A waiting GET re-checks what changed (e.g. a new throttle rate).
    entry.inbox.wake();
    let response = respond(&replies, None, &entry.counters.lock());
    Ok(response)
}

/// `DELETE /poll/{session}`: ends the session.
pub async fn delete(
    path: web::Path<String>,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    lookup(&state, &path)?;
    state.sessions.end(&path, CloseCode::Normal.into());
    Ok(HttpResponse::Ok().json(json!({"session": path.as_str(), "closed": true})))
}
