//! [`Sink`]: what the driver needs of a connection's write side, whichever way
//! its bytes move (actix's response body for SSE, an owned socket for WebSocket).
//! It moves bytes only; what a frame looks like is the wire protocol's.

use std::future::Future;
use std::io;
use std::os::fd::RawFd;

use bytes::BytesMut;

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
    /// Appends bytes (a wire protocol's frame) to go out; ignored after
    /// [`Sink::end`].
    fn write(&self, encode: impl FnOnce(&mut BytesMut));
    /// Like [`Sink::write`], for a frame put together in place: `build` fills
    /// an empty buffer and returns where the bytes to send start (those before
    /// are room it did not need). Sinks that keep no buffer of their own for
    /// this copy the frame.
    fn write_frame(&self, build: impl FnOnce(&mut BytesMut) -> usize) {
        let mut frame = BytesMut::new();
        let at = build(&mut frame);
        self.write(|buf| buf.extend_from_slice(&frame[at..]));
    }
    /// Nothing more goes out: the stream ends once what is queued has left.
    fn end(&self);
    /// Drops the connection without flushing.
    fn abort(&self);
    /// True when nothing written waits in this sink (it may still wait in the
    /// kernel: see [`Sink::unsent`]).
    fn flushed(&self) -> bool;
    /// Bytes written but not yet taken by the client.
    fn unsent(&self) -> usize;
    /// True when the worker's delivery loop may write to this sink (from the
    /// connection's own thread) while its driver waits: a socket that takes
    /// bytes at once. Otherwise news wakes the driver.
    fn worker_delivery(&self) -> bool {
        false
    }
    /// The socket the worker's delivery loop may batch this sink's sends
    /// for ([`super::uring`]), written during a pass and settled at its end
    /// ([`Sink::settle`]).
    fn batch_fd(&self) -> Option<RawFd> {
        None
    }
    /// How a frame batched during the pass went: the socket took `wrote`
    /// of `frame`; the rest is this sink's to send, as if the write had
    /// just been made.
    fn settle(&self, _wrote: io::Result<usize>, _frame: &[u8]) {}
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
