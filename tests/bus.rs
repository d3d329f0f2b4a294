//! Several gateways on one bus (PROTOCOL.md section 11), against a real
//! nats-server with JetStream: a publisher and edges converge on the same state
//! and `seq`; a late edge serves snapshots from the last-value stream at once; a
//! restarted publisher continues `seq`; an edge subscribes to exactly the
//! symbols in demand; repeated and late bus messages are dropped and counted; an
//! edge that loses the bus shows it and picks up again when the bus is back; an
//! edge may add the symbols the bus brings, up to its cap; a client that moves
//! to another edge resumes there with snapshots only of what changed.

mod common;

use std::collections::HashMap;

use common::nats::NatsServer;
use common::{poll, sample_recording, spawn_app, temp_file, Client, TestApp};
use serde_json::{json, Value};

const SAMPLE: [&str; 8] = ["AAPL", "AMZN", "META", "MSFT", "NVDA", "QQQ", "SPY", "TSLA"];

/// A gateway that replays `file` at `speed` and publishes to the bus, keeping
/// (and creating) the last-value stream.
async fn publisher(nats: &NatsServer, file: &std::path::Path, speed: f64) -> TestApp {
    spawn_app(&format!(
        "[publish]\nurl = {url:?}\nid = \"test-publisher\"\nstream = \"QUOTES\"\ncreate_stream = true\n\
         [[feeds]]\nname = \"tape\"\nkind = \"replay\"\nfile = {file:?}\nspeed = {speed:?}\n",
        url = nats.url(),
        file = file.to_str().unwrap(),
    ))
    .await
}

/// A gateway that follows the bus with a `nats` feed named `feed`.
async fn edge(nats: &NatsServer, feed: &str, extra: &str) -> TestApp {
    spawn_app(&format!(
        "[[feeds]]\nname = {feed:?}\nkind = \"nats\"\nurl = {url:?}\n{extra}\n",
        url = nats.url(),
    ))
    .await
}

/// The publisher's full quote of every sample symbol.
async fn quotes(app: &TestApp) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for sym in SAMPLE {
        out.insert(sym.to_owned(), app.rest_quote(sym).await);
    }
    out
}

/// Plays the sample onto the bus and into its last-value stream with a
/// publisher that is gone afterwards; returns the publisher's quotes.
async fn sample_on_bus(nats: &NatsServer) -> HashMap<String, Value> {
    let first = publisher(nats, &sample_recording(), 0.0).await;
    first.wait_feeds_done().await;
    quotes(&first).await
}

/// Reads until the client's view of every symbol equals `want`.
async fn converge(client: &mut Client, want: &HashMap<String, Value>) {
    while want.iter().any(|(sym, q)| client.state.get(sym) != Some(q)) {
        client.next_event().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_converge_with_the_publisher_on_the_same_seq() {
    let nats = NatsServer::start().await;
    // The recording plays for a few seconds while the edges follow it live.
    let publisher = publisher(&nats, &sample_recording(), 20.0).await;
    let a = edge(&nats, "bus-a", "stream = \"QUOTES\"").await;
    let b = edge(&nats, "bus-b", "stream = \"QUOTES\"").await;
    let mut ca = Client::connect(&a.ws_url("")).await;
    let mut cb = Client::connect(&b.ws_url("")).await;
    ca.subscribe(&SAMPLE, 50.0).await;
    cb.subscribe(&SAMPLE, 50.0).await;

    publisher.wait_feeds_done().await;
    let want = quotes(&publisher).await;
    // Every client checks that `seq` only grows; both end on the publisher's state.
    converge(&mut ca, &want).await;
    converge(&mut cb, &want).await;
    assert_eq!(quotes(&a).await, want);
    assert_eq!(quotes(&b).await, want);
    assert!(
        publisher.metric("ticker_bus_published_total", &[]).await >= SAMPLE.len() as f64,
        "the publisher counts what it published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_edge_snapshots_from_the_last_value_stream_and_a_restarted_publisher_continues_seq()
{
    let nats = NatsServer::start().await;
    let want = sample_on_bus(&nats).await;

    // Nothing moves on the bus now: the snapshots can only come from the stream.
    let late = edge(&nats, "bus-late", "stream = \"QUOTES\"").await;
    let mut client = Client::connect(&late.ws_url("")).await;
    client.subscribe(&SAMPLE, 50.0).await;
    for _ in SAMPLE {
        let snap = client.until_type("snapshot").await;
        let sym = snap["sym"].as_str().unwrap();
        let mut expected = want[sym].clone();
        expected["type"] = json!("snapshot");
        assert_eq!(snap, expected);
    }

    // A publisher that restarts continues AAPL's seq from the stream.
    let aapl_seq = want["AAPL"]["seq"].as_u64().unwrap();
    let line = r#"{"sym":"AAPL","t":1763730099999,"bp":"1.23"}"#;
    let second = publisher(&nats, &temp_file("one.ndjson", line), 0.0).await;
    second.wait_feeds_done().await;
    assert_eq!(second.rest_quote("AAPL").await["seq"], aapl_seq + 1);
    let update = client
        .until(|m| m["type"] == "update" && m["sym"] == "AAPL")
        .await;
    assert_eq!(update["seq"], aapl_seq + 1, "{update}");
    assert_eq!(update["bp"], "1.23");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_to_another_edge_resumes_with_snapshots_only_of_what_changed() {
    let nats = NatsServer::start().await;
    let want = sample_on_bus(&nats).await;
    let a = edge(&nats, "bus-a", "stream = \"QUOTES\"").await;
    let b = edge(&nats, "bus-b", "stream = \"QUOTES\"").await;
    // Clients on both edges: each edge follows the sample symbols.
    let mut stay = Client::connect(&a.ws_url("")).await;
    let mut away = Client::connect(&a.ws_url("")).await;
    let mut on_b = Client::connect(&b.ws_url("")).await;
    for client in [&mut stay, &mut away, &mut on_b] {
        client.subscribe(&SAMPLE, 50.0).await;
        converge(client, &want).await;
    }
    let seqs: serde_json::Map<String, Value> = SAMPLE
        .iter()
        .map(|sym| (sym.to_string(), away.state[*sym]["seq"].clone()))
        .collect();
    let seen = std::mem::take(&mut away.g);
    drop(away);

    // While the client is away, AAPL moves on the bus; both edges take it.
    let aapl = want["AAPL"]["seq"].as_u64().unwrap() + 1;
    let line = r#"{"sym":"AAPL","t":1763730099999,"bp":"1.23"}"#;
    let _second = publisher(&nats, &temp_file("one.ndjson", line), 0.0).await;
    for client in [&mut stay, &mut on_b] {
        let moved = client
            .until(|m| m["type"] == "update" && m["sym"] == "AAPL")
            .await;
        assert_eq!(moved["seq"], aapl, "{moved}");
    }

    // It comes back on edge B with the seqs it had.
    let (mut back, snapshots) = Client::resume(&b.ws_url(""), &seen, &SAMPLE, seqs.into()).await;
    let snapshots: Vec<_> = snapshots.iter().map(|m| (&m["sym"], &m["seq"])).collect();
    assert_eq!(snapshots, vec![(&json!("AAPL"), &json!(aapl))]);

    // Same state and seq as the client that stayed, and as both edges.
    let now = quotes(&a).await;
    assert_eq!(now["AAPL"]["bp"], "1.23");
    assert_eq!(quotes(&b).await, now);
    converge(&mut stay, &now).await;
    converge(&mut back, &now).await;
    for sym in SAMPLE {
        assert_eq!(back.state[sym], stay.state[sym], "{sym}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_subscribes_to_exactly_the_symbols_in_demand_and_lets_go_after_the_linger() {
    let nats = NatsServer::start().await;
    let app = edge(&nats, "bus", "linger = \"300ms\"").await;
    let conn = "ticker-gateway feed bus";
    nats.wait_subscriptions(conn, &[]).await;

    let mut one = Client::connect(&app.ws_url("")).await;
    let mut two = Client::connect(&app.ws_url("")).await;
    one.subscribe(&["AAPL", "MSFT"], 5.0).await;
    nats.wait_subscriptions(conn, &["ticker.quotes.AAPL", "ticker.quotes.MSFT"])
        .await;
    two.subscribe(&["MSFT", "IBM"], 5.0).await;
    nats.wait_subscriptions(
        conn,
        &[
            "ticker.quotes.AAPL",
            "ticker.quotes.IBM",
            "ticker.quotes.MSFT",
        ],
    )
    .await;

    // MSFT is still wanted by the other client; AAPL goes after the linger.
    one.send(json!({"op":"unsubscribe","id":"u","symbols":["AAPL","MSFT"]}))
        .await;
    one.until_type("unsubscribed").await;
    let left = std::time::Instant::now();
    nats.wait_subscriptions(conn, &["ticker.quotes.IBM", "ticker.quotes.MSFT"])
        .await;
    // Not before the linger (a setting, not a speed): a lower bound only.
    assert!(
        left.elapsed() >= std::time::Duration::from_millis(300),
        "AAPL went after {:?}, before its 300 ms linger",
        left.elapsed()
    );

    // A client that goes away takes its demand with it.
    drop(two);
    nats.wait_subscriptions(conn, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_late_and_bad_bus_messages_are_dropped_and_counted() {
    let nats = NatsServer::start().await;
    let app = edge(&nats, "bus", "follow = \"all\"").await;
    nats.wait_subscriptions("ticker-gateway feed bus", &["ticker.quotes.>"])
        .await;
    let mut client = Client::connect(&app.ws_url("")).await;
    client.subscribe(&["AAPL"], 50.0).await;

    let raw = async_nats::connect(nats.url()).await.unwrap();
    let send = |body: &'static str| {
        let raw = raw.clone();
        async move {
            raw.publish("ticker.quotes.AAPL", body.into())
                .await
                .unwrap();
            raw.flush().await.unwrap();
        }
    };
    let seen = |seq: u64| move |m: &Value| m["sym"] == "AAPL" && m["seq"] == seq;

    send(r#"{"sym":"AAPL","seq":10,"t":1,"bp":"1.00","pub":"p1"}"#).await;
    assert_eq!(client.until(seen(10)).await["type"], "snapshot");

    for body in [
        r#"{"sym":"AAPL","seq":10,"t":1,"bp":"1.00","pub":"p1"}"#,
        r#"{"sym":"AAPL","seq":9,"t":0,"bp":"0.99","pub":"p1"}"#,
        "not json",
        r#"{"sym":"MSFT","seq":99,"t":5,"bp":"9.00","pub":"p1"}"#,
        r#"{"sym":"AAPL","seq":11,"t":2,"bp":"1.01","pub":"p1"}"#,
    ] {
        send(body).await;
    }
    // Had any of the four before it been taken, this one would not be seq 11.
    assert_eq!(client.until(seen(11)).await["bp"], "1.01");

    // Another publisher's lower number: taken, numbered next by the hub.
    send(r#"{"sym":"AAPL","seq":3,"t":3,"bp":"1.02","pub":"p2"}"#).await;
    assert_eq!(client.until(seen(12)).await["bp"], "1.02");
    // Unnumbered and partial: taken.
    send(r#"{"sym":"AAPL","t":4,"bs":500}"#).await;
    let last = client.until(seen(13)).await;
    assert_eq!((&last["bs"], last.get("bp")), (&json!(500), None));

    let rejected = |reason: &'static str| {
        let app = &app;
        async move {
            app.metric(
                "ticker_feed_quotes_rejected_total",
                &[("feed", "bus"), ("reason", reason)],
            )
            .await
        }
    };
    assert_eq!(rejected("duplicate").await, 1.0);
    assert_eq!(rejected("out_of_order").await, 1.0);
    assert_eq!(rejected("malformed").await, 2.0);
    let q = app.rest_quote("AAPL").await;
    assert_eq!(
        (&q["seq"], &q["bp"], &q["bs"]),
        (&json!(13), &json!("1.02"), &json!(500))
    );
}

/// The state `/api/v1/feeds` shows for the feed named `feed`.
async fn feed_state(app: &TestApp, feed: &str) -> String {
    let (_, feeds) = app.get_json("/api/v1/feeds").await;
    feeds
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == feed)
        .map(|f| f["state"].as_str().unwrap().to_owned())
        .unwrap()
}

async fn wait_feed_state(app: &TestApp, feed: &str, want: &str) {
    poll(&format!("feed {feed} (want {want})"), || async {
        let state = feed_state(app, feed).await;
        if state == want {
            Ok(())
        } else {
            Err(state)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_loses_the_bus_reconnects_and_resubscribes() {
    let mut nats = NatsServer::start().await;
    let app = edge(&nats, "bus", "").await;
    let conn = "ticker-gateway feed bus";
    let mut client = Client::connect(&app.ws_url("")).await;
    client.subscribe(&["AAPL"], 50.0).await;
    nats.wait_subscriptions(conn, &["ticker.quotes.AAPL"]).await;
    wait_feed_state(&app, "bus", "running").await;

    nats.kill();
    wait_feed_state(&app, "bus", "reconnecting").await;
    nats.restart().await;
    wait_feed_state(&app, "bus", "running").await;
    // The client resubscribed by itself; quotes flow again.
    nats.wait_subscriptions(conn, &["ticker.quotes.AAPL"]).await;
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let body = r#"{"sym":"AAPL","seq":7,"t":1,"bp":"2.00","pub":"p1"}"#;
    raw.publish("ticker.quotes.AAPL", body.into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    let snap = client.until(|m| m["sym"] == "AAPL").await;
    assert_eq!(
        (&snap["type"], &snap["seq"]),
        (&json!("snapshot"), &json!(7))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_adds_symbols_grows_its_universe_up_to_the_cap() {
    let nats = NatsServer::start().await;
    let app = edge(
        &nats,
        "bus",
        "follow = \"all\"\nadd_symbols = true\n[universe]\nmax_added = 1",
    )
    .await;
    nats.wait_subscriptions("ticker-gateway feed bus", &["ticker.quotes.>"])
        .await;
    let raw = async_nats::connect(nats.url()).await.unwrap();
    for sym in ["ZZNEW", "ZZMORE"] {
        let body = format!(r#"{{"sym":"{sym}","seq":1,"t":1,"lp":"5.00","pub":"p"}}"#);
        raw.publish(format!("ticker.quotes.{sym}"), body.into())
            .await
            .unwrap();
    }
    raw.flush().await.unwrap();
    app.wait_metric(
        "ticker_feed_quotes_rejected_total",
        &[("feed", "bus"), ("reason", "universe_full")],
        |v| v == 1.0,
    )
    .await;
    assert_eq!(app.rest_quote("ZZNEW").await["lp"], "5.00");
    let (_, symbols) = app.get_json("/api/v1/symbols").await;
    let added: Vec<&Value> = symbols
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["feed"] == "bus")
        .collect();
    assert_eq!(added, [&json!({"sym":"ZZNEW","name":"ZZNEW","feed":"bus"})]);
    let (status, _) = app.get_json("/api/v1/quotes/ZZMORE").await;
    assert_eq!(status, 404);
}
