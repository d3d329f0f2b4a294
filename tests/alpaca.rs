//! The `alpaca` feed against a fake Alpaca market-data v2 stream
//! (`common::alpaca`): quotes and trades reach clients with the exact decimals
//! the provider wrote; the feed subscribes to what clients want and lets go
//! after the linger; refused credentials (402) and a taken connection (406)
//! fail the feed with its reason after one attempt; a slow-client error (407)
//! and a dropped connection are followed by a new connection that
//! authenticates and resubscribes; a burst of thousands of messages is applied
//! in full.

mod common;

use common::alpaca::{Answer, FakeAlpaca, Seen, KEY, SECRET};
use common::{poll, spawn_app, start_app, temp_file, Client, TestApp};
use serde_json::{json, Value};

/// A `[[feeds]]` entry for an alpaca feed following `fake`, with `secret`.
fn feed_settings(fake: &FakeAlpaca, secret: &str) -> String {
    let key = temp_file("key", &format!("{KEY}\n"));
    let secret = temp_file("secret", secret);
    format!(
        "[[feeds]]\nname = \"alpaca\"\nkind = \"alpaca\"\nurl = {url:?}\n\
         key_file = {key:?}\nsecret_file = {secret:?}\nlinger = \"300ms\"\n",
        url = fake.url(),
    )
}

/// A gateway following `fake`, ready (authenticated).
async fn gateway(fake: &FakeAlpaca) -> TestApp {
    spawn_app(&feed_settings(fake, SECRET)).await
}

/// The feed's entry in `/api/v1/feeds`.
async fn feed_report(app: &TestApp) -> Value {
    let (_, feeds) = app.get_json("/api/v1/feeds").await;
    feeds
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "alpaca")
        .cloned()
        .unwrap()
}

fn subscribed(conn: usize, syms: &[&str]) -> Seen {
    let syms: Vec<String> = syms.iter().map(|s| s.to_string()).collect();
    Seen::Subscribe {
        conn,
        quotes: syms.clone(),
        trades: syms,
    }
}

/// Reads until the client's view of `sym` has every field of `want`.
async fn until_state(client: &mut Client, sym: &str, want: Value) -> Value {
    let want = want.as_object().unwrap().clone();
    loop {
        if let Some(state) = client.state.get(sym) {
            if want.iter().all(|(k, v)| &state[k] == v) {
                return state.clone();
            }
        }
        client.next_event().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_and_trades_reach_clients_with_exact_decimals() {
    let mut fake = FakeAlpaca::start(Answer::Accept).await;
    let app = gateway(&fake).await;
    let mut client = Client::connect(&app.ws_url("")).await;
    client.subscribe(&["AAPL"], 50.0).await;
    assert_eq!(fake.next().await, Seen::Auth { conn: 1 });
    assert_eq!(fake.next().await, subscribed(1, &["AAPL"]));

    fake.send(
        r#"[{"T":"q","S":"AAPL","bx":"V","bp":187.1234567,"bs":3,"ax":"Q","ap":189.10,"as":12,"c":["R"],"z":"C","t":"2024-03-01T14:30:00.123456789Z"}]"#,
    );
    fake.send(
        r#"[{"T":"t","i":1,"S":"AAPL","x":"V","p":187.120,"s":100,"c":["@"],"z":"C","t":"2024-03-01T14:30:01Z"},
            {"T":"t","i":2,"S":"AAPL","x":"V","p":187.1250,"s":200,"c":["@"],"z":"C","t":"2024-03-01T14:30:02.5Z"}]"#,
    );
    let want = json!({"bp":"187.1234567","bs":3,"ap":"189.10","as":12,"lp":"187.1250","ls":200,"v":300,"t":1_709_303_402_500_i64});
    let state = until_state(&mut client, "AAPL", want.clone()).await;
    let rest = app.rest_quote("AAPL").await;
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&rest[k], v, "REST {k}: {rest}");
    }
    assert_eq!(rest["seq"], state["seq"]);
    let report = feed_report(&app).await;
    assert_eq!(report["state"], "running", "{report}");
    assert_eq!(report["quotes_received"], 3, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_subscribes_to_what_clients_want_and_lets_go_after_the_linger() {
    let mut fake = FakeAlpaca::start(Answer::Accept).await;
    let app = gateway(&fake).await;
    assert_eq!(fake.next().await, Seen::Auth { conn: 1 });

    let mut one = Client::connect(&app.ws_url("")).await;
    let mut two = Client::connect(&app.ws_url("")).await;
    one.subscribe(&["AAPL"], 5.0).await;
    assert_eq!(fake.next().await, subscribed(1, &["AAPL"]));
    two.subscribe(&["AAPL", "MSFT"], 5.0).await;
    assert_eq!(fake.next().await, subscribed(1, &["MSFT"]));

    // AAPL stays while the second client wants it; then goes after the linger.
    one.send(json!({"op":"unsubscribe","id":"u","symbols":["AAPL"]}))
        .await;
    one.until_type("unsubscribed").await;
    two.send(json!({"op":"unsubscribe","id":"u","symbols":["AAPL"]}))
        .await;
    two.until_type("unsubscribed").await;
    let aapl = vec!["AAPL".to_owned()];
    assert_eq!(
        fake.next().await,
        Seen::Unsubscribe {
            conn: 1,
            quotes: aapl.clone(),
            trades: aapl
        }
    );

    // Wanted again: subscribed again, on the same connection.
    one.subscribe(&["AAPL"], 5.0).await;
    assert_eq!(fake.next().await, subscribed(1, &["AAPL"]));
    assert_eq!(fake.connections(), 1);
}

/// Starts a gateway whose feed the fake refuses; waits for the feed to fail and
/// returns its report.
async fn refused(fake: &FakeAlpaca, secret: &str) -> Value {
    let app = start_app(&feed_settings(fake, secret));
    poll("the feed failing", || async {
        let report = feed_report(&app).await;
        if report["state"] == "failed" {
            Ok(report)
        } else {
            Err(report)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_the_feed_after_one_attempt() {
    let fake = FakeAlpaca::start(Answer::Accept).await;
    let report = refused(&fake, "not-the-secret").await;
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.contains("402"), "{reason}");
    assert!(reason.contains("authentication failed"), "{reason}");
    assert!(!reason.contains("not-the-secret"), "{reason}");
    assert_eq!(fake.connections(), 1, "the feed tried again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_connection_fails_the_feed_after_one_attempt() {
    let fake = FakeAlpaca::start(Answer::Refuse(406, "connection limit exceeded")).await;
    let report = refused(&fake, SECRET).await;
    let reason = report["reason"].as_str().unwrap();
    assert!(reason.contains("406"), "{reason}");
    assert!(reason.contains("connection limit exceeded"), "{reason}");
    assert_eq!(fake.connections(), 1, "the feed tried again");
}

/// A gateway following the fake, with a client that wants AAPL and MSFT and the
/// fake's first connection subscribed to both.
async fn following_aapl_and_msft() -> (FakeAlpaca, TestApp, Client) {
    let mut fake = FakeAlpaca::start(Answer::Accept).await;
    let app = gateway(&fake).await;
    let mut client = Client::connect(&app.ws_url("")).await;
    client.subscribe(&["AAPL", "MSFT"], 50.0).await;
    assert_eq!(fake.next().await, Seen::Auth { conn: 1 });
    // One subscribe, or one per symbol if demand arrived in two steps.
    fake.wait(
        "MSFT subscribed",
        |s| matches!(s, Seen::Subscribe { quotes, .. } if quotes.contains(&"MSFT".to_owned())),
    )
    .await;
    (fake, app, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_error_and_a_dropped_connection_reconnect_and_resubscribe() {
    let (mut fake, app, mut client) = following_aapl_and_msft().await;

    fake.end_with_error(407, "slow client");
    assert_eq!(fake.next().await, Seen::Auth { conn: 2 });
    assert_eq!(fake.next().await, subscribed(2, &["AAPL", "MSFT"]));
    fake.send(
        r#"[{"T":"q","S":"AAPL","bp":1.01,"bs":1,"ap":1.03,"as":1,"t":"2024-03-01T14:30:00Z"}]"#,
    );
    until_state(&mut client, "AAPL", json!({"bp":"1.01"})).await;

    fake.drop_connection();
    assert_eq!(fake.next().await, Seen::Auth { conn: 3 });
    assert_eq!(fake.next().await, subscribed(3, &["AAPL", "MSFT"]));
    fake.send(
        r#"[{"T":"q","S":"AAPL","bp":1.02,"bs":1,"ap":1.03,"as":1,"t":"2024-03-01T14:30:01Z"}]"#,
    );
    until_state(&mut client, "AAPL", json!({"bp":"1.02"})).await;

    let report = feed_report(&app).await;
    assert_eq!(report["state"], "running", "{report}");
    assert!(report.get("reason").is_none(), "{report}");
    assert_eq!(fake.connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_thousands_of_messages_is_applied_in_full() {
    let (fake, app, mut client) = following_aapl_and_msft().await;

    // 4,000 trades in one array, then 2,000 quotes in ten frames, and one bad
    // message that costs only itself.
    let syms = ["AAPL", "MSFT"];
    let mut volume = [0u64; 2];
    let trades: Vec<String> = (0..4000u64)
        .map(|i| {
            let size = i % 7 + 1;
            volume[(i % 2) as usize] += size;
            format!(
                r#"{{"T":"t","S":"{}","p":{}.{:04},"s":{size},"t":"2024-03-01T15:00:{:02}.{:03}Z"}}"#,
                syms[(i % 2) as usize],
                100 + i / 1000,
                i % 1000,
                i / 1000,
                i % 1000
            )
        })
        .collect();
    fake.send(&format!("[{}]", trades.join(",")));
    for frame in 0..10u64 {
        let mut quotes: Vec<String> = (0..200u64)
            .map(|j| {
                let i = frame * 200 + j;
                format!(
                    r#"{{"T":"q","S":"{}","bp":{}.{:03}0,"bs":{},"ap":200.5,"as":1,"t":"2024-03-01T15:01:00Z"}}"#,
                    syms[(i % 2) as usize],
                    150 + i / 1000,
                    i % 1000,
                    i + 1
                )
            })
            .collect();
        if frame == 5 {
            quotes.push(r#"{"T":"q","S":"AAPL","bp":"1.0","t":"2024-03-01T15:01:00Z"}"#.into());
        }
        fake.send(&format!("[{}]", quotes.join(",")));
    }

    let report = poll("the whole burst", || async {
        let report = feed_report(&app).await;
        if report["quotes_received"] == 6000 && report["quotes_rejected"] == 1 {
            Ok(report)
        } else {
            Err(report)
        }
    })
    .await;
    assert_eq!(report["state"], "running");
    let aapl = app.rest_quote("AAPL").await;
    let msft = app.rest_quote("MSFT").await;
    assert_eq!(aapl["v"], volume[0]);
    assert_eq!(msft["v"], volume[1]);
    assert_eq!(aapl["lp"], "103.0998");
    assert_eq!(msft["lp"], "103.0999");
    assert_eq!(aapl["bp"], "151.9980");
    assert_eq!(msft["bp"], "151.9990");
    assert_eq!(
        (aapl["bs"].clone(), msft["bs"].clone()),
        (json!(1999), json!(2000))
    );
    // The client converges on the same state.
    until_state(
        &mut client,
        "MSFT",
        json!({"v": volume[1], "bp": "151.9990"}),
    )
    .await;
}

#[test]
fn missing_credentials_are_named_in_one_line_at_start_up() {
    let settings = "[[feeds]]\nname = \"alpaca\"\nkind = \"alpaca\"\n\
                    key_env = \"ALPACA_TEST_NEVER_SET\"\nsecret_env = \"ALPACA_TEST_NEVER_SET\"\n";
    let e = ticker_gateway::settings::Settings::load_with(None, &[settings]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid setting feeds[0].key_env: the environment variable ALPACA_TEST_NEVER_SET is not set"
    );
    let bad_url =
        "[[feeds]]\nname = \"alpaca\"\nkind = \"alpaca\"\nurl = \"https://example.com\"\n";
    let e = ticker_gateway::settings::Settings::load_with(None, &[bad_url]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid setting feeds[0].url: must be a ws:// or wss:// URL"
    );
}
