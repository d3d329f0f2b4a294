//! Prometheus metrics. One [`Metrics`] per process, registered on its own
//! [`Registry`] (plus process CPU/RSS/fd metrics). Labels are bounded: feed name,
//! transport, format, message type, error code, close code — never a symbol or a client.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Transports that report metrics.
pub const TRANSPORTS: [&str; 1] = ["ws"];

/// Protocol error codes (PROTOCOL.md section 4).
pub const ERROR_CODES: [&str; 6] = [
    "bad_request",
    "unknown_symbol",
    "too_many_symbols",
    "not_entitled",
    "unauthorized",
    "rate_limited",
];

/// Every metric the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    pub feed_quotes_received: IntCounterVec,
    pub feed_quotes_rejected: IntCounterVec,
    pub sessions_active: IntGaugeVec,
    pub subscriptions_active: IntGauge,
    pub messages_sent: IntCounterVec,
    pub frames_sent: IntCounterVec,
    pub bytes_sent: IntCounterVec,
    pub updates_conflated: IntCounter,
    pub slow_consumer_closes: IntCounter,
    pub client_errors: IntCounterVec,
    pub connections_closed: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    pub feed_to_socket_latency: HistogramVec,
    pub frame_messages: Histogram,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("unwrap: valid metric");
    r.register(Box::new(c.clone()))
        .expect("unwrap: unique metric");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unwrap: process collector registers once");
        let feed_quotes_received = counter_vec(
            &r,
            "ticker_feed_quotes_received_total",
            "Quote updates accepted from each feed adapter.",
            &["feed"],
        );
        let feed_quotes_rejected = counter_vec(
            &r,
            "ticker_feed_quotes_rejected_total",
            "Feed lines or quotes refused (malformed, unknown symbol), by feed and reason.",
            &["feed", "reason"],
        );
        let sessions_active = IntGaugeVec::new(
            Opts::new(
                "ticker_sessions_active",
                "Client sessions open now, by transport.",
            ),
            &["transport"],
        )
        .expect("unwrap: valid metric");
        r.register(Box::new(sessions_active.clone()))
            .expect("unwrap: unique metric");
        let subscriptions_active = IntGauge::new(
            "ticker_subscriptions_active",
            "Symbol subscriptions held by all sessions now.",
        )
        .expect("unwrap: valid metric");
        r.register(Box::new(subscriptions_active.clone()))
            .expect("unwrap: unique metric");
        let messages_sent = counter_vec(
            &r,
            "ticker_messages_sent_total",
            "Protocol messages sent to clients, by transport and message type.",
            &["transport", "type"],
        );
        let frames_sent = counter_vec(
            &r,
            "ticker_frames_sent_total",
            "Frames (batches of messages) written to clients, by transport and format.",
            &["transport", "format"],
        );
        let bytes_sent = counter_vec(
            &r,
            "ticker_sent_bytes_total",
            "Payload bytes written to clients, by transport and format.",
            &["transport", "format"],
        );
        let updates_conflated = IntCounter::new(
            "ticker_updates_conflated_total",
            "Feed updates merged into a later message instead of being sent on their own (per client).",
        )
        .expect("unwrap: valid metric");
        r.register(Box::new(updates_conflated.clone()))
            .expect("unwrap: unique metric");
        let slow_consumer_closes = IntCounter::new(
            "ticker_slow_consumer_closes_total",
            "Clients closed with 4008 because their socket accepted nothing for write_stall_timeout.",
        )
        .expect("unwrap: valid metric");
        r.register(Box::new(slow_consumer_closes.clone()))
            .expect("unwrap: unique metric");
        let client_errors = counter_vec(
            &r,
            "ticker_client_errors_total",
            "Protocol error messages sent to clients, by error code.",
            &["code"],
        );
        let connections_closed = counter_vec(
            &r,
            "ticker_connections_closed_total",
            "Client connections ended, by transport and close code (\"none\" when the peer vanished).",
            &["transport", "code"],
        );
        let connections_rejected = counter_vec(
            &r,
            "ticker_connections_rejected_total",
            "Connections refused at connect time, by reason.",
            &["reason"],
        );
        let feed_to_socket_latency = HistogramVec::new(
            HistogramOpts::new(
                "ticker_feed_to_socket_latency_seconds",
                "Time from the gateway accepting a quote to writing the frame that carries it (oldest quote per frame).",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["transport"],
        )
        .expect("unwrap: valid metric");
        r.register(Box::new(feed_to_socket_latency.clone()))
            .expect("unwrap: unique metric");
        let frame_messages = Histogram::with_opts(
            HistogramOpts::new(
                "ticker_frame_messages",
                "Messages batched into each frame written to a client.",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
            ]),
        )
        .expect("unwrap: valid metric");
        r.register(Box::new(frame_messages.clone()))
            .expect("unwrap: unique metric");
        // Series with known label values exist from the start (at 0), so dashboards
        // and alerts see a value rather than no data.
        for transport in TRANSPORTS {
            sessions_active.with_label_values(&[transport]);
            feed_to_socket_latency.with_label_values(&[transport]);
            for ty in ["snapshot", "update", "reply"] {
                messages_sent.with_label_values(&[transport, ty]);
            }
            for format in ["json", "msgpack"] {
                frames_sent.with_label_values(&[transport, format]);
                bytes_sent.with_label_values(&[transport, format]);
            }
        }
        for code in ERROR_CODES {
            client_errors.with_label_values(&[code]);
        }
        Metrics {
            registry: r,
            feed_quotes_received,
            feed_quotes_rejected,
            sessions_active,
            subscriptions_active,
            messages_sent,
            frames_sent,
            bytes_sent,
            updates_conflated,
            slow_consumer_closes,
            client_errors,
            connections_closed,
            connections_rejected,
            feed_to_socket_latency,
            frame_messages,
        }
    }

    /// Creates a feed's series at 0 so it shows before the first quote.
    pub fn register_feed(&self, feed: &str) {
        self.feed_quotes_received.with_label_values(&[feed]);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // unwrap: encoding into a Vec cannot fail for well-formed metric families.
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("unwrap: text encoding into memory");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
