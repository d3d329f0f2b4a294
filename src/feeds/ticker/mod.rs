//! `ticker`: another gateway's `/ws` (ticker.v1, JSON) as the upstream, so a
//! gateway can relay a gateway. The feed subscribes upstream to the symbols
//! sessions here want (each kept `linger` after its last session left), or to
//! every symbol of this gateway's universe with `follow = "all"`; it follows
//! demand as it changes, and after a lost connection reconnects with capped,
//! jittered backoff and resubscribes what is in demand (fresh snapshots come
//! with the `subscribed`).
//!
//! Snapshots and updates are merged into the hub's quote as deltas, with the
//! upstream's `seq` handed along: the hub adopts it when it is higher than its
//! own and otherwise assigns the next one, so this gateway stays the authority
//! for the `seq` its clients see (as with the bus, PROTOCOL.md section 11). An
//! update whose `seq` is not above the last one on the same connection is
//! dropped and counted (`out_of_order`).
//!
//! Close 4001 or 4003 (credential refused or expired), an `unauthorized` error
//! and an upgrade refused with 401 or 403 fail the feed; 1008 and 1013 (over the
//! upstream's limits) reconnect without resetting the backoff. The optional
//! bearer token is read from a file or an environment variable at every
//! connection (so a rotated token is picked up) and is never logged.

mod connection;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::Connector;

use super::upstream::{self, Health, Place, Upstream};
use super::{AdapterSettings, DemandWatch, FeedAdapter, FeedContext, FeedError, Follow, Invalid};
use connection::Connection;

fn default_linger() -> Duration {
    Duration::from_secs(30)
}

/// `kind = "ticker"`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TickerSettings {
    /// The upstream gateway's WebSocket, e.g. "wss://gw1.example:8080/ws".
    pub url: String,
    /// `demand` or `all` (every symbol of this gateway's universe).
    #[serde(default)]
    pub follow: Follow,
    /// How long a symbol stays subscribed after its last session left.
    #[serde(default = "default_linger", with = "crate::duration")]
    pub linger: Duration,
    /// The environment variable holding the bearer token ...
    #[serde(default)]
    pub token_env: Option<String>,
    /// ... or, when set, a file holding it. Neither: no credential.
    #[serde(default)]
    pub token_file: Option<String>,
    /// PEM certificates trusted for a wss upstream instead of the system's
    /// roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
}

impl TickerSettings {
    /// The token, when one is configured.
    fn token(&self) -> Result<Option<String>, Invalid> {
        if self.token_file.is_none() && self.token_env.is_none() {
            return Ok(None);
        }
        let place = Place {
            file: ("token_file", self.token_file.as_deref()),
            env: ("token_env", self.token_env.as_deref().unwrap_or_default()),
        };
        place.read().map(Some)
    }

    /// The upgrade request: the URL, and the token as `Authorization: Bearer`.
    fn request(&self) -> Result<Request, Invalid> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Invalid::new("url", e.to_string()))?;
        if let Some(token) = self.token()? {
            let key = if self.token_file.is_some() {
                "token_file"
            } else {
                "token_env"
            };
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Invalid::new(key, "is not a valid HTTP header value"))?;
            value.set_sensitive(true);
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        Ok(request)
    }

    /// The TLS setup for `ca_file` (`None`: the system's roots).
    fn connector(&self) -> Result<Option<Arc<rustls::ClientConfig>>, Invalid> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let bad = |e: String| Invalid::new("ca_file", format!("{path}: {e}"));
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }
}

impl AdapterSettings for TickerSettings {
    type Adapter = TickerFeed;

    fn validate(&self) -> Result<(), Invalid> {
        if !(self.url.starts_with("wss://") || self.url.starts_with("ws://")) {
            return Err(Invalid::new("url", "must be a ws:// or wss:// URL"));
        }
        if self.ca_file.is_some() && !self.url.starts_with("wss://") {
            return Err(Invalid::new("ca_file", "is for a wss:// url"));
        }
        self.request()?;
        self.connector().map(drop)
    }

    fn build(&self, _ctx: &FeedContext) -> Result<TickerFeed, FeedError> {
        let tls = self.connector().map_err(fatal)?;
        Ok(TickerFeed {
            settings: self.clone(),
            tls,
        })
    }
}

fn fatal(e: Invalid) -> FeedError {
    FeedError::Fatal(format!("{}: {}", e.key, e.problem))
}

/// The upstream gateway follower.
pub struct TickerFeed {
    settings: TickerSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl FeedAdapter for TickerFeed {
    async fn run(self, ctx: FeedContext) -> Result<(), FeedError> {
        let linger = self.settings.linger;
        upstream::run(self, linger, ctx).await
    }
}

impl Upstream for TickerFeed {
    type Conn = Connection;
    const SOURCE: &'static str = "upstream gateway";

    async fn open(&self, ctx: &FeedContext) -> Result<Connection, FeedError> {
        // Read again at every connection: a token rotated on disk is picked up.
        let request = self.settings.request().map_err(fatal)?;
        let connector = self.tls.clone().map(Connector::Rustls);
        Connection::open(request, connector, ctx).await
    }

    async fn follow(
        &mut self,
        conn: Connection,
        ctx: &mut FeedContext,
        demand: &mut DemandWatch,
        health: &mut Health,
    ) -> Result<(), FeedError> {
        conn.follow(self.settings.follow, ctx, demand, health).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(extra: &str) -> TickerSettings {
        toml::from_str(&format!("url = \"ws://127.0.0.1:1/ws\"\n{extra}")).unwrap()
    }

    #[test]
    fn the_token_goes_out_as_a_bearer_header_that_is_never_shown() {
        std::env::set_var("TICKER_FEED_TEST_TOKEN", "t0ken\n");
        let s = settings("token_env = \"TICKER_FEED_TEST_TOKEN\"");
        s.validate().unwrap();
        let request = s.request().unwrap();
        let auth = &request.headers()[header::AUTHORIZATION];
        assert_eq!(auth, "Bearer t0ken");
        assert!(auth.is_sensitive());
        assert!(!format!("{request:?}").contains("t0ken"));
        assert!(!settings("")
            .request()
            .unwrap()
            .headers()
            .contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let key = |extra: &str| settings(extra).validate().unwrap_err().key;
        let mut http = settings("");
        http.url = "http://127.0.0.1:1/ws".into();
        assert_eq!(http.validate().unwrap_err().key, "url");
        assert_eq!(
            key("ca_file = \"/etc/hostname\""),
            "ca_file",
            "ws:// needs no CA"
        );
        assert_eq!(key("token_env = \"TICKER_FEED_TEST_UNSET\""), "token_env");
        assert_eq!(key("token_file = \"/nonexistent/token\""), "token_file");
        assert_eq!(settings("follow = \"all\"").follow, Follow::All);
        assert_eq!(settings("").linger, Duration::from_secs(30));
    }
}
