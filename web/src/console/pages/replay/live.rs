//! The live view: a session's new statements as server-sent events, as they are recorded.
//!
//! It reads the store only (`store::follow_events`), so it follows a session served by any
//! gateway process sharing the store. Each message is a batch of entries and carries the
//! cursor to go on from as its id: a browser that reconnects sends it back as
//! `Last-Event-ID` and misses nothing, repeats nothing.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use gateway::store::{Store, follow_events};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::entry::Entry;
use super::feed::{Cursor, Feed};
use super::{PageQuery, visible_session};
use crate::console::AppState;
use crate::console::auth::Viewer;
use crate::console::error::ConsoleResult;

/// How often the store is asked for new events of a live session.
const POLL: Duration = Duration::from_millis(300);

#[derive(Serialize)]
struct Batch<'a> {
    entries: &'a [Entry],
    next: Cursor,
}

/// `GET /sessions/{id}/live?seq=&status=`: entries from the cursor on, until the recording is
/// complete (then an `end` message), as `text/event-stream`.
pub async fn follow(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> ConsoleResult<Response> {
    let session = visible_session(&state, &viewer, &id).await?;
    let cursor = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_event_id)
    {
        Some(resumed) => resumed,
        None => q.cursor()?,
    };
    let (tx, rx) = mpsc::channel(16);
    let store = state.store.clone();
    tokio::spawn(async move {
        stream(store, session.id, session.started_at, cursor, tx).await;
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The id of a message: `seq:status`.
fn event_id(cursor: Cursor) -> String {
    format!("{}:{}", cursor.seq, cursor.status)
}

fn parse_event_id(id: &str) -> Option<Cursor> {
    let (seq, status) = id.split_once(':')?;
    let seq: i64 = seq.parse().ok().filter(|s| *s >= 0)?;
    let mut chars = status.chars();
    let status = chars.next().filter(|c| matches!(c, 'I' | 'T' | 'E'))?;
    chars.next().is_none().then_some(Cursor { seq, status })
}

async fn stream(
    store: std::sync::Arc<dyn Store>,
    session_id: uuid::Uuid,
    started_at: chrono::DateTime<chrono::Utc>,
    cursor: Cursor,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let mut feed = Feed::new(started_at, cursor);
    let mut events = follow_events(store, session_id, cursor.seq, POLL);
    loop {
        // Batches what is there already: a burst of events becomes one message.
        // A browser that went away ends the following (and the store polling) at once.
        let first = tokio::select! {
            item = events.recv() => item,
            () = tx.closed() => return,
        };
        let Some(first) = first else {
            break;
        };
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Ok(event) => feed.push(&event),
                Err(e) => {
                    tracing::warn!(session = %session_id, error = %e, "live view cannot read the recording");
                    let message = SseEvent::default()
                        .event("failed")
                        .data(format!("The recording cannot be read: {e}"));
                    let _ = tx.send(Ok(message)).await;
                    return;
                }
            }
            next = events.try_recv().ok();
        }
        if !send_ready(&mut feed, &tx, "entries").await {
            return;
        }
    }
    feed.finish();
    if send_ready(&mut feed, &tx, "entries").await {
        let _ = tx
            .send(Ok(SseEvent::default().event("end").data("ended")))
            .await;
    }
}

/// Sends what is ready; false when the browser has gone.
async fn send_ready(
    feed: &mut Feed,
    tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
    name: &str,
) -> bool {
    let entries = feed.take_ready();
    if entries.is_empty() {
        return !tx.is_closed();
    }
    let next = feed.cursor();
    let data = match serde_json::to_string(&Batch {
        entries: &entries,
        next,
    }) {
        Ok(data) => data,
        Err(e) => {
            tracing::error!(error = %e, "live view cannot encode entries");
            return false;
        }
    };
    let message = SseEvent::default()
        .event(name)
        .id(event_id(next))
        .data(data);
    tx.send(Ok(message)).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_hostile_ones_are_refused() {
        let c = Cursor {
            seq: 42,
            status: 'T',
        };
        assert_eq!(parse_event_id(&event_id(c)), Some(c));
        for bad in [
            "",
            "42",
            "-1:I",
            "1:X",
            "1:II",
            "x:I",
            "99999999999999999999:I",
        ] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }
}
