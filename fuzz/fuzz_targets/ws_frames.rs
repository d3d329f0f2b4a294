//! The read side of the gateway's own WebSocket (src/transport/socket/incoming.rs):
//! frame headers and lengths, masking, continuations joined, control frames,
//! close frames, the frame limit decided from the header (1009).
//!
//! The first byte chooses the frame limit (bits 1-2), how the bytes are cut
//! into reads (bits 3-5) and what the rest is (bit 0): 0, the bytes as they
//! come from the socket (a seed is that byte and frames as a browser sends
//! them); 1, frames described as `[fin|declared|size|opcode][length][payload]`
//! and written masked, the last one perhaps only its header.
//!
//! Properties: no panic; no message or joined message over the limit, no
//! control frame over 125 bytes, text always UTF-8, no more payload than bytes
//! given; the frames (and whether an error ends them) are the same however the
//! bytes are cut; described frames read exactly as RFC 6455 and the limit say,
//! a frame whose header alone declares too much refused without its payload.

#![no_main]

use actix_http::ws::{OpCode, Parser};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ticker_gateway::fuzzing::read_ws;
use ticker_gateway::transport::socket::{ClientFrame, ReadError};

const LIMITS: [usize; 4] = [1, 16, 130, 70_000];
const CUTS: [usize; 8] = [1, 2, 3, 5, 8, 64, 512, usize::MAX];
const MAX_CONTROL: usize = 125;

fuzz_target!(|data: &[u8]| {
    let Some((&params, rest)) = data.split_first() else {
        return;
    };
    let max = LIMITS[usize::from((params >> 1) & 3)];
    let cut = CUTS[usize::from((params >> 3) & 7)];
    if params & 1 == 0 {
        raw(rest, max, cut);
    } else {
        described(rest, max, cut);
    }
});

fn chunks(bytes: &[u8], cut: usize) -> Vec<Bytes> {
    let bytes = Bytes::copy_from_slice(bytes);
    (0..bytes.len())
        .step_by(cut.min(bytes.len().max(1)))
        .map(|at| bytes.slice(at..bytes.len().min(at.saturating_add(cut))))
        .collect()
}

fn raw(bytes: &[u8], max: usize, cut: usize) {
    let read = read_ws(chunks(bytes, cut), max);
    let mut payload = 0;
    for result in &read {
        match result {
            Ok(ClientFrame::Text(t)) => {
                assert!(t.len() <= max && std::str::from_utf8(t).is_ok(), "{t:?}");
                payload += t.len();
            }
            Ok(ClientFrame::Binary(b)) => {
                assert!(b.len() <= max, "{} bytes over {max}", b.len());
                payload += b.len();
            }
            Ok(ClientFrame::Ping(p)) => {
                assert!(p.len() <= MAX_CONTROL);
                payload += p.len();
            }
            Ok(ClientFrame::Close(Some(reason))) => {
                let text = reason.description.as_deref().unwrap_or("");
                assert!(2 + text.len() <= MAX_CONTROL, "{reason:?}");
                payload += 2 + text.len();
            }
            Ok(_) | Err(_) => {}
        }
    }
    assert!(
        payload <= bytes.len(),
        "{payload} payload bytes from {}",
        bytes.len()
    );
    for other_cut in [1, usize::MAX] {
        let other = read_ws(chunks(bytes, other_cut), max);
        let frames = |r: &[Result<ClientFrame, ReadError>]| -> Vec<ClientFrame> {
            r.iter()
                .filter_map(|f| f.as_ref().ok().cloned_frame())
                .collect()
        };
        assert_eq!(
            frames(&read),
            frames(&other),
            "reads of {cut} and of {other_cut}"
        );
        let failed = |r: &[Result<ClientFrame, ReadError>]| r.last().is_some_and(Result::is_err);
        assert_eq!(failed(&read), failed(&other), "{read:?} {other:?}");
    }
}

/// `ClientFrame` has no `Clone` (a long-polling request carries a reply channel).
trait ClonedFrame {
    fn cloned_frame(self) -> Option<ClientFrame>;
}

impl ClonedFrame for Option<&ClientFrame> {
    fn cloned_frame(self) -> Option<ClientFrame> {
        Some(match self? {
            ClientFrame::Text(b) => ClientFrame::Text(b.clone()),
            ClientFrame::Binary(b) => ClientFrame::Binary(b.clone()),
            ClientFrame::Ping(b) => ClientFrame::Ping(b.clone()),
            ClientFrame::Pong => ClientFrame::Pong,
            ClientFrame::Close(r) => ClientFrame::Close(r.clone()),
            other => panic!("a WebSocket read {other:?}"),
        })
    }
}

/// One frame as the input describes it.
struct Described {
    op: OpCode,
    fin: bool,
    payload: Vec<u8>,
    /// Only the header is sent, declaring this many bytes.
    declared: Option<u64>,
}

const OPS: [OpCode; 6] = [
    OpCode::Continue,
    OpCode::Text,
    OpCode::Binary,
    OpCode::Close,
    OpCode::Ping,
    OpCode::Pong,
];

/// The frames `input` describes: a byte `[fin:1][declared:1][size:1][op:5]`,
/// a length byte (times 257 with `size`), the payload; a `declared` frame is
/// its header alone, with 8 bytes of declared length, and ends the input.
fn describe(mut input: &[u8]) -> Vec<Described> {
    let mut frames = Vec::new();
    while let [head, len, rest @ ..] = input {
        let op = OPS[usize::from(head & 0x1F) % OPS.len()];
        let fin = head & 0x80 != 0;
        if head & 0x40 != 0 {
            let mut declared = [0u8; 8];
            let n = rest.len().min(8);
            declared[..n].copy_from_slice(&rest[..n]);
            let declared = u64::from_be_bytes(declared).max(1) >> (len % 64);
            frames.push(Described {
                op,
                fin,
                payload: Vec::new(),
                declared: Some(declared.max(1)),
            });
            break;
        }
        let len = usize::from(*len) * if head & 0x20 != 0 { 257 } else { 1 };
        let n = rest.len().min(len);
        let mut payload = rest[..n].to_vec();
        payload.resize(len, b'a');
        frames.push(Described {
            op,
            fin,
            payload,
            declared: None,
        });
        input = &rest[n..];
    }
    frames
}

/// How a read ends, for comparing with what RFC 6455 and the limit say.
#[derive(Debug, PartialEq)]
enum Read {
    Frame(ClientFrame),
    TooLarge,
    InvalidUtf8,
    Protocol,
}

impl From<Result<ClientFrame, ReadError>> for Read {
    fn from(r: Result<ClientFrame, ReadError>) -> Read {
        match r {
            Ok(f) => Read::Frame(f),
            Err(ReadError::TooLarge) => Read::TooLarge,
            Err(ReadError::InvalidUtf8) => Read::InvalidUtf8,
            Err(ReadError::Protocol(_)) => Read::Protocol,
            Err(ReadError::Expired) => panic!("a WebSocket expired"),
        }
    }
}

fn is_control(op: OpCode) -> bool {
    matches!(op, OpCode::Close | OpCode::Ping | OpCode::Pong)
}

/// What the reader must make of `frames`: RFC 6455 with the frame limit
/// checked first, from the header.
fn expected(frames: &[Described], max: usize) -> Vec<Read> {
    let mut out = Vec::new();
    // A message being joined: (text, bytes so far).
    let mut partial: Option<(bool, Vec<u8>)> = None;
    let whole = |text: bool, bytes: Vec<u8>| {
        if !text {
            Read::Frame(ClientFrame::Binary(bytes.into()))
        } else if std::str::from_utf8(&bytes).is_ok() {
            Read::Frame(ClientFrame::Text(bytes.into()))
        } else {
            Read::InvalidUtf8
        }
    };
    for f in frames {
        let len = f.declared.unwrap_or(f.payload.len() as u64);
        let joined = partial.as_ref().map_or(0, |(_, b)| b.len() as u64);
        let refused = match f.op {
            OpCode::Continue if joined.saturating_add(len) > max as u64 => Some(Read::TooLarge),
            op if is_control(op) && len > MAX_CONTROL as u64 => Some(Read::Protocol),
            OpCode::Text | OpCode::Binary if len > max as u64 => Some(Read::TooLarge),
            _ => None,
        };
        if let Some(refused) = refused {
            out.push(refused);
            return out;
        }
        if f.declared.is_some() {
            // The payload never comes: the reader waits until the bytes end.
            return out;
        }
        if len > max as u64 {
            // The codec's own limit, on a whole frame: a control frame too.
            out.push(Read::TooLarge);
            return out;
        }
        let payload = f.payload.clone();
        let read = match (f.op, f.fin) {
            (op, false) if is_control(op) => Read::Protocol,
            (OpCode::Continue, fin) => match partial.as_mut() {
                None => Read::Protocol,
                Some((_, joined)) => {
                    joined.extend_from_slice(&payload);
                    if !fin {
                        continue;
                    }
                    // expect: matched as Some just above.
                    let (text, joined) = partial.take().expect("a message being joined");
                    whole(text, joined)
                }
            },
            (OpCode::Text | OpCode::Binary, _) if partial.is_some() => Read::Protocol,
            (op, false) => {
                partial = Some((op == OpCode::Text, payload));
                continue;
            }
            (OpCode::Text, true) => whole(true, payload),
            (OpCode::Binary, true) => whole(false, payload),
            (OpCode::Ping, true) => Read::Frame(ClientFrame::Ping(payload.into())),
            (OpCode::Pong, true) => Read::Frame(ClientFrame::Pong),
            (OpCode::Close, true) => match Parser::try_parse_close_payload(&payload) {
                Ok(reason) => Read::Frame(ClientFrame::Close(reason)),
                Err(_) => Read::Protocol,
            },
            (op, _) => panic!("no such frame is described: {op:?}"),
        };
        let ends = !matches!(read, Read::Frame(_));
        out.push(read);
        if ends {
            return out;
        }
    }
    out
}

fn described(input: &[u8], max: usize, cut: usize) {
    let frames = describe(input);
    let mut bytes = BytesMut::new();
    for f in &frames {
        match f.declared {
            None => Parser::write_message(&mut bytes, &f.payload, f.op, f.fin, true),
            Some(len) => {
                let first = u8::from(f.fin) << 7 | u8::from(f.op);
                bytes.extend_from_slice(&[first, 0x80 | 127]);
                bytes.extend_from_slice(&len.to_be_bytes());
                bytes.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
            }
        }
    }
    let read: Vec<Read> = read_ws(chunks(&bytes, cut), max)
        .into_iter()
        .map(Read::from)
        .collect();
    let want = expected(&frames, max);
    assert_eq!(read, want, "limit {max}, reads of {cut}");
}
