//! Capped, jittered exponential backoff for everything that reconnects (feed
//! adapters, the bus). A leaf module.

use std::time::Duration;

/// The longest backoff before its jitter.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// 0.5 s, 1 s, 2 s ... up to [`BACKOFF_CAP`], each ±25 %.
pub fn backoff(attempt: u32) -> Duration {
    let base = 0.5 * 2f64.powi(attempt.min(6) as i32);
    let capped = base.min(BACKOFF_CAP.as_secs_f64());
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_secs_f64(capped * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(625));
        assert!(backoff(3) >= Duration::from_secs(3));
        for a in 0..50 {
            assert!(backoff(a) <= Duration::from_secs_f64(37.5));
        }
    }
}
