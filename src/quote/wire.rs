//! Pre-encoded wire fragments of a [`Quote`]: the map entries every quote message
//! repeats (`sym`, `seq`, `t` and one per present field), encoded once per format
//! and then only copied into each subscriber's frame.
//!
//! The bytes are exactly what serializing the same entries through serde gives:
//! JSON values go through `serde_json` itself, and MessagePack values through the
//! `rmp` functions `rmp_serde` calls (`write_str` for strings and prices,
//! `write_uint` for `u64`, `write_sint` for `i64`).

use std::io::{self, Write};

use serde::{Serialize, Serializer};

use super::{each_field, FieldMask, Price, Quote};

/// How many fields a [`super::Fields`] has (the usable bits of a [`FieldMask`]).
const FIELD_COUNT: usize = {
    let mut n = 0;
    macro_rules! count {
        ($f:ident, $k:literal, $t:ty) => {
            n += 1;
        };
    }
    each_field!(count);
    n
};

/// One format's encoding of a quote's entries, in one buffer.
#[derive(Debug)]
pub struct Fragments {
    /// The head entries, then each present field's entry, back to back.
    buf: Vec<u8>,
    /// `buf[..ends[0]]` is the head; `buf[ends[i]..ends[i + 1]]` is field `i`'s
    /// entry (empty when the field is absent). `u16` keeps a quote small: a
    /// 16-char symbol and 11 decimals or integers take well under 1 KiB.
    ends: [u16; FIELD_COUNT + 1],
    /// One bit per present field, as in a [`FieldMask`].
    present: u16,
}

/// A field's value, whichever its type.
#[derive(Clone, Copy)]
enum Value {
    Price(Price),
    Size(u64),
}

impl From<Price> for Value {
    fn from(p: Price) -> Value {
        Value::Price(p)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Size(n)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Price(p) => p.serialize(s),
            Value::Size(n) => n.serialize(s),
        }
    }
}

impl Fragments {
    /// JSON: the head is `"sym":"AAPL","seq":12,"t":1763700000123` and each field
    /// entry starts with its separator (`,"bp":"411.20"`), so a message is the head
    /// followed by the selected entries.
    pub(super) fn json(q: &Quote) -> Fragments {
        fn entry(w: &mut Vec<u8>, key: &str, value: &(impl Serialize + ?Sized)) -> io::Result<()> {
            // Keys are our own ASCII literals: nothing to escape.
            write!(w, "\"{key}\":")?;
            serde_json::to_writer(w, value).map_err(io::Error::from)
        }
        Fragments::build(
            q,
            |w| {
                entry(w, "sym", &*q.sym)?;
                w.push(b',');
                entry(w, "seq", &q.seq)?;
                w.push(b',');
                entry(w, "t", &q.t)
            },
            |w, key, value| {
                w.push(b',');
                entry(w, key, &value)
            },
        )
    }

    /// MessagePack: each entry is a key string followed by its value.
    pub(super) fn msgpack(q: &Quote) -> Fragments {
        use rmp::encode::{write_sint, write_str, write_uint};
        Fragments::build(
            q,
            |w| {
                write_str(w, "sym")?;
                write_str(w, &q.sym)?;
                write_str(w, "seq")?;
                write_uint(w, q.seq)?;
                write_str(w, "t")?;
                write_sint(w, q.t)?;
                Ok(())
            },
            |w, key, value| {
                write_str(w, key)?;
                match value {
                    // As serde's default `collect_str`, which `Price` uses: text.
                    Value::Price(p) => write_str(w, &p.to_string())?,
                    Value::Size(n) => {
                        write_uint(w, n)?;
                    }
                }
                Ok(())
            },
        )
    }

    fn build(
        q: &Quote,
        head: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
        mut field: impl FnMut(&mut Vec<u8>, &str, Value) -> io::Result<()>,
    ) -> Fragments {
        const WHY: &str = "unwrap: writing strings and integers into a Vec cannot fail";
        let end = |buf: &Vec<u8>| u16::try_from(buf.len()).expect("unwrap: entries < 1 KiB");
        let mut buf = Vec::with_capacity(160);
        head(&mut buf).expect(WHY);
        let mut ends = [end(&buf); FIELD_COUNT + 1];
        let mut present = 0u16;
        let mut i = 0;
        macro_rules! one {
            ($f:ident, $k:literal, $t:ty) => {
                if let Some(v) = q.fields.$f {
                    field(&mut buf, $k, Value::from(v)).expect(WHY);
                    present |= 1 << i;
                }
                i += 1;
                ends[i] = end(&buf);
            };
        }
        each_field!(one);
        Fragments { buf, ends, present }
    }

    /// The `sym`, `seq` and `t` entries.
    pub fn head(&self) -> &[u8] {
        &self.buf[..usize::from(self.ends[0])]
    }

    /// The entries of the fields that `mask` selects and the quote has, in
    /// declaration order.
    pub fn fields(&self, mask: FieldMask) -> impl Iterator<Item = &[u8]> + '_ {
        let selected = mask.0 & self.present;
        (0..FIELD_COUNT)
            .filter(move |i| selected & (1 << i) != 0)
            .map(move |i| &self.buf[usize::from(self.ends[i])..usize::from(self.ends[i + 1])])
    }

    /// How many entries [`Fragments::fields`] yields for `mask`.
    pub fn count(&self, mask: FieldMask) -> u32 {
        (mask.0 & self.present).count_ones()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::quote::Fields;

    fn quote(fields: &str) -> Quote {
        let fields: Fields = serde_json::from_str(fields).unwrap();
        Quote::new(
            Arc::from("BRK.B"),
            12,
            1_763_700_000_123,
            fields,
            Instant::now(),
            0,
        )
    }

    #[test]
    fn field_count_matches_the_fields() {
        assert_eq!(FIELD_COUNT, 11);
    }

    #[test]
    fn json_head_and_entries() {
        let q = quote(r#"{"bp":"411.20","bs":300,"pc":"0.0001"}"#);
        let f = q.json_fragments();
        assert_eq!(f.head(), br#""sym":"BRK.B","seq":12,"t":1763700000123"#);
        let all: Vec<&[u8]> = f.fields(FieldMask::ALL).collect();
        assert_eq!(
            all,
            [
                &br#","bp":"411.20""#[..],
                br#","bs":300"#,
                br#","pc":"0.0001""#
            ]
        );
        assert_eq!(f.count(FieldMask::ALL), 3);
        // bs and ap: ap is absent, so only bs.
        assert_eq!(
            f.fields(FieldMask(0b110)).collect::<Vec<_>>(),
            [br#","bs":300"#]
        );
        assert_eq!(f.count(FieldMask(0b110)), 1);
        assert_eq!(f.fields(FieldMask(0)).count(), 0);
        // Cached: the same buffer on the second call.
        assert!(std::ptr::eq(f, q.json_fragments()));
    }

    #[test]
    fn msgpack_entries_decode_to_the_values() {
        let q = quote(r#"{"ap":"189.10","v":18446744073709551615}"#);
        let f = q.msgpack_fragments();
        // Wrap the entries in a map header to decode them.
        let mut frame = vec![0x80 | (3 + f.count(FieldMask::ALL) as u8)];
        frame.extend_from_slice(f.head());
        f.fields(FieldMask::ALL)
            .for_each(|e| frame.extend_from_slice(e));
        let v: serde_json::Value = rmp_serde::from_slice(&frame).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"sym":"BRK.B","seq":12,"t":1_763_700_000_123_i64,
                "ap":"189.10","v":u64::MAX})
        );
    }
}
