//! The dashboard and `/client.js` against a gateway with authentication on, in
//! headless Chromium: starts the gateway with a simulated market, an API key for
//! every symbol, one for `A*`, HS256 tokens and a leeway of 0 s, plus two blank
//! pages on other ports of their own (other origins), the first of them listed in
//! `server.allowed_origins`; then runs the Node test file
//! `tests/browser/auth.test.mjs`: the dashboard takes a key from `#token=` or its
//! token field and streams over WebSocket, SSE (with tickets) and long-polling (with
//! the bearer header); without a key, or with a bad one, it shows the refusal and
//! gets no quote; function tokens are refreshed before they expire; a page of the
//! listed origin uses the gateway with the `Authorization` header, the other is
//! refused at the CORS preflight.
//!
//! Needs what tests/browser.rs needs: `node` (>= 20), `npm ci --prefix
//! tests/browser` and `/usr/bin/chromium`.

mod common;
use common::process::{check_browser_prerequisites, node_test, run_blocking};
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// The whole Node run: ten tests, each bounded by its own timeouts.
const NODE_TIMEOUT: Duration = Duration::from_secs(600);

/// The HS256 secret the gateway checks tokens with and the Node side signs them with.
const SECRET: &str = "the-browser-test-secret-that-is-long-enough";

/// Answers one request (whatever it asks for) with a blank HTML page.
fn answer_blank(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = "<!doctype html><meta charset=\"utf-8\"><title>another origin</title>";
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A page of another origin than the gateway's: a blank page served for any path
/// on a port of its own; returns its address.
fn serve_blank_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            // A connection of its own thread: a browser's idle preconnect blocks no one.
            std::thread::spawn(move || answer_blank(stream));
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_client_with_authentication_in_headless_chromium() {
    check_browser_prerequisites();

    let listed = serve_blank_page();
    let other = serve_blank_page();
    let (key, key_lines) = ticker_gateway::auth::keygen("desk-1", &["*".into()]);
    let (key_a, key_a_lines) = ticker_gateway::auth::keygen("desk-a", &["A*".into()]);
    let secret = temp_file("jwt-secret", &format!("{SECRET}\n"));
    let overlay = format!(
        "{BUSY_SIM_FEED}[server]\nallowed_origins = [\"http://{listed}\"]\n\
         [auth]\nenabled = true\nleeway = \"0s\"\n\
         [auth.jwt]\nalgorithm = \"HS256\"\nsecret_file = {:?}\n{key_lines}{key_a_lines}",
        secret.to_str().unwrap()
    );
    let app = spawn_app(&overlay).await;

    let mut cmd = node_test(&[], "tests/browser/auth.test.mjs", app.addr);
    cmd.env("AUTH_KEY", &key)
        .env("AUTH_KEY_A", &key_a)
        .env("JWT_SECRET", SECRET)
        .env("LISTED_PAGE", format!("http://{listed}/"))
        .env("OTHER_PAGE", format!("http://{other}/"));
    let (ok, output) = run_blocking(cmd, NODE_TIMEOUT).await;
    assert!(ok, "browser tests failed:\n{output}");
    println!("{output}");
}
