//! Test clients for STOMP: the real `@stomp/stompjs` 7 in Node, driven through
//! `tests/browser/stomp-bridge.mjs`, and a raw client for what stompjs will
//! not do (stay silent, stop reading, send broken frames).

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::node::NodeBridge;
use crate::common::{Guarantees, TestApp, Ws};

/// How long a raw frame may take to arrive.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// A `@stomp/stompjs` client in a Node process; every MESSAGE body goes
/// through the same [`Guarantees`] checker as every other transport.
pub struct StompJs {
    node: NodeBridge,
    pub g: Guarantees,
    /// Off for subscriptions made without a snapshot (their first message is
    /// a delta by design).
    pub check: bool,
    pub message_ids: HashSet<String>,
    /// Subscriptions were made with raw frames: stompjs hands their messages
    /// to its unhandled-message callback.
    pub raw_subscriptions: bool,
}

impl StompJs {
    /// Starts the Node client (not yet connected).
    pub async fn start() -> StompJs {
        StompJs {
            node: NodeBridge::start("stomp-bridge.mjs", "@stomp/stompjs"),
            g: Guarantees::default(),
            check: true,
            message_ids: HashSet::new(),
            raw_subscriptions: false,
        }
    }

    /// A client connected to `app` with stompjs `options`; returns it and
    /// CONNECTED's headers.
    pub async fn connect(app: &TestApp, options: Value) -> (StompJs, Value) {
        let mut c = StompJs::start().await;
        c.send(json!({"cmd": "connect", "url": app.ws_url(""), "options": options}))
            .await;
        let connected = c.until_ev("connected").await;
        (c, connected["headers"].clone())
    }

    pub async fn send(&mut self, cmd: Value) {
        self.node.send(cmd).await;
    }

    /// Subscribes `sym` with extra STOMP `headers`.
    pub async fn subscribe(&mut self, sym: &str, headers: Value) {
        let destination = format!("/topic/quotes.{sym}");
        self.send(json!({"cmd": "subscribe", "destination": destination, "headers": headers}))
            .await;
    }

    /// The next event from the client (MESSAGE bodies already checked).
    pub async fn next(&mut self) -> Value {
        let mut ev = self.node.next().await;
        if ev["ev"] == "unhandled" {
            assert!(
                self.raw_subscriptions,
                "a MESSAGE for no subscription: {ev}"
            );
            ev["ev"] = "message".into();
            ev["body"] = serde_json::from_str(ev["body"].as_str().unwrap()).unwrap();
        }
        if ev["ev"] == "message" {
            let id = ev["headers"]["message-id"].as_str().unwrap().to_owned();
            assert!(self.message_ids.insert(id), "message-id repeated: {ev}");
            assert_eq!(ev["headers"]["content-type"], "application/json");
            assert!(ev["headers"]["content-length"].is_string(), "{ev}");
            let body = &ev["body"];
            assert!(body.is_object(), "one message object per body: {ev}");
            assert_eq!(
                ev["headers"]["destination"],
                format!("/topic/quotes.{}", body["sym"].as_str().unwrap())
            );
            if self.check {
                self.g.check(body);
            }
        }
        ev
    }

    /// Events until one of kind `ev`.
    pub async fn until_ev(&mut self, ev: &str) -> Value {
        self.until(|e| e["ev"] == ev).await
    }

    /// Events until one matches.
    pub async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let e = self.next().await;
            if pred(&e) {
                return e;
            }
            assert!(e["ev"] != "closed", "closed while waiting: {e}");
        }
    }

    /// The next MESSAGE whose body matches.
    pub async fn until_msg(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        self.until(|e| e["ev"] == "message" && pred(&e["body"]))
            .await
    }

    /// Events until the connection closes; returns the ERROR (if any) and the
    /// close code.
    pub async fn until_closed(&mut self) -> (Option<Value>, u16) {
        let mut error = None;
        loop {
            let e = self.next().await;
            match e["ev"].as_str().unwrap() {
                "error" => error = Some(e),
                "closed" => return (error, e["code"].as_u64().unwrap() as u16),
                _ => {}
            }
        }
    }
}

/// A raw STOMP client on a WebSocket: frames in and out as text.
pub struct RawStomp {
    pub ws: Ws,
    buf: String,
}

impl RawStomp {
    pub fn from_ws(ws: Ws) -> RawStomp {
        RawStomp {
            ws,
            buf: String::new(),
        }
    }

    pub async fn connect(app: &TestApp) -> RawStomp {
        let mut req = app.ws_url("").into_client_request().unwrap();
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "v12.stomp".parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["Sec-WebSocket-Protocol"], "v12.stomp");
        RawStomp::from_ws(ws)
    }

    pub async fn send(&mut self, frame: &str) {
        self.ws.send(Message::text(frame)).await.unwrap();
    }

    /// The next frame (its text up to the NUL) or heart-beat (`"\n"`); `None`
    /// once closed, with the close code.
    pub async fn next(&mut self) -> Result<String, Option<u16>> {
        loop {
            let beats = self.buf.len() - self.buf.trim_start_matches(['\n', '\r']).len();
            if beats > 0 {
                self.buf.drain(..beats);
                return Ok("\n".into());
            }
            if let Some(end) = self.buf.find('\0') {
                let frame = self.buf[..end].to_owned();
                self.buf.drain(..=end);
                return Ok(frame);
            }
            let msg = tokio::time::timeout(EVENT_WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                Some(Ok(Message::Text(t))) => self.buf.push_str(&t),
                Some(Ok(Message::Close(c))) => return Err(c.map(|c| c.code.into())),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// The next frame that is not a heart-beat.
    pub async fn frame(&mut self) -> String {
        loop {
            match self.next().await {
                Ok(f) if f == "\n" => {}
                Ok(f) => return f,
                Err(code) => panic!("closed ({code:?}) while waiting for a frame"),
            }
        }
    }

    /// Frames until the close; returns the last frame and the close code.
    pub async fn until_closed(&mut self) -> (Option<String>, Option<u16>) {
        let mut last = None;
        loop {
            match self.next().await {
                Ok(f) if f == "\n" => {}
                Ok(f) => last = Some(f),
                Err(code) => return (last, code),
            }
        }
    }
}
