//! Client-to-server messages the gateway reads during login or writes upstream.

use bytes::{BufMut, BytesMut};

use super::backend::put_message;
use super::{Cursor, ProtocolError};

pub const PASSWORD_MESSAGE: u8 = b'p';
pub const TERMINATE: u8 = b'X';
pub const QUERY: u8 = b'Q';

/// The password a client sent in answer to AuthenticationCleartextPassword.
pub fn parse_password(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut c = Cursor::new(PASSWORD_MESSAGE, body);
    let password = c.cstr()?;
    if !c.is_empty() {
        return Err(ProtocolError::Malformed {
            tag: 'p',
            reason: "bytes after the password",
        });
    }
    Ok(password)
}

pub fn password(out: &mut BytesMut, password: &str) {
    put_message(out, PASSWORD_MESSAGE, |b| {
        b.extend_from_slice(password.as_bytes());
        b.put_u8(0);
    });
}

pub fn sasl_initial_response(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    put_message(out, PASSWORD_MESSAGE, |b| {
        b.extend_from_slice(mechanism.as_bytes());
        b.put_u8(0);
        b.put_i32(data.len() as i32);
        b.extend_from_slice(data);
    });
}

pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    put_message(out, PASSWORD_MESSAGE, |b| b.extend_from_slice(data));
}

pub fn terminate(out: &mut BytesMut) {
    put_message(out, TERMINATE, |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_parses_and_rejects_garbage() {
        assert_eq!(parse_password(b"tok.en\0").unwrap(), "tok.en");
        assert!(parse_password(b"no-terminator").is_err());
        assert!(parse_password(b"a\0b").is_err());
        assert!(parse_password(b"\xff\xfe\0").is_err());
    }
}
