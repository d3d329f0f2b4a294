//! The cases of the public Engine.IO and Socket.IO protocol test suites
//! (`test-suite/` of github.com/socketio/engine.io-protocol and
//! socket.io-protocol), written again here with raw HTTP and WebSocket
//! clients: those suites are not published on npm, so CI cannot fetch them.
//! The gateway runs with the test-only `socketio.conformance` setting: Engine.IO
//! messages echoed at `/engine.io/`, Socket.IO events echoed at `/socket.io/`
//! with a `/custom` namespace. The Engine.IO cases run on both paths.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ENGINE: &str = "/engine.io/";
const SOCKET: &str = "/socket.io/";
const PATHS: [&str; 2] = [ENGINE, SOCKET];

/// The conformance echo, with a heartbeat slower than any case but the
/// heartbeat ones (a ping never lands in the middle of a case).
async fn echo_app() -> TestApp {
    echo_app_pinging("10s").await
}

async fn echo_app_pinging(interval: &str) -> TestApp {
    spawn_app(&format!(
        "[session]\nmax_frame_bytes = 1000000\n[socketio]\nconformance = true\n\
         ping_interval = \"{interval}\"\nping_timeout = \"1500ms\"\n"
    ))
    .await
}

fn url(app: &TestApp, path: &str, query: &str) -> String {
    format!("http://{}{path}?{query}", app.addr)
}

async fn answer(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

/// A polling session's URL and its open packet.
async fn open_polling(app: &TestApp, path: &str) -> (String, Value) {
    let (status, body) = answer(
        app.http
            .get(url(app, path, "EIO=4&transport=polling"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with('0'), "{body}");
    let open: Value = serde_json::from_str(&body[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap();
    (
        url(app, path, &format!("EIO=4&transport=polling&sid={sid}")),
        open,
    )
}

async fn get(app: &TestApp, url: &str) -> (u16, String) {
    answer(app.http.get(url).send().await.unwrap()).await
}

async fn post(app: &TestApp, url: &str, body: &'static str) -> (u16, String) {
    match app.http.post(url).body(body).send().await {
        Ok(r) => answer(r).await,
        // A server may also drop a request it refuses.
        Err(_) => (0, String::new()),
    }
}

fn ws_url(app: &TestApp, path: &str, query: &str) -> String {
    format!("ws://{}{path}?{query}", app.addr)
}

/// A WebSocket at `path`, its open packet read.
async fn open_ws(app: &TestApp, path: &str) -> (Ws, Value) {
    let url = ws_url(app, path, "EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = next_text(&mut ws).await;
    assert!(open.starts_with('0'), "{open}");
    (ws, serde_json::from_str(&open[1..]).unwrap())
}

async fn next(ws: &mut Ws) -> Message {
    loop {
        match ws.next().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(m)) => return m,
            other => panic!("the WebSocket ended: {other:?}"),
        }
    }
}

async fn next_text(ws: &mut Ws) -> String {
    match next(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// Reads until the server closes; true when it did (a close frame or the end).
async fn closed(ws: &mut Ws) -> bool {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
            Some(Ok(_)) => {}
        }
    }
}

fn assert_open(open: &Value, upgrades: Value, interval: u64) {
    let keys: Vec<&str> = open
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert!(open["sid"].is_string());
    assert_eq!(open["upgrades"], upgrades);
    assert_eq!(open["pingInterval"], interval);
    assert_eq!(open["pingTimeout"], 1500);
    assert_eq!(open["maxPayload"], 1_000_000);
}

#[tokio::test]
async fn handshakes_open_sessions_and_bad_queries_and_methods_are_400() {
    let app = echo_app().await;
    for path in PATHS {
        let (_, open) = open_polling(&app, path).await;
        assert_open(&open, json!(["websocket"]), 10_000);
        let (_ws, open) = open_ws(&app, path).await;
        assert_open(&open, json!([]), 10_000);
        for q in [
            "transport=polling",
            "EIO=abc&transport=polling",
            "EIO=4",
            "EIO=4&transport=abc",
        ] {
            assert_eq!(get(&app, &url(&app, path, q)).await.0, 400, "{path}?{q}");
        }
        let handshake = url(&app, path, "EIO=4&transport=polling");
        assert_eq!(post(&app, &handshake, "").await.0, 400);
        let put = app.http.put(&handshake).send().await.unwrap();
        assert_eq!(put.status(), 400);
        for q in [
            "transport=websocket",
            "EIO=abc&transport=websocket",
            "EIO=4",
            "EIO=4&transport=abc",
        ] {
            let refused = tokio_tungstenite::connect_async(ws_url(&app, path, q)).await;
            assert!(refused.is_err(), "{path}?{q}");
        }
    }
}

#[tokio::test]
async fn polling_payloads_of_text_and_binary_packets_come_back() {
    let app = echo_app().await;
    let (url, _) = open_polling(&app, ENGINE).await;
    for payload in [
        "4hello",
        "4test1\x1e4test2\x1e4test3",
        "4hello\x1ebAQIDBA==",
    ] {
        assert_eq!(post(&app, &url, payload).await, (200, "ok".into()));
        assert_eq!(get(&app, &url).await, (200, payload.into()));
    }
}

#[tokio::test]
async fn websocket_text_and_binary_packets_come_back() {
    let app = echo_app().await;
    let (mut ws, _) = open_ws(&app, ENGINE).await;
    send(&mut ws, "4hello").await;
    assert_eq!(next_text(&mut ws).await, "4hello");
    ws.send(Message::binary(vec![1, 2, 3, 4])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![1, 2, 3, 4]));
}

#[tokio::test]
async fn an_invalid_packet_ends_the_session() {
    let app = echo_app().await;
    for path in PATHS {
        let (url, _) = open_polling(&app, path).await;
        let (status, _) = post(&app, &url, "abc").await;
        assert!(status == 400 || status == 0, "{status}");
        assert_eq!(get(&app, &url).await.0, 400);
        let (mut ws, _) = open_ws(&app, path).await;
        send(&mut ws, "abc").await;
        assert!(closed(&mut ws).await);
    }
}

#[tokio::test]
async fn a_second_waiting_get_ends_the_session() {
    let app = echo_app().await;
    for path in PATHS {
        let (url, _) = open_polling(&app, path).await;
        let (a, b) = tokio::join!(get(&app, &url), get(&app, &url));
        let (waited, refused) = if a.0 == 200 { (a, b) } else { (b, a) };
        assert_eq!(waited, (200, "1".into()));
        assert_eq!(refused.0, 400);
        assert_eq!(get(&app, &url).await.0, 400);
    }
}

#[tokio::test]
async fn pings_are_answered_and_a_silent_client_is_closed() {
    let app = echo_app_pinging("300ms").await;
    for path in PATHS {
        let (url, open) = open_polling(&app, path).await;
        assert_eq!(open["pingInterval"], 300);
        for _ in 0..3 {
            assert_eq!(get(&app, &url).await, (200, "2".into()));
            assert_eq!(post(&app, &url, "3").await.0, 200);
        }
        let (mut ws, _) = open_ws(&app, path).await;
        for _ in 0..3 {
            assert_eq!(next_text(&mut ws).await, "2");
            send(&mut ws, "3").await;
        }
        // Silent ones: closed once the ping timeout is up (a GET does not
        // count as an answer; the one waiting then gets the close packet).
        let (silent, _) = open_polling(&app, path).await;
        loop {
            match get(&app, &silent).await {
                (400, _) => break,
                (200, body) => assert!(body == "2" || body == "1", "{body}"),
                other => panic!("{other:?}"),
            }
        }
        let (mut ws, _) = open_ws(&app, path).await;
        assert!(closed(&mut ws).await);
    }
}

#[tokio::test]
async fn a_client_close_ends_the_session() {
    let app = echo_app().await;
    for path in PATHS {
        // The GET must be waiting when the close comes: a GET that comes
        // after finds the session gone (400), and the pair is tried again.
        let mut noop = false;
        for _ in 0..20 {
            let (url, _) = open_polling(&app, path).await;
            let (waited, closing) = tokio::join!(get(&app, &url), post(&app, &url, "1"));
            assert_eq!(closing, (200, "ok".into()));
            assert_eq!(get(&app, &url).await.0, 400);
            match waited {
                (400, _) => continue,
                waited => assert_eq!(waited, (200, "6".into())),
            }
            noop = true;
            break;
        }
        assert!(noop, "no GET was waiting when its session closed");
        let (mut ws, _) = open_ws(&app, path).await;
        send(&mut ws, "1").await;
        assert!(closed(&mut ws).await);
    }
}

/// A WebSocket for polling session `url`'s sid.
async fn upgrade_ws(app: &TestApp, path: &str, url: &str) -> Ws {
    let query = url
        .split_once('?')
        .unwrap()
        .1
        .replace("polling", "websocket");
    let (ws, _) = tokio_tungstenite::connect_async(ws_url(app, path, &query))
        .await
        .unwrap();
    ws
}

#[tokio::test]
async fn polling_upgrades_to_websocket_and_the_old_sid_is_refused_after() {
    let app = echo_app().await;
    for path in PATHS {
        let (url, _) = open_polling(&app, path).await;
        let mut ws = upgrade_ws(&app, path, &url).await;
        send(&mut ws, "2probe").await;
        assert_eq!(next_text(&mut ws).await, "3probe");
        // The pending poll ends with a noop.
        assert_eq!(get(&app, &url).await, (200, "6".into()));
        send(&mut ws, "5").await;
        if path == ENGINE {
            send(&mut ws, "4hello").await;
            assert_eq!(next_text(&mut ws).await, "4hello");
        } else {
            send(&mut ws, "40").await;
            assert!(next_text(&mut ws).await.starts_with("40{\"sid\""));
            assert_eq!(next_text(&mut ws).await, "42[\"auth\",{}]");
        }
        // The session is on the WebSocket: HTTP and other WebSockets with its
        // sid are refused, and it goes on.
        assert_eq!(get(&app, &url).await.0, 400);
        let mut other = upgrade_ws(&app, path, &url).await;
        assert!(closed(&mut other).await);
        let (sent, back) = match path {
            ENGINE => ("4x", "4x"),
            _ => ("42[\"message\",1]", "42[\"message-back\",1]"),
        };
        send(&mut ws, sent).await;
        assert_eq!(next_text(&mut ws).await, back);
    }
}

/// A WebSocket connected to `/` at `/socket.io/` (the `auth` event read).
async fn socketio(app: &TestApp) -> Ws {
    let (mut ws, _) = open_ws(app, SOCKET).await;
    send(&mut ws, "40").await;
    assert!(next_text(&mut ws).await.starts_with("40"));
    assert_eq!(next_text(&mut ws).await, "42[\"auth\",{}]");
    ws
}

#[tokio::test]
async fn namespaces_connect_with_and_without_a_payload_and_unknown_ones_are_refused() {
    let app = echo_app().await;
    for (connect, prefix, auth) in [
        ("40", "40", "42[\"auth\",{}]"),
        (
            "40{\"token\":\"123\"}",
            "40",
            "42[\"auth\",{\"token\":\"123\"}]",
        ),
        ("40/custom,", "40/custom,", "42/custom,[\"auth\",{}]"),
        (
            "40/custom,{\"token\":\"abc\"}",
            "40/custom,",
            "42/custom,[\"auth\",{\"token\":\"abc\"}]",
        ),
    ] {
        let (mut ws, _) = open_ws(&app, SOCKET).await;
        send(&mut ws, connect).await;
        let connected = next_text(&mut ws).await;
        let handshake: Value =
            serde_json::from_str(connected.strip_prefix(prefix).unwrap()).unwrap();
        let keys: Vec<&String> = handshake.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["sid"], "{connected}");
        assert!(handshake["sid"].is_string());
        assert_eq!(next_text(&mut ws).await, auth);
    }
    let (mut ws, _) = open_ws(&app, SOCKET).await;
    send(&mut ws, "40/random").await;
    assert_eq!(
        next_text(&mut ws).await,
        "44/random,{\"message\":\"Invalid namespace\"}"
    );
}

#[tokio::test]
async fn a_bad_handshake_or_none_closes_the_connection() {
    let app = echo_app_pinging("300ms").await;
    let (mut ws, _) = open_ws(&app, SOCKET).await;
    send(&mut ws, "4abc").await;
    assert!(closed(&mut ws).await);
    let (mut ws, _) = open_ws(&app, SOCKET).await;
    assert!(closed(&mut ws).await);
}

#[tokio::test]
async fn disconnecting_a_namespace_keeps_the_connection() {
    let app = echo_app_pinging("300ms").await;
    let mut ws = socketio(&app).await;
    send(&mut ws, "41").await;
    assert_eq!(next_text(&mut ws).await, "2");
    let mut ws = socketio(&app).await;
    send(&mut ws, "40/custom").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        match next_text(&mut ws).await.as_str() {
            "2" => send(&mut ws, "3").await,
            p => got.push(p.to_owned()),
        }
    }
    assert!(got[0].starts_with("40/custom,"), "{got:?}");
    send(&mut ws, "41/custom").await;
    send(&mut ws, "42[\"message\",\"message to main namespace\"]").await;
    loop {
        match next_text(&mut ws).await.as_str() {
            "2" => send(&mut ws, "3").await,
            p => {
                assert_eq!(p, "42[\"message-back\",\"message to main namespace\"]");
                break;
            }
        }
    }
}

#[tokio::test]
async fn events_and_acks_come_back_with_their_binary_attachments() {
    let app = echo_app().await;
    let mut ws = socketio(&app).await;
    send(&mut ws, "42[\"message\",1,\"2\",{\"3\":[true]}]").await;
    assert_eq!(
        next_text(&mut ws).await,
        "42[\"message-back\",1,\"2\",{\"3\":[true]}]"
    );
    send(
        &mut ws,
        "42456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]",
    )
    .await;
    assert_eq!(next_text(&mut ws).await, "43456[1,\"2\",{\"3\":[false]}]");
    let placeholders = "{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}";
    for (sent, back) in [
        (
            format!("452-[\"message\",{placeholders}]"),
            format!("452-[\"message-back\",{placeholders}]"),
        ),
        (
            format!("452-789[\"message-with-ack\",{placeholders}]"),
            format!("462-789[{placeholders}]"),
        ),
    ] {
        send(&mut ws, &sent).await;
        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        ws.send(Message::binary(vec![4, 5, 6])).await.unwrap();
        assert_eq!(next_text(&mut ws).await, back);
        assert_eq!(next(&mut ws).await, Message::binary(vec![1, 2, 3]));
        assert_eq!(next(&mut ws).await, Message::binary(vec![4, 5, 6]));
    }
}

#[tokio::test]
async fn malformed_socketio_packets_close_the_connection() {
    let app = echo_app().await;
    for bad in [
        "4abc",
        "42{}",
        "42abc[\"message-with-ack\",1,\"2\",{\"3\":[false]}]",
    ] {
        let mut ws = socketio(&app).await;
        send(&mut ws, bad).await;
        assert!(closed(&mut ws).await, "{bad}");
    }
}
