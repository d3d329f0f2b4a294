//! The ticker.v1 messages (PROTOCOL.md sections 3 and 4): client ops parsed from
//! JSON or MessagePack, server messages serialized to either.

use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value;

use crate::hub::SymbolStatus;
use crate::quote::{FieldMask, Quote};

/// The wire format of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Msgpack,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        }
    }
}

/// Error codes: those of PROTOCOL.md section 4, and those only HTTP answers carry
/// (in the same `{"type":"error","code":..}` body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    UnknownSymbol,
    TooManySymbols,
    NotEntitled,
    Unauthorized,
    RateLimited,
    /// HTTP: no quote for a known symbol yet.
    NoQuote,
    /// HTTP: no such endpoint.
    NotFound,
    /// HTTP: the endpoint does not answer that method.
    MethodNotAllowed,
    /// HTTP: the connection limit is reached.
    ServerFull,
    /// HTTP: no long-polling session with that id.
    UnknownSession,
    /// HTTP: the principal is at its connection limit (429).
    TooManyConnections,
    /// HTTP: the page's origin is not in `server.allowed_origins` (403).
    OriginNotAllowed,
    /// HTTP: the long-polling session ended or expired.
    SessionExpired,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::TooManySymbols => "too_many_symbols",
            ErrorCode::NotEntitled => "not_entitled",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NoQuote => "no_quote",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::OriginNotAllowed => "origin_not_allowed",
            ErrorCode::SessionExpired => "session_expired",
        }
    }

    /// The HTTP status an answer with this code has.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::NotEntitled | ErrorCode::OriginNotAllowed => 403,
            ErrorCode::Unauthorized => 401,
            ErrorCode::RateLimited | ErrorCode::TooManyConnections => 429,
            ErrorCode::ServerFull => 503,
            ErrorCode::NoQuote | ErrorCode::NotFound | ErrorCode::UnknownSession => 404,
            ErrorCode::SessionExpired => 410,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::BadRequest | ErrorCode::UnknownSymbol | ErrorCode::TooManySymbols => 400,
        }
    }
}

/// A request id: any JSON string or integer, echoed back.
pub type RequestId = Option<Value>;

/// One client op.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientOp {
    Subscribe {
        id: RequestId,
        symbols: Vec<String>,
        max_rate: Option<f64>,
        snapshot: bool,
        /// The client's last `seq` per symbol (PROTOCOL.md section 12): no
        /// snapshot for a symbol still at that `seq`.
        resume: Vec<(String, u64)>,
    },
    Unsubscribe {
        id: RequestId,
        symbols: Vec<String>,
    },
    List {
        id: RequestId,
    },
    Ping {
        id: RequestId,
    },
    Auth {
        id: RequestId,
        token: String,
    },
}

impl ClientOp {
    /// Every op's name (its `"op"`), as the AsyncAPI document must list them.
    pub const NAMES: [&'static str; 5] = ["subscribe", "unsubscribe", "list", "ping", "auth"];
}

/// A client frame that is not a valid op; becomes a `bad_request` error.
#[derive(Debug, PartialEq)]
pub struct BadRequest {
    pub id: RequestId,
    pub message: String,
}

fn bad(id: &RequestId, message: impl Into<String>) -> BadRequest {
    BadRequest {
        id: id.clone(),
        message: message.into(),
    }
}

/// Decodes a frame: JSON text, or MessagePack (binary frames), into an op.
pub fn parse_op(payload: &[u8], binary: bool) -> Result<ClientOp, BadRequest> {
    let value: Value = if binary {
        rmp_serde::from_slice(payload)
            .map_err(|e| bad(&None, format!("not valid MessagePack: {e}")))?
    } else {
        serde_json::from_slice(payload).map_err(|e| bad(&None, format!("not valid JSON: {e}")))?
    };
    op_from_value(value)
}

/// A 64-bit integer, however written (`7`, `7.0`, `-4e2`). Written with a
/// fraction or an exponent it must be exact in a double (at most 2^53 in size):
/// beyond, the one read may not be the one sent (2^64 reads as 2^64 - 1 and
/// more), so a 64-bit integer that large is written with its digits.
fn is_integer(n: &serde_json::Number) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() <= EXACT)
}

const RESUME_SHAPE: &str = "\"resume\" must map symbols to their last seq: {\"AAPL\":1042}";

/// Interprets a decoded value as an op.
pub fn op_from_value(value: Value) -> Result<ClientOp, BadRequest> {
    let Value::Object(mut obj) = value else {
        return Err(bad(
            &None,
            "a client message must be an object with an \"op\"",
        ));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(_)) => Some(v),
        // JSON has one number type: 7.0 is the integer 7 (echoed as sent).
        Some(Value::Number(n)) if is_integer(&n) => Some(Value::Number(n)),
        Some(_) => return Err(bad(&None, "\"id\" must be a string or an integer")),
    };
    let op = match obj.remove("op") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad(&id, "\"op\" must be a string")),
        None => return Err(bad(&id, "missing \"op\"")),
    };
    let symbols = |obj: &mut serde_json::Map<String, Value>| -> Result<Vec<String>, BadRequest> {
        match obj.remove("symbols") {
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(bad(&id, "\"symbols\" must not be empty"));
                }
                items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(bad(&id, "\"symbols\" must be an array of strings")),
                    })
                    .collect()
            }
            Some(_) => Err(bad(&id, "\"symbols\" must be an array of strings")),
            None => Err(bad(&id, format!("\"{op}\" needs \"symbols\""))),
        }
    };
    match op.as_str() {
        "subscribe" => {
            let syms = symbols(&mut obj)?;
            let max_rate = match obj.remove("max_rate") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(r) if r.is_finite() && r > 0.0 => Some(r),
                    _ => return Err(bad(&id, "\"max_rate\" must be a positive number")),
                },
                Some(_) => return Err(bad(&id, "\"max_rate\" must be a positive number")),
            };
            let snapshot = match obj.remove("snapshot") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => b,
                Some(_) => return Err(bad(&id, "\"snapshot\" must be true or false")),
            };
            let resume = match obj.remove("resume") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Object(seqs)) => seqs
                    .into_iter()
                    .map(|(sym, seq)| match seq {
                        // 1042.0 is the integer 1042, as for ids.
                        Value::Number(n) if is_integer(&n) => match n.as_u64() {
                            Some(seq) => Ok((sym, seq)),
                            None => n
                                .as_f64()
                                .filter(|f| *f >= 0.0)
                                .map(|f| (sym, f as u64))
                                .ok_or_else(|| bad(&id, RESUME_SHAPE)),
                        },
                        _ => Err(bad(&id, RESUME_SHAPE)),
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(bad(&id, RESUME_SHAPE)),
            };
            Ok(ClientOp::Subscribe {
                id,
                symbols: syms,
                max_rate,
                snapshot,
                resume,
            })
        }
        "unsubscribe" => Ok(ClientOp::Unsubscribe {
            symbols: symbols(&mut obj)?,
            id,
        }),
        "list" => Ok(ClientOp::List { id }),
        "ping" => Ok(ClientOp::Ping { id }),
        "auth" => match obj.remove("token") {
            Some(Value::String(token)) => Ok(ClientOp::Auth { id, token }),
            _ => Err(bad(&id, "\"auth\" needs a string \"token\"")),
        },
        other => Err(bad(&id, format!("unknown op {other:?}"))),
    }
}

/// Whether a quote message is a full snapshot or a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuoteKind {
    Snapshot,
    Update,
}

/// The limits announced in `welcome`.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_symbols: usize,
    pub max_rate: f64,
    pub default_rate: f64,
    /// A principal's own connection limit, when it has one.
    pub max_connections: Option<u32>,
}

/// One server → client message.
#[derive(Clone, Debug)]
pub enum ServerMsg {
    Welcome {
        session: String,
        format: Format,
        limits: Limits,
        /// The authenticated principal's name (when authentication is on and
        /// the connection presented its credential up front).
        principal: Option<String>,
    },
    /// The reply to a good `auth` op (the first, or a refresh).
    Authenticated {
        id: RequestId,
        principal: String,
        limits: Limits,
        /// The credential's `exp` (seconds since the Unix epoch), if it expires.
        expires: Option<u64>,
    },
    Subscribed {
        id: RequestId,
        symbols: Vec<Arc<str>>,
        max_rate: f64,
    },
    Unsubscribed {
        id: RequestId,
        symbols: Vec<Arc<str>>,
        /// Why, when the client did not ask (`not_entitled` after a refresh).
        reason: Option<ErrorCode>,
    },
    Subscriptions {
        id: RequestId,
        symbols: Vec<(Arc<str>, f64)>,
    },
    Pong {
        id: RequestId,
    },
    Error {
        id: RequestId,
        code: ErrorCode,
        message: String,
        symbols: Option<Vec<String>>,
    },
    Quote {
        kind: QuoteKind,
        /// Also carries the symbol's name (`quote.sym`).
        quote: Arc<Quote>,
        mask: FieldMask,
        /// Benchmark only: add `ti` (ingest time, µs since the Unix epoch).
        stamp: bool,
        /// A snapshot of a stale symbol says so (`"stale":true`).
        stale: bool,
    },
    /// A symbol turned stale or live, or changed source (section 10).
    Status {
        sym: Arc<str>,
        status: Arc<SymbolStatus>,
    },
}

impl ServerMsg {
    /// Every message's `type`, as the AsyncAPI document must list them (a unit
    /// test makes one message of each kind and finds its type here).
    pub const TYPES: [&'static str; 10] = [
        "welcome",
        "authenticated",
        "subscribed",
        "unsubscribed",
        "subscriptions",
        "pong",
        "error",
        "snapshot",
        "update",
        "status",
    ];

    /// The symbol a quote or status message is about.
    pub fn symbol(&self) -> Option<&Arc<str>> {
        match self {
            ServerMsg::Quote { quote, .. } => Some(&quote.sym),
            ServerMsg::Status { sym, .. } => Some(sym),
            _ => None,
        }
    }

    /// The message's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ServerMsg::Welcome { .. } => "welcome",
            ServerMsg::Authenticated { .. } => "authenticated",
            ServerMsg::Subscribed { .. } => "subscribed",
            ServerMsg::Unsubscribed { .. } => "unsubscribed",
            ServerMsg::Subscriptions { .. } => "subscriptions",
            ServerMsg::Pong { .. } => "pong",
            ServerMsg::Error { .. } => "error",
            ServerMsg::Quote {
                kind: QuoteKind::Snapshot,
                ..
            } => "snapshot",
            ServerMsg::Quote {
                kind: QuoteKind::Update,
                ..
            } => "update",
            ServerMsg::Status { .. } => "status",
        }
    }
}

/// A rate as JSON wants to see it: `2` rather than `2.0` when it is whole.
struct Rate(f64);

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0 >= 0.0 && self.0 < 1e15 {
            s.serialize_u64(self.0 as u64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

impl Serialize for Limits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("max_symbols", &self.max_symbols)?;
        m.serialize_entry("max_rate", &Rate(self.max_rate))?;
        m.serialize_entry("default_rate", &Rate(self.default_rate))?;
        if let Some(n) = self.max_connections {
            m.serialize_entry("max_connections", &n)?;
        }
        m.end()
    }
}

struct SubEntry<'a>(&'a str, f64);

impl Serialize for SubEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("sym", self.0)?;
        m.serialize_entry("max_rate", &Rate(self.1))?;
        m.end()
    }
}

impl Serialize for ServerMsg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", self.type_name())?;
        let id_entry = |m: &mut S::SerializeMap, id: &RequestId| match id {
            Some(id) => m.serialize_entry("id", id),
            None => Ok(()),
        };
        match self {
            ServerMsg::Welcome {
                session,
                format,
                limits,
                principal,
            } => {
                m.serialize_entry("session", session)?;
                m.serialize_entry("protocol", "ticker.v1")?;
                m.serialize_entry("format", format.as_str())?;
                m.serialize_entry("limits", limits)?;
                if let Some(p) = principal {
                    m.serialize_entry("principal", p)?;
                }
            }
            ServerMsg::Authenticated {
                id,
                principal,
                limits,
                expires,
            } => {
                id_entry(&mut m, id)?;
                m.serialize_entry("principal", principal)?;
                m.serialize_entry("limits", limits)?;
                if let Some(exp) = expires {
                    m.serialize_entry("expires", exp)?;
                }
            }
            ServerMsg::Subscribed {
                id,
                symbols,
                max_rate,
            } => {
                id_entry(&mut m, id)?;
                m.serialize_entry("symbols", symbols)?;
                m.serialize_entry("max_rate", &Rate(*max_rate))?;
            }
            ServerMsg::Unsubscribed {
                id,
                symbols,
                reason,
            } => {
                id_entry(&mut m, id)?;
                m.serialize_entry("symbols", symbols)?;
                if let Some(reason) = reason {
                    m.serialize_entry("reason", reason.as_str())?;
                }
            }
            ServerMsg::Subscriptions { id, symbols } => {
                id_entry(&mut m, id)?;
                let entries: Vec<SubEntry> = symbols.iter().map(|(s, r)| SubEntry(s, *r)).collect();
                m.serialize_entry("symbols", &entries)?;
            }
            ServerMsg::Pong { id } => id_entry(&mut m, id)?,
            ServerMsg::Error {
                id,
                code,
                message,
                symbols,
            } => {
                id_entry(&mut m, id)?;
                m.serialize_entry("code", code.as_str())?;
                m.serialize_entry("message", message)?;
                if let Some(symbols) = symbols {
                    m.serialize_entry("symbols", symbols)?;
                }
            }
            ServerMsg::Status { sym, status } => {
                m.serialize_entry("sym", &**sym)?;
                match &status.stale {
                    Some(stale) => {
                        m.serialize_entry("state", "stale")?;
                        m.serialize_entry("since", &stale.since)?;
                        m.serialize_entry("reason", &*stale.reason)?;
                    }
                    None => {
                        m.serialize_entry("state", "live")?;
                        if let Some(feed) = &status.feed {
                            m.serialize_entry("feed", &**feed)?;
                        }
                    }
                }
            }
            ServerMsg::Quote {
                quote,
                mask,
                stamp,
                stale,
                ..
            } => {
                // Keep in step with the cached fragments (`quote::Fragments`), which
                // `encode::encode_frame` writes instead; its tests compare the two.
                m.serialize_entry("sym", &*quote.sym)?;
                m.serialize_entry("seq", &quote.seq)?;
                m.serialize_entry("t", &quote.t)?;
                let f = &quote.fields;
                let mut bit = 1u16;
                macro_rules! field {
                    ($f:ident, $k:literal, $t:ty) => {
                        if mask.0 & bit != 0 {
                            if let Some(v) = &f.$f {
                                m.serialize_entry($k, v)?;
                            }
                        }
                        bit <<= 1;
                    };
                }
                crate::quote::each_field!(field);
                let _ = bit;
                if *stale {
                    m.serialize_entry("stale", &true)?;
                }
                if *stamp {
                    m.serialize_entry("ti", &quote.ingested_us)?;
                }
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_each_op() {
        let op = parse_op(
            br#"{"op":"subscribe","id":1,"symbols":["AAPL"],"max_rate":2,"snapshot":false}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            op,
            ClientOp::Subscribe {
                id: Some(json!(1)),
                symbols: vec!["AAPL".into()],
                max_rate: Some(2.0),
                snapshot: false,
                resume: vec![],
            }
        );
        assert_eq!(
            parse_op(br#"{"op":"ping","id":"x"}"#, false).unwrap(),
            ClientOp::Ping {
                id: Some(json!("x"))
            }
        );
        assert_eq!(
            parse_op(br#"{"op":"ping","id":-4.0}"#, false).unwrap(),
            ClientOp::Ping {
                id: Some(json!(-4.0))
            }
        );
        let mp = rmp_serde::to_vec_named(&json!({"op":"list","id":3})).unwrap();
        assert_eq!(
            parse_op(&mp, true).unwrap(),
            ClientOp::List { id: Some(json!(3)) }
        );
    }

    #[test]
    fn resume_takes_every_seq_a_symbol_can_have_and_nothing_else() {
        // A seq is a u64 (PROTOCOL.md section 1): the whole range resumes, as
        // the schemas say; beyond it, negative or fractional is refused.
        let resume = |seq: &str| {
            let frame = format!(r#"{{"op":"subscribe","symbols":["A"],"resume":{{"A":{seq}}}}}"#);
            match parse_op(frame.as_bytes(), false) {
                Ok(ClientOp::Subscribe { resume, .. }) => Ok(resume[0].1),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.message),
            }
        };
        assert_eq!(resume("0"), Ok(0));
        assert_eq!(resume("1042.0"), Ok(1042));
        assert_eq!(resume("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(resume("18446744073709551615"), Ok(u64::MAX));
        for refused in ["18446744073709551616", "-1", "1.5", "1e300", "\"7\""] {
            assert_eq!(resume(refused), Err(RESUME_SHAPE.to_owned()), "{refused}");
        }
    }

    #[test]
    fn bad_input_is_a_bad_request_with_the_id_when_known() {
        for (frame, want_id) in [
            (&b"not json"[..], None),
            (b"[1,2]", None),
            (br#"{"op":"dance","id":7}"#, Some(json!(7))),
            (
                br#"{"op":"subscribe","id":8,"symbols":"AAPL"}"#,
                Some(json!(8)),
            ),
            (
                br#"{"op":"subscribe","symbols":["A"],"max_rate":"fast"}"#,
                None,
            ),
            (br#"{"op":"subscribe","symbols":["A"],"snapshot":1}"#, None),
            (br#"{"op":5}"#, None),
            (br#"{"op":"ping","id":1.5}"#, None),
            (br#"{"op":"ping","id":1e300}"#, None),
            (br#"{"op":"ping","id":18446744073709551616}"#, None),
            (br#"{"op":"ping","id":-9223372036854775809}"#, None),
        ] {
            let err = parse_op(frame, false).unwrap_err();
            assert_eq!(err.id, want_id, "{}", String::from_utf8_lossy(frame));
        }
    }

    #[test]
    fn every_op_name_is_listed_and_parses() {
        for name in ClientOp::NAMES {
            let frame = json!({"op": name, "symbols": ["A"], "token": "t"});
            assert!(op_from_value(frame).is_ok(), "{name}");
        }
        assert!(op_from_value(json!({"op": "dance"})).is_err());
    }

    #[test]
    fn every_message_type_is_listed() {
        let quote = |kind| ServerMsg::Quote {
            kind,
            quote: Arc::new(Quote::new(
                Arc::from("A"),
                1,
                0,
                Default::default(),
                std::time::Instant::now(),
                0,
            )),
            mask: FieldMask(0),
            stamp: false,
            stale: false,
        };
        let limits = Limits {
            max_symbols: 1,
            max_rate: 1.0,
            default_rate: 1.0,
            max_connections: None,
        };
        // One of each variant: a new variant belongs here and in TYPES.
        let all = [
            ServerMsg::Welcome {
                session: "s".into(),
                format: Format::Json,
                limits: limits.clone(),
                principal: None,
            },
            ServerMsg::Authenticated {
                id: None,
                principal: "p".into(),
                limits,
                expires: None,
            },
            ServerMsg::Subscribed {
                id: None,
                symbols: vec![],
                max_rate: 1.0,
            },
            ServerMsg::Unsubscribed {
                id: None,
                symbols: vec![],
                reason: None,
            },
            ServerMsg::Subscriptions {
                id: None,
                symbols: vec![],
            },
            ServerMsg::Pong { id: None },
            ServerMsg::Error {
                id: None,
                code: ErrorCode::BadRequest,
                message: String::new(),
                symbols: None,
            },
            quote(QuoteKind::Snapshot),
            quote(QuoteKind::Update),
            ServerMsg::Status {
                sym: Arc::from("A"),
                status: Default::default(),
            },
        ];
        let names: Vec<&str> = all.iter().map(ServerMsg::type_name).collect();
        assert_eq!(names, ServerMsg::TYPES);
    }

    #[test]
    fn messages_serialize_with_protocol_keys() {
        let msg = ServerMsg::Subscribed {
            id: Some(json!(1)),
            symbols: vec![Arc::from("AAPL")],
            max_rate: 2.0,
        };
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"type":"subscribed","id":1,"symbols":["AAPL"],"max_rate":2})
        );
    }
}
