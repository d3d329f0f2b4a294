//! Feed status (PROTOCOL.md section 10) with real nats-server processes: a lost
//! bus turns its symbols stale on the WebSocket and SSE alike (and in the API),
//! its return makes them live with fresh state; a symbol with a backup feed
//! moves to it when the primary is lost, the status names the backup, `seq`
//! keeps growing and the client converges.

mod common;

use common::fallback::{Source, Sse};
use common::nats::NatsServer;
use common::{spawn_app, Client, TestApp};
use serde_json::{json, Value};

/// A `nats` feed named `name` on `nats`, with extra keys.
fn nats_feed(name: &str, nats: &NatsServer, extra: &str) -> String {
    format!(
        "[[feeds]]\nname = {name:?}\nkind = \"nats\"\nurl = {url:?}\n{extra}\n",
        url = nats.url()
    )
}

/// Publishes AAPL's quote straight onto the bus, as another gateway would.
async fn publish(nats: &NatsServer, seq: u64, bp: &str) {
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let body = json!({"sym": "AAPL", "seq": seq, "t": seq, "bp": bp, "pub": "p1"});
    raw.publish("ticker.quotes.AAPL", body.to_string().into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
}

fn is_status(m: &Value, state: &str) -> bool {
    m["type"] == "status" && m["sym"] == "AAPL" && m["state"] == state
}

/// Reads until AAPL's `seq` comes, then until the client's view of AAPL
/// equals the API's quote.
async fn converge(app: &TestApp, client: &mut Client, seq: u64) {
    client
        .until(|m| m["sym"] == "AAPL" && m["seq"] == seq)
        .await;
    let want = app.rest_quote("AAPL").await;
    while client.state.get("AAPL") != Some(&want) {
        client.next_event().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bus_turns_its_symbols_stale_everywhere_and_its_return_live() {
    let mut nats = NatsServer::start().await;
    let app = spawn_app(&nats_feed("bus", &nats, "")).await;
    let mut ws = Client::connect(&app.ws_url("")).await;
    ws.subscribe(&["AAPL"], 50.0).await;
    let mut sse = Sse::open(&app, "symbols=AAPL").await;
    let conn = "ticker-gateway feed bus";
    nats.wait_subscriptions(conn, &["ticker.quotes.AAPL"]).await;
    publish(&nats, 7, "1.00").await;
    ws.until(|m| m["sym"] == "AAPL" && m["seq"] == 7).await;
    sse.until(|m| m["sym"] == "AAPL" && m["seq"] == 7).await;

    nats.kill();
    let status = ws.until(|m| m["type"] == "status").await;
    assert!(is_status(&status, "stale"), "{status}");
    assert_eq!(status["reason"], "feed bus down");
    assert!(status["since"].as_i64().unwrap() > 1_700_000_000_000);
    let on_sse = sse.until(|m| m["type"] == "status").await;
    assert_eq!(on_sse, status, "the same message on SSE");
    assert_eq!(app.rest_quote("AAPL").await["stale"], true);
    assert_eq!(app.metric("ticker_symbols_stale", &[]).await, 1.0);
    // A client arriving now gets a snapshot that says so.
    let mut late = Client::connect(&app.ws_url("")).await;
    late.subscribe(&["AAPL"], 50.0).await;
    let snap = late.until_type("snapshot").await;
    assert_eq!((&snap["stale"], &snap["seq"]), (&json!(true), &json!(7)));

    nats.restart().await;
    let status = ws.until(|m| m["type"] == "status").await;
    assert_eq!(
        status,
        json!({"type":"status","sym":"AAPL","state":"live","feed":"bus"})
    );
    assert!(is_status(
        &sse.until(|m| m["type"] == "status").await,
        "live"
    ));
    nats.wait_subscriptions(conn, &["ticker.quotes.AAPL"]).await;
    publish(&nats, 8, "1.50").await;
    converge(&app, &mut ws, 8).await;
    assert!(app.rest_quote("AAPL").await.get("stale").is_none());
    assert_eq!(ws.state["AAPL"]["bp"], "1.50");
    app.wait_metric("ticker_symbols_stale", &[], |v| v == 0.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_primary_hands_its_symbols_to_the_backup_without_a_gap() {
    let mut main_bus = NatsServer::start().await;
    let spare_bus = NatsServer::start().await;
    let app = spawn_app(&format!(
        "{}{}",
        nats_feed("primary", &main_bus, "priority = 10"),
        nats_feed("backup", &spare_bus, "priority = 1"),
    ))
    .await;
    let mut client = Client::connect(&app.ws_url("")).await;
    client.subscribe(&["AAPL"], 50.0).await;
    main_bus
        .wait_subscriptions("ticker-gateway feed primary", &["ticker.quotes.AAPL"])
        .await;
    spare_bus
        .wait_subscriptions("ticker-gateway feed backup", &["ticker.quotes.AAPL"])
        .await;
    publish(&main_bus, 1, "1.00").await;
    client
        .until(|m| m["sym"] == "AAPL" && m["bp"] == "1.00")
        .await;
    // While the primary is live, the backup's quotes are not used.
    publish(&spare_bus, 5, "9.99").await;
    app.wait_metric(
        "ticker_feed_quotes_standby_total",
        &[("feed", "backup")],
        |v| v == 1.0,
    )
    .await;
    assert_eq!(app.rest_quote("AAPL").await["bp"], "1.00");

    main_bus.kill();
    let status = client.until(|m| m["type"] == "status").await;
    assert_eq!(
        status,
        json!({"type":"status","sym":"AAPL","state":"live","feed":"backup"})
    );
    publish(&spare_bus, 6, "2.00").await;
    // The client's checker fails on any seq that does not grow.
    converge(&app, &mut client, 6).await;
    assert_eq!(client.state["AAPL"]["bp"], "2.00");
    assert_eq!(
        client.state["AAPL"]["seq"], 6,
        "the bus's number, above the last"
    );
    assert!(app.metric("ticker_feed_failovers_total", &[]).await >= 1.0);
    assert_eq!(app.metric("ticker_symbols_stale", &[]).await, 0.0);
}
