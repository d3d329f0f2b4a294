//! The HTTP side of the gateway against a real server: the symbol and quote API,
//! its JSON errors, the feeds report, health/readiness and the Prometheus endpoint.

mod common;
use common::*;

use serde_json::{json, Value};

/// The valid quote lines of the shipped sample, as JSON objects.
fn sample_lines() -> Vec<Value> {
    std::fs::read_to_string(sample_recording())
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("sample line is JSON"))
        .collect()
}

/// A replay feed entry named `name` on `file`, played as fast as possible.
fn replay_feed(name: &str, file: &std::path::Path, start_timeout: &str) -> String {
    format!(
        "[[feeds]]\nname = {name:?}\nkind = \"replay\"\nfile = {:?}\nspeed = 0\nstart_timeout = {start_timeout:?}\n",
        file.to_str().unwrap()
    )
}

/// True for a decimal string with exactly two digits after the point.
fn two_decimals(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let s = s.strip_prefix('-').unwrap_or(s);
    match s.split_once('.') {
        Some((int, frac)) => {
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.len() == 2
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Asserts an error body of the protocol's shape with `code`.
fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

/// GET that does not insist on a JSON body (for checking content types).
async fn get_raw(app: &TestApp, path: &str) -> (u16, Option<String>, String) {
    let r = app.http.get(app.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, ctype, r.text().await.unwrap())
}

#[tokio::test]
async fn symbols_lists_the_universe() {
    let app = spawn_app("").await;
    let (status, body) = app.get_json("/api/v1/symbols").await;
    assert_eq!(status, 200, "{body}");
    let list = body.as_array().expect("symbols is an array");
    assert!(list.len() >= 500, "only {} symbols", list.len());
    for entry in list {
        let obj = entry.as_object().expect("each symbol is an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["feed", "name", "sym"], "{entry}");
        assert!(obj.values().all(Value::is_string), "{entry}");
    }
    let aapl = list
        .iter()
        .find(|e| e["sym"] == "AAPL")
        .expect("AAPL is in the universe");
    assert!(!aapl["name"].as_str().unwrap().is_empty(), "{aapl}");
}

#[tokio::test]
async fn quote_after_replay_matches_the_recording() {
    let app = spawn_app(&replay_instant()).await;
    app.wait_feeds_done().await;

    let (status, q) = app.get_json("/api/v1/quotes/AAPL").await;
    assert_eq!(status, 200, "{q}");
    assert_eq!(q["sym"], "AAPL", "{q}");
    assert!(q["t"].is_i64(), "{q}");
    let aapl_lines: Vec<Value> = sample_lines()
        .into_iter()
        .filter(|l| l["sym"] == "AAPL")
        .collect();
    assert!(!aapl_lines.is_empty());
    assert_eq!(q["seq"].as_u64(), Some(aapl_lines.len() as u64), "{q}");
    assert_eq!(q["t"], aapl_lines.last().unwrap()["t"], "{q}");
    for k in ["bp", "ap", "lp", "o", "h", "l", "pc"] {
        assert!(
            two_decimals(&q[k]),
            "price {k} is not a two-decimal string: {q}"
        );
    }
    for k in ["bs", "as", "ls", "v"] {
        assert!(q[k].is_u64(), "{k} is not an integer: {q}");
    }

    let (status, many) = app.get_json("/api/v1/quotes?symbols=AAPL,MSFT").await;
    assert_eq!(status, 200, "{many}");
    let many = many.as_array().expect("quotes is an array");
    assert_eq!(many.len(), 2, "{many:?}");
    let from_list = many
        .iter()
        .find(|m| m["sym"] == "AAPL")
        .expect("AAPL in the list");
    assert_eq!(from_list, &q);
    assert!(many.iter().any(|m| m["sym"] == "MSFT"), "{many:?}");
}

#[tokio::test]
async fn unknown_and_unquoted_symbols_are_404() {
    let app = spawn_app(&replay_instant()).await;
    app.wait_feeds_done().await;

    for path in ["/api/v1/quotes/ZZZZ", "/api/v1/quotes?symbols=AAPL,ZZZZ"] {
        let (status, body) = app.get_json(path).await;
        assert_error(status, &body, 404, "unknown_symbol");
        assert_eq!(body["symbols"], json!(["ZZZZ"]), "{path}: {body}");
    }

    let long = "A".repeat(20);
    for bad in ["aapl", long.as_str()] {
        let (status, body) = app.get_json(&format!("/api/v1/quotes/{bad}")).await;
        assert_error(status, &body, 404, "unknown_symbol");
        assert_eq!(body["symbols"], json!([bad]), "{body}");
        let (status, body) = app.get_json(&format!("/api/v1/quotes?symbols={bad}")).await;
        assert_error(status, &body, 404, "unknown_symbol");
        assert_eq!(body["symbols"], json!([bad]), "{body}");
    }

    // IBM is in the universe but not in the sample recording.
    assert!(sample_lines().iter().all(|l| l["sym"] != "IBM"));
    let (status, body) = app.get_json("/api/v1/symbols").await;
    assert_eq!(status, 200);
    assert!(body.as_array().unwrap().iter().any(|s| s["sym"] == "IBM"));
    let (status, body) = app.get_json("/api/v1/quotes/IBM").await;
    assert_error(status, &body, 404, "no_quote");
}

#[tokio::test]
async fn bad_requests_answer_json_errors() {
    let app = spawn_app("").await;

    let (status, body) = app.get_json("/nope").await;
    assert_error(status, &body, 404, "not_found");

    let (status, body) = app.get_json("/api/v1/quotes?bogus=1").await;
    assert_error(status, &body, 400, "bad_request");

    // A plain GET, no upgrade headers.
    let (status, body) = app.get_json("/ws").await;
    assert_error(status, &body, 400, "bad_request");

    let (status, body) = app.get_json("/ws?format=xml").await;
    assert_error(status, &body, 400, "bad_request");

    // A method the endpoint does not answer: 405, and the ones it does in Allow.
    let r = app.http.put(app.url("/poll/s-1")).send().await.unwrap();
    let allow = r
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let status = r.status().as_u16();
    assert_error(status, &r.json().await.unwrap(), 405, "method_not_allowed");
    assert_eq!(allow.as_deref(), Some("DELETE, GET, POST"));

    // The error bodies are JSON by content type as well.
    let (_, ctype, _) = get_raw(&app, "/nope").await;
    assert!(
        ctype
            .as_deref()
            .unwrap_or("")
            .starts_with("application/json"),
        "{ctype:?}"
    );
}

#[tokio::test]
async fn feeds_report_the_finished_replay() {
    let app = spawn_app(&replay_instant()).await;
    let feeds = app.wait_feeds_done().await;
    let list = feeds.as_array().unwrap();
    assert_eq!(list.len(), 1, "{feeds}");
    let f = &list[0];
    assert_eq!(f["name"], "replay", "{f}");
    assert_eq!(f["kind"], "replay", "{f}");
    assert_eq!(f["state"], "finished", "{f}");
    let valid = sample_lines().len() as u64;
    assert_eq!(valid, 3000);
    assert_eq!(f["quotes_received"].as_u64(), Some(valid), "{f}");
    assert_eq!(f["quotes_rejected"].as_u64(), Some(0), "{f}");
    assert!(f["last_quote_age_ms"].is_u64(), "{f}");
}

#[tokio::test]
async fn malformed_replay_lines_are_counted_and_skipped() {
    let text = [
        r#"{"sym":"AAPL","t":1763730000000,"bp":"267.76","bs":600}"#,
        "not json",
        r#"{"sym":"AAPL","t":1763730000001,"bp":"267.77","colour":"red"}"#,
        r#"{"sym":"AAPL","t":1763730000002,"ap":"267.80"}"#,
        r#"{"sym":"AAPL","t":1763730000003,"bp":267.5}"#,
        r#"{"sym":"ZZZZ","t":1763730000004,"bp":"1.00"}"#,
        r#"{"sym":"AAPL","t":1763730000005,"lp":"267.78","ls":100}"#,
    ]
    .join("\n");
    let file = temp_file("bad-lines.ndjson", &text);
    let app = spawn_app(&replay_feed("replay", &file, "60s")).await;
    let feeds = app.wait_feeds_done().await;
    let f = &feeds[0];
    assert_eq!(f["state"], "finished", "{f}");
    assert_eq!(f["quotes_received"].as_u64(), Some(3), "{f}");
    assert_eq!(f["quotes_rejected"].as_u64(), Some(4), "{f}");
    assert_eq!(
        app.metric("ticker_feed_quotes_rejected_total", &[("feed", "replay")])
            .await,
        4.0
    );
    assert_eq!(
        app.metric("ticker_feed_quotes_received_total", &[("feed", "replay")])
            .await,
        3.0
    );

    // Only the three good lines reached the hub.
    let q = app.rest_quote("AAPL").await;
    assert_eq!(q["seq"], 3, "{q}");
    assert_eq!(q["bp"], "267.76", "{q}");
    assert_eq!(q["ap"], "267.80", "{q}");
    assert_eq!(q["lp"], "267.78", "{q}");
}

#[tokio::test]
async fn healthz_and_readyz_without_feeds() {
    let app = spawn_app("").await;
    let (status, body) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok"}));
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ready"}));
}

#[tokio::test]
async fn readyz_waits_for_a_feed_that_has_not_delivered() {
    let file = temp_file(
        "unknown-only.ndjson",
        "{\"sym\":\"ZZZZ\",\"t\":1763730000000,\"bp\":\"1.00\"}\n",
    );
    let app = start_app(&replay_feed("lonely", &file, "60s"));
    let feeds = app.wait_feeds_done().await;
    assert_eq!(feeds[0]["quotes_received"], 0, "{feeds}");
    assert_eq!(feeds[0]["quotes_rejected"], 1, "{feeds}");
    assert!(feeds[0]["last_quote_age_ms"].is_null(), "{feeds}");

    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"status": "starting", "waiting_for": ["lonely"]})
    );

    // Liveness does not depend on the feeds.
    let (status, _) = app.get_json("/healthz").await;
    assert_eq!(status, 200);
}

const METRIC_NAMES: [&str; 11] = [
    "ticker_feed_quotes_received_total",
    "ticker_sessions_active",
    "ticker_subscriptions_active",
    "ticker_messages_sent_total",
    "ticker_frames_sent_total",
    "ticker_sent_bytes_total",
    "ticker_updates_conflated_total",
    "ticker_slow_consumer_closes_total",
    "ticker_client_errors_total",
    "ticker_feed_to_socket_latency_seconds",
    "process_cpu_seconds_total",
];

#[tokio::test]
async fn metrics_expose_every_family() {
    let app = spawn_app(&replay_instant()).await;
    app.wait_feeds_done().await;
    let (status, ctype, text) = get_raw(&app, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        ctype.as_deref().unwrap_or("").starts_with("text/plain"),
        "{ctype:?}"
    );
    let missing: Vec<&str> = METRIC_NAMES
        .iter()
        .copied()
        .filter(|name| !text.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "missing metrics {missing:?} in:\n{text}"
    );
}

#[tokio::test]
async fn metrics_count_sessions_and_subscriptions() {
    let app = spawn_app(&replay_instant()).await;
    app.wait_feeds_done().await;
    assert_eq!(
        app.metric("ticker_sessions_active", &[("transport", "ws")])
            .await,
        0.0
    );
    assert_eq!(app.metric("ticker_subscriptions_active", &[]).await, 0.0);

    let mut client = Client::connect(&app.ws_url("")).await;
    client.subscribe(&["AAPL"], 5.0).await;
    let snap = client
        .until(|m| m["type"] == "snapshot" && m["sym"] == "AAPL")
        .await;
    assert_eq!(snap["seq"], app.rest_quote("AAPL").await["seq"]);

    app.wait_metric("ticker_sessions_active", &[("transport", "ws")], |v| {
        v == 1.0
    })
    .await;
    app.wait_metric("ticker_subscriptions_active", &[], |v| v == 1.0)
        .await;
    app.wait_metric(
        "ticker_messages_sent_total",
        &[("transport", "ws"), ("type", "snapshot")],
        |v| v >= 1.0,
    )
    .await;

    // Ending the session releases both.
    client.ws.close(None).await.unwrap();
    app.wait_metric("ticker_sessions_active", &[("transport", "ws")], |v| {
        v == 0.0
    })
    .await;
    app.wait_metric("ticker_subscriptions_active", &[], |v| v == 0.0)
        .await;
}

#[tokio::test]
async fn several_feeds_run_at_once_each_with_its_own_counters() {
    let app = spawn_app(&format!(
        "{}\n[[feeds]]\nname = \"sim\"\nkind = \"sim\"\nquotes_per_sec = 200.0\nsymbols = [\"IBM\", \"KO\"]\n",
        replay_instant()
    ))
    .await;
    app.wait_metric(
        "ticker_feed_quotes_received_total",
        &[("feed", "sim")],
        |v| v > 2.0,
    )
    .await;
    let (_, feeds) = app.get_json("/api/v1/feeds").await;
    let names: Vec<&str> = feeds
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["replay", "sim"]);
    assert_eq!(feeds[1]["kind"], "sim");
    assert_eq!(feeds[1]["state"], "running");
    assert!(feeds[1]["quotes_received"].as_u64().unwrap() > 2);
    // The sim quotes only its two symbols; the replay its eight.
    assert_eq!(app.rest_quote("IBM").await["sym"], "IBM");
    let (status, _) = app.get_json("/api/v1/quotes/XOM").await;
    assert_eq!(status, 404);
    assert_eq!(app.rest_quote("AAPL").await["sym"], "AAPL");
}

#[tokio::test]
async fn a_looping_replay_plays_its_recording_again_with_later_timestamps() {
    let file = temp_file(
        "three.ndjson",
        "{\"sym\":\"AAPL\",\"t\":1000,\"bp\":\"1.00\"}\n\
         {\"sym\":\"AAPL\",\"t\":1010,\"bp\":\"1.01\"}\n\
         {\"sym\":\"AAPL\",\"t\":1020,\"bp\":\"1.02\"}\n",
    );
    let app = spawn_app(&format!(
        "[[feeds]]\nname = \"tape\"\nkind = \"replay\"\nfile = {:?}\nspeed = 10.0\nloop = true\n",
        file.to_str().unwrap()
    ))
    .await;
    // Three passes or more: the feed keeps going and t moves forward each pass.
    app.wait_metric(
        "ticker_feed_quotes_received_total",
        &[("feed", "tape")],
        |v| v >= 9.0,
    )
    .await;
    let q = app.rest_quote("AAPL").await;
    assert!(q["seq"].as_u64().unwrap() >= 9, "{q}");
    assert!(q["t"].as_i64().unwrap() >= 1020 + 2 * 21, "{q}");
    let (_, feeds) = app.get_json("/api/v1/feeds").await;
    assert_eq!(feeds[0]["state"], "running");
}

#[tokio::test]
async fn the_admin_port_serves_health_readiness_and_metrics_and_nothing_else() {
    let app = spawn_app(&format!("{}\n[server]\nadmin_port = 0\n", replay_instant())).await;
    app.wait_feeds_done().await;
    let admin = app.admin.expect("server.admin_port = 0 binds a port");
    assert_ne!(admin.port(), app.addr.port());
    let get = |path: &str| {
        let url = format!("http://{admin}{path}");
        let http = app.http.clone();
        async move {
            let r = http.get(url).send().await.expect("the admin port answers");
            (r.status().as_u16(), r.text().await.expect("a body"))
        }
    };

    let (status, body) = get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, body) = get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    let missing: Vec<&str> = METRIC_NAMES
        .iter()
        .copied()
        .filter(|name| !text.contains(name))
        .collect();
    assert!(missing.is_empty(), "missing metrics {missing:?}");

    // The clients' endpoints are on the main port only.
    for path in ["/api/v1/symbols", "/ws", "/sse?symbols=AAPL", "/"] {
        let (status, body) = get(path).await;
        let body: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_error(status, &body, 404, "not_found");
    }
    // The main port keeps its own.
    let (status, _, _) = get_raw(&app, "/metrics").await;
    assert_eq!(status, 200);
}
