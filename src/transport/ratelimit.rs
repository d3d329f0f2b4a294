//! Client message rate limiting: a token bucket. A message over the limit is
//! refused with a `rate_limited` error; a client that keeps flooding (another full
//! burst of refused messages) is closed with 4029.

use std::time::Instant;

use super::CloseCode;
use crate::session::protocol::ErrorCode;
use crate::session::Session;
use crate::settings::SessionSettings;

/// What to do with one client message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Handle it.
    Allowed,
    /// Do not handle it; answer `rate_limited`.
    Refused,
    /// The client keeps flooding: close with 4029.
    Exceeded,
}

/// Allows `rate` messages per second on average, `burst` at once.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    /// Refused messages, draining at `rate` like the tokens refill.
    excess: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst: burst as f64,
            tokens: burst as f64,
            excess: 0.0,
            last: now,
        }
    }

    /// Admits or refuses one message.
    pub fn admit(&mut self, now: Instant) -> Admission {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.excess = (self.excess - refill).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admission::Allowed
        } else {
            self.excess += 1.0;
            if self.excess > self.burst {
                Admission::Exceeded
            } else {
                Admission::Refused
            }
        }
    }
}

/// The client message rate limit of one session, for every transport: one
/// refusal text, one 4029 path.
pub struct MessageLimit {
    bucket: TokenBucket,
    per_sec: f64,
}

impl MessageLimit {
    /// `client_msgs_per_sec` on average, `client_msgs_burst` at once.
    pub fn new(s: &SessionSettings, now: Instant) -> MessageLimit {
        MessageLimit {
            bucket: TokenBucket::new(s.client_msgs_per_sec, s.client_msgs_burst, now),
            per_sec: s.client_msgs_per_sec,
        }
    }

    /// Admits one client message. `Ok(true)`: handle it. `Ok(false)`: refused,
    /// and a `rate_limited` error is queued on the session. `Err`: the client
    /// keeps flooding; end the session with this close code.
    pub fn admit(&mut self, session: &mut Session, now: Instant) -> Result<bool, CloseCode> {
        match self.bucket.admit(now) {
            Admission::Allowed => Ok(true),
            Admission::Refused => {
                session.push_error(
                    None,
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} messages per second; message ignored (keep this up and the session ends with {})",
                        self.per_sec,
                        CloseCode::TooManyMessages.code()
                    ),
                    None,
                );
                Ok(false)
            }
            Admission::Exceeded => Err(CloseCode::TooManyMessages),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_then_refuse_then_close() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert_eq!(b.admit(t0), Admission::Allowed);
        }
        assert_eq!(b.admit(t0), Admission::Refused);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.admit(t1), Admission::Allowed);
        // A further burst's worth (3) is refused, then the next one is too many.
        for _ in 0..3 {
            assert_eq!(b.admit(t1), Admission::Refused);
        }
        assert_eq!(b.admit(t1), Admission::Exceeded);
    }
}
