//! The PostgreSQL v3 wire protocol, as far as a gateway needs it.
//!
//! - [`startup`]: the untagged packets that open a connection (SSLRequest, GSSENCRequest,
//!   CancelRequest, StartupMessage), one enum and one decoder.
//! - [`frame`]: tagged messages (`tag`, `i32` length, body) found in a byte buffer without copying;
//!   forwarding never re-encodes them.
//! - [`backend`] / [`frontend`]: the few messages the gateway itself writes or reads (errors,
//!   authentication, key data), built and parsed by hand from the protocol documentation.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod startup;

/// Errors found in bytes that claim to be Postgres protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message length {len} is invalid (smaller than its own length field)")]
    LengthTooSmall { len: i64 },
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("startup packet is malformed: {0}")]
    BadStartup(&'static str),
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("message '{tag}' is malformed: {reason}")]
    Malformed { tag: char, reason: &'static str },
    #[error("expected message '{expected}', got '{got}'")]
    Unexpected { expected: char, got: char },
}

/// A cursor over a message body that never reads past its end.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    tag: char,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(tag: u8, buf: &'a [u8]) -> Self {
        Cursor {
            buf,
            tag: tag as char,
        }
    }

    fn err(&self, reason: &'static str) -> ProtocolError {
        ProtocolError::Malformed {
            tag: self.tag,
            reason,
        }
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ProtocolError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<4>()
            .ok_or_else(|| self.err("truncated integer"))?;
        self.buf = rest;
        Ok(i32::from_be_bytes(*head))
    }

    /// A NUL-terminated string (UTF-8 checked).
    pub(crate) fn cstr(&mut self) -> Result<&'a str, ProtocolError> {
        let nul = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("string without terminator"))?;
        let s =
            std::str::from_utf8(&self.buf[..nul]).map_err(|_| self.err("string is not UTF-8"))?;
        self.buf = &self.buf[nul + 1..];
        Ok(s)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if n > self.buf.len() {
            return Err(self.err("field longer than the message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}
