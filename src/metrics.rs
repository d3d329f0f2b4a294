//! Prometheus metrics. One [`Metrics`] per process, registered on its own
//! [`Registry`] (plus process CPU/RSS/fd metrics). Labels are bounded: feed name,
//! transport, format, message type, error code, close code, feed state — never a
//! symbol or a client. Names follow Prometheus conventions (`_total` counters, base
//! units), checked by `promtool check metrics` in the test suite.

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Transports that report metrics.
pub const TRANSPORTS: [&str; 3] = ["ws", "sse", "poll"];

/// Protocol error codes (PROTOCOL.md section 4).
pub const ERROR_CODES: [&str; 6] = [
    "bad_request",
    "unknown_symbol",
    "too_many_symbols",
    "not_entitled",
    "unauthorized",
    "rate_limited",
];

/// Why a feed refuses a quote: a malformed line or message, a symbol outside
/// the universe (or one it has no room to add), and, from the bus, a message
/// seen before or older than one taken.
pub const FEED_REJECT_REASONS: [&str; 5] = [
    "malformed",
    "unknown_symbol",
    "universe_full",
    "duplicate",
    "out_of_order",
];

/// Every metric the gateway exports.
pub struct Metrics {
    pub registry: Registry,
    pub feed_quotes_received: IntCounterVec,
    pub feed_quotes_rejected: IntCounterVec,
    pub feed_quotes_standby: IntCounterVec,
    pub feed_failovers: IntCounter,
    pub symbols_stale: IntGauge,
    pub feed_state: IntGaugeVec,
    pub feed_last_quote_age: GaugeVec,
    pub sessions_active: IntGaugeVec,
    pub subscriptions_active: IntGauge,
    pub connections_max: IntGauge,
    pub connections_opened: IntCounterVec,
    pub connections_closed: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    pub messages_sent: IntCounterVec,
    pub frames_sent: IntCounterVec,
    pub bytes_sent: IntCounterVec,
    pub updates_conflated: IntCounter,
    pub slow_consumer_closes: IntCounter,
    pub slow_consumer_resets: IntCounter,
    pub ws_sockets_open: IntGauge,
    pub client_errors: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub entitlement_refusals: IntCounter,
    pub feed_to_socket_latency: HistogramVec,
    pub frame_messages: Histogram,
    pub send_queue_depth: Histogram,
    pub build_info: GaugeVec,
    pub bus_published: IntCounter,
    pub bus_publish_errors: IntCounter,
    pub webrtc_peers: IntGauge,
    pub webrtc_datagrams_sent: IntCounter,
    pub webrtc_bytes_sent: IntCounter,
    pub webrtc_datagrams_ignored: IntCounter,
    pub webrtc_messages_dropped: IntCounter,
    pub webrtc_refreshes: IntCounter,
}

/// Registers `c` and hands it back.
fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    // unwrap: every metric is registered once, under a unique, valid name.
    r.register(Box::new(c.clone()))
        .expect("unwrap: unique metric name");
    c
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

// unwrap (all constructors below): names, help texts and labels are constants
// known to be valid.
fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    reg(
        r,
        IntCounter::with_opts(opts(name, help)).expect("unwrap: valid metric"),
    )
}
fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(opts(name, help), labels).expect("unwrap: valid metric"),
    )
}
fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(
        r,
        IntGauge::with_opts(opts(name, help)).expect("unwrap: valid metric"),
    )
}
fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(
        r,
        IntGaugeVec::new(opts(name, help), labels).expect("unwrap: valid metric"),
    )
}
fn float_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    reg(
        r,
        GaugeVec::new(opts(name, help), labels).expect("unwrap: valid metric"),
    )
}
fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let o = HistogramOpts::new(name, help).buckets(buckets);
    reg(r, Histogram::with_opts(o).expect("unwrap: valid metric"))
}

const COUNT_BUCKETS: [f64; 11] = [
    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unwrap: the process collector registers once");
        let latency = HistogramOpts::new(
            "ticker_feed_to_socket_latency_seconds",
            "Time from the gateway accepting a quote to writing the frame that carries it (oldest quote per frame).",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0,
        ]);
        let m = Metrics {
            feed_quotes_received: counter_vec(&r, "ticker_feed_quotes_received_total",
                "Quote updates accepted from each feed adapter.", &["feed"]),
            feed_quotes_rejected: counter_vec(&r, "ticker_feed_quotes_rejected_total",
                "Feed lines or quotes refused (malformed, unknown symbol), by feed and reason.",
                &["feed", "reason"]),
            feed_quotes_standby: counter_vec(&r, "ticker_feed_quotes_standby_total",
                "Quotes a feed brought for symbols whose source is a live feed of higher priority (not used).",
                &["feed"]),
            feed_failovers: counter(&r, "ticker_feed_failovers_total",
                "Times a symbol's source moved from one feed to another (priority failover and back)."),
            symbols_stale: gauge(&r, "ticker_symbols_stale",
                "Symbols no live feed can update now (stale, PROTOCOL.md section 10)."),
            feed_state: gauge_vec(&r, "ticker_feed_state",
                "1 for the state each feed adapter is in, 0 for the others.", &["feed", "state"]),
            feed_last_quote_age: float_gauge_vec(&r, "ticker_feed_last_quote_age_seconds",
                "Seconds since each feed's last accepted quote (since start-up before the first).",
                &["feed"]),
            sessions_active: gauge_vec(&r, "ticker_sessions_active",
                "Client sessions open now, by transport.", &["transport"]),
            subscriptions_active: gauge(&r, "ticker_subscriptions_active",
                "Symbol subscriptions held by all sessions now."),
            connections_max: gauge(&r, "ticker_connections_max",
                "The configured WebSocket connection limit (server.max_connections)."),
            connections_opened: counter_vec(&r, "ticker_connections_opened_total",
                "Client connections accepted, by transport.", &["transport"]),
            connections_closed: counter_vec(&r, "ticker_connections_closed_total",
                "Client connections ended, by transport and close code (\"none\" when the peer vanished).",
                &["transport", "code"]),
            connections_rejected: counter_vec(&r, "ticker_connections_rejected_total",
                "Connections refused at connect time, by reason.", &["reason"]),
            messages_sent: counter_vec(&r, "ticker_messages_sent_total",
                "Protocol messages sent to clients, by transport and message type (snapshot, update, status, reply).",
                &["transport", "type"]),
            frames_sent: counter_vec(&r, "ticker_frames_sent_total",
                "Frames (batches of messages) written to clients, by transport and format.",
                &["transport", "format"]),
            bytes_sent: counter_vec(&r, "ticker_sent_bytes_total",
                "Payload bytes written to clients, by transport and format.", &["transport", "format"]),
            updates_conflated: counter(&r, "ticker_updates_conflated_total",
                "Feed updates merged into a later message instead of being sent on their own, summed over clients."),
            slow_consumer_closes: counter(&r, "ticker_slow_consumer_closes_total",
                "Clients closed with 4008 because their socket accepted nothing for write_stall_timeout."),
            ws_sockets_open: gauge(&r, "ticker_ws_sockets_open",
                "WebSocket connections whose socket is still open (sessions plus connections still closing)."),
            slow_consumer_resets: counter(&r, "ticker_slow_consumer_resets_total",
                "Slow consumers whose connection was reset because they did not read their 4008 close within another write_stall_timeout."),
            client_errors: counter_vec(&r, "ticker_client_errors_total",
                "Protocol error messages sent to clients, by error code.", &["code"]),
            auth_failures: counter_vec(&r, "ticker_auth_failures_total",
                "Credentials refused and sessions ended by authentication, by reason (missing, invalid, expired, over_limit, …).",
                &["reason"]),
            entitlement_refusals: counter(&r, "ticker_entitlement_refusals_total",
                "Symbols refused (or unsubscribed after a refresh) because the principal is not entitled to them."),
            feed_to_socket_latency: reg(&r, HistogramVec::new(latency, &["transport"])
                .expect("unwrap: valid metric")),
            frame_messages: histogram(&r, "ticker_frame_messages",
                "Messages batched into each frame written to a client.", COUNT_BUCKETS[1..].to_vec()),
            send_queue_depth: histogram(&r, "ticker_session_send_queue_depth",
                "Symbols a session still held pending (behind its throttle) when it wrote a frame.",
                COUNT_BUCKETS.to_vec()),
            build_info: float_gauge_vec(&r, "ticker_build_info",
                "Always 1; the version label names the running build.", &["version"]),
            bus_published: counter(&r, "ticker_bus_published_total",
                "Full quotes this gateway published to the bus ([publish])."),
            bus_publish_errors: counter(&r, "ticker_bus_publish_errors_total",
                "Quotes the publisher could not hand to the bus client."),
            webrtc_peers: gauge(&r, "ticker_webrtc_peers",
                "WebRTC peers held on the UDP port now (connected or still connecting)."),
            webrtc_datagrams_sent: counter(&r, "ticker_webrtc_datagrams_sent_total",
                "UDP datagrams sent to WebRTC peers (STUN, DTLS, SCTP)."),
            webrtc_bytes_sent: counter(&r, "ticker_webrtc_sent_bytes_total",
                "UDP payload bytes sent to WebRTC peers."),
            webrtc_datagrams_ignored: counter(&r, "ticker_webrtc_datagrams_ignored_total",
                "Datagrams on the WebRTC port that belong to no peer (unknown ICE ufrag or address)."),
            webrtc_messages_dropped: counter(&r, "ticker_webrtc_messages_dropped_total",
                "Quote messages not sent because a peer's unreliable channel was congested (its next message or refresh repairs it)."),
            webrtc_refreshes: counter(&r, "ticker_webrtc_refreshes_total",
                "Quotes sent again to WebRTC sessions because nothing was sent for the symbol for webrtc.refresh_interval."),
            registry: r,
        };
        // Series with known label values exist from the start (at 0), so dashboards
        // and alerts see a value rather than no data.
        for transport in TRANSPORTS {
            m.sessions_active.with_label_values(&[transport]);
            m.connections_opened.with_label_values(&[transport]);
            m.feed_to_socket_latency.with_label_values(&[transport]);
            for ty in ["snapshot", "update", "status", "reply"] {
                m.messages_sent.with_label_values(&[transport, ty]);
            }
            for format in ["json", "msgpack"] {
                m.frames_sent.with_label_values(&[transport, format]);
                m.bytes_sent.with_label_values(&[transport, format]);
            }
        }
        for code in ERROR_CODES {
            m.client_errors.with_label_values(&[code]);
        }
        for reason in crate::auth::Refusal::LABELS {
            m.auth_failures.with_label_values(&[reason]);
        }
        m.connections_rejected.with_label_values(&["server_full"]);
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        m
    }

    /// Creates a feed's series at 0 so it shows before the first quote.
    pub fn register_feed(&self, feed: &str) {
        self.feed_quotes_received.with_label_values(&[feed]);
        self.feed_quotes_standby.with_label_values(&[feed]);
        for reason in FEED_REJECT_REASONS {
            self.feed_quotes_rejected.with_label_values(&[feed, reason]);
        }
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
