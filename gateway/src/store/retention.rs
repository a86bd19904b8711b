//! The retention job: deletes the ended sessions of targets that keep them for a number of days
//! (`targets.retention_days`), recordings and all, and says so in the audit log.
//!
//! It only talks to the store, so it may run in any process on it; two running at once purge
//! the same sessions at most once each (a session row is deleted once), and each writes an
//! audit entry for what it removed itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{NewAuditEntry, Store, StoreResult};

/// The audit log's actor for what the job does.
pub const RETENTION_ACTOR: &str = "system:retention";
/// The audit log's action for one target's purge.
pub const RETENTION_ACTION: &str = "retention.purge";
/// The longest retention the CLI and the console accept: a century. Longer is "forever".
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// What one round removed from one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub target: String,
    pub days: u32,
    /// Sessions that ended before this went.
    pub cut_off: DateTime<Utc>,
    pub sessions: u64,
}

/// Runs a round at once, then every `interval`, until `stop` is cancelled. A round that fails
/// (the store is down) is logged and tried again at the next interval; a round in progress
/// finishes its current target's purge before stopping is noticed.
pub fn spawn_retention(
    store: Arc<dyn Store>,
    interval: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match run_round(store.as_ref(), Utc::now()).await {
                Ok(purges) => {
                    for p in &purges {
                        tracing::info!(target = %p.target, days = p.days, sessions = p.sessions,
                            cut_off = %p.cut_off, "retention: old sessions deleted");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention round failed; trying again later"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    })
}

/// One round as of `now`: for every target with a retention, deletes its sessions that ended
/// more than its days before `now`, and writes one audit entry per target that lost sessions.
/// Returns those purges.
pub async fn run_round(store: &dyn Store, now: DateTime<Utc>) -> StoreResult<Vec<Purge>> {
    let mut purges = Vec::new();
    for target in store.list_targets().await? {
        let Some(days) = target.retention_days else {
            continue;
        };
        // Days reaching before the calendar's start keep everything.
        let Some(cut_off) = now.checked_sub_signed(TimeDelta::days(i64::from(days))) else {
            continue;
        };
        let sessions = store.purge_sessions(target.id, cut_off).await?;
        if sessions == 0 {
            continue;
        }
        store
            .append_audit(&NewAuditEntry {
                actor: RETENTION_ACTOR.into(),
                action: RETENTION_ACTION.into(),
                object: Some(target.name.clone()),
                detail: serde_json::json!({
                    "target": target.name,
                    "days": days,
                    "sessions": sessions,
                    "ended_before": cut_off.to_rfc3339(),
                }),
                client_addr: None,
            })
            .await?;
        purges.push(Purge {
            target: target.name,
            days,
            cut_off,
            sessions,
        });
    }
    Ok(purges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        EndReason, NewSession, NewTarget, RecordingPolicy, SessionEnd, UpstreamTls,
    };
    use uuid::Uuid;

    async fn store_with_an_old_session() -> (Arc<dyn Store>, Uuid) {
        let store = crate::store::open("sqlite::memory:").await.unwrap();
        let target = store
            .add_target(&NewTarget {
                name: "shop".into(),
                host: "db".into(),
                port: 5432,
                database: "shop".into(),
                tls_mode: UpstreamTls::Require,
                ca_pem: None,
                upstream_user: "app".into(),
                upstream_secret_sealed: None,
                recording: RecordingPolicy::Strict,
                record_max_rows: None,
                record_max_result_bytes: None,
            })
            .await
            .unwrap();
        store.set_target_retention("shop", Some(7)).await.unwrap();
        let long_ago = crate::store::models::now() - TimeDelta::days(30);
        let id = Uuid::new_v4();
        store
            .insert_session(&NewSession {
                id,
                person_login: "alice".into(),
                target_id: target.id,
                target_name: "shop".into(),
                db_role: "app".into(),
                credential_id: Uuid::new_v4(),
                client_addr: "192.0.2.7:5000".into(),
                application_name: None,
                tls_version: None,
                started_at: long_ago,
                recording: RecordingPolicy::Strict,
                groups: Vec::new(),
            })
            .await
            .unwrap();
        let end = SessionEnd {
            ended_at: long_ago,
            reason: EndReason::ClientQuit,
            detail: None,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
        };
        store.end_session(id, &end).await.unwrap();
        (store, id)
    }

    #[tokio::test]
    async fn the_job_runs_a_round_at_once_and_stops_when_told() {
        let (store, old) = store_with_an_old_session().await;
        let stop = CancellationToken::new();
        // An hour between rounds: only the round at start can purge within this test.
        let job = spawn_retention(store.clone(), Duration::from_secs(3600), stop.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.session(old).await.unwrap().is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the job did not purge within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), job)
            .await
            .expect("the job stops when told")
            .unwrap();
        let audit = store.list_audit(None, 10).await.unwrap();
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert_eq!(audit[0].action, RETENTION_ACTION);
        assert_eq!(audit[0].detail["sessions"], 1);
    }
}
