//! Long-polling as a socket: a session's driver task owns it, and HTTP
//! requests reach it by message (they may be served by any worker). A waiting
//! `GET` is the write side — a frame written while one waits answers it, and
//! one that waits too long is answered empty — and ops (`POST`) and the end
//! (`DELETE`) are the read side. A session nobody asks anything of for the
//! expiry time ends as expired.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;

use super::{ClientFrame, ReadError, Sink};
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
    /// `POST` of client data whose answers go to the `GET`s (Engine.IO).
    Data(Bytes),
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

/// Where the replies to one client message go: their frames, or the close
/// code that ended the session instead.
#[derive(Debug)]
pub struct Responder(pub oneshot::Sender<Result<Vec<Bytes>, CloseCode>>);

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
}

/// The read side: requests, and the expiry.
pub struct PollInput {
    shared: Rc<RefCell<Shared>>,
    arrived: Rc<Notify>,
    requests: mpsc::Receiver<PollRequest>,
    expiry: std::time::Duration,
    second_get: SecondGet,
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
        let input = PollInput {
            shared: shared.clone(),
            arrived: arrived.clone(),
            requests,
            expiry,
            second_get,
        };
        (PollSocket { shared, arrived }, input)
    }
}

impl Sink for PollSocket {
    fn has_room(&self) -> bool {
        let s = self.shared.borrow();
        s.waiting.is_some() && !s.ended
    }

    async fn writable(&self) {
        while self.shared.borrow().waiting.is_none() {
            self.arrived.notified().await;
        }
    }

    async fn next_turn(&self) {}

    fn is_stalled(&self) -> bool {
        false
    }

    fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
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
        let mut s = self.shared.borrow_mut();
        s.ended = true;
        if let Some((_, reply)) = s.waiting.take() {
            let frames = std::mem::take(&mut s.frames);
            let _ = reply.send(Some(frames));
        }
    }

    fn abort(&self) {
        self.end();
    }

    fn flushed(&self) -> bool {
        self.shared.borrow().frames.is_empty()
    }

    fn unsent(&self) -> usize {
        0
    }
}

impl PollInput {
    /// The next client message, or the end: `DELETE` is a close, a session the
    /// registry let go of is gone, and one left alone for the expiry time
    /// fails with [`ReadError::Expired`].
    pub async fn recv(&mut self) -> Option<Result<ClientFrame, ReadError>> {
        let mut idle_since = Instant::now();
        loop {
            let waiting_until = self.shared.borrow().waiting.as_ref().map(|(t, _)| *t);
            // A waiting GET holds the session open; the expiry runs between requests.
            let wake = waiting_until.unwrap_or(idle_since + self.expiry);
            tokio::select! {
                request = self.requests.recv() => match request {
                    None => return None,
                    Some(PollRequest::End) => return Some(Ok(ClientFrame::Close(None))),
                    Some(PollRequest::Op { body, reply }) => {
                        return Some(Ok(ClientFrame::Request(body, reply)));
                    }
                    Some(PollRequest::Data(body)) => return Some(Ok(ClientFrame::Text(body))),
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
                        self.arrived.notify_one();
                    }
                },
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
