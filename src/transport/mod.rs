//! Transports: thin adapters between a client connection and the session core.
//! Each turns client input into session ops and session output into frames.

mod ratelimit;
pub mod ws;

pub use ratelimit::{Admission, TokenBucket};
