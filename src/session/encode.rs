//! Frame encoding: every server frame is an array of message objects, JSON text or
//! MessagePack binary (maps with the JSON keys).

use bytes::{BufMut, Bytes, BytesMut};

use super::protocol::{Format, ServerMsg};

/// Encodes a batch of messages as one frame. Returns `None` for an empty batch.
pub fn encode_frame(format: Format, msgs: &[ServerMsg]) -> Option<Bytes> {
    if msgs.is_empty() {
        return None;
    }
    let mut buf = BytesMut::with_capacity(64 + msgs.len() * 96);
    match format {
        Format::Json => {
            buf.put_u8(b'[');
            for (i, m) in msgs.iter().enumerate() {
                if i > 0 {
                    buf.put_u8(b',');
                }
                // unwrap: our messages hold only strings, integers and finite floats.
                serde_json::to_writer((&mut buf).writer(), m).expect("unwrap: JSON encoding");
            }
            buf.put_u8(b']');
        }
        Format::Msgpack => {
            let mut w = (&mut buf).writer();
            // unwrap: writing into memory cannot fail.
            rmp::encode::write_array_len(&mut w, msgs.len() as u32)
                .expect("unwrap: in-memory write");
            for m in msgs {
                rmp_serde::encode::write_named(&mut w, m).expect("unwrap: MessagePack encoding");
            }
        }
    }
    Some(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::protocol::ServerMsg;

    #[test]
    fn json_and_msgpack_frames_are_arrays() {
        let msgs = vec![ServerMsg::Pong { id: None }, ServerMsg::Pong { id: None }];
        let j = encode_frame(Format::Json, &msgs).unwrap();
        assert_eq!(&j[..], br#"[{"type":"pong"},{"type":"pong"}]"#);
        let m = encode_frame(Format::Msgpack, &msgs).unwrap();
        let v: serde_json::Value = rmp_serde::from_slice(&m).unwrap();
        assert_eq!(v, serde_json::json!([{"type":"pong"},{"type":"pong"}]));
        assert!(encode_frame(Format::Json, &[]).is_none());
    }
}
