//! The AsyncAPI document of the push protocols (`src/transport/asyncapi.json`,
//! served at `/api/v1/asyncapi.json`): it names every message type and op the
//! code has, on both WebSocket formats, and every op as a Socket.IO call; its
//! schemas are those of the OpenAPI document (but STOMP's and Socket.IO's own);
//! `@asyncapi/parser` finds no error or warning in it; and live sessions match
//! it (`tests/browser/asyncapi.test.mjs`): a WebSocket session and an SSE stream
//! receive only messages that match it, every server message among them; a
//! STOMP session sends every frame it documents and gets every server frame it
//! documents, headers and body as documented; Socket.IO's handshakes and
//! namespaces, and socket.io-client's calls, acks and events, are as documented.
//!
//! Needs `node` (>= 20) and `npm ci --prefix tests/browser` (`tests/run` does it).

mod common;
use common::process::{node_test, run_blocking};
use common::*;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use ticker_gateway::session::protocol::{ClientOp, ServerMsg};

const NODE_TIMEOUT: Duration = Duration::from_secs(180);

/// AAPL and MSFT quote about every 40 ms, so updates come at once.
const SIM_FEED: &str = "[[feeds]]\nname = \"sim\"\nkind = \"sim\"\nquotes_per_sec = 50.0\n\
                        symbols = [\"AAPL\", \"MSFT\"]\n";

fn document() -> Value {
    serde_json::from_str(include_str!("../src/transport/asyncapi.json")).unwrap()
}

/// What `v` points to, following `$ref`s.
fn resolve(doc: &Value, v: &Value) -> Value {
    let mut v = v.clone();
    while let Some(path) = v.get("$ref").and_then(Value::as_str) {
        v = doc.pointer(path.trim_start_matches('#')).unwrap().clone();
    }
    v
}

/// The names of a channel's messages whose payload has `key` (`type` for the
/// server's messages, `op` for the client's).
fn names(doc: &Value, channel: &str, key: &str) -> BTreeSet<String> {
    doc["channels"][channel]["messages"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| resolve(doc, m))
        .filter(|m| resolve(doc, &m["payload"])["properties"].get(key).is_some())
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The names of the messages of operation `op`, or of its reply.
fn operation_names(doc: &Value, op: &str, reply: bool) -> BTreeSet<String> {
    let op = &doc["operations"][op];
    let messages = if reply {
        &op["reply"]["messages"]
    } else {
        &op["messages"]
    };
    messages
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {op}"))
        .iter()
        .map(|m| resolve(doc, m)["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_document_names_every_message_and_op_of_the_code() {
    let doc = document();
    let types: BTreeSet<String> = ServerMsg::TYPES.iter().map(|s| s.to_string()).collect();
    let ops: BTreeSet<String> = ClientOp::NAMES.iter().map(|s| s.to_string()).collect();
    for channel in ["ws", "wsMsgpack"] {
        assert_eq!(names(&doc, channel, "type"), types, "{channel}");
        assert_eq!(names(&doc, channel, "op"), ops, "{channel}");
    }
    assert!(names(&doc, "sse", "type").is_subset(&types));

    // Socket.IO: every op is a call (what the client sends but its CONNECT);
    // the acks and events are server messages.
    let calls: Vec<&String> = doc["operations"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(id, op)| {
            op["channel"]["$ref"] == "#/channels/socketio"
                && op["action"] == "receive"
                && *id != "socketioConnect"
        })
        .map(|(id, _)| id)
        .collect();
    let called: BTreeSet<String> = calls
        .iter()
        .flat_map(|id| operation_names(&doc, id, false))
        .collect();
    assert_eq!(called, ops);
    let mut answers = operation_names(&doc, "socketioPush", false);
    answers.extend(calls.iter().flat_map(|id| operation_names(&doc, id, true)));
    assert!(answers.is_subset(&types), "{answers:?}");
}

#[test]
fn its_schemas_are_the_openapi_documents() {
    let doc = document();
    let openapi: Value = serde_json::from_str(include_str!("../src/http/openapi.json")).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.len() >= 15);
    for (name, schema) in schemas {
        if name.starts_with("Stomp") || name.starts_with("SocketIo") {
            // STOMP's frames and Socket.IO's packets: no HTTP answer has them.
            assert!(
                openapi["components"]["schemas"].get(name).is_none(),
                "{name}"
            );
            continue;
        }
        assert_eq!(
            Some(schema),
            openapi["components"]["schemas"].get(name),
            "schema {name} differs between the AsyncAPI and OpenAPI documents"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn it_parses_cleanly_and_live_sessions_match_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/@asyncapi/parser")
            .is_dir(),
        "tests/browser/node_modules/@asyncapi/parser is missing; run: tests/run --setup \
         (or npm ci --prefix tests/browser)"
    );
    let app = spawn_app(SIM_FEED).await;
    assert_eq!(app.get_document("/api/v1/asyncapi.json").await, document());
    // `status` messages: the feed is reported lost every so often (its
    // symbols turn stale), and its next quote brings them back.
    let (hub, rank) = (app.state.hub.clone(), app.state.feed_ranks[0]);
    let flaps = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(300));
        loop {
            every.tick().await;
            hub.feed_down(rank, "down");
        }
    });

    let node = node_test(
        &["--experimental-websocket"],
        "tests/browser/asyncapi.test.mjs",
        app.addr,
    );
    let (ok, output) = run_blocking(node, NODE_TIMEOUT).await;
    flaps.abort();
    assert!(ok, "the AsyncAPI checks failed:\n{output}");
    println!("{output}");
}
