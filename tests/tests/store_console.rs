//! The console's part of the store (`ConsoleStore`), written once and proved against both
//! engines, the way `store.rs` proves the rest: `on_both_engines!` turns each check into
//! `sqlite::NAME` (a file in a temporary directory) and `postgres::NAME` (a database in a
//! throwaway cluster). The one check that writes behind the store's back (to prove a CHECK
//! constraint) takes the [`Engine`] and runs raw SQL on its database.

use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use gateway::store::{
    AccessRequest, AuthMethod, ConsoleSession, Decision, GrantSubject, LocalAccount, NewAuditEntry,
    NewGrant, NewTarget, RecordingPolicy, RequestFilter, RequestStatus, Store, StoreError,
    TargetEdit, UpstreamTls,
};
use harness::on_both_engines;
use harness::store_engine::StoreEngine as Engine;
use uuid::Uuid;

on_both_engines!(
    local_account_round_trips_and_a_second_one_for_the_login_is_a_duplicate,
    failures_count_up_lock_and_a_good_sign_in_resets_them,
    a_new_password_clears_failures_and_lock,
    roles_of_a_local_account_are_replaced,
    changing_an_unknown_local_account_is_not_found,
    console_session_round_trips_every_field,
    touching_a_session_only_moves_its_clock_forward,
    ending_a_session_counts_once_and_keeps_the_first_end,
    ending_all_of_a_persons_sessions_leaves_others_and_ended_ones,
    access_request_round_trips_and_lists_newest_first_by_person_and_status,
    a_request_is_decided_once,
    nobody_decides_their_own_request,
    a_request_is_marked_issued_once_from_the_expected_status,
    two_concurrent_collects_issue_exactly_one_credential,
    only_the_requester_cancels_and_only_while_pending_or_approved,
    audit_entries_are_listed_newest_first_and_paged_by_id,
    a_target_edit_keeps_clears_or_replaces_the_secret,
    editing_an_unknown_target_is_not_found,
    grant_approval_is_stored_and_can_be_changed;
    with_raw_sql:
    the_database_refuses_a_self_decided_request,
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

fn account(login: &str) -> LocalAccount {
    LocalAccount {
        login: login.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".to_string(),
        roles: strings(&["user", "approver"]),
        failed_attempts: 0,
        locked_until: None,
        disabled: false,
        created_at: at("2026-01-02T03:04:05.123456Z"),
        password_changed_at: at("2026-01-02T03:04:05.123456Z"),
    }
}

/// A session whose token hash is 32 bytes derived from `tag` (the store only checks length).
fn console_session(login: &str, tag: u8) -> ConsoleSession {
    let created = at("2026-02-03T04:05:06.000001Z");
    ConsoleSession {
        token_hash: vec![tag; 32],
        person_login: login.to_string(),
        roles: strings(&["user"]),
        auth_method: AuthMethod::Oidc,
        csrf_token: format!("csrf-token-of-session-{tag:03}-padded-to-32"),
        client_addr: Some("192.0.2.10".to_string()),
        user_agent: Some("Mozilla/5.0 (tests)".to_string()),
        created_at: created,
        last_seen_at: created,
        expires_at: created + Duration::hours(12),
        ended_at: None,
    }
}

fn request(login: &str, requested_at: &str) -> AccessRequest {
    AccessRequest {
        id: Uuid::new_v4(),
        person_login: login.to_string(),
        target_id: Uuid::new_v4(),
        target_name: "shop".to_string(),
        db_role: "reader".to_string(),
        reason: "INC-42: look at the orders table".to_string(),
        lifetime_secs: 3600,
        status: RequestStatus::Pending,
        requested_at: at(requested_at),
        decided_by: None,
        decided_at: None,
        decision_comment: None,
        credential_id: None,
    }
}

async fn stored_request(store: &Arc<dyn Store>, login: &str) -> Result<AccessRequest> {
    let r = request(login, "2026-03-01T10:00:00Z");
    store.insert_access_request(&r).await?;
    Ok(r)
}

fn new_target(name: &str) -> NewTarget {
    NewTarget {
        name: name.to_string(),
        host: "db.internal".to_string(),
        port: 5432,
        database: "app".to_string(),
        tls_mode: UpstreamTls::Disable,
        ca_pem: None,
        upstream_user: "bastion".to_string(),
        upstream_secret_sealed: Some(vec![1, 2, 3]),
        recording: RecordingPolicy::Buffered,
        record_max_rows: Some(7),
        record_max_result_bytes: None,
    }
}

fn edit(secret: Option<Option<Vec<u8>>>) -> TargetEdit {
    TargetEdit {
        host: "db2.internal".to_string(),
        port: 6543,
        database: "app2".to_string(),
        tls_mode: UpstreamTls::VerifyFull,
        ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
        upstream_user: "bastion2".to_string(),
        upstream_secret_sealed: secret,
        enabled: false,
    }
}

fn is_not_found(e: &StoreError, what: &str) -> bool {
    matches!(e, StoreError::NotFound { what: w, .. } if *w == what)
}

// --- Local accounts ---

async fn local_account_round_trips_and_a_second_one_for_the_login_is_a_duplicate(
    store: Arc<dyn Store>,
) -> Result<()> {
    let root = account("root");
    store.insert_local_account(&root).await?;
    store.insert_local_account(&account("admin")).await?;
    assert_eq!(store.local_account("root").await?, Some(root.clone()));
    assert_eq!(store.local_account("nobody").await?, None);
    let listed: Vec<String> = store
        .list_local_accounts()
        .await?
        .into_iter()
        .map(|a| a.login)
        .collect();
    assert_eq!(listed, ["admin", "root"], "listed by login");

    let again = LocalAccount {
        roles: strings(&["admin"]),
        ..account("root")
    };
    let err = store
        .insert_local_account(&again)
        .await
        .expect_err("a second account for root must be refused");
    assert!(
        matches!(&err, StoreError::Duplicate { what: "local account", name } if name == "root"),
        "{err:?}"
    );
    assert_eq!(store.local_account("root").await?, Some(root), "unchanged");
    Ok(())
}

async fn failures_count_up_lock_and_a_good_sign_in_resets_them(
    store: Arc<dyn Store>,
) -> Result<()> {
    store.insert_local_account(&account("root")).await?;
    let lock = at("2026-05-01T12:00:00.5Z");
    assert_eq!(store.record_local_failure("root", None).await?, 1);
    assert_eq!(store.record_local_failure("root", Some(lock)).await?, 2);
    // A failure without a new lock keeps the one set before.
    assert_eq!(store.record_local_failure("root", None).await?, 3);
    let locked = store.local_account("root").await?.context("root")?;
    assert_eq!(locked.failed_attempts, 3);
    assert_eq!(locked.locked_until, Some(lock));

    store.record_local_success("root").await?;
    let reset = store.local_account("root").await?.context("root")?;
    assert_eq!(reset.failed_attempts, 0);
    assert_eq!(reset.locked_until, None);

    // An unknown login counts nothing and creates nothing.
    assert_eq!(store.record_local_failure("nobody", None).await?, 0);
    store.record_local_success("nobody").await?;
    assert_eq!(store.local_account("nobody").await?, None);
    Ok(())
}

async fn a_new_password_clears_failures_and_lock(store: Arc<dyn Store>) -> Result<()> {
    let before = account("root");
    store.insert_local_account(&before).await?;
    store
        .record_local_failure("root", Some(at("2030-01-01T00:00:00Z")))
        .await?;
    let new_hash = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA";
    store.set_local_password("root", new_hash).await?;
    let after = store.local_account("root").await?.context("root")?;
    assert_eq!(after.password_hash, new_hash);
    assert_eq!(after.failed_attempts, 0);
    assert_eq!(after.locked_until, None);
    assert!(after.password_changed_at > before.password_changed_at);
    assert_eq!(after.created_at, before.created_at);
    Ok(())
}

async fn roles_of_a_local_account_are_replaced(store: Arc<dyn Store>) -> Result<()> {
    store.insert_local_account(&account("root")).await?;
    store
        .set_local_roles("root", &strings(&["auditor"]))
        .await?;
    let after = store.local_account("root").await?.context("root")?;
    assert_eq!(after.roles, ["auditor"]);
    store.set_local_roles("root", &[]).await?;
    let after = store.local_account("root").await?.context("root")?;
    assert!(after.roles.is_empty());
    Ok(())
}

async fn changing_an_unknown_local_account_is_not_found(store: Arc<dyn Store>) -> Result<()> {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$eA$eA";
    let err = store.set_local_password("ghost", hash).await.unwrap_err();
    assert!(is_not_found(&err, "local account"), "{err:?}");
    let err = store
        .set_local_roles("ghost", &strings(&["admin"]))
        .await
        .unwrap_err();
    assert!(is_not_found(&err, "local account"), "{err:?}");
    assert_eq!(store.local_account("ghost").await?, None);
    Ok(())
}

// --- Console sessions ---

async fn console_session_round_trips_every_field(store: Arc<dyn Store>) -> Result<()> {
    let oidc = console_session("alice", 1);
    let local = ConsoleSession {
        auth_method: AuthMethod::Local,
        client_addr: None,
        user_agent: None,
        roles: strings(&["admin", "auditor"]),
        ended_at: Some(at("2026-02-03T05:00:00.000002Z")),
        ..console_session("root", 2)
    };
    store.insert_console_session(&oidc).await?;
    store.insert_console_session(&local).await?;
    assert_eq!(store.console_session(&oidc.token_hash).await?, Some(oidc));
    assert_eq!(store.console_session(&local.token_hash).await?, Some(local));
    assert_eq!(store.console_session(&[9; 32]).await?, None);
    Ok(())
}

async fn touching_a_session_only_moves_its_clock_forward(store: Arc<dyn Store>) -> Result<()> {
    let s = console_session("alice", 1);
    store.insert_console_session(&s).await?;
    let later = s.last_seen_at + Duration::minutes(5);
    store.touch_console_session(&s.token_hash, later).await?;
    // A slower request finishing after a faster one must not move the clock back.
    store
        .touch_console_session(&s.token_hash, s.last_seen_at + Duration::minutes(1))
        .await?;
    let stored = store
        .console_session(&s.token_hash)
        .await?
        .context("session")?;
    assert_eq!(stored.last_seen_at, later);
    assert_eq!(stored.created_at, s.created_at);
    assert_eq!(
        stored.expires_at, s.expires_at,
        "touching never extends the absolute timeout"
    );
    Ok(())
}

async fn ending_a_session_counts_once_and_keeps_the_first_end(store: Arc<dyn Store>) -> Result<()> {
    let s = console_session("alice", 1);
    store.insert_console_session(&s).await?;
    let first = at("2026-02-03T06:00:00Z");
    assert!(store.end_console_session(&s.token_hash, first).await?);
    assert!(
        !store
            .end_console_session(&s.token_hash, first + Duration::hours(1))
            .await?
    );
    let stored = store
        .console_session(&s.token_hash)
        .await?
        .context("session")?;
    assert_eq!(stored.ended_at, Some(first));
    assert!(!store.end_console_session(&[9; 32], first).await?);
    Ok(())
}

async fn ending_all_of_a_persons_sessions_leaves_others_and_ended_ones(
    store: Arc<dyn Store>,
) -> Result<()> {
    let earlier = at("2026-02-03T05:00:00Z");
    let ended = ConsoleSession {
        ended_at: Some(earlier),
        ..console_session("alice", 3)
    };
    for s in [
        console_session("alice", 1),
        console_session("alice", 2),
        ended.clone(),
        console_session("bob", 4),
    ] {
        store.insert_console_session(&s).await?;
    }
    let now = at("2026-02-03T07:00:00Z");
    assert_eq!(store.end_console_sessions_of("alice", now).await?, 2);
    for tag in [1, 2] {
        let s = store
            .console_session(&[tag; 32])
            .await?
            .context("alice's")?;
        assert_eq!(s.ended_at, Some(now));
    }
    let s = store.console_session(&[3; 32]).await?.context("ended")?;
    assert_eq!(s.ended_at, Some(earlier), "an ended session keeps its end");
    let s = store.console_session(&[4; 32]).await?.context("bob's")?;
    assert_eq!(s.ended_at, None, "bob's session goes on");
    assert_eq!(store.end_console_sessions_of("alice", now).await?, 0);
    Ok(())
}

// --- Access requests ---

async fn access_request_round_trips_and_lists_newest_first_by_person_and_status(
    store: Arc<dyn Store>,
) -> Result<()> {
    let old = request("alice", "2026-03-01T10:00:00.000001Z");
    let new = request("alice", "2026-03-01T11:00:00Z");
    let bobs = request("bob", "2026-03-01T10:30:00Z");
    for r in [&old, &new, &bobs] {
        store.insert_access_request(r).await?;
    }
    assert_eq!(store.access_request(old.id).await?, Some(old.clone()));
    assert_eq!(store.access_request(Uuid::new_v4()).await?, None);
    let err = store.insert_access_request(&old).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Duplicate {
                what: "access request",
                ..
            }
        ),
        "{err:?}"
    );

    let ids = |list: Vec<AccessRequest>| list.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = RequestFilter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_access_requests(&all).await?),
        [new.id, bobs.id, old.id]
    );
    let alices = RequestFilter {
        person_login: Some("alice".into()),
        ..all.clone()
    };
    assert_eq!(
        ids(store.list_access_requests(&alices).await?),
        [new.id, old.id]
    );
    let one = RequestFilter { limit: 1, ..alices };
    assert_eq!(ids(store.list_access_requests(&one).await?), [new.id]);

    assert!(
        store
            .decide_access_request(bobs.id, Decision::Approve, "carol", None, Utc::now())
            .await?
    );
    let approved = RequestFilter {
        status: Some(RequestStatus::Approved),
        ..all.clone()
    };
    assert_eq!(ids(store.list_access_requests(&approved).await?), [bobs.id]);
    let pending = RequestFilter {
        status: Some(RequestStatus::Pending),
        ..all
    };
    assert_eq!(
        ids(store.list_access_requests(&pending).await?),
        [new.id, old.id]
    );
    Ok(())
}

async fn a_request_is_decided_once(store: Arc<dyn Store>) -> Result<()> {
    let approved = stored_request(&store, "alice").await?;
    let when = at("2026-03-01T12:00:00.000003Z");
    assert!(
        store
            .decide_access_request(
                approved.id,
                Decision::Approve,
                "bob",
                Some("ok, INC-42"),
                when
            )
            .await?
    );
    let after = store
        .access_request(approved.id)
        .await?
        .context("request")?;
    assert_eq!(after.status, RequestStatus::Approved);
    assert_eq!(after.decided_by.as_deref(), Some("bob"));
    assert_eq!(after.decided_at, Some(when));
    assert_eq!(after.decision_comment.as_deref(), Some("ok, INC-42"));

    // A second approver, or the same one changing their mind, changes nothing.
    assert!(
        !store
            .decide_access_request(approved.id, Decision::Deny, "carol", Some("no"), Utc::now())
            .await?
    );
    assert_eq!(store.access_request(approved.id).await?, Some(after));

    let denied = stored_request(&store, "alice").await?;
    assert!(
        store
            .decide_access_request(denied.id, Decision::Deny, "bob", None, when)
            .await?
    );
    let after = store.access_request(denied.id).await?.context("request")?;
    assert_eq!(after.status, RequestStatus::Denied);
    assert_eq!(after.decision_comment, None);
    assert!(
        !store
            .decide_access_request(denied.id, Decision::Approve, "bob", None, when)
            .await?
    );
    assert!(
        !store
            .decide_access_request(Uuid::new_v4(), Decision::Approve, "bob", None, when)
            .await?,
        "an unknown request is not decided"
    );
    Ok(())
}

async fn nobody_decides_their_own_request(store: Arc<dyn Store>) -> Result<()> {
    let own = stored_request(&store, "bob").await?;
    for decision in [Decision::Approve, Decision::Deny] {
        assert!(
            !store
                .decide_access_request(own.id, decision, "bob", Some("mine"), Utc::now())
                .await?
        );
    }
    assert_eq!(store.access_request(own.id).await?, Some(own));
    Ok(())
}

async fn a_request_is_marked_issued_once_from_the_expected_status(
    store: Arc<dyn Store>,
) -> Result<()> {
    // Without approval: issued straight from pending.
    let direct = stored_request(&store, "alice").await?;
    let credential = Uuid::new_v4();
    assert!(
        !store
            .mark_request_issued(direct.id, RequestStatus::Approved, credential)
            .await?,
        "a pending request is not approved"
    );
    assert!(
        store
            .mark_request_issued(direct.id, RequestStatus::Pending, credential)
            .await?
    );
    let after = store.access_request(direct.id).await?.context("request")?;
    assert_eq!(after.status, RequestStatus::Issued);
    assert_eq!(after.credential_id, Some(credential));
    assert!(
        !store
            .mark_request_issued(direct.id, RequestStatus::Pending, Uuid::new_v4())
            .await?
    );
    assert_eq!(
        store
            .access_request(direct.id)
            .await?
            .context("request")?
            .credential_id,
        Some(credential),
        "the first credential stays"
    );

    // A denied request is never issued.
    let denied = stored_request(&store, "alice").await?;
    store
        .decide_access_request(denied.id, Decision::Deny, "bob", None, Utc::now())
        .await?;
    for from in [RequestStatus::Pending, RequestStatus::Approved] {
        assert!(
            !store
                .mark_request_issued(denied.id, from, Uuid::new_v4())
                .await?
        );
    }
    assert_eq!(
        store
            .access_request(denied.id)
            .await?
            .context("request")?
            .status,
        RequestStatus::Denied
    );
    Ok(())
}

async fn two_concurrent_collects_issue_exactly_one_credential(store: Arc<dyn Store>) -> Result<()> {
    // Many rounds: one race could be won by whoever starts first without proving anything.
    for round in 0..25 {
        let r = stored_request(&store, "alice").await?;
        store
            .decide_access_request(r.id, Decision::Approve, "bob", None, Utc::now())
            .await?;
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (s1, s2) = (store.clone(), store.clone());
        let one = tokio::spawn(async move {
            s1.mark_request_issued(r.id, RequestStatus::Approved, a)
                .await
        });
        let two = tokio::spawn(async move {
            s2.mark_request_issued(r.id, RequestStatus::Approved, b)
                .await
        });
        let (won_a, won_b) = (one.await??, two.await??);
        assert!(
            won_a ^ won_b,
            "round {round}: exactly one collect must win, got {won_a} and {won_b}"
        );
        let stored = store.access_request(r.id).await?.context("request")?;
        assert_eq!(stored.status, RequestStatus::Issued);
        assert_eq!(stored.credential_id, Some(if won_a { a } else { b }));
    }
    Ok(())
}

async fn only_the_requester_cancels_and_only_while_pending_or_approved(
    store: Arc<dyn Store>,
) -> Result<()> {
    let pending = stored_request(&store, "alice").await?;
    assert!(
        !store.cancel_access_request(pending.id, "bob").await?,
        "not bob's"
    );
    assert!(store.cancel_access_request(pending.id, "alice").await?);
    assert_eq!(
        store
            .access_request(pending.id)
            .await?
            .context("request")?
            .status,
        RequestStatus::Cancelled
    );
    assert!(
        !store.cancel_access_request(pending.id, "alice").await?,
        "cancelled once"
    );
    assert!(
        !store
            .decide_access_request(pending.id, Decision::Approve, "bob", None, Utc::now())
            .await?,
        "a withdrawn request cannot be approved"
    );

    let approved = stored_request(&store, "alice").await?;
    store
        .decide_access_request(approved.id, Decision::Approve, "bob", None, Utc::now())
        .await?;
    assert!(store.cancel_access_request(approved.id, "alice").await?);
    assert!(
        !store
            .mark_request_issued(approved.id, RequestStatus::Approved, Uuid::new_v4())
            .await?,
        "a withdrawn request cannot be collected"
    );

    let issued = stored_request(&store, "alice").await?;
    store
        .mark_request_issued(issued.id, RequestStatus::Pending, Uuid::new_v4())
        .await?;
    let denied = stored_request(&store, "alice").await?;
    store
        .decide_access_request(denied.id, Decision::Deny, "bob", None, Utc::now())
        .await?;
    for (r, status) in [
        (issued, RequestStatus::Issued),
        (denied, RequestStatus::Denied),
    ] {
        assert!(!store.cancel_access_request(r.id, "alice").await?);
        assert_eq!(
            store.access_request(r.id).await?.context("request")?.status,
            status
        );
    }
    assert!(!store.cancel_access_request(Uuid::new_v4(), "alice").await?);
    Ok(())
}

async fn the_database_refuses_a_self_decided_request(engine: &Engine) -> Result<()> {
    let r = stored_request(&engine.store, "bob").await?;
    let raw = engine.raw();
    let refused = raw.run(&[&format!(
        "UPDATE access_requests SET status = 'approved', decided_by = person_login \
         WHERE id = {}",
        raw.uuid(r.id)
    )]);
    let message = format!(
        "{:#}",
        refused
            .err()
            .context("the database stored a request decided by its requester")?
    );
    assert!(
        message.contains("CHECK") || message.contains("check constraint"),
        "expected a CHECK violation, got: {message}"
    );
    assert_eq!(engine.store.access_request(r.id).await?, Some(r));
    Ok(())
}

// --- Audit log ---

async fn audit_entries_are_listed_newest_first_and_paged_by_id(
    store: Arc<dyn Store>,
) -> Result<()> {
    let before = Utc::now() - Duration::seconds(5);
    let mut appended = Vec::new();
    for i in 0..7 {
        let entry = NewAuditEntry {
            actor: format!("actor-{i}"),
            action: "request.approve".to_string(),
            object: (i % 2 == 0).then(|| format!("object-{i}")),
            detail: serde_json::json!({ "i": i, "comment": "<script>alert(1)</script>" }),
            client_addr: (i % 3 == 0).then(|| "192.0.2.1".to_string()),
        };
        let stored = store.append_audit(&entry).await?;
        assert_eq!(stored.actor, entry.actor);
        assert_eq!(stored.object, entry.object);
        assert_eq!(stored.detail, entry.detail);
        assert_eq!(stored.client_addr, entry.client_addr);
        assert!(stored.at >= before && stored.at <= Utc::now() + Duration::seconds(5));
        appended.push(stored);
    }
    assert!(
        appended.windows(2).all(|w| w[0].id < w[1].id),
        "ids grow in order of appending"
    );

    let newest_first: Vec<_> = appended.iter().rev().cloned().collect();
    assert_eq!(store.list_audit(None, 100).await?, newest_first);
    let first_page = store.list_audit(None, 3).await?;
    assert_eq!(first_page, newest_first[..3]);
    let cursor = first_page.last().map(|e| e.id);
    let second_page = store.list_audit(cursor, 3).await?;
    assert_eq!(second_page, newest_first[3..6]);
    let third_page = store
        .list_audit(second_page.last().map(|e| e.id), 3)
        .await?;
    assert_eq!(third_page, newest_first[6..]);
    assert!(store.list_audit(Some(appended[0].id), 3).await?.is_empty());

    // A detail that is not an object is kept under "value", so the column stays an object.
    let wrapped = store
        .append_audit(&NewAuditEntry {
            actor: "root".into(),
            action: "note".into(),
            object: None,
            detail: serde_json::json!("plain text"),
            client_addr: None,
        })
        .await?;
    assert_eq!(wrapped.detail, serde_json::json!({ "value": "plain text" }));
    Ok(())
}

// --- Targets and grants, as the admin pages change them ---

async fn a_target_edit_keeps_clears_or_replaces_the_secret(store: Arc<dyn Store>) -> Result<()> {
    let target = store.add_target(&new_target("shop")).await?;

    let kept = store.edit_target(target.id, &edit(None)).await?;
    assert_eq!(kept.upstream_secret_sealed, Some(vec![1, 2, 3]));
    assert_eq!(kept.host, "db2.internal");
    assert_eq!(kept.port, 6543);
    assert_eq!(kept.database, "app2");
    assert_eq!(kept.tls_mode, UpstreamTls::VerifyFull);
    assert!(kept.ca_pem.as_deref().is_some_and(|p| p.contains("MIIB")));
    assert_eq!(kept.upstream_user, "bastion2");
    assert!(!kept.enabled);
    // What an edit does not cover stays.
    assert_eq!(kept.name, "shop");
    assert_eq!(kept.recording, RecordingPolicy::Buffered);
    assert_eq!(kept.record_max_rows, Some(7));
    assert_eq!(kept.created_at, target.created_at);
    assert_eq!(store.target_by_id(target.id).await?, Some(kept));

    let replaced = store
        .edit_target(target.id, &edit(Some(Some(vec![9, 9]))))
        .await?;
    assert_eq!(replaced.upstream_secret_sealed, Some(vec![9, 9]));
    let cleared = store.edit_target(target.id, &edit(Some(None))).await?;
    assert_eq!(cleared.upstream_secret_sealed, None);
    let still_none = store.edit_target(target.id, &edit(None)).await?;
    assert_eq!(still_none.upstream_secret_sealed, None);
    Ok(())
}

async fn editing_an_unknown_target_is_not_found(store: Arc<dyn Store>) -> Result<()> {
    let err = store
        .edit_target(Uuid::new_v4(), &edit(None))
        .await
        .unwrap_err();
    assert!(is_not_found(&err, "target"), "{err:?}");
    assert!(store.list_targets().await?.is_empty());
    Ok(())
}

async fn grant_approval_is_stored_and_can_be_changed(store: Arc<dyn Store>) -> Result<()> {
    let target = store.add_target(&new_target("shop")).await?;
    let grant = store
        .add_grant(&NewGrant {
            subject: GrantSubject::Group("pgb-users".into()),
            target_id: target.id,
            db_role: "reader".into(),
            max_lifetime_secs: 8 * 3600,
            requires_approval: true,
        })
        .await?;
    assert!(grant.requires_approval);
    let listed = store.list_grants(Some(target.id)).await?;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].requires_approval);
    let matching = store
        .matching_grants("alice", &strings(&["pgb-users"]), target.id, "reader")
        .await?;
    assert_eq!(matching.len(), 1);
    assert!(
        matching[0].requires_approval,
        "matching grants carry it too"
    );

    store.set_grant_approval(grant.id, false).await?;
    assert!(!store.list_grants(None).await?[0].requires_approval);
    store.set_grant_approval(grant.id, true).await?;
    assert!(store.list_grants(None).await?[0].requires_approval);

    let err = store
        .set_grant_approval(Uuid::new_v4(), true)
        .await
        .unwrap_err();
    assert!(is_not_found(&err, "grant"), "{err:?}");
    Ok(())
}
