//! The STOMP wire protocol on the driver: client frames become session ops,
//! session messages become MESSAGE, RECEIPT and ERROR frames.
//!
//! Subscription ids and receipts ride through the session in an op's request
//! id (`[sub-id, receipt]`), so every reply finds its frame without a queue of
//! its own. Any error ends the connection (STOMP closes after an ERROR).

use std::collections::HashMap;
use std::sync::Arc;

use actix_http::ws::OpCode;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{json, Value};

use super::connect::{connect, Wishes};
use super::frame::{put_escaped, Command, Frame, FrameError, Parser, Version};
use crate::auth::bearer;
use crate::session::encode::write_json_message;
use crate::session::protocol::{ClientOp, ErrorCode, Format, RequestId, ServerMsg};
use crate::transport::driver::{batch_frames, Input, Wire};
use crate::transport::socket::{ws_close, ws_frame, Sink};
use crate::transport::{number, CloseCode};

/// Destinations are `/topic/quotes.<SYM>`.
const DESTINATION_PREFIX: &str = "/topic/quotes.";

/// One subscription as MESSAGE frames name it.
struct Subscription {
    id: String,
    /// `MESSAGE` up to `message-id:`, the same for every frame.
    head: Bytes,
}

/// A STOMP connection's state.
pub struct Stomp {
    session: String,
    wishes: Wishes,
    parser: Parser,
    /// Set by CONNECT.
    version: Option<Version>,
    /// Our heartbeat is a STOMP EOL (else a WebSocket ping).
    beats: bool,
    /// Subscription id → the symbol its destination names.
    ids: HashMap<String, String>,
    /// Symbol → the subscription whose MESSAGE frames carry it.
    subs: HashMap<Arc<str>, Subscription>,
    next_message: u64,
    /// Frames of our own (CONNECTED, RECEIPT, ERROR) not yet sent.
    own: BytesMut,
    /// Set when the connection ends after what is queued.
    closing: Option<(CloseCode, String)>,
    /// Nothing goes out any more (the last frame before the close has).
    done: bool,
    body: BytesMut,
    /// Authentication is on and the upgrade request had no credential: CONNECT
    /// must bring one (`passcode`, or `Authorization: Bearer`).
    needs_credential: bool,
    /// CONNECTED, held until the session has accepted CONNECT's credential.
    held: Option<BytesMut>,
}

impl Stomp {
    pub fn new(
        session: &str,
        wishes: Wishes,
        max_frame_bytes: usize,
        needs_credential: bool,
    ) -> Stomp {
        Stomp {
            session: session.to_owned(),
            wishes,
            parser: Parser::new(max_frame_bytes),
            version: None,
            beats: false,
            ids: HashMap::new(),
            subs: HashMap::new(),
            next_message: 0,
            own: BytesMut::new(),
            closing: None,
            done: false,
            body: BytesMut::new(),
            needs_credential,
            held: None,
        }
    }

    fn version(&self) -> Version {
        self.version.unwrap_or(Version::V1_0)
    }

    /// Queues an ERROR frame and ends the connection with `code` after it.
    fn fail(&mut self, code: CloseCode, message: &str, receipt: Option<&str>) {
        let receipt = receipt.map(|r| ("receipt-id", r));
        self.fail_with(code, message, receipt.as_slice());
    }

    /// [`Stomp::fail`] with headers of its own.
    fn fail_with(&mut self, code: CloseCode, message: &str, headers: &[(&str, &str)]) {
        if self.closing.is_some() {
            return;
        }
        let body =
            json!({"type": "error", "code": ErrorCode::BadRequest.as_str(), "message": message});
        let version = self.version();
        write_error(&mut self.own, version, message, headers, &body);
        self.closing = Some((code, message.to_owned()));
    }

    fn handle(&mut self, frame: Frame, inputs: &mut dyn FnMut(Input)) {
        let receipt = frame.header("receipt").map(str::to_owned);
        let Some(version) = self.version else {
            if !matches!(frame.command, Command::Connect | Command::Stomp) {
                let message = format!("expected CONNECT, got {:?}", frame.command);
                return self.fail(CloseCode::ProtocolError, &message, receipt.as_deref());
            }
            let mut connected = BytesMut::new();
            match connect(&frame, &self.wishes, &self.session, &mut connected) {
                Ok(c) => {
                    self.version = Some(c.version);
                    self.parser.set_version(c.version);
                    self.beats = c.beats;
                    inputs(Input::Liveness(c.liveness));
                    if !self.needs_credential {
                        self.own.unsplit(connected);
                        return;
                    }
                    match credential(&frame) {
                        Some(token) => {
                            self.held = Some(connected);
                            let id = tag("CONNECT", receipt.as_deref());
                            inputs(Input::Op(ClientOp::Auth { id, token }));
                        }
                        None => self.fail(
                            CloseCode::Unauthorized,
                            "unauthorized: CONNECT needs a passcode or an Authorization: Bearer header",
                            receipt.as_deref(),
                        ),
                    }
                }
                Err(refused) => {
                    // The versions we speak, on the ERROR (STOMP 1.2 "Protocol Negotiation").
                    let versions = [("version", "1.0,1.1,1.2")];
                    let headers = if refused.versions { &versions[..] } else { &[] };
                    self.fail_with(CloseCode::ProtocolError, &refused.message, headers);
                }
            }
            return;
        };
        let receipt = receipt.as_deref();
        match frame.command {
            Command::Subscribe => self.subscribe(&frame, version, receipt, inputs),
            Command::Unsubscribe => {
                let Some(id) = frame.header("id").or(frame.header("destination")) else {
                    return self.fail(CloseCode::ProtocolError, "UNSUBSCRIBE without id", receipt);
                };
                match self.ids.remove(id) {
                    Some(sym) => inputs(Input::Op(ClientOp::Unsubscribe {
                        id: tag(id, receipt),
                        symbols: vec![sym],
                    })),
                    // Already gone (replaced by a SUBSCRIBE of its destination): done.
                    None => self.receipt(receipt),
                }
            }
            Command::Disconnect => {
                self.receipt(receipt);
                self.closing = Some((CloseCode::Normal, "client disconnected".into()));
            }
            Command::Connect | Command::Stomp => {
                self.fail(CloseCode::ProtocolError, "already connected", receipt)
            }
            Command::Send => self.fail(
                CloseCode::Normal,
                "SEND is not accepted: this server only publishes",
                receipt,
            ),
            Command::Ack | Command::Nack => self.fail(
                CloseCode::Normal,
                "ACK and NACK are not accepted: subscriptions are ack:auto",
                receipt,
            ),
            Command::Begin | Command::Commit | Command::Abort => {
                self.fail(CloseCode::Normal, "transactions are not supported", receipt)
            }
        }
    }

    fn subscribe(
        &mut self,
        frame: &Frame,
        version: Version,
        receipt: Option<&str>,
        inputs: &mut dyn FnMut(Input),
    ) {
        let Some(destination) = frame.header("destination") else {
            return self.fail(
                CloseCode::ProtocolError,
                "SUBSCRIBE without destination",
                receipt,
            );
        };
        // STOMP 1.0 made the id optional; the destination then names the subscription.
        let id = match frame.header("id") {
            Some(id) => id,
            None if version == Version::V1_0 => destination,
            None => return self.fail(CloseCode::ProtocolError, "SUBSCRIBE without id", receipt),
        };
        let sym = match destination.strip_prefix(DESTINATION_PREFIX) {
            Some(sym) if !sym.is_empty() => sym,
            _ => {
                let message = format!(
                    "unknown destination {destination:?}: subscribe to {DESTINATION_PREFIX}<SYMBOL>"
                );
                return self.fail(CloseCode::Normal, &message, receipt);
            }
        };
        match frame.header("ack") {
            None | Some("auto") => {}
            Some(other) => {
                let message = format!("ack:{other} is not supported: subscriptions are ack:auto");
                return self.fail(CloseCode::Normal, &message, receipt);
            }
        }
        let max_rate = match frame
            .header("max-rate")
            .map(|r| number::finite("max-rate", r))
        {
            None => None,
            Some(Ok(rate)) => Some(rate),
            Some(Err(message)) => return self.fail(CloseCode::Normal, &message, receipt),
        };
        let snapshot = match frame.header("snapshot") {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                let message = format!("snapshot must be true or false, not {other:?}");
                return self.fail(CloseCode::Normal, &message, receipt);
            }
        };
        match self.ids.get(id) {
            Some(held) if held != sym => {
                let message = format!("subscription id {id:?} is already in use for {held}");
                return self.fail(CloseCode::Normal, &message, receipt);
            }
            _ => {}
        }
        // A destination subscribed again under another id moves to the new id.
        self.ids.retain(|_, held| held != sym);
        self.ids.insert(id.to_owned(), sym.to_owned());
        inputs(Input::Op(ClientOp::Subscribe {
            id: tag(id, receipt),
            symbols: vec![sym.to_owned()],
            max_rate,
            snapshot,
            resume: Vec::new(),
        }));
    }

    /// Queues `RECEIPT` when one was asked for.
    fn receipt(&mut self, receipt: Option<&str>) {
        let version = self.version();
        write_receipt(&mut self.own, receipt, version);
    }

    /// Appends the frame for one session message, if it has one.
    fn message(&mut self, m: &ServerMsg, buf: &mut BytesMut) {
        let version = self.version();
        match m {
            ServerMsg::Quote { .. } | ServerMsg::Status { .. } => {
                let Some(sub) = m.symbol().and_then(|sym| self.subs.get(sym)) else {
                    return;
                };
                self.body.clear();
                write_json_message(&mut self.body, m);
                buf.put_slice(&sub.head);
                let mut n = itoa::Buffer::new();
                buf.put_slice(n.format(self.next_message).as_bytes());
                self.next_message += 1;
                buf.put_slice(b"\ncontent-length:");
                buf.put_slice(n.format(self.body.len()).as_bytes());
                buf.put_slice(b"\n\n");
                buf.put_slice(&self.body);
                buf.put_u8(0);
            }
            ServerMsg::Subscribed { id, symbols, .. } => {
                let (sub_id, receipt) = untag(id);
                for sym in symbols {
                    self.bind(sym, sub_id, version);
                }
                write_receipt(buf, receipt, version);
            }
            ServerMsg::Authenticated { .. } => {
                if let Some(connected) = self.held.take() {
                    buf.put_slice(&connected);
                }
            }
            ServerMsg::Unsubscribed { id, symbols, .. } => {
                let (sub_id, receipt) = untag(id);
                for sym in symbols {
                    if self.subs.get(sym).is_some_and(|s| s.id == sub_id) {
                        self.subs.remove(sym);
                    }
                }
                write_receipt(buf, receipt, version);
            }
            ServerMsg::Error { id, message, .. } => {
                let (_, receipt) = untag(id);
                let receipt = receipt.map(|r| ("receipt-id", r));
                // unwrap: a message serializes to JSON.
                let body = serde_json::to_value(m).expect("unwrap: JSON value");
                write_error(buf, version, message, receipt.as_slice(), &body);
                self.closing = Some((CloseCode::Normal, message.clone()));
            }
            // CONNECTED took welcome's place; no op of ours asks for the others.
            ServerMsg::Welcome { .. }
            | ServerMsg::Subscriptions { .. }
            | ServerMsg::Pong { .. } => {}
        }
    }

    /// MESSAGE frames for `sym` now carry subscription `id`.
    fn bind(&mut self, sym: &Arc<str>, id: &str, version: Version) {
        if let Some(old) = self.subs.get(sym) {
            if old.id == id {
                return;
            }
            let old = old.id.clone();
            if self.ids.get(&old).is_some_and(|held| **held == **sym) {
                self.ids.remove(&old);
            }
        }
        let mut head = BytesMut::with_capacity(96);
        head.put_slice(b"MESSAGE\ndestination:");
        put_escaped(&mut head, DESTINATION_PREFIX, version);
        put_escaped(&mut head, sym, version);
        head.put_slice(b"\nsubscription:");
        put_escaped(&mut head, id, version);
        head.put_slice(b"\ncontent-type:application/json\nmessage-id:");
        self.subs.insert(
            sym.clone(),
            Subscription {
                id: id.to_owned(),
                head: head.freeze(),
            },
        );
    }
}

impl Wire for Stomp {
    const TRANSPORT: &'static str = "stomp";

    fn format(&self) -> Format {
        Format::Json
    }

    fn encode(&mut self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        if self.done {
            return;
        }
        // Nothing follows an ERROR.
        batch_frames(
            msgs,
            |_, m, buf| {
                if self.closing.is_none() {
                    self.message(m, buf);
                }
            },
            emit,
        );
        if !self.own.is_empty() {
            emit(&[], self.own.split().freeze());
        }
        self.done = self.closing.is_some();
    }

    fn has_output(&self) -> bool {
        !self.own.is_empty() && !self.done
    }

    fn closing(&self) -> Option<(CloseCode, &str)> {
        self.closing.as_ref().map(|(c, m)| (*c, m.as_str()))
    }

    fn write(&self, out: &impl Sink, frame: &[u8]) {
        ws_frame(out, OpCode::Text, frame);
    }

    fn heartbeat(&self, out: &impl Sink) {
        if self.beats {
            ws_frame(out, OpCode::Text, b"\n");
        } else {
            ws_frame(out, OpCode::Ping, &[]);
        }
    }

    fn pong(&self, out: &impl Sink, payload: &[u8]) {
        ws_frame(out, OpCode::Pong, payload);
    }

    fn close(&self, out: &impl Sink, close: Option<(u16, &str)>) {
        ws_close(out, close);
    }

    fn decode(&mut self, payload: &[u8], _binary: bool, inputs: &mut dyn FnMut(Input)) {
        if self.closing.is_some() {
            return;
        }
        if let Err(e) = self.parser.push(payload) {
            return self.fail_frame(e);
        }
        while self.closing.is_none() {
            match self.parser.next_frame() {
                Ok(Some(frame)) => self.handle(frame, inputs),
                Ok(None) => break,
                Err(e) => return self.fail_frame(e),
            }
        }
    }
}

impl Stomp {
    fn fail_frame(&mut self, e: FrameError) {
        let code = match e {
            FrameError::TooLarge(_) => CloseCode::TooLarge,
            FrameError::Malformed(_) => CloseCode::ProtocolError,
        };
        self.fail(code, &e.to_string(), None);
    }
}

/// The token a CONNECT frame carries: its `passcode`, or the bearer token of
/// an `Authorization` header.
fn credential(frame: &Frame) -> Option<String> {
    if let Some(p) = frame.header("passcode").filter(|p| !p.is_empty()) {
        return Some(p.to_owned());
    }
    let value = frame
        .header("Authorization")
        .or(frame.header("authorization"))?;
    // A malformed header is a credential that will not verify.
    Some(bearer(value).unwrap_or(value).to_owned())
}

/// The request id an op carries: its subscription id and receipt.
fn tag(id: &str, receipt: Option<&str>) -> RequestId {
    Some(json!([id, receipt]))
}

/// What [`tag`] put in.
fn untag(id: &RequestId) -> (&str, Option<&str>) {
    match id.as_ref().and_then(Value::as_array).map(Vec::as_slice) {
        Some([id, receipt]) => (id.as_str().unwrap_or(""), receipt.as_str()),
        _ => ("", None),
    }
}

fn write_receipt(buf: &mut BytesMut, receipt: Option<&str>, version: Version) {
    if let Some(r) = receipt {
        buf.put_slice(b"RECEIPT\nreceipt-id:");
        put_escaped(buf, r, version);
        buf.put_slice(b"\n\n\0");
    }
}

/// An ERROR frame: `message` and `headers` as its headers, the error object as
/// its body.
fn write_error(
    buf: &mut BytesMut,
    version: Version,
    message: &str,
    headers: &[(&str, &str)],
    body: &Value,
) {
    buf.put_slice(b"ERROR\nmessage:");
    if version == Version::V1_0 {
        // Nothing is escaped in 1.0: a line break would end the header.
        buf.put_slice(message.replace(['\n', '\r'], " ").as_bytes());
    } else {
        put_escaped(buf, message, version);
    }
    for (name, value) in headers {
        buf.put_u8(b'\n');
        buf.put_slice(name.as_bytes());
        buf.put_u8(b':');
        put_escaped(buf, value, version);
    }
    let body = body.to_string();
    buf.put_slice(b"\ncontent-type:application/json\ncontent-length:");
    buf.put_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    buf.put_slice(b"\n\n");
    buf.put_slice(body.as_bytes());
    buf.put_u8(0);
}
