//! [`Sink`]: what the driver needs of a connection's write side, whichever way
//! its bytes move (actix's response body for SSE, an owned socket for WebSocket).

use std::future::Future;

use crate::session::protocol::Format;

/// A connection's write side.
pub trait Sink {
    /// True when the previous frame has left: a new one may be written now.
    fn has_room(&self) -> bool;
    /// Resolves when a new frame may be written.
    fn writable(&self) -> impl Future<Output = ()>;
    /// Resolves once what was written this turn has been handed on.
    fn next_turn(&self) -> impl Future<Output = ()>;
    /// True once the client has taken nothing for `write_stall_timeout`.
    fn is_stalled(&self) -> bool;
    /// When the write waiting now turns into a stall, if this sink times its own
    /// stalls (the driver wakes up then).
    fn stall_deadline(&self) -> Option<tokio::time::Instant> {
        None
    }
    /// A WebSocket data frame: text for JSON, binary for MessagePack.
    fn data(&self, format: Format, payload: &[u8]);
    fn ping(&self);
    fn pong(&self, payload: &[u8]);
    /// The WebSocket close frame; nothing is written after it.
    fn close(&self, reason: Option<(u16, &str)>);
    /// Raw bytes (an event stream).
    fn raw(&self, bytes: &[u8]);
    /// Ends the stream once what is queued has left, without a close frame.
    fn end(&self);
    /// Drops the connection without flushing.
    fn abort(&self);
    /// True when nothing written waits in this sink (it may still wait in the
    /// kernel: see [`Sink::unsent`]).
    fn flushed(&self) -> bool;
    /// Bytes written but not yet taken by the client.
    fn unsent(&self) -> usize;
    /// Lets what is queued leave (at most `flush`) before the connection ends,
    /// then waits at most `drain` for the client to close its half.
    fn finish(
        &self,
        _flush: std::time::Duration,
        _drain: std::time::Duration,
    ) -> impl Future<Output = ()> {
        std::future::ready(())
    }
}
