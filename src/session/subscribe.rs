//! A session's subscribe and unsubscribe ops: which symbols it may have (known,
//! entitled, within its limits), at what rate, with what first message
//! (snapshot, or the state a resuming client missed), and leaving them.

use std::time::Instant;

use super::deliver::snapshot_msg;
use super::protocol::{ErrorCode, RequestId, ServerMsg};
use super::subscriptions::{self, Subscription};
use super::Session;
use crate::hub::SymbolId;

/// Error lists name at most this many symbols (the count is in the message).
const MAX_LISTED_SYMBOLS: usize = 100;

impl Session {
    fn report_unknown(&mut self, id: &RequestId, unknown: Vec<String>) {
        if unknown.is_empty() {
            return;
        }
        let message = if unknown.len() == 1 {
            format!("unknown symbol: {}", unknown[0])
        } else {
            format!("{} unknown symbols: {}", unknown.len(), summary(&unknown))
        };
        let listed = unknown.into_iter().take(MAX_LISTED_SYMBOLS).collect();
        self.push_error(id.clone(), ErrorCode::UnknownSymbol, message, Some(listed));
    }

    pub(super) fn subscribe(
        &mut self,
        id: RequestId,
        symbols: Vec<String>,
        max_rate: Option<f64>,
        snapshot: bool,
        resume: &[(String, u64)],
        now: Instant,
    ) {
        let (mut ids, unknown) = self.hub.resolve(symbols.iter().map(String::as_str));
        let mut forbidden = Vec::new();
        ids.retain(|&sym| {
            let name = self.hub.symbol(sym);
            let allowed = self.access.principal().is_some_and(|p| p.may_see(name));
            if !allowed {
                forbidden.push(name.to_string());
            }
            allowed
        });
        let rate = subscriptions::granted_rate(
            max_rate
                .unwrap_or(self.limits.default_rate)
                .clamp(self.limits.min_rate, self.limits.max_rate),
        );
        let mut room = self.limits.max_symbols.saturating_sub(self.subs.len());
        let mut granted = Vec::new();
        let mut refused = Vec::new();
        for sym in ids {
            if !self.subs.contains(sym) {
                if room == 0 {
                    refused.push(self.hub.symbol(sym).to_string());
                    continue;
                }
                room -= 1;
                // There are `max_symbols` slots, so one is free within the limit.
                let slot = self.subs.free_slot();
                debug_assert!((slot as usize) < self.inbox.slots());
                self.hub.subscribe(sym, slot, &self.inbox);
                self.metrics.subscriptions_active.inc();
                let told = self.hub.status(sym).told();
                self.subs.insert(slot, Subscription::new(sym, rate, told));
            }
            granted.push(sym);
        }
        self.subs.trim();
        self.report_unknown(&id, unknown);
        if !forbidden.is_empty() {
            self.metrics
                .entitlement_refusals
                .inc_by(forbidden.len() as u64);
            let message = format!("not entitled to {}", summary(&forbidden));
            forbidden.truncate(MAX_LISTED_SYMBOLS);
            self.push_error(id.clone(), ErrorCode::NotEntitled, message, Some(forbidden));
        }
        if !granted.is_empty() {
            self.outbox.push(ServerMsg::Subscribed {
                id: id.clone(),
                symbols: granted
                    .iter()
                    .map(|s| self.hub.symbol(*s).clone())
                    .collect(),
                max_rate: rate,
            });
        }
        if !refused.is_empty() {
            let message = format!(
                "subscription limit is {} symbols; not subscribed: {}",
                self.limits.max_symbols,
                summary(&refused)
            );
            refused.truncate(MAX_LISTED_SYMBOLS);
            self.push_error(id, ErrorCode::TooManySymbols, message, Some(refused));
        }
        for sym in granted {
            let latest = self.hub.latest(sym);
            let status = self.hub.status(sym);
            let sub = self.subs.get_mut(sym).expect("unwrap: subscribed above");
            sub.set_rate(rate);
            let name = self.hub.symbol(sym);
            let current = latest.as_ref().map(|q| q.seq);
            let resumed = current.is_some()
                && resume
                    .iter()
                    .any(|(s, seq)| **s == **name && Some(*seq) == current);
            match latest {
                Some(quote) if snapshot && !resumed => {
                    sub.sent = Some(quote.clone());
                    sub.sent_at(now, 1);
                    self.outbox.push(snapshot_msg(
                        quote,
                        self.limits.ingest_stamp,
                        status.is_stale(),
                    ));
                }
                latest => {
                    if resumed {
                        // The client has this state already (section 12): later
                        // updates are deltas from it.
                        sub.sent = latest;
                        sub.sent_at(now, 1);
                    } else if !snapshot && sub.sent.is_none() {
                        // No snapshot wanted: later updates are deltas from the
                        // current state.
                        sub.sent = latest;
                    }
                    // No snapshot says it: a stale symbol gets its status.
                    if status.is_stale() {
                        self.outbox.push(ServerMsg::Status {
                            sym: name.clone(),
                            status: status.clone(),
                        });
                    }
                }
            }
            sub.told = status.told();
        }
    }

    pub(super) fn unsubscribe(&mut self, id: RequestId, symbols: Vec<String>) {
        let (ids, unknown) = self.hub.resolve(symbols.iter().map(String::as_str));
        self.report_unknown(&id, unknown);
        if ids.is_empty() {
            return;
        }
        for sym in &ids {
            self.drop_subscription(*sym);
        }
        self.subs.trim();
        self.outbox.push(ServerMsg::Unsubscribed {
            id,
            symbols: ids.iter().map(|s| self.hub.symbol(*s).clone()).collect(),
            reason: None,
        });
    }

    pub(super) fn drop_subscription(&mut self, sym: SymbolId) {
        if let Some((slot, _)) = self.subs.remove(sym) {
            self.hub.unsubscribe(sym, slot, &self.inbox);
            self.metrics.subscriptions_active.dec();
            // The hub marks it no more: the slot is clean for its next symbol.
            self.inbox.unmark(slot);
            if let Some(held) = &mut self.held {
                held.release(slot);
            }
        }
    }
}

/// "A, B, C and 997 more".
fn summary(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let head = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        format!("{head} and {} more", names.len() - SHOWN)
    } else {
        head
    }
}
