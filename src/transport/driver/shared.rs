//! What a connection's driver shares with its worker's delivery loop
//! ([`pump`](super::super::pump)): the socket's write side, and the session
//! with its wire, borrowed by either only between awaits. The loop writes
//! through [`Deliver`] while the driver waits, and kicks the driver for what
//! only it can do.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::super::pump::{prefetch, Deliver};
use super::super::socket::Sink;
use super::super::{CloseCode, FrameCounters};
use super::Wire;
use crate::lend::lend;
use crate::session::protocol::ServerMsg;
use crate::session::Session;

/// What the driver and its worker's delivery loop share: the socket's write
/// side, and (borrowed only between awaits) the session and its wire.
pub(super) struct Shared<W, S> {
    pub out: S,
    pub core: RefCell<Core<W>>,
    /// The driver's task while it waits, and whether the loop asked it to look.
    pub waiting: Cell<Option<Waker>>,
    pub kicked: Cell<bool>,
    /// The waiting driver waits for the socket to take bytes: it writes
    /// whatever is ready then, without being asked.
    pub waits_writable: Cell<bool>,
    /// When the waiting driver's timer fires.
    pub timer_at: Cell<Option<tokio::time::Instant>>,
}

/// The most of a session's hot blocks the loop prefetches (a session with
/// hundreds of subscriptions reads few of them per delivery).
const HOT_LINES: usize = 12;

thread_local! {
    /// The messages of one take, per worker (see [`Core::encode`]).
    static MSGS: Cell<Vec<ServerMsg>> = const { Cell::new(Vec::new()) };
}

pub(super) struct Core<W> {
    pub wire: W,
    pub session: Session,
    /// Encoded frames of a batch larger than FRAME_BYTES, written one per turn.
    pub spill: VecDeque<Bytes>,
    pub counters: FrameCounters,
}

impl<W: Wire> Core<W> {
    /// Encodes the session's ready messages (if `ready`) and the wire's own
    /// frames: the first is returned when nothing waits in `spill` (the
    /// common case of one frame leaves `spill` without an allocation), the
    /// rest go to `spill`, to be written after it.
    pub fn encode(&mut self, ready: bool, now: Instant) -> Option<Bytes> {
        self.take(ready, now, |core, msgs| core.encode_msgs(msgs, now))
    }

    /// [`Core::encode`], except that the first frame of the batch goes to
    /// `out` at once where the wire can write it in place
    /// ([`Wire::write_batch`]; nothing then waits in `spill` and the wire has
    /// no frames of its own): `None` when that was all.
    pub fn write_or_encode(&mut self, out: &impl Sink, ready: bool, now: Instant) -> Option<Bytes> {
        self.take(ready, now, |core, msgs| {
            let Core {
                wire,
                spill,
                counters,
                ..
            } = core;
            let direct = if spill.is_empty() && !wire.has_output() && wire.closing().is_none() {
                wire.write_batch(out, msgs, &mut |part, len| counters.frame(part, len, now))
            } else {
                0
            };
            if direct == 0 {
                return core.encode_msgs(msgs, now);
            }
            if direct < msgs.len() {
                // What did not fit the first frame waits in `spill`, written
                // one frame per turn as ever.
                let next = core.encode_msgs(&msgs[direct..], now);
                if let Some(frame) = next {
                    core.spill.push_front(frame);
                }
            }
            None
        })
    }

    /// Runs `then` with the session's ready messages (none unless `ready`),
    /// taken into the worker's buffer.
    fn take<R>(
        &mut self,
        ready: bool,
        now: Instant,
        then: impl FnOnce(&mut Self, &[ServerMsg]) -> R,
    ) -> R {
        // A batch is at most a session's symbols and replies: always kept.
        lend(&MSGS, usize::MAX, |msgs| {
            if ready {
                self.session.take_ready_into(now, msgs);
                self.counters.queue_depth(self.session.pending_count());
            }
            then(self, msgs)
        })
    }

    fn encode_msgs(&mut self, msgs: &[ServerMsg], now: Instant) -> Option<Bytes> {
        let Core {
            wire,
            spill,
            counters,
            ..
        } = self;
        let mut first = None;
        wire.encode(msgs, &mut |part, frame| {
            counters.frame(part, frame.len(), now);
            if first.is_none() && spill.is_empty() {
                first = Some(frame);
            } else {
                spill.push_back(frame);
            }
        });
        first
    }
}

impl<W, S> Shared<W, S> {
    /// Wakes the driver's task (it looks at everything on its next turn).
    pub fn kick(&self) {
        self.kicked.set(true);
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
    }

    /// Resolves once [`Shared::kick`] was called.
    pub fn kicked(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.kicked.replace(false) {
                return Poll::Ready(());
            }
            match self.waiting.take() {
                Some(w) if w.will_wake(cx.waker()) => self.waiting.set(Some(w)),
                _ => self.waiting.set(Some(cx.waker().clone())),
            }
            Poll::Pending
        })
    }
}

impl<W: Wire, S: Sink> Deliver for Shared<W, S> {
    fn alarm(&self) {
        self.kick();
    }

    fn batch_fd(&self) -> Option<std::os::fd::RawFd> {
        self.out.batch_fd()
    }

    fn settle(&self, wrote: std::io::Result<usize>, frame: &[u8]) {
        self.out.settle(wrote, frame);
        // What the socket did not take waits for it: the driver writes it.
        if !self.out.has_room() {
            self.kick();
        }
    }

    fn prefetch(&self) {
        if let Ok(core) = self.core.try_borrow() {
            for (at, bytes) in core.session.hot() {
                prefetch(at, bytes.div_ceil(64).min(HOT_LINES));
            }
        }
    }

    fn deliver(&self, now: Instant) {
        // The driver never holds the borrow across an await: a failure here
        // would be a delivery from inside the driver's own turn.
        let Ok(mut core) = self.core.try_borrow_mut() else {
            return self.kick();
        };
        let out = &self.out;
        if out.is_stalled() {
            drop(core);
            return self.kick();
        }
        if !out.has_room() || !core.spill.is_empty() {
            // The driver writes once the socket takes bytes again; it only
            // needs telling if it is not waiting for that.
            if !self.waits_writable.get() {
                drop(core);
                self.kick();
            }
            return;
        }
        if core.session.auth_end(now).is_some() {
            drop(core);
            return self.kick();
        }
        let ready = core.session.has_ready(now);
        if !ready && !core.wire.has_output() {
            return;
        }
        let first = core.write_or_encode(out, ready, now);
        if core.wire.closing().is_some() {
            // The driver writes it before the close.
            core.spill.extend(first);
            drop(core);
            return self.kick();
        }
        if let Some(frame) = first {
            core.wire.write(out, &frame);
        }
        // A symbol this batch throttled may be due before the driver's timer.
        let earlier = core.session.next_deadline().is_some_and(|due| {
            self.timer_at
                .get()
                .is_none_or(|at| tokio::time::Instant::from_std(due) < at)
        });
        if earlier || !core.spill.is_empty() || !out.has_room() {
            drop(core);
            self.kick();
        }
    }
}

/// The driver's hold on the shared state, which counts a connection the
/// watchdog cut as closed with 4008 even when its loop never ran again (its
/// future is dropped with the body).
pub(super) struct StallCount<W, S: Sink>(pub Rc<Shared<W, S>>);

impl<W, S: Sink> std::ops::Deref for StallCount<W, S> {
    type Target = Rc<Shared<W, S>>;

    fn deref(&self) -> &Rc<Shared<W, S>> {
        &self.0
    }
}

impl<W, S: Sink> Drop for StallCount<W, S> {
    fn drop(&mut self) {
        if self.0.out.is_stalled() {
            // Not borrowed: the driver holds the core only between awaits.
            if let Ok(mut core) = self.0.core.try_borrow_mut() {
                core.counters.closed(CloseCode::SlowConsumer);
            }
        }
    }
}
