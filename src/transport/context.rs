//! [`TransportContext`]: what a transport may use (the hub, its settings, the
//! metrics, the connection limit, the shutdown signal, the session registry),
//! instead of the whole application state. Sessions are made here, once for
//! every transport.

use std::sync::Arc;

use actix_web::dev::RequestHead;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::ratelimit::MessageLimit;
use super::registry::SessionRegistry;
use super::socket::PollRequest;
use crate::http::ApiError;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::session::protocol::{ErrorCode, Format};
use crate::session::{Principal, Session, SessionConfig};
use crate::settings::Settings;

/// The narrow context every transport handler gets.
pub struct TransportContext {
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// One permit per client session (`server.max_connections`).
    pub connections: Arc<Semaphore>,
    /// Flips to `true` on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Sessions that outlive a socket (long-polling): how requests reach them.
    pub sessions: SessionRegistry<mpsc::Sender<PollRequest>>,
    /// Engine.IO sessions on HTTP long-polling, by sid.
    pub engines: SessionRegistry<mpsc::Sender<PollRequest>>,
}

impl TransportContext {
    /// The authentication hook: who the client of a new connection is, from
    /// its request (headers, query). Every transport calls it before it makes a
    /// session; a refusal is the transport's 401 or 4001. No authentication is
    /// configured yet, so every client is anonymous and may see every symbol.
    pub fn authenticate(&self, _request: &RequestHead) -> Result<Principal, ApiError> {
        Ok(Principal::anonymous())
    }

    /// A new session for `principal`, speaking `format`; its `welcome` is
    /// already queued.
    pub fn session(&self, format: Format, principal: Principal) -> Session {
        Session::new(
            self.hub.clone(),
            self.metrics.clone(),
            SessionConfig::new(&self.settings.session, self.settings.bench.ingest_stamp),
            format,
        )
        .with_principal(principal)
    }

    /// The client message rate limit of a new session.
    pub fn message_limit(&self) -> MessageLimit {
        MessageLimit::new(&self.settings.session, std::time::Instant::now())
    }

    /// Takes one session slot from the connection limit; `None` when the server
    /// is full (counted as a `server_full` rejection).
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.connections.clone().try_acquire_owned().ok();
        if permit.is_none() {
            self.metrics
                .connections_rejected
                .with_label_values(&[ErrorCode::ServerFull.as_str()])
                .inc();
        }
        permit
    }

    /// [`TransportContext::try_admit`] for HTTP transports: 503 when full.
    pub fn admit_http(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.try_admit().ok_or_else(|| {
            ApiError::new(503, ErrorCode::ServerFull, "server full, try again later")
        })
    }
}
