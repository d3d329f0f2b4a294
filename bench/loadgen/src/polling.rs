//! One Socket.IO client on Engine.IO's HTTP long-polling (`--protocol
//! socketio-polling`), as `socket.io-client` runs before (or without) its
//! upgrade: the handshake `GET`, then a `GET` that waits for packets (joined by
//! `\x1e`) on one keep-alive connection, and a `POST` for what the client sends
//! on another. Plain HTTP/1.1 written by hand: what is measured is the server.
//! Each answered `GET` counts as one frame.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{now_us, tcp_connect, timed, Client, Plan, Progress};
use crate::frame::{self, SioAction, Tally};

/// One keep-alive HTTP/1.1 connection.
struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    async fn open(server: SocketAddr, source: IpAddr) -> Result<Http, String> {
        Ok(Http {
            stream: tcp_connect(server, source).await?,
            buf: Vec::with_capacity(4096),
        })
    }

    /// One request; the response's status and body (`content-length` bodies
    /// only, which is what the gateway sends).
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: text/plain;charset=UTF-8\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("io {:?}", e.kind()))?;
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or("bad status line")?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("no content-length")?;
        while self.buf.len() < end + len {
            self.fill().await?;
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Ok((status, body))
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err("eof".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("io {:?}", e.kind())),
        }
    }
}

/// One polling client for the whole run (no churn). `settle` as in
/// [`crate::client::run`].
pub async fn run(plan: Arc<Plan>, client: Client, settle: impl FnOnce()) {
    let stats = &plan.stats;
    // The URL's path and query (`--url ws://host:port/socket.io/?EIO=4&transport=polling`).
    let base = plan
        .url
        .splitn(4, '/')
        .nth(3)
        .map_or_else(|| "/".to_owned(), |p| format!("/{p}"));
    let opened = timed(&plan, async {
        let mut get = Http::open(plan.server, client.source).await?;
        let post = Http::open(plan.server, client.source).await?;
        let (status, body) = get.request("GET", &base, b"").await?;
        if status != 200 || body.first() != Some(&b'0') {
            return Err(format!("handshake: http {status}"));
        }
        let open: serde_json::Value =
            serde_json::from_slice(&body[1..]).map_err(|_| "handshake: body")?;
        let sid = open["sid"].as_str().ok_or("handshake: no sid")?.to_owned();
        Ok((get, post, sid))
    })
    .await;
    let Some((mut get, mut post, sid)) = opened else {
        return settle();
    };
    stats.open.fetch_add(1, Ordering::Relaxed);
    let path = format!("{base}&sid={sid}");
    let mut settle = Some(settle);
    let mut tally = Tally::default();
    let mut progress = Progress::start();
    // The client's first packet: connect to the namespace.
    let mut outgoing: Vec<Vec<u8>> = vec![b"40".to_vec()];
    'run: loop {
        if !outgoing.is_empty() {
            let body = outgoing.join(&b'\x1e');
            outgoing.clear();
            match post.request("POST", &path, &body).await {
                Ok((200, _)) => {}
                Ok((status, _)) => break stats.error(format!("post: http {status}")),
                Err(e) => break stats.error(format!("post: {e}")),
            }
        }
        let body = match get.request("GET", &path, b"").await {
            Ok((200, body)) => body,
            Ok((status, _)) => break stats.error(format!("poll: http {status}")),
            Err(e) => break stats.error(format!("poll: {e}")),
        };
        tally.reset();
        for packet in body.split(|&b| b == b'\x1e') {
            match frame::read_socketio(packet, now_us(), &mut tally) {
                Ok(SioAction::None) => {}
                Ok(SioAction::Reply(p)) => outgoing.push(p.as_bytes().to_vec()),
                Ok(SioAction::Subscribe) => {
                    progress = Progress::start();
                    if let Message::Text(t) = &client.subscribe {
                        outgoing.push(t.as_bytes().to_vec());
                    }
                }
                Ok(SioAction::Closed) => {
                    stats.close("socketio");
                    break 'run;
                }
                Err(_) => stats.error("parse: socketio"),
            }
        }
        progress.frame(stats, &client, body.len(), &tally, &mut settle);
        if stats.done() {
            break;
        }
    }
    if let Some(f) = settle.take() {
        f();
    }
    progress.end(stats);
    stats.open.fetch_sub(1, Ordering::Relaxed);
}
