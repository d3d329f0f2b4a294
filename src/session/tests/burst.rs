//! A client that keeps up gets every update (each its own delta) as far as its
//! rate allows; one that fell behind gets the latest state merged.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::sync::Arc;

use super::{feed, setup, sub, take};
use crate::hub::Hub;
use crate::session::Session;

/// A session subscribed to AAA at `rate`, its snapshot taken.
fn subscribed(rate: f64) -> (Arc<Hub>, Session, Instant) {
    let (hub, mut s) = setup();
    let t0 = Instant::now();
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00","bs":100}));
    sub(&mut s, &["AAA"], rate, t0);
    take(&mut s, t0);
    (hub, s, t0)
}

fn seqs(msgs: &[Value]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m["seq"].as_u64().expect("every quote message has a seq"))
        .collect()
}

#[test]
fn a_client_that_keeps_up_gets_every_update_with_its_own_delta() {
    let (hub, mut s, t0) = subscribed(50.0);
    // Three quotes arrive while the session's last frame is still going out.
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.01"}));
    feed(&hub, json!({"sym":"AAA","t":3,"bs":500}));
    feed(&hub, json!({"sym":"AAA","t":4,"bp":"1.00"}));
    let msgs = take(&mut s, t0 + Duration::from_millis(100));
    assert_eq!(
        msgs,
        vec![
            json!({"type":"update","sym":"AAA","seq":2,"t":2,"bp":"1.01"}),
            json!({"type":"update","sym":"AAA","seq":3,"t":3,"bs":500}),
            json!({"type":"update","sym":"AAA","seq":4,"t":4,"bp":"1.00"}),
        ]
    );
    // Three messages: the next one waits three spacings (20 ms each at 50/s).
    feed(&hub, json!({"sym":"AAA","t":5,"bs":7}));
    assert!(take(&mut s, t0 + Duration::from_millis(159)).is_empty());
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(160)));
    assert_eq!(seqs(&take(&mut s, t0 + Duration::from_millis(160))), [5]);
}

#[test]
fn a_burst_is_bounded_by_the_rate_and_older_states_are_merged_into_its_first() {
    let (hub, mut s, t0) = subscribed(50.0);
    for t in 2..=12 {
        feed(&hub, json!({"sym":"AAA","t":t,"bs":t}));
    }
    // At 50/s a burst holds at most 1 + 100 ms / 20 ms = 6 messages.
    let msgs = take(&mut s, t0 + Duration::from_millis(500));
    assert_eq!(seqs(&msgs), [7, 8, 9, 10, 11, 12]);
    assert_eq!(
        msgs[0]["bs"], 7,
        "the first carries what the merged ones changed"
    );
    assert_eq!(msgs[5]["bs"], 12);
}

#[test]
fn below_ten_per_second_updates_merge_as_the_throttle_always_did() {
    let (hub, mut s, t0) = subscribed(5.0);
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.01"}));
    feed(&hub, json!({"sym":"AAA","t":3,"bs":9}));
    let msgs = take(&mut s, t0 + Duration::from_millis(900));
    assert_eq!(
        msgs,
        vec![json!({"type":"update","sym":"AAA","seq":3,"t":3,"bp":"1.01","bs":9})]
    );
}

#[test]
fn a_client_that_fell_behind_gets_the_latest_state_not_the_history() {
    let (hub, mut s, t0) = subscribed(50.0);
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.01"}));
    feed(&hub, json!({"sym":"AAA","t":3,"bs":500}));
    // More than a second later (its socket was full, say): one merged delta.
    let msgs = take(&mut s, t0 + Duration::from_secs(2));
    assert_eq!(
        msgs,
        vec![json!({"type":"update","sym":"AAA","seq":3,"t":3,"bp":"1.01","bs":500})]
    );
}
