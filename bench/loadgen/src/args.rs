//! Command-line flags of `ticker-loadgen`.

use std::net::IpAddr;

use clap::{Parser, ValueEnum};

/// How each client picks its symbols among the first `--universe-size` symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every symbol equally likely.
    Uniform,
    /// Zipf with s = 1.0 over the universe order (the first symbols are the hot ones).
    Zipf,
}

/// The wire format, chosen by WebSocket subprotocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `ticker.v1.json`: text frames.
    Json,
    /// `ticker.v1.msgpack`: binary frames.
    Msgpack,
}

impl Format {
    /// The subprotocol asked for in the handshake.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Format::Json => "ticker.v1.json",
            Format::Msgpack => "ticker.v1.msgpack",
        }
    }

    /// The name used in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        }
    }
}

/// The protocol spoken over the WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// ticker.v1 (the gateway, and the `ws` and Bun peers in bench/peers).
    Ticker,
    /// Socket.IO v4 over Engine.IO v4, WebSocket transport only (the Socket.IO
    /// peer): `--url ws://HOST:PORT/socket.io/?EIO=4&transport=websocket`.
    Socketio,
    /// STOMP 1.2 over WebSocket (subprotocol `v12.stomp`): CONNECT, then one
    /// SUBSCRIBE per symbol, all in one message; MESSAGE bodies are counted
    /// like ticker.v1 messages.
    Stomp,
    /// Socket.IO v4 over Engine.IO's HTTP long-polling, never upgrading:
    /// `--url ws://HOST:PORT/socket.io/?EIO=4&transport=polling` (only the host
    /// and the path are used).
    SocketioPolling,
    /// ticker.v1 over WebRTC DataChannels (PROTOCOL.md section 13): the offer
    /// goes to `POST /webrtc/offer` on `--url`'s host and port, then ICE, DTLS
    /// and SCTP run over UDP; a quote message counts as an update when it
    /// brings a newer `seq` for its symbol.
    Webrtc,
}

impl Protocol {
    /// The name used in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ticker => "ticker",
            Protocol::Socketio => "socketio",
            Protocol::Stomp => "stomp",
            Protocol::SocketioPolling => "socketio-polling",
            Protocol::Webrtc => "webrtc",
        }
    }
}

/// Opens many WebSocket clients against ticker-gateway and measures what they get.
///
/// Timeline: clients connect at `--connect-rate` (ramp-up), then `--warmup` seconds
/// pass, then `--duration` seconds are measured. The gateway must run with
/// `[bench] ingest_stamp = true` for latency figures. One JSON object is printed on
/// stdout (and written to `--json-out`); progress events are JSON lines on stderr.
#[derive(Clone, Debug, Parser)]
#[command(name = "ticker-loadgen", version)]
pub struct Args {
    /// WebSocket URL of the gateway, `ws://` or `wss://` (wss needs `--ca`); the
    /// symbol list is fetched from the same host (over https for wss).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// wss: PEM file of the CA certificate(s) the server is verified against
    /// (only these; verification is never skipped).
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,

    /// Number of clients (in --churn mode: clients cycling concurrently).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,

    /// Symbols each client subscribes to.
    #[arg(long, default_value_t = 20)]
    pub symbols_per_client: usize,

    /// Clients pick among the first U symbols of GET /api/v1/symbols.
    #[arg(long, default_value_t = 500)]
    pub universe_size: usize,

    /// How symbols are picked.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,

    /// `max_rate` sent in the subscribe op (updates/s per symbol).
    #[arg(long, default_value_t = 1000.0)]
    pub max_rate: f64,

    /// Wire format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// Protocol: ticker.v1, or Socket.IO v4 (JSON only; the client emits
    /// `subscribe` {symbols, max_rate} and counts `update` / `snapshot` events).
    #[arg(long, value_enum, default_value_t = Protocol::Ticker)]
    pub protocol: Protocol,

    /// Local addresses to bind client sockets to, round-robin (e.g. 127.0.0.2,127.0.0.3).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1")]
    pub source_ips: Vec<IpAddr>,

    /// New connections per second during ramp-up.
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,

    /// Seconds between the end of ramp-up and the start of measurement.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,

    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Seed for symbol picking.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Churn mode: each client repeatedly connects, subscribes, waits for its
    /// snapshots and closes.
    #[arg(long)]
    pub churn: bool,

    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,

    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,

    /// After ramp-up, wait for a line on stdin before the warmup starts (lets a
    /// driver start the measured window of several loadgen processes together),
    /// and after the measured window, for another before the clients close
    /// (lets it look at the server first).
    #[arg(long)]
    pub sync_stdin: bool,

    /// WebSocket read buffer per connection, in bytes.
    #[arg(long, default_value_t = 8 * 1024)]
    pub read_buffer: usize,

    /// Diagnostic: re-arm TCP_QUICKACK after every frame so the client never delays
    /// its ACKs (shows whether the server's Nagle algorithm holds frames back).
    #[arg(long)]
    pub quickack: bool,

    /// Give up on a connection attempt (TCP + handshake) after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
}

impl Args {
    /// Checks the combinations clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.clients > 0, "--clients must be at least 1");
        anyhow::ensure!(self.universe_size > 0, "--universe-size must be at least 1");
        anyhow::ensure!(
            self.symbols_per_client > 0 && self.symbols_per_client <= self.universe_size,
            "--symbols-per-client must lie between 1 and --universe-size"
        );
        anyhow::ensure!(
            self.max_rate.is_finite() && self.max_rate > 0.0,
            "--max-rate must be a positive number"
        );
        anyhow::ensure!(
            self.connect_rate.is_finite() && self.connect_rate > 0.0,
            "--connect-rate must be a positive number"
        );
        anyhow::ensure!(
            self.warmup >= 0.0 && self.duration > 0.0,
            "--warmup must be >= 0 and --duration > 0"
        );
        anyhow::ensure!(
            self.protocol == Protocol::Ticker || self.format == Format::Json,
            "--protocol socketio, stomp and webrtc need --format json"
        );
        anyhow::ensure!(
            self.protocol != Protocol::Webrtc || (!self.churn && self.ca.is_none()),
            "--protocol webrtc runs steady clients over plain HTTP signalling (no --churn, no --ca)"
        );
        anyhow::ensure!(!self.source_ips.is_empty(), "--source-ips is empty");
        anyhow::ensure!(self.workers > 0, "--workers must be at least 1");
        anyhow::ensure!(
            self.read_buffer >= 512,
            "--read-buffer must be at least 512"
        );
        Ok(())
    }
}
