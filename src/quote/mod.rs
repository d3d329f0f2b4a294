//! Quotes: the gateway's latest known state of one symbol (PROTOCOL.md section 1).
//!
//! A [`Quote`] is a full state; a [`QuoteUpdate`] is what a feed adapter publishes
//! (any subset of the fields). Prices are [`Price`]s: exact decimals that keep the
//! scale the feed gave them, so `"189.10"` stays `"189.10"`. A quote also caches its
//! own wire encoding ([`Fragments`]), so fan-out to many clients encodes it once.

mod wire;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use wire::Fragments;

/// An exact decimal price, compared by value *and* scale: `189.10` and `189.1`
/// print differently, so for deltas they are different values.
#[derive(Clone, Copy, Debug)]
pub struct Price(pub Decimal);

impl PartialEq for Price {
    fn eq(&self, other: &Self) -> bool {
        self.0.serialize() == other.0.serialize()
    }
}
impl Eq for Price {}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why a price string was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid price {0:?}: expected a plain decimal such as \"189.10\"")]
pub struct PriceError(String);

impl FromStr for Price {
    type Err = PriceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok_chars = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
            && !s.starts_with('.')
            && !s.ends_with('.');
        if !ok_chars {
            return Err(PriceError(s.to_owned()));
        }
        Decimal::from_str_exact(s)
            .map(Price)
            .map_err(|_| PriceError(s.to_owned()))
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Returns true when `s` is a well-formed symbol: 1–16 chars of `A-Z 0-9 . - _ /`.
pub fn is_valid_symbol(s: &str) -> bool {
    (1..=16).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"._-/".contains(&b))
}

/// The quote fields a feed can set, all optional. Used both as a feed's partial
/// update and as the body of a full quote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bp: Option<Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ap: Option<Price>,
    #[serde(rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lp: Option<Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub o: Option<Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub h: Option<Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l: Option<Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pc: Option<Price>,
}

macro_rules! each_field {
    ($m:ident) => {
        $m!(bp, "bp", Price);
        $m!(bs, "bs", u64);
        $m!(ap, "ap", Price);
        $m!(as_, "as", u64);
        $m!(lp, "lp", Price);
        $m!(ls, "ls", u64);
        $m!(v, "v", u64);
        $m!(o, "o", Price);
        $m!(h, "h", Price);
        $m!(l, "l", Price);
        $m!(pc, "pc", Price);
    };
}
pub(crate) use each_field;

impl Fields {
    /// Overwrites every field `update` sets; returns true if any value changed.
    pub fn merge(&mut self, update: &Fields) -> bool {
        let mut changed = false;
        macro_rules! merge_one {
            ($f:ident, $k:literal, $t:ty) => {
                if let Some(v) = update.$f {
                    if self.$f != Some(v) {
                        self.$f = Some(v);
                        changed = true;
                    }
                }
            };
        }
        each_field!(merge_one);
        changed
    }

    /// Bit mask of the fields whose value in `self` differs from `prev` (see [`FieldMask`]).
    pub fn diff(&self, prev: &Fields) -> FieldMask {
        let mut mask = 0u16;
        let mut bit = 1u16;
        macro_rules! diff_one {
            ($f:ident, $k:literal, $t:ty) => {
                if self.$f.is_some() && self.$f != prev.$f {
                    mask |= bit;
                }
                bit <<= 1;
            };
        }
        each_field!(diff_one);
        let _ = bit;
        FieldMask(mask)
    }

    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Fields::default()
    }
}

/// Which fields of a [`Fields`] a message carries, one bit per field in
/// declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldMask(pub u16);

impl FieldMask {
    /// Every field.
    pub const ALL: FieldMask = FieldMask(u16::MAX);
    /// True when the mask selects nothing.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What a feed adapter publishes: one symbol, a source timestamp, some fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteUpdate {
    pub sym: String,
    pub t: i64,
    pub fields: Fields,
}

/// The wire shape of a recorded or upstream quote line: the keys of PROTOCOL.md
/// section 1. A recorded `seq` is accepted and ignored (the gateway assigns its own).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    sym: String,
    t: i64,
    #[serde(default)]
    #[allow(dead_code)]
    seq: Option<u64>,
    bp: Option<Price>,
    bs: Option<u64>,
    ap: Option<Price>,
    #[serde(rename = "as")]
    as_: Option<u64>,
    lp: Option<Price>,
    ls: Option<u64>,
    v: Option<u64>,
    o: Option<Price>,
    h: Option<Price>,
    l: Option<Price>,
    pc: Option<Price>,
}

impl<'de> Deserialize<'de> for QuoteUpdate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawUpdate::deserialize(d)?;
        Ok(QuoteUpdate {
            sym: r.sym,
            t: r.t,
            fields: Fields {
                bp: r.bp,
                bs: r.bs,
                ap: r.ap,
                as_: r.as_,
                lp: r.lp,
                ls: r.ls,
                v: r.v,
                o: r.o,
                h: r.h,
                l: r.l,
                pc: r.pc,
            },
        })
    }
}

/// The gateway's full latest state of one symbol. Immutable once built (it is
/// shared as `Arc<Quote>`): its wire fragments are cached on first use.
#[derive(Debug)]
pub struct Quote {
    pub sym: Arc<str>,
    pub seq: u64,
    pub t: i64,
    pub fields: Fields,
    /// When the gateway accepted the update that produced this state.
    pub ingested: Instant,
    /// The same moment as microseconds since the Unix epoch (for the benchmark-only
    /// `ti` field, comparable across processes on one host).
    pub ingested_us: i64,
    /// Encoded at most once per format, by the first session that sends the quote;
    /// a quote nobody reads costs nothing.
    json: OnceLock<Fragments>,
    msgpack: OnceLock<Fragments>,
    /// The `seq` of the state this one replaced and the fields that differ
    /// from it: the delta nearly every client gets, found once per quote.
    step: Option<(u64, FieldMask)>,
    /// The update message carrying [`Quote::step`]'s fields, encoded once per
    /// format (with whether it carries `ti`): the same bytes for every client
    /// that had the state before.
    json_step: OnceLock<(bool, Box<[u8]>)>,
    msgpack_step: OnceLock<(bool, Box<[u8]>)>,
    /// The state this one replaced, while the hub keeps it (a few states per
    /// symbol): a client that can take every update gets the ones it has not
    /// seen instead of one merged delta.
    previous: ArcSwapOption<Quote>,
}

impl Quote {
    /// A quote with no cached encodings yet.
    pub fn new(
        sym: Arc<str>,
        seq: u64,
        t: i64,
        fields: Fields,
        ingested: Instant,
        ingested_us: i64,
    ) -> Quote {
        Quote {
            sym,
            seq,
            t,
            fields,
            ingested,
            ingested_us,
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
            step: None,
            json_step: OnceLock::new(),
            msgpack_step: OnceLock::new(),
            previous: ArcSwapOption::empty(),
        }
    }

    /// This state as the successor of `base` (the state it replaces): its
    /// delta from it is found here, once.
    pub fn after(mut self, base: &Quote) -> Quote {
        self.step = Some((base.seq, self.fields.diff(&base.fields)));
        self
    }

    /// The fields that differ from `base` (a state of the same symbol), as
    /// [`Fields::diff`] finds them.
    pub fn delta_from(&self, base: &Quote) -> FieldMask {
        match self.step {
            Some((seq, mask)) if seq == base.seq => mask,
            _ => self.fields.diff(&base.fields),
        }
    }

    /// The fields of the delta from the state this one replaced.
    pub fn step_mask(&self) -> Option<FieldMask> {
        self.step.map(|(_, mask)| mask)
    }

    /// The update message with [`Quote::step_mask`]'s fields, `binary`
    /// (MessagePack) or JSON, with `ti` or without: encoded by `encode` the
    /// first time, then the same bytes. `None` when the cached message is the
    /// other one of with and without `ti` (a gateway sends one of them).
    pub fn step_message(
        &self,
        binary: bool,
        stamp: bool,
        encode: impl FnOnce() -> Vec<u8>,
    ) -> Option<&[u8]> {
        let cell = if binary {
            &self.msgpack_step
        } else {
            &self.json_step
        };
        let (stamped, bytes) = cell.get_or_init(|| (stamp, encode().into_boxed_slice()));
        (*stamped == stamp).then_some(&**bytes)
    }

    /// The state this one replaced, if the hub still keeps it.
    pub fn previous(&self) -> Option<Arc<Quote>> {
        self.previous.load_full()
    }

    /// Links the state this one replaced (`None` ends the chain here).
    pub(crate) fn set_previous(&self, previous: Option<Arc<Quote>>) {
        self.previous.store(previous);
    }

    /// The quote's `sym`, `seq`, `t` and field entries as JSON text.
    pub fn json_fragments(&self) -> &Fragments {
        self.json.get_or_init(|| Fragments::json(self))
    }

    /// The quote's `sym`, `seq`, `t` and field entries as MessagePack.
    pub fn msgpack_fragments(&self) -> &Fragments {
        self.msgpack.get_or_init(|| Fragments::msgpack(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Price {
        s.parse().unwrap()
    }

    #[test]
    fn price_keeps_trailing_zeros_and_compares_by_scale() {
        assert_eq!(p("189.10").to_string(), "189.10");
        assert_ne!(p("189.10"), p("189.1"));
        assert_eq!(p("0.0001"), p("0.0001"));
        assert_eq!(serde_json::to_string(&p("411.20")).unwrap(), "\"411.20\"");
    }

    #[test]
    fn price_refuses_exponents_plus_signs_and_junk() {
        for bad in ["1e5", "+1.00", "", "abc", "1.2.3", ".5", "5.", "NaN"] {
            assert!(bad.parse::<Price>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn symbol_charset_and_length() {
        assert!(is_valid_symbol("BRK.B"));
        assert!(is_valid_symbol("EUR/USD"));
        assert!(!is_valid_symbol(""));
        assert!(!is_valid_symbol("aapl"));
        assert!(!is_valid_symbol("ABCDEFGHIJKLMNOPQ"));
        assert!(!is_valid_symbol("A B"));
    }

    #[test]
    fn merge_and_diff_track_changed_fields_only() {
        let mut full: Fields =
            serde_json::from_str(r#"{"bp":"1.00","bs":100,"ap":"1.01","as":200}"#).unwrap();
        let before = full.clone();
        let upd: Fields = serde_json::from_str(r#"{"bp":"1.00","bs":300}"#).unwrap();
        assert!(full.merge(&upd));
        let mask = full.diff(&before);
        assert_eq!(mask, FieldMask(0b10)); // only bs
        assert!(!full.clone().merge(&upd));
    }

    #[test]
    fn update_parses_protocol_keys_and_rejects_unknown_ones() {
        let u: QuoteUpdate =
            serde_json::from_str(r#"{"sym":"AAPL","t":5,"as":10,"lp":"2.50"}"#).unwrap();
        assert_eq!(u.fields.as_, Some(10));
        assert!(serde_json::from_str::<QuoteUpdate>(r#"{"sym":"A","t":1,"zz":1}"#).is_err());
    }
}
