//! The symbol/quote API (short polling): `/api/v1/symbols`, `/api/v1/quotes`,
//! `/api/v1/quotes/{sym}` and `/api/v1/feeds`.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::ApiError;
use crate::hub::{Hub, SymbolId};
use crate::quote::{Fields, Quote};
use crate::session::protocol::ErrorCode;

/// A full quote as the API shows it: `sym`, `seq`, `t` and every field set.
#[derive(Serialize)]
pub struct QuoteView<'a> {
    pub sym: &'a str,
    pub seq: u64,
    pub t: i64,
    #[serde(flatten)]
    pub fields: &'a Fields,
}

fn view(q: &Quote) -> QuoteView<'_> {
    QuoteView {
        sym: &q.sym,
        seq: q.seq,
        t: q.t,
        fields: &q.fields,
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

/// `GET /api/v1/quotes?symbols=A,B`: the latest full quotes (every quoted symbol
/// when `symbols` is absent). Symbols with no quote yet are left out.
pub async fn quotes(
    state: web::Data<ApiContext>,
    query: web::Query<QuotesParams>,
) -> Result<HttpResponse, ApiError> {
    let hub = &state.hub;
    let ids: Vec<SymbolId> = match &query.symbols {
        Some(list) => resolve(hub, list)?,
        None => (0..hub.len() as SymbolId).collect(),
    };
    let quotes: Vec<Arc<Quote>> = ids.into_iter().filter_map(|id| hub.latest(id)).collect();
    let body: Vec<QuoteView> = quotes.iter().map(|q| view(q)).collect();
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/v1/quotes/{sym}`: one latest full quote.
pub async fn quote(
    state: web::Data<ApiContext>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
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
    let q = hub.latest(id).ok_or_else(|| {
        ApiError::new(404, ErrorCode::NoQuote, format!("no quote for {sym} yet"))
            .with_symbols(vec![sym.clone()])
    })?;
    Ok(HttpResponse::Ok().json(view(&q)))
}

/// `GET /api/v1/feeds`: each adapter's name, kind, state and counters.
pub async fn feeds(state: web::Data<ApiContext>) -> HttpResponse {
    let reports: Vec<_> = state.feeds.iter().map(|f| f.report()).collect();
    HttpResponse::Ok().json(reports)
}
