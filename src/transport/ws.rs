//! WebSocket transport at `/ws`: subprotocol negotiation (`ticker.v1.json`,
//! `ticker.v1.msgpack`, or `?format=`), then one loop per connection that selects
//! over client frames, session output, the throttle clock, the heartbeat and
//! shutdown, and ends with exactly one close (codes of PROTOCOL.md section 8).
//!
//! Writes use smart batching: the loop hands actix-ws a frame only when its bounded
//! outgoing queue has room, and everything that piled up meanwhile goes out together
//! in the next frame. A socket that takes nothing for `write_stall_timeout` is a slow
//! consumer and is closed with 4008.

use std::future::poll_fn;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Message, ProtocolError};
use bytes::Bytes;
use futures_util::{Sink, SinkExt};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;

use super::{Admission, FrameCounters, TokenBucket, WriteClock};
use crate::app::AppState;
use crate::http::ApiError;
use crate::metrics::Metrics;
use crate::session::encode::encode_frame;
use crate::session::protocol::{ErrorCode, Format};
use crate::session::{Session, SessionConfig};

/// Subprotocols we speak, in no particular order (the client's order decides).
const SUBPROTOCOLS: [&str; 2] = ["ticker.v1.json", "ticker.v1.msgpack"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsParams {
    format: Option<String>,
}

/// `GET /ws`: the WebSocket upgrade.
pub async fn ws_endpoint(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<WsParams>::from_query(req.query_string())
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
    let (response, ws, stream) = actix_ws::handle_with_protocols(&req, body, &SUBPROTOCOLS)
        .map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {e}")))?;
    let format = match response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
    {
        Some("ticker.v1.msgpack") => Format::Msgpack,
        Some(_) => Format::Json,
        None => query_format,
    };
    match state.connections.clone().try_acquire_owned() {
        Ok(permit) => {
            actix_web::rt::spawn(run_connection(
                ws,
                stream,
                state.into_inner(),
                format,
                permit,
            ));
        }
        Err(_) => {
            state
                .metrics
                .connections_rejected
                .with_label_values(&["server_full"])
                .inc();
            count_close(&state.metrics, Some(1013));
            actix_web::rt::spawn(async move {
                let _ = ws
                    .close(Some(close_reason(1013, "server full, try again later")))
                    .await;
            });
        }
    }
    Ok(response)
}

fn close_reason(code: u16, text: &str) -> CloseReason {
    CloseReason {
        code: CloseCode::from(code),
        description: Some(text.to_owned()),
    }
}

fn count_close(metrics: &Metrics, code: Option<u16>) {
    let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
    metrics
        .connections_closed
        .with_label_values(&["ws", &code])
        .inc();
}

/// How a connection loop ended.
enum End {
    /// We close with this code and reason.
    Close(u16, String),
    /// The client closed; echo its code.
    ClientClosed(Option<CloseReason>),
    /// The socket accepted nothing for `write_stall_timeout`.
    SlowConsumer,
    /// The peer vanished; nothing to send.
    Gone,
}

async fn run_connection(
    mut ws: actix_ws::Session,
    stream: actix_ws::MessageStream,
    state: std::sync::Arc<AppState>,
    format: Format,
    _permit: OwnedSemaphorePermit,
) {
    let cfg = state.settings.session.clone();
    let metrics = state.metrics.clone();
    let mut counters = FrameCounters::open(&metrics, "ws", format);
    let queue_depth = metrics.send_queue_depth.clone();

    let mut stream = stream
        .max_frame_size(cfg.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(cfg.max_frame_bytes);
    let mut session = Session::new(
        state.hub.clone(),
        metrics.clone(),
        SessionConfig::new(&cfg, state.settings.bench.ingest_stamp),
        format,
    );
    let inbox = session.inbox().clone();
    let mut shutdown = state.shutdown.clone();
    let start = tokio::time::Instant::now();
    let mut heartbeat =
        tokio::time::interval_at(start + cfg.heartbeat_interval, cfg.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut bucket = TokenBucket::new(
        cfg.client_msgs_per_sec,
        cfg.client_msgs_burst,
        Instant::now(),
    );
    let mut pong_due: Option<Bytes> = None;
    let mut ping_due = false;
    let mut clock = WriteClock::new(cfg.write_stall_timeout);

    let end = loop {
        let now = Instant::now();
        let (ready, next_deadline) = session.readiness(now);
        let want_write = ping_due || pong_due.is_some() || ready;
        let (throttle_at, stall_at) = clock.turn(want_write, now, next_deadline);

        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => {
                break End::Close(1001, "server shutting down".into());
            }
            frame = stream.recv() => {
                let now = Instant::now();
                match frame {
                    None => break End::Gone,
                    Some(Err(ProtocolError::Overflow)) | Some(Err(ProtocolError::Io(_))) => {
                        break End::Close(1009, format!("frame larger than {} bytes", cfg.max_frame_bytes));
                    }
                    Some(Err(e)) => break End::Close(1002, format!("protocol error: {e}")),
                    Some(Ok(msg)) => {
                        last_heard = now;
                        match msg {
                            AggregatedMessage::Text(text) => match bucket.admit(now) {
                                Admission::Allowed => session.handle_frame(text.as_bytes(), false, now),
                                Admission::Refused => refuse(&mut session, &cfg),
                                Admission::Exceeded => break End::Close(4029, "too many messages per second".into()),
                            },
                            AggregatedMessage::Binary(bin) => match bucket.admit(now) {
                                Admission::Allowed => session.handle_frame(&bin, true, now),
                                Admission::Refused => refuse(&mut session, &cfg),
                                Admission::Exceeded => break End::Close(4029, "too many messages per second".into()),
                            },
                            AggregatedMessage::Ping(p) => pong_due = Some(p),
                            AggregatedMessage::Pong(_) => {}
                            AggregatedMessage::Close(reason) => break End::ClientClosed(reason),
                        }
                    }
                }
            }
            ready = poll_fn(|cx| Pin::new(&mut ws).poll_ready(cx)), if want_write => {
                if ready.is_err() {
                    break End::Gone;
                }
                let msg = if let Some(p) = pong_due.take() {
                    Message::Pong(p)
                } else if ping_due {
                    ping_due = false;
                    Message::Ping(Bytes::new())
                } else {
                    let msgs = session.take_ready(Instant::now());
                    queue_depth.observe(session.pending_count() as f64);
                    match encode_frame(format, &msgs) {
                        Some(frame) => {
                            counters.frame(&msgs, frame.len());
                            data_message(format, frame)
                        }
                        None => continue,
                    }
                };
                if Pin::new(&mut ws).start_send(msg).is_err() {
                    break End::Gone;
                }
                clock.wrote();
            }
            _ = inbox.notified(), if !want_write => {}
            _ = tokio::time::sleep_until(throttle_at), if !want_write && throttle_at < clock.never() => {}
            _ = tokio::time::sleep_until(stall_at), if want_write => break End::SlowConsumer,
            _ = heartbeat.tick() => {
                if last_heard.elapsed() >= cfg.client_timeout {
                    break End::Close(1000, format!(
                        "client timeout: nothing received for {:?}", cfg.client_timeout
                    ));
                }
                ping_due = true;
            }
        }
    };

    // Replies already queued (errors included) go out before our close frame.
    let last_frame = match end {
        End::Close(..) => {
            let msgs = session.take_ready(Instant::now());
            encode_frame(format, &msgs).inspect(|frame| {
                counters.frame(&msgs, frame.len());
            })
        }
        _ => None,
    };
    // Leave the fan-out before anything else, so a closing client costs nothing.
    drop(session);
    let close_wait = cfg
        .write_stall_timeout
        .min(std::time::Duration::from_secs(5));
    match end {
        End::Close(code, text) => {
            counters.closed(&code.to_string());
            if let Some(frame) = last_frame {
                let _ =
                    tokio::time::timeout(close_wait, ws.send(data_message(format, frame))).await;
            }
            let _ =
                tokio::time::timeout(close_wait, ws.close(Some(close_reason(code, &text)))).await;
        }
        End::SlowConsumer => {
            metrics.slow_consumer_closes.inc();
            counters.closed("4008");
            let reason = close_reason(4008, "slow consumer: writes stalled");
            // The queue is full; the close goes out once the client reads again.
            let _ = tokio::time::timeout(cfg.write_stall_timeout, ws.close(Some(reason))).await;
        }
        End::ClientClosed(reason) => {
            let code: u16 = reason.as_ref().map_or(1000, |r| r.code.into());
            counters.closed(&code.to_string());
            let _ = tokio::time::timeout(close_wait, ws.close(reason)).await;
        }
        End::Gone => counters.closed("none"),
    }
}

/// A data frame: text for JSON, binary for MessagePack.
fn data_message(format: Format, frame: Bytes) -> Message {
    match format {
        // unwrap: serde_json writes valid UTF-8.
        Format::Json => {
            Message::Text(bytestring::ByteString::try_from(frame).expect("unwrap: JSON is UTF-8"))
        }
        Format::Msgpack => Message::Binary(frame),
    }
}

/// Answers a message refused by the rate limit (it is not handled).
fn refuse(session: &mut Session, cfg: &crate::settings::SessionSettings) {
    session.push_error(
        None,
        ErrorCode::RateLimited,
        format!(
            "more than {} messages per second; message ignored (keep this up and the connection closes with 4029)",
            cfg.client_msgs_per_sec
        ),
        None,
    );
}
