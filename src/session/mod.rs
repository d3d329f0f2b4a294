//! The transport-independent session core (one per client): subscriptions with
//! granted rates, the last state sent per symbol (for deltas), the throttle, and an
//! outbox of replies. Transports feed it client ops and pull ready messages from it
//! when their socket can take a frame; they never see quotes any other way.
//!
//! Conflation falls out of the design: the hub only marks a symbol dirty; when the
//! session sends, it diffs the symbol's *latest* quote against what this client last
//! received. A client that cannot keep up skips intermediate states, never fields.

mod access;
mod deliver;
pub mod encode;
pub mod protocol;
mod subscribe;
mod subscriptions;

pub use crate::auth::Principal;
pub use access::{Access, AuthEnd};

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{LimitSettings, Refusal};
use crate::hub::{Hub, Inbox, SymbolId};
use crate::metrics::Metrics;
use crate::settings::SessionSettings;
use deliver::Held;
use protocol::{BadRequest, ClientOp, ErrorCode, Format, Limits, RequestId, ServerMsg};
use subscriptions::Subscriptions;

/// Per-session limits, from the `[session]` settings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub max_symbols: usize,
    pub default_rate: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    /// Benchmark only: stamp each quote message with `ti`, the gateway's ingest
    /// time in microseconds since the Unix epoch.
    pub ingest_stamp: bool,
}

impl SessionConfig {
    /// The session settings plus the benchmark switch.
    pub fn new(s: &SessionSettings, ingest_stamp: bool) -> Self {
        SessionConfig {
            max_symbols: s.max_symbols,
            default_rate: s.default_rate,
            min_rate: s.min_rate,
            max_rate: s.max_rate,
            ingest_stamp,
        }
    }

    /// These limits, tightened by a principal's own (which never loosen them).
    pub fn tightened(mut self, p: &LimitSettings) -> Self {
        if let Some(n) = p.max_symbols {
            self.max_symbols = self.max_symbols.min(n);
        }
        if let Some(r) = p.max_rate.filter(|r| r.is_finite() && *r > 0.0) {
            self.max_rate = self.max_rate.min(r);
            self.min_rate = self.min_rate.min(self.max_rate);
            self.default_rate = self.default_rate.min(self.max_rate);
        }
        self
    }

    /// What `welcome` and the `auth` reply tell the client.
    fn advertised(&self, p: &LimitSettings) -> Limits {
        Limits {
            max_symbols: self.max_symbols,
            max_rate: self.max_rate,
            default_rate: self.default_rate,
            max_connections: p.max_connections,
        }
    }
}

/// One client's session state.
pub struct Session {
    id: String,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    inbox: Arc<Inbox>,
    limits: SessionConfig,
    subs: Subscriptions,
    /// Symbols with a change held back by their throttle; boxed, made when
    /// the first is held (a session's own state is what an idle connection
    /// costs).
    held: Option<Box<Held>>,
    outbox: Vec<ServerMsg>,
    /// Who this session serves (asked at subscribe) and until when.
    access: Access,
    /// Send a subscribed symbol again when nothing was sent for it for this
    /// long (a transport that may lose messages: WebRTC).
    refresh: Option<std::time::Duration>,
}

/// A fresh random session id such as `s-8f3a09c2d1e4`.
pub fn new_session_id() -> String {
    format!("s-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

impl Session {
    /// A new session; its first message (`welcome`) is already in the outbox.
    pub fn new(
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
        limits: SessionConfig,
        format: Format,
        access: Access,
    ) -> Self {
        let id = new_session_id();
        let own = access
            .principal()
            .map(Principal::limits)
            .unwrap_or_default();
        let limits = limits.tightened(&own);
        let welcome = ServerMsg::Welcome {
            session: id.clone(),
            format,
            limits: limits.advertised(&own),
            principal: access.principal().and_then(|p| p.sub().map(str::to_owned)),
        };
        Session {
            id,
            hub,
            metrics,
            inbox: Arc::new(Inbox::new(limits.max_symbols)),
            limits,
            subs: Subscriptions::default(),
            held: None,
            // A connection refused at connect hears why, not a welcome.
            outbox: match access.refused_at_connect() {
                Some(_) => Vec::new(),
                None => vec![welcome],
            },
            access,
            refresh: None,
        }
    }

    /// Sends each subscribed symbol again when nothing was sent for it for
    /// `every` (within its `max_rate`): for transports that may lose a message.
    pub fn refreshing(mut self, every: std::time::Duration) -> Self {
        self.refresh = Some(every);
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A refused first credential leaves the session waiting for another
    /// (until `auth.timeout`) instead of ending it: Socket.IO's CONNECT may be
    /// sent again after a CONNECT_ERROR, and a polling client must still
    /// collect the CONNECT_ERROR.
    pub fn retry_auth(mut self) -> Self {
        self.access.end_on_refusal = false;
        self
    }

    /// True while the session waits for its credential (an `auth` op, or
    /// what a STOMP or Socket.IO CONNECT carries).
    pub fn awaits_auth(&self) -> bool {
        self.access.is_pending()
    }

    /// The session's inbox; await [`Inbox::notified`] to learn of new quotes.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }

    /// Queues an error reply (also counted in the metrics).
    pub fn push_error(
        &mut self,
        id: RequestId,
        code: ErrorCode,
        message: impl Into<String>,
        symbols: Option<Vec<String>>,
    ) {
        self.metrics
            .client_errors
            .with_label_values(&[code.as_str()])
            .inc();
        self.outbox.push(ServerMsg::Error {
            id,
            code,
            message: message.into(),
            symbols,
        });
    }

    /// The first error reply waiting in the outbox, if any (for transports that
    /// answer a bad request with an HTTP error before any stream starts).
    pub fn first_error(&self) -> Option<&ServerMsg> {
        self.outbox
            .iter()
            .find(|m| matches!(m, ServerMsg::Error { .. }))
    }

    /// The queued error reply with `code`, if any.
    pub fn error_of(&self, code: ErrorCode) -> Option<&ServerMsg> {
        self.outbox
            .iter()
            .find(|m| matches!(m, ServerMsg::Error { code: c, .. } if *c == code))
    }

    /// Handles a client message a wire protocol decoded: an op, or why it is
    /// not one (answered with `bad_request`).
    pub fn handle_decoded(&mut self, decoded: Result<ClientOp, BadRequest>, now: Instant) {
        match decoded {
            Ok(op) => self.handle_op(op, now),
            Err(e) => self.push_error(e.id, ErrorCode::BadRequest, e.message, None),
        }
    }

    /// Handles one client op; replies go to the outbox. Until the session is
    /// authenticated only `auth` and `ping` are served.
    pub fn handle_op(&mut self, op: ClientOp, now: Instant) {
        if self.access.principal().is_none() {
            match op {
                ClientOp::Auth { .. } | ClientOp::Ping { .. } => {}
                ClientOp::Subscribe { id, .. }
                | ClientOp::Unsubscribe { id, .. }
                | ClientOp::List { id } => {
                    let message = "authenticate first: {\"op\":\"auth\",\"token\":..}";
                    return self.push_error(id, ErrorCode::Unauthorized, message, None);
                }
            }
        }
        match op {
            ClientOp::Subscribe {
                id,
                symbols,
                max_rate,
                snapshot,
                resume,
            } => self.subscribe(id, symbols, max_rate, snapshot, &resume, now),
            ClientOp::Unsubscribe { id, symbols } => self.unsubscribe(id, symbols),
            ClientOp::List { id } => {
                let mut symbols: Vec<(Arc<str>, f64)> = self
                    .subs
                    .iter()
                    .map(|s| (self.hub.symbol(s.sym).clone(), s.rate()))
                    .collect();
                symbols.sort_by(|a, b| a.0.cmp(&b.0));
                self.outbox.push(ServerMsg::Subscriptions { id, symbols });
            }
            ClientOp::Ping { id } => self.outbox.push(ServerMsg::Pong { id }),
            ClientOp::Auth { id, token } => self.authenticate(id, &token, now),
        }
    }

    /// The `auth` op: the first credential of a WebSocket that had none, or a
    /// refresh before the current one expires.
    fn authenticate(&mut self, id: RequestId, token: &str, now: Instant) {
        let Some(auth) = self.access.authenticator().cloned() else {
            let message = "authentication is not enabled on this server";
            return self.push_error(id, ErrorCode::BadRequest, message, None);
        };
        let refused = |s: &mut Self, id, r: Refusal| {
            s.metrics
                .auth_failures
                .with_label_values(&[r.label()])
                .inc();
            s.push_error(id, ErrorCode::Unauthorized, r.message(), None);
        };
        let principal = match auth.verify(token) {
            Ok(p) => p,
            Err(r) => {
                refused(self, id, r);
                if self.access.is_pending() && self.access.end_on_refusal {
                    self.access.end(AuthEnd::Unauthorized);
                }
                return;
            }
        };
        match self.access.principal() {
            Some(current) if current.sub() != principal.sub() => {
                let message = "a refresh must be for the same principal";
                return self.push_error(id, ErrorCode::Unauthorized, message, None);
            }
            Some(_) => {
                self.access.refresh(principal.clone(), now);
                self.drop_unentitled(&principal);
            }
            None => match auth.admit(principal.clone()) {
                Ok(admitted) => {
                    self.access.admit(admitted, now);
                    self.limits = self.limits.clone().tightened(&principal.limits());
                }
                Err(r) => {
                    refused(self, id, r);
                    return self.access.end(AuthEnd::OverLimit);
                }
            },
        }
        let own = principal.limits();
        self.outbox.push(ServerMsg::Authenticated {
            id,
            principal: principal.sub().unwrap_or_default().to_owned(),
            limits: self.limits.advertised(&own),
            expires: principal.expires().and_then(|e| {
                e.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
        });
    }

    /// Changes when the server's keys are reloaded (`None` without
    /// authentication): then [`Session::recheck_auth`].
    pub fn auth_reloads(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.access.authenticator().map(|a| a.reloads())
    }

    /// After a reload: the credential checked again. Still good: its
    /// principal as it resolves now (symbols it no longer entitles go, as on
    /// a refresh); revoked: the session ends with `unauthorized`.
    pub fn recheck_auth(&mut self, now: Instant) {
        let (Some(auth), Some(current)) = (
            self.access.authenticator().cloned(),
            self.access.principal().cloned(),
        ) else {
            return;
        };
        match auth.recheck(&current) {
            Ok(principal) => {
                self.access.refresh(principal.clone(), now);
                self.drop_unentitled(&principal);
            }
            Err(r) => {
                self.metrics
                    .auth_failures
                    .with_label_values(&[r.label()])
                    .inc();
                self.access.revoke();
            }
        }
    }

    /// After a refresh: symbols the principal may no longer see go, with an
    /// `unsubscribed` that says why.
    fn drop_unentitled(&mut self, principal: &Principal) {
        let mut gone: Vec<SymbolId> = self
            .subs
            .iter()
            .map(|s| s.sym)
            .filter(|&sym| !principal.may_see(self.hub.symbol(sym)))
            .collect();
        // Told in the universe's order, whatever order they came in.
        gone.sort_unstable();
        if gone.is_empty() {
            return;
        }
        for &sym in &gone {
            self.drop_subscription(sym);
        }
        self.subs.trim();
        self.metrics.entitlement_refusals.inc_by(gone.len() as u64);
        self.outbox.push(ServerMsg::Unsubscribed {
            id: None,
            symbols: gone.iter().map(|s| self.hub.symbol(*s).clone()).collect(),
            reason: Some(ErrorCode::NotEntitled),
        });
    }

    /// When access ends unless the client acts first (a pending `auth` op's
    /// deadline, a token's expiry plus the leeway).
    pub fn auth_deadline(&self) -> Option<Instant> {
        self.access.deadline()
    }

    /// Whether access has ended; the first time, the client's `error`
    /// (`unauthorized`) is queued so every transport tells it before it ends.
    pub fn auth_end(&mut self, now: Instant) -> Option<AuthEnd> {
        let refused = self.access.refused_at_connect();
        let was_ended = self.access.has_ended();
        let end = self.access.ended(now)?;
        if was_ended {
            return Some(end);
        }
        let message = match refused {
            // Counted where it was refused.
            Some(r) => r.message(),
            None => {
                let reason = match end {
                    AuthEnd::Expired => Refusal::Expired,
                    AuthEnd::OverLimit => Refusal::OverLimit,
                    AuthEnd::Unauthorized => Refusal::Missing,
                };
                self.metrics
                    .auth_failures
                    .with_label_values(&[reason.label()])
                    .inc();
                end.message()
            }
        };
        self.push_error(None, ErrorCode::Unauthorized, message, None);
        Some(end)
    }

    /// Only the queued replies (and the snapshots a subscribe produced), leaving
    /// quote changes for [`Session::take_ready`]. Long-polling answers an op with these.
    pub fn take_replies(&mut self) -> Vec<ServerMsg> {
        std::mem::take(&mut self.outbox)
    }
}

impl Session {
    /// Leaves the fan-out: every subscription dropped, so a closing client
    /// costs the hub nothing more (dropping the session does it too).
    pub fn leave(&mut self) {
        let syms: Vec<SymbolId> = self.subs.iter().map(|s| s.sym).collect();
        for sym in syms {
            self.drop_subscription(sym);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests;
