//! The HTTP side: routes, the JSON error type every 4xx/5xx uses, the symbol and
//! quote API, health and readiness, and the Prometheus endpoint.

mod api;
mod assets;
mod error;
mod health;

use actix_web::web;

pub use error::ApiError;

use crate::transport::ws::ws_endpoint;
use crate::transport::{poll, sse};

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(assets::index))
        .route("/client.js", web::get().to(assets::client_js))
        .route("/dashboard.js", web::get().to(assets::dashboard_js))
        .route("/dashboard.css", web::get().to(assets::dashboard_css))
        .route("/ws", web::get().to(ws_endpoint))
        .route("/sse", web::get().to(sse::sse_endpoint))
        .route("/poll", web::post().to(poll::create))
        .route("/poll/{session}", web::get().to(poll::poll))
        .route("/poll/{session}", web::post().to(poll::op))
        .route("/poll/{session}", web::delete().to(poll::delete))
        .route("/api/v1/symbols", web::get().to(api::symbols))
        .route("/api/v1/quotes", web::get().to(api::quotes))
        .route("/api/v1/quotes/{sym}", web::get().to(api::quote))
        .route("/api/v1/feeds", web::get().to(api::feeds))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .default_service(web::to(error::not_found));
}
