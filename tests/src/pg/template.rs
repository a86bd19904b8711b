//! One initialised data directory (roles, the `app` database) that every cluster copies.
//! Copying takes ~0.2 s where initdb plus setup takes ~2 s, which adds up when every test of a
//! parallel suite starts its own cluster. It is built once and kept in the target directory,
//! under a name that changes whenever the setup or the PostgreSQL version does.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context;

use super::{APP_DB, ITEM_COUNT, ROLES, SUPERUSER, orphans, stop_postmaster, sys};

/// postgresql.conf includes this file; each cluster writes its own port, socket and TLS files
/// into it.
pub(super) const HARNESS_CONF: &str = "pgbastion_harness.conf";

/// Settings of every server the harness starts: durability off (the data is thrown away) and
/// small memory, since many clusters share two cores in a parallel test run.
pub(super) const COMMON_SETTINGS: &str = "fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = '32MB'
shared_preload_libraries = ''
autovacuum = off
log_connections = on
";

/// The template data directory, built by the first caller (in any test process) and reused.
pub(super) fn data_dir(bin_dir: &Path) -> anyhow::Result<PathBuf> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| build_or_reuse(bin_dir).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("cannot make the template cluster: {e}"))
}

fn build_or_reuse(bin_dir: &Path) -> anyhow::Result<PathBuf> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
    let template = cache.join(format!("pg-template-{}", cache_key(bin_dir)?));
    // Each integration-test file is its own process, and they may ask at the same moment.
    let lock_path = cache.join("pg-template.lock");
    let lock = File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock().context("cannot lock the template")?;
    // The final rename is the last step, so a directory with this name is complete.
    if !template.exists() {
        build(bin_dir, &cache, &template)?;
        remove_stale_templates(&cache, &template);
    }
    Ok(template)
}

/// initdb, start on a Unix socket only (no port to race for), run the setup, stop cleanly
/// (so copies start without recovery), then move the data directory into the cache.
fn build(bin_dir: &Path, cache: &Path, template: &Path) -> anyhow::Result<()> {
    let staging = orphans::owned_temp_dir()?;
    let dir = staging.path();
    let data = dir.join("data");
    sys::run(
        sys::server_command(&bin_dir.join("initdb"), dir)
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "--no-sync",
                "--no-instructions",
            ])
            .args(["-E", "UTF8", "--locale=C"]),
        "initdb",
    )?;
    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .context("cannot open postgresql.conf")?;
    std::io::Write::write_all(
        &mut conf,
        format!("include_if_exists '{HARNESS_CONF}'\n").as_bytes(),
    )
    .context("cannot extend postgresql.conf")?;
    let socket_only = format!(
        "listen_addresses = ''\nunix_socket_directories = {}\n{COMMON_SETTINGS}",
        sys::conf_quote(&dir.to_string_lossy())
    );
    let harness_conf = data.join(HARNESS_CONF);
    fs::write(&harness_conf, socket_only).context("cannot write the template settings")?;
    sys::give_to_server_user(&harness_conf)?;

    let log = dir.join("server.log");
    let started = sys::run(
        sys::server_command(&bin_dir.join("pg_ctl"), dir)
            .arg("-D")
            .arg(&data)
            .args(["-w", "-t", "60", "-l"])
            .arg(&log)
            .arg("start"),
        "pg_ctl start (template)",
    );
    let setup = started.and_then(|_| {
        sys::psql_over_socket(&bin_dir.join("psql"), dir, 5432, "postgres", &setup_sql())
    });
    if let Err(e) = setup {
        let _ = stop_postmaster(bin_dir, &data, None);
        let log = fs::read_to_string(&log).unwrap_or_default();
        return Err(e.context(format!("template server log:\n{log}")));
    }
    sys::run(
        sys::server_command(&bin_dir.join("pg_ctl"), dir)
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"]),
        "pg_ctl stop (template)",
    )?;

    let partial = cache.join(format!("partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    sys::run(
        Command::new("cp").arg("-a").arg(&data).arg(&partial),
        "copying the template into the cache",
    )?;
    fs::rename(&partial, template).context("cannot move the template into place")
}

/// Templates of an older setup are never used again; each takes ~50 MB.
fn remove_stale_templates(cache: &Path, current: &Path) {
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .starts_with("pg-template-")
            && entry.path().is_dir()
            && entry.path() != current;
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Roles, the `app` database and its `items` table, as psql input.
fn setup_sql() -> String {
    let mut sql = String::new();
    for role in ROLES {
        // The hash kind is chosen when the password is set, so set it per role.
        sql += &format!(
            "SET password_encryption = '{}';\nCREATE ROLE {} LOGIN PASSWORD '{}';\n",
            role.password_encryption, role.name, role.password
        );
    }
    let everyone = ROLES.iter().map(|r| r.name).collect::<Vec<_>>().join(", ");
    sql += &format!(
        "CREATE DATABASE {APP_DB} OWNER {SUPERUSER};
\\connect {APP_DB}
CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);
INSERT INTO items SELECT g, 'item ' || g, round(g * 1.25, 2) FROM generate_series(1, {ITEM_COUNT}) g;
GRANT ALL ON TABLE items TO {everyone};
GRANT ALL ON SCHEMA public TO {everyone};
"
    );
    sql
}

/// `$CARGO_TARGET_DIR/pgbastion-tests`, else the workspace's `target/pgbastion-tests`:
/// `cargo clean` removes it.
fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("pgbastion-tests")
}

/// Changes with the setup SQL, the settings, the server version and who owns the files.
fn cache_key(bin_dir: &Path) -> anyhow::Result<String> {
    let version = sys::run(
        Command::new(bin_dir.join("initdb")).arg("--version"),
        "initdb --version",
    )?;
    let mut hasher = DefaultHasher::new();
    (
        setup_sql(),
        COMMON_SETTINGS,
        &version.stdout,
        bin_dir,
        sys::is_root(),
    )
        .hash(&mut hasher);
    Ok(format!("{:016x}", hasher.finish()))
}
