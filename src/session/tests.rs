//! Session core tests: time is passed in, so throttling is tested without sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::protocol::{ClientOp, Format};
use super::{Access, AuthEnd, Principal, Session, SessionConfig};
use crate::auth::{Admitted, AuthSettings, Authenticator};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::quote::QuoteUpdate;
use crate::universe::parse;

fn setup() -> (Arc<Hub>, Session) {
    setup_with(Access::open())
}

fn setup_with(access: Access) -> (Arc<Hub>, Session) {
    setup_over(crate::hub::Sources::default(), access)
}

fn setup_over(sources: crate::hub::Sources, access: Access) -> (Arc<Hub>, Session) {
    let hub = Arc::new(
        Hub::new(
            parse("h\nAAA\tA\t1.00\t0.01\tsim\nBBB\tB\t2.00\t0.01\tsim\nCCC\tC\t3.00\t0.01\tsim\n")
                .unwrap(),
        )
        .with_sources(sources),
    );
    let s = session_on(&hub, access);
    (hub, s)
}

fn session_on(hub: &Arc<Hub>, access: Access) -> Session {
    let limits = SessionConfig {
        max_symbols: 2,
        default_rate: 10.0,
        min_rate: 0.5,
        max_rate: 50.0,
        ingest_stamp: false,
    };
    Session::new(
        hub.clone(),
        Arc::new(Metrics::new()),
        limits,
        Format::Json,
        access,
    )
}

fn feed(hub: &Hub, json: Value) {
    let u: QuoteUpdate = serde_json::from_value(json).unwrap();
    hub.ingest(&u).unwrap();
}

fn take(s: &mut Session, now: Instant) -> Vec<Value> {
    s.take_ready(now)
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect()
}

fn sub(s: &mut Session, syms: &[&str], rate: f64, now: Instant) {
    s.handle_op(
        ClientOp::Subscribe {
            id: Some(json!(1)),
            symbols: syms.iter().map(|x| x.to_string()).collect(),
            max_rate: Some(rate),
            snapshot: true,
            resume: vec![],
        },
        now,
    );
}

fn unsub(s: &mut Session, syms: &[&str], now: Instant) {
    s.handle_op(
        ClientOp::Unsubscribe {
            id: None,
            symbols: syms.iter().map(|x| x.to_string()).collect(),
        },
        now,
    );
}

#[test]
fn welcome_then_subscribed_then_snapshot_then_deltas() {
    let (hub, mut s) = setup();
    let t0 = Instant::now();
    feed(
        &hub,
        json!({"sym":"AAA","t":1,"bp":"1.00","bs":100,"ap":"1.01","as":200}),
    );
    sub(&mut s, &["AAA"], 10.0, t0);
    let msgs = take(&mut s, t0);
    assert_eq!(msgs[0]["type"], "welcome");
    assert_eq!(
        msgs[1],
        json!({"type":"subscribed","id":1,"symbols":["AAA"],"max_rate":10})
    );
    assert_eq!(
        msgs[2],
        json!({"type":"snapshot","sym":"AAA","seq":1,"t":1,"bp":"1.00","bs":100,"ap":"1.01","as":200})
    );
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.00","bs":300}));
    let msgs = take(&mut s, t0 + Duration::from_millis(100));
    assert_eq!(
        msgs,
        vec![json!({"type":"update","sym":"AAA","seq":2,"t":2,"bs":300})]
    );
}

#[test]
fn throttle_conflates_into_one_delta_with_every_changed_field() {
    let (hub, mut s) = setup();
    let t0 = Instant::now();
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00","bs":100}));
    sub(&mut s, &["AAA"], 2.0, t0);
    take(&mut s, t0);
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.01"}));
    feed(&hub, json!({"sym":"AAA","t":3,"bs":500}));
    feed(&hub, json!({"sym":"AAA","t":4,"lp":"1.02"}));
    // Inside the 500 ms interval: nothing yet, one pending state.
    assert!(take(&mut s, t0 + Duration::from_millis(100)).is_empty());
    let due = s.next_deadline().unwrap();
    assert_eq!(due, t0 + Duration::from_millis(500));
    assert!(!s.has_ready(t0 + Duration::from_millis(499)));
    let msgs = take(&mut s, due);
    assert_eq!(
        msgs,
        vec![json!({"type":"update","sym":"AAA","seq":4,"t":4,"bp":"1.01","bs":500,"lp":"1.02"})]
    );
}

#[test]
fn a_throttled_symbol_does_not_wake_the_session_for_every_quote() {
    let (hub, mut s) = setup();
    let t0 = Instant::now();
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00"}));
    sub(&mut s, &["AAA"], 1.0, t0);
    take(&mut s, t0);
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.01"}));
    assert!(
        s.inbox().has_dirty(),
        "a change while not throttled marks the session"
    );
    assert!(
        take(&mut s, t0 + Duration::from_millis(10)).is_empty(),
        "throttled"
    );
    // While it waits for its throttle, further quotes leave the session alone...
    feed(&hub, json!({"sym":"AAA","t":3,"bp":"1.02"}));
    feed(&hub, json!({"sym":"AAA","t":4,"bs":7}));
    assert!(!s.inbox().has_dirty());
    // ...and the throttle still delivers everything merged.
    let msgs = take(&mut s, t0 + Duration::from_secs(1));
    assert_eq!(
        msgs,
        vec![json!({"type":"update","sym":"AAA","seq":4,"t":4,"bp":"1.02","bs":7})]
    );
    // Once sent, the next change marks the session again.
    feed(&hub, json!({"sym":"AAA","t":5,"bp":"1.03"}));
    assert!(s.inbox().has_dirty());
}

#[test]
fn unsubscribe_silences_pending_state() {
    let (hub, mut s) = setup();
    let t0 = Instant::now();
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00"}));
    sub(&mut s, &["AAA"], 1.0, t0);
    take(&mut s, t0);
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.01"}));
    take(&mut s, t0 + Duration::from_millis(10)); // now throttled
    unsub(&mut s, &["AAA"], t0);
    feed(&hub, json!({"sym":"AAA","t":3,"bp":"1.02"}));
    let msgs = take(&mut s, t0 + Duration::from_secs(5));
    assert_eq!(msgs, vec![json!({"type":"unsubscribed","symbols":["AAA"]})]);
    assert!(s.next_deadline().is_none());
}

#[test]
fn good_and_bad_symbols_and_the_limit() {
    let (_hub, mut s) = setup();
    let t0 = Instant::now();
    take(&mut s, t0);
    sub(&mut s, &["AAA", "ZZZ", "bad sym", "BBB", "CCC"], 100.0, t0);
    let msgs = take(&mut s, t0);
    let types: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["error", "subscribed", "error"]);
    assert_eq!(msgs[0]["code"], "unknown_symbol");
    assert_eq!(msgs[0]["symbols"], json!(["ZZZ", "bad sym"]));
    assert_eq!(msgs[1]["symbols"], json!(["AAA", "BBB"]));
    assert_eq!(msgs[1]["max_rate"], 50, "rate clamped to the maximum");
    assert_eq!(msgs[2]["code"], "too_many_symbols");
    assert_eq!(msgs[2]["symbols"], json!(["CCC"]));
    s.handle_op(
        ClientOp::List {
            id: Some(json!("l")),
        },
        t0,
    );
    assert_eq!(
        take(&mut s, t0)[0],
        json!({"type":"subscriptions","id":"l","symbols":[{"sym":"AAA","max_rate":50},{"sym":"BBB","max_rate":50}]})
    );
}

#[test]
fn first_quote_after_subscribe_is_a_snapshot() {
    let (hub, mut s) = setup();
    let t0 = Instant::now();
    sub(&mut s, &["BBB"], 10.0, t0);
    take(&mut s, t0);
    feed(&hub, json!({"sym":"BBB","t":7,"lp":"2.00"}));
    let msgs = take(&mut s, t0);
    assert_eq!(
        msgs,
        vec![json!({"type":"snapshot","sym":"BBB","seq":1,"t":7,"lp":"2.00"})]
    );
}

#[test]
fn a_slot_given_up_while_throttled_serves_the_next_symbol_cleanly() {
    let (hub, mut s) = setup();
    let t0 = Instant::now();
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00"}));
    sub(&mut s, &["AAA", "BBB"], 1.0, t0);
    take(&mut s, t0);
    // AAA changes within its throttle window: its mark stays set in the inbox.
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.01"}));
    assert!(take(&mut s, t0 + Duration::from_millis(10)).is_empty());
    unsub(&mut s, &["AAA"], t0);
    take(&mut s, t0);
    // CCC takes AAA's slot (the limit is 2 symbols): it hears only its own news.
    sub(&mut s, &["CCC"], 1.0, t0 + Duration::from_secs(2));
    take(&mut s, t0 + Duration::from_secs(2));
    feed(&hub, json!({"sym":"AAA","t":3,"bp":"1.02"}));
    assert!(take(&mut s, t0 + Duration::from_secs(3)).is_empty());
    feed(&hub, json!({"sym":"CCC","t":4,"lp":"3.00"}));
    feed(&hub, json!({"sym":"BBB","t":4,"lp":"2.00"}));
    let msgs = take(&mut s, t0 + Duration::from_secs(4));
    assert_eq!(
        msgs,
        vec![
            json!({"type":"snapshot","sym":"CCC","seq":1,"t":4,"lp":"3.00"}),
            json!({"type":"snapshot","sym":"BBB","seq":1,"t":4,"lp":"2.00"})
        ]
    );
    assert!(s.next_deadline().is_none(), "nothing left throttled");
}

#[test]
fn a_principal_gets_only_the_symbols_it_is_entitled_to() {
    let who = Admitted::anonymous_as(Principal::restricted("desk-7", vec!["A*".into()]));
    let (hub, mut s) = setup_with(Access::admitted(None, who, Instant::now()));
    let t0 = Instant::now();
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00"}));
    feed(&hub, json!({"sym":"BBB","t":1,"bp":"2.00"}));
    take(&mut s, t0);
    sub(&mut s, &["BBB", "AAA"], 10.0, t0);
    let msgs = take(&mut s, t0);
    let types: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["error", "subscribed", "snapshot"]);
    assert_eq!(msgs[0]["code"], "not_entitled");
    assert_eq!(msgs[0]["symbols"], json!(["BBB"]));
    assert_eq!(msgs[1]["symbols"], json!(["AAA"]));
    // Nothing of BBB ever arrives.
    feed(&hub, json!({"sym":"BBB","t":2,"bp":"2.01"}));
    feed(&hub, json!({"sym":"AAA","t":2,"bp":"1.01"}));
    let later = take(&mut s, t0 + Duration::from_secs(1));
    assert!(later.iter().all(|m| m["sym"] == "AAA"), "{later:?}");
    assert_eq!(later.len(), 1);
}

/// An authenticator with one API key for `sub` entitled to `syms`, and an
/// HS256 secret (in an environment variable of its own) for tokens.
fn authenticator(sub: &str, syms: &[&str]) -> (Arc<Authenticator>, String, &'static str) {
    const SECRET_VAR: &str = "TICKER_SESSION_TEST_JWT_SECRET";
    const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
    std::env::set_var(SECRET_VAR, SECRET);
    let syms: Vec<String> = syms.iter().map(|s| s.to_string()).collect();
    let (key, lines) = crate::auth::keygen(sub, &syms);
    let mut settings: AuthSettings = toml::from_str::<toml::Table>(&lines).unwrap()["auth"]
        .clone()
        .try_into()
        .unwrap();
    settings.enabled = true;
    settings.leeway = Duration::ZERO;
    settings.jwt = Some(crate::auth::settings::JwtSettings {
        algorithm: "HS256".into(),
        secret_file: None,
        secret_env: Some(SECRET_VAR.into()),
        public_key_file: None,
        jwks_file: None,
        audience: None,
        issuer: None,
        default_syms: vec![],
    });
    let auth = Authenticator::load(&settings).unwrap().unwrap();
    (Arc::new(auth), key, SECRET)
}

fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn until_authenticated_only_auth_and_ping_are_served() {
    let (auth, key, _) = authenticator("desk-7", &["A*"]);
    let t0 = Instant::now();
    let (hub, mut s) = setup_with(Access::pending(auth.clone(), t0));
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00"}));
    let welcome = take(&mut s, t0);
    assert!(welcome[0].get("principal").is_none(), "{welcome:?}");
    assert_eq!(s.auth_deadline(), Some(t0 + auth.timeout));
    sub(&mut s, &["AAA"], 10.0, t0);
    s.handle_op(ClientOp::Ping { id: Some(json!(2)) }, t0);
    let msgs = take(&mut s, t0);
    assert_eq!(msgs[0]["code"], "unauthorized");
    assert_eq!(msgs[1]["type"], "pong");
    assert_eq!(msgs.len(), 2, "nothing subscribed: {msgs:?}");
    s.handle_op(
        ClientOp::Auth {
            id: Some(json!(3)),
            token: key,
        },
        t0,
    );
    let msgs = take(&mut s, t0);
    assert_eq!(msgs[0]["type"], "authenticated");
    assert_eq!(msgs[0]["principal"], "desk-7");
    assert_eq!(s.auth_deadline(), None, "an API key does not expire");
    sub(&mut s, &["AAA", "BBB"], 10.0, t0);
    let types: Vec<String> = take(&mut s, t0)
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, ["error", "subscribed", "snapshot"]);
}

#[test]
fn no_auth_in_time_or_a_bad_one_ends_the_session() {
    let (auth, _, _) = authenticator("desk-7", &["*"]);
    let t0 = Instant::now();
    let (_, mut s) = setup_with(Access::pending(auth.clone(), t0));
    take(&mut s, t0);
    assert_eq!(s.auth_end(t0), None);
    assert_eq!(s.auth_end(t0 + auth.timeout), Some(AuthEnd::Unauthorized));
    let msgs = take(&mut s, t0);
    assert_eq!(msgs[0]["code"], "unauthorized");
    assert_eq!(s.auth_end(t0 + auth.timeout), Some(AuthEnd::Unauthorized));
    assert!(take(&mut s, t0).is_empty(), "told once");

    let (_, mut s) = setup_with(Access::pending(auth, t0));
    take(&mut s, t0);
    s.handle_op(
        ClientOp::Auth {
            id: None,
            token: "tk_wrong".into(),
        },
        t0,
    );
    assert_eq!(take(&mut s, t0)[0]["message"], "invalid credential");
    assert_eq!(s.auth_end(t0), Some(AuthEnd::Unauthorized));
}

#[test]
fn a_token_expires_unless_refreshed_and_a_refresh_reevaluates_entitlements() {
    let (auth, _, secret) = authenticator("desk-7", &["*"]);
    let t0 = Instant::now();
    let now = unix_now();
    let first = token(
        secret,
        json!({"sub":"desk-7","exp":now + 60,"syms":["*"],"max_symbols":1}),
    );
    let (hub, mut s) = setup_with(Access::pending(auth.clone(), t0));
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00"}));
    feed(&hub, json!({"sym":"BBB","t":1,"bp":"2.00"}));
    take(&mut s, t0);
    s.handle_op(
        ClientOp::Auth {
            id: None,
            token: first,
        },
        t0,
    );
    let msgs = take(&mut s, t0);
    assert_eq!(
        msgs[0]["limits"]["max_symbols"], 1,
        "the principal's limit tightens"
    );
    assert_eq!(msgs[0]["expires"], now + 60);
    let expiry = s.auth_deadline().unwrap();
    assert!(expiry > t0 + Duration::from_secs(55) && expiry <= t0 + Duration::from_secs(61));
    sub(&mut s, &["BBB", "AAA"], 10.0, t0);
    let msgs = take(&mut s, t0);
    assert_eq!(msgs[0]["symbols"], json!(["BBB"]));
    assert_eq!(msgs[1]["code"], "too_many_symbols");

    // A refresh for A* only: BBB goes, saying why; the expiry moves.
    let second = token(
        secret,
        json!({"sub":"desk-7","exp":now + 120,"syms":["A*"]}),
    );
    s.handle_op(
        ClientOp::Auth {
            id: Some(json!(9)),
            token: second,
        },
        t0,
    );
    let msgs = take(&mut s, t0);
    assert_eq!(
        msgs[0],
        json!({"type":"unsubscribed","symbols":["BBB"],"reason":"not_entitled"})
    );
    assert_eq!(msgs[1]["type"], "authenticated");
    assert!(s.auth_deadline().unwrap() > expiry);

    // Another principal's token is no refresh.
    let other = token(
        secret,
        json!({"sub":"someone","exp":now + 120,"syms":["*"]}),
    );
    s.handle_op(
        ClientOp::Auth {
            id: None,
            token: other,
        },
        t0,
    );
    assert_eq!(take(&mut s, t0)[0]["code"], "unauthorized");

    // Not refreshed again: the session ends at exp.
    let at = s.auth_deadline().unwrap();
    assert_eq!(s.auth_end(at - Duration::from_millis(1)), None);
    assert_eq!(s.auth_end(at), Some(AuthEnd::Expired));
    assert_eq!(take(&mut s, t0)[0]["message"], "token expired");
}

/// Feeds "main" (rank 0) and "spare" (rank 1) over the session's hub.
fn ranked_setup() -> (Arc<Hub>, Session) {
    let (sources, _) = crate::hub::Sources::new(&[("main", 2), ("spare", 1)]);
    setup_over(sources, Access::open())
}

fn bid(hub: &Hub, feed: u8, sym: u32, bp: &str) -> Option<u64> {
    let f = serde_json::from_value(json!({"bp": bp})).unwrap();
    hub.feed_up(feed);
    hub.ingest_from(feed, sym, 1, &f, None)
}

#[test]
fn status_is_told_at_once_even_while_throttled_and_before_the_next_update() {
    let (hub, mut s) = ranked_setup();
    let t0 = Instant::now();
    bid(&hub, 0, 0, "1.00");
    bid(&hub, 1, 0, "1.00");
    sub(&mut s, &["AAA"], 1.0, t0);
    take(&mut s, t0);
    // A quote within the throttle window waits ...
    bid(&hub, 0, 0, "1.01");
    assert!(take(&mut s, t0).is_empty());
    // ... the main feed is lost: the status is told now, naming the spare.
    hub.feed_down(0, "down");
    assert!(s.has_ready(t0));
    let msgs = take(&mut s, t0);
    assert_eq!(
        msgs,
        [json!({"type":"status","sym":"AAA","state":"live","feed":"spare"})]
    );
    // The spare loses it too: stale, then a late snapshot says so.
    hub.feed_down(1, "down");
    let msgs = take(&mut s, t0);
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        (&msgs[0]["state"], &msgs[0]["reason"]),
        (&json!("stale"), &json!("feed spare down"))
    );
    assert!(msgs[0]["since"].as_i64().unwrap() > 1_700_000_000_000);
    let mut late = session_on(&hub, Access::open());
    sub(&mut late, &["AAA"], 1.0, t0);
    let msgs = take(&mut late, t0);
    let snap = msgs.iter().find(|m| m["type"] == "snapshot").unwrap();
    assert_eq!((&snap["stale"], &snap["seq"]), (&json!(true), &json!(2)));
    // Back: live (from main) is told before the update it brings.
    bid(&hub, 0, 0, "1.02");
    let t1 = t0 + Duration::from_secs(2);
    let types: Vec<_> = take(&mut s, t1).iter().map(|m| m["type"].clone()).collect();
    assert_eq!(types, ["status", "update"]);
}

#[test]
fn a_flap_inside_one_throttle_window_ends_with_the_final_state() {
    let (hub, mut s) = ranked_setup();
    let t0 = Instant::now();
    bid(&hub, 1, 0, "1.00");
    sub(&mut s, &["AAA"], 1.0, t0);
    take(&mut s, t0);
    hub.feed_down(1, "down");
    hub.feed_up(1);
    hub.feed_down(1, "down");
    let msgs = take(&mut s, t0);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["state"], "stale");
    hub.feed_up(1);
    hub.feed_down(1, "down");
    assert!(take(&mut s, t0).is_empty(), "stale, as told");
}

#[test]
fn a_refreshing_session_sends_quiet_symbols_again_within_their_rate() {
    let (hub, s) = setup();
    let mut s = s.refreshing(Duration::from_secs(1));
    let t0 = Instant::now();
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00","bs":100}));
    feed(&hub, json!({"sym":"BBB","t":1,"bp":"2.00"}));
    sub(&mut s, &["AAA"], 10.0, t0);
    sub(&mut s, &["BBB"], 0.5, t0);
    take(&mut s, t0);
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(1)));
    assert!(take(&mut s, t0 + Duration::from_millis(999)).is_empty());
    let msgs = take(&mut s, t0 + Duration::from_secs(1));
    assert_eq!(
        msgs,
        vec![json!({"type":"snapshot","sym":"AAA","seq":1,"t":1,"bp":"1.00","bs":100})],
        "the whole state, and BBB not before its max_rate allows"
    );
    // BBB's rate (one per 2 s) holds its refresh back.
    let msgs = take(&mut s, t0 + Duration::from_secs(2));
    let syms: Vec<&Value> = msgs.iter().map(|m| &m["sym"]).collect();
    assert_eq!(syms, [&json!("AAA"), &json!("BBB")]);
    // A change resets the clock: sent as a delta now, refreshed 1 s later.
    feed(&hub, json!({"sym":"AAA","t":2,"bs":300}));
    let t3 = t0 + Duration::from_millis(2500);
    assert_eq!(take(&mut s, t3)[0]["type"], "update");
    assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(3500)));
}

#[test]
fn a_session_without_refresh_stays_quiet() {
    let (hub, mut s) = setup();
    let t0 = Instant::now();
    feed(&hub, json!({"sym":"AAA","t":1,"bp":"1.00"}));
    sub(&mut s, &["AAA"], 10.0, t0);
    take(&mut s, t0);
    assert_eq!(s.next_deadline(), None);
    assert!(take(&mut s, t0 + Duration::from_secs(5)).is_empty());
}

mod burst;
