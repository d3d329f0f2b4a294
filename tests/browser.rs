//! The dashboard page in a real browser: starts the gateway with a simulated
//! market, then runs the Node test file `tests/browser/dashboard.test.mjs`, which
//! drives headless Chromium (playwright-core) against it: the page loads and
//! streams over WebSocket, the watchlist is edited, unknown symbols are reported,
//! and the client falls back to SSE and long-polling when the transports before
//! them are made unavailable.
//!
//! Needs `node` (>= 20), `npm ci --prefix tests/browser` and `/usr/bin/chromium`
//! (`apt-get install -y chromium`); without them this test fails saying so.

mod common;
use common::*;

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole Node run: twelve tests, each bounded by its own timeouts.
const NODE_TIMEOUT: Duration = Duration::from_secs(600);

/// Every universe symbol quotes, about 0.4 quotes/s each: a watchlist row changes
/// every few seconds, like a real screen.
const SIM_FEED: &str =
    "[[feeds]]\nname = \"sim\"\nkind = \"sim\"\nquotes_per_sec = 300.0\nhot_fraction = 1.0\n";

const CHROMIUM: &str = "/usr/bin/chromium";

/// Fails with a message saying how to install whatever is missing.
fn check_prerequisites(root: &Path) {
    let mut missing = Vec::new();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => missing
            .push("`node` (>= 20) is not on PATH; run: apt-get install -y nodejs npm".to_owned()),
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        missing.push(
            "tests/browser/node_modules/playwright-core is missing; run: npm ci --prefix tests/browser"
                .to_owned(),
        );
    }
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!(
            "{CHROMIUM} is missing; run: apt-get install -y chromium"
        ));
    }
    assert!(
        missing.is_empty(),
        "the browser tests cannot run:\n  {}",
        missing.join("\n  ")
    );
}

/// Runs `cmd` to completion (killing it after `timeout`); returns whether it
/// succeeded and everything it printed.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (bool, String) {
    // Its own process group, so a timeout ends node's test worker and Chromium too.
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    // Drain both pipes on their own threads so the child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let (ok, note) = loop {
        match child.try_wait().expect("wait for node") {
            Some(status) => break (status.success(), format!("node exited: {status}")),
            None if Instant::now() > deadline => {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                break (false, format!("node killed after {timeout:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let text = format!(
        "{}\n--- stderr ---\n{}\n{note}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    (ok, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root);

    let app = spawn_app(SIM_FEED).await;
    let mut cmd = Command::new("node");
    cmd.args([
        "--test",
        "--test-reporter=spec",
        "tests/browser/dashboard.test.mjs",
    ])
    .current_dir(root)
    .env("GATEWAY_URL", format!("http://{}", app.addr));

    let (ok, output) = tokio::task::spawn_blocking(move || run_with_timeout(cmd, NODE_TIMEOUT))
        .await
        .expect("node runner");
    assert!(ok, "browser tests failed:\n{output}");
    println!("{output}");
}
