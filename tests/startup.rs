//! The real `ticker-gateway` binary: bad settings stop start-up with one clear
//! line and exit code 2; a running gateway logs its address, serves, and on
//! SIGTERM/SIGINT closes its WebSockets with 1001 and exits 0; SIGHUP reloads
//! the API keys and the TLS certificate without dropping a connection, closing
//! those whose key was revoked with 4001.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_ticker-gateway");

/// A command for the binary with a clean `TICKER__*` environment.
fn gateway() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TICKER__") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd
}

/// Waits (polling every 20 ms) for `child` to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary, expecting it to refuse to start; returns (exit code, stderr).
fn run_failing(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_exit(&mut child, Duration::from_secs(10));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the gateway started although its settings are invalid");
    }
    let stderr = reader.join().unwrap();
    (status.unwrap().code(), stderr)
}

/// The non-empty lines of `text`.
fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

fn assert_one_line_naming(stderr: &str, needle: &str) {
    let l = lines(stderr);
    assert_eq!(
        l.len(),
        1,
        "expected exactly one line on stderr, got {stderr:?}"
    );
    assert!(l[0].contains(needle), "{needle:?} not named in {:?}", l[0]);
}

#[test]
fn max_rate_below_min_rate_is_refused() {
    let (code, stderr) = run_failing(gateway().env("TICKER__SESSION__MAX_RATE", "0.001"));
    assert_eq!(code, Some(2), "{stderr}");
    assert_one_line_naming(&stderr, "session.max_rate");
}

#[test]
fn bad_duration_in_overlay_is_refused() {
    let file = temp_file("bad.toml", "[session]\nclient_timeout = \"5 parsecs\"\n");
    let (code, stderr) = run_failing(gateway().arg("--config").arg(&file));
    assert_eq!(code, Some(2), "{stderr}");
    assert_one_line_naming(&stderr, "client_timeout");
}

#[test]
fn missing_overlay_is_refused() {
    let (code, stderr) = run_failing(gateway().args(["--config", "/does/not/exist.toml"]));
    assert_eq!(code, Some(2), "{stderr}");
    assert_one_line_naming(&stderr, "/does/not/exist.toml");
}

#[test]
fn a_bad_webrtc_setting_is_refused() {
    let file = temp_file(
        "webrtc.toml",
        "[webrtc]\nenabled = true\npublic_ip = \"gateway.example\"\n",
    );
    let (code, stderr) = run_failing(gateway().arg("--config").arg(&file));
    assert_eq!(code, Some(2), "{stderr}");
    assert_one_line_naming(&stderr, "webrtc.public_ip");
}

#[test]
fn non_numeric_port_is_refused() {
    let (code, stderr) = run_failing(gateway().env("TICKER__SERVER__PORT", "notanumber"));
    assert_ne!(code, Some(0), "{stderr}");
    assert!(code.is_some(), "killed by a signal: {stderr}");
    assert_one_line_naming(&stderr, "port");
}

#[test]
fn check_config_prints_the_effective_settings_of_every_layer_and_exits() {
    let file = temp_file("check.toml", "[session]\nwrite_stall_timeout = \"250ms\"\n");
    let out = gateway()
        .arg("--check-config")
        .arg("--config")
        .arg(&file)
        .env("TICKER__SERVER__PORT", "9123")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // The defaults, the file and the environment, all in one place.
    assert!(stdout.contains("port = 9123"), "{stdout}");
    assert!(
        stdout.contains("write_stall_timeout = \"250ms\""),
        "{stdout}"
    );
    assert!(stdout.contains("heartbeat_interval = \"15s\""), "{stdout}");
    // What it prints is a settings file that loads back to the same settings.
    let printed = temp_file("printed.toml", &stdout);
    let again = gateway()
        .arg("--check-config")
        .arg("--config")
        .arg(&printed)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout), stdout);

    let (code, stderr) = run_failing(
        gateway()
            .arg("--check-config")
            .env("TICKER__SESSION__MAX_RATE", "0.001"),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert_one_line_naming(&stderr, "session.max_rate");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let overlay = temp_file("json-log.toml", "[log]\nformat = \"json\"\n");
    let mut child = gateway()
        .arg("--config")
        .arg(&overlay)
        .env("TICKER__SERVER__PORT", "0")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // The first lines, up to the one that says where it listens.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("listening on");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    // Ends a run that never prints its listening line (the reader then ends too).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (pid, done) = (child.id(), done.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + WAIT;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    let _ = Command::new("kill").arg(pid.to_string()).status();
                    return;
                };
                std::thread::park_timeout(left);
            }
        })
    };
    let lines = reader.join().unwrap();
    done.store(true, std::sync::atomic::Ordering::Release);
    killer.thread().unpark();
    killer.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.last().is_some_and(|l| l.contains("listening on")),
        "no listening line: {lines:?}"
    );
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
    }
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["level"], "INFO");
    assert!(
        last["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{last}"
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ticker-gateway.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/ticker-gateway "));
    for hardening in ["DynamicUser=yes", "NoNewPrivileges=yes", "LimitNOFILE="] {
        assert!(unit.contains(hardening), "{hardening} missing");
    }
    // verify checks that ExecStart is executable: point it at the binary built here.
    let path = temp_file(
        "ticker-gateway.service",
        &unit.replace("/usr/local/bin/ticker-gateway", BIN),
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is needed ({e}); install it with: apt-get install systemd")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown or misspelt directives are only warnings: none allowed.
    assert!(stderr.trim().is_empty(), "{stderr}");
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A running gateway process; killed on drop if it is still running.
struct Gateway {
    child: Child,
    addr: String,
    output: Arc<Mutex<String>>,
}

impl Gateway {
    /// Starts the binary on a free port and waits for its "listening on" line.
    async fn start() -> Gateway {
        let overlay = temp_file("overlay.toml", "[session]\nheartbeat_interval = \"15s\"\n");
        Gateway::start_with(&overlay).await
    }

    /// [`Gateway::start`] with the settings file `overlay`.
    async fn start_with(overlay: &std::path::Path) -> Gateway {
        let mut child = gateway()
            .arg("--config")
            .arg(overlay)
            .env("TICKER__SERVER__PORT", "0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Drain stdout for the whole run (so logging never blocks), reporting the
        // listening address once.
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                out.lock().unwrap().push_str(&line);
                out.lock().unwrap().push('\n');
                if let Some((_, rest)) = line.split_once("listening on ") {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = addr_tx.send(addr);
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                out.lock().unwrap().push_str(&format!("stderr: {line}\n"));
            }
        });
        let addr = tokio::time::timeout(WAIT, addr_rx.recv()).await;
        let mut gw = Gateway {
            child,
            addr: String::new(),
            output,
        };
        match addr {
            Ok(Some(a)) => gw.addr = a,
            _ => panic!("no \"listening on\" line; output:\n{}", gw.output()),
        }
        assert!(
            gw.addr.starts_with("127.0.0.1:") && gw.addr[10..].parse::<u16>().is_ok(),
            "bad address {:?}; output:\n{}",
            gw.addr,
            gw.output()
        );
        gw
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits for the `n`th line of output containing `needle`.
    async fn wait_output(&self, needle: &str, n: usize) {
        let count = || self.output().matches(needle).count();
        poll(&format!("{needle:?} in the output"), || async {
            if count() >= n {
                Ok(())
            } else {
                Err(self.output())
            }
        })
        .await;
    }

    async fn healthz(&self) {
        let r = reqwest::get(format!("http://{}/healthz", self.addr))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, json!({"status": "ok"}));
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits (off the async runtime) for the process to exit within 10 s.
    async fn exit_status(mut self) -> (Option<ExitStatus>, String) {
        let output = self.output.clone();
        let status = tokio::task::spawn_blocking(move || {
            let status = wait_exit(&mut self.child, Duration::from_secs(10));
            drop(self); // kills it if it is still running
            status
        })
        .await
        .unwrap();
        let text = output.lock().unwrap().clone();
        (status, text)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let gw = Gateway::start().await;
    gw.healthz().await;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("websocket connect");
    ws.send(Message::Text(
        json!({"op":"subscribe","symbols":["AAPL"]})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let got_snapshot = tokio::time::timeout(WAIT, async {
        while let Some(frame) = ws.next().await {
            if let Message::Text(t) = frame.expect("websocket frame") {
                let msgs: Value = serde_json::from_str(&t).expect("frame is JSON");
                let msgs = msgs.as_array().expect("frame is an array");
                if msgs
                    .iter()
                    .any(|m| m["type"] == "snapshot" && m["sym"] == "AAPL")
                {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert_eq!(
        got_snapshot.ok(),
        Some(true),
        "no AAPL snapshot; output:\n{}",
        gw.output()
    );

    gw.signal("TERM");

    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = ws.next().await {
            match frame {
                Ok(Message::Close(c)) => return Some(c.map(|c| u16::from(c.code))),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("no close frame within 10 s");
    assert_eq!(close, Some(Some(1001)), "output:\n{}", gw.output());
    // Finish the closing handshake (our reply goes out on the next poll).
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;

    let (status, output) = gw.exit_status().await;
    let status = status.unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{output}"));
    assert!(status.success(), "exit {status:?}; output:\n{output}");
}

#[tokio::test]
async fn sigint_without_clients_exits_0() {
    let gw = Gateway::start().await;
    gw.healthz().await;
    gw.signal("INT");
    let (status, output) = gw.exit_status().await;
    let status = status.unwrap_or_else(|| panic!("still running 10 s after SIGINT:\n{output}"));
    assert!(status.success(), "exit {status:?}; output:\n{output}");
}

/// The settings of the SIGHUP test: TLS from `dir`, and `keys` (settings lines).
fn tls_and_keys(dir: &std::path::Path, keys: &str) -> String {
    format!(
        "[session]\nheartbeat_interval = \"15s\"\n[tls]\ncert = {:?}\nkey = {:?}\n\
         [auth]\nenabled = true\n{keys}",
        dir.join("cert.pem").to_str().unwrap(),
        dir.join("key.pem").to_str().unwrap(),
    )
}

/// Puts `ca`'s server certificate where the settings name it.
fn install_certificate(ca: &tls::TestCa, dir: &std::path::Path) {
    std::fs::copy(ca.cert(), dir.join("cert.pem")).unwrap();
    std::fs::copy(ca.key(), dir.join("key.pem")).unwrap();
}

#[tokio::test]
async fn sighup_reloads_keys_and_certificate_and_closes_revoked_sessions() {
    let old_ca = tls::TestCa::new("old-ca");
    let new_ca = tls::TestCa::new("new-ca");
    let dir = old_ca.dir.join("live");
    std::fs::create_dir_all(&dir).unwrap();
    install_certificate(&old_ca, &dir);
    let (kept, kept_lines) = ticker_gateway::auth::keygen("kept", &["*".into()]);
    let (gone, gone_lines) = ticker_gateway::auth::keygen("gone", &["*".into()]);
    let overlay = dir.join("gateway.toml");
    std::fs::write(
        &overlay,
        tls_and_keys(&dir, &format!("{kept_lines}{gone_lines}")),
    )
    .unwrap();
    let gw = Gateway::start_with(&overlay).await;
    let url = format!("wss://{}/ws", gw.addr);
    let connect = |key: String, ca: &'static tls::TestCa| {
        let url = url.clone();
        async move {
            let bearer = format!("Bearer {key}");
            tls::wss_client(&url, ca, &[], &[("Authorization", &bearer)]).await
        }
    };
    // 'static CAs for the closure above: they live until the test ends.
    let old_ca: &'static tls::TestCa = Box::leak(Box::new(old_ca));
    let new_ca: &'static tls::TestCa = Box::leak(Box::new(new_ca));
    let mut stays = connect(kept.clone(), old_ca).await.unwrap();
    let mut revoked = connect(gone.clone(), old_ca).await.unwrap();
    for c in [&mut stays, &mut revoked] {
        c.subscribe(&["AAPL"], 50.0).await;
        c.until_type("snapshot").await;
    }

    // The second key goes, a certificate from another CA comes; SIGHUP.
    std::fs::write(&overlay, tls_and_keys(&dir, &kept_lines)).unwrap();
    install_certificate(new_ca, &dir);
    gw.signal("HUP");
    gw.wait_output("reloaded", 1).await;

    // The revoked key's session is told, then closed with 4001.
    assert_eq!(revoked.until_closed().await, Some(4001));
    let told = revoked.received.iter().any(|m| {
        m["type"] == "error"
            && m["code"] == "unauthorized"
            && m["message"] == "the credential was revoked"
    });
    assert!(
        told,
        "no unauthorized error before the close: {:?}",
        revoked.received
    );
    // The other stays open on the old certificate and keeps receiving.
    let before = stays.received.len();
    stays.until_type("update").await;
    assert!(stays.received.len() > before);
    // New connections get the new certificate: only the new CA verifies it.
    assert!(
        connect(kept.clone(), old_ca).await.is_err(),
        "the old certificate is still served"
    );
    let mut fresh = connect(kept.clone(), new_ca).await.unwrap();
    fresh.subscribe(&["AAPL"], 50.0).await;
    // The revoked key no longer opens a session.
    let mut refused = connect(gone, new_ca).await.unwrap();
    assert_eq!(refused.until_closed().await, Some(4001));

    // Settings that no longer load change nothing.
    std::fs::write(&overlay, "[session\n").unwrap();
    gw.signal("HUP");
    gw.wait_output("reload failed", 1).await;
    stays.until_type("update").await;
    connect(kept, new_ca)
        .await
        .unwrap()
        .subscribe(&["AAPL"], 50.0)
        .await;
}
