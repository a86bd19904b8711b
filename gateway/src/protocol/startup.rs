//! The startup phase: packets without a tag byte, `i32` length then `i32` code.
//!
//! Codes follow `pqcomm.h`. Direct TLS (PostgreSQL 17) is not a packet at all: the connection
//! starts with a TLS ClientHello, whose first byte [`TLS_HANDSHAKE_BYTE`] no startup length can
//! have (startup packets are far shorter than 16 MiB).

use super::{Cursor, ProtocolError};

/// `NEGOTIATE_SSL_CODE`: 1234 << 16 | 5679.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// `NEGOTIATE_GSS_CODE`: 1234 << 16 | 5680.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// `CANCEL_REQUEST_CODE`: 1234 << 16 | 5678.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// Protocol 3.0 (`PG_PROTOCOL(3, 0)`).
pub const PROTOCOL_3_0: i32 = 196_608;
/// First byte of a TLS record carrying a handshake.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;
/// Smallest startup packet: length + code.
pub const MIN_STARTUP_LEN: usize = 8;

/// One packet of the startup phase (length already stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest { process_id: i32, secret_key: i32 },
    Startup(StartupMessage),
}

/// A StartupMessage: protocol version and the parameters, in the order the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks the length word of a startup packet (it counts itself) against `limit`, returning the
/// number of bytes that follow it.
pub fn body_len(len_word: [u8; 4], limit: usize) -> Result<usize, ProtocolError> {
    let len = i32::from_be_bytes(len_word);
    let total =
        usize::try_from(len).map_err(|_| ProtocolError::LengthTooSmall { len: len.into() })?;
    if total < MIN_STARTUP_LEN {
        return Err(ProtocolError::LengthTooSmall { len: len.into() });
    }
    if total > limit {
        return Err(ProtocolError::TooLarge { len: total, limit });
    }
    Ok(total - 4)
}

/// Decodes the bytes after the length word.
pub fn decode(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut c = Cursor::new(b'?', body);
    let code = c
        .i32()
        .map_err(|_| ProtocolError::BadStartup("packet too short"))?;
    match code {
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE if !c.is_empty() => Err(ProtocolError::BadStartup(
            "encryption request with trailing bytes",
        )),
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            let process_id = c
                .i32()
                .map_err(|_| ProtocolError::BadStartup("cancel request too short"))?;
            let secret_key = c
                .i32()
                .map_err(|_| ProtocolError::BadStartup("cancel request too short"))?;
            if !c.is_empty() {
                // Protocol 3.2 allows longer keys; the gateway hands out 4-byte keys only.
                return Err(ProtocolError::BadStartup(
                    "cancel request with an unexpected key length",
                ));
            }
            Ok(StartupPacket::CancelRequest {
                process_id,
                secret_key,
            })
        }
        version => {
            let major = (version >> 16) as u16;
            let minor = (version & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedVersion { major, minor });
            }
            Ok(StartupPacket::Startup(StartupMessage {
                major,
                minor,
                params: decode_params(c.rest())?,
            }))
        }
    }
}

/// `name\0value\0 ... \0`: pairs of C strings closed by an empty name.
fn decode_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let mut c = Cursor::new(b'?', rest);
        let name = c
            .cstr()
            .map_err(|_| ProtocolError::BadStartup("parameter list is not terminated"))?;
        if name.is_empty() {
            if !c.is_empty() {
                return Err(ProtocolError::BadStartup("bytes after the parameter list"));
            }
            return Ok(params);
        }
        let value = c
            .cstr()
            .map_err(|_| ProtocolError::BadStartup("parameter without a value"))?;
        if params.iter().any(|(k, _)| k == name) {
            return Err(ProtocolError::BadStartup("parameter given twice"));
        }
        params.push((name.to_owned(), value.to_owned()));
        rest = c.rest();
    }
}

/// Encodes a StartupMessage (what the gateway sends upstream), length included.
pub fn encode_startup(params: &[(String, String)]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0];
    out.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (k, v) in params {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out.push(0);
    let len = out.len() as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Encodes a CancelRequest, length included.
pub fn encode_cancel(process_id: i32, secret_key: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16i32.to_be_bytes());
    out[4..8].copy_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out[8..12].copy_from_slice(&process_id.to_be_bytes());
    out[12..].copy_from_slice(&secret_key.to_be_bytes());
    out
}

/// Encodes an SSLRequest, length included.
pub fn encode_ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8i32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(packet: &[u8]) -> &[u8] {
        &packet[4..]
    }

    #[test]
    fn startup_round_trips_parameters_in_order() {
        let params = vec![
            ("user".to_string(), "alice".to_string()),
            ("database".to_string(), "shop".to_string()),
            ("application_name".to_string(), "psql ünicode".to_string()),
        ];
        let packet = encode_startup(&params);
        let StartupPacket::Startup(m) = decode(body(&packet)).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!((m.major, m.minor), (3, 0));
        assert_eq!(m.params, params);
        assert_eq!(m.param("database"), Some("shop"));
    }

    #[test]
    fn special_codes_are_recognised() {
        assert_eq!(
            decode(body(&encode_ssl_request())).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            decode(&GSSENC_REQUEST_CODE.to_be_bytes()).unwrap(),
            StartupPacket::GssEncRequest
        );
        assert_eq!(
            decode(body(&encode_cancel(7, -9))).unwrap(),
            StartupPacket::CancelRequest {
                process_id: 7,
                secret_key: -9
            }
        );
    }

    #[test]
    fn lengths_are_checked() {
        assert!(body_len(3i32.to_be_bytes(), 10_000).is_err());
        assert!(body_len((-8i32).to_be_bytes(), 10_000).is_err());
        assert!(body_len(10_001i32.to_be_bytes(), 10_000).is_err());
        assert_eq!(body_len(8i32.to_be_bytes(), 10_000), Ok(4));
    }

    #[test]
    fn malformed_parameter_lists_are_refused() {
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0alice"); // no terminator
        assert!(decode(&b).is_err());
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0a\0user\0b\0\0");
        assert!(decode(&b).is_err(), "duplicate parameter");
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        b.extend_from_slice(b"user\0\xff\0\0");
        assert!(decode(&b).is_err(), "not UTF-8");
        let mut b = PROTOCOL_3_0.to_be_bytes().to_vec();
        b.extend_from_slice(b"\0junk");
        assert!(decode(&b).is_err(), "trailing bytes");
    }

    #[test]
    fn other_protocol_versions_are_refused() {
        let v2 = (2i32 << 16).to_be_bytes();
        assert_eq!(
            decode(&v2),
            Err(ProtocolError::UnsupportedVersion { major: 2, minor: 0 })
        );
        assert!(decode(&[1, 2]).is_err());
    }
}
