//! The indexer: folds stored recordings into the statement index (`store::search`), off the
//! recording path, in rounds.
//!
//! A round asks the store for sessions with events not indexed yet (or that ended since), and
//! for each reads its events from its resume point on, folds them
//! ([`StatementFolder`]) and saves the statements given out with the new position, in one
//! transaction that only succeeds if no other indexer moved the session meanwhile.
//!
//! No folder is kept between rounds: each starts a fresh one at the session's last quiet point
//! (`resume_seq`, see [`crate::record::statements`]) and re-reads what came after it, usually
//! nothing or a statement still running. So the indexer holds no state to lose: a restart, or
//! several gateways sharing a PostgreSQL store, each running one, index every statement exactly
//! once (the loser of a race stores nothing and the session comes up again in a later round).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::event::Event;
use super::statements::StatementFolder;
use crate::store::{IndexUpdate, SessionToIndex, Store, StoreResult};

/// How often the indexer looks for new events when it has caught up.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);

/// Sessions per round; a full round is followed by the next at once.
const SESSIONS_PER_ROUND: i64 = 32;
/// Events read per query.
const PAGE: i64 = 500;
/// New events (beyond `indexed_seq`) read per session and round; the rest comes in the next
/// rounds. Keeps one long recording from holding up the others, and each save small: on SQLite
/// it holds the store's one write lock, which the recording writer waits for.
const NEW_EVENTS_PER_ROUND: i64 = 2_000;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Sessions whose index moved on.
    pub sessions: usize,
    /// Statements stored.
    pub statements: usize,
    /// There is more to do right away (a full round, or a session read only in part).
    pub more: bool,
}

/// Indexes until `stop`, looking every `interval` when there is nothing to do. Store failures
/// are logged and retried in the next round.
pub fn spawn_indexer(
    store: Arc<dyn Store>,
    interval: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Cancel-safe: a round dropped mid-way rolls its open transaction back, and what it
            // did not save is read again by the next indexer.
            let round = tokio::select! {
                round = index_round(store.as_ref()) => round,
                () = stop.cancelled() => return,
            };
            let more = match round {
                Ok(report) => {
                    if report.statements > 0 {
                        tracing::debug!(
                            sessions = report.sessions,
                            statements = report.statements,
                            "statement index updated"
                        );
                    }
                    report.more
                }
                Err(e) => {
                    tracing::warn!(error = %e, "indexing recorded statements failed; retrying");
                    false
                }
            };
            let pause = if more { Duration::ZERO } else { interval };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
        }
    })
}

/// One round over the sessions the store says need it.
pub async fn index_round(store: &dyn Store) -> StoreResult<RoundReport> {
    let sessions = store.sessions_to_index(SESSIONS_PER_ROUND).await?;
    let mut report = RoundReport {
        more: sessions.len() as i64 == SESSIONS_PER_ROUND,
        ..RoundReport::default()
    };
    for session in &sessions {
        match index_session(store, session).await {
            Ok(Some(done)) => {
                report.sessions += 1;
                report.statements += done.statements;
                report.more |= done.more;
            }
            // Another indexer moved it first: it comes up again if anything is left.
            Ok(None) => {}
            Err(e) => tracing::warn!(
                session = %session.session_id,
                error = %e,
                "cannot index the statements of a session; retrying in a later round"
            ),
        }
    }
    Ok(report)
}

/// What indexing one session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionReport {
    pub statements: usize,
    /// Only part of its new events were read this round.
    pub more: bool,
}

/// Reads, folds and saves one session's new events; `None` when another indexer saved first.
pub async fn index_session(
    store: &dyn Store,
    session: &SessionToIndex,
) -> StoreResult<Option<SessionReport>> {
    let mut folder = StatementFolder::new(session.resume_seq);
    let mut next = session.resume_seq;
    let read_all = loop {
        let page = store.session_events(session.session_id, next, PAGE).await?;
        for stored in &page {
            match serde_json::from_str::<Event>(&stored.body) {
                Ok(event) => folder.push(&event),
                // A body this version cannot read (a newer format, or damage that `verify`
                // names): its statement, if any, is left out rather than the whole session.
                Err(_) => folder.skip(stored.seq),
            }
            next = stored.seq + 1;
        }
        if (page.len() as i64) < PAGE {
            break true;
        }
        if next - session.indexed_seq >= NEW_EVENTS_PER_ROUND {
            break false;
        }
        // Folding is CPU work on the runtime's threads: let the relays run between pages.
        tokio::task::yield_now().await;
    };
    let complete = session.ended && read_all;
    if complete {
        folder.finish();
    }
    let statements = folder.take_finished();
    let to_seq = folder.next_seq().max(session.indexed_seq);
    let saved = store
        .save_index(&IndexUpdate {
            session_id: session.session_id,
            person_login: &session.person_login,
            target_name: &session.target_name,
            from_seq: session.indexed_seq,
            from_resume_seq: session.resume_seq,
            to_seq,
            resume_seq: folder.resume_seq().min(to_seq),
            complete,
            statements: &statements,
        })
        .await?;
    Ok(saved.then_some(SessionReport {
        statements: statements.len(),
        more: !read_all,
    }))
}
