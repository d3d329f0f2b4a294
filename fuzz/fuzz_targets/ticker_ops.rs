//! ticker.v1 client ops (PROTOCOL.md section 3), each input read both as a
//! JSON text frame and as a MessagePack binary frame.
//!
//! Properties: no panic; a refused frame names an id only if it is one (a
//! string or an integer); an op that decodes, written again as JSON and as
//! MessagePack the way a client writes it, decodes to the same op.

#![no_main]

use fuzz_common::{same_f64, same_value};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use ticker_gateway::fuzzing::parse_op;
use ticker_gateway::session::protocol::{ClientOp, RequestId};

fuzz_target!(|data: &[u8]| {
    for binary in [false, true] {
        let op = match parse_op(data, binary) {
            Ok(op) => op,
            Err(refused) => {
                if let Some(id) = &refused.id {
                    assert!(is_id(id), "refused with an id that is none: {id}");
                }
                continue;
            }
        };
        let value = encode(&op);
        // expect: a serde_json Value has string keys and finite numbers only.
        let text = serde_json::to_vec(&value).expect("a JSON value writes as JSON");
        let packed = rmp_serde::to_vec_named(&value).expect("a JSON value writes as MessagePack");
        for (frame, binary) in [(text, false), (packed, true)] {
            let again = parse_op(&frame, binary)
                .unwrap_or_else(|e| panic!("{op:?} written again is refused: {e:?}"));
            assert!(same_op(&op, &again), "{op:?} came back as {again:?}");
        }
    }
});

/// A request id as the protocol has them.
fn is_id(id: &Value) -> bool {
    match id {
        Value::String(_) => true,
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// The op as a client writes it.
fn encode(op: &ClientOp) -> Value {
    let (name, id) = match op {
        ClientOp::Subscribe { id, .. } => ("subscribe", id),
        ClientOp::Unsubscribe { id, .. } => ("unsubscribe", id),
        ClientOp::List { id } => ("list", id),
        ClientOp::Ping { id } => ("ping", id),
        ClientOp::Auth { id, .. } => ("auth", id),
    };
    let mut m = Map::new();
    m.insert("op".into(), json!(name));
    if let Some(id) = id {
        m.insert("id".into(), id.clone());
    }
    match op {
        ClientOp::Subscribe {
            symbols,
            max_rate,
            snapshot,
            ..
        } => {
            m.insert("symbols".into(), json!(symbols));
            m.insert("snapshot".into(), json!(snapshot));
            if let Some(r) = max_rate {
                m.insert("max_rate".into(), json!(r));
            }
        }
        ClientOp::Unsubscribe { symbols, .. } => {
            m.insert("symbols".into(), json!(symbols));
        }
        ClientOp::Auth { token, .. } => {
            m.insert("token".into(), json!(token));
        }
        ClientOp::List { .. } | ClientOp::Ping { .. } => {}
    }
    Value::Object(m)
}

/// Equal ops, a rate read back from JSON text to within its last bit.
fn same_op(a: &ClientOp, b: &ClientOp) -> bool {
    match (a, b) {
        (
            ClientOp::Subscribe {
                id,
                symbols,
                max_rate,
                snapshot,
            },
            ClientOp::Subscribe {
                id: id2,
                symbols: symbols2,
                max_rate: max_rate2,
                snapshot: snapshot2,
            },
        ) => {
            same_id(id, id2)
                && symbols == symbols2
                && snapshot == snapshot2
                && match (max_rate, max_rate2) {
                    (Some(r), Some(r2)) => same_f64(*r, *r2),
                    (r, r2) => r == r2,
                }
        }
        _ => a == b,
    }
}

fn same_id(a: &RequestId, b: &RequestId) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_value(a, b),
        (a, b) => a == b,
    }
}
