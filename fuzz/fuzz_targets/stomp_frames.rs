//! STOMP client frames (STOMP 1.2 "Frames and headers") as the parser reads
//! them from WebSocket messages, and the STOMP wire protocol on top.
//!
//! The first byte chooses the version (`% 3`), the frame limit (bits 2-3) and
//! how the rest, the stream, is cut into messages (bits 4-7); a seed is that
//! byte and the frames as a client sends them.
//!
//! Properties: no panic; the frames (and whether an error ends them) are the
//! same however the stream is cut; a piece over the limit is refused; no frame
//! read is larger than the limit; a frame written again (headers escaped as
//! the version says) reads back as the same frame.

#![no_main]

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use ticker_gateway::fuzzing::{put_escaped, Command, Frame, FrameError, StompParser, Version};
use ticker_gateway::transport::driver::Wire;
use ticker_gateway::transport::stomp::{Stomp, Wishes};

const LIMITS: [usize; 4] = [16, 64, 256, 65_536];

fuzz_target!(|data: &[u8]| {
    let Some((&params, stream)) = data.split_first() else {
        return;
    };
    let version = Version::ALL[usize::from(params % 3)];
    let max = LIMITS[usize::from((params >> 2) & 3)];
    let piece = (usize::from(params >> 4) + 1).min(max);

    let (frames, error) = read(stream, version, max, piece);
    for cut in [1, max] {
        let (other, other_error) = read(stream, version, max, cut);
        assert_eq!(frames, other, "pieces of {piece} and of {cut} bytes");
        assert_eq!(
            error.is_some(),
            other_error.is_some(),
            "{error:?} {other_error:?}"
        );
    }
    if stream.len() > max {
        let refused = StompParser::new(max).push(stream);
        assert_eq!(refused, Err(FrameError::TooLarge(max)));
    }
    for frame in &frames {
        assert!(
            least_size(frame) <= max,
            "a frame of at least {} bytes under a limit of {max}: {frame:?}",
            least_size(frame)
        );
        round_trip(frame, version);
    }

    // The wire protocol on the same pieces: CONNECT, SUBSCRIBE, … become ops.
    let wishes = Wishes {
        heartbeat: Duration::from_secs(10),
        client_timeout: Duration::from_secs(30),
    };
    let mut wire = Stomp::new("s-1", wishes, max, false);
    for message in stream.chunks(piece) {
        wire.decode(message, false, &mut |_| {});
        if wire.closing().is_some() {
            break;
        }
    }
    wire.encode(&[], &mut |_, _| {});
});

/// The frames of `stream` fed in pieces of `piece` bytes, and the error that
/// ended them, if one did.
fn read(
    stream: &[u8],
    version: Version,
    max: usize,
    piece: usize,
) -> (Vec<Frame>, Option<FrameError>) {
    let mut parser = StompParser::new(max);
    parser.set_version(version);
    let mut frames = Vec::new();
    for message in stream.chunks(piece) {
        if let Err(e) = parser.push(message) {
            panic!(
                "a piece of {} bytes under a limit of {max}: {e}",
                message.len()
            );
        }
        loop {
            match parser.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn command_name(command: Command) -> &'static str {
    match command {
        Command::Connect => "CONNECT",
        Command::Stomp => "STOMP",
        Command::Send => "SEND",
        Command::Subscribe => "SUBSCRIBE",
        Command::Unsubscribe => "UNSUBSCRIBE",
        Command::Ack => "ACK",
        Command::Nack => "NACK",
        Command::Begin => "BEGIN",
        Command::Commit => "COMMIT",
        Command::Abort => "ABORT",
        Command::Disconnect => "DISCONNECT",
    }
}

/// The fewest bytes `frame` can have been sent in: unescaped headers are no
/// longer than they were on the wire, every EOL is at least one byte.
fn least_size(frame: &Frame) -> usize {
    let headers: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + 1 + v.len() + 1)
        .sum();
    command_name(frame.command).len() + 1 + headers + 1 + frame.body.len() + 1
}

/// CONNECT and STOMP frames escape nothing, other frames as of STOMP 1.1.
fn escapes(command: Command, version: Version) -> bool {
    !matches!(command, Command::Connect | Command::Stomp) && version >= Version::V1_1
}

/// `frame` written as a client would, read again.
fn round_trip(frame: &Frame, version: Version) {
    // A value that ends in CR cannot be written where CR is not escaped: the
    // CR would be read as part of a CRLF (STOMP 1.2 reads a CR before the LF
    // as the EOL's, and only 1.2 has the escape).
    let escaped_cr = escapes(frame.command, version) && version >= Version::V1_2;
    if !escaped_cr && frame.headers.iter().any(|(_, v)| v.ends_with('\r')) {
        return;
    }
    let mut buf = BytesMut::new();
    buf.put_slice(command_name(frame.command).as_bytes());
    buf.put_u8(b'\n');
    // put_escaped writes 1.0 as is: frames that escape nothing are written so.
    let header_version = if escapes(frame.command, version) {
        version
    } else {
        Version::V1_0
    };
    for (name, value) in &frame.headers {
        put_escaped(&mut buf, name, header_version);
        buf.put_u8(b':');
        put_escaped(&mut buf, value, header_version);
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.put_slice(&frame.body);
    buf.put_u8(0);
    let mut parser = StompParser::new(buf.len());
    parser.set_version(version);
    // expect: the piece is exactly the parser's limit.
    parser.push(&buf).expect("a piece within the limit");
    match parser.next_frame() {
        Ok(Some(again)) => assert_eq!(&again, frame, "written as {buf:?}"),
        other => panic!("{frame:?} written as {buf:?} reads as {other:?}"),
    }
}
