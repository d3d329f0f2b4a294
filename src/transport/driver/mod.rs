//! The driver: one loop per client connection, written once for every
//! streaming transport. It owns what the transports share: the session, smart
//! batching and the throttle clock, the heartbeat and the client timeout, the
//! client message rate limit, slow consumers (4008), close codes, metrics and the
//! connection's tracing span. A transport brings a socket (a [`Sink`] and, if
//! the client talks back, a [`Reader`]) and a [`Wire`] protocol.
//!
//! For a socket that takes bytes at once (an owned WebSocket), news goes to the
//! worker's delivery loop ([`pump`]), which writes through the same session
//! and wire while this loop waits, and wakes it only for what it must handle.
//!
//! Writes use smart batching: the loop writes a frame only when the previous one
//! has left, and everything that piled up meanwhile goes out together in the
//! next frame. A stall is noticed by the sink: an owned socket times it itself
//! (the loop wakes at [`Sink::stall_deadline`]); an SSE body is not polled while
//! stalled, so its watchdog marks it and the loop closes when it runs again.

mod shared;
mod timer;
mod wire;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::pump;
use super::socket::{ClientFrame, ReadError, Reader, Recv, Sink};
use super::{CloseCode, Ended, FrameCounters, TransportContext};
use crate::metrics::Metrics;
use crate::session::Session;
use shared::{Core, Shared, StallCount};
use timer::Timer;
pub use wire::{batch_frames, Input, Liveness, Wire, FRAME_BYTES};

/// How long a client gets to answer our close frame before its socket closes.
const CLOSE_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// One connection, ready to be driven.
pub struct Connection<W, S> {
    pub wire: W,
    pub out: S,
    /// The client's messages; `None` where the client does not talk (SSE).
    pub input: Option<Reader>,
    pub session: Session,
    pub liveness: Liveness,
    /// The connection's place under `server.max_connections`.
    pub permit: OwnedSemaphorePermit,
}

impl<S> Connection<(), S> {
    /// The connection with its wire protocol (chosen once the rest is ready).
    pub fn with_wire<W: Wire>(self, wire: W) -> Connection<W, S> {
        Connection {
            wire,
            out: self.out,
            input: self.input,
            session: self.session,
            liveness: self.liveness,
            permit: self.permit,
        }
    }
}

/// What a turn of the connection loop did.
enum Turn {
    /// Wrote a frame; `more` of the batch wait for the next turn.
    Wrote { more: bool },
    /// Nothing to write now (or no room): wait, for writability if
    /// `want_write`, until the throttle's next deadline otherwise.
    Wait {
        want_write: bool,
        next_deadline: Option<Instant>,
    },
}

/// How a connection loop ended.
#[derive(Debug)]
enum End {
    /// We close with this code and reason.
    Close(CloseCode, String),
    /// The client closed; echo its code.
    ClientClosed(Option<(u16, String)>),
    /// The socket accepted nothing for `write_stall_timeout`.
    SlowConsumer,
    /// The client's stream ended without a close frame; nothing to send.
    Gone,
    /// A long-polling session nobody asked anything of for its expiry time.
    Expired,
}

/// Runs `conn` until it ends, then ends it with exactly one close; the code
/// the server closed with, if it did.
///
/// Not an `async fn`: the session, wire and socket move into their shared
/// place here, so the future (most of what an idle connection costs) holds
/// the pointer to it, not room for the connection it was made from too.
pub fn drive<W: Wire + 'static, S: Sink + 'static>(
    conn: Connection<W, S>,
    ctx: Arc<TransportContext>,
) -> impl Future<Output = Option<CloseCode>> {
    let Connection {
        wire,
        out,
        mut input,
        session,
        mut liveness,
        permit,
    } = conn;
    // With authentication on: the keys' reloads (a credential may be revoked).
    let mut reloads = Reloads::new(session.auth_reloads());
    // An SSE body the watchdog cut is dropped with the future that holds
    // this: counted as a slow consumer even when the loop never ran again.
    let sh = StallCount(Rc::new(Shared {
        core: RefCell::new(Core {
            counters: FrameCounters::open(&ctx.metrics, W::TRANSPORT, wire.format()),
            wire,
            session,
            spill: VecDeque::new(),
        }),
        out,
        waiting: Cell::new(None),
        kicked: Cell::new(false),
        waits_writable: Cell::new(false),
        timer_at: Cell::new(None),
    }));
    // A block, not an `async fn`: what it captures is used in place, not
    // moved into room of its own beside the arguments.
    async move {
        // Sockets the worker's loop writes to: news reaches the loop, not this task.
        let registration = if sh.out.worker_delivery() {
            let weak: Weak<Shared<W, S>> = Rc::downgrade(&sh);
            pump::register(weak, sh.core.borrow().session.inbox(), &ctx.shutdown)
        } else {
            None
        };
        // One timer for the heartbeat, the throttle and (for sinks that time their
        // own) the stall, reset to the earliest each turn (an idle connection's
        // state is what it costs).
        let mut heartbeat_at = tokio::time::Instant::now() + liveness.heartbeat;
        let mut timer = Timer::new(registration, heartbeat_at);
        // The worker's loop tells its connections of shutdown; others wait
        // for it themselves (across turns: re-creating the wait each turn
        // would register and unregister a waiter per frame).
        let mut shutting_down = (!timer.worker()).then(|| ctx.shutdown.wait());
        let mut last_heard = Instant::now();
        let mut limit = ctx.message_limit();
        // Boxed: a client's ping is rare, and the driver's future is most of
        // what an idle connection costs (8 bytes here instead of 32).
        let mut pong_due: Option<Box<Bytes>> = None;
        let mut heartbeat_due = false;
        tracing::debug!("open");

        let end = 'conn: loop {
            if sh.out.is_stalled() {
                break End::SlowConsumer;
            }
            let now = Instant::now();
            // The core is borrowed for the turn's work, never across an await
            // (the worker's loop borrows it while this task waits).
            let turn = {
                let mut core = sh.core.borrow_mut();
                if let Some(end) = core.session.auth_end(now) {
                    break 'conn End::Close(end.into(), end.message().into());
                }
                let (ready, next_deadline) = core.session.readiness(now);
                let own = core.wire.has_output();
                // Bytes a socket written by the worker's loop did not take are
                // flushed as soon as it can take them (the loop writes only to a
                // socket with room).
                let unflushed = sh.out.worker_delivery() && !sh.out.flushed();
                let want_write = heartbeat_due
                    || pong_due.is_some()
                    || ready
                    || own
                    || !core.spill.is_empty()
                    || unflushed;
                if want_write && sh.out.has_room() {
                    // Everything that piled up while the last frame was in flight goes out
                    // together; the sink has no room again until it has left.
                    if let Some(p) = pong_due.take() {
                        core.wire.pong(&sh.out, &p);
                    }
                    if std::mem::take(&mut heartbeat_due) {
                        core.wire.heartbeat(&sh.out);
                    }
                    let first = if (ready || own) && core.spill.is_empty() {
                        core.encode(ready, now)
                    } else {
                        None
                    };
                    if let Some((code, text)) = core.wire.closing() {
                        let end = End::Close(code, text.to_owned());
                        // Written before the close.
                        core.spill.extend(first);
                        break 'conn end;
                    }
                    let more = match first.or_else(|| core.spill.pop_front()) {
                        Some(frame) => {
                            core.wire.write(&sh.out, &frame);
                            !core.spill.is_empty()
                        }
                        None => false,
                    };
                    Turn::Wrote { more }
                } else {
                    Turn::Wait {
                        want_write,
                        next_deadline,
                    }
                }
            };
            // In a block: what it works out is not kept across the wait.
            let want_write = {
                let (want_write, next_deadline) = match turn {
                    Turn::Wrote { more } => {
                        if more {
                            sh.out.next_turn().await;
                        }
                        continue;
                    }
                    Turn::Wait {
                        want_write,
                        next_deadline,
                    } => (want_write, next_deadline),
                };
                let mut wake_at = match next_deadline {
                    Some(throttle_at) if !want_write => {
                        heartbeat_at.min(tokio::time::Instant::from_std(throttle_at))
                    }
                    _ => heartbeat_at,
                };
                // A silent client is closed when its time is up, not at the next heartbeat.
                if let Some(timeout) = liveness.client_timeout {
                    wake_at = wake_at.min(tokio::time::Instant::from_std(last_heard + timeout));
                }
                // A pending `auth` op's deadline, a token's expiry.
                if let Some(auth_at) = sh.core.borrow().session.auth_deadline() {
                    wake_at = wake_at.min(tokio::time::Instant::from_std(auth_at));
                }
                // A sink that times its own stalls: wake when the wait becomes one.
                if let Some(stall_at) = sh.out.stall_deadline() {
                    wake_at = wake_at.min(stall_at);
                }
                timer.set(&sh.timer_at, wake_at);
                sh.waits_writable.set(want_write);
                want_write
            };

            tokio::select! {
                biased;
                _ = poll_fn(|cx| match &mut shutting_down {
                    Some(wait) => Pin::new(wait).poll(cx),
                    None if ctx.shutdown.has_begun() => Poll::Ready(()),
                    None => Poll::Pending,
                }) => {
                    break End::Close(CloseCode::GoingAway, "server shutting down".into());
                }
                frame = recv(&mut input) => {
                    let now = Instant::now();
                    let msg = match frame {
                        None => break End::Gone,
                        Some(Err(ReadError::Expired)) => break End::Expired,
                        Some(Err(e)) => break End::Close(e.close_code(), read_error_text(&e, ctx.settings.session.max_frame_bytes)),
                        Some(Ok(msg)) => msg,
                    };
                    last_heard = now;
                    let (payload, binary, responder) = match msg {
                        ClientFrame::Text(t) => (Some(t), false, None),
                        ClientFrame::Binary(b) => (Some(b), true, None),
                        ClientFrame::Request(body, r) => (body, false, Some(r)),
                        ClientFrame::Ping(p) => {
                            pong_due = Some(Box::new(p));
                            continue;
                        }
                        ClientFrame::Pong => continue,
                        ClientFrame::Upgraded => {
                            sh.core.borrow_mut().wire.upgraded();
                            continue;
                        }
                        ClientFrame::Close(reason) => {
                            break End::ClientClosed(reason.map(|r| {
                                (r.code.into(), r.description.unwrap_or_default())
                            }));
                        }
                    };
                    let mut core = sh.core.borrow_mut();
                    let Core { wire, session, counters, .. } = &mut *core;
                    let admitted = match &payload {
                        Some(_) => limit.admit(&ctx.settings.session, session, now),
                        None => Ok(false),
                    };
                    if let (Some(payload), Ok(true)) = (&payload, admitted) {
                        wire.decode(payload, binary, &mut |request| match request {
                            Input::Op(op) => session.handle_op(op, now),
                            Input::Invalid(e) => session.handle_decoded(Err(e), now),
                            Input::Liveness(l) => {
                                liveness = l;
                                heartbeat_at = tokio::time::Instant::from_std(now) + l.heartbeat;
                            }
                        });
                    }
                    if let Some(responder) = responder {
                        // Its replies (a refusal included) go back to whoever asked.
                        let replies = admitted.map(|_| {
                            let mut frames = Vec::new();
                            wire.encode(&session.take_replies(), &mut |part, frame| {
                                counters.frame(part, frame.len(), now);
                                frames.push(frame);
                            });
                            frames
                        });
                        // One who stopped waiting for the answer misses only the answer.
                        let _ = responder.0.send(replies);
                    }
                    if let Err(code) = admitted {
                        break End::Close(code, "too many messages per second".into());
                    }
                    if let Some((code, text)) = wire.closing() {
                        break End::Close(code, text.to_owned());
                    }
                }
                _ = sh.out.writable(), if want_write => {}
                _ = poll_fn(|cx| sh.core.borrow().session.inbox().poll_notified(cx)), if !want_write => {}
                _ = sh.kicked() => {}
                _ = reloads.reloaded() => sh.core.borrow_mut().session.recheck_auth(Instant::now()),
                _ = timer.fired(&sh.timer_at) => {
                    let now = tokio::time::Instant::now();
                    if let Some(timeout) = liveness.client_timeout {
                        if last_heard.elapsed() >= timeout {
                            break End::Close(CloseCode::ClientTimeout, format!(
                                "client timeout: nothing received for {timeout:?}"
                            ));
                        }
                    }
                    if now >= heartbeat_at {
                        heartbeat_due = true;
                        heartbeat_at = now + liveness.heartbeat;
                    }
                    // Otherwise a throttled symbol is due: the next turn sends it.
                }
            }
        };
        // The worker's loop writes nothing more.
        timer.end(&sh.timer_at);
        // Boxed: what closing takes is paid for only by connections that get
        // here, not kept as room in the future every open connection holds.
        let closed = Box::pin(wind_down(&sh, &mut input, end, &ctx)).await;
        // The connection's place under `server.max_connections`, held to here.
        drop(permit);
        closed
    }
}

/// Closes as `end` says, lingers for a slow consumer, counts the session
/// over and lets what is queued (the close frame) leave before the socket
/// closes; the code the server closed with, if it did.
async fn wind_down<W: Wire, S: Sink>(
    sh: &Shared<W, S>,
    input: &mut Option<Reader>,
    end: End,
    ctx: &TransportContext,
) -> Option<CloseCode> {
    let lingers = matches!(end, End::SlowConsumer);
    let stall_timeout = ctx.settings.session.write_stall_timeout;
    let (closed, drain) = close(sh, end, stall_timeout);
    if lingers {
        linger(input, &sh.out, stall_timeout, &ctx.metrics).await;
    }
    // The session is over (counted, gone from the gauges) ...
    sh.core.borrow_mut().counters.end();
    // ... what is still queued (the close frame) leaves before the socket
    // closes, and a client we sent a close to gets a moment to answer it.
    sh.out.finish(stall_timeout, drain).await;
    closed
}

/// Ends the connection as `end` says: queued replies and the close frame
/// written, the session out of the fan-out, the end counted. Returns the
/// code the server closed with, if it did, and how long to wait for the
/// client's answer.
fn close<W: Wire, S: Sink>(
    sh: &Shared<W, S>,
    end: End,
    stall_timeout: Duration,
) -> (Option<CloseCode>, Duration) {
    let out = &sh.out;
    let mut core = sh.core.borrow_mut();
    let core = &mut *core;
    // Replies already queued (errors included) go out before our close.
    if let End::Close(..) = end {
        let first = core.encode(true, Instant::now());
        for frame in first.into_iter().chain(core.spill.drain(..)) {
            core.wire.write(out, &frame);
        }
    }
    // Leave the fan-out before anything else, so a closing client costs nothing.
    core.session.leave();
    tracing::debug!(?end, "closing");
    // After our close the client answers with its own; after its close (or
    // when it vanished) there is nothing to wait for.
    let drain = match end {
        End::Close(..) | End::SlowConsumer => CLOSE_ANSWER_WAIT.min(stall_timeout),
        End::ClientClosed(_) | End::Gone | End::Expired => Duration::ZERO,
    };
    let closed = match &end {
        End::Close(code, _) => Some(*code),
        End::SlowConsumer => Some(CloseCode::SlowConsumer),
        _ => None,
    };
    let Core { wire, counters, .. } = core;
    match end {
        End::Close(code, text) => {
            counters.closed(code);
            wire.close(out, Some((code.code(), &text)));
        }
        End::SlowConsumer => {
            // The close follows what was already queued; `linger` resets a
            // client that does not take it.
            counters.closed(CloseCode::SlowConsumer);
            wire.close(
                out,
                Some((
                    CloseCode::SlowConsumer.code(),
                    "slow consumer: writes stalled",
                )),
            );
        }
        End::ClientClosed(reason) => {
            let code = reason
                .as_ref()
                .map_or(CloseCode::Normal.code(), |(code, _)| *code);
            counters.closed(Ended::ByClient(code));
            wire.close(out, reason.as_ref().map(|(c, text)| (*c, text.as_str())));
        }
        End::Gone => counters.closed(Ended::Gone),
        End::Expired => {
            counters.closed(Ended::Expired);
            wire.close(out, None);
        }
    }
    (closed, drain)
}

/// After a 4008: a trickle is not reading. A client that has not taken
/// everything (the close included) within another `timeout`, nor answered the
/// close, is reset.
async fn linger(input: &mut Option<Reader>, out: &impl Sink, timeout: Duration, metrics: &Metrics) {
    let mut deadline = tokio::time::Instant::now() + timeout;
    let mut draining = !out.flushed();
    loop {
        // While our own buffer drains, the sink's stall clock rules (progress
        // restarts it); once it has left, the client has another `timeout`.
        if draining && out.flushed() {
            deadline = tokio::time::Instant::now() + timeout;
        }
        draining = !out.flushed();
        if let Some(stall) = out.stall_deadline() {
            deadline = deadline.max(stall);
        }
        tokio::select! {
            frame = recv(input) => match frame {
                None | Some(Err(_)) | Some(Ok(ClientFrame::Close(_))) => return,
                Some(Ok(_)) => {}
            },
            _ = out.writable(), if draining => {}
            _ = tokio::time::sleep_until(deadline) => {
                if !out.flushed() || out.unsent() > 0 {
                    metrics.slow_consumer_resets.inc();
                    out.abort();
                }
                return;
            }
        }
    }
}

/// What a read error's close says.
fn read_error_text(e: &ReadError, max_frame_bytes: usize) -> String {
    match e {
        ReadError::TooLarge => format!("frame larger than {max_frame_bytes} bytes"),
        ReadError::InvalidUtf8 => "text frame is not valid UTF-8".to_owned(),
        ReadError::Protocol(e) => format!("protocol error: {e}"),
        ReadError::Expired => "expired".to_owned(),
    }
}

/// The wait for the keys' next reload, in a box only sessions with
/// authentication pay for (the driver's future is most of what an idle
/// connection costs).
type ReloadWait = Pin<Box<dyn Future<Output = Option<watch::Receiver<u64>>> + Send>>;

/// Boxed twice: a thin pointer (8 bytes of every connection's future, not 16).
struct Reloads(Option<Box<ReloadWait>>);

impl Reloads {
    fn new(reloads: Option<watch::Receiver<u64>>) -> Reloads {
        Reloads(reloads.map(Reloads::wait))
    }

    fn wait(mut reloads: watch::Receiver<u64>) -> Box<ReloadWait> {
        Box::new(Box::pin(async move {
            reloads.changed().await.ok().map(|()| reloads)
        }))
    }

    /// Resolves when the keys were reloaded; never without authentication (or
    /// once the server is going).
    fn reloaded(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let Some(wait) = &mut self.0 else {
                return Poll::Pending;
            };
            match (**wait).as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(reloads)) => {
                    self.0 = Some(Reloads::wait(reloads));
                    Poll::Ready(())
                }
                Poll::Ready(None) => {
                    self.0 = None;
                    Poll::Pending
                }
            }
        })
    }
}

/// The client's next frame; never resolves for a client that does not talk.
fn recv(input: &mut Option<Reader>) -> Recv<'_> {
    match input {
        Some(input) => input.recv(),
        None => Recv::Never,
    }
}
