//! [`Principal`]: who a session serves. The transport's authentication hook
//! resolves it once at connect ([`crate::transport::TransportContext::authenticate`]);
//! the session asks it "may I have this symbol?" at subscribe. Without
//! authentication every client is anonymous and may see every symbol.

use std::sync::Arc;
use std::time::SystemTime;

use super::settings::LimitSettings;

/// Who a session serves, which symbols they may see, their limits and until
/// when their credential holds.
#[derive(Clone, Debug, Default)]
pub struct Principal(Option<Arc<Restricted>>);

#[derive(Debug)]
struct Restricted {
    sub: String,
    /// `AAPL` (exactly), `AA*` (a prefix) or `*` (everything).
    patterns: Vec<String>,
    limits: LimitSettings,
    /// A JWT's `exp`; `None` for API keys.
    expires: Option<SystemTime>,
    /// What to check again when the keys are reloaded.
    source: Source,
}

/// The credential a principal was resolved from, to be checked again when the
/// keys are reloaded (SIGHUP).
#[derive(Clone, Default)]
pub enum Source {
    /// An API key, by its SHA-256.
    Key([u8; 32]),
    /// A JSON Web Token (kept in memory only, never printed).
    Jwt(Arc<str>),
    /// Made in code (tests): nothing to check.
    #[default]
    Given,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Key(_) => "Key",
            Source::Jwt(_) => "Jwt",
            Source::Given => "Given",
        })
    }
}

impl Principal {
    /// Anyone: every symbol.
    pub fn anonymous() -> Principal {
        Principal(None)
    }

    /// `sub`, entitled to the symbols matching `patterns`.
    pub fn restricted(sub: impl Into<String>, patterns: Vec<String>) -> Principal {
        Principal::with_limits(sub, patterns, LimitSettings::default(), None)
    }

    /// `sub` with `limits`, its credential good until `expires` (if it expires).
    pub fn with_limits(
        sub: impl Into<String>,
        patterns: Vec<String>,
        limits: LimitSettings,
        expires: Option<SystemTime>,
    ) -> Principal {
        Principal(Some(Arc::new(Restricted {
            sub: sub.into(),
            patterns,
            limits,
            expires,
            source: Source::Given,
        })))
    }

    /// The same principal, resolved from `source`.
    pub fn from_source(mut self, source: Source) -> Principal {
        if let Some(r) = self.0.as_mut().and_then(Arc::get_mut) {
            r.source = source;
        }
        self
    }

    /// The credential it was resolved from (`None` when anonymous).
    pub fn source(&self) -> Option<&Source> {
        self.0.as_deref().map(|r| &r.source)
    }

    /// The principal's name (`None` when anonymous).
    pub fn sub(&self) -> Option<&str> {
        self.0.as_deref().map(|r| r.sub.as_str())
    }

    /// The principal's own limits (none when anonymous).
    pub fn limits(&self) -> LimitSettings {
        self.0.as_deref().map(|r| r.limits).unwrap_or_default()
    }

    /// When the credential stops being good (`None`: it does not expire).
    pub fn expires(&self) -> Option<SystemTime> {
        self.0.as_deref().and_then(|r| r.expires)
    }

    /// Whether this principal may receive `sym`.
    pub fn may_see(&self, sym: &str) -> bool {
        let Some(r) = &self.0 else { return true };
        r.patterns.iter().any(|p| pattern_matches(p, sym))
    }
}

/// `*` matches everything, `AA*` a prefix, anything else exactly.
fn pattern_matches(pattern: &str, sym: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => sym.starts_with(prefix),
        None => pattern == sym,
    }
}

/// Why an entitlement pattern is malformed: `*` may only end it.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if body.contains('*') {
        return Err(format!("{pattern:?}: `*` may only end a pattern"));
    }
    if pattern.is_empty() || body.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(format!(
            "{pattern:?} is not a symbol, a prefix ending in `*` or `*`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_exact_or_prefixes() {
        assert!(Principal::anonymous().may_see("AAPL"));
        let p = Principal::restricted("desk-7", vec!["MSFT".into(), "AA*".into()]);
        assert_eq!(p.sub(), Some("desk-7"));
        assert!(p.may_see("MSFT") && p.may_see("AAPL") && p.may_see("AA"));
        assert!(!p.may_see("MSFTX") && !p.may_see("NVDA"));
        assert!(Principal::restricted("all", vec!["*".into()]).may_see("NVDA"));
        assert!(!Principal::restricted("none", vec![]).may_see("NVDA"));
    }

    #[test]
    fn malformed_patterns_are_named() {
        for good in ["*", "AAPL", "AA*", "BRK.B"] {
            assert!(check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "A*B", "**", "A B", "A,B"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
