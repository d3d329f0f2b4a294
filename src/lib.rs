//! ticker-gateway: a live stock-ticker push gateway.
//!
//! Feed adapters publish quotes into the hub; each client has a session that keeps
//! only its symbols, throttles and conflates them, and pushes deltas over a
//! transport. Layout:
//!
//! - [`settings`]: typed, layered settings (`config/default.toml`, overlay, env);
//!   [`duration`]: how they write durations; [`lend`]: a thread's buffers lent
//!   to per-frame work.
//! - [`universe`]: the symbol universe file.
//! - [`quote`]: quotes, exact decimal prices, deltas, pre-encoded wire entries.
//! - [`feeds`]: feed adapters (`sim`, `replay`, `nats`, `alpaca`, `ticker`) behind
//!   one trait, supervised with [`backoff`]; each publishes through its context and
//!   may follow demand.
//! - [`bus`]: several gateways on NATS: the wire format, the order rule for bus
//!   messages, the last-value stream, the `[publish]` publisher.
//! - [`hub`]: symbol interning (a universe that may grow), latest quote and `seq`
//!   per symbol, per-symbol fan-out (a session's inbox, each worker's doorbell),
//!   the symbols sessions want.
//! - [`auth`]: who may connect and what they may see: API keys, JWT, tickets,
//!   entitlement patterns and per-principal limits.
//! - [`tls`]: `[tls]`: the certificate (reloadable) and the acceptor settings.
//! - [`session`]: the transport-independent session core and the ticker.v1 messages.
//! - [`transport`]: WebSocket ticker.v1 (JSON / MessagePack), Server-Sent Events
//!   and long-polling on a narrow [`transport::TransportContext`]. A streaming
//!   transport is a socket ([`transport::socket`]: a WebSocket the gateway owns
//!   after actix-http hands over the upgraded connection, or an SSE response
//!   body) plus a wire protocol, run by the one [`transport::driver`]; each
//!   worker's delivery loop writes quotes to its WebSockets; close codes in
//!   [`transport::close`].
//! - [`http`]: the JSON error type, the symbol/quote API, health, metrics, and
//!   the OpenAPI and AsyncAPI documents.
//! - [`metrics`]: Prometheus metrics.
//! - [`shutdown`]: the one shutdown signal; [`open_files`]: the descriptor limit.
//! - [`app`]: [`app::Application`], which wires it all and shuts down gracefully;
//!   [`reload`]: what SIGHUP changes while it runs (keys, certificate).
//!
//! Dependencies point one way: `app` → `transport` → `http` → `feeds`, `hub`,
//! `session` → `auth`, `metrics` …; `settings` → `feeds` → `bus` → `hub` (no module
//! imports one that imports it).

pub mod app;
pub mod auth;
pub mod backoff;
pub mod bus;
pub mod duration;
pub mod feeds;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod lend;
pub mod metrics;
pub mod open_files;
pub mod quote;
pub mod reload;
pub mod session;
pub mod settings;
pub mod shutdown;
pub mod tls;
pub mod transport;
pub mod universe;
