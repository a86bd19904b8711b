//! What a recording holds: an ordered stream of events per session.
//!
//! Events are compact values extracted from the relayed frames (never the frames themselves),
//! serialised as JSON for storage, export and hashing. The serialised form is part of the
//! recording's integrity (see `record::chain`), so field names and order are a format: change them
//! only with a new `FORMAT_VERSION`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod json;

pub use json::{EventTimes, write_event, write_event_with};

/// Version of the event format, stored with every recording.
pub const FORMAT_VERSION: u32 = 1;

/// One event of a session's recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 0 for the session start, then +1 per event, without gaps.
    pub seq: u64,
    /// When the gateway saw the frame that produced the event.
    #[serde(serialize_with = "timestamp::serialize")]
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Event times in the exact text chrono's own serialisation gives (RFC 3339, `Z`, 0, 3, 6 or 9
/// fractional digits as the value needs), written without chrono's general formatting
/// machinery: it runs for every event on the forwarding path and was a third of its JSON cost.
mod timestamp {
    use chrono::{DateTime, Datelike, Timelike, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        match format(at, &mut buf) {
            Some(text) => serializer.serialize_str(text),
            // Leap seconds and years beyond 9999: chrono's way.
            None => serde::Serialize::serialize(at, serializer),
        }
    }

    pub(super) fn format<'b>(at: &DateTime<Utc>, buf: &'b mut [u8; 30]) -> Option<&'b str> {
        let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
        let nanos = at.nanosecond();
        if nanos >= 1_000_000_000 {
            return None;
        }
        fn put(buf: &mut [u8; 30], at: usize, value: u32, digits: usize) {
            let mut v = value;
            for i in (0..digits).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        put(buf, 0, year, 4);
        buf[4] = b'-';
        put(buf, 5, at.month(), 2);
        buf[7] = b'-';
        put(buf, 8, at.day(), 2);
        buf[10] = b'T';
        put(buf, 11, at.hour(), 2);
        buf[13] = b':';
        put(buf, 14, at.minute(), 2);
        buf[16] = b':';
        put(buf, 17, at.second(), 2);
        let (value, digits) = if nanos == 0 {
            (0, 0)
        } else if nanos.is_multiple_of(1_000_000) {
            (nanos / 1_000_000, 3)
        } else if nanos.is_multiple_of(1_000) {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        let mut n = 19;
        if digits > 0 {
            buf[19] = b'.';
            put(buf, 20, value, digits);
            n = 20 + digits;
        }
        buf[n] = b'Z';
        std::str::from_utf8(&buf[..=n]).ok()
    }
}

/// A value kept up to a cap: `text` is what was kept, `len` the full length in bytes, so a reader
/// knows how much is missing. Binary values are kept as lowercase hex (`hex: true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capped {
    pub text: String,
    pub len: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hex: bool,
    /// True when the value was replaced because it matched a secret pattern.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

impl Capped {
    /// True when less than the whole value was kept (a redacted value is not "truncated").
    pub fn is_truncated(&self) -> bool {
        let kept = if self.hex {
            self.text.len() / 2
        } else {
            self.text.len()
        };
        !self.redacted && (kept as u64) < self.len
    }
}

/// A bound parameter, decoded by type: `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    /// The parameter's type OID (0 when neither Parse nor the client said).
    pub type_oid: u32,
    pub value: Option<Capped>,
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// What kind of statement ran (by a real SQL parser; first keyword when it cannot parse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementClass {
    Read,
    Write,
    Ddl,
    Privilege,
    Transaction,
    Utility,
    Unknown,
}

impl StatementClass {
    pub const ALL: [StatementClass; 7] = [
        StatementClass::Read,
        StatementClass::Write,
        StatementClass::Ddl,
        StatementClass::Privilege,
        StatementClass::Transaction,
        StatementClass::Utility,
        StatementClass::Unknown,
    ];

    /// The class's name: its serde spelling, and how the store and the console write it.
    pub fn name(self) -> &'static str {
        match self {
            StatementClass::Read => "read",
            StatementClass::Write => "write",
            StatementClass::Ddl => "ddl",
            StatementClass::Privilege => "privilege",
            StatementClass::Transaction => "transaction",
            StatementClass::Utility => "utility",
            StatementClass::Unknown => "unknown",
        }
    }
}

/// Error or notice fields as the server sent them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMessage {
    pub severity: String,
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// 1-based character position in the statement, when the server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    SessionStart {
        session_id: Uuid,
        credential_id: Uuid,
        person: String,
        groups: Vec<String>,
        target: String,
        db_role: String,
        client_addr: String,
        application_name: Option<String>,
        tls_version: Option<String>,
        format_version: u32,
    },
    SessionEnd {
        reason: String,
        detail: Option<String>,
        bytes_client_to_server: u64,
        bytes_server_to_client: u64,
    },
    /// A simple-protocol query (may hold several statements).
    Query {
        sql: Capped,
        class: StatementClass,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        risks: Vec<String>,
    },
    Parse {
        statement: String,
        sql: Capped,
        param_types: Vec<u32>,
        class: StatementClass,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        risks: Vec<String>,
    },
    Bind {
        portal: String,
        statement: String,
        params: Vec<Param>,
    },
    /// An Execute, attributed to the SQL text of the statement its portal was bound to, however
    /// long ago that statement was prepared.
    Execute {
        portal: String,
        statement: String,
        sql: Option<Capped>,
        max_rows: i32,
    },
    Describe {
        /// 'S' statement or 'P' portal.
        target: char,
        name: String,
    },
    Close {
        target: char,
        name: String,
    },
    Sync,
    Flush,
    FunctionCall {
        function_oid: u32,
        args: Vec<Param>,
    },
    RowDescription {
        columns: Vec<Column>,
    },
    /// Rows of the current statement, up to the cap; `omitted` counts rows not kept.
    Rows {
        rows: Vec<Vec<Option<Capped>>>,
        omitted: u64,
    },
    CommandComplete {
        tag: String,
        rows: Option<u64>,
        /// From the first message of the statement to its completion.
        duration_micros: u64,
    },
    EmptyQuery,
    PortalSuspended,
    Error(ServerMessage),
    Notice(ServerMessage),
    ReadyForQuery {
        /// 'I' idle, 'T' in a transaction, 'E' in a failed transaction.
        status: char,
    },
    CopyStart {
        /// "in" (client to server) or "out".
        direction: String,
        binary: bool,
    },
    CopyData {
        /// Data kept, up to the cap.
        data: Capped,
    },
    CopyEnd {
        direction: String,
        bytes: u64,
        rows: u64,
        /// "done" or "fail: <message>".
        outcome: String,
    },
    Notification {
        process_id: i32,
        channel: String,
        payload: Capped,
    },
    ParameterStatus {
        name: String,
        value: String,
    },
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};

    fn chrono_text(at: &DateTime<Utc>) -> String {
        serde_json::to_string(at)
            .unwrap()
            .trim_matches('"')
            .to_string()
    }

    #[test]
    fn timestamps_are_written_exactly_as_chrono_writes_them() {
        let mut nanos = vec![0, 1, 999, 1_000, 120_000, 1_000_000, 5_000_000, 999_999_999];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            nanos.push((x % 1_000_000_000) as u32);
        }
        for (i, n) in nanos.iter().enumerate() {
            let secs = 1_700_000_000 + (i as i64) * 7_919 + (x % 1000) as i64;
            let at = Utc.timestamp_opt(secs, *n).unwrap();
            let mut buf = [0u8; 30];
            assert_eq!(
                super::timestamp::format(&at, &mut buf),
                Some(chrono_text(&at).as_str())
            );
        }
        for at in [
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
        ] {
            let mut buf = [0u8; 30];
            assert_eq!(
                super::timestamp::format(&at, &mut buf),
                Some(chrono_text(&at).as_str())
            );
        }
    }

    #[test]
    fn events_serialise_their_time_like_before() {
        let at = Utc.timestamp_opt(1_764_000_000, 301_670_683).unwrap();
        let event = super::Event {
            seq: 3,
            at,
            kind: super::EventKind::Sync,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"seq":3,"at":"2025-11-24T16:00:00.301670683Z","type":"sync"}"#
        );
        let back: super::Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
    }
}
