//! What SSE and long-polling read from a request before a session starts:
//! `GET /sse?symbols=..&max_rate=..`, `GET /poll/{session}?wait=N`,
//! `GET /ws?format=..`, and the body of `POST /poll`. Each input is tried as
//! all of them (as a query string when it is UTF-8).
//!
//! Properties: no panic; an SSE query gives a subscribe with trimmed, non-empty
//! symbols without commas and a positive finite rate, and the query written
//! again from it gives the same op; a wait is never longer than `max_wait`
//! and is the one asked for when shorter; a `POST /poll` body's op written
//! again as a body gives the same op.

#![no_main]

use std::time::Duration;

use fuzz_common::same_f64;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use ticker_gateway::fuzzing::{poll_create, poll_wait, sse_query, ws_format};
use ticker_gateway::session::protocol::{ClientOp, Format};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(op)) = poll_create(data) {
        let ClientOp::Subscribe {
            id: None,
            symbols,
            max_rate,
            snapshot,
        } = &op
        else {
            panic!("POST /poll made {op:?}");
        };
        let mut body = json!({"symbols": symbols, "snapshot": snapshot});
        if let Some(r) = max_rate {
            body["max_rate"] = json!(r);
        }
        // expect: a JSON value writes as JSON.
        let body = serde_json::to_vec(&body).expect("JSON");
        match poll_create(&body) {
            Ok(Some(ClientOp::Subscribe {
                id: None,
                symbols: s2,
                max_rate: r2,
                snapshot: n2,
            })) => {
                let same_rate = match (max_rate, r2) {
                    (Some(a), Some(b)) => same_f64(*a, b),
                    (a, b) => *a == b,
                };
                assert!(s2 == *symbols && n2 == *snapshot && same_rate, "{op:?}");
            }
            other => panic!("{op:?} written again made {other:?}"),
        }
    }

    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(op) = sse_query(query) {
        let ClientOp::Subscribe {
            symbols, max_rate, ..
        } = &op
        else {
            panic!("/sse made {op:?}");
        };
        for s in symbols {
            assert!(!s.is_empty() && s.trim() == s && !s.contains(','), "{s:?}");
        }
        let mut again = format!("symbols={}", percent(&symbols.join(",")));
        if let Some(r) = max_rate {
            assert!(r.is_finite() && *r > 0.0, "{r}");
            again += &format!("&max_rate={}", percent(&r.to_string()));
        }
        match sse_query(&again) {
            Ok(op2) => assert_eq!(op, op2, "{query:?} written again as {again:?}"),
            Err(e) => panic!("{op:?} written again as {again:?}: {e}"),
        }
    }

    for max_wait in [Duration::ZERO, Duration::from_secs(30)] {
        if let Ok(wait) = poll_wait(query, max_wait) {
            assert!(wait <= max_wait, "{query:?}: {wait:?}");
        }
    }
    if let Ok(asked) = query.parse::<f64>() {
        let max_wait = Duration::from_secs(30);
        match poll_wait(&format!("wait={}", percent(query)), max_wait) {
            Ok(wait) if asked < max_wait.as_secs_f64() => {
                let off = (wait.as_secs_f64() - asked).abs();
                assert!(off < 1e-9, "asked {asked}, waits {wait:?}");
            }
            Ok(wait) => assert_eq!(wait, max_wait, "asked {asked}"),
            Err(_) => assert!(!(asked.is_finite() && asked >= 0.0), "{asked} refused"),
        }
    }

    if let Ok(format) = ws_format(query) {
        let again = format!("format={}", format.as_str());
        assert_eq!(ws_format(&again).ok(), Some(format));
        assert!(matches!(format, Format::Json | Format::Msgpack));
    }
});

/// `text` percent-encoded for a query string, every byte but the unreserved.
fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}
