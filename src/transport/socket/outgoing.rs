//! The write side of a response-body stream (SSE): a one-frame slot read by
//! actix's connection dispatcher as the response body, and the session driver
//! that fills it, which runs inside that body (one task per connection).
//! (WebSocket connections are taken out of actix after the upgrade and write
//! through [`DirectSocket`](super::DirectSocket) instead.)
//!
//! Why not `actix_ws::Session`: it queues up to 32 frames in a channel, so the
//! session never learns that a write is in flight and sends one frame per update
//! (and every connection pays for the channel and a task of its own).
//! Here the dispatcher polls the body only while its own write buffer has room,
//! and polling the body is what runs the session loop ([`OutgoingBody::drive`]):
//! a wake-up of the session (a quote, a client frame, a timer) is a wake-up of
//! the dispatcher, and the frame it writes goes to the socket in the same turn.
//! While the socket takes nothing the loop does not run; the session keeps
//! merging changes, and the next frame carries all of them: smart batching, with
//! no timer.
//!
//! The same signal times slow consumers. The dispatcher stops polling the body
//! only when its write buffer is full, that is right after taking a frame; a
//! connection whose frame was taken and that was not polled since for
//! `write_stall_timeout` is stalled. Its loop cannot notice (it is not polled),
//! so a per-worker [`watchdog`](super::watchdog) does: it marks the connection
//! stalled (the loop closes with 4008 when it next runs) and, after another
//! `write_stall_timeout`, resets the socket ([`Shared::abort`]).

use std::future::{poll_fn, Future};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Extensions;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use prometheus::IntCounter;

use super::{watchdog, Sink};
use crate::metrics::Metrics;

#[derive(Default)]
struct Slot {
    /// Encoded frames the dispatcher has not taken yet.
    buf: BytesMut,
    /// A close frame was written: nothing more goes out.
    closed: bool,
    /// The session loop is done; the body ends once `buf` is taken.
    finished: bool,
    /// End the connection at once, without flushing (a client that never reads).
    abort: bool,
    /// The dispatcher dropped the body: the connection is gone.
    gone: bool,
    /// The loop waits for the dispatcher's next turn ([`Outgoing::next_turn`]).
    next_turn: bool,
}

/// What the slow-consumer watchdog needs of a connection.
pub(super) struct Stall {
    pub timeout: Duration,
    pub resets: IntCounter,
}

/// One connection's state, shared by the writer, the body and the watchdog. It is
/// also the waker the session loop runs with, which wakes the dispatcher.
pub(super) struct Shared {
    slot: Mutex<Slot>,
    /// The dispatcher task's waker, set at the first poll of the body. Wake-ups
    /// come from other threads (the feed's); they only read it.
    dispatcher: OnceLock<Waker>,
    /// Set if the body were ever polled by another task; then `moved_to` is the
    /// waker (never seen with actix, whose dispatcher is one task per connection).
    moved: AtomicBool,
    moved_to: Mutex<Option<Waker>>,
    /// When the dispatcher took the session's last frame without polling the
    /// body since, in milliseconds since [`epoch`] plus one; 0 when it did.
    woken_at: AtomicU64,
    stalled: AtomicBool,
    /// For [`Shared::abort`]; `None` where there is no TCP socket (tests).
    socket: Option<ClientSocket>,
    stall: Option<Stall>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`], plus one so that 0 can mean "never".
pub(super) fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_dispatcher();
    }
}

impl Shared {
    /// How long the session loop has been waiting to run (ms), if it is.
    pub(super) fn waiting(&self, now_ms: u64) -> Option<u64> {
        match self.woken_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(now_ms.saturating_sub(at)),
        }
    }

    /// Notes that the dispatcher took a frame (unless the body was not polled
    /// since the last one).
    fn taken(&self) {
        if self.woken_at.load(Ordering::Relaxed) == 0 {
            self.woken_at.store(now_ms(), Ordering::Relaxed);
        }
    }

    pub(super) fn stall(&self) -> Option<&Stall> {
        self.stall.as_ref()
    }

    pub(super) fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    pub(super) fn is_gone(&self) -> bool {
        self.slot.lock().gone
    }

    /// Marks the connection a slow consumer; its loop closes with 4008 when it
    /// next runs.
    pub(super) fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Relaxed);
        self.wake_dispatcher();
    }

    /// Drops the connection without flushing what is still queued. With the
    /// socket at hand this works even when actix's own write buffer is full (then
    /// it no longer polls the body): the socket is reset, which wakes and ends the
    /// dispatcher. Call it on the connection's worker thread (see below).
    pub(super) fn abort(&self) {
        {
            let mut s = self.slot.lock();
            s.abort = true;
            // The body lives inside the dispatcher, which owns the socket: while
            // it is not gone, the descriptor is still this connection's. Both
            // run on this worker thread, so that cannot change under us.
            if let (false, Some(socket)) = (s.gone, self.socket) {
                socket.reset();
            }
        }
        self.wake_dispatcher();
    }

    fn wake_dispatcher(&self) {
        if self.moved.load(Ordering::Acquire) {
            if let Some(w) = &*self.moved_to.lock() {
                w.wake_by_ref();
            }
        } else if let Some(w) = self.dispatcher.get() {
            w.wake_by_ref();
        }
    }

    /// Remembers the waker of the task polling the body.
    fn polled_by(&self, waker: &Waker) {
        match self.dispatcher.get() {
            Some(w) if w.will_wake(waker) => {}
            None if self.dispatcher.set(waker.clone()).is_ok() => {}
            _ => {
                *self.moved_to.lock() = Some(waker.clone());
                self.moved.store(true, Ordering::Release);
            }
        }
    }
}

/// The session loop's handle on the slot.
pub struct Outgoing {
    shared: Arc<Shared>,
}

/// The session loop, run by the body.
type Driver = Pin<Box<dyn Future<Output = ()>>>;

/// The response body actix's dispatcher polls for bytes to send.
pub struct OutgoingBody {
    shared: Arc<Shared>,
    /// `shared` as a waker, made once.
    waker: Waker,
    driver: Option<Driver>,
}

/// The error that ends an aborted connection.
#[derive(Debug, thiserror::Error)]
#[error("client stopped reading; connection dropped")]
pub struct Aborted;

impl Outgoing {
    /// A connection's writer and body. With `metrics`, a session it drives is
    /// watched for stalls of `stall_timeout`.
    pub fn new(
        socket: Option<ClientSocket>,
        metrics: Option<&Metrics>,
        stall_timeout: Duration,
    ) -> (Outgoing, OutgoingBody) {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            dispatcher: OnceLock::new(),
            moved: AtomicBool::new(false),
            moved_to: Mutex::new(None),
            woken_at: AtomicU64::new(0),
            stalled: AtomicBool::new(false),
            socket,
            stall: metrics.map(|m| Stall {
                timeout: stall_timeout,
                resets: m.slow_consumer_resets.clone(),
            }),
        });
        let body = OutgoingBody {
            waker: Waker::from(shared.clone()),
            shared: shared.clone(),
            driver: None,
        };
        (Outgoing { shared }, body)
    }

    /// True once the dispatcher has dropped the connection.
    #[cfg(test)]
    pub fn is_gone(&self) -> bool {
        self.shared.is_gone()
    }

    #[cfg(test)]
    pub(super) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl Sink for Outgoing {
    /// True when the previous frame was taken: a new one may be written now.
    fn has_room(&self) -> bool {
        let s = self.shared.slot.lock();
        s.buf.is_empty() && !s.closed && !s.gone
    }

    /// Resolves when the slot is empty again. It registers no waker: the loop
    /// runs inside the body ([`OutgoingBody::drive`]), which runs it again right
    /// after the dispatcher takes the frame.
    async fn writable(&self) {
        poll_fn(|_| {
            if self.shared.slot.lock().buf.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Resolves in the dispatcher's next turn, after it has flushed what it took
    /// in this one: frames written one per turn each start at the head of its
    /// write buffer, which then stays one page on an idle connection.
    async fn next_turn(&self) {
        let mut asked = false;
        poll_fn(|_| {
            let mut s = self.shared.slot.lock();
            if !asked {
                asked = true;
                s.next_turn = true;
                Poll::Pending
            } else if s.next_turn {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    /// True once the watchdog found this connection's writes stalled.
    fn is_stalled(&self) -> bool {
        self.shared.is_stalled()
    }

    /// Writes need no wake-up: they come from the loop inside the body's poll.
    fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
        let mut s = self.shared.slot.lock();
        if !(s.closed || s.gone) {
            encode(&mut s.buf);
        }
    }

    /// Ends the body once what is queued is taken.
    fn end(&self) {
        self.shared.slot.lock().closed = true;
    }

    /// Drops the connection without flushing (see [`Shared::abort`]).
    fn abort(&self) {
        self.shared.abort();
    }

    fn flushed(&self) -> bool {
        self.shared.slot.lock().buf.is_empty()
    }

    /// Bytes the kernel still holds for the client (not yet acknowledged); 0
    /// without a socket.
    fn unsent(&self) -> usize {
        // The loop calling this runs inside the body, so the socket is open.
        self.shared.socket.map_or(0, |s| s.unsent())
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.shared.slot.lock().finished = true;
    }
}

impl OutgoingBody {
    /// Runs `session` (which writes through this body's [`Outgoing`]) inside the
    /// body: each poll of the body runs it until it waits, and its wake-ups wake
    /// the dispatcher. A connection with a socket is watched for stalls.
    pub fn drive(&mut self, session: impl Future<Output = ()> + 'static) {
        self.driver = Some(Box::pin(session));
        if self.shared.socket.is_some() && self.shared.stall.is_some() {
            watchdog::watch(&self.shared);
        }
    }
}

impl MessageBody for OutgoingBody {
    type Error = Aborted;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        this.shared.polled_by(cx.waker());
        if this.shared.woken_at.load(Ordering::Relaxed) != 0 {
            this.shared.woken_at.store(0, Ordering::Relaxed);
        }
        let mut ran = false;
        loop {
            {
                let mut s = this.shared.slot.lock();
                if s.abort {
                    return Poll::Ready(Some(Err(Aborted)));
                }
                if !s.buf.is_empty() {
                    // Taken whole (not split) so an idle connection keeps no buffer.
                    let frame = std::mem::take(&mut s.buf).freeze();
                    drop(s);
                    // The loop runs at the next poll, which the dispatcher makes as
                    // soon as its buffer has room: no wake-up needed. If the socket
                    // takes nothing, that wait is what the watchdog times.
                    this.shared.taken();
                    return Poll::Ready(Some(Ok(frame)));
                }
                if s.finished || s.closed {
                    return Poll::Ready(None);
                }
            }
            let Some(driver) = this.driver.as_mut().filter(|_| !ran) else {
                let mut s = this.shared.slot.lock();
                if std::mem::take(&mut s.next_turn) {
                    // The dispatcher flushes, then polls again.
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            };
            ran = true;
            if driver
                .as_mut()
                .poll(&mut Context::from_waker(&this.waker))
                .is_ready()
            {
                // Dropping the loop drops its `Outgoing`: the body ends once the
                // slot is empty.
                this.driver = None;
            }
        }
    }
}

impl Drop for OutgoingBody {
    fn drop(&mut self) {
        self.shared.slot.lock().gone = true;
        // The session loop (if still running) goes with the body: it leaves the
        // fan-out and counts the connection closed.
        self.driver = None;
    }
}

/// The raw descriptor of a client's TCP socket, stored per connection by
/// [`remember_socket`].
#[derive(Clone, Copy, Debug)]
pub struct ClientSocket(pub(super) RawFd);

impl ClientSocket {
    pub(super) fn unsent(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: the descriptor is open (see `Outgoing::unsent`); the call only
        // writes the int we pass.
        let rc = unsafe { libc::ioctl(self.0, libc::TIOCOUTQ, &mut n) };
        if rc == 0 {
            n.max(0) as usize
        } else {
            0
        }
    }

    /// Resets the connection: `SO_LINGER` 0 makes the final close send RST and
    /// drop unsent data; `shutdown` wakes the dispatcher to notice.
    pub(super) fn reset(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the descriptor is open (see `Outgoing::abort`); both calls only
        // read their arguments, and a failure leaves the socket as it was.
        unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            libc::shutdown(self.0, libc::SHUT_RDWR);
        }
    }
}

/// The server's `on_connect_ext` hook: remembers each connection's descriptor
/// (for slow SSE readers), under TLS the one beneath it.
pub fn remember_socket<T: AsRawFd>(io: &T, ext: &mut Extensions) {
    ext.insert(ClientSocket(io.as_raw_fd()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(out: &Outgoing, b: &[u8]) {
        out.write(|buf| buf.extend_from_slice(b));
    }

    fn poll_body(body: &mut OutgoingBody) -> Poll<Option<Result<Bytes, Aborted>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body).poll_next(&mut cx)
    }

    #[test]
    fn the_slot_holds_one_batch_until_the_body_takes_it() {
        let (out, mut body) = Outgoing::new(None, None, Duration::from_secs(1));
        assert!(out.has_room());
        assert!(poll_body(&mut body).is_pending());
        bytes(&out, b"event: a\n\n");
        assert!(!out.has_room(), "a frame in flight");
        bytes(&out, b": keepalive\n\n");
        let Poll::Ready(Some(Ok(got))) = poll_body(&mut body) else {
            panic!("the body yields the queued bytes")
        };
        assert_eq!(&got[..], b"event: a\n\n: keepalive\n\n");
        assert!(out.has_room());
        assert!(poll_body(&mut body).is_pending());
    }

    #[test]
    fn end_ends_the_body_after_what_is_queued() {
        let (out, mut body) = Outgoing::new(None, None, Duration::from_secs(1));
        bytes(&out, b"last");
        out.end();
        bytes(&out, b"ignored");
        let Poll::Ready(Some(Ok(got))) = poll_body(&mut body) else {
            panic!("the body yields the queued bytes")
        };
        assert_eq!(&got[..], b"last", "nothing after the end");
        assert!(matches!(poll_body(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn abort_fails_the_body_and_a_dropped_body_means_gone() {
        let (out, mut body) = Outgoing::new(None, None, Duration::from_secs(1));
        bytes(&out, b"[]");
        out.abort();
        assert!(matches!(poll_body(&mut body), Poll::Ready(Some(Err(_)))));
        drop(body);
        assert!(out.is_gone());
        assert!(!out.has_room());
    }

    /// Counts the wake-ups the dispatcher gets.
    #[derive(Default)]
    struct Dispatcher(std::sync::atomic::AtomicUsize);

    impl Wake for Dispatcher {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_driven_body_runs_the_session_loop_on_the_dispatchers_task() {
        let (out, mut body) = Outgoing::new(None, None, Duration::from_secs(1));
        let shared = out.shared.clone();
        let news = Arc::new(tokio::sync::Notify::new());
        let n = news.clone();
        body.drive(async move {
            for i in 0..2 {
                n.notified().await;
                bytes(&out, format!("[{i}]").as_bytes());
                out.writable().await;
            }
        });
        let dispatcher = Arc::new(Dispatcher::default());
        let waker = Waker::from(dispatcher.clone());
        let mut poll = || Pin::new(&mut body).poll_next(&mut Context::from_waker(&waker));

        assert!(poll().is_pending(), "nothing to send yet");
        news.notify_one();
        assert_eq!(
            dispatcher.0.load(Ordering::Relaxed),
            1,
            "news wakes the dispatcher"
        );
        let Poll::Ready(Some(Ok(bytes))) = poll() else {
            panic!("the loop ran and its frame is the body's next chunk")
        };
        assert_eq!(&bytes[..], b"[0]");
        assert!(
            shared.waiting(now_ms()).is_some(),
            "runnable until the dispatcher polls again (which it does when its socket takes the frame)"
        );
        assert!(poll().is_pending());
        assert_eq!(shared.waiting(now_ms()), None);
        news.notify_one();
        let Poll::Ready(Some(Ok(bytes))) = poll() else {
            panic!("second frame")
        };
        assert_eq!(&bytes[..], b"[1]");
        assert!(matches!(poll(), Poll::Ready(None)), "the loop ended");
        assert_eq!(
            dispatcher.0.load(Ordering::Relaxed),
            2,
            "writing from inside the poll wakes nobody"
        );
    }
}
