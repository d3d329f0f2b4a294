//! The delivery loop of a worker thread: one task per worker that the hub wakes
//! once per quote (through the worker's [`Doorbell`]) for all of the worker's
//! connections with news, and that writes each of them in one pass: no task,
//! wake-up or loop turn per connection and update. Woken, it yields once, so
//! the quotes that arrive while the worker finishes its turn go out in the
//! same pass (each connection written once per turn, as a cork).
//!
//! A connection registers with its worker's loop when its driver starts (its
//! inbox is then routed to the doorbell) and leaves when the driver ends. The
//! loop takes only the plain case (the socket has room, nothing left over from
//! the last batch): everything else, and whatever the connection's own task
//! must see after a write (bytes the socket did not take, an earlier throttle
//! deadline, a close the protocol asked for), wakes that task, whose driver
//! does the rest as it would have without the loop.
//!
//! The frames a pass writes to plain sockets go to the kernel together, a
//! few hundred per `io_uring_enter` ([`uring`]), and each connection is
//! settled at the end of the batch as a direct send would have been at once.
//!
//! A pass long enough to show a heavy load (thousands of connections) is
//! followed by a rest as long as it ([`rest_after`]), so that each
//! connection's next frame carries more of what came in.
//!
//! The worker also keeps its connections' timers ([`Registration::set_timer`],
//! one tokio timer per worker in [`alarms`]) and waits for shutdown once for
//! all of them ([`on_shutdown`]): a registered connection holds neither a
//! timer nor a shutdown wait of its own, which an idle connection would pay
//! for.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::socket::uring;
use crate::hub::{Doorbell, Inbox};
use crate::shutdown::{Shutdown, ShutdownWait};

/// A connection the loop can deliver to.
pub trait Deliver {
    /// Writes what the session has ready now, if the plain case allows,
    /// otherwise wakes the connection's task.
    fn deliver(&self, now: Instant);

    /// Asks the CPU for what [`Deliver::deliver`] will read first, beyond
    /// the connection's own state, while the loop delivers to the one
    /// before it.
    fn prefetch(&self) {}

    /// The socket the loop may batch this connection's sends for
    /// ([`uring`]): a plain one the connection writes to directly.
    fn batch_fd(&self) -> Option<RawFd> {
        None
    }

    /// How a send the loop batched for this connection went: `frame` is what
    /// [`Deliver::deliver`] wrote, `wrote` what the socket took of it.
    fn settle(&self, _wrote: io::Result<usize>, _frame: &[u8]) {}

    /// Something only the connection's driver handles: the time it set with
    /// [`Registration::set_timer`] has come, or shutdown began. The driver
    /// looks.
    fn alarm(&self);
}

/// Asks the CPU to bring `lines` cache lines from `at` on into its cache,
/// without waiting for them (a hint: any address is allowed, nothing is
/// read).
pub fn prefetch(at: *const u8, lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in 0..lines {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is a hint that never faults and reads nothing
        // the program sees, whatever the address; SSE is part of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line * 64).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, lines);
}

/// How much of a connection's shared state the loop prefetches two
/// connections ahead.
const AHEAD_LINES: usize = 16;

/// The loop reads the clock again after this many deliveries: a pass over
/// thousands of connections takes tens of milliseconds, and the time a
/// session books for a send (its throttle's spacing counts from it) and a
/// frame's feed-to-socket latency are taken from within eight deliveries of
/// the truth (a few tens of microseconds of the worker's work, under the
/// latency histogram's first bucket of 0.1 ms; more if the thread is
/// preempted between two reads, when the latency is counted short by the
/// time it was off the CPU), for one clock read per eight frames instead of
/// one per frame.
/// A connection left twice in one pass (its own task took its marks between
/// two rings) then usually finds the symbols its first visit sent past
/// their spacing, instead of held for a wake-up and a frame of their own.
const CLOCK_EVERY: usize = 8;

/// A pass that took at least this long (wall time: thousands of connections
/// written, where a light load's pass writes a few hundred in under a
/// millisecond) makes the worker rest before the next one.
const REST_FROM: Duration = Duration::from_millis(10);

/// The longest rest after a pass.
const REST_MAX: Duration = Duration::from_millis(25);

/// How long the worker waits after a pass that took `spent` before it takes
/// news again: as long as the pass took, up to [`REST_MAX`], once the pass
/// took [`REST_FROM`]. Under a heavy load each frame's cost is mostly its
/// send, and a worker that went round again at once would write every
/// connection again with the little that came in during the pass; resting
/// lets each connection's next frame carry more, for a wait no longer than
/// the pass its news already waited for. A light load's passes are far
/// shorter than [`REST_FROM`], so its latency is untouched.
fn rest_after(spent: Duration) -> Option<Duration> {
    (spent >= REST_FROM).then(|| spent.min(REST_MAX))
}

/// A worker's connections, by token, and their timers.
struct Worker {
    doorbell: Arc<Doorbell>,
    conns: RefCell<Slots>,
    timers: RefCell<Timers>,
}

/// The worker's connections' timers, one per connection at most, run by one
/// task and one tokio timer per worker ([`alarms`]): a connection's heartbeat,
/// client timeout, throttle and stall deadlines cost it an entry here (24
/// bytes, in B-tree nodes) instead of a tokio timer of its own (112 bytes)
/// in every idle connection's future.
#[derive(Default)]
struct Timers {
    /// (when, token), earliest first.
    due: BTreeSet<(tokio::time::Instant, u32)>,
    /// The alarms' task while it waits (woken for an earlier entry).
    waker: Option<Waker>,
}

impl Worker {
    /// The connection holding `token`, if it is still there; upgraded
    /// outside the borrow of the slots (what is done with it may register).
    fn conn(&self, token: u32) -> Option<Rc<dyn Deliver>> {
        self.conns
            .borrow()
            .conns
            .get(token as usize)
            .and_then(|c| c.as_ref()?.upgrade())
    }
}

#[derive(Default)]
struct Slots {
    conns: Vec<Option<Weak<dyn Deliver>>>,
    free: Vec<u32>,
}

thread_local! {
    /// This worker's loop, started by its first connection.
    static WORKER: RefCell<Option<Rc<Worker>>> = const { RefCell::new(None) };
}

/// A connection's place in its worker's loop; leaves it when dropped.
pub struct Registration {
    worker: Rc<Worker>,
    token: u32,
}

impl Registration {
    /// Moves the connection's timer from `from` (where the last call put it)
    /// to `to`: at `to` its [`Deliver::alarm`] is called.
    pub fn set_timer(&self, from: Option<tokio::time::Instant>, to: Option<tokio::time::Instant>) {
        if from == to {
            return;
        }
        let mut timers = self.worker.timers.borrow_mut();
        if let Some(from) = from {
            timers.due.remove(&(from, self.token));
        }
        if let Some(to) = to {
            let earliest = timers.due.first().is_none_or(|&(at, _)| to < at);
            timers.due.insert((to, self.token));
            if earliest {
                if let Some(waker) = timers.waker.take() {
                    waker.wake();
                }
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // A timer left set (the driver clears its own) rings whoever gets
        // the token next: an alarm only makes a driver look, harmless.
        uring::unregister(self.token);
        let mut slots = self.worker.conns.borrow_mut();
        slots.conns[self.token as usize] = None;
        slots.free.push(self.token);
    }
}

/// Registers `conn` with this worker's loop (started here if this is the
/// worker's first) and routes `inbox` to it. Call it from the connection's
/// task, on a worker thread (inside its `LocalSet`); the worker's first
/// registration makes it wait for `shutdown` (one signal per server). `None`
/// if the inbox was routed already (the connection's task keeps being woken
/// directly).
pub fn register(
    conn: Weak<dyn Deliver>,
    inbox: &Inbox,
    shutdown: &Arc<Shutdown>,
) -> Option<Registration> {
    let worker = WORKER.with(|w| {
        w.borrow_mut()
            .get_or_insert_with(|| {
                let worker = Rc::new(Worker {
                    doorbell: Arc::new(Doorbell::new()),
                    conns: RefCell::default(),
                    timers: RefCell::default(),
                });
                actix_web::rt::spawn(run(worker.clone()));
                actix_web::rt::spawn(alarms(worker.clone()));
                actix_web::rt::spawn(on_shutdown(worker.clone(), shutdown.wait()));
                worker
            })
            .clone()
    });
    let fd = conn.upgrade().and_then(|c| c.batch_fd());
    let token = {
        let mut slots = worker.conns.borrow_mut();
        match slots.free.pop() {
            Some(t) => {
                slots.conns[t as usize] = Some(conn);
                t
            }
            None => {
                slots.conns.push(Some(conn));
                slots.conns.len() as u32 - 1
            }
        }
    };
    // Without a registered socket its sends are system calls of their own.
    if let Some(fd) = fd {
        uring::register(token, fd);
    }
    let registration = Registration { worker, token };
    // Dropping the registration gives the token back.
    inbox
        .route(registration.worker.doorbell.clone(), token)
        .then_some(registration)
}

/// The loop: each time the doorbell rings, every connection whose token was
/// left gets one delivery. Woken, the loop first lets the worker finish its
/// turn (the connections' own tasks, the sockets' readiness), so that what
/// piles up meanwhile goes out in the same pass, one write per connection,
/// as a cork flushed once per turn of the event loop.
async fn run(worker: Rc<Worker>) {
    // Both kept between passes (swapped with the doorbell's, which then
    // keeps a buffer too): a pass allocates nothing once they have grown.
    let mut tokens = Vec::new();
    let mut more = Vec::new();
    loop {
        std::future::poll_fn(|cx| {
            worker.doorbell.take(cx.waker(), &mut tokens);
            if tokens.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        tokio::task::yield_now().await;
        // What rang while the loop yielded goes in this pass too.
        std::future::poll_fn(|cx| {
            worker.doorbell.take(cx.waker(), &mut more);
            tokens.append(&mut more);
            Poll::Ready(())
        })
        .await;
        let mut now = Instant::now();
        let started = now;
        // Upgraded outside the borrow of the slots.
        // Each connection's state is cold by the time its news comes: the
        // loop asks for the state of the connection two ahead, and for what
        // the next one reads beyond it, while it writes this one.
        let mut next = tokens.first().and_then(|&t| worker.conn(t));
        // The pass's frames count in the shared metrics once, at its end.
        uring::begin();
        super::counters::batched(|| {
            for i in 0..tokens.len() {
                let conn = next.take();
                if let Some(&ahead) = tokens.get(i + 2) {
                    if let Some(Some(c)) = worker.conns.borrow().conns.get(ahead as usize) {
                        prefetch(Weak::as_ptr(c).cast(), AHEAD_LINES);
                    }
                }
                next = tokens.get(i + 1).and_then(|&t| worker.conn(t));
                if let Some(n) = &next {
                    n.prefetch();
                }
                if let Some(conn) = conn {
                    if uring::writing(tokens[i]) {
                        settle(&worker, true);
                    }
                    conn.deliver(now);
                }
                if i % CLOCK_EVERY == CLOCK_EVERY - 1 {
                    now = Instant::now();
                }
            }
        });
        settle(&worker, false);
        tokens.clear();
        if let Some(rest) = rest_after(started.elapsed()) {
            // What rings meanwhile waits at the doorbell for the next pass.
            tokio::time::sleep(rest).await;
        }
    }
}

/// Sends what the pass queued ([`uring`]) and settles each connection it
/// wrote; the pass goes on queueing if `more`.
fn settle(worker: &Worker, more: bool) {
    uring::end(more, |token, wrote, frame| {
        if let Some(conn) = worker.conn(token) {
            conn.settle(wrote, frame);
        }
    });
}

/// At shutdown every connection of the worker looks (one wait per worker,
/// instead of one per connection: a connection in the loop sees shutdown
/// with [`Shutdown::has_begun`] when it looks; one that registers later, on
/// its first turn).
async fn on_shutdown(worker: Rc<Worker>, wait: ShutdownWait) {
    wait.await;
    let conns: Vec<_> = worker
        .conns
        .borrow()
        .conns
        .iter()
        .flatten()
        .filter_map(Weak::upgrade)
        .collect();
    for conn in conns {
        conn.alarm();
    }
}

/// The worker's timers: sleeps until the earliest entry, then calls the
/// alarm of each connection whose time has come.
async fn alarms(worker: Rc<Worker>) {
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    let mut due = Vec::new();
    loop {
        // The deadline the tokio timer fired for: due whatever the clock says.
        let mut fired = None;
        std::future::poll_fn(|cx| loop {
            let clock = tokio::time::Instant::now();
            let now = fired.map_or(clock, |at: tokio::time::Instant| clock.max(at));
            let mut timers = worker.timers.borrow_mut();
            while let Some(&(at, token)) = timers.due.first() {
                if at > now {
                    break;
                }
                timers.due.pop_first();
                due.push(token);
            }
            if !due.is_empty() {
                return Poll::Ready(());
            }
            timers.waker = Some(cx.waker().clone());
            let Some(&(at, _)) = timers.due.first() else {
                return Poll::Pending;
            };
            drop(timers);
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            fired = Some(at);
        })
        .await;
        for token in due.drain(..) {
            if let Some(conn) = worker.conn(token) {
                conn.alarm();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::quote::QuoteUpdate;
    use crate::universe::parse;
    use tokio::sync::mpsc;

    /// A connection that takes its marks when delivered to and reports them.
    struct Recorder {
        name: &'static str,
        inbox: Arc<Inbox>,
        told: mpsc::UnboundedSender<(&'static str, Vec<u32>)>,
    }

    impl Deliver for Recorder {
        fn deliver(&self, _now: Instant) {
            let mut slots = Vec::new();
            self.inbox.take(&[], |s| slots.push(s));
            let _ = self.told.send((self.name, slots));
        }

        fn alarm(&self) {
            let _ = self.told.send((self.name, Vec::new()));
        }
    }

    fn quote(hub: &Arc<Hub>, t: i64) {
        let mut u: QuoteUpdate =
            serde_json::from_str(&format!(r#"{{"sym":"AAA","t":{t}}}"#)).expect("valid update");
        u.sym = "AAA".into();
        let hub = hub.clone();
        // From another thread, as a feed publishes.
        std::thread::spawn(move || hub.ingest(&u).expect("known symbol"))
            .join()
            .expect("ingest thread");
    }

    #[actix_web::test]
    async fn a_quote_reaches_each_registered_connection_through_the_worker_loop() {
        let hub = Arc::new(Hub::new(
            parse("h\nAAA\tA\t1.00\t0.01\tsim\n").expect("universe"),
        ));
        let (told, mut heard) = mpsc::unbounded_channel();
        let shutdown = Arc::new(Shutdown::default());
        let mut conns = Vec::new();
        let mut registrations = Vec::new();
        // The one that goes sits between the others in the hub's list, so
        // the loop's look-ahead passes over its empty place.
        for (name, slot) in [("a", 3), ("gone", 7), ("b", 5), ("c", 9)] {
            let inbox = Arc::new(Inbox::new(64));
            hub.subscribe(0, slot, &inbox);
            let conn: Rc<dyn Deliver> = Rc::new(Recorder {
                name,
                inbox: inbox.clone(),
                told: told.clone(),
            });
            registrations
                .push(register(Rc::downgrade(&conn), &inbox, &shutdown).expect("routed once"));
            // Routed already: a second registration is refused.
            assert!(register(Rc::downgrade(&conn), &inbox, &shutdown).is_none());
            conns.push(conn);
        }
        // The second connection ends: its registration and itself go.
        drop(registrations.remove(1));
        drop(conns.remove(1));

        for round in 0..3 {
            quote(&hub, round);
            let mut got = Vec::new();
            for _ in 0..3 {
                // A lost ring hangs here.
                let next = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv());
                got.push(next.await.expect("delivered in time").expect("open"));
            }
            got.sort();
            assert_eq!(
                got,
                [("a", vec![3]), ("b", vec![5]), ("c", vec![9])],
                "round {round}"
            );
            // Nothing else: the gone connection was not delivered to, and
            // each connection was delivered once.
            tokio::task::yield_now().await;
            assert!(heard.try_recv().is_err());
        }
    }

    #[actix_web::test]
    async fn a_timer_rings_its_connection_once_a_moved_or_cleared_one_follows_and_shutdown_rings_all(
    ) {
        let (told, mut heard) = mpsc::unbounded_channel();
        let shutdown = Arc::new(Shutdown::default());
        let mut conns = Vec::new();
        let mut regs = Vec::new();
        for name in ["a", "b", "c"] {
            let inbox = Arc::new(Inbox::new(64));
            let conn: Rc<dyn Deliver> = Rc::new(Recorder {
                name,
                inbox: inbox.clone(),
                told: told.clone(),
            });
            regs.push(register(Rc::downgrade(&conn), &inbox, &shutdown).expect("routed once"));
            conns.push(conn);
        }
        let now = tokio::time::Instant::now();
        let hour = now + std::time::Duration::from_secs(3600);
        let soon = now + std::time::Duration::from_millis(20);
        let later = now + std::time::Duration::from_millis(40);
        // "a" first waits an hour, then is moved earlier: the alarms' task,
        // asleep until the hour, must see the earlier entry.
        regs[0].set_timer(None, Some(hour));
        tokio::task::yield_now().await;
        regs[0].set_timer(Some(hour), Some(later));
        // "b" is set sooner, then cleared: it must never ring.
        regs[1].set_timer(None, Some(soon));
        regs[1].set_timer(Some(soon), None);
        // "c" is set at the same time as "a".
        regs[2].set_timer(None, Some(later));
        let mut got = Vec::new();
        for _ in 0..2 {
            // A lost alarm hangs here.
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv());
            got.push(next.await.expect("rung in time").expect("open").0);
        }
        got.sort();
        assert_eq!(got, ["a", "c"]);
        assert!(tokio::time::Instant::now() >= later, "not before its time");
        // Once each: nothing more is due.
        assert!(worker_timers_empty(&regs[0]));
        tokio::task::yield_now().await;
        assert!(heard.try_recv().is_err());

        // At shutdown every connection of the worker looks.
        shutdown.begin();
        let mut got = Vec::new();
        for _ in 0..3 {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), heard.recv());
            got.push(next.await.expect("told in time").expect("open").0);
        }
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
    }

    #[test]
    fn a_pass_that_shows_a_heavy_load_is_followed_by_a_rest_as_long_as_it_up_to_the_most() {
        let ms = Duration::from_millis;
        assert_eq!(rest_after(ms(0)), None);
        assert_eq!(rest_after(REST_FROM - ms(1)), None);
        assert_eq!(rest_after(REST_FROM), Some(REST_FROM));
        assert_eq!(rest_after(ms(12)), Some(ms(12)));
        assert_eq!(rest_after(ms(400)), Some(REST_MAX));
    }

    /// A connection whose deliveries take `linger` (a pass over thousands of
    /// connections, in one) and that reports when each ended.
    struct Slow {
        inbox: Arc<Inbox>,
        linger: Duration,
        told: mpsc::UnboundedSender<(Vec<u32>, Instant)>,
    }

    impl Deliver for Slow {
        fn deliver(&self, _now: Instant) {
            let mut slots = Vec::new();
            self.inbox.take(&[], |s| slots.push(s));
            std::thread::sleep(self.linger);
            let _ = self.told.send((slots, Instant::now()));
        }

        fn alarm(&self) {}
    }

    #[actix_web::test]
    async fn after_a_long_pass_the_worker_rests_and_then_delivers_what_rang_meanwhile() {
        let hub = Arc::new(Hub::new(
            parse("h\nAAA\tA\t1.00\t0.01\tsim\n").expect("universe"),
        ));
        let (told, mut heard) = mpsc::unbounded_channel();
        let inbox = Arc::new(Inbox::new(64));
        hub.subscribe(0, 3, &inbox);
        let conn: Rc<dyn Deliver> = Rc::new(Slow {
            inbox: inbox.clone(),
            linger: REST_FROM,
            told,
        });
        let shutdown = Arc::new(Shutdown::default());
        let _registration = register(Rc::downgrade(&conn), &inbox, &shutdown).expect("routed");
        let mut rounds = Vec::new();
        for round in 0..2 {
            // The second rings while the worker rests: delivered once the
            // rest is over, not lost.
            quote(&hub, round);
            let next = tokio::time::timeout(Duration::from_secs(10), heard.recv());
            let (slots, at) = next.await.expect("delivered in time").expect("open");
            assert_eq!(slots, [3], "round {round}");
            rounds.push(at);
        }
        let (first, second) = (rounds[0], rounds[1]);
        // The second pass began a rest (at least REST_FROM) after the first
        // ended, and took REST_FROM itself.
        assert!(second.duration_since(first) >= REST_FROM * 2);
    }

    fn worker_timers_empty(r: &Registration) -> bool {
        r.worker.timers.borrow().due.is_empty()
    }
}
