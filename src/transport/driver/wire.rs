//! The wire protocol's side of the driver: the [`Wire`] trait, what a client
//! message asks of the driver ([`Input`]), a negotiated [`Liveness`], and how a
//! batch is cut into frames.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::super::socket::Sink;
use super::super::CloseCode;
use crate::session::protocol::{BadRequest, ClientOp, Format, ServerMsg};

/// A batch larger than this goes out as several frames, one per write: a
/// 20-symbol snapshot burst then never makes a connection's buffer (actix's
/// write buffer for SSE, an owned socket's unsent bytes) grow past a page.
pub const FRAME_BYTES: usize = 3 * 1024;

/// Cuts a batch into frames of about [`FRAME_BYTES`]: `put` appends the bytes
/// of message `i` (or none), and `emit` gets each frame with the messages it
/// carries (a frame closes once it reaches the size, so it may pass it by one
/// message). Nothing is emitted for a batch that wrote nothing.
pub fn batch_frames(
    msgs: &[ServerMsg],
    mut put: impl FnMut(usize, &ServerMsg, &mut BytesMut),
    emit: &mut dyn FnMut(&[ServerMsg], Bytes),
) {
    let mut buf = BytesMut::new();
    let mut start = 0;
    for (i, m) in msgs.iter().enumerate() {
        put(i, m, &mut buf);
        if buf.len() >= FRAME_BYTES {
            emit(&msgs[start..=i], buf.split().freeze());
            start = i + 1;
        }
    }
    if !buf.is_empty() {
        emit(&msgs[start..], buf.freeze());
    }
}

/// A wire protocol: how session output becomes frames and client messages
/// become ops, and what a heartbeat and a close look like. A wire may keep
/// state (STOMP's subscription ids) and frames of its own (replies that are no
/// session message), and may ask to end the connection.
pub trait Wire {
    /// The transport's metric label (`ws`, `sse`, …).
    const TRANSPORT: &'static str;

    /// The encoding of session messages (for metric labels).
    fn format(&self) -> Format;

    /// Encodes `msgs`, then the wire's own queued frames, as frames of about
    /// [`FRAME_BYTES`] at most, handing each to `emit` with the messages it
    /// carries.
    fn encode(&mut self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes));

    /// Writes the first frame of `msgs` (a batch of the session's messages,
    /// at most [`FRAME_BYTES`] as [`Wire::encode`] cuts it) to `out`, put
    /// together in place, where the wire can, telling `counted` its messages
    /// and size: no encoded frame is kept, only what the socket does not
    /// take. Returns how many messages it wrote; the rest (all, where the
    /// wire cannot) are left to [`Wire::encode`].
    fn write_batch(
        &mut self,
        _out: &impl Sink,
        _msgs: &[ServerMsg],
        _counted: &mut dyn FnMut(&[ServerMsg], usize),
    ) -> usize {
        0
    }

    /// True when the wire has frames of its own to send.
    fn has_output(&self) -> bool {
        false
    }

    /// Set once the protocol ends the connection (after its last frame): the
    /// close code and reason.
    fn closing(&self) -> Option<(CloseCode, &str)> {
        None
    }

    /// Writes one encoded frame to the socket.
    fn write(&self, out: &impl Sink, frame: &[u8]);

    /// Writes a heartbeat (a WebSocket ping, an SSE comment).
    fn heartbeat(&self, out: &impl Sink);

    /// Answers a client's ping.
    fn pong(&self, _out: &impl Sink, _payload: &[u8]) {}

    /// Ends the connection: with `code` and `reason` where the protocol has
    /// close frames, or by ending the stream.
    fn close(&self, out: &impl Sink, close: Option<(u16, &str)>);

    /// The connection moved to a WebSocket (Engine.IO's upgrade): frames are
    /// WebSocket frames from now on.
    fn upgraded(&mut self) {}

    /// Decodes one client message into what it asks of the driver.
    fn decode(&mut self, _payload: &[u8], _binary: bool, requests: &mut dyn FnMut(Input)) {
        requests(Input::Invalid(BadRequest {
            id: None,
            message: "this transport takes no client messages".into(),
        }));
    }
}

/// What a client message asks of the driver.
#[derive(Debug)]
pub enum Input {
    /// An op for the session.
    Op(ClientOp),
    /// Not an op: the session answers `bad_request`.
    Invalid(BadRequest),
    /// The protocol negotiated how the connection proves it is alive (STOMP's
    /// heart-beats).
    Liveness(Liveness),
}

impl From<Result<ClientOp, BadRequest>> for Input {
    fn from(decoded: Result<ClientOp, BadRequest>) -> Input {
        match decoded {
            Ok(op) => Input::Op(op),
            Err(e) => Input::Invalid(e),
        }
    }
}

/// How a connection proves it is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// A heartbeat goes out this often.
    pub heartbeat: Duration,
    /// A client that sent nothing for this long is closed with 4000 (`None`:
    /// the client never talks, as on SSE).
    pub client_timeout: Option<Duration>,
}
