//! The statement index, proved against both engines: recordings stored as the recorder stores
//! them (events chained by `record::chain`), indexed by `record::indexer`, searched through the
//! store.
//!
//! Each check is an `async fn(Arc<dyn Store>)`; `on_both_engines!` turns it into
//! `sqlite::NAME` (a file in a temporary directory) and `postgres::NAME` (a database in a
//! throwaway cluster).

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, Duration, TimeZone, Utc};
use gateway::record::chain::Chain;
use gateway::record::chain::{RECORDING_KEY_FILE, RecordingKey, Verifier};
use gateway::record::event::{
    Capped, Column, Event, EventKind, Param, ServerMessage, StatementClass,
};
use gateway::record::indexer::index_round;
use gateway::record::integrity::{Integrity, assess};
use gateway::record::statements::IndexedStatement;
use gateway::store::search::{ChainProgress, MARK_END, MARK_START};
use gateway::store::{
    EndReason, IndexUpdate, NewSession, RecordingPolicy, SessionEnd, StatementHit, StatementPage,
    StatementQuery, Store, StoredEvent, postgres::PgStore,
};
use harness::PgCluster;
use harness::on_both_engines;
use harness::pg::TRUST_USER;
use harness::store_engine::{RawSql, StoreEngine};
use uuid::Uuid;

on_both_engines!(
    every_session_has_counts_from_the_start,
    a_recorded_session_is_indexed_with_its_counts,
    an_ended_session_without_events_is_complete_with_nothing,
    statements_are_found_by_their_words_with_marked_snippets,
    words_of_parameters_are_found_too,
    statements_are_found_by_a_substring_of_their_sql,
    short_substrings_are_searched_as_words,
    statements_are_filtered_by_person_target_class_flags_time_and_session,
    pages_follow_each_other_without_gaps_or_repeats,
    hostile_search_text_never_fails,
    of_two_concurrent_saves_of_the_same_range_one_wins,
    a_live_session_indexed_in_rounds_gives_the_rows_of_one_pass,
    an_indexed_session_needs_no_more_work_until_new_events_come,
    common_words_and_substrings_are_found_newest_first_like_rare_ones,
    a_long_recording_is_indexed_over_several_rounds_without_loss,
    the_indexer_checks_the_chain_as_it_goes_resuming_from_the_saved_hash,
    an_edited_event_breaks_the_chain_at_its_seq_for_good,
    event_hashes_of_many_events_come_from_their_blocks_and_events_not_stored_have_none;
    with_raw_sql: resetting_a_sessions_stats_checks_its_chain_again,
);

// --- Recordings ---

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()
}

fn text(text: &str) -> Capped {
    Capped {
        text: text.into(),
        len: text.len() as u64,
        hex: false,
        redacted: false,
    }
}

fn query(sql: &str, class: StatementClass, risks: &[&str]) -> EventKind {
    EventKind::Query {
        sql: text(sql),
        class,
        risks: risks.iter().map(|r| r.to_string()).collect(),
    }
}

fn complete(tag: &str, rows: Option<u64>) -> EventKind {
    EventKind::CommandComplete {
        tag: tag.into(),
        rows,
        duration_micros: 250,
    }
}

fn ready() -> EventKind {
    EventKind::ReadyForQuery { status: 'I' }
}

const FIND_CUSTOMER: &str = "SELECT * FROM customers WHERE email = $1";

fn bind_email(email: &str) -> EventKind {
    EventKind::Bind {
        portal: String::new(),
        statement: "find_customer".into(),
        params: vec![Param {
            type_oid: 25,
            value: Some(text(email)),
        }],
    }
}

fn execute_find_customer() -> EventKind {
    EventKind::Execute {
        portal: String::new(),
        statement: "find_customer".into(),
        sql: Some(text(FIND_CUSTOMER)),
        max_rows: 0,
    }
}

/// A psql-and-application session on `shop`: six statements (seqs 1, 8, 12, 15, 19, 23), one
/// of them failing (15), one risky (12).
fn shop_session(session_id: Uuid, person: &str) -> Vec<EventKind> {
    vec![
        EventKind::SessionStart {
            session_id,
            credential_id: Uuid::nil(),
            person: person.into(),
            groups: Vec::new(),
            target: "shop".into(),
            db_role: "app_rw".into(),
            client_addr: "192.0.2.7:5000".into(),
            application_name: Some("psql".into()),
            tls_version: Some("TLSv1.3".into()),
            format_version: 1,
        },
        query(
            "SELECT id, name FROM items WHERE name = 'widget'",
            StatementClass::Read,
            &[],
        ),
        EventKind::RowDescription {
            columns: vec![Column {
                name: "id".into(),
                type_oid: 23,
            }],
        },
        EventKind::Rows {
            rows: vec![vec![Some(text("1"))]],
            omitted: 0,
        },
        complete("SELECT 1", Some(1)),
        ready(),
        EventKind::Parse {
            statement: "find_customer".into(),
            sql: text(FIND_CUSTOMER),
            param_types: vec![25],
            class: StatementClass::Read,
            risks: Vec::new(),
        },
        bind_email("alice@example.com"),
        execute_find_customer(),
        EventKind::Sync,
        complete("SELECT 0", Some(0)),
        ready(),
        query(
            "DELETE FROM audit_trail",
            StatementClass::Write,
            &["delete_without_where"],
        ),
        complete("DELETE 42", Some(42)),
        ready(),
        query("SELECT * FROM nope", StatementClass::Read, &[]),
        EventKind::Error(ServerMessage {
            severity: "ERROR".into(),
            code: "42P01".into(),
            message: "relation \"nope\" does not exist".into(),
            detail: None,
            hint: None,
            position: Some(15),
        }),
        ready(),
        bind_email("bob@example.com"),
        execute_find_customer(),
        EventKind::Sync,
        complete("SELECT 1", Some(1)),
        ready(),
        query(
            "UPDATE customers SET customer_id = 7 WHERE id = 1",
            StatementClass::Write,
            &[],
        ),
        complete("UPDATE 1", Some(1)),
        ready(),
        EventKind::SessionEnd {
            reason: "client_quit".into(),
            detail: None,
            bytes_client_to_server: 1000,
            bytes_server_to_client: 2000,
        },
    ]
}

const SHOP_STATEMENTS: [i64; 6] = [1, 8, 12, 15, 19, 23];

/// The events as the recorder stores them: chained, one second apart from `start`.
fn stored(session_id: Uuid, start: DateTime<Utc>, kinds: Vec<EventKind>) -> Vec<StoredEvent> {
    let mut chain = Chain::new(session_id);
    kinds
        .into_iter()
        .enumerate()
        .map(|(seq, kind)| {
            let event = Event {
                seq: seq as u64,
                at: start + Duration::seconds(seq as i64),
                kind,
            };
            chain.append(&event).expect("events chain")
        })
        .collect()
}

async fn new_session(
    store: &Arc<dyn Store>,
    person: &str,
    target: &str,
    started_at: DateTime<Utc>,
) -> Result<Uuid> {
    let id = Uuid::new_v4();
    store
        .insert_session(&NewSession {
            id,
            person_login: person.into(),
            target_id: Uuid::new_v4(),
            target_name: target.into(),
            db_role: "app_rw".into(),
            credential_id: Uuid::new_v4(),
            client_addr: "192.0.2.7:5000".into(),
            application_name: Some("psql".into()),
            tls_version: Some("TLSv1.3".into()),
            started_at,
            recording: RecordingPolicy::Strict,
            groups: Vec::new(),
        })
        .await?;
    Ok(id)
}

async fn end_session(store: &Arc<dyn Store>, id: Uuid, at: DateTime<Utc>) -> Result<()> {
    store
        .end_session(
            id,
            &SessionEnd {
                ended_at: at,
                reason: EndReason::ClientQuit,
                detail: None,
                bytes_client_to_server: 1000,
                bytes_server_to_client: 2000,
            },
        )
        .await?;
    Ok(())
}

/// A shop session of `person` starting at `start`, recorded, ended and indexed.
async fn indexed_shop_session(
    store: &Arc<dyn Store>,
    person: &str,
    start: DateTime<Utc>,
) -> Result<Uuid> {
    let id = new_session(store, person, "shop", start).await?;
    let events = stored(id, start, shop_session(id, person));
    store.append_events(&events).await?;
    end_session(store, id, start + Duration::minutes(1)).await?;
    index_everything(store).await?;
    Ok(id)
}

/// Index rounds until one finds nothing to do.
async fn index_everything(store: &Arc<dyn Store>) -> Result<()> {
    for _ in 0..100 {
        if index_round(store.as_ref()).await?.sessions == 0 {
            return Ok(());
        }
    }
    anyhow::bail!("the indexer never caught up")
}

const PAGE: StatementPage = StatementPage {
    before: None,
    limit: 100,
};

async fn search(store: &Arc<dyn Store>, query: &StatementQuery) -> Result<Vec<StatementHit>> {
    Ok(store.search_statements(query, &PAGE).await?)
}

fn seqs(hits: &[StatementHit]) -> Vec<i64> {
    hits.iter().map(|h| h.seq).collect()
}

/// Newest first is highest seq first within one session.
fn newest_first(seqs: &[i64]) -> Vec<i64> {
    let mut seqs = seqs.to_vec();
    seqs.reverse();
    seqs
}

fn marked(snippet: &str) -> String {
    snippet.replace(MARK_START, "[").replace(MARK_END, "]")
}

// --- Checks ---

async fn every_session_has_counts_from_the_start(store: Arc<dyn Store>) -> Result<()> {
    let id = new_session(&store, "alice", "shop", t0()).await?;
    let stats = store.session_stats(&[id, Uuid::new_v4()]).await?;
    ensure!(stats.len() == 1, "only the known session: {stats:?}");
    let s = stats[&id].clone();
    ensure!((s.statements, s.errors, s.risky, s.indexed_seq) == (0, 0, 0, 0));
    ensure!(!s.complete);
    ensure!(store.session_stats(&[]).await?.is_empty());
    Ok(())
}

async fn a_recorded_session_is_indexed_with_its_counts(store: Arc<dyn Store>) -> Result<()> {
    let id = indexed_shop_session(&store, "alice", t0()).await?;
    let s = store.session_stats(&[id]).await?[&id].clone();
    ensure!(
        (s.statements, s.errors, s.risky) == (6, 1, 1),
        "counts: {s:?}"
    );
    ensure!(s.complete && s.indexed_seq == 27, "position: {s:?}");
    let hits = search(&store, &StatementQuery::default()).await?;
    ensure!(seqs(&hits) == newest_first(&SHOP_STATEMENTS), "{hits:#?}");
    let failed = hits.iter().find(|h| h.seq == 15).unwrap();
    ensure!(failed.has_error && failed.sqlstate.as_deref() == Some("42P01"));
    let risky = hits.iter().find(|h| h.seq == 12).unwrap();
    ensure!(risky.risky && risky.risks == ["delete_without_where"]);
    ensure!(risky.class == StatementClass::Write);
    let prepared = hits.iter().find(|h| h.seq == 8).unwrap();
    ensure!(prepared.snippet == FIND_CUSTOMER && prepared.class == StatementClass::Read);
    ensure!(prepared.at == t0() + Duration::seconds(8));
    ensure!(prepared.person_login == "alice" && prepared.target_name == "shop");
    ensure!(prepared.session_id == id);
    Ok(())
}

async fn an_ended_session_without_events_is_complete_with_nothing(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = new_session(&store, "alice", "shop", t0()).await?;
    index_everything(&store).await?;
    ensure!(
        !store.session_stats(&[id]).await?[&id].complete,
        "a live session waits for its events"
    );
    end_session(&store, id, t0() + Duration::minutes(1)).await?;
    index_everything(&store).await?;
    let s = store.session_stats(&[id]).await?[&id].clone();
    ensure!(s.complete && s.statements == 0, "{s:?}");
    ensure!(store.sessions_to_index(100).await?.is_empty());
    Ok(())
}

async fn statements_are_found_by_their_words_with_marked_snippets(
    store: Arc<dyn Store>,
) -> Result<()> {
    indexed_shop_session(&store, "alice", t0()).await?;
    let hits = search(&store, &StatementQuery::words("CUSTOMERS")).await?;
    ensure!(seqs(&hits) == [23, 19, 8], "{hits:#?}");
    ensure!(
        marked(&hits[0].snippet) == "UPDATE [customers] SET customer_id = 7 WHERE id = 1",
        "{}",
        hits[0].snippet
    );
    // Every word must appear.
    let hits = search(&store, &StatementQuery::words("update customers")).await?;
    ensure!(seqs(&hits) == [23]);
    ensure!(
        search(&store, &StatementQuery::words("customers nope"))
            .await?
            .is_empty()
    );
    // "_" and "." separate words on both engines.
    let hits = search(&store, &StatementQuery::words("customer")).await?;
    ensure!(seqs(&hits) == [23], "customer_id holds the word customer");
    ensure!(
        search(&store, &StatementQuery::words("widget"))
            .await?
            .len()
            == 1
    );
    Ok(())
}

async fn words_of_parameters_are_found_too(store: Arc<dyn Store>) -> Result<()> {
    indexed_shop_session(&store, "alice", t0()).await?;
    let hits = search(&store, &StatementQuery::words("bob")).await?;
    ensure!(seqs(&hits) == [19], "{hits:#?}");
    ensure!(
        marked(&hits[0].snippet) == "$1 = '[bob]@example.com'",
        "{}",
        hits[0].snippet
    );
    let hits = search(&store, &StatementQuery::words("example.com")).await?;
    ensure!(seqs(&hits) == [19, 8]);
    Ok(())
}

async fn statements_are_found_by_a_substring_of_their_sql(store: Arc<dyn Store>) -> Result<()> {
    indexed_shop_session(&store, "alice", t0()).await?;
    let hits = search(&store, &StatementQuery::substring("TOMER_I")).await?;
    ensure!(seqs(&hits) == [23], "{hits:#?}");
    ensure!(
        marked(&hits[0].snippet) == "UPDATE customers SET cus[tomer_i]d = 7 WHERE id = 1",
        "{}",
        hits[0].snippet
    );
    let hits = search(&store, &StatementQuery::substring("'widget'")).await?;
    ensure!(seqs(&hits) == [1]);
    let hits = search(&store, &StatementQuery::substring("stomers WHERE em")).await?;
    ensure!(seqs(&hits) == [19, 8]);
    // LIKE's wildcards are text here.
    ensure!(
        search(&store, &StatementQuery::substring("SELECT%nope"))
            .await?
            .is_empty()
    );
    ensure!(
        search(&store, &StatementQuery::substring("customer_"))
            .await?
            .len()
            == 1
    );
    ensure!(
        search(&store, &StatementQuery::substring("customerXid"))
            .await?
            .is_empty()
    );
    Ok(())
}

async fn short_substrings_are_searched_as_words(store: Arc<dyn Store>) -> Result<()> {
    indexed_shop_session(&store, "alice", t0()).await?;
    let hits = search(&store, &StatementQuery::substring("id")).await?;
    ensure!(seqs(&hits) == [23, 1], "{hits:#?}");
    Ok(())
}

async fn statements_are_filtered_by_person_target_class_flags_time_and_session(
    store: Arc<dyn Store>,
) -> Result<()> {
    let alice = indexed_shop_session(&store, "alice", t0()).await?;
    let bob = indexed_shop_session(&store, "bob", t0() + Duration::hours(1)).await?;
    let other = new_session(&store, "carol", "billing", t0() + Duration::hours(2)).await?;
    let start = t0() + Duration::hours(2);
    store
        .append_events(&stored(
            other,
            start,
            vec![
                query(
                    "GRANT SELECT ON invoices TO PUBLIC",
                    StatementClass::Privilege,
                    &["grant_to_public"],
                ),
                complete("GRANT", None),
                ready(),
            ],
        ))
        .await?;
    index_everything(&store).await?;

    let by = |query: StatementQuery| {
        let store = store.clone();
        async move { search(&store, &query).await }
    };
    let hits = by(StatementQuery {
        person: Some("bob".into()),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(hits.len() == 6 && hits.iter().all(|h| h.session_id == bob));
    let hits = by(StatementQuery {
        target: Some("billing".into()),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(hits.len() == 1 && hits[0].class == StatementClass::Privilege);
    let hits = by(StatementQuery {
        class: Some(StatementClass::Write),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(
        hits.len() == 4,
        "two writes in each shop session: {hits:#?}"
    );
    let hits = by(StatementQuery {
        has_error: Some(true),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(
        hits.iter()
            .map(|h| (h.session_id, h.seq))
            .collect::<Vec<_>>()
            == [(bob, 15), (alice, 15)]
    );
    let hits = by(StatementQuery {
        has_error: Some(false),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(hits.len() == 11);
    let hits = by(StatementQuery {
        risky: Some(true),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(seqs(&hits) == [0, 12, 12], "{hits:#?}");
    ensure!(hits[0].risks == ["grant_to_public"]);
    let hits = by(StatementQuery {
        after: Some(t0() + Duration::hours(1)),
        before: Some(t0() + Duration::hours(1) + Duration::seconds(12)),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(
        seqs(&hits) == [8, 1],
        "after is inclusive, before exclusive: {hits:#?}"
    );
    let hits = by(StatementQuery {
        session_id: Some(alice),
        text: Some("customers".into()),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(seqs(&hits) == [23, 19, 8] && hits.iter().all(|h| h.session_id == alice));
    let hits = by(StatementQuery {
        person: Some("alice".into()),
        class: Some(StatementClass::Read),
        has_error: Some(false),
        text: Some("customers".into()),
        ..StatementQuery::default()
    })
    .await?;
    ensure!(seqs(&hits) == [19, 8]);
    Ok(())
}

async fn pages_follow_each_other_without_gaps_or_repeats(store: Arc<dyn Store>) -> Result<()> {
    // Two sessions with statements at the same instants: the keyset's session id and seq break
    // the ties.
    let a = indexed_shop_session(&store, "alice", t0()).await?;
    let b = indexed_shop_session(&store, "bob", t0()).await?;
    for query in [
        StatementQuery::default(),
        StatementQuery::words("customers"),
        StatementQuery::substring("FROM"),
    ] {
        let all = search(&store, &query).await?;
        let mut paged = Vec::new();
        let mut page = StatementPage {
            before: None,
            limit: 4,
        };
        loop {
            let hits = store.search_statements(&query, &page).await?;
            ensure!(hits.len() <= 4);
            let Some(last) = hits.last() else { break };
            page.before = Some(last.cursor());
            paged.extend(hits);
        }
        ensure!(paged == all, "pages of {query:?} differ from one big page");
        let mut keys: Vec<_> = all.iter().map(StatementHit::cursor).collect();
        let sorted = {
            let mut k = keys.clone();
            k.sort();
            k.reverse();
            k
        };
        ensure!(keys == sorted, "newest first");
        keys.dedup();
        ensure!(keys.len() == all.len());
    }
    let all = search(&store, &StatementQuery::default()).await?;
    ensure!(all.len() == 12);
    ensure!(all.iter().filter(|h| h.session_id == a).count() == 6);
    ensure!(all.iter().filter(|h| h.session_id == b).count() == 6);
    let none = StatementPage {
        before: None,
        limit: 0,
    };
    ensure!(
        store
            .search_statements(&StatementQuery::default(), &none)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn hostile_search_text_never_fails(store: Arc<dyn Store>) -> Result<()> {
    indexed_shop_session(&store, "alice", t0()).await?;
    let long = "x".repeat(10 * 1024);
    let long_words = "customers NEAR ".repeat(1000);
    let hostile = [
        "\"",
        "'",
        "*",
        "\"unterminated",
        "NEAR(customers items, 2)",
        "customers OR items",
        "NOT customers",
        "(((",
        ")",
        "sql:customers",
        "^customers",
        "{sql params}: x",
        "customers*",
        "\\",
        "%_%",
        "-- ; DROP TABLE recorded_statements; --",
        "\0",
        "cust\0omers",
        "🦀 ünïcödé",
        "\u{2}customers\u{3}",
        &long,
        &long_words,
    ];
    for text in hostile {
        for query in [StatementQuery::words(text), StatementQuery::substring(text)] {
            let hits = store
                .search_statements(&query, &PAGE)
                .await
                .with_context(|| format!("searching {:?}", &text[..text.len().min(40)]))?;
            for hit in &hits {
                ensure!(
                    hit.snippet.matches(MARK_START).count()
                        == hit.snippet.matches(MARK_END).count()
                );
            }
        }
    }
    // Quoted as text, operators are words like any other.
    ensure!(
        search(&store, &StatementQuery::words("NOT customers"))
            .await?
            .is_empty()
    );
    ensure!(seqs(&search(&store, &StatementQuery::words("customers*")).await?) == [23, 19, 8]);
    ensure!(seqs(&search(&store, &StatementQuery::substring("'widget'")).await?) == [1]);
    // A NUL is left out, not an error.
    ensure!(seqs(&search(&store, &StatementQuery::substring("wid\0get")).await?) == [1]);
    Ok(())
}

fn statement(seq: i64, sql: &str) -> IndexedStatement {
    IndexedStatement {
        seq,
        at: t0() + Duration::seconds(seq),
        sql: sql.into(),
        params: String::new(),
        class: StatementClass::Read,
        risks: Vec::new(),
        error: Some(("57014".into(), "canceling statement".into())),
        tag: None,
        rows: None,
        duration_micros: 10,
    }
}

async fn of_two_concurrent_saves_of_the_same_range_one_wins(store: Arc<dyn Store>) -> Result<()> {
    let id = new_session(&store, "alice", "shop", t0()).await?;
    let statements = [statement(1, "SELECT 1"), statement(4, "SELECT 4")];
    let update = IndexUpdate {
        session_id: id,
        person_login: "alice",
        target_name: "shop",
        from_seq: 0,
        from_resume_seq: 0,
        to_seq: 6,
        resume_seq: 6,
        complete: false,
        statements: &statements,
        chain: ChainProgress::default(),
    };
    let (first, second) = tokio::join!(store.save_index(&update), store.save_index(&update));
    ensure!(
        first? != second?,
        "exactly one of two saves from the same position is stored"
    );
    let s = store.session_stats(&[id]).await?[&id].clone();
    ensure!(
        (s.statements, s.errors, s.indexed_seq) == (2, 2, 6),
        "{s:?}"
    );
    ensure!(search(&store, &StatementQuery::default()).await?.len() == 2);
    // A save from a position that has moved on stores nothing either.
    ensure!(!store.save_index(&update).await?);
    let next = IndexUpdate {
        from_seq: 6,
        from_resume_seq: 6,
        to_seq: 9,
        resume_seq: 7,
        statements: &[],
        ..update
    };
    ensure!(store.save_index(&next).await?);
    let s = store.session_stats(&[id]).await?[&id].clone();
    ensure!((s.statements, s.indexed_seq) == (2, 9));
    Ok(())
}

/// What a search shows of a session's statements, its id aside.
async fn statements_of(store: &Arc<dyn Store>, id: Uuid) -> Result<Vec<String>> {
    let query = StatementQuery {
        session_id: Some(id),
        ..StatementQuery::default()
    };
    let mut shown: Vec<String> = search(store, &query)
        .await?
        .iter()
        .map(|h| {
            format!(
                "{} {} {:?} {:?} {} {:?} {}",
                h.seq, h.at, h.class, h.risks, h.has_error, h.sqlstate, h.snippet
            )
        })
        .collect();
    // The parameters, found by their words.
    for person in ["alice", "bob"] {
        let by_param = StatementQuery {
            session_id: Some(id),
            ..StatementQuery::words(person)
        };
        for hit in search(store, &by_param).await? {
            shown.push(format!("{person}: {} {}", hit.seq, hit.snippet));
        }
    }
    Ok(shown)
}

async fn a_live_session_indexed_in_rounds_gives_the_rows_of_one_pass(
    store: Arc<dyn Store>,
) -> Result<()> {
    let whole = indexed_shop_session(&store, "alice", t0()).await?;
    let expected = statements_of(&store, whole).await?;
    let expected_stats = store.session_stats(&[whole]).await?[&whole].clone();
    // Cut inside a simple query, inside an extended one (before and after its Execute), after
    // an error before its ReadyForQuery, and with nothing stored yet.
    for cuts in [
        vec![3],
        vec![7, 9],
        vec![16],
        vec![0, 20, 24],
        vec![1, 2, 8, 13, 19, 26],
    ] {
        let id = new_session(&store, "alice", "shop", t0()).await?;
        let events = stored(id, t0(), shop_session(id, "alice"));
        let mut from = 0;
        for cut in cuts.iter().copied().chain([events.len()]) {
            if cut == events.len() {
                store.append_events(&events[from..]).await?;
                end_session(&store, id, t0() + Duration::minutes(1)).await?;
            } else {
                store.append_events(&events[from..cut]).await?;
            }
            index_everything(&store).await?;
            from = cut;
        }
        let got = statements_of(&store, id).await?;
        ensure!(
            got == expected,
            "cut at {cuts:?}:\n{got:#?}\nexpected\n{expected:#?}"
        );
        let stats = store.session_stats(&[id]).await?[&id].clone();
        // The same counts and the same chain checked, in rounds as in one pass (the hashes
        // differ: a chain starts from its session's id).
        let shown = |s: &gateway::store::SessionStats| {
            let checked = (
                s.chain_verified_seq,
                s.chain_broken_seq,
                s.chain_hash.is_some(),
            );
            (
                s.statements,
                s.errors,
                s.risky,
                s.indexed_seq,
                s.complete,
                checked,
            )
        };
        ensure!(
            shown(&stats) == shown(&expected_stats),
            "cut at {cuts:?}: {stats:?}"
        );
    }
    Ok(())
}

async fn an_indexed_session_needs_no_more_work_until_new_events_come(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = new_session(&store, "alice", "shop", t0()).await?;
    let events = stored(id, t0(), shop_session(id, "alice"));
    store.append_events(&events[..6]).await?;
    let due = store.sessions_to_index(10).await?;
    ensure!(due.len() == 1 && due[0].session_id == id && !due[0].ended);
    ensure!((due[0].indexed_seq, due[0].resume_seq) == (0, 0));
    index_everything(&store).await?;
    ensure!(store.sessions_to_index(10).await?.is_empty(), "nothing new");
    let s = store.session_stats(&[id]).await?[&id].clone();
    ensure!(
        (s.statements, s.indexed_seq, s.complete) == (1, 6, false),
        "{s:?}"
    );
    // A statement still running holds the resume point back.
    store.append_events(&events[6..9]).await?;
    let due = store.sessions_to_index(10).await?;
    ensure!(due.len() == 1 && due[0].indexed_seq == 6);
    index_everything(&store).await?;
    let due_after_end = {
        end_session(&store, id, t0() + Duration::minutes(1)).await?;
        store.sessions_to_index(10).await?
    };
    ensure!(due_after_end.len() == 1 && due_after_end[0].ended);
    ensure!(
        (due_after_end[0].indexed_seq, due_after_end[0].resume_seq) == (9, 6),
        "{due_after_end:?}"
    );
    index_everything(&store).await?;
    let s = store.session_stats(&[id]).await?[&id].clone();
    ensure!(
        (s.statements, s.complete) == (2, true),
        "the cut-off Execute is kept: {s:?}"
    );
    ensure!(store.sessions_to_index(10).await?.is_empty());
    Ok(())
}

/// pg_trgm is created by the migration even when the store's role is not a superuser, only the
/// owner of its database (PostgreSQL 13 and later trust the extension).
#[tokio::test]
async fn postgres_store_owned_by_a_plain_role_gets_its_trigram_index() -> Result<()> {
    let cluster = PgCluster::start()?;
    cluster.psql(
        "postgres",
        &format!("CREATE DATABASE owned OWNER {TRUST_USER}"),
    )?;
    let store: Arc<dyn Store> = Arc::new(
        PgStore::open(&cluster.url(TRUST_USER, "owned"))
            .await
            .with_context(|| format!("server log:\n{}", cluster.log()))?,
    );
    let superuser = cluster.psql(
        "owned",
        &format!("SELECT rolsuper FROM pg_roles WHERE rolname = '{TRUST_USER}'"),
    )?;
    ensure!(superuser.trim() == "f", "the role is not a superuser");
    indexed_shop_session(&store, "alice", t0()).await?;
    ensure!(seqs(&search(&store, &StatementQuery::substring("tomer_i")).await?) == [23]);
    Ok(())
}

/// More matches than SQLite's engine sorts (it then checks statements newest first): the same
/// pages as the filters alone give, since every statement matches.
async fn common_words_and_substrings_are_found_newest_first_like_rare_ones(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = new_session(&store, "alice", "shop", t0()).await?;
    let statements: Vec<IndexedStatement> = (0..6_000)
        .map(|i| {
            let rare = if i % 1_000 == 7 { " rareword" } else { "" };
            IndexedStatement {
                error: (i % 7 == 0).then(|| ("22012".into(), "division by zero".into())),
                at: t0() + Duration::milliseconds(i),
                ..statement(i, &format!("SELECT common_column, n{i}{rare} FROM t"))
            }
        })
        .collect();
    let saved = store
        .save_index(&IndexUpdate {
            session_id: id,
            person_login: "alice",
            target_name: "shop",
            from_seq: 0,
            from_resume_seq: 0,
            to_seq: 6_000,
            resume_seq: 6_000,
            complete: false,
            statements: &statements,
            chain: ChainProgress::default(),
        })
        .await?;
    ensure!(saved);
    let filters_only = StatementQuery {
        has_error: Some(true),
        ..StatementQuery::default()
    };
    for (query, expected) in [
        (StatementQuery::words("common"), StatementQuery::default()),
        (
            StatementQuery::substring("mmon_col"),
            StatementQuery::default(),
        ),
        (
            StatementQuery {
                has_error: Some(true),
                ..StatementQuery::words("column")
            },
            filters_only.clone(),
        ),
        (
            StatementQuery {
                has_error: Some(true),
                ..StatementQuery::substring("ON_COL")
            },
            filters_only,
        ),
    ] {
        let mut page = StatementPage {
            before: None,
            limit: 50,
        };
        for _ in 0..3 {
            let got = store.search_statements(&query, &page).await?;
            let want = store.search_statements(&expected, &page).await?;
            ensure!(seqs(&got) == seqs(&want) && got.len() == 50, "{query:?}");
            page.before = got.last().map(StatementHit::cursor);
        }
    }
    let rare = search(&store, &StatementQuery::words("rareword")).await?;
    ensure!(seqs(&rare) == [5_007, 4_007, 3_007, 2_007, 1_007, 7]);
    ensure!(marked(&rare[0].snippet).contains("n5007 [rareword]"));
    let rare = search(&store, &StatementQuery::substring("n4007 rare")).await?;
    ensure!(seqs(&rare) == [4_007]);
    Ok(())
}

/// The gateway's own indexer (started by `pgbastion serve` with the console) indexes what its
/// recorder captured from real clients: prepared statements with their parameters, a pipeline,
/// a multi-statement query that fails, a cursor read with a fetch size, COPY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_gateway_indexes_what_real_clients_ran() -> Result<()> {
    use futures::StreamExt as _;

    let lab = harness::Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let mut client = lab.client("shop", &issued.token).await?;
    let by_id = client
        .prepare("select name from items where id = $1")
        .await?;
    for id in [7i32, 8] {
        client.query_one(&by_id, &[&id]).await?;
    }
    // Polled together, tokio-postgres sends both before reading either answer.
    let (a, b) = futures::join!(
        client.query_one(&by_id, &[&11i32]),
        client.query_one(&by_id, &[&12i32])
    );
    a?;
    b?;
    let failed = client
        .batch_execute(
            "create temp table scratch (x int); insert into scratch values (1); select 1/0",
        )
        .await;
    ensure!(failed.is_err(), "division by zero");
    {
        let tx = client.transaction().await?;
        let portal = tx.bind("select id from items order by id", &[]).await?;
        let mut fetched = 0;
        loop {
            let rows = tx.query_portal(&portal, 40).await?;
            fetched += rows.len();
            if rows.len() < 40 {
                break;
            }
        }
        ensure!(fetched == 100);
        tx.commit().await?;
    }
    let copy = client
        .copy_out("COPY (select id from items where id <= 3) TO STDOUT")
        .await?;
    futures::pin_mut!(copy);
    while let Some(chunk) = copy.next().await {
        chunk?;
    }
    drop(client);

    let store = lab.store().await?;
    let session = lab.ended_sessions(1).await?[0].id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let stats = loop {
        if let Some(stats) = store.session_stats(&[session]).await?.get(&session)
            && stats.complete
        {
            break stats.clone();
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the gateway did not index the session within 20 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let query = StatementQuery {
        session_id: Some(session),
        ..StatementQuery::default()
    };
    let mut hits = search(&store, &query).await?;
    hits.reverse();
    let shown: Vec<String> = hits
        .iter()
        .map(|h| {
            format!(
                "{} | {:?} | {:?} | {:?} | {:?}",
                h.snippet, h.class, h.tag, h.rows, h.sqlstate
            )
        })
        .collect();
    let by_id = "select name from items where id = $1";
    let expected = [
        format!("{by_id} | Read | Some(\"SELECT 1\") | Some(1) | None"),
        format!("{by_id} | Read | Some(\"SELECT 1\") | Some(1) | None"),
        format!("{by_id} | Read | Some(\"SELECT 1\") | Some(1) | None"),
        format!("{by_id} | Read | Some(\"SELECT 1\") | Some(1) | None"),
        "create temp table scratch (x int); insert into scratch values (1); select 1/0 | Ddl \
         | Some(\"INSERT 0 1\") | Some(1) | Some(\"22012\")"
            .to_string(),
        "START TRANSACTION | Transaction | Some(\"START TRANSACTION\") | None | None".to_string(),
        // Three fetches of 40, 40 and 20 rows: the tag is the last one's, the rows all of them.
        "select id from items order by id | Read | Some(\"SELECT 20\") | Some(100) | None"
            .to_string(),
        "COMMIT | Transaction | Some(\"COMMIT\") | None | None".to_string(),
        "COPY (select id from items where id <= 3) TO STDOUT | Read | Some(\"COPY 3\") \
         | Some(3) | None"
            .to_string(),
    ];
    ensure!(shown == expected, "indexed:\n{shown:#?}");
    ensure!(
        (stats.statements, stats.errors, stats.risky) == (9, 1, 0),
        "{stats:?}"
    );
    let params: Vec<String> = search(
        &store,
        &StatementQuery {
            session_id: Some(session),
            ..StatementQuery::words("12")
        },
    )
    .await?
    .iter()
    .map(|h| marked(&h.snippet))
    .collect();
    ensure!(params == ["$1 = '[12]'"], "{params:?}");
    Ok(())
}

/// More events than a round reads of one session: the rest comes in the next rounds.
async fn a_long_recording_is_indexed_over_several_rounds_without_loss(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = new_session(&store, "alice", "shop", t0()).await?;
    let mut kinds = Vec::new();
    for i in 0..2_000 {
        kinds.push(query(
            &format!("SELECT {i} FROM items"),
            StatementClass::Read,
            &[],
        ));
        kinds.push(complete("SELECT 1", Some(1)));
        kinds.push(ready());
    }
    store.append_events(&stored(id, t0(), kinds)).await?;
    end_session(&store, id, t0() + Duration::hours(2)).await?;
    let mut rounds = 0;
    while index_round(store.as_ref()).await?.sessions > 0 {
        rounds += 1;
    }
    ensure!(
        rounds >= 3,
        "6,000 events take several rounds, not {rounds}"
    );
    let s = store.session_stats(&[id]).await?[&id].clone();
    ensure!(
        (s.statements, s.indexed_seq, s.complete) == (2_000, 6_000, true),
        "{s:?}"
    );
    let newest = search(&store, &StatementQuery::words("1999")).await?;
    ensure!(seqs(&newest) == [5_997]);
    Ok(())
}

// --- Event hashes, for search exports ---

async fn event_hashes_of_many_events_come_from_their_blocks_and_events_not_stored_have_none(
    store: Arc<dyn Store>,
) -> Result<()> {
    let (a, b) = (
        new_session(&store, "alice", "shop", t0()).await?,
        new_session(&store, "bob", "shop", t0()).await?,
    );
    let kinds = (0..1_200)
        .map(|i| query(&format!("SELECT {i}"), StatementClass::Read, &[]))
        .collect();
    let events_a = stored(a, t0(), kinds);
    // Blocks 0..=4 and 5..=9 (a batch each), then 12..=1011 and 1012..=1199 (a batch cut at
    // the block's cap of 1,000 events); 10 and 11 are never stored.
    store.append_events(&events_a[..5]).await?;
    store.append_events(&events_a[5..10]).await?;
    store.append_events(&events_a[12..]).await?;
    let events_b = stored(b, t0(), shop_session(b, "bob"));
    store.append_events(&events_b).await?;

    let stranger = Uuid::new_v4();
    let keys = [
        (a, 0),
        (a, 4),
        (a, 5),
        (a, 9),
        (a, 10),
        (a, 11),
        (a, 12),
        (a, 1_011),
        (a, 1_012),
        (a, 1_199),
        (a, 1_200),
        (a, -1),
        (b, 3),
        (b, 3),
        (b, 23),
        (stranger, 0),
    ];
    let found = store.event_hashes(&keys).await?;
    let hash_of = |events: &[StoredEvent], seq: i64| events[seq as usize].hash.clone();
    let expected = std::collections::HashMap::from([
        ((a, 0), hash_of(&events_a, 0)),
        ((a, 4), hash_of(&events_a, 4)),
        ((a, 5), hash_of(&events_a, 5)),
        ((a, 9), hash_of(&events_a, 9)),
        ((a, 12), hash_of(&events_a, 12)),
        ((a, 1_011), hash_of(&events_a, 1_011)),
        ((a, 1_012), hash_of(&events_a, 1_012)),
        ((a, 1_199), hash_of(&events_a, 1_199)),
        ((b, 3), hash_of(&events_b, 3)),
        ((b, 23), hash_of(&events_b, 23)),
    ]);
    ensure!(found == expected, "{found:?}");
    // What the store gives is what it stored: the same hashes as the events read back.
    let read_back = store.session_events(a, 1_000, 20).await?;
    for event in read_back {
        let hashes = store.event_hashes(&[(a, event.seq)]).await?;
        ensure!(hashes[&(a, event.seq)] == event.hash, "seq {}", event.seq);
    }
    ensure!(store.event_hashes(&[]).await?.is_empty());
    Ok(())
}

// --- The hash chain, checked by the indexer ---

/// An ended shop session whose events are stored as `edit` leaves them (the hashes stay those
/// of the recorded events), appended in rounds cut at `cuts` with the indexer run after each.
async fn shop_session_in_rounds(
    store: &Arc<dyn Store>,
    cuts: &[usize],
    edit: impl FnOnce(&mut Vec<StoredEvent>),
) -> Result<(Uuid, Vec<StoredEvent>)> {
    let id = new_session(store, "alice", "shop", t0()).await?;
    let mut events = stored(id, t0(), shop_session(id, "alice"));
    edit(&mut events);
    let mut from = 0;
    for cut in cuts.iter().copied().chain([events.len()]) {
        store.append_events(&events[from..cut]).await?;
        index_everything(store).await?;
        from = cut;
    }
    end_session(store, id, t0() + Duration::minutes(1)).await?;
    index_everything(store).await?;
    Ok((id, events))
}

/// Changes the text of event `seq` (still JSON, still the same event to a reader) and keeps its
/// stored hash: what an edit in the store looks like.
fn edit_event(events: &mut [StoredEvent], seq: usize) {
    events[seq].body = events[seq].body.replacen('{', "{ ", 1);
}

async fn the_indexer_checks_the_chain_as_it_goes_resuming_from_the_saved_hash(
    store: Arc<dyn Store>,
) -> Result<()> {
    let (id, events) = shop_session_in_rounds(&store, &[3, 9, 16], |_| {}).await?;
    let s = store.session_stats(&[id]).await?[&id].clone();
    let last = events.last().context("events")?;
    ensure!(
        s.chain_verified_seq == Some(last.seq) && s.chain_hash.as_ref() == Some(&last.hash),
        "every event links up: {s:?}"
    );
    ensure!(s.chain_broken_seq.is_none() && s.complete, "{s:?}");
    // The seal then counts without reading the events again; a seal over fewer events does not.
    let dir = tempfile::tempdir()?;
    let key = RecordingKey::load_or_create(&dir.path().join(RECORDING_KEY_FILE))?;
    let mut chain = Chain::new(id);
    for stored in &events {
        chain.append(&serde_json::from_str::<Event>(&stored.body)?)?;
    }
    let session = store.session(id).await?.context("session")?;
    let seal = chain.seal(&key);
    let verdict = assess(&session, Some(&s), Some(&seal), &key.verifier());
    ensure!(
        verdict
            == Integrity::Verified {
                events: events.len() as u64,
                key_id: key.key_id().to_string()
            },
        "{verdict:?}"
    );
    let short = key.seal(
        id,
        events.len() as u64 - 1,
        &seal.final_hash.clone().try_into().unwrap(),
    );
    let verdict = assess(&session, Some(&s), Some(&short), &key.verifier());
    ensure!(
        matches!(verdict, Integrity::Broken { seq: Some(26), .. }),
        "a seal that leaves the last event (26) out: {verdict:?}"
    );
    Ok(())
}

async fn an_edited_event_breaks_the_chain_at_its_seq_for_good(store: Arc<dyn Store>) -> Result<()> {
    // The edit comes in a later round than the first: found only if the check resumed with the
    // right hash (a wrong one would break it at the round's first event, 9).
    let (id, _) = shop_session_in_rounds(&store, &[9], |events| edit_event(events, 12)).await?;
    let s = store.session_stats(&[id]).await?[&id].clone();
    ensure!(
        s.chain_broken_seq == Some(12) && s.chain_verified_seq == Some(11),
        "{s:?}"
    );
    let reason = s.chain_broken_reason.clone().unwrap_or_default();
    ensure!(
        reason.contains("event at seq 12") && reason.contains("(edited)"),
        "{reason}"
    );
    // The statements are indexed all the same (the index is derived data, the panel and
    // `pgbastion verify` say what is wrong).
    ensure!(s.statements == 6 && s.complete, "{s:?}");
    let session = store.session(id).await?.context("session")?;
    let verdict = assess(&session, Some(&s), None, &Verifier::default());
    ensure!(verdict.label() == "broken at seq 12", "{verdict:?}");
    Ok(())
}

async fn resetting_a_sessions_stats_checks_its_chain_again(engine: &StoreEngine) -> Result<()> {
    let store = engine.store.clone();
    let (id, _) = shop_session_in_rounds(&store, &[], |events| edit_event(events, 19)).await?;
    let before = store.session_stats(&[id]).await?[&id].clone();
    ensure!(before.chain_broken_seq == Some(19), "{before:?}");
    let raw = engine.raw();
    let no = match raw {
        RawSql::Sqlite(_) => "0",
        RawSql::Postgres(_) => "false",
    };
    raw.run(&[
        &format!(
            "DELETE FROM recorded_statements WHERE session_id = {}",
            raw.uuid(id)
        ),
        &format!(
            "UPDATE session_stats SET indexed_seq = 0, resume_seq = 0, statements = 0, \
             errors = 0, risky = 0, complete = {no}, chain_verified_seq = NULL, \
             chain_hash = NULL, chain_broken_seq = NULL, chain_broken_reason = NULL \
             WHERE session_id = {}",
            raw.uuid(id)
        ),
    ])?;
    ensure!(
        store.session_stats(&[id]).await?[&id]
            .chain_broken_seq
            .is_none(),
        "reset"
    );
    index_everything(&store).await?;
    let after = store.session_stats(&[id]).await?[&id].clone();
    ensure!(
        after == before,
        "indexed again:\n{after:?}\nbefore:\n{before:?}"
    );
    Ok(())
}
