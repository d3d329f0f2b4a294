//! [`ClientStream`]: an owned client connection, plain TCP or TLS, with the
//! non-blocking calls the socket layer makes (`try_read`, `try_write`,
//! readiness). Under TLS the handshake was done before the HTTP request (by
//! the server's acceptor); after the upgrade the connection's rustls state
//! comes along and the gateway encrypts and decrypts here, from the
//! connection's own task, with the same backpressure as plain TCP: plaintext
//! is taken only when the ciphertext of the last write has reached the kernel,
//! so at most one write's ciphertext waits here ([`ClientStream::backlog`]).
//! The descriptor stays reachable under TLS: the send-queue count and the
//! reset of a slow consumer work the same.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll};

use actix_web::rt::net::TcpStream;
use bytes::{Buf, BufMut, BytesMut};
use rustls::ServerConnection;

/// Plaintext encrypted per write at most (a few TLS records).
const MAX_WRITE: usize = 64 * 1024;

/// Ciphertext read from the socket at a time (on the stack).
const READ_CHUNK: usize = 4096;

/// A client connection the gateway owns.
pub struct ClientStream {
    tcp: TcpStream,
    /// Boxed: rustls's state is over a KiB, and plain connections (the most)
    /// should not carry room for it.
    tls: Option<Box<RefCell<Tls>>>,
}

/// A connection's TLS state.
struct Tls {
    conn: ServerConnection,
    /// Ciphertext the kernel has not taken yet.
    out: BytesMut,
    /// Decrypted bytes not read yet.
    plaintext: usize,
    /// The client sent its close_notify.
    closed: bool,
}

/// A [`ClientStream`] out of its worker's reactor, to join another's.
#[derive(Debug)]
pub struct OwnedStream {
    tcp: std::net::TcpStream,
    tls: Option<Box<TlsParts>>,
}

/// [`Tls`] without its `RefCell` (it moves between threads).
struct TlsParts(Tls);

impl std::fmt::Debug for TlsParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsParts")
    }
}

/// What actix-http hands over after an upgrade, as a [`ClientStream`].
pub trait IntoClientStream {
    fn into_client_stream(self) -> ClientStream;
}

impl IntoClientStream for TcpStream {
    fn into_client_stream(self) -> ClientStream {
        ClientStream {
            tcp: self,
            tls: None,
        }
    }
}

impl IntoClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    fn into_client_stream(self) -> ClientStream {
        let (tcp, mut conn) = self.into_inner();
        // What the HTTP reader left decrypted (the client may have written
        // its first frame right behind the request). Without new packets this
        // only reports the state; an error shows again on the first read.
        let (plaintext, closed) = conn.process_new_packets().map_or((0, false), |s| {
            (s.plaintext_bytes_to_read(), s.peer_has_closed())
        });
        ClientStream {
            tcp,
            tls: Some(Box::new(RefCell::new(Tls {
                conn,
                out: BytesMut::new(),
                plaintext,
                closed,
            }))),
        }
    }
}

impl ClientStream {
    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Ready when `try_read` may have something (decrypted bytes waiting count).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(tls) = &self.tls {
            let t = tls.borrow();
            if t.plaintext > 0 || t.closed {
                return Poll::Ready(Ok(()));
            }
        }
        self.tcp.poll_read_ready(cx)
    }

    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    /// Reads what the client sent (decrypted); `Ok(0)` once it closed,
    /// `WouldBlock` (readiness cleared) when nothing is there.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.tcp.try_read(buf);
        };
        let mut t = tls.borrow_mut();
        loop {
            if t.plaintext > 0 {
                let n = t.conn.reader().read(buf)?;
                t.plaintext -= n.min(t.plaintext);
                return Ok(n);
            }
            if t.closed {
                return Ok(0);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = self.tcp.try_read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            let mut rd = &chunk[..n];
            while !rd.is_empty() {
                t.conn.read_tls(&mut rd)?;
                match t.conn.process_new_packets() {
                    Ok(state) => {
                        t.plaintext = state.plaintext_bytes_to_read();
                        t.closed = state.peer_has_closed();
                    }
                    Err(e) => {
                        // The alert rustls queued goes out if it can.
                        t.seal();
                        let _ = t.flush(&self.tcp);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
            }
            // Whatever the records asked of us (a key update's answer).
            if t.conn.wants_write() {
                t.seal();
                match t.flush(&self.tcp) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// The descriptor when the connection is plain TCP (what is written is
    /// what the kernel sends), `None` under TLS.
    pub fn plain_fd(&self) -> Option<RawFd> {
        self.tls.is_none().then(|| self.tcp.as_raw_fd())
    }

    /// Writes `buf` (encrypted under TLS); `WouldBlock` (readiness cleared)
    /// when the kernel takes nothing more. Under TLS the ciphertext of what
    /// was taken may wait in [`ClientStream::backlog`].
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return match send_now(self.tcp.as_raw_fd(), buf) {
                // Full: through tokio, which clears the write readiness (a
                // second send) so that waiting for it works.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.try_write(buf),
                sent => sent,
            };
        };
        let mut t = tls.borrow_mut();
        t.flush(&self.tcp)?;
        if !t.out.is_empty() {
            // The kernel took part of the backlog, then no more.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = t.conn.writer().write(&buf[..buf.len().min(MAX_WRITE)])?;
        t.seal();
        match t.flush(&self.tcp) {
            Ok(_) => Ok(n),
            // Taken: its ciphertext waits in the backlog.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Hands the backlog to the kernel, as much as it takes: the bytes it
    /// took, `WouldBlock` (readiness cleared) when it took none.
    pub fn try_flush(&self) -> io::Result<usize> {
        match &self.tls {
            None => Ok(0),
            Some(tls) => tls.borrow_mut().flush(&self.tcp),
        }
    }

    /// Drops the backlog (the connection is being reset).
    pub fn drop_backlog(&self) {
        if let Some(tls) = &self.tls {
            tls.borrow_mut().out = BytesMut::new();
        }
    }

    /// Ciphertext taken but not yet in the kernel (0 without TLS).
    pub fn backlog(&self) -> usize {
        self.tls.as_ref().map_or(0, |t| t.borrow().out.len())
    }

    /// Ends our half: a TLS close_notify first (if it fits), then a FIN.
    pub fn shutdown_write(&self) {
        if let Some(tls) = &self.tls {
            let mut t = tls.borrow_mut();
            t.conn.send_close_notify();
            t.seal();
            let _ = t.flush(&self.tcp);
        }
        // SAFETY: the stream is open (we own it); shutdown only ends our half.
        unsafe {
            libc::shutdown(self.tcp.as_raw_fd(), libc::SHUT_WR);
        }
    }

    /// Out of this worker's reactor, with its TLS state.
    pub fn into_owned(self) -> io::Result<OwnedStream> {
        Ok(OwnedStream {
            tcp: self.tcp.into_std()?,
            tls: self.tls.map(|t| Box::new(TlsParts(t.into_inner()))),
        })
    }

    /// Into this worker's reactor.
    pub fn from_owned(owned: OwnedStream) -> io::Result<ClientStream> {
        Ok(ClientStream {
            tcp: TcpStream::from_std(owned.tcp)?,
            tls: owned.tls.map(|t| Box::new(RefCell::new(t.0))),
        })
    }
}

impl AsRawFd for ClientStream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

impl Tls {
    /// Moves the ciphertext rustls has ready into `out`.
    fn seal(&mut self) {
        while self.conn.wants_write() {
            let mut w = (&mut self.out).writer();
            // Writing into memory cannot fail.
            if self.conn.write_tls(&mut w).unwrap_or(0) == 0 {
                break;
            }
        }
    }

    /// `out` to the kernel, as much as it takes: the bytes it took
    /// (`WouldBlock` only when it took none of a non-empty `out`). On an error
    /// other than `WouldBlock` the connection is broken and `out` is dropped.
    fn flush(&mut self, tcp: &TcpStream) -> io::Result<usize> {
        let mut wrote = 0;
        while !self.out.is_empty() {
            match tcp.try_write(&self.out) {
                Ok(n) if n > 0 => {
                    self.out.advance(n);
                    wrote += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if wrote > 0 { Ok(wrote) } else { Err(e) };
                }
                Ok(_) => {
                    self.out = BytesMut::new();
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Err(e) => {
                    self.out = BytesMut::new();
                    return Err(e);
                }
            }
        }
        // An idle connection keeps no write buffer.
        self.out = BytesMut::new();
        Ok(wrote)
    }
}

/// One non-blocking `send` on `fd`, past tokio's readiness bookkeeping (a
/// cold cache line per connection on the hot path): the caller goes through
/// tokio when the socket is full. The system call itself, not libc's `send`,
/// which is a thread cancellation point and switches cancellation off and on
/// around every call (the gateway cancels no threads).
fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call and the
    // kernel only reads it; `fd` is the caller's open socket; no address is
    // given (a connected socket); a failure is reported through the return
    // value and errno.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
