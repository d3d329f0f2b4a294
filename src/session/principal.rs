//! [`Principal`]: who a session serves. The transport's authentication hook
//! resolves it once at connect ([`crate::transport::TransportContext::authenticate`]);
//! the session asks it "may I have this symbol?" at subscribe. Without
//! authentication every client is anonymous and may see every symbol.

use std::sync::Arc;

/// Who a session serves, and which symbols they may see.
#[derive(Clone, Debug, Default)]
pub struct Principal(Option<Arc<Restricted>>);

#[derive(Debug)]
struct Restricted {
    sub: String,
    /// `AAPL` (exactly), `AA*` (a prefix) or `*` (everything).
    patterns: Vec<String>,
}

impl Principal {
    /// Anyone: every symbol.
    pub fn anonymous() -> Principal {
        Principal(None)
    }

    /// `sub`, entitled to the symbols matching `patterns`.
    pub fn restricted(sub: impl Into<String>, patterns: Vec<String>) -> Principal {
        Principal(Some(Arc::new(Restricted {
            sub: sub.into(),
            patterns,
        })))
    }

    /// The principal's name (`None` when anonymous).
    pub fn sub(&self) -> Option<&str> {
        self.0.as_deref().map(|r| r.sub.as_str())
    }

    /// Whether this principal may receive `sym`.
    pub fn may_see(&self, sym: &str) -> bool {
        let Some(r) = &self.0 else { return true };
        r.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => sym.starts_with(prefix),
            None => p == sym,
        })
    }
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
    }
}
