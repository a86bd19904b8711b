//! Rows of the store, as the rest of pgbastion sees them (engine-neutral, native types).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A person who can hold credentials. `login` is what they type as the Postgres `user`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: Uuid,
    pub login: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// Group names (from the identity provider or set by an admin); grants can name a group.
    pub groups: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// How the gateway protects its connection to the upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// Plain TCP (only for servers on a trusted network or loopback).
    Disable,
    /// TLS, without checking the server certificate.
    Require,
    /// TLS, certificate checked against the target's CA and host name.
    VerifyFull,
}

impl UpstreamTls {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamTls::Disable => "disable",
            UpstreamTls::Require => "require",
            UpstreamTls::VerifyFull => "verify-full",
        }
    }
}

impl std::str::FromStr for UpstreamTls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disable" => Ok(UpstreamTls::Disable),
            "require" => Ok(UpstreamTls::Require),
            "verify-full" => Ok(UpstreamTls::VerifyFull),
            other => Err(format!(
                "unknown upstream TLS mode '{other}': use disable, require or verify-full"
            )),
        }
    }
}

/// How a target's sessions are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingPolicy {
    /// A client message is not forwarded until its events are durably stored: while the store
    /// is unreachable, statements are refused.
    #[default]
    Strict,
    /// Messages are forwarded first and recorded asynchronously through a bounded buffer; when
    /// the buffer cannot drain, the session is ended rather than events dropped.
    Buffered,
    /// Session metadata only: no statements are recorded.
    Off,
}

impl RecordingPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingPolicy::Strict => "strict",
            RecordingPolicy::Buffered => "buffered",
            RecordingPolicy::Off => "off",
        }
    }
}

impl std::str::FromStr for RecordingPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(RecordingPolicy::Strict),
            "buffered" => Ok(RecordingPolicy::Buffered),
            "off" => Ok(RecordingPolicy::Off),
            other => Err(format!(
                "unknown recording policy '{other}': use strict, buffered or off"
            )),
        }
    }
}

/// A database that people reach through the gateway. `name` is what they type as `database`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub id: Uuid,
    pub name: String,
    pub host: String,
    pub port: u16,
    /// The real database name on the upstream server.
    pub database: String,
    pub tls_mode: UpstreamTls,
    /// PEM CA bundle for `verify-full`.
    pub ca_pem: Option<String>,
    /// The login the gateway uses upstream; people never see its secret.
    pub upstream_user: String,
    /// The upstream password, sealed with the data directory's secret key (see `keys::SecretBox`).
    /// `None` for trust or certificate logins.
    pub upstream_secret_sealed: Option<Vec<u8>>,
    pub recording: RecordingPolicy,
    /// Rows kept per statement; None = the gateway's configured default, 0 = no rows.
    pub record_max_rows: Option<i64>,
    /// Bytes of row values kept per statement; None = configured default, 0 = none.
    pub record_max_result_bytes: Option<i64>,
    /// Days its ended sessions and their recordings are kept (see `store::retention`); None
    /// keeps them forever.
    pub retention_days: Option<u32>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A database role the gateway can log in as on a target, with its sealed secret.
///
/// Sessions run as the granted role itself (not as a shared login switching roles with
/// `SET ROLE`, which the client could undo), so each grantable role other than the target's
/// `upstream_user` needs one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetLogin {
    pub target_id: Uuid,
    /// The PostgreSQL role name, used as the upstream `user`.
    pub role: String,
    pub secret_sealed: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

/// What a target is created from.
#[derive(Debug, Clone)]
pub struct NewTarget {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub tls_mode: UpstreamTls,
    pub ca_pem: Option<String>,
    pub upstream_user: String,
    pub upstream_secret_sealed: Option<Vec<u8>>,
    pub recording: RecordingPolicy,
    /// Rows kept per statement; None = the gateway's configured default, 0 = no rows.
    pub record_max_rows: Option<i64>,
    /// Bytes of row values kept per statement; None = configured default, 0 = none.
    pub record_max_result_bytes: Option<i64>,
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum GrantSubject {
    Person(String),
    Group(String),
}

/// Permission for a person or group to use a database role on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: Uuid,
    pub subject: GrantSubject,
    pub target_id: Uuid,
    pub target_name: String,
    pub db_role: String,
    /// Upper bound on the lifetime of credentials minted under this grant.
    pub max_lifetime_secs: i64,
    /// A credential under this grant needs a second person's approval (console requests).
    pub requires_approval: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewGrant {
    pub subject: GrantSubject,
    pub target_id: Uuid,
    pub db_role: String,
    pub max_lifetime_secs: i64,
    pub requires_approval: bool,
}

/// A minted credential (the token itself is never stored, only what it says).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub id: Uuid,
    pub person_login: String,
    pub target_id: Uuid,
    pub target_name: String,
    pub db_role: String,
    pub issued_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Why it was requested (free text, shown to auditors).
    pub reason: Option<String>,
}

/// Why a gateway session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    ClientQuit,
    ServerClosed,
    Revoked,
    Terminated,
    GatewayShutdown,
    UpstreamFailed,
    Error,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientQuit => "client_quit",
            EndReason::ServerClosed => "server_closed",
            EndReason::Revoked => "revoked",
            EndReason::Terminated => "terminated",
            EndReason::GatewayShutdown => "gateway_shutdown",
            EndReason::UpstreamFailed => "upstream_failed",
            EndReason::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "client_quit" => EndReason::ClientQuit,
            "server_closed" => EndReason::ServerClosed,
            "revoked" => EndReason::Revoked,
            "terminated" => EndReason::Terminated,
            "gateway_shutdown" => EndReason::GatewayShutdown,
            "upstream_failed" => EndReason::UpstreamFailed,
            "error" => EndReason::Error,
            _ => return None,
        })
    }
}

/// A gateway session as it starts (after the credential was accepted).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub person_login: String,
    pub target_id: Uuid,
    pub target_name: String,
    pub db_role: String,
    pub credential_id: Uuid,
    pub client_addr: String,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
    pub started_at: DateTime<Utc>,
    /// How the session is recorded: its target's policy when it started. Stored so that
    /// `verify` can tell a session recorded with `off` (no events, rightly) from one whose
    /// events were deleted.
    pub recording: RecordingPolicy,
    /// The person's groups at login, those the credential check used (and the recording's
    /// `session_start` names), so sessions can be found by group as it was then.
    pub groups: Vec<String>,
}

/// How a gateway session ended.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    pub ended_at: DateTime<Utc>,
    pub reason: EndReason,
    /// A human-readable detail (the upstream error, the admin's reason, ...).
    pub detail: Option<String>,
    pub bytes_client_to_server: i64,
    pub bytes_server_to_client: i64,
}

/// A gateway session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub person_login: String,
    pub target_id: Uuid,
    pub target_name: String,
    pub db_role: String,
    pub credential_id: Uuid,
    pub client_addr: String,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<EndReason>,
    pub end_detail: Option<String>,
    pub bytes_client_to_server: i64,
    pub bytes_server_to_client: i64,
    /// How the session was recorded (see [`NewSession::recording`]); `strict` for sessions
    /// stored before pgbastion kept it.
    pub recording: RecordingPolicy,
    /// The person's groups when the session started (see [`NewSession::groups`]); empty for
    /// sessions stored before pgbastion kept them.
    pub groups: Vec<String>,
}

/// Which sessions [`find_sessions`](super::Store::find_sessions) returns; every field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// The person's login.
    pub person: Option<String>,
    /// The target's name (as it was when the session started).
    pub target: Option<String>,
    /// Sessions started at or after this time.
    pub started_after: Option<DateTime<Utc>>,
    /// Sessions started strictly before this time.
    pub started_before: Option<DateTime<Utc>>,
    pub status: Option<SessionStatus>,
    /// Sessions of people who were in this group when the session started.
    pub group: Option<String>,
}

/// The longest termination reason the store keeps, in characters (the migrations' CHECK).
pub const MAX_TERMINATION_REASON_CHARS: usize = 500;

/// A request to end a live session, as stored (see
/// [`request_termination`](super::Store::request_termination)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Termination {
    pub session_id: Uuid,
    /// Who asked (a console login).
    pub requested_by: String,
    /// Why, in their words: non-empty, at most [`MAX_TERMINATION_REASON_CHARS`] characters.
    pub reason: String,
    pub requested_at: DateTime<Utc>,
}

/// What became of a termination request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminationOutcome {
    /// Stored: the gateway running the session ends it within one poll.
    Requested,
    /// Someone asked before (this request changed nothing): their request.
    AlreadyRequested(Termination),
    /// The session has ended already; nothing to do.
    AlreadyEnded,
    /// No such session.
    NotFound,
}

/// Where a session stands, derived from its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Not ended yet.
    Live,
    /// Ended in any way but by an admin (terminated) or a revocation.
    Ended,
    /// Ended by an admin or by revoking its credential.
    Terminated,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Live => "live",
            SessionStatus::Ended => "ended",
            SessionStatus::Terminated => "terminated",
        }
    }
}

impl std::str::FromStr for SessionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(SessionStatus::Live),
            "ended" => Ok(SessionStatus::Ended),
            "terminated" => Ok(SessionStatus::Terminated),
            other => Err(format!(
                "unknown session status '{other}': use live, ended or terminated"
            )),
        }
    }
}

/// One page of sessions, newest first: ordered by `(started_at DESC, id DESC)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPage {
    /// Keyset cursor: only sessions ordered after this `(started_at, id)`, i.e. the last
    /// session of the previous page. `None` for the first page.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many sessions (negative counts as 0).
    pub limit: i64,
}

/// A session with what its recording holds so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    #[serde(flatten)]
    pub session: Session,
    /// Events stored for the session (their highest seq + 1: seqs have no gaps).
    pub event_count: i64,
    /// Whether the recording's seal is stored.
    pub sealed: bool,
}

impl SessionSummary {
    /// The cursor that asks for the page after this session.
    pub fn cursor(&self) -> (DateTime<Utc>, Uuid) {
        (self.session.started_at, self.session.id)
    }
}

impl GrantSubject {
    /// The stored `subject_kind`: "person" or "group".
    pub fn kind(&self) -> &'static str {
        match self {
            GrantSubject::Person(_) => "person",
            GrantSubject::Group(_) => "group",
        }
    }

    /// The login or group name.
    pub fn name(&self) -> &str {
        match self {
            GrantSubject::Person(name) | GrantSubject::Group(name) => name,
        }
    }

    /// Rebuilds a subject from its stored kind and name; `None` for an unknown kind.
    pub fn from_parts(kind: &str, name: String) -> Option<Self> {
        match kind {
            "person" => Some(GrantSubject::Person(name)),
            "group" => Some(GrantSubject::Group(name)),
            _ => None,
        }
    }
}

impl std::fmt::Display for GrantSubject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

// --- Helpers shared by the two engines (column values back into models, errors) ---
//
// The migrations' CHECK constraints make these failures unlikely; they exist so that a row
// edited by hand surfaces as `Corrupt` naming the column, not as a panic.

pub(super) fn decode_tls_mode(value: &str) -> super::StoreResult<UpstreamTls> {
    value
        .parse()
        .map_err(|_| super::StoreError::Corrupt(format!("targets.tls_mode is '{value}'")))
}

/// A recording policy read from `column` ("targets.recording", "sessions.recording").
pub(super) fn decode_recording(column: &str, value: &str) -> super::StoreResult<RecordingPolicy> {
    value
        .parse()
        .map_err(|_| super::StoreError::Corrupt(format!("{column} is '{value}'")))
}

/// A target's retention as stored: positive days (the migrations' CHECK), or none.
pub(super) fn decode_retention(value: Option<i64>) -> super::StoreResult<Option<u32>> {
    value
        .map(|days| {
            u32::try_from(days).ok().filter(|d| *d > 0).ok_or_else(|| {
                super::StoreError::Corrupt(format!("targets.retention_days is {days}"))
            })
        })
        .transpose()
}

pub(super) fn decode_port(value: i64) -> super::StoreResult<u16> {
    u16::try_from(value).map_err(|_| super::StoreError::Corrupt(format!("targets.port is {value}")))
}

pub(super) fn decode_subject(kind: &str, name: String) -> super::StoreResult<GrantSubject> {
    GrantSubject::from_parts(kind, name)
        .ok_or_else(|| super::StoreError::Corrupt(format!("grants.subject_kind is '{kind}'")))
}

pub(super) fn decode_end_reason(value: Option<&str>) -> super::StoreResult<Option<EndReason>> {
    value
        .map(|v| {
            EndReason::parse(v)
                .ok_or_else(|| super::StoreError::Corrupt(format!("sessions.end_reason is '{v}'")))
        })
        .transpose()
}

/// The WHERE condition of a session status, for a query naming the sessions table `s`
/// (constant SQL, the same for both engines: no values to bind).
pub(super) fn session_status_condition(status: SessionStatus) -> &'static str {
    match status {
        SessionStatus::Live => " AND s.ended_at IS NULL",
        SessionStatus::Terminated => " AND s.end_reason IN ('terminated', 'revoked')",
        SessionStatus::Ended => {
            " AND s.ended_at IS NOT NULL AND s.end_reason NOT IN ('terminated', 'revoked')"
        }
    }
}

/// What a termination request that stored nothing met: the session `ended` (when it exists at
/// all), and the request made `earlier`, if any.
pub(super) fn termination_outcome(ended: bool, earlier: Option<Termination>) -> TerminationOutcome {
    match earlier {
        // Ended first: once the session is over, a request for it has nothing left to do.
        _ if ended => TerminationOutcome::AlreadyEnded,
        Some(first) => TerminationOutcome::AlreadyRequested(first),
        // Live and without a request, yet the insert matched nothing: only a session that
        // ended in between could do that, and ended_at never goes back to NULL.
        None => TerminationOutcome::AlreadyEnded,
    }
}

/// A unique violation becomes `Duplicate` (something the user can fix by choosing another
/// name); any other failure stays a query error.
pub(super) fn duplicate_or_query(
    err: sqlx::Error,
    what: &'static str,
    name: impl Into<String>,
) -> super::StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => super::StoreError::Duplicate {
            what,
            name: name.into(),
        },
        _ => super::StoreError::Query(err),
    }
}

/// A foreign-key violation on a grant means its target is gone (removed concurrently).
pub(super) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

/// The name a duplicate grant is reported under, e.g. "group dba as role admin on prod".
pub(super) fn grant_label(grant: &NewGrant, target_name: &str) -> String {
    format!(
        "{} as role {} on {target_name}",
        grant.subject, grant.db_role
    )
}

/// The current time at the precision both engines keep (microseconds, like PostgreSQL), so a
/// row returned by an insert equals the row read back later.
pub(super) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// One recorded event as stored: its canonical JSON and its link in the session's hash chain
/// (see `record::chain`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub session_id: Uuid,
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// The event type (`query`, `bind`, `error`...), for filtering without parsing `body`.
    pub kind: String,
    /// The event as canonical JSON: exactly the bytes that were hashed.
    pub body: String,
    /// SHA-256 of the previous link (32 bytes).
    pub prev_hash: Vec<u8>,
    /// SHA-256 over `prev_hash` and `body` (32 bytes).
    pub hash: Vec<u8>,
}

/// The signature that closes a recording: the final hash and the event count, signed with the
/// gateway's Ed25519 recording key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingSeal {
    pub session_id: Uuid,
    pub event_count: i64,
    pub final_hash: Vec<u8>,
    pub signature: Vec<u8>,
    /// Which key signed (SHA-256 of its public key, hex), so old recordings stay verifiable
    /// after a key rotation.
    pub key_id: String,
    pub sealed_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_policy_parses_its_own_names_and_defaults_to_strict() {
        for policy in [
            RecordingPolicy::Strict,
            RecordingPolicy::Buffered,
            RecordingPolicy::Off,
        ] {
            assert_eq!(policy.as_str().parse(), Ok(policy));
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{}\"", policy.as_str()));
        }
        assert_eq!(RecordingPolicy::default(), RecordingPolicy::Strict);
    }

    #[test]
    fn unknown_recording_policy_names_the_accepted_values() {
        let err = "paranoid".parse::<RecordingPolicy>().unwrap_err();
        assert!(err.contains("'paranoid'") && err.contains("strict, buffered or off"));
    }

    #[test]
    fn session_status_round_trips_and_refuses_others() {
        for status in [
            SessionStatus::Live,
            SessionStatus::Ended,
            SessionStatus::Terminated,
        ] {
            assert_eq!(status.as_str().parse(), Ok(status));
        }
        assert!(
            "dead"
                .parse::<SessionStatus>()
                .unwrap_err()
                .contains("live")
        );
    }
}
