//! The real `pgbastion` binary: built once per test process, run with its own data directory,
//! store and ports so tests never share state.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::{ChildGuard, port_open};

/// How long `serve` may take to accept connections (the first start generates keys).
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The `pgbastion` executable: `$PGBASTION_BIN` if set (e.g. a release build in CI), else
/// built once per test process with `cargo build -p pgbastion-web --bin pgbastion`, whose
/// JSON messages name the executable (so any target directory or layout works).
/// Panics with cargo's errors if the build fails: no test that needs it can go on.
pub fn pgbastion_bin() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = BIN.get_or_init(|| match std::env::var_os("PGBASTION_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => build().map_err(|e| format!("{e:#}")),
    });
    match bin {
        Ok(path) => path.clone(),
        Err(e) => panic!("cannot build pgbastion: {e}"),
    }
}

fn build() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(cargo);
    // `cargo test` gives the test process its own package's CARGO_PKG_* and CARGO_MANIFEST_*
    // variables; build scripts (ring's) track them, so passing them on made this build, and
    // the next plain `cargo build` after it, rebuild half the workspace.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || matches!(
                name.as_ref(),
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR"
            )
        {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .current_dir(&workspace)
        .args(["build", "-q", "-p", "pgbastion-web", "--bin", "pgbastion"])
        .args(["--message-format", "json-render-diagnostics"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "cargo build failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "pgbastion")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo built no pgbastion executable")
}

/// One pgbastion installation: a temporary data directory (SQLite store inside), a gateway
/// port and a console port, and extra environment for its processes.
#[derive(Debug)]
pub struct Bastion {
    pub data_dir: TempDir,
    pub gateway_port: u16,
    pub console_port: u16,
    /// Added after the defaults of [`Bastion::env`], so they win.
    pub extra_env: Vec<(String, String)>,
}

impl Bastion {
    pub fn new() -> anyhow::Result<Bastion> {
        let data_dir = crate::scratch::temp_dir("pgbastion-data-")?;
        Ok(Bastion {
            data_dir,
            gateway_port: free_port(),
            console_port: free_port(),
            extra_env: Vec::new(),
        })
    }

    /// A bastion whose processes also get these variables, e.g.
    /// `Bastion::with_env(&[("PGBASTION_GATEWAY_MAX_CONNECTIONS", "5")])`.
    pub fn with_env(vars: &[(&str, &str)]) -> anyhow::Result<Bastion> {
        let mut bastion = Bastion::new()?;
        for (name, value) in vars {
            bastion.set_env(name, value);
        }
        Ok(bastion)
    }

    pub fn set_env(&mut self, name: &str, value: &str) {
        self.extra_env.push((name.to_owned(), value.to_owned()));
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn gateway_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.gateway_port))
    }

    pub fn console_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.console_port))
    }

    /// `http://127.0.0.1:PORT`
    pub fn console_url(&self) -> String {
        format!("http://{}", self.console_addr())
    }

    /// The store: `PGBASTION_STORE_URL` when the extra environment sets one, else the SQLite
    /// file in the data directory.
    pub fn store_url(&self) -> String {
        if let Some((_, url)) = self
            .extra_env
            .iter()
            .rev()
            .find(|(name, _)| name == "PGBASTION_STORE_URL")
        {
            return url.clone();
        }
        format!(
            "sqlite://{}",
            self.data_path().join("pgbastion.db").display()
        )
    }

    /// The environment every pgbastion process of this bastion gets: data directory, store,
    /// both listen addresses, then [`Bastion::extra_env`].
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "PGBASTION_DATA_DIR".to_owned(),
                self.data_path().display().to_string(),
            ),
            ("PGBASTION_STORE_URL".to_owned(), self.store_url()),
            (
                "PGBASTION_GATEWAY_LISTEN".to_owned(),
                self.gateway_addr().to_string(),
            ),
            (
                "PGBASTION_CONSOLE_LISTEN".to_owned(),
                self.console_addr().to_string(),
            ),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// `pgbastion ARGS...` with this bastion's environment, ready to run. Variables of the
    /// surrounding environment that start with `PGBASTION_` are removed so they cannot leak in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(pgbastion_bin());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PGBASTION_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .envs(self.env())
            .current_dir(self.data_path())
            .stdin(Stdio::null());
        command
    }

    /// Runs a CLI command to completion; the output whatever the exit status.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("cannot run pgbastion {args:?}"))
    }

    /// Runs a CLI command and returns its stdout, failing with its stderr on a non-zero exit.
    pub fn cli_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = self.cli(args)?;
        if !output.status.success() {
            bail!(
                "pgbastion {args:?} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts `pgbastion serve` (stdout and stderr appended to [`Bastion::log_path`]) and
    /// waits until the gateway port accepts connections. The guard stops it with SIGTERM,
    /// then SIGKILL. Fails with the log if it exits or does not listen within 30 s.
    pub fn serve(&self) -> anyhow::Result<ChildGuard> {
        let log = self.open_log()?;
        let child = self
            .command(&["serve"])
            .stdout(log.try_clone().context("cannot share the log file")?)
            .stderr(log)
            .spawn()
            .context("cannot start pgbastion serve")?;
        let mut guard = ChildGuard::new("pgbastion serve", child);
        let deadline = Instant::now() + SERVE_TIMEOUT;
        loop {
            if let Some(status) = guard.try_wait().context("pgbastion serve")? {
                bail!(
                    "pgbastion serve exited ({status}) before listening; log:\n{}",
                    self.log()
                );
            }
            if port_open(self.gateway_addr()) {
                return Ok(guard);
            }
            if Instant::now() >= deadline {
                bail!(
                    "pgbastion serve did not listen on {} within {SERVE_TIMEOUT:?}; log:\n{}",
                    self.gateway_addr(),
                    self.log()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Where `serve` writes its output.
    pub fn log_path(&self) -> PathBuf {
        self.data_path().join("serve.log")
    }

    /// Everything `serve` has written so far, for the message of a failing test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn open_log(&self) -> anyhow::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("cannot open {}", self.log_path().display()))
    }
}
