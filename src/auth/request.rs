//! Where a request carries its credential: `Authorization: Bearer T`, then
//! `?ticket=K`, then `?token=T` (only when the settings allow it).

use actix_web::dev::RequestHead;
use actix_web::http::header;
use actix_web::web;

use super::Refusal;

/// A credential as a request presents it.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key or a JWT.
    Token(String),
    /// A single-use ticket from `POST /api/v1/tickets`.
    Ticket(String),
}

impl std::fmt::Debug for Credential {
    // Never the secret itself, even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(..)"),
            Credential::Ticket(_) => f.write_str("Ticket(..)"),
        }
    }
}

impl Credential {
    /// The credential of `head` (`None`: it has none); a malformed
    /// `Authorization` header is refused rather than ignored.
    pub fn of_request(
        head: &RequestHead,
        allow_query_token: bool,
    ) -> Result<Option<Credential>, Refusal> {
        if let Some(value) = head.headers().get(header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| Refusal::Invalid)?;
            return bearer(value).map(|t| Some(Credential::Token(t.to_owned())));
        }
        let Some(query) = head.uri.query() else {
            return Ok(None);
        };
        let Ok(params) = web::Query::<Vec<(String, String)>>::from_query(query) else {
            return Ok(None);
        };
        let find = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(ticket) = find("ticket") {
            return Ok(Some(Credential::Ticket(ticket)));
        }
        match find("token") {
            Some(token) if allow_query_token => Ok(Some(Credential::Token(token))),
            _ => Ok(None),
        }
    }
}

/// The token of an `Authorization: Bearer T` value.
pub fn bearer(value: &str) -> Result<&str, Refusal> {
    let (scheme, token) = value.trim().split_once(' ').ok_or(Refusal::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Refusal::Invalid);
    }
    Ok(token.trim())
}
