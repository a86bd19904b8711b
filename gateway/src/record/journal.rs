//! The recorder's local journal: every recorded event is appended to a file in the data
//! directory before its chunk is forwarded, so a recording survives the gateway being killed
//! (SIGKILL, OOM, a crash) even when the store has not taken it yet.
//!
//! Why a journal: strict recording promises that no statement runs unrecorded. Waiting for a
//! store commit per statement costs a round trip to the store on every statement; one `write`
//! to a local file costs a few microseconds and is just as durable against a dead process (the
//! data is in the kernel's page cache). It is not flushed to disk (`fsync`): an OS crash or a
//! power cut can lose its last writes, which is said in the docs.
//!
//! Format: segment files `<data_dir>/journal/<millis>-<pid>.log`, one line per event,
//! `<session uuid> <seq> <canonical JSON>\n` (canonical JSON has no raw newline). Segments
//! are rotated past [`SEGMENT_BYTES`] and deleted once the writer has stored every event in
//! them; a clean shutdown leaves none. What a crash leaves behind is stored at the next start
//! by [`recover`](super::recover).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// Rotation size of a segment.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// The journal's folder inside the data directory.
pub const JOURNAL_DIR: &str = "journal";

/// The open journal of this gateway process. Appends happen under the writer's queue lock, so
/// the journal order is the order in which the writer stores events: a segment can be deleted
/// once the writer's stored position passes its last event.
pub struct Journal {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    bytes: u64,
    /// Events journaled so far (all segments).
    position: u64,
    /// Closed segments with the position after their last event, oldest first.
    closed: VecDeque<(PathBuf, u64)>,
    line: Vec<u8>,
}

impl Journal {
    /// Opens a new segment in `dir` (created 0700). Segments already there are a previous
    /// run's: recover them first.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let (file, path) = new_segment(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            file,
            path,
            bytes: 0,
            position: 0,
            closed: VecDeque::new(),
            line: Vec::with_capacity(4096),
        })
    }

    /// Appends one chunk's events with a single `write`; returns the position after them.
    pub fn append<'a>(
        &mut self,
        session_id: Uuid,
        events: impl IntoIterator<Item = (u64, &'a str)>,
    ) -> io::Result<u64> {
        self.line.clear();
        let mut id = Uuid::encode_buffer();
        let id = session_id.hyphenated().encode_lower(&mut id);
        let mut n = 0;
        for (seq, body) in events {
            debug_assert!(!body.contains('\n'), "canonical JSON has no raw newline");
            self.line.extend_from_slice(id.as_bytes());
            self.line.push(b' ');
            self.line
                .extend_from_slice(itoa_u64(seq, &mut [0; 20]).as_bytes());
            self.line.push(b' ');
            self.line.extend_from_slice(body.as_bytes());
            self.line.push(b'\n');
            n += 1;
        }
        self.file.write_all(&self.line)?;
        self.bytes += self.line.len() as u64;
        self.position += n;
        if self.bytes >= SEGMENT_BYTES {
            self.rotate()?;
        }
        Ok(self.position)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let (file, path) = new_segment(&self.dir)?;
        let old = std::mem::replace(&mut self.path, path);
        self.file = file;
        self.bytes = 0;
        self.closed.push_back((old, self.position));
        Ok(())
    }

    /// The writer has stored every event before `stored`: delete the segments it covers (all
    /// of them, the open one too, once everything is stored).
    pub fn release(&mut self, stored: u64) {
        while let Some((path, last)) = self.closed.front() {
            if *last > stored {
                break;
            }
            remove(path);
            self.closed.pop_front();
        }
        if stored >= self.position && self.bytes > 0 {
            // Everything is stored: start the open segment afresh instead of letting it grow.
            if let Ok(()) = self.file.set_len(0) {
                self.bytes = 0;
            }
        }
    }

    /// Points the open segment at `/dev/full`, whose writes fail with ENOSPC: a full disk.
    #[cfg(test)]
    pub(crate) fn simulate_full_disk(&mut self) {
        self.file = OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .expect("/dev/full");
    }

    /// Removes the open segment (after a clean shutdown that stored everything).
    pub fn close(self, stored: u64) {
        if stored >= self.position {
            for (path, _) in &self.closed {
                remove(path);
            }
            remove(&self.path);
        }
    }
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove a journal segment");
    }
}

fn new_segment(dir: &Path) -> io::Result<(File, PathBuf)> {
    let millis = chrono::Utc::now().timestamp_millis();
    for attempt in 0..100u32 {
        let path = dir.join(format!(
            "{millis:013}-{:07}-{attempt:02}.log",
            std::process::id()
        ));
        match OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((file, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot name a new journal segment"))
}

/// The journal segments in `dir`, oldest first (names sort by time).
pub fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "log") {
                    found.push(path);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    found.sort();
    Ok(found)
}

/// One journaled event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLine {
    pub session_id: Uuid,
    pub seq: u64,
    pub body: String,
}

/// Parses a segment. A line cut short by the crash (no newline at the end) or otherwise
/// unreadable is skipped and counted, never fatal.
pub fn read_segment(path: &Path) -> io::Result<(Vec<JournalLine>, usize)> {
    let text = std::fs::read(path)?;
    let mut lines = Vec::new();
    let mut bad = 0;
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(end) => &text[..=end],
        None => &text[..0],
    };
    if complete.len() < text.len() {
        bad += 1;
    }
    for raw in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match parse_line(raw) {
            Some(line) => lines.push(line),
            None => bad += 1,
        }
    }
    Ok((lines, bad))
}

fn parse_line(raw: &[u8]) -> Option<JournalLine> {
    let text = std::str::from_utf8(raw).ok()?;
    let (id, rest) = text.split_once(' ')?;
    let (seq, body) = rest.split_once(' ')?;
    Some(JournalLine {
        session_id: id.parse().ok()?,
        seq: seq.parse().ok()?,
        body: body.to_string(),
    })
}

fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).expect("ASCII digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let id = Uuid::new_v4();
        let end = journal
            .append(id, [(0, r#"{"a":1}"#), (1, r#"{"b":"x y"}"#)])
            .unwrap();
        assert_eq!(end, 2);
        let path = segments(dir.path()).unwrap().pop().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"torn line without newl")
            .unwrap();
        let (lines, bad) = read_segment(&path).unwrap();
        assert_eq!(bad, 1);
        assert_eq!(
            lines,
            vec![
                JournalLine {
                    session_id: id,
                    seq: 0,
                    body: r#"{"a":1}"#.into()
                },
                JournalLine {
                    session_id: id,
                    seq: 1,
                    body: r#"{"b":"x y"}"#.into()
                },
            ]
        );
    }

    #[test]
    fn stored_segments_are_released_and_a_clean_close_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let id = Uuid::new_v4();
        let body = "x".repeat(1024 * 1024);
        for seq in 0..20 {
            journal.append(id, [(seq, body.as_str())]).unwrap();
        }
        assert!(
            segments(dir.path()).unwrap().len() >= 2,
            "rotated past 16 MiB"
        );
        journal.release(5);
        assert!(
            segments(dir.path()).unwrap().len() >= 2,
            "not all stored yet"
        );
        journal.release(20);
        assert_eq!(segments(dir.path()).unwrap().len(), 1, "only the open one");
        journal.close(20);
        assert!(segments(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn numbers_print_like_display() {
        for n in [0, 7, 10, 12345, u64::MAX] {
            assert_eq!(itoa_u64(n, &mut [0; 20]), n.to_string());
        }
    }
}
