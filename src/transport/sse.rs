//! Server-Sent Events at `GET /sse?symbols=A,B&max_rate=R`: the same session core
//! as the WebSocket, one event per message (`event:` its type, `data:` its JSON),
//! a comment line every `keepalive_interval`. Bad parameters or unknown symbols
//! answer 400 with a JSON error before any stream starts.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{CloseCode, Ended, FrameCounters, TransportContext, WriteClock};
use crate::http::ApiError;
use crate::session::encode::write_json_message;
use crate::session::protocol::{op_from_value, Format, ServerMsg};
use crate::session::Session;

/// Chunks queued between the session and the socket; beyond this the session
/// conflates instead of queueing.
const QUEUE_CHUNKS: usize = 8;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SseParams {
    symbols: Option<String>,
    max_rate: Option<String>,
}

/// `GET /sse`.
pub async fn sse_endpoint(
    req: HttpRequest,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<SseParams>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let symbols: Vec<String> = params
        .symbols
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mut op = json!({"op": "subscribe", "symbols": symbols});
    match params.max_rate.as_deref() {
        None | Some("") => {}
        Some(r) => match r.parse::<f64>() {
            Ok(rate) if rate.is_finite() => op["max_rate"] = json!(rate),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "max_rate {r:?} is not a number"
                )))
            }
        },
    }
    // The same checks as a WebSocket subscribe, answered as HTTP errors: SSE has
    // no channel for errors before the stream starts.
    let op = op_from_value(op).map_err(|e| ApiError::bad_request(e.message))?;
    let permit = state.admit_http()?;
    let mut session = state.session(Format::Json);
    session.handle_op(op, Instant::now());
    if let Some(e) = session.first_error().and_then(ApiError::from_reply) {
        return Err(e);
    }
    let state = state.into_inner();
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_CHUNKS);
    actix_web::rt::spawn(run_stream(session, tx, state, permit));
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, actix_web::Error>))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Appends each message as one event.
pub fn encode_events(msgs: &[ServerMsg], buf: &mut BytesMut) {
    for m in msgs {
        buf.put_slice(b"event: ");
        buf.put_slice(m.type_name().as_bytes());
        buf.put_slice(b"\ndata: ");
        write_json_message(buf, m);
        buf.put_slice(b"\n\n");
    }
}

async fn run_stream(
    mut session: Session,
    tx: mpsc::Sender<Bytes>,
    state: Arc<TransportContext>,
    _permit: OwnedSemaphorePermit,
) {
    let cfg = state.settings.clone();
    let mut counters = FrameCounters::open(&state.metrics, "sse", Format::Json);
    let inbox = session.inbox().clone();
    let mut shutdown = state.shutdown.clone();
    let start = tokio::time::Instant::now();
    let every = cfg.sse.keepalive_interval;
    let mut keepalive = tokio::time::interval_at(start + every, every);
    let mut keepalive_due = false;
    let mut clock = WriteClock::new(cfg.session.write_stall_timeout);

    let end: Ended = loop {
        let now = Instant::now();
        let (ready, next_deadline) = session.readiness(now);
        let want = keepalive_due || ready;
        let (throttle_at, stall_at) = clock.turn(want, now, next_deadline);
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break CloseCode::GoingAway.into(),
            _ = tx.closed() => break Ended::Gone,
            permit = tx.reserve(), if want => {
                let Ok(permit) = permit else { break Ended::Gone };
                let msgs = session.take_ready(Instant::now());
                let mut buf = BytesMut::new();
                encode_events(&msgs, &mut buf);
                if !msgs.is_empty() {
                    counters.frame(&msgs, buf.len());
                } else if keepalive_due {
                    buf.put_slice(b": keepalive\n\n");
                }
                keepalive_due = false;
                if buf.is_empty() {
                    continue;
                }
                permit.send(buf.freeze());
                clock.wrote();
            }
            _ = inbox.notified(), if !want => {}
            _ = tokio::time::sleep_until(throttle_at), if !want && throttle_at < clock.never() => {}
            _ = tokio::time::sleep_until(stall_at), if want => {
                state.metrics.slow_consumer_closes.inc();
                break CloseCode::SlowConsumer.into();
            }
            _ = keepalive.tick() => keepalive_due = true,
        }
    };
    counters.closed(end);
}
