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
use common::process::{check_browser_prerequisites, node_test, run_blocking};
use common::*;

use std::time::Duration;

/// The whole Node run: twelve tests, each bounded by its own timeouts.
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
