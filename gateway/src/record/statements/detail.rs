//! What a replay shows of a statement beyond what the index keeps: its parameters as recorded,
//! each result set (columns, rows, command tag, COPY), its error with every field, its notices
//! and the transaction status it was sent in. Collected only by folders made with
//! [`super::StatementFolder::with_details`]: the indexer does not pay for it.
//!
//! Bounded like the folder: the capture already caps rows per result, and here a statement
//! keeps at most [`MAX_ROWS`] rows, [`MAX_RESULTS`] result sets, [`MAX_NOTICES`] notices and
//! [`MAX_COPY_CHUNKS`] chunks of COPY data, counting what it leaves out.

use crate::record::event::{Capped, Column, Param, ServerMessage};

/// Rows kept per statement, over all its result sets and fetches.
pub const MAX_ROWS: usize = 1_000;
/// Result sets kept per statement (a simple query may hold thousands of statements).
pub const MAX_RESULTS: usize = 100;
pub const MAX_NOTICES: usize = 100;
pub const MAX_COPY_CHUNKS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementDetail {
    /// The SQL as recorded (capped and redacted by the capture); `None` when the recording
    /// does not carry it (an Execute of a statement prepared before recording began).
    pub sql: Option<Capped>,
    /// Bound parameters as recorded, or a function call's arguments.
    pub params: Vec<Param>,
    /// Transaction status when it was sent: 'I' idle, 'T' in a transaction, 'E' failed.
    pub status_before: char,
    pub results: Vec<ResultSet>,
    /// Result sets not kept (beyond [`MAX_RESULTS`]).
    pub results_omitted: u64,
    /// Its first error.
    pub error: Option<ServerMessage>,
    pub notices: Vec<ServerMessage>,
    pub notices_omitted: u64,
    /// The session ended while it ran (terminated, revoked, the server or client gone).
    pub interrupted: bool,
    /// Rows kept over all result sets, for the [`MAX_ROWS`] budget.
    rows_kept: usize,
    /// The current result set is complete (its tag came): the next result begins a new one.
    result_closed: bool,
    /// Columns the server described for its prepared statement before (a client that asks
    /// once at prepare time gets no row description with each execution).
    described: Vec<Column>,
}

/// One result of a statement: a row set, a command's tag, a COPY, or all of these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Option<Capped>>>,
    /// Rows the server sent that the recording (or this statement's budget) did not keep.
    pub rows_omitted: u64,
    pub tag: Option<String>,
    pub copy: Option<CopyDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyDetail {
    /// "in" (client to server) or "out".
    pub direction: String,
    pub binary: bool,
    /// Data kept, as recorded, in chunks.
    pub data: Vec<Capped>,
    pub chunks_omitted: u64,
    /// From the COPY's end: bytes and rows transferred and "done" or "fail: …".
    pub bytes: Option<u64>,
    pub rows: Option<u64>,
    pub outcome: Option<String>,
}

impl StatementDetail {
    pub fn new(sql: Option<&Capped>, params: &[Param], status_before: char) -> Self {
        StatementDetail {
            sql: sql.cloned(),
            params: params.to_vec(),
            status_before,
            results: Vec::new(),
            results_omitted: 0,
            error: None,
            notices: Vec::new(),
            notices_omitted: 0,
            interrupted: false,
            rows_kept: 0,
            result_closed: true,
            described: Vec::new(),
        }
    }

    /// The columns of its prepared statement, as described when it was prepared.
    pub fn described(mut self: Box<Self>, columns: Option<&Vec<Column>>) -> Box<Self> {
        if let Some(columns) = columns {
            self.described = columns.clone();
        }
        self
    }

    /// The result being filled, begun if the last one is complete; `None` past the budget.
    fn current(&mut self) -> Option<&mut ResultSet> {
        if self.result_closed {
            if self.results.len() >= MAX_RESULTS {
                self.results_omitted += 1;
                return None;
            }
            self.results.push(ResultSet {
                columns: self.described.clone(),
                ..ResultSet::default()
            });
            self.result_closed = false;
        }
        self.results.last_mut()
    }

    pub fn columns(&mut self, columns: &[Column]) {
        // A row description always starts a result; one after rows is a new result.
        if !self.result_closed && self.results.last().is_some_and(|r| !r.rows.is_empty()) {
            self.result_closed = true;
        }
        if let Some(result) = self.current() {
            result.columns = columns.to_vec();
        }
    }

    pub fn rows(&mut self, rows: &[Vec<Option<Capped>>], omitted: u64) {
        let room = MAX_ROWS.saturating_sub(self.rows_kept);
        let kept = rows.len().min(room);
        self.rows_kept += kept;
        if let Some(result) = self.current() {
            result.rows.extend_from_slice(&rows[..kept]);
            result.rows_omitted += omitted + (rows.len() - kept) as u64;
        }
    }

    pub fn complete(&mut self, tag: &str) {
        if let Some(result) = self.current() {
            result.tag = Some(tag.to_owned());
        }
        self.result_closed = true;
    }

    pub fn copy_start(&mut self, direction: &str, binary: bool) {
        if let Some(result) = self.current() {
            result.copy = Some(CopyDetail {
                direction: direction.to_owned(),
                binary,
                data: Vec::new(),
                chunks_omitted: 0,
                bytes: None,
                rows: None,
                outcome: None,
            });
        }
    }

    pub fn copy_data(&mut self, data: &Capped) {
        if self.result_closed {
            return;
        }
        if let Some(copy) = self.results.last_mut().and_then(|r| r.copy.as_mut()) {
            if copy.data.len() < MAX_COPY_CHUNKS {
                copy.data.push(data.clone());
            } else {
                copy.chunks_omitted += 1;
            }
        }
    }

    pub fn copy_end(&mut self, bytes: u64, rows: u64, outcome: &str) {
        if self.result_closed {
            return;
        }
        if let Some(copy) = self.results.last_mut().and_then(|r| r.copy.as_mut()) {
            copy.bytes = Some(bytes);
            copy.rows = Some(rows);
            copy.outcome = Some(outcome.to_owned());
        }
    }

    pub fn error(&mut self, message: &ServerMessage) {
        self.error.get_or_insert_with(|| message.clone());
    }

    pub fn notice(&mut self, message: &ServerMessage) {
        if self.notices.len() < MAX_NOTICES {
            self.notices.push(message.clone());
        } else {
            self.notices_omitted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str) -> Option<Capped> {
        Some(Capped {
            text: text.into(),
            len: text.len() as u64,
            hex: false,
            redacted: false,
        })
    }

    fn column(name: &str) -> Column {
        Column {
            name: name.into(),
            type_oid: 23,
        }
    }

    #[test]
    fn results_split_at_tags_and_row_descriptions_and_respect_the_row_budget() {
        let mut d = StatementDetail::new(None, &[], 'I');
        d.columns(&[column("a")]);
        d.rows(&[vec![cell("1")], vec![cell("2")]], 3);
        d.complete("SELECT 5");
        d.complete("SET");
        d.columns(&[column("b")]);
        let many = vec![vec![cell("x")]; MAX_ROWS];
        d.rows(&many, 0);
        d.complete("SELECT 1000");
        assert_eq!(d.results.len(), 3);
        assert_eq!(d.results[0].rows.len(), 2);
        assert_eq!(d.results[0].rows_omitted, 3);
        assert_eq!(d.results[0].tag.as_deref(), Some("SELECT 5"));
        assert!(d.results[1].columns.is_empty());
        assert_eq!(d.results[1].tag.as_deref(), Some("SET"));
        assert_eq!(d.results[2].rows.len(), MAX_ROWS - 2);
        assert_eq!(d.results[2].rows_omitted, 2);
    }

    #[test]
    fn copy_data_and_end_belong_to_the_open_copy_only() {
        let mut d = StatementDetail::new(None, &[], 'T');
        d.copy_data(&cell("stray").unwrap());
        assert!(d.results.is_empty());
        d.copy_start("in", false);
        for _ in 0..MAX_COPY_CHUNKS + 2 {
            d.copy_data(&cell("1\tx\n").unwrap());
        }
        d.copy_end(300, 66, "done");
        d.complete("COPY 66");
        let copy = d.results[0].copy.as_ref().unwrap();
        assert_eq!(copy.data.len(), MAX_COPY_CHUNKS);
        assert_eq!(copy.chunks_omitted, 2);
        assert_eq!((copy.bytes, copy.rows), (Some(300), Some(66)));
        assert_eq!(d.results[0].tag.as_deref(), Some("COPY 66"));
    }
}
