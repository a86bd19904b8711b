//! Child processes that are always stopped, and waiting for a server's port.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ExitStatus};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::bail;

/// How long a child gets between SIGTERM and SIGKILL unless told otherwise: long enough for
/// pgbastion to flush its recorder, short enough that a hung child does not stall the suite.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Owns a child process and stops it on drop (SIGTERM, then SIGKILL after the grace period),
/// then reaps it. Drop runs while a panicking test unwinds, so a failed assertion still stops
/// the child. A test process that is itself killed (SIGKILL, `abort`) cannot run it.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    grace: Duration,
}

impl ChildGuard {
    /// `name` appears in the messages about this child.
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        ChildGuard {
            name: name.into(),
            child,
            grace: DEFAULT_GRACE,
        }
    }

    /// Changes the time between SIGTERM and SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The wrapped child, e.g. to take its stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the child has already exited (reaping it), without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) unless the child has already exited.
    pub fn signal(&mut self, signal: i32) -> io::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        send_signal(self.child.id(), signal)
    }

    /// SIGTERM, up to the grace period for the child to exit, then SIGKILL; returns how it ended.
    /// Calling it again returns the same status.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        send_signal(self.child.id(), libc::SIGTERM)?;
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            sleep(Duration::from_millis(20));
        }
        self.kill()
    }

    /// SIGKILL at once (a crash, as far as the child can tell) and reap it.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill()?;
        self.child.wait()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Never panic here: a panic while a failed test unwinds would abort the whole process.
        if let Err(e) = self.stop() {
            eprintln!(
                "harness: could not stop {} (pid {}): {e}",
                self.name,
                self.child.id()
            );
        }
    }
}

/// Sends a signal to a process by PID.
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a process with this PID is running. A zombie counts as gone: it has exited, and
/// on these machines PID 1 may never reap the postmasters that were reparented to it.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name, which is in parentheses and
        // may itself contain spaces or parentheses.
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
        {
            Some(state) => state != "Z" && state != "X",
            None => true,
        },
        Err(_) => false,
    }
}

/// Waits until a process is gone (see [`pid_alive`]), up to `timeout`.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while pid_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
    true
}

/// Waits until something accepts TCP connections on `addr`, up to `timeout`.
/// Blocking: fine from a test thread, also inside `#[tokio::test]`, whose runtime has nothing
/// else to do meanwhile.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(250)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                bail!("nothing accepted connections on {addr} within {timeout:?}: {e}")
            }
            Err(_) => sleep(Duration::from_millis(25)),
        }
    }
}

/// Whether something accepts TCP connections on `addr` right now.
pub fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(250)).is_ok()
}
