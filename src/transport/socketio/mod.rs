//! Socket.IO v4 clients (Engine.IO v4, Socket.IO protocol v5) at `/socket.io/`
//! (PROTOCOL.md section 7): a wire protocol on the [driver](super::driver),
//! over the same owned WebSocket as ticker.v1 or over HTTP long-polling
//! ([`polling`], on the same poll socket as `/poll`). `packet` reads the
//! packets, `wire` maps events to session ops and session messages to events
//! and acks. A polling session may upgrade to WebSocket: the WebSocket's
//! worker answers the probe (`2probe` → `3probe`) and hands the connection
//! to the session's driver, which moves to it ([`crate::transport::socket::Upgrade`]).

pub mod conformance;
pub(crate) mod packet;
pub mod polling;
pub mod upgrade;
mod wire;

pub use wire::{liveness, open_packet, reframe, Carrier, Handshake, SocketIo, SEPARATOR};

use crate::settings::Settings;
use conformance::Level;

/// What a connection at `path` answers: the ticker (`None`), or with the
/// test-only conformance setting, the protocol suites' echo.
pub fn echo_at(settings: &Settings, path: &str) -> Option<Level> {
    match (settings.socketio.conformance, path) {
        (true, PATH) => Some(Level::SocketIo),
        (true, conformance::ENGINE_PATH) => Some(Level::EngineIo),
        _ => None,
    }
}

/// The path Socket.IO clients use.
pub const PATH: &str = "/socket.io/";
