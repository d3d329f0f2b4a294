//! Who may connect and what they may see (PROTOCOL.md section 9): API keys and
//! JSON Web Tokens resolve to a [`Principal`] (entitlement patterns, limits,
//! expiry); single-use tickets stand in for a credential in a URL; connections
//! are counted per principal. Off by default: then every client is anonymous.

mod jwt;
mod keys;
mod limits;
mod principal;
mod request;
pub mod settings;
mod tickets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use keys::keygen;
pub use limits::{Admitted, ConnectionCounts};
pub use principal::{check_pattern, Principal, Source};
pub use request::{bearer, Credential};
pub use settings::{AuthSettings, LimitSettings};
pub use tickets::TICKET_TTL;

use jwt::JwtVerifier;
use keys::KeyTable;

use tickets::Tickets;

/// Why a credential was refused. The label is a metric label (bounded); the
/// text is what the client is told (never the credential itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No credential where one is required.
    Missing,
    /// Not a key of ours, a token that does not verify, a malformed header.
    Invalid,
    /// A JWT whose `kid` names no configured key.
    UnknownKey,
    /// A JWT past its `exp` (and the leeway).
    Expired,
    /// A JWT before its `nbf`.
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    /// A ticket unknown, used already or older than its 30 s.
    BadTicket,
    /// The principal is at its `max_connections`.
    OverLimit,
    /// Authentication off: the client's address is at
    /// `server.max_connections_per_ip`.
    OverAddressLimit,
    /// After a reload, the key is gone or the token no longer verifies.
    Revoked,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Invalid => "invalid",
            Refusal::UnknownKey => "unknown_key",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::BadTicket => "bad_ticket",
            Refusal::OverLimit => "over_limit",
            Refusal::OverAddressLimit => "over_ip_limit",
            Refusal::Revoked => "revoked",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "a credential is required (Authorization: Bearer, or an auth op)",
            Refusal::Invalid => "invalid credential",
            Refusal::UnknownKey => "the token's signing key is unknown",
            Refusal::Expired => "token expired",
            Refusal::NotYetValid => "token not valid yet",
            Refusal::WrongAudience => "the token is for another audience",
            Refusal::WrongIssuer => "the token is from another issuer",
            Refusal::BadTicket => "ticket unknown, used or expired",
            Refusal::OverLimit => "too many connections for this principal",
            Refusal::OverAddressLimit => "too many connections from this address",
            Refusal::Revoked => "the credential was revoked",
        }
    }

    /// Every label, so the metrics can show each at zero.
    pub const LABELS: [&'static str; 11] = [
        "missing",
        "invalid",
        "unknown_key",
        "expired",
        "not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "bad_ticket",
        "over_limit",
        "over_ip_limit",
        "revoked",
    ];
}

/// The credential checks of a server with authentication enabled.
pub struct Authenticator {
    /// How long a WebSocket may take to send its `auth` op.
    pub timeout: Duration,
    /// Grace after a JWT's `exp`.
    pub leeway: Duration,
    /// Whether `?token=` is accepted.
    pub allow_query_token: bool,
    /// Keys and the JWT verifier, replaced whole on a reload.
    verifiers: ArcSwap<Verifiers>,
    tickets: Tickets,
    counts: Arc<ConnectionCounts>,
    /// Counts reloads; sessions check their credential again on each.
    reloads: watch::Sender<u64>,
}

/// What credentials are checked against.
struct Verifiers {
    keys: KeyTable,
    jwt: Option<JwtVerifier>,
}

impl Verifiers {
    fn load(s: &AuthSettings) -> Result<Verifiers, (String, String)> {
        let keys = KeyTable::new(&s.keys)?;
        let jwt = s
            .jwt
            .as_ref()
            .map(|j| JwtVerifier::load(j, s.leeway))
            .transpose()?;
        if keys.is_empty() && jwt.is_none() {
            return Err((
                "auth.enabled".into(),
                "authentication is on but no [[auth.keys]] or [auth.jwt] is configured".into(),
            ));
        }
        Ok(Verifiers { keys, jwt })
    }
}

impl Authenticator {
    /// The authenticator `s` describes (`None` when authentication is off), or
    /// the setting at fault and what is wrong with it.
    pub fn load(s: &AuthSettings) -> Result<Option<Authenticator>, (String, String)> {
        if !s.enabled {
            return Ok(None);
        }
        if s.timeout.is_zero() {
            return Err(("auth.timeout".into(), "must be above zero".into()));
        }
        let verifiers = Verifiers::load(s)?;
        Ok(Some(Authenticator {
            timeout: s.timeout,
            leeway: s.leeway,
            allow_query_token: s.allow_query_token,
            verifiers: ArcSwap::from_pointee(verifiers),
            tickets: Tickets::default(),
            counts: Arc::default(),
            reloads: watch::Sender::new(0),
        }))
    }

    /// Reads the keys, the JWT secret or public keys and the JWKS again
    /// (SIGHUP); on an error the current ones stay. Open sessions then check
    /// their credential again ([`Authenticator::recheck`]).
    pub fn reload(&self, s: &AuthSettings) -> Result<(), (String, String)> {
        self.verifiers.store(Arc::new(Verifiers::load(s)?));
        self.reloads.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Changes on every reload.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// After a reload: the principal as its credential resolves now (its
    /// patterns and limits may have changed), or [`Refusal::Revoked`] when the
    /// key is gone or the token no longer verifies. A token past its `exp`
    /// keeps its principal: its expiry ends it anyway.
    pub fn recheck(&self, p: &Principal) -> Result<Principal, Refusal> {
        let v = self.verifiers.load();
        match p.source() {
            Some(Source::Key(hash)) => v.keys.find_hash(hash).ok_or(Refusal::Revoked),
            Some(Source::Jwt(token)) => match v.jwt.as_ref().map(|j| j.verify(token)) {
                Some(Ok(now)) => Ok(now),
                Some(Err(Refusal::Expired)) => Ok(p.clone()),
                _ => Err(Refusal::Revoked),
            },
            Some(Source::Given) | None => Ok(p.clone()),
        }
    }

    /// The principal of an API key or a JWT (three dot-separated parts).
    pub fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        if token.is_empty() {
            return Err(Refusal::Missing);
        }
        let v = self.verifiers.load();
        if token.split('.').count() == 3 {
            if let Some(jwt) = &v.jwt {
                return jwt.verify(token);
            }
        }
        v.keys.find(token).ok_or(Refusal::Invalid)
    }

    /// The principal of a credential from a request.
    pub fn resolve(&self, credential: &Credential, now: Instant) -> Result<Principal, Refusal> {
        match credential {
            Credential::Token(token) => self.verify(token),
            Credential::Ticket(ticket) => {
                self.tickets.redeem(ticket, now).ok_or(Refusal::BadTicket)
            }
        }
    }

    /// Takes a place under the principal's connection limit.
    pub fn admit(&self, principal: Principal) -> Result<Admitted, Refusal> {
        self.counts.admit(principal).ok_or(Refusal::OverLimit)
    }

    /// A single-use ticket standing for `principal` for [`TICKET_TTL`].
    pub fn issue_ticket(&self, principal: Principal, now: Instant) -> String {
        self.tickets.issue(principal, now)
    }
}
