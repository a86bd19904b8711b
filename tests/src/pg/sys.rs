//! Running PostgreSQL's programs as the `postgres` OS user, which they insist on when we are root.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// The OS account the server runs as when the tests run as root (initdb refuses root).
const SERVER_USER: &str = "postgres";

/// Whether we run as root and so must hand files and processes to [`SERVER_USER`].
pub(super) fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// `program`, run as the server's OS user (through `runuser` when we are root), with its
/// working directory in `dir`: some PostgreSQL programs complain when they cannot enter the
/// caller's working directory, which `postgres` usually cannot.
pub(super) fn server_command(program: &Path, dir: &Path) -> Command {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", SERVER_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.current_dir(dir).stdin(Stdio::null());
    command
}

/// Runs a command to completion and fails with its output if it did not succeed.
pub(super) fn run(command: &mut Command, what: &str) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {what}: {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// Gives a file or directory to the server's OS user (when we are root; otherwise it is ours).
pub(super) fn give_to_server_user(path: &Path) -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let (uid, gid) = server_user_ids()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {} to {SERVER_USER}", path.display()))
}

/// The server user's uid and gid, read once from /etc/passwd.
fn server_user_ids() -> anyhow::Result<(u32, u32)> {
    static IDS: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                [name, _, uid, gid, ..] if *name == SERVER_USER => {
                    Some((uid.parse().ok()?, gid.parse().ok()?))
                }
                _ => None,
            }
        })
    });
    ids.with_context(|| format!("no `{SERVER_USER}` user in /etc/passwd (install postgresql)"))
}

/// Quotes a value for postgresql.conf.
pub(super) fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Runs SQL with psql as the superuser over the Unix socket in `socket_dir` and returns what
/// it printed (unaligned, tuples only). The SQL goes in on stdin, so psql sends it statement by
/// statement: `CREATE DATABASE` and `\connect` work, and the first error stops it.
pub(super) fn psql_over_socket(
    psql: &Path,
    socket_dir: &Path,
    port: u16,
    dbname: &str,
    sql: &str,
) -> anyhow::Result<String> {
    use std::io::Write;

    let mut child = Command::new(psql)
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-h"])
        .arg(socket_dir)
        .args(["-p", &port.to_string(), "-d", dbname, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", psql.display()))?;
    // Written from another thread so that a long script and a long result cannot fill both
    // pipes and wait on each other.
    let mut stdin = child.stdin.take().context("psql stdin")?;
    let script = sql.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&script));
    let output = child.wait_with_output().context("waiting for psql")?;
    // psql stops reading at the first error, so a broken pipe here says nothing new.
    let _ = writer.join();
    if !output.status.success() {
        bail!(
            "psql -d {dbname} failed ({}): {}\nSQL: {sql}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
