//! What the replay player receives: a session's recording as entries (statements with their
//! results, and the few other things that happened), already in display form, as JSON.
//!
//! Every string here is recorded, so attacker-controlled: the player puts them into the page
//! as text (`textContent`), never as HTML.

use chrono::{DateTime, Utc};
use gateway::record::event::{Capped, Column, Param, ServerMessage};
use gateway::record::statements::{IndexedStatement, ResultSet, StatementDetail};
use gateway::store::search::class_name;
use serde::Serialize;

use super::sql::{inline_params, is_introspection};

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Statement(Box<StatementEntry>),
    /// Something that is not a statement: a parameter change, a notification, a notice or
    /// error answering no statement, the session's start or end, or protocol traffic.
    Event(Box<EventEntry>),
}

impl Entry {
    pub fn seq(&self) -> i64 {
        match self {
            Entry::Statement(s) => s.seq,
            Entry::Event(e) => e.seq,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatementEntry {
    pub seq: i64,
    /// Milliseconds from the session's start.
    pub offset_ms: i64,
    pub at: String,
    /// Transaction status it was sent in, as psql's prompt shows it: "" idle, "*" in a
    /// transaction, "!" in a failed one.
    pub prompt: &'static str,
    pub sql: String,
    /// "kept N of M bytes" or "redacted", when the SQL is not whole.
    pub sql_note: Option<String>,
    /// The SQL with its parameters written in as literals, when it has any.
    pub inlined: Option<String>,
    pub params: Vec<ParamView>,
    pub class: &'static str,
    pub risks: Vec<String>,
    /// Client introspection (catalog queries, driver set-up): hidden with protocol noise.
    pub noise: bool,
    pub results: Vec<ResultView>,
    pub results_omitted: u64,
    /// The last command tag and the rows counted, as the index has them.
    pub tag: Option<String>,
    pub rows: Option<u64>,
    pub error: Option<MessageView>,
    pub notices: Vec<MessageView>,
    pub duration_us: u64,
    /// The session ended while it ran: no answer came.
    pub interrupted: bool,
}

#[derive(Debug, Serialize)]
pub struct ParamView {
    /// `$1`, `$2`, …
    pub name: String,
    pub type_name: String,
    /// `None` is SQL NULL.
    pub value: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ResultView {
    pub columns: Vec<ColumnView>,
    /// Cells as text; `None` is NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows returned that the recording did not keep.
    pub rows_omitted: u64,
    pub tag: Option<String>,
    pub copy: Option<CopyView>,
}

#[derive(Debug, Serialize)]
pub struct ColumnView {
    pub name: String,
    pub type_name: String,
    pub numeric: bool,
}

#[derive(Debug, Serialize)]
pub struct CopyView {
    pub direction: String,
    pub binary: bool,
    pub data: Vec<String>,
    pub chunks_omitted: u64,
    pub bytes: Option<u64>,
    pub rows: Option<u64>,
    pub outcome: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct MessageView {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub position: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct EventEntry {
    pub seq: i64,
    pub offset_ms: i64,
    pub at: String,
    /// session_start, session_end, parameter_status, notification, notice, error, protocol,
    /// unreadable.
    pub what: &'static str,
    pub text: String,
    /// Protocol traffic (Parse, Bind, Describe, Sync, …): hidden unless asked for.
    pub noise: bool,
    /// For errors and notices answering no statement.
    pub message: Option<MessageView>,
}

pub fn offset_ms(start: DateTime<Utc>, at: DateTime<Utc>) -> i64 {
    (at - start).num_milliseconds().max(0)
}

pub fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A statement folded with its detail.
pub fn statement(
    start: DateTime<Utc>,
    s: IndexedStatement,
    detail: Option<Box<StatementDetail>>,
) -> StatementEntry {
    let detail = detail.unwrap_or_else(|| Box::new(StatementDetail::new(None, &[], 'I')));
    let sql = match &detail.sql {
        Some(recorded) => recorded.text.clone(),
        None => s.sql.clone(),
    };
    let sql_note = detail.sql.as_ref().and_then(value_note);
    let params: Vec<ParamView> = detail
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| param_view(i, p))
        .collect();
    let inlined = (!detail.params.is_empty())
        .then(|| inline_params(&sql, &detail.params))
        .filter(|inlined| *inlined != sql);
    StatementEntry {
        seq: s.seq,
        offset_ms: offset_ms(start, s.at),
        at: stamp(s.at),
        prompt: match detail.status_before {
            'T' => "*",
            'E' => "!",
            _ => "",
        },
        noise: is_introspection(&sql),
        sql,
        sql_note,
        inlined,
        params,
        class: class_name(s.class),
        risks: s.risks,
        results: detail.results.iter().map(result_view).collect(),
        results_omitted: detail.results_omitted,
        tag: s.tag,
        rows: s.rows,
        error: detail.error.as_ref().map(message_view).or_else(|| {
            // A detail-less statement still shows the index's error.
            s.error.map(|(code, message)| MessageView {
                severity: "ERROR".into(),
                code,
                message,
                detail: None,
                hint: None,
                position: None,
            })
        }),
        notices: detail.notices.iter().map(message_view).collect(),
        duration_us: s.duration_micros,
        interrupted: detail.interrupted,
    }
}

pub fn message_view(m: &ServerMessage) -> MessageView {
    MessageView {
        severity: m.severity.clone(),
        code: m.code.clone(),
        message: m.message.clone(),
        detail: m.detail.clone(),
        hint: m.hint.clone(),
        position: m.position,
    }
}

fn result_view(r: &ResultSet) -> ResultView {
    ResultView {
        columns: r.columns.iter().map(column_view).collect(),
        rows: r
            .rows
            .iter()
            .map(|row| row.iter().map(|c| c.as_ref().map(cell)).collect())
            .collect(),
        rows_omitted: r.rows_omitted,
        tag: r.tag.clone(),
        copy: r.copy.as_ref().map(|c| CopyView {
            direction: c.direction.clone(),
            binary: c.binary,
            data: c.data.iter().map(cell).collect(),
            chunks_omitted: c.chunks_omitted,
            bytes: c.bytes,
            rows: c.rows,
            outcome: c.outcome.clone(),
        }),
    }
}

fn column_view(c: &Column) -> ColumnView {
    ColumnView {
        name: c.name.clone(),
        type_name: type_name(c.type_oid),
        numeric: is_numeric(c.type_oid),
    }
}

fn param_view(i: usize, p: &Param) -> ParamView {
    ParamView {
        name: format!("${}", i + 1),
        type_name: type_name(p.type_oid),
        value: p.value.as_ref().map(cell),
        note: p.value.as_ref().and_then(value_note),
    }
}

/// A recorded value as text: hex values with psql's `\x` prefix.
fn cell(value: &Capped) -> String {
    if value.redacted {
        "[redacted]".to_string()
    } else if value.hex {
        format!("\\x{}", value.text)
    } else {
        value.text.clone()
    }
}

/// Why a value is not shown whole, if it is not.
fn value_note(value: &Capped) -> Option<String> {
    if value.redacted {
        Some("redacted".into())
    } else if value.is_truncated() {
        let kept = if value.hex {
            value.text.len() / 2
        } else {
            value.text.len()
        };
        Some(format!("kept {kept} of {} bytes", value.len))
    } else if value.hex {
        Some("binary, shown as hex".into())
    } else {
        None
    }
}

/// Type OIDs psql right-aligns (int2, int4, int8, oid, float4, float8, numeric).
const NUMERIC_TYPES: [u32; 7] = [21, 23, 20, 26, 700, 701, 1700];

pub fn is_numeric(oid: u32) -> bool {
    NUMERIC_TYPES.contains(&oid)
}

/// The built-in types clients use most; others by OID.
pub fn type_name(oid: u32) -> String {
    let name = match oid {
        0 => "unknown",
        16 => "boolean",
        17 => "bytea",
        18 => "char",
        19 => "name",
        20 => "bigint",
        21 => "smallint",
        23 => "integer",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "real",
        701 => "double precision",
        1042 => "character",
        1043 => "character varying",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1186 => "interval",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        1009 => "text[]",
        1007 => "integer[]",
        1016 => "bigint[]",
        _ => return format!("oid {oid}"),
    };
    name.to_string()
}
