//! Lines of the transcript that depend on one thing only (the session row, one server message,
//! one block of COPY data): pure functions, so the state machine in `transcript` stays small.

use chrono::{DateTime, Utc};
use gateway::record::event::{Capped, ServerMessage};
use gateway::store::Session;

use super::super::output::{terminal_cell, terminal_text};

/// Who, where and when, from the session's row in the store.
pub fn header(session: &Session) -> Vec<String> {
    let safe = |text: &str| terminal_cell(text).into_owned();
    let application = session
        .application_name
        .as_deref()
        .map_or_else(String::new, |a| format!(" (application {})", safe(a)));
    let ended = match (session.ended_at, session.end_reason) {
        (Some(at), Some(reason)) => {
            let detail = session
                .end_detail
                .as_deref()
                .map_or_else(String::new, |d| format!(": {}", safe(d)));
            format!("{}, {}{detail}", stamp(at), reason.as_str())
        }
        _ => "(live)".to_string(),
    };
    vec![
        format!("-- pgbastion session {}", session.id),
        format!("-- person      {}", safe(&session.person_login)),
        format!(
            "-- target      {}, role {}",
            safe(&session.target_name),
            safe(&session.db_role)
        ),
        format!("-- client      {}{application}", safe(&session.client_addr)),
        format!(
            "-- TLS         {}",
            safe(session.tls_version.as_deref().unwrap_or("none"))
        ),
        format!("-- credential  {}", session.credential_id),
        format!("-- started     {}", stamp(session.started_at)),
        format!("-- ended       {ended}"),
    ]
}

/// `ERROR:  42P01: message`, the statement's line with a caret under the position (found in
/// `sql`, the statement that failed, when known), then DETAIL and HINT, as psql prints them.
/// Notices leave out the code.
pub fn server_message(message: &ServerMessage, with_code: bool, sql: Option<&str>) -> Vec<String> {
    let severity = terminal_cell(&message.severity);
    let text = terminal_text(&message.message);
    let mut lines = Vec::new();
    if with_code && !message.code.is_empty() {
        let code = terminal_cell(&message.code);
        lines.push(format!("{severity}:  {code}: {text}"));
    } else {
        lines.push(format!("{severity}:  {text}"));
    }
    if let Some(position) = message.position {
        match sql.and_then(|sql| locate(sql, position)) {
            Some(located) => lines.extend(located),
            None => lines.push(format!("POSITION:  {position}")),
        }
    }
    if let Some(detail) = &message.detail {
        lines.push(format!("DETAIL:  {}", terminal_text(detail)));
    }
    if let Some(hint) = &message.hint {
        lines.push(format!("HINT:  {}", terminal_text(hint)));
    }
    lines
}

/// psql's `LINE n: …` and the caret under the 1-based character `position` of `sql`.
fn locate(sql: &str, position: u32) -> Option<[String; 2]> {
    let index = usize::try_from(position).ok()?.checked_sub(1)?;
    let mut start = 0;
    for (number, line) in sql.split('\n').enumerate() {
        let length = line.chars().count();
        if index <= start + length {
            let before: String = line.chars().take(index - start).collect();
            let label = format!("LINE {}: ", number + 1);
            let indent = label.len() + terminal_cell(&before).chars().count();
            return Some([
                format!("{label}{}", terminal_cell(line.trim_end_matches('\r'))),
                format!("{}^", " ".repeat(indent)),
            ]);
        }
        start += length + 1;
    }
    None
}

/// The COPY data kept, one `  | ` line per line of data (hex as one line), and how much more
/// there was.
pub fn copy_data(data: &Capped) -> Vec<String> {
    let text = if data.hex {
        data.text.clone()
    } else {
        terminal_text(&data.text).into_owned()
    };
    let mut lines: Vec<String> = text.lines().map(|line| format!("  | {line}")).collect();
    if data.is_truncated() {
        lines.push(format!(
            "  … ({} bytes in all; the rest was not recorded)",
            data.len
        ));
    }
    lines
}

/// `IN` or `OUT`.
pub fn copy_direction(direction: &str) -> String {
    terminal_cell(&direction.to_uppercase()).into_owned()
}

/// Times in the header and at the end: to the microsecond, UTC.
pub fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_points_at_the_character_on_its_line() {
        assert_eq!(
            locate("SELECT *\nFROM nope;", 15),
            Some([
                "LINE 2: FROM nope;".to_string(),
                "             ^".to_string()
            ])
        );
        assert_eq!(
            locate("SELECT 'é', x", 13),
            Some([
                "LINE 1: SELECT 'é', x".to_string(),
                format!("{}^", " ".repeat(20))
            ])
        );
        assert_eq!(locate("SELECT 1", 0), None);
        assert_eq!(locate("SELECT 1", 99), None);
    }

    #[test]
    fn position_without_the_statement_is_given_as_a_number() {
        let message = ServerMessage {
            severity: "ERROR".into(),
            code: "42601".into(),
            message: "syntax error".into(),
            detail: None,
            hint: None,
            position: Some(8),
        };
        assert_eq!(
            server_message(&message, true, None),
            ["ERROR:  42601: syntax error", "POSITION:  8"]
        );
    }
}
