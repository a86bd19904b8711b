//! Server-to-client messages the gateway writes itself, and typed views of the server messages it
//! must understand during login.

use bytes::{BufMut, BytesMut};

use super::{Cursor, ProtocolError};

pub const AUTHENTICATION: u8 = b'R';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const PARAMETER_STATUS: u8 = b'S';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';

/// Appends one tagged message: tag, length, then what `body` writes.
pub fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - len_at) as i32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early and desynchronise the client; drop it.
    out.extend(s.bytes().filter(|&b| b != 0));
    out.put_u8(0);
}

/// Severity of an error or notice the gateway reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// An error or notice written by the gateway (not relayed from the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMessage {
    pub severity: Severity,
    /// SQLSTATE, five characters.
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorMessage {
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        ErrorMessage {
            severity: Severity::Fatal,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// ErrorResponse, or NoticeResponse for notice and warning severities.
    pub fn encode(&self, out: &mut BytesMut) {
        let tag = match self.severity {
            Severity::Error | Severity::Fatal => ERROR_RESPONSE,
            Severity::Notice | Severity::Warning => NOTICE_RESPONSE,
        };
        put_message(out, tag, |b| {
            for (field, value) in [
                (b'S', Some(self.severity.as_str())),
                (b'V', Some(self.severity.as_str())),
                (b'C', Some(self.code)),
                (b'M', Some(self.message.as_str())),
                (b'D', self.detail.as_deref()),
                (b'H', self.hint.as_deref()),
            ] {
                if let Some(value) = value {
                    b.put_u8(field);
                    put_cstr(b, value);
                }
            }
            b.put_u8(0);
        });
    }
}

pub fn authentication_ok(out: &mut BytesMut) {
    put_message(out, AUTHENTICATION, |b| b.put_i32(0));
}

pub fn authentication_cleartext_password(out: &mut BytesMut) {
    put_message(out, AUTHENTICATION, |b| b.put_i32(3));
}

pub fn backend_key_data(out: &mut BytesMut, process_id: i32, secret_key: i32) {
    put_message(out, BACKEND_KEY_DATA, |b| {
        b.put_i32(process_id);
        b.put_i32(secret_key);
    });
}

/// A RowDescription of `(name, type OID)` columns, 4-byte, text format, from no table: what
/// tests and benchmarks of the recorder answer a query with.
pub fn row_description(out: &mut BytesMut, columns: &[(&str, u32)]) {
    put_message(out, b'T', |b| {
        b.put_i16(i16::try_from(columns.len()).expect("fewer than 32,768 columns"));
        for (name, type_oid) in columns {
            put_cstr(b, name);
            b.put_i32(0); // table OID
            b.put_i16(0); // column number
            b.put_u32(*type_oid);
            b.put_i16(4); // type size
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text format
        }
    });
}

/// Tells a client that asked for protocol 3.x (x > 0) or `_pq_.` options that the gateway speaks
/// 3.0 and ignores those options.
pub fn negotiate_protocol_version(out: &mut BytesMut, unsupported_options: &[&str]) {
    put_message(out, NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32(0);
        b.put_i32(unsupported_options.len() as i32);
        for o in unsupported_options {
            put_cstr(b, o);
        }
    });
}

/// A server's authentication request, as far as the gateway answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    Sasl {
        mechanisms: Vec<String>,
    },
    SaslContinue {
        data: Vec<u8>,
    },
    SaslFinal {
        data: Vec<u8>,
    },
    /// Kerberos, GSS, SSPI...: methods the gateway cannot answer.
    Unsupported(i32),
}

impl AuthRequest {
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut c = Cursor::new(AUTHENTICATION, body);
        Ok(match c.i32()? {
            0 => AuthRequest::Ok,
            3 => AuthRequest::CleartextPassword,
            5 => {
                let salt = c.bytes(4)?;
                AuthRequest::Md5Password {
                    salt: [salt[0], salt[1], salt[2], salt[3]],
                }
            }
            10 => {
                let mut mechanisms = Vec::new();
                loop {
                    let m = c.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechanisms.push(m.to_owned());
                }
                AuthRequest::Sasl { mechanisms }
            }
            11 => AuthRequest::SaslContinue {
                data: c.rest().to_vec(),
            },
            12 => AuthRequest::SaslFinal {
                data: c.rest().to_vec(),
            },
            other => AuthRequest::Unsupported(other),
        })
    }
}

/// The fields of an ErrorResponse or NoticeResponse from a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character position in the statement.
    pub position: Option<u32>,
}

impl ErrorFields {
    /// Reads what the body holds. Tolerant by design: text in another encoding is kept lossily,
    /// and a cut-off or malformed body yields the fields read before the damage (a gateway
    /// reports and records server errors; it does not judge them).
    pub fn parse(body: &[u8]) -> Self {
        let mut f = ErrorFields::default();
        let mut rest = body;
        while let Some((&field, after)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let Some(nul) = after.iter().position(|&b| b == 0) else {
                break;
            };
            let value = String::from_utf8_lossy(&after[..nul]).into_owned();
            rest = &after[nul + 1..];
            match field {
                // 'V' is the untranslated severity (9.6+); 'S' may be localised.
                b'V' => f.severity = value,
                b'S' if f.severity.is_empty() => f.severity = value,
                b'C' => f.code = value,
                b'M' => f.message = value,
                b'D' => f.detail = Some(value),
                b'H' => f.hint = Some(value),
                b'P' => f.position = value.parse().ok(),
                _ => {}
            }
        }
        f
    }
}

/// BackendKeyData: the upstream backend's cancel key.
pub fn parse_backend_key_data(body: &[u8]) -> Result<(i32, i32), ProtocolError> {
    let mut c = Cursor::new(BACKEND_KEY_DATA, body);
    Ok((c.i32()?, c.i32()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::split_frames;

    #[test]
    fn error_message_round_trips_through_the_parser() {
        let mut out = BytesMut::new();
        ErrorMessage::fatal("28P01", "credential expired")
            .with_hint("request a new one")
            .encode(&mut out);
        let frames = split_frames(out.freeze()).unwrap();
        assert_eq!(frames[0].tag, b'E');
        let f = ErrorFields::parse(&frames[0].body);
        assert_eq!(f.code, "28P01");
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.message, "credential expired");
        assert_eq!(f.hint.as_deref(), Some("request a new one"));
    }

    #[test]
    fn nul_in_a_message_cannot_break_framing() {
        let mut out = BytesMut::new();
        ErrorMessage::fatal("08P01", "a\0b").encode(&mut out);
        let f = ErrorFields::parse(&split_frames(out.freeze()).unwrap()[0].body);
        assert_eq!(f.message, "ab");
    }

    #[test]
    fn error_fields_survive_other_encodings_and_cut_bodies() {
        let body = b"SERROR\0VERROR\0C42601\0Mbad \xe9\0P17\0Hfix it\0\0";
        let f = ErrorFields::parse(body);
        assert_eq!((f.code.as_str(), f.position), ("42601", Some(17)));
        assert_eq!(
            f.message, "bad \u{fffd}",
            "Latin-1 byte kept lossily, fields after it still read"
        );
        assert_eq!(f.hint.as_deref(), Some("fix it"));
        let cut = ErrorFields::parse(&body[..24]); // ends inside the message field
        assert_eq!(
            (
                cut.severity.as_str(),
                cut.code.as_str(),
                cut.message.as_str()
            ),
            ("ERROR", "42601", "")
        );
    }

    #[test]
    fn auth_requests_parse() {
        assert_eq!(
            AuthRequest::parse(&0i32.to_be_bytes()).unwrap(),
            AuthRequest::Ok
        );
        let mut md5 = 5i32.to_be_bytes().to_vec();
        md5.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            AuthRequest::parse(&md5).unwrap(),
            AuthRequest::Md5Password { salt: [1, 2, 3, 4] }
        );
        let mut sasl = 10i32.to_be_bytes().to_vec();
        sasl.extend_from_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        assert_eq!(
            AuthRequest::parse(&sasl).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()]
            }
        );
        assert!(AuthRequest::parse(&[0, 0]).is_err());
        assert!(
            AuthRequest::parse(&5i32.to_be_bytes()).is_err(),
            "md5 without salt"
        );
    }
}
