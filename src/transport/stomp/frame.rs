//! STOMP frames (STOMP 1.2 "Frames and headers"): a streaming parser for client
//! frames, which may arrive split across WebSocket messages or several to a
//! message, and the header escaping of each version.
//!
//! ```text
//! frame = command EOL *(header EOL) EOL *OCTET NUL *(EOL)
//! ```
//!
//! EOLs between frames are heart-beats. A body is `content-length` bytes when
//! the header is there (it may then hold NULs), else everything up to the first
//! NUL. Of a repeated header the first wins.

use bytes::{Buf, Bytes, BytesMut};

/// A STOMP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1_0,
    V1_1,
    V1_2,
}

impl Version {
    /// Every version we speak, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The commands a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
}

impl Command {
    fn parse(s: &[u8]) -> Option<Command> {
        Some(match s {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            _ => return None,
        })
    }

    /// CONNECT and CONNECTED frames escape nothing, in every version.
    fn escapes(self) -> bool {
        !matches!(self, Command::Connect | Command::Stomp)
    }
}

/// One client frame.
#[derive(Debug, PartialEq)]
pub struct Frame {
    pub command: Command,
    /// In order, unescaped; a repeated header is kept but [`Frame::header`]
    /// returns the first.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why the bytes are not a frame; every one ends the connection.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> FrameError {
    FrameError::Malformed(what.into())
}

/// Client frames from a byte stream; holds at most `max` bytes of a frame.
pub struct Parser {
    buf: BytesMut,
    max: usize,
    version: Version,
}

impl Parser {
    pub fn new(max: usize) -> Parser {
        Parser {
            buf: BytesMut::new(),
            max,
            version: Version::V1_0,
        }
    }

    /// Headers are unescaped as `version` says from now on.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// Takes the next piece of the stream (one WebSocket message, at most
    /// `max` bytes by the socket's own limit). Call [`Parser::next_frame`] until
    /// it returns `None` after each piece: what is held then is part of one
    /// frame, and at most `max` bytes of it are kept.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        if data.len() > self.max {
            return Err(FrameError::TooLarge(self.max));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next whole frame, if one has arrived; heart-beat EOLs are skipped.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        // Heart-beats (and the EOLs a frame may be followed by).
        let eols = self
            .buf
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        if eols == self.buf.len() {
            // A lone CR may still become a CRLF.
            let keep = usize::from(self.buf.last() == Some(&b'\r'));
            self.buf.advance(eols - keep);
            return Ok(None);
        }
        self.buf.advance(eols);
        match parse(&self.buf, self.version, self.max)? {
            // Whole, yet longer than any frame may be (its last piece brought
            // it over): refused as it is when held in part.
            Some((_, used)) if used > self.max => Err(FrameError::TooLarge(self.max)),
            Some((frame, used)) => {
                self.buf.advance(used);
                Ok(Some(frame))
            }
            // Part of a frame: longer than any frame may be, it is refused.
            None if self.buf.len() > self.max => Err(FrameError::TooLarge(self.max)),
            None => Ok(None),
        }
    }
}

/// The line that starts at `at`, without its EOL, and where the next begins.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let end = buf[at..].iter().position(|&b| b == b'\n')? + at;
    let text = &buf[at..end];
    Some((text.strip_suffix(b"\r").unwrap_or(text), end + 1))
}

/// One frame from the start of `buf`: the frame and the bytes it used, or
/// `None` when it has not all arrived.
fn parse(buf: &[u8], version: Version, max: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some((command, mut at)) = line(buf, 0) else {
        return Ok(None);
    };
    let command = Command::parse(command).ok_or_else(|| {
        malformed(format!(
            "unknown command {:?}",
            String::from_utf8_lossy(&command[..command.len().min(32)])
        ))
    })?;
    let escaped = command.escapes() && version >= Version::V1_1;
    let mut headers = Vec::new();
    loop {
        let Some((text, next)) = line(buf, at) else {
            return Ok(None);
        };
        at = next;
        if text.is_empty() {
            break;
        }
        let colon = text
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| malformed("a header line without ':'"))?;
        let name = header_text(&text[..colon], escaped, version)?;
        let value = header_text(&text[colon + 1..], escaped, version)?;
        headers.push((name, value));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| malformed(format!("content-length {v:?} is not a number")))
        })
        .transpose()?;
    let end = match length {
        Some(len) if len > max => return Err(FrameError::TooLarge(max)),
        Some(len) => {
            if buf.len() <= at + len {
                return Ok(None);
            }
            if buf[at + len] != 0 {
                return Err(malformed("the body is not followed by NUL"));
            }
            at + len
        }
        None => match buf[at..].iter().position(|&b| b == 0) {
            Some(p) => at + p,
            None => return Ok(None),
        },
    };
    let body = Bytes::copy_from_slice(&buf[at..end]);
    Ok(Some((
        Frame {
            command,
            headers,
            body,
        },
        end + 1,
    )))
}

/// A header name or value: UTF-8, unescaped where the version escapes.
fn header_text(raw: &[u8], escaped: bool, version: Version) -> Result<String, FrameError> {
    let text = std::str::from_utf8(raw).map_err(|_| malformed("a header is not UTF-8"))?;
    if !escaped || !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('c') => out.push(':'),
            Some('\\') => out.push('\\'),
            Some('r') if version >= Version::V1_2 => out.push('\r'),
            other => {
                return Err(malformed(format!(
                    "undefined escape \\{} in a header",
                    other.map(String::from).unwrap_or_default()
                )))
            }
        }
    }
    Ok(out)
}

/// Appends a header name or value escaped as `version` says (server frames
/// other than CONNECTED).
pub fn put_escaped(buf: &mut BytesMut, text: &str, version: Version) {
    if version == Version::V1_0 || !text.contains(['\\', '\n', '\r', ':']) {
        buf.extend_from_slice(text.as_bytes());
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => buf.extend_from_slice(b"\\\\"),
            '\n' => buf.extend_from_slice(b"\\n"),
            ':' => buf.extend_from_slice(b"\\c"),
            '\r' if version >= Version::V1_2 => buf.extend_from_slice(b"\\r"),
            c => {
                let mut utf8 = [0; 4];
                buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 4096;

    /// Every frame of `stream`, fed in pieces cut at `cuts`.
    fn frames_of(stream: &[u8], cuts: &[usize], version: Version) -> Vec<Frame> {
        let mut p = Parser::new(MAX);
        p.set_version(version);
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            p.push(&stream[from..cut]).unwrap();
            from = cut;
            while let Some(f) = p.next_frame().unwrap() {
                out.push(f);
            }
        }
        out
    }

    const STREAM: &[u8] = b"CONNECT\naccept-version:1.2\nhost:x\n\n\0\n\n\
SUBSCRIBE\r\nid:a\\cb\\nc\r\ndestination:/topic/quotes.AAPL\r\nid:second\r\n\r\n\0\
\nSEND\ndestination:/q\ncontent-length:5\n\na\0b\nc\0\n";

    fn expected() -> Vec<Frame> {
        let h = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        vec![
            Frame {
                command: Command::Connect,
                headers: h(&[("accept-version", "1.2"), ("host", "x")]),
                body: Bytes::new(),
            },
            Frame {
                command: Command::Subscribe,
                headers: h(&[
                    ("id", "a:b\nc"),
                    ("destination", "/topic/quotes.AAPL"),
                    ("id", "second"),
                ]),
                body: Bytes::new(),
            },
            Frame {
                command: Command::Send,
                headers: h(&[("destination", "/q"), ("content-length", "5")]),
                body: Bytes::from_static(b"a\0b\nc"),
            },
        ]
    }

    #[test]
    fn frames_split_at_every_byte() {
        assert_eq!(frames_of(STREAM, &[], Version::V1_2), expected());
        for cut in 1..STREAM.len() {
            assert_eq!(
                frames_of(STREAM, &[cut], Version::V1_2),
                expected(),
                "cut at {cut}"
            );
        }
        let every: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(frames_of(STREAM, &every, Version::V1_2), expected());
    }

    #[test]
    fn first_of_a_repeated_header_wins() {
        let f = &frames_of(STREAM, &[], Version::V1_2)[1];
        assert_eq!(f.header("id"), Some("a:b\nc"));
    }

    #[test]
    fn escapes_by_version() {
        let frame = b"SUBSCRIBE\nid:x\\ry\n\n\0";
        let mut p = Parser::new(MAX);
        p.set_version(Version::V1_1);
        p.push(frame).unwrap();
        assert!(matches!(p.next_frame(), Err(FrameError::Malformed(_))));
        let f = &frames_of(frame, &[], Version::V1_2)[0];
        assert_eq!(f.header("id"), Some("x\ry"));
        let f = &frames_of(frame, &[], Version::V1_0)[0];
        assert_eq!(f.header("id"), Some("x\\ry"), "1.0 escapes nothing");
        // CONNECT is never unescaped.
        let f = &frames_of(b"CONNECT\nlogin:a\\cb\n\n\0", &[], Version::V1_2)[0];
        assert_eq!(f.header("login"), Some("a\\cb"));
    }

    #[test]
    fn escaping_round_trips() {
        let text = "a:b\nc\\d\re";
        for version in [Version::V1_1, Version::V1_2] {
            let mut buf = BytesMut::from(&b"SUBSCRIBE\nid:"[..]);
            put_escaped(&mut buf, text, version);
            buf.extend_from_slice(b"\n\n\0");
            let f = &frames_of(&buf, &[], version)[0];
            assert_eq!(f.header("id"), Some(text), "{version:?}: {buf:?}");
        }
    }

    #[test]
    fn malformed_frames() {
        for bad in [
            &b"HELLO\n\n\0"[..],
            b"SUBSCRIBE\nno colon\n\n\0",
            b"SEND\ncontent-length:2\n\nabc\0",
            b"SEND\ncontent-length:x\n\n\0",
            b"SUBSCRIBE\nid:\\t\n\n\0",
            b"SUBSCRIBE\nid:\xff\n\n\0",
        ] {
            let mut p = Parser::new(MAX);
            p.set_version(Version::V1_2);
            p.push(bad).unwrap();
            assert!(
                matches!(p.next_frame(), Err(FrameError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits_from_the_header_and_the_buffer() {
        let mut p = Parser::new(64);
        p.push(b"SEND\ncontent-length:1000000\n\n").unwrap();
        assert_eq!(p.next_frame(), Err(FrameError::TooLarge(64)));
        // No content-length: refused once more than the limit is held.
        let mut p = Parser::new(64);
        p.push(b"SEND\n\n").unwrap();
        assert_eq!(p.next_frame(), Ok(None));
        p.push(&[b'x'; 40]).unwrap();
        assert_eq!(p.next_frame(), Ok(None));
        p.push(&[b'x'; 40]).unwrap();
        assert_eq!(p.next_frame(), Err(FrameError::TooLarge(64)));
        assert_eq!(p.push(&[b'x'; 65]), Err(FrameError::TooLarge(64)));
        // Small frames that together pass the limit are fine, whole or cut.
        let stream = b"SUBSCRIBE\nid:1\n\n\0".repeat(10);
        let mut p = Parser::new(64);
        let mut n = 0;
        for piece in stream.chunks(50) {
            p.push(piece).unwrap();
            while p.next_frame().unwrap().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_however_it_is_cut() {
        // 46 bytes held, then the rest of an 87-byte frame in one piece.
        let mut p = Parser::new(64);
        p.push(b"SEND\n\n").unwrap();
        p.push(&[b'x'; 40]).unwrap();
        assert_eq!(p.next_frame(), Ok(None));
        p.push(&[[b'x'; 40].as_slice(), b"\0"].concat()).unwrap();
        assert_eq!(p.next_frame(), Err(FrameError::TooLarge(64)));
        // A frame of exactly the limit is fine.
        let mut p = Parser::new(64);
        p.push(b"SEND\n\n").unwrap();
        p.push(&[[b'x'; 57].as_slice(), b"\0"].concat()).unwrap();
        assert_eq!(p.next_frame().unwrap().unwrap().body.len(), 57);
    }

    #[test]
    fn heart_beats_are_skipped() {
        let mut p = Parser::new(MAX);
        p.push(b"\n\r\n\n\r").unwrap();
        assert_eq!(p.next_frame(), Ok(None));
        p.push(b"\nDISCONNECT\n\n\0\n").unwrap();
        assert_eq!(
            p.next_frame().unwrap().unwrap().command,
            Command::Disconnect
        );
        assert_eq!(p.next_frame(), Ok(None));
    }
}
