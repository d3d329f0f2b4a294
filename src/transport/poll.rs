//! Long-polling at `/poll` (PROTOCOL.md section 6), over the same session core:
//! `POST /poll` creates a session; `GET /poll/{session}?wait=N` answers as soon as
//! messages are pending, or after `wait` seconds with an empty list;
//! `POST /poll/{session}` takes one client op and answers its replies;
//! `DELETE /poll/{session}` ends it. A session not polled for `session_timeout`
//! expires; afterwards (and after DELETE) its id answers 410.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;

use super::{CloseCode, Ended, FrameCounters, MessageLimit, TransportContext};
use crate::http::ApiError;
use crate::hub::Inbox;
use crate::session::protocol::{op_from_value, Format, ServerMsg};
use crate::session::Session;

/// How long the id of an ended session keeps answering 410 rather than 404.
const TOMBSTONE_FACTOR: u32 = 10;

/// One long-polling session.
struct PollEntry {
    session: tokio::sync::Mutex<Session>,
    inbox: Arc<Inbox>,
    last_seen: Mutex<Instant>,
    /// GETs waiting right now (a session being polled never expires).
    polling: AtomicUsize,
    limit: Mutex<MessageLimit>,
    counters: Mutex<FrameCounters>,
    _permit: OwnedSemaphorePermit,
}

impl PollEntry {
    fn touch(&self) {
        *self.last_seen.lock() = Instant::now();
    }
}

/// Decrements the in-flight poll count however the request ends.
struct Polling<'a>(&'a AtomicUsize);

impl Drop for Polling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every live long-polling session, plus recently ended ids (for 410).
#[derive(Default)]
pub struct PollRegistry {
    live: Mutex<HashMap<String, Arc<PollEntry>>>,
    ended: Mutex<HashMap<String, Instant>>,
}

impl PollRegistry {
    fn get(&self, id: &str) -> Result<Arc<PollEntry>, ApiError> {
        if let Some(e) = self.live.lock().get(id) {
            return Ok(e.clone());
        }
        if self.ended.lock().contains_key(id) {
            return Err(ApiError::new(
                410,
                "session_expired",
                format!("session {id} has ended or expired; create a new one with POST /poll"),
            ));
        }
        Err(ApiError::new(
            404,
            "unknown_session",
            format!("no session {id}"),
        ))
    }

    fn end(&self, id: &str, reason: Ended) {
        if let Some(e) = self.live.lock().remove(id) {
            e.counters.lock().closed(reason);
            self.ended.lock().insert(id.to_owned(), Instant::now());
        }
    }

    /// Expires sessions idle longer than `timeout` and forgets old ended ids.
    pub fn reap(&self, timeout: Duration) {
        let now = Instant::now();
        let idle: Vec<String> = self
            .live
            .lock()
            .iter()
            .filter(|(_, e)| {
                e.polling.load(Ordering::Acquire) == 0
                    && now.saturating_duration_since(*e.last_seen.lock()) > timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.end(&id, Ended::Expired);
        }
        self.ended
            .lock()
            .retain(|_, at| now.saturating_duration_since(*at) < timeout * TOMBSTONE_FACTOR);
    }

    /// Ends every session (graceful shutdown).
    pub fn end_all(&self) {
        let ids: Vec<String> = self.live.lock().keys().cloned().collect();
        for id in ids {
            self.end(&id, CloseCode::GoingAway.into());
        }
    }
}

/// Reads a request body up to `limit` bytes.
async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                413,
                "bad_request",
                format!("body larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[derive(serde::Serialize)]
struct PollBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    messages: &'a [ServerMsg],
}

fn respond(msgs: &[ServerMsg], session: Option<&str>, counters: &FrameCounters) -> HttpResponse {
    let body = PollBody {
        session,
        messages: msgs,
    };
    // unwrap: our messages hold only strings, integers and finite floats.
    let text = serde_json::to_string(&body).expect("unwrap: JSON encoding");
    if !msgs.is_empty() {
        counters.frame(msgs, text.len());
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(text)
}

/// `POST /poll`: `{"symbols":[..],"max_rate":R}` → a new session with its first
/// messages (welcome, subscribed, snapshots; errors for bad symbols).
pub async fn create(
    payload: web::Payload,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
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
        None => None,
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
    let mut session = state.session(Format::Json);
    if let Some(op) = subscribe {
        session.handle_op(op, now);
    }
    let msgs = session.take_ready(now);
    let id = session.id().to_owned();
    let entry = Arc::new(PollEntry {
        inbox: session.inbox().clone(),
        session: tokio::sync::Mutex::new(session),
        last_seen: Mutex::new(now),
        polling: AtomicUsize::new(0),
        limit: Mutex::new(state.message_limit()),
        counters: Mutex::new(FrameCounters::open(&state.metrics, "poll", Format::Json)),
        _permit: permit,
    });
    let response = respond(&msgs, Some(&id), &entry.counters.lock());
    state.polls.live.lock().insert(id, entry);
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
            Ok(s) if s.is_finite() && s >= 0.0 => Duration::from_secs_f64(s).min(max_wait),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "wait must be a number of seconds, not {w:?}"
                )))
            }
        },
    };
    let entry = state.polls.get(&path)?;
    entry.polling.fetch_add(1, Ordering::AcqRel);
    let _polling = Polling(&entry.polling);
    entry.touch();
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
    entry.touch();
    let response = respond(&msgs, None, &entry.counters.lock());
    Ok(response)
}

/// `POST /poll/{session}`: one client op; answers its replies.
pub async fn op(
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let entry = state.polls.get(&path)?;
    let body = read_body(payload, state.settings.session.max_frame_bytes).await?;
    entry.touch();
    let now = Instant::now();
    let mut session = entry.session.lock().await;
    let admitted = entry.limit.lock().admit(&mut session, now);
    match admitted {
        Ok(true) => session.handle_frame(&body, false, now),
        Ok(false) => {}
        Err(code) => {
            drop(session);
            state.polls.end(&path, code.into());
            return Err(ApiError::new(
                429,
                "rate_limited",
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
    state.polls.get(&path)?;
    state.polls.end(&path, CloseCode::Normal.into());
    Ok(HttpResponse::Ok().json(json!({"session": path.as_str(), "closed": true})))
}
