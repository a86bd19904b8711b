use rand::{Rng, SeedableRng};

use super::super::sql_text::replace_spans;
use super::*;

fn patterns(list: &[&str]) -> SecretPatterns {
    let list: Vec<String> = list.iter().map(|&p| p.to_owned()).collect();
    SecretPatterns::new(&list).unwrap()
}

/// The SQL as it would be recorded, and the secret parameter numbers, with the default patterns.
fn scan(sql: &str) -> (String, Vec<u16>) {
    let found = SecretPatterns::defaults().scan_sql(sql);
    (replace_spans(sql, &found.literals), found.params)
}

fn assert_redacted(sql: &str, want: &str, params: &[u16]) {
    let (got, got_params) = scan(sql);
    assert_eq!(got, want, "{sql}");
    assert_eq!(got_params, params, "{sql}");
}

fn assert_untouched(sql: &str) {
    assert_redacted(sql, sql, &[]);
}

#[test]
fn globs_match_column_names_case_insensitively() {
    let p = SecretPatterns::defaults();
    for name in [
        "password",
        "PASSWORD",
        "user_password_hash",
        "Passwd",
        "client_secret",
        "refresh_token",
        "api_key",
        "x_apikey",
        "ssh_private_key",
        "ssn",
        "SSN",
        "card_number",
    ] {
        assert!(p.matches(name), "{name}");
    }
    for name in [
        "email",
        "id",
        "lessn",
        "ssn_verified",
        "card",
        "key",
        "pass",
        "",
    ] {
        assert!(!p.matches(name), "{name}");
    }

    let custom = patterns(&["a*b*c", "exact", "pre*", "*suf"]);
    for name in [
        "abc", "aXbYc", "abbc", "EXACT", "prefix", "pre", "a_suf", "SUF",
    ] {
        assert!(custom.matches(name), "{name}");
    }
    for name in ["acb", "ab", "exactly", "xpre", "sufx", "bc"] {
        assert!(!custom.matches(name), "{name}");
    }
    assert!(patterns(&["*"]).matches("anything"));
}

#[test]
fn qualified_and_quoted_names_match_by_their_last_part_unquoted() {
    let p = SecretPatterns::defaults();
    assert!(p.matches("t.password"));
    assert!(p.matches("public.users.\"Password\""));
    assert!(p.matches("\"Api_Key\""));
    assert!(p.matches("\"pass\"\"word\"\"token\""));
    // A dot inside quotes is part of the name.
    assert!(p.matches("\"users.password\""));
    assert!(!p.matches("password.email"));
    assert!(!p.matches("\"password\".email"));
}

#[test]
fn non_ascii_letters_fold_but_never_into_ascii() {
    let p = patterns(&["*пароль*", "*k*"]);
    assert!(p.matches("ПАРОЛЬ_hash"));
    assert!(p.matches("K"));
    // The Kelvin sign lowercases to an ASCII 'k' in Unicode, but a column spelled with it is not
    // the column `k`, and the fast path looks for ASCII fragments as bytes.
    assert!(!p.matches("\u{212A}"));
}

#[test]
fn empty_patterns_are_refused_and_an_empty_list_redacts_nothing() {
    for bad in [&["*password*", ""][..], &["  "][..]] {
        let bad: Vec<String> = bad.iter().map(|&p| p.to_owned()).collect();
        let err = SecretPatterns::new(&bad).unwrap_err();
        assert!(err.contains("is empty"), "{err}");
    }
    let err = SecretPatterns::new(&["a".into(), String::new()]).unwrap_err();
    assert!(err.contains("#2"), "{err}");
    let nothing = SecretPatterns::new(&[]).unwrap();
    assert!(nothing.is_none());
    assert!(!nothing.matches("password"));
    assert!(!SecretPatterns::none().matches("password"));
    assert_eq!(
        SecretPatterns::none().scan_sql("update u set password = 'x'; copy t from stdin"),
        sql::SqlSecrets::default()
    );
}

#[test]
fn the_fast_path_passes_only_texts_that_contain_a_fragment() {
    let p = SecretPatterns::defaults();
    assert!(
        !p.mentions(b"select id, email from users where id = $1")
            .named
    );
    assert!(!p.mentions(b"").named);
    assert!(p.mentions(b"SELECT PassWord FROM users").named);
    assert!(p.mentions(b"x\"ToKeN\"").named);
    assert!(p.mentions(b"ssn").named);
    // Non-ASCII text alone does not defeat it, unless a pattern is non-ASCII.
    assert!(!p.mentions("select 'héllo wörld'".as_bytes()).named);
    let cyrillic = patterns(&["*пароль*"]);
    assert!(cyrillic.mentions("select 'é'".as_bytes()).named);
    assert!(!cyrillic.mentions(b"select password").named);
    // A pattern without a literal fragment passes everything.
    assert!(patterns(&["*"]).mentions(b"select 1").named);
    assert!(patterns(&["a\"b"]).mentions(b"select 1").named);
    // COPY is noticed in the same pass, with or without a fragment.
    assert!(p.mentions(b"CoPy t from stdin").copy);
    assert!(p.mentions(b"select password; copy t from stdin").copy);
    assert!(!p.mentions(b"select password from t").copy);
    assert!(!p.mentions(b"cop").copy);
    // Nothing to find without a fragment: the statement is not even tokenised.
    assert_eq!(
        p.scan_sql("update users set email = 'x' where id = $1"),
        sql::SqlSecrets::default()
    );
}

#[test]
fn the_fast_path_never_changes_whether_a_name_matches() {
    let sets = [
        SecretPatterns::defaults(),
        Arc::new(patterns(&[
            "a*b*c",
            "exact",
            "pre*",
            "*suf",
            "*k*",
            "*пароль*",
            "x",
        ])),
    ];
    let alphabet: Vec<char> = "abcxkKpPsSuUfFeEtrwoдПАРОЛЬпароль_\"\u{212A}é0"
        .chars()
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut names: Vec<String> = ["", "ssn", "SSN", "ssn_x", "Password", "pre", "ab", "abc"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for _ in 0..20_000 {
        let len = rng.gen_range(0..12);
        names.push(
            (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect(),
        );
    }
    for set in &sets {
        for name in &names {
            assert_eq!(set.matches_name(name), set.matches_folded(name), "{name:?}");
        }
    }
}

#[test]
fn literals_assigned_to_secret_columns_are_replaced() {
    assert_redacted(
        "update users set password = 'hunter2' where id = 1",
        "update users set password = '***' where id = 1",
        &[],
    );
    assert_redacted(
        "UPDATE users SET email = 'a@b', api_key = E'k\\'1', ssn = 123456789 WHERE id = 7",
        "UPDATE users SET email = 'a@b', api_key = '***', ssn = '***' WHERE id = 7",
        &[],
    );
    assert_redacted(
        "update t set token = $tag$x;y$tag$, secret=-42, \"Password\"=text 'p'",
        "update t set token = '***', secret=-'***', \"Password\"=text '***'",
        &[],
    );
    // A function call or expression: everything in it.
    assert_redacted(
        "update users set password = crypt('hunter2', gen_salt('bf')) where id = 7",
        "update users set password = crypt('***', gen_salt('***')) where id = 7",
        &[],
    );
    assert_redacted(
        "update users set password = 'a' || $1 || pg_catalog.md5('b')::text, n = 1",
        "update users set password = '***' || $1 || pg_catalog.md5('***')::text, n = 1",
        &[1],
    );
    // A setting named like a secret.
    assert_redacted(
        "SET app.api_key = 'xyz'; set x = 'y'",
        "SET app.api_key = '***'; set x = 'y'",
        &[],
    );
}

#[test]
fn comparisons_with_secret_columns_either_way_round() {
    assert_redacted(
        "select id from users where token = $1 and name = $2",
        "select id from users where token = $1 and name = $2",
        &[1],
    );
    assert_redacted(
        "select 1 from users u where $2 = u.token or 'abc' = \"u\".\"Secret\" or 'x' = name",
        "select 1 from users u where $2 = u.token or '***' = \"u\".\"Secret\" or 'x' = name",
        &[2],
    );
    assert_redacted(
        "select 1 from u where password = $1::text and $2::varchar(10) = token",
        "select 1 from u where password = $1::text and $2::varchar(10) = token",
        &[1, 2],
    );
    assert_redacted(
        "select 1 from u where lower(token) = 'ab' and crypt($3, password) = password",
        "select 1 from u where lower(token) = '***' and crypt($3, password) = password",
        &[3],
    );
    // Named arguments, old and new spelling.
    assert_redacted(
        "select login(user_name := 'bob', password := 'pw', otp_secret => $2)",
        "select login(user_name := 'bob', password := '***', otp_secret => $2)",
        &[2],
    );
}

#[test]
fn parameter_numbers_are_read_whole() {
    assert_redacted(
        "update u set password = $10, a = $1, b = $100 where id = $11",
        "update u set password = $10, a = $1, b = $100 where id = $11",
        &[10],
    );
    // Beyond what a Bind can carry: ignored, not wrapped.
    assert_redacted(
        "update u set password = $65537, token = $0",
        "update u set password = $65537, token = $0",
        &[],
    );
}

#[test]
fn row_comparisons_and_inserts_pair_columns_with_values_by_position() {
    assert_redacted(
        "update u set (email, password) = ($1, $2), (a, token) = row('x', 'y')",
        "update u set (email, password) = ($1, $2), (a, token) = row('x', '***')",
        &[2],
    );
    assert_redacted(
        "insert into users (email, api_key) values ('a@b', 'k-123')",
        "insert into users (email, api_key) values ('a@b', '***')",
        &[],
    );
    assert_redacted(
        "INSERT INTO public.users AS u (id, \"Token\", name) OVERRIDING SYSTEM VALUE VALUES \
         (1, 'a', 'x'), (2, upper('b'), 'y'), ($1, $2, $3) RETURNING id",
        "INSERT INTO public.users AS u (id, \"Token\", name) OVERRIDING SYSTEM VALUE VALUES \
         (1, '***', 'x'), (2, upper('***'), 'y'), ($1, $2, $3) RETURNING id",
        &[2],
    );
    assert_redacted(
        "insert into t (a, password, b) values ($1, $2, $3), ($4, $5, $6), ($7, default, $9)",
        "insert into t (a, password, b) values ($1, $2, $3), ($4, $5, $6), ($7, default, $9)",
        &[2, 5],
    );
    assert_redacted(
        "insert into users (email, password) select $1, crypt($2, gen_salt('bf')) from x",
        "insert into users (email, password) select $1, crypt($2, gen_salt('***')) from x",
        &[2],
    );
    assert_redacted(
        "merge into u using s on u.id = s.id when not matched then insert (id, token) \
         values (s.id, $3) when matched then update set token = $4",
        "merge into u using s on u.id = s.id when not matched then insert (id, token) \
         values (s.id, $3) when matched then update set token = $4",
        &[3, 4],
    );
    assert_redacted(
        "with x as (insert into t (secret) values ('s') returning id) select 'token'",
        "with x as (insert into t (secret) values ('***') returning id) select 'token'",
        &[],
    );
}

#[test]
fn what_is_not_a_secret_value_is_left_alone() {
    for sql in [
        // Pattern words in literals and comments.
        "select 'password = 1', $$token = 2$$ -- password = 'x'\n /* secret = 3 */ from t",
        "select * from logs where message = 'my password is hunter2'",
        "update t set note = 'token' where label = 'secret'",
        // Other operators, and comparisons between columns.
        "select 1 from u where password <> $1 or token != 'x' or ssn >= 5 or secret <= 1",
        "select 1 from u where password is null and token = other_token",
        "update u set password = default, token = null",
        // An INSERT without a column list: the positions have no names.
        "insert into users values ('a', 'pw')",
        "insert into users (id, email) values (1, 'password')",
        "select password, token from users where id = 1",
    ] {
        assert_untouched(sql);
    }
}

#[test]
fn a_copy_keeps_its_data_only_when_its_columns_are_known_and_not_secret() {
    let p = SecretPatterns::defaults();
    for (sql, want) in [
        ("copy t (a, b) from stdin", Some(false)),
        (
            "COPY public.t (a, \"Password\") FROM STDIN WITH (FORMAT csv)",
            Some(true),
        ),
        ("copy t from stdin", Some(true)),
        ("copy t to stdout", Some(true)),
        ("copy (select id, email from users) to stdout", Some(false)),
        ("copy (select * from users) to stdout", Some(true)),
        ("copy (select id, token from users) to stdout", Some(true)),
        // Server-side files never reach the client.
        ("copy t (a) from '/tmp/f'", None),
        ("select 'copy t from stdin'", None),
        ("copy t (a) from stdin; copy u from stdin", Some(true)),
        ("select 1; copy t (a) to stdout", Some(false)),
    ] {
        assert_eq!(p.scan_sql(sql).copy, want, "{sql}");
    }
}

#[test]
fn hostile_sql_never_panics_and_stays_linear() {
    for sql in [
        "update t set password = 'abc",
        "update t set password = $",
        "update t set password = E'\\",
        "update t set password = $x$abc",
        "insert into t (password",
        "insert into t (a, password) values (1, 'x'",
        "insert into t (a, password) values",
        "insert into",
        "insert",
        "= password",
        "password =",
        "password := ",
        "(password) = (",
        ") = password",
        "$1 = password",
        "'x'::",
        "copy",
        "copy (",
        "copy t (",
        "token = -",
        "\"token",
        "token = \"",
        "= = = token = = =",
        "::::::text = token",
    ] {
        scan(sql);
        SecretPatterns::defaults().scan_sql(sql);
    }
    let (redacted, _) = scan("update t set password = 'abc");
    assert_eq!(redacted, "update t set password = '***'");

    // Huge column lists and deep nesting: each must finish quickly (quadratic work would not).
    let columns: Vec<String> = (0..50_000).map(|i| format!("c{i}")).collect();
    let values: Vec<String> = (0..50_000).map(|i| format!("'{i}'")).collect();
    let huge = format!(
        "insert into t ({}, password) values ({}, 'pw')",
        columns.join(", "),
        values.join(", ")
    );
    let (redacted, _) = scan(&huge);
    assert!(redacted.ends_with(", '***')"));
    assert!(redacted.contains("'49999'"));
    let deep = format!(
        "select {}password = 'x'{}",
        "(".repeat(100_000),
        ") = token".repeat(100_000)
    );
    scan(&deep);
    let assignments = "password = (".repeat(50_000);
    scan(&assignments);
    let casts = format!("{} = token", "$1::text".repeat(50_000));
    scan(&casts);

    // Random soup of SQL pieces, pattern words and garbage.
    let pieces = [
        "password",
        "token",
        "\"Secret\"",
        "=",
        ":",
        ">",
        "<",
        "(",
        ")",
        ",",
        ";",
        "'x'",
        "'",
        "\"",
        "$1",
        "$",
        "$$",
        "$t$",
        "--",
        "/*",
        "*/",
        "insert",
        "into",
        "values",
        "select",
        "copy",
        "stdin",
        "row",
        "::",
        "||",
        ".",
        "-",
        "1.5e",
        "E'",
        "\\",
        "é",
        "\u{212A}",
        " ",
        "\n",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5ec7e7);
    for _ in 0..5_000 {
        let n = rng.gen_range(0..40);
        let sql: String = (0..n)
            .map(|_| pieces[rng.gen_range(0..pieces.len())])
            .collect();
        let found = SecretPatterns::defaults().scan_sql(&sql);
        // Whatever is found can be replaced: ranges in order, on character boundaries.
        replace_spans(&sql, &found.literals);
        assert!(found.literals.windows(2).all(|w| w[0].end <= w[1].start));
    }
}
