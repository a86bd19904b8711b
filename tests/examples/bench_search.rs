//! Statement search latency on a generated index: `scripts/bench-search` (not run in CI).
//!
//! Fills a store (SQLite in a temporary directory, PostgreSQL in a throwaway cluster) with
//! `--rows` statements through `SearchStore::save_index`, 1,000 per session, as the indexer
//! stores them: a mix of SQL from an order-management application (reads with joins, writes
//! with parameters, transactions, some DDL, rare risky statements and tables, about 2% errors),
//! then times one page (50 hits) of searches of several kinds, 10 of each, and prints p50, p95
//! and the worst per kind.
//!
//!   cargo run --release -p pgbastion-tests --example bench_search -- --rows 100000
//!   ... -- --engine sqlite|postgres|both (default both)

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Duration, TimeZone, Utc};
use gateway::record::event::StatementClass;
use gateway::record::statements::IndexedStatement;
use gateway::store::{
    IndexUpdate, NewSession, RecordingPolicy, StatementPage, StatementQuery, Store,
    postgres::PgStore, sqlite::SqliteStore,
};
use harness::PgCluster;
use uuid::Uuid;

const PER_SESSION: usize = 1_000;
const PAGE: StatementPage = StatementPage {
    before: None,
    limit: 50,
};

const TABLES: [&str; 12] = [
    "orders",
    "order_items",
    "customers",
    "invoices",
    "payments",
    "products",
    "shipments",
    "inventory",
    "refunds",
    "addresses",
    "coupons",
    "carts",
];
/// Each in about 1 statement in 5,000.
const RARE_TABLES: [&str; 5] = [
    "payroll_adjustments",
    "gdpr_erasure_requests",
    "fraud_cases",
    "legal_holds",
    "vendor_contracts",
];
const COLUMNS: [&str; 10] = [
    "status",
    "amount",
    "created_at",
    "email",
    "name",
    "price",
    "quantity",
    "updated_at",
    "sku",
    "region",
];
const STATUSES: [&str; 6] = [
    "pending",
    "shipped",
    "paid",
    "cancelled",
    "refunded",
    "on_hold",
];
const SQLSTATES: [(&str, &str); 4] = [
    ("23505", "duplicate key value violates unique constraint"),
    ("42P01", "relation does not exist"),
    ("57014", "canceling statement due to statement timeout"),
    (
        "40001",
        "could not serialize access due to concurrent update",
    ),
];

/// xorshift64*: deterministic, so every run searches the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, per_10k: u64) -> bool {
        self.next() % 10_000 < per_10k
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// One statement's SQL, parameters, class and risks.
fn statement_text(rng: &mut Rng, n: u64) -> (String, String, StatementClass, Vec<String>) {
    let t = if rng.chance(2) {
        rng.pick(&RARE_TABLES)
    } else {
        rng.pick(&TABLES)
    };
    let c = rng.pick(&COLUMNS);
    let d = rng.pick(&COLUMNS);
    let code = format!("ORD-{:06X}", rng.next() % 0xFF_FFFF);
    let email = format!("user{}@example.com", rng.below(100_000));
    let none = Vec::new;
    match rng.below(100) {
        0..=34 => (
            format!(
                "SELECT o.id, o.{c}, c.email FROM {t} o JOIN customers c ON c.id = o.customer_id \
                 WHERE o.{d} > $1 AND c.region = $2 ORDER BY o.id DESC LIMIT 50"
            ),
            format!(
                "$1 = '2026-0{}-01', $2 = 'eu-west-{}'",
                1 + rng.below(9),
                rng.below(4)
            ),
            StatementClass::Read,
            none(),
        ),
        35..=54 => (
            format!("SELECT * FROM {t} WHERE id = {n} AND reference = '{code}'"),
            String::new(),
            StatementClass::Read,
            none(),
        ),
        55..=69 => (
            format!("UPDATE {t} SET {c} = $1, updated_at = now() WHERE id = $2"),
            format!("$1 = '{}', $2 = '{n}'", rng.pick(&STATUSES)),
            StatementClass::Write,
            none(),
        ),
        70..=81 => (
            format!("INSERT INTO {t} ({c}, {d}, email) VALUES ($1, $2, $3)"),
            format!("$1 = '{}', $2 = '{code}', $3 = '{email}'", rng.below(1000)),
            StatementClass::Write,
            none(),
        ),
        82..=85 => (
            format!("DELETE FROM {t} WHERE {c} = $1 AND created_at < now() - interval '90 days'"),
            format!("$1 = '{}'", rng.pick(&STATUSES)),
            StatementClass::Write,
            none(),
        ),
        86..=92 => (
            rng.pick(&[
                "BEGIN",
                "COMMIT",
                "ROLLBACK",
                "BEGIN ISOLATION LEVEL SERIALIZABLE",
            ])
            .to_string(),
            String::new(),
            StatementClass::Transaction,
            none(),
        ),
        93..=96 => (
            format!("SET statement_timeout = {}", 1000 * (1 + rng.below(60))),
            String::new(),
            StatementClass::Utility,
            none(),
        ),
        97 => (
            format!("ALTER TABLE {t} ADD COLUMN note_{n} text"),
            String::new(),
            StatementClass::Ddl,
            none(),
        ),
        98 => (
            format!("GRANT SELECT ON {t} TO reporting_{}", rng.below(5)),
            String::new(),
            StatementClass::Privilege,
            none(),
        ),
        _ => match rng.below(3) {
            0 => (
                format!("DELETE FROM {t}"),
                String::new(),
                StatementClass::Write,
                vec!["delete_without_where".into()],
            ),
            1 => (
                format!("TRUNCATE {t}"),
                String::new(),
                StatementClass::Write,
                vec!["truncate".into()],
            ),
            _ => (
                format!("DROP TABLE tmp_{t}_{n}"),
                String::new(),
                StatementClass::Ddl,
                vec!["drop".into()],
            ),
        },
    }
}

fn session_statements(rng: &mut Rng, start: DateTime<Utc>, first: u64) -> Vec<IndexedStatement> {
    let mut at = start;
    (0..PER_SESSION)
        .map(|i| {
            at += Duration::milliseconds(200 + rng.below(5_000) as i64);
            let (sql, params, class, risks) = statement_text(rng, first + i as u64);
            let error = rng
                .chance(200)
                .then(|| SQLSTATES[rng.below(SQLSTATES.len())])
                .map(|(code, message)| (code.to_string(), message.to_string()));
            IndexedStatement {
                seq: 1 + 5 * i as i64,
                at,
                sql,
                params,
                class,
                risks,
                error,
                tag: Some("SELECT 1".into()),
                rows: Some(1),
                duration_micros: 300 + rng.below(5_000) as u64,
            }
        })
        .collect()
}

fn person(i: usize) -> String {
    format!("user{:02}", i % 50)
}

fn target(i: usize) -> String {
    format!("db{}", i % 10)
}

/// Stores `rows` statements; returns the sessions' ids.
async fn fill(store: &Arc<dyn Store>, rows: usize) -> Result<Vec<Uuid>> {
    let sessions = rows.div_ceil(PER_SESSION);
    let span = Duration::days(30);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ids = Vec::with_capacity(sessions);
    let started = Instant::now();
    for i in 0..sessions {
        let id = Uuid::new_v4();
        let start = t0() + span * i as i32 / sessions as i32;
        store
            .insert_session(&NewSession {
                id,
                person_login: person(i),
                target_id: Uuid::new_v4(),
                target_name: target(i),
                db_role: "app".into(),
                credential_id: Uuid::new_v4(),
                client_addr: "192.0.2.7:5000".into(),
                application_name: None,
                tls_version: None,
                started_at: start,
                recording: RecordingPolicy::Strict,
                groups: Vec::new(),
            })
            .await?;
        let statements = session_statements(&mut rng, start, (i * PER_SESSION) as u64);
        let end = statements.last().map_or(0, |s| s.seq + 3);
        let saved = store
            .save_index(&IndexUpdate {
                session_id: id,
                person_login: &person(i),
                target_name: &target(i),
                from_seq: 0,
                from_resume_seq: 0,
                to_seq: end,
                resume_seq: end,
                complete: false,
                statements: &statements,
                chain: Default::default(),
            })
            .await?;
        if !saved {
            bail!("session {id} was not saved");
        }
        ids.push(id);
        if (i + 1) % 100 == 0 {
            eprintln!(
                "  {} statements stored in {:.0?}",
                (i + 1) * PER_SESSION,
                started.elapsed()
            );
        }
    }
    println!(
        "  stored {} statements in {:.1?} ({:.0} per second)",
        sessions * PER_SESSION,
        started.elapsed(),
        (sessions * PER_SESSION) as f64 / started.elapsed().as_secs_f64()
    );
    Ok(ids)
}

/// The searches, by kind.
fn searches(sessions: &[Uuid]) -> Vec<(&'static str, Vec<StatementQuery>)> {
    let day = |d: i64| {
        (
            Some(t0() + Duration::days(d)),
            Some(t0() + Duration::days(d + 1)),
        )
    };
    let person = |p: usize| Some(person(p));
    let target = |t: usize| Some(target(t));
    let mut rare = RARE_TABLES.map(StatementQuery::words).to_vec();
    // Order codes: in about one statement each.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5 {
        let (sql, ..) = (0..)
            .map(|n| statement_text(&mut rng, n))
            .find(|(sql, ..)| sql.contains("reference"))
            .expect("a statement with an order code");
        let code = sql.rsplit('\'').nth(1).unwrap().to_string();
        rare.push(StatementQuery::words(&code));
    }
    let common = [
        "select",
        "where",
        "orders",
        "customers",
        "status",
        "pending",
        "example",
        "id",
        "limit",
        "from",
    ]
    .map(StatementQuery::words)
    .to_vec();
    let substrings = [
        "ustomer_i",
        "rder_ite",
        "roll_adj",
        "ORD-7F",
        "tems o JOIN",
        "updated_at = now()",
        "c.email",
        "gdpr_er",
        "ayment",
        "interval '90",
    ]
    .map(StatementQuery::substring)
    .to_vec();
    let filters = vec![
        StatementQuery {
            person: person(7),
            ..StatementQuery::default()
        },
        StatementQuery {
            target: target(3),
            ..StatementQuery::default()
        },
        StatementQuery {
            has_error: Some(true),
            ..StatementQuery::default()
        },
        StatementQuery {
            risky: Some(true),
            ..StatementQuery::default()
        },
        StatementQuery {
            class: Some(StatementClass::Ddl),
            ..StatementQuery::default()
        },
        StatementQuery {
            class: Some(StatementClass::Privilege),
            ..StatementQuery::default()
        },
        StatementQuery {
            after: day(12).0,
            before: day(12).1,
            ..StatementQuery::default()
        },
        StatementQuery {
            person: person(11),
            target: target(1),
            ..StatementQuery::default()
        },
        StatementQuery {
            has_error: Some(true),
            target: target(5),
            ..StatementQuery::default()
        },
        StatementQuery {
            session_id: Some(sessions[sessions.len() / 2]),
            ..StatementQuery::default()
        },
    ];
    let word_and_filter = vec![
        StatementQuery {
            person: person(7),
            ..StatementQuery::words("orders")
        },
        StatementQuery {
            has_error: Some(true),
            ..StatementQuery::words("customers")
        },
        StatementQuery {
            risky: Some(true),
            ..StatementQuery::words("delete")
        },
        StatementQuery {
            target: target(2),
            ..StatementQuery::words("select")
        },
        StatementQuery {
            person: person(3),
            ..StatementQuery::words("payroll_adjustments")
        },
        StatementQuery {
            class: Some(StatementClass::Write),
            ..StatementQuery::words("update")
        },
        StatementQuery {
            after: day(3).0,
            before: day(3).1,
            ..StatementQuery::words("status")
        },
        StatementQuery {
            has_error: Some(true),
            target: target(4),
            ..StatementQuery::words("invoices")
        },
        StatementQuery {
            person: person(20),
            ..StatementQuery::substring("c.email")
        },
        StatementQuery {
            class: Some(StatementClass::Read),
            ..StatementQuery::words("where")
        },
    ];
    // Common words with a filter they never meet: the worst case of any plan that reads newest
    // first, and of any that sorts the matches.
    let never_together = vec![
        StatementQuery {
            class: Some(StatementClass::Write),
            ..StatementQuery::words("select")
        },
        StatementQuery {
            class: Some(StatementClass::Transaction),
            ..StatementQuery::words("orders")
        },
        StatementQuery {
            class: Some(StatementClass::Utility),
            ..StatementQuery::substring("ustomer")
        },
    ];
    vec![
        ("rare word", rare),
        ("common word", common),
        ("substring", substrings),
        ("filters only", filters),
        ("word + filter", word_and_filter),
        ("never together", never_together),
    ]
}

fn percentile(sorted: &[StdDuration], p: f64) -> StdDuration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn measure(store: &Arc<dyn Store>, sessions: &[Uuid]) -> Result<()> {
    // BENCH_VERBOSE=1 prints every search with its time.
    let verbose = std::env::var_os("BENCH_VERBOSE").is_some();
    let mut all = Vec::new();
    println!(
        "  {:<16} {:>9} {:>9} {:>9}  hits",
        "kind", "p50 ms", "p95 ms", "max ms"
    );
    for (kind, queries) in searches(sessions) {
        let mut times = Vec::new();
        let mut hits = Vec::new();
        for query in &queries {
            let started = Instant::now();
            let found = store.search_statements(query, &PAGE).await?;
            times.push(started.elapsed());
            hits.push(found.len());
            if verbose {
                println!(
                    "    {:>8.1} ms  {} hits  {query:?}",
                    started.elapsed().as_secs_f64() * 1e3,
                    found.len()
                );
            }
        }
        if kind != "never together" {
            all.extend(times.iter().copied());
        }
        times.sort();
        println!(
            "  {:<16} {:>9.1} {:>9.1} {:>9.1}  {:?}",
            kind,
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3,
            hits
        );
    }
    all.sort();
    println!(
        "  {:<16} {:>9.1} {:>9.1} {:>9.1}  ({} searches; 'never together' aside)",
        "all",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.95).as_secs_f64() * 1e3,
        all.last().unwrap().as_secs_f64() * 1e3,
        all.len()
    );
    Ok(())
}

/// Searches once to warm the caches (a console in use has them warm), then measures.
async fn warm_then_measure(store: Arc<dyn Store>, sessions: Vec<Uuid>) -> Result<()> {
    for (_, queries) in searches(&sessions) {
        for query in &queries {
            store.search_statements(query, &PAGE).await?;
        }
    }
    measure(&store, &sessions).await
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut rows = 1_000_000;
    let mut engine = "both".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rows" => rows = args.next().context("--rows N")?.parse()?,
            "--engine" => engine = args.next().context("--engine sqlite|postgres|both")?,
            other => bail!("unknown argument {other}: use --rows N, --engine sqlite|postgres|both"),
        }
    }
    if matches!(engine.as_str(), "sqlite" | "both") {
        println!("SQLite, {rows} statements");
        let dir = harness::scratch::temp_dir("bench-search")?;
        // BENCH_KEEP_SQLITE=PATH keeps the store there, to look at it afterwards.
        let file = match std::env::var_os("BENCH_KEEP_SQLITE") {
            Some(path) => std::path::PathBuf::from(path),
            None => dir.path().join("store.db"),
        };
        let url = format!("sqlite://{}", file.display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await?);
        let sessions = fill(&store, rows).await?;
        warm_then_measure(store, sessions).await?;
        println!("  store size {} MB", dir_size(dir.path()) / 1_000_000);
    }
    if matches!(engine.as_str(), "postgres" | "both") {
        println!("PostgreSQL, {rows} statements (shared_buffers 256MB, after ANALYZE)");
        let mut cluster = PgCluster::start()?;
        cluster.alter_system("shared_buffers", "256MB")?;
        cluster.restart()?;
        cluster.create_database("store")?;
        let store: Arc<dyn Store> = Arc::new(PgStore::open(&cluster.superuser_url("store")).await?);
        let sessions = fill(&store, rows).await?;
        // Autovacuum (off in test clusters) keeps the planner's statistics in production.
        cluster.psql("store", "ANALYZE")?;
        warm_then_measure(store, sessions).await?;
        let size = cluster.psql("store", "SELECT pg_database_size('store') / 1000000")?;
        println!("  store size {} MB", size.trim());
    }
    Ok(())
}
