//! Plain-text output for the list commands, and text made safe for a terminal.

use std::borrow::Cow;

/// Prints `rows` under `headers`, columns padded to their widest cell. Cells are printed as
/// [`terminal_cell`]s: a name with a newline or an escape sequence cannot break the table or
/// reach the terminal.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        println!("(none)");
        return;
    }
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| terminal_cell(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(|c| c.as_ref()).collect());
    }
}

/// `-` for an absent value, so columns stay aligned.
pub fn or_dash(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_string()
}

/// Timestamps in lists: to the second, UTC.
pub fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

/// Text that came from outside (recorded SQL, values, server messages, names) made safe to
/// print: control characters other than newline and tab (escape sequences, carriage returns,
/// backspaces, C1 controls) and the invisible bidirectional controls that reorder how a line
/// reads become visible escapes such as `\x1b` or `\u{202e}`. A CR of a CRLF line end is
/// dropped. Borrowed when there is nothing to change.
pub fn terminal_text(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Like [`terminal_text`], for one cell of a table or one line: newlines and tabs are escaped
/// too (`\n`, `\t`).
pub fn terminal_cell(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

fn escape(text: &str, one_line: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        if one_line {
            is_unsafe(c) || c == '\n' || c == '\t'
        } else {
            is_unsafe(c)
        }
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if !one_line && chars.peek() == Some(&'\n') => {}
            '\n' if one_line => out.push_str("\\n"),
            '\t' if one_line => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) && (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Characters a terminal acts on or that change how the text around them reads: C0 controls
/// but newline and tab, DEL, C1 controls, and the bidirectional marks, embeddings, overrides
/// and isolates.
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let text = "SELECT 'zoë', 1;\n\tFROM t";
        assert!(matches!(terminal_text(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(terminal_cell("alice"), Cow::Borrowed("alice")));
    }

    #[test]
    fn escape_sequences_and_carriage_returns_become_visible() {
        let hostile = "ok\u{1b}[2J\u{1b}]0;owned\u{7}\rfake\u{8}\u{7f}\u{9b}31m";
        let shown = terminal_text(hostile);
        assert_eq!(
            shown,
            "ok\\x1b[2J\\x1b]0;owned\\x07\\rfake\\x08\\x7f\\u{9b}31m"
        );
        assert!(!shown.chars().any(|c| c.is_control()));
    }

    #[test]
    fn bidirectional_overrides_become_visible() {
        assert_eq!(
            terminal_text("admin\u{202e}txt.exe\u{2066}"),
            "admin\\u{202e}txt.exe\\u{2066}"
        );
    }

    #[test]
    fn text_keeps_its_lines_and_cells_stay_on_one() {
        assert_eq!(terminal_text("a\r\nb\tc\n"), "a\nb\tc\n");
        assert_eq!(terminal_cell("a\r\nb\tc"), "a\\r\\nb\\tc");
    }
}
