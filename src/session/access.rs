//! A session's access: who it serves (an admitted [`Principal`]), until when
//! its credential holds, or — for a WebSocket that has not authenticated yet —
//! until when it may send its `auth` op (PROTOCOL.md section 9).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::auth::{Admitted, Authenticator, Principal, Refusal};

/// Why a session's access ended; the transport ends the connection its way
/// (4001, 4003 or 1008 on a WebSocket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthEnd {
    /// No good credential in time, or a bad one.
    Unauthorized,
    /// The token expired and was not refreshed.
    Expired,
    /// The principal is at its connection limit.
    OverLimit,
}

impl AuthEnd {
    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            AuthEnd::Unauthorized => "unauthorized: no valid credential",
            AuthEnd::Expired => "token expired",
            AuthEnd::OverLimit => "too many connections for this principal",
        }
    }
}

enum State {
    /// Waiting for an `auth` op until then.
    Pending(Instant),
    /// Serving `admitted` until `expires` (its `exp` plus the leeway).
    Admitted {
        admitted: Admitted,
        expires: Option<Instant>,
    },
    /// Refused at connect; becomes `Ended` once the session has said so.
    Refused(Refusal),
    Ended(AuthEnd),
}

/// Who a session serves and for how long.
pub struct Access {
    /// `None`: authentication is off.
    auth: Option<Arc<Authenticator>>,
    state: State,
    /// A refused first credential ends access at once (else the client may
    /// try again until `auth.timeout`, as Socket.IO's CONNECT may).
    pub end_on_refusal: bool,
}

impl Access {
    /// Authentication off: anyone, for as long as they like.
    pub fn open() -> Access {
        Access {
            auth: None,
            state: State::Admitted {
                admitted: Admitted::anonymous(),
                expires: None,
            },
            end_on_refusal: true,
        }
    }

    /// `admitted` (by the transport, from its request), with `auth` for refreshes.
    pub fn admitted(auth: Option<Arc<Authenticator>>, admitted: Admitted, now: Instant) -> Access {
        let expires = expiry(auth.as_deref(), &admitted.principal, now);
        Access {
            auth,
            state: State::Admitted { admitted, expires },
            end_on_refusal: true,
        }
    }

    /// Refused at connect (a bad credential in the request): the session ends
    /// at once, telling the client why.
    pub fn refused(auth: Option<Arc<Authenticator>>, why: Refusal) -> Access {
        Access {
            auth,
            state: State::Refused(why),
            end_on_refusal: true,
        }
    }

    /// No credential yet: an `auth` op must come within `auth.timeout`.
    pub fn pending(auth: Arc<Authenticator>, now: Instant) -> Access {
        let until = now + auth.timeout;
        Access {
            auth: Some(auth),
            state: State::Pending(until),
            end_on_refusal: true,
        }
    }

    pub fn authenticator(&self) -> Option<&Arc<Authenticator>> {
        self.auth.as_ref()
    }

    /// The principal served (`None` until authenticated, or after the end).
    pub fn principal(&self) -> Option<&Principal> {
        match &self.state {
            State::Admitted { admitted, .. } => Some(&admitted.principal),
            _ => None,
        }
    }

    /// When access ends unless something happens first.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Pending(until) => Some(*until),
            State::Admitted { expires, .. } => *expires,
            State::Ended(_) | State::Refused(_) => None,
        }
    }

    /// Whether access has ended (by time, by `now`).
    pub fn ended(&mut self, now: Instant) -> Option<AuthEnd> {
        let end = match &self.state {
            State::Ended(end) => return Some(*end),
            State::Refused(Refusal::OverLimit | Refusal::OverAddressLimit) => AuthEnd::OverLimit,
            State::Refused(_) => AuthEnd::Unauthorized,
            State::Pending(until) if *until <= now => AuthEnd::Unauthorized,
            State::Admitted {
                expires: Some(at), ..
            } if *at <= now => AuthEnd::Expired,
            _ => return None,
        };
        self.end(end);
        Some(end)
    }

    pub fn end(&mut self, end: AuthEnd) {
        self.state = State::Ended(end);
    }

    /// The credential no longer holds (a reload revoked it): the session ends
    /// as one refused, telling the client why (4001 on a WebSocket).
    pub fn revoke(&mut self) {
        self.state = State::Refused(Refusal::Revoked);
    }

    /// A new or refreshed principal: admitted (pending) or put in place of the
    /// current one; the expiry follows it.
    pub fn admit(&mut self, admitted: Admitted, now: Instant) {
        let expires = expiry(self.auth.as_deref(), &admitted.principal, now);
        self.state = State::Admitted { admitted, expires };
    }

    /// A refresh: the same place under the connection limit, a new principal.
    pub fn refresh(&mut self, principal: Principal, now: Instant) {
        let expires = expiry(self.auth.as_deref(), &principal, now);
        if let State::Admitted {
            admitted,
            expires: e,
        } = &mut self.state
        {
            admitted.principal = principal;
            *e = expires;
        }
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending(_))
    }

    /// Why the connection was refused (before its session began, or by a
    /// reload since), if it was.
    pub fn refused_at_connect(&self) -> Option<Refusal> {
        match self.state {
            State::Refused(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the client has been told access ended (no more to say).
    pub fn has_ended(&self) -> bool {
        matches!(self.state, State::Ended(_))
    }
}

/// The instant a principal's credential stops being good: its `exp` plus the leeway.
fn expiry(auth: Option<&Authenticator>, p: &Principal, now: Instant) -> Option<Instant> {
    let exp = p.expires()?;
    let leeway = auth.map(|a| a.leeway).unwrap_or_default();
    let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
    Some(now + left + leeway)
}
