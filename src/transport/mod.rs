//! Transports: thin adapters between a client connection and the session core:
//! WebSocket ticker.v1 (`ws`) and, over the same socket, STOMP (`stomp`) and
//! Socket.IO (`socketio`), Server-Sent Events (`sse`), long-polling (`poll`) and WebRTC DataChannels
//! (`webrtc`). A streaming transport is a [`socket`] plus a wire protocol run by
//! the one [`driver`]; a worker's delivery loop (`pump`) writes quotes to the
//! sockets it owns. Transports get a [`TransportContext`], not the whole
//! application, and register their own routes ([`routes`]).

pub mod close;
mod context;
mod counters;
pub mod driver;
mod number;
pub mod poll;
mod pump;
mod ratelimit;
pub mod registry;
pub mod socket;
pub mod socketio;
pub mod sse;
pub mod stomp;
mod ticker_v1;
pub mod webrtc;
pub mod ws;

use actix_web::web;

pub use close::{CloseCode, Ended};
pub use context::TransportContext;
pub use counters::FrameCounters;
pub use ratelimit::MessageLimit;

/// Registers the transports' routes: `/ws`, `/socket.io/` (polling), `/sse`,
/// `/poll`, `/webrtc/offer` (and `/engine.io/`, which answers 404 unless the
/// test-only `socketio.conformance` is on).
pub fn routes(cfg: &mut web::ServiceConfig) {
    use socketio::conformance::ENGINE_PATH;
    cfg.route("/ws", web::get().to(ws::ws_endpoint))
        .route(socketio::PATH, web::get().to(socketio::polling::get))
        .route(socketio::PATH, web::post().to(socketio::polling::post))
        .route(
            socketio::PATH,
            web::route().to(socketio::polling::other_method),
        )
        .route(ENGINE_PATH, web::get().to(socketio::polling::get))
        .route(ENGINE_PATH, web::post().to(socketio::polling::post))
        .route(
            ENGINE_PATH,
            web::route().to(socketio::polling::other_method),
        )
        .route("/sse", web::get().to(sse::sse_endpoint))
        .route("/poll", web::post().to(poll::create))
        .route("/poll/{session}", web::get().to(poll::poll))
        .route("/poll/{session}", web::post().to(poll::op))
        .route("/poll/{session}", web::delete().to(poll::delete))
        .route("/webrtc/offer", web::post().to(webrtc::signal::offer));
}
