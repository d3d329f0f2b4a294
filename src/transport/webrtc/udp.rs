//! The UDP task: one socket and one task for every WebRTC peer. It owns each
//! peer's sans-IO [`Rtc`] (ICE-lite, DTLS, SCTP), finds the peer of a datagram
//! (a STUN binding request by the ICE ufrag it is addressed to, anything else
//! by source address), moves channel messages to and from the peer's driver
//! through its [`Link`], and drops peers that went quiet for
//! `webrtc.idle_timeout`. Timers are a heap with at most one live entry per
//! peer, so a turn costs what its own peer costs, not a scan of every peer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::Rng;
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::link::{Lane, Link, TaskWake};
use super::stun;
use crate::metrics::Metrics;
use crate::transport::socket::{ClientFrame, ReadError};

/// The reliable channel: client ops in, replies out.
pub const REPLIES_LABEL: &str = "ticker.v1";
/// The unreliable, unordered channel: quote state out.
pub const QUOTES_LABEL: &str = "quotes";

/// A quote channel holding more than this is congested: the driver waits
/// (and its session conflates) until it drains below [`LOW_WATER`].
const HIGH_WATER: usize = 64 * 1024;
const LOW_WATER: usize = 16 * 1024;

/// Most source addresses remembered per peer.
const MAX_ADDRESSES: usize = 4;

/// Largest datagram read (a path MTU is well below it).
const DATAGRAM_BYTES: usize = 2048;

/// A peer handed over by `POST /webrtc/offer`.
pub struct NewPeer {
    pub rtc: Rtc,
    pub ufrag: String,
    pub link: Arc<Link>,
    pub input: mpsc::Sender<Result<ClientFrame, ReadError>>,
    pub span: tracing::Span,
}

struct Peer {
    rtc: Rtc,
    ufrag: String,
    link: Arc<Link>,
    input: mpsc::Sender<Result<ClientFrame, ReadError>>,
    span: tracing::Span,
    /// The addresses its STUN requests came from (a browser may check several
    /// candidate pairs); datagrams from any of them are its own.
    addrs: Vec<SocketAddr>,
    replies: Option<ChannelId>,
    quotes: Option<ChannelId>,
    last_heard: Instant,
    /// The earliest timer entry this peer has in the heap.
    scheduled: Option<Instant>,
}

/// What the task needs, before it runs.
pub struct UdpTask {
    pub socket: std::net::UdpSocket,
    /// The address peers send to (the answer's candidate).
    pub candidate: SocketAddr,
    pub wake: Arc<TaskWake>,
    pub new_peers: mpsc::Receiver<NewPeer>,
    pub metrics: Arc<Metrics>,
    pub idle_timeout: Duration,
    pub max_frame_bytes: usize,
    /// Tests only: drops this share of what is sent (`webrtc.test_drop_fraction`).
    pub loss: Option<Loss>,
}

/// Simulated loss in the transmit path (tests only): seeded, so repeatable.
pub struct Loss {
    pub fraction: f64,
    pub rng: SmallRng,
}

impl Loss {
    fn drops(&mut self) -> bool {
        self.rng.random::<f64>() < self.fraction
    }
}

struct Running {
    socket: UdpSocket,
    candidate: SocketAddr,
    metrics: Arc<Metrics>,
    idle_timeout: Duration,
    max_frame_bytes: usize,
    loss: Option<Loss>,
    peers: HashMap<u64, Peer>,
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl UdpTask {
    /// Runs until shutdown; every peer is dropped then (its driver ends).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let UdpTask {
            socket,
            candidate,
            wake,
            mut new_peers,
            metrics,
            idle_timeout,
            max_frame_bytes,
            loss,
        } = self;
        let socket = match UdpSocket::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "webrtc: cannot use the UDP socket");
                return;
            }
        };
        let mut t = Running {
            socket,
            candidate,
            metrics,
            idle_timeout,
            max_frame_bytes,
            loss,
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            timers: BinaryHeap::new(),
        };
        let mut buf = vec![0u8; DATAGRAM_BYTES];
        let shutting_down = shutdown.wait_for(|s| *s);
        tokio::pin!(shutting_down);
        loop {
            let next = t.timers.peek().map(|Reverse((at, _))| *at);
            let timer = async move {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut shutting_down => break,
                Some(peer) = new_peers.recv() => t.add(peer),
                _ = wake.notify.notified() => {
                    let mut dirty = std::mem::take(&mut *wake.dirty.lock());
                    dirty.sort_unstable();
                    dirty.dedup();
                    let now = Instant::now();
                    for id in dirty {
                        t.drive(id, now);
                    }
                }
                r = t.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => t.receive(&buf[..n], from),
                    Err(e) => tracing::debug!(error = %e, "webrtc: UDP receive failed"),
                },
                _ = timer => t.on_timers(),
            }
        }
        let ids: Vec<u64> = t.peers.keys().copied().collect();
        for id in ids {
            t.remove(id);
        }
    }
}

impl Running {
    fn add(&mut self, new: NewPeer) {
        let id = new.link.id;
        self.by_ufrag.insert(new.ufrag.clone(), id);
        self.metrics.webrtc_peers.inc();
        self.peers.insert(
            id,
            Peer {
                rtc: new.rtc,
                ufrag: new.ufrag,
                link: new.link,
                input: new.input,
                span: new.span,
                addrs: Vec::new(),
                replies: None,
                quotes: None,
                last_heard: Instant::now(),
                scheduled: None,
            },
        );
        self.drive(id, Instant::now());
    }

    /// A datagram: STUN finds its peer by ufrag, the rest by address.
    fn receive(&mut self, data: &[u8], from: SocketAddr) {
        let id = match stun::target_ufrag(data) {
            Some(ufrag) => self.by_ufrag.get(ufrag),
            None => self.by_addr.get(&from),
        };
        let Some(&id) = id else {
            self.metrics.webrtc_datagrams_ignored.inc();
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        let Ok(contents) = data.try_into() else {
            self.metrics.webrtc_datagrams_ignored.inc();
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: self.candidate,
                contents,
            },
        );
        if !peer.rtc.accepts(&input) {
            self.metrics.webrtc_datagrams_ignored.inc();
            return;
        }
        let _entered = peer.span.clone().entered();
        peer.last_heard = now;
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(error = %e, "webrtc: bad input; dropping the peer");
            peer.rtc.disconnect();
        }
        if !peer.addrs.contains(&from) {
            if peer.addrs.len() == MAX_ADDRESSES {
                let oldest = peer.addrs.remove(0);
                self.by_addr.remove(&oldest);
            }
            peer.addrs.push(from);
            // A new peer from an address another one used takes it over.
            if let Some(previous) = self.by_addr.insert(from, id) {
                if let Some(p) = self.peers.get_mut(&previous).filter(|_| previous != id) {
                    p.addrs.retain(|a| *a != from);
                }
            }
        }
        self.drive(id, now);
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if peer.scheduled != Some(at) {
                continue; // superseded by an earlier entry, already handled
            }
            peer.scheduled = None;
            if now >= peer.last_heard + self.idle_timeout {
                let _entered = peer.span.clone().entered();
                tracing::debug!("webrtc: peer idle; dropping it");
                self.remove(id);
                continue;
            }
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(error = %e, "webrtc: timeout handling failed");
                peer.rtc.disconnect();
            }
            self.drive(id, now);
        }
    }

    /// Moves the driver's frames into the channels, sends what the peer has
    /// to send, handles its events, and sets its next timer.
    fn drive(&mut self, id: u64, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let _entered = peer.span.clone().entered();
        flush(peer, &self.metrics);
        let due = loop {
            if !peer.rtc.is_alive() {
                break None;
            }
            match peer.rtc.poll_output() {
                Ok(Output::Transmit(t)) => {
                    if self.loss.as_mut().is_some_and(Loss::drops) {
                        continue;
                    }
                    match self.socket.try_send_to(&t.contents, t.destination) {
                        Ok(n) => {
                            self.metrics.webrtc_datagrams_sent.inc();
                            self.metrics.webrtc_bytes_sent.inc_by(n as u64);
                        }
                        // UDP may lose it anyway: SCTP and DTLS retransmit.
                        Err(e) => tracing::debug!(error = %e, "webrtc: UDP send failed"),
                    }
                }
                Ok(Output::Timeout(at)) => break Some(at),
                Ok(Output::Event(e)) => on_event(peer, e, self.max_frame_bytes),
                Err(e) => {
                    tracing::debug!(error = %e, "webrtc: peer failed");
                    peer.rtc.disconnect();
                }
            }
        };
        let ending = {
            let s = peer.link.state.lock();
            s.aborted || (s.ending && s.frames.is_empty())
        };
        let Some(due) = due.filter(|_| !ending) else {
            self.remove(id);
            return;
        };
        let due = due.min(peer.last_heard + self.idle_timeout).max(now);
        if peer.scheduled.is_none_or(|s| due < s) {
            peer.scheduled = Some(due);
            self.timers.push(Reverse((due, id)));
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        let _entered = peer.span.clone().entered();
        tracing::debug!("webrtc: peer dropped");
        peer.rtc.disconnect();
        self.by_ufrag.remove(&peer.ufrag);
        for addr in &peer.addrs {
            self.by_addr.remove(addr);
        }
        peer.link.state.lock().gone = true;
        peer.link.wake_driver();
        self.metrics.webrtc_peers.dec();
        // Dropping `peer.input` ends the driver's reader: the session ends.
    }
}

/// Writes the driver's frames to their channels. A quote frame the
/// unreliable channel has no room for is dropped (the session already holds
/// the newer state; the next message or the refresh repairs it); a reply waits.
fn flush(peer: &mut Peer, metrics: &Metrics) {
    let link = peer.link.clone();
    let mut s = link.state.lock();
    if !s.open {
        return;
    }
    if s.congested
        && buffered(peer, peer.replies) <= LOW_WATER
        && buffered(peer, peer.quotes) <= LOW_WATER
    {
        // Drained without crossing the threshold (or before it was set).
        s.congested = false;
        link.wake_driver();
    }
    let had = !s.frames.is_empty();
    while let Some(frame) = s.frames.pop_front() {
        let lane = Lane::of(frame[0]);
        let cid = match lane {
            Lane::Replies => peer.replies,
            Lane::Quotes => peer.quotes,
        };
        // Both ids are set once `open` is; a channel gone is a peer closing.
        let Some(mut channel) = cid.and_then(|c| peer.rtc.channel(c)) else {
            s.unsent -= frame.len();
            continue;
        };
        let accepted = match channel.write(false, &frame[1..]) {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "webrtc: channel write failed");
                false
            }
        };
        let congested = channel.buffered_amount() > HIGH_WATER;
        if !accepted && lane == Lane::Replies {
            // Replies must arrive: this one waits for room.
            s.frames.push_front(frame);
            s.congested = true;
            break;
        }
        s.unsent -= frame.len();
        if !accepted {
            metrics.webrtc_messages_dropped.inc();
        }
        if congested || !accepted {
            s.congested = true;
        }
    }
    if had && s.frames.is_empty() && !s.congested {
        drop(s);
        link.wake_driver();
    }
}

fn buffered(peer: &mut Peer, cid: Option<ChannelId>) -> usize {
    cid.and_then(|c| peer.rtc.channel(c))
        .map_or(0, |mut c| c.buffered_amount())
}

fn on_event(peer: &mut Peer, event: Event, max_frame_bytes: usize) {
    match event {
        Event::ChannelOpen(cid, label) => {
            match label.as_str() {
                REPLIES_LABEL => peer.replies = Some(cid),
                QUOTES_LABEL => peer.quotes = Some(cid),
                other => tracing::debug!(label = other, "webrtc: unknown channel ignored"),
            }
            if let Some(mut channel) = peer.rtc.channel(cid) {
                channel.set_buffered_amount_low_threshold(LOW_WATER);
            }
            if peer.replies.is_some() && peer.quotes.is_some() {
                tracing::debug!("webrtc: channels open");
                peer.link.state.lock().open = true;
                peer.link.wake_driver();
            }
        }
        Event::ChannelData(d) if Some(d.id) == peer.replies => {
            let frame = if d.data.len() > max_frame_bytes {
                Err(ReadError::TooLarge)
            } else if d.binary {
                Ok(ClientFrame::Binary(Bytes::from(d.data)))
            } else {
                Ok(ClientFrame::Text(Bytes::from(d.data)))
            };
            if peer.input.try_send(frame).is_err() {
                // The driver is far behind (or gone): a flood ends the peer.
                tracing::debug!("webrtc: client messages pile up; dropping the peer");
                peer.rtc.disconnect();
            }
        }
        Event::ChannelBufferedAmountLow(_) => {
            peer.link.state.lock().congested = false;
            peer.link.wake_driver();
        }
        Event::ChannelClose(cid) if Some(cid) == peer.replies || Some(cid) == peer.quotes => {
            tracing::debug!("webrtc: channel closed by the client");
            peer.rtc.disconnect();
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            peer.rtc.disconnect();
        }
        _ => {}
    }
}
