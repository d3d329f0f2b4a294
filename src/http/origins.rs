//! `server.allowed_origins`: which web pages may use the gateway from a browser
//! (PROTOCOL.md section 9). Empty (the default): no check and no CORS headers,
//! as before. Set: a WebSocket, SSE, long-polling or Socket.IO request whose
//! `Origin` is neither listed nor the gateway's own is refused with 403 at the
//! handshake, and the API, SSE, long-polling and Socket.IO answer listed
//! origins with CORS headers (preflights included). A request without `Origin`
//! (not a browser) is never refused for it.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{RequestHead, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};

use super::{ApiContext, ApiError};
use crate::session::protocol::ErrorCode;

/// The origins allowed to reach the gateway from a browser.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    /// Exact origins (`https://desk.example.com`); `*` allows every origin.
    listed: Vec<String>,
}

/// What a request's `Origin` is to us.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No `Origin`, or no list configured: nothing to check or to add.
    NotApplicable,
    /// A listed origin (or the gateway's own page): answered with CORS headers.
    Allowed(HeaderValue),
    Refused,
}

impl Origins {
    pub fn new(listed: &[String]) -> Origins {
        Origins {
            listed: listed
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    /// Why an entry of `server.allowed_origins` is malformed.
    pub fn check(entry: &str) -> Result<(), String> {
        if entry == "*" {
            return Ok(());
        }
        let rest = entry
            .strip_prefix("https://")
            .or_else(|| entry.strip_prefix("http://"))
            .ok_or_else(|| {
                format!("{entry:?} is not an origin such as https://desk.example.com (or *)")
            })?;
        if rest.is_empty() || rest.trim_end_matches('/').contains('/') {
            return Err(format!(
                "{entry:?}: an origin is a scheme, a host and a port, without a path"
            ));
        }
        Ok(())
    }

    /// The verdict on `head`'s `Origin`.
    pub fn judge(&self, head: &RequestHead) -> Verdict {
        if self.listed.is_empty() {
            return Verdict::NotApplicable;
        }
        let Some(origin) = head.headers().get(header::ORIGIN) else {
            return Verdict::NotApplicable;
        };
        let Ok(text) = origin.to_str() else {
            return Verdict::Refused;
        };
        let own = head
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| {
                text.strip_prefix("http://")
                    .or_else(|| text.strip_prefix("https://"))
                    == Some(host)
            });
        if own || self.listed.iter().any(|o| o == "*" || o == text) {
            Verdict::Allowed(origin.clone())
        } else {
            Verdict::Refused
        }
    }

    /// 403 for a request from an origin not allowed, as a JSON error.
    pub fn refusal() -> ApiError {
        ApiError::of(
            ErrorCode::OriginNotAllowed,
            "this page's origin is not in server.allowed_origins",
        )
    }
}

/// Paths that answer browsers from other pages: the API, SSE, long-polling
/// and Socket.IO's polling (the WebSocket upgrade is checked where it is taken).
fn cross_origin_path(path: &str) -> bool {
    path.starts_with("/api/")
        || path == "/sse"
        || path == "/poll"
        || path.starts_with("/poll/")
        || path.starts_with("/socket.io/")
}

/// Paths whose requests a refused origin may not make at all (the streaming
/// transports): 403 at the handshake. The API answers without CORS headers
/// instead, which a browser treats as a refusal.
fn transport_path(path: &str) -> bool {
    cross_origin_path(path) && !path.starts_with("/api/")
}

/// Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`), or
/// `None` when the request is no preflight of ours.
pub fn preflight(origins: &Origins, head: &RequestHead, path: &str) -> Option<HttpResponse> {
    if head.method != Method::OPTIONS
        || !cross_origin_path(path)
        || !head
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    match origins.judge(head) {
        Verdict::NotApplicable => None,
        Verdict::Refused => Some(Origins::refusal().error_response()),
        Verdict::Allowed(origin) => Some(
            HttpResponse::NoContent()
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
                .insert_header((header::VARY, "Origin"))
                .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE"))
                .insert_header((
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    "Authorization, Content-Type",
                ))
                .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
                .finish(),
        ),
    }
}

/// Before the handler: a refusal for a streaming transport's request from an
/// origin not allowed.
pub fn refuse_early(origins: &Origins, head: &RequestHead, path: &str) -> Option<HttpResponse> {
    (transport_path(path) && origins.judge(head) == Verdict::Refused)
        .then(|| Origins::refusal().error_response())
}

/// The middleware: preflights and refusals answered before any handler, CORS
/// headers on what the handlers answer an allowed origin (errors included, so a
/// page can read them).
pub async fn cors<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(ctx) = req.app_data::<web::Data<ApiContext>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let origins = &ctx.origins;
    let path = req.path().to_owned();
    let early =
        preflight(origins, req.head(), &path).or_else(|| refuse_early(origins, req.head(), &path));
    if let Some(answer) = early {
        return Ok(req.into_response(answer).map_into_right_body());
    }
    let verdict = origins.judge(req.head());
    let mut res = next.call(req).await?;
    if let (true, Verdict::Allowed(origin)) = (cross_origin_path(&path), verdict) {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    Ok(res.map_into_left_body())
}
