//! Ending a live session on request, end to end: the request is stored as the console stores it
//! (`Store::request_termination`), the gateway finds it on its next poll, and the client, the
//! session row and the sealed recording all say who ended it and why. On a SQLite store, and on
//! a PostgreSQL store as several gateways would share.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use chrono::Utc;
use gateway::store::{EndReason, Session, SessionFilter, SessionPage, TerminationOutcome};
use harness::Lab;
use tokio_postgres::error::SqlState;

/// A gateway that looks for requests five times a second.
const POLL: (&str, &str) = ("PGBASTION_GATEWAY_REVOCATION_POLL_MILLIS", "200");
/// What the client must read: who, and the reason on one line.
const MESSAGE: &str = "terminating connection: ended by root: INC-7: dropping tables";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_session_ends_with_57p01_naming_who_and_why() -> Result<()> {
    let lab = Lab::start(&[POLL])?;
    terminate_and_prove(&lab).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_session_ends_the_same_with_a_postgres_store() -> Result<()> {
    let (lab, _store_cluster) = Lab::start_with_pg_store(&[POLL])?;
    terminate_and_prove(&lab).await
}

/// The live session of the lab (there is exactly one), once the gateway has stored it.
async fn the_live_session(lab: &Lab) -> Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let live: Vec<Session> = lab
            .sessions()
            .await?
            .into_iter()
            .filter(|s| s.ended_at.is_none())
            .collect();
        match live.as_slice() {
            [one] => return Ok(one.clone()),
            [] if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => bail!("expected one live session, found {other:?}"),
        }
    }
}

async fn terminate_and_prove(lab: &Lab) -> Result<()> {
    let issued = lab.scram_target("shop", &[])?;
    let client = lab.client("shop", &issued.token).await?;
    client.simple_query("select 1").await?;
    let session = the_live_session(lab).await?;
    // The gateway stored alice's groups as the credential check saw them.
    ensure!(session.groups == ["dev"], "groups {:?}", session.groups);
    let store = lab.store().await?;
    let in_dev = SessionFilter {
        group: Some("dev".into()),
        ..SessionFilter::default()
    };
    let page = SessionPage {
        before: None,
        limit: 10,
    };
    let found = store.find_sessions(&in_dev, &page).await?;
    ensure!(
        found.len() == 1 && found[0].session.id == session.id,
        "{found:?}"
    );

    // A statement is running when the request comes: its answer is the FATAL.
    let running = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reason = "INC-7:\n  dropping tables";
    let requested = Instant::now();
    let outcome = store
        .request_termination(session.id, "root", reason, Utc::now())
        .await?;
    ensure!(outcome == TerminationOutcome::Requested, "{outcome:?}");
    // Asking again changes nothing, whoever asks.
    match store
        .request_termination(session.id, "oncall", "again", Utc::now())
        .await?
    {
        TerminationOutcome::AlreadyRequested(first) => {
            ensure!(
                first.requested_by == "root" && first.reason == reason,
                "{first:?}"
            )
        }
        // The gateway may have been quicker than this second request.
        TerminationOutcome::AlreadyEnded => {}
        other => bail!("a second request gave {other:?}"),
    }

    let answer = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .context("the running statement was not ended within 10 s")??;
    let waited = requested.elapsed();
    let err = match answer {
        Ok(rows) => bail!("the statement finished normally: {rows:?}"),
        Err(err) => err,
    };
    let db = err
        .as_db_error()
        .with_context(|| format!("the client got no server error but {err:?}"))?;
    ensure!(
        db.code() == &SqlState::ADMIN_SHUTDOWN,
        "SQLSTATE {:?}",
        db.code()
    );
    ensure!(db.severity() == "FATAL", "severity {}", db.severity());
    ensure!(db.message() == MESSAGE, "message {:?}", db.message());
    ensure!(
        waited < Duration::from_secs(3),
        "ended {waited:?} after the request (polling every 200 ms)"
    );

    // The session row and the recording's end say the same.
    let ended = wait_for_end(lab, session.id).await?;
    ensure!(ended.end_reason == Some(EndReason::Terminated), "{ended:?}");
    ensure!(ended.end_detail.as_deref() == Some(MESSAGE), "{ended:?}");
    let (events, seal) = lab.sealed_recording(session.id).await?;
    ensure!(seal.event_count as usize == events.len());
    let last = events.last().context("no events")?;
    let end: serde_json::Value = serde_json::from_str(&last.body)?;
    ensure!(end["type"] == "session_end", "last event: {end}");
    ensure!(end["reason"] == "terminated", "last event: {end}");
    ensure!(end["detail"] == MESSAGE, "last event: {end}");
    let verified = lab.bastion.cli_ok(&["verify", &session.id.to_string()])?;
    ensure!(
        verified.contains("chain intact, sealed"),
        "verify said: {verified}"
    );

    // Ended: a new request has nothing to do.
    let late = store
        .request_termination(session.id, "root", "too late", Utc::now())
        .await?;
    ensure!(late == TerminationOutcome::AlreadyEnded, "{late:?}");
    // The credential itself still works: termination ends a session, not the access.
    let out = lab.psql("shop", &issued.token, "select 1")?;
    ensure!(out.trim() == "1", "a new session: {out}");
    Ok(())
}

async fn wait_for_end(lab: &Lab, id: uuid::Uuid) -> Result<Session> {
    let store = lab.store().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let session = store.session(id).await?.context("the session row")?;
        if session.ended_at.is_some() {
            return Ok(session);
        }
        ensure!(
            Instant::now() < deadline,
            "the session was not ended in the store within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
