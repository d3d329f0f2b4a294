//! [`BusOrder`]: which bus messages are new. A publisher numbers its quotes per
//! symbol; a message whose (`pub`, `seq`) was seen before is a duplicate, one
//! whose `seq` is below the last seen from the same publisher arrived out of
//! order. Both are dropped. A message from another publisher, or without a
//! number, is new: the hub then adopts its `seq` or assigns the next one
//! ([`Hub::ingest_numbered`](crate::hub::Hub::ingest_numbered)).

use std::collections::HashMap;
use std::sync::Arc;

use crate::hub::SymbolId;

/// What to do with one bus message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    New,
    Duplicate,
    OutOfOrder,
}

impl Verdict {
    /// The reason a dropped message is counted under.
    pub fn reason(self) -> &'static str {
        match self {
            Verdict::New => "new",
            Verdict::Duplicate => "duplicate",
            Verdict::OutOfOrder => "out_of_order",
        }
    }
}

/// The last numbered message taken per symbol.
#[derive(Default)]
pub struct BusOrder {
    last: HashMap<SymbolId, (Arc<str>, u64)>,
}

impl BusOrder {
    /// Judges a message and, when it is new, remembers its number.
    pub fn check(&mut self, id: SymbolId, publisher: Option<&str>, seq: Option<u64>) -> Verdict {
        let Some(seq) = seq else {
            return Verdict::New;
        };
        let publisher = publisher.unwrap_or("");
        match self.last.get_mut(&id) {
            Some((p, last)) if &**p == publisher => {
                if seq == *last {
                    Verdict::Duplicate
                } else if seq < *last {
                    Verdict::OutOfOrder
                } else {
                    *last = seq;
                    Verdict::New
                }
            }
            Some(entry) => {
                *entry = (Arc::from(publisher), seq);
                Verdict::New
            }
            None => {
                self.last.insert(id, (Arc::from(publisher), seq));
                Verdict::New
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_and_late_arrivals_of_one_publisher_are_dropped() {
        let mut o = BusOrder::default();
        let a = Some("a");
        assert_eq!(o.check(1, a, Some(5)), Verdict::New);
        assert_eq!(o.check(1, a, Some(5)), Verdict::Duplicate);
        assert_eq!(o.check(1, a, Some(4)), Verdict::OutOfOrder);
        assert_eq!(o.check(2, a, Some(4)), Verdict::New, "per symbol");
        assert_eq!(o.check(1, a, Some(7)), Verdict::New, "gaps are fine");
        assert_eq!(o.check(1, None, None), Verdict::New, "unnumbered");
        assert_eq!(
            o.check(1, Some("b"), Some(1)),
            Verdict::New,
            "another publisher"
        );
        assert_eq!(o.check(1, Some("b"), Some(1)), Verdict::Duplicate);
        assert_eq!(o.check(1, a, Some(7)), Verdict::New, "a again, after b");
    }
}
