//! The dashboard page in a real browser: starts the gateway with a simulated
//! market, then runs the Node test file `tests/browser/dashboard.test.mjs`, which
//! drives headless Chromium (playwright-core) against it: the page loads and
//! streams over WebSocket, the watchlist is edited, unknown symbols are reported,
//! and the client falls back to SSE and long-polling when the transports before
//! them are made unavailable; and the client library resumes after a drop.
//!
//! Needs `node` (>= 20), `npm ci --prefix tests/browser` and `/usr/bin/chromium`
//! (`apt-get install -y chromium`); without them this test fails saying so.

mod common;
use common::process::{check_browser_prerequisites, node_test, run_blocking};
use common::*;

use std::time::Duration;

/// The whole Node run: ten tests, each bounded by its own timeouts.
const NODE_TIMEOUT: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_in_headless_chromium() {
    check_browser_prerequisites();

    let app = spawn_app(BUSY_SIM_FEED).await;
    let cmd = node_test(&[], "tests/browser/dashboard.test.mjs", app.addr);
    let (ok, output) = run_blocking(cmd, NODE_TIMEOUT).await;
    assert!(ok, "browser tests failed:\n{output}");
    println!("{output}");
}

/// A market where AAPL never moves (its feed publishes the opening quote and
/// then waits an hour) and MSFT keeps moving.
const STILL_AAPL_MOVING_MSFT: &str = "[[feeds]]\nname = \"still\"\nkind = \"sim\"\n\
    quotes_per_sec = 1.0\nsymbols = [\"AAPL\"]\nstart_delay = \"1h\"\n\
    [[feeds]]\nname = \"moving\"\nkind = \"sim\"\nquotes_per_sec = 5.0\nsymbols = [\"MSFT\"]\n";

/// `/client.js` reconnecting with `resume` (`tests/browser/resume.test.mjs`):
/// over WebSocket and long-polling, after a drop it gets a snapshot of MSFT only,
/// keeps its AAPL state, and converges to the REST quotes.
#[tokio::test(flavor = "multi_thread")]
async fn client_resumes_in_headless_chromium() {
    check_browser_prerequisites();

    let app = spawn_app(STILL_AAPL_MOVING_MSFT).await;
    let cmd = node_test(&[], "tests/browser/resume.test.mjs", app.addr);
    let (ok, output) = run_blocking(cmd, NODE_TIMEOUT).await;
    assert!(ok, "browser tests failed:\n{output}");
    println!("{output}");
}

/// The dashboard over WebRTC DataChannels (`tests/browser/webrtc.test.mjs`):
/// live prices over the channel, and WebSocket when the UDP port cannot be
/// reached. Chromium runs with the two flags WebRTC on loopback needs.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_over_webrtc_in_headless_chromium() {
    check_browser_prerequisites();

    let app = spawn_app(&format!(
        "{BUSY_SIM_FEED}\n[webrtc]\nenabled = true\nudp_port = 0\n"
    ))
    .await;
    let cmd = node_test(&[], "tests/browser/webrtc.test.mjs", app.addr);
    let (ok, output) = run_blocking(cmd, NODE_TIMEOUT).await;
    assert!(ok, "browser tests failed:\n{output}");
    println!("{output}");
    assert!(
        app.metric(
            "ticker_connections_opened_total",
            &[("transport", "webrtc")]
        )
        .await
            >= 2.0
    );
}
