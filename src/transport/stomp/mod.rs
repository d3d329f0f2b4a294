//! STOMP 1.2 (and 1.1, 1.0) over WebSocket at `/ws`, subprotocols `v12.stomp`,
//! `v11.stomp` and `v10.stomp` (PROTOCOL.md section 7): a wire protocol on the
//! [driver](super::driver) and the same socket as ticker.v1. `frame` parses and
//! escapes, `connect` settles the version and heart-beats, `wire` maps frames
//! to session ops and session messages to MESSAGE, RECEIPT and ERROR frames.
//! Several frames may share one WebSocket message (as `@stomp/stompjs` reads
//! them), so a batch of updates costs one message.

mod connect;
pub(crate) mod frame;
mod wire;

pub use connect::Wishes;
pub use wire::Stomp;

/// The subprotocols that select STOMP.
pub const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];
