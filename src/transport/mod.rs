//! Transports: thin adapters between a client connection and the session core.
//! Each turns client input into session ops and session output into frames:
//! WebSocket (`ws`), Server-Sent Events (`sse`) and long-polling (`poll`).

mod clock;
pub mod close;
mod counters;
pub mod poll;
mod ratelimit;
pub mod sse;
pub mod ws;

pub use clock::WriteClock;
pub use close::{CloseCode, Ended};
pub use counters::FrameCounters;
pub use ratelimit::{Admission, TokenBucket};
