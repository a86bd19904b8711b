//! Search with filters that its text rarely or never meets, on both engines: the results are
//! the ones a plain reading of every statement gives, newest first, page after page. On SQLite
//! the filters travel inside the full-text query as facets (migration 0012); a facet that
//! matched less than its filter would lose statements here, one that matched more would let
//! the SQL filter catch it.

use std::sync::Arc;

use anyhow::{Result, ensure};
use chrono::{DateTime, Duration, TimeZone, Utc};
use gateway::record::event::StatementClass;
use gateway::record::statements::IndexedStatement;
use gateway::store::postgres::PgStore;
use gateway::store::search::ChainProgress;
use gateway::store::sqlite::SqliteStore;
use gateway::store::{
    IndexUpdate, NewSession, RecordingPolicy, StatementHit, StatementPage, StatementQuery, Store,
    TextMatch,
};
use harness::PgCluster;
use harness::on_both_engines;
use uuid::Uuid;

on_both_engines!(filters_a_text_rarely_meets_find_what_reading_everything_finds);

/// Midnight UTC, so that statements fall on several days.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

/// A statement as the workload below writes it, with its session's person and target.
#[derive(Clone)]
struct Written {
    session_id: Uuid,
    person: &'static str,
    target: &'static str,
    statement: IndexedStatement,
}

/// Alice's many statements on `shop`: mostly reads of orders and inserts into orders, an
/// INSERT … SELECT every 2,000, transaction control that never names a table, some errors and
/// risky deletes. Spread over about five days, one a minute.
fn shop_statements(count: i64) -> Vec<IndexedStatement> {
    (0..count)
        .map(|i| {
            let (sql, class, risks) = match i % 10 {
                _ if i % 2_000 == 7 => (
                    format!("INSERT INTO orders_archive SELECT * FROM orders WHERE id < {i}"),
                    StatementClass::Write,
                    vec![],
                ),
                _ if i % 501 == 0 => (
                    "DELETE FROM orders".to_string(),
                    StatementClass::Write,
                    vec!["delete without where".to_string()],
                ),
                0..=5 => (
                    format!("SELECT id, status FROM orders WHERE id = {i}"),
                    StatementClass::Read,
                    vec![],
                ),
                6..=8 => (
                    format!("INSERT INTO orders (id) VALUES ({i})"),
                    StatementClass::Write,
                    vec![],
                ),
                _ => ("COMMIT".to_string(), StatementClass::Transaction, vec![]),
            };
            IndexedStatement {
                seq: i,
                at: t0() + Duration::minutes(i),
                sql,
                params: String::new(),
                class,
                risks,
                error: (i % 13 == 0).then(|| ("23505".into(), "duplicate key".into())),
                tag: None,
                rows: None,
                duration_micros: 100,
            }
        })
        .collect()
}

/// Bob's few statements on `crm`, between alice's (never at the same instant).
fn crm_statements(count: i64) -> Vec<IndexedStatement> {
    (0..count)
        .map(|i| IndexedStatement {
            seq: i,
            at: t0() + Duration::minutes(i * 20) + Duration::seconds(30),
            sql: format!("SELECT name FROM customers WHERE id = {i}"),
            params: format!("$1 = 'bob{i}@example.com'"),
            class: StatementClass::Read,
            risks: Vec::new(),
            error: None,
            tag: None,
            rows: None,
            duration_micros: 100,
        })
        .collect()
}

/// A session of `person` on `target` whose index holds `statements`.
async fn indexed(
    store: &Arc<dyn Store>,
    person: &'static str,
    target: &'static str,
    statements: Vec<IndexedStatement>,
) -> Result<Vec<Written>> {
    let session_id = Uuid::new_v4();
    store
        .insert_session(&NewSession {
            id: session_id,
            person_login: person.into(),
            target_id: Uuid::new_v4(),
            target_name: target.into(),
            db_role: "app".into(),
            credential_id: Uuid::new_v4(),
            client_addr: "192.0.2.9:5000".into(),
            application_name: None,
            tls_version: None,
            started_at: t0(),
            recording: RecordingPolicy::Strict,
            groups: Vec::new(),
        })
        .await?;
    let last = statements.last().map_or(0, |s| s.seq + 1);
    let saved = store
        .save_index(&IndexUpdate {
            session_id,
            person_login: person,
            target_name: target,
            from_seq: 0,
            from_resume_seq: 0,
            to_seq: last,
            resume_seq: last,
            complete: false,
            statements: &statements,
            chain: ChainProgress::default(),
        })
        .await?;
    ensure!(saved, "the index of a new session was saved");
    Ok(statements
        .into_iter()
        .map(|statement| Written {
            session_id,
            person,
            target,
            statement,
        })
        .collect())
}

/// Whether `written` passes `query`, read the plain way: its words (runs of letters and
/// digits) or its SQL's characters, case folded, and each filter.
fn passes(written: &Written, query: &StatementQuery) -> bool {
    let s = &written.statement;
    let text = match (&query.text, query.text_match) {
        (None, _) => true,
        (Some(text), TextMatch::Substring) => s.sql.to_lowercase().contains(&text.to_lowercase()),
        (Some(text), _) => {
            let have: Vec<String> = format!("{} {}", s.sql, s.params)
                .split(|c: char| !c.is_alphanumeric())
                .map(str::to_lowercase)
                .collect();
            text.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .all(|w| have.contains(&w.to_lowercase()))
        }
    };
    text && query.session_id.is_none_or(|id| id == written.session_id)
        && query.person.as_deref().is_none_or(|p| p == written.person)
        && query.target.as_deref().is_none_or(|t| t == written.target)
        && query.class.is_none_or(|c| c == s.class)
        && query.has_error.is_none_or(|e| e == s.error.is_some())
        && query.risky.is_none_or(|r| r != s.risks.is_empty())
        && query.after.is_none_or(|a| s.at >= a)
        && query.before.is_none_or(|b| s.at < b)
}

/// The (session, seq) of every statement passing `query`, newest first.
fn expected(all: &[Written], query: &StatementQuery) -> Vec<(Uuid, i64)> {
    let mut found: Vec<&Written> = all.iter().filter(|w| passes(w, query)).collect();
    found.sort_by_key(|w| std::cmp::Reverse((w.statement.at, w.session_id, w.statement.seq)));
    found
        .iter()
        .map(|w| (w.session_id, w.statement.seq))
        .collect()
}

/// Up to `pages` pages of 50 of `query`, each after the last.
async fn pages(
    store: &Arc<dyn Store>,
    query: &StatementQuery,
    pages: usize,
) -> Result<Vec<(Uuid, i64)>> {
    let mut page = StatementPage {
        before: None,
        limit: 50,
    };
    let mut found = Vec::new();
    for _ in 0..pages {
        let hits = store.search_statements(query, &page).await?;
        found.extend(hits.iter().map(|h| (h.session_id, h.seq)));
        match hits.last() {
            Some(last) if hits.len() == 50 => page.before = Some(StatementHit::cursor(last)),
            _ => break,
        }
    }
    Ok(found)
}

/// The searches to check, each a text with filters (and the number of hits they must have at
/// least, so that a workload changed by mistake cannot make them all empty).
fn searches(alice_session: Uuid) -> Vec<(StatementQuery, usize)> {
    let day = |d: i64| Some(t0() + Duration::days(d));
    vec![
        // Rarely together: a common word and a class it seldom meets.
        (
            StatementQuery {
                class: Some(StatementClass::Write),
                ..StatementQuery::words("select")
            },
            4,
        ),
        (
            StatementQuery {
                class: Some(StatementClass::Write),
                ..StatementQuery::substring("ELECT * FR")
            },
            4,
        ),
        // Never together.
        (
            StatementQuery {
                class: Some(StatementClass::Transaction),
                ..StatementQuery::words("orders")
            },
            0,
        ),
        (
            StatementQuery {
                class: Some(StatementClass::Transaction),
                ..StatementQuery::substring("rders")
            },
            0,
        ),
        (
            StatementQuery {
                person: Some("bob".into()),
                ..StatementQuery::words("orders")
            },
            0,
        ),
        (
            StatementQuery {
                target: Some("crm".into()),
                ..StatementQuery::substring("orders")
            },
            0,
        ),
        (
            StatementQuery {
                session_id: Some(alice_session),
                ..StatementQuery::words("customers")
            },
            0,
        ),
        // A person whose login begins with another's is not the other.
        (
            StatementQuery {
                person: Some("ali".into()),
                ..StatementQuery::words("orders")
            },
            0,
        ),
        // Flags, and flags together.
        (
            StatementQuery {
                risky: Some(true),
                ..StatementQuery::words("orders")
            },
            10,
        ),
        (
            StatementQuery {
                has_error: Some(true),
                risky: Some(false),
                ..StatementQuery::words("orders")
            },
            400,
        ),
        (
            StatementQuery {
                has_error: Some(true),
                risky: Some(true),
                ..StatementQuery::substring("FROM ord")
            },
            1,
        ),
        // Often together, and a day range inside the data.
        (
            StatementQuery {
                person: Some("bob".into()),
                ..StatementQuery::words("customers example")
            },
            300,
        ),
        (
            StatementQuery {
                target: Some("crm".into()),
                ..StatementQuery::substring("ustomer")
            },
            300,
        ),
        (
            StatementQuery {
                after: day(1),
                before: day(2),
                ..StatementQuery::words("select")
            },
            800,
        ),
        (
            StatementQuery {
                after: day(2),
                before: day(3),
                class: Some(StatementClass::Read),
                ..StatementQuery::words("customers")
            },
            50,
        ),
        (
            StatementQuery {
                after: day(1),
                before: day(20),
                class: Some(StatementClass::Write),
                ..StatementQuery::words("archive")
            },
            2,
        ),
        (
            StatementQuery {
                after: day(-1),
                before: day(90),
                ..StatementQuery::words("commit")
            },
            600,
        ),
    ]
}

async fn filters_a_text_rarely_meets_find_what_reading_everything_finds(
    store: Arc<dyn Store>,
) -> Result<()> {
    let mut all = indexed(&store, "alice", "shop", shop_statements(7_000)).await?;
    let alice_session = all[0].session_id;
    all.extend(indexed(&store, "bob", "crm", crm_statements(350)).await?);
    for (query, at_least) in searches(alice_session) {
        let want = expected(&all, &query);
        ensure!(
            want.len() >= at_least,
            "the workload has {} statements for {query:?}, expected {at_least} or more",
            want.len()
        );
        let got = pages(&store, &query, 4).await?;
        let shown = want.len().min(200);
        ensure!(
            got == want[..shown],
            "{query:?}: found {} statements, {} expected (first found {:?}, expected {:?})",
            got.len(),
            shown,
            got.first(),
            want.first()
        );
    }
    Ok(())
}

/// Statements indexed before migration 0012 are found through the facets it added: SQLite
/// rebuilds both full-text indexes from the table, PostgreSQL recomputes the tsvector.
async fn indexed_before_the_facets_found_with_them(
    open_before: impl AsyncFnOnce() -> Result<Arc<dyn Store>>,
    open_after: impl AsyncFnOnce() -> Result<Arc<dyn Store>>,
) -> Result<()> {
    let before = open_before().await?;
    let all = indexed(&before, "alice", "shop", shop_statements(600)).await?;
    drop(before);
    let store = open_after().await?;
    for query in [
        StatementQuery {
            class: Some(StatementClass::Write),
            ..StatementQuery::words("orders")
        },
        StatementQuery {
            person: Some("alice".into()),
            ..StatementQuery::substring("status FROM")
        },
        StatementQuery {
            risky: Some(true),
            ..StatementQuery::words("delete")
        },
    ] {
        let want = expected(&all, &query);
        ensure!(
            !want.is_empty(),
            "{query:?} finds statements in the workload"
        );
        let got = pages(&store, &query, 10).await?;
        ensure!(
            got == want,
            "{query:?}: found {} of {}",
            got.len(),
            want.len()
        );
    }
    // New statements are indexed with their facets as before.
    let more = indexed(&store, "bob", "crm", crm_statements(20)).await?;
    let query = StatementQuery {
        target: Some("crm".into()),
        ..StatementQuery::words("customers")
    };
    ensure!(pages(&store, &query, 1).await? == expected(&more, &query));
    Ok(())
}

#[tokio::test]
async fn sqlite_statements_indexed_before_the_facets_are_found_with_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    indexed_before_the_facets_found_with_them(
        async || Ok(Arc::new(SqliteStore::open_at_migration(&url, 11).await?) as Arc<dyn Store>),
        async || Ok(Arc::new(SqliteStore::open(&url).await?) as Arc<dyn Store>),
    )
    .await
}

#[tokio::test]
async fn postgres_statements_indexed_before_the_facets_are_found_with_them() -> Result<()> {
    let cluster = PgCluster::start()?;
    cluster.create_database("facets")?;
    let url = cluster.superuser_url("facets");
    indexed_before_the_facets_found_with_them(
        async || Ok(Arc::new(PgStore::open_at_migration(&url, 11).await?) as Arc<dyn Store>),
        async || Ok(Arc::new(PgStore::open(&url).await?) as Arc<dyn Store>),
    )
    .await
}
