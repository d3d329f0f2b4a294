//! The bus's wire format (PROTOCOL.md section 11): one subject per symbol,
//! `ticker.quotes.<SYM>`, and one JSON quote object per message with the keys of
//! section 1, full or partial, plus `seq` and `pub` when a publisher numbered it.

use serde::{Deserialize, Serialize};

use crate::quote::{is_valid_symbol, Fields, Quote};

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

/// A quote as it travels on the bus.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct BusQuote {
    pub sym: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub t: i64,
    #[serde(flatten)]
    pub fields: Fields,
    /// The publisher's id; with `seq`, it recognises a message seen before.
    #[serde(default, rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
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
    }
}
