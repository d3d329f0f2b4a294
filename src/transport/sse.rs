//! Server-Sent Events at `GET /sse?symbols=A,B&max_rate=R`: the same session core
//! as the WebSocket, one event per message (`event:` its type, `data:` its JSON),
//! a comment line every `keepalive_interval`. Bad parameters or unknown symbols
//! answer 400 with a JSON error before any stream starts.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::{CloseCode, Ended, FrameCounters, TransportContext, WriteClock};
use crate::http::ApiError;
use crate::session::encode::write_json_message;
use crate::session::protocol::{ClientOp, Format, ServerMsg};
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

/// Checks a requested symbol list and rate the way a subscribe would, but as an
/// HTTP error (SSE has no channel for errors before the stream starts).
pub fn validate_subscription(
    state: &TransportContext,
    symbols: &[String],
    max_rate: Option<f64>,
) -> Result<(), ApiError> {
    if symbols.is_empty() {
        return Err(ApiError::bad_request(
            "symbols must name at least one symbol",
        ));
    }
    let unknown: Vec<String> = symbols
        .iter()
        .filter(|s| !crate::quote::is_valid_symbol(s) || state.hub.lookup(s).is_none())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        let message = format!("unknown symbol: {}", unknown.join(", "));
        let listed = unknown.into_iter().take(100).collect();
        return Err(ApiError::new(400, "unknown_symbol", message).with_symbols(listed));
    }
    let max = state.settings.session.max_symbols;
    if symbols.len() > max {
        return Err(ApiError::new(
            400,
            "too_many_symbols",
            format!(
                "at most {max} symbols per session, asked for {}",
                symbols.len()
            ),
        ));
    }
    if let Some(r) = max_rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(ApiError::bad_request("max_rate must be a positive number"));
        }
    }
    Ok(())
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
    let max_rate = match params.max_rate.as_deref() {
        None | Some("") => None,
        Some(r) => Some(
            r.parse::<f64>()
                .map_err(|_| ApiError::bad_request(format!("max_rate {r:?} is not a number")))?,
        ),
    };
    validate_subscription(&state, &symbols, max_rate)?;
    let permit = state.admit_http()?;

    let state = state.into_inner();
    let mut session = state.session(Format::Json);
    session.handle_op(
        ClientOp::Subscribe {
            id: None,
            symbols,
            max_rate,
            snapshot: true,
        },
        Instant::now(),
    );
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
