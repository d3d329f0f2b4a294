//! The TypeScript declarations of the client library (`src/web/client.d.ts`,
//! served at `/client.d.ts`) against the client itself: `tsc` (pinned in
//! `tests/browser/package.json`) checks `tests/browser/typed-example.ts`, which
//! uses the whole API and, in a function never called, wrong uses the
//! declarations must refuse; then the compiled example runs in Node against a
//! real gateway over WebSocket, SSE and long-polling, with the `/client.js` it
//! serves, so a declaration the client does not live up to fails too.
//!
//! Needs `node` (>= 20) and `npm ci --prefix tests/browser` (`tests/run` does it).

mod common;
use common::process::{node, run_blocking};
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NODE_TIMEOUT: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tsc` from tests/browser, with `args`; fails saying how to install it.
fn tsc(args: &[&str]) -> Command {
    let tsc = root().join("tests/browser/node_modules/typescript/bin/tsc");
    assert!(
        tsc.exists(),
        "{} is missing; run: tests/run --setup (or npm ci --prefix tests/browser)",
        tsc.display()
    );
    let mut cmd = Command::new("node");
    cmd.arg(tsc)
        .args(["-p", "tests/browser/tsconfig.json"])
        .args(args)
        .current_dir(root());
    cmd
}

#[tokio::test]
async fn the_declarations_are_served_as_they_are_kept() {
    let app = quiet_app().await;
    let r = app.http.get(app.url("/client.d.ts")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/typescript; charset=utf-8"
    );
    let served = r.text().await.unwrap();
    assert_eq!(served, include_str!("../src/web/client.d.ts"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_typed_example_checks_and_runs_over_every_transport() {
    let (ok, output) = run_blocking(tsc(&["--noEmit"]), NODE_TIMEOUT).await;
    assert!(ok, "tsc --noEmit found type errors:\n{output}");

    let out: PathBuf = std::env::temp_dir().join(format!("ticker-typed-{}", std::process::id()));
    let out_dir = out.to_str().unwrap();
    let (ok, output) = run_blocking(
        tsc(&["--noEmit", "false", "--outDir", out_dir]),
        NODE_TIMEOUT,
    )
    .await;
    assert!(ok, "tsc could not compile the example:\n{output}");

    let app = quiet_app().await;
    let mut node = node(
        &[
            "--experimental-websocket",
            "tests/browser/typed-example.run.mjs",
        ],
        app.addr,
    );
    node.arg(out.join("typed-example.js"));
    let (ok, output) = run_blocking(node, NODE_TIMEOUT).await;
    assert!(
        ok,
        "the typed example failed against the gateway:\n{output}"
    );
    println!("{output}");
}
