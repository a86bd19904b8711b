//! Client messages: what the client asked for, recorded as it arrives.

use chrono::{DateTime, Utc};

use super::super::event::{Capped, EventKind, Param, StatementClass};
use super::redact::redacted;
use super::values::{capped_text, decode, valid_utf8_prefix};
use super::wire::Reader;
use super::{Capture, Pending, Portal, PreparedStatement, ResultColumn};
use crate::protocol::frame::Frame;

const QUERY: u8 = b'Q';
const PARSE: u8 = b'P';
const BIND: u8 = b'B';
const EXECUTE: u8 = b'E';
const DESCRIBE: u8 = b'D';
const CLOSE: u8 = b'C';
const SYNC: u8 = b'S';
const FLUSH: u8 = b'H';
const FUNCTION_CALL: u8 = b'F';
const COPY_DATA: u8 = b'd';
const COPY_DONE: u8 = b'c';
const COPY_FAIL: u8 = b'f';

const TARGET_STATEMENT: u8 = b'S';
const TARGET_PORTAL: u8 = b'P';

/// SQL text as recorded, with what the classifier made of it and what redaction found in it.
struct CapturedSql {
    sql: Capped,
    class: StatementClass,
    risks: Vec<String>,
    /// Parameter numbers bound to secret columns, sorted.
    secret_params: Vec<u16>,
    /// Whether COPY data the SQL exchanges with the client is kept out of the recording.
    copy_redacted: bool,
}

impl Capture {
    pub(super) fn on_client_frame(
        &mut self,
        frame: &Frame,
        at: DateTime<Utc>,
        out: &mut Vec<EventKind>,
    ) {
        let mut r = Reader::new(&frame.body);
        match frame.tag {
            QUERY => self.query(&mut r, frame.body_len, at, out),
            PARSE => {
                self.parse(&mut r, frame.body_len, at, out);
            }
            BIND => {
                self.bind(&mut r, frame.body_len, at, out);
            }
            EXECUTE => self.execute(&mut r, at, out),
            DESCRIBE | CLOSE => {
                self.describe_or_close(frame.tag, &mut r, at, out);
            }
            SYNC => {
                self.extended_started = None;
                self.pending.push_back(Pending::Sync);
                out.push(EventKind::Sync);
            }
            FLUSH => out.push(EventKind::Flush),
            FUNCTION_CALL => {
                self.function_call(&mut r, frame.body_len, at, out);
            }
            COPY_DATA => self.copy_data(frame, false),
            COPY_DONE => self.copy_done(false, out),
            COPY_FAIL => {
                let (message, _) = r.cstr_or_rest();
                let outcome = format!("fail: {}", String::from_utf8_lossy(message));
                self.finish_copy(outcome, out);
            }
            // Terminate needs no event: the session end records how the session ended.
            _ => {}
        }
    }

    fn query(
        &mut self,
        r: &mut Reader,
        body_len: usize,
        at: DateTime<Utc>,
        out: &mut Vec<EventKind>,
    ) {
        let (sql, _) = r.cstr_or_rest();
        // The terminator is part of the body, not of the SQL; a body without one (malformed)
        // is SQL to its end.
        let captured = self.capture_sql(sql, body_len.saturating_sub(1).max(sql.len()));
        // A simple Query destroys the unnamed statement and portal.
        self.statements.remove("");
        self.portals.remove("");
        self.pending.push_back(Pending::Simple {
            started: at,
            columns: Vec::new(),
            copy_redacted: captured.copy_redacted,
        });
        out.push(EventKind::Query {
            sql: captured.sql,
            class: captured.class,
            risks: captured.risks,
        });
    }

    fn parse(
        &mut self,
        r: &mut Reader,
        body_len: usize,
        at: DateTime<Utc>,
        out: &mut Vec<EventKind>,
    ) -> Option<()> {
        self.extended_started.get_or_insert(at);
        let name = String::from_utf8_lossy(r.cstr()?).into_owned();
        let before_sql = name.len() + 1;
        let (sql, complete) = r.cstr_or_rest();
        // A cut-off Parse does not say how many parameter types followed the SQL: its length is
        // then at most the rest of the declared body.
        let sql_len = if complete {
            sql.len()
        } else {
            body_len.saturating_sub(before_sql + 1).max(sql.len())
        };
        let captured = self.capture_sql(sql, sql_len);
        let param_types = match r.i16().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n * 4 <= r.remaining() => (0..n).filter_map(|_| r.u32()).collect(),
            _ => Vec::new(),
        };
        let room = self.statements.len() < self.limits.max_prepared_statements
            || self.statements.contains_key(&name);
        if room {
            self.statements.insert(
                name.clone(),
                PreparedStatement {
                    sql: captured.sql.clone(),
                    param_types: param_types.clone(),
                    columns: None,
                    secret_params: captured.secret_params,
                    copy_redacted: captured.copy_redacted,
                },
            );
        }
        out.push(EventKind::Parse {
            statement: name,
            sql: captured.sql,
            param_types,
            class: captured.class,
            risks: captured.risks,
        });
        Some(())
    }

    fn bind(
        &mut self,
        r: &mut Reader,
        body_len: usize,
        at: DateTime<Utc>,
        out: &mut Vec<EventKind>,
    ) -> Option<()> {
        self.extended_started.get_or_insert(at);
        let portal = String::from_utf8_lossy(r.cstr()?).into_owned();
        let statement = String::from_utf8_lossy(r.cstr()?).into_owned();
        let prepared = self.statements.get(&statement);
        let param_types = prepared
            .map(|s| s.param_types.as_slice())
            .unwrap_or_default();
        // Parameter i is `$(i+1)`. A statement we do not track (beyond the cap, or never parsed)
        // could bind anything to a secret column: all its values are redacted.
        let secret = |i: usize| match prepared {
            Some(s) => {
                u16::try_from(i + 1).is_ok_and(|n| s.secret_params.binary_search(&n).is_ok())
            }
            None => !self.secrets.is_none(),
        };
        let complete = r.remaining() + portal.len() + statement.len() + 2 == body_len;
        let params = read_values(
            r,
            param_types,
            complete,
            self.limits.max_value_bytes,
            secret,
        );
        let result_formats = r.format_codes().unwrap_or_default();
        self.portals.insert(
            portal.clone(),
            Portal {
                statement: statement.clone(),
                result_formats,
                columns: None,
            },
        );
        out.push(EventKind::Bind {
            portal,
            statement,
            params,
        });
        Some(())
    }

    fn execute(&mut self, r: &mut Reader, at: DateTime<Utc>, out: &mut Vec<EventKind>) {
        let portal_name = r.cstr().map(String::from_utf8_lossy).unwrap_or_default();
        let max_rows = r.i32().unwrap_or(0);
        let portal = self.portals.get(portal_name.as_ref());
        let statement_name = portal.map(|p| p.statement.clone()).unwrap_or_default();
        let statement = portal.and_then(|p| self.statements.get(&p.statement));
        let result_formats = portal.map(|p| p.result_formats.clone()).unwrap_or_default();
        let columns = match (portal, statement) {
            (
                Some(Portal {
                    columns: Some(columns),
                    ..
                }),
                _,
            ) => Some(columns.clone()),
            (
                _,
                Some(PreparedStatement {
                    columns: Some(described),
                    ..
                }),
            ) => Some(result_columns(described, &result_formats)),
            _ => None,
        };
        let sql = statement.map(|s| s.sql.clone());
        let copy_redacted = statement.map_or(!self.secrets.is_none(), |s| s.copy_redacted);
        self.pending.push_back(Pending::Execute {
            started: self.extended_started.take().unwrap_or(at),
            portal: portal_name.to_string(),
            statement: statement_name.clone(),
            result_formats,
            columns,
            copy_redacted,
        });
        out.push(EventKind::Execute {
            portal: portal_name.into_owned(),
            statement: statement_name,
            sql,
            max_rows,
        });
    }

    fn describe_or_close(
        &mut self,
        tag: u8,
        r: &mut Reader,
        at: DateTime<Utc>,
        out: &mut Vec<EventKind>,
    ) -> Option<()> {
        let target = r.u8()?;
        if target != TARGET_STATEMENT && target != TARGET_PORTAL {
            return None;
        }
        let name = String::from_utf8_lossy(r.cstr()?).into_owned();
        if tag == DESCRIBE {
            self.extended_started.get_or_insert(at);
            self.pending.push_back(Pending::Describe {
                target,
                name: name.clone(),
            });
            out.push(EventKind::Describe {
                target: target.into(),
                name,
            });
            return Some(());
        }
        if target == TARGET_STATEMENT {
            self.statements.remove(&name);
            // Closing a statement closes the portals made from it.
            self.portals.retain(|_, p| p.statement != name);
        } else {
            self.portals.remove(&name);
        }
        out.push(EventKind::Close {
            target: target.into(),
            name,
        });
        Some(())
    }

    fn function_call(
        &mut self,
        r: &mut Reader,
        body_len: usize,
        at: DateTime<Utc>,
        out: &mut Vec<EventKind>,
    ) -> Option<()> {
        let function_oid = r.u32()?;
        let complete = r.remaining() + 4 == body_len;
        // Arguments have no names to match: they are kept.
        let args = read_values(r, &[], complete, self.limits.max_value_bytes, |_| false);
        self.pending.push_back(Pending::Simple {
            started: at,
            columns: Vec::new(),
            copy_redacted: !self.secrets.is_none(),
        });
        out.push(EventKind::FunctionCall { function_oid, args });
        Some(())
    }

    /// SQL as recorded: role passwords and the values of secret columns redacted, capped,
    /// classified (on the full text received, before redaction).
    fn capture_sql(&mut self, raw: &[u8], full_len: usize) -> CapturedSql {
        let lossy;
        let text = match valid_utf8_prefix(raw, raw.len() < full_len) {
            Some(text) => text,
            None => {
                lossy = String::from_utf8_lossy(raw);
                lossy.as_ref()
            }
        };
        let (class, risks) = self.classifier.classify(text);
        let secrets = self.secrets.scan_sql(text);
        let mut spans = super::sql_text::password_literals(text);
        let sql = if spans.is_empty() && secrets.literals.is_empty() {
            capped_text(text, self.limits.max_sql_bytes, full_len)
        } else {
            spans.extend(secrets.literals);
            spans.sort_unstable_by_key(|s| s.start);
            // A password literal can also be a secret column's value: replace it once.
            spans.dedup_by(|later, earlier| later.start < earlier.end);
            Capped {
                redacted: true,
                ..capped_text(
                    &super::sql_text::replace_spans(text, &spans),
                    self.limits.max_sql_bytes,
                    full_len,
                )
            }
        };
        CapturedSql {
            sql,
            class,
            risks,
            secret_params: secrets.params,
            // No COPY with the client found (or none recognised): if one starts anyway, nothing
            // is known about its columns.
            copy_redacted: secrets.copy.unwrap_or(!self.secrets.is_none()),
        }
    }
}

/// The format of value `i` given a message's format codes: none means all text, one applies to
/// all, otherwise one each.
pub(super) fn format_of(codes: &[i16], i: usize) -> i16 {
    match codes {
        [] => 0,
        [all] => *all,
        each => each.get(i).copied().unwrap_or(0),
    }
}

/// Result columns from a statement's described columns and a portal's result format codes.
pub(super) fn result_columns(described: &[ResultColumn], formats: &[i16]) -> Vec<ResultColumn> {
    described
        .iter()
        .enumerate()
        .map(|(i, c)| ResultColumn {
            format: format_of(formats, i),
            ..*c
        })
        .collect()
}

/// Format codes then values, as Bind and FunctionCall carry them. A value cut off with a streamed
/// message is kept as the prefix that arrived, with its declared length. Values for which
/// `secret(i)` holds are redacted, never decoded.
fn read_values(
    r: &mut Reader,
    types: &[u32],
    complete: bool,
    max: usize,
    secret: impl Fn(usize) -> bool,
) -> Vec<Param> {
    let Some(formats) = r.format_codes() else {
        return Vec::new();
    };
    let Some(count) = r.i16().and_then(|n| usize::try_from(n).ok()) else {
        return Vec::new();
    };
    let mut params = Vec::with_capacity(count.min(r.remaining() / 4 + 1));
    for i in 0..count {
        let Some(len) = r.i32() else { break };
        let type_oid = types.get(i).copied().unwrap_or(0);
        let value = match usize::try_from(len) {
            Err(_) => None, // -1: NULL
            Ok(len) => {
                let bytes = r.up_to(len);
                if bytes.len() < len && complete {
                    // A length beyond a complete body is malformed: keep nothing more.
                    break;
                }
                if secret(i) {
                    Some(redacted(len as u64))
                } else {
                    Some(decode(type_oid, format_of(&formats, i), bytes, len, max))
                }
            }
        };
        params.push(Param { type_oid, value });
    }
    params
}
