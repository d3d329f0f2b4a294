//! The ticker.v1 wire protocol over WebSocket frames (PROTOCOL.md): every
//! server frame an array of messages (text for JSON, binary for
//! MessagePack), client frames one op each, the heartbeat a ping, and close
//! frames with the codes of section 8. A batch's first frame is put together
//! in place ([`Wire::write_batch`]), its payload encoded behind room for the
//! frame's header: a client that keeps up costs no allocation and no copy per
//! frame.

use actix_http::ws::OpCode;
use bytes::Bytes;

use super::driver::{Input, Wire, FRAME_BYTES};
use super::socket::{ws_close, ws_frame, ws_frame_in_place, Sink, MAX_HEAD};
use crate::session::encode::{encode_frame, encode_frames};
use crate::session::protocol::{self, Format, ServerMsg};

/// The ticker.v1 wire protocol over WebSocket frames.
pub(super) struct TickerV1(pub Format);

impl TickerV1 {
    /// Text frames for JSON, binary for MessagePack.
    fn op(&self) -> OpCode {
        match self.0 {
            Format::Json => OpCode::Text,
            Format::Msgpack => OpCode::Binary,
        }
    }
}

impl Wire for TickerV1 {
    const TRANSPORT: &'static str = "ws";

    fn format(&self) -> Format {
        self.0
    }

    fn encode(&mut self, msgs: &[ServerMsg], emit: &mut dyn FnMut(&[ServerMsg], Bytes)) {
        encode_frames(self.0, msgs, FRAME_BYTES, emit);
    }

    fn write_batch(
        &mut self,
        out: &impl Sink,
        msgs: &[ServerMsg],
        counted: &mut dyn FnMut(&[ServerMsg], usize),
    ) -> usize {
        if msgs.is_empty() {
            return 0;
        }
        let mut n = 0;
        ws_frame_in_place(out, self.op(), |buf| {
            let at;
            (n, at) = encode_frame(self.0, msgs, FRAME_BYTES, MAX_HEAD, buf);
            counted(&msgs[..n], buf.len() - at);
            at
        });
        n
    }

    fn write(&self, out: &impl Sink, frame: &[u8]) {
        ws_frame(out, self.op(), frame);
    }

    fn heartbeat(&self, out: &impl Sink) {
        ws_frame(out, OpCode::Ping, &[]);
    }

    /// Answers a client ping (its payload is at most 125 bytes by RFC 6455, which
    /// the frame decoder enforces).
    fn pong(&self, out: &impl Sink, payload: &[u8]) {
        ws_frame(out, OpCode::Pong, payload);
    }

    fn close(&self, out: &impl Sink, close: Option<(u16, &str)>) {
        ws_close(out, close);
    }

    fn decode(&mut self, payload: &[u8], binary: bool, requests: &mut dyn FnMut(Input)) {
        requests(protocol::parse_op(payload, binary).into());
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use actix_codec::Decoder;
    use actix_http::ws::{Codec, Frame};
    use bytes::BytesMut;

    use super::*;

    /// A sink that keeps what is written.
    #[derive(Default)]
    struct Collect(RefCell<BytesMut>, RefCell<bool>);

    impl Sink for Collect {
        fn has_room(&self) -> bool {
            true
        }
        async fn writable(&self) {}
        async fn next_turn(&self) {}
        fn is_stalled(&self) -> bool {
            false
        }
        fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
            if !*self.1.borrow() {
                encode(&mut self.0.borrow_mut());
            }
        }
        fn end(&self) {
            *self.1.borrow_mut() = true;
        }
        fn abort(&self) {}
        fn flushed(&self) -> bool {
            true
        }
        fn unsent(&self) -> usize {
            0
        }
    }

    fn frames(out: &Collect) -> Vec<Frame> {
        let mut buf = out.0.borrow().clone();
        let mut codec = Codec::new().client_mode().max_size(1 << 20);
        let mut all = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            all.push(f);
        }
        assert!(buf.is_empty(), "trailing bytes");
        all
    }

    #[test]
    fn a_batch_written_in_place_is_the_frames_encode_and_write_make() {
        // Long enough that the batch makes three frames of FRAME_BYTES.
        let msgs: Vec<ServerMsg> = (0..3 * FRAME_BYTES / 200)
            .map(|i| ServerMsg::Pong {
                id: Some(serde_json::json!(format!("{i:0>180}"))),
            })
            .collect();
        for format in [Format::Json, Format::Msgpack] {
            let mut wire = TickerV1(format);
            let (direct, encoded) = (Collect::default(), Collect::default());
            let mut made = Vec::new();
            wire.encode(&msgs, &mut |part, frame| made.push((part.len(), frame)));
            assert_eq!(made.len(), 3, "{format:?}");
            for (_, frame) in &made {
                wire.write(&encoded, frame);
            }
            // In place, frame by frame, the same bytes and counts.
            let mut start = 0;
            for (n, frame) in &made {
                let mut told = Vec::new();
                let wrote = wire.write_batch(&direct, &msgs[start..], &mut |m, len| {
                    told.push((m.len(), len))
                });
                assert_eq!((wrote, &told[..]), (*n, &[(*n, frame.len())][..]));
                start += wrote;
            }
            assert_eq!(start, msgs.len());
            assert_eq!(*direct.0.borrow(), *encoded.0.borrow(), "{format:?}");
            assert_eq!(frames(&direct).len(), 3);
            assert_eq!(
                wire.write_batch(&direct, &[], &mut |_, _| panic!("counted")),
                0
            );
        }
    }

    #[test]
    fn a_frame_in_place_has_the_header_its_length_needs() {
        // A short batch (a 7-bit length), and one message past 64 KiB (a
        // 64-bit length) in a frame of its own.
        let big = ServerMsg::Pong {
            id: Some(serde_json::json!("x".repeat(70_000))),
        };
        let batches = [vec![ServerMsg::Pong { id: None }], vec![big]];
        for format in [Format::Json, Format::Msgpack] {
            for msgs in &batches {
                let (direct, encoded) = (Collect::default(), Collect::default());
                let mut wire = TickerV1(format);
                assert_eq!(wire.write_batch(&direct, msgs, &mut |_, _| {}), 1);
                let plain = TickerV1(format);
                wire.encode(msgs, &mut |_, frame| plain.write(&encoded, &frame));
                assert_eq!(*direct.0.borrow(), *encoded.0.borrow(), "{format:?}");
                let [frame] = &frames(&direct)[..] else {
                    panic!("one frame expected")
                };
                let payload = match frame {
                    Frame::Text(p) | Frame::Binary(p) => p,
                    other => panic!("a data frame expected, got {other:?}"),
                };
                let v: serde_json::Value = match format {
                    Format::Json => serde_json::from_slice(payload).unwrap(),
                    Format::Msgpack => rmp_serde::from_slice(payload).unwrap(),
                };
                assert_eq!(v[0]["type"], "pong");
            }
        }
    }

    #[test]
    fn frames_of_each_kind_and_nothing_after_the_close() {
        let out = Collect::default();
        TickerV1(Format::Json).write(&out, b"[1]");
        TickerV1(Format::Msgpack).write(&out, &[0x90]);
        TickerV1(Format::Json).pong(&out, b"p");
        TickerV1(Format::Json).heartbeat(&out);
        TickerV1(Format::Json).close(&out, Some((4008, &"é".repeat(200))));
        TickerV1(Format::Json).write(&out, b"[2]");
        let f = frames(&out);
        assert_eq!(f.len(), 5, "nothing after the close frame: {f:?}");
        assert_eq!(f[0], Frame::Text(Bytes::from_static(b"[1]")));
        assert_eq!(f[1], Frame::Binary(Bytes::from_static(&[0x90])));
        assert_eq!(f[2], Frame::Pong(Bytes::from_static(b"p")));
        assert_eq!(f[3], Frame::Ping(Bytes::new()));
        let Frame::Close(Some(reason)) = &f[4] else {
            panic!("close frame expected, got {:?}", f[4])
        };
        assert_eq!(u16::from(reason.code), 4008);
        // Cut to fit a control frame, on a character boundary.
        assert_eq!(reason.description.as_deref().map(str::len), Some(122));
    }
}
