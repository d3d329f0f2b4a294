//! `--protocol webrtc`: each client is a str0m peer (sans-IO, driven by its
//! own lightweight task on its own UDP socket, like a WebSocket client's task)
//! that posts its offer to `POST /webrtc/offer`, runs ICE, DTLS and SCTP to
//! the gateway's UDP port, opens the two channels the gateway expects and
//! subscribes with a ticker.v1 op on the reliable one. Quote messages on the
//! unreliable channel are whole states: [`newest`] counts one as a delivered
//! update when it brings a newer `seq` than the client holds (PROTOCOL.md
//! section 13), with its latency from `ti` as for every protocol.

mod newest;
mod peer;
mod signal;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use str0m::{Rtc, RtcConfig};

use crate::client::{now_us, timed, Client, Plan, Progress, SNAPSHOT_WAIT};
use crate::frame::{self, Tally};
use newest::Newest;
use peer::{Got, Peer};

/// The configuration every peer is built from: one DTLS certificate for all
/// (made once: a certificate per peer would cost each a key generation).
pub fn config() -> anyhow::Result<RtcConfig> {
    let provider = str0m::crypto::from_feature_flags();
    let cert = provider
        .dtls_provider
        .generate_certificate()
        .context("cannot make the WebRTC DTLS certificate")?;
    let config = Rtc::builder()
        .set_crypto_provider(Arc::new(provider))
        .set_dtls_cert(cert)
        .clear_codecs();
    // unwrap (inside str0m's build, which panics on a bad config): built once
    // here, so a peer's build of the same config cannot fail.
    drop(config.clone().build(Instant::now()));
    Ok(config)
}

/// One client for the whole run; `settle` as for a WebSocket client (called
/// once: connect failed, all snapshots came, or `SNAPSHOT_WAIT` passed).
pub async fn run(plan: Arc<Plan>, client: Client, settle: impl FnOnce()) {
    let stats = &plan.stats;
    let Some(mut peer) = timed(&plan, Peer::connect(&plan, client.source)).await else {
        return settle();
    };
    stats.open.fetch_add(1, Ordering::Relaxed);
    match peer.send_op(&client.subscribe.clone().into_data()) {
        Ok(()) => read_loop(&plan, &client, &mut peer, settle).await,
        Err(key) => {
            stats.error(key);
            settle();
        }
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
}

/// Reads channel messages until the peer goes away.
async fn read_loop(plan: &Plan, client: &Client, peer: &mut Peer, settle: impl FnOnce()) {
    let stats = &plan.stats;
    let mut settle = Some(settle);
    let mut tally = Tally::default();
    let mut newest = Newest::with_capacity(client.symbols as usize);
    let mut progress = Progress::start();
    let snapshot_deadline = tokio::time::sleep(SNAPSHOT_WAIT);
    tokio::pin!(snapshot_deadline);
    loop {
        let got = tokio::select! {
            got = peer.next() => got,
            _ = &mut snapshot_deadline, if settle.is_some() => {
                if let Some(f) = settle.take() {
                    f();
                }
                continue;
            }
        };
        let data = match got {
            Ok(Got::Data(data)) => data,
            Ok(Got::Open) => continue,
            Ok(Got::Closed) => {
                stats.close("webrtc");
                break;
            }
            Err(key) => {
                stats.error(key);
                break;
            }
        };
        tally.reset();
        let parsed = if peer.is_quotes(data.id) {
            newest.read(&data.data, now_us(), &mut tally)
        } else {
            frame::read_json(&data.data, now_us(), &mut tally)
        };
        if parsed.is_err() {
            stats.error("parse: webrtc");
            continue;
        }
        progress.frame(stats, client, data.data.len(), &tally, &mut settle);
    }
    if let Some(f) = settle.take() {
        f();
    }
    progress.end(stats);
}
