//! The browser side, served by the gateway itself (no build step, no extra
//! server): the trading dashboard at `/` and the JavaScript client library at
//! `/client.js`, with its TypeScript declarations at `/client.d.ts`. The files live in `src/web/` and are compiled in.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::HttpResponse;

/// A compiled-in file, never cached without asking again.
pub(super) fn asset(body: &'static str, content_type: &str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .body(body)
}

/// `GET /`: the dashboard page.
pub async fn index() -> HttpResponse {
    asset(
        include_str!("../web/index.html"),
        "text/html; charset=utf-8",
    )
}

/// `GET /client.js`: the client library (WebSocket, then SSE, then long-polling).
pub async fn client_js() -> HttpResponse {
    asset(
        include_str!("../web/client.js"),
        "text/javascript; charset=utf-8",
    )
}

/// `GET /client.d.ts`: the client library's TypeScript declarations.
pub async fn client_d_ts() -> HttpResponse {
    asset(
        include_str!("../web/client.d.ts"),
        "application/typescript; charset=utf-8",
    )
}

/// `GET /dashboard.js`: the dashboard's script.
pub async fn dashboard_js() -> HttpResponse {
    asset(
        include_str!("../web/dashboard.js"),
        "text/javascript; charset=utf-8",
    )
}

/// `GET /dashboard.css`: the dashboard's styles.
pub async fn dashboard_css() -> HttpResponse {
    asset(
        include_str!("../web/dashboard.css"),
        "text/css; charset=utf-8",
    )
}
