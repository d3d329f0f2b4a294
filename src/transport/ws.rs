//! WebSocket ticker.v1 at `/ws`: subprotocol negotiation (`ticker.v1.json`,
//! `ticker.v1.msgpack`, or `?format=`), then the [driver](super::driver) with
//! the ticker.v1 wire protocol: every server frame an array of messages (text
//! for JSON, binary for MessagePack), client frames one op each, the heartbeat a
//! ping, and close frames with the codes of PROTOCOL.md section 8.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use tracing::Instrument;

use super::driver::{self, Connection, Liveness, Wire, FRAME_BYTES};
use super::socket::{self, ClientSocket, Incoming, Outgoing};
use super::{CloseCode, Ended, TransportContext};
use crate::http::ApiError;
use crate::session::encode::encode_frames;
use crate::session::protocol::{self, BadRequest, ClientOp, Format, ServerMsg};

/// Subprotocols we speak, in no particular order (the client's order decides).
const SUBPROTOCOLS: [&str; 2] = ["ticker.v1.json", "ticker.v1.msgpack"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WsParams {
    format: Option<String>,
}

/// The ticker.v1 wire protocol over WebSocket frames.
struct TickerV1(Format);

impl Wire for TickerV1 {
    const TRANSPORT: &'static str = "ws";

    fn format(&self) -> Format {
        self.0
    }

    fn encode(&self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        encode_frames(self.0, msgs, FRAME_BYTES, emit);
    }

    fn write(&self, out: &Outgoing, frame: &[u8]) {
        out.data(self.0, frame);
    }

    fn heartbeat(&self, out: &Outgoing) {
        out.ping();
    }

    fn pong(&self, out: &Outgoing, payload: &[u8]) {
        out.pong(payload);
    }

    fn close(&self, out: &Outgoing, close: Option<(u16, &str)>) {
        out.close(close);
    }

    fn decode(&self, payload: &[u8], binary: bool) -> Result<ClientOp, BadRequest> {
        protocol::parse_op(payload, binary)
    }
}

/// `GET /ws`: the WebSocket upgrade.
pub async fn ws_endpoint(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<WsParams>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let query_format = match params.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("msgpack") => Format::Msgpack,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format must be json or msgpack, not {other:?}"
            )))
        }
    };
    let (mut response, protocol) = socket::handshake(&req, &SUBPROTOCOLS)
        .map_err(|e| ApiError::bad_request(format!("expected a WebSocket upgrade: {e}")))?;
    let format = match protocol {
        Some("ticker.v1.msgpack") => Format::Msgpack,
        Some(_) => Format::Json,
        None => query_format,
    };
    let principal = state.authenticate(req.head())?;
    let cfg = &state.settings.session;
    let (out, mut body) = Outgoing::new(
        req.conn_data::<ClientSocket>().copied(),
        Some(&state.metrics),
        cfg.write_stall_timeout,
        Some(state.metrics.ws_sockets_open.clone()),
    );
    match state.try_admit() {
        Some(permit) => {
            let session = state.session(format, principal);
            let span =
                tracing::debug_span!("conn", transport = "ws", session = session.id(), ?format);
            let conn = Connection {
                wire: TickerV1(format),
                out,
                input: Some(Incoming::new(payload.into_inner(), cfg.max_frame_bytes)),
                session,
                liveness: Liveness {
                    heartbeat: cfg.heartbeat_interval,
                    client_timeout: Some(cfg.client_timeout),
                },
                permit,
            };
            body.drive(driver::drive(conn, state.clone().into_inner()).instrument(span));
        }
        None => {
            let full = CloseCode::ServerFull;
            state
                .metrics
                .connections_closed
                .with_label_values(&["ws", &Ended::from(full).label()])
                .inc();
            out.close(Some((full.code(), "server full, try again later")));
        }
    }
    Ok(response
        .message_body(body)
        // unwrap: the builder fails only on a bad header, and ours are fixed strings.
        .expect("unwrap: the upgrade response's headers are valid")
        .map_into_boxed_body()
        .into())
}
