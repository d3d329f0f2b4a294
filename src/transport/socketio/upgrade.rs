//! Engine.IO's upgrade from polling to WebSocket, on the worker that took the
//! WebSocket: the client probes (`2probe` → `3probe`), then the connection
//! goes to the session's driver, wherever it runs. From then on its `GET`s are
//! answered at once (a noop when there is nothing) so the client can finish
//! polling, and when the client's `5` (upgrade) arrives on the WebSocket the
//! session moves there, with whatever no `GET` took. A connection that does
//! not probe, or goes before its `5`, is closed and the session goes on
//! polling; one for a session that moved already is closed at once.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::OpCode;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::reframe;
use crate::transport::socket::{
    ws_close, ws_frame, ClientFrame, ClientStream, DirectSocket, Incoming, PollRequest, Sink,
    Upgrade,
};
use crate::transport::{CloseCode, TransportContext};

/// How long a closed probe waits for the client's close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Runs the probe on an accepted WebSocket, then hands it to `driver`.
pub async fn probe(
    ctx: Arc<TransportContext>,
    stream: Rc<ClientStream>,
    read: BytesMut,
    driver: mpsc::Sender<PollRequest>,
) {
    let cfg = &ctx.settings;
    let stall = cfg.session.write_stall_timeout;
    let out = DirectSocket::new(stream.clone(), stall, None);
    let mut input = Incoming::from_stream(stream.clone(), read, cfg.session.max_frame_bytes);
    let wait = cfg.socketio.ping_interval + cfg.socketio.ping_timeout;
    // A session that moved to a WebSocket already takes no other.
    let refusal = if driver.is_closed() {
        Some("the session is on a WebSocket already")
    } else {
        match tokio::time::timeout(wait, input.recv()).await {
            Ok(Some(Ok(ClientFrame::Text(t)))) if &t[..] == b"2probe" => None,
            _ => Some("expected the probe 2probe"),
        }
    };
    if let Some(reason) = refusal {
        ws_close(&out, Some((CloseCode::ProtocolError.code(), reason)));
        out.finish(stall, CLOSE_WAIT).await;
        return;
    }
    ws_frame(&out, OpCode::Text, b"3probe");
    while !out.flushed() && !out.is_stalled() {
        out.writable().await;
    }
    let read = input.into_unread();
    drop(out);
    // unwrap-free: the reader and writer held the only other handles.
    let Ok(stream) = Rc::try_unwrap(stream) else {
        return;
    };
    let Ok(stream) = stream.into_owned() else {
        return;
    };
    let upgrade = Upgrade {
        stream,
        read,
        last_answer: Bytes::from_static(b"6"),
        reframe,
        stall_timeout: stall,
        max_frame_bytes: cfg.session.max_frame_bytes,
        open: Some(ctx.metrics.ws_sockets_open.clone()),
    };
    // A session that ended meanwhile drops the connection with the request.
    let _ = driver.send(PollRequest::Upgrade(Box::new(upgrade))).await;
}
