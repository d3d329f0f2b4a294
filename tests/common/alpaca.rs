//! A fake Alpaca market-data v2 stream for the `alpaca` feed tests: a WebSocket
//! server on a free port that greets with `connected`, checks the key and
//! secret, answers `subscribe`/`unsubscribe` with `subscription`, and reports
//! everything it sees to the test. The test sends frames to the current
//! connection, and can refuse connections with an error code, drop them, or
//! end them with an error as the provider does.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::WAIT;

pub const KEY: &str = "test-key-id";
pub const SECRET: &str = "test-secret";

/// What the fake saw, with the connection's number (1 for the first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Auth {
        conn: usize,
    },
    Subscribe {
        conn: usize,
        quotes: Vec<String>,
        trades: Vec<String>,
    },
    Unsubscribe {
        conn: usize,
        quotes: Vec<String>,
        trades: Vec<String>,
    },
}

/// What the test asks of the current connection.
enum Command {
    Send(String),
    /// Closes the TCP connection without a WebSocket close.
    Drop,
    /// Closes the WebSocket.
    Close,
}

/// How the fake answers an authentication.
#[derive(Clone, Copy)]
pub enum Answer {
    Accept,
    /// Sends `[{"T":"error","code":..}]` and closes.
    Refuse(u16, &'static str),
}

/// A running fake provider.
pub struct FakeAlpaca {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    current: Arc<Mutex<Option<mpsc::UnboundedSender<Command>>>>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl FakeAlpaca {
    pub async fn start(answer: Answer) -> FakeAlpaca {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let current = Arc::new(Mutex::new(None));
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (n, cur) = (connections.clone(), current.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = n.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(serve(tcp, conn, answer, seen_tx.clone(), cur.clone()));
            }
        });
        FakeAlpaca {
            addr,
            connections,
            current,
            seen,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v2/test", self.addr)
    }

    /// How many connections the feed has opened.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Sends one text frame on the current connection (JSON text as written,
    /// so numbers keep their digits).
    pub fn send(&self, frame: &str) {
        self.command(Command::Send(frame.to_owned()));
    }

    /// Closes the current connection abruptly (no close frame).
    pub fn drop_connection(&self) {
        self.command(Command::Drop);
    }

    /// Ends the current connection as the provider does on an error: the error
    /// message, then a close.
    pub fn end_with_error(&self, code: u16, msg: &str) {
        self.send(&json!([{"T":"error","code":code,"msg":msg}]).to_string());
        self.command(Command::Close);
    }

    fn command(&self, c: Command) {
        let current = self.current.lock().unwrap();
        let tx = current.as_ref().expect("no authenticated connection");
        assert!(tx.send(c).is_ok(), "the connection is gone");
    }

    /// What the fake sees next.
    pub async fn next(&mut self) -> Seen {
        self.wait("anything", |_| true).await
    }

    /// Waits for what the fake sees next that matches `pred`.
    pub async fn wait(&mut self, what: &str, pred: impl Fn(&Seen) -> bool) -> Seen {
        loop {
            let seen = tokio::time::timeout(WAIT, self.seen.recv())
                .await
                .unwrap_or_else(|_| panic!("the fake provider never saw {what}"))
                .expect("the fake provider stopped");
            if pred(&seen) {
                return seen;
            }
        }
    }
}

async fn serve(
    tcp: TcpStream,
    conn: usize,
    answer: Answer,
    seen: mpsc::UnboundedSender<Seen>,
    current: Arc<Mutex<Option<mpsc::UnboundedSender<Command>>>>,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let send = |v: Value| Message::Text(v.to_string().into());
    let _ = ws
        .send(send(json!([{"T":"success","msg":"connected"}])))
        .await;
    let Some(auth) = next_json(&mut ws).await else {
        return;
    };
    let _ = seen.send(Seen::Auth { conn });
    let answer = match answer {
        Answer::Accept if auth["key"] == KEY && auth["secret"] == SECRET => Answer::Accept,
        Answer::Accept => Answer::Refuse(402, "auth failed"),
        refuse => refuse,
    };
    if let Answer::Refuse(code, msg) = answer {
        let _ = ws
            .send(send(json!([{"T":"error","code":code,"msg":msg}])))
            .await;
        let _ = ws.close(None).await;
        return;
    }
    let _ = ws
        .send(send(json!([{"T":"success","msg":"authenticated"}])))
        .await;
    let (tx, mut commands) = mpsc::unbounded_channel();
    *current.lock().unwrap() = Some(tx);
    let (mut quotes, mut trades) = (BTreeSet::new(), BTreeSet::new());
    loop {
        tokio::select! {
            action = next_json(&mut ws) => {
                let Some(action) = action else { return };
                let list = |key: &str| -> Vec<String> {
                    action[key].as_array().into_iter().flatten()
                        .map(|s| s.as_str().unwrap().to_owned()).collect()
                };
                let (q, t) = (list("quotes"), list("trades"));
                match action["action"].as_str() {
                    Some("subscribe") => {
                        quotes.extend(q.iter().cloned());
                        trades.extend(t.iter().cloned());
                        let _ = seen.send(Seen::Subscribe { conn, quotes: q, trades: t });
                    }
                    Some("unsubscribe") => {
                        q.iter().for_each(|s| { quotes.remove(s); });
                        t.iter().for_each(|s| { trades.remove(s); });
                        let _ = seen.send(Seen::Unsubscribe { conn, quotes: q, trades: t });
                    }
                    _ => {
                        let _ = ws.send(send(json!([{"T":"error","code":400,"msg":"invalid syntax"}]))).await;
                        continue;
                    }
                }
                let reply = json!([{"T":"subscription","trades":trades,"quotes":quotes,"bars":[]}]);
                let _ = ws.send(send(reply)).await;
            }
            command = commands.recv() => match command {
                Some(Command::Send(text)) => {
                    let _ = ws.send(Message::Text(text.into())).await;
                }
                Some(Command::Close) => {
                    let _ = ws.close(None).await;
                    return;
                }
                Some(Command::Drop) | None => return,
            },
        }
    }
}

/// The next text frame as JSON; `None` when the connection ends.
async fn next_json(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Option<Value> {
    while let Some(Ok(frame)) = ws.next().await {
        match frame {
            Message::Text(text) => return Some(serde_json::from_str(&text).expect("JSON action")),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}
