//! The store on both engines, for suites written once and proved against each: a SQLite file in
//! a temporary directory, or a database in a throwaway PostgreSQL cluster, and raw SQL on the
//! database behind the store's back (as someone with write access to it could).
//!
//! `on_both_engines!(check, ...; with_raw_sql: raw_check, ...)` turns each
//! `async fn check(Arc<dyn Store>) -> Result<()>` (and each
//! `async fn raw_check(&StoreEngine) -> Result<()>`) into the tests `sqlite::check` and
//! `postgres::check`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use gateway::store::Store;
use gateway::store::postgres::PgStore;
use gateway::store::sqlite::SqliteStore;
use tempfile::TempDir;
use uuid::Uuid;

use crate::PgCluster;

/// The database name of the PostgreSQL engine's store.
pub const PG_DB: &str = "store";

/// A store and what must outlive it. Fields drop in order: the store's pool before the
/// directory or cluster it uses.
pub struct StoreEngine {
    pub store: Arc<dyn Store>,
    dir: Option<TempDir>,
    cluster: Option<PgCluster>,
}

impl StoreEngine {
    pub async fn sqlite() -> Result<StoreEngine> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&sqlite_url(dir.path())).await?;
        Ok(StoreEngine {
            store: Arc::new(store),
            dir: Some(dir),
            cluster: None,
        })
    }

    pub async fn postgres() -> Result<StoreEngine> {
        let cluster = PgCluster::start()?;
        cluster.create_database(PG_DB)?;
        let store = PgStore::open(&cluster.superuser_url(PG_DB))
            .await
            .with_context(|| format!("server log:\n{}", cluster.log()))?;
        Ok(StoreEngine {
            store: Arc::new(store),
            dir: None,
            cluster: Some(cluster),
        })
    }

    /// SQL on the store's database directly.
    pub fn raw(&self) -> RawSql<'_> {
        match (&self.cluster, &self.dir) {
            (Some(cluster), _) => RawSql::Postgres(cluster),
            (None, Some(dir)) => RawSql::Sqlite(dir.path().join("store.db")),
            (None, None) => unreachable!("an engine has a directory or a cluster"),
        }
    }
}

/// The URL of a SQLite store file in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("store.db").display())
}

/// SQL run on a store's database directly, not through the store: psql for PostgreSQL, Python's
/// sqlite3 module for SQLite (the tests crate has no SQL driver of its own; scripts/setup
/// installs Python).
pub enum RawSql<'c> {
    Sqlite(PathBuf),
    Postgres(&'c PgCluster),
}

impl RawSql<'_> {
    /// Runs the statements in order, each committed; returns the rows they return as lines of
    /// `|`-separated values. A statement the database refuses fails with its message.
    pub fn run(&self, statements: &[&str]) -> Result<Vec<String>> {
        let out = match self {
            RawSql::Postgres(cluster) => {
                cluster.psql(PG_DB, &format!("{};", statements.join(";\n")))?
            }
            RawSql::Sqlite(path) => {
                const SCRIPT: &str = "import sqlite3, sys\n\
                    db = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)\n\
                    for sql in sys.argv[2:]:\n    \
                        for row in db.execute(sql):\n        \
                            print('|'.join('' if v is None else str(v) for v in row))\n";
                let out = std::process::Command::new("python3")
                    .arg("-c")
                    .arg(SCRIPT)
                    .arg(path)
                    .args(statements)
                    .output()
                    .context("cannot run python3 (scripts/setup installs it)")?;
                if !out.status.success() {
                    bail!(
                        "SQL on {} failed: {}\nSQL: {statements:?}",
                        path.display(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                String::from_utf8(out.stdout)?
            }
        };
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// A uuid as a literal of this engine (SQLite stores it as a 16-byte blob).
    pub fn uuid(&self, id: Uuid) -> String {
        match self {
            RawSql::Sqlite(_) => format!("x'{}'", id.simple()),
            RawSql::Postgres(_) => format!("'{id}'::uuid"),
        }
    }

    /// Bytes as a literal of this engine.
    pub fn bytes(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            RawSql::Sqlite(_) => format!("x'{hex}'"),
            RawSql::Postgres(_) => format!("'\\x{hex}'::bytea"),
        }
    }
}

/// See the module's documentation. The tests run on a multi-threaded runtime, so that checks
/// racing two calls really run them at once.
#[macro_export]
macro_rules! on_both_engines {
    ($($check:ident),* $(,)?) => {
        $crate::on_both_engines!($($check),*; with_raw_sql:);
    };
    ($($check:ident),* $(,)?; with_raw_sql: $($raw_check:ident),* $(,)?) => {
        mod sqlite {
            $crate::on_both_engines!(@engine sqlite; $($check),*; $($raw_check),*);
        }
        mod postgres {
            $crate::on_both_engines!(@engine postgres; $($check),*; $($raw_check),*);
        }
    };
    (@engine $engine:ident; $($check:ident),*; $($raw_check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() -> anyhow::Result<()> {
                let engine = $crate::store_engine::StoreEngine::$engine().await?;
                super::$check(engine.store.clone()).await
            }
        )*
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $raw_check() -> anyhow::Result<()> {
                super::$raw_check(&$crate::store_engine::StoreEngine::$engine().await?).await
            }
        )*
    };
}
