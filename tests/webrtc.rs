//! WebRTC DataChannels (PROTOCOL.md section 13) with a real WebRTC client
//! (str0m, in this process) on loopback: signalling over HTTP, ICE, DTLS and
//! SCTP over the gateway's one UDP port, ticker.v1 ops on the reliable
//! channel, whole-state quote messages on the unreliable one.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use common::{quiet_app_with, TestApp, WAIT};
use ticker_gateway::transport::webrtc::{QUOTES_LABEL, QUOTE_MESSAGE_BYTES, REPLIES_LABEL};

const ENABLED: &str = "[webrtc]\nenabled = true\nudp_port = 0\n";

/// Which channel a message came on.
#[derive(Debug, PartialEq)]
enum Lane {
    Replies,
    Quotes,
}

/// A peer at `local` and its offer with both channels (SDP text).
fn make_offer(local: SocketAddr) -> (Rtc, String, SdpPendingOffer) {
    let mut rtc = Rtc::builder()
        .set_crypto_provider(Arc::new(str0m::crypto::from_feature_flags()))
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_channel_with_config(ChannelConfig {
        label: REPLIES_LABEL.into(),
        ..Default::default()
    });
    api.add_channel_with_config(ChannelConfig {
        label: QUOTES_LABEL.into(),
        ordered: false,
        reliability: Reliability::MaxRetransmits { retransmits: 0 },
        ..Default::default()
    });
    let (offer, pending) = api.apply().unwrap();
    (rtc, offer.to_sdp_string(), pending)
}

/// A WebRTC client: a str0m peer on its own UDP socket, driven here.
struct RtcClient {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    replies: Option<ChannelId>,
    quotes: Option<ChannelId>,
    buf: Vec<u8>,
    /// Replies received and not yet looked at.
    pending: VecDeque<Value>,
}

impl RtcClient {
    /// Makes an offer with both channels, posts it, and takes the answer.
    async fn offer(app: &TestApp) -> (RtcClient, Value) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (mut rtc, offer, pending) = make_offer(socket.local_addr().unwrap());
        let r = app
            .http
            .post(app.url("/webrtc/offer"))
            .json(&json!({"sdp": offer}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        let answer = SdpAnswer::from_sdp_string(body["sdp"].as_str().unwrap()).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let client = RtcClient {
            rtc,
            local: socket.local_addr().unwrap(),
            socket,
            replies: None,
            quotes: None,
            buf: vec![0; 2048],
            pending: VecDeque::new(),
        };
        (client, body)
    }

    /// Connected, both channels open.
    async fn connect(app: &TestApp) -> RtcClient {
        let (mut c, _) = RtcClient::offer(app).await;
        while c.replies.is_none() || c.quotes.is_none() {
            c.step().await;
        }
        c
    }

    /// Runs the peer until its next channel message (or channel event).
    async fn step(&mut self) -> Option<(Lane, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.rtc.poll_output().unwrap() {
                Output::Transmit(t) => {
                    self.socket
                        .send_to(&t.contents, t.destination)
                        .await
                        .unwrap();
                }
                Output::Event(Event::ChannelOpen(id, label)) => {
                    match label.as_str() {
                        REPLIES_LABEL => self.replies = Some(id),
                        QUOTES_LABEL => self.quotes = Some(id),
                        other => panic!("unexpected channel {other}"),
                    }
                    return None;
                }
                Output::Event(Event::ChannelData(d)) => {
                    let lane = if Some(d.id) == self.quotes {
                        Lane::Quotes
                    } else {
                        Lane::Replies
                    };
                    return Some((lane, d.data));
                }
                Output::Event(Event::ChannelClose(_)) => panic!("the server closed a channel"),
                Output::Event(_) => {}
                Output::Timeout(at) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "nothing from the gateway within {WAIT:?}"
                    );
                    let at = tokio::time::Instant::from_std(at).min(deadline);
                    tokio::select! {
                        r = self.socket.recv_from(&mut self.buf) => {
                            let (n, source) = r.unwrap();
                            let input = Input::Receive(Instant::now(), Receive {
                                proto: Protocol::Udp,
                                source,
                                destination: self.local,
                                contents: self.buf[..n].try_into().unwrap(),
                            });
                            self.rtc.handle_input(input).unwrap();
                        }
                        _ = tokio::time::sleep_until(at) => {
                            self.rtc.handle_input(Input::Timeout(Instant::now())).unwrap();
                        }
                    }
                }
            }
        }
    }

    /// The next message array, with its lane.
    async fn next(&mut self) -> (Lane, Vec<Value>) {
        loop {
            if let Some((lane, data)) = self.step().await {
                if lane == Lane::Quotes {
                    assert!(data.len() <= QUOTE_MESSAGE_BYTES, "{} bytes", data.len());
                }
                return (lane, serde_json::from_slice(&data).unwrap());
            }
        }
    }

    /// The next reply (quote messages meanwhile go to `state`).
    async fn reply(&mut self, state: &mut State) -> Value {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return m;
            }
            let (lane, msgs) = self.next().await;
            match lane {
                Lane::Replies => self.pending.extend(msgs),
                Lane::Quotes => state.apply(&msgs),
            }
        }
    }

    fn send(&mut self, op: Value) {
        let id = self.replies.unwrap();
        let mut channel = self.rtc.channel(id).unwrap();
        assert!(channel.write(false, op.to_string().as_bytes()).unwrap());
    }
}

/// What a client keeps: the newest state per symbol (an older `seq` than the
/// one kept is dropped and counted, so the state's `seq` never goes back).
#[derive(Default)]
struct State {
    quotes: HashMap<String, Value>,
    messages: usize,
    older: usize,
}

impl State {
    fn apply(&mut self, msgs: &[Value]) {
        for m in msgs {
            assert_eq!(m["type"], "snapshot", "quotes carry whole states: {m}");
            let sym = m["sym"].as_str().unwrap().to_owned();
            let seq = m["seq"].as_u64().unwrap();
            self.messages += 1;
            if let Some(had) = self.quotes.get(&sym) {
                if seq < had["seq"].as_u64().unwrap() {
                    self.older += 1;
                    continue;
                }
            }
            self.quotes.insert(sym, m.clone());
        }
    }

    /// Every quote of `want` (API quotes) is what this client holds.
    fn holds(&self, want: &[Value]) -> bool {
        want.iter().all(|w| {
            self.quotes
                .get(w["sym"].as_str().unwrap())
                .is_some_and(|q| {
                    let mut q = q.clone();
                    q.as_object_mut().unwrap().remove("type");
                    q == *w
                })
        })
    }
}

#[tokio::test]
async fn quotes_arrive_as_whole_states_that_converge_and_are_refreshed() {
    let app = quiet_app_with(ENABLED).await;
    let syms = app.symbols(2).await;
    let (a, b) = (syms[0].as_str(), syms[1].as_str());
    let mut c = RtcClient::connect(&app).await;
    let mut state = State::default();
    let welcome = c.reply(&mut state).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    c.send(json!({"op":"subscribe","id":1,"symbols":[a, b, "NOPE"],"max_rate":50}));
    let mut replies = vec![c.reply(&mut state).await, c.reply(&mut state).await];
    replies.sort_by_key(|r| r["type"].as_str().unwrap().to_owned());
    assert_eq!(replies[0]["code"], "unknown_symbol", "{replies:?}");
    assert_eq!(
        replies[1],
        json!({"type":"subscribed","id":1,"symbols":[a, b],"max_rate":50})
    );
    // The feed moves, then goes quiet.
    for i in 0..30 {
        let sym = if i % 2 == 0 { a } else { b };
        app.publish(json!({"sym": sym, "t": 1000 + i, "bs": 100 + i, "lp": format!("{i}.5")}));
    }
    let want = [app.rest_quote(a).await, app.rest_quote(b).await];
    let converged = |s: &State| s.holds(&want);
    while !converged(&state) {
        let (lane, msgs) = c.next().await;
        assert_eq!(lane, Lane::Quotes, "{msgs:?}");
        state.apply(&msgs);
    }
    // Nothing changes now: the same states come again (the refresh).
    let seen = state.messages;
    while state.messages < seen + 2 {
        let (lane, msgs) = c.next().await;
        assert_eq!(lane, Lane::Quotes, "{msgs:?}");
        state.apply(&msgs);
        assert!(converged(&state));
    }
    assert!(app.metric("ticker_webrtc_refreshes_total", &[]).await >= 2.0);
    // Loopback neither loses nor reorders: no message was older than one before.
    assert_eq!(state.older, 0);
    // Replies to ops arrive on the reliable channel.
    c.send(json!({"op":"ping","id":"p"}));
    assert_eq!(c.reply(&mut state).await, json!({"type":"pong","id":"p"}));
    c.send(json!({"op":"unsubscribe","id":2,"symbols":[a, b]}));
    assert_eq!(c.reply(&mut state).await["type"], "unsubscribed");
    c.send(json!("not an op"));
    assert_eq!(c.reply(&mut state).await["code"], "bad_request");
    let text = app.metrics_text().await;
    for name in [
        "ticker_webrtc_datagrams_sent_total",
        "ticker_webrtc_sent_bytes_total",
        "ticker_webrtc_peers",
    ] {
        assert!(app.metric(name, &[]).await >= 1.0, "{name}: {text}");
    }
    assert_eq!(
        app.metric("ticker_sessions_active", &[("transport", "webrtc")])
            .await,
        1.0
    );
}

async fn post(app: &TestApp, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = app
        .http
        .post(app.url("/webrtc/offer"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn bad_offers_get_json_errors_and_webrtc_off_answers_404() {
    let off = quiet_app_with("").await;
    let (status, body) = post(&off, r#"{"sdp":"v=0"}"#).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    drop(off);

    let app = quiet_app_with(ENABLED).await;
    for (offer, why) in [
        ("not json".to_owned(), "body must be"),
        (r#"{"sdp":42}"#.to_owned(), "body must be"),
        (r#"{"sdp":"hello","extra":1}"#.to_owned(), "body must be"),
        (r#"{"sdp":"hello"}"#.to_owned(), "not an SDP offer"),
    ] {
        let (status, body) = post(&app, offer.clone()).await;
        assert_eq!(status, 400, "{offer}: {body}");
        assert_eq!(body["code"], "bad_request", "{offer}: {body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    let huge = format!(r#"{{"sdp":"{}"}}"#, "v".repeat(64 * 1024));
    let (status, body) = post(&app, huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "bad_request");
    // A good offer still works after all that.
    let mut c = RtcClient::connect(&app).await;
    let mut state = State::default();
    assert_eq!(c.reply(&mut state).await["type"], "welcome");
}

/// A STUN binding request addressed to `ufrag`.
fn binding_request(ufrag: &str) -> Vec<u8> {
    let username = format!("{ufrag}:someone");
    let mut attr = vec![0x00, 0x06];
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username.as_bytes());
    attr.resize(attr.len().div_ceil(4) * 4, 0);
    let mut d = vec![0x00, 0x01];
    d.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    d.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    d.extend_from_slice(&[9; 12]);
    d.extend_from_slice(&attr);
    d
}

#[tokio::test]
async fn stun_for_an_unknown_ufrag_and_stray_datagrams_are_ignored() {
    let app = quiet_app_with(ENABLED).await;
    let port = app.state.transport.webrtc.as_ref().unwrap().local_addr();
    let stray = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stray
        .send_to(&binding_request("nobody"), port)
        .await
        .unwrap();
    stray.send_to(b"\x17\xfe\xfdnot dtls", port).await.unwrap();
    common::poll("ignored datagrams", || {
        let app = &app;
        async move {
            let n = app
                .metric("ticker_webrtc_datagrams_ignored_total", &[])
                .await;
            if n >= 2.0 {
                Ok(())
            } else {
                Err(n)
            }
        }
    })
    .await;
    // Nothing was sent to the stranger, and a real client is served as ever.
    assert_eq!(
        app.metric("ticker_webrtc_datagrams_sent_total", &[]).await,
        0.0
    );
    let mut c = RtcClient::connect(&app).await;
    let mut state = State::default();
    assert_eq!(c.reply(&mut state).await["type"], "welcome");
}

#[tokio::test]
async fn with_a_tenth_of_the_datagrams_lost_the_state_converges_and_replies_arrive() {
    let app = quiet_app_with(&format!(
        "{ENABLED}test_drop_fraction = 0.1\ntest_drop_seed = 17\n"
    ))
    .await;
    let syms = app.symbols(4).await;
    let mut c = RtcClient::connect(&app).await;
    let mut state = State::default();
    assert_eq!(c.reply(&mut state).await["type"], "welcome");
    c.send(json!({"op":"subscribe","id":1,"symbols":syms,"max_rate":20}));
    assert_eq!(c.reply(&mut state).await["type"], "subscribed");
    for round in 0..5 {
        for i in 0..40 {
            let sym = &syms[i % syms.len()];
            app.publish(json!({"sym": sym, "t": 2000 + i, "bs": 10 * round + i as u64}));
        }
        // Replies travel on the reliable channel: each one arrives.
        c.send(json!({"op":"ping","id":round}));
        assert_eq!(c.reply(&mut state).await, json!({"type":"pong","id":round}));
    }
    // The feed is quiet now: what was lost is repaired by the refresh.
    let quiet = Instant::now();
    let mut want = Vec::new();
    for sym in &syms {
        want.push(app.rest_quote(sym).await);
    }
    while !state.holds(&want) {
        let (lane, msgs) = c.next().await;
        if lane == Lane::Quotes {
            state.apply(&msgs);
        }
    }
    println!(
        "converged {:?} after the feed went quiet ({} quote messages, {} older than kept)",
        quiet.elapsed(),
        state.messages,
        state.older
    );
    for w in &want {
        let sym = w["sym"].as_str().unwrap();
        assert_eq!(state.quotes[sym]["seq"], w["seq"], "{sym}");
    }
}

#[tokio::test]
async fn offers_count_against_the_connection_limit_and_idle_peers_expire() {
    let app = quiet_app_with(&format!(
        "{ENABLED}idle_timeout = \"1s\"\n[server]\nmax_connections = 1\n"
    ))
    .await;
    // A peer that never sends a datagram holds its place until it expires.
    let (_silent, body) = RtcClient::offer(&app).await;
    assert!(
        body["session"].as_str().unwrap().starts_with("s-"),
        "{body}"
    );
    let (_, second, _) = make_offer("127.0.0.1:9".parse().unwrap());
    let (status, refused) = post(&app, json!({"sdp": second}).to_string()).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["code"], "server_full");
    common::poll("the silent peer to expire", || {
        let app = &app;
        async move {
            let peers = app.metric("ticker_webrtc_peers", &[]).await;
            let sessions = app
                .metric("ticker_sessions_active", &[("transport", "webrtc")])
                .await;
            if peers == 0.0 && sessions == 0.0 {
                Ok(())
            } else {
                Err((peers, sessions))
            }
        }
    })
    .await;
    // Its place is free again.
    let mut c = RtcClient::connect(&app).await;
    let mut state = State::default();
    assert_eq!(c.reply(&mut state).await["type"], "welcome");
}
