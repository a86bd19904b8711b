//! Exports of recordings and search results, streamed page by page (a session may hold millions
//! of events):
//!
//! - `/sessions/{id}/export.jsonl`: the recording in the format `pgbastion verify --file`
//!   checks with only the public key ([`gateway::record::export`]);
//! - `/sessions/{id}/export.csv`: its statements;
//! - `/sessions/search.csv`, `/sessions/search.jsonl`: the statements a search of `/sessions`
//!   finds (same URL filters), newest first, up to [`MAX_SEARCH_ROWS`].
//!
//! Who may export what is who may see it (auditors and admins any session, `user` only their
//! own; another's session is "not found"), and every export is in the audit log before its
//! first byte goes out.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use gateway::record::event::Event;
use gateway::record::export::{ExportError, JsonlWriter};
use gateway::record::statements::{IndexedStatement, StatementFolder};
use gateway::store::search::{MAX_PAGE, class_name};
use gateway::store::{Session, StatementHit, StatementPage, Store, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::replay::visible_session;
use super::sessions::{Filters, statement_query, visible_person};
use crate::console::AppState;
use crate::console::auth::Viewer;
use crate::console::error::ConsoleResult;

/// Events read from the store per query, and per chunk of a download.
const EVENTS_PER_READ: i64 = 1_000;
/// Statements a search export holds at most; the last line says when there were more.
pub const MAX_SEARCH_ROWS: usize = 100_000;
/// Chunks waiting for a slow client: the reader stops ahead of it by this many pages.
const CHUNKS_AHEAD: usize = 4;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions/{id}/export.jsonl", get(session_jsonl))
        .route("/sessions/{id}/export.csv", get(session_csv))
        .route("/sessions/search.csv", get(search_csv))
        .route("/sessions/search.jsonl", get(search_jsonl))
        .merge(super::integrity::routes())
}

async fn session_jsonl(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> ConsoleResult<Response> {
    let session = visible_session(&state, &viewer, &id).await?;
    audit_session_export(&state, &viewer, &session, "jsonl").await?;
    let store = state.store.clone();
    let id = session.id;
    Ok(download(
        "application/x-ndjson",
        &format!("pgbastion-{}-{id}.jsonl", file_safe(&session.target_name)),
        move |out| async move { write_recording(store.as_ref(), id, &out).await },
    ))
}

async fn session_csv(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> ConsoleResult<Response> {
    let session = visible_session(&state, &viewer, &id).await?;
    audit_session_export(&state, &viewer, &session, "csv").await?;
    let store = state.store.clone();
    let name = format!(
        "pgbastion-{}-{}.csv",
        file_safe(&session.target_name),
        session.id
    );
    Ok(download(
        "text/csv; charset=utf-8",
        &name,
        move |out| async move { write_session_statements(store.as_ref(), &session, &out).await },
    ))
}

async fn search_csv(
    state: State<AppState>,
    viewer: Viewer,
    filters: Query<Filters>,
    raw: RawQuery,
) -> ConsoleResult<Response> {
    search_export(state, viewer, filters, raw, SearchFormat::Csv).await
}

async fn search_jsonl(
    state: State<AppState>,
    viewer: Viewer,
    filters: Query<Filters>,
    raw: RawQuery,
) -> ConsoleResult<Response> {
    search_export(state, viewer, filters, raw, SearchFormat::Jsonl).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SearchFormat {
    Csv,
    Jsonl,
}

async fn search_export(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(filters): Query<Filters>,
    RawQuery(raw): RawQuery,
    format: SearchFormat,
) -> ConsoleResult<Response> {
    // A user's own statements only, whatever the URL says.
    let (_, person) = visible_person(&viewer, &filters.person)?;
    let query = statement_query(&filters, person)?;
    let (extension, content_type) = match format {
        SearchFormat::Csv => ("csv", "text/csv; charset=utf-8"),
        SearchFormat::Jsonl => ("jsonl", "application/x-ndjson"),
    };
    state
        .audit(
            &viewer.login,
            "sessions.export",
            None,
            serde_json::json!({
                "format": extension,
                "filters": raw.unwrap_or_default(),
                "max_rows": MAX_SEARCH_ROWS,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    let store = state.store.clone();
    let name = format!(
        "pgbastion-search-{}.{extension}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    Ok(download(content_type, &name, move |out| async move {
        write_search(store.as_ref(), &query, format, &out).await
    }))
}

async fn audit_session_export(
    state: &AppState,
    viewer: &Viewer,
    session: &Session,
    format: &str,
) -> ConsoleResult<()> {
    state
        .audit(
            &viewer.login,
            "session.export",
            Some(session.id.to_string()),
            serde_json::json!({
                "format": format,
                "person": session.person_login,
                "target": session.target_name,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(())
}

// --- Streaming ---

/// Why an export stopped before its end.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    /// The client went away: nothing to report.
    #[error("the client closed the download")]
    Gone,
}

/// Where a producer sends its chunks; the response body streams them.
struct Chunks {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Chunks {
    async fn send(&self, bytes: Vec<u8>) -> Result<(), StreamError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Ok(Bytes::from(bytes)))
            .await
            .map_err(|_| StreamError::Gone)
    }
}

/// An attachment whose body `produce` writes on a task of its own, chunk by chunk, as fast as
/// the client reads. A failure midway cuts the download short (the client sees an incomplete
/// transfer, and a cut recording fails `pgbastion verify`) and is logged.
fn download<F, Fut>(content_type: &'static str, filename: &str, produce: F) -> Response
where
    F: FnOnce(Chunks) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), StreamError>> + Send,
{
    let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
    let name = filename.to_string();
    tokio::spawn(async move {
        let failed = tx.clone();
        match produce(Chunks { tx }).await {
            Ok(()) | Err(StreamError::Gone) => {}
            Err(e) => {
                tracing::error!(error = %e, file = %name, "export failed midway; download cut");
                let _ = failed.send(Err(std::io::Error::other(e.to_string()))).await;
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response()
}

/// A target name as part of a file name: letters, digits, `-`, `_` and `.` (a name is the
/// admin's choice, and a quote or slash would break the header or the path).
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A writer into memory that the producer empties after each page (the export writers own
/// their output for their whole life).
#[derive(Clone, Default)]
struct PageBuffer(Arc<Mutex<Vec<u8>>>);

impl PageBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("page buffer lock"))
    }
}

impl Write for PageBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("page buffer lock")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// --- A recording as JSONL ---

/// Every stored event, as stored, and the seal if there is one: the file shows what the store
/// holds, so `pgbastion verify --file` finds in it whatever was done to the store.
async fn write_recording(
    store: &dyn Store,
    session_id: uuid::Uuid,
    out: &Chunks,
) -> Result<(), StreamError> {
    let seal = store.recording_seal(session_id).await?;
    let buffer = PageBuffer::default();
    let mut writer = JsonlWriter::new(
        buffer.clone(),
        session_id,
        seal.as_ref().map(|s| s.key_id.as_str()),
    )?;
    let mut from = 0;
    loop {
        let page = store
            .session_events(session_id, from, EVENTS_PER_READ)
            .await?;
        for event in &page {
            writer.event(event)?;
        }
        out.send(buffer.take()).await?;
        match page.last() {
            Some(last) if page.len() as i64 == EVENTS_PER_READ => from = last.seq + 1,
            _ => break,
        }
    }
    writer.finish(seal.as_ref())?;
    out.send(buffer.take()).await
}

// --- Statements as CSV ---

/// A cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, or a tab or carriage
/// return before one) gets a leading apostrophe, so it shows as the text it is. Recorded SQL and
/// values come from whoever ran the session: opening an export must not run their formulas
/// (CSV injection). The apostrophe is visible in the file; the CSV quoting is untouched.
fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

fn csv_writer(buffer: &PageBuffer) -> csv::Writer<PageBuffer> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(buffer.clone())
}

/// Sends what the CSV writer has written so far.
async fn send_csv(
    csv: &mut csv::Writer<PageBuffer>,
    buffer: &PageBuffer,
    out: &Chunks,
) -> Result<(), StreamError> {
    csv.flush().map_err(csv::Error::from)?;
    out.send(buffer.take()).await
}

const SESSION_COLUMNS: [&str; 12] = [
    "seq",
    "time",
    "offset_secs",
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

fn time_cell(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn millis(micros: u64) -> String {
    format!("{}.{:03}", micros / 1000, micros % 1000)
}

fn session_row(statement: &IndexedStatement, started_at: DateTime<Utc>) -> Vec<String> {
    let offset = (statement.at - started_at)
        .num_microseconds()
        .unwrap_or_default()
        .max(0) as u64;
    let (sqlstate, error) = match &statement.error {
        Some((code, message)) => (code.as_str(), message.as_str()),
        None => ("", ""),
    };
    vec![
        statement.seq.to_string(),
        time_cell(statement.at),
        format!("{}.{:06}", offset / 1_000_000, offset % 1_000_000),
        class_name(statement.class).to_string(),
        defuse(&statement.risks.join(",")).into_owned(),
        defuse(&statement.sql).into_owned(),
        defuse(&statement.params).into_owned(),
        defuse(statement.tag.as_deref().unwrap_or_default()).into_owned(),
        statement.rows.map(|r| r.to_string()).unwrap_or_default(),
        defuse(sqlstate).into_owned(),
        defuse(error).into_owned(),
        millis(statement.duration_micros),
    ]
}

/// The session's statements in seq order, folded from the recording by the same
/// [`StatementFolder`] that builds the statement index, so they are the index's statements,
/// but in the order they ran and complete even before the indexer has caught up.
async fn write_session_statements(
    store: &dyn Store,
    session: &Session,
    out: &Chunks,
) -> Result<(), StreamError> {
    let buffer = PageBuffer::default();
    let mut csv = csv_writer(&buffer);
    csv.write_record(SESSION_COLUMNS)?;
    let mut folder = StatementFolder::new(0);
    let mut from = 0;
    loop {
        let page = store
            .session_events(session.id, from, EVENTS_PER_READ)
            .await?;
        for stored in &page {
            match serde_json::from_str::<Event>(&stored.body) {
                Ok(event) => folder.push(&event),
                // As the indexer does: a body this version cannot read leaves its statement out.
                Err(_) => folder.skip(stored.seq),
            }
        }
        for statement in folder.take_finished() {
            csv.write_record(session_row(&statement, session.started_at))?;
        }
        send_csv(&mut csv, &buffer, out).await?;
        match page.last() {
            Some(last) if page.len() as i64 == EVENTS_PER_READ => from = last.seq + 1,
            _ => break,
        }
    }
    folder.finish();
    for statement in folder.take_finished() {
        csv.write_record(session_row(&statement, session.started_at))?;
    }
    send_csv(&mut csv, &buffer, out).await
}

// --- Search results ---

const SEARCH_COLUMNS: [&str; 14] = [
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

fn search_row(hit: &StatementHit) -> Vec<String> {
    vec![
        hit.session_id.to_string(),
        defuse(&hit.person_login).into_owned(),
        defuse(&hit.target_name).into_owned(),
        hit.seq.to_string(),
        time_cell(hit.at),
        class_name(hit.class).to_string(),
        defuse(&hit.risks.join(",")).into_owned(),
        defuse(&hit.sql).into_owned(),
        defuse(&hit.params).into_owned(),
        defuse(hit.tag.as_deref().unwrap_or_default()).into_owned(),
        hit.rows.map(|r| r.to_string()).unwrap_or_default(),
        defuse(hit.sqlstate.as_deref().unwrap_or_default()).into_owned(),
        defuse(hit.error_message.as_deref().unwrap_or_default()).into_owned(),
        millis(u64::try_from(hit.duration_micros).unwrap_or_default()),
    ]
}

/// One statement of a search as a JSONL line. `event_hash` is the stored hash of the event at
/// `seq`: the same line of the session's verified JSONL export carries it, so each statement
/// can be tied to a recording whose chain and seal check.
#[derive(serde::Serialize)]
struct SearchLine<'a> {
    session_id: uuid::Uuid,
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

/// The last line of a search export that reached [`MAX_SEARCH_ROWS`].
fn cut_note() -> String {
    format!(
        "only the newest {MAX_SEARCH_ROWS} statements are exported; narrow the filters (time \
         range, person, target) for the rest"
    )
}

/// Lines of a JSONL export, into the page buffer.
fn write_json_line(buffer: &PageBuffer, value: &impl serde::Serialize) -> Result<(), StreamError> {
    let mut line = serde_json::to_vec(value).map_err(|e| ExportError::Io {
        action: "write",
        source: e.into(),
    })?;
    line.push(b'\n');
    buffer.0.lock().expect("page buffer lock").extend(line);
    Ok(())
}

async fn write_search(
    store: &dyn Store,
    query: &gateway::store::StatementQuery,
    format: SearchFormat,
    out: &Chunks,
) -> Result<(), StreamError> {
    let buffer = PageBuffer::default();
    // Writes nothing in the JSONL format: there, lines go to the buffer directly.
    let mut csv = csv_writer(&buffer);
    if format == SearchFormat::Csv {
        csv.write_record(SEARCH_COLUMNS)?;
    }
    let mut page = StatementPage {
        before: None,
        limit: MAX_PAGE,
    };
    let mut exported = 0;
    let cut = 'pages: loop {
        let hits = store.search_statements(query, &page).await?;
        for hit in &hits {
            if exported == MAX_SEARCH_ROWS {
                break 'pages true;
            }
            match format {
                SearchFormat::Csv => csv.write_record(search_row(hit))?,
                SearchFormat::Jsonl => write_json_line(&buffer, &search_line(store, hit).await?)?,
            }
            exported += 1;
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
            SearchFormat::Jsonl => write_json_line(
                &buffer,
                &serde_json::json!({ "truncated": true, "rows": exported, "note": cut_note() }),
            )?,
        }
    }
    send_csv(&mut csv, &buffer, out).await
}

async fn search_line<'h>(
    store: &dyn Store,
    hit: &'h StatementHit,
) -> Result<SearchLine<'h>, StreamError> {
    let event = store.session_events(hit.session_id, hit.seq, 1).await?;
    let event_hash = event
        .first()
        .filter(|e| e.seq == hit.seq)
        .map(|e| hex::encode(&e.hash))
        .unwrap_or_default();
    Ok(SearchLine {
        session_id: hit.session_id,
        seq: hit.seq,
        event_hash,
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_get_an_apostrophe_and_others_stay() {
        for risky in [
            "=HYPERLINK(\"x\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            assert_eq!(defuse(risky), format!("'{risky}"));
        }
        for plain in ["SELECT 1", "", "'quoted'", " =not first"] {
            assert_eq!(defuse(plain), plain);
        }
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_safe("shop-eu_1.db"), "shop-eu_1.db");
        assert_eq!(file_safe("a\"b/c\\d e"), "a_b_c_d_e");
    }

    #[test]
    fn durations_and_offsets_are_exact_decimals() {
        assert_eq!(millis(1_234_567), "1234.567");
        assert_eq!(millis(5), "0.005");
    }
}
