//! Engine.IO v4 / Socket.IO v5 packets from clients: a long-polling `POST`
//! body (packets joined by `\x1e`, binary ones as `b<base64>`), the same
//! packets as WebSocket messages, and the Socket.IO packet parser.
//!
//! Properties: no panic; each Socket.IO packet that parses, written again as
//! socket.io's encoder writes it, parses to the same packet; a polling body
//! does exactly what its packets do as WebSocket messages (the same ops and
//! refusals, the same close, the same packets back); the packets the gateway
//! answers with are packets its parser reads; `reframe` cuts a polling frame
//! into one WebSocket message per packet.

#![no_main]

use actix_codec::Decoder;
use actix_http::ws::{Codec, Frame, OpCode, Parser};
use bytes::BytesMut;
use fuzz_common::same_value;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ticker_gateway::fuzzing::{
    open_packet, reframe, socketio_packet, Carrier, Handshake, Kind, Packet, SocketIo,
};
use ticker_gateway::transport::driver::Wire;

const SEPARATOR: u8 = 0x1e;

fuzz_target!(|body: &[u8]| {
    let packets: Vec<&[u8]> = body.split(|&b| b == SEPARATOR).collect();
    for packet in &packets {
        if let Some(text) = std::str::from_utf8(packet)
            .ok()
            .and_then(|t| t.strip_prefix('4'))
        {
            if let Ok(p) = socketio_packet(text) {
                round_trip(&p);
            }
        }
    }

    // The body on polling, and its packets as WebSocket messages.
    let (polling, polling_inputs, polling_close) = run(Carrier::Polling, |wire, inputs| {
        wire.decode(body, false, inputs)
    });
    let (ws, ws_inputs, ws_close) = run(Carrier::WebSocket, |wire, inputs| {
        for packet in &packets {
            match packet.strip_prefix(b"b") {
                Some(_) => wire.decode(packet, true, inputs),
                None => wire.decode(packet, false, inputs),
            }
        }
    });
    assert_eq!(polling_inputs, ws_inputs);
    assert_eq!(polling_close, ws_close);
    // The WebSocket's own first packet is the open packet; then the same
    // packets as polling answers with, one message each.
    let mut expected = BytesMut::new();
    let open = open_packet(SID, &handshake(), Carrier::WebSocket);
    Parser::write_message(&mut expected, open.as_bytes(), OpCode::Text, true, false);
    if !polling.is_empty() {
        reframe(&polling, &mut expected);
    }
    assert_eq!(ws, expected);
    for answer in polling[..]
        .split(|&b| b == SEPARATOR)
        .filter(|a| !a.is_empty())
    {
        let text = std::str::from_utf8(answer).expect("our packets are UTF-8");
        let p = text
            .strip_prefix('4')
            .map(socketio_packet)
            .unwrap_or_else(|| panic!("not a message packet: {text:?}"))
            .unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"));
        assert!(
            matches!(p.kind, Kind::Connect | Kind::ConnectError),
            "{p:?}"
        );
    }

    // `reframe` on any frame: one WebSocket message per packet.
    let mut messages = BytesMut::new();
    reframe(body, &mut messages);
    let mut codec = Codec::new().client_mode().max_size(usize::MAX);
    for packet in &packets {
        match codec.decode(&mut messages) {
            Ok(Some(Frame::Text(text))) => assert_eq!(&text[..], *packet),
            other => panic!("{packet:?} reframed as {other:?}"),
        }
    }
    assert!(messages.is_empty(), "bytes after the last packet");
});

const SID: &str = "s-1";

fn handshake() -> Handshake {
    Handshake {
        ping_interval_ms: 25_000,
        ping_timeout_ms: 20_000,
        max_payload: 65_536,
    }
}

/// A connection over `carrier` fed by `feed`: what it sends (its own packets),
/// the inputs it hands the session (as text) and how it closes.
fn run(
    carrier: Carrier,
    feed: impl FnOnce(&mut SocketIo, &mut dyn FnMut(ticker_gateway::transport::driver::Input)),
) -> (BytesMut, Vec<String>, Option<String>) {
    let mut wire = SocketIo::new(SID, &handshake(), carrier, false);
    let mut inputs = Vec::new();
    feed(&mut wire, &mut |input| inputs.push(format!("{input:?}")));
    let mut out = BytesMut::new();
    wire.encode(&[], &mut |_, frame| out.extend_from_slice(&frame));
    let close = wire
        .closing()
        .map(|(code, text)| format!("{code:?} {text}"));
    (out, inputs, close)
}

/// A packet as socket.io's encoder writes it, parsed again. Data that is a
/// number not below zero would run into the ack id: socket.io never sends
/// one (its data is an array, or an object on CONNECT).
fn round_trip(p: &Packet) {
    let digit = match p.kind {
        Kind::Connect => '0',
        Kind::Disconnect => '1',
        Kind::Event => '2',
        Kind::Ack => '3',
        Kind::ConnectError => '4',
        Kind::BinaryEvent => '5',
        Kind::BinaryAck => '6',
    };
    if let Some(Value::Number(n)) = &p.data {
        if !n.to_string().starts_with('-') {
            return;
        }
    }
    let mut text = String::from(digit);
    if matches!(p.kind, Kind::BinaryEvent | Kind::BinaryAck) {
        text += &format!("{}-", p.attachments);
    }
    if p.namespace != "/" {
        text += &p.namespace;
        text.push(',');
    }
    if let Some(ack) = p.ack {
        text += &ack.to_string();
    }
    if let Some(data) = &p.data {
        text += &data.to_string();
    }
    let again = socketio_packet(&text).unwrap_or_else(|e| panic!("{p:?} written as {text:?}: {e}"));
    let same_data = match (&p.data, &again.data) {
        (Some(a), Some(b)) => same_value(a, b),
        (a, b) => a == b,
    };
    assert!(
        same_data
            && (again.kind, again.attachments, &again.namespace, again.ack)
                == (p.kind, p.attachments, &p.namespace, p.ack),
        "{p:?} written as {text:?} reads as {again:?}"
    );
}
