//! Sessions that outlive a socket, keyed by session id: how a request reaches
//! the driver of a long-polling session (which may run on another worker), and
//! how a session will move from one transport to another (Engine.IO's upgrade
//! from polling to WebSocket). The id of an ended session is remembered for a
//! while so that clients learn it ended rather than never was.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long the id of an ended session is remembered, in expiry times.
const TOMBSTONE_FACTOR: u32 = 10;

/// Why a session id was not found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("no session {0}")]
    Unknown(String),
    #[error("session {0} has ended or expired")]
    Ended(String),
    /// Ended because its credential expired (or was refused): answered 401.
    #[error("session {0} ended: its credential expired")]
    Unauthorized(String),
}

/// Every live session's handle `H` (how requests reach its driver), plus
/// recently ended ids.
pub struct SessionRegistry<H> {
    live: Mutex<HashMap<String, H>>,
    /// When each ended, and whether its credential ended it.
    ended: Mutex<HashMap<String, (Instant, bool)>>,
}

impl<H> Default for SessionRegistry<H> {
    fn default() -> Self {
        SessionRegistry {
            live: Mutex::default(),
            ended: Mutex::default(),
        }
    }
}

impl<H: Clone> SessionRegistry<H> {
    /// Registers a live session.
    pub fn insert(&self, id: &str, handle: H) {
        tracing::debug!(session = %id, "registered");
        self.live.lock().insert(id.to_owned(), handle);
    }

    /// The live session `id`.
    pub fn get(&self, id: &str) -> Result<H, LookupError> {
        if let Some(h) = self.live.lock().get(id) {
            return Ok(h.clone());
        }
        match self.ended.lock().get(id) {
            Some((_, false)) => return Err(LookupError::Ended(id.to_owned())),
            Some((_, true)) => return Err(LookupError::Unauthorized(id.to_owned())),
            None => {}
        }
        Err(LookupError::Unknown(id.to_owned()))
    }

    /// Session `id` has ended: its id is known as ended from now on.
    pub fn remove(&self, id: &str) {
        self.end(id, false);
    }

    /// [`SessionRegistry::remove`], remembering whether its credential ended it.
    pub fn end(&self, id: &str, unauthorized: bool) {
        if self.live.lock().remove(id).is_some() {
            self.ended
                .lock()
                .insert(id.to_owned(), (Instant::now(), unauthorized));
        }
    }

    /// Forgets ids that ended more than ten `expiry` times ago.
    pub fn reap(&self, expiry: Duration) {
        self.reap_at(Instant::now(), expiry);
    }

    fn reap_at(&self, now: Instant, expiry: Duration) {
        self.ended
            .lock()
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < expiry * TOMBSTONE_FACTOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_until_it_ends_then_is_known_as_ended_for_a_while() {
        let registry = SessionRegistry::default();
        registry.insert("s-1", 7);
        assert_eq!(registry.get("s-1"), Ok(7));
        assert_eq!(
            registry.get("s-nope"),
            Err(LookupError::Unknown("s-nope".into()))
        );
        registry.remove("s-1");
        assert_eq!(registry.get("s-1"), Err(LookupError::Ended("s-1".into())));
        let expiry = Duration::from_secs(60);
        registry.reap_at(Instant::now() + Duration::from_secs(60), expiry);
        assert_eq!(registry.get("s-1"), Err(LookupError::Ended("s-1".into())));
        registry.reap_at(Instant::now() + Duration::from_secs(3600), expiry);
        assert_eq!(registry.get("s-1"), Err(LookupError::Unknown("s-1".into())));
    }
}
