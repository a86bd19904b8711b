//! The folder fed hand-built event sequences, as the capture records them: client messages when
//! they arrive, server answers after them.

use chrono::{DateTime, Duration, TimeZone, Utc};

use super::{IndexedStatement, StatementFolder, render_params};
use crate::record::event::{Capped, Event, EventKind, Param, ServerMessage, StatementClass};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, 0, 0).unwrap()
}

/// Events numbered from 0, one millisecond apart.
struct Script(Vec<Event>);

impl Script {
    fn new() -> Self {
        Script(Vec::new())
    }

    fn then(mut self, kind: EventKind) -> Self {
        let seq = self.0.len() as u64;
        self.0.push(Event {
            seq,
            at: t0() + Duration::milliseconds(seq as i64),
            kind,
        });
        self
    }

    fn at(&self, seq: i64) -> DateTime<Utc> {
        t0() + Duration::milliseconds(seq)
    }
}

fn text(text: &str) -> Capped {
    Capped {
        text: text.into(),
        len: text.len() as u64,
        hex: false,
        redacted: false,
    }
}

fn query(sql: &str, class: StatementClass) -> EventKind {
    EventKind::Query {
        sql: text(sql),
        class,
        risks: Vec::new(),
    }
}

fn parse(name: &str, sql: &str, class: StatementClass) -> EventKind {
    EventKind::Parse {
        statement: name.into(),
        sql: text(sql),
        param_types: Vec::new(),
        class,
        risks: Vec::new(),
    }
}

fn bind(portal: &str, statement: &str, values: &[Option<&str>]) -> EventKind {
    EventKind::Bind {
        portal: portal.into(),
        statement: statement.into(),
        params: values
            .iter()
            .map(|v| Param {
                type_oid: 25,
                value: v.map(text),
            })
            .collect(),
    }
}

fn execute(portal: &str, statement: &str, sql: &str, max_rows: i32) -> EventKind {
    EventKind::Execute {
        portal: portal.into(),
        statement: statement.into(),
        sql: Some(text(sql)),
        max_rows,
    }
}

fn rows(n: usize, omitted: u64) -> EventKind {
    EventKind::Rows {
        rows: vec![vec![Some(text("x"))]; n],
        omitted,
    }
}

fn complete(tag: &str, rows: Option<u64>, micros: u64) -> EventKind {
    EventKind::CommandComplete {
        tag: tag.into(),
        rows,
        duration_micros: micros,
    }
}

fn error(code: &str, message: &str) -> EventKind {
    EventKind::Error(ServerMessage {
        severity: "ERROR".into(),
        code: code.into(),
        message: message.into(),
        detail: None,
        hint: None,
        position: None,
    })
}

fn ready(status: char) -> EventKind {
    EventKind::ReadyForQuery { status }
}

/// Folds the whole script at once.
fn fold(script: &Script) -> Vec<IndexedStatement> {
    let mut folder = StatementFolder::new(0);
    for event in &script.0 {
        folder.push(event);
    }
    folder.finish();
    folder.take_finished()
}

/// Folds the script as an indexer does in rounds: the first `split` events, then a fresh
/// folder from the first folder's resume point to the end.
fn fold_in_two_rounds(script: &Script, split: usize) -> Vec<IndexedStatement> {
    let mut first = StatementFolder::new(0);
    for event in &script.0[..split] {
        first.push(event);
    }
    let mut statements = first.take_finished();
    let resume = first.resume_seq();
    assert!(
        resume <= split as i64,
        "resume {resume} is past what was read"
    );
    let mut second = StatementFolder::new(resume);
    for event in &script.0[resume as usize..] {
        second.push(event);
    }
    second.finish();
    statements.extend(second.take_finished());
    statements
}

/// Every scenario below also folds to the same statements when cut in two anywhere.
fn assert_same_in_rounds(script: &Script) {
    let whole = fold(script);
    for split in 0..=script.0.len() {
        assert_eq!(
            fold_in_two_rounds(script, split),
            whole,
            "folding in two rounds split at {split} differs"
        );
    }
}

#[test]
fn simple_query_is_one_statement_with_its_tag_rows_and_time() {
    let script = Script::new()
        .then(query("SELECT * FROM items", StatementClass::Read))
        .then(EventKind::RowDescription {
            columns: Vec::new(),
        })
        .then(rows(2, 0))
        .then(complete("SELECT 2", Some(2), 2_000))
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(
        statements,
        [IndexedStatement {
            seq: 0,
            at: t0(),
            sql: "SELECT * FROM items".into(),
            params: String::new(),
            class: StatementClass::Read,
            risks: Vec::new(),
            error: None,
            tag: Some("SELECT 2".into()),
            rows: Some(2),
            duration_micros: 3_000,
        }]
    );
    assert_same_in_rounds(&script);
}

#[test]
fn statements_are_given_out_at_quiet_points_only() {
    let script = Script::new()
        .then(query("SELECT 1", StatementClass::Read))
        .then(complete("SELECT 1", Some(1), 10))
        .then(ready('I'))
        .then(query("SELECT pg_sleep(60)", StatementClass::Read));
    let mut folder = StatementFolder::new(0);
    for event in &script.0 {
        folder.push(event);
    }
    let given = folder.take_finished();
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].sql, "SELECT 1");
    assert_eq!(folder.resume_seq(), 3, "the running query is read again");
    assert_eq!(folder.next_seq(), 4);
}

#[test]
fn named_statement_reused_gives_one_statement_per_execute_with_its_parameters() {
    let sql = "UPDATE items SET price = $1 WHERE id = $2";
    let script = Script::new()
        .then(parse("s1", sql, StatementClass::Write))
        .then(bind("", "s1", &[Some("9.5"), Some("1")]))
        .then(execute("", "s1", sql, 0))
        .then(EventKind::Sync)
        .then(complete("UPDATE 1", Some(1), 700))
        .then(ready('I'))
        .then(bind("", "s1", &[Some("it's"), None]))
        .then(execute("", "s1", sql, 0))
        .then(EventKind::Sync)
        .then(complete("UPDATE 0", Some(0), 300))
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(statements.len(), 2);
    assert_eq!(
        (statements[0].seq, statements[0].params.as_str()),
        (2, "$1 = '9.5', $2 = '1'")
    );
    assert_eq!(
        (statements[1].seq, statements[1].params.as_str()),
        (7, "$1 = 'it''s', $2 = NULL")
    );
    for s in &statements {
        assert_eq!(s.sql, sql);
        assert_eq!(s.class, StatementClass::Write);
        assert_eq!(s.error, None);
    }
    assert_eq!(statements[0].duration_micros, 700);
    assert_eq!(statements[1].rows, Some(0));
    assert_same_in_rounds(&script);
}

#[test]
fn a_failing_parse_is_the_error_of_the_execute_sent_with_it() {
    let script = Script::new()
        .then(parse("", "SELEC 1", StatementClass::Unknown))
        .then(bind("", "", &[]))
        .then(execute("", "", "SELEC 1", 0))
        .then(EventKind::Sync)
        .then(error("42601", "syntax error at or near \"SELEC\""))
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].seq, 2);
    assert_eq!(
        statements[0].error,
        Some(("42601".into(), "syntax error at or near \"SELEC\"".into()))
    );
    assert_eq!(statements[0].tag, None);
    assert_eq!(statements[0].duration_micros, 2_000);
    assert_same_in_rounds(&script);
}

#[test]
fn a_parse_failing_on_its_own_is_a_statement_and_one_succeeding_is_not() {
    let script = Script::new()
        .then(parse("ok", "SELECT 1", StatementClass::Read))
        .then(EventKind::Sync)
        .then(ready('I'))
        .then(parse("bad", "SELECT * FROM nope", StatementClass::Read))
        .then(EventKind::Describe {
            target: 'S',
            name: "bad".into(),
        })
        .then(EventKind::Sync)
        .then(error("42P01", "relation \"nope\" does not exist"))
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(statements.len(), 1);
    let failed = &statements[0];
    assert_eq!((failed.seq, failed.at), (3, script.at(3)));
    assert_eq!(failed.sql, "SELECT * FROM nope");
    assert_eq!(failed.error.as_ref().unwrap().0, "42P01");
    assert_same_in_rounds(&script);
}

#[test]
fn multi_statement_query_with_an_error_is_one_statement_with_the_first_error() {
    let sql = "INSERT INTO items VALUES (101, 'x', 1); SELECT 1/0; SELECT 3";
    let script = Script::new()
        .then(query(sql, StatementClass::Write))
        .then(complete("INSERT 0 1", Some(1), 1_000))
        .then(error("22012", "division by zero"))
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(statements.len(), 1);
    let s = &statements[0];
    assert_eq!(s.sql, sql);
    assert_eq!(s.tag.as_deref(), Some("INSERT 0 1"));
    assert_eq!(s.rows, Some(1));
    assert_eq!(s.error, Some(("22012".into(), "division by zero".into())));
    assert_eq!(s.duration_micros, 2_000, "from the query to its error");
    assert_same_in_rounds(&script);
}

#[test]
fn multi_statement_query_sums_counted_rows_and_keeps_the_last_tag() {
    let script = Script::new()
        .then(query(
            "BEGIN; UPDATE items SET price = 1; COMMIT",
            StatementClass::Write,
        ))
        .then(complete("BEGIN", None, 10))
        .then(complete("UPDATE 100", Some(100), 10))
        .then(complete("COMMIT", None, 10))
        .then(ready('I'));
    let s = &fold(&script)[0];
    assert_eq!((s.tag.as_deref(), s.rows), (Some("COMMIT"), Some(100)));
    assert_eq!(s.duration_micros, 3_000);
}

#[test]
fn copy_is_the_statement_that_started_it() {
    let script = Script::new()
        .then(query("COPY items FROM STDIN", StatementClass::Write))
        .then(EventKind::CopyStart {
            direction: "in".into(),
            binary: false,
        })
        .then(EventKind::CopyData {
            data: text("1\ta\n2\tb\n3\tc\n"),
        })
        .then(EventKind::CopyEnd {
            direction: "in".into(),
            bytes: 12,
            rows: 3,
            outcome: "done".into(),
        })
        .then(complete("COPY 3", Some(3), 4_000))
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].sql, "COPY items FROM STDIN");
    assert_eq!(
        (statements[0].tag.as_deref(), statements[0].rows),
        (Some("COPY 3"), Some(3))
    );
    assert_same_in_rounds(&script);
}

#[test]
fn failed_copy_carries_its_error() {
    let script = Script::new()
        .then(query("COPY items FROM STDIN", StatementClass::Write))
        .then(EventKind::CopyStart {
            direction: "in".into(),
            binary: false,
        })
        .then(EventKind::CopyEnd {
            direction: "in".into(),
            bytes: 0,
            rows: 0,
            outcome: "fail: client gave up".into(),
        })
        .then(error("57014", "COPY from stdin failed: client gave up"))
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].error.as_ref().unwrap().0, "57014");
}

/// Parse/Bind/Execute three times, then one Sync: pipelined, answered in order.
fn pipeline(second_fails: bool) -> Script {
    let mut script = Script::new();
    for i in 1..=3 {
        let sql = format!("INSERT INTO log VALUES ({i})");
        script = script
            .then(parse("", &sql, StatementClass::Write))
            .then(bind("", "", &[]))
            .then(execute("", "", &sql, 0));
    }
    script = script
        .then(EventKind::Sync)
        .then(complete("INSERT 0 1", Some(1), 100));
    if second_fails {
        script = script.then(error(
            "23505",
            "duplicate key value violates unique constraint",
        ));
    } else {
        script = script
            .then(complete("INSERT 0 1", Some(1), 100))
            .then(complete("INSERT 0 1", Some(1), 100));
    }
    script.then(ready('I'))
}

#[test]
fn pipelined_executes_before_one_sync_are_one_statement_each() {
    let script = pipeline(false);
    let statements = fold(&script);
    let seqs: Vec<i64> = statements.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [2, 5, 8]);
    for (i, s) in statements.iter().enumerate() {
        assert_eq!(s.sql, format!("INSERT INTO log VALUES ({})", i + 1));
        assert_eq!(s.tag.as_deref(), Some("INSERT 0 1"));
    }
    assert_same_in_rounds(&script);
}

#[test]
fn executes_skipped_after_an_error_in_their_pipeline_are_not_statements() {
    let script = pipeline(true);
    let statements = fold(&script);
    assert_eq!(statements.len(), 2, "the third never ran");
    assert_eq!(statements[0].error, None);
    assert_eq!(statements[1].seq, 5);
    assert_eq!(statements[1].error.as_ref().unwrap().0, "23505");
    assert_same_in_rounds(&script);
}

#[test]
fn a_portal_read_with_a_fetch_size_is_one_statement_with_all_its_rows() {
    let sql = "SELECT * FROM items";
    let script = Script::new()
        .then(query("BEGIN", StatementClass::Transaction))
        .then(complete("BEGIN", None, 5))
        .then(ready('T'))
        .then(parse("", sql, StatementClass::Read))
        .then(bind("c1", "", &[]))
        .then(execute("c1", "", sql, 2))
        .then(EventKind::Sync)
        .then(rows(2, 0))
        .then(EventKind::PortalSuspended)
        .then(ready('T'))
        .then(execute("c1", "", sql, 2))
        .then(EventKind::Sync)
        .then(rows(1, 1))
        .then(EventKind::PortalSuspended)
        .then(ready('T'))
        .then(execute("c1", "", sql, 2))
        .then(EventKind::Sync)
        .then(rows(1, 0))
        .then(complete("SELECT 1", Some(1), 1_000))
        .then(ready('T'))
        .then(query("COMMIT", StatementClass::Transaction))
        .then(complete("COMMIT", None, 5))
        .then(ready('I'));
    let statements = fold(&script);
    let seqs: Vec<i64> = statements.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [0, 5, 20]);
    let cursor = &statements[1];
    assert_eq!(cursor.rows, Some(5), "2 + 2 (one not kept) + 1");
    assert_eq!(cursor.tag.as_deref(), Some("SELECT 1"));
    assert_eq!(cursor.duration_micros, 3_000 + 3_000 + 1_000);
    assert_same_in_rounds(&script);
}

#[test]
fn a_suspended_portal_ends_with_its_transaction() {
    let sql = "SELECT * FROM items";
    let script = Script::new()
        .then(query("BEGIN", StatementClass::Transaction))
        .then(complete("BEGIN", None, 5))
        .then(ready('T'))
        .then(bind("c1", "s", &[]))
        .then(execute("c1", "s", sql, 10))
        .then(EventKind::Sync)
        .then(rows(10, 0))
        .then(EventKind::PortalSuspended)
        .then(ready('T'))
        .then(query("ROLLBACK", StatementClass::Transaction))
        .then(complete("ROLLBACK", None, 5))
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(statements.len(), 3);
    assert_eq!((statements[1].seq, statements[1].rows), (4, Some(10)));
    assert_eq!(statements[1].tag, None);
    assert_eq!(
        statements[1].class,
        StatementClass::Read,
        "classified from the SQL the Execute carries when its Parse was not seen"
    );
    assert_same_in_rounds(&script);
}

#[test]
fn function_calls_are_statements_with_their_arguments() {
    let script = Script::new()
        .then(EventKind::FunctionCall {
            function_oid: 1598,
            args: vec![Param {
                type_oid: 0,
                value: Some(text("42")),
            }],
        })
        .then(ready('I'));
    let statements = fold(&script);
    assert_eq!(statements[0].sql, "-- function call, oid 1598");
    assert_eq!(statements[0].params, "$1 = '42'");
    assert_eq!(statements[0].class, StatementClass::Unknown);
}

#[test]
fn the_session_end_gives_out_what_was_running() {
    let script = Script::new()
        .then(query("SELECT pg_sleep(600)", StatementClass::Read))
        .then(EventKind::SessionEnd {
            reason: "terminated".into(),
            detail: None,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
        });
    let mut folder = StatementFolder::new(0);
    for event in &script.0 {
        folder.push(event);
    }
    let statements = folder.take_finished();
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].tag, None);
    // It ran until the session ended.
    assert_eq!(statements[0].duration_micros, 1_000);
    assert_eq!(folder.resume_seq(), 2);

    let mut folder = StatementFolder::with_details(0, 'I');
    for event in &script.0 {
        folder.push(event);
    }
    let folded = folder.take_finished_with_details();
    assert!(folded[0].1.as_ref().unwrap().interrupted);
}

#[test]
fn errors_outside_statements_are_not_statements() {
    let script = Script::new()
        .then(ready('I'))
        .then(EventKind::Error(ServerMessage {
            severity: "FATAL".into(),
            code: "57P01".into(),
            message: "terminating connection due to administrator command".into(),
            detail: None,
            hint: None,
            position: None,
        }));
    assert!(fold(&script).is_empty());
}

#[test]
fn unreadable_events_are_skipped_and_counted_as_read() {
    let mut folder = StatementFolder::new(7);
    folder.skip(7);
    folder.skip(8);
    assert_eq!((folder.next_seq(), folder.resume_seq()), (9, 9));
}

#[test]
fn unanswered_requests_cannot_hold_unbounded_memory() {
    let mut script = Script::new();
    for i in 0..(super::MAX_UNRELEASED + 500) {
        script = script.then(query(&format!("SELECT {i}"), StatementClass::Read));
    }
    let mut folder = StatementFolder::new(0);
    let mut given = 0;
    for event in &script.0 {
        folder.push(event);
        given += folder.take_finished().len();
        assert!(folder.drafts.len() <= super::MAX_UNRELEASED);
    }
    folder.finish();
    given += folder.take_finished().len();
    assert_eq!(given, super::MAX_UNRELEASED + 500, "each given out once");
}

#[test]
fn parameters_read_as_sql_literals() {
    let param = |value: Option<Capped>| Param { type_oid: 0, value };
    let params = [
        param(Some(text("it's"))),
        param(None),
        param(Some(Capped {
            text: "00ff".into(),
            len: 2,
            hex: true,
            redacted: false,
        })),
        param(Some(Capped {
            text: String::new(),
            len: 8,
            hex: false,
            redacted: true,
        })),
        param(Some(Capped {
            len: 5000,
            ..text("abc")
        })),
        param(Some(text("nul\0byte"))),
    ];
    assert_eq!(
        render_params(&params),
        "$1 = 'it''s', $2 = NULL, $3 = \\x00ff, $4 = [redacted], $5 = 'abc…', \
         $6 = 'nul\u{fffd}byte'"
    );
}

#[test]
fn indexed_sql_is_capped() {
    let sql = "SELECT '".to_string() + &"é".repeat(super::MAX_SQL_BYTES) + "'";
    let script = Script::new()
        .then(query(&sql, StatementClass::Read))
        .then(ready('I'));
    let indexed = &fold(&script)[0].sql;
    assert!(indexed.len() <= super::MAX_SQL_BYTES && indexed.starts_with("SELECT 'é"));
}

#[test]
fn rendered_parameters_are_capped() {
    let big = Param {
        type_oid: 25,
        value: Some(text(&"é".repeat(3000))),
    };
    let rendered = render_params(&vec![big; 10]);
    assert!(rendered.len() <= super::MAX_PARAMS_BYTES + '…'.len_utf8());
    assert!(rendered.ends_with('…'));
}

/// Folds with details, in two rounds split at `split` (as the replay pages do).
fn fold_details(
    script: &Script,
    split: usize,
) -> Vec<(IndexedStatement, Option<Box<super::StatementDetail>>)> {
    let mut first = StatementFolder::with_details(0, 'I');
    for event in &script.0[..split] {
        first.push(event);
    }
    let mut out = first.take_finished_with_details();
    let resume = first.resume_seq();
    let mut second = StatementFolder::with_details(resume, first.status());
    for event in &script.0[resume as usize..] {
        second.push(event);
    }
    second.finish();
    out.extend(second.take_finished_with_details());
    out
}

#[test]
fn details_give_each_pipelined_execute_its_own_parameters_rows_and_error() {
    let column = |name: &str| crate::record::event::Column {
        name: name.into(),
        type_oid: 25,
    };
    let one_row = |value: &str| EventKind::Rows {
        rows: vec![vec![Some(text(value))]],
        omitted: 0,
    };
    let sql = "SELECT $1::text AS v";
    let script = Script::new()
        .then(parse("s1", sql, StatementClass::Read))
        .then(bind("p1", "s1", &[Some("a")]))
        .then(execute("p1", "s1", sql, 0))
        .then(bind("p2", "s1", &[Some("b")]))
        .then(execute("p2", "s1", sql, 0))
        .then(bind("p3", "s1", &[Some("c")]))
        .then(execute("p3", "s1", sql, 0))
        .then(EventKind::Sync)
        .then(EventKind::RowDescription {
            columns: vec![column("v")],
        })
        .then(one_row("a"))
        .then(complete("SELECT 1", Some(1), 100))
        .then(EventKind::RowDescription {
            columns: vec![column("v")],
        })
        .then(error("22P02", "invalid input"))
        .then(ready('I'));
    for split in 0..=script.0.len() {
        let folded = fold_details(&script, split);
        let plain: Vec<IndexedStatement> = folded.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(plain, fold(&script), "split at {split}");
        // The third Execute never ran (the second failed before its Sync).
        assert_eq!(folded.len(), 2, "split at {split}");
        let first = folded[0].1.as_ref().expect("details");
        assert_eq!(first.params[0].value.as_ref().unwrap().text, "a");
        assert_eq!(first.results[0].columns[0].name, "v");
        assert_eq!(first.results[0].rows.len(), 1);
        assert_eq!(first.results[0].tag.as_deref(), Some("SELECT 1"));
        assert!(first.error.is_none());
        let second = folded[1].1.as_ref().expect("details");
        assert_eq!(second.params[0].value.as_ref().unwrap().text, "b");
        assert_eq!(second.error.as_ref().unwrap().code, "22P02");
        assert!(second.results[0].rows.is_empty());
    }
}

#[test]
fn details_carry_the_transaction_status_notices_and_loose_errors() {
    let notice = |text: &str| {
        EventKind::Notice(ServerMessage {
            severity: "NOTICE".into(),
            code: "00000".into(),
            message: text.into(),
            detail: None,
            hint: None,
            position: None,
        })
    };
    let script = Script::new()
        .then(query("BEGIN", StatementClass::Transaction))
        .then(complete("BEGIN", None, 10))
        .then(ready('T'))
        .then(query("SELECT 1/0", StatementClass::Read))
        .then(notice("about to fail"))
        .then(error("22012", "division by zero"))
        .then(ready('E'))
        .then(query("ROLLBACK", StatementClass::Transaction))
        .then(complete("ROLLBACK", None, 10))
        .then(ready('I'))
        .then(notice("between statements"))
        .then(EventKind::Error(ServerMessage {
            severity: "FATAL".into(),
            code: "57P01".into(),
            message: "terminating connection".into(),
            detail: None,
            hint: None,
            position: None,
        }));
    let mut folder = StatementFolder::with_details(0, 'I');
    for event in &script.0 {
        folder.push(event);
    }
    folder.finish();
    let folded = folder.take_finished_with_details();
    let detail = |i: usize| folded[i].1.as_ref().unwrap();
    assert_eq!(folded.len(), 3);
    assert_eq!(detail(0).status_before, 'I');
    assert_eq!(detail(1).status_before, 'T');
    assert_eq!(detail(1).notices[0].message, "about to fail");
    assert_eq!(detail(1).error.as_ref().unwrap().code, "22012");
    assert_eq!(detail(2).status_before, 'E');
    let loose = folder.take_loose();
    assert_eq!(loose.len(), 2);
    assert_eq!((loose[0].0, loose[1].0), (10, 11));
    assert_eq!(loose[1].1.severity, "FATAL");
}

#[test]
fn the_indexer_folder_collects_no_details() {
    let mut folder = StatementFolder::new(0);
    for event in &pipeline(false).0 {
        folder.push(event);
    }
    folder.finish();
    assert!(
        folder
            .take_finished_with_details()
            .iter()
            .all(|(_, d)| d.is_none())
    );
    assert!(folder.take_loose().is_empty());
}
