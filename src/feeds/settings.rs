//! [`FeedSettings`]: one `[[feeds]]` entry: the keys every feed has (`name`,
//! `start_timeout`, `add_symbols`) and its kind with the kind's own keys.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{FeedKind, Invalid};

fn default_start_timeout() -> Duration {
    Duration::from_secs(5)
}

/// One feed adapter's settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct FeedSettings {
    /// Unique among the feeds; labels its metrics.
    pub name: String,
    /// `/readyz` waits at most this long for the feed's first quote.
    #[serde(default = "default_start_timeout", with = "crate::duration")]
    pub start_timeout: Duration,
    /// Symbols the feed brings that the universe lacks are added (up to
    /// `universe.max_added`) instead of refused.
    #[serde(default)]
    pub add_symbols: bool,
    /// Among feeds that bring the same symbol, the highest priority live one
    /// is its source (ties: the feed listed first).
    #[serde(default)]
    pub priority: i32,
    /// A feed that accepted nothing for this long counts as down: its symbols
    /// move to another feed or turn stale ("0s": never).
    #[serde(default, with = "crate::duration")]
    pub stale_after: Duration,
    #[serde(flatten)]
    pub adapter: FeedKind,
}

impl FeedSettings {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        self.adapter.name()
    }

    pub fn start_timeout(&self) -> Duration {
        self.start_timeout
    }

    /// Checks the entry; the error names the key within it.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.name.is_empty() {
            return Err(Invalid::new("name", "must not be empty"));
        }
        self.adapter.validate()
    }
}
