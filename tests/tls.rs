//! TLS (`[tls]`): with a certificate from a CA made at test time, every
//! transport is served over https and wss to clients that verify it (rustls
//! clients here, socket.io-client in Node), plain HTTP to the port gets a JSON
//! 400, a client that does not trust the certificate gets nothing, and a slow
//! consumer over wss is closed with 4008 and reset when it never reads.

mod common;

use common::node::NodeBridge;
use common::tls::{wss_client, TestCa};
use common::{busy_market, slow_client, spawn_tls_app, Client, TestApp, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A wss client of `app` that trusts `ca` only.
async fn wss(app: &TestApp, ca: &TestCa, protocols: &[&str]) -> Client {
    wss_client(&app.ws_url(""), ca, protocols, &[])
        .await
        .expect("a wss connection verified against the test CA")
}

/// A gateway serving https/wss whose replay feed has played the sample.
async fn tls_app(ca: &TestCa, extra: &str) -> TestApp {
    let app = spawn_tls_app(&format!("{}\n{extra}", common::replay_instant()), ca).await;
    app.wait_feeds_done().await;
    app
}

#[tokio::test]
async fn rest_sse_long_polling_and_websocket_over_tls() {
    let ca = TestCa::new("ticker-test-ca");
    let app = tls_app(&ca, "").await;
    let sym = app.symbols(1).await.remove(0);
    let quote = app.rest_quote(&sym).await;

    // WebSocket ticker.v1, JSON and MessagePack.
    for protocols in [["ticker.v1.json"], ["ticker.v1.msgpack"]] {
        let mut ws = wss(&app, &ca, &protocols).await;
        ws.subscribe(&[&sym], 10.0).await;
        let snap = ws.until_type("snapshot").await;
        assert_eq!(snap["seq"], quote["seq"], "{protocols:?}");
    }

    // Server-Sent Events: the stream starts with welcome, subscribed, snapshot.
    let mut sse = app
        .http
        .get(app.url(&format!("/sse?symbols={sym}")))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut text = String::new();
    while !text.contains("event: snapshot") {
        let chunk = tokio::time::timeout(WAIT, sse.chunk())
            .await
            .expect("SSE data in time")
            .unwrap()
            .expect("the stream goes on");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.starts_with("event: welcome"), "{text}");

    // Long-polling: a session, then its snapshot.
    let created: Value = app
        .http
        .post(app.url("/poll"))
        .json(&json!({"symbols":[sym]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = created["session"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let mut msgs: Vec<Value> = created["messages"].as_array().cloned().unwrap_or_default();
    // A few polls at most (each waits up to 1 s): a missing snapshot fails.
    for _ in 0..5 {
        if msgs.iter().any(|m| m["type"] == "snapshot") {
            break;
        }
        let (status, got) = app.get_json(&format!("/poll/{session}?wait=1000")).await;
        assert_eq!(status, 200, "{got}");
        msgs.extend(got["messages"].as_array().cloned().unwrap_or_default());
    }
    assert!(msgs.iter().any(|m| m["type"] == "snapshot"), "{msgs:?}");
}

#[tokio::test]
async fn socketio_polls_then_upgrades_over_tls() {
    let ca = TestCa::new("ticker-test-ca");
    let app = tls_app(&ca, "").await;
    let sym = app.symbols(1).await.remove(0);
    let mut client = NodeBridge::start("socketio-bridge.mjs", "socket.io-client");
    let ca_pem = String::from_utf8(ca.ca_pem.clone()).unwrap();
    client
        .send(json!({"cmd":"connect","url":app.url(""),"options":{"ca":ca_pem}}))
        .await;
    let mut upgraded = false;
    let mut connected = false;
    while !(upgraded && connected) {
        let ev = client.next().await;
        match ev["ev"].as_str() {
            Some("connect") => connected = true,
            Some("upgrade") => {
                assert_eq!(ev["transport"], "websocket");
                upgraded = true;
            }
            Some("connect_error") | Some("fatal") => panic!("{ev}"),
            _ => {}
        }
    }
    // After the move to the WebSocket (its TLS state with it) the session serves.
    client
        .send(json!({"cmd":"emit","event":"subscribe","args":{"symbols":[sym]},"ack":true}))
        .await;
    loop {
        let ev = client.next().await;
        if ev["ev"] == "event" && ev["name"] == "snapshot" {
            assert_eq!(ev["data"]["sym"], sym.as_str());
            break;
        }
        assert_ne!(ev["ev"], "disconnect", "{ev}");
    }
}

#[tokio::test]
async fn plain_http_gets_a_json_400_and_an_untrusted_certificate_is_refused() {
    let ca = TestCa::new("ticker-test-ca");
    let app = tls_app(&ca, "").await;

    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["code"], "bad_request", "{body}");

    // A client that trusts another CA does not get through the handshake.
    let other = TestCa::new("another-ca");
    let tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let refused = other.connect(tcp).await;
    assert!(
        refused.is_err(),
        "a certificate from an untrusted CA was accepted"
    );
    // The gateway goes on serving verified clients.
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_slow_consumer_over_wss_gets_4008() {
    let ca = TestCa::new("ticker-test-ca");
    let app = busy_market(Some(&ca)).await;
    let mut slow = slow_client(&app, Some(&ca)).await;
    app.wait_metric("ticker_slow_consumer_closes_total", &[], |v| v >= 1.0)
        .await;
    // Reading again, it finds what was buffered, then 4008.
    assert_eq!(slow.until_closed().await, Some(4008));
}

#[tokio::test]
async fn a_slow_consumer_over_wss_that_never_reads_again_is_reset() {
    let ca = TestCa::new("ticker-test-ca");
    let app = busy_market(Some(&ca)).await;
    let mut slow = slow_client(&app, Some(&ca)).await;
    // The send queue counts the kernel's bytes under TLS too: the reset comes.
    app.wait_metric("ticker_slow_consumer_resets_total", &[], |v| v >= 1.0)
        .await;
    app.wait_metric("ticker_ws_sockets_open", &[], |v| v == 0.0)
        .await;
    // Reading now ends in an error, not in the close frame that never left.
    assert_eq!(slow.until_closed().await, None);
}
