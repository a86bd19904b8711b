//! Reading whole messages during login, before the relay takes over the connection.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::protocol::ProtocolError;
use crate::protocol::frame::{Frame, HEADER_LEN, parse_header};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one whole message from `stream`, buffering in `buf`; bytes after it stay in `buf` (the
/// relay starts from them). Cancel-safe: partial reads stay in `buf`.
pub async fn read_frame<R>(
    stream: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Frame, ReadError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    loop {
        if let Some(h) = parse_header(buf, limit)? {
            if buf.len() >= h.frame_len() {
                let frame = buf.split_to(h.frame_len()).freeze();
                return Ok(Frame {
                    tag: h.tag,
                    body_len: h.body_len,
                    body: frame.slice(HEADER_LEN..),
                });
            }
            buf.reserve(h.frame_len() - buf.len());
        } else {
            buf.reserve(1024);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(ReadError::Closed);
        }
    }
}
