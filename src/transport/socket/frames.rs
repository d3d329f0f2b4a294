//! Server-side WebSocket frames (RFC 6455), written once for every wire
//! protocol that speaks WebSocket: data and control frames, and the close.

use actix_http::ws::{self, CloseReason, OpCode, Parser};
use bytes::BytesMut;

use super::Sink;

/// RFC 6455: a control frame carries at most 125 bytes, so a close reason at most 123.
const MAX_CLOSE_REASON: usize = 123;

/// The longest header of an unmasked server frame.
pub const MAX_HEAD: usize = 10;

/// The header of an unmasked, final server frame of `len` payload bytes (its
/// length in the shortest form, as RFC 6455 section 5.2 requires): the
/// header's bytes are the first `.1` of `.0`.
pub fn ws_head(op: OpCode, len: usize) -> ([u8; MAX_HEAD], usize) {
    let mut head = [0u8; MAX_HEAD];
    head[0] = 0x80 | u8::from(op);
    let n = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, n)
}

/// One unmasked server frame.
pub fn ws_frame(out: &impl Sink, op: OpCode, payload: &[u8]) {
    let (head, n) = ws_head(op, payload.len());
    out.write(|buf| {
        buf.reserve(n + payload.len());
        buf.extend_from_slice(&head[..n]);
        buf.extend_from_slice(payload);
    });
}

/// One unmasked server frame whose payload `encode` puts in an empty buffer,
/// leaving [`MAX_HEAD`] bytes before it (it returns where the payload starts):
/// the header goes right before the payload, with no copy of either.
pub fn ws_frame_in_place(out: &impl Sink, op: OpCode, encode: impl FnOnce(&mut BytesMut) -> usize) {
    out.write_frame(|buf| {
        let at = encode(buf);
        debug_assert!(at >= MAX_HEAD);
        let (head, n) = ws_head(op, buf.len() - at);
        buf[at - n..at].copy_from_slice(&head[..n]);
        at - n
    });
}

/// The close frame (`None`: one without a code); nothing is written after it.
pub fn ws_close(out: &impl Sink, close: Option<(u16, &str)>) {
    let reason = close.map(|(code, text)| CloseReason {
        code: ws::CloseCode::from(code),
        description: Some(truncate(text, MAX_CLOSE_REASON).to_owned()),
    });
    out.write(|buf| Parser::write_close(buf, reason, false));
    out.end();
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_actix_http_s_for_every_length_form() {
        for op in [OpCode::Text, OpCode::Binary, OpCode::Ping, OpCode::Close] {
            for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
                let payload = vec![b'x'; len];
                let mut theirs = BytesMut::new();
                Parser::write_message(&mut theirs, &payload, op, true, false);
                let (head, n) = ws_head(op, len);
                assert_eq!(&theirs[..n], &head[..n], "{op:?}, {len} bytes");
                assert_eq!(theirs.len(), n + len, "{op:?}, {len} bytes");
            }
        }
    }
}
