//! [`DirectSocket`]: the write side of a WebSocket the gateway owns (taken from
//! actix-http after the upgrade). Frames go straight to the kernel with
//! `try_write` from the connection's own task: no response body, no dispatcher
//! turn per frame. A write the socket cannot take stays here (at most one
//! batch: the driver writes the next only when this one has left) and starts the
//! stall clock; `write_stall_timeout` later the connection is a slow consumer.
//! Under TLS the ciphertext of a write the kernel did not take waits in the
//! stream's backlog, and counts the same as `pending`.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use prometheus::IntGauge;
use tokio::time::Instant;

use super::outgoing::ClientSocket;
use super::stream::ClientStream;
use super::{uring, Sink};
use crate::lend::lend;

/// An owned client socket's write side.
pub struct DirectSocket {
    stream: Rc<ClientStream>,
    state: RefCell<State>,
    stall_timeout: Duration,
    /// Counts the socket as open until this is dropped.
    open: Option<IntGauge>,
}

#[derive(Default)]
struct State {
    /// Bytes the socket has not taken yet.
    pending: BytesMut,
    /// Since when `pending` waits for the socket and the socket took nothing:
    /// the stall clock (any progress restarts it).
    blocked_since: Option<Instant>,
    /// A close frame was written (or the stream ended): nothing more goes out.
    closed: bool,
    /// A frame waits in the worker's batch ([`uring`]) until the end of the
    /// pass: what is written meanwhile goes to `pending`, after it.
    in_flight: bool,
}

impl State {
    /// Books the outcome of one write: false when nothing more can go now
    /// (the socket is full, and the stall clock runs, or the peer is gone,
    /// and the connection is `closed`).
    fn progress(&mut self, wrote: io::Result<usize>) -> bool {
        match wrote {
            // Progress (part of the backlog counts): a client that reads
            // slowly is not stalled.
            Ok(n) if n > 0 => {
                self.blocked_since = None;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.blocked_since.get_or_insert_with(Instant::now);
                false
            }
            // The peer is gone (the read side sees it too): drop the rest.
            _ => {
                self.pending.clear();
                self.closed = true;
                false
            }
        }
    }
}

thread_local! {
    /// The worker's buffer a frame is put together in (see [`DirectSocket`]'s
    /// `write` and `write_frame`).
    static SCRATCH: std::cell::Cell<BytesMut> = std::cell::Cell::new(BytesMut::new());
}

/// A scratch buffer that grew beyond this (a large snapshot) is not kept.
const SCRATCH_KEEP: usize = 16 * 1024;

impl DirectSocket {
    pub fn new(stream: Rc<ClientStream>, stall_timeout: Duration, open: Option<IntGauge>) -> Self {
        if let Some(g) = &open {
            g.inc();
        }
        DirectSocket {
            stream,
            state: RefCell::default(),
            stall_timeout,
            open,
        }
    }

    /// Hands what is pending (and the stream's backlog) to the kernel; true
    /// once nothing is left.
    fn flush(&self, st: &mut State) -> bool {
        while !st.pending.is_empty() || self.stream.backlog() > 0 {
            // The stream's backlog (TLS records of what it took) goes first.
            let wrote = if self.stream.backlog() > 0 {
                self.stream.try_flush()
            } else {
                let wrote = self.stream.try_write(&st.pending);
                if let Ok(n) = wrote {
                    st.pending.advance(n.min(st.pending.len()));
                }
                wrote
            };
            if !st.progress(wrote) {
                if !st.closed {
                    return false;
                }
                self.stream.drop_backlog();
            }
        }
        st.blocked_since = None;
        // An idle connection keeps no write buffer.
        st.pending = BytesMut::new();
        true
    }

    /// True when nothing this socket holds waits to go (a frame in the
    /// worker's batch aside).
    fn drained(&self, st: &State) -> bool {
        st.pending.is_empty() && self.stream.backlog() == 0
    }

    /// True when nothing waits to go before a new write.
    fn idle(&self, st: &State) -> bool {
        self.drained(st) && !st.in_flight
    }

    /// Sends `bytes` (nothing waiting before them: [`DirectSocket::idle`]) as
    /// far as the socket takes them; what it does not take becomes `pending`.
    fn send(&self, st: &mut State, bytes: &[u8]) {
        if bytes.is_empty() {
            // (A write of nothing returns 0, which `progress` reads as the
            // peer gone.)
            return;
        }
        let wrote = self.stream.try_write(bytes);
        let sent = wrote.as_ref().map_or(0, |&n| n.min(bytes.len()));
        if st.progress(wrote) {
            // The rest (if any) is tried at once; under TLS the kernel may not
            // have taken all the records yet.
            st.pending.extend_from_slice(&bytes[sent..]);
            self.flush(st);
        } else if st.closed {
            self.stream.drop_backlog();
        } else {
            // Full: the rest waits for the socket to take bytes.
            st.pending.extend_from_slice(&bytes[sent..]);
        }
    }

    /// Reads and drops what the client sent; false once it closed (or failed).
    /// (A plain function, so its buffer is on the stack, not in every
    /// connection's future.)
    fn discard_input(&self) -> bool {
        let mut scratch = [0u8; 1024];
        loop {
            match self.stream.try_read(&mut scratch) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
    }

    fn socket(&self) -> ClientSocket {
        ClientSocket(self.stream.as_raw_fd())
    }
}

impl Drop for DirectSocket {
    fn drop(&mut self) {
        if let Some(g) = &self.open {
            g.dec();
        }
    }
}

impl Sink for DirectSocket {
    fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
        self.write_frame(|buf| {
            encode(buf);
            0
        });
    }

    fn write_frame(&self, build: impl FnOnce(&mut BytesMut) -> usize) {
        let mut st = self.state.borrow_mut();
        if st.closed {
            return;
        }
        // The frame is put together in the worker's buffer and only what the
        // socket does not take is copied into the connection's (no
        // allocation per frame).
        lend(&SCRATCH, SCRATCH_KEEP, |scratch| {
            let at = build(scratch);
            let frame = &scratch[at..];
            if self.idle(&st) {
                let batched = self
                    .stream
                    .plain_fd()
                    .is_some_and(|fd| uring::queue(fd, frame));
                if batched {
                    st.in_flight = true;
                } else {
                    self.send(&mut st, frame);
                }
            } else {
                st.pending.extend_from_slice(frame);
                // Behind a batched frame it goes once that one is settled.
                if !st.in_flight {
                    self.flush(&mut st);
                }
            }
        });
    }

    fn has_room(&self) -> bool {
        // A frame in the pass's batch counts as gone: the pass settles it.
        let st = self.state.borrow();
        self.drained(&st) && !st.closed
    }

    fn batch_fd(&self) -> Option<std::os::fd::RawFd> {
        self.stream.plain_fd()
    }

    fn settle(&self, wrote: io::Result<usize>, frame: &[u8]) {
        let mut st = self.state.borrow_mut();
        st.in_flight = false;
        // Written during the pass after the batched frame.
        let later = std::mem::take(&mut st.pending);
        let sent = wrote.as_ref().map_or(0, |&n| n.min(frame.len()));
        let progress = st.progress(wrote);
        if st.closed {
            self.stream.drop_backlog();
            return;
        }
        st.pending.extend_from_slice(&frame[sent..]);
        st.pending.extend_from_slice(&later);
        if progress {
            // The rest (if any) is tried at once, as after a direct send.
            self.flush(&mut st);
        }
    }

    // Not an `async fn`: the driver's future holds this one while it waits,
    // and a plain `poll_fn` is one pointer.
    fn writable(&self) -> impl Future<Output = ()> {
        poll_fn(|cx| loop {
            if self.flushed() {
                return Poll::Ready(());
            }
            match self.stream.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if self.flush(&mut self.state.borrow_mut()) {
                        return Poll::Ready(());
                    }
                    // WouldBlock cleared the readiness: poll again to wait.
                }
                Poll::Ready(Err(_)) => {
                    let mut st = self.state.borrow_mut();
                    st.pending.clear();
                    st.closed = true;
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        })
    }

    async fn next_turn(&self) {
        // Writes reach the kernel at once: there is no turn to wait for.
    }

    fn is_stalled(&self) -> bool {
        self.stall_deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn stall_deadline(&self) -> Option<Instant> {
        self.state
            .borrow()
            .blocked_since
            .map(|since| since + self.stall_timeout)
    }

    fn end(&self) {
        self.state.borrow_mut().closed = true;
    }

    fn abort(&self) {
        {
            let mut st = self.state.borrow_mut();
            st.pending.clear();
            st.closed = true;
        }
        self.stream.drop_backlog();
        // The stream is ours and open: the descriptor is this connection's.
        self.socket().reset();
    }

    fn flushed(&self) -> bool {
        self.idle(&self.state.borrow())
    }

    fn unsent(&self) -> usize {
        self.state.borrow().pending.len() + self.stream.backlog() + self.socket().unsent()
    }

    fn worker_delivery(&self) -> bool {
        true
    }

    async fn finish(&self, flush: Duration, drain: Duration) {
        let _ = tokio::time::timeout(flush, self.writable()).await;
        // Our half ends with a FIN (after a TLS close_notify) after what was
        // sent; the client's close answer (or anything else it still sends) is
        // read and dropped, so the socket is not closed with unread input,
        // which would send a reset and could discard the close frame on its way.
        self.stream.shutdown_write();
        let discard = async {
            while self.stream.readable().await.is_ok() {
                if !self.discard_input() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(drain, discard).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::IntoClientStream;
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the server's side as a [`DirectSocket`] (registered
    /// with this thread's ring as `token`), and the client's.
    async fn pair(token: u32) -> (DirectSocket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let stream = server.into_client_stream();
        let fd = stream.plain_fd().expect("plain TCP");
        assert!(uring::register(token, fd), "io_uring set up");
        let out = DirectSocket::new(Rc::new(stream), Duration::from_secs(30), None);
        (out, client)
    }

    fn settle_pass(out: &DirectSocket, token: u32) -> usize {
        let mut settled = 0;
        uring::end(false, |t, wrote, frame| {
            assert_eq!(t, token);
            out.settle(wrote, frame);
            settled += 1;
        });
        settled
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        client.read_exact(&mut got).await.expect("read");
        got
    }

    #[tokio::test]
    async fn a_pass_sends_its_first_frame_in_the_batch_and_what_follows_after_it_in_order() {
        let (out, mut client) = pair(3).await;
        // Outside a pass a write is sent at once.
        out.write(|b| b.extend_from_slice(b"before "));
        assert!(out.flushed());

        uring::begin();
        uring::writing(3);
        out.write(|b| b.extend_from_slice(b"first "));
        // Batched: counted as gone for the loop, not yet flushed.
        assert!(out.has_room());
        assert!(!out.flushed());
        out.write(|b| b.extend_from_slice(b"second "));
        out.write(|b| b.extend_from_slice(b"third"));
        assert_eq!(settle_pass(&out, 3), 1, "one send batched");
        assert!(out.flushed());
        assert!(out.stall_deadline().is_none());
        assert_eq!(
            read_exactly(&mut client, 25).await,
            b"before first second third"
        );

        // A frame for another connection's token is not batched.
        uring::begin();
        uring::writing(4);
        out.write(|b| b.extend_from_slice(b" after"));
        assert!(out.flushed(), "sent at once");
        assert_eq!(settle_pass(&out, 4), 0);
        assert_eq!(read_exactly(&mut client, 6).await, b" after");
        uring::unregister(3);
    }

    #[tokio::test]
    async fn a_batched_frame_the_socket_does_not_take_whole_waits_and_starts_the_stall_clock() {
        let (out, mut client) = pair(5).await;
        // More than loopback buffers take while the client reads nothing.
        let frame: Vec<u8> = (0..32 << 20).map(|i| (i % 251) as u8).collect();
        uring::begin();
        uring::writing(5);
        out.write(|b| b.extend_from_slice(&frame));
        out.write(|b| b.extend_from_slice(b"tail"));
        assert_eq!(settle_pass(&out, 5), 1);
        assert!(!out.has_room(), "the rest waits");
        assert!(out.stall_deadline().is_some(), "the stall clock runs");
        assert!(out.unsent() > 0);

        // A lost or reordered rest shows as a timeout, not a hang.
        let both =
            async { tokio::join!(out.writable(), read_exactly(&mut client, frame.len() + 4)) };
        let (_, got) = tokio::time::timeout(Duration::from_secs(60), both)
            .await
            .expect("everything arrives");
        assert!(
            got[..frame.len()] == frame[..],
            "the frame whole and in order"
        );
        assert_eq!(&got[frame.len()..], b"tail");
        assert!(out.flushed());
        assert!(out.stall_deadline().is_none());
        uring::unregister(5);
    }
}
