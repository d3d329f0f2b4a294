//! `/healthz` (the process answers), `/readyz` (every feed has delivered or its
//! start timeout passed) and `/metrics` (Prometheus text exposition).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiContext;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<ApiContext>) -> HttpResponse {
    let waiting: Vec<&str> = state
        .feeds
        .iter()
        .filter(|f| !f.has_delivered() && state.started.elapsed() < f.start_timeout)
        .map(|f| f.name.as_str())
        .collect();
    if waiting.is_empty() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({"status": "starting", "waiting_for": waiting}))
    }
}

pub async fn metrics(state: web::Data<ApiContext>) -> HttpResponse {
    crate::feeds::refresh_metrics(
        &state.feeds,
        &state.metrics,
        state.started.elapsed().as_secs_f64(),
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
