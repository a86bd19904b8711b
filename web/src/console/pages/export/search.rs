//! The statements a search finds, as CSV or JSONL, newest first, a page of hits at a time (one
//! chunk per page). A JSONL line carries its event's hash; the hashes of a page are read in one
//! store query ([`SearchStore::event_hashes`](gateway::store::search::SearchStore)), not one
//! per statement: an export of 100,000 statements would otherwise ask the store 100,000 times.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use gateway::store::search::{MAX_PAGE, class_name};
use gateway::store::{StatementHit, StatementPage, StatementQuery, Store};
use uuid::Uuid;

use super::stream::{
    Chunks, PageBuffer, StreamError, csv_writer, millis, send_csv, text_cell, time_cell,
};

/// Statements a search export holds at most; the last line says when there were more.
pub(super) const MAX_SEARCH_ROWS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SearchFormat {
    Csv,
    Jsonl,
}

const COLUMNS: [&str; 14] = [
    "session_id",
    "person",
    "target",
    "seq",
    "time",
    "class",
    "risks",
    "sql",
    "params",
    "tag",
    "rows",
    "sqlstate",
    "error",
    "duration_ms",
];

/// The statements `query` finds, newest first, up to [`MAX_SEARCH_ROWS`], then a note if that
/// cut the export short.
pub(super) async fn write(
    store: &dyn Store,
    query: &StatementQuery,
    format: SearchFormat,
    out: &Chunks,
) -> Result<(), StreamError> {
    let buffer = PageBuffer::default();
    // Writes nothing in the JSONL format (lines go to the buffer directly), but flushing it
    // sends the buffer either way.
    let mut csv = csv_writer(&buffer);
    if format == SearchFormat::Csv {
        csv.write_record(COLUMNS)?;
    }
    let mut page = StatementPage {
        before: None,
        limit: MAX_PAGE,
    };
    let mut exported = 0;
    let cut = loop {
        let hits = store.search_statements(query, &page).await?;
        let kept = &hits[..hits.len().min(MAX_SEARCH_ROWS - exported)];
        match format {
            SearchFormat::Csv => {
                for hit in kept {
                    csv.write_record(row(hit))?;
                }
            }
            SearchFormat::Jsonl => {
                let keys: Vec<(Uuid, i64)> = kept.iter().map(|h| (h.session_id, h.seq)).collect();
                let hashes = store.event_hashes(&keys).await?;
                for hit in kept {
                    buffer.json_line(&line(hit, &hashes))?;
                }
            }
        }
        exported += kept.len();
        if kept.len() < hits.len() {
            break true;
        }
        send_csv(&mut csv, &buffer, out).await?;
        match hits.last() {
            Some(last) if hits.len() as i64 == page.limit => page.before = Some(last.cursor()),
            _ => break false,
        }
    };
    if cut {
        match format {
            SearchFormat::Csv => csv.write_record([format!("# {}", cut_note())])?,
            SearchFormat::Jsonl => buffer.json_line(
                &serde_json::json!({ "truncated": true, "rows": exported, "note": cut_note() }),
            )?,
        }
    }
    send_csv(&mut csv, &buffer, out).await
}

/// The last line of a search export that reached [`MAX_SEARCH_ROWS`].
fn cut_note() -> String {
    format!(
        "only the newest {MAX_SEARCH_ROWS} statements are exported; narrow the filters (time \
         range, person, target) for the rest"
    )
}

fn row(hit: &StatementHit) -> Vec<String> {
    vec![
        hit.session_id.to_string(),
        text_cell(&hit.person_login),
        text_cell(&hit.target_name),
        hit.seq.to_string(),
        time_cell(hit.at),
        class_name(hit.class).to_string(),
        text_cell(&hit.risks.join(",")),
        text_cell(&hit.sql),
        text_cell(&hit.params),
        text_cell(hit.tag.as_deref().unwrap_or_default()),
        hit.rows.map(|r| r.to_string()).unwrap_or_default(),
        text_cell(hit.sqlstate.as_deref().unwrap_or_default()),
        text_cell(hit.error_message.as_deref().unwrap_or_default()),
        millis(u64::try_from(hit.duration_micros).unwrap_or_default()),
    ]
}

/// One statement of a search as a JSONL line. `event_hash` is the stored hash of the event at
/// `seq` (empty if the store no longer holds it): the same line of the session's verified JSONL
/// export carries it, so each statement can be tied to a recording whose chain and seal check.
#[derive(serde::Serialize)]
struct Line<'a> {
    session_id: Uuid,
    seq: i64,
    event_hash: String,
    at: DateTime<Utc>,
    person: &'a str,
    target: &'a str,
    class: &'static str,
    risks: &'a [String],
    sql: &'a str,
    params: &'a str,
    tag: Option<&'a str>,
    rows: Option<i64>,
    sqlstate: Option<&'a str>,
    error: Option<&'a str>,
    duration_micros: i64,
}

fn line<'h>(hit: &'h StatementHit, hashes: &HashMap<(Uuid, i64), Vec<u8>>) -> Line<'h> {
    Line {
        session_id: hit.session_id,
        seq: hit.seq,
        event_hash: hashes
            .get(&(hit.session_id, hit.seq))
            .map(hex::encode)
            .unwrap_or_default(),
        at: hit.at,
        person: &hit.person_login,
        target: &hit.target_name,
        class: class_name(hit.class),
        risks: &hit.risks,
        sql: &hit.sql,
        params: &hit.params,
        tag: hit.tag.as_deref(),
        rows: hit.rows,
        sqlstate: hit.sqlstate.as_deref(),
        error: hit.error_message.as_deref(),
        duration_micros: hit.duration_micros,
    }
}
