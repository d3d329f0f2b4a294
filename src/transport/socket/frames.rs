//! Server-side WebSocket frames (RFC 6455), written once for every wire
//! protocol that speaks WebSocket: data and control frames, and the close.

use actix_http::ws::{self, CloseReason, OpCode, Parser};

use super::Sink;

/// RFC 6455: a control frame carries at most 125 bytes, so a close reason at most 123.
const MAX_CLOSE_REASON: usize = 123;

/// One unmasked server frame.
pub fn ws_frame(out: &impl Sink, op: OpCode, payload: &[u8]) {
    out.write(|buf| Parser::write_message(buf, payload, op, true, false));
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
