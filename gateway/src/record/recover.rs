//! Recovery at start: stores what a gateway that was killed left in its journal.
//!
//! For each session found in the journal segments, the events the store lacks are chained
//! after the last stored one and appended; a session that never got its end (the gateway died
//! under it) gets one saying so; then its row is ended and the recording sealed, exactly as a
//! session that ended normally. Segments are deleted only once everything in them is stored,
//! so a store that is down at start loses nothing: the next start tries again.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;
use uuid::Uuid;

use super::chain::{Chain, RecordingKey};
use super::event::{Event, EventKind};
use super::journal::{read_segment, segments};
use crate::store::{EndReason, SessionEnd, Store, StoreError, StoredEvent};

/// What recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub segments: usize,
    /// Sessions that needed events, an end or a seal.
    pub sessions: usize,
    /// Events stored now.
    pub events: usize,
    /// Journal lines that could not be read (a write cut short by the crash).
    pub unreadable_lines: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("cannot read the recording journal {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot store the recordings left in the journal ({0}); they stay in the journal and \
         are stored at the next start"
    )]
    Store(#[from] StoreError),
    #[error("the journal of session {session_id} does not fit its stored recording: {detail}")]
    Mismatch { session_id: Uuid, detail: String },
}

/// Stores the recordings a previous run left in `dir`, then deletes its segments.
pub async fn recover(
    dir: &Path,
    store: &dyn Store,
    key: &RecordingKey,
) -> Result<Recovered, RecoverError> {
    let paths = segments(dir).map_err(|source| RecoverError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut report = Recovered {
        segments: paths.len(),
        ..Recovered::default()
    };
    if paths.is_empty() {
        return Ok(report);
    }
    let mut sessions: BTreeMap<Uuid, BTreeMap<u64, String>> = BTreeMap::new();
    for path in &paths {
        let (lines, bad) = read_segment(path).map_err(|source| RecoverError::Read {
            path: path.display().to_string(),
            source,
        })?;
        report.unreadable_lines += bad;
        for line in lines {
            sessions
                .entry(line.session_id)
                .or_default()
                .insert(line.seq, line.body);
        }
    }
    for (session_id, events) in sessions {
        let stored = recover_session(store, key, session_id, events).await?;
        if let Some(n) = stored {
            report.sessions += 1;
            report.events += n;
        }
    }
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    Ok(report)
}

/// Completes one session's recording; `None` when it was already complete.
async fn recover_session(
    store: &dyn Store,
    key: &RecordingKey,
    session_id: Uuid,
    journaled: BTreeMap<u64, String>,
) -> Result<Option<usize>, RecoverError> {
    if store.recording_seal(session_id).await?.is_some() {
        return Ok(None);
    }
    let mismatch = |detail: String| RecoverError::Mismatch { session_id, detail };
    let first = *journaled.keys().next().expect("a session has lines");
    // The chain continues after the event before the journal's first one.
    let mut chain = match first {
        0 => Chain::new(session_id),
        n => {
            let before = store.session_events(session_id, n as i64 - 1, 1).await?;
            let last = before
                .first()
                .filter(|e| e.seq == n as i64 - 1)
                .ok_or_else(|| {
                    mismatch(format!("seq {} is neither stored nor journaled", n - 1))
                })?;
            Chain::after(last).ok_or_else(|| mismatch("its last stored event is corrupt".into()))?
        }
    };
    let mut stored: BTreeMap<i64, StoredEvent> = BTreeMap::new();
    let mut from = first as i64;
    loop {
        let page = store.session_events(session_id, from, 1000).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        for e in page {
            stored.insert(e.seq, e);
        }
    }
    let mut missing = Vec::new();
    let mut last_event: Option<Event> = None;
    for (seq, body) in journaled {
        if seq != chain.next_seq() {
            return Err(mismatch(format!(
                "seq {seq} follows seq {} in the journal",
                chain.next_seq().saturating_sub(1)
            )));
        }
        let event: Event = serde_json::from_str(&body)
            .map_err(|e| mismatch(format!("seq {seq} is not an event: {e}")))?;
        match stored.get(&(seq as i64)) {
            Some(already) if already.body == body => {
                chain = Chain::after(already)
                    .ok_or_else(|| mismatch(format!("stored seq {seq} is corrupt")))?;
            }
            Some(_) => {
                return Err(mismatch(format!("seq {seq} differs from the stored event")));
            }
            None => {
                let linked = chain
                    .append_with_body(&event, body)
                    .map_err(|e| mismatch(e.to_string()))?;
                missing.push(linked);
            }
        }
        last_event = Some(event);
    }
    let last_event = last_event.expect("a session has lines");
    let end = match &last_event.kind {
        EventKind::SessionEnd {
            reason,
            detail,
            bytes_client_to_server,
            bytes_server_to_client,
        } => SessionEnd {
            ended_at: last_event.at,
            reason: EndReason::parse(reason).unwrap_or(EndReason::Error),
            detail: detail.clone(),
            bytes_client_to_server: *bytes_client_to_server as i64,
            bytes_server_to_client: *bytes_server_to_client as i64,
        },
        _ => {
            let detail = "the gateway stopped abruptly; the recording was recovered from its \
                          journal at the next start"
                .to_string();
            let end_event = Event {
                seq: chain.next_seq(),
                at: last_event.at,
                kind: EventKind::SessionEnd {
                    reason: EndReason::Error.as_str().to_string(),
                    detail: Some(detail.clone()),
                    bytes_client_to_server: 0,
                    bytes_server_to_client: 0,
                },
            };
            missing.push(
                chain
                    .append(&end_event)
                    .map_err(|e| mismatch(e.to_string()))?,
            );
            SessionEnd {
                ended_at: Utc::now(),
                reason: EndReason::Error,
                detail: Some(detail),
                bytes_client_to_server: 0,
                bytes_server_to_client: 0,
            }
        }
    };
    for batch in missing.chunks(1000) {
        store.append_events(batch).await?;
    }
    let already_ended = store
        .session(session_id)
        .await?
        .is_some_and(|s| s.ended_at.is_some());
    if !already_ended {
        store.end_session(session_id, &end).await?;
    }
    match store.seal_recording(&chain.seal(key)).await {
        Ok(()) | Err(StoreError::Duplicate { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Some(missing.len()))
}
