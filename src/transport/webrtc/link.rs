//! [`Link`]: what a peer's driver (on an HTTP worker) and the UDP task share.
//! The driver writes frames into it through [`PeerSink`]; the UDP task takes
//! them out, writes them to the peer's channels and says when there is room
//! again. Room means: both channels are open, the last frames have left, and
//! the unreliable channel is not congested. While there is no room the
//! session keeps conflating (one pending state per symbol), so nothing ever
//! queues behind a full SCTP buffer.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::transport::socket::Sink;

/// The channel a frame goes out on: its first byte (taken off before sending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Lane {
    /// Replies to ops: the reliable, ordered channel.
    Replies = 0,
    /// Quote state: the unreliable, unordered channel.
    Quotes = 1,
}

impl Lane {
    pub fn of(tag: u8) -> Lane {
        if tag == Lane::Quotes as u8 {
            Lane::Quotes
        } else {
            Lane::Replies
        }
    }
}

/// Wakes the UDP task when a driver wrote something for its peer.
#[derive(Default)]
pub struct TaskWake {
    /// Peers with frames (or an end) waiting, by id.
    pub dirty: Mutex<Vec<u64>>,
    pub notify: Notify,
}

#[derive(Default)]
pub struct LinkState {
    /// Frames written by the driver, each starting with its [`Lane`] byte.
    pub frames: VecDeque<Bytes>,
    pub unsent: usize,
    /// Both channels are open.
    pub open: bool,
    /// The unreliable channel holds more than it should: wait for it to drain.
    pub congested: bool,
    /// The driver is done: close once the frames have left.
    pub ending: bool,
    /// The driver is done: close now.
    pub aborted: bool,
    /// The UDP task dropped the peer: writes go nowhere.
    pub gone: bool,
}

/// One peer's shared state.
pub struct Link {
    pub id: u64,
    pub state: Mutex<LinkState>,
    /// The driver waits here for room.
    pub room: Notify,
    task: Arc<TaskWake>,
}

impl Link {
    pub fn new(id: u64, task: Arc<TaskWake>) -> Arc<Link> {
        Arc::new(Link {
            id,
            state: Mutex::default(),
            room: Notify::new(),
            task,
        })
    }

    fn has_room(&self) -> bool {
        let s = self.state.lock();
        s.gone || (s.open && !s.congested && s.frames.is_empty())
    }

    fn wake_task(&self) {
        self.task.dirty.lock().push(self.id);
        self.task.notify.notify_one();
    }

    /// Waits until `ready` holds (checked again after every wake-up).
    async fn wait_for(&self, ready: impl Fn(&Link) -> bool) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready(self) {
                return;
            }
            notified.await;
        }
    }

    /// The UDP task changed something the driver may be waiting for.
    pub fn wake_driver(&self) {
        self.room.notify_waiters();
    }
}

/// The driver's write side of a peer.
pub struct PeerSink(pub Arc<Link>);

impl Sink for PeerSink {
    fn has_room(&self) -> bool {
        self.0.has_room()
    }

    async fn writable(&self) {
        self.0.wait_for(Link::has_room).await;
    }

    async fn next_turn(&self) {
        self.0
            .wait_for(|l| {
                let s = l.state.lock();
                s.gone || s.frames.is_empty()
            })
            .await;
    }

    /// Never: a peer that takes nothing is congested, and the session
    /// conflates meanwhile; a vanished one expires on the UDP side.
    fn is_stalled(&self) -> bool {
        false
    }

    fn write(&self, encode: impl FnOnce(&mut BytesMut)) {
        let mut buf = BytesMut::new();
        encode(&mut buf);
        {
            let mut s = self.0.state.lock();
            if s.gone || s.ending || s.aborted || buf.is_empty() {
                return;
            }
            s.unsent += buf.len();
            s.frames.push_back(buf.freeze());
        }
        self.0.wake_task();
    }

    fn end(&self) {
        self.0.state.lock().ending = true;
        self.0.wake_task();
    }

    fn abort(&self) {
        self.0.state.lock().aborted = true;
        self.0.wake_task();
    }

    fn flushed(&self) -> bool {
        self.0.state.lock().frames.is_empty()
    }

    fn unsent(&self) -> usize {
        self.0.state.lock().unsent
    }
}

impl Drop for PeerSink {
    /// However the driver ended, the peer closes once its last frames left.
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_needs_open_channels_an_empty_queue_and_no_congestion() {
        let task = Arc::new(TaskWake::default());
        let link = Link::new(7, task.clone());
        let sink = PeerSink(link.clone());
        assert!(!sink.has_room(), "channels not open yet");
        link.state.lock().open = true;
        assert!(sink.has_room());
        sink.write(|b| b.extend_from_slice(b"\x01[]"));
        assert_eq!(*task.dirty.lock(), [7]);
        assert!(!sink.has_room() && !sink.flushed());
        assert_eq!(sink.unsent(), 3);
        link.state.lock().frames.clear();
        link.state.lock().congested = true;
        assert!(!sink.has_room());
        let waiting = tokio::spawn({
            let link = link.clone();
            async move { link.wait_for(Link::has_room).await }
        });
        tokio::task::yield_now().await;
        link.state.lock().congested = false;
        link.wake_driver();
        waiting.await.unwrap();
        assert!(!link.state.lock().ending);
        drop(sink);
        assert!(link.state.lock().ending, "a dropped sink ends the peer");
    }
}
