//! Secret patterns: which column names hold values that must never be stored.
//!
//! A [`SecretPatterns`] is a list of case-insensitive globs over column names (`*` is any run of
//! characters; nothing else is special). The capture uses it in three places:
//!
//! - result rows: the values of result columns whose name matches;
//! - SQL text and parameters: the values bound to a matching column, found lexically ([`sql`]);
//! - COPY: the data of a COPY that may carry a matching column.
//!
//! A redacted value is recorded as such (`Capped { text: "", len, redacted: true }`), so an
//! auditor sees that a value was there and how long it was, never what it was.
//!
//! Case-insensitivity folds ASCII letters, and other letters whose lowercase is a single
//! non-ASCII character; a character is never folded into ASCII (the Kelvin sign stays itself), so
//! a pattern's ASCII fragment can only be spelled by ASCII bytes. That is what keeps the fast path
//! exact: a statement in which no pattern's fragment occurs (ASCII case-insensitively) cannot name
//! a matching column, and costs one pass over its bytes.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use super::super::event::Capped;

pub(super) mod sql;

#[cfg(test)]
mod tests;

/// The patterns used when the configuration names none.
pub const DEFAULT_SECRET_PATTERNS: &[&str] = &[
    // Passwords and their hashes: password, password_hash, db_password, "Password".
    "*password*",
    // The Unix spelling: passwd, user_passwd.
    "*passwd*",
    // Shared secrets: client_secret, secret_key, totp_secret, webhook_secret.
    "*secret*",
    // Bearer credentials: access_token, refresh_token, api_token, reset_token.
    "*token*",
    // API keys, with and without the underscore.
    "*api_key*",
    "*apikey*",
    // Key material: private_key, ssh_private_key, tls_private_key.
    "*private_key*",
    // National identity and payment card numbers. Exact names only: short words like these
    // occur inside unrelated names (`lessn`, `cvvt`) and would redact far too much as fragments.
    "ssn",
    "card_number",
    "cvv",
];

/// Case-insensitive globs over column names; see the module documentation.
#[derive(Debug, Clone)]
pub struct SecretPatterns {
    globs: Vec<Glob>,
    prefilter: Prefilter,
}

/// One pattern, folded and split at its `*`s: the first part must start a name and the last part
/// end it (both are empty when the pattern starts or ends with `*`), the parts in between must
/// occur in order.
#[derive(Debug, Clone)]
struct Glob {
    parts: Vec<String>,
}

/// The cheap test run before any token scan: at least one fragment of every pattern occurs in any
/// text that names a column the pattern matches, and `copy` in any text with a COPY statement.
#[derive(Debug, Clone)]
struct Prefilter {
    /// The longest part of each pattern, lowercase ASCII.
    fragments: Vec<Box<[u8]>>,
    /// Bit `pair(a, b)` is set when a fragment (or `copy`) starts with the bytes `a b`: almost
    /// every position of a text is rejected by this one test.
    starting_pairs: Box<[u64; 1024]>,
    /// Some fragment is a single byte: every position is compared with the fragments.
    single_byte: bool,
    /// Some pattern has no fragment that text must contain literally (`*`, or a `"` that a quoted
    /// identifier doubles): every text passes.
    always: bool,
    /// Some fragment is not ASCII: every text with a non-ASCII byte passes.
    non_ascii: bool,
}

static DEFAULTS: LazyLock<Arc<SecretPatterns>> = LazyLock::new(|| {
    let patterns: Vec<String> = DEFAULT_SECRET_PATTERNS
        .iter()
        .map(|&p| p.to_owned())
        .collect();
    Arc::new(SecretPatterns::new(&patterns).expect("the default secret patterns are valid"))
});

impl SecretPatterns {
    /// Patterns from configuration. An empty list redacts nothing; an empty pattern is refused
    /// (it would match only a column without a name, which is surely a mistake).
    pub fn new(patterns: &[String]) -> Result<SecretPatterns, String> {
        let mut globs = Vec::with_capacity(patterns.len());
        for (i, pattern) in patterns.iter().enumerate() {
            if pattern.trim().is_empty() {
                return Err(format!(
                    "secret pattern #{} is empty: write a column name or a glob such as \
                     \"*password*\"",
                    i + 1
                ));
            }
            globs.push(Glob {
                parts: fold(pattern).split('*').map(str::to_owned).collect(),
            });
        }
        let prefilter = Prefilter::new(&globs);
        Ok(SecretPatterns { globs, prefilter })
    }

    /// No patterns: nothing is redacted (beyond role passwords, which are always redacted).
    pub fn none() -> SecretPatterns {
        SecretPatterns {
            globs: Vec::new(),
            prefilter: Prefilter::new(&[]),
        }
    }

    /// [`DEFAULT_SECRET_PATTERNS`], built once and shared.
    pub fn defaults() -> Arc<SecretPatterns> {
        Arc::clone(&DEFAULTS)
    }

    /// True when there are no patterns.
    pub fn is_none(&self) -> bool {
        self.globs.is_empty()
    }

    /// Whether a column, as written in SQL, matches: a qualified name (`t.password`) by its last
    /// part, a quoted identifier (`"Password"`) without its quotes.
    pub fn matches(&self, column: &str) -> bool {
        !self.is_none() && self.matches_name(&unquote(last_part(column)))
    }

    /// Whether a column name as the server reports it (no quoting, no qualification) matches.
    pub(super) fn matches_name(&self, name: &str) -> bool {
        // The fast path first: the globs' substring searches cost far more than one pass over
        // a short name, and this runs for every result column of every statement.
        if self.is_none() || !self.prefilter.mentions(name.as_bytes()).named {
            return false;
        }
        self.matches_folded(name)
    }

    /// The globs alone, without the fast path (which must never change the answer).
    fn matches_folded(&self, name: &str) -> bool {
        let name = fold(name);
        self.globs.iter().any(|g| g.matches(&name))
    }

    /// What a token scan of `text` could find: one pass over the bytes, no allocation.
    pub(super) fn mentions(&self, text: &[u8]) -> Mentions {
        if self.is_none() {
            return Mentions::default();
        }
        self.prefilter.mentions(text)
    }
}

/// The fast path's verdict on a text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mentions {
    /// Some pattern's fragment occurs: the text may name a matching column.
    pub(super) named: bool,
    /// `copy` occurs (ASCII case-insensitively): the text may hold a COPY statement.
    pub(super) copy: bool,
}

const COPY: &[u8] = b"copy";

impl Glob {
    fn matches(&self, name: &str) -> bool {
        let [first, middle @ .., last] = self.parts.as_slice() else {
            // One part: no `*` in the pattern.
            return self.parts.first().is_some_and(|exact| name == exact);
        };
        if name.len() < first.len() + last.len()
            || !name.starts_with(first.as_str())
            || !name.ends_with(last.as_str())
        {
            return false;
        }
        let mut rest = &name[first.len()..name.len() - last.len()];
        for part in middle {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

impl Prefilter {
    fn new(globs: &[Glob]) -> Prefilter {
        let mut prefilter = Prefilter {
            fragments: Vec::new(),
            starting_pairs: Box::new([0; 1024]),
            single_byte: false,
            always: false,
            non_ascii: false,
        };
        for glob in globs {
            let longest = glob
                .parts
                .iter()
                .max_by_key(|p| p.len())
                .map_or("", String::as_str);
            if longest.is_empty() || longest.contains('"') {
                prefilter.always = true;
            } else if !longest.is_ascii() {
                prefilter.non_ascii = true;
            } else {
                let fragment = longest.as_bytes();
                match fragment {
                    [a, b, ..] => {
                        let bit = pair(*a, *b);
                        prefilter.starting_pairs[bit / 64] |= 1 << (bit % 64);
                    }
                    _ => prefilter.single_byte = true,
                }
                prefilter.fragments.push(fragment.into());
            }
        }
        let bit = pair(COPY[0], COPY[1]);
        prefilter.starting_pairs[bit / 64] |= 1 << (bit % 64);
        prefilter
    }

    fn mentions(&self, text: &[u8]) -> Mentions {
        let mut found = Mentions {
            named: self.always || (self.non_ascii && !text.is_ascii()),
            copy: false,
        };
        if self.single_byte && !found.named {
            found.named = (0..text.len()).any(|i| self.fragment_at(&text[i..]));
        }
        for (i, w) in text.windows(2).enumerate() {
            let bit = pair(w[0], w[1]);
            if (self.starting_pairs[bit / 64] >> (bit % 64)) & 1 == 0 {
                continue;
            }
            let rest = &text[i..];
            found.named = found.named || self.fragment_at(rest);
            found.copy = found.copy
                || rest
                    .get(..COPY.len())
                    .is_some_and(|r| r.eq_ignore_ascii_case(COPY));
            if found.named && found.copy {
                break;
            }
        }
        found
    }

    fn fragment_at(&self, rest: &[u8]) -> bool {
        self.fragments
            .iter()
            .any(|f| rest.len() >= f.len() && rest[..f.len()].eq_ignore_ascii_case(f))
    }
}

/// The bit of two bytes in `starting_pairs`, ASCII case-insensitively.
fn pair(a: u8, b: u8) -> usize {
    (usize::from(a.to_ascii_lowercase()) << 8) | usize::from(b.to_ascii_lowercase())
}

/// Case folding for matching; see the module documentation.
fn fold(s: &str) -> Cow<'_, str> {
    if s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_ascii() {
                    return c.to_ascii_lowercase();
                }
                let mut lower = c.to_lowercase();
                match (lower.next(), lower.next()) {
                    (Some(l), None) if !l.is_ascii() => l,
                    _ => c,
                }
            })
            .collect(),
    )
}

/// The last dot-separated part of a possibly qualified, possibly quoted name (dots inside quotes
/// do not separate).
fn last_part(name: &str) -> &str {
    let mut in_quotes = false;
    let mut start = 0;
    for (i, b) in name.bytes().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b'.' if !in_quotes => start = i + 1,
            _ => {}
        }
    }
    &name[start..]
}

/// An identifier without its quotes (`"a""b"` is `a"b`); an unquoted one as it is.
pub(super) fn unquote(ident: &str) -> Cow<'_, str> {
    let Some(inner) = ident.strip_prefix('"') else {
        return Cow::Borrowed(ident);
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    if inner.contains("\"\"") {
        Cow::Owned(inner.replace("\"\"", "\""))
    } else {
        Cow::Borrowed(inner)
    }
}

/// What a redacted value is recorded as: nothing of it, its length, and that it was redacted.
pub(super) fn redacted(len: u64) -> Capped {
    Capped {
        text: String::new(),
        len,
        hex: false,
        redacted: true,
    }
}
