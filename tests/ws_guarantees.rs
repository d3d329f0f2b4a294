//! PROTOCOL.md section 5 over WebSocket: throttle with conflation, convergence,
//! silence after unsubscribe, and a paused reader getting the latest state.
//! Snapshot-first and per-symbol order are checked by the test client on every
//! message of every test (see `common::Client`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Receives until the client's view of `sym` equals the API's; returns when.
async fn until_converged(c: &mut Client, app: &TestApp, sym: &str) -> Instant {
    let rest = app.rest_quote(sym).await;
    loop {
        if c.state.get(sym) == Some(&rest) {
            return Instant::now();
        }
        c.until(|m| m["sym"] == sym).await;
    }
}

#[tokio::test]
async fn throttle_caps_the_rate_and_conflation_loses_no_field() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    let rate = 2.0;
    c.subscribe(&["AAPL"], rate).await;
    c.until_type("snapshot").await;

    // 60 updates over ~1.5 s, far above 2 per second.
    let publisher = publish_burst(&app, "AAPL", 60, Duration::from_millis(25));
    let mut arrivals: Vec<(Instant, Value)> = Vec::new();
    let (last_publish, ()) = tokio::join!(publisher, async {
        // Collect AAPL messages for the duration of the burst plus one interval.
        let end = Instant::now() + Duration::from_millis(2_200);
        while Instant::now() < end {
            match tokio::time::timeout_at(end.into(), c.until(|m| m["sym"] == "AAPL")).await {
                Ok(m) => arrivals.push((Instant::now(), m)),
                Err(_) => break,
            }
        }
    });
    let converged_at = until_converged(&mut c, &app, "AAPL").await;

    // At most ceil(rate) + 1 messages in any 1 s window.
    let times: Vec<Instant> = arrivals.iter().map(|(t, _)| *t).collect();
    assert_at_most_per_second(&times, 3, &format!("messages at rate {rate}"));
    assert!(
        arrivals.len() >= 2 && arrivals.len() <= 6,
        "{} messages for 60 updates at 2/s",
        arrivals.len()
    );
    // Every update carries bs (it changed every time) and lp when it changed.
    for (_, m) in &arrivals {
        assert_eq!(m["type"], "update");
        assert!(m.get("bs").is_some(), "conflated update lost bs: {m}");
        let keys: BTreeSet<&str> = m.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert!(
            keys.is_subset(&["type", "sym", "seq", "t", "bs", "lp"].into()),
            "{m}"
        );
    }
    assert!(
        app.metric("ticker_updates_conflated_total", &[]).await >= 50.0,
        "conflated updates are counted"
    );
    // Convergence: within 1/max_rate + 250 ms of the last change.
    let took = converged_at.saturating_duration_since(last_publish);
    assert!(
        took <= Duration::from_millis(750),
        "converged {took:?} after the last update (bound 750 ms)"
    );
}

#[tokio::test]
async fn converges_to_the_api_quote_on_several_symbols() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    let syms = ["AAPL", "MSFT", "NVDA", "TSLA"];
    c.subscribe(&syms, 4.0).await;
    for s in syms {
        c.until(|m| m["type"] == "snapshot" && m["sym"] == s).await;
    }
    let mut last = Instant::now();
    for s in syms {
        last = publish_burst(&app, s, 15, Duration::from_millis(5)).await;
    }
    for s in syms {
        let at = until_converged(&mut c, &app, s).await;
        let took = at.saturating_duration_since(last);
        assert!(
            took <= Duration::from_millis(500),
            "{s} converged {took:?} after its last update (bound 1/4 s + 250 ms)"
        );
    }
}

#[tokio::test]
async fn nothing_arrives_for_a_symbol_after_unsubscribed() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.subscribe(&["AAPL", "MSFT"], 1.0).await;
    c.until(|m| m["type"] == "snapshot" && m["sym"] == "AAPL")
        .await;
    c.until(|m| m["type"] == "snapshot" && m["sym"] == "MSFT")
        .await;
    // Both symbols now have a change pending behind the 1/s throttle.
    let a = app.rest_quote("AAPL").await;
    let m = app.rest_quote("MSFT").await;
    app.publish(json!({"sym":"AAPL","t":a["t"].as_i64().unwrap() + 1,"bs":1}));
    app.publish(json!({"sym":"MSFT","t":m["t"].as_i64().unwrap() + 1,"bs":1}));
    c.send(json!({"op":"unsubscribe","id":9,"symbols":["AAPL"]}))
        .await;
    c.until_type("unsubscribed").await;
    let seen = c.received.len();
    app.publish(json!({"sym":"AAPL","t":a["t"].as_i64().unwrap() + 2,"bs":2}));
    // MSFT's pending update fires at the same throttle deadline AAPL's would have.
    c.until(|x| x["type"] == "update" && x["sym"] == "MSFT")
        .await;
    app.publish(json!({"sym":"AAPL","t":a["t"].as_i64().unwrap() + 3,"bs":3}));
    app.publish(json!({"sym":"MSFT","t":m["t"].as_i64().unwrap() + 2,"bs":2}));
    c.until(|x| x["type"] == "update" && x["sym"] == "MSFT" && x["bs"] == 2)
        .await;
    let after: Vec<&Value> = c.received[seen..]
        .iter()
        .filter(|x| x["sym"] == "AAPL")
        .collect();
    assert!(after.is_empty(), "AAPL after unsubscribed: {after:?}");
}

#[tokio::test]
async fn a_paused_reader_gets_the_latest_state_not_a_backlog() {
    let app = quiet_app().await;
    let mut c = Client::connect(&app.ws_url("")).await;
    c.subscribe(&["TSLA"], 50.0).await;
    c.until_type("snapshot").await;
    // The client reads nothing while 2,000 updates go by.
    let base = app.rest_quote("TSLA").await;
    let t0 = base["t"].as_i64().unwrap();
    for i in 1..=2_000u64 {
        app.publish(json!({"sym":"TSLA","t":t0 + i as i64,"bs":100 * i,"ls":i}));
    }
    let seen = c.received.len();
    until_converged(&mut c, &app, "TSLA").await;
    let got = c.received[seen..]
        .iter()
        .filter(|m| m["sym"] == "TSLA")
        .count();
    assert!(got < 100, "{got} messages for 2,000 updates: not conflated");
    assert_eq!(c.state["TSLA"]["bs"], 200_000);
}
