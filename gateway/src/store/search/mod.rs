//! The statement index: one row per statement of every recording (what
//! [`crate::record::statements`] makes of it), per-session counts, and the auditor's search over
//! them. A part of [`super::Store`] (its supertrait), implemented by both engines in this folder
//! (tables in migration 0007), built by [`crate::record::indexer`].
//!
//! Free text is never put into SQL or into a full-text query's syntax as it was typed: SQLite
//! gets its words (or its substring) as quoted FTS5 phrases, PostgreSQL gets it through
//! `plainto_tsquery` or as an escaped `ILIKE` pattern, both bound as parameters.

mod event_hashes;
mod fts_query;
mod postgres;
mod snippet;
mod sqlite;

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{StoreError, StoreResult};
use crate::record::event::StatementClass;
use crate::record::statements::IndexedStatement;
pub use snippet::{MARK_END, MARK_START};

/// Statements per page at most.
pub const MAX_PAGE: i64 = 500;

/// Search text beyond this many characters is ignored (a pasted statement is plenty).
const MAX_TEXT_CHARS: usize = 1_000;
/// Words of a search at most; more would only make the query slower, not the result better.
const MAX_WORDS: usize = 16;
/// Substrings shorter than this have no trigram to look up: they are searched as words.
pub const MIN_SUBSTRING_CHARS: usize = 3;

/// A session whose recording has events not indexed yet, or that ended since it was last
/// indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToIndex {
    pub session_id: Uuid,
    pub person_login: String,
    pub target_name: String,
    /// The next seq to read.
    pub indexed_seq: i64,
    /// Where a fresh fold starts (see [`crate::record::statements`]); at most `indexed_seq`.
    pub resume_seq: i64,
    /// The session had ended when this was read: once its events are read to the last, it is
    /// complete.
    pub ended: bool,
    /// How far its hash chain is checked.
    pub chain: ChainProgress,
}

/// How far the indexer has checked a session's hash chain (`session_stats.chain_*`, migration
/// 0009).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainProgress {
    /// `(seq, hash)`: events 0..=seq link up and `hash` is the hash of event seq; `None` while
    /// no event is checked.
    pub verified: Option<(i64, Vec<u8>)>,
    /// `(seq, reason)`: event seq does not link up (nothing after it is checked, ever).
    pub broken: Option<(i64, String)>,
}

/// [`ChainProgress`] as `session_stats` stores it.
struct ChainColumns<'a> {
    verified: Option<i64>,
    hash: Option<&'a [u8]>,
    broken: Option<i64>,
    reason: Option<&'a str>,
}

impl ChainProgress {
    /// The seq the check continues at.
    pub fn next_seq(&self) -> i64 {
        self.verified.as_ref().map_or(0, |(seq, _)| seq + 1)
    }

    /// The values of the `chain_*` columns.
    fn columns(&self) -> ChainColumns<'_> {
        ChainColumns {
            verified: self.verified.as_ref().map(|(seq, _)| *seq),
            hash: self.verified.as_ref().map(|(_, hash)| hash.as_slice()),
            broken: self.broken.as_ref().map(|(seq, _)| *seq),
            reason: self.broken.as_ref().map(|(_, reason)| reason.as_str()),
        }
    }

    fn from_columns(
        verified: Option<i64>,
        hash: Option<Vec<u8>>,
        broken: Option<i64>,
        reason: Option<String>,
    ) -> ChainProgress {
        ChainProgress {
            verified: verified.zip(hash),
            broken: broken.map(|seq| (seq, reason.unwrap_or_default())),
        }
    }
}

/// What one round of indexing found in a session, stored by [`SearchStore::save_index`].
#[derive(Debug, Clone)]
pub struct IndexUpdate<'a> {
    pub session_id: Uuid,
    pub person_login: &'a str,
    pub target_name: &'a str,
    /// `indexed_seq` and `resume_seq` as the round read them: the update is stored only if
    /// they are still so (no other indexer got there first).
    pub from_seq: i64,
    pub from_resume_seq: i64,
    /// The next seq to read after this round, and where the next fold starts.
    pub to_seq: i64,
    pub resume_seq: i64,
    /// Nothing more will come: the session ended and everything was read.
    pub complete: bool,
    /// The statements given out this round (their counts are added to the session's).
    pub statements: &'a [IndexedStatement],
    /// How far the hash chain is checked after this round (replaces what was stored).
    pub chain: ChainProgress,
}

/// The counts the session list shows, and how far the indexer checked the hash chain (what
/// [`crate::record::integrity::assess`] judges a session by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    pub statements: i64,
    pub errors: i64,
    /// Statements with at least one risk flag.
    pub risky: i64,
    pub indexed_seq: i64,
    /// False while the session is live or its last events are not indexed yet.
    pub complete: bool,
    /// Events 0..=this link up (`None`: none checked yet).
    pub chain_verified_seq: Option<i64>,
    /// The hash of event `chain_verified_seq` (32 bytes).
    pub chain_hash: Option<Vec<u8>>,
    /// The first event that does not link up, and why.
    pub chain_broken_seq: Option<i64>,
    pub chain_broken_reason: Option<String>,
}

/// How free text matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TextMatch {
    /// Every word appears in the SQL or the parameters, case aside. Words are runs of letters
    /// and digits: punctuation separates them (`bob@example.com` holds `bob`, `example` and
    /// `com`; `order_items` holds `order` and `items`).
    #[default]
    Words,
    /// The text appears in the SQL as it is, case aside (at least [`MIN_SUBSTRING_CHARS`]
    /// characters; shorter text is searched as words).
    Substring,
}

/// What to search for; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct StatementQuery {
    pub text: Option<String>,
    pub text_match: TextMatch,
    pub session_id: Option<Uuid>,
    pub person: Option<String>,
    pub target: Option<String>,
    pub class: Option<StatementClass>,
    pub has_error: Option<bool>,
    pub risky: Option<bool>,
    /// Statements at or after this time.
    pub after: Option<DateTime<Utc>>,
    /// Statements before this time.
    pub before: Option<DateTime<Utc>>,
}

impl StatementQuery {
    /// Statements holding all these words (in their SQL or parameters).
    pub fn words(text: &str) -> Self {
        StatementQuery {
            text: Some(text.into()),
            ..StatementQuery::default()
        }
    }

    /// Statements whose SQL or parameters contain `text`, case aside.
    pub fn substring(text: &str) -> Self {
        StatementQuery {
            text_match: TextMatch::Substring,
            ..StatementQuery::words(text)
        }
    }
}

/// One page of results, newest first (`at DESC, session_id DESC, seq DESC`): pass the last
/// hit's [`StatementHit::cursor`] as the next page's `before`.
#[derive(Debug, Clone, Copy)]
pub struct StatementPage {
    pub before: Option<(DateTime<Utc>, Uuid, i64)>,
    /// At most [`MAX_PAGE`].
    pub limit: i64,
}

/// A statement found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementHit {
    pub session_id: Uuid,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub person_login: String,
    pub target_name: String,
    pub class: StatementClass,
    pub risks: Vec<String>,
    pub risky: bool,
    pub has_error: bool,
    pub sqlstate: Option<String>,
    pub tag: Option<String>,
    pub rows: Option<i64>,
    pub duration_micros: i64,
    /// The whole SQL and parameters as recorded (capped and redacted by the capture), and the
    /// error's message: what exports carry.
    pub sql: String,
    pub params: String,
    pub error_message: Option<String>,
    /// Part of the SQL (or of the parameters, when only they matched), plain text with each
    /// match between [`MARK_START`] and [`MARK_END`]: escape it for HTML first, then turn the
    /// markers into `<mark>` and `</mark>`. The recorded text never holds the markers.
    pub snippet: String,
}

impl StatementHit {
    /// Where the next page starts.
    pub fn cursor(&self) -> (DateTime<Utc>, Uuid, i64) {
        (self.at, self.session_id, self.seq)
    }
}

/// The statement index's part of the store.
#[async_trait]
pub trait SearchStore: Send + Sync {
    /// Up to `limit` sessions with stored events from their `indexed_seq` on, or that ended and
    /// are not complete, least recently indexed first. Reads incomplete sessions only.
    async fn sessions_to_index(&self, limit: i64) -> StoreResult<Vec<SessionToIndex>>;

    /// Stores a round's statements and adds their counts, in one transaction, if the session's
    /// `indexed_seq` and `resume_seq` are still `from_seq` and `from_resume_seq` and it is not
    /// complete; returns false (storing nothing) otherwise: another indexer got there first.
    async fn save_index(&self, update: &IndexUpdate<'_>) -> StoreResult<bool>;

    /// The counts of the given sessions; a session the store has no row for is left out.
    async fn session_stats(&self, ids: &[Uuid]) -> StoreResult<HashMap<Uuid, SessionStats>>;

    /// One page of the statements matching `query`, newest first. Text that cannot match
    /// (nothing but punctuation, say) finds nothing; no text lists by the filters alone.
    async fn search_statements(
        &self,
        query: &StatementQuery,
        page: &StatementPage,
    ) -> StoreResult<Vec<StatementHit>>;

    /// The stored hash of each event `(session, seq)` of `keys` (the `hash` that
    /// `session_events` gives it), in one query for any number of keys: a search export ties
    /// each statement of a page of hits to its event. An event the store does not hold (a gap
    /// in the recording, a purged session) is left out.
    async fn event_hashes(
        &self,
        keys: &[(Uuid, i64)],
    ) -> StoreResult<HashMap<(Uuid, i64), Vec<u8>>>;
}

/// What the free text of a query asks for, as both engines search it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Needle {
    /// No text: the filters alone.
    Nothing,
    Words(Vec<String>),
    Substring(String),
    /// Text with nothing to search for in it: no statement matches.
    Unmatchable,
}

impl Needle {
    fn of(query: &StatementQuery) -> Needle {
        let Some(text) = &query.text else {
            return Needle::Nothing;
        };
        // NUL cannot be in stored text (nor bound as PostgreSQL text); the rest is capped.
        let text: String = text
            .chars()
            .filter(|c| *c != '\0')
            .take(MAX_TEXT_CHARS)
            .collect();
        if text.trim().is_empty() {
            return Needle::Nothing;
        }
        if query.text_match == TextMatch::Substring && text.chars().count() >= MIN_SUBSTRING_CHARS {
            return Needle::Substring(text);
        }
        let words = words(&text);
        if words.is_empty() {
            Needle::Unmatchable
        } else {
            Needle::Words(words)
        }
    }
}

/// The words of `text`: runs of letters and digits, as both engines cut the indexed text into
/// words (migration 0007).
fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() || words.iter().any(|w| w == word) {
            continue;
        }
        words.push(word.to_owned());
        if words.len() == MAX_WORDS {
            break;
        }
    }
    words
}

/// An escaped `LIKE` pattern (escape character `\`) matching `text` anywhere.
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The stored name of a statement class (its serde name).
pub fn class_name(class: StatementClass) -> &'static str {
    class.name()
}

/// A statement class by its stored name.
pub fn parse_class(name: &str) -> Option<StatementClass> {
    StatementClass::ALL.into_iter().find(|c| c.name() == name)
}

fn decode_class(name: &str) -> StoreResult<StatementClass> {
    parse_class(name)
        .ok_or_else(|| StoreError::Corrupt(format!("recorded_statements.class is '{name}'")))
}

/// The counts a round adds: statements, those with an error, those with a risk.
fn counts(statements: &[IndexedStatement]) -> (i64, i64, i64) {
    let n = |pred: fn(&IndexedStatement) -> bool| statements.iter().filter(|s| pred(s)).count();
    (
        statements.len() as i64,
        n(|s| s.error.is_some()) as i64,
        n(|s| !s.risks.is_empty()) as i64,
    )
}

/// A row count or duration as a signed column holds it.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Rows per INSERT: the largest power of two up to 256 and `n`, so that a few statement texts
/// (cached prepared statements) serve every batch. 16 parameters a row stays below both
/// engines' limits on parameters per statement.
fn insert_chunk(n: usize) -> usize {
    let n = n.clamp(1, 256);
    1 << n.ilog2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(text: &str, text_match: TextMatch) -> StatementQuery {
        StatementQuery {
            text: Some(text.into()),
            text_match,
            ..StatementQuery::default()
        }
    }

    #[test]
    fn words_are_runs_of_letters_and_digits_without_repeats() {
        assert_eq!(
            words("SELECT * FROM public.order_items WHERE id=$1 -- café select"),
            [
                "SELECT", "FROM", "public", "order", "items", "WHERE", "id", "1", "café", "select"
            ]
        );
        assert!(words("\"*()' NEAR/ \0").contains(&"NEAR".to_string()));
    }

    #[test]
    fn hostile_text_becomes_words_substrings_or_nothing() {
        assert_eq!(
            Needle::of(&query("***()\"'", TextMatch::Words)),
            Needle::Unmatchable
        );
        assert_eq!(Needle::of(&query("  ", TextMatch::Words)), Needle::Nothing);
        assert_eq!(
            Needle::of(&query("ab", TextMatch::Substring)),
            Needle::Words(vec!["ab".into()])
        );
        assert_eq!(
            Needle::of(&query("a\0b\0c", TextMatch::Substring)),
            Needle::Substring("abc".into())
        );
        let long = "x".repeat(10_000);
        let Needle::Substring(cut) = Needle::of(&query(&long, TextMatch::Substring)) else {
            panic!("a substring")
        };
        assert_eq!(cut.len(), MAX_TEXT_CHARS);
        let many: String = (0..100).map(|i| format!("w{i} ")).collect();
        let Needle::Words(words) = Needle::of(&query(&many, TextMatch::Words)) else {
            panic!("words")
        };
        assert_eq!(words.len(), MAX_WORDS);
    }

    #[test]
    fn like_patterns_escape_their_wildcards() {
        assert_eq!(contains_pattern(r"50%_a\b"), r"%50\%\_a\\b%");
    }

    #[test]
    fn class_names_round_trip() {
        for class in StatementClass::ALL {
            assert_eq!(parse_class(class_name(class)), Some(class));
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class_name(class)));
        }
        assert_eq!(parse_class("select"), None);
    }

    #[test]
    fn inserts_use_a_few_chunk_sizes() {
        assert_eq!(insert_chunk(0), 1);
        assert_eq!(insert_chunk(3), 2);
        assert_eq!(insert_chunk(256), 256);
        assert_eq!(insert_chunk(10_000), 256);
    }
}
