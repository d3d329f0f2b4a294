//! The DataChannel wire protocol. Client ops (ticker.v1 JSON, PROTOCOL.md
//! section 3) arrive on the reliable `ticker.v1` channel; their replies
//! (`welcome`, `subscribed`, `pong`, errors …) go back on it as JSON arrays.
//! Quotes go on the unreliable, unordered `quotes` channel as JSON arrays of
//! `snapshot` messages: each carries a symbol's whole state with its `seq`,
//! so every message stands alone, and each array fits one SCTP packet.

use bytes::{BufMut, Bytes, BytesMut};

use super::link::Lane;
use crate::quote::FieldMask;
use crate::session::encode::write_json_message;
use crate::session::protocol::{parse_op, Format, QuoteKind, ServerMsg};
use crate::transport::driver::{Input, Wire};
use crate::transport::socket::Sink;

/// Most bytes of one quote message: one SCTP packet on a 1,200-byte path
/// (Chromium stalls above that under loss), so a loss costs one message.
pub const QUOTE_MESSAGE_BYTES: usize = 1000;

/// Most bytes of one reply message (16 KiB: safe in every browser).
const REPLY_MESSAGE_BYTES: usize = 16 * 1024;

/// The WebRTC wire protocol: JSON only.
pub struct ChannelWire;

impl Wire for ChannelWire {
    const TRANSPORT: &'static str = "webrtc";

    fn format(&self) -> Format {
        Format::Json
    }

    fn encode(&mut self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        let (quotes, replies): (Vec<ServerMsg>, Vec<ServerMsg>) = msgs
            .iter()
            .cloned()
            .partition(|m| matches!(m, ServerMsg::Quote { .. }));
        pack(&replies, Lane::Replies, REPLY_MESSAGE_BYTES, emit);
        let whole: Vec<ServerMsg> = quotes.into_iter().map(whole_state).collect();
        pack(&whole, Lane::Quotes, QUOTE_MESSAGE_BYTES, emit);
    }

    fn write(&self, out: &impl Sink, frame: &[u8]) {
        out.write(|buf| buf.extend_from_slice(frame));
    }

    /// None: ICE consent checks keep the path alive, and a peer that sends
    /// nothing expires on the UDP side (`webrtc.idle_timeout`).
    fn heartbeat(&self, _out: &impl Sink) {}

    /// The peer closes (its channels with it) once what is queued has left.
    fn close(&self, out: &impl Sink, _close: Option<(u16, &str)>) {
        out.end();
    }

    fn decode(&mut self, payload: &[u8], _binary: bool, requests: &mut dyn FnMut(Input)) {
        requests(parse_op(payload, false).into());
    }
}

/// A quote message as the whole state of its symbol (the session's delta
/// bookkeeping stays as it is: a lost message is repaired by the next one).
fn whole_state(m: ServerMsg) -> ServerMsg {
    match m {
        ServerMsg::Quote {
            quote,
            stamp,
            stale,
            ..
        } => ServerMsg::Quote {
            kind: QuoteKind::Snapshot,
            quote,
            mask: FieldMask::ALL,
            stamp,
            stale,
        },
        other => other,
    }
}

/// Emits `msgs` as JSON arrays of at most `limit` bytes (a single message
/// larger than that goes alone), each frame led by its lane's byte.
fn pack(msgs: &[ServerMsg], lane: Lane, limit: usize, emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
    let mut frame = BytesMut::new();
    let mut one = BytesMut::new();
    let mut start = 0;
    for (i, m) in msgs.iter().enumerate() {
        one.clear();
        write_json_message(&mut one, m);
        // The lane byte, '[' or ',', the message, ']'.
        if !frame.is_empty() && frame.len() + one.len() + 2 > limit + 1 {
            frame.put_u8(b']');
            emit(&msgs[start..i], frame.split().freeze());
            start = i;
        }
        if frame.is_empty() {
            frame.put_u8(lane as u8);
            frame.put_u8(b'[');
        } else {
            frame.put_u8(b',');
        }
        frame.put_slice(&one);
    }
    if !frame.is_empty() {
        frame.put_u8(b']');
        emit(&msgs[start..], frame.freeze());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_quotes_take_their_lanes_and_quotes_fit_one_packet() {
        let hub =
            crate::hub::Hub::new(crate::universe::parse("h\nAAA\tA\t1.00\t0.01\tsim\n").unwrap());
        let update: crate::quote::QuoteUpdate = serde_json::from_value(serde_json::json!(
            {"sym":"AAA","t":1,"bp":"1.00","bs":100,"ap":"1.01","as":200,"lp":"1.00","v":5}
        ))
        .unwrap();
        hub.ingest(&update).unwrap();
        let quote = hub.latest(0).unwrap();
        let mut msgs = vec![ServerMsg::Pong { id: None }];
        for _ in 0..40 {
            msgs.push(ServerMsg::Quote {
                kind: QuoteKind::Update,
                quote: quote.clone(),
                mask: FieldMask(0),
                stamp: false,
                stale: false,
            });
        }
        let mut frames = Vec::new();
        ChannelWire.encode(&msgs, &mut |part, f| frames.push((part.len(), f)));
        assert_eq!(frames[0].1.as_ref(), b"\x00[{\"type\":\"pong\"}]");
        let mut quotes = 0;
        for (n, f) in &frames[1..] {
            assert_eq!(f[0], Lane::Quotes as u8);
            assert!(f.len() - 1 <= QUOTE_MESSAGE_BYTES, "{} bytes", f.len());
            let v: Vec<serde_json::Value> = serde_json::from_slice(&f[1..]).unwrap();
            assert_eq!(v.len(), *n);
            for m in v {
                assert_eq!(m["type"], "snapshot");
                assert_eq!(m["bp"], "1.00", "every message carries the whole state");
                quotes += 1;
            }
        }
        assert_eq!(quotes, 40);
        assert!(frames.len() > 2, "40 quotes need several packets");
    }
}
