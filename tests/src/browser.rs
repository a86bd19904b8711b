//! Browser tests: a node script under `tests/js/` drives headless Chromium (playwright-core)
//! against the console and reports each step as one JSON line on stdout; the Rust test reads the
//! steps, checks them, and gives the script its orders on stdin.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::ChildGuard;

/// Debian's Chromium, as `scripts/setup` installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// A step may wait for a sign-in through the provider or a recording to be sealed.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// `$CARGO_TARGET_DIR/test-artifacts/<name>` (relative to the workspace when relative), else
/// `target/test-artifacts/<name>`; emptied of the screenshots of earlier runs.
pub fn artifacts_dir(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = workspace().join(target).join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "png") {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(dir)
}

/// Fails, rather than skipping, when the browser or the npm packages are missing.
pub fn require_browser_tools() -> Result<()> {
    ensure!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: run scripts/setup (it installs Debian's chromium)"
    );
    let playwright = js_dir().join("node_modules/playwright-core/package.json");
    ensure!(
        playwright.is_file(),
        "{} is missing: run scripts/setup (it runs `npm ci` in {})",
        playwright.display(),
        js_dir().display()
    );
    Ok(())
}

/// A running `tests/js/<name>`: its JSON lines as they come, its stdin for the test's orders.
pub struct BrowserScript {
    // Declared first so it is dropped (stopped) before the reader thread's pipe goes away.
    pub child: ChildGuard,
    name: String,
    stdin: ChildStdin,
    lines: Receiver<String>,
    stderr_path: PathBuf,
}

impl BrowserScript {
    /// Runs `node tests/js/<name> <console_url> <out_dir>`; its stderr goes to
    /// `<out_dir>/<name>-stderr.log`.
    pub fn start(name: &str, console_url: &str, out_dir: &Path) -> Result<BrowserScript> {
        let stem = name.trim_end_matches(".mjs");
        let stderr_path = out_dir.join(format!("{stem}-stderr.log"));
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("cannot create {}", stderr_path.display()))?;
        let child = Command::new("node")
            .arg(js_dir().join(name))
            .arg(console_url)
            .arg(out_dir)
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("cannot run node (is Node.js installed? run scripts/setup)")?;
        // Playwright closes Chromium when node gets SIGTERM; give it the time to.
        let mut child = ChildGuard::new(name, child).with_grace(Duration::from_secs(10));
        let stdin = child
            .child_mut()
            .stdin
            .take()
            .context("the script's stdin")?;
        let stdout = child
            .child_mut()
            .stdout
            .take()
            .context("the script's stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(BrowserScript {
            child,
            name: name.to_owned(),
            stdin,
            lines,
            stderr_path,
        })
    }

    /// Waits for the script's next line, which must be `{"step": name, ...}`, and returns it.
    pub fn step(&mut self, step: &str) -> Result<Value> {
        let script = &self.name;
        let line = match self.lines.recv_timeout(STEP_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                bail!("{script} reached no step {step:?} within {STEP_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.stop()?;
                bail!("{script} ended ({status}) before step {step:?}")
            }
        };
        let value: Value = serde_json::from_str(&line)
            .with_context(|| format!("{script} printed a line that is not JSON: {line}"))?;
        match value["step"].as_str() {
            Some(got) if got == step => Ok(value),
            Some("error") => bail!("{script} failed before step {step:?}: {value:#}"),
            _ => bail!("{script} printed {value} while step {step:?} was expected"),
        }
    }

    /// An order for the script: a word or a JSON object, one line.
    pub fn say(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}").with_context(|| format!("cannot write to {}", self.name))
    }

    /// How the script ended; it exits by itself after its last step.
    pub fn exit_status(&mut self) -> Result<ExitStatus> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "{} did not exit within {EXIT_TIMEOUT:?} after its last step",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}
