//! A Node.js client (a real npm client library) in a child process, driven
//! by JSON lines: commands on its stdin, events on its stdout. The scripts
//! live in `tests/browser/` beside their `node_modules`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long any one event may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(10);

pub struct NodeBridge {
    /// Killed when dropped (`kill_on_drop`).
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl NodeBridge {
    /// Starts `tests/browser/<script>`, which needs the npm `package`.
    pub fn start(script: &str, package: &str) -> NodeBridge {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            root.join("node_modules").join(package).is_dir(),
            "{package} is missing; run: npm ci --prefix tests/browser"
        );
        let mut child = Command::new("node")
            .arg(root.join(script))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node (>= 20) on PATH");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        NodeBridge {
            _child: child,
            stdin,
            lines,
        }
    }

    pub async fn send(&mut self, cmd: Value) {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The next event; fails the test on the script's own failure.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(EVENT_WAIT, self.lines.next_line())
            .await
            .expect("an event from the Node client in time")
            .unwrap()
            .expect("the Node client ended");
        let ev: Value = serde_json::from_str(&line).unwrap();
        assert!(ev["ev"] != "fatal", "Node client: {}", ev["message"]);
        ev
    }
}
