//! Several pgbastion processes on one store, as a deployment past one machine runs them:
//! gateways (`serve --role gateway`) and consoles (`serve --role console`), each with its own
//! data directory and ports, sharing the key files of one directory.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway::store::{Session, Store};
use tokio_postgres::Client;

use crate::clients::{tls_config, tokio_postgres_connect_with};
use crate::process::port_open;
use crate::{Bastion, ChildGuard};

/// How long a process may take to listen, or to refuse to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings that make a process use the key files in `keys_dir`, as every process of a
/// deployment must.
pub fn shared_key_env(keys_dir: &Path) -> Vec<(String, String)> {
    [
        ("PGBASTION_CREDENTIALS_SIGNING_KEY", "signing.key"),
        ("PGBASTION_RECORDING_KEY_FILE", "recording.key"),
        ("PGBASTION_SECRETS_KEY_FILE", "secret.key"),
    ]
    .into_iter()
    .map(|(var, file)| (var.to_owned(), keys_dir.join(file).display().to_string()))
    .collect()
}

/// A bastion (its own data directory and ports) on the store at `store_url`, with the shared
/// keys of `keys_dir` and `extra` settings.
pub fn node(store_url: &str, keys_dir: &Path, extra: &[(&str, &str)]) -> anyhow::Result<Bastion> {
    let mut bastion = Bastion::new()?;
    bastion.set_env("PGBASTION_STORE_URL", store_url);
    for (var, value) in shared_key_env(keys_dir) {
        bastion.set_env(&var, &value);
    }
    for (var, value) in extra {
        bastion.set_env(var, value);
    }
    Ok(bastion)
}

/// Starts `pgbastion serve --role ROLE` (output appended to the bastion's log) and waits until
/// it listens: on the gateway port, or for `console`, the console port.
pub fn serve_role(bastion: &Bastion, role: &str) -> anyhow::Result<ChildGuard> {
    let mut guard = spawn_role(bastion, role)?;
    let addr = if role == "console" {
        bastion.console_addr()
    } else {
        bastion.gateway_addr()
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = guard.try_wait()? {
            bail!(
                "serve --role {role} exited ({status}) before listening; log:\n{}",
                bastion.log()
            );
        }
        if port_open(addr) {
            return Ok(guard);
        }
        ensure!(
            Instant::now() < deadline,
            "serve --role {role} did not listen on {addr} within {START_TIMEOUT:?}; log:\n{}",
            bastion.log()
        );
        sleep(Duration::from_millis(50));
    }
}

/// Starts `pgbastion serve --role ROLE` expecting it to refuse: fails if it listens or runs on
/// past the timeout, else returns its log.
pub fn serve_refused(bastion: &Bastion, role: &str) -> anyhow::Result<String> {
    let mut guard = spawn_role(bastion, role)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = guard.try_wait()? {
            ensure!(!status.success(), "serve --role {role} exited successfully");
            return Ok(bastion.log());
        }
        ensure!(
            !port_open(bastion.gateway_addr()) && Instant::now() < deadline,
            "serve --role {role} started instead of refusing; log:\n{}",
            bastion.log()
        );
        sleep(Duration::from_millis(50));
    }
}

fn spawn_role(bastion: &Bastion, role: &str) -> anyhow::Result<ChildGuard> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(bastion.log_path())
        .with_context(|| format!("cannot open {}", bastion.log_path().display()))?;
    let child = bastion
        .command(&["serve", "--role", role])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start pgbastion serve")?;
    Ok(ChildGuard::new(
        format!("pgbastion serve --role {role}"),
        child,
    ))
}

/// Adds a local console account (`user add LOGIN ROLE_ARGS --password-stdin`).
pub fn add_local_account(
    bastion: &Bastion,
    login: &str,
    role_args: &[&str],
    password: &str,
) -> anyhow::Result<()> {
    let mut args = vec!["user", "add", login];
    args.extend_from_slice(role_args);
    args.push("--password-stdin");
    let mut child = bastion
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run pgbastion {args:?}"))?;
    child
        .stdin
        .take()
        .context("piped stdin")?
        .write_all(password.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "pgbastion {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Connects as `user` with `token` to the gateway of `bastion`, naming the session
/// `application_name` so that it can be found in the store.
pub async fn connect(
    bastion: &Bastion,
    user: &str,
    target: &str,
    token: &str,
    application_name: &str,
) -> anyhow::Result<Client> {
    let conn = format!(
        "host=127.0.0.1 port={} user={user} dbname={target} password={token} sslmode=require \
         application_name={application_name}",
        bastion.gateway_port
    );
    let (client, _task) = tokio_postgres_connect_with(&conn, tls_config(None, None)?).await?;
    Ok(client)
}

/// The live session named `application_name`, once a gateway has stored it.
pub async fn live_session(store: &dyn Store, application_name: &str) -> anyhow::Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = store.list_sessions(100).await?.into_iter().find(|s| {
            s.ended_at.is_none() && s.application_name.as_deref() == Some(application_name)
        });
        match found {
            Some(session) => return Ok(session),
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => bail!("no live session named {application_name} within 10 s"),
        }
    }
}
