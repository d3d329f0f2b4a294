//! The two deadlines a streaming session loop sleeps on besides its input: when the
//! throttle next releases a symbol, and when a write has been stalled too long.

use std::time::{Duration, Instant};

/// Tracks how long a session has wanted to write without the socket taking it.
pub struct WriteClock {
    stall_timeout: Duration,
    stall_since: Option<Instant>,
    never: tokio::time::Instant,
}

impl WriteClock {
    pub fn new(stall_timeout: Duration) -> WriteClock {
        WriteClock {
            stall_timeout,
            stall_since: None,
            never: tokio::time::Instant::now() + Duration::from_secs(86_400 * 365),
        }
    }

    /// A deadline that never comes (for a `sleep_until` branch with nothing to wait for).
    pub fn never(&self) -> tokio::time::Instant {
        self.never
    }

    /// Call once per loop turn: whether the session wants to write now, and its
    /// next throttle deadline. Returns `(throttle_at, stall_at)`.
    pub fn turn(
        &mut self,
        want_write: bool,
        now: Instant,
        next_deadline: Option<Instant>,
    ) -> (tokio::time::Instant, tokio::time::Instant) {
        if want_write {
            self.stall_since.get_or_insert(now);
        } else {
            self.stall_since = None;
        }
        let throttle_at = next_deadline.map_or(self.never, tokio::time::Instant::from_std);
        let stall_at = self.stall_since.map_or(self.never, |s| {
            tokio::time::Instant::from_std(s + self.stall_timeout)
        });
        (throttle_at, stall_at)
    }

    /// The socket took a frame: the stall clock restarts.
    pub fn wrote(&mut self) {
        self.stall_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_counts_from_the_first_turn_that_wants_to_write() {
        let t0 = Instant::now();
        let mut c = WriteClock::new(Duration::from_secs(2));
        let (throttle, stall) = c.turn(false, t0, None);
        assert_eq!((throttle, stall), (c.never(), c.never()));
        let (_, stall) = c.turn(true, t0, None);
        let (_, later) = c.turn(true, t0 + Duration::from_secs(1), None);
        assert_eq!(stall, later, "a pending write keeps its first deadline");
        assert_eq!(
            stall,
            tokio::time::Instant::from_std(t0 + Duration::from_secs(2))
        );
        c.wrote();
        let (_, after) = c.turn(true, t0 + Duration::from_secs(1), None);
        assert!(after > stall);
    }
}
