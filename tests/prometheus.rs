//! The operators' view against a real Prometheus (Debian package `prometheus`):
//! `/metrics` passes `promtool check metrics`; the shipped alert rules pass
//! `promtool check rules` and their unit tests; a real Prometheus server started
//! with the shipped scrape config scrapes a running gateway with clients connected,
//! and every panel query of the shipped Grafana dashboard and every alert rule is
//! evaluated through Prometheus's HTTP API.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const INSTALL: &str = "install it with: apt-get install -y prometheus (Debian package, provides prometheus and promtool)";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The tool's path, or a failure that says how to install it.
fn tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{name}` is not installed; {INSTALL}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn shipped_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = tool("promtool");
    let dir = repo("dashboards");
    let out = run_ok(
        Command::new(&promtool)
            .args(["check", "rules", "alerts.yml"])
            .current_dir(&dir),
    );
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
    let out = run_ok(
        Command::new(&promtool)
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(&dir),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts.test.yml")).unwrap();
    for line in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "alert {line} has no promtool unit test"
        );
    }
}

/// A Prometheus server process, killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    _dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts Prometheus with the shipped scrape config, pointed at `target` and
/// scraping every second.
fn start_prometheus(target: &str) -> Prometheus {
    let bin = tool("prometheus");
    let shipped = std::fs::read_to_string(repo("dashboards/prometheus.yml")).unwrap();
    assert!(shipped.contains("127.0.0.1:8080"), "example target moved");
    let config = shipped
        .replace("127.0.0.1:8080", target)
        .replace("scrape_interval: 15s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace(
            "- alerts.yml",
            &format!("- {}", repo("dashboards/alerts.yml").display()),
        );
    let cfg = temp_file("prometheus.yml", &config);
    let dir = cfg.parent().unwrap().to_path_buf();
    let port = free_port();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

impl Prometheus {
    async fn query(&self, http: &reqwest::Client, expr: &str) -> Value {
        let r = http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "success", "query {expr} failed: {body}");
        body["data"]["result"].clone()
    }

    async fn wait_until(&self, http: &reqwest::Client, expr: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http
                .get(format!("{}/api/v1/query", self.base))
                .query(&[("query", expr)])
                .send()
                .await
            {
                if let Ok(body) = r.json::<Value>().await {
                    if body["data"]["result"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty())
                    {
                        return;
                    }
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "never true: {expr}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Metric names an expression refers to (ours, process_* and up).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut cur = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            if (cur.starts_with("ticker_") || cur.starts_with("process_") || cur == "up")
                && !names.contains(&cur)
            {
                names.push(cur.clone());
            }
            cur.clear();
        }
    }
    names
}

#[tokio::test]
async fn prometheus_scrapes_the_gateway_and_every_panel_and_alert_evaluates() {
    let promtool = tool("promtool");
    let app = spawn_app(
        "[[feeds]]\nname = \"sim\"\nkind = \"sim\"\nquotes_per_sec = 400.0\nhot_fraction = 1.0\n\
         [server]\nadmin_port = 0\n",
    )
    .await;

    // Clients: two keep reading JSON and MessagePack; one sends a bad op; one leaves.
    let mut readers = Vec::new();
    for (i, proto) in ["ticker.v1.json", "ticker.v1.msgpack"].iter().enumerate() {
        let mut c = Client::connect_with(&app.ws_url(""), &[proto]).await;
        c.subscribe(&["SPY", "QQQ", "AAPL", "MSFT"], 50.0).await;
        if i == 0 {
            c.send(json!({"op":"nope"})).await;
            c.until_type("error").await;
        }
        readers.push(tokio::spawn(async move {
            loop {
                if let Event::Closed(_) = c.next_event().await {
                    break;
                }
            }
        }));
    }
    let mut leaver = Client::connect(&app.ws_url("")).await;
    leaver.subscribe(&["TSLA"], 5.0).await;
    drop(leaver);
    app.wait_metric("ticker_connections_closed_total", &[], |v| v >= 1.0)
        .await;

    // promtool lints the live exposition: no warnings at all.
    let body = app.metrics_text().await;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let lint = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && lint.trim().is_empty(),
        "promtool check metrics:\n{lint}"
    );

    // Prometheus scrapes the admin port, as README's Deploying recommends.
    let admin = app.admin.expect("server.admin_port = 0 binds a port");
    let prom = start_prometheus(&admin.to_string());
    let http = reqwest::Client::new();
    prom.wait_until(
        &http,
        "count_over_time(up{job=\"ticker-gateway\"}[1m]) >= 4",
    )
    .await;
    let up = prom.query(&http, "up{job=\"ticker-gateway\"}").await;
    assert_eq!(up[0]["value"][1], "1", "{up}");

    // Every panel query of the dashboard returns series.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo("dashboards/grafana/ticker-gateway.json")).unwrap(),
    )
    .unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "the dashboard needs a Prometheus datasource variable"
    );
    let mut queried = 0;
    for panel in dash["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "15s")
                .replace("$instance", ".*");
            let result = prom.query(&http, &expr).await;
            assert!(
                result.as_array().is_some_and(|r| !r.is_empty()),
                "panel {:?} query returned no series: {expr}",
                panel["title"]
            );
            queried += 1;
        }
    }
    assert!(queried >= 20, "only {queried} panel queries");

    // The feed-health panel for stale symbols and failovers reads the gateway's
    // own numbers (none of either while the one sim feed runs).
    let panel = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Stale symbols and failovers")
        .expect("the dashboard has a stale-symbols panel");
    for (target, metric) in panel["targets"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["ticker_symbols_stale", "ticker_feed_failovers_total"])
    {
        let expr = target["expr"].as_str().unwrap();
        assert!(expr.contains(metric), "{expr} does not read {metric}");
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        let result = prom.query(&http, &expr).await;
        assert_eq!(result.as_array().map(Vec::len), Some(1), "{expr}: {result}");
        assert_eq!(app.metric(metric, &[]).await, 0.0, "{metric}");
        assert_eq!(result[0]["value"][1], "0", "{expr}: {result}");
    }

    // Every alert rule is loaded, evaluates cleanly, and refers only to metrics
    // that exist.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rules = loop {
        let r: Value = http
            .get(format!("{}/api/v1/rules", prom.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rules: Vec<Value> = r["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        let evaluated = rules.iter().all(|r| {
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001"))
        });
        if rules.len() == 7 && evaluated {
            break rules;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rules never evaluated: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        let expr = rule["query"].as_str().unwrap();
        prom.query(&http, expr).await;
        for name in metric_names(expr) {
            let series = prom.query(&http, &format!("count({name})")).await;
            assert!(
                series.as_array().is_some_and(|s| !s.is_empty()),
                "alert {} refers to {name}, which has no series",
                rule["name"]
            );
        }
    }
    for r in readers {
        r.abort();
    }
}
