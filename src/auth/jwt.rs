//! JSON Web Tokens (crate `jsonwebtoken`): HS256 with a shared secret read from
//! a file or an environment variable, RS256/ES256 with a PEM public key or a
//! JWKS file. `exp` is required; `nbf`, `aud` and `iss` are checked when the
//! token or the settings have them, all within `auth.leeway`.

use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::principal::{check_pattern, Principal, Source};
use super::settings::{JwtSettings, LimitSettings};
use super::Refusal;

/// What a token's claims may say about its principal.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default)]
    syms: Option<Vec<String>>,
    #[serde(flatten)]
    limits: LimitSettings,
}

enum Keys {
    One(DecodingKey),
    /// By `kid`; a token without one is tried against the only key.
    Set(Vec<(Option<String>, DecodingKey)>),
}

/// Verifies tokens as the settings say.
pub struct JwtVerifier {
    keys: Keys,
    validation: Validation,
    default_syms: Vec<String>,
}

impl JwtVerifier {
    /// Reads the key material `s` names; the error names the setting at fault.
    pub fn load(s: &JwtSettings, leeway: Duration) -> Result<JwtVerifier, (String, String)> {
        let bad = |key: &str, problem: String| (format!("auth.jwt.{key}"), problem);
        let algorithm = match s.algorithm.as_str() {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(bad(
                    "algorithm",
                    format!("must be HS256, RS256 or ES256, not {other:?}"),
                ))
            }
        };
        let keys = match algorithm {
            Algorithm::HS256 => Keys::One(DecodingKey::from_secret(&secret(s)?)),
            _ => asymmetric(s, algorithm)?,
        };
        for p in &s.default_syms {
            check_pattern(p).map_err(|e| bad("default_syms", e))?;
        }
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &s.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &s.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(JwtVerifier {
            keys,
            validation,
            default_syms: s.default_syms.clone(),
        })
    }

    /// The principal `token` stands for.
    pub fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        let key = match &self.keys {
            Keys::One(key) => key,
            Keys::Set(keys) => {
                let kid = decode_header(token).map_err(|_| Refusal::Invalid)?.kid;
                let mut candidates = keys.iter().filter(|(k, _)| kid.is_none() || *k == kid);
                match (candidates.next(), candidates.next()) {
                    (Some((_, key)), None) => key,
                    (Some((_, key)), Some(_)) if kid.is_some() => key,
                    _ => return Err(Refusal::UnknownKey),
                }
            }
        };
        let data = decode::<Claims>(token, key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Refusal::Expired,
            ErrorKind::ImmatureSignature => Refusal::NotYetValid,
            ErrorKind::InvalidAudience => Refusal::WrongAudience,
            ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
            _ => Refusal::Invalid,
        })?;
        let c = data.claims;
        let syms = c.syms.unwrap_or_else(|| self.default_syms.clone());
        if syms.iter().any(|p| check_pattern(p).is_err()) {
            return Err(Refusal::Invalid);
        }
        let expires = UNIX_EPOCH + Duration::from_secs(c.exp);
        Ok(Principal::with_limits(c.sub, syms, c.limits, Some(expires))
            .from_source(Source::Jwt(token.into())))
    }
}

/// The HS256 secret from `secret_file` or `secret_env` (exactly one).
fn secret(s: &JwtSettings) -> Result<Vec<u8>, (String, String)> {
    let secret = match (&s.secret_file, &s.secret_env) {
        (Some(path), None) => std::fs::read(path)
            .map_err(|e| ("auth.jwt.secret_file".to_owned(), format!("{path}: {e}")))?,
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| {
                (
                    "auth.jwt.secret_env".to_owned(),
                    format!("the environment variable {var} is not set"),
                )
            })?
            .into_bytes(),
        _ => {
            return Err((
                "auth.jwt".to_owned(),
                "HS256 needs exactly one of secret_file and secret_env".to_owned(),
            ))
        }
    };
    // A file's trailing newline is not part of the secret.
    let trimmed = secret.trim_ascii_end().to_vec();
    if trimmed.len() < 32 {
        return Err((
            "auth.jwt".to_owned(),
            "the HS256 secret must be at least 32 bytes".to_owned(),
        ));
    }
    Ok(trimmed)
}

/// RS256/ES256 keys from `public_key_file` (PEM) or `jwks_file` (exactly one).
fn asymmetric(s: &JwtSettings, algorithm: Algorithm) -> Result<Keys, (String, String)> {
    let read = |key: &str, path: &String| {
        std::fs::read(path).map_err(|e| (format!("auth.jwt.{key}"), format!("{path}: {e}")))
    };
    match (&s.public_key_file, &s.jwks_file) {
        (Some(path), None) => {
            let pem = read("public_key_file", path)?;
            let key = match algorithm {
                Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
                _ => DecodingKey::from_ec_pem(&pem),
            }
            .map_err(|e| {
                (
                    "auth.jwt.public_key_file".to_owned(),
                    format!("{path}: not a {algorithm:?} public key in PEM: {e}"),
                )
            })?;
            Ok(Keys::One(key))
        }
        (None, Some(path)) => {
            let bad = |problem: String| {
                (
                    "auth.jwt.jwks_file".to_owned(),
                    format!("{path}: {problem}"),
                )
            };
            let set: JwkSet = serde_json::from_slice(&read("jwks_file", path)?)
                .map_err(|e| bad(format!("not a JWKS document: {e}")))?;
            let mut keys = Vec::new();
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| bad(format!("a key is unusable: {e}")))?;
                keys.push((jwk.common.key_id.clone(), key));
            }
            if keys.is_empty() {
                return Err(bad("holds no keys".into()));
            }
            Ok(Keys::Set(keys))
        }
        _ => Err((
            "auth.jwt".to_owned(),
            format!("{algorithm:?} needs exactly one of public_key_file and jwks_file"),
        )),
    }
}
