//! [`ConsoleStore`] on the PostgreSQL engine.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::{
    AccessRequest, AuditEntry, AuthMethod, ConsoleSession, ConsoleStore, Decision, LocalAccount,
    NewAuditEntry, RequestFilter, RequestStatus, TargetEdit,
};
use crate::store::models::{duplicate_or_query, now};
use crate::store::postgres::{PgStore, rows};
use crate::store::{Store, StoreError, StoreResult, Target};

macro_rules! account_columns {
    () => {
        "login, password_hash, roles, failed_attempts, locked_until, \
     disabled, created_at, password_changed_at"
    };
}
macro_rules! session_columns {
    () => {
        "token_hash, person_login, roles, auth_method, csrf_token, \
     client_addr, user_agent, created_at, last_seen_at, expires_at, ended_at"
    };
}
macro_rules! request_columns {
    () => {
        "id, person_login, target_id, target_name, db_role, reason, \
     lifetime_secs, status, requested_at, decided_by, decided_at, decision_comment, credential_id"
    };
}
macro_rules! audit_columns {
    () => {
        "id, at, actor, action, object, detail::text AS detail, client_addr"
    };
}

fn account_from_row(row: &PgRow) -> StoreResult<LocalAccount> {
    Ok(LocalAccount {
        login: row.try_get("login")?,
        password_hash: row.try_get("password_hash")?,
        roles: row.try_get("roles")?,
        failed_attempts: row.try_get("failed_attempts")?,
        locked_until: row.try_get("locked_until")?,
        disabled: row.try_get("disabled")?,
        created_at: row.try_get("created_at")?,
        password_changed_at: row.try_get("password_changed_at")?,
    })
}

fn session_from_row(row: &PgRow) -> StoreResult<ConsoleSession> {
    Ok(ConsoleSession {
        token_hash: row.try_get("token_hash")?,
        person_login: row.try_get("person_login")?,
        roles: row.try_get("roles")?,
        auth_method: AuthMethod::parse(row.try_get("auth_method")?)?,
        csrf_token: row.try_get("csrf_token")?,
        client_addr: row.try_get("client_addr")?,
        user_agent: row.try_get("user_agent")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

fn request_from_row(row: &PgRow) -> StoreResult<AccessRequest> {
    Ok(AccessRequest {
        id: row.try_get("id")?,
        person_login: row.try_get("person_login")?,
        target_id: row.try_get("target_id")?,
        target_name: row.try_get("target_name")?,
        db_role: row.try_get("db_role")?,
        reason: row.try_get("reason")?,
        lifetime_secs: row.try_get("lifetime_secs")?,
        status: RequestStatus::parse(row.try_get("status")?)?,
        requested_at: row.try_get("requested_at")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        decision_comment: row.try_get("decision_comment")?,
        credential_id: row.try_get("credential_id")?,
    })
}

fn audit_from_row(row: &PgRow) -> StoreResult<AuditEntry> {
    let detail: &str = row.try_get("detail")?;
    Ok(AuditEntry {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        object: row.try_get("object")?,
        detail: serde_json::from_str(detail)
            .map_err(|e| StoreError::Corrupt(format!("audit_log.detail: {e}")))?,
        client_addr: row.try_get("client_addr")?,
    })
}

fn not_found(what: &'static str, name: impl Into<String>) -> StoreError {
    StoreError::NotFound {
        what,
        name: name.into(),
    }
}

#[async_trait]
impl ConsoleStore for PgStore {
    async fn insert_local_account(&self, a: &LocalAccount) -> StoreResult<()> {
        sqlx::query(concat!(
            "INSERT INTO local_accounts (",
            account_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&a.login)
        .bind(&a.password_hash)
        .bind(&a.roles)
        .bind(a.failed_attempts)
        .bind(a.locked_until)
        .bind(a.disabled)
        .bind(a.created_at)
        .bind(a.password_changed_at)
        .execute(&self.pool)
        .await
        .map_err(|e| duplicate_or_query(e, "local account", &a.login))?;
        Ok(())
    }

    async fn local_account(&self, login: &str) -> StoreResult<Option<LocalAccount>> {
        sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM local_accounts WHERE login = $1"
        ))
        .bind(login)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(account_from_row)
        .transpose()
    }

    async fn list_local_accounts(&self) -> StoreResult<Vec<LocalAccount>> {
        let all = sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM local_accounts ORDER BY login"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows(all, account_from_row)
    }

    async fn set_local_password(&self, login: &str, password_hash: &str) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE local_accounts SET password_hash = $1, password_changed_at = $2, \
             failed_attempts = 0, locked_until = NULL WHERE login = $3",
        )
        .bind(password_hash)
        .bind(now())
        .bind(login)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("local account", login));
        }
        Ok(())
    }

    async fn set_local_roles(&self, login: &str, roles: &[String]) -> StoreResult<()> {
        let done = sqlx::query("UPDATE local_accounts SET roles = $1 WHERE login = $2")
            .bind(roles)
            .bind(login)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("local account", login));
        }
        Ok(())
    }

    async fn record_local_failure(
        &self,
        login: &str,
        locked_until: Option<DateTime<Utc>>,
    ) -> StoreResult<i64> {
        let row = sqlx::query(
            "UPDATE local_accounts SET failed_attempts = failed_attempts + 1, \
             locked_until = COALESCE($1::timestamptz, locked_until) WHERE login = $2 RETURNING failed_attempts",
        )
        .bind(locked_until)
        .bind(login)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => row.try_get(0)?,
            None => 0,
        })
    }

    async fn record_local_success(&self, login: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE local_accounts SET failed_attempts = 0, locked_until = NULL WHERE login = $1",
        )
        .bind(login)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_console_session(&self, s: &ConsoleSession) -> StoreResult<()> {
        sqlx::query(concat!(
            "INSERT INTO console_sessions (",
            session_columns!(),
            ") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&s.token_hash)
        .bind(&s.person_login)
        .bind(&s.roles)
        .bind(s.auth_method.as_str())
        .bind(&s.csrf_token)
        .bind(&s.client_addr)
        .bind(&s.user_agent)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .bind(s.ended_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn console_session(&self, token_hash: &[u8]) -> StoreResult<Option<ConsoleSession>> {
        sqlx::query(concat!(
            "SELECT ",
            session_columns!(),
            " FROM console_sessions WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }

    async fn touch_console_session(&self, token_hash: &[u8], at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE console_sessions SET last_seen_at = $1 \
             WHERE token_hash = $2 AND last_seen_at < $3",
        )
        .bind(at)
        .bind(token_hash)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn end_console_session(&self, token_hash: &[u8], at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE console_sessions SET ended_at = $1 WHERE token_hash = $2 AND ended_at IS NULL",
        )
        .bind(at)
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn end_console_sessions_of(&self, login: &str, at: DateTime<Utc>) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE console_sessions SET ended_at = $1 WHERE person_login = $2 AND ended_at IS NULL",
        )
        .bind(at)
        .bind(login)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn insert_access_request(&self, r: &AccessRequest) -> StoreResult<()> {
        sqlx::query(concat!(
            "INSERT INTO access_requests (",
            request_columns!(),
            ") \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ))
        .bind(r.id)
        .bind(&r.person_login)
        .bind(r.target_id)
        .bind(&r.target_name)
        .bind(&r.db_role)
        .bind(&r.reason)
        .bind(r.lifetime_secs)
        .bind(r.status.as_str())
        .bind(r.requested_at)
        .bind(&r.decided_by)
        .bind(r.decided_at)
        .bind(&r.decision_comment)
        .bind(r.credential_id)
        .execute(&self.pool)
        .await
        .map_err(|e| duplicate_or_query(e, "access request", r.id.to_string()))?;
        Ok(())
    }

    async fn access_request(&self, id: Uuid) -> StoreResult<Option<AccessRequest>> {
        sqlx::query(concat!(
            "SELECT ",
            request_columns!(),
            " FROM access_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(request_from_row)
        .transpose()
    }

    async fn access_request_for_credential(
        &self,
        credential_id: Uuid,
    ) -> StoreResult<Option<AccessRequest>> {
        sqlx::query(concat!(
            "SELECT ",
            request_columns!(),
            " FROM access_requests WHERE credential_id = $1"
        ))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(request_from_row)
        .transpose()
    }

    async fn list_access_requests(&self, f: &RequestFilter) -> StoreResult<Vec<AccessRequest>> {
        let all = sqlx::query(concat!(
            "SELECT ",
            request_columns!(),
            " FROM access_requests \
             WHERE ($1::text IS NULL OR person_login = $1) AND ($2::text IS NULL OR status = $2) \
             ORDER BY requested_at DESC, id DESC LIMIT $3"
        ))
        .bind(&f.person_login)
        .bind(f.status.map(RequestStatus::as_str))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows(all, request_from_row)
    }

    async fn decide_access_request(
        &self,
        id: Uuid,
        decision: Decision,
        by: &str,
        comment: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let status = match decision {
            Decision::Approve => RequestStatus::Approved,
            Decision::Deny => RequestStatus::Denied,
        };
        let done = sqlx::query(
            "UPDATE access_requests SET status = $1, decided_by = $2, decided_at = $3, \
             decision_comment = $4 \
             WHERE id = $5 AND status = 'pending' AND person_login <> $6",
        )
        .bind(status.as_str())
        .bind(by)
        .bind(at)
        .bind(comment)
        .bind(id)
        .bind(by)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn mark_request_issued(
        &self,
        id: Uuid,
        from: RequestStatus,
        credential_id: Uuid,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE access_requests SET status = 'issued', credential_id = $1 \
             WHERE id = $2 AND status = $3",
        )
        .bind(credential_id)
        .bind(id)
        .bind(from.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn cancel_access_request(&self, id: Uuid, login: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE access_requests SET status = 'cancelled' \
             WHERE id = $1 AND person_login = $2 AND status IN ('pending', 'approved')",
        )
        .bind(id)
        .bind(login)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn append_audit(&self, e: &NewAuditEntry) -> StoreResult<AuditEntry> {
        let detail = if e.detail.is_object() {
            e.detail.to_string()
        } else {
            serde_json::json!({ "value": e.detail }).to_string()
        };
        let row = sqlx::query(concat!(
            "INSERT INTO audit_log (at, actor, action, object, detail, client_addr) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING ",
            audit_columns!()
        ))
        .bind(now())
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.object)
        .bind(detail)
        .bind(&e.client_addr)
        .fetch_one(&self.pool)
        .await?;
        audit_from_row(&row)
    }

    async fn list_audit(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<AuditEntry>> {
        let all = sqlx::query(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows(all, audit_from_row)
    }

    async fn edit_target(&self, id: Uuid, edit: &TargetEdit) -> StoreResult<Target> {
        let (replace_secret, secret) = match &edit.upstream_secret_sealed {
            Some(secret) => (true, secret.clone()),
            None => (false, None),
        };
        let done = sqlx::query(
            "UPDATE targets SET host = $1, port = $2, database = $3, tls_mode = $4, ca_pem = $5, \
             upstream_user = $6, enabled = $7, \
             upstream_secret_sealed = CASE WHEN $8 THEN $9 ELSE upstream_secret_sealed END \
             WHERE id = $10",
        )
        .bind(&edit.host)
        .bind(i32::from(edit.port))
        .bind(&edit.database)
        .bind(edit.tls_mode.as_str())
        .bind(&edit.ca_pem)
        .bind(&edit.upstream_user)
        .bind(edit.enabled)
        .bind(replace_secret)
        .bind(secret)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("target", id.to_string()));
        }
        self.target_by_id(id)
            .await?
            .ok_or_else(|| not_found("target", id.to_string()))
    }

    async fn set_grant_approval(&self, id: Uuid, requires_approval: bool) -> StoreResult<()> {
        let done = sqlx::query("UPDATE grants SET requires_approval = $1 WHERE id = $2")
            .bind(requires_approval)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("grant", id.to_string()));
        }
        Ok(())
    }
}
