//! A recording as the statements an auditor searches: the events of one session folded into one
//! [`IndexedStatement`] per statement the client ran, with its SQL, parameters, class, risks,
//! outcome, row count and time. The statement index (`store::search`) is built from these, off
//! the recording path (`record::indexer`).
//!
//! What counts as one statement:
//! - a simple Query, however many statements its text holds: its tag is the last command's, its
//!   rows the sum of the counted ones, its error the first;
//! - an Execute: its SQL is the one the capture attributed to it, its parameters those of the Bind
//!   that made its portal. A portal executed again after PortalSuspended (a client reading with a
//!   fetch size) continues the statement of its first Execute: the later Executes add their rows
//!   and time, so a cursor read in a hundred fetches is one statement, finished once its portal
//!   completes, is closed or dies with its transaction;
//! - a FunctionCall;
//! - a Parse that fails while no Execute of it was sent: at the Parse's seq, so that an auditor
//!   looking for errors finds it. A Parse that succeeds but is never executed ran nothing;
//! - not an Execute the server skipped after an earlier error of its batch: it never ran.
//!
//! COPY is part of the statement that started it (its row count comes from its command tag); COPY
//! data is not indexed.
//!
//! Statements are given out only at quiet points: nothing waits for an answer, no portal is
//! suspended or bound without having been executed. From a quiet point, a fresh folder needs none
//! of what came before, except the Parse of a named statement prepared earlier: it then takes the
//! class and risks of the SQL the Execute carries from the same classifier, which gives what the
//! recording says unless that SQL was cut at the capture's cap or redacted. So an indexer can fold
//! a live session in rounds without keeping folders between them: each round starts a folder at
//! the last quiet point ([`StatementFolder::resume_seq`]) and re-reads what came after it.
//!
//! Memory is bounded: prepared statements, portals and unfinished statements are capped. A session
//! that stays away from quiet points too long (a cursor held open while thousands of statements
//! run, a client pipelining without end) gets a forced cut: its unfinished statements are given
//! out as they are, and answers arriving after the cut for requests before it are ignored.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};

use super::classify::Classifier;
use super::event::{Capped, Column, Event, EventKind, Param, ServerMessage, StatementClass};

mod detail;
pub use detail::{CopyDetail, ResultSet, StatementDetail};

/// Prepared statements remembered (their class and risks), as the capture's default cap.
const MAX_PREPARED: usize = 10_000;
/// Portals remembered; a hostile client binding more loses the parameters of the newest.
const MAX_PORTALS: usize = 1_000;
/// Statements begun and not given out yet; beyond this the folder cuts (see the module docs).
const MAX_UNRELEASED: usize = 1_000;
/// Events after the last quiet point beyond which the folder cuts, so that a round never re-reads
/// more than this.
const MAX_EVENTS_SINCE_QUIET: i64 = 10_000;
/// SQL is indexed up to this many bytes (the capture's cap can be set higher, and
/// PostgreSQL's text search refuses documents over 1 MB).
const MAX_SQL_BYTES: usize = 64 * 1024;
/// Parameters of one statement are rendered up to this many bytes.
const MAX_PARAMS_BYTES: usize = 16 * 1024;
/// An error message is kept up to this many bytes.
const MAX_ERROR_BYTES: usize = 4 * 1024;

/// One statement as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedStatement {
    /// The seq of the Query, Execute or FunctionCall event that ran it (of the Parse, for a
    /// Parse that failed on its own).
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The SQL as recorded (capped and redacted by the capture), up to 64 KiB.
    pub sql: String,
    /// Bound parameters as SQL literals: `$1 = 'abc', $2 = NULL`; empty without any.
    pub params: String,
    pub class: StatementClass,
    pub risks: Vec<String>,
    /// SQLSTATE and message of its first error.
    pub error: Option<(String, String)>,
    /// The command tag of its (last) completion.
    pub tag: Option<String>,
    /// Rows the server said it returned or changed, when it said.
    pub rows: Option<u64>,
    pub duration_micros: u64,
}

/// A statement being folded.
#[derive(Debug)]
struct Draft {
    statement: IndexedStatement,
    /// Its last answer came (completion, error, end of its portal or session).
    finished: bool,
    /// When its latest command ended (a simple query's next command is timed from there).
    last_end: Option<DateTime<Utc>>,
    /// Rows seen in `Rows` events since its last Execute: a PortalSuspended carries no count.
    rows_seen: u64,
    /// What a replay shows (folders made with [`StatementFolder::with_details`]).
    detail: Option<Box<StatementDetail>>,
}

/// A request waiting for the server's answer.
#[derive(Debug)]
enum Waiting {
    /// A Query or FunctionCall (the seq of its draft): answered until ReadyForQuery.
    Simple(i64),
    /// An Execute: answered by CommandComplete, EmptyQuery, PortalSuspended or an error.
    Execute {
        draft: i64,
        portal: String,
        started: DateTime<Utc>,
        /// It continues a suspended portal's statement rather than beginning one.
        continues: bool,
    },
    /// A Parse not executed (yet). Its answer (ParseComplete) is not recorded: it succeeded once
    /// anything behind it is answered, and an error while it is first in line is its own.
    Parse(Box<ParseOnly>),
    Sync,
}

#[derive(Debug)]
struct ParseOnly {
    seq: i64,
    at: DateTime<Utc>,
    name: String,
    sql: String,
    class: StatementClass,
    risks: Vec<String>,
    /// The SQL as recorded, kept for a replay's detail only.
    recorded: Option<Capped>,
}

#[derive(Debug)]
struct Portal {
    statement: String,
    params: String,
    /// The parameters as recorded, kept for a replay's detail only.
    raw: Vec<Param>,
    /// None until executed; then the statement it runs while it is suspended.
    state: PortalState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortalState {
    Bound,
    Suspended(i64),
    Done,
}

/// Folds one session's events into statements; see the module documentation.
#[derive(Debug)]
pub struct StatementFolder {
    classifier: Classifier,
    prepared: HashMap<String, (StatementClass, Vec<String>)>,
    portals: HashMap<String, Portal>,
    waiting: VecDeque<Waiting>,
    /// Statements begun and not given out, by seq.
    drafts: BTreeMap<i64, Draft>,
    /// Finished statements ready to be given out, in seq order.
    released: Vec<(IndexedStatement, Option<Box<StatementDetail>>)>,
    /// Collect each statement's [`StatementDetail`].
    details: bool,
    /// Transaction status from the last ReadyForQuery.
    status: char,
    /// Errors and notices that answered no statement (details only), with their seq.
    loose: Vec<(i64, ServerMessage)>,
    /// Statements a Describe asked about, not answered yet (details only).
    describing: VecDeque<String>,
    /// Columns described for prepared statements (details only).
    columns_of: HashMap<String, Vec<Column>>,
    /// The seq after the last event seen.
    next_seq: i64,
    /// The seq after the last quiet point (or cut).
    resume_seq: i64,
}

impl StatementFolder {
    /// A folder reading a session from `seq` on: 0, or a quiet point ([`Self::resume_seq`]).
    pub fn new(seq: i64) -> Self {
        StatementFolder {
            classifier: Classifier::default(),
            prepared: HashMap::new(),
            portals: HashMap::new(),
            waiting: VecDeque::new(),
            drafts: BTreeMap::new(),
            released: Vec::new(),
            details: false,
            status: 'I',
            loose: Vec::new(),
            describing: VecDeque::new(),
            columns_of: HashMap::new(),
            next_seq: seq,
            resume_seq: seq,
        }
    }

    /// A folder that also collects what a replay shows of each statement
    /// ([`Self::take_finished_with_details`]). `status` is the transaction status at `seq`
    /// ('I' at the start of a session).
    pub fn with_details(seq: i64, status: char) -> Self {
        StatementFolder {
            details: true,
            status,
            ..StatementFolder::new(seq)
        }
    }

    /// Transaction status from the last ReadyForQuery folded.
    pub fn status(&self) -> char {
        self.status
    }

    /// Statements given out since the last call with their details (`None` unless made with
    /// [`Self::with_details`]), in seq order.
    pub fn take_finished_with_details(
        &mut self,
    ) -> Vec<(IndexedStatement, Option<Box<StatementDetail>>)> {
        std::mem::take(&mut self.released)
    }

    /// Errors and notices that answered no statement (a FATAL at shutdown, a notice between
    /// statements), with their seq; collected only with details.
    pub fn take_loose(&mut self) -> Vec<(i64, ServerMessage)> {
        std::mem::take(&mut self.loose)
    }

    fn detail(&self, sql: Option<&Capped>, params: &[Param]) -> Option<Box<StatementDetail>> {
        self.details
            .then(|| Box::new(StatementDetail::new(sql, params, self.status)))
    }

    /// Statements sent before this ReadyForQuery arrived (a pipelining client does not wait
    /// for it) run in the status it gives, which their prompt shows.
    fn update_waiting_status(&mut self) {
        if !self.details {
            return;
        }
        for waiting in &self.waiting {
            let seq = match waiting {
                Waiting::Simple(seq) => *seq,
                Waiting::Execute {
                    draft,
                    continues: false,
                    ..
                } => *draft,
                _ => continue,
            };
            if let Some(detail) = self
                .drafts
                .get_mut(&seq)
                .and_then(|d| d.detail.as_deref_mut())
            {
                detail.status_before = self.status;
            }
        }
    }

    /// The detail of the statement first in line, after Parses ahead of it (answered now).
    fn front_detail(&mut self) -> Option<&mut StatementDetail> {
        if !self.details {
            return None;
        }
        self.answered();
        self.front_draft()?.detail.as_deref_mut()
    }

    /// The seq after the last event folded.
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// Where a fresh folder would start to go on from here without losing a statement: every
    /// statement begun before it has been given out by [`Self::take_finished`].
    pub fn resume_seq(&self) -> i64 {
        self.resume_seq
    }

    /// Statements given out since the last call, in seq order.
    pub fn take_finished(&mut self) -> Vec<IndexedStatement> {
        std::mem::take(&mut self.released)
            .into_iter()
            .map(|(statement, _)| statement)
            .collect()
    }

    /// An event that could not be read: it counts as seen, nothing else.
    pub fn skip(&mut self, seq: i64) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.after_event();
    }

    /// The session is over (its end event, or an ended session read to its last event):
    /// everything begun is finished as it stands.
    pub fn finish(&mut self) {
        self.cut_at(None);
    }

    pub fn push(&mut self, event: &Event) {
        let seq = i64::try_from(event.seq).unwrap_or(i64::MAX);
        let at = event.at;
        match &event.kind {
            EventKind::Query { sql, class, risks } => {
                // A simple Query destroys the unnamed statement and portal.
                self.prepared.remove("");
                self.portals.remove("");
                let detail = self.detail(Some(sql), &[]);
                self.begin(
                    seq,
                    at,
                    sql_text(sql),
                    String::new(),
                    (*class, risks),
                    detail,
                );
                self.waiting.push_back(Waiting::Simple(seq));
            }
            EventKind::Parse {
                statement,
                sql,
                class,
                risks,
                ..
            } => self.parse(seq, at, statement, sql, *class, risks),
            EventKind::Bind {
                portal,
                statement,
                params,
            } => self.bind(portal, statement, params),
            EventKind::Execute {
                portal,
                statement,
                sql,
                ..
            } => self.execute(seq, at, portal, statement, sql.as_ref()),
            EventKind::Close { target, name } => self.close(*target, name),
            EventKind::Sync => self.waiting.push_back(Waiting::Sync),
            EventKind::FunctionCall { function_oid, args } => {
                let sql = format!("-- function call, oid {function_oid}");
                let params = render_params(args);
                let class = StatementClass::Unknown;
                let detail = self.detail(None, args);
                self.begin(seq, at, sql, params, (class, &[]), detail);
                self.waiting.push_back(Waiting::Simple(seq));
            }
            EventKind::RowDescription { columns } => {
                self.answered();
                match self.front_detail() {
                    Some(detail) => detail.columns(columns),
                    // The answer to a Describe of a prepared statement.
                    None => {
                        if let Some(name) = self.describing.pop_front()
                            && (self.columns_of.len() < MAX_PREPARED
                                || self.columns_of.contains_key(&name))
                        {
                            self.columns_of.insert(name, columns.clone());
                        }
                    }
                }
            }
            EventKind::Describe { target: 'S', name } if self.details => {
                if self.describing.len() < MAX_PORTALS {
                    self.describing.push_back(name.clone());
                }
            }
            EventKind::CopyStart { direction, binary } => {
                self.answered();
                if let Some(detail) = self.front_detail() {
                    detail.copy_start(direction, *binary);
                }
            }
            EventKind::Rows { rows, omitted } => {
                self.answered();
                let count = rows.len() as u64 + omitted;
                if let Some(draft) = self.front_draft() {
                    draft.rows_seen += count;
                    if let Some(detail) = draft.detail.as_deref_mut() {
                        detail.rows(rows, *omitted);
                    }
                }
            }
            EventKind::CommandComplete {
                tag,
                rows,
                duration_micros,
            } => {
                if let Some(detail) = self.front_detail() {
                    detail.complete(tag);
                }
                self.complete(at, Some(tag), *rows, Some(*duration_micros))
            }
            EventKind::EmptyQuery => self.complete(at, None, None, None),
            EventKind::PortalSuspended => self.suspended(at),
            EventKind::Error(message) => self.error(seq, at, message),
            EventKind::ReadyForQuery { status } => {
                self.ready_for_query(at, *status);
                self.status = *status;
                self.update_waiting_status();
                // A Describe answered by NoData (not recorded) is answered by now.
                self.describing.clear();
            }
            EventKind::Notice(message) if self.details => match self.front_detail() {
                Some(detail) => detail.notice(message),
                None => self.loose.push((seq, message.clone())),
            },
            EventKind::CopyData { data } => {
                if let Some(detail) = self.front_detail() {
                    detail.copy_data(data);
                }
            }
            EventKind::CopyEnd {
                bytes,
                rows,
                outcome,
                ..
            } => {
                if let Some(detail) = self.front_detail() {
                    detail.copy_end(*bytes, *rows, outcome);
                }
            }
            EventKind::SessionEnd { .. } => self.cut_at(Some(at)),
            EventKind::SessionStart { .. }
            | EventKind::Describe { .. }
            | EventKind::Flush
            | EventKind::Notice(_)
            | EventKind::Notification { .. }
            | EventKind::ParameterStatus { .. } => {}
        }
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
        self.after_event();
    }

    fn begin(
        &mut self,
        seq: i64,
        at: DateTime<Utc>,
        sql: String,
        params: String,
        (class, risks): (StatementClass, &[String]),
        detail: Option<Box<StatementDetail>>,
    ) {
        self.drafts.insert(
            seq,
            Draft {
                statement: IndexedStatement {
                    seq,
                    at,
                    sql,
                    params,
                    class,
                    risks: risks.to_vec(),
                    error: None,
                    tag: None,
                    rows: None,
                    duration_micros: 0,
                },
                finished: false,
                last_end: None,
                rows_seen: 0,
                detail,
            },
        );
    }

    fn parse(
        &mut self,
        seq: i64,
        at: DateTime<Utc>,
        name: &str,
        sql: &Capped,
        class: StatementClass,
        risks: &[String],
    ) {
        self.columns_of.remove(name);
        if self.prepared.len() < MAX_PREPARED || self.prepared.contains_key(name) {
            self.prepared
                .insert(name.to_owned(), (class, risks.to_vec()));
        }
        self.waiting.push_back(Waiting::Parse(Box::new(ParseOnly {
            seq,
            at,
            name: name.to_owned(),
            sql: sql_text(sql),
            class,
            risks: risks.to_vec(),
            recorded: self.details.then(|| sql.clone()),
        })));
    }

    fn bind(&mut self, portal: &str, statement: &str, params: &[Param]) {
        if let Some(old) = self.portals.remove(portal) {
            self.portal_gone(old.state);
        }
        if self.portals.len() < MAX_PORTALS {
            self.portals.insert(
                portal.to_owned(),
                Portal {
                    statement: statement.to_owned(),
                    params: render_params(params),
                    raw: if self.details {
                        params.to_vec()
                    } else {
                        Vec::new()
                    },
                    state: PortalState::Bound,
                },
            );
        }
    }

    fn execute(
        &mut self,
        seq: i64,
        at: DateTime<Utc>,
        portal_name: &str,
        statement: &str,
        sql: Option<&Capped>,
    ) {
        // The Parse of this statement in the same batch is executed now: its errors are this
        // statement's.
        self.take_waiting_parse(statement);
        let portal = self.portals.get_mut(portal_name);
        if let Some(Portal {
            state: PortalState::Suspended(draft),
            ..
        }) = portal
            && self.drafts.contains_key(draft)
        {
            let draft = *draft;
            self.waiting.push_back(Waiting::Execute {
                draft,
                portal: portal_name.to_owned(),
                started: at,
                continues: true,
            });
            return;
        }
        let (params, raw) = match portal {
            Some(portal) => {
                portal.state = PortalState::Done;
                (portal.params.clone(), std::mem::take(&mut portal.raw))
            }
            None => (String::new(), Vec::new()),
        };
        let detail = self
            .detail(sql, &raw)
            .map(|d| d.described(self.columns_of.get(statement)));
        let (class, risks) = match (self.prepared.get(statement), sql) {
            (Some((class, risks)), _) => (*class, risks.clone()),
            (None, Some(sql)) => self.classifier.classify(&sql.text),
            (None, None) => (StatementClass::Unknown, Vec::new()),
        };
        let sql = match sql {
            Some(sql) => sql_text(sql),
            None => format!("-- statement \"{statement}\" (its SQL was not recorded)"),
        };
        self.begin(seq, at, sql, params, (class, &risks), detail);
        self.waiting.push_back(Waiting::Execute {
            draft: seq,
            portal: portal_name.to_owned(),
            started: at,
            continues: false,
        });
    }

    /// Removes the Parse of `statement` waiting in the current batch (after the last Sync).
    fn take_waiting_parse(&mut self, statement: &str) {
        let found = self
            .waiting
            .iter()
            .rev()
            .take_while(|w| !matches!(w, Waiting::Sync))
            .position(|w| matches!(w, Waiting::Parse(p) if p.name == statement));
        if let Some(from_back) = found {
            let index = self.waiting.len() - 1 - from_back;
            self.waiting.remove(index);
        }
    }

    fn close(&mut self, target: char, name: &str) {
        if target == 'S' {
            self.prepared.remove(name);
            self.columns_of.remove(name);
            let closed: Vec<String> = self
                .portals
                .iter()
                .filter(|(_, p)| p.statement == name)
                .map(|(n, _)| n.clone())
                .collect();
            for portal in closed {
                if let Some(old) = self.portals.remove(&portal) {
                    self.portal_gone(old.state);
                }
            }
        } else if let Some(old) = self.portals.remove(name) {
            self.portal_gone(old.state);
        }
    }

    /// A portal was closed, replaced or died with its transaction: a statement it held
    /// suspended is finished, unless an Execute of it still waits for its answer (a Close sent
    /// right behind the Execute arrives before the answer).
    fn portal_gone(&mut self, state: PortalState) {
        let PortalState::Suspended(seq) = state else {
            return;
        };
        let waited_for = self
            .waiting
            .iter()
            .any(|w| matches!(w, Waiting::Execute { draft, .. } if *draft == seq));
        if !waited_for && let Some(draft) = self.drafts.get_mut(&seq) {
            draft.finished = true;
        }
    }

    /// A server message answering the request first in line: Parses ahead of it succeeded.
    fn answered(&mut self) {
        while matches!(self.waiting.front(), Some(Waiting::Parse(_))) {
            self.waiting.pop_front();
        }
    }

    fn front_draft(&mut self) -> Option<&mut Draft> {
        let seq = match self.waiting.front()? {
            Waiting::Simple(seq) => *seq,
            Waiting::Execute { draft, .. } => *draft,
            Waiting::Parse(_) | Waiting::Sync => return None,
        };
        self.drafts.get_mut(&seq)
    }

    fn complete(
        &mut self,
        at: DateTime<Utc>,
        tag: Option<&str>,
        rows: Option<u64>,
        duration: Option<u64>,
    ) {
        self.answered();
        match self.waiting.front() {
            Some(Waiting::Simple(seq)) => {
                let seq = *seq;
                if let Some(draft) = self.drafts.get_mut(&seq) {
                    let s = &mut draft.statement;
                    if tag.is_some() {
                        s.tag = tag.map(str::to_owned);
                    }
                    s.rows = add_rows(s.rows, rows);
                    draft.last_end = Some(at);
                    draft.rows_seen = 0;
                }
            }
            Some(Waiting::Execute { .. }) => {
                let (seq, portal, started) =
                    self.take_front_execute().expect("the front is an Execute");
                if let Some(portal) = self.portals.get_mut(&portal) {
                    portal.state = PortalState::Done;
                }
                if let Some(draft) = self.drafts.get_mut(&seq) {
                    let s = &mut draft.statement;
                    s.tag = tag.map(str::to_owned).or(s.tag.take());
                    s.rows = add_rows(s.rows, rows);
                    s.duration_micros += duration.unwrap_or_else(|| micros(started, at));
                    draft.rows_seen = 0;
                    draft.finished = true;
                }
            }
            Some(Waiting::Parse(_) | Waiting::Sync) | None => {}
        }
    }

    /// Takes the Execute first in line, if that is what is first: its draft's seq, its portal
    /// and when it started.
    fn take_front_execute(&mut self) -> Option<(i64, String, DateTime<Utc>)> {
        if !matches!(self.waiting.front(), Some(Waiting::Execute { .. })) {
            return None;
        }
        match self.waiting.pop_front() {
            Some(Waiting::Execute {
                draft,
                portal,
                started,
                ..
            }) => Some((draft, portal, started)),
            _ => None,
        }
    }

    fn suspended(&mut self, at: DateTime<Utc>) {
        self.answered();
        let Some((seq, portal, started)) = self.take_front_execute() else {
            return;
        };
        let Some(draft) = self.drafts.get_mut(&seq) else {
            return;
        };
        let s = &mut draft.statement;
        s.rows = add_rows(s.rows, Some(draft.rows_seen));
        s.duration_micros += micros(started, at);
        draft.rows_seen = 0;
        match self.portals.get_mut(&portal) {
            Some(portal) => portal.state = PortalState::Suspended(seq),
            // Its portal is gone already: nothing can continue it.
            None => draft.finished = true,
        }
    }

    fn error(&mut self, seq_of_error: i64, at: DateTime<Utc>, message: &ServerMessage) {
        let error = || {
            (
                index_text(&message.code),
                index_text(cut(&message.message, MAX_ERROR_BYTES)),
            )
        };
        match self.waiting.front() {
            Some(Waiting::Parse(_)) => {
                let Some(Waiting::Parse(parse)) = self.waiting.pop_front() else {
                    unreachable!("the front is a Parse")
                };
                let ParseOnly {
                    seq,
                    at: parsed_at,
                    sql,
                    class,
                    risks,
                    recorded,
                    ..
                } = *parse;
                let detail = self.detail(recorded.as_ref(), &[]);
                self.begin(seq, parsed_at, sql, String::new(), (class, &risks), detail);
                if let Some(draft) = self.drafts.get_mut(&seq) {
                    draft.statement.error = Some(error());
                    if let Some(detail) = draft.detail.as_deref_mut() {
                        detail.error(message);
                    }
                    draft.statement.duration_micros = micros(parsed_at, at);
                    draft.finished = true;
                }
                self.abandon_until_sync();
            }
            Some(Waiting::Execute { .. }) => {
                let (seq, portal, started) =
                    self.take_front_execute().expect("the front is an Execute");
                // A failed portal cannot be continued.
                if let Some(portal) = self.portals.get_mut(&portal) {
                    portal.state = PortalState::Done;
                }
                if let Some(draft) = self.drafts.get_mut(&seq) {
                    draft.statement.error.get_or_insert_with(error);
                    if let Some(detail) = draft.detail.as_deref_mut() {
                        detail.error(message);
                    }
                    draft.statement.duration_micros += micros(started, at);
                    draft.finished = true;
                }
                self.abandon_until_sync();
            }
            Some(Waiting::Simple(seq)) => {
                let seq = *seq;
                if let Some(draft) = self.drafts.get_mut(&seq) {
                    draft.statement.error.get_or_insert_with(error);
                    if let Some(detail) = draft.detail.as_deref_mut() {
                        detail.error(message);
                    }
                    draft.last_end = Some(at);
                }
            }
            // Not about a statement (a FATAL at shutdown, a failed Describe).
            Some(Waiting::Sync) | None => {
                if self.details {
                    self.loose.push((seq_of_error, message.clone()));
                }
            }
        }
    }

    /// After an error the server skips every extended-protocol message up to the next Sync:
    /// Executes behind the failed one never ran, Parses behind it never happened.
    fn abandon_until_sync(&mut self) {
        while let Some(front) = self.waiting.front() {
            match front {
                Waiting::Sync | Waiting::Simple(_) => return,
                Waiting::Parse(_) => {
                    self.waiting.pop_front();
                }
                Waiting::Execute {
                    draft, continues, ..
                } => {
                    if !continues {
                        self.drafts.remove(draft);
                    }
                    self.waiting.pop_front();
                }
            }
        }
    }

    fn ready_for_query(&mut self, at: DateTime<Utc>, status: char) {
        while let Some(front) = self.waiting.pop_front() {
            match front {
                Waiting::Simple(seq) => {
                    if let Some(draft) = self.drafts.get_mut(&seq) {
                        let end = draft.last_end.unwrap_or(at);
                        draft.statement.duration_micros = micros(draft.statement.at, end);
                        draft.finished = true;
                    }
                    break;
                }
                Waiting::Sync => break,
                // Sent but never answered (the recording lost the answer): finished as known.
                Waiting::Execute { draft, .. } => {
                    if let Some(draft) = self.drafts.get_mut(&draft) {
                        draft.finished = true;
                    }
                }
                Waiting::Parse(_) => {}
            }
        }
        if status == 'I' {
            // Outside a transaction no portal survives.
            let states: Vec<PortalState> = self.portals.drain().map(|(_, p)| p.state).collect();
            for state in states {
                self.portal_gone(state);
            }
        }
    }

    /// Gives out every statement when the folder is at a quiet point; cuts when it has stayed
    /// away from one too long.
    fn after_event(&mut self) {
        let quiet = self.waiting.is_empty()
            && self
                .portals
                .values()
                .all(|p| matches!(p.state, PortalState::Done));
        if quiet && self.drafts.values().all(|d| d.finished) {
            self.release_all();
            self.resume_seq = self.next_seq;
        } else if self.drafts.len() > MAX_UNRELEASED
            || self.next_seq - self.resume_seq > MAX_EVENTS_SINCE_QUIET
        {
            self.cut();
        }
    }

    /// Everything begun is finished as it stands, and nothing waits any more.
    fn cut(&mut self) {
        self.cut_at(None);
    }

    /// [`Self::cut`] at the session's end (`ended`, when known): a statement still running
    /// then ran until the end, and was interrupted by it.
    fn cut_at(&mut self, ended: Option<DateTime<Utc>>) {
        for draft in self.drafts.values_mut() {
            if !draft.finished {
                draft.finished = true;
                if let Some(end) = ended.or(draft.last_end) {
                    draft.statement.duration_micros = draft
                        .statement
                        .duration_micros
                        .max(micros(draft.statement.at, end));
                }
                if ended.is_some()
                    && let Some(detail) = draft.detail.as_deref_mut()
                {
                    detail.interrupted = true;
                }
            }
        }
        self.waiting.clear();
        self.portals.clear();
        self.release_all();
        self.resume_seq = self.next_seq;
    }

    fn release_all(&mut self) {
        let drafts = std::mem::take(&mut self.drafts);
        self.released.extend(
            drafts
                .into_values()
                .map(|draft| (draft.statement, draft.detail)),
        );
    }
}

/// The sum of two row counts, known if either is.
fn add_rows(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

fn micros(start: DateTime<Utc>, end: DateTime<Utc>) -> u64 {
    (end - start)
        .num_microseconds()
        .and_then(|m| u64::try_from(m).ok())
        .unwrap_or(0)
}

/// Text as the index keeps it: as recorded, except NUL, which a PostgreSQL text column cannot
/// hold.
fn index_text(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Recorded SQL as the index keeps it, up to [`MAX_SQL_BYTES`].
fn sql_text(sql: &Capped) -> String {
    index_text(cut(&sql.text, MAX_SQL_BYTES))
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Bound parameters as SQL literals, `$1 = 'it''s', $2 = NULL`: binary values as `\x…` hex,
/// redacted ones as `[redacted]`, values kept in part end with `…`. Capped at
/// [`MAX_PARAMS_BYTES`].
pub fn render_params(params: &[Param]) -> String {
    let mut out = String::new();
    for (i, param) in params.iter().enumerate() {
        if out.len() >= MAX_PARAMS_BYTES {
            out.push('…');
            break;
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!("${} = ", i + 1));
        match &param.value {
            None => out.push_str("NULL"),
            Some(value) if value.redacted => out.push_str("[redacted]"),
            Some(value) => {
                let more = if value.is_truncated() { "…" } else { "" };
                if value.hex {
                    out.push_str(&format!("\\x{}{more}", value.text));
                } else {
                    out.push_str(&format!("'{}{more}'", value.text.replace('\'', "''")));
                }
            }
        }
    }
    if out.len() > MAX_PARAMS_BYTES {
        let kept = cut(&out, MAX_PARAMS_BYTES).len();
        out.truncate(kept);
        out.push('…');
    }
    index_text(&out)
}

#[cfg(test)]
mod tests;
