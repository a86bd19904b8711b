//! A lab: one PostgreSQL cluster, one `pgbastion serve` in front of it, and one person, `alice`
//! (group `dev`), with helpers to add targets, grant them and connect as alice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway::store::{RecordingSeal, Session, Store, StoredEvent};
use serde_json::Value;

use crate::clients::{psql_with_env, tls_config, tokio_postgres_connect_with};
use crate::pg::{self, PgCluster};
use crate::{Bastion, ChildGuard};

/// The database a store cluster made by [`Lab::start_with_pg_store`] keeps pgbastion's data in.
pub const PG_STORE_DB: &str = "pgbastion";

pub struct Lab {
    pub pg: PgCluster,
    pub bastion: Bastion,
    pub gateway: ChildGuard,
}

/// A credential as `token issue --format json` prints it.
pub struct Issued {
    pub token: String,
    pub credential_id: String,
    pub json: Value,
}

impl Lab {
    /// Starts a cluster and a gateway; `env` adds settings (`PGBASTION_*`) to the bastion's own.
    pub fn start(env: &[(&str, &str)]) -> anyhow::Result<Lab> {
        Lab::start_with(PgCluster::start()?, env)
    }

    /// Like [`Lab::start`] with a cluster the test configured itself.
    pub fn start_with(pg: PgCluster, env: &[(&str, &str)]) -> anyhow::Result<Lab> {
        Lab::start_with_bastion(pg, Bastion::with_env(env)?)
    }

    /// Like [`Lab::start_with`] with a bastion the test configured itself (its ports are
    /// known before it starts, e.g. for an identity provider's redirect URI).
    pub fn start_with_bastion(pg: PgCluster, bastion: Bastion) -> anyhow::Result<Lab> {
        bastion.cli_ok(&["person", "add", "alice", "--group", "dev"])?;
        let gateway = bastion.serve()?;
        Ok(Lab {
            pg,
            bastion,
            gateway,
        })
    }

    /// Like [`Lab::start`] with pgbastion's store in a PostgreSQL cluster of its own, returned
    /// so that tests can stop and start it.
    pub fn start_with_pg_store(env: &[(&str, &str)]) -> anyhow::Result<(Lab, PgCluster)> {
        let store = PgCluster::start()?;
        // The harness runs clusters with synchronous_commit off, which loses the last commits
        // when a server stops in immediate mode: a store must not.
        store.alter_system("synchronous_commit", "on")?;
        store.create_database(PG_STORE_DB)?;
        let url = store.superuser_url(PG_STORE_DB);
        let mut all = vec![("PGBASTION_STORE_URL", url.as_str())];
        all.extend_from_slice(env);
        Ok((Lab::start(&all)?, store))
    }

    /// Registers `name` pointing at the app database as `role` (with that role's password);
    /// `extra` adds `target add` options such as `--recording buffered`.
    pub fn add_target(
        &self,
        name: &str,
        role: &str,
        tls: &str,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let port = self.pg.port().to_string();
        let mut args = vec![
            "target",
            "add",
            name,
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--database",
            pg::APP_DB,
            "--user",
            role,
            "--tls",
            tls,
            "--password-env",
            "UPSTREAM_SECRET",
        ];
        let ca = self.pg.ca_path().display().to_string();
        if tls == "verify-full" {
            args.extend(["--ca-file", &ca]);
        }
        args.extend_from_slice(extra);
        let out = self
            .bastion
            .command(&args)
            .env("UPSTREAM_SECRET", PgCluster::password(role))
            .output()?;
        ensure!(
            out.status.success(),
            "target add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    pub fn grant(&self, target: &str, role: &str) -> anyhow::Result<()> {
        self.bastion.cli_ok(&[
            "grant", "add", "--target", target, "--person", "alice", "--role", role,
        ])?;
        Ok(())
    }

    /// A target named `name` for the SCRAM role, granted to alice, and a token for it.
    pub fn scram_target(&self, name: &str, extra: &[&str]) -> anyhow::Result<Issued> {
        self.add_target(name, pg::SCRAM_USER, "disable", extra)?;
        self.grant(name, pg::SCRAM_USER)?;
        self.issue(name, pg::SCRAM_USER, &[])
    }

    pub fn issue(&self, target: &str, role: &str, extra: &[&str]) -> anyhow::Result<Issued> {
        let mut args = vec![
            "token", "issue", "--person", "alice", "--target", target, "--role", role, "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = self.bastion.cli_ok(&args)?;
        let json: Value = serde_json::from_str(out.trim())
            .with_context(|| format!("token issue printed {out}"))?;
        Ok(Issued {
            token: json["token"].as_str().context("token")?.to_owned(),
            credential_id: json["credential_id"]
                .as_str()
                .context("credential_id")?
                .to_owned(),
            json,
        })
    }

    pub fn uri(&self, target: &str) -> String {
        format!(
            "postgresql://alice@127.0.0.1:{}/{target}?sslmode=require",
            self.bastion.gateway_port
        )
    }

    /// A libpq key/value connection string for alice with `token`.
    pub fn conn_str(&self, target: &str, token: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=alice dbname={target} password={token} sslmode=require \
             application_name=e2e",
            self.bastion.gateway_port
        )
    }

    /// Runs SQL with psql through the gateway; Ok(stdout) or Err(stderr).
    pub fn psql(&self, target: &str, token: &str, sql: &str) -> anyhow::Result<String> {
        let out = psql_with_env(&self.uri(target), sql, &[("PGPASSWORD", token)])?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn client(
        &self,
        target: &str,
        token: &str,
    ) -> anyhow::Result<tokio_postgres::Client> {
        let (client, _task) =
            tokio_postgres_connect_with(&self.conn_str(target, token), tls_config(None, None)?)
                .await?;
        Ok(client)
    }

    pub async fn store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(gateway::store::open(&self.bastion.store_url()).await?)
    }

    pub async fn sessions(&self) -> anyhow::Result<Vec<Session>> {
        Ok(self.store().await?.list_sessions(100).await?)
    }

    /// Waits until the store shows `n` ended sessions (the gateway writes the end after close).
    pub async fn ended_sessions(&self, n: usize) -> anyhow::Result<Vec<Session>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let sessions = self.sessions().await?;
            if sessions.iter().filter(|s| s.ended_at.is_some()).count() >= n
                || Instant::now() > deadline
            {
                return Ok(sessions);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 15 s) for the seal of a session's recording, then returns its events.
    pub async fn sealed_recording(
        &self,
        session_id: uuid::Uuid,
    ) -> anyhow::Result<(Vec<StoredEvent>, RecordingSeal)> {
        let store = self.store().await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        let seal = loop {
            if let Some(seal) = store.recording_seal(session_id).await? {
                break seal;
            }
            if Instant::now() > deadline {
                bail!(
                    "session {session_id} was not sealed within 15 s; gateway log:\n{}",
                    self.bastion.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut events: Vec<StoredEvent> = Vec::new();
        loop {
            let from = events.last().map_or(0, |e| e.seq + 1);
            let page = store.session_events(session_id, from, 1000).await?;
            if page.is_empty() {
                break;
            }
            events.extend(page);
        }
        Ok((events, seal))
    }
}
