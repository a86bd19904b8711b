//! Snippets of search hits: a window of the SQL (or of the parameters, when only they matched)
//! with its matches marked. Built here rather than by the engines (FTS5's `snippet`,
//! PostgreSQL's `ts_headline`) so that both engines give the same snippets, and so that the
//! markers can only be ours: recorded text may hold any character, the markers included, and
//! they are replaced before marking.

use super::Needle;

/// Starts a match in [`super::StatementHit::snippet`] (STX).
pub const MARK_START: char = '\u{2}';
/// Ends a match (ETX).
pub const MARK_END: char = '\u{3}';

/// Characters shown before the first match.
const CONTEXT_BEFORE: usize = 40;
/// Characters of text in a snippet at most (markers and ellipses aside).
const SNIPPET_CHARS: usize = 160;

/// The snippet of a hit whose SQL is `sql` and parameters `params`.
pub(super) fn snippet(sql: &str, params: &str, needle: &Needle) -> String {
    let sql = clean(sql);
    let sql_matches = matches(&sql, needle);
    if sql_matches.is_empty() {
        let params = clean(params);
        let params_matches = matches(&params, needle);
        if !params_matches.is_empty() {
            return window(&params, &params_matches);
        }
    }
    window(&sql, &sql_matches)
}

/// The text as characters, every control character (line breaks and the markers included) a
/// space.
fn clean(text: &str) -> Vec<char> {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn fold(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Whether a statement matches `needle` as its text search means (see [`super::TextMatch`]):
/// every word is a word of the SQL or the parameters, or the substring is in the SQL, case
/// aside. The SQLite engine checks common words this way rather than in FTS5 (see
/// `search::sqlite`); it cuts words as FTS5's unicode61 does, up to how Unicode's and SQLite's
/// tables class rare characters (combining marks, symbols).
pub(super) fn is_match(sql: &str, params: &str, needle: &Needle) -> bool {
    match needle {
        Needle::Words(words) => {
            let words: Vec<String> = words
                .iter()
                .map(|w| w.chars().map(fold).collect())
                .collect();
            let mut found = vec![false; words.len()];
            for text in [sql, params] {
                for word in text.split(|c: char| !c.is_alphanumeric()) {
                    if word.is_empty() {
                        continue;
                    }
                    let folded: String = word.chars().map(fold).collect();
                    for (i, w) in words.iter().enumerate() {
                        found[i] |= *w == folded;
                    }
                }
            }
            found.iter().all(|f| *f)
        }
        Needle::Substring(substring) => {
            let needle: String = substring.chars().map(fold).collect();
            sql.chars().map(fold).collect::<String>().contains(&needle)
        }
        Needle::Nothing => true,
        Needle::Unmatchable => false,
    }
}

/// Where `needle` matches `text`: character ranges, in order, not overlapping.
fn matches(text: &[char], needle: &Needle) -> Vec<(usize, usize)> {
    match needle {
        Needle::Words(words) => {
            let words: Vec<Vec<char>> = words
                .iter()
                .map(|w| w.chars().map(fold).collect())
                .collect();
            let mut found = Vec::new();
            let mut i = 0;
            while i < text.len() {
                if !text[i].is_alphanumeric() {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < text.len() && text[i].is_alphanumeric() {
                    i += 1;
                }
                let word = &text[start..i];
                let is_match = words.iter().any(|w| {
                    w.len() == word.len() && w.iter().zip(word).all(|(a, b)| *a == fold(*b))
                });
                if is_match {
                    found.push((start, i));
                }
            }
            found
        }
        Needle::Substring(substring) => {
            let needle: Vec<char> = substring.chars().map(fold).collect();
            let mut found = Vec::new();
            let mut i = 0;
            while !needle.is_empty() && i + needle.len() <= text.len() {
                if needle
                    .iter()
                    .zip(&text[i..i + needle.len()])
                    .all(|(a, b)| *a == fold(*b))
                {
                    found.push((i, i + needle.len()));
                    i += needle.len();
                } else {
                    i += 1;
                }
            }
            found
        }
        Needle::Nothing | Needle::Unmatchable => Vec::new(),
    }
}

/// Up to [`SNIPPET_CHARS`] of `text` from a little before its first match, matches marked,
/// runs of spaces as one, `…` where text was left out.
fn window(text: &[char], matches: &[(usize, usize)]) -> String {
    let first = matches.first().map_or(0, |m| m.0);
    let mut start = first.saturating_sub(CONTEXT_BEFORE);
    // Start at a word when the cut falls inside one.
    while start > 0 && start < first && text[start - 1].is_alphanumeric() {
        start += 1;
    }
    let end = text.len().min(start + SNIPPET_CHARS);
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut open = false;
    for (i, &c) in text.iter().enumerate().take(end).skip(start) {
        if !open && matches.iter().any(|m| m.0 == i) {
            out.push(MARK_START);
            open = true;
        }
        let previous_space = out.ends_with(' ') || (out.is_empty() && c == ' ');
        if !(c == ' ' && previous_space) {
            out.push(c);
        }
        if open && matches.iter().any(|m| m.1 == i + 1) {
            out.push(MARK_END);
            open = false;
        }
    }
    if open {
        out.push(MARK_END);
    }
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(snippet: &str) -> String {
        snippet.replace(MARK_START, "[").replace(MARK_END, "]")
    }

    #[test]
    fn words_are_marked_whole_and_case_aside() {
        let needle = Needle::Words(vec!["orders".into(), "ID".into()]);
        assert_eq!(
            marked(&snippet(
                "SELECT id FROM Orders WHERE ordersx = 1",
                "",
                &needle
            )),
            "SELECT [id] FROM [Orders] WHERE ordersx = 1"
        );
    }

    #[test]
    fn substrings_are_marked_inside_words() {
        let needle = Needle::Substring("ustomer_I".into());
        assert_eq!(
            marked(&snippet(
                "SELECT customer_id, customer_id2 FROM c",
                "",
                &needle
            )),
            "SELECT c[ustomer_i]d, c[ustomer_i]d2 FROM c"
        );
    }

    #[test]
    fn parameters_are_shown_when_only_they_match() {
        let needle = Needle::Words(vec!["alice".into()]);
        assert_eq!(
            marked(&snippet(
                "SELECT * FROM users WHERE name = $1",
                "$1 = 'alice'",
                &needle
            )),
            "$1 = '[alice]'"
        );
    }

    #[test]
    fn long_text_is_cut_around_the_first_match() {
        let sql = format!(
            "SELECT {} FROM needle_table {}",
            "a, ".repeat(100),
            "b ".repeat(100)
        );
        let needle = Needle::Words(vec!["needle".into()]);
        let shown = marked(&snippet(&sql, "", &needle));
        assert!(shown.starts_with('…') && shown.ends_with('…'), "{shown}");
        assert!(shown.contains("FROM [needle]_table"), "{shown}");
        assert!(shown.chars().count() <= SNIPPET_CHARS + 4);
    }

    #[test]
    fn recorded_markers_and_line_breaks_cannot_pass_for_ours() {
        let needle = Needle::Words(vec!["x".into()]);
        let shown = snippet("SELECT \u{2}evil\u{3}\n\n  x", "", &needle);
        assert_eq!(marked(&shown), "SELECT evil [x]");
        assert_eq!(shown.matches(MARK_START).count(), 1);
    }

    #[test]
    fn statements_match_when_every_word_is_a_word_of_them() {
        let words = Needle::Words(vec!["ORDERS".into(), "bob".into()]);
        assert!(is_match(
            "SELECT * FROM public.orders",
            "$1 = 'bob@x'",
            &words
        ));
        assert!(!is_match("SELECT * FROM preorders", "$1 = 'bob@x'", &words));
        assert!(!is_match("SELECT * FROM orders", "$1 = 'bobby'", &words));
        let substring = Needle::Substring("ERS WH".into());
        assert!(is_match("SELECT 1 FROM orders where", "", &substring));
        assert!(!is_match(
            "SELECT 1 FROM orders",
            "$1 = 'ers wh'",
            &substring
        ));
    }

    #[test]
    fn without_text_the_snippet_is_the_start_of_the_sql() {
        assert_eq!(
            snippet("SELECT 1", "$1 = 'a'", &Needle::Nothing),
            "SELECT 1"
        );
    }
}
