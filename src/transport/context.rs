//! [`TransportContext`]: what a transport may use (the hub, its settings, the
//! metrics, the connection limit, the shutdown signal, the session registry),
//! instead of the whole application state. Sessions are made here, once for
//! every transport.

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::RequestHead;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::shutdown::Shutdown;

use super::ratelimit::MessageLimit;
use super::registry::SessionRegistry;
use super::socket::PollRequest;
use crate::auth::{Admitted, Authenticator, ConnectionCounts, Credential, Principal, Refusal};
use crate::http::origins::Origins;
use crate::http::ApiError;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::session::protocol::{ErrorCode, Format};
use crate::session::{Access, Session, SessionConfig};
use crate::settings::Settings;

/// The narrow context every transport handler gets.
pub struct TransportContext {
    pub settings: Arc<Settings>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// One permit per client session (`server.max_connections`).
    pub connections: Arc<Semaphore>,
    /// The shutdown signal (connections wait for it; feeds and tasks watch it).
    pub shutdown: Arc<Shutdown>,
    /// Sessions that outlive a socket (long-polling): how requests reach them.
    pub sessions: SessionRegistry<mpsc::Sender<PollRequest>>,
    /// Engine.IO sessions on HTTP long-polling, by sid.
    pub engines: SessionRegistry<mpsc::Sender<PollRequest>>,
    /// Credential checks; `None` when authentication is off.
    pub auth: Option<Arc<Authenticator>>,
    /// Anonymous connections by client address (`server.max_connections_per_ip`).
    pub per_address: Arc<ConnectionCounts>,
    /// `server.allowed_origins`, checked at the WebSocket handshake (the HTTP
    /// transports' requests pass the same check in a middleware).
    pub origins: Origins,
    /// The WebRTC UDP port and its task; `None` when `webrtc.enabled` is off.
    pub webrtc: Option<Arc<super::webrtc::WebRtc>>,
}

impl TransportContext {
    /// The authentication hook: who the client of a new connection is, from
    /// its request (`Authorization: Bearer`, `?ticket=`, `?token=` where
    /// allowed), admitted under its connection limit. `Ok(None)`: the request
    /// carries no credential (a WebSocket may still send an `auth` op). With
    /// authentication off everyone is admitted, anonymous.
    pub fn authenticate(&self, request: &RequestHead) -> Result<Option<Access>, Refusal> {
        let now = Instant::now();
        let Some(auth) = &self.auth else {
            return self.admit_anonymous(request, now).map(Some);
        };
        let admitted = Credential::of_request(request, auth.allow_query_token)
            .and_then(|c| c.map(|c| self.admit(auth, &c, now)).transpose());
        match admitted {
            Ok(admitted) => Ok(admitted.map(|a| Access::admitted(Some(auth.clone()), a, now))),
            Err(r) => Err(self.refused(r)),
        }
    }

    /// Authentication off: anyone, counted by address when
    /// `server.max_connections_per_ip` is set.
    fn admit_anonymous(&self, request: &RequestHead, now: Instant) -> Result<Access, Refusal> {
        let max = self.settings.server.max_connections_per_ip;
        let Some(ip) = request.peer_addr.map(|a| a.ip()).filter(|_| max > 0) else {
            return Ok(Access::open());
        };
        let admitted = self
            .per_address
            .admit_as(ip.to_string(), max, Principal::anonymous())
            .ok_or_else(|| self.refused(Refusal::OverAddressLimit))?;
        Ok(Access::admitted(None, admitted, now))
    }

    /// The access of a connection that can still authenticate after it opened
    /// (an `auth` op, a STOMP CONNECT, a Socket.IO CONNECT): admitted, waiting
    /// for its credential, or refused (the session tells the client, then ends).
    pub fn access_or_pending(&self, hook: Result<Option<Access>, Refusal>) -> Access {
        match (hook, &self.auth) {
            (Ok(Some(access)), _) => access,
            (Ok(None), Some(auth)) => Access::pending(auth.clone(), Instant::now()),
            // No authentication: the hook admits everyone.
            (Ok(None), None) => Access::open(),
            (Err(r), _) => Access::refused(self.auth.clone(), r),
        }
    }

    /// A credential resolved and admitted under its principal's limit.
    pub fn admit(
        &self,
        auth: &Authenticator,
        c: &Credential,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        auth.resolve(c, now).and_then(|p| auth.admit(p))
    }

    /// Counts a refusal in the metrics and hands it back.
    pub fn refused(&self, r: Refusal) -> Refusal {
        self.metrics
            .auth_failures
            .with_label_values(&[r.label()])
            .inc();
        r
    }

    /// [`TransportContext::authenticate`] for HTTP transports, which need the
    /// credential up front: 401 without one or with a bad one, 429 over the
    /// principal's connection limit.
    pub fn authenticate_http(&self, request: &RequestHead) -> Result<Access, ApiError> {
        match self.authenticate(request) {
            Ok(Some(access)) => Ok(access),
            Ok(None) => Err(self.refused(Refusal::Missing).into()),
            Err(r) => Err(r.into()),
        }
    }

    /// A new session for `access`, speaking `format`; its `welcome` is
    /// already queued.
    pub fn session(&self, format: Format, access: Access) -> Session {
        Session::new(
            self.hub.clone(),
            self.metrics.clone(),
            SessionConfig::new(&self.settings.session, self.settings.bench.ingest_stamp),
            format,
            access,
        )
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
