//! How a client session ends: the close codes of PROTOCOL.md section 8, written
//! once, and the label each ending gets in `ticker_connections_closed_total`.

/// A close code the gateway sends (PROTOCOL.md section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// Normal close.
    Normal = 1000,
    /// The server is shutting down.
    GoingAway = 1001,
    /// WebSocket protocol error (unmasked frame, bad opcode, …).
    ProtocolError = 1002,
    /// A text frame that is not valid UTF-8 (RFC 6455 §8.1).
    InvalidUtf8 = 1007,
    /// Policy: a principal over its connection limit.
    Policy = 1008,
    /// A client frame or message larger than `max_frame_bytes`.
    TooLarge = 1009,
    /// Internal error.
    Internal = 1011,
    /// Server full (connection limit); try again later.
    ServerFull = 1013,
    /// Nothing received (pongs included) for `client_timeout`.
    ClientTimeout = 4000,
    /// Missing, invalid or already expired credential.
    Unauthorized = 4001,
    /// The token expired during the session and was not refreshed in time.
    TokenExpired = 4003,
    /// Writes stalled for `write_stall_timeout`.
    SlowConsumer = 4008,
    /// More client messages per second than allowed.
    TooManyMessages = 4029,
}

impl CloseCode {
    /// The numeric code on the wire.
    pub const fn code(self) -> u16 {
        self as u16
    }
}

/// How a WebSocket closes when its access ends (PROTOCOL.md sections 8 and 9).
impl From<crate::session::AuthEnd> for CloseCode {
    fn from(end: crate::session::AuthEnd) -> CloseCode {
        match end {
            crate::session::AuthEnd::Unauthorized => CloseCode::Unauthorized,
            crate::session::AuthEnd::Expired => CloseCode::TokenExpired,
            crate::session::AuthEnd::OverLimit => CloseCode::Policy,
        }
    }
}

/// Why a session ended, as `ticker_connections_closed_total` labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Closed with one of our codes.
    Code(CloseCode),
    /// The client closed first with this code; echoed back.
    ByClient(u16),
    /// The peer vanished without a close.
    Gone,
    /// A long-poll session nobody polled within its expiry.
    Expired,
}

impl Ended {
    /// The `code` label: a close code, `none` or `expired`. A client's own code is
    /// labelled only when it is one a client may send (RFC 6455 section 7.4):
    /// anything else would let clients mint label values.
    pub fn label(self) -> std::borrow::Cow<'static, str> {
        match self {
            Ended::Code(c) => c.code().to_string().into(),
            Ended::ByClient(c @ (1000..=1003 | 1007..=1011 | 3000..=4999)) => c.to_string().into(),
            Ended::ByClient(_) => "invalid".into(),
            Ended::Gone => "none".into(),
            Ended::Expired => "expired".into(),
        }
    }
}

impl From<CloseCode> for Ended {
    fn from(c: CloseCode) -> Self {
        Ended::Code(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_codes_or_words() {
        assert_eq!(Ended::from(CloseCode::SlowConsumer).label(), "4008");
        assert_eq!(Ended::ByClient(4321).label(), "4321");
        assert_eq!(Ended::ByClient(65535).label(), "invalid");
        assert_eq!(Ended::Gone.label(), "none");
        assert_eq!(Ended::Expired.label(), "expired");
    }
}
