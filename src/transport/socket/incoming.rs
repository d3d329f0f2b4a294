//! The read side of a WebSocket connection: the upgrade handshake (with
//! subprotocol choice) and client frames read from the owned socket and decoded
//! with actix-http's WebSocket codec, refused from their header when too large,
//! continuations joined up to the frame limit, text checked for UTF-8. (The unit
//! tests feed it through a request payload, whose chunks they choose.)

use std::future::poll_fn;
#[cfg(any(test, fuzzing))]
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::ws::{self, CloseReason, Codec, Frame, Item, ProtocolError};
#[cfg(any(test, fuzzing))]
use actix_web::dev::Payload;
use actix_web::dev::RequestHead;
use actix_web::http::header;
use bytes::{Bytes, BytesMut};
#[cfg(any(test, fuzzing))]
use futures_util::Stream;

use super::poll::Responder;
use super::stream::ClientStream;
use crate::transport::CloseCode;

/// One complete client message or control frame.
#[derive(Debug, PartialEq)]
pub enum ClientFrame {
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close(Option<CloseReason>),
    /// A message whose replies go back to whoever sent it (a long-polling
    /// `POST`), not to the socket; `None` asks only for the queued replies.
    Request(Option<Bytes>, Responder),
    /// A long-polling session moved to a WebSocket: frames are WebSocket
    /// frames from now on.
    Upgraded,
}

/// Why reading stopped with an error.
#[derive(Debug, PartialEq)]
pub enum ReadError {
    /// A frame, or a message joined from continuations, over the limit (1009),
    /// decided from the frame header before its payload is read.
    TooLarge,
    /// A text message that is not valid UTF-8 (1007).
    InvalidUtf8,
    /// Anything else the codec refuses (1002).
    Protocol(String),
    /// Nobody asked anything of a long-polling session for its expiry time.
    Expired,
}

impl ReadError {
    /// The close code this error ends the connection with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ReadError::TooLarge => CloseCode::TooLarge,
            ReadError::InvalidUtf8 => CloseCode::InvalidUtf8,
            ReadError::Protocol(_) => CloseCode::ProtocolError,
            // Nobody is there to read a code.
            ReadError::Expired => CloseCode::Normal,
        }
    }
}

/// RFC 6455 section 5.5: control frames carry at most 125 bytes.
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// The opcode and declared payload length of the frame at the start of `buf`,
/// once its header's length bytes have arrived (`None` before).
fn frame_header(buf: &[u8]) -> Option<(u8, u64)> {
    let (&first, &second) = (buf.first()?, buf.get(1)?);
    let opcode = first & 0x0F;
    let len = match second & 0x7F {
        126 => u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
        127 => u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?),
        n => u64::from(n),
    };
    Some((opcode, len))
}

/// Validates the upgrade request; returns the response builder (101 with the
/// accept key) and the first subprotocol the client offers that we speak.
pub fn handshake(
    req: &RequestHead,
    ours: &[&'static str],
) -> Result<(actix_http::ResponseBuilder, Option<&'static str>), ws::HandshakeError> {
    let mut response = ws::handshake(req)?;
    let chosen = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|offered| ours.iter().copied().find(|p| *p == offered));
    if let Some(p) = chosen {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, p));
    }
    Ok((response, chosen))
}

/// Where client bytes come from.
enum Source {
    /// Chunks of a payload (the unit tests').
    #[cfg(any(test, fuzzing))]
    Payload(Payload),
    /// The socket itself, owned after the upgrade.
    Stream(Rc<ClientStream>),
}

/// Bytes read from an owned socket at a time (on the stack, so an idle
/// connection keeps no read buffer).
const READ_CHUNK: usize = 4096;

/// Client frames from the upgraded request's payload or the owned socket.
pub struct Incoming {
    source: Source,
    buf: BytesMut,
    codec: Codec,
    max_size: usize,
    /// A message being joined from continuation frames: (is text, bytes so
    /// far). Boxed: rare, and an idle connection's reader is part of what it
    /// costs.
    partial: Option<Box<(bool, BytesMut)>>,
}

impl Incoming {
    /// Reads `payload`; frames and joined messages may hold up to `max_size` bytes.
    #[cfg(any(test, fuzzing))]
    pub fn new(payload: Payload, max_size: usize) -> Self {
        Self::from_source(Source::Payload(payload), BytesMut::new(), max_size)
    }

    /// Reads the owned socket, starting with `read` (what arrived with the
    /// handshake).
    pub fn from_stream(stream: Rc<ClientStream>, read: BytesMut, max_size: usize) -> Self {
        Self::from_source(Source::Stream(stream), read, max_size)
    }

    /// What was read but not yet decoded (for a socket that moves to another
    /// reader); nothing of a message joined from continuations may be pending.
    pub fn into_unread(self) -> BytesMut {
        debug_assert!(self.partial.is_none(), "a message half joined");
        self.buf
    }

    fn from_source(source: Source, buf: BytesMut, max_size: usize) -> Self {
        Incoming {
            source,
            buf,
            codec: Codec::new().max_size(max_size),
            max_size,
            partial: None,
        }
    }

    /// The next client frame; `None` once the connection is gone. Cancel-safe:
    /// everything read is kept in `self` across calls.
    pub async fn recv(&mut self) -> Option<Result<ClientFrame, ReadError>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Refuses the frame at the head of the buffer from its header alone: a data
    /// frame, or a continuation with what was joined so far, over the limit
    /// (1009), or a control frame over 125 bytes (1002), before its payload is
    /// read. The codec would buffer the whole frame before looking at its size.
    fn check_header(&self) -> Result<(), ReadError> {
        let Some((opcode, len)) = frame_header(&self.buf) else {
            return Ok(());
        };
        let joined = match opcode {
            0x0 => self.partial.as_deref().map_or(0, |(_, b)| b.len() as u64),
            0x8..=0xF if len > MAX_CONTROL_PAYLOAD => {
                return Err(ReadError::Protocol(format!(
                    "control frame of {len} bytes (at most {MAX_CONTROL_PAYLOAD})"
                )))
            }
            0x8..=0xF => return Ok(()),
            _ => 0,
        };
        if joined.saturating_add(len) > self.max_size as u64 {
            return Err(ReadError::TooLarge);
        }
        Ok(())
    }

    pub(super) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<ClientFrame, ReadError>>> {
        loop {
            if let Err(e) = self.check_header() {
                return Poll::Ready(Some(Err(e)));
            }
            match self.codec.decode(&mut self.buf) {
                Ok(Some(frame)) => match self.assemble(frame) {
                    Some(done) => return Poll::Ready(Some(done)),
                    None => continue,
                },
                Ok(None) => {}
                Err(ProtocolError::Overflow) => return Poll::Ready(Some(Err(ReadError::TooLarge))),
                Err(e) => return Poll::Ready(Some(Err(ReadError::Protocol(e.to_string())))),
            }
            if self.buf.is_empty() && self.buf.capacity() > 0 {
                // An idle connection keeps no read buffer of its own.
                self.buf = BytesMut::new();
            }
            match &mut self.source {
                #[cfg(any(test, fuzzing))]
                Source::Payload(payload) => match Pin::new(payload).poll_next(cx) {
                    Poll::Ready(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
                    // The dispatcher ended the payload: the peer is gone.
                    Poll::Ready(Some(Err(_))) | Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                },
                Source::Stream(stream) => match stream.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let mut chunk = [0u8; READ_CHUNK];
                        match stream.try_read(&mut chunk) {
                            Ok(0) => return Poll::Ready(None),
                            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                            // Readiness cleared: the next poll waits for more.
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => return Poll::Ready(None),
                        }
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    /// A whole frame as is; continuation pieces joined (`None` until the last).
    fn assemble(&mut self, frame: Frame) -> Option<Result<ClientFrame, ReadError>> {
        let piece = match frame {
            Frame::Text(b) => return Some(text(b)),
            Frame::Binary(b) => return Some(Ok(ClientFrame::Binary(b))),
            Frame::Ping(b) => return Some(Ok(ClientFrame::Ping(b))),
            Frame::Pong(_) => return Some(Ok(ClientFrame::Pong)),
            Frame::Close(reason) => return Some(Ok(ClientFrame::Close(reason))),
            Frame::Continuation(piece) => piece,
        };
        let (text, bytes, last) = match piece {
            Item::FirstText(b) => (Some(true), b, false),
            Item::FirstBinary(b) => (Some(false), b, false),
            Item::Continue(b) => (None, b, false),
            Item::Last(b) => (None, b, true),
        };
        if let Some(text) = text {
            self.partial = Some(Box::new((text, BytesMut::new())));
        }
        let Some((text, joined)) = self.partial.as_deref_mut() else {
            return Some(Err(ReadError::Protocol(
                "continuation frame without a first frame".into(),
            )));
        };
        if joined.len() + bytes.len() > self.max_size {
            return Some(Err(ReadError::TooLarge));
        }
        joined.extend_from_slice(&bytes);
        if !last {
            return None;
        }
        let text = *text;
        let (_, joined) = *self.partial.take()?;
        let message = joined.freeze();
        Some(if text {
            self::text(message)
        } else {
            Ok(ClientFrame::Binary(message))
        })
    }
}

/// A whole text message, if it is UTF-8 (RFC 6455 section 8.1).
fn text(message: Bytes) -> Result<ClientFrame, ReadError> {
    match std::str::from_utf8(&message) {
        Ok(_) => Ok(ClientFrame::Text(message)),
        Err(_) => Err(ReadError::InvalidUtf8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::ws::{OpCode, Parser};

    /// A masked client frame, as a browser sends it.
    fn client_frame(op: OpCode, fin: bool, payload: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        Parser::write_message(&mut buf, payload, op, fin, true);
        buf.freeze()
    }

    fn incoming(chunks: Vec<Bytes>, max: usize) -> Incoming {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(Ok::<_, actix_web::error::PayloadError>),
        );
        let boxed: actix_http::BoxedPayloadStream = Box::pin(stream);
        Incoming::new(Payload::from(boxed), max)
    }

    #[actix_web::test]
    async fn frames_split_across_reads_and_continuations_are_joined() {
        let mut all = BytesMut::new();
        all.extend_from_slice(&client_frame(OpCode::Text, true, b"{\"op\":\"ping\"}"));
        all.extend_from_slice(&client_frame(OpCode::Binary, false, b"ab"));
        all.extend_from_slice(&client_frame(OpCode::Continue, false, b"cd"));
        all.extend_from_slice(&client_frame(OpCode::Ping, true, b"hi"));
        all.extend_from_slice(&client_frame(OpCode::Continue, true, b"ef"));
        let all = all.freeze();
        // Byte-sized reads: every frame arrives in pieces.
        let chunks = (0..all.len()).map(|i| all.slice(i..i + 1)).collect();
        let mut r = incoming(chunks, 64);
        assert_eq!(
            r.recv().await,
            Some(Ok(ClientFrame::Text(Bytes::from_static(
                b"{\"op\":\"ping\"}"
            ))))
        );
        // A control frame may come between continuation pieces.
        assert_eq!(
            r.recv().await,
            Some(Ok(ClientFrame::Ping(Bytes::from_static(b"hi"))))
        );
        assert_eq!(
            r.recv().await,
            Some(Ok(ClientFrame::Binary(Bytes::from_static(b"abcdef"))))
        );
        assert_eq!(r.recv().await, None, "payload ended: the peer is gone");
    }

    #[actix_web::test]
    async fn oversized_frames_and_joined_messages_are_refused() {
        let big = client_frame(OpCode::Text, true, &[b'x'; 65]);
        assert_eq!(
            incoming(vec![big], 64).recv().await,
            Some(Err(ReadError::TooLarge))
        );
        let parts = vec![
            client_frame(OpCode::Text, false, &[b'x'; 40]),
            client_frame(OpCode::Continue, true, &[b'x'; 40]),
        ];
        assert_eq!(
            incoming(parts, 64).recv().await,
            Some(Err(ReadError::TooLarge))
        );
        let unmasked = {
            let mut b = BytesMut::new();
            Parser::write_message(&mut b, b"x", OpCode::Text, true, false);
            b.freeze()
        };
        assert!(matches!(
            incoming(vec![unmasked], 64).recv().await,
            Some(Err(ReadError::Protocol(_)))
        ));
    }

    /// A masked frame header declaring `len` bytes, and no payload.
    fn header_only(first: u8, len: u64) -> Bytes {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[first, 0x80 | 127]);
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&[1, 2, 3, 4]);
        b.freeze()
    }

    #[actix_web::test]
    async fn a_frame_is_refused_from_its_header_before_its_payload() {
        // 100 MiB declared, not one payload byte sent: refused at once (the
        // stream would otherwise wait for the payload, then buffer it).
        let declared = header_only(0x81, 100 << 20);
        // Fed a byte at a time: refused as soon as the length bytes are in.
        let chunks = (0..declared.len())
            .map(|i| declared.slice(i..i + 1))
            .collect();
        assert_eq!(
            incoming(chunks, 64).recv().await,
            Some(Err(ReadError::TooLarge))
        );
        // A continuation whose header takes the joined message over the limit.
        let mut first = BytesMut::from(&client_frame(OpCode::Binary, false, &[b'x'; 40])[..]);
        first.extend_from_slice(&header_only(0x80, 25));
        assert_eq!(
            incoming(vec![first.freeze()], 64).recv().await,
            Some(Err(ReadError::TooLarge))
        );
        // A control frame declaring more than 125 bytes is a protocol error.
        assert!(matches!(
            incoming(vec![header_only(0x89, 126)], 1 << 20).recv().await,
            Some(Err(ReadError::Protocol(_)))
        ));
    }

    #[actix_web::test]
    async fn text_must_be_utf8_even_when_split_inside_a_character() {
        let bad = client_frame(OpCode::Text, true, b"{\"op\":\"\xff\"}");
        assert_eq!(
            incoming(vec![bad], 64).recv().await,
            Some(Err(ReadError::InvalidUtf8))
        );
        // "é" split between two continuation frames joins to valid UTF-8.
        let e = "é".as_bytes();
        let parts = vec![
            client_frame(OpCode::Text, false, &e[..1]),
            client_frame(OpCode::Continue, true, &e[1..]),
        ];
        assert_eq!(
            incoming(parts, 64).recv().await,
            Some(Ok(ClientFrame::Text(Bytes::from_static("é".as_bytes()))))
        );
        let parts = vec![
            client_frame(OpCode::Text, false, &e[..1]),
            client_frame(OpCode::Continue, true, b"x"),
        ];
        assert_eq!(
            incoming(parts, 64).recv().await,
            Some(Err(ReadError::InvalidUtf8))
        );
        // Binary frames carry any bytes.
        let bin = client_frame(OpCode::Binary, true, b"\xff");
        assert_eq!(
            incoming(vec![bin], 64).recv().await,
            Some(Ok(ClientFrame::Binary(Bytes::from_static(b"\xff"))))
        );
    }
}
