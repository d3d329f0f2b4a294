//! The Alpaca market-data v2 stream's messages: a text frame is a JSON array of
//! objects tagged by `T`. Prices are read from the JSON number's own text into an
//! exact decimal (never through `f64`); timestamps are RFC 3339 strings; an
//! `error`'s code says whether reconnecting can help ([`provider_error`]).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::feeds::FeedError;
use crate::quote::{Fields, Price};

/// Why one message of a frame was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a JSON array of objects: {0}")]
    Frame(String),
    #[error("malformed message: {0}")]
    Message(String),
    #[error("{0} is not a decimal number")]
    Price(String),
    #[error("{0:?} is not an RFC 3339 time")]
    Time(String),
    #[error("a {0} message without {1}")]
    Missing(&'static str, &'static str),
}

/// One message of a frame, as far as the feed reads it.
// Nearly every message is `Data`: boxing it would allocate once per quote.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// `q` or `t`: new fields of one symbol. A trade's size is in `fields.ls`;
    /// the feed adds it to the day volume.
    Data {
        sym: Cow<'a, str>,
        t: i64,
        fields: Fields,
    },
    /// `success`, with its `msg` (`connected`, `authenticated`).
    Success(Cow<'a, str>),
    /// `error`, with its code and `msg`.
    Error { code: u16, msg: Cow<'a, str> },
    /// `subscription`: what the connection is subscribed to now.
    Subscription { trades: usize, quotes: usize },
    /// Any other kind (bars, statuses, corrections): not followed.
    Other,
}

/// The keys of every message kind the feed reads, all optional but `T`.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "T", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "S", borrow, default)]
    sym: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    t: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    bp: Option<&'a RawValue>,
    #[serde(default)]
    bs: Option<u64>,
    #[serde(borrow, default)]
    ap: Option<&'a RawValue>,
    #[serde(rename = "as", default)]
    as_: Option<u64>,
    #[serde(borrow, default)]
    p: Option<&'a RawValue>,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(borrow, default)]
    msg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    trades: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    quotes: Option<Vec<Cow<'a, str>>>,
}

/// Splits a text frame into its messages, each still to be read by [`message`]
/// (so one bad message costs only itself).
pub fn frame(text: &str) -> Result<Vec<&RawValue>, WireError> {
    serde_json::from_str(text).map_err(|e| WireError::Frame(e.to_string()))
}

/// Reads one message of a frame.
pub fn message(raw: &RawValue) -> Result<Message<'_>, WireError> {
    let r: Raw<'_> =
        serde_json::from_str(raw.get()).map_err(|e| WireError::Message(e.to_string()))?;
    let data = |kind: &'static str| -> Result<(Cow<'_, str>, i64), WireError> {
        let sym = r.sym.clone().ok_or(WireError::Missing(kind, "S"))?;
        let t = r.t.as_deref().ok_or(WireError::Missing(kind, "t"))?;
        let t = epoch_ms(t).ok_or_else(|| WireError::Time(t.to_owned()))?;
        Ok((sym, t))
    };
    Ok(match &*r.kind {
        "q" => {
            let (sym, t) = data("quote")?;
            let fields = Fields {
                bp: r.bp.map(price).transpose()?,
                bs: r.bs,
                ap: r.ap.map(price).transpose()?,
                as_: r.as_,
                ..Fields::default()
            };
            Message::Data { sym, t, fields }
        }
        "t" => {
            let (sym, t) = data("trade")?;
            let lp = r.p.ok_or(WireError::Missing("trade", "p"))?;
            let fields = Fields {
                lp: Some(price(lp)?),
                ls: Some(r.s.ok_or(WireError::Missing("trade", "s"))?),
                ..Fields::default()
            };
            Message::Data { sym, t, fields }
        }
        "success" => Message::Success(r.msg.unwrap_or_default()),
        "error" => Message::Error {
            code: r.code.ok_or(WireError::Missing("error", "code"))?,
            msg: r.msg.unwrap_or_default(),
        },
        "subscription" => Message::Subscription {
            trades: r.trades.map_or(0, |v| v.len()),
            quotes: r.quotes.map_or(0, |v| v.len()),
        },
        _ => Message::Other,
    })
}

/// A JSON number's text as an exact decimal, keeping its digits and scale
/// (`187.1234567`, `189.10`); an exponent (`1.5e-3`) is applied exactly.
pub fn price(raw: &RawValue) -> Result<Price, WireError> {
    let text = raw.get();
    let bad = || WireError::Price(text.to_owned());
    if text.starts_with('"') || matches!(text, "true" | "false" | "null") {
        return Err(bad());
    }
    if text.contains(['e', 'E']) {
        return rust_decimal::Decimal::from_scientific(text)
            .map(Price)
            .map_err(|_| bad());
    }
    text.parse().map_err(|_| bad())
}

/// Milliseconds since the Unix epoch of an RFC 3339 time such as
/// `2024-03-01T14:30:00.123456789Z` or `2024-03-01T09:30:00-05:00` (digits
/// below the millisecond are dropped).
pub fn epoch_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let seps = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if b.len() < 20 || seps.iter().any(|&(i, c)| b[i] != c) || !b"Tt ".contains(&b[10]) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // A leap second (:60) reads as the next minute's first.
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let kept = digits.min(3);
        millis = num(i + 1, kept)? * 10i64.pow(3 - kept as u32);
        i += 1 + digits;
    }
    let offset_minutes = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let m = num(i + 1, 2)? * 60 + num(i + 4, 2)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + (minute - offset_minutes) * 60 + second;
    Some(secs * 1_000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What an `error` message means for the connection: reconnect with backoff, or
/// fail the feed when reconnecting cannot help (wrong credentials, the account's
/// one connection taken, a plan without this feed) and would only hammer the
/// provider.
pub fn provider_error(code: u16, msg: &str) -> FeedError {
    let retry = |what: &str| FeedError::Reconnectable(format!("{what} ({code} {msg})"));
    let fail = |what: &str| FeedError::Fatal(format!("alpaca refused: {what} ({code} {msg})"));
    match code {
        400 => retry("invalid syntax"),
        401 => retry("not authenticated"),
        402 => fail("authentication failed; check the key and secret"),
        403 => retry("already authenticated"),
        404 => retry("authentication timed out"),
        // Demand may be smaller by the next attempt; the backoff grows meanwhile.
        405 => retry("symbol limit exceeded"),
        406 => fail("connection limit exceeded; another connection uses these credentials"),
        407 => retry("too slow to read the stream"),
        409 => fail("the subscription does not cover this feed"),
        500 => retry("internal error"),
        _ => retry("error"),
    }
}

#[cfg(test)]
mod tests;
