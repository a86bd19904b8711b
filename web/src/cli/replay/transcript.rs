//! A recording as a psql-like transcript: the statements at a prompt, their parameters,
//! results, errors and timings, in the order the gateway saw them.
//!
//! Fed one event at a time, so a recording of any length is shown in bounded memory: what is
//! kept between events is the state psql's screen would imply (transaction status, the columns
//! of the result being shown) plus the parameters of bound portals and the columns of described
//! statements, both capped.

use std::collections::HashMap;
use std::io::{self, Write};

use chrono::{DateTime, NaiveDate, Utc};
use gateway::record::event::{Capped, Column, Event, EventKind, Param, ServerMessage};
use gateway::store::{Session, StoredEvent};

use super::super::output::{terminal_cell, terminal_text};
use super::lines;
use super::values::{millis, param, table};

/// Portals and described statements remembered at most; a hostile client binding more only
/// loses the parameter list or column names of the oldest, never memory.
const MAX_REMEMBERED: usize = 1_000;

/// Renders events onto `out`.
pub struct Transcript<W: Write> {
    out: W,
    /// The database name in the prompt: the target's name, as the client typed it.
    database: String,
    /// Transaction status from the last ReadyForQuery: 'I', 'T' or 'E'.
    status: char,
    /// The day of the last time shown, to print a date line when it changes.
    day: Option<NaiveDate>,
    /// Whether a Query, Execute or FunctionCall is waiting for its ReadyForQuery.
    outstanding: bool,
    /// Columns of the result being shown, and whether its rows were printed.
    columns: Option<Vec<Column>>,
    rows_shown: bool,
    /// The SQL of the current statement, to place an error's position.
    last_sql: Option<String>,
    /// A Parse not followed by an Execute yet (shown if it fails or is only prepared).
    unexecuted_parse: Option<(String, Capped)>,
    last_describe: Option<String>,
    portals: HashMap<String, Vec<Param>>,
    described: HashMap<String, Vec<Column>>,
    /// Events shown (or named as unreadable) so far.
    events: u64,
}

impl<W: Write> Transcript<W> {
    pub fn new(out: W, database: &str) -> Self {
        Transcript {
            out,
            database: terminal_cell(database).into_owned(),
            status: 'I',
            day: None,
            outstanding: false,
            columns: None,
            rows_shown: false,
            last_sql: None,
            unexecuted_parse: None,
            last_describe: None,
            portals: HashMap::new(),
            described: HashMap::new(),
            events: 0,
        }
    }

    /// Who, where and when, from the session's row in the store.
    pub fn header(&mut self, session: &Session) -> io::Result<()> {
        self.day = Some(session.started_at.date_naive());
        self.lines(lines::header(session))
    }

    /// One stored event; a body this pgbastion cannot read is named, not fatal.
    pub fn stored(&mut self, stored: &StoredEvent) -> io::Result<()> {
        match serde_json::from_str::<Event>(&stored.body) {
            Ok(event) => self.event(&event),
            Err(e) => {
                self.events += 1;
                writeln!(
                    self.out,
                    "-- event seq {} ({}) cannot be shown: {e}",
                    stored.seq,
                    terminal_cell(&stored.kind)
                )
            }
        }
    }

    pub fn event(&mut self, event: &Event) -> io::Result<()> {
        self.events += 1;
        let at = event.at;
        match &event.kind {
            EventKind::SessionStart {
                groups,
                format_version,
                ..
            } => {
                let groups: Vec<String> = groups
                    .iter()
                    .map(|g| terminal_cell(g).into_owned())
                    .collect();
                let groups = if groups.is_empty() {
                    "none".to_string()
                } else {
                    groups.join(", ")
                };
                writeln!(
                    self.out,
                    "-- recording format {format_version}; groups: {groups}"
                )
            }
            EventKind::SessionEnd {
                reason,
                detail,
                bytes_client_to_server,
                bytes_server_to_client,
            } => {
                let detail = detail
                    .as_deref()
                    .map_or_else(String::new, |d| format!(" ({})", terminal_cell(d)));
                writeln!(
                    self.out,
                    "\n-- session ended at {}: {}{detail}; {bytes_client_to_server} bytes from \
                     the client, {bytes_server_to_client} bytes to it",
                    lines::stamp(at),
                    terminal_cell(reason)
                )
            }
            EventKind::Query { sql, .. } => {
                self.unexecuted_parse = None;
                self.outstanding = true;
                self.columns = None;
                self.prompt(at, Some(sql))
            }
            EventKind::Parse { statement, sql, .. } => {
                self.described.remove(statement);
                self.unexecuted_parse = Some((statement.clone(), sql.clone()));
                Ok(())
            }
            EventKind::Bind { portal, params, .. } => {
                remember(&mut self.portals, portal, params.clone());
                Ok(())
            }
            EventKind::Execute {
                portal,
                statement,
                sql,
                ..
            } => self.execute(at, portal, statement, sql.as_ref()),
            EventKind::Describe { target, name } => {
                self.last_describe = (*target == 'S').then(|| name.clone());
                Ok(())
            }
            EventKind::Close { target: 'S', name } if !name.is_empty() => {
                self.described.remove(name);
                writeln!(self.out, "-- closed statement \"{}\"", terminal_cell(name))
            }
            EventKind::Close { .. } | EventKind::Flush => Ok(()),
            EventKind::Sync => self.show_unexecuted_parse(at),
            EventKind::FunctionCall { function_oid, args } => {
                self.outstanding = true;
                self.columns = None;
                self.line_break(at)?;
                writeln!(
                    self.out,
                    "{}-- function call, oid {function_oid}",
                    self.prompt_text()
                )?;
                self.params(args)
            }
            EventKind::RowDescription { columns } => {
                if self.outstanding {
                    self.columns = Some(columns.clone());
                    self.rows_shown = false;
                } else if let Some(statement) = self.last_describe.take() {
                    remember(&mut self.described, &statement, columns.clone());
                }
                Ok(())
            }
            EventKind::Rows { rows, omitted } => {
                let columns = self.columns.get_or_insert_with(Vec::new);
                for line in table(columns, rows) {
                    writeln!(self.out, "{line}")?;
                }
                self.rows_shown = true;
                if *omitted > 0 {
                    writeln!(self.out, "({omitted} more rows not recorded)")?;
                }
                Ok(())
            }
            EventKind::CommandComplete {
                tag,
                rows,
                duration_micros,
            } => self.complete(tag, *rows, *duration_micros),
            EventKind::EmptyQuery => {
                self.columns = None;
                writeln!(self.out, "(empty query)")
            }
            EventKind::PortalSuspended => {
                self.columns = None;
                writeln!(
                    self.out,
                    "(portal suspended: the client fetches the rest with another Execute)"
                )
            }
            EventKind::Error(message) => {
                self.show_unexecuted_parse(at)?;
                self.columns = None;
                self.server_message(message, true)
            }
            EventKind::Notice(message) => self.server_message(message, false),
            EventKind::ReadyForQuery { status } => {
                self.status = *status;
                self.outstanding = false;
                if *status == 'I' {
                    self.portals.clear();
                }
                Ok(())
            }
            EventKind::CopyStart { direction, binary } => {
                let format = if *binary { "binary" } else { "text" };
                writeln!(
                    self.out,
                    "COPY {} started ({format} format)",
                    lines::copy_direction(direction)
                )
            }
            EventKind::CopyData { data } => self.lines(lines::copy_data(data)),
            EventKind::CopyEnd {
                direction,
                bytes,
                rows,
                outcome,
            } => {
                let outcome = match outcome.strip_prefix("fail: ") {
                    Some(why) => format!("failed ({})", terminal_cell(why)),
                    None => terminal_cell(outcome).into_owned(),
                };
                writeln!(
                    self.out,
                    "COPY {} {outcome}: {bytes} bytes, {rows} rows",
                    lines::copy_direction(direction)
                )
            }
            EventKind::Notification {
                process_id,
                channel,
                payload,
            } => writeln!(
                self.out,
                "Asynchronous notification \"{}\" with payload {} received from server process \
                 with PID {process_id}.",
                terminal_cell(channel),
                param(Some(payload))
            ),
            EventKind::ParameterStatus { name, value } => writeln!(
                self.out,
                "-- parameter {} = {}",
                terminal_cell(name),
                terminal_cell(value)
            ),
        }
    }

    /// Flushes and returns the writer.
    /// Says so when there was nothing to show, then flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.events == 0 {
            writeln!(
                self.out,
                "\n-- no events recorded: the target's recording policy is off, the session \
                 ended before reaching the target, or its recording was deleted \
                 (`pgbastion verify` tells)"
            )?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    fn execute(
        &mut self,
        at: DateTime<Utc>,
        portal: &str,
        statement: &str,
        sql: Option<&Capped>,
    ) -> io::Result<()> {
        self.unexecuted_parse = None;
        self.outstanding = true;
        self.columns = self.described.get(statement).cloned();
        self.rows_shown = false;
        match sql {
            Some(sql) => self.prompt(at, Some(sql))?,
            None => {
                self.last_sql = None;
                self.line_break(at)?;
                writeln!(
                    self.out,
                    "{}-- statement \"{}\" (its SQL was not recorded)",
                    self.prompt_text(),
                    terminal_cell(statement)
                )?;
            }
        }
        match self.portals.get(portal) {
            Some(params) => {
                let params = params.clone();
                self.params(&params)
            }
            None => Ok(()),
        }
    }

    /// A statement prepared but never executed: shown where the client finished its request,
    /// or where it failed.
    fn show_unexecuted_parse(&mut self, at: DateTime<Utc>) -> io::Result<()> {
        let Some((statement, sql)) = self.unexecuted_parse.take() else {
            return Ok(());
        };
        self.line_break(at)?;
        let name = if statement.is_empty() {
            "unnamed statement".to_string()
        } else {
            format!("statement \"{}\"", terminal_cell(&statement))
        };
        writeln!(self.out, "{}-- prepare {name}:", self.prompt_text())?;
        self.sql(&sql)
    }

    fn prompt_text(&self) -> String {
        let mark = match self.status {
            'T' => "*",
            'E' => "!",
            _ => "",
        };
        format!("{}={mark}> ", self.database)
    }

    /// A blank line, the date when it changed, then the time, before a statement.
    fn line_break(&mut self, at: DateTime<Utc>) -> io::Result<()> {
        writeln!(self.out)?;
        if self.day != Some(at.date_naive()) {
            self.day = Some(at.date_naive());
            writeln!(self.out, "-- {}", at.format("%Y-%m-%d"))?;
        }
        write!(self.out, "[{}] ", at.format("%H:%M:%S%.3f"))
    }

    fn prompt(&mut self, at: DateTime<Utc>, sql: Option<&Capped>) -> io::Result<()> {
        self.line_break(at)?;
        write!(self.out, "{}", self.prompt_text())?;
        match sql {
            Some(sql) => self.sql(sql),
            None => writeln!(self.out),
        }
    }

    /// SQL text on its own lines, marked when it was kept in part or had a secret redacted.
    fn sql(&mut self, sql: &Capped) -> io::Result<()> {
        let text = terminal_text(&sql.text);
        writeln!(self.out, "{}", text.trim_end())?;
        if sql.is_truncated() {
            writeln!(self.out, "… ({} bytes; the rest was not recorded)", sql.len)?;
        }
        if sql.redacted {
            writeln!(self.out, "-- (a secret in this statement was redacted)")?;
        }
        self.last_sql = Some(sql.text.clone());
        Ok(())
    }

    fn params(&mut self, params: &[Param]) -> io::Result<()> {
        for (i, p) in params.iter().enumerate() {
            writeln!(self.out, "  ${} = {}", i + 1, param(p.value.as_ref()))?;
        }
        Ok(())
    }

    fn complete(&mut self, tag: &str, rows: Option<u64>, micros: u64) -> io::Result<()> {
        match self.columns.take() {
            Some(columns) => {
                if !self.rows_shown {
                    for line in table(&columns, &[]) {
                        writeln!(self.out, "{line}")?;
                    }
                    if rows.is_some_and(|n| n > 0) {
                        writeln!(self.out, "(rows not recorded)")?;
                    }
                }
                match rows {
                    Some(1) => writeln!(self.out, "(1 row)")?,
                    Some(n) => writeln!(self.out, "({n} rows)")?,
                    None => writeln!(self.out, "{}", terminal_cell(tag))?,
                }
            }
            None => writeln!(self.out, "{}", terminal_cell(tag))?,
        }
        self.rows_shown = false;
        writeln!(self.out, "Time: {}", millis(micros))
    }

    fn server_message(&mut self, message: &ServerMessage, with_code: bool) -> io::Result<()> {
        let sql = self.last_sql.as_deref();
        self.lines(lines::server_message(message, with_code, sql))
    }

    fn lines(&mut self, lines: Vec<String>) -> io::Result<()> {
        for line in lines {
            writeln!(self.out, "{line}")?;
        }
        Ok(())
    }
}
/// Inserts into a map that never grows past [`MAX_REMEMBERED`] (an arbitrary entry makes room).
fn remember<T>(map: &mut HashMap<String, T>, key: &str, value: T) {
    if map.len() >= MAX_REMEMBERED
        && !map.contains_key(key)
        && let Some(old) = map.keys().next().cloned()
    {
        map.remove(&old);
    }
    map.insert(key.to_string(), value);
}

#[cfg(test)]
mod tests;
