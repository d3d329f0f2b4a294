//! The socket layer: how bytes move between a client and its session.
//!
//! - [`outgoing`]: for SSE, a one-frame slot read by actix's dispatcher as the
//!   response body, with the session's driver running inside that body (one task
//!   per connection, writes taken once per dispatcher turn). Slow consumers are
//!   timed by the per-worker [`watchdog`] and reset through the raw socket.
//! - [`ClientStream`]: an owned connection, plain or TLS (rustls run by the
//!   gateway after the upgrade), with the calls the layer makes of a socket.
//! - [`DirectSocket`]: the write side of a WebSocket the gateway owns after the
//!   upgrade: frames straight to the kernel, stalls timed here.
//! - [`ws_frame`], [`ws_frame_in_place`], [`ws_close`]: the frames a server
//!   writes on a WebSocket.
//! - [`incoming`]: the WebSocket read side on actix-http's codec, from the owned
//!   socket: the upgrade handshake, frames refused from their header when over
//!   the size limit, text checked for UTF-8.
//! - [`poll`]: long-polling: a waiting `GET` is the write side, `POST` and
//!   `DELETE` the read side, reaching the session's driver by message.
//! - [`uring`]: a worker's sends of one delivery pass, handed to the kernel
//!   together (io_uring), settled at the end of the pass.
//! - [`Sink`]: what the driver needs of a write side; it moves bytes, the wire
//!   protocol (`ws`, `sse`, `poll`) decides what a frame, a heartbeat and a close are.

mod direct;
mod frames;
pub mod incoming;
pub mod outgoing;
pub mod poll;
mod sink;
mod stream;
pub mod uring;
mod watchdog;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use direct::DirectSocket;
pub use frames::{ws_close, ws_frame, ws_frame_in_place, MAX_HEAD};
pub use incoming::{handshake, ClientFrame, Incoming, ReadError};
pub use outgoing::{remember_socket, ClientSocket, Outgoing, OutgoingBody};
pub use poll::{PollInput, PollRequest, PollSocket, Post, Responder, SecondGet, Upgrade};
pub use sink::Sink;
pub use stream::{ClientStream, IntoClientStream, OwnedStream};

/// A connection's read side: WebSocket frames, or long-polling requests.
pub enum Reader {
    Ws(Incoming),
    /// Boxed: WebSocket connections, the many, stay small.
    Poll(Box<PollInput>),
    /// Messages handed over by a task that owns the real socket (WebRTC's UDP
    /// task); the stream ends when that task drops the peer.
    Queue(tokio::sync::mpsc::Receiver<Result<ClientFrame, ReadError>>),
}

/// What a read gives: a client message, a read error, or `None` once the
/// client is gone.
pub type ReadResult = Option<Result<ClientFrame, ReadError>>;

impl Reader {
    /// The client's next message; `None` once it is gone. Cancel-safe.
    pub fn recv(&mut self) -> Recv<'_> {
        match self {
            Reader::Ws(r) => Recv::Ws(r),
            // Boxed: a WebSocket connection's driver, which holds this future,
            // carries no room for the polling socket's larger one.
            Reader::Poll(r) => Recv::Boxed(Box::pin(r.recv())),
            Reader::Queue(r) => Recv::Queue(r),
        }
    }
}

/// [`Reader::recv`]'s future, a pointer or two: the driver holds one while
/// it waits (an `async fn` would keep a reference per layer).
pub enum Recv<'a> {
    Ws(&'a mut Incoming),
    Queue(&'a mut tokio::sync::mpsc::Receiver<Result<ClientFrame, ReadError>>),
    Boxed(Pin<Box<dyn Future<Output = ReadResult> + 'a>>),
    /// A client that does not talk: never resolves.
    Never,
}

impl Future for Recv<'_> {
    type Output = ReadResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ReadResult> {
        match self.get_mut() {
            Recv::Ws(r) => r.poll_recv(cx),
            Recv::Queue(r) => r.poll_recv(cx),
            Recv::Boxed(f) => f.as_mut().poll(cx),
            Recv::Never => Poll::Pending,
        }
    }
}
