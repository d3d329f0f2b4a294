use super::*;
use crate::quote::Price;

fn one(text: &str) -> Message {
    let msgs = frame(text).unwrap();
    assert_eq!(msgs.len(), 1, "{text}");
    message(msgs[0]).unwrap()
}

fn price(s: &str) -> Option<Price> {
    Some(s.parse().unwrap())
}

#[test]
fn snapshots_and_updates_keep_the_upstream_decimals_and_seq() {
    let snapshot = one(
        r#"[{"type":"snapshot","sym":"MSFT","seq":1042,"t":1763700000123,"bp":"411.20","bs":300,"ap":"411.24","as":200,"lp":"411.22","ls":100,"v":1832001,"o":"409.00","h":"412.50","l":"408.10","pc":"408.75","stale":true}]"#,
    );
    let Message::Snapshot(q) = snapshot else {
        panic!("{snapshot:?}");
    };
    assert_eq!(
        (q.sym.as_str(), q.seq, q.t),
        ("MSFT", 1042, 1_763_700_000_123)
    );
    assert_eq!(q.fields.bp, price("411.20"));
    assert_eq!(
        q.fields.bp.unwrap().to_string(),
        "411.20",
        "trailing zero kept"
    );
    assert_eq!(q.fields.as_, Some(200));
    assert_eq!(q.fields.o.unwrap().to_string(), "409.00");
    assert_eq!(q.fields.v, Some(1_832_001));

    let update = one(
        r#"[{"type":"update","sym":"MSFT","seq":1047,"t":1763700000380,"bp":"411.2100000001","bs":500}]"#,
    );
    let want = Quote {
        sym: "MSFT".into(),
        seq: 1047,
        t: 1_763_700_000_380,
        fields: Fields {
            bp: price("411.2100000001"),
            bs: Some(500),
            ..Fields::default()
        },
    };
    assert_eq!(update, Message::Update(want));
}

#[test]
fn control_messages_are_read_and_unknown_ones_pass() {
    let welcome = one(
        r#"[{"type":"welcome","session":"s-8f3a","protocol":"ticker.v1","format":"json","limits":{"max_symbols":500,"max_rate":50,"default_rate":10}}]"#,
    );
    assert_eq!(
        welcome,
        Message::Welcome {
            limits: Limits {
                max_rate: Some(50.0)
            }
        }
    );
    let msgs = frame(
        r#"[{"type":"subscribed","id":1,"symbols":["AAPL"],"max_rate":50},
            {"type":"unsubscribed","symbols":["AAPL"],"reason":"not_entitled"},
            {"type":"error","id":1,"code":"unknown_symbol","message":"unknown symbol: ZZZZ","symbols":["ZZZZ"]},
            {"type":"status","sym":"AAPL","state":"stale","since":1,"reason":"feed down"},
            {"type":"pong"}]"#,
    )
    .unwrap();
    let msgs: Vec<Message> = msgs.into_iter().map(|m| message(m).unwrap()).collect();
    assert_eq!(
        msgs,
        [
            Message::Subscribed {
                symbols: vec!["AAPL".into()]
            },
            Message::Unsubscribed {
                symbols: vec!["AAPL".into()],
                reason: Some("not_entitled".into())
            },
            Message::Error {
                code: "unknown_symbol".into(),
                message: "unknown symbol: ZZZZ".into(),
                symbols: vec!["ZZZZ".into()]
            },
            Message::Other,
            Message::Other,
        ]
    );
}

#[test]
fn bad_messages_are_refused_one_by_one() {
    assert!(frame(r#"{"type":"pong"}"#).is_err(), "not an array");
    let msgs = frame(
        r#"[{"type":"update","sym":"AAPL","seq":2,"t":1,"bp":187.1},
            {"type":"update","sym":"AAPL","t":1,"bp":"187.1"},
            {"type":"update","sym":"AAPL","seq":3,"t":1,"bp":"1e3"},
            {"type":"update","sym":"AAPL","seq":4,"t":1,"lp":"187.10"}]"#,
    )
    .unwrap();
    let read: Vec<bool> = msgs.into_iter().map(|m| message(m).is_ok()).collect();
    assert_eq!(
        read,
        [false, false, false, true],
        "a number price, no seq, an exponent"
    );
}

#[test]
fn ops_ask_for_the_symbols_at_the_granted_rate() {
    let sub: serde_json::Value =
        serde_json::from_str(&subscribe(&["AAPL", "MSFT"], Some(50.0))).unwrap();
    assert_eq!(
        sub,
        json!({"op":"subscribe","symbols":["AAPL","MSFT"],"max_rate":50.0,"snapshot":true})
    );
    let unsub: serde_json::Value = serde_json::from_str(&unsubscribe(&["AAPL"])).unwrap();
    assert_eq!(unsub, json!({"op":"unsubscribe","symbols":["AAPL"]}));
}

#[test]
fn refused_credentials_fail_and_everything_else_retries() {
    let fatal = |e: FeedError| matches!(e, FeedError::Fatal(_));
    assert!(fatal(closed(4001, "unauthorized")));
    assert!(fatal(closed(4003, "token expired")));
    for code in [1000, 1001, 1006, 1008, 1011, 1013, 4000, 4008, 4029] {
        assert!(!fatal(closed(code, "")), "{code}");
    }
    assert!(closed(1013, "server full")
        .to_string()
        .contains("over its limits (close 1013 server full)"));
    assert!(over_limits(Some(1013)) && over_limits(Some(1008)));
    assert!(!over_limits(Some(1001)) && !over_limits(None));

    assert!(error("unauthorized", "invalid token").is_some_and(fatal));
    for code in [
        "unknown_symbol",
        "not_entitled",
        "too_many_symbols",
        "rate_limited",
        "bad_request",
    ] {
        assert!(error(code, "").is_none(), "{code}");
    }
}
