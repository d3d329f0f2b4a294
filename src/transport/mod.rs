//! Transports: thin adapters between a client connection and the session core.
//! Each turns client input into session ops and session output into frames:
//! WebSocket (`ws`), Server-Sent Events (`sse`) and long-polling (`poll`). They
//! get a [`TransportContext`], not the whole application, and register their
//! own routes ([`routes`]).

mod clock;
pub mod close;
mod context;
mod counters;
pub mod poll;
mod ratelimit;
pub mod sse;
pub mod ws;

use actix_web::web;

pub use clock::WriteClock;
pub use close::{CloseCode, Ended};
pub use context::TransportContext;
pub use counters::FrameCounters;
pub use ratelimit::{Admission, MessageLimit, TokenBucket};

/// Registers the transports' routes: `/ws`, `/sse`, `/poll`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(ws::ws_endpoint))
        .route("/sse", web::get().to(sse::sse_endpoint))
        .route("/poll", web::post().to(poll::create))
        .route("/poll/{session}", web::get().to(poll::poll))
        .route("/poll/{session}", web::post().to(poll::op))
        .route("/poll/{session}", web::delete().to(poll::delete));
}
