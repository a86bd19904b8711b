//! What a recording holds: an ordered stream of events per session.
//!
//! Events are compact values extracted from the relayed frames (never the frames themselves),
//! serialised as JSON for storage, export and hashing. The serialised form is part of the
//! recording's integrity (see `record::chain`), so field names and order are a format: change them
//! only with a new `FORMAT_VERSION`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the event format, stored with every recording.
pub const FORMAT_VERSION: u32 = 1;

/// One event of a session's recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// 0 for the session start, then +1 per event, without gaps.
    pub seq: u64,
    /// When the gateway saw the frame that produced the event.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: EventKind,
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
