//! Faults for tests: upstream backends ended from outside, and a small disk that fills up.
//!
//! Everything here undoes itself on drop, also while a failed test unwinds.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::pg::{APP_DB, PgCluster};
use crate::{Bastion, free_port};

/// Ends every backend that `role` has on the app database with `pg_terminate_backend`, from a
/// superuser connection of its own (the backends get SIGTERM and send FATAL 57P01 when they
/// can). Returns how many it ended.
pub fn terminate_backends(pg: &PgCluster, role: &str) -> anyhow::Result<usize> {
    let out = pg.psql(
        "postgres",
        &format!(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity \
             where usename = '{role}' and datname = '{APP_DB}' and pid <> pg_backend_pid()"
        ),
    )?;
    out.trim()
        .parse()
        .with_context(|| format!("pg_terminate_backend count: {out:?}"))
}

/// Waits until a backend of `role` is running a statement whose text contains `fragment`, so
/// that a fault can hit it in the middle, up to `timeout`.
pub fn wait_for_running_statement(
    pg: &PgCluster,
    role: &str,
    fragment: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let fragment = fragment.replace('\'', "''");
    loop {
        let running = pg.psql(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where usename = '{role}' \
                 and state = 'active' and strpos(query, '{fragment}') > 0"
            ),
        )?;
        if running.trim() != "0" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no backend of {role} ran a statement with `{fragment}` within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A small tmpfs of its own, for a disk that fills up. Needs root (or CAP_SYS_ADMIN); the
/// error says so. Dropping it deletes the filler and unmounts (lazily if something still
/// holds a file there, so the mount never outlives the test process).
pub struct SmallDisk {
    /// The mount point; removed once unmounted.
    mount_point: TempDir,
    filler: PathBuf,
}

impl SmallDisk {
    pub fn mount(size_mib: u32) -> anyhow::Result<SmallDisk> {
        let mount_point = crate::scratch::temp_dir("pgbastion-small-disk-")?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0755")])
            .arg("pgbastion-test")
            .arg(mount_point.path())
            .output()
            .context("cannot run mount")?;
        if !status.status.success() {
            bail!(
                "cannot mount a {size_mib} MiB tmpfs on {} (this test needs root or \
                 CAP_SYS_ADMIN; where that is impossible, skip it by name): {}",
                mount_point.path().display(),
                String::from_utf8_lossy(&status.stderr).trim()
            );
        }
        let filler = mount_point.path().join("filler");
        Ok(SmallDisk {
            mount_point,
            filler,
        })
    }

    pub fn path(&self) -> &Path {
        self.mount_point.path()
    }

    /// A bastion whose data directory (SQLite store, journal, keys, log) is on this disk.
    pub fn bastion(&self, env: &[(&str, &str)]) -> anyhow::Result<Bastion> {
        let data_dir = tempfile::Builder::new()
            .prefix("pgbastion-data-")
            .tempdir_in(self.path())
            .context("cannot create the data directory on the small disk")?;
        let mut bastion = Bastion {
            data_dir,
            gateway_port: free_port(),
            console_port: free_port(),
            extra_env: Vec::new(),
        };
        for (name, value) in env {
            bastion.set_env(name, value);
        }
        Ok(bastion)
    }

    /// Writes a filler file until the disk is full (ENOSPC); returns its size.
    pub fn fill(&self) -> anyhow::Result<u64> {
        let mut file = File::create(&self.filler).context("cannot create the filler file")?;
        let block = vec![0xa5u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                Err(e) => return Err(e).context("writing the filler file"),
            }
        }
        // The last partial block: fill the disk to the byte.
        for size in [4096usize, 512, 1] {
            while let Ok(n @ 1..) = file.write(&block[..size]) {
                written += n as u64;
            }
        }
        Ok(written)
    }

    /// Deletes the filler file: the disk has room again.
    pub fn free(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(&self.filler) {
            Err(e) if e.kind() != ErrorKind::NotFound => {
                Err(e).context("cannot delete the filler file")
            }
            _ => Ok(()),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Never panic here: a panic while a failed test unwinds aborts the whole process.
        let _ = self.free();
        let unmounted = Command::new("umount")
            .arg(self.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if !unmounted {
            // Something (a store connection of the test process) still holds a file there:
            // detach now, the kernel frees the memory when the last file closes.
            let lazy = Command::new("umount").arg("-l").arg(self.path()).output();
            if !lazy.is_ok_and(|o| o.status.success()) {
                eprintln!(
                    "harness: cannot unmount the small disk at {}",
                    self.path().display()
                );
            }
        }
    }
}
