//! Long-polling as a socket: a session's driver task owns it, and HTTP
//! requests reach it by message (they may be served by any worker). A waiting
//! `GET` is the write side — a frame written while one waits answers it, and
//! one that waits too long is answered empty — and ops (`POST`) and the end
//! (`DELETE`) are the read side. A session nobody asks anything of for the
//! expiry time ends as expired.
//!
//! The socket can become a WebSocket ([`Upgrade`], Engine.IO's upgrade): the
//! connection comes from the worker that took it, and from then on the same
//! socket writes to and reads from it, the driver and its session unchanged.

use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use prometheus::IntGauge;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::{ClientFrame, ClientStream, DirectSocket, Incoming, OwnedStream, ReadError, Sink};
use crate::transport::CloseCode;

/// What a request asks of a long-polling session's driver.
#[derive(Debug)]
pub enum PollRequest {
    /// `GET`: the frames written next, or none once `until` passes; `None` when
    /// refused (a second `GET` where only one may wait).
    Wait {
        until: Instant,
        reply: oneshot::Sender<Option<Vec<Bytes>>>,
    },
    /// `POST` of client data whose answers go to the `GET`s (Engine.IO), sent
    /// before its body is read (one at a time: a second one ends the session).
    Post(Post),
    /// The session moves to this WebSocket.
    Upgrade(Box<Upgrade>),
    /// `POST`: one client message (`None`: none, only what is queued, as when
    /// a session is created without symbols); `reply` gets the frames of its
    /// replies.
    Op {
        body: Option<Bytes>,
        reply: Responder,
    },
    /// `DELETE`.
    End,
}

/// A `POST`'s body, once read, and the word that the session took it in
/// (dropped when it ended instead, or refused the `POST`).
#[derive(Debug)]
pub struct Post {
    pub body: oneshot::Receiver<Bytes>,
    pub taken: oneshot::Sender<()>,
}

/// Where the replies to one client message go: their frames, or the close
/// code that ended the session instead.
#[derive(Debug)]
pub struct Responder(pub oneshot::Sender<Result<Vec<Bytes>, CloseCode>>);

/// A WebSocket, handshake done, for a long-polling session to move to.
#[derive(Debug)]
pub struct Upgrade {
    /// Out of its worker's reactor (it joins the session's).
    pub stream: OwnedStream,
    /// What arrived after the handshake and was not read yet.
    pub read: BytesMut,
    /// The answer for a `GET` still waiting (the client stops polling).
    pub last_answer: Bytes,
    /// Rewrites frames written for `GET`s but never taken as WebSocket frames.
    pub reframe: fn(&[u8], &mut BytesMut),
    pub stall_timeout: Duration,
    pub max_frame_bytes: usize,
    /// Counts the WebSocket as open.
    pub open: Option<IntGauge>,
}

/// Two requests are never the same request.
impl PartialEq for Responder {
    fn eq(&self, _: &Responder) -> bool {
        false
    }
}

/// What the two halves share (one task touches it).
#[derive(Default)]
struct Shared {
    frames: Vec<Bytes>,
    waiting: Option<(Instant, oneshot::Sender<Option<Vec<Bytes>>>)>,
    ended: bool,
}

impl Shared {
    /// Hands what was written to the waiting `GET` (kept if it went away).
    fn answer(&mut self) {
        if let Some((_, reply)) = self.waiting.take() {
            let frames = std::mem::take(&mut self.frames);
            if let Err(Some(frames)) = reply.send(Some(frames)) {
                self.frames = frames;
            }
        }
    }
}

/// What a second `GET` does while one waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondGet {
    /// It takes over; the first is answered with what there is.
    TakesOver,
    /// It is refused and the session ends (Engine.IO).
    EndsTheSession,
}

/// A long-polling session's socket: [`PollSocket::new`] gives both halves.
pub struct PollSocket {
    shared: Rc<RefCell<Shared>>,
    /// A `GET` came to wait (a permit is kept if nobody listens yet).
    arrived: Rc<Notify>,
    /// Set once the session moved to a WebSocket.
    ws: Rc<OnceCell<DirectSocket>>,
}

/// The read side: requests, and the expiry.
pub struct PollInput {
    shared: Rc<RefCell<Shared>>,
    arrived: Rc<Notify>,
    requests: mpsc::Receiver<PollRequest>,
    expiry: std::time::Duration,
    second_get: SecondGet,
    ws: Rc<OnceCell<DirectSocket>>,
    /// A WebSocket the session is moving to.
    moving: Option<Moving>,
    /// The WebSocket's read side, once moved.
    frames: Option<Incoming>,
    /// Client messages to hand on before any other (those that came by HTTP
    /// while the session moved).
    backlog: VecDeque<ClientFrame>,
    /// The `POST` whose body is on its way.
    posting: Option<Post>,
    /// Told once the driver asks for the next message (the last body was taken in).
    taken: Option<oneshot::Sender<()>>,
}

/// A WebSocket the session moves to once the client speaks on it (Engine.IO's
/// `5`); until then writes still go to `GET`s, and a `GET` is answered at once
/// so the client can finish polling.
struct Moving {
    stream: Rc<ClientStream>,
    reader: Incoming,
    last_answer: Bytes,
    reframe: fn(&[u8], &mut BytesMut),
    stall_timeout: Duration,
    open: Option<IntGauge>,
}

impl PollSocket {
    /// Both halves, reading `requests`; the session expires after `expiry`
    /// without a request.
    pub fn new(
        requests: mpsc::Receiver<PollRequest>,
        expiry: std::time::Duration,
        second_get: SecondGet,
    ) -> (PollSocket, PollInput) {
        let shared = Rc::new(RefCell::new(Shared::default()));
        let arrived = Rc::new(Notify::new());
        let ws = Rc::new(OnceCell::new());
        let input = PollInput {
            shared: shared.clone(),
            arrived: arrived.clone(),
            requests,
            expiry,
            second_get,
            ws: ws.clone(),
            moving: None,
            frames: None,
            backlog: VecDeque::new(),
            posting: None,
            taken: None,
        };
        (
            PollSocket {
                shared,
                arrived,
                ws,
            },
            input,
        )
    }
}

impl Sink for PollSocket {
    fn has_room(&self) -> bool {
        if let Some(ws) = self.ws.get() {
            return ws.has_room();
        }
        let s = self.shared.borrow();
        s.waiting.is_some() && !s.ended
    }

    async fn writable(&self) {
        while self.ws.get().is_none() && self.shared.borrow().waiting.is_none() {
            self.arrived.notified().await;
        }
        if let Some(ws) = self.ws.get() {
            ws.writable().await;
        }
    }

    async fn next_turn(&self) {
        if let Some(ws) = self.ws.get() {
            ws.next_turn().await;
        }
    }

    fn is_stalled(&self) -> bool {
        self.ws.get().is_some_and(DirectSocket::is_stalled)
    }

    fn stall_deadline(&self) -> Option<Instant> {
        self.ws.get().and_then(DirectSocket::stall_deadline)
    }

    fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
        if let Some(ws) = self.ws.get() {
            return ws.write(encode);
        }
        let mut s = self.shared.borrow_mut();
        if s.ended {
            return;
        }
        let mut frame = BytesMut::new();
        encode(&mut frame);
        if !frame.is_empty() {
            s.frames.push(frame.freeze());
        }
        s.answer();
    }

    fn end(&self) {
        if let Some(ws) = self.ws.get() {
            return ws.end();
        }
        let mut s = self.shared.borrow_mut();
        s.ended = true;
        if let Some((_, reply)) = s.waiting.take() {
            let frames = std::mem::take(&mut s.frames);
            let _ = reply.send(Some(frames));
        }
    }

    fn abort(&self) {
        match self.ws.get() {
            Some(ws) => ws.abort(),
            None => self.end(),
        }
    }

    fn flushed(&self) -> bool {
        match self.ws.get() {
            Some(ws) => ws.flushed(),
            None => self.shared.borrow().frames.is_empty(),
        }
    }

    fn unsent(&self) -> usize {
        self.ws.get().map_or(0, DirectSocket::unsent)
    }

    async fn finish(&self, flush: Duration, drain: Duration) {
        if let Some(ws) = self.ws.get() {
            ws.finish(flush, drain).await;
        }
    }
}

impl PollInput {
    /// Starts moving the session to `to`: a waiting `GET` is answered now.
    fn start_moving(&mut self, to: Upgrade) -> Result<(), ReadError> {
        let stream = ClientStream::from_owned(to.stream)
            .map_err(|e| ReadError::Protocol(format!("the upgraded socket: {e}")))?;
        let stream = Rc::new(stream);
        let reader = Incoming::from_stream(stream.clone(), to.read, to.max_frame_bytes);
        self.moving = Some(Moving {
            stream,
            reader,
            last_answer: to.last_answer,
            reframe: to.reframe,
            stall_timeout: to.stall_timeout,
            open: to.open,
        });
        self.answer_now();
        Ok(())
    }

    /// Answers a waiting `GET` with what is there, or the moving session's
    /// last answer.
    fn answer_now(&mut self) {
        let Some(m) = &self.moving else { return };
        let mut s = self.shared.borrow_mut();
        if s.frames.is_empty() && s.waiting.is_some() {
            s.frames.push(m.last_answer.clone());
        }
        s.answer();
    }

    /// The session moves: what no `GET` took goes to the WebSocket, requests
    /// still queued are answered or kept, and no more are taken.
    fn switch(&mut self, m: Moving) {
        let ws = DirectSocket::new(m.stream, m.stall_timeout, m.open);
        let pending = {
            let mut s = self.shared.borrow_mut();
            if let Some((_, reply)) = s.waiting.take() {
                let _ = reply.send(Some(vec![m.last_answer.clone()]));
            }
            std::mem::take(&mut s.frames)
        };
        ws.write(|buf| {
            for frame in &pending {
                (m.reframe)(frame, buf);
            }
        });
        self.requests.close();
        while let Ok(request) = self.requests.try_recv() {
            match request {
                PollRequest::Wait { reply, .. } => {
                    let _ = reply.send(Some(vec![m.last_answer.clone()]));
                }
                PollRequest::End => self.backlog.push_back(ClientFrame::Close(None)),
                // A client that upgrades has stopped posting (its POSTs
                // answer 400); nobody asks the others of a session that can move.
                PollRequest::Post(_) | PollRequest::Op { .. } | PollRequest::Upgrade(_) => {}
            }
        }
        self.posting = None;
        self.frames = Some(m.reader);
        let _ = self.ws.set(ws);
        self.arrived.notify_one();
    }

    /// The next client message, or the end: `DELETE` is a close, a session the
    /// registry let go of is gone, and one left alone for the expiry time
    /// fails with [`ReadError::Expired`].
    pub async fn recv(&mut self) -> Option<Result<ClientFrame, ReadError>> {
        // Asked again: the driver took the last body in (and did not end).
        if let Some(taken) = self.taken.take() {
            let _ = taken.send(());
        }
        if let Some(frame) = self.backlog.pop_front() {
            return Some(Ok(frame));
        }
        if let Some(frames) = &mut self.frames {
            return frames.recv().await;
        }
        let mut idle_since = Instant::now();
        loop {
            let waiting_until = self.shared.borrow().waiting.as_ref().map(|(t, _)| *t);
            // A waiting GET holds the session open; the expiry runs between requests.
            let wake = waiting_until.unwrap_or(idle_since + self.expiry);
            let moving = self.moving.as_mut().map(|m| &mut m.reader);
            tokio::select! {
                request = self.requests.recv() => match request {
                    None => return None,
                    Some(PollRequest::End) => return Some(Ok(ClientFrame::Close(None))),
                    Some(PollRequest::Op { body, reply }) => {
                        return Some(Ok(ClientFrame::Request(body, reply)));
                    }
                    Some(PollRequest::Post(_)) if self.posting.is_some() => {
                        self.posting = None;
                        let error = "a second POST while one was under way";
                        return Some(Err(ReadError::Protocol(error.into())));
                    }
                    Some(PollRequest::Post(post)) => self.posting = Some(post),
                    Some(PollRequest::Upgrade(upgrade)) => {
                        if let Err(e) = self.start_moving(*upgrade) {
                            tracing::debug!(error = ?e, "upgrade failed; polling goes on");
                        }
                    }
                    Some(PollRequest::Wait { reply, .. })
                        if self.second_get == SecondGet::EndsTheSession
                            && self.shared.borrow().waiting.is_some() =>
                    {
                        let _ = reply.send(None);
                        let error = "a second GET while one was waiting";
                        return Some(Err(ReadError::Protocol(error.into())));
                    }
                    Some(PollRequest::Wait { until, reply }) => {
                        let mut s = self.shared.borrow_mut();
                        // A second GET takes over; the first is answered with what is there.
                        s.answer();
                        s.waiting = Some((until, reply));
                        if !s.frames.is_empty() {
                            s.answer();
                        }
                        drop(s);
                        self.answer_now();
                        self.arrived.notify_one();
                    }
                },
                body = next_body(&mut self.posting) => {
                    // unwrap-free: the branch runs only while a POST is under way.
                    let Some(post) = self.posting.take() else { continue };
                    if let Ok(body) = body {
                        self.taken = Some(post.taken);
                        return Some(Ok(ClientFrame::Text(body)));
                    }
                    // The POST went (its body too large, its client gone).
                }
                frame = next_frame(moving) => {
                    // unwrap-free: the branch runs only while moving.
                    let Some(m) = self.moving.take() else { continue };
                    match frame {
                        Some(Ok(frame)) => {
                            self.switch(m);
                            self.backlog.push_back(frame);
                            return Some(Ok(ClientFrame::Upgraded));
                        }
                        // The WebSocket failed before the client used it: polling goes on.
                        _ => drop(m),
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    if waiting_until.is_none() {
                        return Some(Err(ReadError::Expired));
                    }
                    self.shared.borrow_mut().answer();
                    idle_since = Instant::now();
                }
            }
        }
    }
}

/// The body of the `POST` under way; never, without one.
async fn next_body(post: &mut Option<Post>) -> Result<Bytes, oneshot::error::RecvError> {
    match post {
        Some(p) => (&mut p.body).await,
        None => std::future::pending().await,
    }
}

/// The next frame of a WebSocket being moved to; never, without one.
async fn next_frame(reader: Option<&mut Incoming>) -> Option<Result<ClientFrame, ReadError>> {
    match reader {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const EXPIRY: Duration = Duration::from_secs(60);

    fn socket() -> (mpsc::Sender<PollRequest>, PollSocket, PollInput) {
        let (tx, rx) = mpsc::channel(8);
        let (out, input) = PollSocket::new(rx, EXPIRY, SecondGet::TakesOver);
        (tx, out, input)
    }

    async fn wait(
        tx: &mpsc::Sender<PollRequest>,
        input: &mut PollInput,
        for_: Duration,
    ) -> oneshot::Receiver<Option<Vec<Bytes>>> {
        let (reply, rx) = oneshot::channel();
        let until = Instant::now() + for_;
        tx.send(PollRequest::Wait { until, reply }).await.unwrap();
        // The input takes the request in and keeps waiting for the next.
        let _ = tokio::time::timeout(Duration::from_millis(1), input.recv()).await;
        rx
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_answers_the_waiting_get_and_later_writes_wait_for_the_next() {
        let (tx, out, mut input) = socket();
        assert!(!out.has_room());
        out.write(|b| b.extend_from_slice(b"early"));
        // Written before anyone waited: the first GET gets it at once.
        let first = wait(&tx, &mut input, Duration::from_secs(25)).await;
        assert_eq!(
            first.await.unwrap(),
            Some(vec![Bytes::from_static(b"early")])
        );
        let second = wait(&tx, &mut input, Duration::from_secs(25)).await;
        assert!(out.has_room());
        out.writable().await;
        out.write(|b| b.extend_from_slice(b"a"));
        assert!(!out.has_room(), "one frame per GET");
        out.write(|b| b.extend_from_slice(b"b"));
        assert_eq!(second.await.unwrap(), Some(vec![Bytes::from_static(b"a")]));
        let third = wait(&tx, &mut input, Duration::from_secs(25)).await;
        assert_eq!(third.await.unwrap(), Some(vec![Bytes::from_static(b"b")]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_get_that_waits_too_long_is_answered_empty_and_a_second_takes_over() {
        let (tx, out, mut input) = socket();
        let first = wait(&tx, &mut input, Duration::from_secs(25)).await;
        let second = wait(&tx, &mut input, Duration::from_secs(5)).await;
        assert_eq!(first.await.unwrap(), Some(vec![]));
        let recv = tokio::time::timeout(Duration::from_secs(6), input.recv()).await;
        assert!(recv.is_err(), "the input keeps going after the timeout");
        assert_eq!(second.await.unwrap(), Some(vec![]));
        assert!(!out.has_room());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_left_alone_expires_and_delete_closes() {
        let (tx, _out, mut input) = socket();
        let started = Instant::now();
        assert_eq!(input.recv().await, Some(Err(ReadError::Expired)));
        assert!(started.elapsed() >= EXPIRY);
        tx.send(PollRequest::End).await.unwrap();
        assert_eq!(input.recv().await, Some(Ok(ClientFrame::Close(None))));
        drop(tx);
        assert_eq!(input.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn ending_answers_the_waiting_get_with_what_is_left() {
        let (tx, out, mut input) = socket();
        let get = wait(&tx, &mut input, Duration::from_secs(25)).await;
        out.end();
        out.write(|b| b.extend_from_slice(b"after the end"));
        assert_eq!(get.await.unwrap(), Some(vec![]));
        assert!(out.flushed());
    }
}
