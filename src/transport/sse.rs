//! Server-Sent Events at `GET /sse?symbols=A,B&max_rate=R`: the same session core
//! and [driver](super::driver) as the WebSocket, one event per message (`event:`
//! its type, `data:` its JSON), a comment line every `keepalive_interval` as the
//! heartbeat. Bad parameters or unknown symbols answer 400 with a JSON error
//! before any stream starts. A slow reader is ended like a slow WebSocket client
//! (the stream just ends: SSE has no close codes).

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use super::driver::{self, batch_frames, Connection, Liveness, Wire};
use super::socket::{ClientSocket, Outgoing, Sink};
use super::{number, TransportContext};
use crate::http::ApiError;
use crate::session::encode::write_json_message;
use crate::session::protocol::{op_from_value, ClientOp, Format, ServerMsg};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SseParams {
    symbols: Option<String>,
    max_rate: Option<String>,
    /// Credentials: read by the authentication hook (PROTOCOL.md section 9).
    #[serde(rename = "ticket")]
    _ticket: Option<serde::de::IgnoredAny>,
    #[serde(rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
}

/// The subscribe op a `/sse` query string (`symbols=A,B&max_rate=R`) asks for.
pub(crate) fn subscribe_op(query: &str) -> Result<ClientOp, ApiError> {
    let params = web::Query::<SseParams>::from_query(query)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let symbols: Vec<String> = params
        .symbols
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mut op = json!({"op": "subscribe", "symbols": symbols});
    if let Some(r) = params.max_rate.as_deref() {
        op["max_rate"] = json!(number::finite("max_rate", r).map_err(ApiError::bad_request)?);
    }
    // The same checks as a WebSocket subscribe, answered as HTTP errors: SSE has
    // no channel for errors before the stream starts.
    op_from_value(op).map_err(|e| ApiError::bad_request(e.message))
}

/// `GET /sse`.
pub async fn sse_endpoint(
    req: HttpRequest,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    // Who asks comes first: a client without a credential learns nothing more.
    let access = state.authenticate_http(req.head())?;
    let op = subscribe_op(req.query_string())?;
    let permit = state.admit_http()?;
    let mut session = state.session(Format::Json, access);
    session.handle_op(op, Instant::now());
    if let Some(e) = session.first_error().and_then(ApiError::from_reply) {
        return Err(e);
    }
    let cfg = &state.settings;
    let (out, mut body) = Outgoing::new(
        req.conn_data::<ClientSocket>().copied(),
        Some(&state.metrics),
        cfg.session.write_stall_timeout,
    );
    let span = tracing::debug_span!("conn", transport = "sse", session = session.id());
    let conn = Connection {
        wire: EventStream,
        out,
        input: None,
        session,
        liveness: Liveness {
            heartbeat: cfg.sse.keepalive_interval,
            client_timeout: None,
        },
        permit,
    };
    let ctx = state.clone().into_inner();
    body.drive(
        async move {
            driver::drive(conn, ctx).await;
        }
        .instrument(span),
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .body(body))
}

/// Server-Sent Events: one event per message, a comment as the heartbeat, and
/// the end of the stream as the close.
struct EventStream;

impl Wire for EventStream {
    const TRANSPORT: &'static str = "sse";

    fn format(&self) -> Format {
        Format::Json
    }

    fn encode(&mut self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        batch_frames(
            msgs,
            |_, m, buf| encode_events(std::slice::from_ref(m), buf),
            emit,
        );
    }

    fn write(&self, out: &impl Sink, frame: &[u8]) {
        out.write(|buf| buf.extend_from_slice(frame));
    }

    fn heartbeat(&self, out: &impl Sink) {
        out.write(|buf| buf.extend_from_slice(b": keepalive\n\n"));
    }

    fn close(&self, out: &impl Sink, _close: Option<(u16, &str)>) {
        out.end();
    }
}

/// Appends each message as one event.
pub fn encode_events(msgs: &[ServerMsg], buf: &mut BytesMut) {
    for m in msgs {
        buf.put_slice(b"event: ");
        buf.put_slice(m.type_name().as_bytes());
        buf.put_slice(b"\ndata: ");
        write_json_message(buf, m);
        buf.put_slice(b"\n\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_rate_is_absent_or_a_number() {
        assert!(subscribe_op("symbols=AAPL").is_ok());
        assert!(subscribe_op("symbols=AAPL&max_rate=2.5").is_ok());
        for bad in ["symbols=AAPL&max_rate=", "symbols=AAPL&max_rate=fast"] {
            let e = subscribe_op(bad).expect_err(bad);
            assert_eq!(e.status, 400, "{bad}");
        }
    }
}
