//! The transcript of hand-built events.

use chrono::{DateTime, Duration, Utc};
use gateway::record::event::{
    Capped, Column, Event, EventKind, Param, ServerMessage, StatementClass,
};
use gateway::store::{EndReason, Session, StoredEvent};
use uuid::Uuid;

use super::Transcript;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn session() -> Session {
    Session {
        id: Uuid::nil(),
        person_login: "alice".into(),
        target_id: Uuid::nil(),
        target_name: "shop".into(),
        db_role: "app_ro".into(),
        credential_id: Uuid::from_u128(7),
        client_addr: "192.0.2.7:51234".into(),
        application_name: Some("psql".into()),
        tls_version: Some("TLSv1.3".into()),
        started_at: start(),
        ended_at: Some(start() + Duration::minutes(5)),
        end_reason: Some(EndReason::ClientQuit),
        end_detail: None,
        bytes_client_to_server: 10,
        bytes_server_to_client: 20,
        recording: gateway::store::RecordingPolicy::Strict,
        groups: Vec::new(),
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

fn query(sql: &str) -> EventKind {
    EventKind::Query {
        sql: text(sql),
        class: StatementClass::Read,
        risks: Vec::new(),
    }
}

fn ready(status: char) -> EventKind {
    EventKind::ReadyForQuery { status }
}

fn complete(tag: &str, rows: Option<u64>) -> EventKind {
    EventKind::CommandComplete {
        tag: tag.into(),
        rows,
        duration_micros: 1234,
    }
}

fn columns(names: &[(&str, u32)]) -> EventKind {
    EventKind::RowDescription {
        columns: names
            .iter()
            .map(|(name, type_oid)| Column {
                name: (*name).into(),
                type_oid: *type_oid,
            })
            .collect(),
    }
}

fn rows(rows: &[&[Option<&str>]], omitted: u64) -> EventKind {
    EventKind::Rows {
        rows: rows
            .iter()
            .map(|row| row.iter().map(|v| v.map(text)).collect())
            .collect(),
        omitted,
    }
}

fn error(code: &str, message: &str, position: Option<u32>) -> EventKind {
    EventKind::Error(ServerMessage {
        severity: "ERROR".into(),
        code: code.into(),
        message: message.into(),
        detail: Some("Some detail.".into()),
        hint: Some("Some hint.".into()),
        position,
    })
}

/// The transcript of `kinds` (one second apart, after the header).
fn render(kinds: Vec<EventKind>) -> String {
    let mut transcript = Transcript::new(Vec::new(), "shop");
    transcript.header(&session()).unwrap();
    for (i, kind) in kinds.into_iter().enumerate() {
        let event = Event {
            seq: i as u64,
            at: start() + Duration::seconds(i as i64 + 1),
            kind,
        };
        transcript.event(&event).unwrap();
    }
    String::from_utf8(transcript.finish().unwrap()).unwrap()
}

#[test]
fn header_names_who_where_and_when() {
    let out = render(Vec::new());
    for expected in [
        "-- pgbastion session 00000000-0000-0000-0000-000000000000",
        "-- person      alice",
        "-- target      shop, role app_ro",
        "-- client      192.0.2.7:51234 (application psql)",
        "-- TLS         TLSv1.3",
        "-- credential  00000000-0000-0000-0000-000000000007",
        "-- started     2026-05-01 12:00:00.000000Z",
        "-- ended       2026-05-01 12:05:00.000000Z, client_quit",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
}

#[test]
fn a_recording_without_events_says_so() {
    assert!(render(Vec::new()).ends_with(
        "-- ended       2026-05-01 12:05:00.000000Z, client_quit\n\n\
                                       -- no events recorded: the target's recording policy is \
                                       off, the session ended before reaching the target, or its \
                                       recording was deleted (`pgbastion verify` tells)\n"
    ));
    assert!(!render(vec![query("SELECT 1")]).contains("no events recorded"));
}

#[test]
fn simple_query_shows_prompt_table_count_and_time() {
    let out = render(vec![
        query("SELECT id, name FROM items;"),
        columns(&[("id", 23), ("name", 25)]),
        rows(&[&[Some("1"), Some("apple")], &[Some("10"), None]], 0),
        complete("SELECT 2", Some(2)),
        ready('I'),
    ]);
    let expected = "\n[12:00:01.000] shop=> SELECT id, name FROM items;\n \
                    id | name\n\
                    ----+-------\n  \
                    1 | apple\n \
                    10 |\n\
                    (2 rows)\n\
                    Time: 1.234 ms\n";
    assert!(out.ends_with(expected), "{out}");
}

#[test]
fn prompt_shows_the_transaction_status() {
    let out = render(vec![
        query("BEGIN"),
        complete("BEGIN", None),
        ready('T'),
        query("SELEC 1"),
        error("42601", "syntax error at or near \"SELEC\"", Some(1)),
        ready('E'),
        query("ROLLBACK"),
        complete("ROLLBACK", None),
        ready('I'),
        query("SELECT 1"),
    ]);
    assert!(
        out.contains("shop=> BEGIN\nBEGIN\nTime: 1.234 ms\n"),
        "{out}"
    );
    assert!(out.contains("shop=*> SELEC 1\n"), "{out}");
    assert!(out.contains("shop=!> ROLLBACK\nROLLBACK\n"), "{out}");
    assert!(out.contains("shop=> SELECT 1\n"), "{out}");
}

#[test]
fn error_shows_code_position_detail_and_hint() {
    let out = render(vec![
        query("SELECT *\nFROM nope;"),
        error("42P01", "relation \"nope\" does not exist", Some(15)),
        ready('I'),
    ]);
    let expected = "ERROR:  42P01: relation \"nope\" does not exist\n\
                    LINE 2: FROM nope;\n             ^\n\
                    DETAIL:  Some detail.\n\
                    HINT:  Some hint.\n";
    assert!(out.ends_with(expected), "{out}");
}

#[test]
fn extended_protocol_shows_the_sql_and_its_parameters() {
    let param = |value: Option<Capped>| Param {
        type_oid: 25,
        value,
    };
    let out = render(vec![
        EventKind::Parse {
            statement: String::new(),
            sql: text("SELECT * FROM users WHERE name = $1 AND note = $2"),
            param_types: vec![25, 25],
            class: StatementClass::Read,
            risks: Vec::new(),
        },
        EventKind::Bind {
            portal: String::new(),
            statement: String::new(),
            params: vec![
                param(Some(text("o'brien"))),
                param(None),
                param(Some(Capped {
                    text: "00ff".into(),
                    len: 2,
                    hex: true,
                    redacted: false,
                })),
                param(Some(Capped {
                    redacted: true,
                    ..text("hunter2")
                })),
                param(Some(Capped {
                    len: 9000,
                    ..text("long")
                })),
            ],
        },
        EventKind::Describe {
            target: 'P',
            name: String::new(),
        },
        EventKind::Execute {
            portal: String::new(),
            statement: String::new(),
            sql: Some(text("SELECT * FROM users WHERE name = $1 AND note = $2")),
            max_rows: 0,
        },
        EventKind::Sync,
        columns(&[("name", 25)]),
        rows(&[&[Some("o'brien")]], 3),
        complete("SELECT 4", Some(4)),
        ready('I'),
    ]);
    let expected = "shop=> SELECT * FROM users WHERE name = $1 AND note = $2\n  \
                    $1 = 'o''brien'\n  \
                    $2 = NULL\n  \
                    $3 = \\x00ff (hex)\n  \
                    $4 = [redacted]\n  \
                    $5 = 'long…' (9000 bytes)\n  \
                    name\n\
                    ---------\n \
                    o'brien\n\
                    (3 more rows not recorded)\n\
                    (4 rows)\n";
    assert!(out.contains(expected), "{out}");
    assert!(!out.contains("Describe") && !out.contains("Sync"), "{out}");
}

#[test]
fn columns_of_a_described_statement_name_a_later_execute() {
    let out = render(vec![
        EventKind::Parse {
            statement: "s1".into(),
            sql: text("SELECT n FROM t"),
            param_types: Vec::new(),
            class: StatementClass::Read,
            risks: Vec::new(),
        },
        EventKind::Describe {
            target: 'S',
            name: "s1".into(),
        },
        EventKind::Sync,
        columns(&[("n", 23)]),
        ready('I'),
        EventKind::Bind {
            portal: String::new(),
            statement: "s1".into(),
            params: Vec::new(),
        },
        EventKind::Execute {
            portal: String::new(),
            statement: "s1".into(),
            sql: Some(text("SELECT n FROM t")),
            max_rows: 0,
        },
        EventKind::Sync,
        rows(&[&[Some("5")]], 0),
        complete("SELECT 1", Some(1)),
        ready('I'),
    ]);
    assert!(
        out.contains("shop=> -- prepare statement \"s1\":\nSELECT n FROM t\n"),
        "{out}"
    );
    assert!(
        out.contains("shop=> SELECT n FROM t\n n\n---\n 5\n(1 row)\n"),
        "{out}"
    );
}

#[test]
fn empty_result_shows_its_columns_and_unrecorded_rows_are_said() {
    let out = render(vec![
        query("SELECT id FROM t"),
        columns(&[("id", 23)]),
        complete("SELECT 3", Some(3)),
        ready('I'),
    ]);
    assert!(
        out.contains(" id\n----\n(rows not recorded)\n(3 rows)\n"),
        "{out}"
    );
}

#[test]
fn copy_notices_notifications_and_parameters_are_shown() {
    let out = render(vec![
        EventKind::ParameterStatus {
            name: "TimeZone".into(),
            value: "UTC".into(),
        },
        query("COPY t FROM STDIN"),
        EventKind::CopyStart {
            direction: "in".into(),
            binary: false,
        },
        EventKind::CopyData {
            data: Capped {
                len: 4000,
                ..text("1\tone\n2\ttwo\n")
            },
        },
        EventKind::CopyEnd {
            direction: "in".into(),
            bytes: 4000,
            rows: 300,
            outcome: "done".into(),
        },
        complete("COPY 300", Some(300)),
        EventKind::Notice(ServerMessage {
            severity: "WARNING".into(),
            code: "01000".into(),
            message: "careful".into(),
            detail: None,
            hint: None,
            position: None,
        }),
        EventKind::Notification {
            process_id: 42,
            channel: "jobs".into(),
            payload: text("go"),
        },
        ready('I'),
    ]);
    for expected in [
        "-- parameter TimeZone = UTC\n",
        "COPY IN started (text format)\n  | 1\tone\n  | 2\ttwo\n  … (4000 bytes in all; the rest \
         was not recorded)\nCOPY IN done: 4000 bytes, 300 rows\nCOPY 300\nTime: 1.234 ms\n",
        "WARNING:  careful\n",
        "Asynchronous notification \"jobs\" with payload 'go' received from server process with \
         PID 42.\n",
    ] {
        assert!(out.contains(expected), "{expected:?} in\n{out}");
    }
}

#[test]
fn session_start_and_end_events_are_shown() {
    let out = render(vec![
        EventKind::SessionStart {
            session_id: Uuid::nil(),
            credential_id: Uuid::nil(),
            person: "alice".into(),
            groups: vec!["dev".into(), "ops".into()],
            target: "shop".into(),
            db_role: "app_ro".into(),
            client_addr: "192.0.2.7:51234".into(),
            application_name: None,
            tls_version: None,
            format_version: 1,
        },
        EventKind::SessionEnd {
            reason: "client_quit".into(),
            detail: None,
            bytes_client_to_server: 10,
            bytes_server_to_client: 20,
        },
    ]);
    assert!(
        out.contains("-- recording format 1; groups: dev, ops\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "\n-- session ended at 2026-05-01 12:00:02.000000Z: client_quit; 10 bytes from the \
             client, 20 bytes to it\n"
        ),
        "{out}"
    );
}

#[test]
fn recorded_text_cannot_send_escape_sequences_to_the_terminal() {
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2J\rgone\u{9b}\u{202e}";
    let out = render(vec![
        query(&format!("SELECT '{evil}'")),
        columns(&[(evil, 25)]),
        rows(&[&[Some(evil)]], 0),
        complete(evil, None),
        error(evil, evil, None),
        EventKind::ParameterStatus {
            name: evil.into(),
            value: evil.into(),
        },
        EventKind::Notification {
            process_id: 1,
            channel: evil.into(),
            payload: text(evil),
        },
        EventKind::CopyData { data: text(evil) },
        ready('I'),
    ]);
    let mut transcript = Transcript::new(Vec::new(), evil);
    let mut hostile_session = session();
    hostile_session.person_login = evil.into();
    hostile_session.application_name = Some(evil.into());
    hostile_session.end_detail = Some(evil.into());
    transcript.header(&hostile_session).unwrap();
    transcript
        .event(&Event {
            seq: 0,
            at: start(),
            kind: query("SELECT 1"),
        })
        .unwrap();
    let header = String::from_utf8(transcript.finish().unwrap()).unwrap();
    for shown in [out, header] {
        let dangerous: Vec<char> = shown
            .chars()
            .filter(|&c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}')
            .collect();
        assert!(dangerous.is_empty(), "{dangerous:?} in\n{shown}");
        assert!(
            shown.contains("\\x1b]0;pwned\\x07\\x1b[2J\\rgone\\u{9b}\\u{202e}"),
            "{shown}"
        );
    }
}

#[test]
fn unreadable_event_is_named_not_fatal() {
    let mut transcript = Transcript::new(Vec::new(), "shop");
    let stored = StoredEvent {
        session_id: Uuid::nil(),
        seq: 3,
        at: start(),
        kind: "hologram".into(),
        body: "{\"seq\":3,\"type\":\"hologram\"}".into(),
        prev_hash: vec![0; 32],
        hash: vec![0; 32],
    };
    transcript.stored(&stored).unwrap();
    let out = String::from_utf8(transcript.finish().unwrap()).unwrap();
    assert!(
        out.starts_with("-- event seq 3 (hologram) cannot be shown: "),
        "{out}"
    );
}
