//! The store's behaviour, written once and proved against both engines.
//!
//! Each check is an `async fn(Arc<dyn Store>)` named after the behaviour it proves;
//! `on_both_engines!` turns it into `sqlite::NAME` (a file in a temporary directory) and
//! `postgres::NAME` (a database in a throwaway cluster). Checks that also edit the database
//! behind the store's back, as someone with write access to it could, take the [`Engine`] and
//! its [`Raw`] SQL instead. Checks that concern one engine's set-up (directory creation,
//! concurrent migrations) are plain tests at the end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeZone, Utc};
use gateway::store::cancel::{CancelKey, CancelStore};
use gateway::store::{
    Credential, EndReason, GrantSubject, MAX_TERMINATION_REASON_CHARS, NewGrant, NewSession,
    NewTarget, RecordingPolicy, RecordingSeal, SessionEnd, SessionFilter, SessionPage,
    SessionStatus, SessionSummary, Store, StoreError, StoredEvent, TargetLogin, Termination,
    TerminationOutcome, UpstreamTls, follow_events, postgres::PgStore, sqlite::SqliteStore,
};
use harness::PgCluster;
use harness::on_both_engines;
use harness::store_engine::{PG_DB, RawSql, StoreEngine as Engine, sqlite_url};
use tempfile::TempDir;
use tokio::sync::mpsc::Receiver;
use uuid::Uuid;

// --- The two engines (harness::store_engine) ---

/// What to run first so that the next statements can store rows the recording blocks' CHECK
/// constraints refuse.
fn without_checks(raw: &RawSql) -> &'static str {
    match raw {
        RawSql::Sqlite(_) => "PRAGMA ignore_check_constraints = ON",
        RawSql::Postgres(_) => {
            "ALTER TABLE recording_blocks DROP CONSTRAINT recording_blocks_hashes_check"
        }
    }
}

on_both_engines!(
    engine_names_itself,
    new_person_is_created_with_its_groups,
    upserting_a_known_login_updates_it_and_keeps_id_and_creation_time,
    unknown_login_is_none,
    people_are_listed_by_login,
    new_target_is_enabled_and_round_trips,
    duplicate_target_name_is_refused,
    unknown_target_is_none,
    targets_are_listed_by_name,
    removing_a_target_removes_its_grants_but_keeps_credentials_and_sessions,
    removing_an_unknown_target_reports_false,
    new_target_is_recorded_strictly_unless_told_otherwise,
    recording_policy_and_caps_of_a_target_can_be_changed,
    recording_policy_of_an_unknown_target_is_not_found,
    negative_recording_caps_are_refused,
    target_login_round_trips_with_and_without_a_secret,
    setting_a_known_login_again_replaces_its_secret_and_time,
    target_logins_are_listed_by_role_per_target,
    removing_a_target_login_reports_whether_it_existed,
    removing_a_target_removes_its_logins,
    login_on_an_unknown_target_is_refused,
    grant_on_an_unknown_target_is_refused,
    duplicate_grant_is_refused,
    grants_are_listed_all_or_per_target,
    removing_a_grant_reports_whether_it_existed,
    person_grant_matches_only_that_login,
    group_grant_matches_members_of_that_group,
    grant_matches_only_its_target_and_role,
    credential_round_trips,
    duplicate_credential_id_is_refused,
    unknown_credential_is_none,
    revocation_keeps_the_first_time,
    revoking_an_unknown_credential_reports_false,
    credentials_are_listed_newest_first_all_or_per_person,
    revoked_since_includes_the_boundary_and_skips_older_and_unrevoked,
    session_start_and_end_round_trip_every_field,
    ending_a_session_twice_keeps_the_first_end,
    ending_an_unknown_session_is_not_found,
    duplicate_session_id_is_refused,
    sessions_are_listed_newest_first_up_to_the_limit,
    sessions_are_found_by_person_target_and_start_time,
    sessions_are_found_by_status,
    session_pages_follow_each_other_without_gaps_or_repeats,
    found_sessions_count_their_events_and_say_whether_sealed,
    recorded_events_come_back_byte_for_byte,
    session_events_come_in_seq_order_and_page_from_a_seq,
    a_batch_with_one_stored_duplicate_stores_nothing,
    a_batch_repeating_a_seq_within_itself_stores_nothing,
    a_batch_failing_in_its_last_statement_keeps_none_of_its_earlier_rows,
    one_batch_can_hold_events_of_several_sessions,
    events_in_several_blocks_come_back_in_order_from_any_seq_with_any_limit,
    a_batch_interleaving_runs_of_two_sessions_keeps_each_in_order,
    a_batch_overlapping_a_stored_block_is_a_duplicate_and_stores_nothing,
    a_batch_of_more_sessions_than_one_statement_holds_is_stored_whole_or_not_at_all,
    an_event_a_block_could_not_give_back_is_refused,
    events_of_an_unknown_session_are_refused_naming_it,
    a_recording_is_sealed_once,
    sealing_the_recording_of_an_unknown_session_is_refused,
    following_a_session_yields_every_event_and_ends_once_sealed,
    following_an_ended_unsealed_session_ends_after_quiet_polls,
    appending_20000_events_in_batches_of_500_reports_events_per_second,
    timestamps_keep_microseconds_and_drop_nanoseconds,
    extreme_values_round_trip_exactly,
    concurrent_upserts_of_one_login_make_one_person,
    a_live_session_gets_one_termination_request_that_gateways_find,
    termination_of_an_ended_or_unknown_session_changes_nothing,
    termination_requests_need_a_bounded_reason_and_a_requester,
    sessions_keep_their_groups_and_are_found_by_group,
    retention_of_a_target_is_set_and_cleared,
    cancel_requests_reach_every_watcher_in_order_from_the_moment_it_watches;
    with_raw_sql:
    corrupt_blocks_are_reported_as_corrupt_naming_the_block,
    a_session_missing_a_block_reads_on_after_the_gap,
);

// --- Builders ---

fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn new_target(name: &str) -> NewTarget {
    NewTarget {
        name: name.to_string(),
        host: "db.internal".to_string(),
        port: 5432,
        database: "app".to_string(),
        tls_mode: UpstreamTls::VerifyFull,
        ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        upstream_user: "bastion".to_string(),
        upstream_secret_sealed: Some(vec![0, 1, 2, 255]),
        recording: RecordingPolicy::Strict,
        record_max_rows: None,
        record_max_result_bytes: None,
    }
}

fn target_login(target_id: Uuid, role: &str, secret: Option<&[u8]>) -> TargetLogin {
    TargetLogin {
        target_id,
        role: role.to_string(),
        secret_sealed: secret.map(<[u8]>::to_vec),
        created_at: at("2026-01-02T03:04:05.123456Z"),
    }
}

fn roles(logins: &[TargetLogin]) -> Vec<String> {
    logins.iter().map(|l| l.role.clone()).collect()
}

fn grant(subject: GrantSubject, target_id: Uuid, db_role: &str) -> NewGrant {
    NewGrant {
        subject,
        target_id,
        db_role: db_role.to_string(),
        max_lifetime_secs: 3600,
        requires_approval: false,
    }
}

fn person(login: &str) -> GrantSubject {
    GrantSubject::Person(login.to_string())
}

fn group(name: &str) -> GrantSubject {
    GrantSubject::Group(name.to_string())
}

fn credential(login: &str, target_name: &str, issued_at: &str) -> Credential {
    let issued_at = at(issued_at);
    Credential {
        id: Uuid::new_v4(),
        person_login: login.to_string(),
        target_id: Uuid::new_v4(),
        target_name: target_name.to_string(),
        db_role: "reader".to_string(),
        issued_at,
        expires_at: issued_at + chrono::Duration::minutes(15),
        revoked_at: None,
        reason: Some("incident 42".to_string()),
    }
}

fn new_session(started_at: &str) -> NewSession {
    NewSession {
        id: Uuid::new_v4(),
        person_login: "alice".to_string(),
        target_id: Uuid::new_v4(),
        target_name: "prod".to_string(),
        db_role: "reader".to_string(),
        credential_id: Uuid::new_v4(),
        client_addr: "192.0.2.7:51234".to_string(),
        application_name: Some("psql".to_string()),
        tls_version: Some("TLSv1.3".to_string()),
        started_at: at(started_at),
        recording: RecordingPolicy::Strict,
        groups: Vec::new(),
    }
}

fn session_end(ended_at: &str, reason: EndReason) -> SessionEnd {
    SessionEnd {
        ended_at: at(ended_at),
        reason,
        detail: Some("bye".to_string()),
        bytes_client_to_server: 1_234,
        bytes_server_to_client: 56_789,
    }
}

fn ids<T>(items: &[T], id: fn(&T) -> Uuid) -> Vec<Uuid> {
    items.iter().map(id).collect()
}

/// A stand-in for a SHA-256 link: 32 bytes that differ per seq (the store checks lengths, not
/// the chain; `record::chain` has its own tests).
fn link(session_id: Uuid, seq: i64) -> Vec<u8> {
    let mut hash = session_id.as_bytes().to_vec();
    hash.extend_from_slice(&seq.to_be_bytes());
    hash.extend_from_slice(&[0xff; 8]);
    hash
}

fn event(session_id: Uuid, seq: i64, body: &str) -> StoredEvent {
    StoredEvent {
        session_id,
        seq,
        at: at("2026-03-04T05:06:07.000001Z") + chrono::Duration::microseconds(seq),
        kind: "query".to_string(),
        body: body.to_string(),
        prev_hash: link(session_id, seq - 1),
        hash: link(session_id, seq),
    }
}

/// Events `seqs` of the session, with small distinct bodies.
fn events(session_id: Uuid, seqs: impl IntoIterator<Item = i64>) -> Vec<StoredEvent> {
    seqs.into_iter()
        .map(|seq| {
            event(
                session_id,
                seq,
                &format!(r#"{{"seq":{seq},"sql":"SELECT {seq}"}}"#),
            )
        })
        .collect()
}

fn seqs(events: &[StoredEvent]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}

/// A session row for events to belong to (events reference their session).
async fn started_session(store: &Arc<dyn Store>) -> Result<Uuid> {
    let session = new_session("2026-03-04T05:06:07Z");
    store.insert_session(&session).await?;
    Ok(session.id)
}

fn seal(session_id: Uuid) -> RecordingSeal {
    RecordingSeal {
        session_id,
        event_count: 42,
        final_hash: link(session_id, 41),
        signature: (0..64).collect(),
        key_id: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string(),
        sealed_at: at("2026-03-04T06:00:00.123456Z"),
    }
}

fn is_duplicate_event(err: &StoreError, session_id: Uuid, seq: i64) -> bool {
    matches!(err, StoreError::Duplicate { what: "event", name }
        if *name == format!("{session_id} seq {seq}"))
}

// --- People ---

async fn engine_names_itself(store: Arc<dyn Store>) -> Result<()> {
    assert!(["sqlite", "postgres"].contains(&store.engine()));
    Ok(())
}

async fn new_person_is_created_with_its_groups(store: Arc<dyn Store>) -> Result<()> {
    let groups = strings(&["dba", "oncall"]);
    let created = store
        .upsert_person(
            "alice",
            Some("Alice A."),
            Some("alice@example.com"),
            &groups,
        )
        .await?;
    assert_eq!(created.login, "alice");
    assert_eq!(created.display_name.as_deref(), Some("Alice A."));
    assert_eq!(created.email.as_deref(), Some("alice@example.com"));
    assert_eq!(created.groups, groups);
    assert_eq!(store.person_by_login("alice").await?, Some(created));
    Ok(())
}

async fn upserting_a_known_login_updates_it_and_keeps_id_and_creation_time(
    store: Arc<dyn Store>,
) -> Result<()> {
    let first = store
        .upsert_person("bob", Some("Bob"), None, &strings(&["dev"]))
        .await?;
    let second = store
        .upsert_person("bob", None, Some("bob@example.com"), &[])
        .await?;
    assert_eq!(second.id, first.id);
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(second.display_name, None);
    assert_eq!(second.email.as_deref(), Some("bob@example.com"));
    assert!(second.groups.is_empty());
    assert_eq!(store.list_people().await?, vec![second]);
    Ok(())
}

async fn unknown_login_is_none(store: Arc<dyn Store>) -> Result<()> {
    assert_eq!(store.person_by_login("nobody").await?, None);
    Ok(())
}

async fn people_are_listed_by_login(store: Arc<dyn Store>) -> Result<()> {
    for login in ["carol", "alice", "bob"] {
        store.upsert_person(login, None, None, &[]).await?;
    }
    let logins: Vec<String> = store
        .list_people()
        .await?
        .into_iter()
        .map(|p| p.login)
        .collect();
    assert_eq!(logins, strings(&["alice", "bob", "carol"]));
    Ok(())
}

// --- Targets ---

async fn new_target_is_enabled_and_round_trips(store: Arc<dyn Store>) -> Result<()> {
    let wanted = new_target("prod");
    let created = store.add_target(&wanted).await?;
    assert!(created.enabled);
    assert_eq!(created.name, wanted.name);
    assert_eq!(created.host, wanted.host);
    assert_eq!(created.port, wanted.port);
    assert_eq!(created.database, wanted.database);
    assert_eq!(created.tls_mode, wanted.tls_mode);
    assert_eq!(created.ca_pem, wanted.ca_pem);
    assert_eq!(created.upstream_user, wanted.upstream_user);
    assert_eq!(
        created.upstream_secret_sealed,
        wanted.upstream_secret_sealed
    );
    assert_eq!(store.target_by_name("prod").await?, Some(created.clone()));
    assert_eq!(store.target_by_id(created.id).await?, Some(created));
    Ok(())
}

async fn duplicate_target_name_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let original = store.add_target(&new_target("prod")).await?;
    let mut again = new_target("prod");
    again.host = "elsewhere".to_string();
    let err = store.add_target(&again).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what: "target", name } if name == "prod"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "target 'prod' already exists");
    assert_eq!(store.list_targets().await?, vec![original]);
    Ok(())
}

async fn unknown_target_is_none(store: Arc<dyn Store>) -> Result<()> {
    assert_eq!(store.target_by_name("nowhere").await?, None);
    assert_eq!(store.target_by_id(Uuid::new_v4()).await?, None);
    Ok(())
}

async fn targets_are_listed_by_name(store: Arc<dyn Store>) -> Result<()> {
    for name in ["staging", "analytics", "prod"] {
        store.add_target(&new_target(name)).await?;
    }
    let names: Vec<String> = store
        .list_targets()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, strings(&["analytics", "prod", "staging"]));
    Ok(())
}

async fn removing_a_target_removes_its_grants_but_keeps_credentials_and_sessions(
    store: Arc<dyn Store>,
) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let staging = store.add_target(&new_target("staging")).await?;
    store
        .add_grant(&grant(person("alice"), prod.id, "reader"))
        .await?;
    let kept = store
        .add_grant(&grant(person("alice"), staging.id, "reader"))
        .await?;
    let mut used = credential("alice", "prod", "2026-01-02T03:04:05.000006Z");
    used.target_id = prod.id;
    store.insert_credential(&used).await?;
    let mut session = new_session("2026-01-02T03:05:00Z");
    session.target_id = prod.id;
    session.credential_id = used.id;
    store.insert_session(&session).await?;

    assert!(store.remove_target("prod").await?);

    assert_eq!(store.target_by_name("prod").await?, None);
    assert!(store.list_grants(Some(prod.id)).await?.is_empty());
    assert_eq!(store.list_grants(None).await?, vec![kept]);
    assert_eq!(store.credential(used.id).await?, Some(used));
    let history = store.session(session.id).await?.context("session kept")?;
    assert_eq!(history.target_name, "prod");
    assert_eq!(history.target_id, prod.id);
    Ok(())
}

async fn removing_an_unknown_target_reports_false(store: Arc<dyn Store>) -> Result<()> {
    assert!(!store.remove_target("nowhere").await?);
    Ok(())
}

// --- Upstream logins ---

async fn new_target_is_recorded_strictly_unless_told_otherwise(
    store: Arc<dyn Store>,
) -> Result<()> {
    let strict = store.add_target(&new_target("prod")).await?;
    assert_eq!(strict.recording, RecordingPolicy::Strict);
    assert_eq!(
        (strict.record_max_rows, strict.record_max_result_bytes),
        (None, None)
    );

    let mut wanted = new_target("reports");
    wanted.recording = RecordingPolicy::Buffered;
    wanted.record_max_rows = Some(0);
    wanted.record_max_result_bytes = Some(i64::MAX);
    let buffered = store.add_target(&wanted).await?;
    assert_eq!(buffered.recording, RecordingPolicy::Buffered);
    assert_eq!(buffered.record_max_rows, Some(0));
    assert_eq!(buffered.record_max_result_bytes, Some(i64::MAX));
    assert_eq!(store.target_by_name("reports").await?, Some(buffered));
    Ok(())
}

async fn recording_policy_and_caps_of_a_target_can_be_changed(store: Arc<dyn Store>) -> Result<()> {
    let created = store.add_target(&new_target("prod")).await?;
    let off = store
        .set_target_recording("prod", RecordingPolicy::Off, Some(5), None)
        .await?;
    assert_eq!(off.recording, RecordingPolicy::Off);
    assert_eq!(
        (off.record_max_rows, off.record_max_result_bytes),
        (Some(5), None)
    );
    assert_eq!((off.id, off.created_at), (created.id, created.created_at));
    assert_eq!(store.target_by_id(created.id).await?, Some(off));

    let back = store
        .set_target_recording("prod", RecordingPolicy::Strict, None, Some(0))
        .await?;
    assert_eq!(back.recording, RecordingPolicy::Strict);
    assert_eq!(
        (back.record_max_rows, back.record_max_result_bytes),
        (None, Some(0))
    );
    assert_eq!(store.list_targets().await?, vec![back]);
    Ok(())
}

async fn recording_policy_of_an_unknown_target_is_not_found(store: Arc<dyn Store>) -> Result<()> {
    let err = store
        .set_target_recording("nope", RecordingPolicy::Off, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "target", name } if name == "nope"),
        "{err:?}"
    );
    Ok(())
}

async fn negative_recording_caps_are_refused(store: Arc<dyn Store>) -> Result<()> {
    let created = store.add_target(&new_target("prod")).await?;
    for (rows, bytes) in [(Some(-1), None), (None, Some(-1))] {
        let err = store
            .set_target_recording("prod", RecordingPolicy::Buffered, rows, bytes)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Query(_)), "{err:?}");
    }
    let mut negative = new_target("other");
    negative.record_max_rows = Some(-5);
    assert!(store.add_target(&negative).await.is_err());
    assert_eq!(store.target_by_name("prod").await?, Some(created));
    Ok(())
}

async fn target_login_round_trips_with_and_without_a_secret(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let sealed = target_login(prod.id, "shop_rw", Some(&[0, 1, 2, 255]));
    let trusted = target_login(prod.id, "shop_ro", None);
    store.set_target_login(&sealed).await?;
    store.set_target_login(&trusted).await?;

    assert_eq!(store.target_login(prod.id, "shop_rw").await?, Some(sealed));
    assert_eq!(store.target_login(prod.id, "shop_ro").await?, Some(trusted));
    assert_eq!(store.target_login(prod.id, "shop_admin").await?, None);
    assert_eq!(store.target_login(Uuid::new_v4(), "shop_rw").await?, None);
    Ok(())
}

async fn setting_a_known_login_again_replaces_its_secret_and_time(
    store: Arc<dyn Store>,
) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    store
        .set_target_login(&target_login(prod.id, "shop_rw", Some(b"old")))
        .await?;
    let rotated = TargetLogin {
        created_at: at("2026-02-03T04:05:06.654321Z"),
        ..target_login(prod.id, "shop_rw", Some(b"new"))
    };
    store.set_target_login(&rotated).await?;
    assert_eq!(
        store.list_target_logins(prod.id).await?,
        vec![rotated.clone()]
    );

    // Replacing with no secret (trust or certificate login) clears the old one.
    let cleared = TargetLogin {
        secret_sealed: None,
        ..rotated
    };
    store.set_target_login(&cleared).await?;
    assert_eq!(store.target_login(prod.id, "shop_rw").await?, Some(cleared));
    Ok(())
}

async fn target_logins_are_listed_by_role_per_target(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let staging = store.add_target(&new_target("staging")).await?;
    for role in ["writer", "Auditor", "admin", "reader"] {
        store
            .set_target_login(&target_login(prod.id, role, Some(b"s")))
            .await?;
    }
    // The same role name on another target is another login.
    store
        .set_target_login(&target_login(staging.id, "reader", None))
        .await?;

    // Byte order on both engines, whatever the database's locale.
    assert_eq!(
        roles(&store.list_target_logins(prod.id).await?),
        strings(&["Auditor", "admin", "reader", "writer"])
    );
    assert_eq!(
        store.list_target_logins(staging.id).await?,
        vec![target_login(staging.id, "reader", None)]
    );
    assert!(store.list_target_logins(Uuid::new_v4()).await?.is_empty());
    Ok(())
}

async fn removing_a_target_login_reports_whether_it_existed(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    store
        .set_target_login(&target_login(prod.id, "reader", Some(b"s")))
        .await?;
    store
        .set_target_login(&target_login(prod.id, "writer", Some(b"s")))
        .await?;

    assert!(store.remove_target_login(prod.id, "writer").await?);
    assert!(!store.remove_target_login(prod.id, "writer").await?);
    assert!(!store.remove_target_login(prod.id, "nobody").await?);
    assert!(!store.remove_target_login(Uuid::new_v4(), "reader").await?);
    assert_eq!(
        roles(&store.list_target_logins(prod.id).await?),
        strings(&["reader"])
    );
    Ok(())
}

async fn removing_a_target_removes_its_logins(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let staging = store.add_target(&new_target("staging")).await?;
    store
        .set_target_login(&target_login(prod.id, "reader", Some(b"s")))
        .await?;
    let kept = target_login(staging.id, "reader", Some(b"s"));
    store.set_target_login(&kept).await?;

    assert!(store.remove_target("prod").await?);

    assert!(store.list_target_logins(prod.id).await?.is_empty());
    assert_eq!(store.target_login(prod.id, "reader").await?, None);
    assert_eq!(store.list_target_logins(staging.id).await?, vec![kept]);
    // A new target of the same name starts without logins.
    let again = store.add_target(&new_target("prod")).await?;
    assert!(store.list_target_logins(again.id).await?.is_empty());
    Ok(())
}

async fn login_on_an_unknown_target_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let missing = Uuid::new_v4();
    let err = store
        .set_target_login(&target_login(missing, "reader", Some(b"s")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "target", name } if *name == missing.to_string()),
        "{err:?}"
    );
    assert!(store.list_target_logins(missing).await?.is_empty());
    Ok(())
}

// --- Grants ---

async fn grant_on_an_unknown_target_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let missing = Uuid::new_v4();
    let err = store
        .add_grant(&grant(person("alice"), missing, "reader"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "target", name } if *name == missing.to_string()),
        "{err:?}"
    );
    Ok(())
}

async fn duplicate_grant_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    store
        .add_grant(&grant(group("dba"), prod.id, "admin"))
        .await?;
    let err = store
        .add_grant(&grant(group("dba"), prod.id, "admin"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what: "grant", .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "grant 'group dba as role admin on prod' already exists"
    );
    // The same name as a person, or another role, is a different grant.
    store
        .add_grant(&grant(person("dba"), prod.id, "admin"))
        .await?;
    store
        .add_grant(&grant(group("dba"), prod.id, "reader"))
        .await?;
    assert_eq!(store.list_grants(Some(prod.id)).await?.len(), 3);
    Ok(())
}

async fn grants_are_listed_all_or_per_target(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let staging = store.add_target(&new_target("staging")).await?;
    let on_staging = store
        .add_grant(&grant(group("dev"), staging.id, "writer"))
        .await?;
    let on_prod = store
        .add_grant(&grant(person("alice"), prod.id, "reader"))
        .await?;
    assert_eq!(on_prod.target_name, "prod");
    assert_eq!(on_prod.subject, person("alice"));
    assert_eq!(on_prod.db_role, "reader");
    assert_eq!(on_prod.max_lifetime_secs, 3600);

    assert_eq!(
        store.list_grants(None).await?,
        vec![on_prod.clone(), on_staging.clone()]
    );
    assert_eq!(store.list_grants(Some(prod.id)).await?, vec![on_prod]);
    assert_eq!(store.list_grants(Some(staging.id)).await?, vec![on_staging]);
    assert!(store.list_grants(Some(Uuid::new_v4())).await?.is_empty());
    Ok(())
}

async fn removing_a_grant_reports_whether_it_existed(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let granted = store
        .add_grant(&grant(person("alice"), prod.id, "reader"))
        .await?;
    assert!(store.remove_grant(granted.id).await?);
    assert!(!store.remove_grant(granted.id).await?);
    assert!(store.list_grants(None).await?.is_empty());
    Ok(())
}

async fn person_grant_matches_only_that_login(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let granted = store
        .add_grant(&grant(person("alice"), prod.id, "reader"))
        .await?;
    let found = store
        .matching_grants("alice", &[], prod.id, "reader")
        .await?;
    assert_eq!(found, vec![granted]);
    assert!(
        store
            .matching_grants("mallory", &[], prod.id, "reader")
            .await?
            .is_empty()
    );
    // A group named like the person does not stand for the person.
    assert!(
        store
            .matching_grants("bob", &strings(&["alice"]), prod.id, "reader")
            .await?
            .is_empty()
    );
    Ok(())
}

async fn group_grant_matches_members_of_that_group(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let via_group = store
        .add_grant(&grant(group("dba"), prod.id, "admin"))
        .await?;
    let direct = store
        .add_grant(&grant(person("alice"), prod.id, "admin"))
        .await?;

    let member = strings(&["dev", "dba"]);
    let found = store
        .matching_grants("bob", &member, prod.id, "admin")
        .await?;
    assert_eq!(found, vec![via_group.clone()]);

    let mut both = store
        .matching_grants("alice", &member, prod.id, "admin")
        .await?;
    both.sort_by_key(|g| g.id);
    let mut wanted = vec![via_group, direct];
    wanted.sort_by_key(|g| g.id);
    assert_eq!(both, wanted);

    assert!(
        store
            .matching_grants("carol", &strings(&["dev"]), prod.id, "admin")
            .await?
            .is_empty()
    );
    // A person named like the group is not in it.
    assert!(
        store
            .matching_grants("dba", &[], prod.id, "admin")
            .await?
            .is_empty()
    );
    Ok(())
}

async fn grant_matches_only_its_target_and_role(store: Arc<dyn Store>) -> Result<()> {
    let prod = store.add_target(&new_target("prod")).await?;
    let staging = store.add_target(&new_target("staging")).await?;
    store
        .add_grant(&grant(group("dba"), prod.id, "admin"))
        .await?;
    let groups = strings(&["dba"]);
    assert!(
        store
            .matching_grants("alice", &groups, prod.id, "reader")
            .await?
            .is_empty()
    );
    assert!(
        store
            .matching_grants("alice", &groups, staging.id, "admin")
            .await?
            .is_empty()
    );
    Ok(())
}

// --- Credentials ---

async fn credential_round_trips(store: Arc<dyn Store>) -> Result<()> {
    let minted = credential("alice", "prod", "2026-02-03T04:05:06.789012Z");
    store.insert_credential(&minted).await?;
    assert_eq!(store.credential(minted.id).await?, Some(minted.clone()));

    let mut already_revoked = credential("alice", "prod", "2026-02-03T04:05:07Z");
    already_revoked.revoked_at = Some(at("2026-02-03T04:06:00.000001Z"));
    already_revoked.reason = None;
    store.insert_credential(&already_revoked).await?;
    assert_eq!(
        store.credential(already_revoked.id).await?,
        Some(already_revoked)
    );
    Ok(())
}

async fn duplicate_credential_id_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let minted = credential("alice", "prod", "2026-02-03T04:05:06Z");
    store.insert_credential(&minted).await?;
    let err = store.insert_credential(&minted).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what: "credential", name } if *name == minted.id.to_string()),
        "{err:?}"
    );
    Ok(())
}

async fn unknown_credential_is_none(store: Arc<dyn Store>) -> Result<()> {
    assert_eq!(store.credential(Uuid::new_v4()).await?, None);
    Ok(())
}

async fn revocation_keeps_the_first_time(store: Arc<dyn Store>) -> Result<()> {
    let minted = credential("alice", "prod", "2026-02-03T04:05:06Z");
    store.insert_credential(&minted).await?;
    let first = at("2026-02-03T04:10:00.123456Z");
    assert!(store.revoke_credential(minted.id, first).await?);
    assert!(
        store
            .revoke_credential(minted.id, at("2026-02-03T05:00:00Z"))
            .await?
    );
    let stored = store.credential(minted.id).await?.context("credential")?;
    assert_eq!(stored.revoked_at, Some(first));
    Ok(())
}

async fn revoking_an_unknown_credential_reports_false(store: Arc<dyn Store>) -> Result<()> {
    assert!(!store.revoke_credential(Uuid::new_v4(), Utc::now()).await?);
    Ok(())
}

async fn credentials_are_listed_newest_first_all_or_per_person(
    store: Arc<dyn Store>,
) -> Result<()> {
    let old = credential("alice", "prod", "2026-01-01T00:00:00Z");
    let new = credential("alice", "prod", "2026-01-03T00:00:00Z");
    let bobs = credential("bob", "prod", "2026-01-02T00:00:00Z");
    for c in [&old, &new, &bobs] {
        store.insert_credential(c).await?;
    }
    let id = |c: &Credential| c.id;
    assert_eq!(
        ids(&store.list_credentials(Some("alice")).await?, id),
        vec![new.id, old.id]
    );
    assert_eq!(
        ids(&store.list_credentials(None).await?, id),
        vec![new.id, bobs.id, old.id]
    );
    assert!(store.list_credentials(Some("nobody")).await?.is_empty());
    Ok(())
}

async fn revoked_since_includes_the_boundary_and_skips_older_and_unrevoked(
    store: Arc<dyn Store>,
) -> Result<()> {
    let before = credential("alice", "prod", "2026-01-01T00:00:00Z");
    let exactly = credential("alice", "prod", "2026-01-01T00:00:01Z");
    let after = credential("alice", "prod", "2026-01-01T00:00:02Z");
    let unrevoked = credential("alice", "prod", "2026-01-01T00:00:03Z");
    for c in [&before, &exactly, &after, &unrevoked] {
        store.insert_credential(c).await?;
    }
    let since = at("2026-01-01T12:00:00.5Z");
    store
        .revoke_credential(before.id, at("2026-01-01T12:00:00.499999Z"))
        .await?;
    store.revoke_credential(exactly.id, since).await?;
    // Whole seconds and six-digit fractions must compare as times, not as text.
    store
        .revoke_credential(after.id, at("2026-01-01T12:00:01Z"))
        .await?;

    assert_eq!(
        store.revoked_since(since).await?,
        vec![exactly.id, after.id]
    );
    assert!(
        store
            .revoked_since(at("2026-01-01T12:00:01.000001Z"))
            .await?
            .is_empty()
    );
    Ok(())
}

// --- Sessions ---

async fn session_start_and_end_round_trip_every_field(store: Arc<dyn Store>) -> Result<()> {
    let mut started = new_session("2026-03-04T05:06:07.654321Z");
    started.recording = RecordingPolicy::Off;
    store.insert_session(&started).await?;

    let open = store.session(started.id).await?.context("session")?;
    assert_eq!(open.id, started.id);
    assert_eq!(open.person_login, started.person_login);
    assert_eq!(open.target_id, started.target_id);
    assert_eq!(open.target_name, started.target_name);
    assert_eq!(open.db_role, started.db_role);
    assert_eq!(open.credential_id, started.credential_id);
    assert_eq!(open.client_addr, started.client_addr);
    assert_eq!(open.application_name, started.application_name);
    assert_eq!(open.tls_version, started.tls_version);
    assert_eq!(open.started_at, started.started_at);
    assert_eq!(open.recording, RecordingPolicy::Off);
    assert_eq!(open.ended_at, None);
    assert_eq!(open.end_reason, None);
    assert_eq!(open.end_detail, None);
    assert_eq!(
        (open.bytes_client_to_server, open.bytes_server_to_client),
        (0, 0)
    );

    let end = session_end("2026-03-04T06:00:00.000001Z", EndReason::UpstreamFailed);
    store.end_session(started.id, &end).await?;
    let ended = store.session(started.id).await?.context("session")?;
    assert_eq!(ended.ended_at, Some(end.ended_at));
    assert_eq!(ended.end_reason, Some(EndReason::UpstreamFailed));
    assert_eq!(ended.end_detail, end.detail);
    assert_eq!(ended.bytes_client_to_server, end.bytes_client_to_server);
    assert_eq!(ended.bytes_server_to_client, end.bytes_server_to_client);
    assert_eq!((ended.id, ended.started_at), (open.id, open.started_at));
    Ok(())
}

async fn ending_a_session_twice_keeps_the_first_end(store: Arc<dyn Store>) -> Result<()> {
    let started = new_session("2026-03-04T05:06:07Z");
    store.insert_session(&started).await?;
    let first = session_end("2026-03-04T05:10:00Z", EndReason::Revoked);
    store.end_session(started.id, &first).await?;
    let mut late = session_end("2026-03-04T05:10:01Z", EndReason::ClientQuit);
    late.detail = None;
    late.bytes_server_to_client = first.bytes_server_to_client + 100;
    store.end_session(started.id, &late).await?;

    let ended = store.session(started.id).await?.context("session")?;
    assert_eq!(ended.ended_at, Some(first.ended_at));
    assert_eq!(ended.end_reason, Some(EndReason::Revoked));
    assert_eq!(ended.end_detail, first.detail);
    // Counters only grow: the later, larger count wins, the smaller one does not.
    assert_eq!(ended.bytes_server_to_client, late.bytes_server_to_client);
    assert_eq!(ended.bytes_client_to_server, first.bytes_client_to_server);
    Ok(())
}

async fn ending_an_unknown_session_is_not_found(store: Arc<dyn Store>) -> Result<()> {
    let missing = Uuid::new_v4();
    let err = store
        .end_session(
            missing,
            &session_end("2026-03-04T05:10:00Z", EndReason::Error),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "session", name } if *name == missing.to_string()),
        "{err:?}"
    );
    Ok(())
}

async fn duplicate_session_id_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let started = new_session("2026-03-04T05:06:07Z");
    store.insert_session(&started).await?;
    let err = store.insert_session(&started).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Duplicate {
                what: "session",
                ..
            }
        ),
        "{err:?}"
    );
    Ok(())
}

async fn sessions_are_listed_newest_first_up_to_the_limit(store: Arc<dyn Store>) -> Result<()> {
    let times = [
        "2026-03-04T05:00:00Z",
        "2026-03-04T05:00:00.000001Z",
        "2026-03-04T04:59:59.999999Z",
        "2026-03-04T05:00:01Z",
    ];
    let mut started = Vec::new();
    for t in times {
        let s = new_session(t);
        store.insert_session(&s).await?;
        started.push(s.id);
    }
    let listed = |limit| {
        let store = store.clone();
        async move { Ok::<_, anyhow::Error>(ids(&store.list_sessions(limit).await?, |s| s.id)) }
    };
    assert_eq!(
        listed(10).await?,
        vec![started[3], started[1], started[0], started[2]]
    );
    assert_eq!(listed(2).await?, vec![started[3], started[1]]);
    assert!(listed(0).await?.is_empty());
    assert!(listed(-1).await?.is_empty());
    Ok(())
}

/// Inserts a session of `person` on `target` started at `started_at` and ended (when given)
/// for `reason`; returns its id.
async fn session_of(
    store: &Arc<dyn Store>,
    person: &str,
    target: &str,
    started_at: &str,
    reason: Option<EndReason>,
) -> Result<Uuid> {
    let mut session = new_session(started_at);
    session.person_login = person.to_string();
    session.target_name = target.to_string();
    store.insert_session(&session).await?;
    if let Some(reason) = reason {
        store
            .end_session(session.id, &session_end("2026-03-05T00:00:00Z", reason))
            .await?;
    }
    Ok(session.id)
}

fn page(limit: i64) -> SessionPage {
    SessionPage {
        before: None,
        limit,
    }
}

fn summary_ids(found: &[SessionSummary]) -> Vec<Uuid> {
    found.iter().map(|s| s.session.id).collect()
}

async fn sessions_are_found_by_person_target_and_start_time(store: Arc<dyn Store>) -> Result<()> {
    let a1 = session_of(&store, "alice", "prod", "2026-03-04T01:00:00Z", None).await?;
    let a2 = session_of(&store, "alice", "stage", "2026-03-04T02:00:00Z", None).await?;
    let b1 = session_of(&store, "bob", "prod", "2026-03-04T03:00:00Z", None).await?;
    let b2 = session_of(&store, "bob", "prod", "2026-03-04T04:00:00Z", None).await?;
    let find = |filter: SessionFilter| {
        let store = store.clone();
        async move {
            Ok::<_, anyhow::Error>(summary_ids(&store.find_sessions(&filter, &page(10)).await?))
        }
    };
    assert_eq!(find(SessionFilter::default()).await?, vec![b2, b1, a2, a1]);
    let alice = SessionFilter {
        person: Some("alice".into()),
        ..SessionFilter::default()
    };
    assert_eq!(find(alice).await?, vec![a2, a1]);
    let prod = SessionFilter {
        target: Some("prod".into()),
        ..SessionFilter::default()
    };
    assert_eq!(find(prod).await?, vec![b2, b1, a1]);
    let bob_on_prod_from_4 = SessionFilter {
        person: Some("bob".into()),
        target: Some("prod".into()),
        started_after: Some(at("2026-03-04T04:00:00Z")),
        ..SessionFilter::default()
    };
    assert_eq!(find(bob_on_prod_from_4).await?, vec![b2]);
    // The window includes its start and excludes its end.
    let window = SessionFilter {
        started_after: Some(at("2026-03-04T02:00:00Z")),
        started_before: Some(at("2026-03-04T04:00:00Z")),
        ..SessionFilter::default()
    };
    assert_eq!(find(window).await?, vec![b1, a2]);
    let nobody = SessionFilter {
        person: Some("carol".into()),
        ..SessionFilter::default()
    };
    assert!(find(nobody).await?.is_empty());
    Ok(())
}

async fn sessions_are_found_by_status(store: Arc<dyn Store>) -> Result<()> {
    let live = session_of(&store, "alice", "prod", "2026-03-04T01:00:00Z", None).await?;
    let quit = session_of(
        &store,
        "alice",
        "prod",
        "2026-03-04T02:00:00Z",
        Some(EndReason::ClientQuit),
    )
    .await?;
    let failed = session_of(
        &store,
        "alice",
        "prod",
        "2026-03-04T03:00:00Z",
        Some(EndReason::UpstreamFailed),
    )
    .await?;
    let terminated = session_of(
        &store,
        "alice",
        "prod",
        "2026-03-04T04:00:00Z",
        Some(EndReason::Terminated),
    )
    .await?;
    let revoked = session_of(
        &store,
        "alice",
        "prod",
        "2026-03-04T05:00:00Z",
        Some(EndReason::Revoked),
    )
    .await?;
    let find = |status| {
        let store = store.clone();
        async move {
            let filter = SessionFilter {
                status: Some(status),
                ..SessionFilter::default()
            };
            Ok::<_, anyhow::Error>(summary_ids(&store.find_sessions(&filter, &page(10)).await?))
        }
    };
    assert_eq!(find(SessionStatus::Live).await?, vec![live]);
    assert_eq!(find(SessionStatus::Ended).await?, vec![failed, quit]);
    assert_eq!(
        find(SessionStatus::Terminated).await?,
        vec![revoked, terminated]
    );
    Ok(())
}

async fn session_pages_follow_each_other_without_gaps_or_repeats(
    store: Arc<dyn Store>,
) -> Result<()> {
    // Seven sessions, four of them starting at the very same microsecond: the id breaks ties.
    let mut all = Vec::new();
    for t in [
        "2026-03-04T01:00:00Z",
        "2026-03-04T02:00:00.000001Z",
        "2026-03-04T02:00:00.000001Z",
        "2026-03-04T02:00:00.000001Z",
        "2026-03-04T02:00:00.000001Z",
        "2026-03-04T03:00:00Z",
        "2026-03-04T00:59:59.999999Z",
    ] {
        all.push(session_of(&store, "alice", "prod", t, None).await?);
    }
    let filter = SessionFilter::default();
    let mut seen: Vec<SessionSummary> = Vec::new();
    let mut before = None;
    loop {
        let found = store
            .find_sessions(&filter, &SessionPage { before, limit: 3 })
            .await?;
        assert!(found.len() <= 3);
        let Some(last) = found.last() else { break };
        before = Some(last.cursor());
        seen.extend(found);
    }
    assert_eq!(seen.len(), all.len(), "every session once");
    let keys: Vec<_> = seen
        .iter()
        .map(|s| (s.session.started_at, s.session.id))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted, "newest first, ties by id descending");
    assert!(store.find_sessions(&filter, &page(0)).await?.is_empty());
    assert!(store.find_sessions(&filter, &page(-1)).await?.is_empty());
    Ok(())
}

async fn found_sessions_count_their_events_and_say_whether_sealed(
    store: Arc<dyn Store>,
) -> Result<()> {
    let empty = session_of(&store, "alice", "prod", "2026-03-04T01:00:00Z", None).await?;
    let recorded = session_of(&store, "alice", "prod", "2026-03-04T02:00:00Z", None).await?;
    store.append_events(&events(recorded, 0..1200)).await?;
    store.seal_recording(&seal(recorded)).await?;
    let found = store
        .find_sessions(&SessionFilter::default(), &page(10))
        .await?;
    let counts: Vec<(Uuid, i64, bool)> = found
        .iter()
        .map(|s| (s.session.id, s.event_count, s.sealed))
        .collect();
    assert_eq!(counts, vec![(recorded, 1200, true), (empty, 0, false)]);
    assert_eq!(
        found[0].session,
        store.session(recorded).await?.context("session")?
    );
    Ok(())
}

// --- Recordings ---

async fn recorded_events_come_back_byte_for_byte(store: Arc<dyn Store>) -> Result<()> {
    let id = started_session(&store).await?;
    let big = format!(r#"{{"rows":"{}"}}"#, "x".repeat(100 * 1024));
    let bodies = [
        // Key order, spacing and number forms that jsonb would normalise: the hash covers
        // these exact bytes.
        r#"{"z":1,  "a":1.50, "m":1e3}"#,
        r#"{"sql":"SELECT 'naïve', \"Quoted\" FROM 日本語 -- 🐘"}"#,
        r#"{"path":"C:\\temp\\x","escapes":"\n\t\u0000\u00e9"}"#,
        "",
        &big,
    ];
    let batch: Vec<StoredEvent> = bodies
        .iter()
        .zip(0..)
        .map(|(body, seq)| event(id, seq, body))
        .collect();
    store.append_events(&batch).await?;

    let stored = store.session_events(id, 0, 100).await?;
    assert_eq!(stored, batch);
    assert_eq!(stored[4].body.len(), big.len());
    Ok(())
}

async fn session_events_come_in_seq_order_and_page_from_a_seq(store: Arc<dyn Store>) -> Result<()> {
    let id = started_session(&store).await?;
    let other = started_session(&store).await?;
    // Appended out of order, and in two batches: reading follows seq, not insertion.
    store.append_events(&events(id, [5, 2, 9, 0, 7])).await?;
    store.append_events(&events(id, [1, 8, 3, 6, 4])).await?;
    store.append_events(&events(other, 0..3)).await?;

    assert_eq!(
        seqs(&store.session_events(id, 0, 100).await?),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&store.session_events(id, 0, 4).await?),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        seqs(&store.session_events(id, 4, 4).await?),
        vec![4, 5, 6, 7]
    );
    assert_eq!(seqs(&store.session_events(id, 8, 4).await?), vec![8, 9]);
    assert!(store.session_events(id, 10, 4).await?.is_empty());
    assert!(store.session_events(id, 0, 0).await?.is_empty());
    assert!(store.session_events(id, 0, -1).await?.is_empty());
    assert!(
        store
            .session_events(Uuid::new_v4(), 0, 10)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn a_batch_with_one_stored_duplicate_stores_nothing(store: Arc<dyn Store>) -> Result<()> {
    let id = started_session(&store).await?;
    let first = events(id, 0..5);
    store.append_events(&first).await?;

    let mut retried = events(id, 5..10);
    retried.insert(2, event(id, 3, r#"{"again":true}"#));
    let err = store.append_events(&retried).await.unwrap_err();
    assert!(is_duplicate_event(&err, id, 3), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("event '{id} seq 3' already exists")
    );

    assert_eq!(store.session_events(id, 0, 100).await?, first);
    Ok(())
}

async fn a_batch_repeating_a_seq_within_itself_stores_nothing(store: Arc<dyn Store>) -> Result<()> {
    let id = started_session(&store).await?;
    let mut batch = events(id, 0..4);
    batch.push(event(id, 2, r#"{"twice":true}"#));
    let err = store.append_events(&batch).await.unwrap_err();
    assert!(is_duplicate_event(&err, id, 2), "{err:?}");
    assert!(store.session_events(id, 0, 100).await?.is_empty());
    Ok(())
}

async fn a_batch_failing_in_its_last_statement_keeps_none_of_its_earlier_rows(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = started_session(&store).await?;
    store.append_events(&events(id, [0])).await?;
    // Long enough to need several INSERT statements; only the last one collides.
    let mut batch = events(id, 1..2_500);
    batch.push(event(id, 0, r#"{"late":true}"#));
    let err = store.append_events(&batch).await.unwrap_err();
    assert!(is_duplicate_event(&err, id, 0), "{err:?}");
    assert_eq!(seqs(&store.session_events(id, 0, 10_000).await?), vec![0]);

    // The same events without the duplicate go in whole.
    batch.pop();
    store.append_events(&batch).await?;
    assert_eq!(store.session_events(id, 0, 10_000).await?.len(), 2_500);
    Ok(())
}

async fn one_batch_can_hold_events_of_several_sessions(store: Arc<dyn Store>) -> Result<()> {
    let alice = started_session(&store).await?;
    let bob = started_session(&store).await?;
    // Interleaved, as the writer collects them from concurrent sessions.
    let batch: Vec<StoredEvent> = (0..6)
        .flat_map(|seq| [events(alice, [seq]), events(bob, [seq])])
        .flatten()
        .collect();
    store.append_events(&batch).await?;
    store.append_events(&[]).await?;

    let of = |session: Uuid| -> Vec<StoredEvent> {
        batch
            .iter()
            .filter(|e| e.session_id == session)
            .cloned()
            .collect()
    };
    assert_eq!(store.session_events(alice, 0, 100).await?, of(alice));
    assert_eq!(store.session_events(bob, 0, 100).await?, of(bob));
    Ok(())
}

/// Index ranges `(start, end)` of a slice of events, in the order a batch holds them.
type Runs<'r> = &'r [(usize, usize)];

/// The events of `runs` of `all`, in that order.
fn runs_of(all: &[StoredEvent], runs: Runs<'_>) -> Vec<StoredEvent> {
    runs.iter()
        .flat_map(|&(start, end)| all[start..end].to_vec())
        .collect()
}

/// Appends `batches` of `all`, one batch after the other.
async fn append_runs(
    store: &Arc<dyn Store>,
    all: &[StoredEvent],
    batches: &[Runs<'_>],
) -> Result<()> {
    for runs in batches {
        store.append_events(&runs_of(all, runs)).await?;
    }
    Ok(())
}

async fn events_in_several_blocks_come_back_in_order_from_any_seq_with_any_limit(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = started_session(&store).await?;
    let all = events(id, 0..40);
    // Blocks [0] [1-6] [17-24] [7-16] [25] [26-39]: a batch out of order cuts a block at each
    // jump, and each batch makes blocks of its own.
    append_runs(
        &store,
        &all,
        &[
            &[(0, 1)],
            &[(1, 7)],
            &[(17, 25), (7, 17)],
            &[(25, 26)],
            &[(26, 40)],
        ],
    )
    .await?;
    for from in -2..=42_i64 {
        for limit in [0, 1, 2, 3, 5, 7, 11, 39, 40, 100] {
            let start = from.clamp(0, 40) as usize;
            let end = (start + limit).min(40);
            let read = store.session_events(id, from, limit as i64).await?;
            assert_eq!(read, all[start..end], "from {from}, limit {limit}");
        }
    }
    let found = store
        .find_sessions(&SessionFilter::default(), &page(1))
        .await?;
    assert_eq!(found[0].event_count, 40);
    Ok(())
}

async fn a_batch_interleaving_runs_of_two_sessions_keeps_each_in_order(
    store: Arc<dyn Store>,
) -> Result<()> {
    let alice = started_session(&store).await?;
    let bob = started_session(&store).await?;
    let (a, b) = (events(alice, 0..9), events(bob, 0..6));
    // As the writer collects them from two busy sessions: runs of each, taking turns.
    let batch: Vec<StoredEvent> = [&a[0..3], &b[0..4], &a[3..5], &b[4..6], &a[5..9]].concat();
    store.append_events(&batch).await?;

    assert_eq!(store.session_events(alice, 0, 100).await?, a);
    assert_eq!(store.session_events(bob, 0, 100).await?, b);
    assert_eq!(store.session_events(alice, 4, 3).await?, a[4..7]);
    let counts: Vec<(Uuid, i64)> = store
        .find_sessions(&SessionFilter::default(), &page(10))
        .await?
        .iter()
        .map(|s| (s.session.id, s.event_count))
        .collect();
    assert!(
        counts.contains(&(alice, 9)) && counts.contains(&(bob, 6)),
        "{counts:?}"
    );
    Ok(())
}

async fn a_batch_overlapping_a_stored_block_is_a_duplicate_and_stores_nothing(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = started_session(&store).await?;
    let other = started_session(&store).await?;
    let all = events(id, 0..40);
    append_runs(&store, &all, &[&[(0, 10)], &[(20, 30)]]).await?;
    let stored = [&all[0..10], &all[20..30]].concat();

    let cases: [(Runs<'_>, i64); 4] = [
        // Inside a stored block, where no block starts: the primary key alone would not see it.
        (&[(5, 7)], 5),
        // Over the end of one and the start of another.
        (&[(9, 12)], 9),
        (&[(15, 21)], 20),
        // Fine blocks first, the overlap last.
        (&[(10, 20), (29, 31)], 29),
    ];
    for (runs, first_repeated) in cases {
        let mut batch = events(other, 0..3);
        batch.extend(runs_of(&all, runs));
        let err = store.append_events(&batch).await.unwrap_err();
        assert!(
            is_duplicate_event(&err, id, first_repeated),
            "{runs:?}: {err:?}"
        );
        assert_eq!(store.session_events(id, 0, 100).await?, stored);
        assert!(store.session_events(other, 0, 100).await?.is_empty());
    }

    // What fits between the stored blocks goes in.
    append_runs(&store, &all, &[&[(10, 20), (30, 40)]]).await?;
    assert_eq!(store.session_events(id, 0, 100).await?, all);
    Ok(())
}

/// SQLite stores up to 32 blocks (sessions) of a batch in one statement and more in several,
/// in one transaction: an overlap found by the last statement leaves nothing of the others.
async fn a_batch_of_more_sessions_than_one_statement_holds_is_stored_whole_or_not_at_all(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = started_session(&store).await?;
    let all = events(id, 0..10);
    append_runs(&store, &all, &[&[(0, 5)]]).await?;
    let mut others = Vec::new();
    for _ in 0..70 {
        others.push(started_session(&store).await?);
    }
    let mut batch: Vec<StoredEvent> = others.iter().flat_map(|o| events(*o, 0..2)).collect();
    batch.extend(runs_of(&all, &[(4, 6)]));
    let err = store.append_events(&batch).await.unwrap_err();
    assert!(is_duplicate_event(&err, id, 4), "{err:?}");
    for other in &others {
        assert!(store.session_events(*other, 0, 10).await?.is_empty());
    }
    batch.truncate(batch.len() - 2);
    batch.extend(runs_of(&all, &[(5, 10)]));
    store.append_events(&batch).await?;
    for other in &others {
        assert_eq!(
            store.session_events(*other, 0, 10).await?,
            events(*other, 0..2)
        );
    }
    assert_eq!(store.session_events(id, 0, 100).await?, all);
    Ok(())
}

async fn an_event_a_block_could_not_give_back_is_refused(store: Arc<dyn Store>) -> Result<()> {
    let id = started_session(&store).await?;
    let mut batch = events(id, 0..3);
    batch[1].body = "{\"sql\":\"SELECT 1\n\"}".to_string();
    let err = store.append_events(&batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m) if m.contains(&format!("{id} seq 1")) && m.contains("raw newline")),
        "{err:?}"
    );
    let mut batch = events(id, 0..3);
    batch[2].kind = "a,b".to_string();
    assert!(matches!(
        store.append_events(&batch).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(store.session_events(id, 0, 100).await?.is_empty());
    Ok(())
}

/// The error of reading `session_id` from seq 0, which must be `Corrupt` naming the block.
async fn corrupt_read(store: &Arc<dyn Store>, session_id: Uuid, block: i64) -> Result<String> {
    match store.session_events(session_id, 0, 100).await {
        Err(StoreError::Corrupt(message)) => {
            let names = format!("session {session_id} starting at seq {block}");
            assert!(message.contains(&names), "{message}");
            Ok(message)
        }
        other => bail!("expected Corrupt, got {other:?}"),
    }
}

async fn corrupt_blocks_are_reported_as_corrupt_naming_the_block(engine: &Engine) -> Result<()> {
    let store = &engine.store;
    let raw = engine.raw();
    let id = started_session(store).await?;
    let all = events(id, 0..10);
    append_runs(store, &all, &[&[(0, 5)], &[(5, 10)]]).await?;
    let block = |first_seq: i64| {
        format!(
            "WHERE session_id = {} AND first_seq = {first_seq}",
            raw.uuid(id)
        )
    };

    // A kind taken out of the second block.
    raw.run(&[&format!(
        "UPDATE recording_blocks SET kinds = 'query,query,query,query' {}",
        block(5)
    )])?;
    let message = corrupt_read(store, id, 5).await?;
    assert!(
        message.contains("kinds names 4 events (5 expected)"),
        "{message}"
    );
    // The first block is fine, and a read that needs only it does not load the second.
    assert_eq!(store.session_events(id, 0, 5).await?, all[0..5]);

    // A hash cut short in the first block (past the CHECK that would refuse it).
    raw.run(&[
        without_checks(&raw),
        &format!(
            "UPDATE recording_blocks SET hashes = substr(hashes, 1, 100) {}",
            block(0)
        ),
    ])?;
    let message = corrupt_read(store, id, 0).await?;
    assert!(message.contains("hashes holds 100 bytes"), "{message}");

    // Both put right, then a body with an event too many in the second block.
    let hashes: Vec<u8> = all[..5].iter().flat_map(|e| e.hash.clone()).collect();
    let newline = match raw {
        RawSql::Sqlite(_) => "char(10)",
        RawSql::Postgres(_) => "chr(10)",
    };
    raw.run(&[
        &format!(
            "UPDATE recording_blocks SET hashes = {} {}",
            raw.bytes(&hashes),
            block(0)
        ),
        &format!(
            "UPDATE recording_blocks SET kinds = 'query,query,query,query,query', \
             body = body || {newline} {}",
            block(5)
        ),
    ])?;
    assert_eq!(store.session_events(id, 0, 5).await?, all[0..5]);
    let message = corrupt_read(store, id, 5).await?;
    assert!(message.contains("body holds 6 events, not 5"), "{message}");
    Ok(())
}

async fn a_session_missing_a_block_reads_on_after_the_gap(engine: &Engine) -> Result<()> {
    let store = &engine.store;
    let raw = engine.raw();
    let id = started_session(store).await?;
    let all = events(id, 0..30);
    append_runs(store, &all, &[&[(0, 5)], &[(5, 10)], &[(10, 30)]]).await?;
    raw.run(&[&format!(
        "DELETE FROM recording_blocks WHERE session_id = {} AND first_seq = 5",
        raw.uuid(id)
    )])?;
    // Callers page until a page comes back short: a gap must not end a page early.
    let wanted: Vec<StoredEvent> = [&all[0..5], &all[10..30]].concat();
    assert_eq!(store.session_events(id, 0, 8).await?, wanted[0..8]);
    assert_eq!(store.session_events(id, 5, 3).await?, all[10..13]);
    assert_eq!(store.session_events(id, 3, 100).await?, wanted[3..]);
    Ok(())
}

async fn events_of_an_unknown_session_are_refused_naming_it(store: Arc<dyn Store>) -> Result<()> {
    let known = started_session(&store).await?;
    let unknown = Uuid::new_v4();
    let mut batch = events(known, 0..3);
    batch.extend(events(unknown, 0..3));
    let err = store.append_events(&batch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "session", name } if *name == unknown.to_string()),
        "{err:?}"
    );
    assert!(store.session_events(known, 0, 100).await?.is_empty());
    Ok(())
}

async fn a_recording_is_sealed_once(store: Arc<dyn Store>) -> Result<()> {
    let id = started_session(&store).await?;
    assert_eq!(store.recording_seal(id).await?, None);
    let first = seal(id);
    store.seal_recording(&first).await?;
    assert_eq!(store.recording_seal(id).await?, Some(first.clone()));

    let mut second = seal(id);
    second.event_count = 43;
    let err = store.seal_recording(&second).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Duplicate { what: "recording seal", name } if *name == id.to_string()),
        "{err:?}"
    );
    assert_eq!(store.recording_seal(id).await?, Some(first));
    Ok(())
}

async fn sealing_the_recording_of_an_unknown_session_is_refused(
    store: Arc<dyn Store>,
) -> Result<()> {
    let unknown = Uuid::new_v4();
    let err = store.seal_recording(&seal(unknown)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { what: "session", name } if *name == unknown.to_string()),
        "{err:?}"
    );
    assert_eq!(store.recording_seal(unknown).await?, None);
    Ok(())
}

/// The seq of the next followed event; `None` once following ended.
async fn next(followed: &mut Receiver<Result<StoredEvent, StoreError>>) -> Result<Option<i64>> {
    let event = tokio::time::timeout(Duration::from_secs(20), followed.recv())
        .await
        .context("following stalled")?;
    Ok(event.transpose()?.map(|e| e.seq))
}

async fn following_a_session_yields_every_event_and_ends_once_sealed(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = started_session(&store).await?;
    store.append_events(&events(id, 0..700)).await?;
    let mut followed = follow_events(store.clone(), id, 0, Duration::from_millis(20));
    for seq in 0..700 {
        assert_eq!(next(&mut followed).await?, Some(seq));
    }
    store.append_events(&events(id, 700..702)).await?;
    assert_eq!(next(&mut followed).await?, Some(700));
    assert_eq!(next(&mut followed).await?, Some(701));
    store.append_events(&events(id, 702..703)).await?;
    store
        .end_session(
            id,
            &session_end("2026-03-04T06:00:00Z", EndReason::ClientQuit),
        )
        .await?;
    let mut sealed = seal(id);
    sealed.event_count = 703;
    store.seal_recording(&sealed).await?;
    assert_eq!(next(&mut followed).await?, Some(702));
    assert_eq!(next(&mut followed).await?, None, "ends after the seal");
    Ok(())
}

async fn following_an_ended_unsealed_session_ends_after_quiet_polls(
    store: Arc<dyn Store>,
) -> Result<()> {
    let id = started_session(&store).await?;
    store.append_events(&events(id, 0..3)).await?;
    store
        .end_session(id, &session_end("2026-03-04T06:00:00Z", EndReason::Error))
        .await?;
    let mut followed = follow_events(store.clone(), id, 1, Duration::from_millis(20));
    let mut seqs = Vec::new();
    while let Some(seq) = next(&mut followed).await? {
        seqs.push(seq);
    }
    assert_eq!(seqs, vec![1, 2]);
    Ok(())
}

/// Prints the writer's throughput for the closing note; asserts only that everything arrived
/// (speed goals belong to benchmarks, not to timed tests). Run with `--nocapture` to see it.
async fn appending_20000_events_in_batches_of_500_reports_events_per_second(
    store: Arc<dyn Store>,
) -> Result<()> {
    const EVENTS: i64 = 20_000;
    const BATCH: usize = 500;
    let id = started_session(&store).await?;
    // Bodies the size of a typical recorded statement with its parameters.
    let all: Vec<StoredEvent> = (0..EVENTS)
        .map(|seq| {
            let body = format!(
                r#"{{"type":"execute","seq":{seq},"sql":"UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2","params":["{}","{}"],"tag":"UPDATE 1","rows":1}}"#,
                seq % 5000,
                seq * 7
            );
            event(id, seq, &body)
        })
        .collect();

    let started = std::time::Instant::now();
    for batch in all.chunks(BATCH) {
        store.append_events(batch).await?;
    }
    let elapsed = started.elapsed();
    println!(
        "{}: appended {EVENTS} events in batches of {BATCH} in {elapsed:.2?}: {:.0} events/s",
        store.engine(),
        EVENTS as f64 / elapsed.as_secs_f64()
    );

    let stored = store.session_events(id, 0, EVENTS + 1).await?;
    assert_eq!(stored.len(), all.len());
    assert_eq!(stored.last(), all.last());
    Ok(())
}

// --- Native types ---

async fn timestamps_keep_microseconds_and_drop_nanoseconds(store: Arc<dyn Store>) -> Result<()> {
    let mut minted = credential("alice", "prod", "2026-02-03T04:05:06.123456789Z");
    minted.expires_at = at("2026-02-03T04:20:06.999999999Z");
    store.insert_credential(&minted).await?;
    let stored = store.credential(minted.id).await?.context("credential")?;
    assert_eq!(stored.issued_at, at("2026-02-03T04:05:06.123456Z"));
    assert_eq!(stored.expires_at, at("2026-02-03T04:20:06.999999Z"));
    Ok(())
}

async fn extreme_values_round_trip_exactly(store: Arc<dyn Store>) -> Result<()> {
    // Every byte value, NUL included, in the sealed secret; non-ASCII text everywhere.
    let mut wanted = new_target("日本語-ターゲット 🐘");
    wanted.upstream_secret_sealed = Some((0..=255).collect());
    wanted.port = u16::MAX;
    wanted.tls_mode = UpstreamTls::Disable;
    wanted.ca_pem = None;
    wanted.upstream_user = "Ünïcødé \"quoted\" 'user'".to_string();
    let target = store.add_target(&wanted).await?;
    let stored = store
        .target_by_name(&wanted.name)
        .await?
        .context("target")?;
    assert_eq!(stored, target);
    assert_eq!(stored.upstream_secret_sealed, wanted.upstream_secret_sealed);
    assert_eq!(stored.port, u16::MAX);

    let groups = strings(&["grüppe", "with,comma", "with \"quotes\"", "{braces}", ""]);
    let zoe = store
        .upsert_person("zoë", Some(""), Some("zoë@exämple.org"), &groups)
        .await?;
    assert_eq!(zoe.groups, groups);
    assert_eq!(zoe.display_name.as_deref(), Some(""));
    assert_eq!(store.person_by_login("zoë").await?, Some(zoe));

    let mut minted = credential("zoë", &wanted.name, "1970-01-01T00:00:00Z");
    minted.id = Uuid::from_u128(u128::MAX);
    minted.target_id = Uuid::nil();
    minted.expires_at = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
    minted.reason = Some("naïve 🚀 reason\nwith a newline and a tab\t".into());
    store.insert_credential(&minted).await?;
    assert_eq!(store.credential(minted.id).await?, Some(minted));
    Ok(())
}

async fn concurrent_upserts_of_one_login_make_one_person(store: Arc<dyn Store>) -> Result<()> {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let groups = vec![format!("group-{i}")];
                store.upsert_person("racer", None, None, &groups).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await??.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one person, one id");
    assert_eq!(store.list_people().await?.len(), 1);
    Ok(())
}

// --- Engine set-up ---

#[tokio::test]
async fn sqlite_store_creates_missing_directories_and_reopens_with_its_data() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}",
        dir.path().join("not/yet/there/store.db").display()
    );
    let first = SqliteStore::open(&url).await?;
    first.add_target(&new_target("prod")).await?;
    drop(first);

    let reopened = SqliteStore::open(&url).await?;
    assert!(reopened.target_by_name("prod").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn in_memory_sqlite_store_keeps_its_data_while_open() -> Result<()> {
    let store = gateway::store::open("sqlite::memory:").await?;
    store.add_target(&new_target("prod")).await?;
    assert_eq!(store.engine(), "sqlite");
    assert!(store.target_by_name("prod").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn unknown_store_url_is_refused_with_the_accepted_forms() -> Result<()> {
    let err = gateway::store::open("mysql://localhost/x")
        .await
        .err()
        .context("mysql:// must be refused")?;
    assert!(matches!(err, StoreError::BadUrl(_)), "{err:?}");
    assert!(err.to_string().contains("sqlite://PATH or postgres://"));
    Ok(())
}

#[tokio::test]
async fn gateways_opening_one_new_postgres_store_at_once_all_succeed() -> Result<()> {
    let cluster = PgCluster::start()?;
    cluster.create_database("shared")?;
    let url = cluster.superuser_url("shared");
    // All race to create the schema; sqlx's advisory lock must make them take turns.
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await?.with_context(|| cluster.log())?);
    }
    stores[0].add_target(&new_target("prod")).await?;
    assert!(stores[3].target_by_name("prod").await?.is_some());
    drop(stores);

    // And a gateway started later finds the schema in place.
    let later = gateway::store::open(&url).await?;
    assert_eq!(later.engine(), "postgres");
    assert_eq!(later.list_targets().await?.len(), 1);
    Ok(())
}

/// Events as stored before blocks (one row per event, migration 0004), written with raw SQL;
/// returns them as the store must give them back after migration 0005.
fn store_events_the_old_way(raw: &RawSql<'_>, session_id: Uuid) -> Result<Vec<StoredEvent>> {
    let rows = [
        (
            "1969-12-31T23:59:59.999999Z",
            "session_start",
            r#"{"type":"session_start"}"#,
        ),
        (
            "2026-03-04T05:06:07.000001Z",
            "query",
            r#"{"sql":"SELECT 'naïve', \"Quoted\" -- 🐘","escaped":"\n"}"#,
        ),
        ("9999-12-31T23:59:59.999999Z", "session_end", ""),
    ];
    let mut statements = vec![format!(
        "INSERT INTO sessions (id, person_login, target_id, target_name, db_role, \
         credential_id, client_addr, started_at) VALUES ({}, 'alice', {}, 'prod', 'reader', {}, \
         '192.0.2.7:51234', '2026-03-04T05:06:07.000000Z')",
        raw.uuid(session_id),
        raw.uuid(Uuid::new_v4()),
        raw.uuid(Uuid::new_v4())
    )];
    let mut wanted = Vec::new();
    for (seq, (time, kind, body)) in (0_i64..).zip(rows) {
        let event = StoredEvent {
            session_id,
            seq,
            at: at(time),
            kind: kind.to_string(),
            body: body.to_string(),
            prev_hash: link(session_id, seq - 1),
            hash: link(session_id, seq),
        };
        statements.push(format!(
            "INSERT INTO recording_events (session_id, seq, at, kind, body, prev_hash, hash) \
             VALUES ({}, {seq}, '{time}', '{kind}', '{}', {}, {})",
            raw.uuid(session_id),
            body.replace('\'', "''"),
            raw.bytes(&event.prev_hash),
            raw.bytes(&event.hash)
        ));
        wanted.push(event);
    }
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    raw.run(&statements)?;
    Ok(wanted)
}

/// After migration 0005: the old events read back exactly, the session counts as recorded
/// `strict`, and the recording goes on in blocks.
async fn old_events_read_back_the_same_in_blocks(
    store: Arc<dyn Store>,
    session_id: Uuid,
    wanted: &[StoredEvent],
) -> Result<()> {
    assert_eq!(store.session_events(session_id, 0, 10).await?, wanted);
    assert_eq!(store.session_events(session_id, 1, 1).await?, wanted[1..2]);
    let session = store.session(session_id).await?.context("session")?;
    assert_eq!(session.recording, RecordingPolicy::Strict);
    let found = store
        .find_sessions(&SessionFilter::default(), &page(1))
        .await?;
    assert_eq!(found[0].event_count, 3);

    let err = store
        .append_events(&events(session_id, 2..4))
        .await
        .unwrap_err();
    assert!(is_duplicate_event(&err, session_id, 2), "{err:?}");
    store.append_events(&events(session_id, 3..6)).await?;
    assert_eq!(store.session_events(session_id, 0, 10).await?.len(), 6);
    Ok(())
}

#[tokio::test]
async fn sqlite_events_stored_before_blocks_read_back_the_same_after_the_migration() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = sqlite_url(dir.path());
    drop(SqliteStore::open_at_migration(&url, 4).await?);
    let id = Uuid::new_v4();
    let wanted = store_events_the_old_way(&RawSql::Sqlite(dir.path().join("store.db")), id)?;
    let store = Arc::new(SqliteStore::open(&url).await?);
    old_events_read_back_the_same_in_blocks(store, id, &wanted).await
}

#[tokio::test]
async fn postgres_events_stored_before_blocks_read_back_the_same_after_the_migration() -> Result<()>
{
    let cluster = PgCluster::start()?;
    cluster.create_database(PG_DB)?;
    let url = cluster.superuser_url(PG_DB);
    drop(PgStore::open_at_migration(&url, 4).await?);
    let id = Uuid::new_v4();
    let wanted = store_events_the_old_way(&RawSql::Postgres(&cluster), id)?;
    let store = Arc::new(PgStore::open(&url).await?);
    old_events_read_back_the_same_in_blocks(store, id, &wanted).await
}

/// The SQLite file holds sealed secrets and session metadata: only its owner may read it, nor
/// its write-ahead log.
#[tokio::test]
async fn sqlite_store_files_are_private_to_their_owner() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new()?;
    let path = dir.path().join("nested").join("pgbastion.db");
    let store = gateway::store::open(&format!("sqlite://{}", path.display())).await?;
    store.upsert_person("alice", None, None, &[]).await?;
    for file in ["pgbastion.db", "pgbastion.db-wal"] {
        let mode = std::fs::metadata(path.with_file_name(file))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
    }
    Ok(())
}

// --- Terminations, groups and retention (migration 0008) ---

async fn a_live_session_gets_one_termination_request_that_gateways_find(
    store: Arc<dyn Store>,
) -> Result<()> {
    let live = started_session(&store).await?;
    let first_at = at("2026-03-04T06:00:00.000001Z");
    let outcome = store
        .request_termination(live, "root", "INC-7: dropping tables", first_at)
        .await?;
    assert_eq!(outcome, TerminationOutcome::Requested);
    let first = Termination {
        session_id: live,
        requested_by: "root".into(),
        reason: "INC-7: dropping tables".into(),
        requested_at: first_at,
    };
    // A second request changes nothing and names the first.
    let again = store
        .request_termination(live, "oncall", "me too", at("2026-03-04T06:00:05Z"))
        .await?;
    assert_eq!(again, TerminationOutcome::AlreadyRequested(first.clone()));
    // Gateways poll from a time on, the boundary included.
    assert_eq!(store.terminations_since(first_at).await?, vec![first]);
    assert!(
        store
            .terminations_since(at("2026-03-04T06:00:00.000002Z"))
            .await?
            .is_empty()
    );
    // The session stays live until the gateway running it ends it.
    assert_eq!(
        store.session(live).await?.context("session")?.ended_at,
        None
    );
    Ok(())
}

async fn termination_of_an_ended_or_unknown_session_changes_nothing(
    store: Arc<dyn Store>,
) -> Result<()> {
    let ended = started_session(&store).await?;
    store
        .end_session(
            ended,
            &session_end("2026-03-04T06:00:00Z", EndReason::ClientQuit),
        )
        .await?;
    let asked = at("2026-03-04T07:00:00Z");
    assert_eq!(
        store
            .request_termination(ended, "root", "late", asked)
            .await?,
        TerminationOutcome::AlreadyEnded
    );
    assert_eq!(
        store
            .request_termination(Uuid::new_v4(), "root", "who?", asked)
            .await?,
        TerminationOutcome::NotFound
    );
    assert!(
        store
            .terminations_since(at("2000-01-01T00:00:00Z"))
            .await?
            .is_empty()
    );
    // Requested while live, then ended by the gateway: a later request is told it ended.
    let terminated = started_session(&store).await?;
    store
        .request_termination(terminated, "root", "INC-8", asked)
        .await?;
    store
        .end_session(
            terminated,
            &session_end("2026-03-04T07:00:01Z", EndReason::Terminated),
        )
        .await?;
    assert_eq!(
        store
            .request_termination(terminated, "root", "INC-8", asked)
            .await?,
        TerminationOutcome::AlreadyEnded
    );
    Ok(())
}

async fn termination_requests_need_a_bounded_reason_and_a_requester(
    store: Arc<dyn Store>,
) -> Result<()> {
    let live = started_session(&store).await?;
    let now = at("2026-03-04T06:00:00Z");
    let longest = "é".repeat(MAX_TERMINATION_REASON_CHARS);
    let too_long = format!("{longest}x");
    for (by, reason, complaint) in [
        ("root", "", "give a reason"),
        ("root", " \n\t ", "give a reason"),
        ("root", too_long.as_str(), "at most 500"),
        ("", "INC-7", "who asks"),
    ] {
        match store.request_termination(live, by, reason, now).await {
            Err(StoreError::Invalid(message)) => {
                assert!(message.contains(complaint), "{message}")
            }
            other => bail!("{by:?}/{reason:?} gave {other:?}"),
        }
    }
    assert!(store.terminations_since(now).await?.is_empty());
    // The longest reason allowed is stored whole (characters, not bytes).
    assert_eq!(
        store
            .request_termination(live, "root", &longest, now)
            .await?,
        TerminationOutcome::Requested
    );
    assert_eq!(store.terminations_since(now).await?[0].reason, longest);
    Ok(())
}

async fn sessions_keep_their_groups_and_are_found_by_group(store: Arc<dyn Store>) -> Result<()> {
    let mut ids = Vec::new();
    for (person, groups, started) in [
        ("alice", &["dev", "ops"][..], "2026-03-04T01:00:00Z"),
        ("bob", &["ops"][..], "2026-03-04T02:00:00Z"),
        ("carol", &[][..], "2026-03-04T03:00:00Z"),
        ("alice", &["dev"][..], "2026-03-04T04:00:00Z"),
    ] {
        let mut session = new_session(started);
        session.person_login = person.into();
        session.groups = strings(groups);
        store.insert_session(&session).await?;
        ids.push(session.id);
    }
    let stored = store.session(ids[0]).await?.context("session")?;
    assert_eq!(stored.groups, strings(&["dev", "ops"]));
    assert!(
        store
            .session(ids[2])
            .await?
            .context("session")?
            .groups
            .is_empty()
    );
    let find = |group: &str, person: Option<&str>| {
        let store = store.clone();
        let filter = SessionFilter {
            group: Some(group.into()),
            person: person.map(String::from),
            ..SessionFilter::default()
        };
        async move {
            Ok::<_, anyhow::Error>(summary_ids(&store.find_sessions(&filter, &page(10)).await?))
        }
    };
    assert_eq!(find("dev", None).await?, vec![ids[3], ids[0]]);
    assert_eq!(find("ops", None).await?, vec![ids[1], ids[0]]);
    assert_eq!(find("ops", Some("alice")).await?, vec![ids[0]]);
    // Whole names only: no prefix, no case folding, no JSON or array syntax.
    for other in ["de", "DEV", "", "[\"dev\"]", "{dev}", "%"] {
        assert!(find(other, None).await?.is_empty(), "{other:?}");
    }
    // Pages of a group follow each other.
    let first = store
        .find_sessions(
            &SessionFilter {
                group: Some("dev".into()),
                ..SessionFilter::default()
            },
            &page(1),
        )
        .await?;
    let next = store
        .find_sessions(
            &SessionFilter {
                group: Some("dev".into()),
                ..SessionFilter::default()
            },
            &SessionPage {
                before: Some(first[0].cursor()),
                limit: 10,
            },
        )
        .await?;
    assert_eq!(
        (summary_ids(&first), summary_ids(&next)),
        (vec![ids[3]], vec![ids[0]])
    );
    Ok(())
}

async fn retention_of_a_target_is_set_and_cleared(store: Arc<dyn Store>) -> Result<()> {
    let created = store.add_target(&new_target("prod")).await?;
    assert_eq!(created.retention_days, None, "kept forever unless set");
    let kept = store.set_target_retention("prod", Some(30)).await?;
    assert_eq!(kept.retention_days, Some(30));
    assert_eq!(store.target_by_name("prod").await?, Some(kept.clone()));
    // Nothing else changed.
    let mut other_fields = kept.clone();
    other_fields.retention_days = None;
    assert_eq!(other_fields, created);
    let forever = store.set_target_retention("prod", None).await?;
    assert_eq!(forever, created);
    assert!(matches!(
        store.set_target_retention("prod", Some(0)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.set_target_retention("nope", Some(7)).await,
        Err(StoreError::NotFound { what: "target", .. })
    ));
    Ok(())
}

// --- Cancel requests between gateways ---

/// How often a SQLite watcher looks in these tests (a gateway uses its revocation poll).
const CANCEL_POLL: Duration = Duration::from_millis(20);

fn cancel_key(process_id: i32, secret_key: i32) -> CancelKey {
    CancelKey {
        process_id,
        secret_key,
    }
}

/// The next key a watcher passes on, within 5 s.
async fn next_cancel(watch: &mut Receiver<CancelKey>) -> Result<CancelKey> {
    tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .context("no cancel request within 5 s")?
        .context("the watch ended")
}

/// Fails if the watcher passes on anything within a few of its polls.
async fn no_more_cancels(watch: &mut Receiver<CancelKey>) -> Result<()> {
    match tokio::time::timeout(CANCEL_POLL * 10, watch.recv()).await {
        Err(_) => Ok(()),
        Ok(extra) => bail!("unexpected: {extra:?}"),
    }
}

async fn cancel_requests_reach_every_watcher_in_order_from_the_moment_it_watches(
    store: Arc<dyn Store>,
) -> Result<()> {
    // Made before anyone watched: nobody is told (it would come first if it were).
    store.request_cancels(&[cancel_key(1, 11)]).await?;
    let mut first = store.watch_cancel_requests(CANCEL_POLL).await?;
    let mut second = store.watch_cancel_requests(CANCEL_POLL).await?;
    store.request_cancels(&[]).await?;
    let sent = [
        cancel_key(2, -22),
        cancel_key(i32::MAX, i32::MIN),
        cancel_key(-3, 0),
    ];
    store.request_cancels(&sent[..2]).await?;
    store.request_cancels(&sent[2..]).await?;
    for watch in [&mut first, &mut second] {
        for expected in sent {
            assert_eq!(next_cancel(watch).await?, expected);
        }
        no_more_cancels(watch).await?;
    }
    // One watcher gone does not stop the other.
    drop(first);
    store.request_cancels(&[cancel_key(4, 44)]).await?;
    assert_eq!(next_cancel(&mut second).await?, cancel_key(4, 44));
    Ok(())
}

#[tokio::test]
async fn sqlite_cancel_requests_are_kept_seconds_and_stale_ones_are_never_passed_on() -> Result<()>
{
    let engine = Engine::sqlite().await?;
    let raw = engine.raw();
    let mut watch = engine.store.watch_cancel_requests(CANCEL_POLL).await?;
    // A row from a minute ago, as a gateway that stopped mid-write would leave: too late to
    // cancel what its client meant, so not passed on, and gone with the next request.
    let minute_ago = (Utc::now() - chrono::TimeDelta::minutes(1))
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    raw.run(&[&format!(
        "INSERT INTO cancel_requests (process_id, secret_key, requested_at) \
         VALUES (5, 55, '{minute_ago}')"
    )])?;
    // Polls go by with the stale row in the table.
    tokio::time::sleep(CANCEL_POLL * 5).await;
    engine.store.request_cancels(&[cancel_key(6, 66)]).await?;
    assert_eq!(next_cancel(&mut watch).await?, cancel_key(6, 66));
    no_more_cancels(&mut watch).await?;
    assert_eq!(
        raw.run(&["SELECT process_id FROM cancel_requests"])?,
        vec!["6".to_owned()]
    );
    Ok(())
}

#[tokio::test]
async fn postgres_cancel_watch_outlasts_a_store_outage() -> Result<()> {
    let mut cluster = PgCluster::start()?;
    cluster.create_database(PG_DB)?;
    let store = PgStore::open(&cluster.superuser_url(PG_DB)).await?;
    let mut watch = store.watch_cancel_requests(CANCEL_POLL).await?;
    cluster.stop()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.start_again()?;
    // Requests made while the watch was reconnecting are lost: keep asking until one arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for process_id in 1.. {
        if store
            .request_cancels(&[cancel_key(process_id, 7)])
            .await
            .is_ok()
            && let Ok(Some(key)) =
                tokio::time::timeout(Duration::from_millis(500), watch.recv()).await
        {
            assert_eq!(key.secret_key, 7);
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            break;
        }
    }
    bail!("no cancel request came through within 30 s of the store's restart")
}
