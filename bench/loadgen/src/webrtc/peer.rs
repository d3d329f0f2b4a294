//! One str0m peer on its own UDP socket: the offer with both channels,
//! connecting until they are open, then one turn of the state machine per
//! call (send what it has to send, feed it a datagram or its timer).

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::change::SdpAnswer;
use str0m::channel::{ChannelConfig, ChannelData, ChannelId, Reliability};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;

use super::signal;
use crate::client::Plan;

/// The gateway's channel labels (src/transport/webrtc/udp.rs): ops and
/// replies on the reliable one, quote states on the unreliable one.
const REPLIES_LABEL: &str = "ticker.v1";
const QUOTES_LABEL: &str = "quotes";

/// Largest datagram read (a path MTU is well below it).
const DATAGRAM_BYTES: usize = 2048;

/// What one turn brought.
pub enum Got {
    /// A channel opened.
    Open,
    Data(ChannelData),
    /// The server closed a channel, or the peer is gone.
    Closed,
}

pub struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    replies: ChannelId,
    quotes: ChannelId,
    buf: Vec<u8>,
}

fn io_key(stage: &str, e: &std::io::Error) -> String {
    format!("{stage}: io {:?}", e.kind())
}

impl Peer {
    /// Binds a UDP socket on `source`, posts the offer, and runs the peer
    /// until both channels are open.
    pub async fn connect(plan: &Plan, source: IpAddr) -> Result<Peer, String> {
        let socket = UdpSocket::bind(SocketAddr::new(source, 0))
            .await
            .map_err(|e| io_key("bind", &e))?;
        let local = socket.local_addr().map_err(|e| io_key("bind", &e))?;
        let config = plan.rtc.clone().ok_or("webrtc: no peer configuration")?;
        let mut rtc = config.build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
        rtc.add_local_candidate(candidate);
        let mut api = rtc.sdp_api();
        let replies = api.add_channel_with_config(ChannelConfig {
            label: REPLIES_LABEL.into(),
            ..Default::default()
        });
        let quotes = api.add_channel_with_config(ChannelConfig {
            label: QUOTES_LABEL.into(),
            ordered: false,
            reliability: Reliability::MaxRetransmits { retransmits: 0 },
            ..Default::default()
        });
        let (offer, pending) = api.apply().ok_or("offer: nothing to offer")?;
        let answer = signal::post_offer(plan.server, &offer.to_sdp_string()).await?;
        let answer =
            SdpAnswer::from_sdp_string(&answer).map_err(|e| format!("offer: bad answer: {e}"))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| format!("offer: answer refused: {e}"))?;
        let mut peer = Peer {
            rtc,
            socket,
            local,
            replies,
            quotes,
            buf: vec![0; DATAGRAM_BYTES],
        };
        let mut open = 0;
        while open < 2 {
            match peer.next().await? {
                Got::Open => open += 1,
                Got::Data(_) => {} // a reply before the second channel opened: none expected
                Got::Closed => return Err("connect: closed".into()),
            }
        }
        Ok(peer)
    }

    pub fn is_quotes(&self, id: ChannelId) -> bool {
        id == self.quotes
    }

    /// Sends a ticker.v1 op on the reliable channel.
    pub fn send_op(&mut self, op: &[u8]) -> Result<(), String> {
        let mut channel = self
            .rtc
            .channel(self.replies)
            .ok_or("send: no reply channel")?;
        match channel.write(false, op) {
            Ok(true) => Ok(()),
            Ok(false) => Err("send: channel full".into()),
            Err(e) => Err(format!("send: {e}")),
        }
    }

    /// Runs the peer until its next channel event. Cancel-safe: sending never
    /// waits (a datagram the socket cannot take now is lost, as UDP may lose
    /// it anyway) and receiving is cancel-safe.
    pub async fn next(&mut self) -> Result<Got, String> {
        loop {
            if !self.rtc.is_alive() {
                return Ok(Got::Closed);
            }
            let output = self.rtc.poll_output().map_err(|e| format!("rtc: {e}"))?;
            let at = match output {
                Output::Transmit(t) => {
                    match self.socket.try_send_to(&t.contents, t.destination) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => return Err(io_key("send", &e)),
                    }
                    continue;
                }
                Output::Event(Event::ChannelOpen(..)) => return Ok(Got::Open),
                Output::Event(Event::ChannelData(d)) => return Ok(Got::Data(d)),
                Output::Event(Event::ChannelClose(_))
                | Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => return Ok(Got::Closed),
                Output::Event(_) => continue,
                Output::Timeout(at) => at,
            };
            let input = tokio::select! {
                r = self.socket.recv_from(&mut self.buf) => {
                    let (n, source) = r.map_err(|e| io_key("read", &e))?;
                    let Ok(contents) = self.buf[..n].try_into() else {
                        continue; // not STUN, DTLS or RTP: not from the gateway
                    };
                    Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    })
                }
                _ = tokio::time::sleep_until(at.into()) => Input::Timeout(Instant::now()),
            };
            self.rtc
                .handle_input(input)
                .map_err(|e| format!("rtc: {e}"))?;
        }
    }
}
