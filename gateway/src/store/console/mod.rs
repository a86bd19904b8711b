//! What the console keeps: local accounts, signed-in browser sessions, access requests and their
//! approval, and the audit log. A part of [`super::Store`] (its supertrait), implemented by both
//! engines in this folder, so that `Arc<dyn Store>` reaches all of it.

mod postgres;
mod sqlite;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreResult;

/// A password account (bootstrap and break-glass). The login is also the person's login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAccount {
    pub login: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Console roles (`user`, `approver`, `auditor`, `admin`).
    pub roles: Vec<String>,
    /// Failed sign-ins since the last good one.
    pub failed_attempts: i64,
    /// Sign-in is refused until then (throttling after failures).
    pub locked_until: Option<DateTime<Utc>>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
}

/// How someone signed in to the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Oidc,
    Local,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Oidc => "oidc",
            AuthMethod::Local => "local",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "oidc" => Ok(AuthMethod::Oidc),
            "local" => Ok(AuthMethod::Local),
            other => Err(super::StoreError::Corrupt(format!(
                "console_sessions.auth_method '{other}'"
            ))),
        }
    }
}

/// A signed-in browser. The cookie carries a random token; the store keeps its SHA-256 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub token_hash: Vec<u8>,
    pub person_login: String,
    /// Console roles at sign-in (from the provider's groups, or the local account).
    pub roles: Vec<String>,
    pub auth_method: AuthMethod,
    /// The value every state-changing form must send back.
    pub csrf_token: String,
    pub client_addr: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Absolute timeout.
    pub expires_at: DateTime<Utc>,
    /// Signed out, or ended by an admin.
    pub ended_at: Option<DateTime<Utc>>,
}

/// Where an access request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    /// Waiting for an approver.
    Pending,
    /// Approved; the requester can collect the credential (once).
    Approved,
    Denied,
    /// The credential was issued (`credential_id`).
    Issued,
    /// Withdrawn by the requester.
    Cancelled,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Issued => "issued",
            RequestStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "pending" => RequestStatus::Pending,
            "approved" => RequestStatus::Approved,
            "denied" => RequestStatus::Denied,
            "issued" => RequestStatus::Issued,
            "cancelled" => RequestStatus::Cancelled,
            other => {
                return Err(super::StoreError::Corrupt(format!(
                    "access_requests.status '{other}'"
                )));
            }
        })
    }
}

/// A person's request for a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    pub id: Uuid,
    pub person_login: String,
    pub target_id: Uuid,
    pub target_name: String,
    pub db_role: String,
    pub reason: String,
    pub lifetime_secs: i64,
    pub status: RequestStatus,
    pub requested_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_comment: Option<String>,
    pub credential_id: Option<Uuid>,
}

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

/// Which requests to list.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub person_login: Option<String>,
    pub status: Option<RequestStatus>,
    pub limit: i64,
}

/// One line of the audit log, to append.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    pub actor: String,
    /// A dotted verb, e.g. `request.approve`, `credential.revoke`, `target.add`.
    pub action: String,
    /// What it was done to (a request id, a target name...).
    pub object: Option<String>,
    /// More about it, as a JSON object.
    pub detail: serde_json::Value,
    pub client_addr: Option<String>,
}

/// One line of the audit log, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub object: Option<String>,
    pub detail: serde_json::Value,
    pub client_addr: Option<String>,
}

/// A change to a target's connection settings. The secret is write-only: `None` keeps it.
#[derive(Debug, Clone)]
pub struct TargetEdit {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub tls_mode: super::UpstreamTls,
    pub ca_pem: Option<String>,
    pub upstream_user: String,
    /// `Some(sealed)` replaces the stored secret; `Some(None)` clears it; `None` keeps it.
    pub upstream_secret_sealed: Option<Option<Vec<u8>>>,
    pub enabled: bool,
}

/// The console's part of the store.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    // --- local accounts ---
    /// Fails with `Duplicate` if the login has an account.
    async fn insert_local_account(&self, account: &LocalAccount) -> StoreResult<()>;
    async fn local_account(&self, login: &str) -> StoreResult<Option<LocalAccount>>;
    async fn list_local_accounts(&self) -> StoreResult<Vec<LocalAccount>>;
    /// Sets a new password hash and clears failures; `NotFound` without the account.
    async fn set_local_password(&self, login: &str, password_hash: &str) -> StoreResult<()>;
    /// `NotFound` without the account.
    async fn set_local_roles(&self, login: &str, roles: &[String]) -> StoreResult<()>;
    /// Counts one more failed sign-in and locks the account until `locked_until` (if given);
    /// returns the failures counted so far.
    async fn record_local_failure(
        &self,
        login: &str,
        locked_until: Option<DateTime<Utc>>,
    ) -> StoreResult<i64>;
    /// Clears failures and lock after a good sign-in.
    async fn record_local_success(&self, login: &str) -> StoreResult<()>;

    // --- console sessions ---
    async fn insert_console_session(&self, session: &ConsoleSession) -> StoreResult<()>;
    async fn console_session(&self, token_hash: &[u8]) -> StoreResult<Option<ConsoleSession>>;
    /// Moves `last_seen_at` forward (the idle timeout counts from it).
    async fn touch_console_session(&self, token_hash: &[u8], at: DateTime<Utc>) -> StoreResult<()>;
    /// Ends one session (sign-out); returns whether it was live.
    async fn end_console_session(&self, token_hash: &[u8], at: DateTime<Utc>) -> StoreResult<bool>;
    /// Ends every live session of a person; returns how many.
    async fn end_console_sessions_of(&self, login: &str, at: DateTime<Utc>) -> StoreResult<u64>;

    // --- access requests ---
    async fn insert_access_request(&self, request: &AccessRequest) -> StoreResult<()>;
    async fn access_request(&self, id: Uuid) -> StoreResult<Option<AccessRequest>>;
    /// The request a credential was issued for (none for credentials from `token issue`).
    async fn access_request_for_credential(
        &self,
        credential_id: Uuid,
    ) -> StoreResult<Option<AccessRequest>>;
    /// Newest first.
    async fn list_access_requests(&self, filter: &RequestFilter)
    -> StoreResult<Vec<AccessRequest>>;
    /// Approves or denies a pending request, unless `by` is its requester. Returns false (and
    /// changes nothing) when the request is not pending, or is `by`'s own.
    async fn decide_access_request(
        &self,
        id: Uuid,
        decision: Decision,
        by: &str,
        comment: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Marks a request issued with its credential, if it is in `from` (pending for a grant
    /// without approval, approved otherwise). Returns false when it was not: someone else
    /// collected it, or it was decided meanwhile. Exactly one caller wins.
    async fn mark_request_issued(
        &self,
        id: Uuid,
        from: RequestStatus,
        credential_id: Uuid,
    ) -> StoreResult<bool>;
    /// The requester withdraws a pending or approved request; false if it was neither.
    async fn cancel_access_request(&self, id: Uuid, login: &str) -> StoreResult<bool>;

    // --- audit log ---
    async fn append_audit(&self, entry: &NewAuditEntry) -> StoreResult<AuditEntry>;
    /// Newest first, entries with `id < before` (all when `None`), at most `limit`.
    async fn list_audit(&self, before: Option<i64>, limit: i64) -> StoreResult<Vec<AuditEntry>>;

    // --- targets and grants, as the admin pages change them ---
    /// `NotFound` when there is no such target.
    async fn edit_target(&self, id: Uuid, edit: &TargetEdit) -> StoreResult<super::Target>;
    /// Whether a grant needs approval; `NotFound` when there is no such grant.
    async fn set_grant_approval(&self, id: Uuid, requires_approval: bool) -> StoreResult<()>;
}

fn decode_roles(column: &str, json: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(json).map_err(|e| {
        super::StoreError::Corrupt(format!("{column} is not a JSON list of strings: {e}"))
    })
}
