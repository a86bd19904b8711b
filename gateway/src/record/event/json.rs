//! The canonical JSON of an event, written directly into a buffer.
//!
//! The text is exactly what `serde_json::to_string(&event)` gives (that is the format the chain
//! hashes and `pgbastion verify` recomputes); this writer only gets there without serde's
//! generic machinery (the flattened, internally tagged enum goes through a map serialiser and
//! allocates) and appends into a buffer the caller reuses. It runs for every event on the
//! forwarding path. Debug builds, so the whole test suite, check every event it writes against
//! serde_json, and `writes_exactly_what_serde_json_writes` covers every kind.

use super::{Capped, Column, Event, EventKind, Param, ServerMessage, timestamp};

/// Appends the canonical JSON of `event` to `out`.
pub fn write_event(event: &Event, out: &mut String) {
    write_event_with(event, out, &mut EventTimes::default());
}

/// The JSON text of the last event time written, kept for the next event: the events of one
/// relay chunk share one clock reading, so a tap writing a chunk formats it once.
#[derive(Default)]
pub struct EventTimes {
    last: Option<chrono::DateTime<chrono::Utc>>,
    /// The quoted text, `"2026-12-08T05:11:42.123456Z"`, in `buf[..len]`.
    buf: [u8; 32],
    len: usize,
}

impl EventTimes {
    /// The quoted JSON text of `at`, or None for times `timestamp::format` leaves to chrono
    /// (leap seconds, years past 9999).
    fn quoted(&mut self, at: &chrono::DateTime<chrono::Utc>) -> Option<&str> {
        if self.last != Some(*at) {
            let mut text = [0u8; 30];
            let formatted = timestamp::format(at, &mut text)?.as_bytes();
            // Digits, '-', ':', 'T', '.', 'Z': nothing a JSON string must escape.
            self.buf[0] = b'"';
            self.buf[1..=formatted.len()].copy_from_slice(formatted);
            self.buf[formatted.len() + 1] = b'"';
            self.len = formatted.len() + 2;
            self.last = Some(*at);
        }
        std::str::from_utf8(&self.buf[..self.len]).ok()
    }
}

/// Like [`write_event`], reusing `times` from the previous event the caller wrote.
pub fn write_event_with(event: &Event, out: &mut String, times: &mut EventTimes) {
    #[cfg(debug_assertions)]
    let start = out.len();
    let mut w = Writer { out };
    w.raw("{\"seq\":");
    w.u64(event.seq);
    w.raw(",\"at\":");
    match times.quoted(&event.at) {
        Some(text) => w.raw(text),
        // Leap seconds and years beyond 9999: chrono's own text, as the serde path writes it.
        None => w.raw(&serde_json::to_string(&event.at).expect("a timestamp serialises")),
    }
    // Kind names are snake_case ASCII: nothing to escape.
    w.raw(",\"type\":\"");
    w.raw(super::super::chain::kind_name(&event.kind));
    w.raw("\"");
    w.kind(&event.kind);
    w.raw("}");
    #[cfg(debug_assertions)]
    debug_assert_eq!(
        &w.out[start..],
        serde_json::to_string(event).expect("an event serialises"),
        "the event writer disagrees with serde_json"
    );
}

/// Whether `bytes` hold a byte a JSON string must escape: '"', '\\' or a control character.
/// Branch-free over 16-byte chunks, which the compiler turns into vector compares.
fn needs_escape(bytes: &[u8]) -> bool {
    let escaped = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | escaped(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| escaped(b))
}

struct Writer<'a> {
    out: &'a mut String,
}

impl Writer<'_> {
    fn raw(&mut self, s: &str) {
        self.out.push_str(s);
    }

    fn key(&mut self, name: &str) {
        self.out.push_str(",\"");
        self.out.push_str(name);
        self.out.push_str("\":");
    }

    fn u64(&mut self, n: u64) {
        let mut buf = itoa::Buffer::new();
        self.out.push_str(buf.format(n));
    }

    fn i64(&mut self, n: i64) {
        let mut buf = itoa::Buffer::new();
        self.out.push_str(buf.format(n));
    }

    fn bool(&mut self, b: bool) {
        self.out.push_str(if b { "true" } else { "false" });
    }

    /// A JSON string, escaped as serde_json escapes: `"`, `\`, and control characters (the
    /// usual short forms, `\u00XX` in lowercase hex for the rest). Everything else is copied.
    fn str(&mut self, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.out.push('"');
        let bytes = s.as_bytes();
        if !needs_escape(bytes) {
            // The usual case (SQL, names, values): one copy.
            self.out.push_str(s);
            self.out.push('"');
            return;
        }
        let mut copied = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.out.push_str(&s[copied..i]);
            if escape.is_empty() {
                self.out.push_str("\\u00");
                self.out.push(char::from(HEX[usize::from(b >> 4)]));
                self.out.push(char::from(HEX[usize::from(b & 0xf)]));
            } else {
                self.out.push_str(escape);
            }
            copied = i + 1;
        }
        self.out.push_str(&s[copied..]);
        self.out.push('"');
    }

    fn char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        self.str(c.encode_utf8(&mut buf));
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    /// A JSON array of `items`, each written by `item`.
    fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.raw("[");
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            item(self, x);
        }
        self.raw("]");
    }

    fn strs(&mut self, list: &[String]) {
        self.list(list, |w, s| w.str(s));
    }

    fn capped(&mut self, c: &Capped) {
        self.raw("{\"text\":");
        self.str(&c.text);
        self.raw(",\"len\":");
        self.u64(c.len);
        if c.hex {
            self.raw(",\"hex\":true");
        }
        if c.redacted {
            self.raw(",\"redacted\":true");
        }
        self.raw("}");
    }

    fn opt_capped(&mut self, c: Option<&Capped>) {
        match c {
            Some(c) => self.capped(c),
            None => self.raw("null"),
        }
    }

    fn params(&mut self, params: &[Param]) {
        self.list(params, |w, p| {
            w.raw("{\"type_oid\":");
            w.u64(u64::from(p.type_oid));
            w.raw(",\"value\":");
            w.opt_capped(p.value.as_ref());
            w.raw("}");
        });
    }

    fn u32s(&mut self, list: &[u32]) {
        self.list(list, |w, n| w.u64(u64::from(*n)));
    }

    fn columns(&mut self, columns: &[Column]) {
        self.list(columns, |w, c| {
            w.raw("{\"name\":");
            w.str(&c.name);
            w.raw(",\"type_oid\":");
            w.u64(u64::from(c.type_oid));
            w.raw("}");
        });
    }

    fn rows(&mut self, rows: &[Vec<Option<Capped>>]) {
        self.list(rows, |w, row| {
            w.list(row, |w, value| w.opt_capped(value.as_ref()))
        });
    }

    fn risks(&mut self, risks: &[String]) {
        if !risks.is_empty() {
            self.key("risks");
            self.strs(risks);
        }
    }

    fn server_message(&mut self, m: &ServerMessage) {
        self.key("severity");
        self.str(&m.severity);
        self.key("code");
        self.str(&m.code);
        self.key("message");
        self.str(&m.message);
        if let Some(detail) = &m.detail {
            self.key("detail");
            self.str(detail);
        }
        if let Some(hint) = &m.hint {
            self.key("hint");
            self.str(hint);
        }
        if let Some(position) = m.position {
            self.key("position");
            self.u64(u64::from(position));
        }
    }

    /// The variant's fields, after its tag, in declaration order.
    fn kind(&mut self, kind: &EventKind) {
        match kind {
            EventKind::SessionStart {
                session_id,
                credential_id,
                person,
                groups,
                target,
                db_role,
                client_addr,
                application_name,
                tls_version,
                format_version,
            } => {
                let mut id = uuid::Uuid::encode_buffer();
                self.key("session_id");
                self.str(session_id.hyphenated().encode_lower(&mut id));
                self.key("credential_id");
                self.str(credential_id.hyphenated().encode_lower(&mut id));
                self.key("person");
                self.str(person);
                self.key("groups");
                self.strs(groups);
                self.key("target");
                self.str(target);
                self.key("db_role");
                self.str(db_role);
                self.key("client_addr");
                self.str(client_addr);
                self.key("application_name");
                self.opt_str(application_name.as_deref());
                self.key("tls_version");
                self.opt_str(tls_version.as_deref());
                self.key("format_version");
                self.u64(u64::from(*format_version));
            }
            EventKind::SessionEnd {
                reason,
                detail,
                bytes_client_to_server,
                bytes_server_to_client,
            } => {
                self.key("reason");
                self.str(reason);
                self.key("detail");
                self.opt_str(detail.as_deref());
                self.key("bytes_client_to_server");
                self.u64(*bytes_client_to_server);
                self.key("bytes_server_to_client");
                self.u64(*bytes_server_to_client);
            }
            EventKind::Query { sql, class, risks } => {
                self.key("sql");
                self.capped(sql);
                self.key("class");
                self.str(class.name());
                self.risks(risks);
            }
            EventKind::Parse {
                statement,
                sql,
                param_types,
                class,
                risks,
            } => {
                self.key("statement");
                self.str(statement);
                self.key("sql");
                self.capped(sql);
                self.key("param_types");
                self.u32s(param_types);
                self.key("class");
                self.str(class.name());
                self.risks(risks);
            }
            EventKind::Bind {
                portal,
                statement,
                params,
            } => {
                self.key("portal");
                self.str(portal);
                self.key("statement");
                self.str(statement);
                self.key("params");
                self.params(params);
            }
            EventKind::Execute {
                portal,
                statement,
                sql,
                max_rows,
            } => {
                self.key("portal");
                self.str(portal);
                self.key("statement");
                self.str(statement);
                self.key("sql");
                self.opt_capped(sql.as_ref());
                self.key("max_rows");
                self.i64(i64::from(*max_rows));
            }
            EventKind::Describe { target, name } | EventKind::Close { target, name } => {
                self.key("target");
                self.char(*target);
                self.key("name");
                self.str(name);
            }
            EventKind::Sync
            | EventKind::Flush
            | EventKind::EmptyQuery
            | EventKind::PortalSuspended => {}
            EventKind::FunctionCall { function_oid, args } => {
                self.key("function_oid");
                self.u64(u64::from(*function_oid));
                self.key("args");
                self.params(args);
            }
            EventKind::RowDescription { columns } => {
                self.key("columns");
                self.columns(columns);
            }
            EventKind::Rows { rows, omitted } => {
                self.key("rows");
                self.rows(rows);
                self.key("omitted");
                self.u64(*omitted);
            }
            EventKind::CommandComplete {
                tag,
                rows,
                duration_micros,
            } => {
                self.key("tag");
                self.str(tag);
                self.key("rows");
                match rows {
                    Some(n) => self.u64(*n),
                    None => self.raw("null"),
                }
                self.key("duration_micros");
                self.u64(*duration_micros);
            }
            EventKind::Error(m) | EventKind::Notice(m) => self.server_message(m),
            EventKind::ReadyForQuery { status } => {
                self.key("status");
                self.char(*status);
            }
            EventKind::CopyStart { direction, binary } => {
                self.key("direction");
                self.str(direction);
                self.key("binary");
                self.bool(*binary);
            }
            EventKind::CopyData { data } => {
                self.key("data");
                self.capped(data);
            }
            EventKind::CopyEnd {
                direction,
                bytes,
                rows,
                outcome,
            } => {
                self.key("direction");
                self.str(direction);
                self.key("bytes");
                self.u64(*bytes);
                self.key("rows");
                self.u64(*rows);
                self.key("outcome");
                self.str(outcome);
            }
            EventKind::Notification {
                process_id,
                channel,
                payload,
            } => {
                self.key("process_id");
                self.i64(i64::from(*process_id));
                self.key("channel");
                self.str(channel);
                self.key("payload");
                self.capped(payload);
            }
            EventKind::ParameterStatus { name, value } => {
                self.key("name");
                self.str(name);
                self.key("value");
                self.str(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::super::{Capped, Column, Event, EventKind, Param, ServerMessage, StatementClass};

    fn capped(text: &str, hex: bool, redacted: bool) -> Capped {
        Capped {
            text: text.into(),
            len: text.len() as u64 + 7,
            hex,
            redacted,
        }
    }

    fn every_kind(text: &str) -> Vec<EventKind> {
        let t = || text.to_string();
        let message = |with_optional: bool| ServerMessage {
            severity: "ERROR".into(),
            code: "42P01".into(),
            message: t(),
            detail: with_optional.then(t),
            hint: with_optional.then(t),
            position: with_optional.then_some(17),
        };
        let mut kinds = vec![
            EventKind::SessionStart {
                session_id: Uuid::new_v4(),
                credential_id: Uuid::new_v4(),
                person: t(),
                groups: vec![t(), "dba".into()],
                target: t(),
                db_role: t(),
                client_addr: "127.0.0.1:5".into(),
                application_name: Some(t()),
                tls_version: None,
                format_version: 1,
            },
            EventKind::SessionEnd {
                reason: "client_quit".into(),
                detail: None,
                bytes_client_to_server: u64::MAX,
                bytes_server_to_client: 0,
            },
            EventKind::SessionEnd {
                reason: t(),
                detail: Some(t()),
                bytes_client_to_server: 1,
                bytes_server_to_client: 2,
            },
            EventKind::Execute {
                portal: t(),
                statement: String::new(),
                sql: Some(capped(text, false, false)),
                max_rows: -1,
            },
            EventKind::Execute {
                portal: String::new(),
                statement: t(),
                sql: None,
                max_rows: i32::MAX,
            },
            EventKind::Describe {
                target: 'S',
                name: t(),
            },
            EventKind::Close {
                target: 'P',
                name: String::new(),
            },
            EventKind::Sync,
            EventKind::Flush,
            EventKind::FunctionCall {
                function_oid: u32::MAX,
                args: vec![Param {
                    type_oid: 17,
                    value: Some(capped("00ff", true, false)),
                }],
            },
            EventKind::RowDescription {
                columns: vec![
                    Column {
                        name: t(),
                        type_oid: 23,
                    },
                    Column {
                        name: String::new(),
                        type_oid: 0,
                    },
                ],
            },
            EventKind::RowDescription { columns: vec![] },
            EventKind::Rows {
                rows: vec![
                    vec![Some(capped(text, false, false)), None],
                    vec![],
                    vec![Some(capped("", false, true))],
                ],
                omitted: 3,
            },
            EventKind::Rows {
                rows: vec![],
                omitted: 0,
            },
            EventKind::CommandComplete {
                tag: t(),
                rows: Some(5),
                duration_micros: 12,
            },
            EventKind::CommandComplete {
                tag: "BEGIN".into(),
                rows: None,
                duration_micros: 0,
            },
            EventKind::EmptyQuery,
            EventKind::PortalSuspended,
            EventKind::Error(message(true)),
            EventKind::Notice(message(false)),
            EventKind::ReadyForQuery { status: 'I' },
            EventKind::ReadyForQuery { status: 'é' },
            EventKind::CopyStart {
                direction: "in".into(),
                binary: true,
            },
            EventKind::CopyStart {
                direction: "out".into(),
                binary: false,
            },
            EventKind::CopyData {
                data: capped(text, false, false),
            },
            EventKind::CopyEnd {
                direction: "in".into(),
                bytes: 9,
                rows: 2,
                outcome: t(),
            },
            EventKind::Notification {
                process_id: -4,
                channel: t(),
                payload: capped(text, false, false),
            },
            EventKind::ParameterStatus {
                name: t(),
                value: t(),
            },
            EventKind::Bind {
                portal: t(),
                statement: t(),
                params: vec![
                    Param {
                        type_oid: 0,
                        value: None,
                    },
                    Param {
                        type_oid: 25,
                        value: Some(capped(text, false, true)),
                    },
                ],
            },
        ];
        for (i, class) in StatementClass::ALL.into_iter().enumerate() {
            let risks = if i % 2 == 0 {
                vec![]
            } else {
                vec!["drop".to_string(), t()]
            };
            kinds.push(EventKind::Query {
                sql: capped(text, false, false),
                class,
                risks: risks.clone(),
            });
            kinds.push(EventKind::Parse {
                statement: t(),
                sql: capped(text, false, false),
                param_types: vec![0, 23, u32::MAX],
                class,
                risks,
            });
        }
        kinds
    }

    #[test]
    fn writes_exactly_what_serde_json_writes() {
        let mut tricky: String = (0u8..0x80).map(char::from).collect();
        tricky.push_str("é \u{2028} \u{feff} 😀 \\\" end");
        let times = [
            Utc.timestamp_opt(1_764_000_000, 0).unwrap(),
            Utc.timestamp_opt(1_764_000_000, 301_670_683).unwrap(),
            Utc.timestamp_opt(1_764_000_000, 5_000_000).unwrap(),
            // A leap second and a year past 9999 take chrono's own path.
            Utc.timestamp_opt(1_764_000_059, 1_500_000_000).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
        ];
        let mut checked = 0;
        let mut shared = super::EventTimes::default();
        for text in ["", "plain", "SELECT 1;", tricky.as_str()] {
            for (i, kind) in every_kind(text).into_iter().enumerate() {
                let event = Event {
                    seq: [0, 1, u64::MAX][i % 3],
                    at: times[i % times.len()],
                    kind,
                };
                let mut out = String::from("prefix kept:");
                super::write_event(&event, &mut out);
                let expected = serde_json::to_string(&event).unwrap();
                assert_eq!(out.strip_prefix("prefix kept:").unwrap(), expected);
                // The tap's way: one EventTimes across events whose times repeat and change.
                for _ in 0..2 {
                    out.clear();
                    super::write_event_with(&event, &mut out, &mut shared);
                    assert_eq!(out, expected, "with times kept from the event before");
                }
                checked += 1;
            }
        }
        assert!(checked > 100);
    }

    #[test]
    fn the_escape_check_finds_every_byte_that_needs_escaping_wherever_it_is() {
        let naive = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        for len in 0..50 {
            let plain = vec![b'a'; len];
            assert!(!super::needs_escape(&plain));
            for at in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\', b'\n', 0x20, 0x7f, 0xc3, b'!'] {
                    let mut bytes = plain.clone();
                    bytes[at] = special;
                    assert_eq!(super::needs_escape(&bytes), naive(&bytes), "{bytes:?}");
                }
            }
        }
    }
}
