//! The PostgreSQL engine, for production and for several gateways sharing one store.
//!
//! Sharing is safe because every operation is one statement whose effect does not depend on
//! what the process read before (upserts with ON CONFLICT, COALESCE for first-wins columns,
//! constraints for uniqueness), and because sqlx serialises concurrent migrations with a
//! PostgreSQL advisory lock taken before it even creates its bookkeeping table.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
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

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Connections per gateway process; the store is touched at connection set-up, by the console
/// and by the recording writer, which commits events in batches rather than per relayed
/// message, so a few are plenty.
const MAX_CONNECTIONS: u32 = 8;

/// How long an operation waits for a free connection before failing (instead of hanging the
/// client's login when the store is down).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions deleted per statement while purging: each statement is its own transaction, so
/// none holds many rows locked or writes a huge amount of WAL at once.
const PURGE_BATCH: i64 = 100;

/// Blocks per INSERT statement at most (the statement binds one array per column, whatever the
/// number of blocks). Bounds the size of one statement: a block holds up to 1 MiB of bodies.
const BLOCKS_PER_INSERT: usize = 64;

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

macro_rules! seal_columns {
    () => {
        "session_id, event_count, final_hash, signature, key_id, sealed_at"
    };
}

/// The store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://USER@HOST:PORT/DB`) and runs the migrations. Safe to call
    /// from several processes at once on the same database.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let pool = Self::connect(url).await?;
        MIGRATOR.run(&pool).await?;
        warn_if_commits_can_be_lost(&pool).await;
        Ok(Self { pool })
    }

    /// Like [`PgStore::open`], running the migrations up to `version` only: for tests of how a
    /// later migration treats the data already there. Not for use with the gateway, whose
    /// queries expect the latest schema.
    #[doc(hidden)]
    pub async fn open_at_migration(url: &str, version: i64) -> StoreResult<Self> {
        let pool = Self::connect(url).await?;
        MIGRATOR.run_to(version, &pool).await?;
        Ok(Self { pool })
    }

    async fn connect(url: &str) -> StoreResult<PgPool> {
        let options =
            PgConnectOptions::from_str(url).map_err(|_| StoreError::BadUrl(url.to_string()))?;
        PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(StoreError::Connect)
    }
}

/// Strict recording promises that an event the client was answered for is stored; with
/// `synchronous_commit = off` the server acknowledges commits before they are durable, so a
/// crash of the store's server can lose the last ones. Said once, at open; a store that cannot
/// say is not refused for it.
async fn warn_if_commits_can_be_lost(pool: &PgPool) {
    match sqlx::query_scalar::<_, String>("SHOW synchronous_commit")
        .fetch_one(pool)
        .await
    {
        Ok(setting) if setting == "off" => tracing::warn!(
            "the store's PostgreSQL runs with synchronous_commit = off: a crash of its server can \
             lose the last commits, so strict recording's promise that nothing acknowledged is \
             lost does not hold; set synchronous_commit to on (or local, remote_write, \
             remote_apply) for the store's database or role"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the store's synchronous_commit"),
    }
}

fn person_from_row(row: &PgRow) -> StoreResult<Person> {
    Ok(Person {
        id: row.try_get("id")?,
        login: row.try_get("login")?,
        display_name: row.try_get("display_name")?,
        email: row.try_get("email")?,
        groups: row.try_get("groups")?,
        created_at: row.try_get("created_at")?,
    })
}

fn target_from_row(row: &PgRow) -> StoreResult<Target> {
    Ok(Target {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        host: row.try_get("host")?,
        port: decode_port(i64::from(row.try_get::<i32, _>("port")?))?,
        database: row.try_get("database")?,
        tls_mode: decode_tls_mode(row.try_get("tls_mode")?)?,
        ca_pem: row.try_get("ca_pem")?,
        upstream_user: row.try_get("upstream_user")?,
        upstream_secret_sealed: row.try_get("upstream_secret_sealed")?,
        recording: decode_recording("targets.recording", row.try_get("recording")?)?,
        record_max_rows: row.try_get("record_max_rows")?,
        record_max_result_bytes: row.try_get("record_max_result_bytes")?,
        retention_days: decode_retention(
            row.try_get::<Option<i32>, _>("retention_days")?
                .map(i64::from),
        )?,
        enabled: row.try_get("enabled")?,
        created_at: row.try_get("created_at")?,
    })
}

fn target_login_from_row(row: &PgRow) -> StoreResult<TargetLogin> {
    Ok(TargetLogin {
        target_id: row.try_get("target_id")?,
        role: row.try_get("role")?,
        secret_sealed: row.try_get("secret_sealed")?,
        created_at: row.try_get("created_at")?,
    })
}

fn grant_from_row(row: &PgRow) -> StoreResult<Grant> {
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

fn credential_from_row(row: &PgRow) -> StoreResult<Credential> {
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

fn session_from_row(row: &PgRow) -> StoreResult<Session> {
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
        groups: row.try_get("groups")?,
    })
}

fn termination_from_row(row: &PgRow) -> StoreResult<Termination> {
    Ok(Termination {
        session_id: row.try_get("session_id")?,
        requested_by: row.try_get("requested_by")?,
        reason: row.try_get("reason")?,
        requested_at: row.try_get("requested_at")?,
    })
}

/// A row of [`READ_BLOCKS`]: a block, or (`probe`) only where the next one starts.
fn block_from_row(row: &PgRow) -> StoreResult<Result<StoredBlock, i64>> {
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

fn seal_from_row(row: &PgRow) -> StoreResult<RecordingSeal> {
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
    rows: Vec<PgRow>,
    decode: fn(&PgRow) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    rows.iter().map(decode).collect()
}

// --- Recording blocks (see `blocks` and migrations/postgres/0005_recording_blocks.sql) ---
//
// Blocks of a session never overlap, so the block holding a seq is the one starting last at or
// before it: one step down the primary key (session_id, first_seq), found by `ORDER BY first_seq
// DESC LIMIT 1`. The queries below build on that.

/// Locks the rows of the sessions a batch adds blocks to, in one order (no deadlock between
/// two batches), until the transaction ends: a second gateway appending to the same session
/// waits, and then sees the blocks of the first in its overlap check.
const LOCK_SESSIONS: &str =
    "SELECT 1 FROM sessions WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

/// Adds the blocks given as one array per column, unless one of them overlaps a stored block
/// of its session (then none: the caller compares the rows inserted with the blocks given).
/// One statement whatever the number of blocks, so PostgreSQL plans it once.
const INSERT_BLOCKS: &str = "INSERT INTO recording_blocks (session_id, first_seq, last_seq, \
     first_at, last_at, kinds, body, ats, prev_hash, hashes) \
     SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::timestamptz[], \
       $5::timestamptz[], $6::text[], $7::text[], $8::bytea[], $9::bytea[], $10::bytea[]) \
     WHERE NOT EXISTS ( \
       SELECT 1 FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[]) \
         AS b (session_id, first_seq, last_seq) \
       CROSS JOIN LATERAL (SELECT r.last_seq FROM recording_blocks r \
         WHERE r.session_id = b.session_id AND r.first_seq <= b.last_seq \
         ORDER BY r.first_seq DESC LIMIT 1) AS prior \
       WHERE prior.last_seq >= b.first_seq)";

/// The blocks of session `$1` holding events from seq `$2` on and starting before seq `$3`, in
/// order, then (`probe`, without its content) the first block starting at or after `$3`: with no
/// gaps, those blocks hold the events `$2 .. $3`, and the probe says whether, and where, the
/// recording goes on after a gap.
const READ_BLOCKS: &str = "(SELECT false AS probe, first_seq, last_seq, kinds, body, ats, \
     prev_hash, hashes FROM recording_blocks \
     WHERE session_id = $1 AND first_seq < $3 AND last_seq >= $2 AND first_seq >= COALESCE(\
       (SELECT first_seq FROM recording_blocks WHERE session_id = $1 AND first_seq <= $2 \
        ORDER BY first_seq DESC LIMIT 1), $2)) \
     UNION ALL \
     (SELECT true, first_seq, last_seq, NULL, NULL, NULL, NULL, NULL \
       FROM recording_blocks WHERE session_id = $1 AND first_seq >= $3 \
       ORDER BY first_seq LIMIT 1) \
     ORDER BY first_seq";

/// The seq ranges of the blocks of session `$1` holding any seq from `$2` to `$3`.
const STORED_RANGES: &str = "SELECT first_seq, last_seq FROM recording_blocks \
     WHERE session_id = $1 AND first_seq <= $3 AND last_seq >= $2 AND first_seq >= COALESCE(\
       (SELECT first_seq FROM recording_blocks WHERE session_id = $1 AND first_seq <= $2 \
        ORDER BY first_seq DESC LIMIT 1), $2)";

/// What [`PgStore::insert_blocks`] found.
enum Inserted {
    All,
    /// Nothing of the batch: a block overlaps a stored one.
    Overlap,
}

impl PgStore {
    async fn insert_blocks(
        tx: &mut sqlx::PgConnection,
        blocks: &[EventBlock],
    ) -> Result<Inserted, sqlx::Error> {
        let mut ids: Vec<Uuid> = blocks.iter().map(|b| b.session_id).collect();
        ids.sort_unstable();
        ids.dedup();
        sqlx::query(LOCK_SESSIONS)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        for chunk in blocks.chunks(BLOCKS_PER_INSERT) {
            let column = |f: fn(&EventBlock) -> i64| chunk.iter().map(f).collect::<Vec<_>>();
            let done = sqlx::query(INSERT_BLOCKS)
                .bind(chunk.iter().map(|b| b.session_id).collect::<Vec<_>>())
                .bind(column(|b| b.first_seq))
                .bind(column(|b| b.last_seq))
                .bind(chunk.iter().map(|b| b.first_at).collect::<Vec<_>>())
                .bind(chunk.iter().map(|b| b.last_at).collect::<Vec<_>>())
                .bind(chunk.iter().map(|b| b.kinds.as_str()).collect::<Vec<_>>())
                .bind(chunk.iter().map(|b| b.body.as_str()).collect::<Vec<_>>())
                .bind(chunk.iter().map(|b| b.ats.as_slice()).collect::<Vec<_>>())
                .bind(chunk.iter().map(|b| &b.prev_hash[..]).collect::<Vec<_>>())
                .bind(
                    chunk
                        .iter()
                        .map(|b| b.hashes.as_slice())
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *tx)
                .await?;
            // Blocks of one batch do not overlap each other (checked before), so a chunk is
            // stored whole or, overlapping a stored block, not at all.
            if done.rows_affected() != chunk.len() as u64 {
                return Ok(Inserted::Overlap);
            }
        }
        Ok(Inserted::All)
    }
}

/// Error paths of `append_blocks`. A failed batch is rolled back whole; these look at what is
/// stored to name the event or session that made it fail (as the SQLite engine does, rather
/// than parsing the server's message, whose wording depends on its language). They cost
/// queries only when a batch fails.
impl PgStore {
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
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1)")
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
impl Store for PgStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn upsert_person(
        &self,
        login: &str,
        display_name: Option<&str>,
        email: Option<&str>,
        groups: &[String],
    ) -> StoreResult<Person> {
        // One statement, so two gateways logging in the same new person cannot both insert.
        let row = sqlx::query(concat!(
            "INSERT INTO people (id, login, display_name, email, groups, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (login) DO UPDATE SET display_name = excluded.display_name, \
             email = excluded.email, groups = excluded.groups \
             RETURNING ",
            person_columns!()
        ))
        .bind(Uuid::new_v4())
        .bind(login)
        .bind(display_name)
        .bind(email)
        .bind(groups)
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        person_from_row(&row)
    }

    async fn person_by_login(&self, login: &str) -> StoreResult<Option<Person>> {
        sqlx::query(concat!(
            "SELECT ",
            person_columns!(),
            " FROM people WHERE login = $1"
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, true, $13) RETURNING ",
            target_columns!()
        ))
        .bind(Uuid::new_v4())
        .bind(&target.name)
        .bind(&target.host)
        .bind(i32::from(target.port))
        .bind(&target.database)
        .bind(target.tls_mode.as_str())
        .bind(&target.ca_pem)
        .bind(&target.upstream_user)
        .bind(&target.upstream_secret_sealed)
        .bind(target.recording.as_str())
        .bind(target.record_max_rows)
        .bind(target.record_max_result_bytes)
        .bind(now())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| duplicate_or_query(e, "target", &target.name))?;
        target_from_row(&row)
    }

    async fn target_by_name(&self, name: &str) -> StoreResult<Option<Target>> {
        sqlx::query(concat!(
            "SELECT ",
            target_columns!(),
            " FROM targets WHERE name = $1"
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
            " FROM targets WHERE id = $1"
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
        let done = sqlx::query("DELETE FROM targets WHERE name = $1")
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
            "UPDATE targets SET recording = $2, record_max_rows = $3, \
             record_max_result_bytes = $4 WHERE name = $1 RETURNING ",
            target_columns!()
        ))
        .bind(name)
        .bind(recording.as_str())
        .bind(max_rows)
        .bind(max_result_bytes)
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
            "UPDATE targets SET retention_days = $1 WHERE name = $2 RETURNING ",
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
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (target_id, role) DO UPDATE SET \
             secret_sealed = excluded.secret_sealed, created_at = excluded.created_at",
        )
        .bind(login.target_id)
        .bind(&login.role)
        .bind(&login.secret_sealed)
        .bind(login.created_at)
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
            " FROM target_logins WHERE target_id = $1 AND role = $2"
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
        // Byte order (COLLATE "C"), as SQLite sorts: the same list whatever the database's
        // locale.
        let all = sqlx::query(concat!(
            "SELECT ",
            target_login_columns!(),
            " FROM target_logins WHERE target_id = $1 ORDER BY role COLLATE \"C\""
        ))
        .bind(target_id)
        .fetch_all(&self.pool)
        .await?;
        rows(all, target_login_from_row)
    }

    async fn remove_target_login(&self, target_id: Uuid, role: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM target_logins WHERE target_id = $1 AND role = $2")
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
             max_lifetime_secs, created_at, requires_approval) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(created.id)
        .bind(created.subject.kind())
        .bind(created.subject.name())
        .bind(created.target_id)
        .bind(&created.db_role)
        .bind(created.max_lifetime_secs)
        .bind(created.created_at)
        .bind(created.requires_approval)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            // Another gateway may have removed the target since we looked it up.
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
                "WHERE g.target_id = $1 \
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
        let done = sqlx::query("DELETE FROM grants WHERE id = $1")
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
        let all = sqlx::query(concat!(
            grant_select!(),
            "WHERE g.target_id = $1 AND g.db_role = $2 \
             AND ((g.subject_kind = 'person' AND g.subject_name = $3) \
               OR (g.subject_kind = 'group' AND g.subject_name = ANY($4))) \
             ORDER BY g.subject_kind DESC, g.subject_name"
        ))
        .bind(target_id)
        .bind(db_role)
        .bind(login)
        .bind(groups)
        .fetch_all(&self.pool)
        .await?;
        rows(all, grant_from_row)
    }

    async fn insert_credential(&self, credential: &Credential) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO credentials (id, person_login, target_id, target_name, db_role, \
             issued_at, expires_at, revoked_at, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(credential.id)
        .bind(&credential.person_login)
        .bind(credential.target_id)
        .bind(&credential.target_name)
        .bind(&credential.db_role)
        .bind(credential.issued_at)
        .bind(credential.expires_at)
        .bind(credential.revoked_at)
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
            " FROM credentials WHERE id = $1"
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
        // ended, not when someone clicked "revoke" again. The row lock makes it first-wins
        // across gateways too.
        let done = sqlx::query(
            "UPDATE credentials SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_credentials(&self, person_login: Option<&str>) -> StoreResult<Vec<Credential>> {
        let query = match person_login {
            Some(login) => sqlx::query(concat!(
                "SELECT ",
                credential_columns!(),
                " FROM credentials WHERE person_login = $1 ORDER BY issued_at DESC, id"
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
            "SELECT id FROM credentials WHERE revoked_at >= $1 ORDER BY revoked_at, id",
        )
        .bind(since)
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
        // One transaction for the whole batch: all of it is durable at the commit, or none.
        let mut tx = self.pool.begin().await?;
        match Self::insert_blocks(&mut tx, blocks).await {
            Ok(Inserted::All) => {}
            Ok(Inserted::Overlap) => {
                tx.rollback().await?;
                return Err(self.overlapping_batch(blocks).await);
            }
            Err(err) => {
                tx.rollback().await?;
                return Err(self.rejected_batch(blocks, err).await);
            }
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
            ") VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(seal.session_id)
        .bind(seal.event_count)
        .bind(&seal.final_hash)
        .bind(&seal.signature)
        .bind(&seal.key_id)
        .bind(seal.sealed_at)
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
            " FROM recording_seals WHERE session_id = $1"
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
             groups) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
        .bind(session.started_at)
        .bind(session.recording.as_str())
        .bind(&session.groups)
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
             ended_at = COALESCE(ended_at, $2), \
             end_reason = COALESCE(end_reason, $3), \
             end_detail = CASE WHEN ended_at IS NULL THEN $4 ELSE end_detail END, \
             bytes_client_to_server = GREATEST(bytes_client_to_server, $5), \
             bytes_server_to_client = GREATEST(bytes_server_to_client, $6) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(end.ended_at)
        .bind(end.reason.as_str())
        .bind(&end.detail)
        .bind(end.bytes_client_to_server)
        .bind(end.bytes_server_to_client)
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
            " FROM sessions WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn list_sessions(&self, limit: i64) -> StoreResult<Vec<Session>> {
        // PostgreSQL refuses a negative LIMIT; the trait means "at most", so none is zero.
        let all = sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions ORDER BY started_at DESC, id DESC LIMIT $1"
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
        let mut query = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            session_columns!(),
            ", COALESCE((SELECT b.last_seq + 1 FROM recording_blocks b \
             WHERE b.session_id = s.id ORDER BY b.first_seq DESC LIMIT 1), 0) AS event_count, \
             EXISTS (SELECT 1 FROM recording_seals r WHERE r.session_id = s.id) AS sealed \
             FROM sessions s WHERE true"
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
            query.push(" AND s.started_at >= ").push_bind(after);
        }
        if let Some(before) = filter.started_before {
            query.push(" AND s.started_at < ").push_bind(before);
        }
        if let Some(status) = filter.status {
            query.push(session_status_condition(status));
        }
        if let Some(group) = &filter.group {
            // Containment, which the GIN index on groups answers (migration 0008).
            query
                .push(" AND s.groups @> ")
                .push_bind(vec![group.clone()]);
        }
        if let Some((started_at, id)) = page.before {
            // A row comparison, which PostgreSQL matches against the (started_at, id) indexes.
            query
                .push(" AND (s.started_at, s.id) < (")
                .push_bind(started_at)
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
             SELECT id, $2, $3, $4 FROM sessions WHERE id = $1 AND ended_at IS NULL \
             ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(session_id)
        .bind(by)
        .bind(reason)
        .bind(at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(TerminationOutcome::Requested);
        }
        let row = sqlx::query(concat!(
            "SELECT s.ended_at IS NOT NULL AS ended, t.session_id AS requested, ",
            "t.requested_by, t.reason, t.requested_at ",
            "FROM sessions s LEFT JOIN session_terminations t ON t.session_id = s.id ",
            "WHERE s.id = $1"
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
            " FROM session_terminations WHERE requested_at >= $1 \
             ORDER BY requested_at, session_id"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows(all, termination_from_row)
    }

    async fn purge_sessions(
        &self,
        target_id: Uuid,
        ended_before: DateTime<Utc>,
    ) -> StoreResult<u64> {
        // Each statement deletes a batch of sessions with all that hangs off them (ON DELETE
        // CASCADE: recording blocks, seal, indexed statements, counts, termination request).
        let mut purged = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions \
                 WHERE target_id = $1 AND ended_at IS NOT NULL AND ended_at < $2 \
                 ORDER BY ended_at LIMIT $3)",
            )
            .bind(target_id)
            .bind(ended_before)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await?;
            purged += done.rows_affected();
            if (done.rows_affected() as i64) < PURGE_BATCH {
                return Ok(purged);
            }
        }
    }

    async fn register_key(
        &self,
        key: &KeyRegistration,
        replace: bool,
    ) -> StoreResult<KeyRegistration> {
        // One statement each way: two processes starting at once cannot both win.
        let write = if replace {
            "INSERT INTO shared_keys (purpose, fingerprint, registered_by, registered_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (purpose) DO UPDATE SET \
             fingerprint = EXCLUDED.fingerprint, registered_by = EXCLUDED.registered_by, \
             registered_at = EXCLUDED.registered_at"
        } else {
            "INSERT INTO shared_keys (purpose, fingerprint, registered_by, registered_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (purpose) DO NOTHING"
        };
        sqlx::query(write)
            .bind(&key.purpose)
            .bind(&key.fingerprint)
            .bind(&key.registered_by)
            .bind(key.registered_at)
            .execute(&self.pool)
            .await?;
        let row = sqlx::query(
            "SELECT purpose, fingerprint, registered_by, registered_at FROM shared_keys \
             WHERE purpose = $1",
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
