//! WebSocket protocol: welcome, subscribe/unsubscribe/list/ping replies, snapshot
//! first, deltas with only changed fields, JSON and MessagePack negotiation.

mod common;

use common::*;
use serde_json::{json, Value};

fn keys(m: &Value) -> Vec<String> {
    let mut k: Vec<String> = m.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[tokio::test]
async fn welcome_announces_session_protocol_and_limits() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    let w = c.until_type("welcome").await;
    assert!(w["session"].as_str().unwrap().starts_with("s-"));
    assert_eq!(w["protocol"], "ticker.v1");
    assert_eq!(w["format"], "json");
    assert_eq!(
        w["limits"],
        json!({"max_symbols":500,"max_rate":50,"default_rate":10})
    );
    assert_eq!(c.protocol, None);
}

#[tokio::test]
async fn snapshot_first_then_deltas_carry_only_changed_fields() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.send(json!({"op":"subscribe","id":1,"symbols":["AAPL","MSFT"],"max_rate":5}))
        .await;
    let sub = c.until_type("subscribed").await;
    assert_eq!(
        sub,
        json!({"type":"subscribed","id":1,"symbols":["AAPL","MSFT"],"max_rate":5})
    );
    for sym in ["AAPL", "MSFT"] {
        let snap = c
            .until(|m| m["type"] == "snapshot" && m["sym"] == sym)
            .await;
        let rest = app.rest_snapshot(sym).await;
        assert_eq!(snap, rest, "snapshot equals the API's full quote");
        for k in ["bp", "ap", "lp", "o", "h", "l", "pc"] {
            assert!(snap[k].is_string(), "{k} is a decimal string: {snap}");
        }
    }

    let before = c.state["AAPL"].clone();
    let t = before["t"].as_i64().unwrap() + 1;
    let bs = before["bs"].as_u64().unwrap() + 100;
    // bp is re-sent unchanged: it must not appear in the delta.
    app.publish(json!({"sym":"AAPL","t":t,"bp":before["bp"],"bs":bs}));
    let upd = c
        .until(|m| m["type"] == "update" && m["sym"] == "AAPL")
        .await;
    assert_eq!(keys(&upd), ["bs", "seq", "sym", "t", "type"]);
    assert_eq!(upd["bs"], bs);
    assert_eq!(upd["seq"], before["seq"].as_u64().unwrap() + 1);

    // A price that differs only in its trailing zero is a different value: it is
    // sent, and exactly as the feed wrote it.
    for (i, lp) in ["123.40", "123.4"].into_iter().enumerate() {
        app.publish(json!({"sym":"AAPL","t":t + 1 + i as i64,"lp":lp}));
        let upd = c
            .until(|m| m["type"] == "update" && m["sym"] == "AAPL")
            .await;
        assert_eq!(upd["lp"], lp);
    }
    assert_eq!(c.state["AAPL"], app.rest_quote("AAPL").await);
}

#[tokio::test]
async fn resubscribe_changes_rate_and_sends_a_fresh_snapshot() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.subscribe(&["NVDA"], 2.0).await;
    c.until_type("snapshot").await;
    c.send(json!({"op":"subscribe","id":2,"symbols":["NVDA"],"max_rate":1000}))
        .await;
    let sub = c.until_type("subscribed").await;
    assert_eq!(sub["max_rate"], 50, "clamped to the server's maximum");
    let snap = c.until_type("snapshot").await;
    assert_eq!(snap["sym"], "NVDA");
    c.send(json!({"op":"subscribe","id":3,"symbols":["NVDA"],"max_rate":0.0001,"snapshot":false}))
        .await;
    let sub = c.until_type("subscribed").await;
    assert_eq!(sub["max_rate"], 0.1, "clamped to the server's minimum");
    c.send(json!({"op":"list","id":4})).await;
    let list = c.until_type("subscriptions").await;
    assert_eq!(
        list,
        json!({"type":"subscriptions","id":4,"symbols":[{"sym":"NVDA","max_rate":0.1}]})
    );
    // No snapshot was requested the last time: the next message is the pong.
    c.send(json!({"op":"ping","id":"p"})).await;
    let Event::Msgs(msgs) = c.next_event().await else {
        panic!("expected messages")
    };
    assert_eq!(msgs, vec![json!({"type":"pong","id":"p"})]);
}

#[tokio::test]
async fn unsubscribe_and_list_and_ping_reply_with_ids() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.subscribe(&["AAPL", "TSLA"], 10.0).await;
    c.send(json!({"op":"unsubscribe","id":"u","symbols":["AAPL"]}))
        .await;
    let u = c.until_type("unsubscribed").await;
    assert_eq!(
        u,
        json!({"type":"unsubscribed","id":"u","symbols":["AAPL"]})
    );
    c.send(json!({"op":"list","id":3})).await;
    let l = c.until_type("subscriptions").await;
    assert_eq!(l["symbols"], json!([{"sym":"TSLA","max_rate":10}]));
    c.send(json!({"op":"ping","id":4})).await;
    assert_eq!(c.until_type("pong").await, json!({"type":"pong","id":4}));
}

#[tokio::test]
async fn subprotocol_negotiation_follows_the_clients_preference() {
    let app = quiet_app().await;
    let url = app.ws_url("");
    let c = Client::connect_with(&url, &["ticker.v1.msgpack", "ticker.v1.json"]).await;
    assert_eq!(c.protocol.as_deref(), Some("ticker.v1.msgpack"));
    let c = Client::connect_with(
        &url,
        &["v12.stomp-not-yet", "ticker.v1.json", "ticker.v1.msgpack"],
    )
    .await;
    assert_eq!(c.protocol.as_deref(), Some("ticker.v1.json"));
}

async fn msgpack_session(mut c: Client, app: &TestApp) {
    assert!(c.msgpack);
    let w = c.until_type("welcome").await;
    assert_eq!(w["format"], "msgpack");
    c.send(json!({"op":"subscribe","id":1,"symbols":["SPY"]}))
        .await;
    let sub = c.until_type("subscribed").await;
    assert_eq!(sub["max_rate"], 10, "default rate");
    let snap = c.until_type("snapshot").await;
    let rest = app.rest_snapshot("SPY").await;
    assert_eq!(
        snap, rest,
        "msgpack maps carry the JSON keys, prices as strings"
    );
    let t = snap["t"].as_i64().unwrap() + 5;
    app.publish(json!({"sym":"SPY","t":t,"ls":700}));
    let upd = c.until_type("update").await;
    assert_eq!(keys(&upd), ["ls", "seq", "sym", "t", "type"]);
    c.send(json!({"op":"bogus"})).await;
    assert_eq!(c.until_type("error").await["code"], "bad_request");
}

#[tokio::test]
async fn msgpack_by_subprotocol() {
    let app = quiet_app().await;
    let c = Client::connect_with(&app.ws_url(""), &["ticker.v1.msgpack"]).await;
    msgpack_session(c, &app).await;
}

#[tokio::test]
async fn msgpack_by_query_parameter() {
    let app = quiet_app().await;
    let c = Client::connect(&app.ws_url("?format=msgpack")).await;
    assert_eq!(c.protocol, None);
    msgpack_session(c, &app).await;
}

#[tokio::test]
async fn symbol_without_a_quote_gets_its_snapshot_when_the_first_quote_arrives() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    let sub = c.subscribe(&["IBM"], 10.0).await;
    assert_eq!(sub["symbols"], json!(["IBM"]));
    app.publish(json!({"sym":"IBM","t":1,"bp":"250.10","bs":100}));
    let first = c.until(|m| m["sym"] == "IBM").await;
    assert_eq!(
        first,
        json!({"type":"snapshot","sym":"IBM","seq":1,"t":1,"bp":"250.10","bs":100})
    );
}

#[tokio::test]
async fn benchmark_ingest_stamp_only_when_switched_on() {
    let app = quiet_app_with("[bench]\ningest_stamp = true\n").await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.subscribe(&["QQQ"], 10.0).await;
    let snap = c.until_type("snapshot").await;
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let ti = snap["ti"].as_i64().expect("ti stamp");
    assert!(
        ti <= now_us && now_us - ti < 60_000_000,
        "ti {ti} vs now {now_us}"
    );
    let t = snap["t"].as_i64().unwrap() + 1;
    app.publish(json!({"sym":"QQQ","t":t,"bs":1}));
    let upd = c.until_type("update").await;
    assert!(upd["ti"].as_i64().unwrap() >= ti);
}

/// Sends a raw HTTP/1.1 request and reads the whole answer (the server closes).
async fn raw_request(app: &TestApp, head: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes after an error")
        .unwrap();
    let text = String::from_utf8(answer).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, body)
}

#[tokio::test]
async fn refused_upgrades_get_a_json_error() {
    let app = quiet_app().await;
    let upgrade = |path: &str, key: bool, kind: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: {kind}\r\n\
             Sec-WebSocket-Version: 13\r\n{}\r\n",
            if key {
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            } else {
                ""
            }
        )
    };
    for (head, status, code) in [
        (upgrade("/ws", false, "websocket"), 400, "bad_request"),
        (upgrade("/nope", true, "websocket"), 404, "not_found"),
        (
            upgrade("/ws?format=xml", true, "websocket"),
            400,
            "bad_request",
        ),
        (
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
    ] {
        let (got, body) = raw_request(&app, &head).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{head}: {body}"
        );
        assert_eq!(body["type"], "error");
    }
    // Other upgrades (h2c) are not taken over: the request is served as usual.
    let (got, body) = raw_request(&app, &upgrade("/healthz", false, "h2c")).await;
    assert_eq!((got, body), (200, json!({"status": "ok"})));
    // And a good one still works after them.
    let mut c = Client::connect(&app.ws_url("")).await;
    c.until_type("welcome").await;
}

#[tokio::test]
async fn resume_sends_snapshots_only_for_symbols_that_changed() {
    let app = quiet_app().await;
    let mut first = Client::connect(&app.ws_url("")).await;
    first.subscribe(&["AAPL", "MSFT"], 50.0).await;
    for sym in ["AAPL", "MSFT"] {
        first
            .until(|m| m["type"] == "snapshot" && m["sym"] == sym)
            .await;
    }
    let seqs = json!({"AAPL": first.state["AAPL"]["seq"], "MSFT": first.state["MSFT"]["seq"]});
    let t = first.state["MSFT"]["t"].as_i64().unwrap() + 1;
    let seen = std::mem::take(&mut first.g);
    drop(first);
    // While the client is away, MSFT moves.
    let msft = app.publish(json!({"sym": "MSFT", "t": t, "lp": "401.25"}));

    let (mut back, snapshots) =
        Client::resume(&app.ws_url(""), &seen, &["AAPL", "MSFT"], seqs).await;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0]["sym"], "MSFT");
    assert_eq!(snapshots[0]["seq"], msft);
    // AAPL goes on as deltas from the state the client kept.
    let t = back.state["AAPL"]["t"].as_i64().unwrap() + 1;
    app.publish(json!({"sym": "AAPL", "t": t, "lp": "199.99"}));
    let update = back
        .until(|m| m["type"] == "update" && m["sym"] == "AAPL")
        .await;
    assert_eq!(update["lp"], "199.99");
    let rest = app.rest_quote("AAPL").await;
    assert_eq!(back.state["AAPL"]["seq"], rest["seq"]);
    assert_eq!(back.state["AAPL"]["bp"], rest["bp"]);

    // Long-polling takes it when the session is created.
    let seqs = json!({"AAPL": rest["seq"], "MSFT": 1});
    let (status, created) = post_json(
        &app,
        "/poll",
        json!({"symbols":["AAPL","MSFT"],"resume":seqs}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let syms: Vec<_> = created["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "snapshot")
        .map(|m| m["sym"].clone())
        .collect();
    assert_eq!(syms, vec![json!("MSFT")]);

    // A malformed resume is refused, naming the shape.
    back.send(json!({"op":"subscribe","id":"b","symbols":["AAPL"],"resume":{"AAPL":"x"}}))
        .await;
    let error = back.until_type("error").await;
    assert_eq!(error["code"], "bad_request");
    assert!(
        error["message"].as_str().unwrap().contains("resume"),
        "{error}"
    );
}

async fn post_json(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .http
        .post(app.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}
