//! Capture: turns the frames of one session into recording events, in order.
//!
//! Pure and synchronous (no I/O, no clock: the caller passes the instant each frame was seen),
//! so the recorder task can run it off the forwarding path and tests can feed it bytes.
//!
//! The state kept per session is what attribution needs: prepared statements and portals (an
//! Execute names only a portal; the SQL was sent in a Parse maybe hours earlier), a FIFO of
//! requests the server has not answered yet (pipelining puts several in flight, and the server
//! answers in order), the rows of the result being received, and the COPY in progress.
//!
//! - [`client`]: client messages; [`server`]: server messages; [`copy`]: COPY in progress.
//! - [`values`]: capping and decoding of values; [`wire`]: a truncation-tolerant body reader.
//! - [`sql_text`]: lexical scan of SQL (statement split, password redaction).
//! - [`redact`]: secret patterns over column names, and where their values sit in SQL text.
//!
//! Redaction happens here, before anything is stored: role passwords in CREATE/ALTER ROLE always,
//! and the values of columns and parameters that match the session's [`SecretPatterns`] (result
//! rows, bound parameters, literals in SQL text, COPY data). A redacted value keeps its length and
//! says it was redacted.

mod client;
mod copy;
mod redact;
mod server;
pub(crate) mod sql_text;
mod values;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Direction;
use super::classify::Classifier;
use super::event::{Capped, EventKind};
use crate::protocol::frame::Frame;
pub use redact::{DEFAULT_SECRET_PATTERNS, SecretPatterns};

/// How much of a session's data is kept. A value over its cap is kept up to the cap with its full
/// length noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// SQL text of a Query or Parse.
    pub max_sql_bytes: usize,
    /// Each parameter, column value or notification payload.
    pub max_value_bytes: usize,
    /// Rows kept per statement; 0 keeps no rows (no `Rows` events).
    pub max_rows: usize,
    /// Bytes of row values kept per statement; 0 keeps no rows.
    pub max_result_bytes: usize,
    /// Bytes of COPY data kept per COPY; 0 keeps none (counts are still recorded).
    pub max_copy_bytes: usize,
    /// Named prepared statements tracked per session; beyond this, new ones are recorded when
    /// parsed but their Executes are not attributed (bounds memory against a hostile client).
    pub max_prepared_statements: usize,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        CaptureLimits {
            max_sql_bytes: 64 * 1024,
            max_value_bytes: 4 * 1024,
            max_rows: 100,
            max_result_bytes: 64 * 1024,
            max_copy_bytes: 64 * 1024,
            max_prepared_statements: 10_000,
        }
    }
}

/// The per-session state machine; see the module documentation.
#[derive(Debug)]
pub struct Capture {
    limits: CaptureLimits,
    /// Remembers how statement shapes classify (parsing every statement costs microseconds).
    classifier: Classifier,
    secrets: Arc<SecretPatterns>,
    statements: HashMap<String, PreparedStatement>,
    portals: HashMap<String, Portal>,
    /// Requests the server has yet to answer, oldest first.
    pending: VecDeque<Pending>,
    /// When the first extended-protocol message of the statement being assembled arrived (a
    /// statement's duration runs from its Parse or Bind, not from its Execute).
    extended_started: Option<DateTime<Utc>>,
    rows: server::RowCollector,
    copy: Option<copy::CopyState>,
}

#[derive(Debug)]
struct PreparedStatement {
    sql: Capped,
    /// From Parse, replaced by the server's ParameterDescription when the client asks for it.
    param_types: Vec<u32>,
    /// From the RowDescription answering a Describe of the statement (formats are the portal's).
    columns: Option<Vec<ResultColumn>>,
    /// Parameter numbers (`$n`) bound to secret columns, sorted: every Bind to this statement,
    /// however much later, has their values redacted.
    secret_params: Vec<u16>,
    /// Whether COPY data this statement exchanges is kept out of the recording.
    copy_redacted: bool,
}

#[derive(Debug)]
struct Portal {
    statement: String,
    result_formats: Vec<i16>,
    /// From the RowDescription answering a Describe of the portal.
    columns: Option<Vec<ResultColumn>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResultColumn {
    type_oid: u32,
    format: i16,
    /// The column's name matches a secret pattern: its values are redacted.
    secret: bool,
}

/// A request waiting for the server's answer.
#[derive(Debug)]
enum Pending {
    /// A simple Query or FunctionCall: answered until ReadyForQuery. `started` moves to each
    /// CommandComplete so every statement of a multi-statement query gets its own duration.
    Simple {
        started: DateTime<Utc>,
        columns: Vec<ResultColumn>,
        /// Whether the data of a COPY this query starts is kept out of the recording.
        copy_redacted: bool,
    },
    Describe {
        target: u8,
        name: String,
    },
    Execute {
        started: DateTime<Utc>,
        portal: String,
        statement: String,
        result_formats: Vec<i16>,
        /// Known at Execute time, or filled in when the answer to a Describe pipelined before
        /// this Execute arrives.
        columns: Option<Vec<ResultColumn>>,
        /// Whether the data of a COPY this statement starts is kept out of the recording.
        copy_redacted: bool,
    },
    Sync,
}

impl Capture {
    /// A capture redacting [`DEFAULT_SECRET_PATTERNS`].
    pub fn new(limits: CaptureLimits) -> Self {
        Capture::with_secrets(limits, SecretPatterns::defaults())
    }

    /// A capture redacting the values of columns and parameters that match `secrets`
    /// ([`SecretPatterns::none`] redacts only role passwords).
    pub fn with_secrets(limits: CaptureLimits, secrets: Arc<SecretPatterns>) -> Self {
        Capture {
            limits,
            secrets,
            classifier: Classifier::default(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            extended_started: None,
            rows: server::RowCollector::default(),
            copy: None,
        }
    }

    /// Appends the events `frame` produces (often none) to `out`. Malformed frames are recorded
    /// as far as they decode; nothing here panics on hostile bytes.
    pub fn on_frame(
        &mut self,
        direction: Direction,
        frame: &Frame,
        at: DateTime<Utc>,
        out: &mut Vec<EventKind>,
    ) {
        match direction {
            Direction::ClientToServer => self.on_client_frame(frame, at, out),
            Direction::ServerToClient => self.on_server_frame(frame, at, out),
        }
    }

    /// The session ended: what was collected for a statement that never completed (rows the
    /// client received, COPY data that went through) is given out, so that the recording holds
    /// what the client saw even when the server died without a word.
    pub fn finish(&mut self, out: &mut Vec<EventKind>) {
        self.rows.flush(out);
        self.finish_copy("fail: the session ended during the COPY".into(), out);
    }
}

/// Microseconds from `start` to `end`, 0 if the clock went backwards.
fn micros_between(start: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
    (end - start)
        .num_microseconds()
        .and_then(|m| u64::try_from(m).ok())
        .unwrap_or(0)
}
