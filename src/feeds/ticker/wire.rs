//! The ticker.v1 messages a relay reads from another gateway's `/ws`
//! (PROTOCOL.md sections 3, 4 and 8): every server frame is a JSON array of
//! messages tagged by `type`. Prices are the exact decimals of the JSON strings;
//! a close code or an `error` says whether reconnecting can help.

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::feeds::upstream::close_text;
use crate::feeds::FeedError;
use crate::quote::Fields;

/// What the upstream allows this connection (`welcome`'s `limits`).
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Limits {
    #[serde(default)]
    pub max_rate: Option<f64>,
}

/// A `snapshot` (every field the upstream has) or an `update` (the fields that
/// changed), with the upstream's `seq`.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Quote {
    pub sym: String,
    pub seq: u64,
    pub t: i64,
    /// Other keys (`type`, `stale`) are not fields and are left out.
    #[serde(flatten)]
    pub fields: Fields,
}

/// One message of a frame, as far as the relay reads it.
// Nearly every message is a quote: boxing it would allocate once per quote.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Welcome {
        #[serde(default)]
        limits: Limits,
    },
    Snapshot(Quote),
    Update(Quote),
    Subscribed {
        #[serde(default)]
        symbols: Vec<String>,
    },
    /// The reply to an `unsubscribe` (no reason), or symbols the upstream took
    /// away (`reason`, e.g. `not_entitled`).
    Unsubscribed {
        #[serde(default)]
        symbols: Vec<String>,
        #[serde(default)]
        reason: Option<String>,
    },
    Error {
        code: String,
        #[serde(default)]
        message: String,
        #[serde(default)]
        symbols: Vec<String>,
    },
    /// `pong`, `subscriptions`, `status` and anything newer: not followed.
    #[serde(other)]
    Other,
}

/// The messages of one text frame, each still to be read (so one bad message
/// does not cost the others).
pub fn frame(text: &str) -> Result<Vec<&RawValue>, String> {
    serde_json::from_str(text).map_err(|e| format!("not a JSON array: {e}"))
}

/// Reads one message.
pub fn message(raw: &RawValue) -> Result<Message, String> {
    serde_json::from_str(raw.get()).map_err(|e| format!("malformed message: {e}"))
}

/// The `subscribe` op for `syms`, at `max_rate` (the upstream's most, so that
/// as little as possible is conflated on the way).
pub fn subscribe(syms: &[&str], max_rate: Option<f64>) -> String {
    json!({"op": "subscribe", "symbols": syms, "max_rate": max_rate, "snapshot": true}).to_string()
}

pub fn unsubscribe(syms: &[&str]) -> String {
    json!({"op": "unsubscribe", "symbols": syms}).to_string()
}

/// True for the close codes of an upstream over its limits (1008: this
/// credential's connections; 1013: server full): reconnect, but the backoff
/// keeps growing.
pub fn over_limits(code: Option<u16>) -> bool {
    matches!(code, Some(1008 | 1013))
}

/// What a close from the upstream means: 4001 (credential refused) and 4003
/// (credential expired) fail the feed, since the same credential would be
/// refused again; any other close is worth a reconnect.
pub fn closed(code: u16, reason: &str) -> FeedError {
    let why = format!("({})", close_text(code, reason));
    match code {
        4001 => FeedError::Fatal(format!("the upstream refused the credential {why}")),
        4003 => FeedError::Fatal(format!("the upstream's credential expired {why}")),
        1008 | 1013 => FeedError::Reconnectable(format!("the upstream is over its limits {why}")),
        1001 => FeedError::Reconnectable(format!("the upstream is shutting down {why}")),
        _ => FeedError::Reconnectable(format!("closed by the upstream {why}")),
    }
}

/// What an `error` message means: `unauthorized` fails the feed; every other
/// code concerns one request (`None`: counted and logged, the connection stays).
pub fn error(code: &str, message: &str) -> Option<FeedError> {
    (code == "unauthorized").then(|| {
        FeedError::Fatal(format!(
            "the upstream refused the credential ({code}: {message})"
        ))
    })
}

#[cfg(test)]
mod tests;
