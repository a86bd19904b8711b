//! The SQLite engine: one file (usually in the data directory), WAL journal, foreign keys on.
//!
//! Column conventions are in `migrations/sqlite/0001_initial.sql`. The one that matters here:
//! timestamps are bound as fixed-width UTC text with microseconds (see [`ts`]), never through
//! sqlx's own `DateTime` encoding, whose width varies and would break text comparisons.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::blocks::{self, EventBlock, StoredBlock, seq_ranges};
use super::models::{
    decode_end_reason, decode_port, decode_recording, decode_retention, decode_subject,
    decode_tls_mode, duplicate_or_query, grant_label, is_foreign_key_violation, now,
    session_status_condition, termination_outcome,
};
use super::{
    Credential, Grant, KeyRegistration, NewGrant, NewSession, NewTarget, Person, RecordingPolicy,
    RecordingSeal, Session, SessionEnd, SessionFilter, SessionPage, SessionSummary, Store,
    StoreError, StoreResult, StoredEvent, Target, TargetLogin, Termination, TerminationOutcome,
    check_termination,
};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a connection waits for another writer before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions purged per round trip: each goes in a statement of its own, so that a writer
/// waiting for SQLite's one write lock gets it between two sessions.
const PURGE_BATCH: i64 = 16;

/// Indexed statements deleted per statement while purging. Each runs two full-text deletes
/// (the triggers of migration 0007), the slow part of removing a session: in chunks this size
/// the write lock is held for milliseconds at a time.
const PURGE_STATEMENTS_CHUNK: i64 = 500;

/// Pause between two purge statements: the recording writer, waiting in SQLite's busy
/// handler, retries within this much and finds the lock free.
const PURGE_PAUSE: Duration = Duration::from_millis(20);

/// Blocks per INSERT statement at most. Each binds 10 parameters, far below SQLite's limit of
/// 32,766 per statement. A batch of up to this many blocks (one per session with events in it:
/// most batches) is stored by one statement, one round trip to SQLite's connection thread; the
/// statements for 1 to 32 blocks stay in the connection's cache of prepared statements.
const BLOCKS_PER_INSERT: usize = 32;

/// Column lists, shared by the queries that return whole rows (macros, because `concat!` needs
/// literals and `sqlx::query` needs a `&'static str`).
macro_rules! person_columns {
    () => {
        "id, login, display_name, email, groups, created_at"
    };
}
macro_rules! target_columns {
    () => {
        "id, name, host, port, database, tls_mode, ca_pem, upstream_user, \
         upstream_secret_sealed, recording, record_max_rows, record_max_result_bytes, \
         retention_days, enabled, created_at"
    };
}
macro_rules! target_login_columns {
    () => {
        "target_id, role, secret_sealed, created_at"
    };
}
macro_rules! grant_select {
    () => {
        "SELECT g.id, g.subject_kind, g.subject_name, g.target_id, t.name AS target_name, \
         g.db_role, g.max_lifetime_secs, g.requires_approval, g.created_at \
         FROM grants g JOIN targets t ON t.id = g.target_id "
    };
}
macro_rules! credential_columns {
    () => {
        "id, person_login, target_id, target_name, db_role, issued_at, expires_at, revoked_at, \
         reason"
    };
}
macro_rules! session_columns {
    () => {
        "id, person_login, target_id, target_name, db_role, credential_id, client_addr, \
         application_name, tls_version, started_at, ended_at, end_reason, end_detail, \
         bytes_client_to_server, bytes_server_to_client, recording, groups"
    };
}

macro_rules! termination_columns {
    () => {
        "session_id, requested_by, reason, requested_at"
    };
}

macro_rules! block_columns {
    () => {
        "session_id, first_seq, last_seq, first_at, last_at, kinds, body, ats, prev_hash, hashes"
    };
}
macro_rules! seal_columns {
    () => {
        "session_id, event_count, final_hash, signature, key_id, sealed_at"
    };
}

/// The store in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating the file and its directory if needed) and migrates the database at
    /// `url` (`sqlite://PATH`, or `sqlite::memory:` for tests).
    pub async fn open(url: &str) -> StoreResult<Self> {
        let pool = Self::connect(url).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Like [`SqliteStore::open`], running the migrations up to `version` only: for tests of how
    /// a later migration treats the data already there. Not for use with the gateway, whose
    /// queries expect the latest schema.
    #[doc(hidden)]
    pub async fn open_at_migration(url: &str, version: i64) -> StoreResult<Self> {
        let pool = Self::connect(url).await?;
        MIGRATOR.run_to(version, &pool).await?;
        Ok(Self { pool })
    }

    async fn connect(url: &str) -> StoreResult<SqlitePool> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::BadUrl(url.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with synchronous NORMAL: a commit goes to the log without an fsync of its own
            // (the log is synced at checkpoints). A committed transaction survives a crash of
            // the process, the SIGKILL that strict recording promises to survive; only an
            // operating-system crash or a power loss can lose the last commits, and the database
            // stays consistent even then.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // 16 KiB pages for a new database (an existing one keeps its size): a recording
            // block of a busy session is several KiB, and each page is a frame written to the
            // log on its own. The recorder's writer stored 15% more events per second than
            // with SQLite's 4 KiB; 64 KiB was slower again.
            .page_size(16384)
            // Checkpoints copy the log into the database inside some writer's commit: every
            // 2,000 pages (32 MiB of log at 16 KiB) instead of SQLite's 1,000, so a page the
            // recorder rewrites often is copied once per checkpoint, not many times.
            .pragma("wal_autocheckpoint", "2000");
        let in_memory = is_in_memory(url);
        if !in_memory {
            create_parent_dir(options.get_filename())?;
            create_private_file(options.get_filename())?;
        }
        pool_options(in_memory)
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)
    }
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// An in-memory database lives only as long as one of its connections: keep exactly one open
/// for the life of the pool.
fn pool_options(in_memory: bool) -> SqlitePoolOptions {
    let options = SqlitePoolOptions::new();
    if in_memory {
        options
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        options.max_connections(8)
    }
}

fn create_parent_dir(file: &Path) -> StoreResult<()> {
    let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        let detail = format!("cannot create the store directory {}: {e}", dir.display());
        StoreError::Connect(sqlx::Error::Io(std::io::Error::new(e.kind(), detail)))
    })
}

/// Creates the database file readable by its owner only, before SQLite creates it with the
/// umask's mode: it holds sealed secrets and every session's metadata. SQLite gives its `-wal`
/// and `-shm` files the database file's mode.
fn create_private_file(file: &Path) -> StoreResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            let detail = format!("cannot create the store file {}: {e}", file.display());
            Err(StoreError::Connect(sqlx::Error::Io(std::io::Error::new(
                e.kind(),
                detail,
            ))))
        }
    }
}

/// The stored form of a timestamp: UTC, exactly six fractional digits, 'Z'. Fixed width, so
/// text order is time order; microseconds, the precision PostgreSQL keeps, so both engines
/// return the same value.
pub(super) fn ts(t: DateTime<Utc>) -> String {
    // "%Y-%m-%dT%H:%M:%S%.6fZ", written directly: a format string is parsed on every call, and
    // the recorder writes two timestamps per block.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn groups_json(groups: &[String]) -> String {
    serde_json::Value::from(groups).to_string()
}

/// A JSON list of strings read from `column` ("people.groups", "sessions.groups").
fn strings_from_json(row: &SqliteRow, column: &str, name: &str) -> StoreResult<Vec<String>> {
    let json: String = row.try_get(name)?;
    serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("{column} is not a JSON list of strings: {e}")))
}

fn person_from_row(row: &SqliteRow) -> StoreResult<Person> {
    let groups = strings_from_json(row, "people.groups", "groups")?;
    Ok(Person {
        id: row.try_get("id")?,
        login: row.try_get("login")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        groups,
        created_at: row.try_get("created_at")?,
    })
}

fn target_from_row(row: &SqliteRow) -> StoreResult<Target> {
    Ok(Target {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        host: row.try_get("host")?,
        port: decode_port(row.try_get("port")?)?,
        database: row.try_get("database")?,
        tls_mode: decode_tls_mode(row.try_get("tls_mode")?)?,
        ca_pem: row.try_get("ca_pem")?,
        upstream_user: row.try_get("upstream_user")?,
        upstream_secret_sealed: row.try_get("upstream_secret_sealed")?,
        recording: decode_recording("targets.recording", row.try_get("recording")?)?,
        record_max_rows: row.try_get("record_max_rows")?,
        record_max_result_bytes: row.try_get("record_max_result_bytes")?,
        retention_days: decode_retention(row.try_get("retention_days")?)?,
        enabled: row.try_get("enabled")?,
        created_at: row.try_get("created_at")?,
    })
}

fn target_login_from_row(row: &SqliteRow) -> StoreResult<TargetLogin> {
    Ok(TargetLogin {
        target_id: row.try_get("target_id")?,
        role: row.try_get("role")?,
        secret_sealed: row.try_get("secret_sealed")?,
        created_at: row.try_get("created_at")?,
    })
}

fn grant_from_row(row: &SqliteRow) -> StoreResult<Grant> {
    Ok(Grant {
        id: row.try_get("id")?,
        subject: decode_subject(row.try_get("subject_kind")?, row.try_get("subject_name")?)?,
        target_id: row.try_get("target_id")?,
        target_name: row.try_get("target_name")?,
        db_role: row.try_get("db_role")?,
        max_lifetime_secs: row.try_get("max_lifetime_secs")?,
        requires_approval: row.try_get("requires_approval")?,
        created_at: row.try_get("created_at")?,
    })
}

fn credential_from_row(row: &SqliteRow) -> StoreResult<Credential> {
    Ok(Credential {
        id: row.try_get("id")?,
        person_login: row.try_get("person_login")?,
        target_id: row.try_get("target_id")?,
        target_name: row.try_get("target_name")?,
        db_role: row.try_get("db_role")?,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        reason: row.try_get("reason")?,
    })
}

fn session_from_row(row: &SqliteRow) -> StoreResult<Session> {
    Ok(Session {
        id: row.try_get("id")?,
        person_login: row.try_get("person_login")?,
        target_id: row.try_get("target_id")?,
        target_name: row.try_get("target_name")?,
        db_role: row.try_get("db_role")?,
        credential_id: row.try_get("credential_id")?,
        client_addr: row.try_get("client_addr")?,
        application_name: row.try_get("application_name")?,
        tls_version: row.try_get("tls_version")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        end_reason: decode_end_reason(row.try_get("end_reason")?)?,
        end_detail: row.try_get("end_detail")?,
        bytes_client_to_server: row.try_get("bytes_client_to_server")?,
        bytes_server_to_client: row.try_get("bytes_server_to_client")?,
        recording: decode_recording("sessions.recording", row.try_get("recording")?)?,
        groups: strings_from_json(row, "sessions.groups", "groups")?,
    })
}

fn termination_from_row(row: &SqliteRow) -> StoreResult<Termination> {
    Ok(Termination {
        session_id: row.try_get("session_id")?,
        requested_by: row.try_get("requested_by")?,
        reason: row.try_get("reason")?,
        requested_at: row.try_get("requested_at")?,
    })
}

/// A row of [`READ_BLOCKS`]: a block, or (`probe`) only where the next one starts.
fn block_from_row(row: &SqliteRow) -> StoreResult<Result<StoredBlock, i64>> {
    let first_seq = row.try_get("first_seq")?;
    if row.try_get("probe")? {
        return Ok(Err(first_seq));
    }
    Ok(Ok(StoredBlock {
        first_seq,
        last_seq: row.try_get("last_seq")?,
        kinds: row.try_get("kinds")?,
        body: row.try_get("body")?,
        ats: row.try_get("ats")?,
        prev_hash: row.try_get("prev_hash")?,
        hashes: row.try_get("hashes")?,
    }))
}

fn seal_from_row(row: &SqliteRow) -> StoreResult<RecordingSeal> {
    Ok(RecordingSeal {
        session_id: row.try_get("session_id")?,
        event_count: row.try_get("event_count")?,
        final_hash: row.try_get("final_hash")?,
        signature: row.try_get("signature")?,
        key_id: row.try_get("key_id")?,
        sealed_at: row.try_get("sealed_at")?,
    })
}

pub(super) fn rows<T>(
    rows: Vec<SqliteRow>,
    decode: fn(&SqliteRow) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    rows.iter().map(decode).collect()
}

// --- Recording blocks (see `blocks` and migrations/sqlite/0005_recording_blocks.sql) ---
//
// Blocks of a session never overlap, so the block holding a seq is the one starting last at or
// before it: one step down the primary key (session_id, first_seq), found by `ORDER BY first_seq
// DESC LIMIT 1`. The queries below build on that.

/// Where the block starting last at or before a seq (`?2`) ends; none when no block does.
/// Inserts the blocks of the `incoming` table that precedes it (`WITH incoming (...) AS
/// (VALUES ...)`) unless one of them overlaps a stored block of its session (the block starting
/// last at or before its end ends at or after its start): all of them or none. One statement,
/// so SQLite takes the write lock before reading, and nothing is written in between.
const INSERT_UNLESS_OVERLAP: &str = concat!(
    " INSERT INTO recording_blocks (",
    block_columns!(),
    ") SELECT ",
    block_columns!(),
    " FROM incoming WHERE NOT EXISTS (SELECT 1 FROM incoming n WHERE (\
       SELECT b.last_seq FROM recording_blocks b \
       WHERE b.session_id = n.session_id AND b.first_seq <= n.last_seq \
       ORDER BY b.first_seq DESC LIMIT 1) >= n.first_seq)"
);

/// The blocks of session `?1` holding events from seq `?2` on and starting before seq `?3`, in
/// order, then (`probe`, without its content) the first block starting at or after `?3`: with no
/// gaps, those blocks hold the events `?2 .. ?3`, and the probe says whether, and where, the
/// recording goes on after a gap.
const READ_BLOCKS: &str = "SELECT 0 AS probe, first_seq, last_seq, kinds, body, ats, prev_hash, \
     hashes FROM recording_blocks \
     WHERE session_id = ?1 AND first_seq < ?3 AND last_seq >= ?2 AND first_seq >= COALESCE(\
       (SELECT first_seq FROM recording_blocks WHERE session_id = ?1 AND first_seq <= ?2 \
        ORDER BY first_seq DESC LIMIT 1), ?2) \
     UNION ALL \
     SELECT * FROM (SELECT 1, first_seq, last_seq, NULL, NULL, NULL, NULL, NULL \
       FROM recording_blocks WHERE session_id = ?1 AND first_seq >= ?3 \
       ORDER BY first_seq LIMIT 1) \
     ORDER BY first_seq";

/// The seq ranges of the blocks of session `?1` holding any seq from `?2` to `?3`.
const STORED_RANGES: &str = "SELECT first_seq, last_seq FROM recording_blocks \
     WHERE session_id = ?1 AND first_seq <= ?3 AND last_seq >= ?2 AND first_seq >= COALESCE(\
       (SELECT first_seq FROM recording_blocks WHERE session_id = ?1 AND first_seq <= ?2 \
        ORDER BY first_seq DESC LIMIT 1), ?2)";

impl SqliteStore {
    /// Inserts `blocks` (at most [`BLOCKS_PER_INSERT`]) in one statement; false, with nothing
    /// inserted, when one overlaps a stored block.
    async fn insert_blocks<'c>(
        executor: impl sqlx::Executor<'c, Database = Sqlite>,
        blocks: &[EventBlock],
    ) -> Result<bool, sqlx::Error> {
        let mut insert =
            QueryBuilder::<Sqlite>::new(concat!("WITH incoming (", block_columns!(), ") AS ("));
        insert.push_values(blocks, |mut row, block| {
            row.push_bind(block.session_id)
                .push_bind(block.first_seq)
                .push_bind(block.last_seq)
                .push_bind(ts(block.first_at))
                .push_bind(ts(block.last_at))
                .push_bind(block.kinds.as_str())
                .push_bind(block.body.as_str())
                .push_bind(block.ats.as_slice())
                .push_bind(&block.prev_hash[..])
                .push_bind(block.hashes.as_slice());
        });
        insert.push(")").push(INSERT_UNLESS_OVERLAP);
        let inserted = insert.build().execute(executor).await?.rows_affected();
        Ok(inserted as usize == blocks.len())
    }
}

/// Error paths of `append_blocks`. A failed batch is rolled back whole; these look at what is
/// stored to name the event or session that made it fail (SQLite's messages name neither). They
/// cost queries only when a batch fails.
impl SqliteStore {
    async fn rejected_batch(&self, batch: &[EventBlock], err: sqlx::Error) -> StoreError {
        let named = match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                self.first_duplicate_event(batch).await
            }
            e if is_foreign_key_violation(e) => self.first_unknown_session(batch).await,
            _ => Ok(None),
        };
        match named {
            Ok(Some(named)) => named,
            // Nothing to name (a concurrent change hid it) or the lookup failed: the
            // database's own error is the best account.
            Ok(None) | Err(_) => StoreError::Query(err),
        }
    }

    /// The `Duplicate` error of a batch found to overlap itself or a stored block.
    async fn overlapping_batch(&self, batch: &[EventBlock]) -> StoreError {
        match self.first_duplicate_event(batch).await {
            Ok(Some(named)) => named,
            Err(e) => e,
            // The overlap was seen, so this takes a concurrent removal: name the first event.
            Ok(None) => StoreError::Duplicate {
                what: "event",
                name: format!("{} seq {}", batch[0].session_id(), batch[0].first_seq()),
            },
        }
    }

    async fn first_duplicate_event(&self, batch: &[EventBlock]) -> StoreResult<Option<StoreError>> {
        let mut stored = HashMap::new();
        for (session_id, (lowest, highest)) in seq_ranges(batch) {
            let ranges: Vec<(i64, i64)> = sqlx::query_as(STORED_RANGES)
                .bind(session_id)
                .bind(lowest)
                .bind(highest)
                .fetch_all(&self.pool)
                .await?;
            stored.insert(session_id, ranges);
        }
        Ok(blocks::duplicate(batch, &stored))
    }

    async fn first_unknown_session(&self, batch: &[EventBlock]) -> StoreResult<Option<StoreError>> {
        for session_id in seq_ranges(batch).into_keys() {
            let known: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?)")
                    .bind(session_id)
                    .fetch_one(&self.pool)
                    .await?;
            if !known {
                return Ok(Some(StoreError::NotFound {
                    what: "session",
                    name: session_id.to_string(),
                }));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn upsert_person(
        &self,
        login: &str,
        display_name: Option<&str>,
        email: Option<&str>,
        groups: &[String],
    ) -> StoreResult<Person> {
        let row = sqlx::query(concat!(
            "INSERT INTO people (id, login, display_name, email, groups, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (login) DO UPDATE SET display_name = excluded.display_name, \
             email = excluded.email, groups = excluded.groups \
             RETURNING ",
            person_columns!()
        ))
        .bind(Uuid::new_v4())
        .bind(login)
        .bind(display_name)
        .bind(email)
        .bind(groups_json(groups))
        .bind(ts(now()))
        .fetch_one(&self.pool)
        .await?;
        person_from_row(&row)
    }

    async fn person_by_login(&self, login: &str) -> StoreResult<Option<Person>> {
        sqlx::query(concat!(
            "SELECT ",
            person_columns!(),
            " FROM people WHERE login = ?"
        ))
        .bind(login)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(person_from_row)
        .transpose()
    }

    async fn list_people(&self) -> StoreResult<Vec<Person>> {
        let all = sqlx::query(concat!(
            "SELECT ",
            person_columns!(),
            " FROM people ORDER BY login"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows(all, person_from_row)
    }

    async fn add_target(&self, target: &NewTarget) -> StoreResult<Target> {
        let row = sqlx::query(concat!(
            "INSERT INTO targets (id, name, host, port, database, tls_mode, ca_pem, \
             upstream_user, upstream_secret_sealed, recording, record_max_rows, \
             record_max_result_bytes, enabled, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) RETURNING ",
            target_columns!()
        ))
        .bind(Uuid::new_v4())
        .bind(&target.name)
        .bind(&target.host)
        .bind(i64::from(target.port))
        .bind(&target.database)
        .bind(target.tls_mode.as_str())
        .bind(&target.ca_pem)
        .bind(&target.upstream_user)
        .bind(&target.upstream_secret_sealed)
        .bind(target.recording.as_str())
        .bind(target.record_max_rows)
        .bind(target.record_max_result_bytes)
        .bind(ts(now()))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| duplicate_or_query(e, "target", &target.name))?;
        target_from_row(&row)
    }

    async fn target_by_name(&self, name: &str) -> StoreResult<Option<Target>> {
        sqlx::query(concat!(
            "SELECT ",
            target_columns!(),
            " FROM targets WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(target_from_row)
        .transpose()
    }

    async fn target_by_id(&self, id: Uuid) -> StoreResult<Option<Target>> {
        sqlx::query(concat!(
            "SELECT ",
            target_columns!(),
            " FROM targets WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(target_from_row)
        .transpose()
    }

    async fn list_targets(&self) -> StoreResult<Vec<Target>> {
        let all = sqlx::query(concat!(
            "SELECT ",
            target_columns!(),
            " FROM targets ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows(all, target_from_row)
    }

    async fn remove_target(&self, name: &str) -> StoreResult<bool> {
        // Grants and upstream logins go with it (ON DELETE CASCADE); credentials and sessions
        // have no foreign key.
        let done = sqlx::query("DELETE FROM targets WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_target_recording(
        &self,
        name: &str,
        recording: RecordingPolicy,
        max_rows: Option<i64>,
        max_result_bytes: Option<i64>,
    ) -> StoreResult<Target> {
        sqlx::query(concat!(
            "UPDATE targets SET recording = ?, record_max_rows = ?, \
             record_max_result_bytes = ? WHERE name = ? RETURNING ",
            target_columns!()
        ))
        .bind(recording.as_str())
        .bind(max_rows)
        .bind(max_result_bytes)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(target_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound {
            what: "target",
            name: name.to_string(),
        })
    }

    async fn set_target_retention(&self, name: &str, days: Option<u32>) -> StoreResult<Target> {
        let days = super::check_retention(days)?;
        sqlx::query(concat!(
            "UPDATE targets SET retention_days = ? WHERE name = ? RETURNING ",
            target_columns!()
        ))
        .bind(days)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(target_from_row)
        .transpose()?
        .ok_or_else(|| StoreError::NotFound {
            what: "target",
            name: name.to_string(),
        })
    }

    async fn set_target_login(&self, login: &TargetLogin) -> StoreResult<()> {
        // One statement: replacing a login replaces its secret and its created_at (the time the
        // current secret was set, as given by the caller). A missing target surfaces as the
        // foreign-key violation, so there is no window between a look-up and the insert.
        sqlx::query(
            "INSERT INTO target_logins (target_id, role, secret_sealed, created_at) \
             VALUES (?, ?, ?, ?) \
             ON CONFLICT (target_id, role) DO UPDATE SET \
             secret_sealed = excluded.secret_sealed, created_at = excluded.created_at",
        )
        .bind(login.target_id)
        .bind(&login.role)
        .bind(&login.secret_sealed)
        .bind(ts(login.created_at))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound {
                    what: "target",
                    name: login.target_id.to_string(),
                }
            } else {
                StoreError::Query(e)
            }
        })?;
        Ok(())
    }

    async fn target_login(&self, target_id: Uuid, role: &str) -> StoreResult<Option<TargetLogin>> {
        sqlx::query(concat!(
            "SELECT ",
            target_login_columns!(),
            " FROM target_logins WHERE target_id = ? AND role = ?"
        ))
        .bind(target_id)
        .bind(role)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(target_login_from_row)
        .transpose()
    }

    async fn list_target_logins(&self, target_id: Uuid) -> StoreResult<Vec<TargetLogin>> {
        let all = sqlx::query(concat!(
            "SELECT ",
            target_login_columns!(),
            " FROM target_logins WHERE target_id = ? ORDER BY role"
        ))
        .bind(target_id)
        .fetch_all(&self.pool)
        .await?;
        rows(all, target_login_from_row)
    }

    async fn remove_target_login(&self, target_id: Uuid, role: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM target_logins WHERE target_id = ? AND role = ?")
            .bind(target_id)
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn add_grant(&self, grant: &NewGrant) -> StoreResult<Grant> {
        let target_missing = || StoreError::NotFound {
            what: "target",
            name: grant.target_id.to_string(),
        };
        let target = self
            .target_by_id(grant.target_id)
            .await?
            .ok_or_else(target_missing)?;
        let created = Grant {
            id: Uuid::new_v4(),
            subject: grant.subject.clone(),
            target_id: target.id,
            target_name: target.name,
            db_role: grant.db_role.clone(),
            max_lifetime_secs: grant.max_lifetime_secs,
            requires_approval: grant.requires_approval,
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO grants (id, subject_kind, subject_name, target_id, db_role, \
             max_lifetime_secs, created_at, requires_approval) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(created.id)
        .bind(created.subject.kind())
        .bind(created.subject.name())
        .bind(created.target_id)
        .bind(&created.db_role)
        .bind(created.max_lifetime_secs)
        .bind(ts(created.created_at))
        .bind(created.requires_approval)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            // The target may have been removed since we looked it up.
            if is_foreign_key_violation(&e) {
                target_missing()
            } else {
                duplicate_or_query(e, "grant", grant_label(grant, &created.target_name))
            }
        })?;
        Ok(created)
    }

    async fn list_grants(&self, target_id: Option<Uuid>) -> StoreResult<Vec<Grant>> {
        let query = match target_id {
            Some(id) => sqlx::query(concat!(
                grant_select!(),
                "WHERE g.target_id = ? \
                 ORDER BY g.db_role, g.subject_kind, g.subject_name"
            ))
            .bind(id),
            None => sqlx::query(concat!(
                grant_select!(),
                "ORDER BY t.name, g.db_role, g.subject_kind, g.subject_name"
            )),
        };
        rows(query.fetch_all(&self.pool).await?, grant_from_row)
    }

    async fn remove_grant(&self, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM grants WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn matching_grants(
        &self,
        login: &str,
        groups: &[String],
        target_id: Uuid,
        db_role: &str,
    ) -> StoreResult<Vec<Grant>> {
        // The groups travel as one JSON array, unpacked by json_each: one static statement
        // whatever the number of groups.
        let all = sqlx::query(concat!(
            grant_select!(),
            "WHERE g.target_id = ? AND g.db_role = ? \
             AND ((g.subject_kind = 'person' AND g.subject_name = ?) \
               OR (g.subject_kind = 'group' \
                   AND g.subject_name IN (SELECT value FROM json_each(?)))) \
             ORDER BY g.subject_kind DESC, g.subject_name"
        ))
        .bind(target_id)
        .bind(db_role)
        .bind(login)
        .bind(groups_json(groups))
        .fetch_all(&self.pool)
        .await?;
        rows(all, grant_from_row)
    }

    async fn insert_credential(&self, credential: &Credential) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO credentials (id, person_login, target_id, target_name, db_role, \
             issued_at, expires_at, revoked_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(credential.id)
        .bind(&credential.person_login)
        .bind(credential.target_id)
        .bind(&credential.target_name)
        .bind(&credential.db_role)
        .bind(ts(credential.issued_at))
        .bind(ts(credential.expires_at))
        .bind(credential.revoked_at.map(ts))
        .bind(&credential.reason)
        .execute(&self.pool)
        .await
        .map_err(|e| duplicate_or_query(e, "credential", credential.id.to_string()))?;
        Ok(())
    }

    async fn credential(&self, id: Uuid) -> StoreResult<Option<Credential>> {
        sqlx::query(concat!(
            "SELECT ",
            credential_columns!(),
            " FROM credentials WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(credential_from_row)
        .transpose()
    }

    async fn revoke_credential(&self, id: Uuid, at: DateTime<Utc>) -> StoreResult<bool> {
        // COALESCE keeps the first revocation: the audit trail must say when access really
        // ended, not when someone clicked "revoke" again.
        let done =
            sqlx::query("UPDATE credentials SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?")
                .bind(ts(at))
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_credentials(&self, person_login: Option<&str>) -> StoreResult<Vec<Credential>> {
        let query = match person_login {
            Some(login) => sqlx::query(concat!(
                "SELECT ",
                credential_columns!(),
                " FROM credentials WHERE person_login = ? ORDER BY issued_at DESC, id"
            ))
            .bind(login),
            None => sqlx::query(concat!(
                "SELECT ",
                credential_columns!(),
                " FROM credentials ORDER BY issued_at DESC, id"
            )),
        };
        rows(query.fetch_all(&self.pool).await?, credential_from_row)
    }

    async fn revoked_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM credentials WHERE revoked_at >= ? ORDER BY revoked_at, id",
        )
        .bind(ts(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn append_blocks(&self, blocks: &[EventBlock]) -> StoreResult<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        blocks::check_batch(blocks)?;
        if blocks::overlap_within(blocks) {
            return Err(self.overlapping_batch(blocks).await);
        }
        if blocks.len() <= BLOCKS_PER_INSERT {
            // One statement: atomic by itself.
            return match Self::insert_blocks(&self.pool, blocks).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(self.overlapping_batch(blocks).await),
                Err(err) => Err(self.rejected_batch(blocks, err).await),
            };
        }
        // One transaction for the whole batch: all of it is durable at the commit, or none.
        // IMMEDIATE takes the write lock at once, so no other writer adds a block between one
        // statement's overlap check and the next.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in blocks.chunks(BLOCKS_PER_INSERT) {
            let outcome = Self::insert_blocks(&mut *tx, chunk).await;
            if matches!(outcome, Ok(true)) {
                continue;
            }
            tx.rollback().await?;
            return Err(match outcome {
                Ok(_) => self.overlapping_batch(blocks).await,
                Err(err) => self.rejected_batch(blocks, err).await,
            });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn session_events(
        &self,
        session_id: Uuid,
        from_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<StoredEvent>> {
        let limit = usize::try_from(limit).unwrap_or(0);
        let mut events = Vec::new();
        let mut next = from_seq.max(0);
        while events.len() < limit {
            let wanted = (limit - events.len()) as i64;
            let rows = sqlx::query(READ_BLOCKS)
                .bind(session_id)
                .bind(next)
                .bind(next.saturating_add(wanted))
                .fetch_all(&self.pool)
                .await?;
            let mut after_gap = None;
            for row in &rows {
                match block_from_row(row)? {
                    Ok(block) => block.unpack_into(session_id, next, limit, &mut events)?,
                    Err(first_seq) => after_gap = Some(first_seq),
                }
            }
            // Short of `limit`: either the recording ends here, or blocks are missing and it
            // goes on after the gap.
            match after_gap {
                Some(first_seq) if events.len() < limit => next = first_seq,
                _ => break,
            }
        }
        Ok(events)
    }

    async fn seal_recording(&self, seal: &RecordingSeal) -> StoreResult<()> {
        sqlx::query(concat!(
            "INSERT INTO recording_seals (",
            seal_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?)"
        ))
        .bind(seal.session_id)
        .bind(seal.event_count)
        .bind(&seal.final_hash)
        .bind(&seal.signature)
        .bind(&seal.key_id)
        .bind(ts(seal.sealed_at))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound {
                    what: "session",
                    name: seal.session_id.to_string(),
                }
            } else {
                duplicate_or_query(e, "recording seal", seal.session_id.to_string())
            }
        })?;
        Ok(())
    }

    async fn recording_seal(&self, session_id: Uuid) -> StoreResult<Option<RecordingSeal>> {
        sqlx::query(concat!(
            "SELECT ",
            seal_columns!(),
            " FROM recording_seals WHERE session_id = ?"
        ))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(seal_from_row)
        .transpose()
    }

    async fn insert_session(&self, session: &NewSession) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO sessions (id, person_login, target_id, target_name, db_role, \
             credential_id, client_addr, application_name, tls_version, started_at, recording, \
             groups) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(session.id)
        .bind(&session.person_login)
        .bind(session.target_id)
        .bind(&session.target_name)
        .bind(&session.db_role)
        .bind(session.credential_id)
        .bind(&session.client_addr)
        .bind(&session.application_name)
        .bind(&session.tls_version)
        .bind(ts(session.started_at))
        .bind(session.recording.as_str())
        .bind(groups_json(&session.groups))
        .execute(&self.pool)
        .await
        .map_err(|e| duplicate_or_query(e, "session", session.id.to_string()))?;
        Ok(())
    }

    async fn end_session(&self, id: Uuid, end: &SessionEnd) -> StoreResult<()> {
        // Ending twice (say, revocation and then the relay noticing the closed socket) keeps
        // the first time, reason and detail; the byte counters only grow. Right-hand sides see
        // the row as it was before this UPDATE.
        let done = sqlx::query(
            "UPDATE sessions SET \
             ended_at = COALESCE(ended_at, ?), \
             end_reason = COALESCE(end_reason, ?), \
             end_detail = CASE WHEN ended_at IS NULL THEN ? ELSE end_detail END, \
             bytes_client_to_server = MAX(bytes_client_to_server, ?), \
             bytes_server_to_client = MAX(bytes_server_to_client, ?) \
             WHERE id = ?",
        )
        .bind(ts(end.ended_at))
        .bind(end.reason.as_str())
        .bind(&end.detail)
        .bind(end.bytes_client_to_server)
        .bind(end.bytes_server_to_client)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "session",
                name: id.to_string(),
            });
        }
        Ok(())
    }

    async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn list_sessions(&self, limit: i64) -> StoreResult<Vec<Session>> {
        // SQLite reads a negative LIMIT as "no limit"; the trait means "at most".
        let all = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions ORDER BY started_at DESC, id DESC LIMIT ?"
        ))
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows(all, session_from_row)
    }

    async fn find_sessions(
        &self,
        filter: &SessionFilter,
        page: &SessionPage,
    ) -> StoreResult<Vec<SessionSummary>> {
        // The event count is the newest seq + 1 (seqs have no gaps), the end of the block
        // starting last: one step down the primary key (session_id, first_seq), however long
        // the recording.
        let mut query = QueryBuilder::<Sqlite>::new(concat!(
            "SELECT ",
            session_columns!(),
            ", COALESCE((SELECT b.last_seq + 1 FROM recording_blocks b \
             WHERE b.session_id = s.id ORDER BY b.first_seq DESC LIMIT 1), 0) AS event_count, \
             EXISTS (SELECT 1 FROM recording_seals r WHERE r.session_id = s.id) AS sealed \
             FROM sessions s WHERE 1 = 1"
        ));
        if let Some(person) = &filter.person {
            query
                .push(" AND s.person_login = ")
                .push_bind(person.clone());
        }
        if let Some(target) = &filter.target {
            query
                .push(" AND s.target_name = ")
                .push_bind(target.clone());
        }
        if let Some(after) = filter.started_after {
            query.push(" AND s.started_at >= ").push_bind(ts(after));
        }
        if let Some(before) = filter.started_before {
            query.push(" AND s.started_at < ").push_bind(ts(before));
        }
        if let Some(status) = filter.status {
            query.push(session_status_condition(status));
        }
        if let Some(group) = &filter.group {
            // The group's sessions come from session_groups' primary key (migration 0008),
            // never from reading every session's JSON.
            query
                .push(
                    " AND s.id IN (SELECT g.session_id FROM session_groups g WHERE g.group_name = ",
                )
                .push_bind(group.clone())
                .push(")");
        }
        if let Some((started_at, id)) = page.before {
            query
                .push(" AND (s.started_at, s.id) < (")
                .push_bind(ts(started_at))
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        query
            .push(" ORDER BY s.started_at DESC, s.id DESC LIMIT ")
            .push_bind(page.limit.max(0));
        let all = query.build().fetch_all(&self.pool).await?;
        all.iter()
            .map(|row| {
                Ok(SessionSummary {
                    session: session_from_row(row)?,
                    event_count: row.try_get("event_count")?,
                    sealed: row.try_get("sealed")?,
                })
            })
            .collect()
    }

    async fn request_termination(
        &self,
        session_id: Uuid,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<TerminationOutcome> {
        check_termination(by, reason)?;
        // Only a live session gets a request; the first request stays (ON CONFLICT).
        let done = sqlx::query(
            "INSERT INTO session_terminations (session_id, requested_by, reason, requested_at) \
             SELECT id, ?, ?, ? FROM sessions WHERE id = ? AND ended_at IS NULL \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(by)
        .bind(reason)
        .bind(ts(at))
        .bind(session_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(TerminationOutcome::Requested);
        }
        let row = sqlx::query(concat!(
            "SELECT s.ended_at IS NOT NULL AS ended, t.session_id AS requested, ",
            "t.requested_by, t.reason, t.requested_at ",
            "FROM sessions s LEFT JOIN session_terminations t ON t.session_id = s.id ",
            "WHERE s.id = ?"
        ))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(TerminationOutcome::NotFound);
        };
        let earlier = match row.try_get::<Option<Uuid>, _>("requested")? {
            Some(session_id) => Some(Termination {
                session_id,
                requested_by: row.try_get("requested_by")?,
                reason: row.try_get("reason")?,
                requested_at: row.try_get("requested_at")?,
            }),
            None => None,
        };
        Ok(termination_outcome(row.try_get("ended")?, earlier))
    }

    async fn terminations_since(&self, since: DateTime<Utc>) -> StoreResult<Vec<Termination>> {
        let all = sqlx::query(concat!(
            "SELECT ",
            termination_columns!(),
            " FROM session_terminations WHERE requested_at >= ? \
             ORDER BY requested_at, session_id"
        ))
        .bind(ts(since))
        .fetch_all(&self.pool)
        .await?;
        rows(all, termination_from_row)
    }

    async fn purge_sessions(
        &self,
        target_id: Uuid,
        ended_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let cut = ts(ended_before);
        let mut purged = 0;
        loop {
            let batch: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM sessions WHERE target_id = ? AND ended_at IS NOT NULL \
                 AND ended_at < ? ORDER BY ended_at LIMIT ?",
            )
            .bind(target_id)
            .bind(&cut)
            .bind(PURGE_BATCH)
            .fetch_all(&self.pool)
            .await?;
            for &id in &batch {
                purged += self.purge_session(id, &cut).await?;
            }
            if (batch.len() as i64) < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    async fn register_key(
        &self,
        key: &KeyRegistration,
        replace: bool,
    ) -> StoreResult<KeyRegistration> {
        let write = if replace {
            "INSERT INTO shared_keys (purpose, fingerprint, registered_by, registered_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (purpose) DO UPDATE SET \
             fingerprint = excluded.fingerprint, registered_by = excluded.registered_by, \
             registered_at = excluded.registered_at"
        } else {
            "INSERT INTO shared_keys (purpose, fingerprint, registered_by, registered_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (purpose) DO NOTHING"
        };
        sqlx::query(write)
            .bind(&key.purpose)
            .bind(&key.fingerprint)
            .bind(&key.registered_by)
            .bind(ts(key.registered_at))
            .execute(&self.pool)
            .await?;
        let row = sqlx::query(
            "SELECT purpose, fingerprint, registered_by, registered_at FROM shared_keys \
             WHERE purpose = ?",
        )
        .bind(&key.purpose)
        .fetch_one(&self.pool)
        .await?;
        Ok(KeyRegistration {
            purpose: row.try_get("purpose")?,
            fingerprint: row.try_get("fingerprint")?,
            registered_by: row.try_get("registered_by")?,
            registered_at: row.try_get("registered_at")?,
        })
    }
}

impl SqliteStore {
    /// Deletes one ended session: its indexed statements first, a chunk at a time (derived
    /// data: if the purge stops half-way the session is still whole where it matters, its
    /// recording), then the session row, which takes its recording, seal, counts, termination
    /// request and groups with it (ON DELETE CASCADE) in one statement. Returns 1 if it went.
    async fn purge_session(&self, id: Uuid, cut: &str) -> StoreResult<u64> {
        loop {
            let done = sqlx::query(
                "DELETE FROM recorded_statements WHERE id IN (SELECT id FROM \
                 recorded_statements WHERE session_id = ? LIMIT ?)",
            )
            .bind(id)
            .bind(PURGE_STATEMENTS_CHUNK)
            .execute(&self.pool)
            .await?;
            tokio::time::sleep(PURGE_PAUSE).await;
            if (done.rows_affected() as i64) < PURGE_STATEMENTS_CHUNK {
                break;
            }
        }
        // Checked again: the row is only ever deleted ended and older than the cut.
        let done = sqlx::query(
            "DELETE FROM sessions WHERE id = ? AND ended_at IS NOT NULL AND ended_at < ?",
        )
        .bind(id)
        .bind(cut)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn stored_timestamps_have_six_digits_whatever_the_precision() {
        let second = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        for nanos in [0, 1, 999, 1_000, 120_000_000, 999_999_999] {
            let t = second + chrono::Duration::nanoseconds(nanos);
            assert_eq!(ts(t), t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        }
        assert_eq!(ts(second), "2026-01-02T03:04:05.000000Z");
    }

    #[tokio::test]
    async fn a_new_database_has_16_kib_pages_in_wal_mode_and_an_old_one_keeps_its_pages() {
        let dir = tempfile::tempdir().unwrap();
        let pragmas = |url: String| async move {
            let store = SqliteStore::open(&url).await.unwrap();
            let page: i64 = sqlx::query_scalar("PRAGMA page_size")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(&store.pool)
                .await
                .unwrap();
            store.pool.close().await;
            (page, mode)
        };
        let new = format!("sqlite://{}", dir.path().join("new.db").display());
        assert_eq!(pragmas(new.clone()).await, (16384, "wal".to_string()));
        assert_eq!(pragmas(new).await, (16384, "wal".to_string()), "reopened");

        // A store made before 16 KiB pages: reopened as it is, its data intact.
        let old = dir.path().join("old.db");
        {
            let options = SqliteConnectOptions::new()
                .filename(&old)
                .create_if_missing(true)
                .page_size(4096)
                .journal_mode(SqliteJournalMode::Wal);
            let pool = SqlitePool::connect_with(options).await.unwrap();
            sqlx::query("CREATE TABLE kept (x INTEGER)")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let (page, mode) = pragmas(format!("sqlite://{}", old.display())).await;
        assert_eq!((page, mode.as_str()), (4096, "wal"));
    }
}
