//! The one thing the UDP task reads of a datagram itself: the ICE ufrag a
//! STUN binding request is addressed to (`USERNAME = ours:theirs`, RFC 8445
//! section 7.2.2), so a new peer's first packet finds its peer.

/// STUN's magic cookie (RFC 5389 section 6).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const USERNAME: u16 = 0x0006;

/// The local ufrag of a STUN binding request, or `None` for anything else.
pub fn target_ufrag(datagram: &[u8]) -> Option<&str> {
    let header = datagram.get(..HEADER)?;
    if u16::from_be_bytes([header[0], header[1]]) != BINDING_REQUEST || header[4..8] != MAGIC_COOKIE
    {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attrs = datagram.get(HEADER..HEADER + len)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split_once(':').map(|(ours, _)| ours);
        }
        // Values are padded to four bytes.
        attrs = attrs.get(4 + len.div_ceil(4) * 4..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (kind, value) in attrs {
            body.extend_from_slice(&kind.to_be_bytes());
            body.extend_from_slice(&(value.len() as u16).to_be_bytes());
            body.extend_from_slice(value);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        let mut d = vec![0x00, 0x01];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&MAGIC_COOKIE);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&body);
        d
    }

    #[test]
    fn the_ufrag_comes_from_the_username_attribute() {
        let d = request(&[(0x8029, b"12345678"), (USERNAME, b"srv1:cli")]);
        assert_eq!(target_ufrag(&d), Some("srv1"));
        let odd = request(&[(0x0024, b"abc"), (USERNAME, b"a:b")]);
        assert_eq!(target_ufrag(&odd), Some("a"), "padding skipped");
    }

    #[test]
    fn anything_else_has_no_ufrag() {
        assert_eq!(target_ufrag(b""), None);
        assert_eq!(target_ufrag(&[0x16; 40]), None, "DTLS");
        assert_eq!(target_ufrag(&request(&[(0x8029, b"12345678")])), None);
        assert_eq!(target_ufrag(&request(&[(USERNAME, b"nocolon")])), None);
        let mut truncated = request(&[(USERNAME, b"srv1:cli")]);
        truncated.truncate(26);
        assert_eq!(target_ufrag(&truncated), None);
        let mut lying = request(&[(USERNAME, b"srv1:cli")]);
        lying[23] = 0xff; // the attribute claims more than the message holds
        assert_eq!(target_ufrag(&lying), None);
        let mut response = request(&[(USERNAME, b"srv1:cli")]);
        response[1] = 0x01;
        response[0] = 0x01;
        assert_eq!(target_ufrag(&response), None);
    }
}
