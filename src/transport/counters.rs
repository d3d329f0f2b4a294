//! Per-session metric handles, resolved once when a session starts so writing a
//! frame does no label lookups. During a worker's delivery pass
//! ([`batched`]) frames are tallied in the worker's own memory and added to
//! the shared metrics once at its end: the shared counters' cache lines no
//! longer move between the cores per frame.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::Instant;

use prometheus::local::LocalHistogram;
use prometheus::{Histogram, IntCounter};

use super::close::{CloseCode, Ended};
use crate::metrics::Metrics;
use crate::session::protocol::{Format, QuoteKind, ServerMsg};

/// A transport's counters for one session; counts it open on creation and
/// closed (with a reason label) on [`FrameCounters::closed`].
pub struct FrameCounters {
    /// Shared by the sessions of one kind on this thread (a session's own
    /// state is what an idle connection costs: 16 bytes here, not 88).
    kind: Arc<Kind>,
    closed: bool,
    ended: bool,
}

/// A kind of session (transport and format) and the metrics it counts in.
struct Kind {
    metrics: Arc<Metrics>,
    transport: &'static str,
    format: Format,
    handles: Handles,
}

impl Kind {
    fn new(m: &Arc<Metrics>, transport: &'static str, format: Format) -> Kind {
        Kind {
            metrics: m.clone(),
            transport,
            format,
            handles: Handles {
                snapshots: m.messages_sent.with_label_values(&[transport, "snapshot"]),
                updates: m.messages_sent.with_label_values(&[transport, "update"]),
                statuses: m.messages_sent.with_label_values(&[transport, "status"]),
                replies: m.messages_sent.with_label_values(&[transport, "reply"]),
                frames: m
                    .frames_sent
                    .with_label_values(&[transport, format.as_str()]),
                bytes: m
                    .bytes_sent
                    .with_label_values(&[transport, format.as_str()]),
                latency: m.feed_to_socket_latency.with_label_values(&[transport]),
            },
        }
    }

    fn is(&self, metrics: &Arc<Metrics>, transport: &'static str, format: Format) -> bool {
        Arc::ptr_eq(&self.metrics, metrics) && self.transport == transport && self.format == format
    }
}

/// The shared metrics a frame counts in.
struct Handles {
    snapshots: IntCounter,
    updates: IntCounter,
    statuses: IntCounter,
    replies: IntCounter,
    frames: IntCounter,
    bytes: IntCounter,
    latency: Histogram,
}

/// What frames carried, counted.
#[derive(Default)]
struct Tally {
    snapshots: u64,
    updates: u64,
    statuses: u64,
    replies: u64,
    frames: u64,
    bytes: u64,
}

impl Tally {
    fn add(&mut self, t: &Tally) {
        self.snapshots += t.snapshots;
        self.updates += t.updates;
        self.statuses += t.statuses;
        self.replies += t.replies;
        self.frames += t.frames;
        self.bytes += t.bytes;
    }
}

impl Handles {
    fn add(&self, t: &Tally) {
        for (counter, n) in [
            (&self.snapshots, t.snapshots),
            (&self.updates, t.updates),
            (&self.statuses, t.statuses),
            (&self.replies, t.replies),
            (&self.frames, t.frames),
            (&self.bytes, t.bytes),
        ] {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }
}

/// One kind of session's frames during a pass, on one worker.
struct Pending {
    kind: Arc<Kind>,
    tally: Tally,
    latency: LocalHistogram,
    frame_messages: LocalHistogram,
    queue_depth: LocalHistogram,
}

impl Pending {
    fn flush(&mut self) {
        self.kind.handles.add(&std::mem::take(&mut self.tally));
        self.latency.flush();
        self.frame_messages.flush();
        self.queue_depth.flush();
    }
}

#[derive(Default)]
struct Batch {
    /// A pass is under way: frames are tallied here.
    on: bool,
    /// Kept between passes (a handful: one per transport and format).
    pending: Vec<Pending>,
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::default();
    /// The kinds of session this thread's sessions count as (a handful), as
    /// long as a session or a pass holds them.
    static KINDS: RefCell<Vec<Weak<Kind>>> = RefCell::default();
}

/// Runs `pass` with the frames it counts tallied on this thread, and adds
/// them to the shared metrics once when it ends (nested calls join the
/// outer pass).
pub fn batched<R>(pass: impl FnOnce() -> R) -> R {
    struct End;
    impl Drop for End {
        fn drop(&mut self) {
            BATCH.with(|b| {
                let mut b = b.borrow_mut();
                b.on = false;
                for p in &mut b.pending {
                    p.flush();
                }
                // Kinds no session holds any more go too.
                b.pending.retain(|p| Arc::strong_count(&p.kind) > 1);
            });
        }
    }
    let outer = BATCH.with(|b| !std::mem::replace(&mut b.borrow_mut().on, true));
    // Flushes even if the pass panics.
    let _end = outer.then_some(End);
    pass()
}

impl FrameCounters {
    /// Counts a new session of `transport` (opened, active).
    pub fn open(metrics: &Arc<Metrics>, transport: &'static str, format: Format) -> Self {
        let m = metrics;
        m.sessions_active.with_label_values(&[transport]).inc();
        m.connections_opened.with_label_values(&[transport]).inc();
        let kind = KINDS.with(|kinds| {
            let mut kinds = kinds.borrow_mut();
            kinds.retain(|k| k.strong_count() > 0);
            let found = kinds.iter().filter_map(Weak::upgrade);
            if let Some(k) = found.into_iter().find(|k| k.is(m, transport, format)) {
                return k;
            }
            let k = Arc::new(Kind::new(m, transport, format));
            kinds.push(Arc::downgrade(&k));
            k
        });
        FrameCounters {
            kind,
            closed: false,
            ended: false,
        }
    }

    /// Counts one written frame of `len` bytes carrying `msgs`, written at
    /// `now` (the caller's clock: a worker's pass reads it every few
    /// deliveries, not per frame).
    pub fn frame(&self, msgs: &[ServerMsg], len: usize, now: Instant) {
        let mut t = Tally {
            frames: 1,
            bytes: len as u64,
            ..Tally::default()
        };
        let mut oldest = None::<Instant>;
        for m in msgs {
            match m {
                ServerMsg::Quote { kind, quote, .. } => {
                    match kind {
                        QuoteKind::Snapshot => t.snapshots += 1,
                        QuoteKind::Update => t.updates += 1,
                    }
                    oldest = Some(oldest.map_or(quote.ingested, |o| o.min(quote.ingested)));
                }
                ServerMsg::Status { .. } => t.statuses += 1,
                _ => {}
            }
        }
        t.replies = msgs.len() as u64 - t.snapshots - t.updates - t.statuses;
        let age = oldest.map(|t| now.saturating_duration_since(t).as_secs_f64());
        let tallied = self.in_batch(|p| {
            p.tally.add(&t);
            p.frame_messages.observe(msgs.len() as f64);
            if let Some(age) = age {
                p.latency.observe(age);
            }
        });
        if !tallied {
            let k = &*self.kind;
            k.handles.add(&t);
            k.metrics.frame_messages.observe(msgs.len() as f64);
            if let Some(age) = age {
                k.handles.latency.observe(age);
            }
        }
    }

    /// Counts the symbols a session holds back for their throttle when it
    /// writes.
    pub fn queue_depth(&self, pending: usize) {
        if !self.in_batch(|p| p.queue_depth.observe(pending as f64)) {
            self.kind.metrics.send_queue_depth.observe(pending as f64);
        }
    }

    /// Runs `f` on this kind of session's tally if a pass is under way on
    /// this thread; false if none is.
    fn in_batch(&self, f: impl FnOnce(&mut Pending)) -> bool {
        BATCH.with(|b| {
            let mut b = b.borrow_mut();
            if !b.on {
                return false;
            }
            let k = &self.kind;
            let at = b.pending.iter().position(|p| Arc::ptr_eq(&p.kind, k));
            let at = at.unwrap_or_else(|| {
                b.pending.push(Pending {
                    kind: k.clone(),
                    tally: Tally::default(),
                    latency: k.handles.latency.local(),
                    frame_messages: k.metrics.frame_messages.local(),
                    queue_depth: k.metrics.send_queue_depth.local(),
                });
                b.pending.len() - 1
            });
            f(&mut b.pending[at]);
            true
        })
    }

    /// Counts how a session ended (once; later calls are ignored); a slow
    /// consumer's end also in `ticker_slow_consumer_closes_total`, whoever
    /// noticed the stall.
    pub fn closed(&mut self, end: impl Into<Ended>) {
        if !self.closed {
            self.closed = true;
            let end = end.into();
            let k = &*self.kind;
            if end == Ended::Code(CloseCode::SlowConsumer) {
                k.metrics.slow_consumer_closes.inc();
            }
            k.metrics
                .connections_closed
                .with_label_values(&[k.transport, &end.label()])
                .inc();
        }
    }
}

impl FrameCounters {
    /// The session is over: counted as closed (as [`Ended::Gone`] if nothing
    /// else was said) and gone from the active sessions (once; dropping the
    /// counters does it too).
    pub fn end(&mut self) {
        self.closed(Ended::Gone);
        if !std::mem::replace(&mut self.ended, true) {
            self.kind
                .metrics
                .sessions_active
                .with_label_values(&[self.kind.transport])
                .dec();
        }
    }
}

impl Drop for FrameCounters {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(m: &Metrics) -> u64 {
        m.frames_sent.with_label_values(&["ws", "json"]).get()
    }

    #[test]
    fn a_frame_is_as_old_as_its_oldest_quote_at_the_callers_clock() {
        use crate::quote::{FieldMask, Quote};
        use std::time::Duration;

        let metrics = Arc::new(Metrics::new());
        let latency = metrics.feed_to_socket_latency.with_label_values(&["ws"]);
        let t0 = Instant::now();
        let update = |ms: u64| ServerMsg::Quote {
            kind: QuoteKind::Update,
            quote: Arc::new(Quote::new(
                Arc::from("A"),
                1,
                0,
                Default::default(),
                t0 + Duration::from_millis(ms),
                0,
            )),
            mask: FieldMask(0),
            stamp: false,
            stale: false,
        };
        let c = FrameCounters::open(&metrics, "ws", Format::Json);
        // Written at t0 + 10 ms: the quote stored at t0 + 2 ms is 8 ms old.
        batched(|| c.frame(&[update(5), update(2)], 10, t0 + Duration::from_millis(10)));
        assert_eq!(latency.get_sample_count(), 1);
        assert!((latency.get_sample_sum() - 0.008).abs() < 1e-9);
        // A quote stored after the caller read its clock is not negative.
        c.frame(&[update(30)], 10, t0 + Duration::from_millis(20));
        assert_eq!(latency.get_sample_count(), 2);
        assert!((latency.get_sample_sum() - 0.008).abs() < 1e-9);
    }

    #[test]
    fn frames_counted_during_a_pass_all_reach_the_shared_metrics() {
        let metrics = Arc::new(Metrics::new());
        let pongs = [ServerMsg::Pong { id: None }, ServerMsg::Pong { id: None }];
        let a = FrameCounters::open(&metrics, "ws", Format::Json);
        let b = FrameCounters::open(&metrics, "ws", Format::Json);
        batched(|| {
            a.frame(&pongs, 10, Instant::now());
            b.frame(&pongs[..1], 5, Instant::now());
            a.queue_depth(3);
            // A pass inside a pass joins it.
            batched(|| b.frame(&pongs, 7, Instant::now()));
        });
        assert_eq!(frames(&metrics), 3);
        let bytes = metrics.bytes_sent.with_label_values(&["ws", "json"]);
        assert_eq!(bytes.get(), 22);
        let replies = metrics.messages_sent.with_label_values(&["ws", "reply"]);
        assert_eq!(replies.get(), 5);
        assert_eq!(metrics.frame_messages.get_sample_count(), 3);
        assert_eq!(metrics.frame_messages.get_sample_sum(), 5.0);
        assert_eq!(metrics.send_queue_depth.get_sample_count(), 1);

        // Outside a pass a frame counts at once.
        a.frame(&pongs, 1, Instant::now());
        assert_eq!(frames(&metrics), 4);

        // A pass that panics still counts what it wrote.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batched(|| {
                a.frame(&pongs, 1, Instant::now());
                panic!("a connection's delivery failed");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(frames(&metrics), 5);
        a.frame(&pongs, 1, Instant::now());
        assert_eq!(frames(&metrics), 6, "the pass is over");
    }
}
