//! FTS5 queries for the SQLite engine: the text searched for, and the filters as facets
//! (`migrations/sqlite/0012_search_facets.sql`) so that FTS5 itself keeps only the statements
//! that pass them. The facets are a sieve that may let through more than the filters (the rows
//! are still filtered in SQL), never less.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::{Needle, StatementQuery};
use crate::record::event::StatementClass;

/// Index of words (`unicode61`) and its columns.
pub(super) const WORD_INDEX: &str = "recorded_statements_fts";
/// Index of trigrams and its columns.
pub(super) const TRIGRAM_INDEX: &str = "recorded_statements_trigrams";

/// Days of a time range up to which its day facets are worth naming (one OR term each).
const MAX_DAYS: i64 = 62;

/// A full-text index and an FTS5 query of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FullText {
    pub index: &'static str,
    pub query: String,
}

/// The FTS5 query for `needle` under the filters of `query`; `None` when there is no text.
pub(super) fn full_text(needle: &Needle, query: &StatementQuery) -> Option<FullText> {
    let (index, mut terms) = match needle {
        Needle::Nothing | Needle::Unmatchable => return None,
        Needle::Words(words) => (
            WORD_INDEX,
            words
                .iter()
                .map(|w| format!("({{sql params}} : {})", phrase(w)))
                .collect::<Vec<_>>(),
        ),
        Needle::Substring(text) => (TRIGRAM_INDEX, vec![format!("(sql : {})", phrase(text))]),
    };
    let words = index == WORD_INDEX;
    let column = if words {
        "search_facets"
    } else {
        "substring_facets"
    };
    let facet = |word: String| {
        let word = if words { word } else { format!(" {word} ") };
        format!("({column} : {})", phrase(&word))
    };
    if let Some(class) = query.class {
        terms.push(facet(format!("c{}", class_code(class))));
    }
    if let Some(has_error) = query.has_error {
        terms.push(facet(format!("e{}", u8::from(has_error))));
    }
    if let Some(risky) = query.risky {
        terms.push(facet(format!("r{}", u8::from(risky))));
    }
    if let Some(person) = &query.person {
        terms.push(facet(format!("p{}", hex(person.as_bytes()))));
    }
    if let Some(target) = &query.target {
        terms.push(facet(format!("t{}", hex(target.as_bytes()))));
    }
    if words {
        if let Some(id) = query.session_id {
            terms.push(facet(format!("s{}", hex(id.as_bytes()))));
        }
        if let Some(days) = days(query.after, query.before) {
            let any_day: Vec<String> = days
                .iter()
                .map(|d| format!("{column} : {}", phrase(&format!("d{}", d.format("%Y%m%d")))))
                .collect();
            terms.push(format!("({})", any_day.join(" OR ")));
        }
    }
    Some(FullText {
        index,
        query: terms.join(" AND "),
    })
}

/// Text as one FTS5 phrase: in double quotes, its own double quotes doubled. Inside a phrase
/// nothing is syntax (`NEAR`, `*`, `AND`, parentheses are text), and the tokenizer cuts it as it
/// cut the indexed text.
fn phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// The class's letter in the facets (as the migration's CASE spells it).
fn class_code(class: StatementClass) -> char {
    match class {
        StatementClass::Read => 'r',
        StatementClass::Write => 'w',
        StatementClass::Ddl => 'd',
        StatementClass::Privilege => 'p',
        StatementClass::Transaction => 't',
        StatementClass::Utility => 'u',
        StatementClass::Unknown => 'x',
    }
}

/// Upper-case hex, as SQLite's `hex()` writes it (FTS5 folds case either way).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The UTC days a statement in [after, before) can have run on, when both ends are given and
/// they are at most [`MAX_DAYS`].
fn days(after: Option<DateTime<Utc>>, before: Option<DateTime<Utc>>) -> Option<Vec<NaiveDate>> {
    let (after, before) = (after?, before?);
    if before <= after {
        // An empty range: the filters find nothing; the facets need not say so.
        return None;
    }
    let first = after.date_naive();
    let last = (before - Duration::microseconds(1)).date_naive();
    if (last - first).num_days() >= MAX_DAYS {
        return None;
    }
    Some(first.iter_days().take_while(|d| *d <= last).collect())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn needle(list: &[&str]) -> Needle {
        Needle::Words(list.iter().map(|w| w.to_string()).collect())
    }

    #[test]
    fn text_alone_is_searched_in_its_columns() {
        let query = StatementQuery::default();
        let words = full_text(&needle(&["select", "a\"b"]), &query).unwrap();
        assert_eq!(words.index, WORD_INDEX);
        assert_eq!(
            words.query,
            "({sql params} : \"select\") AND ({sql params} : \"a\"\"b\")"
        );
        let substring = full_text(&Needle::Substring("ustomer".into()), &query).unwrap();
        assert_eq!(substring.index, TRIGRAM_INDEX);
        assert_eq!(substring.query, "(sql : \"ustomer\")");
        assert_eq!(full_text(&Needle::Nothing, &query), None);
        assert_eq!(full_text(&Needle::Unmatchable, &query), None);
    }

    #[test]
    fn filters_become_facets() {
        let query = StatementQuery {
            class: Some(StatementClass::Write),
            has_error: Some(false),
            risky: Some(true),
            person: Some("al\"ice".into()),
            target: Some("db".into()),
            session_id: Some(uuid::Uuid::from_u128(0xAB)),
            ..StatementQuery::default()
        };
        let words = full_text(&needle(&["x"]), &query).unwrap();
        assert_eq!(
            words.query,
            "({sql params} : \"x\") AND (search_facets : \"cw\") AND (search_facets : \"e0\") \
             AND (search_facets : \"r1\") AND (search_facets : \"p616C22696365\") \
             AND (search_facets : \"t6462\") \
             AND (search_facets : \"s000000000000000000000000000000AB\")"
        );
        // The trigram index has no session facet, and its facets stand between spaces.
        let substring = full_text(&Needle::Substring("xyz".into()), &query).unwrap();
        assert_eq!(
            substring.query,
            "(sql : \"xyz\") AND (substring_facets : \" cw \") AND (substring_facets : \" e0 \") \
             AND (substring_facets : \" r1 \") AND (substring_facets : \" p616C22696365 \") \
             AND (substring_facets : \" t6462 \")"
        );
    }

    #[test]
    fn a_short_time_range_names_its_days() {
        let at = |d, h| Utc.with_ymd_and_hms(2026, 11, d, h, 0, 0).unwrap();
        let query = StatementQuery {
            after: Some(at(24, 22)),
            before: Some(at(26, 0)),
            ..StatementQuery::default()
        };
        let words = full_text(&needle(&["x"]), &query).unwrap();
        assert_eq!(
            words.query,
            "({sql params} : \"x\") AND (search_facets : \"d20261124\" OR \
             search_facets : \"d20261125\")"
        );
        // Open or long ranges are left to the SQL filter.
        for (after, before) in [
            (Some(at(24, 0)), None),
            (None, Some(at(24, 0))),
            (
                Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()),
                Some(at(24, 0)),
            ),
            (Some(at(25, 0)), Some(at(24, 0))),
        ] {
            let query = StatementQuery {
                after,
                before,
                ..StatementQuery::default()
            };
            assert_eq!(
                full_text(&needle(&["x"]), &query).unwrap().query,
                "({sql params} : \"x\")"
            );
        }
    }
}
