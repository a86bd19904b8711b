//! Where secret values sit in SQL text, found lexically: no parser, because this must also work on
//! SQL the parser rejects and on the prefix of a streamed statement, and cost little. Quotes,
//! comments and dollar quoting are honoured by the tokenizer (`sql_text`), so a pattern word
//! inside a literal or a comment is never mistaken for a column.
//!
//! With `col` a column name that matches a pattern (qualified or quoted) and `v` a value, the
//! shapes recognised are:
//!
//! - `col = v`, `v = col`, `col := v`, `col => v`: SET lists, WHERE clauses, named function
//!   arguments, `SET my.secret = v`. A parenthesised or called side counts as `col` when it names
//!   one (`lower(col) = v`).
//! - `(c1, c2) = (v1, v2)` (or `= ROW(...)`): position by position.
//! - `INSERT INTO t (c1, c2, ...) VALUES (v1, v2, ...), (...)` and `... SELECT v1, v2, ...`:
//!   position by position (MERGE's `INSERT (c1, ...) VALUES (...)` too).
//!
//! A value is a string literal, a number or a parameter `$n`, a typed literal (`text 'x'`), a
//! function call or parenthesised expression (every literal, number and parameter in it counts:
//! `crypt('x', gen_salt('bf'))`), then any casts and `||` concatenations.
//!
//! Not recognised: other operators (`<>`, `IN`, `LIKE`), `INSERT` without a column list (the
//! positions cannot be named), arguments of SQL-level `EXECUTE` of a `PREPARE`d statement, and
//! identifiers written with Unicode escapes (`U&"..."`).

use std::ops::Range;

use super::super::sql_text::{self, Token, TokenKind};
use super::{SecretPatterns, unquote};

/// What one SQL text holds that must not be stored.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SqlSecrets {
    /// Byte ranges of literals and numbers to record as `'***'`: sorted, not overlapping.
    pub(crate) literals: Vec<Range<usize>>,
    /// Numbers of the parameters (`$n`) bound to secret columns: sorted, unique.
    pub(crate) params: Vec<u16>,
    /// `None` when the text has no COPY that exchanges data with the client; otherwise whether
    /// some such COPY may carry a secret column (its columns match, or are unknown).
    pub(crate) copy: Option<bool>,
}

/// Words that end the select list of `INSERT ... SELECT`.
const SELECT_LIST_END: &[&str] = &[
    "from",
    "where",
    "group",
    "having",
    "window",
    "union",
    "intersect",
    "except",
    "order",
    "limit",
    "offset",
    "fetch",
    "for",
    "into",
    "on",
    "returning",
];

/// Words after `INSERT [INTO]` that are not part of the table name or its alias.
const NOT_A_TABLE_NAME: &[&str] = &["values", "select", "default", "overriding", "table", "with"];

impl SecretPatterns {
    /// The secret values of `sql`, found lexically (see the module documentation). A text that
    /// names no matching column and mentions no COPY costs one pass over its bytes.
    pub(crate) fn scan_sql(&self, sql: &str) -> SqlSecrets {
        let mut found = SqlSecrets::default();
        if self.is_none() {
            return found;
        }
        let super::Mentions { named, copy } = self.mentions(sql.as_bytes());
        if !named && !copy {
            return found;
        }
        for tokens in sql_text::statements(sql) {
            let statement = Statement::new(sql, &tokens, self);
            if copy && let Some(secret) = statement.copy_may_carry_secrets() {
                found.copy = Some(found.copy == Some(true) || secret);
            }
            if named {
                statement.collect(statement.secret_values(), &mut found);
            }
        }
        found.params.sort_unstable();
        found.params.dedup();
        found
    }
}

/// One statement's tokens, with each parenthesis's partner found once (so no lookup rescans).
struct Statement<'a> {
    sql: &'a str,
    tokens: &'a [Token],
    /// For a `(`: its `)`, or `tokens.len()` when it is never closed. For a `)`: its `(`, or
    /// `NO_PARTNER` when it closes nothing. Others: `NO_PARTNER`.
    partner: Vec<usize>,
    /// How many of the tokens before each index are identifiers that match a pattern, so "does
    /// this range name a secret column" costs O(1) however deeply groups nest.
    secrets_before: Vec<u32>,
}

const NO_PARTNER: usize = usize::MAX;

impl<'a> Statement<'a> {
    fn new(sql: &'a str, tokens: &'a [Token], patterns: &'a SecretPatterns) -> Self {
        let mut partner = vec![NO_PARTNER; tokens.len()];
        let mut open = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            match token.kind {
                TokenKind::OpenParen => open.push(i),
                TokenKind::CloseParen => {
                    if let Some(o) = open.pop() {
                        partner[o] = i;
                        partner[i] = o;
                    }
                }
                _ => {}
            }
        }
        for o in open {
            partner[o] = tokens.len();
        }
        let mut secrets_before = Vec::with_capacity(tokens.len() + 1);
        let mut count = 0u32;
        secrets_before.push(count);
        for token in tokens {
            let text = &sql[token.span.clone()];
            let secret = match token.kind {
                TokenKind::Word => patterns.matches_name(text),
                TokenKind::QuotedIdent => patterns.matches_name(&unquote(text)),
                _ => false,
            };
            count += u32::from(secret);
            secrets_before.push(count);
        }
        Statement {
            sql,
            tokens,
            partner,
            secrets_before,
        }
    }

    fn kind(&self, i: usize) -> Option<TokenKind> {
        self.tokens.get(i).map(|t| t.kind)
    }

    fn text(&self, i: usize) -> &'a str {
        self.tokens.get(i).map_or("", |t| &self.sql[t.span.clone()])
    }

    fn op(&self, i: usize, op: &str) -> bool {
        self.kind(i) == Some(TokenKind::Other) && self.text(i) == op
    }

    fn word(&self, i: usize, word: &str) -> bool {
        self.kind(i) == Some(TokenKind::Word) && self.text(i).eq_ignore_ascii_case(word)
    }

    fn word_in(&self, i: usize, words: &[&str]) -> bool {
        words.iter().any(|w| self.word(i, w))
    }

    /// True when nothing (not even a space) separates tokens `a` and `b`.
    fn adjacent(&self, a: usize, b: usize) -> bool {
        match (self.tokens.get(a), self.tokens.get(b)) {
            (Some(a), Some(b)) => a.span.end == b.span.start,
            _ => false,
        }
    }

    fn is_ident(&self, i: usize) -> bool {
        matches!(self.kind(i), Some(TokenKind::Word | TokenKind::QuotedIdent))
    }

    /// Whether token `i` is an identifier that matches a pattern.
    fn secret_ident(&self, i: usize) -> bool {
        self.names_secret(i..i + 1)
    }

    /// Whether any identifier in `range` matches.
    fn names_secret(&self, range: Range<usize>) -> bool {
        let end = range.end.min(self.tokens.len());
        let start = range.start.min(end);
        self.secrets_before[end] > self.secrets_before[start]
    }

    /// The tokens of the group opened at `open`, parentheses included.
    fn group(&self, open: usize) -> Range<usize> {
        open..self.partner[open].saturating_add(1).min(self.tokens.len())
    }

    /// The `(` of the group that `close` ends, if any.
    fn opener(&self, close: usize) -> Option<usize> {
        match self.partner.get(close) {
            Some(&o) if o != NO_PARTNER && self.kind(close) == Some(TokenKind::CloseParen) => {
                Some(o)
            }
            _ => None,
        }
    }

    /// The comma-separated items of the group opened at `open` (nested groups are skipped whole).
    fn items(&self, open: usize) -> Vec<Range<usize>> {
        let end = self.partner[open].min(self.tokens.len());
        self.items_until(open + 1, |i| i >= end)
    }

    /// Comma-separated items from `start` up to the first token `stop` accepts at this depth.
    fn items_until(&self, start: usize, stop: impl Fn(usize) -> bool) -> Vec<Range<usize>> {
        let mut items = Vec::new();
        let mut item_start = start;
        let mut i = start;
        while i < self.tokens.len() && !stop(i) {
            match self.kind(i) {
                Some(TokenKind::OpenParen) => i = self.group(i).end,
                Some(TokenKind::CloseParen) => break,
                _ if self.op(i, ",") => {
                    items.push(item_start..i);
                    item_start = i + 1;
                    i += 1;
                }
                _ => i += 1,
            }
        }
        let end = i.min(self.tokens.len());
        if item_start < end {
            items.push(item_start..end);
        }
        items
    }

    /// Token ranges whose literals, numbers and parameters are secret (unsorted, may overlap).
    fn secret_values(&self) -> Vec<Range<usize>> {
        let mut marked = Vec::new();
        for i in 0..self.tokens.len() {
            if self.op(i, "=") {
                self.comparison(i, &mut marked);
            } else if self.word(i, "insert") {
                self.insert(i, &mut marked);
            }
        }
        marked
    }

    /// The shapes around an `=` at `i` (or `:=`, `=>`).
    fn comparison(&self, i: usize, marked: &mut Vec<Range<usize>>) {
        let Some(mut left) = i.checked_sub(1) else {
            return;
        };
        if self.kind(left) == Some(TokenKind::Other) && self.adjacent(left, i) {
            // `:=`; any other operator character makes another operator (`<=`, `!=`, ...).
            if !self.op(left, ":") {
                return;
            }
            let Some(l) = left.checked_sub(1) else { return };
            left = l;
        }
        let mut right = i + 1;
        if self.kind(right) == Some(TokenKind::Other) && self.adjacent(i, right) {
            if self.op(right, ">") {
                right += 1;
            } else if !self.op(right, "-") && !self.op(right, "+") {
                return;
            }
        }

        // `(c1, c2) = (v1, v2)`: position by position.
        if let (Some(left_open), Some(right_open)) = (self.opener(left), self.tuple_at(right)) {
            let (names, values) = (self.items(left_open), self.items(right_open));
            if names.len() >= 2 && names.len() == values.len() {
                for (name, value) in names.into_iter().zip(values) {
                    if self.names_secret(name.clone()) {
                        marked.push(value.clone());
                    }
                    if self.names_secret(value) {
                        marked.push(name);
                    }
                }
                return;
            }
        }
        if self.side_before_names_secret(left)
            && let Some(value) = self.value_after(right)
        {
            marked.push(value);
        }
        if self.side_after_names_secret(right)
            && let Some(value) = self.value_before(left)
        {
            marked.push(value);
        }
    }

    /// The `(` of a row constructor starting at `i`: `(...)` or `ROW(...)`.
    fn tuple_at(&self, i: usize) -> Option<usize> {
        match self.kind(i)? {
            TokenKind::OpenParen => Some(i),
            _ if self.word(i, "row") && self.kind(i + 1) == Some(TokenKind::OpenParen) => {
                Some(i + 1)
            }
            _ => None,
        }
    }

    /// Whether the operand ending at `end` names a secret column: a (last part of a qualified)
    /// name, or a group or call that names one.
    fn side_before_names_secret(&self, end: usize) -> bool {
        if self.is_ident(end) {
            return self.secret_ident(end);
        }
        self.opener(end)
            .is_some_and(|open| self.names_secret(open..end + 1))
    }

    /// Whether the operand starting at `start` names a secret column.
    fn side_after_names_secret(&self, start: usize) -> bool {
        if self.kind(start) == Some(TokenKind::OpenParen) {
            return self.names_secret(self.group(start));
        }
        if !self.is_ident(start) {
            return false;
        }
        let last = self.qualified_name_end(start);
        if self.kind(last + 1) == Some(TokenKind::OpenParen) {
            return self.names_secret(self.group(last + 1));
        }
        self.secret_ident(last)
    }

    /// The last token of the name `a.b.c` starting at the identifier `start`.
    fn qualified_name_end(&self, start: usize) -> usize {
        let mut last = start;
        while self.op(last + 1, ".") && self.is_ident(last + 2) {
            last += 2;
        }
        last
    }

    /// The value starting at `start`, with its casts and `||` concatenations.
    fn value_after(&self, start: usize) -> Option<Range<usize>> {
        let mut range = self.single_value_after(start)?;
        loop {
            range.end = self.skip_casts(range.end);
            let concatenation = self.op(range.end, "|")
                && self.op(range.end + 1, "|")
                && self.adjacent(range.end, range.end + 1);
            if !concatenation {
                return Some(range);
            }
            match self.single_value_after(range.end + 2) {
                Some(next) => range.end = next.end,
                None => return Some(range),
            }
        }
    }

    fn single_value_after(&self, start: usize) -> Option<Range<usize>> {
        let sign = self.op(start, "-") || self.op(start, "+");
        let at = start + usize::from(sign);
        match self.kind(at)? {
            TokenKind::Literal | TokenKind::Number | TokenKind::Param => Some(start..at + 1),
            TokenKind::OpenParen => Some(start..self.group(at).end),
            TokenKind::Word | TokenKind::QuotedIdent => {
                // A typed literal: `text 'x'`, `interval '1 day'`.
                if self.kind(at + 1) == Some(TokenKind::Literal) {
                    return Some(start..at + 2);
                }
                // A call: `crypt(...)`, `pg_catalog.md5(...)`, `CAST(... AS text)`.
                let name_end = self.qualified_name_end(at);
                (self.kind(name_end + 1) == Some(TokenKind::OpenParen))
                    .then(|| start..self.group(name_end + 1).end)
            }
            _ => None,
        }
    }

    /// Past any `::type` casts starting at `i` (`::text`, `::pg_catalog.varchar(10)`).
    fn skip_casts(&self, mut i: usize) -> usize {
        while self.op(i, ":") && self.op(i + 1, ":") && self.is_ident(i + 2) {
            i = self.qualified_name_end(i + 2) + 1;
            if self.kind(i) == Some(TokenKind::OpenParen) {
                i = self.group(i).end;
            }
        }
        i
    }

    /// The value ending at `end` (before an `=`), looking through casts.
    fn value_before(&self, end: usize) -> Option<Range<usize>> {
        let end = self.before_casts(end);
        match self.kind(end)? {
            TokenKind::Literal | TokenKind::Number | TokenKind::Param => Some(end..end + 1),
            TokenKind::CloseParen => self.opener(end).map(|open| open..end + 1),
            _ => None,
        }
    }

    /// The token before the casts that end at `end` (`$1::text`, `'x'::varchar(10)`).
    fn before_casts(&self, mut end: usize) -> usize {
        loop {
            // The type: a (qualified) name, maybe with a modifier in parentheses.
            let mut t = end;
            if let Some(open) = self.opener(t) {
                match open.checked_sub(1) {
                    Some(name) if self.is_ident(name) => t = name,
                    _ => return end,
                }
            } else if !self.is_ident(t) {
                return end;
            }
            while t >= 2 && self.op(t - 1, ".") && self.is_ident(t - 2) {
                t -= 2;
            }
            if t >= 3 && self.op(t - 1, ":") && self.op(t - 2, ":") {
                end = t - 3;
            } else {
                return end;
            }
        }
    }

    /// `INSERT [INTO] t [[AS] alias] (c1, ...) [OVERRIDING ... VALUE] VALUES (...), ...` or
    /// `... SELECT v1, ...`, with the `INSERT` at `i`.
    fn insert(&self, i: usize, marked: &mut Vec<Range<usize>>) {
        let mut k = i + 1;
        if self.word(k, "into") {
            k += 1;
        }
        while (self.is_ident(k) && !self.word_in(k, NOT_A_TABLE_NAME)) || self.op(k, ".") {
            k += 1;
        }
        if self.kind(k) != Some(TokenKind::OpenParen) {
            return;
        }
        let secret: Vec<bool> = self
            .items(k)
            .into_iter()
            .map(|column| self.names_secret(column))
            .collect();
        if !secret.contains(&true) {
            return;
        }
        k = self.group(k).end;
        if self.word(k, "overriding") {
            k += 3;
        }
        let mut mark_positions = |values: Vec<Range<usize>>| {
            for (value, _) in values.into_iter().zip(&secret).filter(|(_, s)| **s) {
                marked.push(value);
            }
        };
        if self.word(k, "values") {
            k += 1;
            while self.kind(k) == Some(TokenKind::OpenParen) {
                mark_positions(self.items(k));
                k = self.group(k).end;
                if !(self.op(k, ",") && self.kind(k + 1) == Some(TokenKind::OpenParen)) {
                    break;
                }
                k += 1;
            }
        } else if self.word(k, "select") {
            k += 1;
            if self.word_in(k, &["distinct", "all"]) {
                k += 1;
            }
            mark_positions(self.items_until(k, |i| self.word_in(i, SELECT_LIST_END)));
        }
    }

    /// For a COPY that exchanges data with the client (`FROM STDIN`, `TO STDOUT`): whether its
    /// data may carry a secret column. With a column list, whether one matches; `COPY (query)`,
    /// whether the query names a matching column or selects `*`; without a list nothing is known,
    /// so it may.
    fn copy_may_carry_secrets(&self) -> Option<bool> {
        if !self.word(0, "copy")
            || !(0..self.tokens.len()).any(|i| self.word_in(i, &["stdin", "stdout"]))
        {
            return None;
        }
        if self.kind(1) == Some(TokenKind::OpenParen) {
            let query = self.group(1);
            return Some(query.clone().any(|i| self.op(i, "*")) || self.names_secret(query));
        }
        let mut k = 1;
        while (self.is_ident(k) && !self.word_in(k, &["from", "to"])) || self.op(k, ".") {
            k += 1;
        }
        if self.kind(k) == Some(TokenKind::OpenParen) {
            Some(self.names_secret(self.group(k)))
        } else {
            Some(true)
        }
    }

    /// Adds the literals, numbers and parameters inside `marked` to `found`, each once.
    fn collect(&self, mut marked: Vec<Range<usize>>, found: &mut SqlSecrets) {
        marked.sort_unstable_by_key(|r| r.start);
        let mut next = 0;
        for range in marked {
            for i in range.start.max(next)..range.end.min(self.tokens.len()) {
                let token = &self.tokens[i];
                match token.kind {
                    TokenKind::Literal | TokenKind::Number => {
                        found.literals.push(token.span.clone());
                    }
                    TokenKind::Param => {
                        if let Ok(n @ 1..) = self.text(i)[1..].parse::<u16>() {
                            found.params.push(n);
                        }
                    }
                    _ => {}
                }
            }
            next = next.max(range.end);
        }
    }
}
