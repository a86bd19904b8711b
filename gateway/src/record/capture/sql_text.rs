//! A small lexical scan of SQL text: enough to find statement boundaries, leading keywords and
//! string literals without a parser (quotes, `E''` escapes, dollar quoting and comments are
//! honoured, so a `;` or a keyword inside a literal is never mistaken for syntax).
//!
//! Used where the real parser is not wanted: redacting passwords (every CREATE/ALTER ROLE, even
//! one the parser rejects), finding the values of secret columns (`redact`) and classifying SQL
//! the parser cannot read.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A keyword or unquoted identifier.
    Word,
    /// A string literal, prefix and quotes included (`'..'`, `E'..'`, `$tag$..$tag$`).
    Literal,
    Semicolon,
    OpenParen,
    CloseParen,
    /// A quoted identifier, quotes included (`"Password"`).
    QuotedIdent,
    /// A numeric constant (`42`, `1.5e-3`, `.5`, `0x1F`, `1_000`).
    Number,
    /// A positional parameter (`$1`, `$10`).
    Param,
    /// Anything else: one operator or punctuation character at a time.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    /// Byte range in the scanned text.
    pub span: Range<usize>,
}

/// Iterates over the tokens of `sql`. Unterminated literals and comments run to the end.
pub(crate) fn tokens(sql: &str) -> Tokens<'_> {
    Tokens {
        sql: sql.as_bytes(),
        at: 0,
    }
}

pub(crate) struct Tokens<'a> {
    sql: &'a [u8],
    at: usize,
}

fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_char(b: u8) -> bool {
    is_word_start(b) || b.is_ascii_digit() || b == b'$'
}

impl Tokens<'_> {
    fn peek(&self, offset: usize) -> Option<u8> {
        self.sql.get(self.at + offset).copied()
    }

    /// Skips whitespace and comments (`/* */` nest in PostgreSQL).
    fn skip_trivia(&mut self) {
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.at += 1,
                (Some(b'-'), Some(b'-')) => {
                    while self.peek(0).is_some_and(|b| b != b'\n') {
                        self.at += 1;
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    self.at += 2;
                    let mut depth = 1usize;
                    while depth > 0 && self.at < self.sql.len() {
                        match (self.peek(0), self.peek(1)) {
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.at += 2;
                            }
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.at += 2;
                            }
                            _ => self.at += 1,
                        }
                    }
                }
                _ => return,
            }
        }
    }

    /// From an opening quote at `self.at`: to after the closing quote. A doubled quote is an
    /// escaped quote; with `backslash`, so is `\'` (E'' strings).
    fn skip_quoted(&mut self, quote: u8, backslash: bool) {
        self.at += 1;
        while let Some(b) = self.peek(0) {
            self.at += 1;
            if backslash && b == b'\\' {
                self.at += 1;
            } else if b == quote {
                if self.peek(0) == Some(quote) {
                    self.at += 1;
                } else {
                    return;
                }
            }
        }
        self.at = self.at.min(self.sql.len());
    }

    /// A numeric constant from `self.at`: digits, `_` separators, a fraction, an exponent with its
    /// sign, and the letters of `0x`/`0o`/`0b` forms (the exact grammar does not matter here: a
    /// number runs until something that cannot continue one).
    fn skip_number(&mut self) {
        while let Some(b) = self.peek(0) {
            let exponent_sign = (b == b'+' || b == b'-')
                && self.at > 0
                && matches!(self.sql[self.at - 1], b'e' | b'E')
                && self.peek(1).is_some_and(|b| b.is_ascii_digit());
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign {
                self.at += 1;
            } else {
                return;
            }
        }
    }

    /// `$tag$ ... $tag$` starting at `self.at`, if it is one (not a `$1` parameter).
    fn try_dollar_quote(&mut self) -> bool {
        let rest = &self.sql[self.at + 1..];
        let tag_len = rest
            .iter()
            .take_while(|&&b| is_word_char(b) && b != b'$')
            .count();
        if rest.get(tag_len) != Some(&b'$') || rest.first().is_some_and(u8::is_ascii_digit) {
            return false;
        }
        let delimiter = &self.sql[self.at..self.at + tag_len + 2];
        let body_start = self.at + delimiter.len();
        self.at = self.sql[body_start..]
            .windows(delimiter.len())
            .position(|w| w == delimiter)
            .map_or(self.sql.len(), |p| body_start + p + delimiter.len());
        true
    }
}

impl Iterator for Tokens<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.skip_trivia();
        let start = self.at;
        let first = self.peek(0)?;
        let kind = match first {
            b';' => {
                self.at += 1;
                TokenKind::Semicolon
            }
            b'(' => {
                self.at += 1;
                TokenKind::OpenParen
            }
            b')' => {
                self.at += 1;
                TokenKind::CloseParen
            }
            b'\'' => {
                self.skip_quoted(b'\'', false);
                TokenKind::Literal
            }
            b'"' => {
                self.skip_quoted(b'"', false);
                TokenKind::QuotedIdent
            }
            b'$' if self.peek(1).is_some_and(|b| b.is_ascii_digit()) => {
                self.at += 1;
                while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                    self.at += 1;
                }
                TokenKind::Param
            }
            b'$' if self.try_dollar_quote() => TokenKind::Literal,
            // E'..', B'..', X'..', N'..' and U&'..' are literals with a prefix.
            b'e' | b'E' if self.peek(1) == Some(b'\'') => {
                self.at += 1;
                self.skip_quoted(b'\'', true);
                TokenKind::Literal
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if self.peek(1) == Some(b'\'') => {
                self.at += 1;
                self.skip_quoted(b'\'', false);
                TokenKind::Literal
            }
            b'u' | b'U' if self.peek(1) == Some(b'&') && self.peek(2) == Some(b'\'') => {
                self.at += 2;
                self.skip_quoted(b'\'', false);
                TokenKind::Literal
            }
            b if is_word_start(b) => {
                while self.peek(0).is_some_and(is_word_char) {
                    self.at += 1;
                }
                TokenKind::Word
            }
            b if b.is_ascii_digit()
                || (b == b'.' && self.peek(1).is_some_and(|b| b.is_ascii_digit())) =>
            {
                self.skip_number();
                TokenKind::Number
            }
            _ => {
                self.at += 1;
                TokenKind::Other
            }
        };
        Some(Token {
            kind,
            span: start..self.at,
        })
    }
}

/// Splits `sql` into statements (by top-level `;`), each as its tokens; empty statements are
/// dropped.
pub(crate) fn statements(sql: &str) -> Vec<Vec<Token>> {
    let mut all = Vec::new();
    let mut current = Vec::new();
    for token in tokens(sql) {
        if token.kind == TokenKind::Semicolon {
            if !current.is_empty() {
                all.push(std::mem::take(&mut current));
            }
        } else {
            current.push(token);
        }
    }
    if !current.is_empty() {
        all.push(current);
    }
    all
}

/// The statement's words outside parentheses, in order (what keyword rules look at).
pub(crate) fn top_level_words<'a>(sql: &'a str, statement: &[Token]) -> Vec<&'a str> {
    let mut depth = 0usize;
    let mut words = Vec::new();
    for token in statement {
        match token.kind {
            TokenKind::OpenParen => depth += 1,
            TokenKind::CloseParen => depth = depth.saturating_sub(1),
            TokenKind::Word if depth == 0 => words.push(&sql[token.span.clone()]),
            _ => {}
        }
    }
    words
}

/// What a redacted literal (or number) is replaced with in recorded SQL.
pub(crate) const REDACTED_LITERAL: &str = "'***'";

/// Replaces the password literal of `CREATE|ALTER ROLE|USER|GROUP ... PASSWORD '...'` (and of
/// `CREATE|ALTER USER MAPPING ... OPTIONS (password '...')`) with `'***'`. `None` when there was
/// nothing to redact, so the common case allocates nothing.
#[cfg(test)]
pub(crate) fn redact_passwords(sql: &str) -> Option<String> {
    let spans = password_literals(sql);
    (!spans.is_empty()).then(|| replace_spans(sql, &spans))
}

/// The byte ranges of the password literals of role statements (see [`redact_passwords`]), in
/// order; empty (and nothing allocated) for the statements that mention no password.
pub(crate) fn password_literals(sql: &str) -> Vec<Range<usize>> {
    // Cheap filter first: almost no statement mentions a password.
    if !contains_ignore_ascii_case(sql.as_bytes(), b"password") {
        return Vec::new();
    }
    let mut redactions: Vec<Range<usize>> = Vec::new();
    for statement in statements(sql) {
        let mut words = statement
            .iter()
            .filter(|t| t.kind == TokenKind::Word)
            .map(|t| &sql[t.span.clone()]);
        let verb = words.next().unwrap_or("");
        let object = words.next().unwrap_or("");
        let about_a_role = (verb.eq_ignore_ascii_case("create")
            || verb.eq_ignore_ascii_case("alter"))
            && ["role", "user", "group"]
                .iter()
                .any(|o| object.eq_ignore_ascii_case(o));
        if !about_a_role {
            continue;
        }
        for pair in statement.windows(2) {
            if pair[0].kind == TokenKind::Word
                && sql[pair[0].span.clone()].eq_ignore_ascii_case("password")
                && pair[1].kind == TokenKind::Literal
            {
                redactions.push(pair[1].span.clone());
            }
        }
    }
    redactions
}

/// `sql` with each of `spans` (sorted, not overlapping, on character boundaries) replaced by
/// `'***'`.
pub(crate) fn replace_spans(sql: &str, spans: &[Range<usize>]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for span in spans {
        out.push_str(&sql[copied..span.start]);
        out.push_str(REDACTED_LITERAL);
        copied = span.end;
    }
    out.push_str(&sql[copied..]);
    out
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<(TokenKind, &str)> {
        tokens(sql).map(|t| (t.kind, &sql[t.span])).collect()
    }

    #[test]
    fn semicolons_inside_literals_and_comments_do_not_split_statements() {
        let sql = "select ';' -- ; \n; /* ; /* ; */ */ select $f$;$f$; select E'\\';'";
        assert_eq!(statements(sql).len(), 3);
    }

    #[test]
    fn parameters_are_not_dollar_quotes() {
        assert_eq!(
            kinds("x = $1 and y = $$a$$"),
            vec![
                (TokenKind::Word, "x"),
                (TokenKind::Other, "="),
                (TokenKind::Param, "$1"),
                (TokenKind::Word, "and"),
                (TokenKind::Word, "y"),
                (TokenKind::Other, "="),
                (TokenKind::Literal, "$$a$$"),
            ]
        );
    }

    #[test]
    fn numbers_parameters_and_quoted_identifiers_are_single_tokens() {
        assert_eq!(
            kinds("\"Pass\"\"word\" = $10 + 1.5e-3 - .5 * 0x1F, t.c1 = 1_000"),
            vec![
                (TokenKind::QuotedIdent, "\"Pass\"\"word\""),
                (TokenKind::Other, "="),
                (TokenKind::Param, "$10"),
                (TokenKind::Other, "+"),
                (TokenKind::Number, "1.5e-3"),
                (TokenKind::Other, "-"),
                (TokenKind::Number, ".5"),
                (TokenKind::Other, "*"),
                (TokenKind::Number, "0x1F"),
                (TokenKind::Other, ","),
                (TokenKind::Word, "t"),
                (TokenKind::Other, "."),
                (TokenKind::Word, "c1"),
                (TokenKind::Other, "="),
                (TokenKind::Number, "1_000"),
            ]
        );
        // An exponent's sign belongs to the number; a minus after a plain number does not.
        assert_eq!(kinds("2-1").len(), 3);
        assert_eq!(kinds("$").len(), 1);
        assert_eq!(kinds("\"open").len(), 1);
    }

    #[test]
    fn unterminated_literal_runs_to_the_end_without_panicking() {
        assert_eq!(
            kinds("select 'abc"),
            vec![(TokenKind::Word, "select"), (TokenKind::Literal, "'abc")]
        );
        assert_eq!(kinds("select $a$abc").len(), 2);
        assert_eq!(kinds("select E'ab\\").len(), 2);
        assert_eq!(kinds("/* open").len(), 0);
    }

    #[test]
    fn role_passwords_are_replaced_in_every_quoting() {
        for (sql, want) in [
            (
                "CREATE ROLE alice LOGIN PASSWORD 's3cret'",
                "CREATE ROLE alice LOGIN PASSWORD '***'",
            ),
            (
                "alter user bob with encrypted password E'it\\'s'",
                "alter user bob with encrypted password '***'",
            ),
            (
                "ALTER ROLE carol PASSWORD $pw$x;y$pw$ VALID UNTIL 'infinity'",
                "ALTER ROLE carol PASSWORD '***' VALID UNTIL 'infinity'",
            ),
            (
                "select 1; create user d password 'a''b'; select 'password'",
                "select 1; create user d password '***'; select 'password'",
            ),
            (
                "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password 'p')",
                "CREATE USER MAPPING FOR u SERVER s OPTIONS (user 'u', password '***')",
            ),
        ] {
            assert_eq!(redact_passwords(sql).as_deref(), Some(want), "{sql}");
        }
    }

    #[test]
    fn other_statements_mentioning_password_are_left_alone() {
        for sql in [
            "select password from users where password = 'x'",
            "ALTER ROLE alice PASSWORD NULL",
            "CREATE TABLE password (x int)",
        ] {
            assert_eq!(redact_passwords(sql), None, "{sql}");
        }
    }
}
