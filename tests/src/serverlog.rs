//! The statements a PostgreSQL server says it executed, read from its own log, as an oracle
//! for what a recording must hold.
//!
//! [`enable_statement_log`] makes a cluster log every statement (`log_statement = 'all'`) with
//! [`LOG_LINE_PREFIX`], which names the backend PID, the user, the database and the
//! application. [`parse`] turns that log back into [`Entry`]s and [`backends`] into the
//! statements of each backend, in order:
//!
//! - the simple protocol: `LOG:  statement: <sql>` (the whole query string once, however many
//!   statements it holds);
//! - the extended protocol: `LOG:  execute <statement>[/<portal>]: <sql>` (or `execute fetch
//!   from` when a portal is resumed), followed by `DETAIL:  parameters: $1 = '...', $2 = NULL`
//!   when the statement has parameters (each value in quotes, `'` doubled).
//!
//! Every other line is ignored. A message spans several lines when it holds newlines: PostgreSQL
//! writes the following lines without a prefix and with a tab inserted after each newline (see
//! `append_with_tabs` in its `elog.c`), which the parser takes off again.
//!
//! Custom settings such as `pgbastion.identity` cannot be shown by `log_line_prefix` (its escapes
//! are a fixed set), so a backend is tied to a gateway session by its PID and what it ran.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, bail, ensure};

use crate::pg::PgCluster;

/// The prefix [`parse`] understands: `2026-01-02 03:04:05.678 UTC [4242] user=u db=d app=psql| `.
/// The application name must not hold `"| "`.
pub const LOG_LINE_PREFIX: &str = "%m [%p] user=%u db=%d app=%a| ";

/// Makes `pg` log every statement with [`LOG_LINE_PREFIX`], restarting it so that every server
/// process (not only new backends) writes the new prefix. Returns the log's length afterwards:
/// read from there with [`read_since`].
pub fn enable_statement_log(pg: &mut PgCluster) -> anyhow::Result<u64> {
    pg.alter_system("log_statement", "all")?;
    pg.alter_system("log_line_prefix", LOG_LINE_PREFIX)?;
    // Every parameter value in full (the default, said here because the comparison needs it).
    pg.alter_system("log_parameter_max_length", "-1")?;
    pg.restart()?;
    log_len(pg)
}

/// The length of the server log now, to read what comes after it with [`read_since`].
pub fn log_len(pg: &PgCluster) -> anyhow::Result<u64> {
    let path = pg.log_path();
    Ok(std::fs::metadata(&path)
        .with_context(|| format!("no server log at {}", path.display()))?
        .len())
}

/// What the server logged from `offset` (a value of [`log_len`]) on. Invalid UTF-8 is replaced.
pub fn read_since(pg: &PgCluster, offset: u64) -> anyhow::Result<String> {
    let path = pg.log_path();
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// One log message with its prefix taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pid: u32,
    pub user: String,
    pub database: String,
    pub application: String,
    /// `LOG`, `DETAIL`, `ERROR`, `STATEMENT`...
    pub severity: String,
    /// The message after `SEVERITY:  `, its lines joined by `\n`.
    pub message: String,
}

/// A statement the server executed, as it logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// A simple-protocol query string.
    Simple { sql: String },
    /// An extended-protocol Execute.
    Execute {
        /// `execute fetch from`: a portal resumed after a row limit.
        fetch: bool,
        /// The prepared statement's name; `<unnamed>` for the unnamed one.
        statement: String,
        /// The portal's name; empty for the unnamed one.
        portal: String,
        sql: String,
        /// The bound values as text; `None` is NULL.
        params: Vec<Option<String>>,
    },
}

/// The statements one server process logged, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub pid: u32,
    pub user: String,
    pub application: String,
    pub statements: Vec<Statement>,
}

const SEVERITIES: &[&str] = &[
    "DEBUG5",
    "DEBUG4",
    "DEBUG3",
    "DEBUG2",
    "DEBUG1",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "LOG",
    "FATAL",
    "PANIC",
    "DETAIL",
    "HINT",
    "QUERY",
    "CONTEXT",
    "LOCATION",
    "STATEMENT",
];

/// The log messages of `text`, written with [`LOG_LINE_PREFIX`]. Lines that start neither with
/// that prefix nor with a tab (another prefix, e.g. before [`enable_statement_log`]) are
/// skipped along with their continuation lines.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut current: Option<Entry> = None;
    let mut pieces: Vec<&str> = text.split('\n').collect();
    // The text ends with a newline: the last piece is not a line.
    if pieces.last() == Some(&"") {
        pieces.pop();
    }
    for line in pieces {
        if let Some(rest) = line.strip_prefix('\t') {
            if let Some(entry) = current.as_mut() {
                entry.message.push('\n');
                entry.message.push_str(rest);
            }
            continue;
        }
        entries.extend(current.take());
        // None for a line with another prefix: its continuation lines are dropped with it.
        current = parse_first_line(line);
    }
    entries.extend(current);
    entries
}

/// `TIMESTAMP [PID] user=U db=D app=A| SEVERITY:  message`.
fn parse_first_line(line: &str) -> Option<Entry> {
    let (_, rest) = line.split_once(" [")?;
    let (pid, rest) = rest.split_once("] user=")?;
    let pid = pid.parse().ok()?;
    let (user, rest) = rest.split_once(" db=")?;
    let (database, rest) = rest.split_once(" app=")?;
    let (application, rest) = rest.split_once("| ")?;
    let (severity, message) = rest.split_once(":  ")?;
    if !SEVERITIES.contains(&severity) {
        return None;
    }
    Some(Entry {
        pid,
        user: user.to_owned(),
        database: database.to_owned(),
        application: application.to_owned(),
        severity: severity.to_owned(),
        message: message.to_owned(),
    })
}

/// The statements of each server process that logged anything, in the order each first
/// appears. A process that logged no statement (only its connection, say) is there with none.
pub fn backends(entries: &[Entry]) -> anyhow::Result<Vec<Backend>> {
    let mut order: Vec<u32> = Vec::new();
    let mut by_pid: HashMap<u32, Backend> = HashMap::new();
    // Per process: whether its previous message was an `execute`, which a DETAIL completes.
    let mut after_execute: HashMap<u32, bool> = HashMap::new();
    for entry in entries {
        let backend = by_pid.entry(entry.pid).or_insert_with(|| {
            order.push(entry.pid);
            Backend {
                pid: entry.pid,
                user: entry.user.clone(),
                application: entry.application.clone(),
                statements: Vec::new(),
            }
        });
        // Before authentication the user and application are `[unknown]`; the application
        // can also change during a session (SET application_name): the latest known wins.
        if known(&entry.user) {
            backend.user = entry.user.clone();
        }
        if known(&entry.application) {
            backend.application = entry.application.clone();
        }
        let was_execute = after_execute.insert(entry.pid, false).unwrap_or(false);
        match entry.severity.as_str() {
            "LOG" => {
                if let Some(sql) = entry.message.strip_prefix("statement: ") {
                    backend.statements.push(Statement::Simple {
                        sql: sql.to_owned(),
                    });
                } else if let Some(execute) = parse_execute(&entry.message) {
                    backend.statements.push(execute);
                    after_execute.insert(entry.pid, true);
                }
            }
            "DETAIL" if was_execute => {
                if let Some(list) = entry.message.strip_prefix("parameters: ") {
                    let values = parse_parameters(list).with_context(|| {
                        format!("process {}: DETAIL:  {}", entry.pid, entry.message)
                    })?;
                    if let Some(Statement::Execute { params, .. }) = backend.statements.last_mut() {
                        *params = values;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|pid| by_pid.remove(&pid))
        .collect())
}

/// `%u` and `%a` print `[unknown]` (or nothing) where there is no value yet.
fn known(field: &str) -> bool {
    !field.is_empty() && field != "[unknown]"
}

/// `execute NAME[/PORTAL]: SQL` or `execute fetch from NAME[/PORTAL]: SQL`.
fn parse_execute(message: &str) -> Option<Statement> {
    let (fetch, rest) = match message.strip_prefix("execute fetch from ") {
        Some(rest) => (true, rest),
        None => (false, message.strip_prefix("execute ")?),
    };
    let (names, sql) = rest.split_once(": ")?;
    let (statement, portal) = if names == "<unnamed>" || !names.contains('/') {
        (names, "")
    } else if let Some(portal) = names.strip_prefix("<unnamed>/") {
        ("<unnamed>", portal)
    } else {
        names.split_once('/')?
    };
    Some(Statement::Execute {
        fetch,
        statement: statement.to_owned(),
        portal: portal.to_owned(),
        sql: sql.to_owned(),
        params: Vec::new(),
    })
}

/// `$1 = 'it''s', $2 = NULL` into `[Some("it's"), None]`; the numbers must run 1, 2, 3...
pub fn parse_parameters(list: &str) -> anyhow::Result<Vec<Option<String>>> {
    let mut values = Vec::new();
    let mut rest = list;
    loop {
        let number = values.len() + 1;
        let after = rest
            .strip_prefix(&format!("${number} = "))
            .with_context(|| format!("expected ${number} at {rest:?}"))?;
        if let Some(after_null) = after.strip_prefix("NULL") {
            values.push(None);
            rest = after_null;
        } else {
            let mut chars = after
                .strip_prefix('\'')
                .with_context(|| format!("expected a quoted value at {after:?}"))?
                .char_indices()
                .peekable();
            let mut value = String::new();
            let quoted = &after[1..];
            let end = loop {
                match chars.next() {
                    None => bail!("unterminated value at {after:?}"),
                    Some((i, '\'')) => {
                        if chars.peek().map(|&(_, c)| c) == Some('\'') {
                            chars.next();
                            value.push('\'');
                        } else {
                            break i + 1;
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            };
            values.push(Some(value));
            rest = &quoted[end..];
        }
        if rest.is_empty() {
            return Ok(values);
        }
        rest = rest
            .strip_prefix(", ")
            .with_context(|| format!("expected \", \" at {rest:?}"))?;
        ensure!(!rest.is_empty(), "a trailing comma in {list:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
2026-01-02 03:04:05.000 UTC [100] user=[unknown] db=[unknown] app=[unknown]| LOG:  connection received: host=127.0.0.1 port=5
2026-01-02 03:04:05.001 UTC [100] user=scram_user db=app app=psql| LOG:  connection authorized: user=scram_user database=app application_name=psql
2026-01-02 03:04:05.002 UTC [100] user=scram_user db=app app=psql| LOG:  statement: select 1;
2026-01-02 03:04:05.003 UTC [200] user=scram_user db=app app=e2e| LOG:  execute s0: select $1::text, $2::int4
2026-01-02 03:04:05.003 UTC [200] user=scram_user db=app app=e2e| DETAIL:  parameters: $1 = 'it''s ✓
\tsecond line', $2 = NULL
2026-01-02 03:04:05.004 UTC [100] user=scram_user db=app app=psql| LOG:  statement: update t
\t   set x = 1
\t where id = 2;
2026-01-02 03:04:05.005 UTC [100] user=scram_user db=app app=psql| LOG:  statement: select 1/0;
2026-01-02 03:04:05.005 UTC [100] user=scram_user db=app app=psql| ERROR:  division by zero
2026-01-02 03:04:05.005 UTC [100] user=scram_user db=app app=psql| STATEMENT:  select 1/0;
2026-01-02 03:04:05.006 UTC [300] user=scram_user db=app app=pgbench| LOG:  execute <unnamed>: BEGIN;
2026-01-02 03:04:05.007 UTC [300] user=scram_user db=app app=pgbench| LOG:  execute <unnamed>: SELECT abalance FROM pgbench_accounts WHERE aid = $1;
2026-01-02 03:04:05.007 UTC [300] user=scram_user db=app app=pgbench| DETAIL:  parameters: $1 = '42'
2026-01-02 03:04:05.008 UTC [300] user=scram_user db=app app=pgbench| LOG:  execute fetch from P0_1/C_1: select $1
2026-01-02 03:04:05.008 UTC [300] user=scram_user db=app app=pgbench| DETAIL:  parameters: $1 = ''
2026-01-02 03:04:05.009 UTC [400] user=postgres db=app app=| LOG:  statement: statement: not a parameter
2026-01-02 03:04:05.010 UTC [1] LOG:  checkpoint starting: time
\tcontinued
2026-01-02 03:04:05.011 UTC [100] user=scram_user db=app app=psql| LOG:  statement: select 'a
\t\tb';
";

    #[test]
    fn lines_with_the_prefix_are_split_into_fields_and_continuations_are_joined() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 16, "{entries:#?}");
        assert_eq!(entries[0].user, "[unknown]");
        let entries = &entries[1..];
        assert_eq!(
            entries[0],
            Entry {
                pid: 100,
                user: "scram_user".into(),
                database: "app".into(),
                application: "psql".into(),
                severity: "LOG".into(),
                message: "connection authorized: user=scram_user database=app \
                          application_name=psql"
                    .into(),
            }
        );
        assert_eq!(entries[3].severity, "DETAIL");
        assert_eq!(
            entries[3].message,
            "parameters: $1 = 'it''s ✓\nsecond line', $2 = NULL"
        );
        assert_eq!(
            entries[4].message,
            "statement: update t\n   set x = 1\n where id = 2;"
        );
        // The line with another prefix and its continuation belong to no entry.
        assert_eq!(entries[14].message, "statement: select 'a\n\tb';");
        assert_eq!(entries[13].pid, 400);
    }

    #[test]
    fn statements_of_each_backend_come_out_in_order_with_their_parameters() {
        let backends = backends(&parse(SAMPLE)).unwrap();
        let pids: Vec<u32> = backends.iter().map(|b| b.pid).collect();
        assert_eq!(pids, [100, 200, 300, 400]);
        let simple = |sql: &str| Statement::Simple { sql: sql.into() };
        assert_eq!(
            backends[0].statements,
            [
                simple("select 1;"),
                simple("update t\n   set x = 1\n where id = 2;"),
                simple("select 1/0;"),
                simple("select 'a\n\tb';"),
            ]
        );
        assert_eq!(backends[0].application, "psql");
        assert_eq!(backends[0].user, "scram_user", "known once authenticated");
        assert_eq!(
            backends[1].statements,
            [Statement::Execute {
                fetch: false,
                statement: "s0".into(),
                portal: String::new(),
                sql: "select $1::text, $2::int4".into(),
                params: vec![Some("it's ✓\nsecond line".into()), None],
            }]
        );
        let execute =
            |fetch, statement: &str, portal: &str, sql: &str, params: &[&str]| Statement::Execute {
                fetch,
                statement: statement.into(),
                portal: portal.into(),
                sql: sql.into(),
                params: params.iter().map(|p| Some(p.to_string())).collect(),
            };
        assert_eq!(
            backends[2].statements,
            [
                execute(false, "<unnamed>", "", "BEGIN;", &[]),
                execute(
                    false,
                    "<unnamed>",
                    "",
                    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
                    &["42"]
                ),
                execute(true, "P0_1", "C_1", "select $1", &[""]),
            ]
        );
        assert_eq!(backends[3].user, "postgres");
        assert_eq!(
            backends[3].statements,
            [simple("statement: not a parameter")]
        );
    }

    #[test]
    fn parameter_lists_undouble_quotes_and_keep_nulls_commas_and_dollars() {
        assert_eq!(
            parse_parameters("$1 = 'a, $2 = ''b''', $2 = NULL, $3 = '', $4 = 'NULL'").unwrap(),
            [
                Some("a, $2 = 'b'".to_owned()),
                None,
                Some(String::new()),
                Some("NULL".to_owned())
            ]
        );
        assert_eq!(
            parse_parameters("$1 = '\\x00ff'").unwrap(),
            [Some("\\x00ff".to_owned())]
        );
        for bad in [
            "$2 = '1'",
            "$1 = 'unterminated",
            "$1 = '1' $2 = '2'",
            "$1 = '1', ",
            "$1 = 1",
        ] {
            assert!(parse_parameters(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn execute_names_split_statement_and_portal() {
        let names = |message: &str| match parse_execute(message) {
            Some(Statement::Execute {
                statement, portal, ..
            }) => (statement, portal),
            other => panic!("{other:?}"),
        };
        assert_eq!(names("execute s1: x"), ("s1".into(), String::new()));
        assert_eq!(
            names("execute <unnamed>/c1: x: y"),
            ("<unnamed>".into(), "c1".into())
        );
        assert_eq!(names("execute a/b: x"), ("a".into(), "b".into()));
        assert!(parse_execute("executed nothing").is_none());
    }
}
