use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng};

use super::*;
use crate::protocol::backend::put_message;
use crate::record::event::{Column, Param, ServerMessage, StatementClass};

const INT4: u32 = 23;
const TEXT: u32 = 25;

fn frame(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Frame {
    let mut buf = BytesMut::new();
    put_message(&mut buf, tag, body);
    let body = Bytes::from(buf).slice(5..);
    Frame {
        tag,
        body_len: body.len(),
        body,
    }
}

fn cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn parse(name: &str, sql: &str, types: &[u32]) -> Frame {
    frame(b'P', |b| {
        cstr(b, name);
        cstr(b, sql);
        b.put_i16(types.len() as i16);
        types.iter().for_each(|&t| b.put_u32(t));
    })
}

/// Bind with one format code per parameter; `None` is NULL.
fn bind(
    portal: &str,
    statement: &str,
    params: &[(i16, Option<&[u8]>)],
    result_formats: &[i16],
) -> Frame {
    frame(b'B', |b| {
        cstr(b, portal);
        cstr(b, statement);
        b.put_i16(params.len() as i16);
        params.iter().for_each(|(f, _)| b.put_i16(*f));
        b.put_i16(params.len() as i16);
        for (_, value) in params {
            match value {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_i16(result_formats.len() as i16);
        result_formats.iter().for_each(|&f| b.put_i16(f));
    })
}

fn execute(portal: &str, max_rows: i32) -> Frame {
    frame(b'E', |b| {
        cstr(b, portal);
        b.put_i32(max_rows);
    })
}

fn describe(target: u8, name: &str) -> Frame {
    frame(b'D', |b| {
        b.put_u8(target);
        cstr(b, name);
    })
}

fn simple(tag: u8) -> Frame {
    frame(tag, |_| {})
}

fn query(sql: &str) -> Frame {
    frame(b'Q', |b| cstr(b, sql))
}

fn row_description(columns: &[(&str, u32, i16)]) -> Frame {
    frame(b'T', |b| {
        b.put_i16(columns.len() as i16);
        for (name, oid, format) in columns {
            cstr(b, name);
            b.put_i32(0);
            b.put_i16(0);
            b.put_u32(*oid);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(*format);
        }
    })
}

fn data_row(values: &[Option<&[u8]>]) -> Frame {
    frame(b'D', |b| {
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
    })
}

fn command_complete(tag: &str) -> Frame {
    frame(b'C', |b| cstr(b, tag))
}

fn ready(status: u8) -> Frame {
    frame(b'Z', |b| b.put_u8(status))
}

fn parameter_description(types: &[u32]) -> Frame {
    frame(b't', |b| {
        b.put_i16(types.len() as i16);
        types.iter().for_each(|&t| b.put_u32(t));
    })
}

fn text(s: &str) -> Capped {
    Capped {
        text: s.to_owned(),
        len: s.len() as u64,
        hex: false,
        redacted: false,
    }
}

/// Feeds frames one millisecond apart and collects the events.
struct Session {
    capture: Capture,
    clock: DateTime<Utc>,
}

impl Session {
    fn new() -> Self {
        Self::with_limits(CaptureLimits::default())
    }

    /// With the default secret patterns, as `Capture::new` has them.
    fn with_limits(limits: CaptureLimits) -> Self {
        Session {
            capture: Capture::new(limits),
            clock: DateTime::UNIX_EPOCH,
        }
    }

    fn with_secrets(patterns: &[&str]) -> Self {
        let patterns: Vec<String> = patterns.iter().map(|&p| p.to_owned()).collect();
        Session {
            capture: Capture::with_secrets(
                CaptureLimits::default(),
                Arc::new(SecretPatterns::new(&patterns).unwrap()),
            ),
            clock: DateTime::UNIX_EPOCH,
        }
    }

    fn feed(&mut self, direction: Direction, frames: &[Frame]) -> Vec<EventKind> {
        let mut out = Vec::new();
        for f in frames {
            self.clock += TimeDelta::milliseconds(1);
            self.capture.on_frame(direction, f, self.clock, &mut out);
        }
        out
    }

    fn client(&mut self, frames: &[Frame]) -> Vec<EventKind> {
        self.feed(Direction::ClientToServer, frames)
    }

    fn server(&mut self, frames: &[Frame]) -> Vec<EventKind> {
        self.feed(Direction::ServerToClient, frames)
    }
}

#[test]
fn extended_protocol_pipeline_produces_the_exact_event_sequence() {
    let mut s = Session::new();
    let sql = "select $1::int4 + 1 as n";
    let sent = s.client(&[
        parse("", sql, &[INT4]),
        bind("", "", &[(1, Some(&41i32.to_be_bytes()))], &[1]),
        describe(b'P', ""),
        execute("", 0),
        simple(b'S'),
    ]);
    let received = s.server(&[
        simple(b'1'),
        simple(b'2'),
        row_description(&[("n", INT4, 1)]),
        data_row(&[Some(&42i32.to_be_bytes())]),
        command_complete("SELECT 1"),
        ready(b'I'),
    ]);
    assert_eq!(
        sent,
        vec![
            EventKind::Parse {
                statement: String::new(),
                sql: text(sql),
                param_types: vec![INT4],
                class: StatementClass::Read,
                risks: vec![],
            },
            EventKind::Bind {
                portal: String::new(),
                statement: String::new(),
                params: vec![Param {
                    type_oid: INT4,
                    value: Some(text("41"))
                }],
            },
            EventKind::Describe {
                target: 'P',
                name: String::new()
            },
            EventKind::Execute {
                portal: String::new(),
                statement: String::new(),
                sql: Some(text(sql)),
                max_rows: 0,
            },
            EventKind::Sync,
        ]
    );
    assert_eq!(
        received,
        vec![
            EventKind::RowDescription {
                columns: vec![Column {
                    name: "n".into(),
                    type_oid: INT4
                }]
            },
            EventKind::Rows {
                rows: vec![vec![Some(text("42"))]],
                omitted: 0
            },
            // From the Parse (t=1ms) to the CommandComplete (t=10ms).
            EventKind::CommandComplete {
                tag: "SELECT 1".into(),
                rows: Some(1),
                duration_micros: 9_000
            },
            EventKind::ReadyForQuery { status: 'I' },
        ]
    );
}

#[test]
fn named_statement_prepared_once_is_attributed_on_every_execute() {
    let mut s = Session::new();
    let sql = "update accounts set balance = $2 where id = $1";
    // Prepared like tokio-postgres does: no types in Parse, the server says them in reply.
    s.client(&[parse("s1", sql, &[]), describe(b'S', "s1"), simple(b'S')]);
    s.server(&[
        simple(b'1'),
        parameter_description(&[INT4, TEXT]),
        simple(b'n'),
        ready(b'I'),
    ]);
    // Unrelated unnamed statements in between must not disturb the named one.
    s.client(&[parse("", "select 1", &[]), simple(b'S')]);
    s.server(&[simple(b'1'), ready(b'I')]);
    for id in 1..=3i32 {
        let balance = format!("{}", id * 100);
        let events = s.client(&[
            bind(
                "",
                "s1",
                &[(1, Some(&id.to_be_bytes())), (0, Some(balance.as_bytes()))],
                &[],
            ),
            execute("", 0),
            simple(b'S'),
        ]);
        assert_eq!(
            events[0],
            EventKind::Bind {
                portal: String::new(),
                statement: "s1".into(),
                params: vec![
                    Param {
                        type_oid: INT4,
                        value: Some(text(&id.to_string()))
                    },
                    Param {
                        type_oid: TEXT,
                        value: Some(text(&balance))
                    },
                ],
            }
        );
        assert_eq!(
            events[1],
            EventKind::Execute {
                portal: String::new(),
                statement: "s1".into(),
                sql: Some(text(sql)),
                max_rows: 0,
            }
        );
        let done = s.server(&[simple(b'2'), command_complete("UPDATE 1"), ready(b'I')]);
        assert!(matches!(
            &done[0],
            EventKind::CommandComplete { rows: Some(1), .. }
        ));
    }
    // Closing the statement forgets it: a later Execute is no longer attributed.
    s.client(&[frame(b'C', |b| {
        b.put_u8(b'S');
        cstr(b, "s1");
    })]);
    let events = s.client(&[bind("", "s1", &[], &[]), execute("", 0)]);
    assert!(matches!(&events[1], EventKind::Execute { sql: None, .. }));
}

#[test]
fn parameters_keep_text_decode_binary_and_record_nulls() {
    let mut s = Session::new();
    s.client(&[parse(
        "",
        "insert into t values ($1, $2, $3, $4)",
        &[INT4, TEXT, 17, 600],
    )]);
    let events = s.client(&[bind(
        "",
        "",
        &[
            (0, Some(b"7")),
            (0, None),
            (1, Some(&[0xde, 0xad])),
            (1, Some(&[1, 2])),
        ],
        &[],
    )]);
    let EventKind::Bind { params, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        params[0],
        Param {
            type_oid: INT4,
            value: Some(text("7"))
        }
    );
    assert_eq!(
        params[1],
        Param {
            type_oid: TEXT,
            value: None
        }
    );
    let bytea = params[2].value.as_ref().unwrap();
    assert_eq!((bytea.text.as_str(), bytea.hex), ("dead", true));
    // A type without a decoder (point) is kept as hex.
    let point = params[3].value.as_ref().unwrap();
    assert_eq!((point.text.as_str(), point.hex), ("0102", true));
}

#[test]
fn rows_beyond_the_cap_are_counted_as_omitted() {
    let mut s = Session::with_limits(CaptureLimits {
        max_rows: 2,
        ..CaptureLimits::default()
    });
    s.client(&[query("select g from generate_series(1, 5) g")]);
    let mut frames = vec![row_description(&[("g", INT4, 0)])];
    for i in 1..=5 {
        frames.push(data_row(&[Some(i.to_string().as_bytes())]));
    }
    frames.extend([command_complete("SELECT 5"), ready(b'I')]);
    let events = s.server(&frames);
    assert_eq!(
        events[1],
        EventKind::Rows {
            rows: vec![vec![Some(text("1"))], vec![Some(text("2"))]],
            omitted: 3
        }
    );
    assert!(matches!(
        &events[2],
        EventKind::CommandComplete { rows: Some(5), .. }
    ));
}

#[test]
fn rows_stop_at_the_byte_cap_and_zero_disables_them() {
    let mut s = Session::with_limits(CaptureLimits {
        max_result_bytes: 5,
        ..CaptureLimits::default()
    });
    s.client(&[query("select")]);
    let events = s.server(&[
        data_row(&[Some(b"abc")]),
        data_row(&[Some(b"def")]),
        data_row(&[Some(b"g")]),
        command_complete("SELECT 3"),
    ]);
    // The third row would fit, but what is kept stays a prefix of the result.
    assert_eq!(
        events[0],
        EventKind::Rows {
            rows: vec![vec![Some(text("abc"))]],
            omitted: 2
        }
    );

    let mut off = Session::with_limits(CaptureLimits {
        max_rows: 0,
        ..CaptureLimits::default()
    });
    off.client(&[query("select 1")]);
    let events = off.server(&[data_row(&[Some(b"1")]), command_complete("SELECT 1")]);
    assert!(matches!(&events[..], [EventKind::CommandComplete { .. }]));
}

#[test]
fn copy_in_records_its_data_bytes_and_rows() {
    let mut s = Session::with_limits(CaptureLimits {
        max_copy_bytes: 6,
        ..CaptureLimits::default()
    });
    // With a column list, the default patterns know there is no secret column in the data.
    s.client(&[query("copy t (id, name) from stdin")]);
    let start = s.server(&[frame(b'G', |b| {
        b.put_u8(0);
        b.put_i16(1);
        b.put_i16(0);
    })]);
    assert_eq!(
        start,
        vec![EventKind::CopyStart {
            direction: "in".into(),
            binary: false
        }]
    );
    let sent = s.client(&[
        frame(b'd', |b| b.put_slice(b"1\ta\n2\tb\n")),
        frame(b'd', |b| b.put_slice(b"3\tc\n")),
        simple(b'c'),
    ]);
    assert_eq!(
        sent,
        vec![
            EventKind::CopyData {
                data: Capped {
                    text: "1\ta\n2\t".into(),
                    len: 12,
                    hex: false,
                    redacted: false
                }
            },
            EventKind::CopyEnd {
                direction: "in".into(),
                bytes: 12,
                rows: 3,
                outcome: "done".into()
            },
        ]
    );
    let done = s.server(&[command_complete("COPY 3"), ready(b'I')]);
    assert!(matches!(
        &done[0],
        EventKind::CommandComplete { rows: Some(3), .. }
    ));
}

#[test]
fn copy_out_ends_at_the_servers_copy_done_and_a_failed_copy_in_says_why() {
    let mut s = Session::new();
    s.client(&[query("copy t (x) to stdout")]);
    let events = s.server(&[
        frame(b'H', |b| {
            b.put_u8(0);
            b.put_i16(0);
        }),
        frame(b'd', |b| b.put_slice(b"x\n")),
        simple(b'c'),
        command_complete("COPY 1"),
        ready(b'I'),
    ]);
    assert_eq!(
        events[0],
        EventKind::CopyStart {
            direction: "out".into(),
            binary: false
        }
    );
    assert_eq!(events[1], EventKind::CopyData { data: text("x\n") });
    assert_eq!(
        events[2],
        EventKind::CopyEnd {
            direction: "out".into(),
            bytes: 2,
            rows: 1,
            outcome: "done".into()
        }
    );

    s.client(&[query("copy t from stdin")]);
    s.server(&[frame(b'G', |b| {
        b.put_u8(0);
        b.put_i16(0);
    })]);
    let failed = s.client(&[frame(b'f', |b| cstr(b, "cancelled by user"))]);
    assert_eq!(
        failed,
        vec![EventKind::CopyEnd {
            direction: "in".into(),
            bytes: 0,
            rows: 0,
            outcome: "fail: cancelled by user".into()
        }]
    );
}

#[test]
fn the_end_of_a_session_gives_out_the_rows_and_copy_data_of_an_unfinished_statement() {
    let mut s = Session::new();
    s.client(&[query("select x from t")]);
    s.server(&[
        row_description(&[("x", 25, 0)]),
        data_row(&[Some(b"a")]),
        data_row(&[Some(b"b")]),
    ]);
    let mut out = Vec::new();
    s.capture.finish(&mut out);
    assert_eq!(
        out,
        vec![EventKind::Rows {
            rows: vec![vec![Some(text("a"))], vec![Some(text("b"))]],
            omitted: 0
        }]
    );

    let mut s = Session::new();
    s.client(&[query("copy t (x) to stdout")]);
    s.server(&[
        frame(b'H', |b| {
            b.put_u8(0);
            b.put_i16(0);
        }),
        frame(b'd', |b| b.put_slice(b"x\n")),
    ]);
    let mut out = Vec::new();
    s.capture.finish(&mut out);
    assert_eq!(
        out,
        vec![
            EventKind::CopyData { data: text("x\n") },
            EventKind::CopyEnd {
                direction: "out".into(),
                bytes: 2,
                rows: 1,
                outcome: "fail: the session ended during the COPY".into()
            }
        ]
    );
    // Nothing left: a second finish adds nothing.
    let mut again = Vec::new();
    s.capture.finish(&mut again);
    assert!(again.is_empty());
}

fn error_response(code: &str, message: &str, position: &str) -> Frame {
    frame(b'E', |b| {
        for (field, value) in [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', code),
            (b'M', message),
            (b'P', position),
        ] {
            b.put_u8(field);
            cstr(b, value);
        }
        b.put_u8(0);
    })
}

#[test]
fn an_error_carries_its_position_and_skips_the_rest_of_the_pipeline() {
    // No Describe: with secret patterns, rows of columns nobody named would be redacted.
    let mut s = Session::with_secrets(&[]);
    s.client(&[
        parse("", "selec 1", &[]),
        bind("", "", &[], &[]),
        execute("", 0),
        simple(b'S'),
        parse("", "select 2", &[]),
        bind("", "", &[], &[]),
        execute("", 0),
        simple(b'S'),
    ]);
    let events = s.server(&[
        error_response("42601", "syntax error at or near \"selec\"", "1"),
        ready(b'I'),
        simple(b'1'),
        simple(b'2'),
        data_row(&[Some(b"2")]),
        command_complete("SELECT 1"),
        ready(b'I'),
    ]);
    assert_eq!(
        events[0],
        EventKind::Error(ServerMessage {
            severity: "ERROR".into(),
            code: "42601".into(),
            message: "syntax error at or near \"selec\"".into(),
            detail: None,
            hint: None,
            position: Some(1),
        })
    );
    // The second statement's rows and completion are matched to the second Execute: timed from
    // its own Parse (t=5ms) to its completion (t=14ms).
    assert_eq!(
        events[2],
        EventKind::Rows {
            rows: vec![vec![Some(text("2"))]],
            omitted: 0
        }
    );
    assert_eq!(
        events[3],
        EventKind::CommandComplete {
            tag: "SELECT 1".into(),
            rows: Some(1),
            duration_micros: 9_000
        }
    );
}

#[test]
fn each_statement_of_a_multi_statement_query_gets_its_own_duration() {
    let mut s = Session::new();
    let sent = s.client(&[query("begin; delete from t; commit")]);
    assert!(matches!(
        &sent[0],
        EventKind::Query { class: StatementClass::Write, risks, .. } if risks == &["delete_without_where"]
    ));
    let events = s.server(&[
        command_complete("BEGIN"),
        command_complete("DELETE 4"),
        command_complete("COMMIT"),
        ready(b'I'),
    ]);
    let durations: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EventKind::CommandComplete {
                duration_micros,
                rows,
                ..
            } => Some((*duration_micros, *rows)),
            _ => None,
        })
        .collect();
    assert_eq!(
        durations,
        vec![(1_000, None), (1_000, Some(4)), (1_000, None)]
    );
}

#[test]
fn notifications_and_parameter_changes_are_recorded() {
    let mut s = Session::new();
    let events = s.server(&[
        frame(b'A', |b| {
            b.put_i32(4242);
            cstr(b, "jobs");
            cstr(b, "{\"id\":1}");
        }),
        frame(b'S', |b| {
            cstr(b, "TimeZone");
            cstr(b, "UTC");
        }),
    ]);
    assert_eq!(
        events,
        vec![
            EventKind::Notification {
                process_id: 4242,
                channel: "jobs".into(),
                payload: text("{\"id\":1}")
            },
            EventKind::ParameterStatus {
                name: "TimeZone".into(),
                value: "UTC".into()
            },
        ]
    );
}

#[test]
fn role_passwords_are_redacted_in_the_recorded_sql() {
    let mut s = Session::new();
    let sql = "ALTER ROLE alice WITH PASSWORD 'hunter2'";
    let events = s.client(&[query(sql)]);
    let EventKind::Query {
        sql: recorded,
        class,
        ..
    } = &events[0]
    else {
        panic!()
    };
    assert_eq!(recorded.text, "ALTER ROLE alice WITH PASSWORD '***'");
    assert!(recorded.redacted);
    assert_eq!(recorded.len, sql.len() as u64);
    assert_eq!(*class, StatementClass::Privilege);
}

#[test]
fn a_streamed_query_is_recorded_from_its_prefix_with_its_declared_length() {
    let mut s = Session::with_limits(CaptureLimits {
        max_sql_bytes: 10,
        ..CaptureLimits::default()
    });
    let prefix = Bytes::from_static(b"insert into t values ('aaaa");
    let streamed = Frame {
        tag: b'Q',
        body_len: 5_000_001,
        body: prefix,
    };
    let events = s.client(&[streamed]);
    let EventKind::Query { sql, class, .. } = &events[0] else {
        panic!()
    };
    assert_eq!(sql.text, "insert int");
    assert_eq!(sql.len, 5_000_000);
    assert!(sql.is_truncated());
    assert_eq!(*class, StatementClass::Write);
}

#[test]
fn frames_that_produce_no_event_allocate_nothing_in_the_output() {
    let mut s = Session::new();
    let events = s.server(&[
        simple(b'1'),
        simple(b'2'),
        simple(b'3'),
        simple(b'n'),
        frame(b'K', |b| b.put_u64(7)),
    ]);
    assert!(events.is_empty());
    assert_eq!(events.capacity(), 0);
}

#[test]
fn random_bytes_under_every_tag_never_panic() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let tags = b"QPBEDCSHFdcfXTDCIsENZGHWdcAStn123VK";
    let mut s = Session::new();
    for round in 0..20_000 {
        let tag = tags[rng.gen_range(0..tags.len())];
        let len = rng.gen_range(0..64);
        let mut body: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        // Small counts and lengths reach deeper into the decoders than uniform bytes do.
        for b in body.iter_mut() {
            if rng.gen_bool(0.3) {
                *b = rng.gen_range(0..4);
            }
        }
        let declared = if rng.gen_bool(0.2) {
            len + rng.gen_range(1..100)
        } else {
            len
        };
        let f = Frame {
            tag,
            body_len: declared,
            body: Bytes::from(body),
        };
        let direction = if round % 2 == 0 {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        s.feed(direction, &[f]);
    }
}

/// A value recorded as redacted: nothing of it but its length.
fn hidden(len: usize) -> Capped {
    Capped {
        text: String::new(),
        len: len as u64,
        hex: false,
        redacted: true,
    }
}

fn copy_in_response() -> Frame {
    frame(b'G', |b| {
        b.put_u8(0);
        b.put_i16(0);
    })
}

#[test]
fn rows_of_secret_columns_are_redacted_and_the_others_untouched() {
    let mut s = Session::new();
    s.client(&[query("select id, password, email, \"Api_Key\" from users")]);
    let events = s.server(&[
        row_description(&[
            ("id", INT4, 0),
            ("password", TEXT, 0),
            ("email", TEXT, 0),
            ("Api_Key", TEXT, 0),
        ]),
        data_row(&[Some(b"1"), Some(b"hunter2"), Some(b"a@b"), Some(b"k-1")]),
        data_row(&[Some(b"2"), None, Some(b"c@d"), Some(b"")]),
        command_complete("SELECT 2"),
        ready(b'I'),
    ]);
    // The column names stay: they say what was redacted.
    assert!(
        matches!(&events[0], EventKind::RowDescription { columns } if columns[1].name == "password")
    );
    assert_eq!(
        events[1],
        EventKind::Rows {
            rows: vec![
                vec![
                    Some(text("1")),
                    Some(hidden(7)),
                    Some(text("a@b")),
                    Some(hidden(3))
                ],
                // NULL has no value to hide; an empty value still says it was redacted.
                vec![Some(text("2")), None, Some(text("c@d")), Some(hidden(0))],
            ],
            omitted: 0
        }
    );
}

#[test]
fn rows_are_redacted_by_the_columns_a_describe_revealed_however_much_later() {
    let mut s = Session::new();
    // Prepared and described once (like tokio-postgres or asyncpg), executed later without a
    // Describe: the statement's columns say which values to hide, in binary too.
    s.client(&[
        parse("s1", "select id, token from sessions where id = $1", &[]),
        describe(b'S', "s1"),
        simple(b'S'),
    ]);
    s.server(&[
        simple(b'1'),
        parameter_description(&[INT4]),
        row_description(&[("id", INT4, 0), ("token", TEXT, 0)]),
        ready(b'I'),
    ]);
    s.client(&[query("select 1")]);
    s.server(&[command_complete("SELECT 1"), ready(b'I')]);
    s.client(&[
        bind("", "s1", &[(1, Some(&5i32.to_be_bytes()))], &[1]),
        execute("", 0),
        simple(b'S'),
    ]);
    let events = s.server(&[
        simple(b'2'),
        data_row(&[Some(&5i32.to_be_bytes()), Some(b"tok-abc")]),
        command_complete("SELECT 1"),
        ready(b'I'),
    ]);
    assert_eq!(
        events[0],
        EventKind::Rows {
            rows: vec![vec![Some(text("5")), Some(hidden(7))]],
            omitted: 0
        }
    );

    // Described as a portal (like libpq), in the same pipeline as its Execute.
    s.client(&[
        parse("", "select secret from vault", &[]),
        bind("", "", &[], &[]),
        describe(b'P', ""),
        execute("", 0),
        simple(b'S'),
    ]);
    let events = s.server(&[
        simple(b'1'),
        simple(b'2'),
        row_description(&[("secret", TEXT, 0)]),
        data_row(&[Some(b"s3")]),
        command_complete("SELECT 1"),
        ready(b'I'),
    ]);
    assert_eq!(
        events[1],
        EventKind::Rows {
            rows: vec![vec![Some(hidden(2))]],
            omitted: 0
        }
    );
}

#[test]
fn rows_of_columns_nobody_described_are_redacted_unless_there_are_no_patterns() {
    for (patterns, want) in [(&["*password*"][..], hidden(5)), (&[][..], text("alice"))] {
        let mut s = Session::with_secrets(patterns);
        s.client(&[
            parse("", "select name from users", &[]),
            bind("", "", &[], &[]),
            execute("", 0),
            simple(b'S'),
        ]);
        let events = s.server(&[
            simple(b'1'),
            simple(b'2'),
            data_row(&[Some(b"alice")]),
            command_complete("SELECT 1"),
        ]);
        assert_eq!(
            events[0],
            EventKind::Rows {
                rows: vec![vec![Some(want)]],
                omitted: 0
            }
        );
    }
}

#[test]
fn a_parameter_bound_to_a_secret_column_is_redacted_in_every_bind_however_much_later() {
    let mut s = Session::new();
    let sql = "update users set password = $2, email = $3 where id = $1";
    s.client(&[parse("set_pw", sql, &[INT4, TEXT, TEXT]), simple(b'S')]);
    s.server(&[simple(b'1'), ready(b'I')]);
    // Many other statements in between, the unnamed one reused each time.
    for i in 0..50 {
        s.client(&[parse("", &format!("select {i}"), &[]), simple(b'S')]);
        s.server(&[simple(b'1'), ready(b'I')]);
    }
    for (password, binary) in [(&b"hunter2"[..], false), (&b"correct horse"[..], true)] {
        let events = s.client(&[bind(
            "",
            "set_pw",
            &[
                (1, Some(&7i32.to_be_bytes())),
                (i16::from(binary), Some(password)),
                (0, Some(b"a@b")),
            ],
            &[],
        )]);
        assert_eq!(
            events[0],
            EventKind::Bind {
                portal: String::new(),
                statement: "set_pw".into(),
                params: vec![
                    Param {
                        type_oid: INT4,
                        value: Some(text("7"))
                    },
                    Param {
                        type_oid: TEXT,
                        value: Some(hidden(password.len()))
                    },
                    Param {
                        type_oid: TEXT,
                        value: Some(text("a@b"))
                    },
                ],
            }
        );
    }
    // A NULL stays NULL.
    let events = s.client(&[bind("", "set_pw", &[(0, None), (0, None), (0, None)], &[])]);
    let EventKind::Bind { params, .. } = &events[0] else {
        panic!()
    };
    assert!(params.iter().all(|p| p.value.is_none()));
}

#[test]
fn parameter_ten_is_not_parameter_one() {
    let mut s = Session::new();
    let placeholders: Vec<String> = (1..=9).map(|i| format!("${i}")).collect();
    let sql = format!(
        "insert into t (a, b, c, d, e, f, g, h, i, token) values ({}, $10)",
        placeholders.join(", ")
    );
    s.client(&[parse("", &sql, &[])]);
    let values: Vec<(i16, Option<&[u8]>)> = (0..10).map(|_| (0, Some(&b"v"[..]))).collect();
    let events = s.client(&[bind("", "", &values, &[])]);
    let EventKind::Bind { params, .. } = &events[0] else {
        panic!()
    };
    let redacted: Vec<bool> = params
        .iter()
        .map(|p| p.value.as_ref().unwrap().redacted)
        .collect();
    assert_eq!(
        redacted,
        [
            false, false, false, false, false, false, false, false, false, true
        ]
    );
}

#[test]
fn a_bind_to_a_statement_beyond_the_tracking_cap_redacts_every_value() {
    let mut s = Session::with_limits(CaptureLimits {
        max_prepared_statements: 1,
        ..CaptureLimits::default()
    });
    s.client(&[
        parse("first", "select 1", &[]),
        parse("untracked", "update u set token = $1 where id = $2", &[]),
    ]);
    let events = s.client(&[bind(
        "",
        "untracked",
        &[(0, Some(b"t0k")), (0, Some(b"5"))],
        &[],
    )]);
    let EventKind::Bind { params, .. } = &events[0] else {
        panic!()
    };
    assert_eq!(params[0].value, Some(hidden(3)));
    assert_eq!(params[1].value, Some(hidden(1)));
}

#[test]
fn secret_literals_are_replaced_in_recorded_sql_and_classified_from_the_original() {
    let mut s = Session::new();
    let sql = "update users set password = 'hunter2' where id = 1";
    let events = s.client(&[query(sql)]);
    assert_eq!(
        events[0],
        EventKind::Query {
            sql: Capped {
                text: "update users set password = '***' where id = 1".into(),
                len: sql.len() as u64,
                hex: false,
                redacted: true,
            },
            class: StatementClass::Write,
            risks: Vec::new(),
        }
    );

    // A Parse, and every Execute attributed to it, carries the redacted text.
    let sql = "insert into users (email, api_key) values ('a@b', 'k-123'), ('c@d', 'k-456')";
    let events = s.client(&[
        parse("ins", sql, &[]),
        bind("", "ins", &[], &[]),
        execute("", 0),
    ]);
    let recorded = "insert into users (email, api_key) values ('a@b', '***'), ('c@d', '***')";
    let EventKind::Parse {
        sql: parsed, class, ..
    } = &events[0]
    else {
        panic!()
    };
    assert_eq!((parsed.text.as_str(), parsed.redacted), (recorded, true));
    assert_eq!(*class, StatementClass::Write);
    let EventKind::Execute {
        sql: Some(executed),
        ..
    } = &events[2]
    else {
        panic!()
    };
    assert_eq!(executed, parsed);

    // Role passwords and secret columns in one text.
    let events = s.client(&[query(
        "alter role a password 'p1'; update t set token = 'p2'; select 'token = x'",
    )]);
    let EventKind::Query { sql, .. } = &events[0] else {
        panic!()
    };
    assert_eq!(
        sql.text,
        "alter role a password '***'; update t set token = '***'; select 'token = x'"
    );

    // Nothing secret: nothing marked.
    let events = s.client(&[query("select 'password' as word, 1 as token")]);
    let EventKind::Query { sql, .. } = &events[0] else {
        panic!()
    };
    assert!(!sql.redacted);
}

#[test]
fn custom_patterns_replace_the_defaults() {
    let mut s = Session::with_secrets(&["email", "*_iban"]);
    let events = s.client(&[query(
        "update users set email = 'a@b', password = 'pw', Payout_IBAN = 'DE00'",
    )]);
    let EventKind::Query { sql, .. } = &events[0] else {
        panic!()
    };
    assert_eq!(
        sql.text,
        "update users set email = '***', password = 'pw', Payout_IBAN = '***'"
    );
}

#[test]
fn copy_data_is_not_kept_when_its_columns_may_include_a_secret_one() {
    for (sql, keeps) in [
        ("copy users (id, email) from stdin", true),
        ("copy users (id, password) from stdin", false),
        ("copy users from stdin", false),
        ("copy (select id, email from users) to stdout", true),
        ("copy (select * from users) to stdout", false),
    ] {
        let mut s = Session::new();
        s.client(&[query(sql)]);
        let out = sql.ends_with("stdout");
        let mut events = if out {
            s.server(&[frame(b'H', |b| {
                b.put_u8(0);
                b.put_i16(0);
            })])
        } else {
            s.server(&[copy_in_response()])
        };
        let data = [
            frame(b'd', |b| b.put_slice(b"1\tx\n")),
            frame(b'd', |b| b.put_slice(b"2\ty\n")),
            simple(b'c'),
        ];
        events.extend(if out {
            s.server(&data)
        } else {
            s.client(&data)
        });
        let want = if keeps {
            text("1\tx\n2\ty\n")
        } else {
            hidden(8)
        };
        assert_eq!(events[1], EventKind::CopyData { data: want }, "{sql}");
        // The counts stay either way.
        assert!(
            matches!(
                &events[2],
                EventKind::CopyEnd {
                    bytes: 8,
                    rows: 2,
                    ..
                }
            ),
            "{sql}: {events:?}"
        );
    }
}

#[test]
fn copy_data_through_the_extended_protocol_and_without_patterns() {
    let mut s = Session::new();
    s.client(&[
        parse("", "copy vault (name, secret) from stdin", &[]),
        bind("", "", &[], &[]),
        execute("", 0),
        simple(b'S'),
    ]);
    s.server(&[simple(b'1'), simple(b'2'), copy_in_response()]);
    let events = s.client(&[frame(b'd', |b| b.put_slice(b"a\tb\n")), simple(b'c')]);
    assert_eq!(events[0], EventKind::CopyData { data: hidden(4) });

    let mut s = Session::with_secrets(&[]);
    s.client(&[query("copy vault from stdin")]);
    s.server(&[copy_in_response()]);
    let events = s.client(&[frame(b'd', |b| b.put_slice(b"a\tb\n")), simple(b'c')]);
    assert_eq!(
        events[0],
        EventKind::CopyData {
            data: text("a\tb\n")
        }
    );
}

#[test]
fn random_sql_in_queries_and_parses_never_panics() {
    let pieces = [
        "password",
        "token",
        "\"Secret\"",
        "=",
        ":=",
        "=>",
        "(",
        ")",
        ",",
        ";",
        "'x'",
        "'",
        "\"",
        "$1",
        "$10",
        "$",
        "$$",
        "--",
        "/*",
        "insert into t",
        "values",
        "select",
        "copy t",
        "from stdin",
        "(a, password)",
        "::text",
        "||",
        ".",
        "-",
        "é",
        " ",
        "\u{0}",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc0ffee);
    let mut s = Session::new();
    for round in 0..3_000 {
        let n = rng.gen_range(0..24);
        let sql: String = (0..n)
            .map(|_| pieces[rng.gen_range(0..pieces.len())])
            .collect();
        let mut frames = vec![if round % 2 == 0 {
            query(&sql)
        } else {
            parse("", &sql, &[])
        }];
        frames.push(bind("", "", &[(0, Some(b"v")), (1, None)], &[]));
        s.client(&frames);
        s.server(&[copy_in_response()]);
        s.client(&[frame(b'd', |b| b.put_slice(b"x\n")), simple(b'c')]);
        s.server(&[ready(b'I')]);
        // Garbage bytes as SQL, cut off mid-character.
        let garbage: Vec<u8> = (0..rng.gen_range(0..32)).map(|_| rng.r#gen()).collect();
        s.client(&[Frame {
            tag: b'Q',
            body_len: garbage.len() + 10,
            body: Bytes::from(garbage),
        }]);
    }
}
