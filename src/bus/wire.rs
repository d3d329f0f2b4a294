//! The bus's wire format (PROTOCOL.md section 11): one subject per symbol,
//! `ticker.quotes.<SYM>`, and one JSON quote object per message with the keys of
//! section 1, full or partial, plus `seq` and `pub` when a publisher numbered it.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::quote::{each_field, is_valid_symbol, Fields, Quote};

/// Every quote subject starts with this.
pub const SUBJECT_PREFIX: &str = "ticker.quotes.";

/// The wildcard that covers every symbol's subject.
pub const ALL_SUBJECTS: &str = "ticker.quotes.>";

/// The subject of a symbol's quotes.
pub fn subject(sym: &str) -> String {
    format!("{SUBJECT_PREFIX}{sym}")
}

/// The symbol a quote subject names.
pub fn symbol_of(subject: &str) -> Option<&str> {
    subject.strip_prefix(SUBJECT_PREFIX)
}

/// Why a bus message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a quote object: {0}")]
    Malformed(String),
    #[error("symbol {sym:?} on subject {subject:?}")]
    WrongSubject { sym: String, subject: String },
}

/// A quote as it travels on the bus. Read by hand (below): an edge following
/// everything reads every message, and serde's `flatten` would buffer each one
/// into a map of owned keys and values first.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct BusQuote {
    pub sym: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub t: i64,
    #[serde(flatten)]
    pub fields: Fields,
    /// The publisher's id; with `seq`, it recognises a message seen before.
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
}

/// A key of a bus quote object; unknown keys are skipped.
enum Key {
    Sym,
    Seq,
    T,
    Pub,
    Field(&'static str),
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                macro_rules! known {
                    ($f:ident, $k:literal, $t:ty) => {
                        if s == $k {
                            return Ok(Key::Field($k));
                        }
                    };
                }
                each_field!(known);
                Ok(match s {
                    "sym" => Key::Sym,
                    "seq" => Key::Seq,
                    "t" => Key::T,
                    "pub" => Key::Pub,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for BusQuote {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BusQuote, D::Error> {
        struct QuoteVisitor;
        impl<'de> Visitor<'de> for QuoteVisitor {
            type Value = BusQuote;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quote object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BusQuote, A::Error> {
                let (mut sym, mut seq, mut t, mut publisher) = (None, None, None, None);
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Sym => sym = Some(map.next_value::<String>()?),
                        Key::Seq => seq = map.next_value()?,
                        Key::T => t = Some(map.next_value()?),
                        Key::Pub => publisher = map.next_value()?,
                        Key::Field(name) => {
                            macro_rules! set {
                                ($f:ident, $k:literal, $t:ty) => {
                                    if name == $k {
                                        fields.$f = map.next_value()?;
                                    }
                                };
                            }
                            each_field!(set);
                        }
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(BusQuote {
                    sym: sym.ok_or_else(|| de::Error::missing_field("sym"))?,
                    seq,
                    t: t.ok_or_else(|| de::Error::missing_field("t"))?,
                    fields,
                    publisher,
                })
            }
        }
        d.deserialize_map(QuoteVisitor)
    }
}

/// Reads one bus message received on `subject`.
pub fn decode(subject: &str, payload: &[u8]) -> Result<BusQuote, WireError> {
    let q: BusQuote =
        serde_json::from_slice(payload).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !is_valid_symbol(&q.sym) {
        return Err(WireError::Malformed(format!("invalid symbol {:?}", q.sym)));
    }
    if symbol_of(subject) != Some(q.sym.as_str()) {
        return Err(WireError::WrongSubject {
            sym: q.sym,
            subject: subject.to_owned(),
        });
    }
    Ok(q)
}

/// A full quote with its `seq` and the publisher's id, as a publisher sends it.
pub fn encode(q: &Quote, publisher: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        sym: &'a str,
        seq: u64,
        t: i64,
        #[serde(flatten)]
        fields: &'a Fields,
        #[serde(rename = "pub")]
        publisher: &'a str,
    }
    let out = Out {
        sym: &q.sym,
        seq: q.seq,
        t: q.t,
        fields: &q.fields,
        publisher,
    };
    // unwrap: a quote is strings and integers, which always serialize.
    serde_json::to_vec(&out).expect("unwrap: a quote serializes")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_full_quote_goes_out_and_comes_back_with_its_seq_and_publisher() {
        let fields: Fields = serde_json::from_str(r#"{"bp":"189.10","bs":300,"v":12}"#).unwrap();
        let q = Quote::new(
            Arc::from("BRK.B"),
            42,
            1_700,
            fields.clone(),
            Instant::now(),
            0,
        );
        let bytes = encode(&q, "pub-1");
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.contains(r#""bp":"189.10""#) && text.contains(r#""pub":"pub-1""#),
            "{text}"
        );
        let back = decode(&subject("BRK.B"), &bytes).unwrap();
        assert_eq!(
            back,
            BusQuote {
                sym: "BRK.B".into(),
                seq: Some(42),
                t: 1_700,
                fields,
                publisher: Some("pub-1".into()),
            }
        );
    }

    #[test]
    fn bad_messages_are_refused_not_panicked_on() {
        let s = subject("AAPL");
        for bad in [
            &b"not json"[..],
            b"[]",
            br#"{"sym":"AAPL"}"#,
            br#"{"sym":"AAPL","t":1,"bp":1.5}"#,
            br#"{"sym":"AAPL","t":1,"seq":-1}"#,
            br#"{"sym":"aapl","t":1}"#,
            &[0xff, 0xfe],
        ] {
            assert!(
                matches!(decode(&s, bad), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            decode(&subject("MSFT"), br#"{"sym":"AAPL","t":1}"#),
            Err(WireError::WrongSubject { .. })
        ));
        let partial = decode(&s, br#"{"sym":"AAPL","t":1,"ls":100}"#).unwrap();
        assert_eq!((partial.seq, partial.publisher), (None, None));
        // Keys it does not know are skipped, whatever their value; escaped keys
        // are still keys.
        let extra = decode(
            &s,
            br#"{"x":[1,{"bp":"9"}],"s\u0079m":"AAPL","t":1,"bp":"1.50","seq":null}"#,
        )
        .unwrap();
        assert_eq!((extra.sym.as_str(), extra.seq), ("AAPL", None));
        assert_eq!(extra.fields.bp, Some("1.50".parse().unwrap()));
    }
}
