//! The closed set of feed kinds. A new kind is one line here (its variant, its
//! settings type and its `kind` name); the enum, its serde tag and the dispatch to
//! each kind's [`AdapterSettings`] are generated from that line.

use serde::{Deserialize, Serialize};

use super::{AdapterSettings, FeedAdapter, FeedContext, FeedError, Invalid};
use super::{AlpacaSettings, NatsSettings, ReplaySettings, SimSettings, TickerSettings};

macro_rules! feed_kinds {
    ($($variant:ident($settings:ty) = $kind:literal,)*) => {
        /// A `[[feeds]]` entry's kind (its `kind` key) with that kind's settings.
        #[derive(Clone, Debug, Deserialize, Serialize)]
        #[serde(tag = "kind")]
        pub enum FeedKind {
            $(#[serde(rename = $kind)] $variant($settings),)*
        }

        impl FeedKind {
            /// The `kind` name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(FeedKind::$variant(_) => $kind,)*
                }
            }

            /// True when the kind brings quotes from the bus.
            pub fn from_bus(&self) -> bool {
                match self {
                    $(FeedKind::$variant(_) => <$settings as AdapterSettings>::FROM_BUS,)*
                }
            }

            /// Checks the kind's own settings.
            pub fn validate(&self) -> Result<(), Invalid> {
                match self {
                    $(FeedKind::$variant(s) => s.validate(),)*
                }
            }

            /// Builds the adapter and runs it once.
            pub(super) async fn run(&self, ctx: FeedContext) -> Result<(), FeedError> {
                match self {
                    $(FeedKind::$variant(s) => s.build(&ctx)?.run(ctx).await,)*
                }
            }
        }
    };
}

feed_kinds! {
    Sim(SimSettings) = "sim",
    Replay(ReplaySettings) = "replay",
    Nats(NatsSettings) = "nats",
    Alpaca(AlpacaSettings) = "alpaca",
    Ticker(TickerSettings) = "ticker",
}
