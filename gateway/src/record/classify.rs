//! What kind of statement a piece of SQL is, and which risky things it does.
//!
//! The SQL is parsed with sqlparser's PostgreSQL dialect. PostgreSQL accepts more than sqlparser
//! knows (ALTER SYSTEM, DO blocks, many utility commands), so when parsing fails each statement is
//! classified by its leading keywords instead, from a lexical scan that respects quoting.

use std::collections::HashMap;

use sqlparser::ast::{GranteeName, GranteesType, Query, SetExpr, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::capture::sql_text;
use super::event::StatementClass;

pub const RISK_DROP: &str = "drop";
pub const RISK_TRUNCATE: &str = "truncate";
pub const RISK_DELETE_WITHOUT_WHERE: &str = "delete_without_where";
pub const RISK_UPDATE_WITHOUT_WHERE: &str = "update_without_where";
pub const RISK_ALTER_SYSTEM: &str = "alter_system";
pub const RISK_GRANT_TO_PUBLIC: &str = "grant_to_public";

/// Above this size the SQL is only scanned, not parsed: a multi-megabyte INSERT would cost a
/// large syntax tree for no better answer than its first keyword gives.
const MAX_PARSED_SQL_BYTES: usize = 256 * 1024;

/// Statement shapes remembered per session.
const MAX_CACHED_SHAPES: usize = 256;
/// Longer SQL is classified every time (and is rarely repeated).
const MAX_SHAPE_BYTES: usize = 4096;

/// [`classify`] with a memory of statement shapes: SQL that differs only in its literals
/// (pgbench, ORMs that inline values, dashboards) classifies the same, so each shape is parsed
/// once per session instead of on every statement. Parsing costs microseconds per statement on
/// the forwarding path; the shape costs one lexical scan.
#[derive(Debug, Default)]
pub struct Classifier {
    shapes: HashMap<String, (StatementClass, Vec<String>)>,
}

impl Classifier {
    pub fn classify(&mut self, sql: &str) -> (StatementClass, Vec<String>) {
        if sql.len() > MAX_SHAPE_BYTES {
            return classify(sql);
        }
        let key = shape(sql);
        if let Some(verdict) = self.shapes.get(&key) {
            return verdict.clone();
        }
        let verdict = classify(sql);
        if self.shapes.len() >= MAX_CACHED_SHAPES {
            self.shapes.clear();
        }
        self.shapes.insert(key, verdict.clone());
        verdict
    }
}

/// The SQL with every literal and number replaced by a placeholder and trivia (whitespace,
/// comments) dropped: what classification depends on. An unterminated literal keeps a mark of
/// its own, since the parser rejects it where a terminated one parses.
fn shape(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for token in sql_text::tokens(sql) {
        let text = &sql[token.span.clone()];
        match token.kind {
            sql_text::TokenKind::Literal => {
                let closed = text.len() >= 2 && (text.ends_with('\'') || text.ends_with('$'));
                out.push_str(if closed { "''" } else { "'!" });
            }
            sql_text::TokenKind::Number => out.push('0'),
            _ => out.push_str(text),
        }
        out.push(' ');
    }
    out
}

/// Classifies `sql`, which may hold several statements: the most significant class among them
/// (DDL > privilege > write > read > transaction > utility) and the union of their risks.
pub fn classify(sql: &str) -> (StatementClass, Vec<String>) {
    let mut verdict = Verdict::default();
    let parsed = (sql.len() <= MAX_PARSED_SQL_BYTES)
        .then(|| Parser::parse_sql(&PostgreSqlDialect {}, sql).ok())
        .flatten()
        .filter(|statements| !statements.is_empty());
    match parsed {
        Some(statements) => statements
            .iter()
            .for_each(|s| classify_statement(s, &mut verdict)),
        None => {
            for statement in sql_text::statements(sql) {
                let words = sql_text::top_level_words(sql, &statement);
                classify_words(&words, &mut verdict);
            }
        }
    }
    (verdict.class, verdict.risks)
}

#[derive(Debug)]
struct Verdict {
    class: StatementClass,
    risks: Vec<String>,
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict {
            class: StatementClass::Unknown,
            risks: Vec::new(),
        }
    }
}

impl Verdict {
    fn class(&mut self, class: StatementClass) {
        if significance(class) > significance(self.class) {
            self.class = class;
        }
    }

    fn risk(&mut self, risk: &str) {
        if !self.risks.iter().any(|r| r == risk) {
            self.risks.push(risk.to_owned());
        }
    }
}

fn significance(class: StatementClass) -> u8 {
    match class {
        StatementClass::Unknown => 0,
        StatementClass::Utility => 1,
        StatementClass::Transaction => 2,
        StatementClass::Read => 3,
        StatementClass::Write => 4,
        StatementClass::Privilege => 5,
        StatementClass::Ddl => 6,
    }
}

/// The parser's view where it adds something keywords cannot see (WHERE clauses, data-modifying
/// CTEs, grantees, EXPLAIN ANALYZE running its statement); the leading keywords otherwise.
fn classify_statement(statement: &Statement, verdict: &mut Verdict) {
    match statement {
        Statement::Query(query) => classify_query(query, verdict),
        Statement::Update(update) => {
            verdict.class(StatementClass::Write);
            if update.selection.is_none() {
                verdict.risk(RISK_UPDATE_WITHOUT_WHERE);
            }
        }
        Statement::Delete(delete) => {
            verdict.class(StatementClass::Write);
            if delete.selection.is_none() {
                verdict.risk(RISK_DELETE_WITHOUT_WHERE);
            }
        }
        Statement::Insert(insert) => {
            verdict.class(StatementClass::Write);
            if let Some(source) = &insert.source {
                classify_query(source, verdict);
            }
        }
        Statement::Copy { to, .. } => verdict.class(if *to {
            StatementClass::Read
        } else {
            StatementClass::Write
        }),
        Statement::Explain {
            analyze, statement, ..
        } => {
            if *analyze {
                classify_statement(statement, verdict);
            } else {
                verdict.class(StatementClass::Read);
            }
        }
        Statement::Grant(grant) => {
            verdict.class(StatementClass::Privilege);
            if grant.grantees.iter().any(is_public) {
                verdict.risk(RISK_GRANT_TO_PUBLIC);
            }
        }
        other => {
            // Display renders the statement from its leading keyword, comments stripped.
            let text = other.to_string();
            for statement in sql_text::statements(&text) {
                classify_words(&sql_text::top_level_words(&text, &statement), verdict);
            }
        }
    }
}

fn is_public(grantee: &sqlparser::ast::Grantee) -> bool {
    grantee.grantee_type == GranteesType::Public
        || matches!(&grantee.name, Some(GranteeName::ObjectName(name))
            if name.to_string().eq_ignore_ascii_case("public"))
}

fn classify_query(query: &Query, verdict: &mut Verdict) {
    verdict.class(StatementClass::Read);
    if let Some(with) = &query.with {
        for cte in &with.cte_tables {
            classify_query(&cte.query, verdict);
        }
    }
    classify_set_expr(&query.body, verdict);
}

fn classify_set_expr(body: &SetExpr, verdict: &mut Verdict) {
    match body {
        SetExpr::Select(select) => {
            // SELECT ... INTO creates a table.
            if select.into.is_some() {
                verdict.class(StatementClass::Ddl);
            }
        }
        SetExpr::Query(query) => classify_query(query, verdict),
        SetExpr::SetOperation { left, right, .. } => {
            classify_set_expr(left, verdict);
            classify_set_expr(right, verdict);
        }
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            classify_statement(s, verdict);
        }
        SetExpr::Values(_) | SetExpr::Table(_) => {}
    }
}

/// Classification by leading keywords (`words` are the statement's words outside parentheses).
fn classify_words(words: &[&str], verdict: &mut Verdict) {
    let word = |i: usize| words.get(i).copied().unwrap_or("");
    let is = |i: usize, keyword: &str| word(i).eq_ignore_ascii_case(keyword);
    let any_is = |keyword: &str| words.iter().any(|w| w.eq_ignore_ascii_case(keyword));
    let first = word(0).to_ascii_uppercase();
    let role_object = ["ROLE", "USER", "GROUP"].iter().any(|o| is(1, o)) && !is(2, "mapping");
    use StatementClass::*;
    let class = match first.as_str() {
        "CREATE" | "ALTER" if role_object => Privilege,
        "ALTER" if is(1, "default") && is(2, "privileges") => Privilege,
        "ALTER" if is(1, "system") => {
            verdict.risk(RISK_ALTER_SYSTEM);
            Ddl
        }
        "DROP" => {
            verdict.risk(RISK_DROP);
            if role_object { Privilege } else { Ddl }
        }
        "CREATE" | "ALTER" | "COMMENT" | "SECURITY" | "IMPORT" => Ddl,
        "GRANT" => {
            if any_is("public") {
                verdict.risk(RISK_GRANT_TO_PUBLIC);
            }
            Privilege
        }
        "REVOKE" | "REASSIGN" => Privilege,
        "SET" | "RESET" if is(1, "role") || is(1, "session") && is(2, "authorization") => Privilege,
        "TRUNCATE" => {
            verdict.risk(RISK_TRUNCATE);
            Write
        }
        "DELETE" | "UPDATE" => {
            if !any_is("where") {
                verdict.risk(if first == "DELETE" {
                    RISK_DELETE_WITHOUT_WHERE
                } else {
                    RISK_UPDATE_WITHOUT_WHERE
                });
            }
            Write
        }
        "INSERT" | "MERGE" | "CALL" | "DO" | "REFRESH" => Write,
        "COPY" if any_is("from") => Write,
        "WITH"
            if ["insert", "update", "delete", "merge"]
                .iter()
                .any(|k| any_is(k)) =>
        {
            Write
        }
        "SELECT" | "WITH" | "VALUES" | "TABLE" | "EXPLAIN" | "COPY" | "FETCH" | "MOVE"
        | "DECLARE" => Read,
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "SAVEPOINT" | "RELEASE" => {
            Transaction
        }
        "PREPARE" if is(1, "transaction") => Transaction,
        "SET" | "RESET" | "SHOW" | "LISTEN" | "UNLISTEN" | "NOTIFY" | "DISCARD" | "DEALLOCATE"
        | "PREPARE" | "EXECUTE" | "VACUUM" | "ANALYZE" | "CHECKPOINT" | "LOCK" | "LOAD"
        | "CLUSTER" | "REINDEX" | "CLOSE" => Utility,
        _ => Unknown,
    };
    verdict.class(class);
}

#[cfg(test)]
mod tests {
    use super::*;
    use StatementClass::*;

    #[test]
    fn statements_are_classified_with_their_risks() {
        let table: &[(&str, StatementClass, &[&str])] = &[
            ("select * from t where id = $1", Read, &[]),
            ("/* hi */ SELECT 1", Read, &[]),
            ("with x as (select 1) select * from x", Read, &[]),
            (
                "with d as (delete from t returning *) select * from d",
                Write,
                &["delete_without_where"],
            ),
            ("insert into t values (1)", Write, &[]),
            ("update t set a = 1", Write, &["update_without_where"]),
            ("update t set a = 1 where id = 2", Write, &[]),
            ("delete from t", Write, &["delete_without_where"]),
            ("DELETE FROM t WHERE id = 1", Write, &[]),
            ("truncate t", Write, &["truncate"]),
            ("copy t from stdin", Write, &[]),
            ("copy t to stdout", Read, &[]),
            ("explain select 1", Read, &[]),
            (
                "explain analyze delete from t",
                Write,
                &["delete_without_where"],
            ),
            ("create table t (id int)", Ddl, &[]),
            ("drop table t", Ddl, &["drop"]),
            ("DROP INDEX IF EXISTS i", Ddl, &["drop"]),
            ("alter table t add column b int", Ddl, &[]),
            ("select a into newt from t", Ddl, &[]),
            ("create role r login password 'x'", Privilege, &[]),
            ("drop role r", Privilege, &["drop"]),
            ("grant select on t to alice", Privilege, &[]),
            (
                "grant select on t to public",
                Privilege,
                &["grant_to_public"],
            ),
            ("revoke all on t from bob", Privilege, &[]),
            (
                "alter default privileges grant select on tables to r",
                Privilege,
                &[],
            ),
            ("set role admin", Privilege, &[]),
            ("alter system set work_mem = '1GB'", Ddl, &["alter_system"]),
            ("begin", Transaction, &[]),
            ("commit", Transaction, &[]),
            ("rollback to savepoint s", Transaction, &[]),
            ("set search_path = x", Utility, &[]),
            ("show work_mem", Utility, &[]),
            ("vacuum t", Utility, &[]),
            ("checkpoint", Utility, &[]),
            ("do $$ begin delete from t; end $$", Write, &[]),
            ("frobnicate the database", Unknown, &[]),
            ("", Unknown, &[]),
        ];
        for (sql, class, risks) in table {
            let (got_class, got_risks) = classify(sql);
            assert_eq!(
                (got_class, got_risks.as_slice()),
                (
                    *class,
                    &risks.iter().map(|r| r.to_string()).collect::<Vec<_>>()[..]
                ),
                "{sql}"
            );
        }
    }

    #[test]
    fn several_statements_take_the_most_significant_class_and_all_risks() {
        let (class, risks) = classify("begin; delete from t; drop table u; commit");
        assert_eq!(class, Ddl);
        assert_eq!(risks, vec!["delete_without_where", "drop"]);
        let (class, _) = classify("select 1; begin; set x = 1");
        assert_eq!(class, Read);
    }

    #[test]
    fn unparseable_sql_falls_back_to_keywords_per_statement() {
        // Unbalanced syntax sqlparser rejects; keywords still tell what it would do.
        let (class, risks) = classify("delete from t ((; truncate x");
        assert_eq!(class, Write);
        assert_eq!(risks, vec!["delete_without_where", "truncate"]);
    }

    #[test]
    fn remembered_shapes_answer_exactly_as_parsing_each_statement() {
        let mut classifier = Classifier::default();
        let corpus = [
            "select abalance from pgbench_accounts where aid = 1",
            "select abalance from pgbench_accounts where aid = 987654",
            "update t set a = 'x' where id = 2",
            "update t set a = 'y'",
            "delete from t where id = 3",
            "delete from t",
            "grant select on t to public",
            "grant select on t to alice",
            "select 'unterminated",
            "select 'terminated'",
            "insert into t values (1, 'a'), (2, 'b')",
            "/* comment */ select 1",
            "select 1 -- trailing",
            "create role r password 'x'",
            "select $$dollar$$",
            "select $$unterminated",
        ];
        for round in 0..3 {
            for sql in corpus {
                assert_eq!(
                    classifier.classify(sql),
                    classify(sql),
                    "round {round}: {sql}"
                );
            }
        }
        assert!(
            classifier.shapes.len() < corpus.len(),
            "literals share a shape"
        );
    }

    #[test]
    fn shapes_drop_literals_and_trivia_only() {
        assert_eq!(
            shape("SELECT a FROM t WHERE id = 42 AND n = 'x' -- c"),
            shape("SELECT a  FROM t /* c */ WHERE id = 7 AND n = 'yy'")
        );
        assert_ne!(shape("select a from t"), shape("select b from t"));
        assert_ne!(shape("select 'a'"), shape("select 'a"));
    }
}
