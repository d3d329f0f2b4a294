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
use common::process::{node_test, run_blocking};
use common::*;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    check_prerequisites(root);

    let app = spawn_app(SIM_FEED).await;
    let cmd = node_test(&[], "tests/browser/dashboard.test.mjs", app.addr);
    let (ok, output) = run_blocking(cmd, NODE_TIMEOUT).await;
    assert!(ok, "browser tests failed:\n{output}");
    println!("{output}");
}
