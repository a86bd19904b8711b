//! Recorded values as the transcript shows them: parameters as SQL literals, result cells in
//! psql's aligned table. Everything recorded passes through `terminal_cell` first.

use gateway::record::event::{Capped, Column};

use super::super::output::terminal_cell;

/// Type OIDs psql right-aligns (int2, int4, int8, oid, float4, float8, numeric).
const NUMERIC_TYPES: [u32; 7] = [21, 23, 20, 26, 700, 701, 1700];

/// A bound parameter: `NULL`, `'text'` (quotes doubled), `\x0a0b (hex)` for bytes that were not
/// text, `[redacted]`, and `… (N bytes)` after a value kept only in part.
pub fn param(value: Option<&Capped>) -> String {
    let Some(value) = value else {
        return "NULL".to_string();
    };
    if value.redacted {
        return "[redacted]".to_string();
    }
    let text = terminal_cell(&value.text);
    let shown = if value.hex {
        format!("\\x{text}")
    } else {
        let ellipsis = if value.is_truncated() { "…" } else { "" };
        format!("'{}{ellipsis}'", text.replace('\'', "''"))
    };
    match (value.hex, value.is_truncated()) {
        (false, false) => shown,
        (false, true) => format!("{shown} ({} bytes)", value.len),
        (true, false) => format!("{shown} (hex)"),
        (true, true) => format!("{shown}… (hex, {} bytes)", value.len),
    }
}

/// A result cell: empty for NULL (as psql shows it), the text otherwise, on one line.
pub fn cell(value: Option<&Capped>) -> String {
    let Some(value) = value else {
        return String::new();
    };
    if value.redacted {
        return "[redacted]".to_string();
    }
    let text = terminal_cell(&value.text);
    let shown = if value.hex {
        format!("\\x{text}")
    } else {
        text.into_owned()
    };
    if value.is_truncated() {
        format!("{shown}… ({} bytes)", value.len)
    } else {
        shown
    }
}

/// A result as psql's aligned format prints it: names centred over a rule, cells separated by
/// ` | `, numbers right-aligned. Rows longer than the description get `?column?` headers.
pub fn table(columns: &[Column], rows: &[Vec<Option<Capped>>]) -> Vec<String> {
    let width = rows
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0)
        .max(columns.len());
    let names: Vec<String> = (0..width)
        .map(|i| match columns.get(i) {
            Some(column) => terminal_cell(&column.name).into_owned(),
            None => "?column?".to_string(),
        })
        .collect();
    let numeric: Vec<bool> = (0..width)
        .map(|i| {
            columns
                .get(i)
                .is_some_and(|c| NUMERIC_TYPES.contains(&c.type_oid))
        })
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            (0..width)
                .map(|i| row.get(i).map_or_else(String::new, |v| cell(v.as_ref())))
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut lines = Vec::with_capacity(cells.len() + 2);
    lines.push(join(names.iter().zip(&widths).map(|(name, &w)| {
        let pad = w - name.chars().count();
        let left = pad / 2;
        format!("{}{name}{}", " ".repeat(left), " ".repeat(pad - left))
    })));
    lines.push(
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    for row in &cells {
        lines.push(join(row.iter().zip(&widths).zip(&numeric).map(
            |((c, &w), &right)| {
                if right {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            },
        )));
    }
    lines
}

/// Cells joined as psql does: one space of margin, ` | ` between; no trailing blanks.
fn join(cells: impl Iterator<Item = String>) -> String {
    let line = cells.collect::<Vec<_>>().join(" | ");
    format!(" {line}").trim_end().to_string()
}

/// `1.234 ms` from microseconds.
pub fn millis(micros: u64) -> String {
    format!("{}.{:03} ms", micros / 1000, micros % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Capped {
        Capped {
            text: text.into(),
            len: text.len() as u64,
            hex: false,
            redacted: false,
        }
    }

    fn column(name: &str, type_oid: u32) -> Column {
        Column {
            name: name.into(),
            type_oid,
        }
    }

    #[test]
    fn parameters_read_as_literals() {
        assert_eq!(param(None), "NULL");
        assert_eq!(param(Some(&text("it's"))), "'it''s'");
        let cut = Capped {
            len: 5000,
            ..text("abc")
        };
        assert_eq!(param(Some(&cut)), "'abc…' (5000 bytes)");
        let bytes = Capped {
            text: "00ff".into(),
            len: 2,
            hex: true,
            redacted: false,
        };
        assert_eq!(param(Some(&bytes)), "\\x00ff (hex)");
        let secret = Capped {
            redacted: true,
            ..text("hunter2")
        };
        assert_eq!(param(Some(&secret)), "[redacted]");
    }

    #[test]
    fn cells_stay_on_one_line_and_cannot_reach_the_terminal() {
        assert_eq!(cell(None), "");
        assert_eq!(cell(Some(&text("a\nb\u{1b}[31m"))), "a\\nb\\x1b[31m");
    }

    #[test]
    fn table_is_aligned_like_psql() {
        let columns = [column("id", 23), column("name", 25)];
        let rows = vec![
            vec![Some(text("1")), Some(text("ann"))],
            vec![Some(text("10")), None],
        ];
        assert_eq!(
            table(&columns, &rows),
            [" id | name", "----+------", "  1 | ann", " 10 |"]
        );
    }

    #[test]
    fn extra_cells_get_unnamed_columns() {
        let rows = vec![vec![Some(text("x")), Some(text("y"))]];
        let lines = table(&[column("a", 25)], &rows);
        assert_eq!(lines[0], " a | ?column?");
        assert_eq!(lines[2], " x | y");
    }

    #[test]
    fn durations_in_milliseconds() {
        assert_eq!(millis(1234), "1.234 ms");
        assert_eq!(millis(5), "0.005 ms");
    }
}
