//! A console lab: a [`Lab`] (cluster, pgbastion serve) whose console signs people in through a
//! real OpenID Connect provider ([`OidcProvider`], users of [`TestUser::standard`]), with the
//! provider's groups mapped to console roles:
//!
//! | group          | role     | standard users |
//! |----------------|----------|----------------|
//! | pgb-users      | user     | alice, bob     |
//! | pgb-approvers  | approver | bob            |
//! | pgb-auditors   | auditor  | carol          |
//! | pgb-admins     | admin    | dave           |
//!
//! `mallory` (group no-such-group) has no role.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::oidc::{OidcProvider, TestUser};
use crate::pg::{self, PgCluster};
use crate::process::{pid_alive, send_signal, wait_for_exit, wait_for_port};
use crate::{Bastion, Lab};

pub const USER_GROUP: &str = "pgb-users";
pub const APPROVER_GROUP: &str = "pgb-approvers";
pub const AUDITOR_GROUP: &str = "pgb-auditors";
pub const ADMIN_GROUP: &str = "pgb-admins";

/// A local admin account every console lab has: `root` with [`ROOT_PASSWORD`].
pub const ROOT_LOGIN: &str = "root";
pub const ROOT_PASSWORD: &str = "root-password-for-tests";

pub struct ConsoleLab {
    // Dropped first: pgbastion stops before the provider it talks to and its store.
    pub lab: Lab,
    pub idp: OidcProvider,
    /// The cluster holding pgbastion's store, when it is PostgreSQL
    /// ([`ConsoleLab::start_with_pg_store`]); SQLite in the data directory otherwise.
    pub store_cluster: Option<PgCluster>,
}

impl ConsoleLab {
    /// Starts a cluster, the provider and pgbastion (gateway and console); `env` adds
    /// `PGBASTION_*` settings. Also adds the local admin `root` and a target `shop` (the app
    /// database as the SCRAM role) that group pgb-users may use, with approval.
    ///
    /// How long each step took goes to stderr (shown when a test fails). Most of a slow start
    /// is usually the first step, the build of `pgbastion` in the test process.
    pub fn start(env: &[(&str, &str)]) -> anyhow::Result<ConsoleLab> {
        ConsoleLab::start_inner(env, ProviderAtStart::Up)
    }

    /// Like [`ConsoleLab::start`], with pgbastion's store in a PostgreSQL cluster of its own
    /// (as several gateways and consoles would share it).
    pub fn start_with_pg_store(env: &[(&str, &str)]) -> anyhow::Result<ConsoleLab> {
        let store = PgCluster::start()?;
        store.create_database(crate::lab::PG_STORE_DB)?;
        let url = store.superuser_url(crate::lab::PG_STORE_DB);
        let mut all = vec![("PGBASTION_STORE_URL", url.as_str())];
        all.extend_from_slice(env);
        let mut lab = ConsoleLab::start_inner(&all, ProviderAtStart::Up)?;
        lab.store_cluster = Some(store);
        Ok(lab)
    }

    /// Like [`ConsoleLab::start`], but the provider is stopped before pgbastion starts, so the
    /// console never discovers it (its settings still point at it).
    pub fn start_with_provider_down(env: &[(&str, &str)]) -> anyhow::Result<ConsoleLab> {
        ConsoleLab::start_inner(env, ProviderAtStart::Down)
    }

    fn start_inner(env: &[(&str, &str)], provider: ProviderAtStart) -> anyhow::Result<ConsoleLab> {
        let mut steps = Steps::new();
        crate::pgbastion_bin();
        steps.done("pgbastion binary (cargo build in the test process)");
        let pg = PgCluster::start()?;
        steps.done("PostgreSQL cluster");
        let mut bastion = Bastion::new()?;
        let url = bastion.console_url();
        let idp = OidcProvider::start(&TestUser::standard(), &format!("{url}/auth/oidc/callback"))?;
        steps.done("identity provider");
        for (name, value) in [
            ("PGBASTION_OIDC_ISSUER_URL", idp.issuer()),
            ("PGBASTION_OIDC_CLIENT_ID", idp.client_id()),
            ("PGBASTION_OIDC_CLIENT_SECRET", idp.client_secret()),
            ("PGBASTION_OIDC_USER_GROUPS", USER_GROUP),
            ("PGBASTION_OIDC_APPROVER_GROUPS", APPROVER_GROUP),
            ("PGBASTION_OIDC_AUDITOR_GROUPS", AUDITOR_GROUP),
            ("PGBASTION_OIDC_ADMIN_GROUPS", ADMIN_GROUP),
        ] {
            bastion.set_env(name, value);
        }
        for (name, value) in env {
            bastion.set_env(name, value);
        }
        add_local_account(&bastion, ROOT_LOGIN, &["--admin"], ROOT_PASSWORD)?;
        steps.done("user add root");
        if provider == ProviderAtStart::Down {
            stop_provider(&idp)?;
            steps.done("identity provider stopped");
        }
        let lab = Lab::start_with_bastion(pg, bastion)?;
        steps.done("person add, serve (gateway listening)");
        wait_for_port(lab.bastion.console_addr(), Duration::from_secs(30))
            .with_context(|| format!("console did not listen; log:\n{}", lab.bastion.log()))?;
        steps.done("console listening");
        lab.add_target("shop", pg::SCRAM_USER, "disable", &[])?;
        lab.bastion.cli_ok(&[
            "grant",
            "add",
            "--target",
            "shop",
            "--group",
            USER_GROUP,
            "--role",
            pg::SCRAM_USER,
            "--max-lifetime",
            "8h",
            "--requires-approval",
        ])?;
        steps.done("target shop and its grant");
        Ok(ConsoleLab {
            lab,
            idp,
            store_cluster: None,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        self.lab.bastion.console_url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.lab.bastion.console_addr()
    }

    /// Adds a local console account (`pgbastion user add LOGIN ROLE_ARGS --password-stdin`),
    /// e.g. `lab.add_local_account("ops", &["--role", "user"], "a-long-password")`.
    pub fn add_local_account(
        &self,
        login: &str,
        role_args: &[&str],
        password: &str,
    ) -> anyhow::Result<()> {
        add_local_account(&self.lab.bastion, login, role_args, password)
    }

    /// Kills the identity provider (by its PID) and waits until it is gone; the console keeps
    /// what it discovered at start.
    pub fn stop_provider(&self) -> anyhow::Result<()> {
        stop_provider(&self.idp)
    }

    /// Restarts `pgbastion serve` with `env` added to its settings (later settings win), e.g.
    /// to change a console timeout; what the console keeps in memory (sign-in throttling) starts
    /// afresh, the store stays.
    pub fn restart_serve(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.lab
            .gateway
            .stop()
            .context("stopping pgbastion serve")?;
        for (name, value) in env {
            self.lab.bastion.set_env(name, value);
        }
        self.lab.gateway = self.lab.bastion.serve()?;
        wait_for_port(self.addr(), Duration::from_secs(30)).with_context(|| {
            format!(
                "console did not listen after a restart; log:\n{}",
                self.lab.bastion.log()
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProviderAtStart {
    Up,
    Down,
}

fn add_local_account(
    bastion: &Bastion,
    login: &str,
    role_args: &[&str],
    password: &str,
) -> anyhow::Result<()> {
    let mut args = vec!["user", "add", login];
    args.extend_from_slice(role_args);
    args.push("--password-stdin");
    let out = bastion
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(password.as_bytes())?;
            child.wait_with_output()
        })
        .with_context(|| format!("cannot run pgbastion {args:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "pgbastion {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn stop_provider(idp: &OidcProvider) -> anyhow::Result<()> {
    let pid = idp.pid();
    if pid_alive(pid) {
        send_signal(pid, libc::SIGKILL)
            .with_context(|| format!("cannot kill the identity provider (pid {pid})"))?;
    }
    anyhow::ensure!(
        wait_for_exit(pid, Duration::from_secs(10)),
        "the identity provider (pid {pid}) did not exit"
    );
    Ok(())
}

/// Prints how long each step of a lab's start took, and the total so far.
struct Steps {
    start: Instant,
    last: Instant,
}

impl Steps {
    fn new() -> Steps {
        let now = Instant::now();
        Steps {
            start: now,
            last: now,
        }
    }

    fn done(&mut self, step: &str) {
        let now = Instant::now();
        eprintln!(
            "ConsoleLab::start: {step}: {:.2?} (total {:.2?})",
            now - self.last,
            now - self.start
        );
        self.last = now;
    }
}
