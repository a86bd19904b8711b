//! Tagged messages: one tag byte, an `i32` length that counts itself, then the body.
//!
//! Frames are located in a receive buffer by reading only their 5-byte header; the bytes are
//! forwarded as they arrived. Every length is checked before it is trusted.

use bytes::Bytes;

use super::ProtocolError;

/// Size of a message header: tag byte + length.
pub const HEADER_LEN: usize = 5;

/// Where a complete or partial message sits in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Body length (the wire length minus the 4 bytes of the length field).
    pub body_len: usize,
}

impl Header {
    /// Header plus body.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len
    }
}

/// Reads the header at the start of `buf`, if 5 bytes are there. The length must be at least 4
/// (it counts itself) and the body at most `limit` bytes.
pub fn parse_header(buf: &[u8], limit: usize) -> Result<Option<Header>, ProtocolError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let wire_len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let body_len = usize::try_from(wire_len)
        .ok()
        .and_then(|l| l.checked_sub(4))
        .ok_or(ProtocolError::LengthTooSmall {
            len: wire_len.into(),
        })?;
    if body_len > limit {
        return Err(ProtocolError::TooLarge {
            len: body_len,
            limit,
        });
    }
    Ok(Some(Header {
        tag: head[0],
        body_len,
    }))
}

/// One message as the relay saw it: the same bytes that were forwarded, shared, not copied.
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    /// Declared body length.
    pub body_len: usize,
    /// The body, or only its first part when the message was too large to hold and was streamed
    /// through (`is_complete()` tells).
    pub body: Bytes,
}

impl Frame {
    pub fn is_complete(&self) -> bool {
        self.body.len() == self.body_len
    }

    /// The one message `write` puts in a buffer, as a frame (for tests and benchmarks).
    pub fn written(write: impl FnOnce(&mut bytes::BytesMut)) -> Frame {
        let mut message = bytes::BytesMut::new();
        write(&mut message);
        let message = message.freeze();
        let mut frames = split_frames(message).expect("one well-formed message");
        assert_eq!(frames.len(), 1, "one message");
        frames.remove(0)
    }

    /// A whole message with this tag and body (for tests and benchmarks).
    pub fn encode(tag: u8, body: &[u8]) -> Frame {
        Frame::written(|out| super::backend::put_message(out, tag, |b| b.extend_from_slice(body)))
    }
}

/// Splits a buffer that holds whole frames into them (used by tests and by the recorder).
pub fn split_frames(mut buf: Bytes) -> Result<Vec<Frame>, ProtocolError> {
    let mut frames = Vec::new();
    while let Some(h) = parse_header(&buf, usize::MAX)? {
        if buf.len() < h.frame_len() {
            break;
        }
        let frame = buf.split_to(h.frame_len());
        frames.push(Frame {
            tag: h.tag,
            body_len: h.body_len,
            body: frame.slice(HEADER_LEN..),
        });
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(parse_header(b"Q\0\0\0", 100), Ok(None));
    }

    #[test]
    fn length_below_four_is_refused() {
        for len in [-1i32, 0, 3, i32::MIN] {
            let mut b = vec![b'Q'];
            b.extend_from_slice(&len.to_be_bytes());
            assert_eq!(
                parse_header(&b, 100),
                Err(ProtocolError::LengthTooSmall { len: len.into() })
            );
        }
    }

    #[test]
    fn length_over_limit_is_refused_before_reading_the_body() {
        let mut b = vec![b'Q'];
        b.extend_from_slice(&(i32::MAX).to_be_bytes());
        assert!(matches!(
            parse_header(&b, 1 << 20),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn empty_body_is_fine() {
        let b = [b'S', 0, 0, 0, 4];
        assert_eq!(
            parse_header(&b, 0),
            Ok(Some(Header {
                tag: b'S',
                body_len: 0
            }))
        );
    }

    #[test]
    fn split_keeps_bodies_and_leaves_partial_tail() {
        let buf = Bytes::from_static(b"Q\0\0\0\x09abcd\0Z\0\0\0\x05IX\0\0");
        let frames = split_frames(buf).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0].body[..], b"abcd\0");
        assert_eq!(frames[1].tag, b'Z');
        assert!(frames[1].is_complete());
    }
}
