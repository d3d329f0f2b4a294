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

/// Allows `rate` messages per second on average, `burst` at once. The rate
/// and burst are given with each message (they are the same for every
/// session: a connection keeps only its own state).
pub struct TokenBucket {
    tokens: f64,
    /// Refused messages, draining at `rate` like the tokens refill.
    excess: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: burst as f64,
            excess: 0.0,
            last: now,
        }
    }

    /// Admits or refuses one message.
    pub fn admit(&mut self, rate: f64, burst: u32, now: Instant) -> Admission {
        let burst = f64::from(burst);
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * rate;
        self.last = now;
        self.tokens = (self.tokens + refill).min(burst);
        self.excess = (self.excess - refill).max(0.0);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admission::Allowed
        } else {
            self.excess += 1.0;
            if self.excess > burst {
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
}

impl MessageLimit {
    /// `client_msgs_per_sec` on average, `client_msgs_burst` at once (`s` is
    /// given again with each message).
    pub fn new(s: &SessionSettings, now: Instant) -> MessageLimit {
        MessageLimit {
            bucket: TokenBucket::new(s.client_msgs_burst, now),
        }
    }

    /// Admits one client message. `Ok(true)`: handle it. `Ok(false)`: refused,
    /// and a `rate_limited` error is queued on the session. `Err`: the client
    /// keeps flooding; end the session with this close code.
    pub fn admit(
        &mut self,
        s: &SessionSettings,
        session: &mut Session,
        now: Instant,
    ) -> Result<bool, CloseCode> {
        match self
            .bucket
            .admit(s.client_msgs_per_sec, s.client_msgs_burst, now)
        {
            Admission::Allowed => Ok(true),
            Admission::Refused => {
                session.push_error(
                    None,
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} messages per second; message ignored (keep this up and the session ends with {})",
                        s.client_msgs_per_sec,
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
        let mut b = TokenBucket::new(3, t0);
        let mut admit = |now| b.admit(10.0, 3, now);
        for _ in 0..3 {
            assert_eq!(admit(t0), Admission::Allowed);
        }
        assert_eq!(admit(t0), Admission::Refused);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(admit(t1), Admission::Allowed);
        // A further burst's worth (3) is refused, then the next one is too many.
        for _ in 0..3 {
            assert_eq!(admit(t1), Admission::Refused);
        }
        assert_eq!(admit(t1), Admission::Exceeded);
    }
}
