//! Retention, proved against both engines: purging a target's old ended sessions removes them
//! with everything that belongs to them and keeps recent and live ones; a retention round purges
//! the targets that have a retention and writes one audit entry for each that lost sessions.
//! (The job's timing, a round at start and stopping when told, is a unit test of
//! `gateway::store::retention`.)

use std::sync::Arc;

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use gateway::record::chain::Chain;
use gateway::record::event::{Event, EventKind, StatementClass};
use gateway::record::indexer::index_round;
use gateway::store::retention::{Purge, RETENTION_ACTION, RETENTION_ACTOR, run_round};
use gateway::store::{
    EndReason, NewSession, NewTarget, RecordingPolicy, RecordingSeal, SessionEnd, StatementPage,
    StatementQuery, Store, StoredEvent, TextMatch, UpstreamTls,
};
use harness::on_both_engines;
use harness::store_engine::StoreEngine;
use uuid::Uuid;

on_both_engines!(
    a_round_purges_only_targets_with_retention_and_audits_each_purge_once;
    with_raw_sql:
    purging_removes_old_ended_sessions_with_all_their_rows_and_keeps_recent_and_live_ones,
);

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn new_target(name: &str) -> NewTarget {
    NewTarget {
        name: name.into(),
        host: "db.internal".into(),
        port: 5432,
        database: "app".into(),
        tls_mode: UpstreamTls::Require,
        ca_pem: None,
        upstream_user: "app_ro".into(),
        upstream_secret_sealed: None,
        recording: RecordingPolicy::Strict,
        record_max_rows: None,
        record_max_result_bytes: None,
    }
}

/// A session on the target, started at `started_at`, in groups `dev` and `ops`.
async fn session_on(store: &dyn Store, target_id: Uuid, started_at: DateTime<Utc>) -> Result<Uuid> {
    let id = Uuid::new_v4();
    store
        .insert_session(&NewSession {
            id,
            person_login: "alice".into(),
            target_id,
            target_name: "shop".into(),
            db_role: "app_ro".into(),
            credential_id: Uuid::new_v4(),
            client_addr: "192.0.2.7:5000".into(),
            application_name: Some("psql".into()),
            tls_version: Some("TLSv1.3".into()),
            started_at,
            recording: RecordingPolicy::Strict,
            groups: vec!["dev".into(), "ops".into()],
        })
        .await?;
    Ok(id)
}

async fn end(store: &dyn Store, id: Uuid, ended_at: DateTime<Utc>) -> Result<()> {
    let end = SessionEnd {
        ended_at,
        reason: EndReason::ClientQuit,
        detail: None,
        bytes_client_to_server: 10,
        bytes_server_to_client: 20,
    };
    store.end_session(id, &end).await?;
    Ok(())
}

/// Records one statement holding `word` (chained as the recorder chains events), and seals
/// the recording when the session has ended.
async fn record(store: &dyn Store, id: Uuid, start: DateTime<Utc>, word: &str) -> Result<()> {
    let kinds = vec![
        EventKind::Query {
            sql: gateway::record::event::Capped {
                text: format!("SELECT '{word}'"),
                len: 9 + word.len() as u64,
                hex: false,
                redacted: false,
            },
            class: StatementClass::Read,
            risks: Vec::new(),
        },
        EventKind::CommandComplete {
            tag: "SELECT 1".into(),
            rows: Some(1),
            duration_micros: 100,
        },
        EventKind::ReadyForQuery { status: 'I' },
    ];
    let mut chain = Chain::new(id);
    let events: Vec<StoredEvent> = kinds
        .into_iter()
        .enumerate()
        .map(|(seq, kind)| {
            let event = Event {
                seq: seq as u64,
                at: start + TimeDelta::seconds(seq as i64),
                kind,
            };
            chain.append(&event).expect("events chain")
        })
        .collect();
    store.append_events(&events).await?;
    let last = events.last().context("events")?;
    store
        .seal_recording(&RecordingSeal {
            session_id: id,
            event_count: events.len() as i64,
            final_hash: last.hash.clone(),
            signature: vec![7; 64],
            key_id: "test".into(),
            sealed_at: start + TimeDelta::minutes(1),
        })
        .await?;
    Ok(())
}

async fn index_everything(store: &dyn Store) -> Result<()> {
    for _ in 0..100 {
        if index_round(store).await?.sessions == 0 {
            return Ok(());
        }
    }
    bail!("the indexer never caught up")
}

/// Sessions whose statements hold `word` (as a word, and as a substring).
async fn found(store: &dyn Store, word: &str) -> Result<Vec<Uuid>> {
    let mut sessions = Vec::new();
    for text_match in [TextMatch::Words, TextMatch::Substring] {
        let query = StatementQuery {
            text: Some(word.into()),
            text_match,
            ..StatementQuery::default()
        };
        let page = StatementPage {
            before: None,
            limit: 10,
        };
        for hit in store.search_statements(&query, &page).await? {
            sessions.push(hit.session_id);
        }
    }
    sessions.dedup();
    Ok(sessions)
}

/// Rows that belong to the session, per table (every table of migrations/ that references
/// sessions).
fn rows_of(engine: &StoreEngine, id: Uuid) -> Result<Vec<(String, i64)>> {
    let raw = engine.raw();
    let id = raw.uuid(id);
    let mut tables = vec![
        ("sessions", "id"),
        ("recording_blocks", "session_id"),
        ("recording_seals", "session_id"),
        ("recorded_statements", "session_id"),
        ("session_stats", "session_id"),
        ("session_terminations", "session_id"),
    ];
    if matches!(raw, harness::store_engine::RawSql::Sqlite(_)) {
        tables.push(("session_groups", "session_id"));
    }
    tables
        .into_iter()
        .map(|(table, column)| {
            let out = raw.run(&[&format!(
                "SELECT count(*) FROM {table} WHERE {column} = {id}"
            )])?;
            let n = out.first().context("a count")?.trim().parse()?;
            Ok((table.to_string(), n))
        })
        .collect()
}

async fn purging_removes_old_ended_sessions_with_all_their_rows_and_keeps_recent_and_live_ones(
    engine: &StoreEngine,
) -> Result<()> {
    let store = engine.store.as_ref();
    let shop = store.add_target(&new_target("shop")).await?;
    let other = store.add_target(&new_target("other")).await?;
    let january = at("2026-01-10T10:00:00Z");
    let cut = at("2026-02-01T00:00:00Z");

    // Old and ended, with a termination request from while it ran: purged.
    let old = session_on(store, shop.id, january).await?;
    record(store, old, january, "purgemeold").await?;
    store
        .request_termination(old, "root", "INC-7", january + TimeDelta::minutes(1))
        .await?;
    end(store, old, january + TimeDelta::minutes(2)).await?;
    // Ended after the cut, started before it: kept (age counts from the end).
    let recent = session_on(store, shop.id, january).await?;
    record(store, recent, january, "keepmerecent").await?;
    end(store, recent, at("2026-02-02T00:00:00Z")).await?;
    // Started long ago and still live: never purged.
    let live = session_on(store, shop.id, january).await?;
    record(store, live, january, "keepmelive").await?;
    // Old and ended on another target: not this purge's business.
    let elsewhere = session_on(store, other.id, january).await?;
    end(store, elsewhere, january + TimeDelta::minutes(2)).await?;
    index_everything(store).await?;

    let before = rows_of(engine, old)?;
    ensure!(
        before.iter().all(|(_, n)| *n > 0),
        "the old session should have a row in every table before: {before:?}"
    );
    ensure!(found(store, "purgemeold").await? == vec![old]);

    assert_eq!(store.purge_sessions(shop.id, cut).await?, 1);

    let after = rows_of(engine, old)?;
    ensure!(
        after.iter().all(|(_, n)| *n == 0),
        "rows of the purged session are left: {after:?}"
    );
    ensure!(
        found(store, "purgemeold").await?.is_empty(),
        "search still finds the purged session"
    );
    for (kept, word) in [(recent, "keepmerecent"), (live, "keepmelive")] {
        ensure!(store.session(kept).await?.is_some(), "{word} session gone");
        ensure!(
            !store.session_events(kept, 0, 10).await?.is_empty(),
            "{word} recording gone"
        );
        ensure!(found(store, word).await? == vec![kept], "{word} not found");
    }
    ensure!(store.session(elsewhere).await?.is_some());
    // Nothing more to do: a second purge deletes nothing.
    assert_eq!(store.purge_sessions(shop.id, cut).await?, 0);
    Ok(())
}

async fn a_round_purges_only_targets_with_retention_and_audits_each_purge_once(
    store: Arc<dyn Store>,
) -> Result<()> {
    let now = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
    let shop = store.add_target(&new_target("shop")).await?;
    let stage = store.add_target(&new_target("stage")).await?;
    let quiet = store.add_target(&new_target("quiet")).await?;
    store.set_target_retention("shop", Some(30)).await?;
    store.set_target_retention("quiet", Some(1)).await?;
    let mut sessions = Vec::new();
    for (target, ended_days_ago) in [(shop.id, 40), (shop.id, 31), (shop.id, 29), (stage.id, 400)] {
        let started = now - TimeDelta::days(ended_days_ago) - TimeDelta::hours(1);
        let id = session_on(store.as_ref(), target, started).await?;
        end(store.as_ref(), id, now - TimeDelta::days(ended_days_ago)).await?;
        sessions.push(id);
    }
    let quiet_live = session_on(store.as_ref(), quiet.id, now - TimeDelta::days(9)).await?;

    let purges = run_round(store.as_ref(), now).await?;
    let cut_off = now - TimeDelta::days(30);
    assert_eq!(
        purges,
        vec![Purge {
            target: "shop".into(),
            days: 30,
            cut_off,
            sessions: 2,
        }]
    );
    for (id, kept) in sessions.iter().zip([false, false, true, true]) {
        assert_eq!(store.session(*id).await?.is_some(), kept, "session {id}");
    }
    assert!(store.session(quiet_live).await?.is_some(), "live is kept");

    let audit = store.list_audit(None, 100).await?;
    assert_eq!(audit.len(), 1, "{audit:?}");
    let entry = &audit[0];
    assert_eq!(
        (
            entry.actor.as_str(),
            entry.action.as_str(),
            entry.object.as_deref()
        ),
        (RETENTION_ACTOR, RETENTION_ACTION, Some("shop"))
    );
    assert_eq!(entry.detail["target"], "shop");
    assert_eq!(entry.detail["days"], 30);
    assert_eq!(entry.detail["sessions"], 2);
    let ended_before = entry.detail["ended_before"].as_str().context("cut-off")?;
    assert_eq!(at(ended_before), cut_off);

    // Nothing left to purge: no purge and no audit entry.
    assert!(run_round(store.as_ref(), now).await?.is_empty());
    assert_eq!(store.list_audit(None, 100).await?.len(), 1);
    Ok(())
}
