//! Server messages: results, completions, errors and COPY, matched to the oldest request the
//! server has not finished answering.

use chrono::{DateTime, Utc};

use super::super::event::{Capped, Column, EventKind, ServerMessage};
use super::copy::{CopyDirection, CopyState};
use super::redact::redacted;
use super::values::decode;
use super::wire::Reader;
use super::{Capture, CaptureLimits, Pending, ResultColumn, micros_between};
use crate::protocol::backend::ErrorFields;
use crate::protocol::frame::Frame;

const ROW_DESCRIPTION: u8 = b'T';
const DATA_ROW: u8 = b'D';
const COMMAND_COMPLETE: u8 = b'C';
const EMPTY_QUERY: u8 = b'I';
const PORTAL_SUSPENDED: u8 = b's';
const ERROR_RESPONSE: u8 = b'E';
const NOTICE_RESPONSE: u8 = b'N';
const READY_FOR_QUERY: u8 = b'Z';
const COPY_IN_RESPONSE: u8 = b'G';
const COPY_OUT_RESPONSE: u8 = b'H';
const COPY_BOTH_RESPONSE: u8 = b'W';
const COPY_DATA: u8 = b'd';
const COPY_DONE: u8 = b'c';
const NOTIFICATION: u8 = b'A';
const PARAMETER_STATUS: u8 = b'S';
const PARAMETER_DESCRIPTION: u8 = b't';
const NO_DATA: u8 = b'n';

/// The rows of the result being received, up to the caps.
#[derive(Debug, Default)]
pub(super) struct RowCollector {
    rows: Vec<Vec<Option<Capped>>>,
    kept_bytes: usize,
    omitted: u64,
    /// Set once a row did not fit, so what is kept stays a prefix of the result.
    full: bool,
}

impl RowCollector {
    /// Adds a DataRow. `columns` is `None` when no RowDescription said what the columns are (an
    /// Execute without a Describe): then every value is redacted if `redact_unknown`.
    fn add(
        &mut self,
        body: &[u8],
        body_len: usize,
        columns: Option<&[ResultColumn]>,
        redact_unknown: bool,
        limits: &CaptureLimits,
    ) {
        if limits.max_rows == 0 || limits.max_result_bytes == 0 {
            return;
        }
        if self.full || self.rows.len() >= limits.max_rows {
            self.omitted += 1;
            return;
        }
        let row = decode_row(
            body,
            body_len == body.len(),
            columns.unwrap_or_default(),
            columns.is_none() && redact_unknown,
            limits.max_value_bytes,
        );
        let size: usize = row.iter().flatten().map(|v| v.text.len()).sum();
        if self.kept_bytes + size > limits.max_result_bytes {
            self.full = true;
            self.omitted += 1;
            return;
        }
        self.kept_bytes += size;
        self.rows.push(row);
    }

    /// The `Rows` event for what was collected, if any row was seen; resets for the next result.
    pub(super) fn flush(&mut self, out: &mut Vec<EventKind>) {
        if self.rows.is_empty() && self.omitted == 0 {
            return;
        }
        let collected = std::mem::take(self);
        out.push(EventKind::Rows {
            rows: collected.rows,
            omitted: collected.omitted,
        });
    }
}

/// A DataRow's values; those of secret columns (all of them with `redact_all`) are redacted,
/// never decoded.
fn decode_row(
    body: &[u8],
    complete: bool,
    columns: &[ResultColumn],
    redact_all: bool,
    max: usize,
) -> Vec<Option<Capped>> {
    let mut r = Reader::new(body);
    let Some(count) = r.i16().and_then(|n| usize::try_from(n).ok()) else {
        return Vec::new();
    };
    let mut row = Vec::with_capacity(count.min(r.remaining() / 4 + 1));
    for i in 0..count {
        let Some(len) = r.i32() else { break };
        let Ok(len) = usize::try_from(len) else {
            row.push(None);
            continue;
        };
        let bytes = r.up_to(len);
        if bytes.len() < len && complete {
            break;
        }
        let column = columns.get(i).copied().unwrap_or(ResultColumn {
            type_oid: 0,
            format: 0,
            secret: false,
        });
        row.push(Some(if redact_all || column.secret {
            redacted(len as u64)
        } else {
            decode(column.type_oid, column.format, bytes, len, max)
        }));
    }
    row
}

impl Capture {
    pub(super) fn on_server_frame(
        &mut self,
        frame: &Frame,
        at: DateTime<Utc>,
        out: &mut Vec<EventKind>,
    ) {
        let mut r = Reader::new(&frame.body);
        match frame.tag {
            ROW_DESCRIPTION => {
                self.row_description(&mut r, out);
            }
            DATA_ROW => {
                let columns = match self.pending.front() {
                    Some(Pending::Simple { columns, .. }) => Some(columns.as_slice()),
                    Some(Pending::Execute { columns, .. }) => columns.as_deref(),
                    _ => None,
                };
                self.rows.add(
                    &frame.body,
                    frame.body_len,
                    columns,
                    !self.secrets.is_none(),
                    &self.limits,
                );
            }
            COMMAND_COMPLETE => {
                let (tag, _) = r.cstr_or_rest();
                let tag = String::from_utf8_lossy(tag).into_owned();
                let rows = rows_from_tag(&tag);
                self.finish_copy("done".to_owned(), out);
                self.rows.flush(out);
                let duration_micros = self.complete_statement(at);
                out.push(EventKind::CommandComplete {
                    tag,
                    rows,
                    duration_micros,
                });
            }
            EMPTY_QUERY => {
                self.complete_statement(at);
                out.push(EventKind::EmptyQuery);
            }
            PORTAL_SUSPENDED => {
                self.rows.flush(out);
                self.complete_statement(at);
                out.push(EventKind::PortalSuspended);
            }
            ERROR_RESPONSE => {
                let message = server_message(&mut r);
                if self.copy.is_some() {
                    self.finish_copy(format!("fail: {}", message.message), out);
                }
                self.rows.flush(out);
                self.abandon_until_sync();
                out.push(EventKind::Error(message));
            }
            NOTICE_RESPONSE => out.push(EventKind::Notice(server_message(&mut r))),
            READY_FOR_QUERY => {
                let status = r.u8().map_or('?', char::from);
                self.ready_for_query(status);
                out.push(EventKind::ReadyForQuery { status });
            }
            COPY_IN_RESPONSE | COPY_OUT_RESPONSE | COPY_BOTH_RESPONSE => {
                let direction = match frame.tag {
                    COPY_IN_RESPONSE => CopyDirection::In,
                    COPY_OUT_RESPONSE => CopyDirection::Out,
                    _ => CopyDirection::Both,
                };
                let binary = r.u8() == Some(1);
                let redacted = match self.pending.front() {
                    Some(
                        Pending::Simple { copy_redacted, .. }
                        | Pending::Execute { copy_redacted, .. },
                    ) => *copy_redacted,
                    _ => !self.secrets.is_none(),
                };
                self.copy = Some(CopyState {
                    direction,
                    binary,
                    redacted,
                    bytes: 0,
                    newlines: 0,
                    kept: Vec::new(),
                });
                out.push(EventKind::CopyStart {
                    direction: direction.as_str().to_owned(),
                    binary,
                });
            }
            COPY_DATA => self.copy_data(frame, true),
            COPY_DONE => self.copy_done(true, out),
            NOTIFICATION => {
                self.notification(&mut r, out);
            }
            PARAMETER_STATUS => {
                if let (Some(name), Some(value)) = (r.cstr_lossy(), r.cstr_lossy()) {
                    out.push(EventKind::ParameterStatus { name, value });
                }
            }
            PARAMETER_DESCRIPTION => self.parameter_description(&mut r),
            NO_DATA => {
                if matches!(self.pending.front(), Some(Pending::Describe { .. })) {
                    self.pending.pop_front();
                }
            }
            // ParseComplete, BindComplete, CloseComplete, BackendKeyData, FunctionCallResponse:
            // nothing an auditor needs beyond what the surrounding events say.
            _ => {}
        }
    }

    fn row_description(&mut self, r: &mut Reader, out: &mut Vec<EventKind>) -> Option<()> {
        let count = usize::try_from(r.i16()?).ok()?;
        // Each field takes at least 19 bytes: refuse counts the body cannot hold.
        let mut columns = Vec::with_capacity(count.min(r.remaining() / 19));
        let mut result_columns = Vec::with_capacity(columns.capacity());
        for _ in 0..count {
            let Some(name) = r.cstr_lossy() else { break };
            let (
                Some(_table),
                Some(_attribute),
                Some(type_oid),
                Some(_size),
                Some(_modifier),
                Some(format),
            ) = (r.i32(), r.i16(), r.u32(), r.i16(), r.i32(), r.i16())
            else {
                break;
            };
            let secret = self.secrets.matches_name(&name);
            columns.push(Column { name, type_oid });
            result_columns.push(ResultColumn {
                type_oid,
                format,
                secret,
            });
        }
        match self.pending.front() {
            Some(Pending::Describe { .. }) => {
                let Some(Pending::Describe { target, name }) = self.pending.pop_front() else {
                    unreachable!("front was a Describe")
                };
                self.describe_answered(target, &name, result_columns);
            }
            Some(Pending::Simple { .. }) => {
                if let Some(Pending::Simple { columns, .. }) = self.pending.front_mut() {
                    *columns = result_columns;
                }
            }
            _ => {}
        }
        out.push(EventKind::RowDescription { columns });
        Some(())
    }

    /// Remembers the columns a Describe revealed, for the statement or portal and for an Execute
    /// of it already pipelined behind the Describe.
    fn describe_answered(&mut self, target: u8, name: &str, columns: Vec<ResultColumn>) {
        let describes_statement = target == b'S';
        for pending in self.pending.iter_mut() {
            if let Pending::Execute {
                portal,
                statement,
                result_formats,
                columns: known @ None,
                ..
            } = pending
            {
                if describes_statement && statement == name {
                    *known = Some(super::client::result_columns(&columns, result_formats));
                    break;
                }
                if !describes_statement && portal == name {
                    *known = Some(columns.clone());
                    break;
                }
            }
        }
        if describes_statement {
            if let Some(statement) = self.statements.get_mut(name) {
                statement.columns = Some(columns);
            }
        } else if let Some(portal) = self.portals.get_mut(name) {
            portal.columns = Some(columns);
        }
    }

    fn parameter_description(&mut self, r: &mut Reader) {
        let Some(Pending::Describe { target: b'S', name }) = self.pending.front() else {
            return;
        };
        let Some(count) = r.i16().and_then(|n| usize::try_from(n).ok()) else {
            return;
        };
        if count * 4 > r.remaining() {
            return;
        }
        let types: Vec<u32> = (0..count).filter_map(|_| r.u32()).collect();
        if let Some(statement) = self.statements.get_mut(name) {
            statement.param_types = types;
        }
    }

    fn notification(&mut self, r: &mut Reader, out: &mut Vec<EventKind>) -> Option<()> {
        let process_id = r.i32()?;
        let channel = r.cstr_lossy()?;
        let (payload, _) = r.cstr_or_rest();
        let payload =
            super::values::capped_text_or_hex(payload, self.limits.max_value_bytes, payload.len());
        out.push(EventKind::Notification {
            process_id,
            channel,
            payload,
        });
        Some(())
    }

    /// The current statement finished: its duration, and (for an Execute) it leaves the queue.
    /// A simple query stays until ReadyForQuery; its next statement is timed from here.
    fn complete_statement(&mut self, at: DateTime<Utc>) -> u64 {
        match self.pending.front_mut() {
            Some(Pending::Simple { started, .. }) => {
                let micros = micros_between(*started, at);
                *started = at;
                micros
            }
            Some(Pending::Execute { started, .. }) => {
                let micros = micros_between(*started, at);
                self.pending.pop_front();
                micros
            }
            _ => 0,
        }
    }

    /// After an error in the extended protocol the server skips everything up to the next Sync.
    fn abandon_until_sync(&mut self) {
        while let Some(front) = self.pending.front() {
            match front {
                Pending::Sync | Pending::Simple { .. } => return,
                Pending::Describe { .. } | Pending::Execute { .. } => {
                    self.pending.pop_front();
                }
            }
        }
    }

    /// ReadyForQuery answers the oldest Query, FunctionCall or Sync; anything before it that was
    /// never answered is dropped. Outside a transaction, no portal survives.
    fn ready_for_query(&mut self, status: char) {
        while let Some(front) = self.pending.pop_front() {
            if matches!(front, Pending::Simple { .. } | Pending::Sync) {
                break;
            }
        }
        self.rows = RowCollector::default();
        if status == 'I' {
            self.portals.clear();
        }
    }
}

/// The row count of a command tag, for the commands whose tag ends with one.
fn rows_from_tag(tag: &str) -> Option<u64> {
    let command = tag.split(' ').next()?;
    let counted = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "MOVE", "FETCH", "MERGE",
    ];
    if !counted.contains(&command) {
        return None;
    }
    tag.rsplit(' ').next()?.parse().ok()
}

/// ErrorResponse/NoticeResponse fields, parsed by the protocol layer's tolerant reader.
fn server_message(r: &mut Reader) -> ServerMessage {
    let f = ErrorFields::parse(r.rest());
    ServerMessage {
        severity: f.severity,
        code: f.code,
        message: f.message,
        detail: f.detail,
        hint: f.hint,
        position: f.position,
    }
}
