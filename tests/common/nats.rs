//! A real `nats-server` (Debian's package) for the bus tests: started on free
//! ports with JetStream in a temporary store and its monitoring port open,
//! stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::poll;

/// A running nats-server.
pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub monitor_port: u16,
    store: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!("the bus tests need nats-server; run: apt-get install -y nats-server");
}

fn spawn(port: u16, monitor_port: u16, store: &Path) -> Child {
    Command::new(binary())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", &monitor_port.to_string(), "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nats-server")
}

impl NatsServer {
    /// Starts a server and waits until it answers on its monitoring port.
    pub async fn start() -> NatsServer {
        let (port, monitor_port) = (free_port(), free_port());
        let store =
            std::env::temp_dir().join(format!("ticker-gateway-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&store).unwrap();
        let server = NatsServer {
            child: spawn(port, monitor_port, &store),
            port,
            monitor_port,
            store,
        };
        server.wait_healthy().await;
        server
    }

    /// Kills the server (clients see the connection drop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the killed server again on the same ports and store.
    pub async fn restart(&mut self) {
        self.child = spawn(self.port, self.monitor_port, &self.store);
        self.wait_healthy().await;
    }

    async fn wait_healthy(&self) {
        let health = self.monitor("/healthz");
        poll("nats-server health", || async {
            match reqwest::get(&health).await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn monitor(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.monitor_port)
    }

    /// The quote subjects the connection named `name` subscribes to, sorted, as
    /// the server's monitoring (`/connz?subs=1`) reports them.
    pub async fn quote_subscriptions(&self, name: &str) -> Vec<String> {
        let connz: Value = reqwest::get(self.monitor("/connz?subs=1"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut subs: Vec<String> = connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == name)
            .flat_map(|c| {
                c["subscriptions_list"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|s| s.as_str().map(str::to_owned))
            .filter(|s| s.starts_with("ticker.quotes."))
            .collect();
        subs.sort();
        subs
    }

    /// Polls the server until `name`'s quote subscriptions are `want`.
    pub async fn wait_subscriptions(&self, name: &str, want: &[&str]) {
        poll(
            &format!("{name}'s subscriptions (want {want:?})"),
            || async {
                let subs = self.quote_subscriptions(name).await;
                if subs == want {
                    Ok(())
                } else {
                    Err(subs)
                }
            },
        )
        .await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
