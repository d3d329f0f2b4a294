//! `server.allowed_origins` (403 at the handshake, CORS headers and
//! preflights) and `server.max_connections_per_ip` (PROTOCOL.md section 9).

mod common;

use common::{quiet_app_with, Client, Event};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const LISTED: &str = "https://desk.example.com";
const OTHER: &str = "https://elsewhere.example.com";

#[tokio::test]
async fn only_listed_origins_and_the_gateways_own_pages_get_in() {
    let app = quiet_app_with(&format!("[server]\nallowed_origins = [{LISTED:?}]\n")).await;
    let own = format!("http://{}", app.addr);

    // WebSocket: a page from elsewhere is refused at the handshake.
    let upgrade = |origin: Option<&str>| {
        let mut req = app.ws_url("").into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    match upgrade(Some(OTHER)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    for origin in [Some(LISTED), Some(own.as_str()), None] {
        let (ws, _) = upgrade(origin).await.expect("allowed");
        let mut c = Client::from_ws(ws, false, None);
        assert_eq!(c.next_msg().await["type"], "welcome", "{origin:?}");
    }

    // SSE and long-polling: 403 for elsewhere; CORS headers for the listed one.
    let get =
        |path: &str, origin: &str| app.http.get(app.url(path)).header("origin", origin).send();
    let r = get("/sse?symbols=AAPL", OTHER).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "origin_not_allowed"
    );
    let r = get("/sse?symbols=AAPL", LISTED).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], LISTED);
    let r = app
        .http
        .post(app.url("/poll"))
        .header("origin", OTHER)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The API answers everyone, with CORS headers only for the listed origin
    // (a browser then refuses the page from elsewhere).
    let r = get("/api/v1/quotes/AAPL", LISTED).await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], LISTED);
    let r = get("/api/v1/quotes/AAPL", OTHER).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Preflights.
    let preflight = |origin: &str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/poll"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let r = preflight(LISTED).await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], LISTED);
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("Authorization"), "{allowed}");
    assert_eq!(preflight(OTHER).await.unwrap().status(), 403);
}

#[tokio::test]
async fn an_address_over_its_connection_limit_is_refused() {
    let app = quiet_app_with("[server]\nmax_connections_per_ip = 1\n").await;
    let mut first = Client::connect(&app.ws_url("")).await;
    first.next_msg().await;
    let mut second = Client::connect(&app.ws_url("")).await;
    let code = loop {
        match second.next_event().await {
            Event::Closed(code) => break code,
            Event::Msgs(msgs) => assert!(msgs.iter().all(|m| m["type"] == "error"), "{msgs:?}"),
            Event::Ping => {}
        }
    };
    assert_eq!(code, Some(1008));
    let open_sse = || app.http.get(app.url("/sse?symbols=AAPL")).send();
    let r = open_sse().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "too_many_connections"
    );
    // The place comes back when the first leaves.
    drop(first);
    common::poll("the address's place comes back", || async {
        match open_sse().await.unwrap().status().as_u16() {
            200 => Ok(()),
            other => Err(other),
        }
    })
    .await;
}
