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
            match m.kind {
                Kind::Update => {
                    self.tally.updates += 1;
                    if let Some(ti) = m.ti {
                        self.tally.latencies_us.push(self.now_us.saturating_sub(ti));
                    }
                }
                Kind::Snapshot => self.tally.snapshots += 1,
                Kind::Error => self.tally.errors += 1,
                Kind::Other => self.tally.others += 1,
            }
        }
        Ok(())
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
    fn clock_skew_never_goes_negative() {
        let mut t = Tally::default();
        read_json(br#"[{"type":"update","ti":2000}]"#, 1000, &mut t).unwrap();
        assert_eq!(t.latencies_us, vec![0]);
    }
}
