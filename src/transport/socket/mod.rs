//! The socket layer: how bytes move between a client and its session.
//!
//! - [`outgoing`]: a one-frame slot read by actix's dispatcher as the response
//!   body, with the session's driver running inside that body (one task per
//!   connection, writes taken once per dispatcher turn); WebSocket frames or raw
//!   bytes (SSE). Slow consumers are timed by the per-worker [`watchdog`] and
//!   reset through the raw socket.
//! - [`incoming`]: the WebSocket read side on actix-http's codec: the upgrade
//!   handshake, frames refused from their header when over the size limit, text
//!   checked for UTF-8.

pub mod incoming;
pub mod outgoing;
mod watchdog;

pub use incoming::{handshake, ClientFrame, Incoming, ReadError};
pub use outgoing::{remember_socket, ClientSocket, Outgoing, OutgoingBody};
