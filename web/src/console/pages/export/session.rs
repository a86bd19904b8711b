//! One session's exports: its recording as JSONL, its statements as CSV. Both read the
//! recording [`EVENTS_PER_READ`] events at a time and send a chunk per read.

use chrono::{DateTime, Utc};
use gateway::record::event::Event;
use gateway::record::export::JsonlWriter;
use gateway::record::statements::{IndexedStatement, StatementFolder};
use gateway::store::search::class_name;
use gateway::store::{Session, Store, StoredEvent};
use uuid::Uuid;

use super::stream::{
    Chunks, PageBuffer, StreamError, csv_writer, millis, send_csv, text_cell, time_cell,
};

/// Events read from the store per query, and per chunk of a download.
const EVENTS_PER_READ: i64 = 1_000;

/// A recording read a page at a time, from its first event to its last.
struct EventPages {
    session_id: Uuid,
    /// Where the next page starts; `None` once the last page was read.
    from: Option<i64>,
}

impl EventPages {
    fn of(session_id: Uuid) -> EventPages {
        EventPages {
            session_id,
            from: Some(0),
        }
    }

    async fn next(&mut self, store: &dyn Store) -> Result<Option<Vec<StoredEvent>>, StreamError> {
        let Some(from) = self.from else {
            return Ok(None);
        };
        let events = store
            .session_events(self.session_id, from, EVENTS_PER_READ)
            .await?;
        // A short page is the last: `session_events` reads on across gaps.
        self.from = match events.last() {
            Some(last) if events.len() as i64 == EVENTS_PER_READ => Some(last.seq + 1),
            _ => None,
        };
        Ok(Some(events))
    }
}

/// Every stored event, as stored, and the seal if there is one: the file shows what the store
/// holds, so `pgbastion verify --file` finds in it whatever was done to the store.
pub(super) async fn write_recording(
    store: &dyn Store,
    session_id: Uuid,
    out: &Chunks,
) -> Result<(), StreamError> {
    let seal = store.recording_seal(session_id).await?;
    let buffer = PageBuffer::default();
    let mut writer = JsonlWriter::new(
        buffer.clone(),
        session_id,
        seal.as_ref().map(|s| s.key_id.as_str()),
    )?;
    let mut pages = EventPages::of(session_id);
    while let Some(events) = pages.next(store).await? {
        for event in &events {
            writer.event(event)?;
        }
        out.send(buffer.take()).await?;
    }
    writer.finish(seal.as_ref())?;
    out.send(buffer.take()).await
}

const COLUMNS: [&str; 12] = [
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

/// The session's statements in seq order, folded from the recording by the same
/// [`StatementFolder`] that builds the statement index, so they are the index's statements,
/// but in the order they ran and complete even before the indexer has caught up.
pub(super) async fn write_statements(
    store: &dyn Store,
    session: &Session,
    out: &Chunks,
) -> Result<(), StreamError> {
    let buffer = PageBuffer::default();
    let mut csv = csv_writer(&buffer);
    csv.write_record(COLUMNS)?;
    let mut folder = StatementFolder::new(0);
    let mut pages = EventPages::of(session.id);
    while let Some(events) = pages.next(store).await? {
        for stored in &events {
            match serde_json::from_str::<Event>(&stored.body) {
                Ok(event) => folder.push(&event),
                // As the indexer does: a body this version cannot read leaves its statement out.
                Err(_) => folder.skip(stored.seq),
            }
        }
        for statement in folder.take_finished() {
            csv.write_record(row(&statement, session.started_at))?;
        }
        send_csv(&mut csv, &buffer, out).await?;
    }
    folder.finish();
    for statement in folder.take_finished() {
        csv.write_record(row(&statement, session.started_at))?;
    }
    send_csv(&mut csv, &buffer, out).await
}

fn row(statement: &IndexedStatement, started_at: DateTime<Utc>) -> Vec<String> {
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
        text_cell(&statement.risks.join(",")),
        text_cell(&statement.sql),
        text_cell(&statement.params),
        text_cell(statement.tag.as_deref().unwrap_or_default()),
        statement.rows.map(|r| r.to_string()).unwrap_or_default(),
        text_cell(sqlstate),
        text_cell(error),
        millis(statement.duration_micros),
    ]
}
