//! `POST /webrtc/offer`: `{"sdp": "<the browser's offer>"}` in,
//! `{"sdp": "<our answer>", "session": "s-…"}` out. The answer carries one
//! host candidate (the UDP port) and a fresh ICE ufrag, by which the UDP task
//! knows the peer's first packet. The session is made here, like every HTTP
//! transport's (same credentials, same connection limits), and its driver
//! starts on this worker; the peer goes to the UDP task.

use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use str0m::change::SdpOffer;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::link::{Link, PeerSink};
use super::udp::NewPeer;
use super::wire::ChannelWire;
use crate::http::ApiError;
use crate::session::protocol::{ErrorCode, Format};
use crate::transport::driver::{self, Connection, Liveness};
use crate::transport::poll::read_body;
use crate::transport::socket::Reader;
use crate::transport::TransportContext;

/// Largest offer body: a data-channel offer is 1–3 KB, candidates included.
pub const MAX_OFFER_BYTES: usize = 16 * 1024;

/// Client messages waiting for the driver; more and the peer is dropped
/// (the message rate limit closes a flood long before).
const INPUT_QUEUE: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Offer {
    sdp: String,
}

/// `POST /webrtc/offer`.
pub async fn offer(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<TransportContext>,
) -> Result<HttpResponse, ApiError> {
    let Some(webrtc) = state.webrtc.clone() else {
        return Err(ApiError::new(
            404,
            ErrorCode::NotFound,
            "WebRTC is not enabled on this server (webrtc.enabled)",
        ));
    };
    let access = state.authenticate_http(req.head())?;
    let body = read_body(payload, MAX_OFFER_BYTES).await?;
    let offer: Offer = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("body must be {{\"sdp\": \"<an SDP offer>\"}}: {e}"))
    })?;
    let offer = SdpOffer::from_sdp_string(&offer.sdp)
        .map_err(|e| ApiError::bad_request(format!("not an SDP offer: {e}")))?;
    let permit = state.admit_http()?;
    // unwrap (inside str0m's build): this config built once at start-up
    // (WebRtc::bind); nothing of the request goes into it.
    let mut rtc = webrtc.config.clone().build(Instant::now());
    rtc.add_local_candidate(webrtc.host.clone());
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| ApiError::bad_request(format!("cannot answer this offer: {e}")))?;
    let sdp = answer.to_sdp_string();
    if !sdp.contains("m=application") {
        return Err(ApiError::bad_request(
            "the offer has no data channel (m=application): create the channels before the offer",
        ));
    }
    let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
    let session = state
        .session(Format::Json, access)
        .refreshing(webrtc.refresh);
    let session_id = session.id().to_owned();
    let link = Link::new(webrtc.next_id(), webrtc.wake.clone());
    let (input, reader) = mpsc::channel(INPUT_QUEUE);
    let span = tracing::debug_span!("conn", transport = "webrtc", session = %session_id);
    let peer = NewPeer {
        rtc,
        ufrag,
        link: link.clone(),
        input,
        span: span.clone(),
    };
    webrtc.new_peers.try_send(peer).map_err(|_| {
        ApiError::new(
            503,
            ErrorCode::ServerFull,
            "too many WebRTC offers at once, try again later",
        )
    })?;
    let conn = Connection {
        wire: ChannelWire,
        out: PeerSink(link),
        input: Some(Reader::Queue(reader)),
        session,
        // No heartbeat of our own: ICE consent checks keep the path alive and
        // an idle peer expires in the UDP task, which ends the session.
        liveness: Liveness {
            heartbeat: state.settings.webrtc.idle_timeout,
            client_timeout: None,
        },
        permit,
    };
    actix_web::rt::spawn(driver::drive(conn, state.clone().into_inner()).instrument(span));
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"sdp": sdp, "session": session_id})))
}
