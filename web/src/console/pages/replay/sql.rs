//! SQL text for the replay: a prepared statement shown with its parameters written in, and
//! the client's own introspection told apart from what the person ran.

use gateway::record::event::Param;

use super::entry::is_numeric;

/// `sql` with each `$n` outside strings, quoted names and comments replaced by the literal of
/// parameter n (as recorded; one the recording does not have stays `$n`). For reading only:
/// the literal of a value kept in part ends in `…`.
pub fn inline_params(sql: &str, params: &[Param]) -> String {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 16 * params.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => i = skip_quoted(bytes, i, b'\'', escapes_backslash(bytes, i)),
            b'"' => i = skip_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'$' if !continues_identifier(bytes, i) => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits > 0 {
                    let end = i + 1 + digits;
                    let param = sql[i + 1..end]
                        .parse::<usize>()
                        .ok()
                        .and_then(|n| n.checked_sub(1))
                        .and_then(|n| params.get(n));
                    if let Some(param) = param {
                        out.push_str(&sql[copied..i]);
                        out.push_str(&literal(param));
                        copied = end;
                    }
                    i = end;
                } else {
                    i = skip_dollar_quoted(bytes, i);
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied..]);
    out
}

/// A quote that starts an E'…' string, where a backslash escapes the next character.
fn escapes_backslash(bytes: &[u8], quote: usize) -> bool {
    quote > 0
        && matches!(bytes[quote - 1], b'E' | b'e')
        && (quote == 1 || !is_identifier_byte(bytes[quote - 2]))
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// `$` inside an identifier (`a$1` is a name, not a parameter).
fn continues_identifier(bytes: &[u8], at: usize) -> bool {
    at > 0 && is_identifier_byte(bytes[at - 1])
}

/// The index after the closing quote (doubled quotes continue the string).
fn skip_quoted(bytes: &[u8], start: usize, quote: u8, backslash: bool) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if backslash && bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Block comments nest in PostgreSQL.
fn skip_block_comment(bytes: &[u8], start: usize) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

/// `$tag$ … $tag$` (tag empty or a name); a lone `$` is just skipped.
fn skip_dollar_quoted(bytes: &[u8], start: usize) -> usize {
    let tag_len = bytes[start + 1..]
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
        .count();
    let close = start + 1 + tag_len;
    if bytes.get(close) != Some(&b'$') {
        return start + 1;
    }
    let tag = &bytes[start..=close];
    let body = close + 1;
    bytes[body..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(bytes.len(), |n| body + n + tag.len())
}

/// A parameter as a SQL literal: numbers and booleans bare, text quoted, bytes as `'\x…'`.
fn literal(param: &Param) -> String {
    let Some(value) = &param.value else {
        return "NULL".into();
    };
    if value.redacted {
        return "'[redacted]'".into();
    }
    let more = if value.is_truncated() { "…" } else { "" };
    if value.hex {
        return format!("'\\x{}{more}'", value.text);
    }
    let bare = (is_numeric(param.type_oid)
        && !value.text.is_empty()
        && value
            .text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)))
        || (param.type_oid == 16 && matches!(value.text.as_str(), "t" | "f" | "true" | "false"));
    if bare && more.is_empty() {
        value.text.clone()
    } else {
        format!("'{}{more}'", value.text.replace('\'', "''"))
    }
}

/// Statements a client sends for itself, not for the person: catalog lookups (psql's `\d`,
/// tab completion, a GUI's schema browser) and drivers' session set-up.
pub fn is_introspection(sql: &str) -> bool {
    const SET_UP: [&str; 9] = [
        "set extra_float_digits",
        "set application_name",
        "set datestyle",
        "set client_encoding",
        "show transaction isolation level",
        "select version()",
        "select current_schema()",
        "select pg_catalog.",
        "set session characteristics",
    ];
    let head: String = sql
        .trim_start()
        .chars()
        .take(4096)
        .collect::<String>()
        .to_ascii_lowercase();
    SET_UP.iter().any(|p| head.starts_with(p))
        || ((head.starts_with("select") || head.starts_with("with"))
            && (head.contains("pg_catalog.") || head.contains("information_schema.")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::record::event::Capped;

    fn text(oid: u32, v: &str) -> Param {
        Param {
            type_oid: oid,
            value: Some(Capped {
                text: v.into(),
                len: v.len() as u64,
                hex: false,
                redacted: false,
            }),
        }
    }

    #[test]
    fn parameters_are_written_in_outside_strings_names_and_comments() {
        let params = [
            text(23, "42"),
            text(25, "it's"),
            Param {
                type_oid: 25,
                value: None,
            },
        ];
        let sql = "SELECT $1, '$2', \"$2\", $2 -- $1\n, /* $1 /* $1 */ */ $3, a$1, $$ $1 $$, $x$ $2 $x$, $4";
        assert_eq!(
            inline_params(sql, &params),
            "SELECT 42, '$2', \"$2\", 'it''s' -- $1\n, /* $1 /* $1 */ */ NULL, a$1, $$ $1 $$, $x$ $2 $x$, $4"
        );
        assert_eq!(inline_params("E'\\'$1' || $1", &params), "E'\\'$1' || 42");
        assert_eq!(inline_params("$10 $1", &params), "$10 42");
    }

    #[test]
    fn literals_quote_what_is_not_plainly_a_number_or_boolean() {
        assert_eq!(literal(&text(23, "1; DROP TABLE x")), "'1; DROP TABLE x'");
        assert_eq!(literal(&text(16, "t")), "t");
        assert_eq!(literal(&text(0, "7")), "'7'");
        let mut cut = text(25, "abc");
        cut.value.as_mut().unwrap().len = 10;
        assert_eq!(literal(&cut), "'abc…'");
        let mut secret = text(25, "x");
        secret.value.as_mut().unwrap().redacted = true;
        assert_eq!(literal(&secret), "'[redacted]'");
    }

    #[test]
    fn introspection_is_told_from_what_a_person_runs() {
        assert!(is_introspection(
            "SELECT c.oid, n.nspname FROM pg_catalog.pg_class c"
        ));
        assert!(is_introspection("  SET extra_float_digits = 3"));
        assert!(is_introspection("select version()"));
        assert!(!is_introspection("SELECT * FROM orders"));
        assert!(!is_introspection("DELETE FROM pg_catalog.pg_class"));
    }

    #[test]
    fn hostile_sql_never_panics() {
        for sql in [
            "$", "'", "\"", "/*", "--", "$a", "$a$", "E'\\", "$1$", "é$1", "$٣",
        ] {
            let _ = inline_params(sql, &[text(23, "1")]);
        }
    }
}
