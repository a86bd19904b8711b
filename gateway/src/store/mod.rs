//! The console's own database: one [`Store`] trait, two engines.
//!
//! SQLite (embedded, the default) lives in [`sqlite`]; PostgreSQL (production, and several gateways
//! sharing one store) in [`postgres`]. Both use native column types and their own migration folder
//! (`migrations/sqlite`, `migrations/postgres`), run on open. One test suite
//! (`tests/tests/store.rs`) runs against both.

mod blocks;
pub use blocks::{EventBlock, MAX_BLOCK_BODY_BYTES, MAX_BLOCK_EVENTS, Unstorable, seq_ranges};
pub mod cancel;
pub mod console;
pub mod models;
pub mod postgres;
pub mod retention;
pub mod search;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

pub use console::{
    AccessRequest, AuditEntry, AuthMethod, ConsoleSession, ConsoleStore, Decision, LocalAccount,
    NewAuditEntry, RequestFilter, RequestStatus, TargetEdit,
};
pub use models::*;
pub use search::{
    IndexUpdate, SearchStore, SessionStats, SessionToIndex, StatementHit, StatementPage,
    StatementQuery, TextMatch,
};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL '{0}' is not understood: use sqlite://PATH or postgres://...")]
    BadUrl(String),
    #[error("cannot reach the store: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{what} '{name}' already exists")]
    Duplicate { what: &'static str, name: String },
    #[error("{what} '{name}' does not exist")]
    NotFound { what: &'static str, name: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A value the store refuses before asking the database (say, an empty reason).
    #[error("{0}")]
    Invalid(String),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything pgbastion keeps. Implementations must be safe to share between tasks and between
/// several gateway processes (PostgreSQL engine). The console's tables are in [`ConsoleStore`].
#[async_trait]
pub trait Store: ConsoleStore + SearchStore + cancel::CancelStore + Send + Sync + 'static {
    /// Which engine this is ("sqlite" or "postgres"), for logs and `status`.
    fn engine(&self) -> &'static str;

    // --- people ---
    /// Creates the person, or updates display name, email and groups of an existing login.
    async fn upsert_person(
        &self,
        login: &str,
        display_name: Option<&str>,
        email: Option<&str>,
        groups: &[String],
    ) -> StoreResult<Person>;
    async fn person_by_login(&self, login: &str) -> StoreResult<Option<Person>>;
    async fn list_people(&self) -> StoreResult<Vec<Person>>;

    // --- targets ---
    /// Fails with `Duplicate` if the name is taken.
    async fn add_target(&self, target: &NewTarget) -> StoreResult<Target>;
    async fn target_by_name(&self, name: &str) -> StoreResult<Option<Target>>;
    async fn target_by_id(&self, id: Uuid) -> StoreResult<Option<Target>>;
    async fn list_targets(&self) -> StoreResult<Vec<Target>>;
    /// Removes the target and its grants; returns whether it existed. Credentials and sessions
    /// stay (they are history).
    async fn remove_target(&self, name: &str) -> StoreResult<bool>;
    /// Sets how the target's sessions are recorded (from their next session on) and its caps
    /// (`None`: the gateway's configured default); returns the target as updated. `NotFound`
    /// when there is no such target.
    async fn set_target_recording(
        &self,
        name: &str,
        recording: RecordingPolicy,
        max_rows: Option<i64>,
        max_result_bytes: Option<i64>,
    ) -> StoreResult<Target>;
    /// Sets how many days the target's ended sessions are kept (`None`: forever); returns the
    /// target as updated. `NotFound` when there is no such target, `Invalid` for 0 days.
    async fn set_target_retention(&self, name: &str, days: Option<u32>) -> StoreResult<Target>;

    // --- upstream logins ---
    /// Adds or replaces the login the gateway uses upstream for sessions granted `role` on the
    /// target (the secret sealed with the data directory's key; `None` for trust or
    /// certificate logins). The target's own `upstream_user` is its default login and needs no
    /// row here. Fails with `NotFound` when the target does not exist.
    async fn set_target_login(&self, login: &TargetLogin) -> StoreResult<()>;
    async fn target_login(&self, target_id: Uuid, role: &str) -> StoreResult<Option<TargetLogin>>;
    /// Logins of one target, ordered by role.
    async fn list_target_logins(&self, target_id: Uuid) -> StoreResult<Vec<TargetLogin>>;
    async fn remove_target_login(&self, target_id: Uuid, role: &str) -> StoreResult<bool>;

    // --- grants ---
    async fn add_grant(&self, grant: &NewGrant) -> StoreResult<Grant>;
    /// All grants, or those of one target.
    async fn list_grants(&self, target_id: Option<Uuid>) -> StoreResult<Vec<Grant>>;
    async fn remove_grant(&self, id: Uuid) -> StoreResult<bool>;
    /// The grants that let `login` (directly or through one of `groups`) use `db_role` on the
    /// target. Empty when none does.
    async fn matching_grants(
        &self,
        login: &str,
        groups: &[String],
        target_id: Uuid,
        db_role: &str,
    ) -> StoreResult<Vec<Grant>>;

    // --- credentials ---
    async fn insert_credential(&self, credential: &Credential) -> StoreResult<()>;
    async fn credential(&self, id: Uuid) -> StoreResult<Option<Credential>>;
    /// Marks it revoked (keeps the first revocation time); returns whether it existed.
    async fn revoke_credential(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Credentials of one person, or all, newest first.
    async fn list_credentials(&self, person_login: Option<&str>) -> StoreResult<Vec<Credential>>;
    /// Ids of credentials revoked at or after `since` (gateways poll this to end live sessions).
    async fn revoked_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<Uuid>>;

    // --- recordings ---
    /// Appends a batch of blocks (runs of chained events, of one or several sessions; see
    /// [`EventBlock`]) in one transaction: all or none, each block one row. A `(session_id,
    /// seq)` that already exists fails the whole batch with `Duplicate`, naming the first such
    /// event of the batch; an empty block fails it with `Corrupt`.
    async fn append_blocks(&self, blocks: &[EventBlock]) -> StoreResult<()>;
    /// Appends a batch of events like [`Store::append_blocks`], packed into blocks (runs of
    /// consecutive, linked events of one session). An event that a block could not give back as
    /// it was (a raw newline in its body, which canonical JSON never has, a ',' in its kind,
    /// hashes that are not 32 bytes) fails the batch with `Corrupt`.
    async fn append_events(&self, batch: &[StoredEvent]) -> StoreResult<()> {
        let blocks = blocks::blocks_of(batch)?;
        self.append_blocks(&blocks).await
    }
    /// Events of a session with `seq >= from_seq`, in order, at most `limit` (fewer only when
    /// there are no more, even if blocks are missing in between). A stored block whose columns
    /// disagree is `Corrupt`, naming the session and the block.
    async fn session_events(
        &self,
        session_id: Uuid,
        from_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredEvent>>;
    /// Stores the seal of a finished recording (once; a second seal is `Duplicate`).
    async fn seal_recording(&self, seal: &RecordingSeal) -> StoreResult<()>;
    async fn recording_seal(&self, session_id: Uuid) -> StoreResult<Option<RecordingSeal>>;

    // --- sessions ---
    async fn insert_session(&self, session: &NewSession) -> StoreResult<()>;
    async fn end_session(&self, id: Uuid, end: &SessionEnd) -> StoreResult<()>;
    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>>;
    /// Newest first, at most `limit`.
    async fn list_sessions(&self, limit: i64) -> StoreResult<Vec<Session>>;
    /// Sessions matching `filter`, newest first (`started_at DESC, id DESC`), one keyset page
    /// at a time: pass the last summary's [`SessionSummary::cursor`] as the next page's
    /// `before`. Never counts the whole table.
    async fn find_sessions(
        &self,
        filter: &SessionFilter,
        page: &SessionPage,
    ) -> StoreResult<Vec<SessionSummary>>;

    // --- terminations ---
    /// Asks the gateways to end a live session: the gateway running it finds the request on
    /// its next poll ([`terminations_since`](Store::terminations_since)). Idempotent: a second
    /// request stores nothing and returns the first. A check and an insert in one statement,
    /// so a session that ends meanwhile is never given a request. `Invalid` when `reason` is
    /// blank or longer than [`MAX_TERMINATION_REASON_CHARS`], or `by` is empty.
    async fn request_termination(
        &self,
        session_id: Uuid,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<TerminationOutcome>;
    /// Termination requests made at or after `since`, oldest first (gateways poll this).
    async fn terminations_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<Termination>>;

    // --- retention ---
    /// Deletes the sessions of the target that ended before `ended_before`, with everything
    /// that belongs to them (recording, seal, statement index and its full-text rows, counts,
    /// termination request, groups); live sessions never. Works in short batches, so that
    /// recording writers are not held up; returns how many sessions went.
    async fn purge_sessions(
        &self,
        target_id: Uuid,
        ended_before: DateTime<Utc>,
    ) -> StoreResult<u64>;

    // --- shared keys ---
    /// Registers `key` as the one every process sharing the store uses for its purpose, unless
    /// one is registered already; `replace` overwrites it (a deliberate rotation). Returns the
    /// registration in force: another fingerprint than `key`'s means this process holds the
    /// wrong key.
    async fn register_key(
        &self,
        key: &KeyRegistration,
        replace: bool,
    ) -> StoreResult<KeyRegistration>;
}

/// The public fingerprint of a key that every process on a store must share (`shared_keys`,
/// migration 0011).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRegistration {
    /// `signing`, `recording` or `secrets`.
    pub purpose: String,
    /// Hex SHA-256 of the public key (of a derivation, for the symmetric secret key).
    pub fingerprint: String,
    /// The process that registered it: host, pid and role, for the operator's message.
    pub registered_by: String,
    pub registered_at: DateTime<Utc>,
}

/// The check [`Store::set_target_retention`] makes before the database's own: at least a day,
/// and a number of days both engines store (PostgreSQL's `integer`).
pub(crate) fn check_retention(days: Option<u32>) -> StoreResult<Option<i32>> {
    match days {
        Some(0) => Err(StoreError::Invalid(
            "a retention of 0 days would delete sessions as they end; give at least 1 day, \
             or keep them forever"
                .into(),
        )),
        Some(d) => i32::try_from(d).map(Some).map_err(|_| {
            StoreError::Invalid(format!("a retention of {d} days is more than anyone means"))
        }),
        None => Ok(None),
    }
}

/// The checks [`Store::request_termination`] makes before the database's own.
pub(crate) fn check_termination(by: &str, reason: &str) -> StoreResult<()> {
    if by.is_empty() {
        return Err(StoreError::Invalid(
            "a termination request must name who asks".into(),
        ));
    }
    if reason.trim().is_empty() {
        return Err(StoreError::Invalid(
            "give a reason for ending the session: the person connected is shown it".into(),
        ));
    }
    let chars = reason.chars().count();
    if chars > MAX_TERMINATION_REASON_CHARS {
        return Err(StoreError::Invalid(format!(
            "the reason is {chars} characters long; shorten it to at most \
             {MAX_TERMINATION_REASON_CHARS}"
        )));
    }
    Ok(())
}

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://...`), creating the SQLite file
/// if needed, and runs the migrations.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::open(url).await?))
    } else {
        Err(StoreError::BadUrl(url.to_string()))
    }
}

/// Events read per query while following a session (also the channel's capacity, so a slow
/// reader holds back at most two pages).
const FOLLOW_PAGE: i64 = 500;

/// Quiet polls after a session ended without a seal before following stops: the gateway that
/// recorded it may have died before sealing, and nothing more will come.
const QUIET_POLLS_AFTER_END: u32 = 2;

/// Every event of a session from `from_seq` on, in order, as they are stored: what is there
/// now, then new ones, looking every `poll`. Ends once the session has ended and its seal is
/// stored (after the sealed events), or when it ended without a seal and `QUIET_POLLS_AFTER_END`
/// polls found nothing new. A store error (or an unknown session) is the last item.
///
/// It only reads the store, so it follows sessions of any gateway process sharing it. A task
/// does the polling; it stops when the receiver is dropped.
pub fn follow_events(
    store: Arc<dyn Store>,
    session_id: Uuid,
    from_seq: i64,
    poll: Duration,
) -> mpsc::Receiver<StoreResult<StoredEvent>> {
    let (tx, rx) = mpsc::channel(FOLLOW_PAGE as usize);
    tokio::spawn(async move {
        if let Err(e) = follow(store.as_ref(), session_id, from_seq, poll, &tx).await {
            // Gone receiver: nobody is left to tell.
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

/// Why following stopped early without an error to report.
struct ReaderGone;

async fn follow(
    store: &dyn Store,
    session_id: Uuid,
    from_seq: i64,
    poll: Duration,
    tx: &mpsc::Sender<StoreResult<StoredEvent>>,
) -> StoreResult<()> {
    let mut next = from_seq.max(0);
    let mut quiet_polls = 0;
    loop {
        // The end is looked at before the events: a seal, or an end, seen now was written after
        // the events it covers, so the reading below gets all of them.
        let sealed = store.recording_seal(session_id).await?.is_some();
        let ended = sealed
            || store
                .session(session_id)
                .await?
                .ok_or_else(|| StoreError::NotFound {
                    what: "session",
                    name: session_id.to_string(),
                })?
                .ended_at
                .is_some();
        let sent = match send_new_events(store, session_id, &mut next, tx).await? {
            Ok(sent) => sent,
            Err(ReaderGone) => return Ok(()),
        };
        if sealed {
            return Ok(());
        }
        if ended {
            quiet_polls = if sent == 0 { quiet_polls + 1 } else { 0 };
            if quiet_polls >= QUIET_POLLS_AFTER_END {
                return Ok(());
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = tx.closed() => return Ok(()),
        }
    }
}

/// Sends the events stored from `*next` on, page by page; returns how many.
async fn send_new_events(
    store: &dyn Store,
    session_id: Uuid,
    next: &mut i64,
    tx: &mpsc::Sender<StoreResult<StoredEvent>>,
) -> StoreResult<Result<u64, ReaderGone>> {
    let mut sent = 0;
    loop {
        let page = store.session_events(session_id, *next, FOLLOW_PAGE).await?;
        let full = page.len() as i64 == FOLLOW_PAGE;
        for event in page {
            *next = event.seq + 1;
            if tx.send(Ok(event)).await.is_err() {
                return Ok(Err(ReaderGone));
            }
            sent += 1;
        }
        if !full {
            return Ok(Ok(sent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_millis(20);

    async fn store_with_session() -> (Arc<dyn Store>, Uuid) {
        let store = open("sqlite::memory:").await.unwrap();
        let id = Uuid::new_v4();
        store
            .insert_session(&NewSession {
                id,
                person_login: "alice".into(),
                target_id: Uuid::new_v4(),
                target_name: "shop".into(),
                db_role: "app_ro".into(),
                credential_id: Uuid::new_v4(),
                client_addr: "192.0.2.7:5000".into(),
                application_name: None,
                tls_version: None,
                started_at: models::now(),
                recording: RecordingPolicy::Strict,
                groups: Vec::new(),
            })
            .await
            .unwrap();
        (store, id)
    }

    /// Events `seqs` of the session (the store checks hash lengths, not the chain).
    fn events(session_id: Uuid, seqs: std::ops::Range<i64>) -> Vec<StoredEvent> {
        seqs.map(|seq| StoredEvent {
            session_id,
            seq,
            at: models::now(),
            kind: "sync".into(),
            body: format!("{{\"seq\":{seq}}}"),
            prev_hash: vec![0; 32],
            hash: vec![1; 32],
        })
        .collect()
    }

    async fn end(store: &dyn Store, id: Uuid) {
        let end = SessionEnd {
            ended_at: models::now(),
            reason: EndReason::ClientQuit,
            detail: None,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
        };
        store.end_session(id, &end).await.unwrap();
    }

    async fn next_seq(rx: &mut mpsc::Receiver<StoreResult<StoredEvent>>) -> Option<i64> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("followed events stall")
            .map(|event| event.unwrap().seq)
    }

    #[tokio::test]
    async fn following_a_store_yields_stored_then_new_events_and_ends_with_the_seal() {
        let (store, id) = store_with_session().await;
        store.append_events(&events(id, 0..2)).await.unwrap();
        let mut rx = follow_events(store.clone(), id, 1, POLL);
        assert_eq!(next_seq(&mut rx).await, Some(1));
        store.append_events(&events(id, 2..4)).await.unwrap();
        assert_eq!(next_seq(&mut rx).await, Some(2));
        assert_eq!(next_seq(&mut rx).await, Some(3));
        store.append_events(&events(id, 4..5)).await.unwrap();
        end(store.as_ref(), id).await;
        store
            .seal_recording(&RecordingSeal {
                session_id: id,
                event_count: 5,
                final_hash: vec![1; 32],
                signature: vec![2; 64],
                key_id: "k".into(),
                sealed_at: models::now(),
            })
            .await
            .unwrap();
        assert_eq!(next_seq(&mut rx).await, Some(4));
        assert_eq!(next_seq(&mut rx).await, None);
    }

    #[tokio::test]
    async fn following_a_store_stops_when_an_unsealed_session_has_ended_and_stays_quiet() {
        let (store, id) = store_with_session().await;
        store.append_events(&events(id, 0..1)).await.unwrap();
        end(store.as_ref(), id).await;
        let mut rx = follow_events(store, id, 0, POLL);
        assert_eq!(next_seq(&mut rx).await, Some(0));
        assert_eq!(next_seq(&mut rx).await, None);
    }

    #[tokio::test]
    async fn following_an_unknown_session_in_the_store_ends_with_not_found() {
        let store = open("sqlite::memory:").await.unwrap();
        let mut rx = follow_events(store, Uuid::new_v4(), 0, POLL);
        let first = rx.recv().await.expect("an error");
        assert!(matches!(
            first,
            Err(StoreError::NotFound {
                what: "session",
                ..
            })
        ));
        assert!(rx.recv().await.is_none());
    }
}
