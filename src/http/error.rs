//! [`ApiError`]: every HTTP error answers with a JSON body shaped like the
//! protocol's `error` message: `{"type":"error","code":..,"message":..}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use crate::auth::Refusal;
use crate::session::protocol::{ErrorCode, ServerMsg};

/// An HTTP error with a protocol error code.
#[derive(Debug, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(serialize_with = "code_str")]
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
}

impl ApiError {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind: "error",
            code,
            message: message.into(),
            symbols: None,
        }
    }

    /// An error with its code's usual status.
    pub fn of(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(code.http_status(), code, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, ErrorCode::BadRequest, message)
    }

    pub fn with_symbols(mut self, symbols: Vec<String>) -> ApiError {
        self.symbols = Some(symbols);
        self
    }
}

impl ApiError {
    /// A session's `error` reply as an HTTP error with its code's status (400
    /// for a bad subscription, 403 `not_entitled`, …), for HTTP transports that
    /// refuse a request before a session starts; `None` for other messages.
    pub fn from_reply(msg: &ServerMsg) -> Option<ApiError> {
        let ServerMsg::Error {
            code,
            message,
            symbols,
            ..
        } = msg
        else {
            return None;
        };
        let status = code.http_status();
        Some(ApiError {
            symbols: symbols.clone(),
            ..ApiError::new(status, *code, message.clone())
        })
    }
}

/// A refused credential: 429 over the principal's connection limit, 401 otherwise.
impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        match r {
            Refusal::OverLimit | Refusal::OverAddressLimit => {
                ApiError::of(ErrorCode::TooManyConnections, r.message())
            }
            _ => ApiError::of(ErrorCode::Unauthorized, r.message()),
        }
    }
}

fn code_str<S: serde::Serializer>(code: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self)
    }
}

/// Any path we do not serve (404), or a method an endpoint does not answer
/// (405, with the methods it answers in `Allow`, as the OpenAPI document lists them).
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    if let Some(allow) = req
        .match_pattern()
        .and_then(|p| super::docs::allowed_methods(&p))
    {
        let mut response = ApiError::of(
            ErrorCode::MethodNotAllowed,
            format!("{} answers {allow}, not {}", req.path(), req.method()),
        )
        .error_response();
        if let Ok(value) = header::HeaderValue::from_str(allow) {
            response.headers_mut().insert(header::ALLOW, value);
        }
        return response;
    }
    ApiError::of(
        ErrorCode::NotFound,
        format!("no such endpoint: {} {}", req.method(), req.path()),
    )
    .error_response()
}
