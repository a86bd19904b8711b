//! The console's own database: one [`Store`] trait, two engines.
//!
//! SQLite (embedded, the default) lives in [`sqlite`]; PostgreSQL (production, and several gateways
//! sharing one store) in [`postgres`]. Both use native column types and their own migration folder
//! (`migrations/sqlite`, `migrations/postgres`), run on open. One test suite
//! (`tests/tests/store.rs`) runs against both.

pub mod models;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use models::*;

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
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything pgbastion keeps. Implementations must be safe to share between tasks and between
/// several gateway processes (PostgreSQL engine).
#[async_trait]
pub trait Store: Send + Sync + 'static {
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
    /// Appends a batch of events (of one or several sessions) in one transaction: all or none.
    /// A `(session_id, seq)` that already exists fails the whole batch with `Duplicate`.
    async fn append_events(&self, batch: &[StoredEvent]) -> StoreResult<()>;
    /// Events of a session with `seq >= from_seq`, in order, at most `limit`.
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
