//! The indexer: folds stored recordings into the statement index (`store::search`), off the
//! recording path, in rounds.
//!
//! A round asks the store for sessions with events not indexed yet (or that ended since), and
//! for each reads its events from its resume point on, folds them
//! ([`StatementFolder`]) and saves the statements given out with the new position, in one
//! transaction that only succeeds if no other indexer moved the session meanwhile.
//!
//! The same pass checks the session's hash chain ([`ChainVerifier`], resumed from the position
//! and hash the last round saved) and saves how far it links up, or where it breaks, with the
//! statements: pages judge a recording's integrity from that and the seal alone
//! ([`super::integrity`]), without reading it.
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

use super::chain::{ChainVerifier, Verifier, VerifyError};
use super::event::Event;
use super::statements::StatementFolder;
use crate::store::search::ChainProgress;
use crate::store::{IndexUpdate, SessionToIndex, Store, StoreResult, StoredEvent};

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

/// Reads, folds and saves one session's new events, checking their hash chain on the way;
/// `None` when another indexer saved first.
pub async fn index_session(
    store: &dyn Store,
    session: &SessionToIndex,
) -> StoreResult<Option<SessionReport>> {
    let mut chain = ChainCheck::resume(session);
    let mut folder = StatementFolder::new(session.resume_seq);
    // The fold restarts at its quiet point; the chain check where it stopped, which is only
    // before that point when the check is catching up (sessions indexed before it existed).
    let start = chain
        .next_seq()
        .map_or(session.resume_seq, |next| next.min(session.resume_seq));
    let mut next = start;
    let read_all = loop {
        let page = store.session_events(session.session_id, next, PAGE).await?;
        for stored in &page {
            chain.push(stored);
            if stored.seq >= session.resume_seq {
                match serde_json::from_str::<Event>(&stored.body) {
                    Ok(event) => folder.push(&event),
                    // A body this version cannot read (a newer format, or damage that the
                    // chain check names): its statement, if any, is left out rather than the
                    // whole session.
                    Err(_) => folder.skip(stored.seq),
                }
            }
            next = stored.seq + 1;
        }
        if (page.len() as i64) < PAGE {
            break true;
        }
        if next - session.indexed_seq >= NEW_EVENTS_PER_ROUND {
            break false;
        }
        // Catching up on the chain alone moves only the check's position: bounded the same
        // way, it goes on in the next rounds.
        if next < session.resume_seq && next - start >= NEW_EVENTS_PER_ROUND {
            break false;
        }
        // Folding is CPU work on the runtime's threads: let the relays run between pages.
        tokio::task::yield_now().await;
    };
    let complete = session.ended && read_all;
    if complete {
        folder.finish();
        chain.finish();
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
            chain: chain.progress,
        })
        .await?;
    Ok(saved.then_some(SessionReport {
        statements: statements.len(),
        more: !read_all,
    }))
}

/// A broken link's reason is kept to this many characters (what `pgbastion verify` says of
/// it is short; the limit only guards the column against a pathological event).
const MAX_REASON_CHARS: usize = 500;

/// The hash chain check of one round: resumed where the last round left it, it checks the
/// events it has not checked yet and stops for good at the first that does not link up.
struct ChainCheck {
    /// `None` once the chain is broken: a broken chain is not checked again (only resetting the
    /// session's stats row starts it over).
    verifier: Option<ChainVerifier>,
    progress: ChainProgress,
}

impl ChainCheck {
    fn resume(session: &SessionToIndex) -> ChainCheck {
        let mut progress = session.chain.clone();
        let verifier = if progress.broken.is_some() {
            None
        } else {
            let resumed = progress.verified.as_ref().and_then(|(seq, hash)| {
                Some(ChainVerifier::resume(
                    session.session_id,
                    u64::try_from(*seq).ok()?,
                    hash.as_slice().try_into().ok()?,
                ))
            });
            // A position that cannot be resumed from is checked again from the start.
            if resumed.is_none() {
                progress.verified = None;
            }
            Some(resumed.unwrap_or_else(|| ChainVerifier::new(session.session_id)))
        };
        ChainCheck { verifier, progress }
    }

    /// Where the check goes on; `None` when it has stopped (broken).
    fn next_seq(&self) -> Option<i64> {
        self.verifier.as_ref().map(|_| self.progress.next_seq())
    }

    fn push(&mut self, event: &StoredEvent) {
        let Some(verifier) = &mut self.verifier else {
            return;
        };
        // Read again for the fold: checked in an earlier round.
        if u64::try_from(event.seq).is_ok_and(|seq| seq < verifier.next_seq()) {
            return;
        }
        match verifier.push(event) {
            Ok(()) => self.linked(),
            Err(e) => self.broke(&e),
        }
    }

    /// The session ended and every event was read: an event held back to tell a swap from a
    /// gap has no successor coming.
    fn finish(&mut self) {
        // No seal here: pages check it against what this found (record::integrity).
        let ended = self
            .verifier
            .clone()
            .map(|v| v.finish(None, &Verifier::default()));
        if let Some(Err(e)) = ended {
            self.broke(&e);
        }
    }

    fn linked(&mut self) {
        if let Some(verifier) = &self.verifier
            && let Some(last) = verifier.next_seq().checked_sub(1)
        {
            self.progress.verified = Some((last as i64, verifier.last_hash().to_vec()));
        }
    }

    fn broke(&mut self, error: &VerifyError) {
        let next = self.verifier.as_ref().map_or(0, |v| v.next_seq());
        let seq = error.seq().unwrap_or(next);
        let reason: String = error.to_string().chars().take(MAX_REASON_CHARS).collect();
        self.progress.broken = Some((seq as i64, reason));
        self.verifier = None;
    }
}
