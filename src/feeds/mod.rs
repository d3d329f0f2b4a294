//! Feed adapters: each one produces [`QuoteUpdate`](crate::quote::QuoteUpdate)s and
//! publishes them through its [`FeedContext`], the one door into the hub, until
//! shutdown. The context also tells an adapter which symbols sessions want
//! ([`DemandWatch`]) and, for feeds configured with `add_symbols`, lets it add the
//! symbols it discovers.
//!
//! The set of adapters is a closed enum, [`FeedKind`], tagged by the `kind` key of
//! a `[[feeds]]` entry. A kind is one file (its settings, implementing
//! [`AdapterSettings`], and its adapter, implementing [`FeedAdapter`]) plus one line
//! in `kinds.rs`.

mod alpaca;
mod context;
mod demand;
mod kinds;
mod nats;
mod replay;
mod settings;
mod silence;
mod sim;
mod status;
mod supervise;
mod ticker;
mod upstream;

use std::future::Future;

pub use alpaca::{AlpacaFeed, AlpacaSettings};
pub use context::{Directory, FeedContext};
pub use demand::{DemandDelta, DemandWatch};
pub use kinds::FeedKind;
pub use nats::{Follow, NatsFeed, NatsSettings};
pub use replay::{ReplayFeed, ReplaySettings};
pub use settings::FeedSettings;
pub use silence::{watch_silence, Watched};
pub use sim::{SimFeed, SimSettings};
pub use status::{refresh_metrics, FeedReport, FeedState, FeedStatus, FEED_STATES};
pub use supervise::supervise;
pub use ticker::{TickerFeed, TickerSettings};

/// What an adapter can fail with. Reconnectable errors are retried with capped,
/// jittered backoff; fatal ones end the adapter (its state shows `failed`).
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("source unavailable: {0}")]
    Reconnectable(String),
    #[error("{0}")]
    Fatal(String),
}

/// One feed adapter.
pub trait FeedAdapter {
    /// Runs until `ctx.shutdown` fires or the source ends for good.
    fn run(self, ctx: FeedContext) -> impl Future<Output = Result<(), FeedError>> + Send;
}

/// A feed kind's own settings (the keys of a `[[feeds]]` entry besides the
/// common ones), which build its adapter.
pub trait AdapterSettings {
    type Adapter: FeedAdapter;

    /// True for a kind that brings quotes from the bus (they are not published
    /// back to it).
    const FROM_BUS: bool = false;

    /// Checks what the types cannot.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }

    /// Builds the adapter; called again for every reconnect.
    fn build(&self, ctx: &FeedContext) -> Result<Self::Adapter, FeedError>;
}

/// A bad feed setting: its key within the `[[feeds]]` entry and what is wrong.
#[derive(Debug)]
pub struct Invalid {
    pub key: &'static str,
    pub problem: String,
}

impl Invalid {
    pub fn new(key: &'static str, problem: impl Into<String>) -> Invalid {
        Invalid {
            key,
            problem: problem.into(),
        }
    }
}
