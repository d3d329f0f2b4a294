//! Socket.IO (PROTOCOL.md section 7) with the real `socket.io-client` 4 in
//! Node, over WebSocket: acks, snapshot then deltas under the same guarantees
//! checker as every transport, errors, unsubscribe silence, namespaces,
//! binary packets, Engine.IO's heartbeat. Needs `node` and
//! `npm ci --prefix tests/browser`.

mod common;

use std::time::Duration;

use common::node::NodeBridge;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A socket.io-client whose every event goes through [`Guarantees`].
struct SioClient {
    node: NodeBridge,
    g: Guarantees,
}

impl SioClient {
    /// Connected over WebSocket only.
    async fn connect(app: &TestApp) -> SioClient {
        SioClient::connect_with(app, json!({"transports": ["websocket"]}), "websocket").await
    }

    /// Connected with `options`, on `transport`.
    async fn connect_with(app: &TestApp, options: Value, transport: &str) -> SioClient {
        let mut c = SioClient::start(app, options).await;
        let ev = c.next().await;
        assert_eq!(ev["ev"], "connect", "{ev}");
        assert_eq!(ev["transport"], transport);
        c
    }

    /// Connecting with `options`; the first event is not read yet.
    async fn start(app: &TestApp, options: Value) -> SioClient {
        SioClient::start_at(app.addr, json!({"options": options})).await
    }

    /// Connecting to `addr` (the app or a proxy in front of it), with the
    /// bridge's `connect` command fields in `how`.
    async fn start_at(addr: std::net::SocketAddr, mut how: Value) -> SioClient {
        let mut node = NodeBridge::start("socketio-bridge.mjs", "socket.io-client");
        how["cmd"] = json!("connect");
        how["url"] = json!(format!("http://{addr}"));
        node.send(how).await;
        SioClient {
            node,
            g: Guarantees::default(),
        }
    }

    async fn emit(&mut self, event: &str, args: Value, ack: bool) {
        self.node
            .send(json!({"cmd": "emit", "event": event, "args": args, "ack": ack}))
            .await;
    }

    async fn next(&mut self) -> Value {
        let ev = self.node.next().await;
        if ev["ev"] == "event" {
            let (name, data) = (&ev["name"], &ev["data"]);
            assert!(data.is_object(), "one message object per event: {ev}");
            assert_eq!(data["type"], *name, "{ev}");
            self.g.check(data);
        }
        if ev["ev"] == "ack" {
            self.g.check(&ev["data"]);
        }
        ev
    }

    async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let ev = self.next().await;
            if pred(&ev) {
                return ev;
            }
            assert!(ev["ev"] != "disconnect", "disconnected while waiting: {ev}");
        }
    }

    async fn until_event(&mut self, name: &str, sym: &str) -> Value {
        self.until(|e| e["ev"] == "event" && e["name"] == name && e["data"]["sym"] == sym)
            .await
    }

    async fn ack(&mut self) -> Value {
        self.until(|e| e["ev"] == "ack").await["data"].clone()
    }
}

#[tokio::test]
async fn websocket_clients_get_acks_snapshots_and_deltas_that_converge() {
    let app = quiet_app().await;
    let c = SioClient::connect(&app).await;
    acks_snapshots_deltas_and_a_clean_end(&app, c).await;
}

#[tokio::test]
async fn polling_only_clients_get_the_same() {
    let app = quiet_app().await;
    let c = SioClient::connect_with(&app, json!({"transports": ["polling"]}), "polling").await;
    acks_snapshots_deltas_and_a_clean_end(&app, c).await;
}

#[tokio::test]
async fn default_clients_start_on_polling_and_upgrade_to_websocket() {
    let app = quiet_app().await;
    let mut c = SioClient::start(&app, json!({})).await;
    // The upgrade may finish before the namespace is connected, or after.
    let (mut connected, mut upgraded) = (None, None);
    while connected.is_none() || upgraded.is_none() {
        let ev = c.next().await;
        match ev["ev"].as_str().unwrap() {
            "connect" => connected = Some(ev),
            "upgrade" => upgraded = Some(ev),
            _ => panic!("{ev}"),
        }
    }
    let (connected, upgraded) = (connected.unwrap(), upgraded.unwrap());
    assert_eq!(upgraded["transport"], "websocket");
    // Once a call has gone over the WebSocket (after the client's upgrade
    // packet), the polling session's id answers 400.
    c.emit("ping", json!({}), true).await;
    assert_eq!(c.ack().await["type"], "pong");
    let sid = connected["sid"].as_str().unwrap();
    let old = app
        .http
        .get(app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 400);
    acks_snapshots_deltas_and_a_clean_end(&app, c).await;
}

async fn acks_snapshots_deltas_and_a_clean_end(app: &TestApp, mut c: SioClient) {
    let syms = ["AAPL", "MSFT"];
    c.emit("subscribe", json!({"symbols": syms, "max_rate": 20}), true)
        .await;
    let ack = c.ack().await;
    assert_eq!(ack["type"], "subscribed");
    assert_eq!(ack["symbols"], json!(syms));
    assert_eq!(ack["max_rate"], 20);
    for s in syms {
        c.until_event("snapshot", s).await;
    }
    for s in syms {
        publish_burst(app, s, 10, Duration::from_millis(5)).await;
    }
    for s in syms {
        let rest = app.rest_quote(s).await;
        while c.g.state.get(s) != Some(&rest) {
            c.until_event("update", s).await;
        }
    }
    assert_eq!(
        app.metric("ticker_sessions_active", &[("transport", "socketio")])
            .await,
        1.0
    );
    c.node.send(json!({"cmd": "disconnect"})).await;
    nothing_left(app).await;
}

#[tokio::test]
async fn refusals_are_acked_or_sent_as_error_events() {
    let app = quiet_app().await;
    let mut c = SioClient::connect(&app).await;
    // Nothing could be done: the ack is the error.
    c.emit("subscribe", json!({"symbols": ["ZZZZ"]}), true)
        .await;
    let ack = c.ack().await;
    assert_eq!(ack["type"], "error");
    assert_eq!(ack["code"], "unknown_symbol");
    // Part done: the ack says what was done, the rest is an error event.
    c.emit("subscribe", json!({"symbols": ["AAPL", "ZZZZ"]}), true)
        .await;
    let mut seen = (None, None);
    while seen.0.is_none() || seen.1.is_none() {
        let ev = c.next().await;
        match ev["ev"].as_str().unwrap() {
            "ack" => seen.0 = Some(ev["data"].clone()),
            "event" if ev["name"] == "error" => seen.1 = Some(ev["data"].clone()),
            _ => {}
        }
    }
    assert_eq!(seen.0.unwrap()["symbols"], json!(["AAPL"]));
    assert_eq!(seen.1.unwrap()["symbols"], json!(["ZZZZ"]));
    // Without an ack, errors are events; unknown events are bad requests.
    c.emit("dance", json!({}), false).await;
    let e = c
        .until(|e| e["ev"] == "event" && e["name"] == "error")
        .await;
    assert_eq!(e["data"]["code"], "bad_request");
    // A binary payload is read and refused, and the connection goes on.
    c.node
        .send(json!({"cmd": "emit_binary", "event": "subscribe"}))
        .await;
    let e = c
        .until(|e| e["ev"] == "event" && e["name"] == "error")
        .await;
    assert!(
        e["data"]["message"].as_str().unwrap().contains("binary"),
        "{e}"
    );
    c.emit("subscribe", json!({"symbols": ["MSFT"]}), true)
        .await;
    assert_eq!(c.ack().await["type"], "subscribed");
}

#[tokio::test]
async fn nothing_arrives_after_unsubscribe() {
    let app = quiet_app().await;
    let mut c = SioClient::connect(&app).await;
    c.emit("subscribe", json!({"symbols": ["AAPL", "MSFT"]}), true)
        .await;
    c.until_event("snapshot", "AAPL").await;
    c.until_event("snapshot", "MSFT").await;
    c.emit("unsubscribe", json!({"symbols": ["AAPL"]}), true)
        .await;
    let ack = c.ack().await;
    assert_eq!(ack["type"], "unsubscribed");
    // The checker fails the test on any AAPL message from here on.
    for s in ["AAPL", "MSFT"] {
        publish_burst(&app, s, 3, Duration::from_millis(1)).await;
    }
    let rest = app.rest_quote("MSFT").await;
    while c.g.state.get("MSFT") != Some(&rest) {
        c.until_event("update", "MSFT").await;
    }
}

#[tokio::test]
async fn other_namespaces_get_connect_error() {
    let app = quiet_app().await;
    let mut node = NodeBridge::start("socketio-bridge.mjs", "socket.io-client");
    let url = format!("http://{}/admin", app.addr);
    node.send(json!({"cmd": "connect", "url": url, "options": {"transports": ["websocket"]}}))
        .await;
    let ev = node.next().await;
    assert_eq!(ev["ev"], "connect_error", "{ev}");
    assert_eq!(ev["message"], "Invalid namespace");
}

#[tokio::test]
async fn pings_keep_a_client_and_a_silent_one_is_dropped() {
    let app =
        quiet_app_with("[socketio]\nping_interval = \"100ms\"\nping_timeout = \"200ms\"\n").await;
    let mut c = SioClient::connect(&app).await;
    // A raw client that connects to the namespace, then never answers a ping.
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let (mut raw, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = raw.next().await.unwrap().unwrap();
    let open: Value = serde_json::from_str(&open.to_text().unwrap()[1..]).unwrap();
    assert_eq!(open["pingInterval"], 100);
    assert_eq!(open["pingTimeout"], 200);
    assert_eq!(open["upgrades"], json!([]));
    raw.send(Message::text("40")).await.unwrap();
    let code = close_code(&mut raw).await;
    assert_eq!(code, Some(4000));
    // socket.io-client answered every ping meanwhile and is still there.
    c.emit("subscribe", json!({"symbols": ["AAPL"]}), true)
        .await;
    assert_eq!(c.ack().await["type"], "subscribed");
}

#[tokio::test]
async fn polling_requests_are_checked_and_a_second_get_ends_the_session() {
    let app = quiet_app().await;
    let base = app.url("/socket.io/");
    let get = |q: &str| app.http.get(format!("{base}?{q}")).send();
    assert_eq!(get("EIO=3&transport=polling").await.unwrap().status(), 400);
    assert_eq!(
        get("EIO=4&transport=carrier-pigeon")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        get("EIO=4&transport=polling&sid=s-nope")
            .await
            .unwrap()
            .status(),
        400
    );

    let open = get("EIO=4&transport=polling")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    let sid = open["sid"].as_str().unwrap().to_owned();
    assert_eq!(open["maxPayload"], 65536);
    let q = format!("EIO=4&transport=polling&sid={sid}");
    let post = app
        .http
        .post(format!("{base}?{q}"))
        .body("40")
        .send()
        .await
        .unwrap();
    assert_eq!(post.text().await.unwrap(), "ok");
    let connected = get(&q).await.unwrap().text().await.unwrap();
    assert!(connected.starts_with("40{\"sid\""), "{connected}");
    // A body over maxPayload is refused before it is read whole.
    let big = app
        .http
        .post(format!("{base}?{q}"))
        .body("4".repeat(70_000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);

    // One GET waits; a second one is refused and ends the session, whose
    // waiting GET gets the close packet.
    let (a, b) = tokio::join!(get(&q), get(&q));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (waited, refused) = if a.status() == 200 { (a, b) } else { (b, a) };
    assert_eq!(refused.status(), 400);
    assert_eq!(waited.status(), 200);
    assert!(waited.text().await.unwrap().ends_with('1'));
    app.wait_metric(
        "ticker_sessions_active",
        &[("transport", "socketio")],
        |v| v == 0.0,
    )
    .await;
    assert_eq!(get(&q).await.unwrap().status(), 400);
}

/// A polling session made by hand: its sid, connected to the namespace and
/// subscribed to AAPL (the snapshot is taken).
async fn raw_polling_session(app: &TestApp) -> (String, String) {
    let base = app.url("/socket.io/?EIO=4&transport=polling");
    let open = app
        .http
        .get(&base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["upgrades"], json!(["websocket"]));
    let sid = open["sid"].as_str().unwrap().to_owned();
    let url = format!("{base}&sid={sid}");
    let post = |body: &'static str| app.http.post(&url).body(body).send();
    post("40").await.unwrap();
    post("42[\"subscribe\",{\"symbols\":[\"AAPL\"]}]")
        .await
        .unwrap();
    poll_until(app, &url, "snapshot").await;
    (sid, url)
}

/// Polls `url` until a response holds `text`; the session must not end.
async fn poll_until(app: &TestApp, url: &str, text: &str) {
    loop {
        let got = app.http.get(url).send().await.unwrap();
        assert_eq!(got.status(), 200);
        let got = got.text().await.unwrap();
        if got.contains(text) {
            return;
        }
        assert!(!got.ends_with('1'), "the session ended: {got}");
    }
}

/// Waits until no Socket.IO session and no subscription is left.
async fn nothing_left(app: &TestApp) {
    let socketio = [("transport", "socketio")];
    app.wait_metric("ticker_sessions_active", &socketio, |v| v == 0.0)
        .await;
    app.wait_metric("ticker_subscriptions_active", &[], |v| v == 0.0)
        .await;
}

/// Reads until the server closes; its close code.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => return None,
        }
    }
}

/// A WebSocket to move polling session `sid` to.
async fn upgrade_socket(app: &TestApp, sid: &str) -> Ws {
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        app.addr
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

#[tokio::test]
async fn a_client_whose_websocket_fails_stays_on_polling() {
    let app = quiet_app().await;
    let (sid, url) = raw_polling_session(&app).await;
    let mut ws = upgrade_socket(&app, &sid).await;
    ws.send(Message::text("2 not a probe")).await.unwrap();
    let closed = close_code(&mut ws).await;
    assert_eq!(closed, Some(1002));
    // Polling goes on: a change arrives on the next GET.
    let before = app.rest_quote("AAPL").await;
    app.publish(json!({"sym": "AAPL", "t": before["t"].as_i64().unwrap() + 1, "bs": 777}));
    poll_until(&app, &url, "\"bs\":777").await;
}

#[tokio::test]
async fn a_client_that_vanishes_mid_upgrade_leaves_nothing_behind() {
    let app =
        quiet_app_with("[socketio]\nping_interval = \"100ms\"\nping_timeout = \"200ms\"\n").await;
    let (sid, _url) = raw_polling_session(&app).await;
    let mut ws = upgrade_socket(&app, &sid).await;
    ws.send(Message::text("2probe")).await.unwrap();
    let probe = ws.next().await.unwrap().unwrap();
    assert_eq!(probe.to_text().unwrap(), "3probe");
    assert_eq!(app.metric("ticker_subscriptions_active", &[]).await, 1.0);
    // Gone without the upgrade packet, without polling again.
    drop(ws);
    nothing_left(&app).await;
    app.wait_metric("ticker_ws_sockets_open", &[], |v| v == 0.0)
        .await;
}

#[tokio::test]
async fn a_socketio_client_whose_websocket_is_refused_stays_on_polling_and_keeps_receiving() {
    let app = quiet_app().await;
    let proxy = common::proxy::start(app.addr, common::proxy::Upgrades::Refused).await;
    // The default transports: polling first, then the upgrade, which fails.
    let mut c = SioClient::start_at(proxy, json!({})).await;
    // The namespace's connect and the failed probe, in either order.
    let (mut connected, mut refused) = (false, false);
    while !(connected && refused) {
        let ev = c.next().await;
        match ev["ev"].as_str() {
            Some("connect") => {
                assert_eq!(ev["transport"], "polling");
                connected = true;
            }
            Some("upgrade_error") => refused = true,
            _ => panic!("{ev}"),
        }
    }
    c.emit("subscribe", json!({"symbols": ["AAPL"]}), true)
        .await;
    assert_eq!(c.ack().await["type"], "subscribed");
    c.until_event("snapshot", "AAPL").await;
    for bid in [501, 502] {
        let before = app.rest_quote("AAPL").await;
        app.publish(json!({"sym": "AAPL", "t": before["t"].as_i64().unwrap() + 1, "bs": bid}));
        let update = c.until_event("update", "AAPL").await;
        assert_eq!(update["data"]["bs"], bid, "{update}");
    }
    assert_eq!(c.g.state.get("AAPL"), Some(&app.rest_quote("AAPL").await));
    c.node.send(json!({"cmd": "disconnect"})).await;
    nothing_left(&app).await;
}

#[tokio::test]
async fn a_socketio_client_that_vanishes_mid_upgrade_leaves_nothing_behind() {
    let app =
        quiet_app_with("[socketio]\nping_interval = \"100ms\"\nping_timeout = \"200ms\"\n").await;
    let gate = common::proxy::Gate::default();
    let proxy = common::proxy::start(app.addr, common::proxy::Upgrades::Held(gate.clone())).await;
    let mut c = SioClient::start_at(proxy, json!({"vanish": "upgrading"})).await;
    let ev = c.until(|e| e["ev"] == "connect").await;
    assert_eq!(ev["transport"], "polling");
    c.emit("subscribe", json!({"symbols": ["AAPL"]}), true)
        .await;
    c.until_event("snapshot", "AAPL").await;
    assert_eq!(app.metric("ticker_subscriptions_active", &[]).await, 1.0);
    // The probe goes through; the client dies before its upgrade packet.
    gate.open();
    c.until(|e| e["ev"] == "vanishing").await;
    nothing_left(&app).await;
    app.wait_metric("ticker_ws_sockets_open", &[], |v| v == 0.0)
        .await;
}

#[tokio::test]
async fn a_reconnected_client_gets_a_fresh_snapshot() {
    let app = quiet_app().await;
    for transport in ["websocket", "polling"] {
        let options = json!({
            "transports": [transport],
            "reconnection": true,
            "reconnectionDelay": 10,
            "reconnectionDelayMax": 50,
        });
        let mut c = SioClient::start(&app, options).await;
        let first = c.until(|e| e["ev"] == "connect").await;
        c.emit("subscribe", json!({"symbols": ["AAPL"]}), true)
            .await;
        c.until_event("snapshot", "AAPL").await;
        // The connection is lost; meanwhile AAPL changes.
        c.node.send(json!({"cmd": "drop"})).await;
        loop {
            let ev = c.next().await;
            if ev["ev"] == "disconnect" {
                break;
            }
        }
        let before = app.rest_quote("AAPL").await;
        let bid = before["bs"].as_i64().unwrap_or(0) + 1;
        app.publish(json!({"sym": "AAPL", "t": before["t"].as_i64().unwrap() + 1, "bs": bid}));
        let again = c.until(|e| e["ev"] == "connect").await;
        assert_eq!(again["transport"], transport);
        assert_ne!(again["sid"], first["sid"], "a new session");
        // A new connection: its own checker, and a snapshot of the latest state.
        c.g = Guarantees::default();
        c.emit("subscribe", json!({"symbols": ["AAPL"]}), true)
            .await;
        assert_eq!(c.ack().await["type"], "subscribed");
        let snapshot = c.until_event("snapshot", "AAPL").await;
        assert_eq!(snapshot["data"]["bs"], bid);
        assert_eq!(c.g.state.get("AAPL"), Some(&app.rest_quote("AAPL").await));
        c.node.send(json!({"cmd": "disconnect"})).await;
        nothing_left(&app).await;
    }
}

/// A POST whose body is still on its way (one byte of two sent).
async fn unfinished_post(app: &TestApp, sid: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: gateway\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n3"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Sends the POST's last byte; its status line.
async fn finish_post(mut s: tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"6").await.unwrap();
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") {
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_second_post_while_one_is_under_way_ends_the_session() {
    let app = quiet_app().await;
    let (sid, url) = raw_polling_session(&app).await;
    let a = unfinished_post(&app, &sid).await;
    let b = unfinished_post(&app, &sid).await;
    nothing_left(&app).await;
    for post in [a, b] {
        let status = finish_post(post).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    }
    assert_eq!(app.http.get(&url).send().await.unwrap().status(), 400);
}

#[tokio::test]
async fn bad_input_gets_its_answer_and_other_clients_go_on() {
    let app = quiet_app().await;
    let mut c = SioClient::connect(&app).await;
    c.emit("subscribe", json!({"symbols": ["AAPL"]}), true)
        .await;
    c.until_event("snapshot", "AAPL").await;

    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let connected = || async {
        let (mut raw, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        raw.next().await.unwrap().unwrap(); // the open packet
        raw.send(Message::text("40")).await.unwrap();
        let ok = raw.next().await.unwrap().unwrap();
        assert!(ok.to_text().unwrap().starts_with("40{"), "{ok}");
        raw
    };
    // A well-formed event with the wrong argument: an error event, and on.
    let mut raw = connected().await;
    raw.send(Message::text("42[\"subscribe\",5]"))
        .await
        .unwrap();
    let e = raw.next().await.unwrap().unwrap();
    assert!(e.to_text().unwrap().starts_with("42[\"error\","), "{e}");
    assert!(e.to_text().unwrap().contains("bad_request"), "{e}");
    // Malformed packets and unknown packet types end the connection (1002),
    // a frame over maxPayload too (1009).
    for bad in ["49", "7", "42{}", "42[1]", "43[", "4abc"] {
        let mut raw = connected().await;
        raw.send(Message::text(bad)).await.unwrap();
        assert_eq!(close_code(&mut raw).await, Some(1002), "{bad}");
    }
    let mut raw = connected().await;
    raw.send(Message::text(format!("42[\"{}\"]", "x".repeat(70_000))))
        .await
        .unwrap();
    assert_eq!(close_code(&mut raw).await, Some(1009));
    // On polling: the POST is refused and the session ends.
    let (_, poll_url) = raw_polling_session(&app).await;
    let post = app.http.post(&poll_url).body("abc").send().await.unwrap();
    assert_eq!(post.status(), 400);
    assert_eq!(app.http.get(&poll_url).send().await.unwrap().status(), 400);

    // The first client saw none of it.
    let before = app.rest_quote("AAPL").await;
    app.publish(json!({"sym": "AAPL", "t": before["t"].as_i64().unwrap() + 1, "bs": 31337}));
    let rest = app.rest_quote("AAPL").await;
    while c.g.state.get("AAPL") != Some(&rest) {
        c.until_event("update", "AAPL").await;
    }
}
