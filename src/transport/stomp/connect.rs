//! CONNECT → CONNECTED: the protocol version and the heart-beats (STOMP 1.2
//! "Connecting" and "Heart-beating").
//!
//! The server's wishes in CONNECTED's `heart-beat:sx,sy` are both
//! `session.heartbeat_interval`. Each side then sends every MAX of its own wish
//! and the peer's; a client silent for twice its period is dropped. When a side
//! sends no heart-beats (a 0, or a 1.0 client), WebSocket pings take their place
//! as on ticker.v1: the server pings every `heartbeat_interval` and a client
//! silent (pongs included) for `client_timeout` is dropped.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::frame::{Frame, Version};
use crate::transport::driver::Liveness;

/// What CONNECT settled.
#[derive(Debug, PartialEq)]
pub struct Connected {
    pub version: Version,
    pub liveness: Liveness,
    /// True when our heartbeat is a STOMP EOL (else a WebSocket ping).
    pub beats: bool,
}

/// Why a CONNECT is refused: the ERROR's message, and its `version` header.
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub message: String,
    pub versions: bool,
}

/// The server's defaults, from the session settings.
pub struct Wishes {
    pub heartbeat: Duration,
    pub client_timeout: Duration,
}

/// Settles a CONNECT (or STOMP) frame and writes the CONNECTED frame.
pub fn connect(
    frame: &Frame,
    wishes: &Wishes,
    session: &str,
    out: &mut BytesMut,
) -> Result<Connected, Refused> {
    let version = match frame.header("accept-version") {
        None => Version::V1_0,
        Some(list) => list
            .split(',')
            .filter_map(|v| Version::parse(v.trim()))
            .max()
            .ok_or_else(|| Refused {
                message: format!(
                    "no common protocol version: the client accepts {list:?}, the server speaks 1.0, 1.1 and 1.2"
                ),
                versions: true,
            })?,
    };
    let (cx, cy) = match frame.header("heart-beat") {
        None => (0, 0),
        Some(h) => parse_heart_beat(h).ok_or_else(|| Refused {
            message: format!(
                "heart-beat must be two numbers of milliseconds such as 10000,10000, not {h:?}"
            ),
            versions: false,
        })?,
    };
    let ours = u64::try_from(wishes.heartbeat.as_millis()).unwrap_or(u64::MAX);
    let beats = cy > 0 && ours > 0;
    let heartbeat = if beats {
        Duration::from_millis(ours.max(cy))
    } else {
        wishes.heartbeat
    };
    let client_timeout = if cx > 0 && ours > 0 {
        Duration::from_millis(ours.max(cx).saturating_mul(2))
    } else {
        wishes.client_timeout
    };
    out.put_slice(b"CONNECTED\nversion:");
    out.put_slice(version.as_str().as_bytes());
    out.put_slice(b"\nheart-beat:");
    let mut n = itoa::Buffer::new();
    out.put_slice(n.format(ours).as_bytes());
    out.put_u8(b',');
    out.put_slice(n.format(ours).as_bytes());
    out.put_slice(b"\nserver:ticker-gateway/");
    out.put_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.put_slice(b"\nsession:");
    out.put_slice(session.as_bytes());
    out.put_slice(b"\n\n\0");
    Ok(Connected {
        version,
        liveness: Liveness {
            heartbeat,
            client_timeout: Some(client_timeout),
        },
        beats,
    })
}

/// `cx,cy` in milliseconds.
fn parse_heart_beat(h: &str) -> Option<(u64, u64)> {
    let (x, y) = h.split_once(',')?;
    Some((x.trim().parse().ok()?, y.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::stomp::frame::Command;

    fn connect_with(headers: &[(&str, &str)]) -> (Result<Connected, Refused>, String) {
        let frame = Frame {
            command: Command::Connect,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Default::default(),
        };
        let wishes = Wishes {
            heartbeat: Duration::from_secs(15),
            client_timeout: Duration::from_secs(45),
        };
        let mut out = BytesMut::new();
        let r = connect(&frame, &wishes, "s-1", &mut out);
        (r, String::from_utf8(out.to_vec()).unwrap())
    }

    #[test]
    fn stompjs_defaults() {
        let (r, text) = connect_with(&[
            ("accept-version", "1.2,1.1,1.0"),
            ("heart-beat", "10000,10000"),
        ]);
        let c = r.unwrap();
        assert_eq!(c.version, Version::V1_2);
        assert!(c.beats);
        assert_eq!(c.liveness.heartbeat, Duration::from_secs(15));
        assert_eq!(c.liveness.client_timeout, Some(Duration::from_secs(30)));
        assert!(text.starts_with("CONNECTED\nversion:1.2\nheart-beat:15000,15000\n"));
        assert!(text.contains("\nsession:s-1\n"));
        assert!(text.ends_with("\n\n\0"));
    }

    #[test]
    fn slower_peers_set_the_period() {
        let c = connect_with(&[("accept-version", "1.1"), ("heart-beat", "60000,20000")])
            .0
            .unwrap();
        assert_eq!(c.version, Version::V1_1);
        assert_eq!(c.liveness.heartbeat, Duration::from_secs(20));
        assert_eq!(c.liveness.client_timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn no_heart_beats_fall_back_to_pings() {
        let c = connect_with(&[]).0.unwrap();
        assert_eq!(c.version, Version::V1_0);
        assert!(!c.beats);
        assert_eq!(c.liveness.heartbeat, Duration::from_secs(15));
        assert_eq!(c.liveness.client_timeout, Some(Duration::from_secs(45)));
    }

    #[test]
    fn refusals() {
        let r = connect_with(&[("accept-version", "2.0")]).0.unwrap_err();
        assert!(r.versions);
        let r = connect_with(&[("heart-beat", "ten")]).0.unwrap_err();
        assert!(!r.versions);
    }
}
