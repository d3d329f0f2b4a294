//! WebRTC DataChannels (PROTOCOL.md section 13): `POST /webrtc/offer`
//! ([`signal`]) answers a browser's SDP offer and hands the new peer to the
//! one [UDP task](udp) that serves every peer on one port with str0m's
//! sans-IO state machines; the peer's session runs on the one
//! [driver](super::driver) like every transport, its socket a [`link`] to the
//! UDP task and its wire protocol [`wire`]: ops and replies on a reliable
//! channel, whole-state quote messages on an unreliable, unordered one.

mod link;
pub mod signal;
mod stun;
pub mod udp;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use str0m::{Candidate, Rtc, RtcConfig};
use tokio::sync::{mpsc, watch};

use crate::metrics::Metrics;
use crate::settings::Settings;
use link::TaskWake;
use udp::{NewPeer, UdpTask};

pub use udp::{QUOTES_LABEL, REPLIES_LABEL};
pub use wire::QUOTE_MESSAGE_BYTES;

/// Offers handed over but not yet taken by the UDP task; beyond it `POST
/// /webrtc/offer` answers 503.
const NEW_PEER_QUEUE: usize = 256;

/// The UDP port's receive buffer. Every peer's datagrams (SCTP acks above
/// all) land in this one socket, and a fan-out makes many peers ack at once:
/// the kernel's default (208 KiB, about 200 small datagrams) overflows within
/// milliseconds of the task not reading, and a sender whose acks are lost
/// stalls for its retransmission timeout. A bigger buffer absorbs bursts and
/// scheduling gaps (it cannot help a task that is saturated). The kernel caps
/// it at `net.core.rmem_max`.
const RECEIVE_BUFFER_BYTES: libc::c_int = 4 << 20;

/// The WebRTC side of the gateway: the bound UDP port and how new peers reach
/// its task.
pub struct WebRtc {
    /// ICE-lite, with the one DTLS certificate every peer shares.
    config: RtcConfig,
    candidate: SocketAddr,
    /// The answer's one candidate: `candidate`, a host candidate over UDP.
    host: Candidate,
    local: SocketAddr,
    new_peers: mpsc::Sender<NewPeer>,
    wake: Arc<TaskWake>,
    next_id: AtomicU64,
    /// Taken by [`WebRtc::start`].
    task: Mutex<Option<UdpTask>>,
    refresh: Duration,
}

impl WebRtc {
    /// Binds `webrtc.udp_port` when WebRTC is enabled (`None` when not).
    pub fn bind(settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Option<WebRtc>> {
        let w = &settings.webrtc;
        if !w.enabled {
            return Ok(None);
        }
        let addr = format!("{}:{}", settings.server.host, w.udp_port);
        let socket = std::net::UdpSocket::bind(&addr)
            .map_err(|e| anyhow::anyhow!("cannot bind the WebRTC UDP port {addr}: {e}"))?;
        socket.set_nonblocking(true)?;
        if let Err(e) = set_receive_buffer(&socket, RECEIVE_BUFFER_BYTES) {
            tracing::warn!(error = %e, "webrtc: cannot enlarge the UDP receive buffer");
        }
        let local = socket.local_addr()?;
        let ip = w
            .candidate_ip(local.ip())
            .map_err(|e| anyhow::anyhow!("invalid setting webrtc.public_ip: {e}"))?;
        let candidate = SocketAddr::new(ip, local.port());
        let host = Candidate::host(candidate, "udp")
            .map_err(|e| anyhow::anyhow!("invalid WebRTC candidate {candidate}: {e}"))?;
        let provider = str0m::crypto::from_feature_flags();
        let cert = provider
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| anyhow::anyhow!("cannot make the WebRTC DTLS certificate"))?;
        let config = Rtc::builder()
            .set_ice_lite(true)
            .set_crypto_provider(Arc::new(provider))
            .set_dtls_cert(cert)
            .clear_codecs();
        // unwrap (inside str0m's build, which panics on a bad config): built
        // once here at start-up, so a peer's build of the same config cannot fail.
        drop(config.clone().build(std::time::Instant::now()));
        if w.test_drop_fraction > 0.0 {
            tracing::warn!(
                fraction = w.test_drop_fraction,
                "webrtc: dropping sent datagrams on purpose (webrtc.test_drop_fraction, tests only)"
            );
        }
        let (new_peers, receiver) = mpsc::channel(NEW_PEER_QUEUE);
        let wake = Arc::new(TaskWake::default());
        let task = UdpTask {
            socket,
            candidate,
            wake: wake.clone(),
            new_peers: receiver,
            metrics: metrics.clone(),
            idle_timeout: w.idle_timeout,
            max_frame_bytes: settings.session.max_frame_bytes,
            loss: (w.test_drop_fraction > 0.0).then(|| udp::Loss {
                fraction: w.test_drop_fraction,
                rng: rand::SeedableRng::seed_from_u64(w.test_drop_seed),
            }),
        };
        Ok(Some(WebRtc {
            config,
            candidate,
            host,
            local,
            new_peers,
            wake,
            next_id: AtomicU64::new(1),
            task: Mutex::new(Some(task)),
            refresh: w.refresh_interval,
        }))
    }

    /// Starts the UDP task (once; later calls do nothing).
    pub fn start(&self, shutdown: watch::Receiver<bool>) {
        if let Some(task) = self.task.lock().take() {
            tracing::info!(udp = %self.local, candidate = %self.candidate, "webrtc: listening");
            tokio::spawn(task.run(shutdown));
        }
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// `SO_RCVBUF` (the kernel doubles it for its bookkeeping and caps it).
fn set_receive_buffer(socket: &std::net::UdpSocket, bytes: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open (borrowed from `socket`); the call only
    // reads the int we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
