//! Frame encoding: every server frame is an array of message objects, JSON text or
//! MessagePack binary (maps with the JSON keys).
//!
//! Quote messages, the bulk of the traffic, are not serialized per client: each
//! quote caches its encoded entries ([`Fragments`]) and a message is copied
//! together from them. The bytes equal what `ServerMsg`'s `Serialize` impl writes
//! (the tests below check it), which long-polling still uses.

use std::io::{self, Write};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::protocol::{Format, QuoteKind, ServerMsg};
use crate::quote::{FieldMask, Fragments, Quote};

/// Encodes a batch as frames of about `target` bytes each (a frame closes once it
/// reaches `target`, so it may pass it by one message), calling `emit` with each
/// frame's messages and bytes, in order. Nothing for an empty batch.
pub fn encode_frames(
    format: Format,
    msgs: &[ServerMsg],
    target: usize,
    mut emit: impl FnMut(&[ServerMsg], Bytes),
) {
    let mut start = 0;
    while start < msgs.len() {
        let mut buf = BytesMut::with_capacity((64 + (msgs.len() - start) * 96).min(target + 512));
        let (n, at) = encode_frame(format, &msgs[start..], target, 0, &mut buf);
        // Only the front of this buffer's view moves.
        buf.advance(at);
        emit(&msgs[start..start + n], buf.freeze());
        start += n;
    }
}

/// Puts one frame's payload in `buf` (empty): the first messages of `msgs`
/// (at least one), until the payload reaches `target` bytes, with at least
/// `room` bytes before it for the caller's header. Returns how many messages
/// it took and where the payload starts (`room` or more: the bytes before are
/// free for the caller to fill and skip).
pub fn encode_frame(
    format: Format,
    msgs: &[ServerMsg],
    target: usize,
    room: usize,
    buf: &mut BytesMut,
) -> (usize, usize) {
    /// Room for the longest MessagePack array header (array32), written last.
    const HEADER_ROOM: usize = 5;
    debug_assert!(buf.is_empty());
    let mut end = 0;
    match format {
        Format::Json => {
            buf.put_bytes(0, room);
            buf.put_u8(b'[');
            while end < msgs.len() && (end == 0 || buf.len() - room < target) {
                if end > 0 {
                    buf.put_u8(b',');
                }
                write_json_message(buf, &msgs[end]);
                end += 1;
            }
            buf.put_u8(b']');
            (end, room)
        }
        Format::Msgpack => {
            // The cut counts the array header at its longest.
            let at = room + HEADER_ROOM;
            buf.put_bytes(0, at);
            while end < msgs.len() && (end == 0 || buf.len() - room < target) {
                let mut w = (&mut *buf).writer();
                // unwrap: writing into memory cannot fail.
                match &msgs[end] {
                    m if step_message(m, true, &mut w) => {}
                    m @ ServerMsg::Quote {
                        quote,
                        mask,
                        stamp,
                        stale,
                        ..
                    } => write_msgpack_quote(&mut w, m.type_name(), quote, *mask, *stamp, *stale)
                        .expect("unwrap: in-memory write"),
                    m => rmp_serde::encode::write_named(&mut w, m)
                        .expect("unwrap: MessagePack encoding"),
                }
                end += 1;
            }
            // The array header in its shortest form, just before the messages.
            let mut header = [0u8; HEADER_ROOM];
            let mut room_left = &mut header[..];
            rmp::encode::write_array_len(&mut room_left, end as u32)
                .expect("unwrap: 5 bytes suffice");
            let len = HEADER_ROOM - room_left.len();
            buf[at - len..at].copy_from_slice(&header[..len]);
            (end, at - len)
        }
    }
}

/// Appends one message as JSON (quotes from their cached entries).
pub fn write_json_message(buf: &mut BytesMut, m: &ServerMsg) {
    let mut w = buf.writer();
    // unwrap: writing into memory cannot fail, and our messages hold only strings,
    // integers and finite floats.
    match m {
        m if step_message(m, false, &mut w) => {}
        ServerMsg::Quote {
            quote,
            mask,
            stamp,
            stale,
            ..
        } => write_json_quote(&mut w, m.type_name(), quote, *mask, *stamp, *stale)
            .expect("unwrap: in-memory write"),
        _ => serde_json::to_writer(&mut w, m).expect("unwrap: JSON encoding"),
    }
}

/// Writes `m` from its quote's cached update message if it is that message
/// (an update carrying the delta from the state before, not stale); false
/// (nothing written) otherwise.
fn step_message(m: &ServerMsg, binary: bool, w: &mut impl Write) -> bool {
    let ServerMsg::Quote {
        kind: QuoteKind::Update,
        quote,
        mask,
        stamp,
        stale: false,
    } = m
    else {
        return false;
    };
    if quote.step_mask() != Some(*mask) {
        return false;
    }
    let cached = quote.step_message(binary, *stamp, || {
        let mut v = Vec::with_capacity(128);
        let (name, quote, mask, stamp) = (m.type_name(), &**quote, *mask, *stamp);
        if binary {
            write_msgpack_quote(&mut v, name, quote, mask, stamp, false)
        } else {
            write_json_quote(&mut v, name, quote, mask, stamp, false)
        }
        .expect("unwrap: in-memory write");
        v
    });
    // unwrap: writing into memory cannot fail.
    cached.is_some_and(|bytes| {
        w.write_all(bytes).expect("unwrap: in-memory write");
        true
    })
}

/// Writes the head and the selected field entries of a quote.
fn write_entries(w: &mut impl Write, f: &Fragments, mask: FieldMask) -> io::Result<()> {
    w.write_all(f.head())?;
    f.fields(mask).try_for_each(|entry| w.write_all(entry))
}

/// `{"type":…,` the cached entries, `"stale":true` for a stale symbol's
/// snapshot, then `"ti"` when stamping.
fn write_json_quote(
    w: &mut impl Write,
    type_name: &str,
    quote: &Quote,
    mask: FieldMask,
    stamp: bool,
    stale: bool,
) -> io::Result<()> {
    w.write_all(b"{\"type\":\"")?;
    w.write_all(type_name.as_bytes())?;
    w.write_all(b"\",")?;
    write_entries(w, quote.json_fragments(), mask)?;
    if stale {
        w.write_all(b",\"stale\":true")?;
    }
    if stamp {
        w.write_all(b",\"ti\":")?;
        w.write_all(itoa::Buffer::new().format(quote.ingested_us).as_bytes())?;
    }
    w.write_all(b"}")
}

/// A map of `type`, the cached entries, `stale`, then `ti` when stamping.
fn write_msgpack_quote(
    w: &mut impl Write,
    type_name: &str,
    quote: &Quote,
    mask: FieldMask,
    stamp: bool,
    stale: bool,
) -> io::Result<()> {
    use rmp::encode::{write_bool, write_map_len, write_sint, write_str};
    let f = quote.msgpack_fragments();
    // `type`, `sym`, `seq`, `t`, the fields, `stale`, `ti`: what rmp_serde
    // counts for a map of unknown length before writing its header the same way.
    write_map_len(w, 4 + f.count(mask) + u32::from(stale) + u32::from(stamp))?;
    write_str(w, "type")?;
    write_str(w, type_name)?;
    write_entries(w, f, mask)?;
    if stale {
        write_str(w, "stale")?;
        write_bool(w, true)?;
    }
    if stamp {
        write_str(w, "ti")?;
        write_sint(w, quote.ingested_us)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use rust_decimal::Decimal;
    use serde_json::{json, Value};

    use super::*;

    /// The whole batch as one frame (`None` for an empty batch).
    fn encode_frame(format: Format, msgs: &[ServerMsg]) -> Option<Bytes> {
        let mut frame = None;
        encode_frames(format, msgs, usize::MAX, |_, f| frame = Some(f));
        frame
    }
    use crate::quote::{Fields, Price};
    use crate::session::protocol::{QuoteKind, ServerMsg};

    #[test]
    fn json_and_msgpack_frames_are_arrays() {
        let msgs = vec![ServerMsg::Pong { id: None }, ServerMsg::Pong { id: None }];
        let j = encode_frame(Format::Json, &msgs).unwrap();
        assert_eq!(&j[..], br#"[{"type":"pong"},{"type":"pong"}]"#);
        let m = encode_frame(Format::Msgpack, &msgs).unwrap();
        let v: serde_json::Value = rmp_serde::from_slice(&m).unwrap();
        assert_eq!(v, serde_json::json!([{"type":"pong"},{"type":"pong"}]));
        assert!(encode_frame(Format::Json, &[]).is_none());
    }

    #[test]
    fn a_large_batch_splits_into_frames_near_the_target_size() {
        let msgs: Vec<ServerMsg> = (0..300)
            .map(|i| ServerMsg::Pong {
                id: Some(serde_json::json!(i)),
            })
            .collect();
        for format in [Format::Json, Format::Msgpack] {
            let mut seen = Vec::new();
            let mut sizes = Vec::new();
            encode_frames(format, &msgs, 1000, |part, frame| {
                let v: Vec<serde_json::Value> = match format {
                    Format::Json => serde_json::from_slice(&frame).unwrap(),
                    Format::Msgpack => rmp_serde::from_slice(&frame).unwrap(),
                };
                assert_eq!(v.len(), part.len(), "a frame holds exactly its messages");
                seen.extend(v.into_iter().map(|m| m["id"].as_u64().unwrap()));
                sizes.push(frame.len());
            });
            assert_eq!(
                seen,
                (0..300).collect::<Vec<u64>>(),
                "{format:?}: all, in order"
            );
            assert!(sizes.len() > 2, "{format:?}: split into {sizes:?}");
            assert!(sizes.iter().all(|&n| n < 1100), "{format:?}: {sizes:?}");
        }
    }

    /// What a frame was before the fast path: every message through serde.
    fn serde_frame(format: Format, msgs: &[ServerMsg]) -> Vec<u8> {
        match format {
            Format::Json => serde_json::to_vec(msgs).unwrap(),
            Format::Msgpack => {
                let mut buf = Vec::new();
                rmp::encode::write_array_len(&mut buf, msgs.len() as u32).unwrap();
                for m in msgs {
                    rmp_serde::encode::write_named(&mut buf, m).unwrap();
                }
                buf
            }
        }
    }

    /// The fast frame must be byte-identical to the serde one, in both formats.
    fn assert_same_as_serde(msgs: &[ServerMsg]) {
        let fast = encode_frame(Format::Json, msgs).unwrap();
        let slow = serde_frame(Format::Json, msgs);
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow)
        );
        let fast = encode_frame(Format::Msgpack, msgs).unwrap();
        let slow = serde_frame(Format::Msgpack, msgs);
        let decoded: Value = rmp_serde::from_slice(&fast).unwrap();
        let want: Value = rmp_serde::from_slice(&slow).unwrap();
        assert_eq!(decoded, want);
        assert_eq!(&fast[..], &slow[..], "MessagePack bytes of {want}");
    }

    fn price(s: &str) -> Price {
        s.parse().unwrap()
    }

    fn quote(sym: &str, seq: u64, t: i64, fields: Fields, ingested_us: i64) -> Arc<Quote> {
        Arc::new(Quote::new(
            Arc::from(sym),
            seq,
            t,
            fields,
            Instant::now(),
            ingested_us,
        ))
    }

    fn msg(kind: QuoteKind, quote: &Arc<Quote>, mask: FieldMask, stamp: bool) -> ServerMsg {
        ServerMsg::Quote {
            kind,
            quote: quote.clone(),
            mask,
            stamp,
            stale: false,
        }
    }

    /// A stale symbol's snapshot.
    fn stale_snapshot(quote: &Arc<Quote>, mask: FieldMask, stamp: bool) -> ServerMsg {
        ServerMsg::Quote {
            kind: QuoteKind::Snapshot,
            quote: quote.clone(),
            mask,
            stamp,
            stale: true,
        }
    }

    /// Integers at and around MessagePack's encoding boundaries, plus random ones.
    fn size(rng: &mut SmallRng) -> u64 {
        const EDGES: [u64; 12] = [
            0,
            1,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            i64::MAX as u64 + 1,
            u64::MAX,
        ];
        if rng.random_bool(0.5) {
            EDGES[rng.random_range(0..EDGES.len())]
        } else {
            rng.random::<u64>() >> rng.random_range(0..64)
        }
    }

    fn signed(rng: &mut SmallRng) -> i64 {
        const EDGES: [i64; 10] = [
            0,
            -1,
            -33,
            127,
            128,
            -129,
            1_763_700_000_123,
            1_763_700_000_123_456,
            i64::MIN,
            i64::MAX,
        ];
        if rng.random_bool(0.5) {
            EDGES[rng.random_range(0..EDGES.len())]
        } else {
            rng.random::<i64>() >> rng.random_range(0..64)
        }
    }

    fn random_price(rng: &mut SmallRng) -> Price {
        // Any mantissa and scale: keeps trailing zeros such as 189.10.
        let mantissa = rng.random::<i64>() >> rng.random_range(0..64);
        Price(Decimal::new(mantissa, rng.random_range(0..=12)))
    }

    fn random_fields(rng: &mut SmallRng) -> Fields {
        let mut f = Fields::default();
        macro_rules! one {
            ($f:ident, $k:literal, Price) => {
                if rng.random_bool(0.6) {
                    f.$f = Some(random_price(rng));
                }
            };
            ($f:ident, $k:literal, u64) => {
                if rng.random_bool(0.6) {
                    f.$f = Some(size(rng));
                }
            };
        }
        crate::quote::each_field!(one);
        f
    }

    fn masks(rng: &mut SmallRng) -> Vec<FieldMask> {
        let mut masks = vec![FieldMask::ALL, FieldMask(0), FieldMask(0x7ff)];
        masks.extend((0..16).map(|b| FieldMask(1 << b)));
        masks.extend((0..8).map(|_| FieldMask(rng.random())));
        masks
    }

    #[test]
    fn quote_messages_match_serde_for_handpicked_quotes() {
        let fields: Fields = serde_json::from_value(json!({
            "bp":"189.10","bs":300,"ap":"189.12","as":u64::MAX,"lp":"189.1",
            "ls":128,"v":4_294_967_296_u64,"o":"0.0001","h":"200","l":"-1.50",
            "pc":"79228162514264337593543950335"
        }))
        .unwrap();
        let full = quote(
            "BRK.B",
            12,
            1_763_700_000_123,
            fields,
            1_763_700_000_123_456,
        );
        let empty = quote("EUR/USD", 1, -1_763_700_000_123, Fields::default(), 0);
        let sparse = quote(
            "ABCDEFGHIJKLMNOP",
            u64::MAX,
            i64::MAX,
            Fields {
                as_: Some(0),
                pc: Some(price("411.20")),
                ..Fields::default()
            },
            -5,
        );
        for q in [&full, &empty, &sparse] {
            for mask in masks(&mut SmallRng::seed_from_u64(1)) {
                for stamp in [false, true] {
                    for kind in [QuoteKind::Snapshot, QuoteKind::Update] {
                        assert_same_as_serde(&[msg(kind, q, mask, stamp)]);
                    }
                    assert_same_as_serde(&[stale_snapshot(q, mask, stamp)]);
                }
            }
        }
        // A snapshot with every field and `ti` is a 16-entry map (map16, not fixmap).
        let frame = encode_frame(
            Format::Msgpack,
            &[msg(QuoteKind::Snapshot, &full, FieldMask::ALL, true)],
        )
        .unwrap();
        assert_eq!(frame[..4], [0x91, 0xde, 0x00, 0x10]);
        assert_eq!(
            &encode_frame(
                Format::Json,
                &[msg(QuoteKind::Update, &sparse, FieldMask(0b1000), false)]
            )
            .unwrap()[..],
            br#"[{"type":"update","sym":"ABCDEFGHIJKLMNOP","seq":18446744073709551615,"t":9223372036854775807,"as":0}]"#
        );
    }

    #[test]
    fn quote_messages_match_serde_for_random_quotes() {
        let mut rng = SmallRng::seed_from_u64(0x7ec4e7);
        let syms = ["A", "AAPL", "BRK.B", "EUR/USD", "X_Y-Z", "ABCDEFGHIJKLMNOP"];
        for seq in 0..300 {
            let sym = syms[rng.random_range(0..syms.len())];
            let q = quote(
                sym,
                size(&mut rng),
                signed(&mut rng),
                random_fields(&mut rng),
                signed(&mut rng),
            );
            for mask in masks(&mut rng) {
                let kind = if seq % 2 == 0 {
                    QuoteKind::Snapshot
                } else {
                    QuoteKind::Update
                };
                assert_same_as_serde(&[msg(kind, &q, mask, rng.random_bool(0.5))]);
            }
        }
    }

    #[test]
    fn mixed_frames_match_serde() {
        let mut rng = SmallRng::seed_from_u64(7);
        let a = quote("AAA", 3, 5, random_fields(&mut rng), 9);
        let b = quote("BBB", 4, 6, random_fields(&mut rng), 10);
        let msgs = vec![
            ServerMsg::Pong {
                id: Some(json!("p")),
            },
            msg(QuoteKind::Snapshot, &a, FieldMask::ALL, false),
            msg(QuoteKind::Update, &b, FieldMask(0b101), true),
            ServerMsg::Subscribed {
                id: Some(json!(1)),
                symbols: vec![Arc::from("AAA"), Arc::from("BBB")],
                max_rate: 2.5,
            },
            msg(QuoteKind::Update, &a, FieldMask(0), false),
            ServerMsg::Status {
                sym: Arc::from("AAA"),
                status: Arc::new(crate::hub::SymbolStatus {
                    version: 2,
                    stale: Some(crate::hub::Stale {
                        since: 1_763_700_000_123,
                        reason: "feed sim down".into(),
                    }),
                    feed: None,
                    rank: None,
                }),
            },
            stale_snapshot(&a, FieldMask::ALL, true),
        ];
        assert_same_as_serde(&msgs);
        // Encoding again reuses the cached fragments: same frames.
        assert_same_as_serde(&msgs);
    }

    #[test]
    fn the_cached_update_of_a_states_delta_matches_serde() {
        let mut rng = SmallRng::seed_from_u64(0x57e9);
        for seq in 1..200u64 {
            let base = Quote::new(
                Arc::from("AAPL"),
                seq,
                1,
                random_fields(&mut rng),
                Instant::now(),
                5,
            );
            let mut fields = base.fields.clone();
            fields.merge(&random_fields(&mut rng));
            let q = Arc::new(
                Quote::new(Arc::from("AAPL"), seq + 1, 2, fields, Instant::now(), 6).after(&base),
            );
            let step = q.step_mask().expect("a successor has a step");
            assert_eq!(step, q.fields.diff(&base.fields));
            assert_eq!(q.delta_from(&base), step);
            // From any other state: its own diff.
            let other = Quote::new(
                Arc::from("AAPL"),
                seq + 1000,
                0,
                random_fields(&mut rng),
                Instant::now(),
                0,
            );
            assert_eq!(q.delta_from(&other), q.fields.diff(&other.fields));
            // Twice: encoded, then from the cache; with `ti` and without
            // (the second is not the cached one and is encoded each time).
            let stamp = seq % 2 == 0;
            for stamp in [stamp, stamp, !stamp] {
                assert_same_as_serde(&[
                    msg(QuoteKind::Update, &q, step, stamp),
                    // Not the step: encoded from the fragments.
                    msg(QuoteKind::Update, &q, FieldMask(step.0 ^ 1), stamp),
                    msg(QuoteKind::Snapshot, &q, step, stamp),
                    stale_snapshot(&q, step, stamp),
                ]);
            }
        }
    }
}
