//! Sessions that outlive a socket, keyed by session id: a long-polling session
//! waits here between requests, and a session can move from one transport to
//! another through it (Engine.IO's upgrade from polling to WebSocket). A parked
//! session nobody uses for the expiry time is ended; the id of an ended session is
//! remembered for a while so that clients learn it ended rather than never was.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::OwnedSemaphorePermit;

use super::{CloseCode, Ended, FrameCounters, MessageLimit};
use crate::hub::Inbox;
use crate::session::Session;

/// How long the id of an ended session is remembered, in expiry times.
const TOMBSTONE_FACTOR: u32 = 10;

/// Why a session id was not found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("no session {0}")]
    Unknown(String),
    #[error("session {0} has ended or expired")]
    Ended(String),
}

/// One parked session with what its transport keeps between requests.
pub struct Parked {
    pub session: tokio::sync::Mutex<Session>,
    /// The session's inbox, to wait for news without holding the session.
    pub inbox: Arc<Inbox>,
    pub limit: Mutex<MessageLimit>,
    pub counters: Mutex<FrameCounters>,
    last_seen: Mutex<Instant>,
    /// Requests or sockets using the session now (it never expires meanwhile).
    attached: AtomicUsize,
    _permit: OwnedSemaphorePermit,
}

impl Parked {
    /// Notes that the client was heard from.
    pub fn touch(&self) {
        *self.last_seen.lock() = Instant::now();
    }

    /// Marks the session in use until the guard is dropped.
    pub fn attach(&self) -> Attached<'_> {
        self.attached.fetch_add(1, Ordering::AcqRel);
        self.touch();
        Attached(self)
    }
}

/// A session in use; see [`Parked::attach`].
pub struct Attached<'a>(&'a Parked);

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.attached.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every parked session, plus recently ended ids.
#[derive(Default)]
pub struct SessionRegistry {
    live: Mutex<HashMap<String, Arc<Parked>>>,
    ended: Mutex<HashMap<String, Instant>>,
}

impl SessionRegistry {
    /// Parks a new session under its id.
    pub fn park(
        &self,
        session: Session,
        limit: MessageLimit,
        counters: FrameCounters,
        permit: OwnedSemaphorePermit,
    ) -> Arc<Parked> {
        let id = session.id().to_owned();
        let parked = Arc::new(Parked {
            inbox: session.inbox().clone(),
            session: tokio::sync::Mutex::new(session),
            limit: Mutex::new(limit),
            counters: Mutex::new(counters),
            last_seen: Mutex::new(Instant::now()),
            attached: AtomicUsize::new(0),
            _permit: permit,
        });
        tracing::debug!(session = %id, "parked");
        self.live.lock().insert(id, parked.clone());
        parked
    }

    /// The live session `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Parked>, LookupError> {
        if let Some(p) = self.live.lock().get(id) {
            return Ok(p.clone());
        }
        if self.ended.lock().contains_key(id) {
            return Err(LookupError::Ended(id.to_owned()));
        }
        Err(LookupError::Unknown(id.to_owned()))
    }

    /// Ends session `id` (it leaves the fan-out once nobody holds it), counted
    /// as `reason`.
    pub fn end(&self, id: &str, reason: Ended) {
        if let Some(p) = self.live.lock().remove(id) {
            tracing::debug!(session = %id, ended = %reason.label(), "session ended");
            p.counters.lock().closed(reason);
            self.ended.lock().insert(id.to_owned(), Instant::now());
        }
    }

    /// Ends sessions unused for longer than `timeout` and forgets old ended ids.
    pub fn reap(&self, timeout: Duration) {
        self.reap_at(Instant::now(), timeout);
    }

    fn reap_at(&self, now: Instant, timeout: Duration) {
        let idle: Vec<String> = self
            .live
            .lock()
            .iter()
            .filter(|(_, p)| {
                p.attached.load(Ordering::Acquire) == 0
                    && now.saturating_duration_since(*p.last_seen.lock()) > timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            self.end(&id, Ended::Expired);
        }
        self.ended
            .lock()
            .retain(|_, at| now.saturating_duration_since(*at) < timeout * TOMBSTONE_FACTOR);
    }

    /// Ends every session (graceful shutdown).
    pub fn end_all(&self) {
        let ids: Vec<String> = self.live.lock().keys().cloned().collect();
        for id in ids {
            self.end(&id, CloseCode::GoingAway.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use crate::metrics::Metrics;
    use crate::session::protocol::Format;
    use crate::session::SessionConfig;
    use crate::settings::Settings;

    fn park_one(registry: &SessionRegistry) -> (String, Arc<Metrics>) {
        let settings = Settings::load_with(None, &[]).unwrap();
        let universe = crate::universe::parse("h\nAAA\tA\t1.00\t0.01\tsim\n").unwrap();
        let metrics = Arc::new(Metrics::new());
        let session = Session::new(
            Arc::new(Hub::new(universe)),
            metrics.clone(),
            SessionConfig::new(&settings.session, false),
            Format::Json,
        );
        let id = session.id().to_owned();
        let permit = Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap();
        registry.park(
            session,
            MessageLimit::new(&settings.session, Instant::now()),
            FrameCounters::open(&metrics, "poll", Format::Json),
            permit,
        );
        (id, metrics)
    }

    #[test]
    fn a_parked_session_is_found_until_it_ends_then_is_known_as_ended() {
        let registry = SessionRegistry::default();
        let (id, metrics) = park_one(&registry);
        assert!(registry.get(&id).is_ok());
        assert_eq!(
            registry.get("s-nope").err(),
            Some(LookupError::Unknown("s-nope".into()))
        );
        registry.end(&id, CloseCode::Normal.into());
        assert_eq!(
            registry.get(&id).err(),
            Some(LookupError::Ended(id.clone()))
        );
        let closed = metrics
            .connections_closed
            .with_label_values(&["poll", "1000"])
            .get();
        assert_eq!(closed, 1);
    }

    #[test]
    fn only_unused_sessions_expire() {
        let registry = SessionRegistry::default();
        let (id, _m) = park_one(&registry);
        let later = Instant::now() + Duration::from_secs(120);
        let parked = registry.get(&id).unwrap();
        let attached = parked.attach();
        registry.reap_at(later, Duration::from_secs(60));
        assert!(registry.get(&id).is_ok(), "in use: never expires");
        drop(attached);
        registry.reap_at(later, Duration::from_secs(60));
        assert_eq!(
            registry.get(&id).err(),
            Some(LookupError::Ended(id.clone()))
        );
        // Much later the ended id is forgotten.
        registry.reap_at(later + Duration::from_secs(3600), Duration::from_secs(60));
        assert_eq!(registry.get(&id).err(), Some(LookupError::Unknown(id)));
    }
}
