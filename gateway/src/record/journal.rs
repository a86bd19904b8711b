//! The recorder's local journal: every recorded event is appended to a file in the data
//! directory before its chunk is forwarded, so a recording survives the gateway being killed
//! (SIGKILL, OOM, a crash) even when the store has not taken it yet.
//!
//! Why a journal: strict recording promises that no statement runs unrecorded. Waiting for a
//! store commit per statement costs a round trip to the store on every statement; a copy into
//! a shared file mapping costs well under a microsecond and is just as durable against a dead
//! process (the bytes are in the kernel's page cache the moment they are copied). It is not
//! flushed to disk (`fsync`): an OS crash or a power cut can lose its last writes, which is said
//! in the docs.
//!
//! Why a mapping rather than `write(2)`: appends happen under the writer's queue lock, on every
//! relay chunk of every session. A system call there cost two microseconds per chunk, and,
//! held across it, the lock made the runtime's other threads sleep on it. A copy is short.
//! Segments are allocated in full when created (`posix_fallocate`), so a full disk is an error
//! at that moment, never a SIGBUS on a later write to the mapping ([`mapped`]).
//!
//! Format: segment files `<data_dir>/journal/<millis>-<pid>-<n>.log`, one line per event,
//! `<session uuid> <seq> <canonical JSON>\n` (canonical JSON has no raw newline and no NUL), then
//! zeros up to the segment's size: the first NUL ends the journal. Segments are rotated when
//! the next chunk does not fit, and deleted once the writer has stored every event in them; a
//! clean shutdown leaves none. What a crash leaves behind is stored at the next start by
//! [`recover`](super::recover).

mod mapped;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use mapped::Mapping;

/// Size of a segment (a chunk bigger than this gets a segment of its own size).
const SEGMENT_BYTES: usize = 16 * 1024 * 1024;
/// The journal's folder inside the data directory.
pub const JOURNAL_DIR: &str = "journal";

/// The open journal of this gateway process. Appends happen under the writer's queue lock, so
/// the journal order is the order in which the writer stores events: a segment can be deleted
/// once the writer's stored position passes its last event.
pub struct Journal {
    dir: PathBuf,
    segment: Segment,
    /// Events journaled so far (all segments).
    position: u64,
    /// Closed segments with the position after their last event, oldest first.
    closed: VecDeque<(PathBuf, u64)>,
    /// The next segment, made ready by the writer task off the relays' path (see
    /// [`Journal::wants_spare`]).
    spare: Option<Segment>,
    /// Set by tests: creating the next segment fails as on a full disk.
    #[cfg(test)]
    full_disk: bool,
}

/// A segment: the one being appended to, or a spare.
pub struct Segment {
    path: PathBuf,
    file: File,
    map: Mapping,
    /// Bytes written so far.
    used: usize,
}

impl Journal {
    /// Opens a new segment in `dir` (created 0700). Segments already there are a previous
    /// run's: recover them first.
    pub fn open(dir: &Path) -> io::Result<Journal> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            segment: Segment::prepare(dir)?,
            position: 0,
            closed: VecDeque::new(),
            spare: None,
            #[cfg(test)]
            full_disk: false,
        })
    }

    /// Appends one chunk's events, copied straight into the mapping (their lines are measured
    /// first, to rotate before a chunk that does not fit); returns the position after them.
    pub fn append<'a, I>(&mut self, session_id: Uuid, events: I) -> io::Result<u64>
    where
        I: IntoIterator<Item = (u64, &'a str)>,
        I::IntoIter: Clone,
    {
        let events = events.into_iter();
        let mut id = Uuid::encode_buffer();
        let id = session_id.hyphenated().encode_lower(&mut id).as_bytes();
        // `<id> <seq> <body>\n`
        let size: usize = events
            .clone()
            .map(|(seq, body)| id.len() + itoa::Buffer::new().format(seq).len() + body.len() + 3)
            .sum();
        if self.segment.used + size > self.segment.map.len() {
            self.rotate(size)?;
        }
        let mut n = 0;
        for (seq, body) in events {
            debug_assert!(
                !body.contains(['\n', '\0']),
                "canonical JSON has no raw newline or NUL"
            );
            let mut digits = itoa::Buffer::new();
            for piece in [
                id,
                b" ",
                digits.format(seq).as_bytes(),
                b" ",
                body.as_bytes(),
                b"\n",
            ] {
                self.segment.map.write(self.segment.used, piece);
                self.segment.used += piece.len();
            }
            n += 1;
        }
        self.position += n;
        Ok(self.position)
    }

    /// Closes the full segment (cut to what it holds) and continues in a new one that holds at
    /// least `needed` bytes. On failure the open segment stays as it was.
    fn rotate(&mut self, needed: usize) -> io::Result<()> {
        #[cfg(test)]
        if self.full_disk {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let next = match self.spare.take() {
            Some(spare) if spare.map.len() >= needed => spare,
            spare => {
                self.spare = spare;
                new_segment(&self.dir, needed.max(SEGMENT_BYTES))?
            }
        };
        let old = std::mem::replace(&mut self.segment, next);
        let Segment {
            path,
            file,
            map,
            used,
        } = old;
        drop(map);
        // The zeros after the last line are not needed any more.
        let _ = file.set_len(used as u64);
        self.closed.push_back((path, self.position));
        Ok(())
    }

    /// The folder to make a spare segment in, when one is due: the open segment is half full
    /// and there is no spare yet. Making one (allocating and pre-faulting 16 MiB) takes
    /// milliseconds, which the writer spends outside the queue lock with [`Segment::prepare`];
    /// the relays then never pay for a rotation or for a page's first write.
    pub fn wants_spare(&self) -> Option<PathBuf> {
        (self.spare.is_none() && self.segment.used > self.segment.map.len() / 2)
            .then(|| self.dir.clone())
    }

    /// Keeps `segment` (from [`Segment::prepare`]) for the next rotation.
    pub fn give_spare(&mut self, segment: Segment) {
        match self.spare {
            None => self.spare = Some(segment),
            Some(_) => segment.discard(),
        }
    }

    /// The writer has stored every event before `stored`: delete the closed segments it covers.
    pub fn release(&mut self, stored: u64) {
        while let Some((path, last)) = self.closed.front() {
            if *last > stored {
                break;
            }
            remove(path);
            self.closed.pop_front();
        }
    }

    /// Makes every later segment fail to be created as on a full disk, and the open one full.
    #[cfg(test)]
    pub(crate) fn simulate_full_disk(&mut self) {
        self.full_disk = true;
        self.segment.used = self.segment.map.len();
    }

    /// Removes the open segment (after a clean shutdown that stored everything).
    pub fn close(self, stored: u64) {
        if let Some(spare) = &self.spare {
            remove(&spare.path);
        }
        if stored >= self.position {
            for (path, _) in &self.closed {
                remove(path);
            }
            remove(&self.segment.path);
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

impl Segment {
    /// A spare segment in `dir`, allocated, mapped and with its pages faulted in for writing.
    pub fn prepare(dir: &Path) -> io::Result<Segment> {
        let mut segment = new_segment(dir, SEGMENT_BYTES)?;
        segment.map.prefault();
        Ok(segment)
    }

    /// Removes a segment that was never used.
    pub fn discard(self) {
        remove(&self.path);
    }
}

/// Creates, allocates and maps a segment of `size` bytes. A segment that cannot be allocated
/// in full is removed again: the error (ENOSPC on a full disk) goes to the caller.
fn new_segment(dir: &Path, size: usize) -> io::Result<Segment> {
    let millis = chrono::Utc::now().timestamp_millis();
    for attempt in 0..100u32 {
        let path = dir.join(format!(
            "{millis:013}-{:07}-{attempt:02}.log",
            std::process::id()
        ));
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        return match Mapping::allocate(&file, size) {
            Ok(map) => Ok(Segment {
                path,
                file,
                map,
                used: 0,
            }),
            Err(e) => {
                remove(&path);
                Err(e)
            }
        };
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
    let mut text = std::fs::read(path)?;
    // The zeros after the last line of a segment that was open when the gateway stopped.
    if let Some(end) = text.iter().position(|&b| b == 0) {
        text.truncate(end);
    }
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
        // What a gateway killed in the middle of a copy leaves: part of a line, then zeros.
        let used = std::fs::read(&path)
            .unwrap()
            .iter()
            .position(|&b| b == 0)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(
            &std::fs::OpenOptions::new().write(true).open(&path).unwrap(),
            b"torn line without newl",
            used as u64,
        )
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
    fn a_spare_prepared_off_the_path_becomes_the_next_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let id = Uuid::new_v4();
        let body = "y".repeat(1024 * 1024 - 64);
        assert_eq!(
            journal.wants_spare(),
            None,
            "an empty segment needs no spare yet"
        );
        let mut seq = 0;
        while journal.wants_spare().is_none() {
            journal.append(id, [(seq, body.as_str())]).unwrap();
            seq += 1;
        }
        let spare = Segment::prepare(&journal.wants_spare().unwrap()).unwrap();
        let spare_path = spare.path.clone();
        journal.give_spare(spare);
        assert_eq!(journal.wants_spare(), None, "one spare at a time");
        // A second spare is discarded, not leaked.
        journal.give_spare(Segment::prepare(dir.path()).unwrap());
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
        while journal.closed.is_empty() {
            journal.append(id, [(seq, body.as_str())]).unwrap();
            seq += 1;
        }
        assert_eq!(
            journal.segment.path, spare_path,
            "the rotation took the spare"
        );
        let mut read = Vec::new();
        for path in segments(dir.path()).unwrap() {
            let (lines, bad) = read_segment(&path).unwrap();
            assert_eq!(bad, 0);
            read.extend(lines.into_iter().map(|l| l.seq));
        }
        assert_eq!(
            read,
            (0..seq).collect::<Vec<_>>(),
            "every event, once, in order"
        );
        journal.close(seq);
        assert!(segments(dir.path()).unwrap().is_empty());
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
}
