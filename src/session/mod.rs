//! The transport-independent session core (one per client): subscriptions with
//! granted rates, the last state sent per symbol (for deltas), the throttle, and an
//! outbox of replies. Transports feed it client ops and pull ready messages from it
//! when their socket can take a frame; they never see quotes any other way.
//!
//! Conflation falls out of the design: the hub only marks a symbol dirty; when the
//! session sends, it diffs the symbol's *latest* quote against what this client last
//! received. A client that cannot keep up skips intermediate states, never fields.

mod access;
pub mod encode;
pub mod protocol;
mod subscriptions;

pub use crate::auth::Principal;
pub use access::{Access, AuthEnd};

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{LimitSettings, Refusal};
use crate::hub::{Hub, Inbox, SymbolId, HISTORY};
use crate::lend::lend;
use crate::metrics::Metrics;
use crate::quote::{FieldMask, Quote};
use crate::settings::SessionSettings;
use protocol::{BadRequest, ClientOp, ErrorCode, Format, Limits, QuoteKind, RequestId, ServerMsg};
use subscriptions::{Subscription, Subscriptions};

/// Error lists name at most this many symbols (the count is in the message).
const MAX_LISTED_SYMBOLS: usize = 100;

/// A state the hub accepted longer ago than this is merged into the next update
/// rather than sent on its own: a client that fell behind (its socket full, a
/// long poll not yet back) catches up with the latest state, not with history.
const SUPERSEDED_AGE: std::time::Duration = std::time::Duration::from_secs(1);

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

thread_local! {
    /// The slots one take found marked, per thread (see [`Session::take_ready`]).
    static MARKED: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
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

/// The symbols a session holds back for their throttle.
#[derive(Default)]
struct Held {
    /// Their inbox slots.
    throttled: Vec<u32>,
    /// The same slots, one bit each: their marks stay set in the inbox until
    /// the throttle lets them out.
    kept: Vec<u64>,
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

    fn report_unknown(&mut self, id: &RequestId, unknown: Vec<String>) {
        if unknown.is_empty() {
            return;
        }
        let message = if unknown.len() == 1 {
            format!("unknown symbol: {}", unknown[0])
        } else {
            format!("{} unknown symbols: {}", unknown.len(), summary(&unknown))
        };
        let listed = unknown.into_iter().take(MAX_LISTED_SYMBOLS).collect();
        self.push_error(id.clone(), ErrorCode::UnknownSymbol, message, Some(listed));
    }

    fn subscribe(
        &mut self,
        id: RequestId,
        symbols: Vec<String>,
        max_rate: Option<f64>,
        snapshot: bool,
        resume: &[(String, u64)],
        now: Instant,
    ) {
        let (mut ids, unknown) = self.hub.resolve(symbols.iter().map(String::as_str));
        let mut forbidden = Vec::new();
        ids.retain(|&sym| {
            let name = self.hub.symbol(sym);
            let allowed = self.access.principal().is_some_and(|p| p.may_see(name));
            if !allowed {
                forbidden.push(name.to_string());
            }
            allowed
        });
        let rate = subscriptions::granted_rate(
            max_rate
                .unwrap_or(self.limits.default_rate)
                .clamp(self.limits.min_rate, self.limits.max_rate),
        );
        let mut room = self.limits.max_symbols.saturating_sub(self.subs.len());
        let mut granted = Vec::new();
        let mut refused = Vec::new();
        for sym in ids {
            if !self.subs.contains(sym) {
                if room == 0 {
                    refused.push(self.hub.symbol(sym).to_string());
                    continue;
                }
                room -= 1;
                // There are `max_symbols` slots, so one is free within the limit.
                let slot = self.subs.free_slot();
                debug_assert!((slot as usize) < self.inbox.slots());
                self.hub.subscribe(sym, slot, &self.inbox);
                self.metrics.subscriptions_active.inc();
                let told = self.hub.status(sym).told();
                self.subs.insert(slot, Subscription::new(sym, rate, told));
            }
            granted.push(sym);
        }
        self.subs.trim();
        self.report_unknown(&id, unknown);
        if !forbidden.is_empty() {
            self.metrics
                .entitlement_refusals
                .inc_by(forbidden.len() as u64);
            let message = format!("not entitled to {}", summary(&forbidden));
            forbidden.truncate(MAX_LISTED_SYMBOLS);
            self.push_error(id.clone(), ErrorCode::NotEntitled, message, Some(forbidden));
        }
        if !granted.is_empty() {
            self.outbox.push(ServerMsg::Subscribed {
                id: id.clone(),
                symbols: granted
                    .iter()
                    .map(|s| self.hub.symbol(*s).clone())
                    .collect(),
                max_rate: rate,
            });
        }
        if !refused.is_empty() {
            let message = format!(
                "subscription limit is {} symbols; not subscribed: {}",
                self.limits.max_symbols,
                summary(&refused)
            );
            refused.truncate(MAX_LISTED_SYMBOLS);
            self.push_error(id, ErrorCode::TooManySymbols, message, Some(refused));
        }
        for sym in granted {
            let latest = self.hub.latest(sym);
            let status = self.hub.status(sym);
            let sub = self.subs.get_mut(sym).expect("unwrap: subscribed above");
            sub.set_rate(rate);
            let name = self.hub.symbol(sym);
            let current = latest.as_ref().map(|q| q.seq);
            let resumed = current.is_some()
                && resume
                    .iter()
                    .any(|(s, seq)| **s == **name && Some(*seq) == current);
            match latest {
                Some(quote) if snapshot && !resumed => {
                    sub.sent = Some(quote.clone());
                    sub.sent_at(now, 1);
                    self.outbox.push(snapshot_msg(
                        quote,
                        self.limits.ingest_stamp,
                        status.is_stale(),
                    ));
                }
                latest => {
                    if resumed {
                        // The client has this state already (section 12): later
                        // updates are deltas from it.
                        sub.sent = latest;
                        sub.sent_at(now, 1);
                    } else if !snapshot && sub.sent.is_none() {
                        // No snapshot wanted: later updates are deltas from the
                        // current state.
                        sub.sent = latest;
                    }
                    // No snapshot says it: a stale symbol gets its status.
                    if status.is_stale() {
                        self.outbox.push(ServerMsg::Status {
                            sym: name.clone(),
                            status: status.clone(),
                        });
                    }
                }
            }
            sub.told = status.told();
        }
    }

    fn unsubscribe(&mut self, id: RequestId, symbols: Vec<String>) {
        let (ids, unknown) = self.hub.resolve(symbols.iter().map(String::as_str));
        self.report_unknown(&id, unknown);
        if ids.is_empty() {
            return;
        }
        for sym in &ids {
            self.drop_subscription(*sym);
        }
        self.subs.trim();
        self.outbox.push(ServerMsg::Unsubscribed {
            id,
            symbols: ids.iter().map(|s| self.hub.symbol(*s).clone()).collect(),
            reason: None,
        });
    }

    fn drop_subscription(&mut self, sym: SymbolId) {
        if let Some((slot, _)) = self.subs.remove(sym) {
            self.hub.unsubscribe(sym, slot, &self.inbox);
            self.metrics.subscriptions_active.dec();
            // The hub marks it no more: the slot is clean for its next symbol.
            self.inbox.unmark(slot);
            if let Some(held) = &mut self.held {
                keep_bit(&mut held.kept, slot, false);
                held.throttled.retain(|&s| s != slot);
            }
        }
    }

    /// Only the queued replies (and the snapshots a subscribe produced), leaving
    /// quote changes for [`Session::take_ready`]. Long-polling answers an op with these.
    pub fn take_replies(&mut self) -> Vec<ServerMsg> {
        std::mem::take(&mut self.outbox)
    }

    /// Where a delivery to this session reads first, outside the session
    /// itself, and how many bytes from there: its inbox and its
    /// subscriptions (for a prefetch; a marked slot may be any of them).
    pub fn hot(&self) -> [(*const u8, usize); 2] {
        let (subs, len) = self.subs.storage();
        [
            (Arc::as_ptr(&self.inbox).cast(), size_of::<Inbox>()),
            (subs.cast(), len * size_of::<Option<Subscription>>()),
        ]
    }

    /// Symbols with a change held back by their throttle.
    pub fn pending_count(&self) -> usize {
        self.held.as_ref().map_or(0, |h| h.throttled.len())
    }

    /// True when [`Session::take_ready`] would return something now.
    /// Looks at the throttled symbols only when nothing else is ready.
    pub fn has_ready(&self, now: Instant) -> bool {
        self.has_news() || self.next_deadline().is_some_and(|d| d <= now)
    }

    /// [`Session::has_ready`] and [`Session::next_deadline`] in one pass (what a
    /// session loop needs on every turn).
    pub fn readiness(&self, now: Instant) -> (bool, Option<Instant>) {
        let deadline = self.next_deadline();
        (
            self.has_news() || deadline.is_some_and(|d| d <= now),
            deadline,
        )
    }

    /// Replies queued or a subscribed symbol changed.
    fn has_news(&self) -> bool {
        !self.outbox.is_empty() || self.inbox.has_dirty()
    }

    /// The earliest moment a throttled symbol may be sent again (or, when
    /// refreshing, a quiet one is due again).
    pub fn next_deadline(&self) -> Option<Instant> {
        let throttled = self
            .held
            .iter()
            .flat_map(|h| &h.throttled)
            .filter_map(|&slot| self.subs.at(slot).and_then(Subscription::next_allowed))
            .min();
        let Some(every) = self.refresh else {
            return throttled;
        };
        let refresh = self
            .subs
            .iter()
            .filter_map(|sub| sub.refresh_due(every))
            .min();
        match (throttled, refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Everything that may be sent now: queued replies first, then one snapshot or
    /// delta per dirty symbol whose throttle allows it. Symbols still throttled stay
    /// pending (one merged state each) until [`Session::next_deadline`].
    pub fn take_ready(&mut self, now: Instant) -> Vec<ServerMsg> {
        let mut out = Vec::new();
        self.take_ready_into(now, &mut out);
        out
    }

    /// [`Session::take_ready`] appending to `out` (a buffer the caller keeps
    /// between takes: no allocation per take).
    pub fn take_ready_into(&mut self, now: Instant, out: &mut Vec<ServerMsg>) {
        // The replies' block is not kept: an idle session holds none.
        if out.capacity() == 0 {
            *out = std::mem::take(&mut self.outbox);
        } else if self.outbox.capacity() > 0 {
            out.append(&mut std::mem::take(&mut self.outbox));
        }
        let hub = &*self.hub;
        let stamp = self.limits.ingest_stamp;
        let refreshing = self.refresh.is_some();
        let mut conflated = 0;
        // Throttled symbols whose time has come leave the kept marks: the take
        // below collects them with the new ones (their marks are still set).
        if let Some(held) = &mut self.held {
            let (subs, Held { throttled, kept }) = (&self.subs, &mut **held);
            throttled.retain(|&slot| {
                let Some(sub) = subs.at(slot) else {
                    return false;
                };
                if sub.next_allowed().is_some_and(|t| t > now) {
                    return true;
                }
                keep_bit(kept, slot, false);
                false
            });
        }
        // The worker's buffer, kept between takes for its capacity (one per
        // session would be an allocation every idle connection holds; a take
        // marks at most `max_symbols`).
        lend(&MARKED, usize::MAX, |marked| {
            let kept = self.held.as_ref().map_or(&[][..], |h| &h.kept[..]);
            self.inbox.take(kept, |slot| marked.push(slot));
            // After the take: a status that changed before a quote was stored is
            // seen here, and told before that quote (section 10).
            if self.inbox.take_status() {
                tell_status(hub, &mut self.subs, out);
            }
            for &slot in &*marked {
                let Some(sub) = self.subs.at_mut(slot) else {
                    continue;
                };
                if sub.next_allowed().is_some_and(|t| t > now) {
                    // The mark goes back and stays set while the symbol waits for its
                    // throttle, so the hub neither marks it nor wakes us per quote.
                    self.inbox.remark(slot);
                    let held = self.held.get_or_insert_default();
                    keep_bit(&mut held.kept, slot, true);
                    held.throttled.push(slot);
                    continue;
                }
                // Full states only (WebRTC) gain nothing from the ones between.
                let budget = if refreshing { 1 } else { sub.budget(now) };
                conflated += emit(hub, sub, now, stamp, budget, out);
            }
        });
        if conflated > 0 {
            self.metrics.updates_conflated.inc_by(conflated);
        }
        if let Some(every) = self.refresh {
            self.refresh_quiet(every, now, out);
        }
    }

    /// Symbols nothing was sent for in `every` go out again in full.
    fn refresh_quiet(
        &mut self,
        every: std::time::Duration,
        now: Instant,
        out: &mut Vec<ServerMsg>,
    ) {
        let mut refreshed = 0;
        for sub in self.subs.iter_mut() {
            if sub.refresh_due(every).is_none_or(|t| t > now) {
                continue;
            }
            let Some(latest) = self.hub.latest(sub.sym) else {
                continue;
            };
            sub.sent = Some(latest.clone());
            sub.sent_at(now, 1);
            refreshed += 1;
            out.push(snapshot_msg(
                latest,
                self.limits.ingest_stamp,
                self.hub.is_stale(sub.sym),
            ));
        }
        if refreshed > 0 {
            self.metrics.webrtc_refreshes.inc_by(refreshed);
        }
    }
}

/// Queues a `status` for every subscribed symbol whose status changed since
/// the client was last told (never throttled).
fn tell_status(hub: &Hub, subs: &mut Subscriptions, out: &mut Vec<ServerMsg>) {
    for sub in subs.iter_mut() {
        let status = hub.status(sub.sym);
        if sub.told.differs_for_client(&status) {
            out.push(ServerMsg::Status {
                sym: hub.symbol(sub.sym).clone(),
                status: status.clone(),
            });
        }
        sub.told = status.told();
    }
}

/// Sets or clears a slot's bit in a word-per-64-slots mask.
fn keep_bit(mask: &mut Vec<u64>, slot: u32, set: bool) {
    let (word, bit) = ((slot / 64) as usize, 1u64 << (slot % 64));
    if mask.len() <= word {
        if !set {
            return;
        }
        mask.resize(word + 1, 0);
    }
    if set {
        mask[word] |= bit;
    } else {
        mask[word] &= !bit;
    }
}

/// Queues the snapshot or delta that brings this client's view of `sym` to the
/// latest quote (nothing if it already has it); returns how many feed updates the
/// delta merged beyond the one it carries (conflated).
fn emit(
    hub: &Hub,
    sub: &mut Subscription,
    now: Instant,
    stamp: bool,
    budget: usize,
    out: &mut Vec<ServerMsg>,
) -> u64 {
    let peek = hub.peek(sub.sym);
    let Some(latest) = peek.as_ref() else {
        return 0;
    };
    let Some(prev) = &sub.sent else {
        sub.sent = Some(latest.clone());
        sub.sent_at(now, 1);
        out.push(snapshot_msg(latest.clone(), stamp, hub.is_stale(sub.sym)));
        return 0;
    };
    if latest.seq <= prev.seq {
        return 0;
    }
    if budget == 1 || latest.seq - prev.seq == 1 {
        // The common case: one update, a delta from the client's state.
        let skipped = latest.seq - prev.seq - 1;
        out.push(update_msg(latest.clone(), latest.delta_from(prev), stamp));
        sub.sent = Some(latest.clone());
        sub.sent_at(now, 1);
        return skipped;
    }
    // The states since the client's, newest first, as many as the budget
    // allows: each goes out as its own update, a delta from the one before;
    // what is older is merged into the first of them.
    let mut states = [const { None::<Arc<Quote>> }; HISTORY];
    states[0] = Some(latest.clone());
    let mut n = 1;
    while n < budget.min(HISTORY) {
        let Some(older) = states[n - 1].as_ref().and_then(|q| q.previous()) else {
            break;
        };
        if older.seq <= prev.seq || now.saturating_duration_since(older.ingested) > SUPERSEDED_AGE {
            break;
        }
        states[n] = Some(older);
        n += 1;
    }
    let mut skipped = 0;
    let mut base: &Quote = prev;
    for quote in states[..n].iter().rev().flatten() {
        skipped += quote.seq - base.seq - 1;
        out.push(update_msg(quote.clone(), quote.delta_from(base), stamp));
        base = quote;
    }
    sub.sent = states[0].take();
    sub.sent_at(now, n);
    skipped
}

/// A symbol's whole state (`stale` as the hub has it now).
fn snapshot_msg(quote: Arc<Quote>, stamp: bool, stale: bool) -> ServerMsg {
    ServerMsg::Quote {
        kind: QuoteKind::Snapshot,
        quote,
        mask: FieldMask::ALL,
        stamp,
        stale,
    }
}

/// A delta: the fields in `mask` changed since the client's last state.
fn update_msg(quote: Arc<Quote>, mask: FieldMask, stamp: bool) -> ServerMsg {
    ServerMsg::Quote {
        kind: QuoteKind::Update,
        quote,
        mask,
        stamp,
        stale: false,
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

/// "A, B, C and 997 more".
fn summary(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let head = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        format!("{head} and {} more", names.len() - SHOWN)
    } else {
        head
    }
}

#[cfg(test)]
mod tests;
