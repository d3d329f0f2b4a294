//! `/healthz` (the process answers), `/readyz` (every feed has delivered or its
//! start timeout passed; 503 `draining` from the moment shutdown starts) and
//! `/metrics` (Prometheus text exposition).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::ApiContext;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn readyz(state: web::Data<ApiContext>) -> HttpResponse {
    if state.shutdown.has_begun() {
        // Shutting down: a load balancer stops sending new clients at once,
        // while the open ones are closed with 1001.
        return HttpResponse::ServiceUnavailable().json(json!({"status": "draining"}));
    }
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
    let m = &state.metrics;
    m.symbols_stale.set(state.hub.stale_count() as i64);
    // The hub counts failovers; the counter catches up with it.
    let failovers = state.hub.sources().failovers();
    m.feed_failovers
        .inc_by(failovers.saturating_sub(m.feed_failovers.get()));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use actix_web::body::MessageBody;

    use super::*;
    use crate::hub::Hub;
    use crate::metrics::Metrics;

    #[actix_web::test]
    async fn readyz_turns_503_draining_the_moment_shutdown_starts() {
        let universe = crate::universe::parse("h\nAAA\tA\t1.00\t0.01\tsim\n").unwrap();
        let shutdown = Arc::new(crate::shutdown::Shutdown::default());
        let ctx = web::Data::new(ApiContext {
            hub: Arc::new(Hub::new(universe)),
            metrics: Arc::new(Metrics::new()),
            feeds: Vec::new(),
            started: Instant::now(),
            shutdown: shutdown.clone(),
            auth: None,
            origins: Default::default(),
        });
        assert_eq!(readyz(ctx.clone()).await.status(), 200);
        shutdown.begin();
        let r = readyz(ctx).await;
        assert_eq!(r.status(), 503);
        let body = r.into_body().try_into_bytes().unwrap();
        assert_eq!(&body[..], br#"{"status":"draining"}"#);
    }
}
