//! An HTTP proxy in front of a test gateway that treats WebSocket upgrades as
//! some corporate proxies do: it refuses them, or holds them until the test
//! lets them through. Every other request passes unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{copy_bidirectional, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// What the proxy does with a WebSocket upgrade.
pub enum Upgrades {
    /// Answers 403 and closes.
    Refused,
    /// Passes it once [`Gate::open`] was called.
    Held(Gate),
}

/// Lets held upgrades through.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Default for Gate {
    fn default() -> Gate {
        Gate(Arc::new(Semaphore::new(0)))
    }
}

impl Gate {
    pub fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }

    async fn passed(&self) {
        // The semaphore is never closed.
        let _ = self.0.acquire().await.unwrap();
    }
}

/// Starts a proxy to `upstream`; its address.
pub async fn start(upstream: SocketAddr, upgrades: Upgrades) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upgrades = Arc::new(upgrades);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(pass(client, upstream, upgrades.clone()));
        }
    });
    addr
}

/// One connection: its first request's head decides (a WebSocket client
/// opens a connection of its own for its upgrade).
async fn pass(mut client: TcpStream, upstream: SocketAddr, upgrades: Arc<Upgrades>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let upgrade = String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("upgrade: websocket");
    if upgrade {
        match &*upgrades {
            Upgrades::Refused => {
                let refusal =
                    b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = client.write_all(refusal).await;
                return;
            }
            Upgrades::Held(gate) => gate.passed().await,
        }
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if server.write_all(&head).await.is_ok() {
        let _ = copy_bidirectional(&mut client, &mut server).await;
    }
}
