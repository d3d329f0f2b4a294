//! Authentication and entitlements on every transport (PROTOCOL.md section 9),
//! with real clients: WebSocket ticker.v1, SSE, long-polling, the quote API,
//! tickets, STOMP (`@stomp/stompjs`) and Socket.IO (`socket.io-client`).

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::node::NodeBridge;
use common::{quiet_app_with, temp_file, Client, Event, TestApp};
use serde_json::{json, Value};

const SECRET: &str = "the-test-secret-that-is-long-enough!!";

/// A gateway with auth on: one API key for `desk-7` entitled to `AAPL` and
/// `MS*` with at most two connections, and HS256 tokens for audience `ticker`.
/// Returns the app and the key.
async fn app() -> (TestApp, String) {
    let (key, lines) = ticker_gateway::auth::keygen("desk-7", &["AAPL".into(), "MS*".into()]);
    let secret = temp_file("jwt-secret", &format!("{SECRET}\n"));
    let overlay = format!(
        "[auth]\nenabled = true\ntimeout = \"500ms\"\nleeway = \"0s\"\n\
         [auth.jwt]\nalgorithm = \"HS256\"\nsecret_file = {:?}\naudience = \"ticker\"\n\
         {lines}max_connections = 2\n",
        secret.to_str().unwrap()
    );
    (quiet_app_with(&overlay).await, key)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `desk-9` (entitled to `AAPL`), `exp` seconds from now.
fn jwt(claims: Value) -> String {
    let mut c =
        json!({"sub": "desk-9", "aud": "ticker", "syms": ["AAPL"], "exp": unix_now() + 300});
    for (k, v) in claims.as_object().unwrap() {
        c[k] = v.clone();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &c,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Sends a request and reads its JSON answer.
trait JsonBody {
    async fn json_body(self) -> Value;
}

impl JsonBody for reqwest::RequestBuilder {
    async fn json_body(self) -> Value {
        self.send().await.unwrap().json().await.unwrap()
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// Reads until the connection closes; the close code and the last error message.
async fn until_closed(c: &mut Client) -> (Option<u16>, Option<Value>) {
    let mut last_error = None;
    loop {
        match c.next_event().await {
            Event::Msgs(msgs) => {
                for m in msgs {
                    assert!(
                        m["type"] != "snapshot" && m["type"] != "update",
                        "a quote leaked: {m}"
                    );
                    if m["type"] == "error" {
                        last_error = Some(m);
                    }
                }
            }
            Event::Ping => {}
            Event::Closed(code) => return (code, last_error),
        }
    }
}

#[tokio::test]
async fn websocket_credentials_in_the_header_or_an_auth_op() {
    let (app, key) = app().await;
    // A key in the header: welcome names the principal; entitlements hold.
    let mut c =
        Client::connect_headers(&app.ws_url(""), &[], &[("authorization", &bearer(&key))]).await;
    let welcome = c.next_msg().await;
    assert_eq!(welcome["principal"], "desk-7");
    assert_eq!(welcome["limits"]["max_connections"], 2);
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","MSFT","NVDA"]}))
        .await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(c.next_msg().await);
    }
    let error = seen.iter().find(|m| m["type"] == "error").unwrap();
    assert_eq!(error["code"], "not_entitled");
    assert_eq!(error["symbols"], json!(["NVDA"]));
    let subscribed = seen.iter().find(|m| m["type"] == "subscribed").unwrap();
    assert_eq!(subscribed["symbols"], json!(["AAPL", "MSFT"]));
    assert!(seen.iter().all(|m| m["sym"] != "NVDA"));

    // No header: only auth and ping until a good auth op.
    let mut c = Client::connect(&app.ws_url("")).await;
    assert!(c.next_msg().await.get("principal").is_none());
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL"]}))
        .await;
    assert_eq!(c.next_msg().await["code"], "unauthorized");
    c.send(json!({"op":"auth","id":2,"token":jwt(json!({}))}))
        .await;
    let reply = c.next_msg().await;
    assert_eq!(
        (reply["type"].as_str(), reply["id"].as_i64()),
        (Some("authenticated"), Some(2))
    );
    assert_eq!(reply["principal"], "desk-9");
    c.send(json!({"op":"subscribe","id":3,"symbols":["AAPL"]}))
        .await;
    assert_eq!(c.next_msg().await["type"], "subscribed");
    assert_eq!(c.next_msg().await["type"], "snapshot");
}

#[tokio::test]
async fn websocket_refusals_close_with_4001_and_no_quote() {
    let (app, _) = app().await;
    let expired = jwt(json!({"exp": unix_now() - 60}));
    let wrong_audience = jwt(json!({"aud": "someone-else"}));
    let forged = {
        let t = jwt(json!({}));
        format!("{}x", &t[..t.len() - 1])
    };
    for (what, token, message) in [
        ("expired", expired.as_str(), "token expired"),
        (
            "wrong audience",
            wrong_audience.as_str(),
            "the token is for another audience",
        ),
        ("bad signature", forged.as_str(), "invalid credential"),
        ("unknown key", "tk_not-a-key", "invalid credential"),
    ] {
        // In the header: told, then 4001.
        let mut c =
            Client::connect_headers(&app.ws_url(""), &[], &[("authorization", &bearer(token))])
                .await;
        let (code, error) = until_closed(&mut c).await;
        assert_eq!(code, Some(4001), "{what}");
        assert_eq!(error.unwrap()["message"], message, "{what}");
        // In an auth op: the same.
        let mut c = Client::connect(&app.ws_url("")).await;
        c.send(json!({"op":"auth","token":token})).await;
        c.send(json!({"op":"subscribe","symbols":["AAPL"]})).await;
        let (code, _) = until_closed(&mut c).await;
        assert_eq!(code, Some(4001), "{what}");
    }
    // Nothing within auth.timeout: 4001.
    let mut c = Client::connect(&app.ws_url("")).await;
    let (code, error) = until_closed(&mut c).await;
    assert_eq!(code, Some(4001));
    assert_eq!(error.unwrap()["code"], "unauthorized");
    // ?token= is off by default.
    let mut c = Client::connect(&app.ws_url(&format!("?token={}", jwt(json!({}))))).await;
    assert_eq!(until_closed(&mut c).await.0, Some(4001));
    let failures = app
        .metric("ticker_auth_failures_total", &[("reason", "expired")])
        .await;
    assert!(failures >= 2.0, "{failures}");
}

#[tokio::test]
async fn a_token_that_expires_closes_with_4003_unless_refreshed() {
    let (app, _) = app().await;
    // Good for two more seconds; refreshed once, then left to expire.
    let mut c = Client::connect(&app.ws_url("")).await;
    c.next_msg().await;
    c.send(
        json!({"op":"auth","token":jwt(json!({"exp": unix_now() + 2, "syms": ["AAPL", "MSFT"]}))}),
    )
    .await;
    assert_eq!(c.next_msg().await["type"], "authenticated");
    c.send(json!({"op":"subscribe","symbols":["AAPL","MSFT"]}))
        .await;
    for _ in 0..3 {
        c.next_msg().await; // subscribed and two snapshots
    }
    c.send(json!({"op":"auth","id":7,"token":jwt(json!({"exp": unix_now() + 3}))}))
        .await;
    let gone = c.next_msg().await;
    assert_eq!(
        gone,
        json!({"type":"unsubscribed","symbols":["MSFT"],"reason":"not_entitled"})
    );
    assert_eq!(c.next_msg().await["type"], "authenticated");
    let (code, error) = until_closed(&mut c).await;
    assert_eq!(code, Some(4003));
    assert_eq!(error.unwrap()["message"], "token expired");
}

#[tokio::test]
async fn a_principal_over_its_connection_limit_is_refused() {
    let (app, key) = app().await;
    let header = bearer(&key);
    let mut first =
        Client::connect_headers(&app.ws_url(""), &[], &[("authorization", &header)]).await;
    first.next_msg().await;
    let mut second =
        Client::connect_headers(&app.ws_url(""), &[], &[("authorization", &header)]).await;
    second.next_msg().await;
    let mut third =
        Client::connect_headers(&app.ws_url(""), &[], &[("authorization", &header)]).await;
    assert_eq!(until_closed(&mut third).await.0, Some(1008));
    let create = || {
        app.http
            .post(app.url("/poll"))
            .header("authorization", &header)
            .body("{}")
            .send()
    };
    let r = create().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "too_many_connections"
    );
    // A place comes back when a connection ends.
    drop(first);
    common::poll("a place comes back", || async {
        match create().await.unwrap().status().as_u16() {
            200 => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

#[tokio::test]
async fn http_transports_want_a_credential_and_keep_to_entitlements() {
    let (app, key) = app().await;
    let h = bearer(&key);
    let get = |path: &str, auth: Option<&str>| {
        let mut r = app.http.get(app.url(path));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    for path in [
        "/api/v1/quotes/AAPL",
        "/api/v1/quotes?symbols=AAPL",
        "/sse?symbols=AAPL",
    ] {
        let r = get(path, None).await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["code"], "unauthorized");
        assert_eq!(
            get(path, Some("Bearer tk_wrong")).await.unwrap().status(),
            401,
            "{path}"
        );
    }
    assert_eq!(
        get("/api/v1/quotes/AAPL", Some(&h)).await.unwrap().status(),
        200
    );
    let r = get("/api/v1/quotes/NVDA", Some(&h)).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["symbols"], json!(["NVDA"]));
    let all: Value = get("/api/v1/quotes", Some(&h))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let syms: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["sym"].as_str().unwrap())
        .collect();
    assert!(
        !syms.is_empty() && syms.iter().all(|s| *s == "AAPL" || s.starts_with("MS")),
        "{syms:?}"
    );
    assert_eq!(
        get("/sse?symbols=NVDA", Some(&h)).await.unwrap().status(),
        403
    );

    // Long-polling: 401 without, 403 for what is not entitled, a session with.
    let post = |body: Value, auth: Option<&str>| {
        let mut r = app.http.post(app.url("/poll")).body(body.to_string());
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    assert_eq!(
        post(json!({"symbols":["AAPL"]}), None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        post(json!({"symbols":["NVDA"]}), Some(&h))
            .await
            .unwrap()
            .status(),
        403
    );
    let created: Value = post(json!({"symbols":["AAPL"]}), Some(&h))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = created["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["welcome", "subscribed", "snapshot"]);
    assert_eq!(created["messages"][0]["principal"], "desk-7");
}

#[tokio::test]
async fn a_ticket_opens_one_event_stream_once() {
    let (app, key) = app().await;
    let r = app
        .http
        .post(app.url("/api/v1/tickets"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a ticket needs a credential");
    let ticket: Value = app
        .http
        .post(app.url("/api/v1/tickets"))
        .header("authorization", bearer(&key))
        .json_body()
        .await;
    assert_eq!(ticket["expires_in"], 30);
    let t = ticket["ticket"].as_str().unwrap();
    let url = app.url(&format!("/sse?symbols=AAPL&ticket={t}"));
    let mut r = app.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    while !text.contains("event: snapshot") {
        let chunk = tokio::time::timeout(common::WAIT, r.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("\"principal\":\"desk-7\""), "{text}");
    let again = app.http.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 401, "a ticket works once");
    assert_eq!(
        again.json::<Value>().await.unwrap()["message"],
        "ticket unknown, used or expired"
    );
}

#[tokio::test]
async fn stompjs_connects_with_a_passcode_and_is_refused_without() {
    let (app, key) = app().await;
    let url = app.ws_url("");
    for (headers, good) in [
        (json!({"passcode": key}), true),
        (json!({"Authorization": bearer(&jwt(json!({})))}), true),
        (json!({"passcode": "tk_wrong"}), false),
        (json!({}), false),
    ] {
        let mut node = NodeBridge::start("stomp-bridge.mjs", "@stomp/stompjs");
        node.send(json!({"cmd":"connect","url":url,"options":{"connectHeaders": headers}}))
            .await;
        let ev = node.next().await;
        if good {
            assert_eq!(ev["ev"], "connected", "{headers}: {ev}");
            node.send(json!({"cmd":"subscribe","destination":"/topic/quotes.AAPL"}))
                .await;
            assert_eq!(node.next().await["ev"], "message");
            node.send(json!({"cmd":"subscribe","destination":"/topic/quotes.NVDA"}))
                .await;
            let ev = node.next().await;
            assert_eq!(ev["ev"], "error", "{ev}");
            assert!(
                ev["headers"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("not entitled"),
                "{ev}"
            );
        } else {
            assert_eq!(ev["ev"], "error", "{headers}: {ev}");
            assert!(
                ev["headers"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("nauthorized")
                    || ev["headers"]["message"] == "invalid credential",
                "{ev}"
            );
            let closed = node.next().await;
            assert_eq!(
                (closed["ev"].as_str(), closed["code"].as_u64()),
                (Some("closed"), Some(4001)),
                "{closed}"
            );
        }
    }
}

#[tokio::test]
async fn socketio_clients_authenticate_in_the_handshake() {
    let (app, key) = app().await;
    for transport in ["websocket", "polling"] {
        let mut node = NodeBridge::start("socketio-bridge.mjs", "socket.io-client");
        let options = json!({"transports": [transport], "auth": {"token": key}});
        node.send(json!({"cmd":"connect","url":app.url(""),"options":options}))
            .await;
        assert_eq!(node.next().await["ev"], "connect", "{transport}");
        node.send(
            json!({"cmd":"emit","event":"subscribe","args":{"symbols":["AAPL","NVDA"]},"ack":true}),
        )
        .await;
        let mut got = Vec::new();
        while got.len() < 3 {
            got.push(node.next().await);
        }
        let error = got.iter().find(|e| e["name"] == "error").unwrap();
        assert_eq!(error["data"]["code"], "not_entitled", "{got:?}");
        assert!(
            got.iter()
                .any(|e| e["ev"] == "ack" && e["data"]["symbols"] == json!(["AAPL"])),
            "{got:?}"
        );

        for auth in [json!({"token": "tk_wrong"}), json!({})] {
            let mut node = NodeBridge::start("socketio-bridge.mjs", "socket.io-client");
            let options = json!({"transports": [transport], "auth": auth});
            node.send(json!({"cmd":"connect","url":app.url(""),"options":options}))
                .await;
            let ev = node.next().await;
            assert_eq!(
                (ev["ev"].as_str(), ev["message"].as_str()),
                (Some("connect_error"), Some("unauthorized")),
                "{transport} {auth}: {ev}"
            );
        }
    }
}

#[tokio::test]
async fn each_transport_ends_its_own_way_when_a_token_expires() {
    let (app, _) = app().await;
    let short = |secs: u64| jwt(json!({"exp": unix_now() + secs, "syms": ["AAPL"]}));

    // SSE: an error event, then the stream ends.
    let mut sse = app
        .http
        .get(app.url("/sse?symbols=AAPL"))
        .header("authorization", bearer(&short(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);

    // Long-polling: refreshed once through POST /poll/{session}, then 401.
    let created: Value = app
        .http
        .post(app.url("/poll"))
        .header("authorization", bearer(&short(1)))
        .body(r#"{"symbols":["AAPL"]}"#)
        .json_body()
        .await;
    let session = created["session"].as_str().unwrap().to_owned();
    let refresh = json!({"op":"auth","id":1,"token":short(2)});
    let reply: Value = app
        .http
        .post(app.url(&format!("/poll/{session}")))
        .body(refresh.to_string())
        .json_body()
        .await;
    assert_eq!(reply["messages"][0]["type"], "authenticated", "{reply}");

    // STOMP: ERROR, then the close.
    let mut stomp = NodeBridge::start("stomp-bridge.mjs", "@stomp/stompjs");
    let headers = json!({"passcode": short(2)});
    stomp
        .send(json!({"cmd":"connect","url":app.ws_url(""),"options":{"connectHeaders": headers}}))
        .await;
    assert_eq!(stomp.next().await["ev"], "connected");

    // Socket.IO: an error event, then a disconnect.
    let mut sio = NodeBridge::start("socketio-bridge.mjs", "socket.io-client");
    let options = json!({"transports": ["websocket"], "auth": {"token": short(2)}});
    sio.send(json!({"cmd":"connect","url":app.url(""),"options":options}))
        .await;
    assert_eq!(sio.next().await["ev"], "connect");

    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(common::WAIT, sse.chunk())
        .await
        .expect("the stream ends in time")
        .unwrap()
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        text.contains("event: error\ndata: {\"type\":\"error\",\"code\":\"unauthorized\",\"message\":\"token expired\"}"),
        "{text}"
    );

    common::poll("the long-polling session ends with 401", || async {
        let r = app
            .http
            .get(app.url(&format!("/poll/{session}?wait=1")))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => Ok(()),
            other => Err(other),
        }
    })
    .await;

    let ev = stomp.next().await;
    assert_eq!(ev["ev"], "error", "{ev}");
    assert_eq!(ev["headers"]["message"], "token expired");
    let closed = stomp.next().await;
    assert_eq!(closed["code"], 4003, "{closed}");

    let mut events = Vec::new();
    loop {
        let ev = sio.next().await;
        if ev["ev"] == "disconnect" {
            break;
        }
        events.push(ev);
    }
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "error" && e["data"]["message"] == "token expired"),
        "{events:?}"
    );
}

#[tokio::test]
async fn socketio_refreshes_with_its_auth_event() {
    let (app, _) = app().await;
    let exp = unix_now() + 2;
    let token = jwt(json!({"exp": exp}));
    let connect = |token: &str| {
        let options = json!({"transports": ["websocket"], "auth": {"token": token}});
        json!({"cmd":"connect","url":app.url(""),"options":options})
    };
    // Two clients on tokens with the same exp; one refreshes.
    let mut refreshed = NodeBridge::start("socketio-bridge.mjs", "socket.io-client");
    let mut witness = NodeBridge::start("socketio-bridge.mjs", "socket.io-client");
    for node in [&mut refreshed, &mut witness] {
        node.send(connect(&token)).await;
        assert_eq!(node.next().await["ev"], "connect");
    }
    let fresh = jwt(json!({"exp": unix_now() + 300}));
    refreshed
        .send(json!({"cmd":"emit","event":"auth","args":{"token":fresh},"ack":true}))
        .await;
    let ack = refreshed.next().await;
    assert_eq!(
        (ack["ev"].as_str(), ack["data"]["type"].as_str()),
        (Some("ack"), Some("authenticated")),
        "{ack}"
    );
    assert_eq!(ack["data"]["principal"], "desk-9");
    assert!(ack["data"]["expires"].as_u64().unwrap() > exp);
    // The witness's token runs out: it is told and disconnected ...
    loop {
        let ev = witness.next().await;
        if ev["ev"] == "disconnect" {
            break;
        }
    }
    // ... while the refreshed client, past the same exp, is still served.
    refreshed
        .send(json!({"cmd":"emit","event":"subscribe","args":{"symbols":["AAPL"]},"ack":true}))
        .await;
    loop {
        let ev = refreshed.next().await;
        assert_ne!(ev["ev"], "disconnect", "{ev}");
        if ev["ev"] == "ack" {
            assert_eq!(ev["data"]["type"], "subscribed", "{ev}");
            break;
        }
    }
}

#[tokio::test]
async fn a_reload_narrows_entitlements_and_revokes_what_no_longer_verifies() {
    let (key, lines) = ticker_gateway::auth::keygen("desk-7", &["AAPL".into(), "MS*".into()]);
    let secret = temp_file("reload-secret", &format!("{SECRET}\n"));
    let settings = |lines: &str| {
        format!(
            "[auth]\nenabled = true\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret_file = {:?}\n\
             audience = \"ticker\"\n{lines}",
            secret.to_str().unwrap()
        )
    };
    let app = quiet_app_with(&settings(&lines)).await;
    let mut by_key =
        Client::connect_headers(&app.ws_url(""), &[], &[("authorization", &bearer(&key))]).await;
    by_key.subscribe(&["AAPL", "MSFT"], 10.0).await;
    let mut by_token = Client::connect_headers(
        &app.ws_url(""),
        &[],
        &[("authorization", &bearer(&jwt(json!({}))))],
    )
    .await;
    by_token.subscribe(&["AAPL"], 10.0).await;
    by_token.until_type("snapshot").await;

    // The key keeps only AAPL; the JWT secret changes.
    std::fs::write(&secret, "another-secret-that-is-long-enough!!\n").unwrap();
    let narrowed = lines.replace(r#"syms = ["AAPL", "MS*"]"#, r#"syms = ["AAPL"]"#);
    assert_ne!(narrowed, lines);
    let new = ticker_gateway::settings::Settings::load_with(None, &[&settings(&narrowed)]).unwrap();
    app.state
        .transport
        .auth
        .as_ref()
        .unwrap()
        .reload(&new.auth)
        .unwrap();

    let dropped = by_key.until_type("unsubscribed").await;
    assert_eq!(dropped["symbols"], json!(["MSFT"]));
    assert_eq!(dropped["reason"], "not_entitled");
    let (code, error) = until_closed(&mut by_token).await;
    assert_eq!(code, Some(4001));
    assert_eq!(error.unwrap()["message"], "the credential was revoked");
    // The key's session goes on with AAPL.
    by_key.send(json!({"op":"ping","id":9})).await;
    by_key.until_type("pong").await;
    assert_eq!(
        app.metric("ticker_auth_failures_total", &[("reason", "revoked")])
            .await,
        1.0
    );
}
