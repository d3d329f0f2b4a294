//! The symbol/quote API (short polling): `/api/v1/symbols`, `/api/v1/quotes`,
//! `/api/v1/quotes/{sym}` and `/api/v1/feeds`; `/api/v1/tickets` when
//! authentication is on. With authentication on, quotes need a credential
//! (`Authorization: Bearer`) and show only what its principal is entitled to.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::ApiError;
use crate::auth::{Credential, Principal, Refusal, TICKET_TTL};
use crate::hub::{Hub, SymbolId};
use crate::quote::{Fields, Quote};
use crate::session::protocol::ErrorCode;

/// A full quote as the API shows it: `sym`, `seq`, `t`, every field set, and
/// `"stale":true` while no live feed can update the symbol.
#[derive(Serialize)]
pub struct QuoteView<'a> {
    pub sym: &'a str,
    pub seq: u64,
    pub t: i64,
    #[serde(flatten)]
    pub fields: &'a Fields,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stale: bool,
}

fn view(q: &Quote, stale: bool) -> QuoteView<'_> {
    QuoteView {
        sym: &q.sym,
        seq: q.seq,
        t: q.t,
        fields: &q.fields,
        stale,
    }
}

/// `GET /api/v1/symbols`: the universe.
pub async fn symbols(state: web::Data<ApiContext>) -> HttpResponse {
    let list: Vec<_> = state.hub.universe().collect();
    HttpResponse::Ok().json(list)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotesParams {
    symbols: Option<String>,
    /// Credentials: read by the authentication hook (PROTOCOL.md section 9).
    #[serde(rename = "ticket")]
    _ticket: Option<serde::de::IgnoredAny>,
    #[serde(rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
}

fn resolve(hub: &Hub, names: &str) -> Result<Vec<SymbolId>, ApiError> {
    let (ids, unknown) = hub.resolve(names.split(',').map(str::trim).filter(|s| !s.is_empty()));
    if !unknown.is_empty() {
        return Err(ApiError::new(
            404,
            ErrorCode::UnknownSymbol,
            format!("unknown symbol: {}", unknown.join(", ")),
        )
        .with_symbols(unknown));
    }
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            "symbols must name at least one symbol",
        ));
    }
    Ok(ids)
}

/// Who asks: anyone when authentication is off, else the principal of the
/// request's `Authorization: Bearer` token (401 without a good one).
fn principal(state: &ApiContext, req: &HttpRequest) -> Result<Principal, ApiError> {
    let Some(auth) = &state.auth else {
        return Ok(Principal::anonymous());
    };
    let refused = |r: Refusal| {
        state
            .metrics
            .auth_failures
            .with_label_values(&[r.label()])
            .inc();
        ApiError::from(r)
    };
    match Credential::of_request(req.head(), auth.allow_query_token).map_err(refused)? {
        Some(c @ Credential::Token(_)) => auth.resolve(&c, Instant::now()).map_err(refused),
        // A ticket is for one streaming connection, not for the API.
        Some(Credential::Ticket(_)) | None => Err(refused(Refusal::Missing)),
    }
}

/// 403 `not_entitled` naming the symbols `who` may not see, if any.
fn check_entitled(state: &ApiContext, who: &Principal, ids: &[SymbolId]) -> Result<(), ApiError> {
    let refused: Vec<String> = ids
        .iter()
        .map(|&id| state.hub.symbol(id))
        .filter(|name| !who.may_see(name))
        .map(|name| name.to_string())
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    state
        .metrics
        .entitlement_refusals
        .inc_by(refused.len() as u64);
    let message = format!("not entitled to {}", refused.join(", "));
    Err(ApiError::of(ErrorCode::NotEntitled, message).with_symbols(refused))
}

/// `GET /api/v1/quotes?symbols=A,B`: the latest full quotes (every quoted symbol
/// the caller may see when `symbols` is absent). Symbols with no quote yet are
/// left out.
pub async fn quotes(
    state: web::Data<ApiContext>,
    req: HttpRequest,
    query: web::Query<QuotesParams>,
) -> Result<HttpResponse, ApiError> {
    let who = principal(&state, &req)?;
    let hub = &state.hub;
    let ids: Vec<SymbolId> = match &query.symbols {
        Some(list) => {
            let ids = resolve(hub, list)?;
            check_entitled(&state, &who, &ids)?;
            ids
        }
        None => (0..hub.len() as SymbolId)
            .filter(|&id| who.may_see(hub.symbol(id)))
            .collect(),
    };
    let quotes: Vec<(Arc<Quote>, bool)> = ids
        .into_iter()
        .filter_map(|id| Some((hub.latest(id)?, hub.is_stale(id))))
        .collect();
    let body: Vec<QuoteView> = quotes.iter().map(|(q, stale)| view(q, *stale)).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/v1/quotes/{sym}`: one latest full quote.
pub async fn quote(
    state: web::Data<ApiContext>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let who = principal(&state, &req)?;
    let sym = path.into_inner();
    let hub = &state.hub;
    let id = hub.find(&sym).ok_or_else(|| {
        ApiError::new(
            404,
            ErrorCode::UnknownSymbol,
            format!("unknown symbol: {sym}"),
        )
        .with_symbols(vec![sym.clone()])
    })?;
    check_entitled(&state, &who, &[id])?;
    let q = hub.latest(id).ok_or_else(|| {
        ApiError::new(404, ErrorCode::NoQuote, format!("no quote for {sym} yet"))
            .with_symbols(vec![sym.clone()])
    })?;
    Ok(HttpResponse::Ok().json(view(&q, hub.is_stale(id))))
}

/// `GET /api/v1/feeds`: each adapter's name, kind, state and counters.
pub async fn feeds(state: web::Data<ApiContext>) -> HttpResponse {
    let reports: Vec<_> = state.feeds.iter().map(|f| f.report()).collect();
    HttpResponse::Ok().json(reports)
}

/// `POST /api/v1/tickets`: a single-use ticket, good for 30 s, standing for the
/// caller's credential in a URL (`?ticket=`) where a browser cannot send
/// headers (EventSource, WebSocket).
pub async fn ticket(
    state: web::Data<ApiContext>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Some(auth) = &state.auth else {
        return Err(ApiError::of(
            ErrorCode::NotFound,
            "tickets exist only when authentication is enabled",
        ));
    };
    let who = principal(&state, &req)?;
    let ticket = auth.issue_ticket(who, Instant::now());
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({"ticket": ticket, "expires_in": TICKET_TTL.as_secs()})))
}
