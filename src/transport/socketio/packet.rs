//! Engine.IO v4 and Socket.IO v5 packets as text.
//!
//! An Engine.IO packet is a type digit and its data: `0` open, `1` close, `2`
//! ping, `3` pong, `4` message, `5` upgrade, `6` noop. A message carries a
//! Socket.IO packet: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`,
//! types `0` CONNECT, `1` DISCONNECT, `2` EVENT, `3` ACK, `4` CONNECT_ERROR,
//! `5` BINARY_EVENT, `6` BINARY_ACK.

use serde_json::Value;

/// Socket.IO packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// One Socket.IO packet from a client.
#[derive(Debug, PartialEq)]
pub struct Packet {
    pub kind: Kind,
    /// Binary attachments that follow (binary packets only).
    pub attachments: usize,
    /// `/` when none is named.
    pub namespace: String,
    pub ack: Option<u64>,
    pub data: Option<Value>,
}

/// The longest ack id or attachment count we read (digits).
const MAX_DIGITS: usize = 15;

/// Parses a Socket.IO packet (the text after Engine.IO's `4`).
pub fn parse(text: &str) -> Result<Packet, String> {
    let mut rest = text;
    let kind = match rest.as_bytes().first() {
        Some(b'0') => Kind::Connect,
        Some(b'1') => Kind::Disconnect,
        Some(b'2') => Kind::Event,
        Some(b'3') => Kind::Ack,
        Some(b'4') => Kind::ConnectError,
        Some(b'5') => Kind::BinaryEvent,
        Some(b'6') => Kind::BinaryAck,
        _ => return Err(format!("unknown Socket.IO packet {:?}", short(text))),
    };
    rest = &rest[1..];
    let mut attachments = 0;
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let (n, after) = digits(rest).ok_or("a binary packet without its attachment count")?;
        rest = after
            .strip_prefix('-')
            .ok_or("a binary packet's attachment count must end with '-'")?;
        attachments = usize::try_from(n).map_err(|_| "too many attachments")?;
    }
    let mut namespace = "/".to_owned();
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        namespace = rest[..end].to_owned();
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let mut ack = None;
    if let Some((n, after)) = digits(rest) {
        ack = Some(n);
        rest = after;
    }
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str(rest).map_err(|e| format!("packet data is not JSON: {e}"))?)
    };
    if !shape_fits(kind, data.as_ref()) {
        return Err(format!("{kind:?} with data of the wrong shape"));
    }
    Ok(Packet {
        kind,
        attachments,
        namespace,
        ack,
        data,
    })
}

/// The data each packet type may carry (as Socket.IO's own parser checks):
/// an event is `["name", ...]`, an ack `[...]`, a CONNECT's data an object.
fn shape_fits(kind: Kind, data: Option<&Value>) -> bool {
    match kind {
        Kind::Connect => data.is_none_or(Value::is_object),
        Kind::Disconnect => data.is_none(),
        Kind::Event | Kind::BinaryEvent => {
            matches!(data, Some(Value::Array(a)) if a.first().is_some_and(Value::is_string))
        }
        Kind::Ack | Kind::BinaryAck => matches!(data, Some(Value::Array(_))),
        Kind::ConnectError => data.is_some_and(|d| d.is_object() || d.is_string()),
    }
}

/// A leading run of digits as a number, and what follows.
fn digits(s: &str) -> Option<(u64, &str)> {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 || n > MAX_DIGITS {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

/// The start of `text`, for error messages.
fn short(text: &str) -> &str {
    let mut end = text.len().min(32);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn packets_of_each_shape() {
        let p = parse("0").unwrap();
        assert_eq!(
            (p.kind, p.namespace.as_str(), p.data),
            (Kind::Connect, "/", None)
        );
        let p = parse(r#"0{"token":"t"}"#).unwrap();
        assert_eq!(p.data, Some(json!({"token": "t"})));
        let p = parse("0/admin,").unwrap();
        assert_eq!(p.namespace, "/admin");
        let p = parse(r#"2["subscribe",{"symbols":["A"]}]"#).unwrap();
        assert_eq!((p.kind, p.ack), (Kind::Event, None));
        let p = parse(r#"212["subscribe",{}]"#).unwrap();
        assert_eq!(p.ack, Some(12));
        let p = parse(r#"2/admin,7["x"]"#).unwrap();
        assert_eq!((p.namespace.as_str(), p.ack), ("/admin", Some(7)));
        let p = parse(r#"51-["x",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!((p.kind, p.attachments), (Kind::BinaryEvent, 1));
        let p = parse(r#"62-/admin,3[{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.ack),
            (Kind::BinaryAck, 2, Some(3))
        );
        assert_eq!(parse("1").unwrap().kind, Kind::Disconnect);
    }

    #[test]
    fn bad_packets_are_errors() {
        for bad in [
            "",
            "9",
            "2[",
            "5[\"x\"]",
            "5x-[]",
            "2{oops",
            "21234567890123456789[]",
            "2{}",
            "2[]",
            "2[1]",
            "3{}",
            "1{}",
            "0[]",
            "2abc[\"x\"]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
