//! The fallback transports carry the same messages with the same guarantees as the
//! WebSocket (PROTOCOL.md section 6): Server-Sent Events and long-polling, each
//! tested for snapshot first, deltas, throttle with conflation, convergence,
//! order and silence, plus their own rules (400 before a stream, 410 after expiry).

mod common;

use std::time::{Duration, Instant};

use common::fallback::{Poll, Source, Sse};
use common::*;
use serde_json::{json, Value};

/// Snapshot first (equal to the API's quote), then a delta with only the changed
/// field.
async fn snapshot_then_delta(app: &TestApp, c: &mut impl Source) {
    let w = c.until(|m| m["type"] == "welcome").await;
    assert_eq!(w["format"], "json");
    let s = c.until(|m| m["type"] == "subscribed").await;
    assert_eq!(s["symbols"], json!(["AAPL", "MSFT"]));
    assert_eq!(s["max_rate"], 5);
    for sym in ["AAPL", "MSFT"] {
        let snap = c
            .until(|m| m["type"] == "snapshot" && m["sym"] == sym)
            .await;
        let rest = app.rest_snapshot(sym).await;
        assert_eq!(snap, rest);
    }
    let q = app.rest_quote("AAPL").await;
    let t = q["t"].as_i64().unwrap() + 1;
    app.publish(json!({"sym":"AAPL","t":t,"bp":q["bp"],"as":q["as"].as_u64().unwrap() + 100}));
    let u = c.until(|m| m["type"] == "update").await;
    let mut keys: Vec<&str> = u.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["as", "seq", "sym", "t", "type"]);
    assert_eq!(c.g().state["AAPL"], app.rest_quote("AAPL").await);
}

/// 60 updates over 1.5 s at max_rate 2: at most 3 messages in any second, every
/// changed field carried, converged within 1/2 s + 250 ms of the last update.
async fn throttle_and_converge(app: &TestApp, c: &mut impl Source, sym: &str) {
    c.until(|m| m["type"] == "snapshot" && m["sym"] == sym)
        .await;
    let base = app.rest_quote(sym).await;
    let (t0, bs0) = (base["t"].as_i64().unwrap(), base["bs"].as_u64().unwrap());
    let publisher = async {
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        let mut last = Instant::now();
        for i in 1..=60u64 {
            tick.tick().await;
            app.publish(json!({"sym": sym, "t": t0 + i as i64, "bs": bs0 + i}));
            last = Instant::now();
        }
        last
    };
    let mut arrivals = Vec::new();
    let final_bs = bs0 + 60;
    let (last, ()) = tokio::join!(publisher, async {
        loop {
            let m = c.until(|m| m["sym"] == sym).await;
            arrivals.push(Instant::now());
            assert!(m.get("bs").is_some(), "conflated update lost bs: {m}");
            if m["bs"] == final_bs {
                break;
            }
        }
    });
    let converged = *arrivals.last().unwrap();
    for (i, t) in arrivals.iter().enumerate() {
        let n = arrivals[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        assert!(n <= 3, "{n} messages within 1 s at max_rate 2");
    }
    assert!(
        arrivals.len() <= 6,
        "{} messages for 60 updates",
        arrivals.len()
    );
    let took = converged.saturating_duration_since(last);
    assert!(
        took <= Duration::from_millis(750),
        "converged after {took:?}"
    );
    assert_eq!(c.g().state[sym], app.rest_quote(sym).await);
}

#[tokio::test]
async fn sse_snapshot_first_then_deltas() {
    let app = quiet_app().await;
    let mut c = Sse::open(&app, "symbols=AAPL,MSFT&max_rate=5").await;
    snapshot_then_delta(&app, &mut c).await;
}

#[tokio::test]
async fn sse_throttles_conflates_and_converges() {
    let app = quiet_app().await;
    let mut c = Sse::open(&app, "symbols=NVDA&max_rate=2").await;
    throttle_and_converge(&app, &mut c, "NVDA").await;
}

#[tokio::test]
async fn sse_sends_keepalive_comments() {
    let app = quiet_app_with("[sse]\nkeepalive_interval = \"100ms\"\n").await;
    let mut c = Sse::open(&app, "symbols=SPY").await;
    while c.comments < 2 {
        c.read().await;
    }
}

#[tokio::test]
async fn sse_bad_parameters_get_400_with_a_json_error_before_any_stream() {
    let app = quiet_app().await;
    for (query, code) in [
        ("symbols=AAPL,ZZZZ", "unknown_symbol"),
        ("symbols=aapl", "unknown_symbol"),
        ("symbols=", "bad_request"),
        ("", "bad_request"),
        ("symbols=AAPL&max_rate=fast", "bad_request"),
        ("symbols=AAPL&max_rate=-1", "bad_request"),
        ("symbols=AAPL&bogus=1", "bad_request"),
    ] {
        let (status, body) = app.get_json(&format!("/sse?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["type"], "error", "{query}: {body}");
        assert_eq!(body["code"], code, "{query}: {body}");
    }
    let (_, body) = app.get_json("/sse?symbols=AAPL,ZZZZ").await;
    assert_eq!(body["symbols"], json!(["ZZZZ"]));
    let many = app.symbols(501).await;
    let (status, body) = app
        .get_json(&format!("/sse?symbols={}", many.join(",")))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("too_many_symbols"))
    );
}

#[tokio::test]
async fn poll_snapshot_first_then_deltas() {
    let app = quiet_app().await;
    let mut c = Poll::create(&app, json!({"symbols":["AAPL","MSFT"],"max_rate":5})).await;
    snapshot_then_delta(&app, &mut c).await;
}

#[tokio::test]
async fn poll_throttles_conflates_and_converges() {
    let app = quiet_app().await;
    let mut c = Poll::create(&app, json!({"symbols":["TSLA"],"max_rate":2})).await;
    throttle_and_converge(&app, &mut c, "TSLA").await;
}

#[tokio::test]
async fn poll_ops_unsubscribe_and_silence() {
    let app = quiet_app().await;
    let mut c = Poll::create(&app, json!({"symbols":["AAPL","SPY"],"max_rate":50})).await;
    c.until(|m| m["type"] == "snapshot" && m["sym"] == "SPY")
        .await;
    let replies = c.op(json!({"op":"ping","id":1})).await;
    assert_eq!(replies, vec![json!({"type":"pong","id":1})]);
    let replies = c
        .op(json!({"op":"unsubscribe","id":2,"symbols":["AAPL"]}))
        .await;
    assert_eq!(
        replies,
        vec![json!({"type":"unsubscribed","id":2,"symbols":["AAPL"]})]
    );
    let replies = c
        .op(json!({"op":"subscribe","id":3,"symbols":["MSFT","ZZZZ"]}))
        .await;
    let types: Vec<&str> = replies
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["error", "subscribed", "snapshot"]);
    // A body that is not an op is refused as a request, with the error body.
    for bad in [r#"{"op":"dance","id":4}"#, r#"["ping"]"#] {
        assert_bad_request(&app, &format!("/poll/{}", c.session), bad).await;
    }
    // Quotes for the unsubscribed symbol never arrive (Guarantees checks), the
    // others do.
    let a = app.rest_quote("AAPL").await["t"].as_i64().unwrap();
    let s = app.rest_quote("SPY").await["t"].as_i64().unwrap();
    app.publish(json!({"sym":"AAPL","t":a + 1,"bs":5}));
    app.publish(json!({"sym":"SPY","t":s + 1,"bs":5}));
    c.until(|m| m["type"] == "update" && m["sym"] == "SPY")
        .await;
}

#[tokio::test]
async fn poll_waits_then_answers_empty_and_expires_into_410() {
    let app = quiet_app_with("[poll]\nsession_timeout = \"1s\"\nmax_wait = \"500ms\"\n").await;
    let mut c = Poll::create(&app, json!({"symbols":["QQQ"]})).await;
    c.pending.clear();
    // Nothing changes: the poll waits `wait` and answers an empty list.
    let started = Instant::now();
    let (status, body) = c.get("0.3").await;
    assert_eq!((status, body.clone()), (200, json!({"messages": []})));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A wait longer than any duration is max_wait too.
    let (status, body) = c.get("1e300").await;
    assert_eq!((status, body), (200, json!({"messages": []})));
    // Unpolled for longer than session_timeout: the session expires, then 410.
    app.wait_metric(
        "ticker_connections_closed_total",
        &[("transport", "poll"), ("code", "expired")],
        |v| v >= 1.0,
    )
    .await;
    let (status, body) = c.get("0").await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["code"], "session_expired");
    let (status, body) = app.get_json("/poll/s-doesnotexist").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("unknown_session"))
    );
}

/// `POST path` with `body` answers 400 with a `bad_request` error body.
async fn assert_bad_request(app: &TestApp, path: &str, body: &'static str) {
    let r = app
        .http
        .post(app.url(path))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "{body}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "bad_request", "{body}: {v}");
}

#[tokio::test]
async fn poll_delete_ends_the_session_and_bad_bodies_are_400() {
    let app = quiet_app().await;
    let c = Poll::create(&app, json!({"symbols":["AAPL"]})).await;
    let url = app.url(&format!("/poll/{}", c.session));
    let r = app.http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 410);
    for body in [
        "not json",
        "[1]",
        r#"{"symbols":"AAPL"}"#,
        r#"{"symbols":["AAPL"],"max_rate":"x"}"#,
        r#"{"bogus":1}"#,
        // A rate or snapshot flag needs the symbols it is for.
        r#"{"max_rate":2}"#,
        r#"{"snapshot":false}"#,
    ] {
        assert_bad_request(&app, "/poll", body).await;
    }
    assert_eq!(
        app.metric("ticker_sessions_active", &[("transport", "poll")])
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_a_change_arrives() {
    let app = quiet_app().await;
    let mut c = Poll::create(&app, json!({"symbols":["QQQ"],"max_rate":50})).await;
    c.pending.clear();
    let t = app.rest_quote("QQQ").await["t"].as_i64().unwrap();
    let started = Instant::now();
    let waiting = c.get("25");
    let publish = async {
        // Let the poll reach its wait first, then publish.
        app.wait_metric("ticker_sessions_active", &[("transport", "poll")], |v| {
            v == 1.0
        })
        .await;
        tokio::task::yield_now().await;
        app.publish(json!({"sym":"QQQ","t":t + 1,"ls":7}));
    };
    let ((status, body), ()) = tokio::join!(waiting, publish);
    assert_eq!(status, 200);
    assert_eq!(body["messages"][0]["type"], "update", "{body}");
    assert_eq!(body["messages"][0]["ls"], 7, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the poll sat out its wait"
    );
}

#[tokio::test]
async fn poll_op_flood_is_refused_then_ends_the_session() {
    let app = quiet_app_with("[session]\nclient_msgs_per_sec = 0.1\nclient_msgs_burst = 2\n").await;
    let mut c = Poll::create(&app, json!({"symbols":["AAPL"]})).await;
    for i in 0..2 {
        let r = c.op(json!({"op":"ping","id":i})).await;
        assert_eq!(r[0]["type"], "pong", "{r:?}");
    }
    // Over the rate: refused, with the same error as on a WebSocket.
    for i in 2..4 {
        let r = c.op(json!({"op":"ping","id":i})).await;
        assert_eq!(r[0]["code"], "rate_limited", "{r:?}");
        assert!(r[0]["message"].as_str().unwrap().contains("4029"), "{r:?}");
    }
    // Flooding on: 429, and the session is gone (410 afterwards).
    let url = app.url(&format!("/poll/{}", c.session));
    let r = app
        .http
        .post(&url)
        .json(&json!({"op":"ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited", "{v}");
    assert_eq!(c.get("0").await.0, 410);
    assert_eq!(
        app.metric(
            "ticker_connections_closed_total",
            &[("transport", "poll"), ("code", "4029")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn sse_reader_that_stops_reading_is_cut_and_others_keep_flowing() {
    // A busy market (every symbol moving) and a 300 ms write stall timeout.
    let app = spawn_app(
        "[session]\nwrite_stall_timeout = \"300ms\"\n\
         [[feeds]]\nname = \"sim\"\nkind = \"sim\"\nquotes_per_sec = 20000.0\nhot_fraction = 1.0\nseed = 1\n",
    )
    .await;
    let mut witness = Sse::open(&app, "symbols=SPY&max_rate=10").await;
    witness.until(|m| m["type"] == "snapshot").await;

    // A reader with a tiny receive buffer asks for 500 symbols, then reads nothing.
    let syms = app.symbols(500).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(app.addr).await.unwrap();
    let request = format!(
        "GET /sse?symbols={}&max_rate=50 HTTP/1.1\r\nHost: x\r\n\r\n",
        syms.join(",")
    );
    tokio::io::AsyncWriteExt::write_all(&mut slow, request.as_bytes())
        .await
        .unwrap();

    // Its stream is ended (4008 in the metrics: SSE has no close codes) and its
    // socket reset, as for a slow WebSocket client.
    app.wait_metric("ticker_slow_consumer_resets_total", &[], |v| v >= 1.0)
        .await;
    app.wait_metric(
        "ticker_connections_closed_total",
        &[("transport", "sse"), ("code", "4008")],
        |v| v == 1.0,
    )
    .await;
    // The witness still gets fresh quotes.
    let last = app.rest_quote("SPY").await["seq"].as_u64().unwrap();
    witness
        .until(|m| m["type"] == "update" && m["sym"] == "SPY" && m["seq"].as_u64() > Some(last))
        .await;
    drop(slow);
}
