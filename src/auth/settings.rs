//! `[auth]`: who may connect (PROTOCOL.md section 9). Off by default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Authentication, entitlements and per-principal limits.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Every connection must present a credential.
    pub enabled: bool,
    /// A WebSocket without a credential in its upgrade request must send a good
    /// `auth` op within this long, or it is closed with 4001.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// A JWT is still good this long after its `exp` (and before its `nbf`).
    #[serde(with = "crate::duration")]
    pub leeway: Duration,
    /// Accept `?token=` in the URL (it ends up in proxies' logs; tickets are the
    /// better way for browsers).
    pub allow_query_token: bool,
    /// API keys, stored as the SHA-256 of the key (`ticker-gateway keygen`).
    pub keys: Vec<KeySettings>,
    /// JSON Web Tokens, when set.
    pub jwt: Option<JwtSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            enabled: false,
            timeout: Duration::from_secs(10),
            leeway: Duration::from_secs(5),
            allow_query_token: false,
            keys: Vec::new(),
            jwt: None,
        }
    }
}

/// One API key: the hash of the key and the principal it stands for.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// The principal's name.
    pub sub: String,
    /// The key's SHA-256, 64 hex digits.
    pub sha256: String,
    /// Entitlement patterns: `AAPL`, `AA*`, `*`.
    pub syms: Vec<String>,
    #[serde(flatten)]
    pub limits: LimitSettings,
}

/// Limits of one principal; each only tightens the server's.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Most connections open at once under this principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Most symbols one of its sessions may subscribe to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_symbols: Option<usize>,
    /// Highest `max_rate` one of its sessions may be granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate: Option<f64>,
}

/// How JSON Web Tokens are verified.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// `HS256`, `RS256` or `ES256`.
    pub algorithm: String,
    /// HS256: a file holding the shared secret ...
    #[serde(default)]
    pub secret_file: Option<String>,
    /// ... or the name of an environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// RS256/ES256: a PEM public key ...
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// ... or a JWKS file (keys chosen by the token's `kid`).
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// The `aud` a token must carry, when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// The `iss` a token must carry, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Entitlements of a token without a `syms` claim (none by default).
    #[serde(default)]
    pub default_syms: Vec<String>,
}
