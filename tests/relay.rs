//! A gateway relaying a gateway: the edge's only feed is `ticker`, following the
//! upstream's `/ws`. The edge subscribes upstream to what its clients want and
//! lets go after the linger; clients converge on the upstream's quotes with the
//! same exact decimals and `seq`; an upstream that goes away and comes back on
//! the same address is followed again; a refused token fails the feed after
//! one attempt; a wss upstream with a private CA is trusted through `ca_file`.

mod common;

use std::net::{SocketAddr, TcpListener};

use common::tls::TestCa;
use common::{
    poll, quiet_app_with, replay_instant, spawn_app, spawn_tls_app, start_app, start_app_on,
    temp_file, Client, TestApp,
};
use serde_json::{json, Value};

/// A `[[feeds]]` entry following `url` with a 300 ms linger, plus `extra`.
fn relay_feed(url: &str, extra: &str) -> String {
    format!("[[feeds]]\nname = \"relay\"\nkind = \"ticker\"\nurl = {url:?}\nlinger = \"300ms\"\n{extra}\n")
}

/// An edge whose only feed follows `upstream`, ready (welcomed).
async fn edge(upstream: &TestApp) -> TestApp {
    spawn_app(&relay_feed(&upstream.ws_url(""), "")).await
}

/// True while some session of `app` wants `sym` (the edge is the upstream's
/// only client).
fn wants(app: &TestApp, sym: &str) -> bool {
    let id = app.state.hub.lookup(sym).unwrap();
    app.state.hub.demand().wanted().contains(&id)
}

async fn until_wanted(app: &TestApp, sym: &str, wanted: bool) {
    poll(&format!("upstream demand for {sym} = {wanted}"), || async {
        if wants(app, sym) == wanted {
            Ok(())
        } else {
            Err(())
        }
    })
    .await
}

/// The relay feed's entry in `/api/v1/feeds`.
async fn feed_report(app: &TestApp) -> Value {
    let (_, feeds) = app.get_json("/api/v1/feeds").await;
    feeds[0].clone()
}

async fn until_feed_state(app: &TestApp, state: &str) -> Value {
    poll(&format!("the relay feed {state}"), || async {
        let report = feed_report(app).await;
        if report["state"] == state {
            Ok(report)
        } else {
            Err(report)
        }
    })
    .await
}

/// `q` without `seq`.
fn fields(q: &Value) -> Value {
    let mut q = q.clone();
    q.as_object_mut().unwrap().remove("seq");
    q
}

/// Reads until the client's view of `sym` equals `want` (`seq` included or not).
async fn converge(client: &mut Client, sym: &str, want: &Value, with_seq: bool) {
    let same = |s: Option<&Value>| match s {
        Some(s) if with_seq => s == want,
        Some(s) => fields(s) == fields(want),
        None => false,
    };
    while !same(client.state.get(sym)) {
        client.next_event().await;
    }
}

/// Publishes a few deltas of `sym` on `app` (prices with trailing zeros).
fn move_market(app: &TestApp, sym: &str, cents: u32) {
    app.publish(json!({"sym": sym, "t": 1_763_700_000_000_i64 + i64::from(cents), "bp": format!("187.{cents:02}0"), "bs": 300}));
    app.publish(json!({"sym": sym, "t": 1_763_700_000_500_i64 + i64::from(cents), "ap": format!("189.{cents:02}00"), "lp": "188.0000001"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_converge_on_the_upstream_and_demand_follows_them() {
    let upstream = quiet_app_with("").await;
    let edge = edge(&upstream).await;
    assert!(!wants(&upstream, "AAPL"));

    let mut client = Client::connect(&edge.ws_url("")).await;
    client.subscribe(&["AAPL"], 50.0).await;
    until_wanted(&upstream, "AAPL", true).await;
    let snapshot = client.until_type("snapshot").await;
    assert_eq!(snapshot["sym"], "AAPL");

    move_market(&upstream, "AAPL", 10);
    let want = upstream.rest_quote("AAPL").await;
    assert_eq!(want["bp"], "187.100");
    // The same state with the same `seq`: the edge adopts the upstream's numbers.
    converge(&mut client, "AAPL", &want, true).await;
    assert_eq!(edge.rest_quote("AAPL").await, want);
    // Counted once per frame, after the hub took its quotes.
    let report = poll("the relay feed counting the quotes", || async {
        let report = feed_report(&edge).await;
        match report["quotes_received"].as_u64() {
            Some(n) if n >= 2 => Ok(report),
            _ => Err(report),
        }
    })
    .await;
    assert_eq!(
        (&report["kind"], &report["state"]),
        (&json!("ticker"), &json!("running"))
    );

    // The last client leaves: after the linger the edge lets go upstream.
    client
        .send(json!({"op":"unsubscribe","id":"u","symbols":["AAPL"]}))
        .await;
    client.until_type("unsubscribed").await;
    until_wanted(&upstream, "AAPL", false).await;
    assert_eq!(edge.rest_quote("AAPL").await, want, "the last state stays");

    // Wanted again: subscribed again, with the state the upstream has now.
    move_market(&upstream, "AAPL", 20);
    client.subscribe(&["AAPL"], 50.0).await;
    until_wanted(&upstream, "AAPL", true).await;
    let want = upstream.rest_quote("AAPL").await;
    converge(&mut client, "AAPL", &want, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_all_subscribes_the_whole_universe_upstream() {
    let upstream = quiet_app_with("[session]\nmax_symbols = 1000\n").await;
    let edge = spawn_app(&relay_feed(&upstream.ws_url(""), "follow = \"all\"")).await;
    // No client on the edge: every symbol is wanted upstream all the same.
    poll("the whole universe wanted upstream", || async {
        let wanted = upstream.state.hub.demand().wanted().len();
        if wanted == upstream.state.hub.len() {
            Ok(())
        } else {
            Err(wanted)
        }
    })
    .await;
    move_market(&upstream, "TSLA", 60);
    let want = upstream.rest_quote("TSLA").await;
    let mut client = Client::connect(&edge.ws_url("")).await;
    client.subscribe(&["TSLA"], 50.0).await;
    converge(&mut client, "TSLA", &want, true).await;
}

/// A quiet gateway on `addr`, the address of one stopped before.
async fn restart_on(addr: SocketAddr) -> TestApp {
    let listener = TcpListener::bind(addr).expect("the stopped gateway's address");
    let app = start_app_on(&replay_instant(), listener);
    app.wait_ready().await;
    app.wait_feeds_done().await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_follows_an_upstream_that_goes_away_and_comes_back() {
    let upstream = quiet_app_with("").await;
    let addr = upstream.addr;
    let edge = edge(&upstream).await;
    let mut client = Client::connect(&edge.ws_url("")).await;
    client.subscribe(&["AAPL", "MSFT"], 50.0).await;
    move_market(&upstream, "MSFT", 30);
    let want = upstream.rest_quote("MSFT").await;
    converge(&mut client, "MSFT", &want, true).await;

    drop(upstream);
    let report = until_feed_state(&edge, "reconnecting").await;
    assert!(report["reason"].is_string(), "{report}");

    let upstream = restart_on(addr).await;
    until_wanted(&upstream, "AAPL", true).await;
    until_wanted(&upstream, "MSFT", true).await;
    until_feed_state(&edge, "running").await;
    // The new upstream numbers from its own start: the edge keeps `seq` growing
    // for its client (checked on every message) and converges on the state.
    move_market(&upstream, "MSFT", 40);
    for sym in ["AAPL", "MSFT"] {
        let want = upstream.rest_quote(sym).await;
        converge(&mut client, sym, &want, false).await;
    }
    assert_eq!(client.state["MSFT"]["ap"], "189.4000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_fails_the_feed_after_one_attempt() {
    let (key, lines) = ticker_gateway::auth::keygen("relay", &["*".into()]);
    let upstream = quiet_app_with(&format!("[auth]\nenabled = true\n{lines}")).await;
    let url = upstream.ws_url("");

    // The right key, from a file: relayed.
    let good = temp_file("token", &format!("{key}\n"));
    let good = relay_feed(&url, &format!("token_file = {:?}", good.to_str().unwrap()));
    let edge = spawn_app(&good).await;
    let mut client = Client::connect(&edge.ws_url("")).await;
    client.subscribe(&["AAPL"], 50.0).await;
    let want: Value = upstream
        .http
        .get(upstream.url("/api/v1/quotes/AAPL"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    converge(&mut client, "AAPL", &want, true).await;
    assert_eq!(
        upstream.metric("ticker_auth_failures_total", &[]).await,
        0.0
    );

    // A wrong one, from the environment: failed with the reason, not retried.
    std::env::set_var("RELAY_TEST_BAD_TOKEN", "not-a-key");
    let bad = relay_feed(&url, "token_env = \"RELAY_TEST_BAD_TOKEN\"");
    let refused = start_app(&bad);
    let report = until_feed_state(&refused, "failed").await;
    let reason = report["reason"].as_str().unwrap();
    // The upstream says why (`error` unauthorized) before it closes with 4001.
    assert!(reason.contains("refused the credential"), "{reason}");
    assert!(!reason.contains("not-a-key"), "{reason}");
    assert_eq!(
        upstream.metric("ticker_auth_failures_total", &[]).await,
        1.0,
        "one attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_upstream_with_a_private_ca_is_trusted_through_ca_file() {
    let ca = TestCa::new("relay");
    let upstream = spawn_tls_app(&replay_instant(), &ca).await;
    upstream.wait_feeds_done().await;
    let ca_file = temp_file("ca.pem", std::str::from_utf8(&ca.ca_pem).unwrap());
    let url = upstream.ws_url("").replace("127.0.0.1", "localhost");
    let extra = format!("ca_file = {:?}", ca_file.to_str().unwrap());
    let edge = spawn_app(&relay_feed(&url, &extra)).await;
    let mut client = Client::connect(&edge.ws_url("")).await;
    client.subscribe(&["NVDA"], 50.0).await;
    move_market(&upstream, "NVDA", 50);
    let want = upstream.rest_quote("NVDA").await;
    converge(&mut client, "NVDA", &want, true).await;
}
