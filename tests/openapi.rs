//! The OpenAPI document of the HTTP API (`src/http/openapi.json`) is served and
//! true: schemathesis, a property-based API tester, sends requests made from the
//! document (valid and invalid ones, and chains that follow its links: create a
//! long-polling session, poll it, send it ops, end it) to a real server and checks
//! every answer against the document: its status is documented, its body matches
//! the schema, its content type is the one documented, no 5xx but the documented
//! 503s, invalid input gets a 4xx and valid input is accepted.
//!
//! Needs schemathesis in `tests/.venv` (`tests/run` installs it, pinned in
//! `tests/requirements.txt`); without it this test fails saying so.

mod common;
use common::process::run_blocking;
use common::*;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// The whole schemathesis run, at most.
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(420);

/// Test cases per operation and phase: enough to reach every documented answer,
/// few enough for a few minutes on a busy 2-core machine.
const MAX_EXAMPLES: &str = "25";

/// Long polls answer within a second; unpolled sessions go after 5 s; SSE
/// streams send their heartbeat often.
const SETTINGS: &str = "[poll]\nsession_timeout = \"5s\"\nmax_wait = \"1s\"\n\
                        [sse]\nkeepalive_interval = \"200ms\"\n";

#[tokio::test]
async fn the_document_is_served_as_it_is_kept() {
    let app = quiet_app().await;
    let served = app.get_document("/api/v1/openapi.json").await;
    let kept: Value = serde_json::from_str(include_str!("../src/http/openapi.json")).unwrap();
    assert_eq!(served, kept);
    assert_eq!(served["openapi"], "3.1.0");
}

/// Every `METHOD /path` the README's Endpoints section names is an operation of
/// the document, and every operation of the document is named there.
#[test]
fn the_document_and_the_readme_list_the_same_endpoints() {
    let readme = include_str!("../README.md");
    let section = readme
        .split("\n## Endpoints\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has an Endpoints section");
    let mut listed = BTreeSet::new();
    for method in ["GET", "POST", "DELETE"] {
        for rest in section.split(&format!("`{method} /")).skip(1) {
            let path: String = rest
                .chars()
                .take_while(|c| !matches!(c, '`' | '?'))
                .collect();
            listed.insert(format!("{method} /{path}"));
        }
    }
    let doc: Value = serde_json::from_str(include_str!("../src/http/openapi.json")).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert_eq!(listed, documented);
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_the_server_true_to_its_document() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = root.join("tests/.venv/bin/schemathesis");
    assert!(
        st.exists(),
        "{} is missing; run: tests/run --setup (or python3 -m venv tests/.venv && \
         tests/.venv/bin/pip install -r tests/requirements.txt)",
        st.display()
    );
    let app = quiet_app_with(SETTINGS).await;
    // Its cache (.hypothesis) and reports stay out of the source tree.
    let work = std::env::temp_dir().join(format!("ticker-schemathesis-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let mut cmd = Command::new(st);
    cmd.arg("--no-color")
        .arg("--config-file")
        .arg(root.join("tests/schemathesis.toml"))
        .arg("run")
        .arg(app.url("/api/v1/openapi.json"))
        .args(["--url", &app.url("")])
        .args(["--checks", "all", "--max-examples", MAX_EXAMPLES])
        .args(["--workers", "2", "--request-timeout", "10"])
        .args(["--suppress-health-check", "too_slow"])
        .current_dir(&work);
    let (ok, output) = run_blocking(cmd, SCHEMATHESIS_TIMEOUT).await;
    assert!(
        ok,
        "schemathesis found the server untrue to its document:\n{output}"
    );
    println!("{output}");
}
