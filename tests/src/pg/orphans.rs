//! Clusters left behind by test processes that died without unwinding (Ctrl-C, SIGKILL,
//! abort): pg_ctl starts the postmaster in a session of its own, so it outlives its test.
//! Every cluster directory records its owner's PID; the first cluster a test process starts
//! stops and deletes the clusters whose owner is gone.

use std::fs;
use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use tempfile::TempDir;

use super::{stop_postmaster, sys};
use crate::process::pid_alive;

const PREFIX: &str = "pgbastion-pg-";
const OWNER_FILE: &str = "owner.pid";

/// A temporary directory for a cluster, marked with our PID and handed to the server's user.
pub(super) fn owned_temp_dir() -> anyhow::Result<TempDir> {
    let dir = crate::scratch::temp_dir(PREFIX)?;
    fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
        .context("cannot write the owner file")?;
    sys::give_to_server_user(dir.path())?;
    Ok(dir)
}

pub(super) fn reap_once(bin_dir: &Path) {
    static REAPED: Once = Once::new();
    REAPED.call_once(|| reap(bin_dir));
}

fn reap(bin_dir: &Path) {
    let Ok(entries) = fs::read_dir(crate::scratch::base_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        // No owner file yet: a live process is still creating it.
        let Some(owner) = fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if owner == std::process::id() || pid_alive(owner) {
            continue;
        }
        if let Err(e) = stop_postmaster(bin_dir, &dir.join("data"), None) {
            eprintln!(
                "harness: cannot stop the orphaned cluster in {}: {e:#}",
                dir.display()
            );
            continue;
        }
        // Another test process may be reaping the same directory: not an error.
        let _ = fs::remove_dir_all(&dir);
        eprintln!(
            "harness: removed a cluster left by dead test process {owner}: {}",
            dir.display()
        );
    }
}
