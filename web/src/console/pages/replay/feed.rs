//! A recording turned into replay entries, a page at a time.
//!
//! Statements come from the same folder as the statement index
//! (`gateway::record::statements`), with their details. A page ends at a quiet point of the
//! session, so the next page needs nothing of this one but its [`Cursor`]: where to go on and
//! the transaction status there (for the prompt). That makes pages of a 100,000-statement
//! session as cheap as the first, and lets the live view go on from the last page.

use chrono::{DateTime, Utc};
use gateway::record::event::{Event, EventKind};
use gateway::record::statements::StatementFolder;
use gateway::store::StoredEvent;
use serde::{Deserialize, Serialize};

use super::entry::{self, Entry, EventEntry, message_view, offset_ms, stamp};

/// Where a page starts: a quiet point of the session and its transaction status there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub seq: i64,
    pub status: char,
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor {
            seq: 0,
            status: 'I',
        }
    }
}

pub struct Feed {
    start: DateTime<Utc>,
    folder: StatementFolder,
    /// Entries that are not statements, waiting for the statements before them.
    events: Vec<Entry>,
    /// Statements (and events) ready, in seq order.
    ready: Vec<Entry>,
    /// How many of `ready` are statements.
    ready_statements: usize,
    /// The seq expected next, to name events missing from the store.
    expected: i64,
    /// Transaction status at the folder's last quiet point.
    quiet_status: char,
}

impl Feed {
    pub fn new(start: DateTime<Utc>, cursor: Cursor) -> Self {
        Feed {
            start,
            folder: StatementFolder::with_details(cursor.seq, cursor.status),
            events: Vec::new(),
            ready: Vec::new(),
            ready_statements: 0,
            expected: cursor.seq,
            quiet_status: cursor.status,
        }
    }

    pub fn push(&mut self, stored: &StoredEvent) {
        if stored.seq > self.expected {
            self.note(
                self.expected,
                stored.at,
                "missing",
                format!(
                    "events {}..{} are missing from the store (see the integrity check)",
                    self.expected,
                    stored.seq - 1
                ),
                false,
            );
        }
        self.expected = self.expected.max(stored.seq + 1);
        match serde_json::from_str::<Event>(&stored.body) {
            Ok(event) => {
                self.event_entry(stored.seq, &event);
                self.folder.push(&event);
            }
            Err(e) => {
                self.note(
                    stored.seq,
                    stored.at,
                    "unreadable",
                    format!("event {} ({}) cannot be read: {e}", stored.seq, stored.kind),
                    false,
                );
                self.folder.skip(stored.seq);
            }
        }
        self.collect();
    }

    /// The recording is over: statements still open are shown as they stand.
    pub fn finish(&mut self) {
        self.folder.finish();
        self.collect();
    }

    /// Statements ready so far.
    pub fn ready_statements(&self) -> usize {
        self.ready_statements
    }

    /// Everything before the cursor: entries a next page (from [`Self::cursor`]) will not
    /// show again.
    pub fn take_ready(&mut self) -> Vec<Entry> {
        self.ready_statements = 0;
        std::mem::take(&mut self.ready)
    }

    /// Where the next page starts.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            seq: self.folder.resume_seq(),
            status: self.quiet_status,
        }
    }

    /// At a quiet point: nothing read is left for the next page to re-read.
    pub fn is_quiet(&self) -> bool {
        self.folder.resume_seq() == self.folder.next_seq()
    }

    fn collect(&mut self) {
        let resume = self.folder.resume_seq();
        if resume == self.folder.next_seq() {
            self.quiet_status = self.folder.status();
        }
        let statements = self.folder.take_finished_with_details();
        self.ready_statements += statements.len();
        let loose = self.folder.take_loose();
        if statements.is_empty() && loose.is_empty() && self.events.is_empty() {
            return;
        }
        let start = self.start;
        let mut batch: Vec<Entry> = statements
            .into_iter()
            .map(|(s, detail)| Entry::Statement(Box::new(entry::statement(start, s, detail))))
            .collect();
        for (seq, message) in loose {
            let text = format!("{}: {}", message.severity, message.message);
            batch.push(Entry::Event(Box::new(EventEntry {
                seq,
                offset_ms: 0,
                at: String::new(),
                what: if message.severity == "NOTICE"
                    || message.severity == "WARNING"
                    || message.severity == "INFO"
                {
                    "notice"
                } else {
                    "error"
                },
                text,
                noise: false,
                message: Some(message_view(&message)),
            })));
        }
        // Events are kept until the folder has passed them, so that a page never shows an
        // event whose statement comes on the next page.
        let (now, later): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|e| e.seq() < resume);
        self.events = later;
        batch.extend(now);
        batch.sort_by_key(Entry::seq);
        self.fill_loose_times(&mut batch);
        self.ready.extend(batch);
    }

    /// Loose messages take the time of the entry before them (the folder gives no time).
    fn fill_loose_times(&self, batch: &mut [Entry]) {
        let mut last: Option<(i64, String)> = None;
        for entry in batch.iter_mut() {
            match entry {
                Entry::Statement(s) => last = Some((s.offset_ms, s.at.clone())),
                Entry::Event(e) if e.at.is_empty() => {
                    if let Some((offset, at)) = &last {
                        e.offset_ms = *offset;
                        e.at = at.clone();
                    }
                }
                Entry::Event(e) => last = Some((e.offset_ms, e.at.clone())),
            }
        }
    }

    fn note(&mut self, seq: i64, at: DateTime<Utc>, what: &'static str, text: String, noise: bool) {
        self.events.push(Entry::Event(Box::new(EventEntry {
            seq,
            offset_ms: offset_ms(self.start, at),
            at: stamp(at),
            what,
            text,
            noise,
            message: None,
        })));
    }

    /// The entry an event makes on its own, if any (statements and their answers come from
    /// the folder).
    fn event_entry(&mut self, seq: i64, event: &Event) {
        let (what, text, noise) = match &event.kind {
            EventKind::SessionStart {
                person,
                groups,
                target,
                db_role,
                client_addr,
                application_name,
                tls_version,
                ..
            } => (
                "session_start",
                format!(
                    "{person} (groups: {}) connected to {target} as {db_role} from {client_addr}, \
                     application {}, {}",
                    if groups.is_empty() {
                        "none".to_string()
                    } else {
                        groups.join(", ")
                    },
                    application_name.as_deref().unwrap_or("unnamed"),
                    tls_version.as_deref().unwrap_or("no TLS"),
                ),
                false,
            ),
            EventKind::SessionEnd {
                reason,
                detail,
                bytes_client_to_server,
                bytes_server_to_client,
            } => (
                "session_end",
                format!(
                    "session ended: {}{}; {bytes_client_to_server} bytes from the client, \
                     {bytes_server_to_client} bytes to it",
                    reason.replace('_', " "),
                    detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
                false,
            ),
            EventKind::ParameterStatus { name, value } => {
                ("parameter_status", format!("{name} = {value}"), true)
            }
            EventKind::Notification {
                process_id,
                channel,
                payload,
            } => (
                "notification",
                format!(
                    "Asynchronous notification \"{channel}\" with payload \"{}\" received from \
                     server process with PID {process_id}.",
                    payload.text
                ),
                false,
            ),
            EventKind::Parse { statement, sql, .. } => (
                "protocol",
                format!("Parse {}: {}", name(statement), first_line(&sql.text)),
                true,
            ),
            EventKind::Bind {
                portal,
                statement,
                params,
            } => (
                "protocol",
                format!(
                    "Bind portal {} to {} with {} parameter(s)",
                    name(portal),
                    name(statement),
                    params.len()
                ),
                true,
            ),
            EventKind::Describe { target, name: n } => (
                "protocol",
                format!("Describe {} {}", kind(*target), name(n)),
                true,
            ),
            EventKind::Close { target, name: n } => (
                "protocol",
                format!("Close {} {}", kind(*target), name(n)),
                true,
            ),
            EventKind::Sync => ("protocol", "Sync".to_string(), true),
            EventKind::Flush => ("protocol", "Flush".to_string(), true),
            _ => return,
        };
        self.note(seq, event.at, what, text, noise);
    }
}

fn name(n: &str) -> String {
    if n.is_empty() {
        "(unnamed)".into()
    } else {
        format!("\"{n}\"")
    }
}

fn kind(target: char) -> &'static str {
    if target == 'S' { "statement" } else { "portal" }
}

fn first_line(sql: &str) -> String {
    let line = sql.lines().next().unwrap_or("");
    let cut: String = line.chars().take(120).collect();
    if cut.len() < sql.len() {
        format!("{cut}…")
    } else {
        cut
    }
}
