//! WebSocket transport at `/ws`: subprotocol negotiation (`ticker.v1.json`,
//! `ticker.v1.msgpack`, or `?format=`), then one loop per connection that selects
//! over client frames, session output, the throttle clock, the heartbeat and
//! shutdown, and ends with exactly one close (codes of PROTOCOL.md section 8).
//!
//! The loop runs inside the response body that actix's dispatcher polls (see
//! [`outgoing`]): one task per connection. Writes use smart batching: the loop
//! writes a frame only when the previous one has left for the socket, and
//! everything that piled up meanwhile goes out together in the next frame. A
//! connection whose socket takes nothing for `write_stall_timeout` is a slow
//! consumer and is closed with 4008 (see [`watchdog`]).

mod incoming;
mod outgoing;
mod watchdog;

use std::collections::VecDeque;
use std::time::Instant;

use actix_http::ws::CloseReason;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use incoming::{ClientFrame, Incoming, ReadError};
pub use outgoing::remember_socket;
use outgoing::{ClientSocket, Outgoing};

use super::{CloseCode, Ended, FrameCounters, TransportContext};
use crate::http::ApiError;
use crate::metrics::Metrics;
use crate::session::encode::encode_frames;
use crate::session::protocol::Format;
use crate::session::Session;

/// A batch larger than this goes out as several frames, one per write. Each write
/// then fits in the first page of actix's 8 KiB per-connection write buffer, which
/// keeps the rest of that buffer untouched (not resident) on idle connections: a
/// 20-symbol snapshot burst would otherwise cost every connection a page more.
const FRAME_BYTES: usize = 3 * 1024;

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
    payload: web::Payload,
    state: web::Data<TransportContext>,
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
    let (mut response, protocol) = incoming::handshake(&req, &SUBPROTOCOLS)
        .map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {e}")))?;
    let format = match protocol {
        Some("ticker.v1.msgpack") => Format::Msgpack,
        Some(_) => Format::Json,
        None => query_format,
    };
    let (out, mut body) = Outgoing::new(
        req.conn_data::<ClientSocket>().copied(),
        Some(&state.metrics),
        state.settings.session.write_stall_timeout,
    );
    let stream = Incoming::new(payload.into_inner(), state.settings.session.max_frame_bytes);
    match state.try_admit() {
        Some(permit) => {
            let session = state.session(format);
            let span =
                tracing::debug_span!("conn", transport = "ws", session = session.id(), ?format);
            body.drive(
                run_connection(
                    out,
                    stream,
                    session,
                    state.clone().into_inner(),
                    format,
                    permit,
                )
                .instrument(span),
            );
        }
        None => {
            count_close(&state.metrics, CloseCode::ServerFull.into());
            out.close(Some((
                CloseCode::ServerFull.code(),
                "server full, try again later",
            )));
        }
    }
    Ok(response
        .message_body(body)
        // unwrap: the builder fails only on a bad header, and ours are fixed strings.
        .expect("unwrap: the upgrade response's headers are valid")
        .map_into_boxed_body()
        .into())
}

fn count_close(metrics: &Metrics, end: Ended) {
    metrics
        .connections_closed
        .with_label_values(&["ws", &end.label()])
        .inc();
}

/// How a connection loop ended.
#[derive(Debug)]
enum End {
    /// We close with this code and reason.
    Close(CloseCode, String),
    /// The client closed; echo its code.
    ClientClosed(Option<CloseReason>),
    /// The socket accepted nothing for `write_stall_timeout`.
    SlowConsumer,
    /// The client's stream ended without a close frame; nothing to send.
    Gone,
}

async fn run_connection(
    out: Outgoing,
    mut stream: Incoming,
    mut session: Session,
    state: std::sync::Arc<TransportContext>,
    format: Format,
    _permit: OwnedSemaphorePermit,
) {
    let cfg = &state.settings.session;
    let metrics = state.metrics.clone();
    let mut counters = WsCounters {
        inner: FrameCounters::open(&metrics, "ws", format),
        out: &out,
    };
    let queue_depth = metrics.send_queue_depth.clone();

    let inbox = session.inbox().clone();
    let mut shutdown = state.shutdown.clone();
    // Both waits live across turns: re-creating them each turn would register
    // and unregister a waiter per frame.
    let shutting_down = shutdown.wait_for(|s| *s);
    tokio::pin!(shutting_down);
    let news = inbox.notified();
    tokio::pin!(news);
    // One timer for the heartbeat and the throttle, reset to the earlier of them
    // each turn (an idle connection's state is what it costs). Write stalls are
    // the watchdog's: while the socket takes nothing this loop does not run.
    let mut heartbeat_at = tokio::time::Instant::now() + cfg.heartbeat_interval;
    let timer = tokio::time::sleep_until(heartbeat_at);
    tokio::pin!(timer);
    let mut last_heard = Instant::now();
    let mut limit = state.message_limit();
    tracing::debug!("open");
    let mut pong_due: Option<Bytes> = None;
    let mut ping_due = false;
    // Encoded frames of a batch larger than FRAME_BYTES, written one per turn.
    let mut spill: VecDeque<Bytes> = VecDeque::new();

    let end = loop {
        if out.is_stalled() {
            break End::SlowConsumer;
        }
        let now = Instant::now();
        let (ready, next_deadline) = session.readiness(now);
        let want_write = ping_due || pong_due.is_some() || ready || !spill.is_empty();
        if want_write && out.has_room() {
            // Everything that piled up while the last frame was in flight goes out
            // together; the slot is full again until the dispatcher takes it.
            if let Some(p) = pong_due.take() {
                out.pong(&p);
            }
            if std::mem::take(&mut ping_due) {
                out.ping();
            }
            if ready && spill.is_empty() {
                let msgs = session.take_ready(now);
                queue_depth.observe(session.pending_count() as f64);
                encode_frames(format, &msgs, FRAME_BYTES, |part, frame| {
                    counters.frame(part, frame.len());
                    spill.push_back(frame);
                });
            }
            if let Some(frame) = spill.pop_front() {
                out.data(format, &frame);
                if !spill.is_empty() {
                    out.next_turn().await;
                }
            }
            continue;
        }
        let wake_at = match next_deadline {
            Some(throttle_at) if !want_write => {
                heartbeat_at.min(tokio::time::Instant::from_std(throttle_at))
            }
            _ => heartbeat_at,
        };
        if timer.deadline() != wake_at {
            timer.as_mut().reset(wake_at);
        }

        tokio::select! {
            biased;
            _ = &mut shutting_down => {
                break End::Close(CloseCode::GoingAway, "server shutting down".into());
            }
            frame = stream.recv() => {
                let now = Instant::now();
                match frame {
                    None => break End::Gone,
                    Some(Err(e)) => {
                        let text = match &e {
                            ReadError::TooLarge => format!("frame larger than {} bytes", cfg.max_frame_bytes),
                            ReadError::InvalidUtf8 => "text frame is not valid UTF-8".to_owned(),
                            ReadError::Protocol(e) => format!("protocol error: {e}"),
                        };
                        break End::Close(e.close_code(), text);
                    }
                    Some(Ok(msg)) => {
                        last_heard = now;
                        let (payload, binary) = match msg {
                            ClientFrame::Text(t) => (t, false),
                            ClientFrame::Binary(b) => (b, true),
                            ClientFrame::Ping(p) => {
                                pong_due = Some(p);
                                continue;
                            }
                            ClientFrame::Pong => continue,
                            ClientFrame::Close(reason) => break End::ClientClosed(reason),
                        };
                        match limit.admit(&mut session, now) {
                            Ok(true) => session.handle_frame(&payload, binary, now),
                            Ok(false) => {}
                            Err(code) => break End::Close(code, "too many messages per second".into()),
                        }
                    }
                }
            }
            _ = out.writable(), if want_write => {}
            _ = &mut news, if !want_write => news.set(inbox.notified()),
            _ = &mut timer => {
                let now = tokio::time::Instant::now();
                if now >= heartbeat_at {
                    if last_heard.elapsed() >= cfg.client_timeout {
                        break End::Close(CloseCode::ClientTimeout, format!(
                            "client timeout: nothing received for {:?}", cfg.client_timeout
                        ));
                    }
                    ping_due = true;
                    heartbeat_at = now + cfg.heartbeat_interval;
                }
                // Otherwise a throttled symbol is due: the next turn sends it.
            }
        }
    };

    // Replies already queued (errors included) go out before our close frame.
    if let End::Close(..) = end {
        let msgs = session.take_ready(Instant::now());
        encode_frames(format, &msgs, FRAME_BYTES, |part, frame| {
            counters.frame(part, frame.len());
            spill.push_back(frame);
        });
        for frame in spill.drain(..) {
            out.data(format, &frame);
        }
    }
    // Leave the fan-out before anything else, so a closing client costs nothing.
    drop(session);
    tracing::debug!(?end, "closing");
    match end {
        End::Close(code, text) => {
            counters.closed(code);
            out.close(Some((code.code(), &text)));
        }
        End::SlowConsumer => {
            // The socket took something again (this loop runs): the close follows
            // what was already queued. (The watchdog counted the slow consumer,
            // and resets the socket if this never runs.)
            counters.closed(CloseCode::SlowConsumer);
            out.close(Some((
                CloseCode::SlowConsumer.code(),
                "slow consumer: writes stalled",
            )));
            // A trickle is not reading: a client that has not taken everything
            // (the close included) within another write_stall_timeout, nor
            // answered the close, is reset.
            let deadline = tokio::time::sleep(cfg.write_stall_timeout);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    frame = stream.recv() => match frame {
                        None | Some(Err(_)) | Some(Ok(ClientFrame::Close(_))) => break,
                        Some(Ok(_)) => {}
                    },
                    _ = &mut deadline => {
                        if out.unsent() > 0 {
                            metrics.slow_consumer_resets.inc();
                            out.abort();
                        }
                        break;
                    }
                }
            }
        }
        End::ClientClosed(reason) => {
            let code: u16 = reason
                .as_ref()
                .map_or(CloseCode::Normal.code(), |r| r.code.into());
            counters.closed(Ended::ByClient(code));
            out.close(
                reason
                    .as_ref()
                    .map(|r| (code, r.description.as_deref().unwrap_or(""))),
            );
        }
        End::Gone => counters.closed(Ended::Gone),
    }
}

/// A connection's counters. One the watchdog cut counts as closed with 4008 even
/// when its loop never ran again (it is dropped with the body).
struct WsCounters<'a> {
    inner: FrameCounters,
    out: &'a Outgoing,
}

impl std::ops::Deref for WsCounters<'_> {
    type Target = FrameCounters;
    fn deref(&self) -> &FrameCounters {
        &self.inner
    }
}

impl std::ops::DerefMut for WsCounters<'_> {
    fn deref_mut(&mut self) -> &mut FrameCounters {
        &mut self.inner
    }
}

impl Drop for WsCounters<'_> {
    fn drop(&mut self) {
        if self.out.is_stalled() {
            self.inner.closed(CloseCode::SlowConsumer);
        }
    }
}
