//! Per-session metric handles, resolved once when a session starts so writing a
//! frame does no label lookups.

use std::sync::Arc;
use std::time::Instant;

use prometheus::{Histogram, IntCounter};

use super::close::{CloseCode, Ended};
use crate::metrics::Metrics;
use crate::session::protocol::{Format, QuoteKind, ServerMsg};

/// A transport's counters for one session; counts it open on creation and
/// closed (with a reason label) on [`FrameCounters::closed`].
pub struct FrameCounters {
    transport: &'static str,
    metrics: Arc<Metrics>,
    snapshots: IntCounter,
    updates: IntCounter,
    statuses: IntCounter,
    replies: IntCounter,
    frames: IntCounter,
    bytes: IntCounter,
    latency: Histogram,
    closed: bool,
    ended: bool,
}

impl FrameCounters {
    /// Counts a new session of `transport` (opened, active).
    pub fn open(metrics: &Arc<Metrics>, transport: &'static str, format: Format) -> Self {
        let m = metrics;
        m.sessions_active.with_label_values(&[transport]).inc();
        m.connections_opened.with_label_values(&[transport]).inc();
        FrameCounters {
            transport,
            metrics: metrics.clone(),
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
            closed: false,
            ended: false,
        }
    }

    /// Counts one written frame of `len` bytes carrying `msgs`.
    pub fn frame(&self, msgs: &[ServerMsg], len: usize) {
        let (mut snaps, mut upds, mut statuses) = (0u64, 0u64, 0u64);
        let mut oldest = None::<Instant>;
        for m in msgs {
            match m {
                ServerMsg::Quote { kind, quote, .. } => {
                    match kind {
                        QuoteKind::Snapshot => snaps += 1,
                        QuoteKind::Update => upds += 1,
                    }
                    oldest = Some(oldest.map_or(quote.ingested, |o| o.min(quote.ingested)));
                }
                ServerMsg::Status { .. } => statuses += 1,
                _ => {}
            }
        }
        let replies = msgs.len() as u64 - snaps - upds - statuses;
        if statuses > 0 {
            self.statuses.inc_by(statuses);
        }
        if snaps > 0 {
            self.snapshots.inc_by(snaps);
        }
        if upds > 0 {
            self.updates.inc_by(upds);
        }
        if replies > 0 {
            self.replies.inc_by(replies);
        }
        self.frames.inc();
        self.bytes.inc_by(len as u64);
        self.metrics.frame_messages.observe(msgs.len() as f64);
        if let Some(t) = oldest {
            self.latency.observe(t.elapsed().as_secs_f64());
        }
    }

    /// Counts how a session ended (once; later calls are ignored); a slow
    /// consumer's end also in `ticker_slow_consumer_closes_total`, whoever
    /// noticed the stall.
    pub fn closed(&mut self, end: impl Into<Ended>) {
        if !self.closed {
            self.closed = true;
            let end = end.into();
            if end == Ended::Code(CloseCode::SlowConsumer) {
                self.metrics.slow_consumer_closes.inc();
            }
            self.metrics
                .connections_closed
                .with_label_values(&[self.transport, &end.label()])
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
            self.metrics
                .sessions_active
                .with_label_values(&[self.transport])
                .dec();
        }
    }
}

impl Drop for FrameCounters {
    fn drop(&mut self) {
        self.end();
    }
}
