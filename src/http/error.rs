//! [`ApiError`]: every HTTP error answers with a JSON body shaped like the
//! protocol's `error` message: `{"type":"error","code":..,"message":..}`.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

/// An HTTP error with a protocol error code.
#[derive(Debug, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    #[serde(rename = "type")]
    kind: &'static str,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind: "error",
            code,
            message: message.into(),
            symbols: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }

    pub fn with_symbols(mut self, symbols: Vec<String>) -> ApiError {
        self.symbols = Some(symbols);
        self
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(self)
    }
}

/// Any path we do not serve.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::new(
        404,
        "not_found",
        format!("no such endpoint: {} {}", req.method(), req.path()),
    )
    .error_response()
}
