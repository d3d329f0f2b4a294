//! Which feed is a symbol's source (PROTOCOL.md section 10): of the feeds that
//! cover it (have published it), the highest-priority live one. None live: the
//! symbol is stale.
//!
//! Feeds are ranked once, at start-up: rank 0 has the highest priority (ties go
//! to the feed configured first). A symbol's covering feeds and the live feeds
//! are bit sets by rank, so its source is the lowest bit of their intersection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A feed's place in the priority order: its bit in the sets below.
pub type FeedRank = u8;

/// Most feeds that take part in source selection (one bit each).
pub const MAX_RANKED_FEEDS: usize = 64;

/// The ranked feeds and which of them are live.
pub struct Sources {
    /// Feed names by rank.
    names: Vec<Arc<str>>,
    /// One bit per live feed.
    live: AtomicU64,
    /// Source changes from one feed to another (counted for the metrics).
    failovers: AtomicU64,
}

impl Sources {
    /// Ranks `feeds` (name, priority) and returns each one's rank, in their
    /// order. Feeds beyond [`MAX_RANKED_FEEDS`] are refused by the settings.
    pub fn new(feeds: &[(&str, i32)]) -> (Sources, Vec<FeedRank>) {
        let mut order: Vec<usize> = (0..feeds.len().min(MAX_RANKED_FEEDS)).collect();
        // Stable: equal priorities keep their configured order.
        order.sort_by_key(|&i| std::cmp::Reverse(feeds[i].1));
        let mut ranks = vec![0; feeds.len()];
        for (rank, &i) in order.iter().enumerate() {
            ranks[i] = rank as FeedRank;
        }
        let names = order.iter().map(|&i| Arc::from(feeds[i].0)).collect();
        let sources = Sources {
            names,
            live: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
        };
        (sources, ranks)
    }

    /// The feed's name.
    pub fn name(&self, rank: FeedRank) -> &Arc<str> {
        &self.names[rank as usize]
    }

    pub fn is_live(&self, rank: FeedRank) -> bool {
        self.live.load(Ordering::Acquire) & bit(rank) != 0
    }

    /// Marks the feed live or not; true when that changed.
    pub(super) fn set_live(&self, rank: FeedRank, live: bool) -> bool {
        // Called for every quote a ranked feed brings: a read, not a write to
        // the shared word, when nothing changes.
        if self.is_live(rank) == live {
            return false;
        }
        let was = if live {
            self.live.fetch_or(bit(rank), Ordering::AcqRel)
        } else {
            self.live.fetch_and(!bit(rank), Ordering::AcqRel)
        };
        (was & bit(rank) != 0) != live
    }

    /// The source among `covered` feeds, with `also` counted live (a feed that
    /// is publishing right now).
    pub(super) fn best(&self, covered: u64, also: u64) -> Option<FeedRank> {
        let live = covered & (self.live.load(Ordering::Acquire) | also);
        (live != 0).then(|| live.trailing_zeros() as FeedRank)
    }

    pub(super) fn count_failover(&self) {
        self.failovers.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times a symbol's source moved from one feed to another.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }
}

impl Default for Sources {
    /// No ranked feeds: every update is taken as it comes.
    fn default() -> Self {
        Sources::new(&[]).0
    }
}

/// The bit of a rank in a feed set.
pub fn bit(rank: FeedRank) -> u64 {
    1 << rank
}

/// Why a symbol is stale and since when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    /// Milliseconds since the Unix epoch.
    pub since: i64,
    pub reason: Arc<str>,
}

/// A symbol's status as clients are told it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolStatus {
    /// Moves on with each change a client is told of (turning stale, turning
    /// live, another source while live); the first source a symbol gets is
    /// not news.
    pub version: u64,
    /// Set while no live feed covers the symbol.
    pub stale: Option<Stale>,
    /// The feed now in use.
    pub feed: Option<Arc<str>>,
    /// Its rank (what [`Told`] keeps of it).
    pub rank: Option<FeedRank>,
}

/// What a client was last told of a symbol's status: enough to decide
/// whether a newer status is news to it, in 6 bytes (a session keeps one per
/// subscription). The version is kept modulo 2^16: a session looks at a
/// symbol's status each time it changes, never 65,536 changes later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Told {
    version: u16,
    stale: bool,
    rank: Option<FeedRank>,
}

impl Told {
    /// True when a client told `self` must be told `newer`.
    pub fn differs_for_client(self, newer: &SymbolStatus) -> bool {
        newer.version as u16 != self.version
            && (self.stale != newer.is_stale() || self.rank != newer.rank)
    }
}

impl SymbolStatus {
    pub fn is_stale(&self) -> bool {
        self.stale.is_some()
    }

    /// What a client told this status keeps of it.
    pub fn told(&self) -> Told {
        Told {
            version: self.version as u16,
            stale: self.is_stale(),
            rank: self.rank,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_priority_then_order() {
        let (s, ranks) = Sources::new(&[("backup", 1), ("primary", 10), ("spare", 1)]);
        assert_eq!(ranks, [1, 0, 2]);
        assert_eq!(&**s.name(0), "primary");
        let covered = bit(0) | bit(1);
        assert_eq!(s.best(covered, 0), None, "nobody live");
        assert!(s.set_live(1, true));
        assert!(!s.set_live(1, true), "no change");
        assert_eq!(s.best(covered, 0), Some(1));
        assert_eq!(s.best(covered, bit(0)), Some(0), "a publishing feed counts");
        assert!(s.set_live(0, true));
        assert_eq!(s.best(covered, 0), Some(0));
        assert_eq!(s.best(bit(2), 0), None);
        assert!(s.set_live(0, false));
        assert_eq!(s.best(covered, 0), Some(1));
    }

    #[test]
    fn a_flap_that_ends_where_it_began_is_not_news() {
        let told = SymbolStatus::default().told();
        let stale = SymbolStatus {
            version: 1,
            stale: Some(Stale {
                since: 1,
                reason: "feed a down".into(),
            }),
            ..SymbolStatus::default()
        };
        assert!(told.differs_for_client(&stale));
        let back = SymbolStatus {
            version: 3,
            stale: Some(Stale {
                since: 2,
                reason: "feed a down".into(),
            }),
            ..SymbolStatus::default()
        };
        assert!(!stale.told().differs_for_client(&back));
        let adopted = SymbolStatus {
            feed: Some("a".into()),
            rank: Some(0),
            ..SymbolStatus::default()
        };
        assert!(!told.differs_for_client(&adopted), "same version");
        let moved = SymbolStatus {
            version: 65_536 + 4,
            feed: Some("b".into()),
            rank: Some(1),
            ..SymbolStatus::default()
        };
        assert!(adopted.told().differs_for_client(&moved), "another feed");
        let back_on_a = SymbolStatus {
            version: 65_536 + 6,
            ..adopted.clone()
        };
        assert!(!adopted.told().differs_for_client(&back_on_a));
        assert!(moved.told().differs_for_client(&back_on_a));
    }
}
