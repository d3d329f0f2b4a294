//! Socket.IO v5 over Engine.IO v4 on a WebSocket, on the driver: the open
//! packet first, `40` → `40{"sid"}` on the default namespace, client events
//! `subscribe` / `unsubscribe` (and `list`, `ping`) as session ops with their
//! ack ids, one `snapshot`, `update` or `error` event per message, Engine.IO
//! pings as the heartbeat.
//!
//! Acks (PROTOCOL.md section 7): a call's ack is its `subscribed` (or
//! `unsubscribed`, …) object, and symbols refused in the same call get an
//! `error` event; a call where nothing could be done acks with the error.

use std::time::Duration;

use actix_http::ws::{OpCode, Parser};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use super::conformance::{Echo, Level};
use super::packet::{self, Kind};
use crate::session::encode::write_json_message;
use crate::session::protocol::{op_from_value, BadRequest, ClientOp, Format, RequestId, ServerMsg};
use crate::settings::{Settings, SocketIoSettings};
use crate::transport::driver::{batch_frames, Input, Liveness, Wire};
use crate::transport::socket::{ws_close, ws_frame, Sink};
use crate::transport::CloseCode;

/// What the handshake announces.
pub struct Handshake {
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub max_payload: usize,
}

impl Handshake {
    /// From the `socketio.*` settings; `maxPayload` is `session.max_frame_bytes`.
    pub fn new(settings: &Settings) -> Handshake {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Handshake {
            ping_interval_ms: ms(settings.socketio.ping_interval),
            ping_timeout_ms: ms(settings.socketio.ping_timeout),
            max_payload: settings.session.max_frame_bytes,
        }
    }
}

/// Engine.IO's heartbeat: a ping every interval; a client that has not
/// answered within the timeout after it is gone (also how long a polling
/// session may go without a request).
pub fn liveness(settings: &SocketIoSettings) -> Liveness {
    Liveness {
        heartbeat: settings.ping_interval,
        client_timeout: Some(settings.ping_interval + settings.ping_timeout),
    }
}

/// How Engine.IO packets travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// One packet per WebSocket message.
    WebSocket,
    /// HTTP long-polling: packets joined by `\x1e` in request and response
    /// bodies, binary ones as `b<base64>`.
    Polling,
}

/// Engine.IO's packet separator on polling.
pub const SEPARATOR: u8 = 0x1e;

/// The open packet: `0{"sid",..}`; a polling session may upgrade to WebSocket.
pub fn open_packet(sid: &str, handshake: &Handshake, carrier: Carrier) -> String {
    let upgrades: &[&str] = match carrier {
        Carrier::WebSocket => &[],
        Carrier::Polling => &["websocket"],
    };
    let open = json!({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": handshake.ping_interval_ms,
        "pingTimeout": handshake.ping_timeout_ms,
        "maxPayload": handshake.max_payload,
    });
    format!("0{open}")
}

/// A packet of our own: one WebSocket message, or one packet of a polling
/// payload (a binary one there is its `b<base64>` text).
#[derive(Debug)]
pub enum Own {
    Text(String),
    Binary(Bytes),
}

/// One Socket.IO connection's state.
pub struct SocketIo {
    carrier: Carrier,
    sid: String,
    /// Packets of our own (open, connect, connect errors).
    own: Vec<Own>,
    /// Test-only: the protocol suites' echo instead of the ticker.
    echo: Option<Echo>,
    /// The client sent Engine.IO's close.
    client_closed: bool,
    /// The most a client may send in binary attachments that wait for their packet.
    max_payload: usize,
    /// The client connected to the default namespace.
    connected: bool,
    /// Binary attachments still to come for the packet being read.
    attachments: usize,
    closing: Option<(CloseCode, String)>,
    /// Authentication is on and the handshake had no credential: CONNECT's
    /// `auth: {token}` must bring one; its `40` waits for the session's verdict.
    needs_credential: bool,
}

/// The request id of the `auth` op a CONNECT becomes (never an ack id).
const CONNECT_ID: &str = "connect";

impl SocketIo {
    /// A connection over `carrier`; on a WebSocket its open packet is queued
    /// (polling answers the handshake request with it).
    pub fn new(
        sid: &str,
        handshake: &Handshake,
        carrier: Carrier,
        needs_credential: bool,
    ) -> SocketIo {
        let own = match carrier {
            Carrier::WebSocket => vec![Own::Text(open_packet(sid, handshake, carrier))],
            Carrier::Polling => Vec::new(),
        };
        SocketIo {
            carrier,
            sid: sid.to_owned(),
            own,
            echo: None,
            client_closed: false,
            max_payload: handshake.max_payload,
            connected: false,
            attachments: 0,
            closing: None,
            needs_credential,
        }
    }

    /// Test-only: answers as the protocol suites expect instead (see
    /// [`super::conformance`]).
    pub fn echoing(mut self, level: Level) -> SocketIo {
        self.echo = Some(Echo::new(level));
        self
    }

    /// A malformed packet: the connection ends, as Socket.IO's own server does.
    fn malformed(&mut self, message: String) {
        self.closing = Some((CloseCode::ProtocolError, message));
    }

    /// One Socket.IO packet from the client.
    fn packet(&mut self, text: &str, inputs: &mut dyn FnMut(Input)) {
        if let Some(echo) = &mut self.echo {
            if let Err(e) = echo.message(text, &self.sid, &mut self.own) {
                self.malformed(e);
            }
            return;
        }
        let p = match packet::parse(text) {
            Ok(p) => p,
            Err(message) => return self.malformed(message),
        };
        if p.namespace != "/" {
            let error = json!({"message": "Invalid namespace"});
            self.own
                .push(Own::Text(format!("44{},{error}", p.namespace)));
            return;
        }
        match p.kind {
            Kind::Connect if self.connected => {}
            Kind::Connect if self.needs_credential => {
                // No token is a token that does not verify: CONNECT_ERROR either way.
                let token = p
                    .data
                    .as_ref()
                    .and_then(|d| d.get("token"))
                    .and_then(Value::as_str);
                inputs(Input::Op(ClientOp::Auth {
                    id: Some(Value::from(CONNECT_ID)),
                    token: token.unwrap_or_default().to_owned(),
                }));
            }
            Kind::Connect => {
                self.connected = true;
                self.own
                    .push(Own::Text(format!("40{}", json!({"sid": self.sid}))));
            }
            Kind::Disconnect => {
                self.closing = Some((CloseCode::Normal, "client disconnected".into()));
            }
            _ if !self.connected => {
                self.closing = Some((
                    CloseCode::ProtocolError,
                    "a packet before CONNECT to the namespace".into(),
                ));
            }
            Kind::BinaryEvent | Kind::BinaryAck => {
                // Read (attachments included) and refused: no event of ours carries binary.
                self.attachments = p.attachments;
                let message = "binary payloads are not accepted";
                self.bad(p.ack, message.into(), inputs);
            }
            Kind::Event => match event_op(p.data, p.ack) {
                Ok(op) => inputs(Input::Op(op)),
                Err(e) => inputs(Input::Invalid(e)),
            },
            // We never ask the client for an ack; a CONNECT_ERROR is ours to send.
            Kind::Ack | Kind::ConnectError => {}
        }
    }

    /// A `bad_request` error for the client, acked when it asked for an ack.
    fn bad(&mut self, ack: Option<u64>, message: String, inputs: &mut dyn FnMut(Input)) {
        inputs(Input::Invalid(BadRequest {
            id: ack.map(Value::from),
            message,
        }));
    }
}

/// `["name", {args}]` with an optional ack id → the op of the same name.
fn event_op(
    data: Option<Value>,
    ack: Option<u64>,
) -> Result<crate::session::protocol::ClientOp, BadRequest> {
    let id = ack.map(Value::from);
    let bad = |message: &str| BadRequest {
        id: id.clone(),
        message: message.to_owned(),
    };
    let Some(Value::Array(mut parts)) = data else {
        return Err(bad("an event must be [\"name\", {...}]"));
    };
    if parts.is_empty() {
        return Err(bad("an event must be [\"name\", {...}]"));
    }
    let Value::String(name) = parts.remove(0) else {
        return Err(bad("an event name must be a string"));
    };
    let mut op = match parts.into_iter().next() {
        None => json!({}),
        Some(Value::Object(args)) => Value::Object(args),
        Some(_) => return Err(bad("an event's argument must be an object")),
    };
    op["op"] = Value::String(name);
    if let Some(id) = &id {
        op["id"] = id.clone();
    }
    op_from_value(op)
}

/// Rewrites a polling frame (packets joined by the separator) as one
/// WebSocket message per packet (a session that upgraded sends what no `GET`
/// took this way).
pub fn reframe(frame: &[u8], out: &mut BytesMut) {
    for packet in frame.split(|&b| b == SEPARATOR) {
        put_packet(out, packet, Carrier::WebSocket);
    }
}

/// Appends one packet: a WebSocket text message, or after a separator.
fn put_packet(buf: &mut BytesMut, packet: &[u8], carrier: Carrier) {
    match carrier {
        Carrier::WebSocket => Parser::write_message(buf, packet, OpCode::Text, true, false),
        Carrier::Polling => {
            if !buf.is_empty() {
                buf.put_u8(SEPARATOR);
            }
            buf.put_slice(packet);
        }
    }
}

/// Appends one binary packet: a WebSocket binary message, or (already as
/// `b<base64>`) after a separator.
fn put_binary(buf: &mut BytesMut, data: &[u8], carrier: Carrier) {
    match carrier {
        Carrier::WebSocket => Parser::write_message(buf, data, OpCode::Binary, true, false),
        Carrier::Polling => put_packet(buf, data, carrier),
    }
}

fn is_connect(id: &RequestId) -> bool {
    id.as_ref().and_then(Value::as_str) == Some(CONNECT_ID)
}

/// The request id a reply carries, if it is an ack id.
fn ack_of(m: &ServerMsg) -> Option<u64> {
    let id = match m {
        ServerMsg::Subscribed { id, .. }
        | ServerMsg::Unsubscribed { id, .. }
        | ServerMsg::Subscriptions { id, .. }
        | ServerMsg::Pong { id }
        | ServerMsg::Authenticated { id, .. }
        | ServerMsg::Error { id, .. } => id,
        ServerMsg::Welcome { .. } | ServerMsg::Quote { .. } | ServerMsg::Status { .. } => {
            return None
        }
    };
    id.as_ref().and_then(Value::as_u64)
}

impl Wire for SocketIo {
    const TRANSPORT: &'static str = "socketio";

    fn format(&self) -> Format {
        Format::Json
    }

    fn encode(&mut self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        let carrier = self.carrier;
        if !self.own.is_empty() {
            // The protocol suites read each packet of ours in a read of its own.
            let one_write_each = self.echo.is_some();
            let mut buf = BytesMut::new();
            for p in self.own.drain(..) {
                match p {
                    Own::Text(text) => put_packet(&mut buf, text.as_bytes(), carrier),
                    Own::Binary(data) => put_binary(&mut buf, &data, carrier),
                }
                if one_write_each && carrier == Carrier::WebSocket {
                    emit(&[], buf.split().freeze());
                }
            }
            if !buf.is_empty() {
                emit(&[], buf.freeze());
            }
        }
        let acks = ack_answers(msgs);
        let mut packet = BytesMut::new();
        let sid = &self.sid;
        let needs_credential = self.needs_credential;
        let connected = &mut self.connected;
        if msgs
            .iter()
            .any(|m| matches!(m, ServerMsg::Authenticated { id, .. } if is_connect(id)))
        {
            *connected = true;
        }
        batch_frames(
            msgs,
            |i, m, buf| {
                packet.clear();
                match m {
                    ServerMsg::Welcome { .. } => return,
                    // The verdict on CONNECT's credential: connected, or CONNECT_ERROR.
                    ServerMsg::Authenticated { id, .. } if is_connect(id) => {
                        packet.put_slice(b"40");
                        packet.put_slice(json!({"sid": &*sid}).to_string().as_bytes());
                    }
                    ServerMsg::Error { id, .. }
                        if is_connect(id) || (needs_credential && !*connected) =>
                    {
                        packet.put_slice(b"44");
                        packet.put_slice(json!({"message": "unauthorized"}).to_string().as_bytes());
                    }
                    _ if acks.contains(&i) => {
                        // unwrap: `ack_answers` picks only messages with an ack id.
                        put_ack(&mut packet, ack_of(m).expect("unwrap: an ack id"), m);
                    }
                    ServerMsg::Error { .. }
                    | ServerMsg::Quote { .. }
                    | ServerMsg::Status { .. } => {
                        packet.put_slice(b"42[\"");
                        packet.put_slice(m.type_name().as_bytes());
                        packet.put_slice(b"\",");
                        write_json_message(&mut packet, m);
                        packet.put_u8(b']');
                    }
                    // A reply to a call without an ack id: nobody listens for it.
                    _ => return,
                }
                put_packet(buf, &packet, carrier);
            },
            emit,
        );
    }

    fn has_output(&self) -> bool {
        !self.own.is_empty()
    }

    fn closing(&self) -> Option<(CloseCode, &str)> {
        self.closing.as_ref().map(|(c, m)| (*c, m.as_str()))
    }

    /// Frames are whole WebSocket messages already (one per packet), or
    /// packets joined for a polling response.
    fn write(&self, out: &impl Sink, frame: &[u8]) {
        out.write(|buf| buf.extend_from_slice(frame));
    }

    fn heartbeat(&self, out: &impl Sink) {
        match self.carrier {
            Carrier::WebSocket => ws_frame(out, OpCode::Text, b"2"),
            Carrier::Polling => out.write(|buf| buf.put_u8(b'2')),
        }
    }

    fn pong(&self, out: &impl Sink, payload: &[u8]) {
        ws_frame(out, OpCode::Pong, payload);
    }

    fn close(&self, out: &impl Sink, close: Option<(u16, &str)>) {
        match self.carrier {
            Carrier::WebSocket => ws_close(out, close),
            // Engine.IO's close packet ends the polling client's session; one
            // that closed itself gets a noop for the GET it left waiting.
            Carrier::Polling => {
                let last = if self.client_closed { b'6' } else { b'1' };
                out.write(|buf| buf.put_u8(last));
                out.end();
            }
        }
    }

    fn upgraded(&mut self) {
        self.carrier = Carrier::WebSocket;
    }

    fn decode(&mut self, payload: &[u8], binary: bool, inputs: &mut dyn FnMut(Input)) {
        if self.carrier == Carrier::Polling {
            for packet in payload.split(|&b| b == SEPARATOR) {
                // `b<base64>`: a binary attachment.
                let binary = packet.first() == Some(&b'b');
                self.engine_packet(packet, binary, inputs);
                if self.closing.is_some() {
                    break;
                }
            }
            return;
        }
        self.engine_packet(payload, binary, inputs);
    }
}

impl SocketIo {
    /// One Engine.IO packet.
    fn engine_packet(&mut self, payload: &[u8], binary: bool, inputs: &mut dyn FnMut(Input)) {
        if binary {
            if let Some(echo) = &mut self.echo {
                if let Err(e) = echo.binary(payload, self.max_payload, &mut self.own) {
                    self.malformed(e);
                }
            } else if self.attachments > 0 {
                self.attachments -= 1;
            } else {
                self.malformed("a binary message that no packet announced".into());
            }
            return;
        }
        // Text frames were checked for UTF-8 by the socket (a POST body was not).
        let Ok(text) = std::str::from_utf8(payload) else {
            return self.malformed("a text packet that is not UTF-8".into());
        };
        match text.as_bytes().first() {
            Some(b'4') => self.packet(&text[1..], inputs),
            // A pong (its arrival is what counts), a noop, an upgrade packet on
            // a connection that is already a WebSocket.
            Some(b'3' | b'6' | b'5') if text.len() == 1 => {}
            Some(b'1') if text.len() == 1 => {
                self.client_closed = true;
                self.closing = Some((CloseCode::Normal, "client closed".into()));
            }
            _ => self.malformed(format!("unknown Engine.IO packet {:?}", short(text))),
        }
    }
}

/// The start of `text`, for error messages.
fn short(text: &str) -> &str {
    let mut end = text.len().min(32);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Which messages answer an ack: per ack id, the call's first reply that is
/// not an error, else its first error (the other errors become events).
fn ack_answers(msgs: &[ServerMsg]) -> Vec<usize> {
    let mut chosen: Vec<(u64, usize)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let Some(ack) = ack_of(m) else { continue };
        let is_error = matches!(m, ServerMsg::Error { .. });
        match chosen.iter_mut().find(|(a, _)| *a == ack) {
            None => chosen.push((ack, i)),
            Some((_, at)) if !is_error && matches!(msgs[*at], ServerMsg::Error { .. }) => *at = i,
            Some(_) => {}
        }
    }
    chosen.into_iter().map(|(_, i)| i).collect()
}

/// `43<ack>[<message>]`.
fn put_ack(packet: &mut BytesMut, ack: u64, m: &ServerMsg) {
    packet.put_slice(b"43");
    packet.put_slice(itoa::Buffer::new().format(ack).as_bytes());
    packet.put_u8(b'[');
    write_json_message(packet, m);
    packet.put_u8(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::protocol::ErrorCode;

    #[test]
    fn events_become_ops_with_their_ack_ids() {
        let op = event_op(
            Some(json!(["subscribe", {"symbols": ["A"], "max_rate": 2}])),
            Some(3),
        )
        .unwrap();
        assert_eq!(
            op,
            crate::session::protocol::ClientOp::Subscribe {
                id: Some(json!(3)),
                symbols: vec!["A".into()],
                max_rate: Some(2.0),
                snapshot: true,
                resume: vec![],
            }
        );
        let e = event_op(Some(json!(["dance", {}])), Some(4)).unwrap_err();
        assert_eq!(e.id, Some(json!(4)));
        assert!(event_op(Some(json!([1])), None).is_err());
        assert!(event_op(Some(json!({"x": 1})), None).is_err());
        assert!(event_op(Some(json!(["subscribe", 5])), None).is_err());
    }

    fn error(id: u64, code: ErrorCode) -> ServerMsg {
        ServerMsg::Error {
            id: Some(json!(id)),
            code,
            message: "m".into(),
            symbols: None,
        }
    }

    /// The text of every WebSocket message in `frames`.
    fn packets(frames: &[Bytes]) -> Vec<String> {
        use actix_codec::Decoder;
        use actix_http::ws::{Codec, Frame};
        let mut out = Vec::new();
        for f in frames {
            let mut buf = BytesMut::from(&f[..]);
            let mut codec = Codec::new().client_mode();
            while let Some(Frame::Text(t)) = codec.decode(&mut buf).unwrap() {
                out.push(String::from_utf8(t.to_vec()).unwrap());
            }
        }
        out
    }

    #[test]
    fn a_call_acks_what_was_done_and_its_refusals_are_events() {
        let handshake = Handshake {
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            max_payload: 65_536,
        };
        let mut w = SocketIo::new("s-1", &handshake, Carrier::WebSocket, false);
        let subscribed = ServerMsg::Subscribed {
            id: Some(json!(3)),
            symbols: vec!["A".into()],
            max_rate: 2.0,
        };
        let msgs = [
            error(3, ErrorCode::UnknownSymbol),
            subscribed,
            error(4, ErrorCode::UnknownSymbol),
            error(4, ErrorCode::NotEntitled),
        ];
        let mut frames = Vec::new();
        w.encode(&msgs, &mut |_, f| frames.push(f));
        let p = packets(&frames);
        assert!(
            p[0].starts_with(r#"0{"#) && p[0].contains(r#""sid":"s-1""#),
            "{p:?}"
        );
        assert!(
            p[1].starts_with(r#"42["error",{"type":"error","id":3"#),
            "{p:?}"
        );
        assert!(p[2].starts_with(r#"433[{"type":"subscribed""#), "{p:?}");
        assert!(p[3].starts_with(r#"434[{"type":"error""#), "{p:?}");
        assert!(p[4].starts_with(r#"42["error","#), "{p:?}");
        assert_eq!(p.len(), 5);
        assert!(!w.has_output(), "the open packet went out once");
    }
}
