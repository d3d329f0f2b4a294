//! Clients of the fallback transports, Server-Sent Events and long-polling,
//! whose every message goes through [`Guarantees`] like a WebSocket client's.

use std::collections::VecDeque;
use std::time::Instant;

use serde_json::Value;

use super::{Guarantees, TestApp, WAIT};

/// Something that yields protocol messages one at a time, all checked by
/// [`Guarantees`].
pub trait Source {
    async fn next_msg(&mut self) -> Value;
    fn g(&self) -> &Guarantees;

    async fn until(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let m = self.next_msg().await;
            if pred(&m) {
                return m;
            }
        }
    }
}

/// An SSE client reading the raw event stream.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
    pub pending: VecDeque<Value>,
    pub g: Guarantees,
    pub comments: usize,
}

impl Sse {
    pub async fn open(app: &TestApp, query: &str) -> Sse {
        let resp = app
            .http
            .get(app.url(&format!("/sse?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Sse {
            resp,
            buf: String::new(),
            pending: VecDeque::new(),
            g: Guarantees::default(),
            comments: 0,
        }
    }

    /// Parses every complete event in the buffer.
    fn parse(&mut self) {
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if line.starts_with(':') {
                    self.comments += 1;
                } else if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                }
            }
            if let Some(data) = data {
                let m: Value = serde_json::from_str(&data).expect("data is JSON");
                assert_eq!(
                    Some(m["type"].as_str().unwrap()),
                    event.as_deref(),
                    "{block}"
                );
                self.g.check_all(std::slice::from_ref(&m));
                self.pending.push_back(m);
            }
        }
    }

    /// Reads one more chunk of the stream.
    pub async fn read(&mut self) {
        let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
            .await
            .expect("timed out waiting for an event")
            .expect("stream error")
            .expect("stream ended");
        self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        self.parse();
    }
}

impl Source for Sse {
    async fn next_msg(&mut self) -> Value {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return m;
            }
            self.read().await;
        }
    }
    fn g(&self) -> &Guarantees {
        &self.g
    }
}

/// A long-polling client.
pub struct Poll {
    http: reqwest::Client,
    base: String,
    pub session: String,
    pub pending: VecDeque<Value>,
    pub g: Guarantees,
}

impl Poll {
    pub async fn create(app: &TestApp, body: Value) -> Poll {
        let r = app
            .http
            .post(app.url("/poll"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let mut p = Poll {
            http: app.http.clone(),
            base: app.url(""),
            session: v["session"].as_str().expect("session id").to_owned(),
            pending: VecDeque::new(),
            g: Guarantees::default(),
        };
        p.take(&v);
        p
    }

    fn take(&mut self, body: &Value) {
        let msgs = body["messages"].as_array().expect("messages").clone();
        self.g.check_all(&msgs);
        self.pending.extend(msgs);
    }

    /// One `GET /poll/{session}?wait=..`; returns the HTTP status and body.
    pub async fn get(&mut self, wait: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}/poll/{}?wait={wait}", self.base, self.session))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        if status == 200 {
            self.take(&body);
        }
        (status, body)
    }

    /// `POST /poll/{session}` with one op; returns its replies (also checked).
    pub async fn op(&mut self, op: Value) -> Vec<Value> {
        let r = self
            .http
            .post(format!("{}/poll/{}", self.base, self.session))
            .json(&op)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let msgs = body["messages"].as_array().unwrap().clone();
        self.g.check_all(&msgs);
        msgs
    }
}

impl Source for Poll {
    async fn next_msg(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(m) = self.pending.pop_front() {
                return m;
            }
            assert!(Instant::now() < deadline, "no message within {WAIT:?}");
            let (status, body) = self.get("5").await;
            assert_eq!(status, 200, "{body}");
        }
    }
    fn g(&self) -> &Guarantees {
        &self.g
    }
}
