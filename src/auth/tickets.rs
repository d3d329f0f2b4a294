//! Single-use tickets (`POST /api/v1/tickets`): browsers' `EventSource` and
//! WebSocket cannot send headers, so a client with a credential trades it for a
//! short-lived ticket that goes in the URL (`?ticket=`) and works once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::keys::{random_secret, sha256};
use super::principal::Principal;

/// How long a ticket is good for.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Most tickets waiting at once; beyond it the oldest unused ones are not kept.
const MAX_TICKETS: usize = 100_000;

/// The tickets not yet used, by the SHA-256 of the ticket (a lookup's timing
/// then tells nothing about the ticket itself).
#[derive(Default)]
pub struct Tickets {
    waiting: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Tickets {
    /// A new ticket for `principal`, good for [`TICKET_TTL`] from `now`.
    pub fn issue(&self, principal: Principal, now: Instant) -> String {
        let ticket = random_secret("tt_");
        let mut waiting = self.waiting.lock();
        if waiting.len() >= MAX_TICKETS / 2 {
            waiting.retain(|_, (_, until)| *until > now);
        }
        if waiting.len() >= MAX_TICKETS {
            // Memory stays bounded: a flood of unused tickets loses its oldest.
            if let Some(oldest) = waiting.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                waiting.remove(&oldest);
            }
        }
        waiting.insert(sha256(ticket.as_bytes()), (principal, now + TICKET_TTL));
        ticket
    }

    /// The principal of `ticket` if it is waiting and fresh; it is used up either way.
    pub fn redeem(&self, ticket: &str, now: Instant) -> Option<Principal> {
        let (principal, until) = self.waiting.lock().remove(&sha256(ticket.as_bytes()))?;
        (until > now).then_some(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once_and_only_while_fresh() {
        let tickets = Tickets::default();
        let now = Instant::now();
        let t = tickets.issue(Principal::restricted("a", vec![]), now);
        assert!(tickets.redeem("tt_other", now).is_none());
        assert_eq!(tickets.redeem(&t, now).unwrap().sub(), Some("a"));
        assert!(tickets.redeem(&t, now).is_none(), "single use");
        let stale = tickets.issue(Principal::restricted("b", vec![]), now);
        assert!(tickets.redeem(&stale, now + TICKET_TTL).is_none());
    }
}
