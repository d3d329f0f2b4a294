//! Test-only, off by default (setting `socketio.conformance`): what the public
//! Engine.IO and Socket.IO protocol test suites expect of a server under test,
//! in place of the ticker's events. At `/engine.io/`, every Engine.IO message
//! comes back as it was sent; at `/socket.io/`, the namespaces `/` and
//! `/custom` accept a CONNECT (then emit `auth` with its payload), `message`
//! comes back as `message-back` and `message-with-ack` is acked with its
//! arguments, binary attachments included. A production gateway never takes
//! these paths.

use bytes::Bytes;
use serde_json::{json, Value};

use super::packet::{self, Kind};
use super::wire::Own;

/// Which suite a connection answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Engine.IO messages echoed (`/engine.io/`).
    EngineIo,
    /// Socket.IO events echoed (`/socket.io/`).
    SocketIo,
}

/// The namespaces a client may connect to.
const NAMESPACES: [&str; 2] = ["/", "/custom"];

/// The path of the Engine.IO suite.
pub const ENGINE_PATH: &str = "/engine.io/";

/// One connection's echo.
pub struct Echo {
    level: Level,
    connected: Vec<String>,
    /// A binary packet waiting for its attachments.
    pending: Option<Pending>,
}

struct Pending {
    header: String,
    left: usize,
    parts: Vec<Own>,
    bytes: usize,
}

impl Echo {
    pub fn new(level: Level) -> Echo {
        Echo {
            level,
            connected: Vec::new(),
            pending: None,
        }
    }

    /// An Engine.IO message's text (after its `4`); `Err` ends the connection.
    pub fn message(&mut self, text: &str, sid: &str, out: &mut Vec<Own>) -> Result<(), String> {
        if self.level == Level::EngineIo {
            out.push(Own::Text(format!("4{text}")));
            return Ok(());
        }
        if self.pending.is_some() {
            return Err("a packet while attachments were due".into());
        }
        let p = packet::parse(text)?;
        let ns = p.namespace.as_str();
        let pre = if ns == "/" {
            String::new()
        } else {
            format!("{ns},")
        };
        let connected = self.connected.iter().any(|c| c == ns);
        match p.kind {
            Kind::Connect if !NAMESPACES.contains(&ns) => {
                let error = json!({"message": "Invalid namespace"});
                out.push(Own::Text(format!("44{pre}{error}")));
            }
            Kind::Connect => {
                out.push(Own::Text(format!("40{pre}{}", json!({"sid": sid}))));
                let auth = json!(["auth", p.data.unwrap_or_else(|| json!({}))]);
                out.push(Own::Text(format!("42{pre}{auth}")));
                if !connected {
                    self.connected.push(ns.to_owned());
                }
            }
            Kind::Disconnect => self.connected.retain(|c| c != ns),
            _ if !connected => return Err(format!("a packet for {ns}, not connected")),
            Kind::Event | Kind::BinaryEvent => {
                let Some(Value::Array(mut args)) = p.data else {
                    return Err("an event without arguments".into());
                };
                let name = args.remove(0);
                let (kind, body) = match (name.as_str(), p.ack) {
                    (Some("message"), _) => {
                        args.insert(0, json!("message-back"));
                        (p.kind, format!("{pre}{}", Value::Array(args)))
                    }
                    (Some("message-with-ack"), Some(ack)) => {
                        let kind = match p.kind {
                            Kind::BinaryEvent => Kind::BinaryAck,
                            _ => Kind::Ack,
                        };
                        (kind, format!("{pre}{ack}{}", Value::Array(args)))
                    }
                    _ => return Ok(()),
                };
                let header = match kind {
                    Kind::BinaryEvent => format!("45{}-{body}", p.attachments),
                    Kind::BinaryAck => format!("46{}-{body}", p.attachments),
                    Kind::Ack => format!("43{body}"),
                    _ => format!("42{body}"),
                };
                let pending = Pending {
                    header,
                    left: p.attachments,
                    parts: Vec::new(),
                    bytes: 0,
                };
                self.pending = Some(pending);
                self.complete(out);
            }
            Kind::Ack | Kind::BinaryAck | Kind::ConnectError => {}
        }
        Ok(())
    }

    /// A binary message (on polling: its `b<base64>` text); `Err` ends the
    /// connection. Attachments wait in memory up to `max_bytes` in all.
    pub fn binary(
        &mut self,
        data: &[u8],
        max_bytes: usize,
        out: &mut Vec<Own>,
    ) -> Result<(), String> {
        if self.level == Level::EngineIo {
            out.push(Own::Binary(Bytes::copy_from_slice(data)));
            return Ok(());
        }
        let Some(p) = &mut self.pending else {
            return Err("a binary message that no packet announced".into());
        };
        p.bytes += data.len();
        if p.bytes > max_bytes {
            return Err(format!("attachments larger than {max_bytes} bytes"));
        }
        p.parts.push(Own::Binary(Bytes::copy_from_slice(data)));
        p.left -= 1;
        self.complete(out);
        Ok(())
    }

    /// Sends the pending packet once its attachments are all there.
    fn complete(&mut self, out: &mut Vec<Own>) {
        if self.pending.as_ref().is_some_and(|p| p.left == 0) {
            // unwrap-free: checked just above.
            let Some(p) = self.pending.take() else { return };
            out.push(Own::Text(p.header));
            out.extend(p.parts);
        }
    }
}
