//! The HTTP side: routes, the JSON error type every 4xx/5xx uses, the symbol and
//! quote API, health and readiness, the Prometheus endpoint and the API's own
//! descriptions (OpenAPI, AsyncAPI). Its handlers get an [`ApiContext`]; the
//! transports register their own routes.

mod api;
mod assets;
pub mod docs;
mod error;
mod health;
pub mod origins;

use std::sync::Arc;
use std::time::Instant;

use actix_web::web;

use crate::shutdown::Shutdown;

pub use error::ApiError;

use crate::auth::Authenticator;
use crate::feeds::FeedStatus;
use crate::hub::Hub;
use crate::metrics::Metrics;

/// What the HTTP API handlers use.
pub struct ApiContext {
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub feeds: Vec<Arc<FeedStatus>>,
    pub started: Instant,
    /// Begins on shutdown (`/readyz` then answers 503 `draining`).
    pub shutdown: Arc<Shutdown>,
    /// Credential checks; `None` when authentication is off.
    pub auth: Option<Arc<Authenticator>>,
    /// `server.allowed_origins`.
    pub origins: origins::Origins,
}

/// Registers the API, health, metrics and asset routes, and the JSON 404.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(assets::index))
        .route("/client.js", web::get().to(assets::client_js))
        .route("/client.d.ts", web::get().to(assets::client_d_ts))
        .route("/dashboard.js", web::get().to(assets::dashboard_js))
        .route("/dashboard.css", web::get().to(assets::dashboard_css))
        .route("/api/v1/symbols", web::get().to(api::symbols))
        .route("/api/v1/quotes", web::get().to(api::quotes))
        .route("/api/v1/quotes/{sym}", web::get().to(api::quote))
        .route("/api/v1/feeds", web::get().to(api::feeds))
        .route("/api/v1/tickets", web::post().to(api::ticket))
        .route("/api/v1/openapi.json", web::get().to(docs::openapi))
        .route("/api/v1/asyncapi.json", web::get().to(docs::asyncapi))
        .configure(admin_routes);
}

/// The operators' endpoints (health, readiness, metrics) and the JSON 404:
/// part of [`routes`], and all that `server.admin_port` serves, on a worker
/// thread of its own (see [`serve_admin`]).
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .default_service(web::to(error::not_found));
}

/// Serves [`admin_routes`] on `listener` (plain HTTP, one worker thread): a
/// probe or a scrape there does not queue behind the client connections'
/// work, which on a saturated gateway makes the main port answer a second
/// or more late.
pub fn serve_admin(
    listener: std::net::TcpListener,
    api: web::Data<ApiContext>,
) -> std::io::Result<actix_web::dev::Server> {
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(api.clone())
            .configure(admin_routes)
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}
