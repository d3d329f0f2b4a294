//! Bad input, limits and liveness over WebSocket: every bad frame gets its
//! documented error or close code, and another client on the same server keeps
//! receiving quotes throughout. Slow consumers (4008), heartbeat and client timeout,
//! message floods (4029), oversized frames refused from their header (1009), text
//! that is not UTF-8 (1007), the connection limit (1013).

mod common;

use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A client subscribed to `sym` that must keep getting every new quote.
struct Witness {
    client: Client,
    sym: &'static str,
    t: i64,
}

impl Witness {
    async fn new(app: &TestApp, sym: &'static str) -> Witness {
        let mut client = Client::connect(&app.ws_url("")).await;
        client.subscribe(&[sym], 50.0).await;
        client.until_type("snapshot").await;
        let t = app.rest_quote(sym).await["t"].as_i64().unwrap();
        Witness { client, sym, t }
    }

    /// Publishes a new quote and waits for the witness to receive it.
    async fn still_served(&mut self, app: &TestApp) {
        self.t += 1;
        let t = self.t;
        app.publish(json!({"sym": self.sym, "t": t, "ls": t % 1000 + 1}));
        let sym = self.sym;
        self.client.until(|m| m["sym"] == sym && m["t"] == t).await;
    }
}

async fn error_for(c: &mut Client, frame: Message) -> Value {
    c.send_raw(frame).await;
    c.until_type("error").await
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_the_connection_stays_usable() {
    let app = quiet_app().await;
    let mut w = Witness::new(&app, "MSFT").await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.until_type("welcome").await;

    let cases: Vec<(Message, Option<Value>)> = vec![
        (Message::Text("not json".into()), None),
        (Message::Text("[1,2,3]".into()), None),
        (Message::Text("42".into()), None),
        (
            Message::Text(r#"{"op":"dance","id":7}"#.into()),
            Some(json!(7)),
        ),
        (Message::Text(r#"{"id":"x"}"#.into()), Some(json!("x"))),
        (
            Message::Text(r#"{"op":"subscribe","id":8,"symbols":"AAPL"}"#.into()),
            Some(json!(8)),
        ),
        (
            Message::Text(r#"{"op":"subscribe","id":9,"symbols":[1,2]}"#.into()),
            Some(json!(9)),
        ),
        (
            Message::Text(
                r#"{"op":"subscribe","id":10,"symbols":["AAPL"],"max_rate":"fast"}"#.into(),
            ),
            Some(json!(10)),
        ),
        (
            Message::Text(
                r#"{"op":"subscribe","id":11,"symbols":["AAPL"],"snapshot":"yes"}"#.into(),
            ),
            Some(json!(11)),
        ),
        (
            Message::Text(r#"{"op":"unsubscribe","id":12}"#.into()),
            Some(json!(12)),
        ),
        (Message::Binary(vec![0xc1, 0xff, 0x00].into()), None),
    ];
    for (frame, id) in cases {
        let shown = format!("{frame:?}");
        let e = error_for(&mut c, frame).await;
        assert_eq!(e["code"], "bad_request", "{shown}: {e}");
        assert_eq!(e.get("id").cloned(), id, "{shown}: {e}");
        assert!(e["message"].as_str().unwrap().len() > 5, "{e}");
        w.still_served(&app).await;
    }
    c.send(json!({"op":"ping","id":"still-here"})).await;
    assert_eq!(c.until_type("pong").await["id"], "still-here");
    assert!(
        app.metric("ticker_client_errors_total", &[("code", "bad_request")])
            .await
            >= 11.0
    );
}

#[tokio::test]
async fn unknown_symbols_and_the_subscription_limit() {
    let app = quiet_app().await;
    let mut w = Witness::new(&app, "MSFT").await;
    let mut c = Client::connect(&app.ws_url("")).await;

    // 1,000 unknown symbols: one error naming them (the list capped at 100).
    let unknown: Vec<String> = (0..1000).map(|i| format!("ZZ{i:04}")).collect();
    c.send(json!({"op":"subscribe","id":1,"symbols":unknown}))
        .await;
    let e = c.until_type("error").await;
    assert_eq!(e["code"], "unknown_symbol");
    assert_eq!(e["id"], 1);
    assert_eq!(e["symbols"].as_array().unwrap().len(), 100);
    assert!(e["message"].as_str().unwrap().contains("1000"), "{e}");
    w.still_served(&app).await;

    // Good and bad together: the good ones are subscribed, the bad ones reported.
    c.send(json!({"op":"subscribe","id":2,"symbols":["AAPL","NOPE1","lower"]}))
        .await;
    let e = c.until_type("error").await;
    assert_eq!(e["symbols"], json!(["NOPE1", "lower"]));
    let s = c.until_type("subscribed").await;
    assert_eq!(s["symbols"], json!(["AAPL"]));

    // More than max_symbols (500): the first ones fit, the rest are refused.
    let (_, universe) = app.get_json("/api/v1/symbols").await;
    let all: Vec<&str> = universe
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sym"].as_str().unwrap())
        .filter(|s| *s != "AAPL")
        .take(600)
        .collect();
    c.send(json!({"op":"subscribe","id":3,"symbols":all,"snapshot":false}))
        .await;
    let s = c.until_type("subscribed").await;
    assert_eq!(
        s["symbols"].as_array().unwrap().len(),
        499,
        "AAPL already holds one slot"
    );
    let e = c.until_type("error").await;
    assert_eq!(e["code"], "too_many_symbols");
    assert_eq!(e["id"], 3);
    assert_eq!(e["symbols"].as_array().unwrap().len(), 100);
    assert!(e["message"].as_str().unwrap().contains("500"), "{e}");
    c.send(json!({"op":"list","id":4})).await;
    let l = c.until_type("subscriptions").await;
    assert_eq!(l["symbols"].as_array().unwrap().len(), 500);
    w.still_served(&app).await;
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let app = quiet_app().await;
    let mut w = Witness::new(&app, "MSFT").await;
    let mut c = Client::connect(&app.ws_url("")).await;
    let big = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(70_000));
    c.send_raw(Message::Text(big.into())).await;
    assert_eq!(c.until_closed().await, Some(1009));
    w.still_served(&app).await;
}

/// A masked client frame written as raw bytes: `first` is the FIN/opcode byte,
/// the header declares `declared` payload bytes, of which `payload` follows.
fn raw_frame(first: u8, declared: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first, 0x80 | 127];
    f.extend_from_slice(&declared.to_be_bytes());
    // A zero masking key leaves the payload as it is.
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn a_frame_declared_too_large_is_refused_from_its_header() {
    let app = quiet_app().await;
    let mut w = Witness::new(&app, "MSFT").await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.until_type("welcome").await;
    // A text frame declaring 100 MiB, then 16 KiB of it: the close comes now,
    // not after the server has read (and buffered) the rest.
    c.send_bytes(&raw_frame(0x81, 100 << 20, &[b' '; 16 * 1024]))
        .await;
    assert_eq!(c.until_closed().await, Some(1009));
    assert!(
        app.metric("ticker_connections_closed_total", &[("code", "1009")])
            .await
            >= 1.0
    );
    w.still_served(&app).await;
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let app = quiet_app().await;
    let mut w = Witness::new(&app, "MSFT").await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.until_type("welcome").await;
    let bad = b"{\"op\":\"ping\",\"id\":\"\xff\"}";
    c.send_bytes(&raw_frame(0x81, bad.len() as u64, bad)).await;
    assert_eq!(c.until_closed().await, Some(1007));
    w.still_served(&app).await;
}

#[tokio::test]
async fn message_flood_is_refused_then_closed_with_4029() {
    let app = quiet_app().await;
    let mut w = Witness::new(&app, "MSFT").await;
    let mut c = Client::connect(&app.ws_url("")).await;
    for i in 0..200 {
        if c.ws
            .send(Message::Text(
                json!({"op":"ping","id":i}).to_string().into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    // The first messages over the limit are refused with rate_limited ...
    let e = c.until_type("error").await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    // ... and a client that keeps flooding is closed.
    assert_eq!(c.until_closed().await, Some(4029));
    w.still_served(&app).await;
}

#[tokio::test]
async fn connection_limit_closes_the_extra_client_with_1013() {
    let app = quiet_app_with("[server]\nmax_connections = 2\n").await;
    let mut w = Witness::new(&app, "MSFT").await;
    let mut second = Client::connect(&app.ws_url("")).await;
    second.until_type("welcome").await;
    let mut third = Client::connect(&app.ws_url("")).await;
    assert_eq!(third.until_closed().await, Some(1013));
    w.still_served(&app).await;
    assert_eq!(
        app.metric(
            "ticker_connections_rejected_total",
            &[("reason", "server_full")]
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn server_pings_and_a_silent_client_is_closed() {
    let app =
        quiet_app_with("[session]\nheartbeat_interval = \"100ms\"\nclient_timeout = \"500ms\"\n")
            .await;

    // A client that reads (and so answers pings) stays open well past client_timeout.
    let mut alive = Client::connect(&app.ws_url("")).await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < std::time::Duration::from_millis(1_500) {
        match alive.next_event().await {
            Event::Ping => pings += 1,
            Event::Msgs(_) => {}
            Event::Closed(code) => panic!("a live client was closed ({code:?})"),
        }
    }
    assert!(
        pings >= 5,
        "only {pings} pings in 1.5 s at a 100 ms interval"
    );

    // A client that sends nothing, not even pongs, is closed after client_timeout,
    // while the live client keeps reading (and answering pings) all along.
    let mut silent = Client::connect(&app.ws_url("")).await;
    let silent_closed = async {
        app.wait_metric(
            "ticker_connections_closed_total",
            &[("code", "4000")],
            |v| v >= 1.0,
        )
        .await;
        silent.until_closed().await
    };
    tokio::pin!(silent_closed);
    let code = loop {
        tokio::select! {
            code = &mut silent_closed => break code,
            ev = alive.next_event() => {
                if let Event::Closed(code) = ev {
                    panic!("the live client was closed ({code:?})");
                }
            }
        }
    };
    assert_eq!(code, Some(4000));
    alive.send(json!({"op":"ping","id":1})).await;
    alive.until_type("pong").await;
}

#[tokio::test]
async fn slow_consumer_is_closed_with_4008_and_others_keep_flowing() {
    let app = busy_market(None).await;
    let mut w = Client::connect(&app.ws_url("")).await;
    w.subscribe(&["SPY"], 10.0).await;
    w.until_type("snapshot").await;

    let mut slow = slow_client(&app, None).await;

    app.wait_metric("ticker_slow_consumer_closes_total", &[], |v| v >= 1.0)
        .await;
    // When the slow client reads again, it finds what was buffered, then 4008.
    assert_eq!(slow.until_closed().await, Some(4008));
    // The witness keeps receiving fresh quotes after the slow client was cut off.
    let seen = w.received.len();
    w.until(|m| m["type"] == "update" && m["sym"] == "SPY")
        .await;
    assert!(w.received.len() > seen);
    assert_eq!(
        app.metric("ticker_connections_closed_total", &[("code", "4008")])
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_slow_consumer_that_never_reads_again_is_reset() {
    let app = busy_market(None).await;
    let mut slow = slow_client(&app, None).await;

    // It stops reading: 4008 is queued behind everything the server holds for it,
    // and when it has read nothing for another write_stall_timeout the server
    // resets the connection (even with actix's own write buffer full).
    app.wait_metric("ticker_slow_consumer_resets_total", &[], |v| v >= 1.0)
        .await;
    // The server let go of the socket while the client still reads nothing.
    app.wait_metric("ticker_ws_sockets_open", &[], |v| v == 0.0)
        .await;
    // Reading now ends in a reset, not in the close frame that never left.
    assert_eq!(slow.until_closed().await, None);
}
