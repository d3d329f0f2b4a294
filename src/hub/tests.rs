//! The hub's unit tests: fan-out, demand, growth, `seq`, and sources.

use super::*;
use crate::universe::parse;

fn hub() -> Hub {
    Hub::new(parse("h\nAAA\tA\t1.00\t0.01\tsim\nBBB\tB\t2.00\t0.01\tsim\n").unwrap())
}

fn upd(sym: &str, json: &str) -> QuoteUpdate {
    let mut u: QuoteUpdate = serde_json::from_str(json).unwrap();
    u.sym = sym.into();
    u
}

#[test]
fn ingest_merges_and_counts_seq_per_symbol() {
    let h = hub();
    h.ingest(&upd("AAA", r#"{"sym":"","t":1,"bp":"1.00","bs":100}"#))
        .unwrap();
    let seq = h
        .ingest(&upd("AAA", r#"{"sym":"","t":2,"bs":200}"#))
        .unwrap();
    assert_eq!(seq, 2);
    let q = h.latest(0).unwrap();
    assert_eq!(&*q.sym, "AAA");
    assert_eq!(q.fields.bp.unwrap().to_string(), "1.00");
    assert_eq!(q.fields.bs, Some(200));
    assert_eq!(q.t, 2);
    assert_eq!(h.ingest(&upd("BBB", r#"{"sym":"","t":1}"#)).unwrap(), 1);
    assert_eq!(
        h.ingest(&upd("ZZZ", r#"{"sym":"","t":1}"#)),
        Err(IngestError::UnknownSymbol("ZZZ".into()))
    );
}

#[test]
fn fanout_marks_each_subscriber_once_until_drained() {
    let h = hub();
    let inbox = Arc::new(Inbox::new(64));
    h.subscribe(0, 7, &inbox);
    for t in 0..5 {
        h.ingest(&upd("AAA", &format!(r#"{{"sym":"","t":{t}}}"#)))
            .unwrap();
    }
    h.ingest(&upd("BBB", r#"{"sym":"","t":1}"#)).unwrap();
    let mut dirty = Vec::new();
    inbox.take(&[], |slot| dirty.push(slot));
    assert_eq!(dirty, vec![7]);
    h.unsubscribe(0, 7, &inbox);
    h.ingest(&upd("AAA", r#"{"sym":"","t":9}"#)).unwrap();
    dirty.clear();
    inbox.take(&[], |slot| dirty.push(slot));
    assert!(dirty.is_empty());
    assert_eq!(h.subscribers(0), 0);
}

#[test]
fn demand_follows_the_first_and_last_subscriber() {
    let h = hub();
    let mut changes = h.demand().changes();
    let (a, b) = (Arc::new(Inbox::new(64)), Arc::new(Inbox::new(64)));
    h.subscribe(1, 0, &a);
    h.subscribe(1, 3, &b);
    assert_eq!(h.demand().wanted(), [1]);
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
    h.unsubscribe(1, 0, &a);
    assert!(!changes.has_changed().unwrap(), "one subscriber left");
    h.unsubscribe(1, 3, &b);
    assert!(h.demand().wanted().is_empty());
    assert!(changes.has_changed().unwrap());
}

#[test]
fn the_universe_grows_up_to_its_room() {
    let h = Hub::with_room(parse("h\nAAA\tA\t1.00\t0.01\tsim\n").unwrap(), 2);
    assert_eq!(h.add("AAA", "bus"), Ok(0));
    assert_eq!(h.add("NEW", "bus"), Ok(1));
    assert_eq!(h.add("NEW", "bus"), Ok(1));
    assert_eq!(
        h.add("bad sym", "bus"),
        Err(AddError::Malformed("bad sym".into()))
    );
    assert_eq!(h.add("TWO", "bus"), Ok(2));
    assert_eq!(h.add("MORE", "bus"), Err(AddError::Full(3)));
    assert_eq!(h.len(), 3);
    assert_eq!(h.lookup("TWO"), Some(2));
    let feeds: Vec<_> = h
        .universe()
        .map(|i| (i.sym.as_str(), i.feed.as_str()))
        .collect();
    assert_eq!(feeds, [("AAA", "sim"), ("NEW", "bus"), ("TWO", "bus")]);
    h.ingest(&upd("NEW", r#"{"sym":"","t":1,"bp":"1.5"}"#))
        .unwrap();
    assert_eq!(h.latest(1).unwrap().seq, 1);
}

#[test]
fn a_numbered_update_adopts_a_higher_seq_and_never_goes_back() {
    let h = hub();
    let f = Fields::default();
    assert_eq!(h.ingest_numbered(0, 1, &f, Some(40)), 40);
    assert_eq!(
        h.ingest_numbered(0, 2, &f, Some(7)),
        41,
        "lower: the next one"
    );
    assert_eq!(h.ingest_numbered(0, 3, &f, None), 42);
    assert_eq!(h.ingest_numbered(0, 4, &f, Some(50)), 50);
}

/// A hub over AAA and BBB with feeds "primary" (priority 2) and "backup" (1).
fn ranked_hub() -> (Hub, FeedRank, FeedRank) {
    let (sources, ranks) = Sources::new(&[("backup", 1), ("primary", 2)]);
    (hub().with_sources(sources), ranks[1], ranks[0])
}

fn bid(h: &Hub, id: SymbolId) -> String {
    h.latest(id).unwrap().fields.bp.unwrap().to_string()
}

fn fields(bp: &str) -> Fields {
    serde_json::from_str(&format!(r#"{{"bp":"{bp}"}}"#)).unwrap()
}

#[test]
fn the_highest_priority_live_feed_is_the_source_and_the_next_takes_over_without_a_gap() {
    let (h, primary, backup) = ranked_hub();
    let inbox = Arc::new(Inbox::new(64));
    h.subscribe(0, 3, &inbox);
    h.feed_up(backup);
    assert_eq!(h.ingest_from(backup, 0, 1, &fields("1.00"), None), Some(1));
    h.feed_up(primary);
    assert_eq!(h.ingest_from(primary, 0, 2, &fields("2.00"), None), Some(2));
    assert_eq!(h.status(0).feed.as_deref(), Some("primary"));
    assert!(inbox.take_status(), "a new source is news");
    // The backup's quotes are not used while the primary is live.
    assert_eq!(h.ingest_from(backup, 0, 3, &fields("9.99"), None), None);
    assert_eq!(bid(&h, 0), "2.00");

    h.feed_down(primary, "down");
    let status = h.status(0);
    assert_eq!(
        (status.is_stale(), status.feed.as_deref()),
        (false, Some("backup"))
    );
    assert!(inbox.take_status());
    assert_eq!(h.ingest_from(backup, 0, 4, &fields("3.00"), None), Some(3));
    assert_eq!(
        h.sources().failovers(),
        2,
        "backup to primary, primary to backup"
    );

    h.feed_down(backup, "silent for 2s");
    let status = h.status(0);
    let stale = status.stale.as_ref().expect("no live feed: stale");
    assert_eq!(&*stale.reason, "feed backup silent for 2s");
    assert!(h.is_stale(0) && h.stale_count() == 1);
    assert!(inbox.take_status());
    assert!(!inbox.take_status(), "once");

    // The primary's next quote brings it back (no gap in seq).
    h.feed_up(primary);
    assert!(!h.is_stale(0));
    assert_eq!(h.ingest_from(primary, 0, 5, &fields("4.00"), None), Some(4));
    assert_eq!(h.status(0).feed.as_deref(), Some("primary"));
}

#[test]
fn a_first_source_is_not_news_and_uncovered_symbols_never_turn_stale() {
    let (h, primary, _) = ranked_hub();
    let inbox = Arc::new(Inbox::new(64));
    h.subscribe(1, 0, &inbox);
    h.feed_up(primary);
    h.ingest_from(primary, 1, 1, &fields("1.00"), None);
    assert_eq!(h.status(1).version, 0);
    assert!(!inbox.take_status());
    h.feed_down(primary, "down");
    assert!(h.is_stale(1));
    assert!(!h.is_stale(0), "AAA never had a quote from it");
    assert_eq!(h.stale_count(), 1);
}

#[test]
fn the_hub_keeps_a_symbols_last_states_chained_and_no_more() {
    let h = hub();
    for t in 1..=20 {
        h.ingest(&upd("AAA", &format!(r#"{{"sym":"","t":{t},"bs":{t}}}"#)))
            .expect("AAA is in the universe");
    }
    let mut chain = vec![h.latest(0).expect("AAA has quotes")];
    while let Some(q) = chain[chain.len() - 1].previous() {
        chain.push(q);
    }
    let seqs: Vec<u64> = chain.iter().map(|q| q.seq).collect();
    assert_eq!(seqs, (13..=20).rev().collect::<Vec<_>>());
    assert_eq!(chain.len(), HISTORY);
}
