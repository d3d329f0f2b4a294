//! The gateway's description of itself, kept in the repository beside the code
//! and compiled in: `GET /api/v1/openapi.json`, the OpenAPI 3.1 document of the
//! HTTP API (`src/http/openapi.json`), which also says which methods each
//! endpoint answers (the `Allow` of a 405); `GET /api/v1/asyncapi.json`, the
//! AsyncAPI 3.0 document of the push protocols (`src/transport/asyncapi.json`).

use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::HttpResponse;
use serde_json::Value;

use super::assets::asset;

/// The OpenAPI 3.1 document of the HTTP API.
pub const OPENAPI: &str = include_str!("openapi.json");

fn json_document(body: &'static str) -> HttpResponse {
    asset(body, "application/json")
}

/// The AsyncAPI 3.0 document of the push protocols (WebSocket, SSE).
pub const ASYNCAPI: &str = include_str!("../transport/asyncapi.json");

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> HttpResponse {
    json_document(OPENAPI)
}

/// `GET /api/v1/asyncapi.json`.
pub async fn asyncapi() -> HttpResponse {
    json_document(ASYNCAPI)
}

/// The methods the document lists for a route pattern (`/poll/{session}`), as
/// an `Allow` header value (`DELETE, GET, POST`); `None` for a path it does not
/// describe.
pub fn allowed_methods(pattern: &str) -> Option<&'static str> {
    static ALLOWED: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
        // unwrap: the document is compiled in, and its tests parse it.
        let doc: Value = serde_json::from_str(OPENAPI).expect("unwrap: openapi.json is JSON");
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        paths
            .into_iter()
            .map(|(path, item)| {
                let methods: Vec<String> = item
                    .as_object()
                    .into_iter()
                    .flat_map(|ops| ops.keys())
                    .filter(|k| METHODS.contains(&k.as_str()))
                    .map(|k| k.to_uppercase())
                    .collect();
                (path, methods.join(", "))
            })
            .collect()
    });
    ALLOWED.get(pattern).map(String::as_str)
}

/// The operation keys of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_methods_come_from_the_document() {
        assert_eq!(
            allowed_methods("/poll/{session}"),
            Some("DELETE, GET, POST")
        );
        assert_eq!(allowed_methods("/api/v1/quotes/{sym}"), Some("GET"));
        assert_eq!(allowed_methods("/nope"), None);
    }
}
