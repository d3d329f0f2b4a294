//! What changes without a restart (SIGHUP): API keys, the JWT secret, public
//! keys and JWKS, and the TLS certificate. Open sessions check their
//! credential again (a revoked one ends with 4001); open TLS connections keep
//! the certificate they started with. Every other setting takes a restart.

use std::sync::Arc;

use crate::app::AppState;
use crate::settings::Settings;

/// Applies reloaded settings to a running gateway.
#[derive(Clone)]
pub struct Reloader {
    state: Arc<AppState>,
}

impl Reloader {
    pub fn new(state: Arc<AppState>) -> Reloader {
        Reloader { state }
    }

    /// Takes `new`'s keys and certificate (`new` was validated as it loaded,
    /// files read included); the setting at fault if one no longer reads.
    pub fn reload(&self, new: &Settings) -> Result<(), String> {
        let bad = |(key, problem): (String, String)| format!("invalid setting {key}: {problem}");
        match (&self.state.certificates, new.tls.enabled()) {
            (Some(certs), true) => certs.reload(&new.tls).map_err(bad)?,
            (None, false) => {}
            _ => tracing::warn!("[tls] was turned on or off: that takes a restart"),
        }
        match (&self.state.transport.auth, new.auth.enabled) {
            (Some(auth), true) => auth.reload(&new.auth).map_err(bad)?,
            (None, false) => {}
            _ => tracing::warn!("auth.enabled changed: that takes a restart"),
        }
        Ok(())
    }
}
