//! STOMP over WebSocket (PROTOCOL.md section 7) with the real `@stomp/stompjs`
//! 7 client in Node: default settings, heart-beats, snapshot then deltas under
//! the same guarantees checker as every transport, `max-rate`, receipts,
//! silence after UNSUBSCRIBE, ERROR-then-close, DISCONNECT, escaping, size
//! limits, 1.0 and 1.1 clients, a slow client's bounds, and feed status
//! (a stale then live symbol). Needs `node` and
//! `npm ci --prefix tests/browser`.

mod clients;
#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use clients::{RawStomp, StompJs};
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::MaybeTlsStream;

/// Reads until the client's view of `sym` equals the REST quote.
async fn until_converged(c: &mut StompJs, app: &TestApp, sym: &str) {
    let rest = app.rest_quote(sym).await;
    while c.g.state.get(sym) != Some(&rest) {
        c.until_msg(|b| b["sym"] == sym).await;
    }
}

#[tokio::test]
async fn default_stompjs_settings_get_snapshots_then_deltas_that_converge() {
    let app = quiet_app().await;
    let (mut c, connected) = StompJs::connect(&app, json!({})).await;
    assert_eq!(connected["version"], "1.2");
    // stompjs asks for 10 s both ways; the server wishes its 15 s heartbeat_interval.
    assert_eq!(connected["heart-beat"], "15000,15000");
    assert!(connected["session"].as_str().unwrap().starts_with("s-"));
    assert!(connected["server"]
        .as_str()
        .unwrap()
        .starts_with("ticker-gateway/"));

    let syms = ["AAPL", "MSFT", "NVDA"];
    for s in syms {
        c.subscribe(s, json!({"max-rate": "20"})).await;
    }
    for s in syms {
        let m = c
            .until_msg(|b| b["type"] == "snapshot" && b["sym"] == s)
            .await;
        assert_eq!(m["headers"]["destination"], format!("/topic/quotes.{s}"));
        assert!(m["headers"]["subscription"]
            .as_str()
            .unwrap()
            .starts_with("sub-"));
    }
    for s in syms {
        publish_burst(&app, s, 12, Duration::from_millis(5)).await;
    }
    for s in syms {
        until_converged(&mut c, &app, s).await;
    }
    let updates = app
        .metric(
            "ticker_messages_sent_total",
            &[("transport", "stomp"), ("type", "update")],
        )
        .await;
    assert!(updates >= 3.0, "{updates} updates over STOMP");
}

#[tokio::test]
async fn max_rate_throttles_and_conflation_loses_no_field() {
    let app = quiet_app().await;
    let (mut c, _) = StompJs::connect(&app, json!({})).await;
    c.subscribe("AAPL", json!({"max-rate": "2"})).await;
    c.until_msg(|b| b["type"] == "snapshot").await;

    let burst = publish_burst(&app, "AAPL", 45, Duration::from_millis(25));
    let mut arrivals = Vec::new();
    let (_, ()) = tokio::join!(burst, async {
        let end = Instant::now() + Duration::from_millis(1_600);
        while let Ok(m) =
            tokio::time::timeout_at(end.into(), c.until_msg(|b| b["sym"] == "AAPL")).await
        {
            arrivals.push((Instant::now(), m["body"].clone()));
        }
    });
    until_converged(&mut c, &app, "AAPL").await;
    let times: Vec<Instant> = arrivals.iter().map(|(t, _)| *t).collect();
    assert_at_most_per_second(&times, 3, "messages at max-rate 2");
    for (_, body) in &arrivals {
        assert_eq!(body["type"], "update");
        assert!(
            body.get("bs").is_some(),
            "a conflated update lost bs: {body}"
        );
    }
}

#[tokio::test]
async fn a_receipt_comes_before_the_snapshot_and_snapshot_false_sends_deltas_only() {
    let app = quiet_app().await;
    let (mut c, _) = StompJs::connect(&app, json!({})).await;
    c.send(json!({"cmd": "receipt", "id": "r-1"})).await;
    c.subscribe("AAPL", json!({"receipt": "r-1"})).await;
    let first = c
        .until(|e| e["ev"] == "receipt" || e["ev"] == "message")
        .await;
    assert_eq!(
        first["ev"], "receipt",
        "RECEIPT before the snapshot: {first}"
    );
    assert_eq!(first["headers"]["receipt-id"], "r-1");
    c.until_msg(|b| b["type"] == "snapshot" && b["sym"] == "AAPL")
        .await;

    // Without a snapshot the first message is a delta of what changed.
    c.check = false;
    c.send(json!({"cmd": "receipt", "id": "r-2"})).await;
    c.subscribe("MSFT", json!({"snapshot": "false", "receipt": "r-2"}))
        .await;
    c.until_ev("receipt").await;
    let before = app.rest_quote("MSFT").await;
    app.publish(json!({"sym": "MSFT", "t": before["t"].as_i64().unwrap() + 1, "bs": 4242}));
    let m = c.until_msg(|b| b["sym"] == "MSFT").await;
    assert_eq!(m["body"]["type"], "update", "{m}");
    assert_eq!(m["body"]["bs"], 4242);
    assert!(m["body"].get("bp").is_none(), "only what changed: {m}");
}

#[tokio::test]
async fn nothing_arrives_after_unsubscribe_and_a_new_id_replaces_the_old() {
    let app = quiet_app().await;
    let (mut c, _) = StompJs::connect(&app, json!({})).await;
    c.subscribe("AAPL", json!({"id": "a"})).await;
    c.subscribe("MSFT", json!({"id": "m"})).await;
    c.until_msg(|b| b["type"] == "snapshot" && b["sym"] == "AAPL")
        .await;
    c.until_msg(|b| b["type"] == "snapshot" && b["sym"] == "MSFT")
        .await;

    c.send(json!({"cmd": "receipt", "id": "u"})).await;
    c.send(json!({"cmd": "unsubscribe", "id": "a", "headers": {"receipt": "u"}}))
        .await;
    c.until(|e| e["ev"] == "receipt" && e["headers"]["receipt-id"] == "u")
        .await;
    c.g.check(&json!({"type": "unsubscribed", "symbols": ["AAPL"]}));
    // The checker fails the test on any AAPL message from here on.
    for s in ["AAPL", "MSFT"] {
        publish_burst(&app, s, 3, Duration::from_millis(1)).await;
    }
    until_converged(&mut c, &app, "MSFT").await;

    // MSFT again under id m2: its frames now name m2 only.
    c.send(json!({"cmd": "receipt", "id": "m2r"})).await;
    c.subscribe("MSFT", json!({"id": "m2", "receipt": "m2r"}))
        .await;
    c.until(|e| e["ev"] == "receipt").await;
    // A fresh snapshot follows (it may repeat the seq the client has).
    c.g.check(&json!({"type": "subscribed", "symbols": ["MSFT"]}));
    let m = c.until_msg(|b| b["sym"] == "MSFT").await;
    assert_eq!(m["headers"]["subscription"], "m2");
    publish_burst(&app, "MSFT", 2, Duration::from_millis(1)).await;
    let m = c.until_msg(|b| b["type"] == "update").await;
    assert_eq!(m["headers"]["subscription"], "m2");
}

/// Connects, does `act`, and returns the ERROR and the close code.
async fn error_after(app: &TestApp, act: Value) -> (Value, u16) {
    let (mut c, _) = StompJs::connect(app, json!({})).await;
    c.send(act).await;
    let (error, code) = c.until_closed().await;
    (error.expect("an ERROR frame before the close"), code)
}

#[tokio::test]
async fn refused_frames_get_an_error_then_the_close() {
    let app = quiet_app().await;
    let cases = [
        (
            json!({"cmd": "publish", "destination": "/topic/quotes.AAPL", "body": "x"}),
            "SEND",
        ),
        (json!({"cmd": "begin"}), "transactions"),
        (
            json!({"cmd": "subscribe", "destination": "/topic/quotes.AAPL", "headers": {"ack": "client"}}),
            "ack:client",
        ),
        (
            json!({"cmd": "subscribe", "destination": "/queue/orders", "headers": {}}),
            "unknown destination",
        ),
        (
            json!({"cmd": "subscribe", "destination": "/topic/quotes.ZZZZ", "headers": {}}),
            "unknown symbol",
        ),
        (
            json!({"cmd": "subscribe", "destination": "/topic/quotes.AAPL", "headers": {"max-rate": "fast"}}),
            "max-rate",
        ),
        (
            json!({"cmd": "raw", "data": "HELLO\n\n\0"}),
            "unknown command",
        ),
        (
            json!({"cmd": "raw", "data": "SUBSCRIBE\nid\n\n\0"}),
            "malformed",
        ),
    ];
    for (act, says) in cases {
        let (error, code) = error_after(&app, act.clone()).await;
        let message = error["headers"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{act}: ERROR says {message:?}");
        let body: Value = serde_json::from_str(error["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["type"], "error", "{body}");
        assert!(code == 1000 || code == 1002, "{act}: closed with {code}");
    }
    // A refused frame that asked for a receipt names it.
    let (error, _) = error_after(
        &app,
        json!({"cmd": "subscribe", "destination": "/topic/quotes.ZZZZ", "headers": {"receipt": "z"}}),
    )
    .await;
    assert_eq!(error["headers"]["receipt-id"], "z");
    assert_eq!(
        app.metric("ticker_sessions_active", &[("transport", "stomp")])
            .await,
        0.0
    );
}

#[tokio::test]
async fn disconnect_gets_its_receipt_then_a_normal_close() {
    let app = quiet_app().await;
    let (mut c, _) = StompJs::connect(&app, json!({})).await;
    c.subscribe("AAPL", json!({})).await;
    c.until_msg(|b| b["type"] == "snapshot").await;
    // stompjs sends DISCONNECT with a receipt and closes when it arrives.
    c.send(json!({"cmd": "disconnect"})).await;
    let (error, code) = c.until_closed().await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(code, 1000);
    app.wait_metric("ticker_sessions_active", &[("transport", "stomp")], |v| {
        v == 0.0
    })
    .await;
    app.wait_metric("ticker_subscriptions_active", &[], |v| v == 0.0)
        .await;
}

#[tokio::test]
async fn header_values_with_colons_and_newlines_round_trip_escaped() {
    let app = quiet_app().await;
    // stompjs escapes header values on 1.2 only (the 1.1 escapes are unit-tested).
    let (mut c, _) = StompJs::connect(&app, json!({})).await;
    let id = "quotes:AAPL\nfirst\\one";
    c.send(json!({"cmd": "receipt", "id": "r:1\n2"})).await;
    c.subscribe("AAPL", json!({"id": id, "receipt": "r:1\n2"}))
        .await;
    let r = c.until_ev("receipt").await;
    assert_eq!(r["headers"]["receipt-id"], "r:1\n2");
    let m = c.until_msg(|b| b["type"] == "snapshot").await;
    assert_eq!(m["headers"]["subscription"], id);
}

#[tokio::test]
async fn stomp_1_0_and_1_1_clients_connect_and_subscribe() {
    let app = quiet_app().await;
    for version in ["1.0", "1.1"] {
        let (mut c, connected) = StompJs::connect(&app, json!({"versions": [version]})).await;
        assert_eq!(connected["version"], version);
        c.subscribe("AAPL", json!({})).await;
        c.until_msg(|b| b["type"] == "snapshot" && b["sym"] == "AAPL")
            .await;
        c.send(json!({"cmd": "disconnect"})).await;
        assert_eq!(c.until_closed().await, (None, 1000));
    }
}

#[tokio::test]
async fn heart_beats_flow_both_ways_and_a_silent_client_is_dropped() {
    let app =
        quiet_app_with("[session]\nheartbeat_interval = \"200ms\"\nclient_timeout = \"5s\"\n")
            .await;
    // stompjs beats every 200 ms (the MAX of 100 and the server's 200) and
    // checks ours: it stays connected while beats arrive.
    let (mut c, connected) = StompJs::connect(
        &app,
        json!({"heartbeatIncoming": 100, "heartbeatOutgoing": 100}),
    )
    .await;
    assert_eq!(connected["heart-beat"], "200,200");
    for _ in 0..5 {
        c.until_ev("beat").await;
    }

    // A raw client that promises beats every 100 ms and then stays silent is
    // closed after twice its period (MAX(100, 200) ms each) with 4000.
    let mut silent = RawStomp::connect(&app).await;
    silent
        .send("CONNECT\naccept-version:1.2\nheart-beat:100,100\n\n\0")
        .await;
    assert!(silent.frame().await.starts_with("CONNECTED\n"));
    let (_, code) = silent.until_closed().await;
    assert_eq!(code, Some(4000));
    // The stompjs client beat all along and is still there.
    c.until_ev("beat").await;
    c.subscribe("AAPL", json!({})).await;
    c.until_msg(|b| b["type"] == "snapshot").await;
}

#[tokio::test]
async fn oversized_frames_are_refused_from_their_header() {
    let app = quiet_app_with("[session]\nmax_frame_bytes = 4096\n").await;
    // A STOMP frame whose content-length is over the limit: ERROR, then 1009.
    let (error, code) = error_after(
        &app,
        json!({"cmd": "raw", "data": "SEND\ndestination:/x\ncontent-length:100000\n\n"}),
    )
    .await;
    assert!(error["headers"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than 4096"));
    assert_eq!(code, 1009);
    // A WebSocket message over the limit: refused by the socket, 1009.
    let (mut c, _) = StompJs::connect(&app, json!({})).await;
    c.send(json!({"cmd": "raw", "data": "x".repeat(10_000)}))
        .await;
    let (_, code) = c.until_closed().await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn many_frames_share_one_websocket_message_and_stompjs_reads_them_all() {
    let app = quiet_app().await;
    let mut syms = Vec::new();
    for s in app.symbols(500).await {
        if app.get_json(&format!("/api/v1/quotes/{s}")).await.0 == 200 {
            syms.push(s);
        }
    }
    assert!(syms.len() >= 5, "the sample quotes {} symbols", syms.len());
    let (mut c, _) = StompJs::connect(&app, json!({})).await;
    // All SUBSCRIBE frames in one WebSocket message: their snapshots are ready
    // together and leave together.
    c.raw_subscriptions = true;
    let frames: String = syms
        .iter()
        .map(|s| format!("SUBSCRIBE\nid:b-{s}\ndestination:/topic/quotes.{s}\n\n\0"))
        .collect();
    c.send(json!({"cmd": "raw", "data": frames})).await;
    for s in &syms {
        let m = c
            .until_msg(|b| b["type"] == "snapshot" && b["sym"] == s.as_str())
            .await;
        assert_eq!(m["headers"]["subscription"], format!("b-{s}"));
    }
    let sent = app
        .metric("ticker_frames_sent_total", &[("transport", "stomp")])
        .await;
    // CONNECTED, then one message with every snapshot.
    assert_eq!(
        sent,
        2.0,
        "{sent} WebSocket messages for {} snapshots",
        syms.len()
    );
}

#[tokio::test]
async fn a_slow_stomp_client_is_closed_with_4008_and_others_keep_flowing() {
    let app = spawn_app(
        "[session]\nwrite_stall_timeout = \"300ms\"\n\
         [[feeds]]\nname = \"sim\"\nkind = \"sim\"\nquotes_per_sec = 20000.0\nhot_fraction = 1.0\nseed = 1\n",
    )
    .await;
    let (mut witness, _) = StompJs::connect(&app, json!({})).await;
    witness.subscribe("SPY", json!({"max-rate": "10"})).await;
    witness.until_msg(|b| b["type"] == "snapshot").await;

    // A client with a tiny receive buffer subscribes to 500 symbols, then stops reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(app.addr).await.unwrap();
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        app.ws_url(""),
    )
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut slow = RawStomp::from_ws(ws);
    slow.send("CONNECT\naccept-version:1.2\n\n\0").await;
    let mut subscribe = String::new();
    for (i, s) in app.symbols(500).await.iter().enumerate() {
        subscribe.push_str(&format!(
            "SUBSCRIBE\nid:{i}\ndestination:/topic/quotes.{s}\nmax-rate:50\n\n\0"
        ));
    }
    slow.send(&subscribe).await;

    app.wait_metric("ticker_slow_consumer_closes_total", &[], |v| v >= 1.0)
        .await;
    let seen = witness.message_ids.len();
    witness.until_msg(|b| b["type"] == "update").await;
    assert!(witness.message_ids.len() > seen);
    // Reading again, the slow client finds what was buffered, then 4008.
    let (_, code) = slow.until_closed().await;
    assert_eq!(code, Some(4008));
    assert_eq!(
        app.metric(
            "ticker_connections_closed_total",
            &[("transport", "stomp"), ("code", "4008")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_symbol_whose_feed_is_lost_gets_a_stale_status_and_then_live_again() {
    let app = quiet_app().await;
    let (mut c, _) = StompJs::connect(&app, json!({})).await;
    c.subscribe("AAPL", json!({})).await;
    c.until_msg(|b| b["type"] == "snapshot" && b["sym"] == "AAPL")
        .await;
    // The feed behind AAPL is lost (PROTOCOL.md section 10): AAPL is stale.
    let (hub, rank) = (app.state.hub.clone(), app.state.feed_ranks[0]);
    hub.feed_down(rank, "down");
    let stale = c
        .until_msg(|b| b["type"] == "status" && b["sym"] == "AAPL")
        .await;
    assert_eq!(stale["body"]["state"], "stale", "{stale}");
    assert_eq!(stale["headers"]["destination"], "/topic/quotes.AAPL");
    let rest = app.rest_quote("AAPL").await;
    assert_eq!(rest["stale"], true);
    assert_eq!(c.g.state.get("AAPL"), Some(&rest));
    // The feed is back: AAPL is live, and the client's view agrees with the API.
    hub.feed_up(rank);
    let live = c
        .until_msg(|b| b["type"] == "status" && b["sym"] == "AAPL")
        .await;
    assert_eq!(live["body"]["state"], "live", "{live}");
    until_converged(&mut c, &app, "AAPL").await;
    assert_eq!(app.rest_quote("AAPL").await.get("stale"), None);
}
