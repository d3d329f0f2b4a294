//! Reading one server frame (an array of messages) with as little work as possible:
//! each message is deserialized into a two-field struct (`type`, `ti`) and every
//! other key is skipped, so no `serde_json::Value` or map is ever built. The same
//! code reads JSON (serde_json) and MessagePack (rmp_serde).

use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The message types the load generator tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Update,
    Snapshot,
    Error,
    Other,
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message type string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
                self.visit_bytes(v.as_bytes())
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Kind, E> {
                Ok(match v {
                    b"update" => Kind::Update,
                    b"snapshot" => Kind::Snapshot,
                    b"error" => Kind::Error,
                    _ => Kind::Other,
                })
            }
        }
        d.deserialize_str(KindVisitor)
    }
}

/// The only keys read from a message.
#[derive(Deserialize)]
struct Msg {
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(default)]
    ti: Option<u64>,
}

/// What one frame held. `latencies_us` is reused across frames by its owner.
#[derive(Debug, Default)]
pub struct Tally {
    pub updates: u64,
    pub snapshots: u64,
    pub errors: u64,
    pub others: u64,
    /// Receive time − `ti` for each update carrying `ti`, in µs.
    pub latencies_us: Vec<u64>,
}

impl Tally {
    /// Clears the counts, keeping the latency buffer's allocation.
    pub fn reset(&mut self) {
        self.updates = 0;
        self.snapshots = 0;
        self.errors = 0;
        self.others = 0;
        self.latencies_us.clear();
    }
}

struct FrameSeed<'a> {
    now_us: u64,
    tally: &'a mut Tally,
}

impl<'de> DeserializeSeed<'de> for FrameSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FrameSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(m) = seq.next_element::<Msg>()? {
            m.count(self.now_us, self.tally);
        }
        Ok(())
    }
}

impl Msg {
    fn count(self, now_us: u64, tally: &mut Tally) {
        match self.kind {
            Kind::Update => {
                tally.updates += 1;
                if let Some(ti) = self.ti {
                    tally.latencies_us.push(now_us.saturating_sub(ti));
                }
            }
            Kind::Snapshot => tally.snapshots += 1,
            Kind::Error => tally.errors += 1,
            Kind::Other => tally.others += 1,
        }
    }
}

/// Reads a JSON frame into `tally` (added to, not reset).
pub fn read_json(bytes: &[u8], now_us: u64, tally: &mut Tally) -> Result<(), serde_json::Error> {
    let mut d = serde_json::Deserializer::from_slice(bytes);
    FrameSeed { now_us, tally }.deserialize(&mut d)?;
    d.end()
}

/// Reads a MessagePack frame into `tally` (added to, not reset).
pub fn read_msgpack(
    bytes: &[u8],
    now_us: u64,
    tally: &mut Tally,
) -> Result<(), rmp_serde::decode::Error> {
    let mut d = rmp_serde::Deserializer::from_read_ref(bytes);
    FrameSeed { now_us, tally }.deserialize(&mut d)
}

/// A STOMP frame that is not one.
#[derive(Debug)]
pub struct BadStompFrame;

/// Reads the STOMP frames of one WebSocket message: each MESSAGE body (one
/// message object) is counted like a ticker.v1 message, an ERROR as an error,
/// anything else (CONNECTED, RECEIPT) as other; EOLs between frames are heart-beats.
pub fn read_stomp(bytes: &[u8], now_us: u64, tally: &mut Tally) -> Result<(), BadStompFrame> {
    let mut rest = bytes;
    loop {
        let start = rest.iter().position(|&b| b != b'\n' && b != b'\r');
        let Some(start) = start else {
            return Ok(());
        };
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == 0).ok_or(BadStompFrame)?;
        let frame = &rest[..end];
        rest = &rest[end + 1..];
        let head_end = frame
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or(BadStompFrame)?;
        let body = &frame[head_end + 2..];
        if frame.starts_with(b"MESSAGE\n") {
            let m: Msg = serde_json::from_slice(body).map_err(|_| BadStompFrame)?;
            m.count(now_us, tally);
        } else if frame.starts_with(b"ERROR\n") {
            tally.errors += 1;
        } else {
            tally.others += 1;
        }
    }
}

/// What an Engine.IO v4 / Socket.IO v4 text packet asks of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SioAction {
    /// Nothing to do (an event was counted into the tally, or a noop).
    None,
    /// Send this packet: `40` (Socket.IO connect to "/") after the Engine.IO
    /// open `0{..}`, `3` (pong) after a ping `2`.
    Reply(&'static str),
    /// `40{"sid":..}`: the namespace is connected, emit the subscribe event now.
    Subscribe,
    /// Engine.IO close `1`, Socket.IO disconnect `41` or connect error `44`.
    Closed,
}

/// Socket.IO event payload: only `ti` is read.
#[derive(Deserialize)]
struct Stamp {
    #[serde(default)]
    ti: Option<u64>,
}

struct EventSeed<'a> {
    now_us: u64,
    tally: &'a mut Tally,
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Socket.IO event array [name, payload]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match seq.next_element::<Kind>()? {
            Some(Kind::Update) => {
                self.tally.updates += 1;
                if let Some(Stamp { ti: Some(ti) }) = seq.next_element::<Stamp>()? {
                    self.tally.latencies_us.push(self.now_us.saturating_sub(ti));
                }
            }
            Some(Kind::Snapshot) => self.tally.snapshots += 1,
            Some(Kind::Error) => self.tally.errors += 1,
            Some(Kind::Other) | None => self.tally.others += 1,
        }
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Reads one Engine.IO text packet. A Socket.IO event `42["name",{..}]` (default
/// namespace, optional ack id) is counted into `tally` like a ticker.v1 message of
/// type `name`: `update` (with its `ti`), `snapshot`, `error`, anything else.
pub fn read_socketio(
    bytes: &[u8],
    now_us: u64,
    tally: &mut Tally,
) -> Result<SioAction, serde_json::Error> {
    Ok(match bytes {
        [b'4', b'2', rest @ ..] => {
            let start = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let mut d = serde_json::Deserializer::from_slice(&rest[start..]);
            d.deserialize_seq(EventSeed { now_us, tally })?;
            d.end()?;
            SioAction::None
        }
        [b'4', b'0', ..] => SioAction::Subscribe,
        [b'4', b'1' | b'4', ..] | [b'1', ..] => SioAction::Closed,
        [b'0', ..] => SioAction::Reply("40"),
        [b'2', ..] => SioAction::Reply("3"),
        _ => SioAction::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> serde_json::Value {
        json!([
            {"type":"subscribed","id":1,"symbols":["AAPL"],"max_rate":2},
            {"type":"snapshot","sym":"AAPL","seq":4,"t":1,"bp":"1.10","ti":900},
            {"type":"update","sym":"AAPL","seq":5,"t":2,"bs":100,"ti":950},
            {"type":"update","sym":"AAPL","seq":6,"t":3,"lp":"1.20"},
            {"type":"error","code":"unknown_symbol","message":"x","symbols":["ZZ"]}
        ])
    }

    fn check(t: &Tally) {
        assert_eq!((t.updates, t.snapshots, t.errors, t.others), (2, 1, 1, 1));
        assert_eq!(t.latencies_us, vec![50]);
    }

    #[test]
    fn reads_json_frames() {
        let mut t = Tally::default();
        read_json(sample().to_string().as_bytes(), 1000, &mut t).unwrap();
        check(&t);
        t.reset();
        assert!(read_json(b"{\"type\":\"update\"}", 0, &mut t).is_err());
    }

    #[test]
    fn reads_msgpack_frames() {
        let bytes = rmp_serde::to_vec_named(&sample()).unwrap();
        let mut t = Tally::default();
        read_msgpack(&bytes, 1000, &mut t).unwrap();
        check(&t);
    }

    #[test]
    fn reads_socketio_packets() {
        let mut t = Tally::default();
        let open = br#"0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#;
        assert_eq!(
            read_socketio(open, 0, &mut t).unwrap(),
            SioAction::Reply("40")
        );
        assert_eq!(
            read_socketio(br#"40{"sid":"b"}"#, 0, &mut t).unwrap(),
            SioAction::Subscribe
        );
        assert_eq!(
            read_socketio(b"2", 0, &mut t).unwrap(),
            SioAction::Reply("3")
        );
        assert_eq!(read_socketio(b"41", 0, &mut t).unwrap(), SioAction::Closed);
        let events: [&[u8]; 4] = [
            br#"42["subscribed",{"symbols":["A"],"max_rate":5}]"#,
            br#"42["snapshot",{"type":"snapshot","sym":"A","ti":1}]"#,
            br#"42["update",{"type":"update","sym":"A","bp":"1.10","ti":950}]"#,
            br#"427["update",{"sym":"A"}]"#,
        ];
        for e in events {
            assert_eq!(read_socketio(e, 1000, &mut t).unwrap(), SioAction::None);
        }
        assert_eq!((t.updates, t.snapshots, t.others), (2, 1, 1));
        assert_eq!(t.latencies_us, vec![50]);
        assert!(read_socketio(br#"42["update",{"#, 0, &mut t).is_err());
    }

    #[test]
    fn reads_stomp_frames() {
        let mut t = Tally::default();
        let mut bytes = b"CONNECTED\nversion:1.2\n\n\0\n".to_vec();
        for m in sample().as_array().unwrap() {
            let body = m.to_string();
            bytes.extend_from_slice(
                format!(
                    "MESSAGE\ndestination:/topic/quotes.AAPL\nsubscription:0\nmessage-id:1\ncontent-length:{}\n\n{body}\0",
                    body.len()
                )
                .as_bytes(),
            );
        }
        read_stomp(&bytes, 1000, &mut t).unwrap();
        assert_eq!((t.updates, t.snapshots, t.errors, t.others), (2, 1, 1, 2));
        assert_eq!(t.latencies_us, vec![50]);
        t.reset();
        read_stomp(b"\n", 0, &mut t).unwrap();
        assert_eq!(t.others, 0, "a heart-beat is no frame");
        assert!(read_stomp(b"MESSAGE\n\n{", 0, &mut t).is_err());
    }

    #[test]
    fn clock_skew_never_goes_negative() {
        let mut t = Tally::default();
        read_json(br#"[{"type":"update","ti":2000}]"#, 1000, &mut t).unwrap();
        assert_eq!(t.latencies_us, vec![0]);
    }
}
