//! External programs the tests run (Node, schemathesis): started in their own
//! process group, bounded in time, with everything they print kept.

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser the Node-side tests drive.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Fails with a message saying how to install whatever the browser tests need
/// (Node, playwright-core, Chromium) and is missing.
pub fn check_browser_prerequisites() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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

/// Runs `cmd` to completion (killing it and its children after `timeout`);
/// returns whether it succeeded and everything it printed.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (bool, String) {
    let name = cmd.get_program().to_string_lossy().into_owned();
    // Its own process group, so a timeout ends its workers (a browser, …) too.
    let mut child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
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
    // Its group goes too: a worker left holding the pipes would keep the
    // readers below waiting forever.
    let kill_group = |child: &std::process::Child| {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            // A group that is gone already is what we want.
            .stderr(std::process::Stdio::null())
            .status();
    };
    let (ok, note) = loop {
        match child.try_wait().expect("wait for the child") {
            Some(status) => {
                kill_group(&child);
                break (status.success(), format!("{name} exited: {status}"));
            }
            None if Instant::now() > deadline => {
                kill_group(&child);
                let _ = child.kill();
                let _ = child.wait();
                break (false, format!("{name} killed after {timeout:?}"));
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

/// Runs `cmd` on a blocking thread (the test's runtime keeps serving the
/// gateway meanwhile); see [`run_with_timeout`].
pub async fn run_blocking(cmd: Command, timeout: Duration) -> (bool, String) {
    tokio::task::spawn_blocking(move || run_with_timeout(cmd, timeout))
        .await
        .expect("process runner")
}

/// `node ARGS` in the source tree, with the gateway at `gateway` in `GATEWAY_URL`.
pub fn node(args: &[&str], gateway: SocketAddr) -> Command {
    let mut cmd = Command::new("node");
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GATEWAY_URL", format!("http://{gateway}"));
    cmd
}

/// Node's test runner on `file` (after node's `flags`), against `gateway`.
pub fn node_test(flags: &[&str], file: &str, gateway: SocketAddr) -> Command {
    let mut cmd = node(flags, gateway);
    cmd.args(["--test", "--test-reporter=spec", file]);
    cmd
}
