//! Signalling: `POST /webrtc/offer` with `{"sdp": offer}` on a fresh TCP
//! connection (a tiny HTTP/1.1 client, as for the symbol list), the answer's
//! SDP back.

use std::net::SocketAddr;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::universe::http_body;

#[derive(Deserialize)]
struct Answer {
    sdp: String,
}

/// Posts `offer` to the gateway at `server`; the answer's SDP, or an error
/// key for the report.
pub async fn post_offer(server: SocketAddr, offer: &str) -> Result<String, String> {
    let body = serde_json::json!({ "sdp": offer }).to_string();
    let req = format!(
        "POST /webrtc/offer HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let io = |e: std::io::Error| format!("offer: io {:?}", e.kind());
    let mut tcp = TcpStream::connect(server).await.map_err(io)?;
    tcp.write_all(req.as_bytes()).await.map_err(io)?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.map_err(io)?;
    let body = http_body(&raw).map_err(|e| format!("offer: {e}"))?;
    let answer: Answer =
        serde_json::from_slice(&body).map_err(|_| "offer: the answer is not {\"sdp\": ...}")?;
    Ok(answer.sdp)
}
