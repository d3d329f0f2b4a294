//! `alpaca`: quotes and trades from Alpaca's market-data v2 stream
//! (`wss://stream.data.alpaca.markets/v2/{feed}`). The feed subscribes to the
//! quotes and trades of the symbols sessions want (each kept `linger` after its
//! last session left), follows demand as it changes, and after a lost
//! connection reconnects with capped, jittered backoff, authenticates again and
//! resubscribes what is in demand. Quotes set the bid and ask; trades set the
//! last price and size and add their size to the symbol's day volume. An
//! `error` from the provider reconnects, or fails the feed when reconnecting
//! cannot help (402, 406, 409: see [`wire::provider_error`]).
//!
//! The key and secret come from environment variables or files named in the
//! settings; they are never logged.

mod connection;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::upstream::{self, Health, Place, Upstream};
use super::{AdapterSettings, DemandWatch, FeedAdapter, FeedContext, FeedError, Invalid};
use crate::hub::SymbolId;
use connection::Connection;

fn default_url() -> String {
    "wss://stream.data.alpaca.markets/v2/iex".to_owned()
}

fn default_key_env() -> String {
    "APCA_API_KEY_ID".to_owned()
}

fn default_secret_env() -> String {
    "APCA_API_SECRET_KEY".to_owned()
}

fn default_linger() -> Duration {
    Duration::from_secs(30)
}

/// `kind = "alpaca"`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlpacaSettings {
    /// The stream, `wss://stream.data.alpaca.markets/v2/{iex|sip|delayed_sip}`.
    #[serde(default = "default_url")]
    pub url: String,
    /// The environment variable holding the API key id ...
    #[serde(default = "default_key_env")]
    pub key_env: String,
    /// ... or, when set, a file holding it.
    #[serde(default)]
    pub key_file: Option<String>,
    /// The environment variable holding the API secret ...
    #[serde(default = "default_secret_env")]
    pub secret_env: String,
    /// ... or, when set, a file holding it.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// How long a symbol stays subscribed after its last session left.
    #[serde(default = "default_linger", with = "crate::duration")]
    pub linger: Duration,
}

/// The key id and secret the stream authenticates with. `Debug` shows neither.
#[derive(Clone)]
pub struct Credentials {
    pub key: String,
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

impl AlpacaSettings {
    fn credentials(&self) -> Result<Credentials, Invalid> {
        let key = Place {
            file: ("key_file", self.key_file.as_deref()),
            env: ("key_env", &self.key_env),
        };
        let secret = Place {
            file: ("secret_file", self.secret_file.as_deref()),
            env: ("secret_env", &self.secret_env),
        };
        Ok(Credentials {
            key: key.read()?,
            secret: secret.read()?,
        })
    }
}

impl AdapterSettings for AlpacaSettings {
    type Adapter = AlpacaFeed;

    fn validate(&self) -> Result<(), Invalid> {
        if !(self.url.starts_with("wss://") || self.url.starts_with("ws://")) {
            return Err(Invalid::new("url", "must be a ws:// or wss:// URL"));
        }
        self.credentials().map(drop)
    }

    fn build(&self, _ctx: &FeedContext) -> Result<AlpacaFeed, FeedError> {
        let credentials = self
            .credentials()
            .map_err(|e| FeedError::Fatal(format!("{}: {}", e.key, e.problem)))?;
        Ok(AlpacaFeed {
            url: self.url.clone(),
            linger: self.linger,
            credentials,
            volumes: Volumes::default(),
        })
    }
}

/// The Alpaca stream follower.
pub struct AlpacaFeed {
    url: String,
    linger: Duration,
    credentials: Credentials,
    volumes: Volumes,
}

/// Each symbol's volume over the trades seen this trading day.
#[derive(Default)]
pub(super) struct Volumes(HashMap<SymbolId, (i64, u64)>);

impl Volumes {
    /// Adds a trade of `size` at `t` (ms since the epoch); returns the day's
    /// volume. The day turns at 06:00 UTC, when US equities do not trade.
    fn add(&mut self, id: SymbolId, t: i64, size: u64) -> u64 {
        const DAY_MS: i64 = 86_400_000;
        let day = (t - 6 * 3_600_000).div_euclid(DAY_MS);
        let entry = self.0.entry(id).or_insert((day, 0));
        if entry.0 != day {
            *entry = (day, 0);
        }
        entry.1 += size;
        entry.1
    }
}

impl FeedAdapter for AlpacaFeed {
    async fn run(self, ctx: FeedContext) -> Result<(), FeedError> {
        let linger = self.linger;
        upstream::run(self, linger, ctx).await
    }
}

impl Upstream for AlpacaFeed {
    type Conn = Connection;
    const SOURCE: &'static str = "alpaca stream";

    async fn open(&self, ctx: &FeedContext) -> Result<Connection, FeedError> {
        Connection::open(&self.url, &self.credentials, ctx).await
    }

    async fn follow(
        &mut self,
        conn: Connection,
        ctx: &mut FeedContext,
        demand: &mut DemandWatch,
        health: &mut Health,
    ) -> Result<(), FeedError> {
        conn.follow(ctx, demand, &mut self.volumes, health).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_sums_trade_sizes_per_symbol_and_starts_again_each_day() {
        let mut v = Volumes::default();
        let at = |s: &str| wire::epoch_ms(s).unwrap();
        assert_eq!(v.add(0, at("2024-03-01T14:30:00Z"), 100), 100);
        assert_eq!(v.add(1, at("2024-03-01T14:30:00Z"), 7), 7);
        // Late trading (20:00 New York is 01:00 UTC in winter) is the same day.
        assert_eq!(v.add(0, at("2024-03-02T00:59:00Z"), 50), 150);
        assert_eq!(v.add(0, at("2024-03-04T09:00:00Z"), 5), 5, "a new day");
        assert_eq!(v.add(1, at("2024-03-01T15:00:00Z"), 3), 10);
    }

    #[test]
    fn credentials_are_never_shown() {
        let c = Credentials {
            key: "key-id".into(),
            secret: "s3cr3t".into(),
        };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
