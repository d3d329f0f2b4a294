//! Test harness: starts the real gateway on port 0 in this process (its own actix
//! system on a background thread) and talks to it with real WebSocket and HTTP
//! clients. The test can also publish quotes straight into the hub, the same path
//! the feed adapters use, so updates arrive exactly when a test wants them.

#![allow(dead_code)]

pub mod alpaca;
pub mod fallback;
pub mod nats;
pub mod node;
pub mod process;
pub mod proxy;
pub mod tls;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use ticker_gateway::app::{AppState, Application};
use ticker_gateway::quote::QuoteUpdate;
use ticker_gateway::settings::Settings;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A sim feed in which every universe symbol quotes, about 0.4 quotes/s each: a
/// dashboard row changes every few seconds, like a real screen.
pub const BUSY_SIM_FEED: &str =
    "[[feeds]]\nname = \"sim\"\nkind = \"sim\"\nquotes_per_sec = 300.0\nhot_fraction = 1.0\n";

/// The shipped sample recording.
pub fn sample_recording() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("feeds/sample-session.ndjson")
}

/// Writes `lines` to a fresh temporary file and returns its path.
pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ticker-gateway-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A replay feed playing the sample recording as fast as possible, once: every
/// sample symbol has a full quote within milliseconds of start-up, then the feed
/// goes quiet and the test publishes what it needs.
pub fn replay_instant() -> String {
    format!(
        "[[feeds]]\nname = \"replay\"\nkind = \"replay\"\nfile = {:?}\nspeed = 0\n",
        sample_recording().to_str().unwrap()
    )
}

/// A gateway whose replay feed has already played the whole sample: every sample
/// symbol has a quote and nothing moves unless the test publishes.
pub async fn quiet_app() -> TestApp {
    quiet_app_with("").await
}

/// [`quiet_app`] with extra settings (TOML).
pub async fn quiet_app_with(extra: &str) -> TestApp {
    let app = spawn_app(&format!("{}\n{extra}", replay_instant())).await;
    app.wait_feeds_done().await;
    app
}

/// A running gateway.
pub struct TestApp {
    pub addr: SocketAddr,
    /// `server.admin_port`'s address, when the overlay sets one.
    pub admin: Option<SocketAddr>,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a gateway with the defaults plus `overlay` (TOML) and waits until
/// `/readyz` answers 200. The default sim feed is replaced by whatever `[[feeds]]`
/// the overlay names (none: no feed at all).
pub async fn spawn_app(overlay: &str) -> TestApp {
    let app = start_app(overlay);
    app.wait_ready().await;
    app
}

/// Like [`spawn_app`], serving https and wss with `ca`'s certificate; the
/// app's HTTP client trusts `ca` only.
pub async fn spawn_tls_app(overlay: &str, ca: &tls::TestCa) -> TestApp {
    let mut app = start_app(&format!("{overlay}\n{}", ca.settings()));
    app.http = ca.http_client();
    app.wait_ready().await;
    app
}

/// Like [`spawn_app`], without waiting for readiness.
pub fn start_app(overlay: &str) -> TestApp {
    start_app_on(overlay, TcpListener::bind("127.0.0.1:0").unwrap())
}

/// Like [`start_app`], serving on `listener` (a gateway that comes back on the
/// address of one stopped before).
pub fn start_app_on(overlay: &str, listener: TcpListener) -> TestApp {
    let base = "feeds = []\n[server]\nport = 0\nworkers = 2\n";
    let settings = Settings::load_with(None, &[base, overlay]).expect("test settings");
    let app = Application::build_on(settings, listener).unwrap();
    let addr = app.local_addr();
    let admin = app.admin_addr();
    let state = app.state().clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new()
            .block_on(app.run_until(async {
                let _ = stop_rx.await;
            }))
            .unwrap();
    });
    TestApp {
        addr,
        admin,
        state,
        http: reqwest::Client::new(),
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

impl TestApp {
    /// Whether the app serves https and wss.
    pub fn tls(&self) -> bool {
        self.state.certificates.is_some()
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, query: &str) -> String {
        let scheme = if self.tls() { "wss" } else { "ws" };
        format!("{scheme}://{}/ws{}", self.addr, query)
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = self.http.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every feed adapter has finished (replay feeds that play once);
    /// returns the last `/api/v1/feeds` report.
    pub async fn wait_feeds_done(&self) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (_, feeds) = self.get_json("/api/v1/feeds").await;
            if feeds
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["state"] == "finished")
            {
                return feeds;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "feeds never finished: {feeds}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A document the gateway serves as JSON (200, `application/json`).
    pub async fn get_document(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        r.json().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// The gateway's full quote of `sym` from the HTTP API.
    /// The first `n` symbols of the universe.
    pub async fn symbols(&self, n: usize) -> Vec<String> {
        let (_, universe) = self.get_json("/api/v1/symbols").await;
        universe
            .as_array()
            .unwrap()
            .iter()
            .take(n)
            .map(|s| s["sym"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn rest_quote(&self, sym: &str) -> Value {
        let (status, body) = self.get_json(&format!("/api/v1/quotes/{sym}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The API's full quote of `sym` shaped as the `snapshot` message a client
    /// subscribing now must receive.
    pub async fn rest_snapshot(&self, sym: &str) -> Value {
        let mut q = self.rest_quote(sym).await;
        q["type"] = json!("snapshot");
        q
    }

    /// Publishes one update into the hub, as a feed adapter would.
    pub fn publish(&self, update: Value) -> u64 {
        let u: QuoteUpdate = serde_json::from_value(update).expect("valid update");
        self.state.hub.ingest(&u).expect("known symbol")
    }

    /// The `/metrics` exposition text.
    pub async fn metrics_text(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    /// The value of one metric sample (summed over series whose labels contain
    /// every `label="value"` pair given).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.metrics_text().await;
        let mut total = 0.0;
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(x) => x,
                None => continue,
            };
            let (metric, label_text) = match series.split_once('{') {
                Some((m, l)) => (m, l),
                None => (series, ""),
            };
            if metric != name {
                continue;
            }
            if labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            {
                total += value.parse::<f64>().unwrap();
            }
        }
        total
    }

    /// Polls a metric until `pred` holds (an event observed through /metrics).
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        pred: impl Fn(f64) -> bool,
    ) {
        poll(&format!("metric {name}{labels:?}"), || async {
            let v = self.metric(name, labels).await;
            if pred(v) {
                Ok(())
            } else {
                Err(v)
            }
        })
        .await
    }
}

/// Calls `check` every 20 ms until it gives `Ok`; fails the test after [`WAIT`]
/// with `what` and the last state `check` reported.
pub async fn poll<T, S: std::fmt::Debug, F: std::future::Future<Output = Result<T, S>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(state) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what} stuck at {state:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            // Never hang a test run on a server that does not stop: wait a bounded time.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !t.is_finished() {
                if std::time::Instant::now() > deadline {
                    eprintln!("gateway at {} did not shut down within 20 s", self.addr);
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = t.join();
        }
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client received: messages, or the close.
#[derive(Debug)]
pub enum Event {
    Msgs(Vec<Value>),
    Ping,
    Closed(Option<u16>),
}

/// The protocol's per-connection guarantees, checked on every message a test
/// client receives, whatever the transport: `seq` strictly increases per symbol
/// (order); the first quote message of a symbol after `subscribed` is a `snapshot`
/// (snapshot first); nothing arrives for a symbol after `unsubscribed` (silence).
/// It also keeps the client's view of each symbol (snapshot with updates applied),
/// for convergence checks.
#[derive(Default)]
pub struct Guarantees {
    pub state: HashMap<String, Value>,
    last_seq: HashMap<String, u64>,
    unsubscribed: std::collections::HashSet<String>,
    resubscribed: std::collections::HashSet<String>,
    pub received: Vec<Value>,
}

/// A real WebSocket client whose every message goes through [`Guarantees`].
pub struct Client {
    pub ws: Ws,
    pub msgpack: bool,
    pub protocol: Option<String>,
    pub g: Guarantees,
    pending: std::collections::VecDeque<Value>,
}

impl std::ops::Deref for Client {
    type Target = Guarantees;
    fn deref(&self) -> &Guarantees {
        &self.g
    }
}

impl Guarantees {
    /// Starts from what an earlier connection saw (a client that resumes).
    pub fn resume_from(&mut self, earlier: &Guarantees) {
        self.state = earlier.state.clone();
        self.last_seq = earlier.last_seq.clone();
    }

    /// Checks and records a batch of messages.
    pub fn check_all(&mut self, msgs: &[Value]) {
        for m in msgs {
            self.check(m);
        }
        self.received.extend(msgs.iter().cloned());
    }

    /// Checks one message against the guarantees (panics on a violation).
    pub fn check(&mut self, m: &Value) {
        let ty = m["type"].as_str().expect("message has a type");
        match ty {
            "subscribed" => {
                for s in m["symbols"].as_array().unwrap() {
                    let s = s.as_str().unwrap().to_owned();
                    self.unsubscribed.remove(&s);
                    // A fresh snapshot after a re-subscription may repeat the seq the
                    // client already has (same state, fresh copy).
                    self.resubscribed.insert(s);
                }
            }
            "unsubscribed" => {
                for s in m["symbols"].as_array().unwrap() {
                    self.unsubscribed.insert(s.as_str().unwrap().to_owned());
                }
            }
            "snapshot" | "update" => {
                let sym = m["sym"].as_str().unwrap().to_owned();
                assert!(
                    !self.unsubscribed.contains(&sym),
                    "message for {sym} after unsubscribed: {m}"
                );
                let seq = m["seq"].as_u64().expect("seq");
                let fresh_snapshot = ty == "snapshot" && self.resubscribed.remove(&sym);
                if let Some(prev) = self.last_seq.get(&sym) {
                    if fresh_snapshot {
                        assert!(seq >= *prev, "seq went back from {prev} to {seq} for {sym}");
                    } else {
                        assert!(seq > *prev, "seq went from {prev} to {seq} for {sym}");
                    }
                }
                self.last_seq.insert(sym.clone(), seq);
                assert!(m["t"].is_i64() || m["t"].is_u64(), "t missing: {m}");
                if ty == "snapshot" {
                    let mut s = m.clone();
                    s.as_object_mut().unwrap().remove("type");
                    self.state.insert(sym, s);
                } else {
                    let state = self
                        .state
                        .get_mut(&sym)
                        .unwrap_or_else(|| panic!("update before snapshot for {sym}: {m}"));
                    for (k, v) in m.as_object().unwrap() {
                        if k != "type" {
                            state[k] = v.clone();
                        }
                    }
                }
            }
            // Section 10: the client's view says whether the symbol is stale,
            // as a snapshot (and the API's quote) of a stale symbol does.
            "status" => {
                let sym = m["sym"].as_str().unwrap().to_owned();
                assert!(
                    !self.unsubscribed.contains(&sym),
                    "status for {sym} after unsubscribed: {m}"
                );
                if let Some(state) = self.state.get_mut(&sym).and_then(Value::as_object_mut) {
                    match m["state"].as_str() {
                        Some("stale") => state.insert("stale".into(), json!(true)),
                        Some("live") => state.remove("stale"),
                        _ => panic!("status without a state: {m}"),
                    };
                }
            }
            _ => {}
        }
    }
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, protocols: &[&str]) -> Client {
        Self::connect_headers(url, protocols, &[]).await
    }

    /// [`Client::connect_with`] with extra upgrade request headers.
    pub async fn connect_headers(
        url: &str,
        protocols: &[&str],
        headers: &[(&'static str, &str)],
    ) -> Client {
        let mut req = url.into_client_request().unwrap();
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                protocols.join(", ").parse().unwrap(),
            );
        }
        for (name, value) in headers {
            req.headers_mut().insert(*name, value.parse().unwrap());
        }
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let protocol = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        let msgpack = protocol.as_deref() == Some("ticker.v1.msgpack")
            || (protocol.is_none() && url.contains("format=msgpack"));
        Client::from_ws(ws, msgpack, protocol)
    }

    pub fn from_ws(ws: Ws, msgpack: bool, protocol: Option<String>) -> Client {
        Client {
            ws,
            msgpack,
            protocol,
            g: Guarantees::default(),
            pending: Default::default(),
        }
    }

    /// Sends one op (as JSON text, or MessagePack binary for msgpack sessions).
    pub async fn send(&mut self, op: Value) {
        let msg = if self.msgpack {
            Message::Binary(rmp_serde::to_vec_named(&op).unwrap().into())
        } else {
            Message::Text(op.to_string().into())
        };
        self.ws.send(msg).await.unwrap();
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.unwrap();
    }

    /// Writes raw bytes to the socket (hand-made frames).
    pub async fn send_bytes(&mut self, raw: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.ws.get_mut().write_all(raw).await.unwrap();
    }

    /// The next event, checking the guarantees on every message.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            let frame = match frame {
                None => return Event::Closed(None),
                Some(Err(_)) => return Event::Closed(None),
                Some(Ok(f)) => f,
            };
            let value: Value = match frame {
                Message::Text(t) => {
                    assert!(!self.msgpack, "text frame on a msgpack session");
                    serde_json::from_str(&t).expect("server frame is JSON")
                }
                Message::Binary(b) => {
                    assert!(self.msgpack, "binary frame on a JSON session");
                    rmp_serde::from_slice(&b).expect("server frame is MessagePack")
                }
                Message::Ping(_) => return Event::Ping,
                Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(c) => return Event::Closed(c.map(|c| u16::from(c.code))),
            };
            let Value::Array(msgs) = value else {
                panic!("server frame is not an array: {value}");
            };
            assert!(!msgs.is_empty(), "empty frame");
            self.g.check_all(&msgs);
            return Event::Msgs(msgs);
        }
    }

    /// The next message, one at a time (frames are split into their messages).
    pub async fn next_msg(&mut self) -> Value {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return m;
            }
            match self.next_event().await {
                Event::Msgs(msgs) => self.pending.extend(msgs),
                Event::Ping => {}
                Event::Closed(code) => panic!("connection closed ({code:?}) while waiting"),
            }
        }
    }

    /// Receives messages until one satisfies `pred`; returns it. Messages after it
    /// in the same frame stay queued for the next call.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let m = self.next_msg().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// Receives until a message of `type` arrives.
    pub async fn until_type(&mut self, ty: &str) -> Value {
        self.until(|m| m["type"] == ty).await
    }

    /// Reads until the server closes; returns the close code.
    pub async fn until_closed(&mut self) -> Option<u16> {
        self.pending.clear();
        loop {
            if let Event::Closed(code) = self.next_event().await {
                return code;
            }
        }
    }

    /// Connects to `url` as the client that saw `earlier` and subscribes
    /// `symbols` with `resume` (their last `seq`, PROTOCOL.md section 12);
    /// returns once the reply is in, with the snapshots that came.
    pub async fn resume(
        url: &str,
        earlier: &Guarantees,
        symbols: &[&str],
        resume: Value,
    ) -> (Client, Vec<Value>) {
        let mut c = Client::connect(url).await;
        c.g.resume_from(earlier);
        c.send(json!({"op":"subscribe","id":"r","symbols":symbols,"resume":resume}))
            .await;
        // The snapshots travel with the reply, before the pong.
        c.send(json!({"op":"ping","id":"p"})).await;
        c.until_type("pong").await;
        let snapshots = c
            .received
            .iter()
            .filter(|m| m["type"] == "snapshot")
            .cloned()
            .collect();
        (c, snapshots)
    }

    /// Subscribes and waits for the `subscribed` reply.
    pub async fn subscribe(&mut self, symbols: &[&str], max_rate: f64) -> Value {
        self.send(json!({"op":"subscribe","id":"sub","symbols":symbols,"max_rate":max_rate}))
            .await;
        self.until(|m| m["type"] == "subscribed" && m["id"] == "sub")
            .await
    }
}

/// The close code constant for assertions.
/// A busy market (every symbol moving, 20,000 quotes/s) and a 1 s write stall
/// timeout (a slow client that reads again gets that long, after its 4008 was
/// queued, before it is reset: room for a loaded machine); over TLS with
/// `ca`'s certificate if given.
pub async fn busy_market(ca: Option<&tls::TestCa>) -> TestApp {
    let settings = "[session]\nwrite_stall_timeout = \"1s\"\n\
         [[feeds]]\nname = \"sim\"\nkind = \"sim\"\nquotes_per_sec = 20000.0\nhot_fraction = 1.0\nseed = 1\n";
    match ca {
        Some(ca) => spawn_tls_app(settings, ca).await,
        None => spawn_app(settings).await,
    }
}

/// A client with a tiny receive buffer that subscribes to 500 symbols and then
/// stops reading (over wss, verifying `ca`, if given).
pub async fn slow_client(app: &TestApp, ca: Option<&tls::TestCa>) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(app.addr).await.unwrap();
    let stream = match ca {
        Some(ca) => MaybeTlsStream::Rustls(ca.connect(tcp).await.unwrap()),
        None => MaybeTlsStream::Plain(tcp),
    };
    let (ws, _) = tokio_tungstenite::client_async(app.ws_url(""), stream)
        .await
        .unwrap();
    let mut slow = Client::from_ws(ws, false, None);
    let syms = app.symbols(500).await;
    slow.send(json!({"op":"subscribe","symbols":syms,"max_rate":50}))
        .await;
    slow
}

pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// Publishes `n` updates of `sym`, one every `every`, each changing `bs`, and every
/// fifth also `lp`; returns the time of the last one.
pub async fn publish_burst(
    app: &TestApp,
    sym: &str,
    n: u64,
    every: Duration,
) -> std::time::Instant {
    let base = app.rest_quote(sym).await;
    let t0 = base["t"].as_i64().unwrap();
    let bs0 = base["bs"].as_u64().unwrap();
    let mut tick = tokio::time::interval(every);
    let mut last = std::time::Instant::now();
    for i in 1..=n {
        tick.tick().await;
        let mut u = json!({"sym": sym, "t": t0 + i as i64, "bs": bs0 + 100 * i});
        if i % 5 == 0 {
            u["lp"] = json!(format!("{}.{:02}", 100 + i / 100, i % 100));
        }
        app.publish(u);
        last = std::time::Instant::now();
    }
    last
}

/// Asserts that no 1 s window holds more than `max` of `times` (sorted).
pub fn assert_at_most_per_second(times: &[std::time::Instant], max: usize, what: &str) {
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= max,
            "{in_window} {what} within 1 s (at most {max})"
        );
    }
}
