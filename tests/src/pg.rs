//! Real PostgreSQL clusters for tests: one per test, TLS on, one role per auth method
//! (the way rust-postgres sets up its test server), always stopped when the test ends.

mod orphans;
mod sys;
mod template;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::certs::{IssuedCert, TestCa};
use crate::ports::free_port;
use crate::process::{pid_alive, send_signal, wait_for_exit};

pub const SUPERUSER: &str = "postgres";
pub const TRUST_USER: &str = "trust_user";
pub const PASSWORD_USER: &str = "password_user";
pub const MD5_USER: &str = "md5_user";
pub const SCRAM_USER: &str = "scram_user";
pub const SSL_SCRAM_USER: &str = "ssl_scram_user";
pub const CERT_USER: &str = "cert_user";

/// The database every cluster has, with `items(id int primary key, name text, price numeric)`
/// holding ids 1..=100, on which every role has all privileges.
pub const APP_DB: &str = "app";
pub const ITEM_COUNT: i64 = 100;

/// A login role and the one way `pg_hba.conf` lets it in over TCP.
#[derive(Debug, Clone, Copy)]
pub struct Role {
    pub name: &'static str,
    pub password: &'static str,
    /// `host` (with or without TLS) or `hostssl` (TLS only).
    pub connection_type: &'static str,
    /// The pg_hba.conf method and options.
    pub method: &'static str,
    /// How the password is stored: `md5` for the role whose method is md5, because with a
    /// SCRAM verifier the server would silently upgrade md5 to SCRAM.
    pub password_encryption: &'static str,
}

const fn role(
    name: &'static str,
    password: &'static str,
    connection_type: &'static str,
    method: &'static str,
) -> Role {
    Role {
        name,
        password,
        connection_type,
        method,
        password_encryption: "scram-sha-256",
    }
}

/// The test roles (the superuser aside). Every role has a password, even those whose method
/// never asks for it, so a test can point one at a server that does.
pub const ROLES: &[Role] = &[
    role(TRUST_USER, "trust-secret", "host", "trust"),
    role(PASSWORD_USER, "password-secret", "host", "password"),
    Role {
        password_encryption: "md5",
        ..role(MD5_USER, "md5-secret", "host", "md5")
    },
    role(SCRAM_USER, "scram-secret", "host", "scram-sha-256"),
    role(
        SSL_SCRAM_USER,
        "ssl-scram-secret",
        "hostssl",
        "scram-sha-256",
    ),
    role(
        CERT_USER,
        "cert-secret",
        "hostssl",
        "cert clientcert=verify-full",
    ),
];

/// Where initdb, pg_ctl and psql live: `$PGBASTION_TEST_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout).
pub fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PGBASTION_TEST_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install postgresql or set PGBASTION_TEST_PG_BINDIR")?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .context("no initdb under /usr/lib/postgresql/*/bin")
}

/// A running PostgreSQL server in its own temporary directory, listening on 127.0.0.1 on a
/// free port, with TLS and the roles of [`ROLES`].
///
/// Dropping it stops the server (`pg_ctl -m immediate`, then SIGKILL to the postmaster) and
/// deletes the directory. Drop also runs while a panicking test unwinds; a test process killed
/// outright leaves its cluster behind, and the next test process to start one stops it
/// (see `orphans`).
pub struct PgCluster {
    /// Holds the data directory, the socket, the certificates and the server log.
    root: TempDir,
    data_dir: PathBuf,
    bin_dir: PathBuf,
    port: u16,
    pid: u32,
    running: bool,
    ca_pem: String,
    client: IssuedCert,
}

impl PgCluster {
    /// Starts a new cluster; takes well under a second once this test process has its
    /// template data directory.
    pub fn start() -> anyhow::Result<PgCluster> {
        let bin_dir = postgres_bin_dir()?;
        orphans::reap_once(&bin_dir);
        let template = template::data_dir(&bin_dir)?;
        let root = orphans::owned_temp_dir()?;
        let data_dir = root.path().join("data");
        sys::run(
            Command::new("cp").arg("-a").arg(&template).arg(&data_dir),
            "copying the template data directory",
        )?;

        let ca = TestCa::new("pgbastion test CA")?;
        let server = ca.server_cert(&["127.0.0.1", "localhost"])?;
        let client = ca.client_cert(CERT_USER)?;
        let dir = root.path();
        write_server_file(&dir.join("ca.crt"), ca.cert_pem(), 0o644)?;
        write_server_file(&dir.join("server.crt"), &server.cert_pem, 0o644)?;
        // The server refuses a key that others can read.
        write_server_file(&dir.join("server.key"), &server.key_pem, 0o600)?;
        // The client's files stay ours: libpq refuses a key owned by another user.
        write_file(&dir.join("client.crt"), &client.cert_pem, 0o644)?;
        write_file(&dir.join("client.key"), &client.key_pem, 0o600)?;
        write_server_file(&data_dir.join("pg_hba.conf"), &hba_conf(), 0o600)?;

        let mut cluster = PgCluster {
            root,
            data_dir,
            bin_dir,
            port: 0,
            pid: 0,
            running: false,
            ca_pem: ca.cert_pem().to_owned(),
            client,
        };
        cluster.start_on_a_free_port()?;
        Ok(cluster)
    }

    /// Another process can take the port between our probe and the server's bind: try again
    /// with a new one rather than fail the test.
    fn start_on_a_free_port(&mut self) -> anyhow::Result<()> {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            self.port = free_port();
            write_server_file(
                &self.data_dir.join(template::HARNESS_CONF),
                &self.settings(),
                0o600,
            )?;
            let started = sys::run(
                self.pg_ctl()
                    .args(["-w", "-t", "60", "-l"])
                    .arg(self.log_path())
                    .arg("start"),
                "pg_ctl start",
            );
            match started {
                Ok(_) => {
                    self.pid = read_postmaster_pid(&self.data_dir)?;
                    self.running = true;
                    return Ok(());
                }
                Err(e) => {
                    // pg_ctl may give up waiting while a postmaster still runs.
                    let _ = stop_postmaster(&self.bin_dir, &self.data_dir, None);
                    let log = self.log();
                    if attempt < ATTEMPTS && log.contains("could not bind") {
                        continue;
                    }
                    bail!("{e:#}\nserver log:\n{log}");
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    /// This cluster's settings, included from postgresql.conf and so overriding it.
    fn settings(&self) -> String {
        let dir = self.root.path();
        let path = |name: &str| sys::conf_quote(&dir.join(name).to_string_lossy());
        format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = {socket}\n\
             ssl = on\n\
             ssl_cert_file = {cert}\n\
             ssl_key_file = {key}\n\
             ssl_ca_file = {ca}\n\
             password_encryption = 'scram-sha-256'\n\
             {common}",
            port = self.port,
            socket = sys::conf_quote(&dir.to_string_lossy()),
            cert = path("server.crt"),
            key = path("server.key"),
            ca = path("ca.crt"),
            common = template::COMMON_SETTINGS,
        )
    }

    fn pg_ctl(&self) -> Command {
        let mut command = sys::server_command(&self.bin_dir.join("pg_ctl"), self.root.path());
        command.arg("-D").arg(&self.data_dir);
        command
    }

    /// The password of a role of [`ROLES`]; empty for the superuser, who gets in by trust.
    /// Panics on any other name: that is a typo in a test.
    pub fn password(role: &str) -> &'static str {
        if role == SUPERUSER {
            return "";
        }
        match ROLES.iter().find(|r| r.name == role) {
            Some(r) => r.password,
            None => panic!("{role} is not a harness role (see harness::pg::ROLES)"),
        }
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The postmaster's PID; still the old one after [`PgCluster::stop`], so a test can check
    /// that it is gone.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory of the Unix socket (also a valid libpq `host`).
    pub fn socket_dir(&self) -> &Path {
        self.root.path()
    }

    /// The CA that signed the server and client certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_path(&self) -> PathBuf {
        self.root.path().join("ca.crt")
    }

    /// A client certificate with CN `cert_user`, signed by the cluster's CA.
    pub fn client_cert_pem(&self) -> &str {
        &self.client.cert_pem
    }

    pub fn client_key_pem(&self) -> &str {
        &self.client.key_pem
    }

    /// The client certificate as a file, for libpq's `sslcert`.
    pub fn client_cert_path(&self) -> PathBuf {
        self.root.path().join("client.crt")
    }

    /// The client key as a file (mode 0600, ours), for libpq's `sslkey`.
    pub fn client_key_path(&self) -> PathBuf {
        self.root.path().join("client.key")
    }

    /// `postgres://postgres@127.0.0.1:PORT/dbname` (trust, no password).
    pub fn superuser_url(&self, dbname: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// `postgres://role:password@127.0.0.1:PORT/dbname` for a role of [`ROLES`]
    /// (harness passwords need no percent-encoding).
    pub fn url(&self, role: &str, dbname: &str) -> String {
        match PgCluster::password(role) {
            "" => format!("postgres://{role}@127.0.0.1:{}/{dbname}", self.port),
            pw => format!("postgres://{role}:{pw}@127.0.0.1:{}/{dbname}", self.port),
        }
    }

    /// Runs SQL as the superuser over the Unix socket with `psql -XAt -v ON_ERROR_STOP=1`
    /// (statement by statement, so `CREATE DATABASE` works) and returns what it printed.
    pub fn psql(&self, dbname: &str, sql: &str) -> anyhow::Result<String> {
        sys::psql_over_socket(
            &self.bin_dir.join("psql"),
            self.root.path(),
            self.port,
            dbname,
            sql,
        )
    }

    /// Creates an empty database owned by the superuser.
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")),
        )?;
        Ok(())
    }

    /// `ALTER SYSTEM SET name = 'value'` and a reload, for settings that need no restart.
    pub fn alter_system(&self, name: &str, value: &str) -> anyhow::Result<()> {
        let value = value.replace('\'', "''");
        self.psql("postgres", &format!("ALTER SYSTEM SET {name} = '{value}'"))?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        Ok(())
    }

    /// Stops the server cleanly and starts it again on the same port (new postmaster PID).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        sys::run(
            self.pg_ctl()
                .args(["-m", "fast", "-w", "-t", "60", "-l"])
                .arg(self.log_path())
                .arg("restart"),
            "pg_ctl restart",
        )
        .with_context(|| format!("server log:\n{}", self.log()))?;
        self.pid = read_postmaster_pid(&self.data_dir)?;
        self.running = true;
        Ok(())
    }

    /// Stops the server now (immediate mode: nothing in it is worth a clean shutdown) and
    /// makes sure the postmaster is gone. Does nothing if it is already stopped.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        stop_postmaster(&self.bin_dir, &self.data_dir, Some(self.pid))
    }

    /// Starts a stopped cluster again, on the same port (clients reconnect as after an outage).
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.running {
            return Ok(());
        }
        sys::run(
            self.pg_ctl()
                .args(["-w", "-t", "60", "-l"])
                .arg(self.log_path())
                .arg("start"),
            "pg_ctl start",
        )
        .with_context(|| format!("server log:\n{}", self.log()))?;
        self.pid = read_postmaster_pid(&self.data_dir)?;
        self.running = true;
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    /// The server log so far, for the message of a failing test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Never panic here: a panic while a failed test unwinds aborts the whole process.
        if let Err(e) = self.stop() {
            eprintln!("harness: {e:#}");
        }
    }
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("pid", &self.pid)
            .field("running", &self.running)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// pg_hba.conf: the superuser by trust (socket and TCP), then one line per role, then SCRAM
/// for roles that tests create themselves (the first matching line wins, so the fixed roles
/// keep their own method).
fn hba_conf() -> String {
    let mut conf =
        format!("local all {SUPERUSER} trust\nhost all {SUPERUSER} 127.0.0.1/32 trust\n");
    for role in ROLES {
        conf += &format!(
            "{} all {} 127.0.0.1/32 {}\n",
            role.connection_type, role.name, role.method
        );
    }
    // The fixed roles get in only their own way (a hostssl role must not slip in without TLS).
    let fixed: Vec<&str> = ROLES.iter().map(|r| r.name).collect();
    conf += &format!("host all {} 127.0.0.1/32 reject\n", fixed.join(","));
    conf += "host all all 127.0.0.1/32 scram-sha-256\n";
    conf
}

/// Stops the postmaster of `data_dir`: `pg_ctl -m immediate stop`, then SIGKILL if the
/// process is still there (pg_ctl can fail, e.g. on a broken postmaster.pid).
fn stop_postmaster(bin_dir: &Path, data_dir: &Path, pid: Option<u32>) -> anyhow::Result<()> {
    let Some(pid) = pid.or_else(|| read_postmaster_pid(data_dir).ok()) else {
        return Ok(());
    };
    let socket_dir = data_dir.parent().unwrap_or(data_dir);
    let stopped = sys::run(
        sys::server_command(&bin_dir.join("pg_ctl"), socket_dir)
            .arg("-D")
            .arg(data_dir)
            .args(["-m", "immediate", "-w", "-t", "10", "stop"]),
        "pg_ctl stop",
    );
    if pid_alive(pid) {
        // ESRCH just means it exited meanwhile.
        let _ = send_signal(pid, libc::SIGKILL);
    }
    if !wait_for_exit(pid, Duration::from_secs(10)) {
        bail!(
            "postmaster {pid} of {} is still running",
            data_dir.display()
        );
    }
    if let Err(e) = stopped {
        eprintln!("harness: postmaster {pid} needed SIGKILL: {e:#}");
    }
    Ok(())
}

/// The postmaster's PID: the first line of postmaster.pid.
fn read_postmaster_pid(data_dir: &Path) -> anyhow::Result<u32> {
    let path = data_dir.join("postmaster.pid");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .with_context(|| format!("no PID in {}", path.display()))
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// A file the server reads: it must belong to the server's OS user.
fn write_server_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    write_file(path, contents, mode)?;
    sys::give_to_server_user(path)
}
