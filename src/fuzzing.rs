//! The decoders of client bytes, for the fuzz targets in `fuzz/`: not an API.
//! Each is the code the transports run, reached without a server.

use std::time::Duration;

use crate::http::ApiError;
use crate::session::protocol::{ClientOp, Format};

pub use crate::session::protocol::{op_from_value, parse_op};
pub use crate::transport::socketio::packet::{parse as socketio_packet, Kind, Packet};
pub use crate::transport::socketio::{open_packet, reframe, Carrier, Handshake, SocketIo};
pub use crate::transport::stomp::frame::{
    put_escaped, Command, Frame, FrameError, Parser as StompParser, Version,
};

/// `GET /sse?symbols=..&max_rate=..`: the subscribe op of the query string.
pub fn sse_query(query: &str) -> Result<ClientOp, ApiError> {
    crate::transport::sse::subscribe_op(query)
}

/// `GET /poll/{session}?wait=N`: how long the request waits at most.
pub fn poll_wait(query: &str, max_wait: Duration) -> Result<Duration, ApiError> {
    crate::transport::poll::wait_of(query, max_wait)
}

/// `POST /poll`: the subscribe op of the body, if it asks for one.
pub fn poll_create(body: &[u8]) -> Result<Option<ClientOp>, ApiError> {
    crate::transport::poll::create_op(body)
}

/// `GET /ws?format=..`: the format a WebSocket without a subprotocol speaks.
pub fn ws_format(query: &str) -> Result<Format, ApiError> {
    crate::transport::ws::ws_format(query)
}

/// What the WebSocket reader makes of `chunks` (the reads from the socket)
/// with a frame limit of `max_size`: every frame up to the end of the bytes or
/// the first error (which ends a connection).
#[cfg(any(test, fuzzing))]
pub fn read_ws(
    chunks: Vec<bytes::Bytes>,
    max_size: usize,
) -> Vec<Result<crate::transport::socket::ClientFrame, crate::transport::socket::ReadError>> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use crate::transport::socket::Incoming;

    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(Ok::<_, actix_web::error::PayloadError>),
    );
    let boxed: actix_http::BoxedPayloadStream = Box::pin(stream);
    let mut incoming = Incoming::new(actix_web::dev::Payload::from(boxed), max_size);
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        let next = std::pin::pin!(incoming.recv()).poll(&mut cx);
        match next {
            Poll::Ready(Some(Ok(frame))) => out.push(Ok(frame)),
            Poll::Ready(Some(Err(e))) => {
                out.push(Err(e));
                return out;
            }
            Poll::Ready(None) => return out,
            Poll::Pending => panic!("a reader of bytes in memory waited"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::socket::{ClientFrame, ReadError};
    use actix_http::ws::{OpCode, Parser};
    use bytes::{Bytes, BytesMut};

    #[test]
    fn the_query_decoders_are_the_transports() {
        let op = sse_query("symbols=AAPL,%20MSFT&max_rate=2").unwrap();
        assert!(
            matches!(op, ClientOp::Subscribe { ref symbols, max_rate: Some(r), .. }
            if symbols == &["AAPL", "MSFT"] && r == 2.0)
        );
        assert!(sse_query("symbols=A&speed=1").is_err());
        let max = Duration::from_secs(30);
        assert_eq!(
            poll_wait("wait=2.5", max).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(poll_wait("wait=1e300", max).unwrap(), max);
        assert!(poll_wait("wait=-1", max).is_err());
        assert!(matches!(poll_create(b" "), Ok(None)));
        assert!(matches!(
            poll_create(br#"{"symbols":["A"]}"#),
            Ok(Some(ClientOp::Subscribe { .. }))
        ));
        assert_eq!(ws_format("format=msgpack").unwrap(), Format::Msgpack);
    }

    #[test]
    fn the_websocket_reader_reads_from_memory() {
        let mut all = BytesMut::new();
        Parser::write_message(&mut all, b"hi", OpCode::Text, true, true);
        Parser::write_message(&mut all, [b'x'; 9], OpCode::Binary, true, true);
        let all = all.freeze();
        let chunks = (0..all.len()).map(|i| all.slice(i..i + 1)).collect();
        assert_eq!(
            read_ws(chunks, 8),
            vec![
                Ok(ClientFrame::Text(Bytes::from_static(b"hi"))),
                Err(ReadError::TooLarge)
            ]
        );
    }
}
