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
mod credentials;
mod wire;

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    AdapterSettings, DemandWatch, FeedAdapter, FeedContext, FeedError, FeedState, Invalid,
};
use crate::backoff::backoff;
use crate::hub::SymbolId;
use connection::{Connection, Health};
use credentials::{Credentials, Place};

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
        })
    }
}

/// The Alpaca stream follower.
pub struct AlpacaFeed {
    url: String,
    linger: Duration,
    credentials: Credentials,
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
    async fn run(self, mut ctx: FeedContext) -> Result<(), FeedError> {
        let mut demand = ctx.demand(self.linger);
        let mut volumes = Volumes::default();
        let mut attempt = 0;
        let mut stop = ctx.clone();
        loop {
            let mut health = Health::default();
            let conn = tokio::select! {
                conn = Connection::open(&self.url, &self.credentials, &ctx) => conn,
                _ = stop.shutdown_signal() => return Ok(()),
            };
            let end = match conn {
                Ok(conn) => {
                    conn.follow(&mut ctx, &mut demand, &mut volumes, &mut health)
                        .await
                }
                Err(e) => Err(e),
            };
            let reason = match end {
                Ok(()) => return Ok(()),
                Err(FeedError::Fatal(e)) => return Err(FeedError::Fatal(e)),
                Err(FeedError::Reconnectable(e)) => e,
            };
            // A connection the provider served resets the backoff; one refused
            // again and again waits longer each time.
            if health.served {
                attempt = 0;
            }
            let wait = backoff(attempt);
            attempt = attempt.saturating_add(1);
            let name = &ctx.status().name;
            tracing::warn!(feed = %name, error = %reason, retry_in = ?wait, "alpaca stream lost; reconnecting");
            ctx.status()
                .set_state_because(FeedState::Reconnecting, reason);
            if !wait_out(wait, &mut ctx, &mut demand).await {
                return Ok(());
            }
        }
    }
}

/// Waits `wait` while keeping up with demand (so the next connection subscribes
/// to what is wanted then); false when shutdown came first.
async fn wait_out(wait: Duration, ctx: &mut FeedContext, demand: &mut DemandWatch) -> bool {
    let sleep = tokio::time::sleep(wait);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = ctx.shutdown_signal() => return false,
            _ = demand.changed() => {}
        }
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
}
