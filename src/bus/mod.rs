//! The bus: several gateways behind one market over NATS (PROTOCOL.md section
//! 11). A publisher ([`Publisher`], the `[publish]` settings) republishes every
//! quote its own feeds accept as a full, numbered quote; edges follow the bus
//! with a `nats` feed. This module holds what both sides share: the wire format
//! ([`wire`]), the order rule that drops repeats ([`BusOrder`]), the last-value
//! stream ([`LastValues`]) and the connection ([`connect`]).

mod connect;
mod lastvalue;
mod order;
mod outbox;
mod publisher;
pub mod wire;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use connect::connect;
pub use lastvalue::LastValues;
pub use order::{BusOrder, Verdict};
pub use outbox::Outbox;
pub use publisher::Publisher;

/// What can go wrong with the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to {url}: {problem}")]
    Connect { url: String, problem: String },
    #[error("last-value stream {stream}: {problem}")]
    Stream { stream: String, problem: String },
}

/// `[publish]`: republish the quotes this gateway's own feeds accept.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishSettings {
    /// The NATS server; empty: publish nothing.
    pub url: String,
    /// The publisher's name on the bus; `pub` is this plus a suffix drawn at
    /// start-up, so a restarted publisher is never taken for its former self.
    pub id: String,
    /// The JetStream last-value stream; empty: none.
    pub stream: String,
    /// Create `stream` if it does not exist.
    pub create_stream: bool,
    /// How long start-up waits for the bus (to continue `seq` from the
    /// last-value stream) before the feeds start anyway.
    #[serde(with = "crate::duration")]
    pub start_timeout: Duration,
}

impl Default for PublishSettings {
    fn default() -> Self {
        PublishSettings {
            url: String::new(),
            id: "gateway".into(),
            stream: String::new(),
            create_stream: false,
            start_timeout: Duration::from_secs(5),
        }
    }
}

impl PublishSettings {
    /// True when this gateway publishes.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}
