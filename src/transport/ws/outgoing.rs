//! The write side of a WebSocket connection: a one-frame slot between the session
//! loop and actix's connection dispatcher, which reads it as the response body.
//!
//! Why not `actix_ws::Session`: it queues up to 32 frames in a channel, so the
//! session never learns that a write is in flight and sends one frame per update
//! (and every connection pays for the channel).
//! Here the dispatcher polls the body only while its own write buffer has room; the
//! slot stays full until it does. While it is full the session keeps merging
//! changes, and the next frame carries all of them: smart batching, with no timer.
//! The same signal times slow consumers exactly (the slot not taken for
//! `write_stall_timeout` means 4008). Once actix's buffer is full it stops polling
//! the body altogether, so a client that never reads again is cut by resetting
//! its socket ([`Outgoing::abort`]), not through the body.

use std::any::Any;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use actix_http::ws::{CloseCode, CloseReason, OpCode, Parser};
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Extensions;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use prometheus::IntGauge;

use crate::session::protocol::Format;

/// RFC 6455: a control frame carries at most 125 bytes, so a close reason at most 123.
const MAX_CLOSE_REASON: usize = 123;

#[derive(Default)]
struct Slot {
    /// Encoded frames the dispatcher has not taken yet.
    buf: BytesMut,
    /// A close frame was written: nothing more goes out.
    closed: bool,
    /// The session loop is done; the body ends once `buf` is taken.
    finished: bool,
    /// End the connection at once, without flushing (a client that never reads).
    abort: bool,
    /// The dispatcher dropped the body: the connection is gone.
    gone: bool,
    body_waker: Option<Waker>,
    writer_waker: Option<Waker>,
}

/// The session loop's handle on the slot.
pub struct Outgoing {
    slot: Arc<Mutex<Slot>>,
    /// For [`Outgoing::abort`]; `None` where there is no TCP socket (tests).
    socket: Option<ClientSocket>,
}

/// The response body actix's dispatcher polls for bytes to send.
pub struct OutgoingBody {
    slot: Arc<Mutex<Slot>>,
    /// Counts this connection's socket as open until the dispatcher drops the body.
    open: Option<IntGauge>,
}

/// The error that ends an aborted connection.
#[derive(Debug, thiserror::Error)]
#[error("client stopped reading; connection dropped")]
pub struct Aborted;

impl Outgoing {
    pub fn new(socket: Option<ClientSocket>, open: Option<IntGauge>) -> (Outgoing, OutgoingBody) {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let out = Outgoing {
            slot: slot.clone(),
            socket,
        };
        if let Some(g) = &open {
            g.inc();
        }
        (out, OutgoingBody { slot, open })
    }

    /// True when the previous frame was taken: a new one may be written now.
    pub fn has_room(&self) -> bool {
        let s = self.slot.lock();
        s.buf.is_empty() && !s.closed && !s.gone
    }

    /// True once the dispatcher has dropped the connection.
    pub fn is_gone(&self) -> bool {
        self.slot.lock().gone
    }

    /// Resolves when the slot is empty again (or the connection is gone).
    pub async fn writable(&self) {
        poll_fn(|cx| {
            let mut s = self.slot.lock();
            if s.buf.is_empty() || s.gone {
                Poll::Ready(())
            } else {
                s.writer_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// A data frame: text for JSON, binary for MessagePack.
    pub fn data(&self, format: Format, payload: &[u8]) {
        let op = match format {
            Format::Json => OpCode::Text,
            Format::Msgpack => OpCode::Binary,
        };
        self.write(|buf| Parser::write_message(buf, payload, op, true, false));
    }

    pub fn ping(&self) {
        self.write(|buf| Parser::write_message(buf, [], OpCode::Ping, true, false));
    }

    /// Answers a client ping (its payload is at most 125 bytes by RFC 6455, which
    /// the frame decoder enforces).
    pub fn pong(&self, payload: &[u8]) {
        self.write(|buf| Parser::write_message(buf, payload, OpCode::Pong, true, false));
    }

    /// The close frame (`None`: one without a code); nothing is written after it.
    pub fn close(&self, reason: Option<(u16, &str)>) {
        let reason = reason.map(|(code, text)| CloseReason {
            code: CloseCode::from(code),
            description: Some(truncate(text, MAX_CLOSE_REASON).to_owned()),
        });
        self.write(|buf| Parser::write_close(buf, reason, false));
        self.slot.lock().closed = true;
    }

    /// Drops the connection without flushing what is still queued. With the
    /// socket at hand this works even when actix's own write buffer is full (then
    /// it no longer polls the body): the socket is reset, which wakes and ends the
    /// dispatcher.
    pub fn abort(&self) {
        let waker = {
            let mut s = self.slot.lock();
            s.abort = true;
            // The body lives inside the dispatcher, which owns the socket: while
            // it is not gone, the descriptor is still this connection's. Both
            // run on this worker thread, so that cannot change under us.
            if let (false, Some(socket)) = (s.gone, self.socket) {
                socket.reset();
            }
            s.body_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
        let waker = {
            let mut s = self.slot.lock();
            if s.closed || s.gone {
                return;
            }
            encode(&mut s.buf);
            s.body_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.slot.lock();
            s.finished = true;
            s.body_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl MessageBody for OutgoingBody {
    type Error = Aborted;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let mut s = self.slot.lock();
        if s.abort {
            return Poll::Ready(Some(Err(Aborted)));
        }
        if !s.buf.is_empty() {
            // Taken whole (not split) so an idle connection keeps no buffer.
            let frame = std::mem::take(&mut s.buf).freeze();
            let waker = s.writer_waker.take();
            drop(s);
            if let Some(w) = waker {
                w.wake();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        if s.finished || s.closed {
            return Poll::Ready(None);
        }
        s.body_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for OutgoingBody {
    fn drop(&mut self) {
        if let Some(g) = &self.open {
            g.dec();
        }
        let waker = {
            let mut s = self.slot.lock();
            s.gone = true;
            s.writer_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The raw descriptor of a client's TCP socket, stored per connection by
/// [`remember_socket`].
#[derive(Clone, Copy, Debug)]
pub struct ClientSocket(RawFd);

impl ClientSocket {
    /// Resets the connection: `SO_LINGER` 0 makes the final close send RST and
    /// drop unsent data; `shutdown` wakes the dispatcher to notice.
    fn reset(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the descriptor is open (see `Outgoing::abort`); both calls only
        // read their arguments, and a failure leaves the socket as it was.
        unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            libc::shutdown(self.0, libc::SHUT_RDWR);
        }
    }
}

/// `HttpServer::on_connect` hook: remembers each TCP connection's descriptor.
pub fn remember_socket(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
        ext.insert(ClientSocket(tcp.as_raw_fd()));
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_codec::Decoder;
    use actix_http::ws::{Codec, Frame};

    fn poll_body(body: &mut OutgoingBody) -> Poll<Option<Result<Bytes, Aborted>>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(body).poll_next(&mut cx)
    }

    fn frames(bytes: Bytes) -> Vec<Frame> {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = Codec::new().client_mode();
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        assert!(buf.is_empty(), "trailing bytes");
        out
    }

    #[test]
    fn the_slot_holds_one_batch_until_the_body_takes_it() {
        let (out, mut body) = Outgoing::new(None, None);
        assert!(out.has_room());
        assert!(poll_body(&mut body).is_pending());
        out.data(Format::Json, b"[1]");
        assert!(!out.has_room(), "a frame in flight");
        out.pong(b"p");
        let Poll::Ready(Some(Ok(bytes))) = poll_body(&mut body) else {
            panic!("the body yields the queued frames")
        };
        assert_eq!(
            frames(bytes),
            vec![
                Frame::Text(Bytes::from_static(b"[1]")),
                Frame::Pong(Bytes::from_static(b"p"))
            ]
        );
        assert!(out.has_room());
        assert!(poll_body(&mut body).is_pending());
    }

    #[test]
    fn close_ends_the_body_after_the_close_frame() {
        let (out, mut body) = Outgoing::new(None, None);
        out.data(Format::Msgpack, &[0x90]);
        out.close(Some((4008, &"x".repeat(300))));
        out.data(Format::Msgpack, &[0x90]);
        let Poll::Ready(Some(Ok(bytes))) = poll_body(&mut body) else {
            panic!("the body yields the queued frames")
        };
        let f = frames(bytes);
        assert_eq!(f.len(), 2, "nothing after the close frame");
        let Frame::Close(Some(reason)) = &f[1] else {
            panic!("close frame expected, got {f:?}")
        };
        assert_eq!(u16::from(reason.code), 4008);
        assert_eq!(reason.description.as_deref().map(str::len), Some(123));
        assert!(matches!(poll_body(&mut body), Poll::Ready(None)));
    }

    #[test]
    fn abort_fails_the_body_and_a_dropped_body_means_gone() {
        let (out, mut body) = Outgoing::new(None, None);
        out.data(Format::Json, b"[]");
        out.abort();
        assert!(matches!(poll_body(&mut body), Poll::Ready(Some(Err(_)))));
        drop(body);
        assert!(out.is_gone());
        assert!(!out.has_room());
    }
}
