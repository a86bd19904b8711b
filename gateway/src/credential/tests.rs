use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::*;
use crate::store::*;

fn signer_in(dir: &tempfile::TempDir, file: &str) -> CredentialSigner {
    CredentialSigner::load_or_create(&dir.path().join(file), "pgbastion", "pgbastion-gateway")
        .unwrap()
}

fn credential(issued_at: DateTime<Utc>, lifetime: i64) -> Credential {
    Credential {
        id: Uuid::new_v4(),
        person_login: "alice".into(),
        target_id: Uuid::new_v4(),
        target_name: "shop".into(),
        db_role: "app_ro".into(),
        issued_at: whole_seconds(issued_at),
        expires_at: whole_seconds(issued_at) + Duration::seconds(lifetime),
        revoked_at: None,
        reason: None,
    }
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap()
}

fn with_payload(token: &str, claims: &serde_json::Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = B64.encode(serde_json::to_vec(claims).unwrap());
    format!("{}.{}.{}", parts[0], payload, parts[2])
}

#[test]
fn minted_token_verifies_with_the_same_claims() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let cred = credential(Utc::now(), 600);
    let claims = signer.verify(&signer.mint(&cred).unwrap()).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.tgt, "shop");
    assert_eq!(claims.tid, cred.target_id);
    assert_eq!(claims.role, "app_ro");
    assert_eq!(claims.jti, cred.id);
    assert_eq!(claims.exp, cred.expires_at.timestamp());
    assert_eq!(claims.iss, "pgbastion");
    assert_eq!(claims.aud, "pgbastion-gateway");
}

#[test]
fn signing_key_is_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = signer_in(&dir, "signing.key");
    let mode = std::fs::metadata(dir.path().join("signing.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let second = signer_in(&dir, "signing.key");
    assert_eq!(first.public_key_pem(), second.public_key_pem());
    assert!(
        first
            .public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let token = first.mint(&credential(Utc::now(), 60)).unwrap();
    assert!(second.verify(&token).is_ok());
}

#[test]
fn non_ed25519_signing_key_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    std::fs::write(&path, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let err = CredentialSigner::load_or_create(&path, "i", "a")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("signing.key") && err.contains("Ed25519"),
        "{err}"
    );
}

#[test]
fn token_signed_by_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ours = signer_in(&dir, "ours.key");
    let theirs = signer_in(&dir, "theirs.key");
    let token = theirs.mint(&credential(Utc::now(), 600)).unwrap();
    assert_eq!(ours.verify(&token), Err(TokenRejection::BadSignature));
}

#[test]
fn alg_none_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let real = signer.mint(&credential(Utc::now(), 600)).unwrap();
    let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = real.split('.').nth(1).unwrap();
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert!(signer.verify(&token).is_err(), "{token}");
    }
}

#[test]
fn hs256_token_keyed_with_the_public_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let claims: Claims = serde_json::from_value(claims_of(
        &signer.mint(&credential(Utc::now(), 600)).unwrap(),
    ))
    .unwrap();
    let key = jsonwebtoken::EncodingKey::from_secret(signer.public_key_pem().as_bytes());
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .unwrap();
    assert_eq!(signer.verify(&forged), Err(TokenRejection::BadSignature));
}

#[test]
fn altered_claims_under_the_original_signature_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let token = signer.mint(&credential(Utc::now(), 600)).unwrap();
    let mut claims = claims_of(&token);
    claims["role"] = "postgres".into();
    assert_eq!(
        signer.verify(&with_payload(&token, &claims)),
        Err(TokenRejection::BadSignature)
    );
    let mut claims = claims_of(&token);
    claims["exp"] = (claims["exp"].as_i64().unwrap() + 86_400).into();
    assert_eq!(
        signer.verify(&with_payload(&token, &claims)),
        Err(TokenRejection::BadSignature)
    );
}

#[test]
fn expired_token_is_refused_with_its_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let cred = credential(Utc::now() - Duration::seconds(120), 60);
    let err = signer.verify(&signer.mint(&cred).unwrap()).unwrap_err();
    assert_eq!(
        err,
        TokenRejection::Expired {
            at: cred.expires_at
        }
    );
}

#[test]
fn expiry_allows_a_few_seconds_of_clock_skew_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let cred = credential(Utc::now() - Duration::seconds(60), 60);
    let token = signer.mint(&cred).unwrap();
    let just_after = cred.expires_at + Duration::seconds(LEEWAY_SECS - 1);
    assert!(signer.verify_at(&token, just_after).is_ok());
    let too_late = cred.expires_at + Duration::seconds(LEEWAY_SECS);
    assert!(matches!(
        signer.verify_at(&token, too_late),
        Err(TokenRejection::Expired { .. })
    ));
}

#[test]
fn token_from_the_future_is_not_yet_valid() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let token = signer
        .mint(&credential(Utc::now() + Duration::seconds(300), 600))
        .unwrap();
    assert_eq!(signer.verify(&token), Err(TokenRejection::NotYetValid));
}

#[test]
fn token_for_another_audience_or_issuer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing.key");
    let ours = CredentialSigner::load_or_create(&path, "pgbastion", "gw-a").unwrap();
    let other_aud = CredentialSigner::load_or_create(&path, "pgbastion", "gw-b").unwrap();
    let other_iss = CredentialSigner::load_or_create(&path, "someone", "gw-a").unwrap();
    let cred = credential(Utc::now(), 600);
    assert_eq!(
        ours.verify(&other_aud.mint(&cred).unwrap()),
        Err(TokenRejection::WrongAudience)
    );
    assert_eq!(
        ours.verify(&other_iss.mint(&cred).unwrap()),
        Err(TokenRejection::WrongIssuer)
    );
}

#[test]
fn token_missing_a_claim_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let full: Claims = serde_json::from_value(claims_of(
        &signer.mint(&credential(Utc::now(), 600)).unwrap(),
    ))
    .unwrap();
    let mut partial = serde_json::to_value(&full).unwrap();
    partial.as_object_mut().unwrap().remove("role");
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    let pem = std::fs::read(dir.path().join("signing.key")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap();
    let token = jsonwebtoken::encode(&header, &partial, &key).unwrap();
    assert_eq!(signer.verify(&token), Err(TokenRejection::Malformed));
}

#[test]
fn garbage_is_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let huge = "a".repeat(1 << 20);
    let huge_jwt = format!("{0}.{0}.{0}", "A".repeat(MAX_TOKEN_BYTES));
    for garbage in [
        "",
        "hunter2",
        "not base64!.also not.nope",
        "a.b.c",
        "...",
        "a.b.c.d",
        &huge,
        &huge_jwt,
    ] {
        let result = signer.verify(garbage);
        assert!(
            matches!(
                result,
                Err(TokenRejection::Malformed | TokenRejection::BadSignature)
            ),
            "{:.40}: {result:?}",
            garbage
        );
    }
    assert_eq!(signer.verify(""), Err(TokenRejection::Malformed));
    assert_eq!(signer.verify(&huge), Err(TokenRejection::Malformed));
}

/// Just enough of a store for `issue`: people, targets, grants and credentials in memory.
#[derive(Default)]
struct FakeStore {
    people: Vec<Person>,
    targets: Vec<Target>,
    grants: Vec<Grant>,
    credentials: Mutex<Vec<Credential>>,
}

impl FakeStore {
    fn with(grants: &[(GrantSubject, &str, i64)], target_enabled: bool) -> FakeStore {
        let target = Target {
            id: Uuid::new_v4(),
            name: "shop".into(),
            host: "db".into(),
            port: 5432,
            database: "shop".into(),
            tls_mode: UpstreamTls::Disable,
            ca_pem: None,
            upstream_user: "gw".into(),
            upstream_secret_sealed: None,
            enabled: target_enabled,
            recording: RecordingPolicy::Strict,
            record_max_rows: None,
            record_max_result_bytes: None,
            retention_days: None,
            created_at: Utc::now(),
        };
        let grants = grants
            .iter()
            .map(|(subject, role, max)| Grant {
                id: Uuid::new_v4(),
                subject: subject.clone(),
                target_id: target.id,
                target_name: target.name.clone(),
                db_role: role.to_string(),
                max_lifetime_secs: *max,
                requires_approval: false,
                created_at: Utc::now(),
            })
            .collect();
        FakeStore {
            people: vec![Person {
                id: Uuid::new_v4(),
                login: "alice".into(),
                display_name: None,
                email: None,
                groups: vec!["dev".into()],
                created_at: Utc::now(),
            }],
            targets: vec![target],
            grants,
            credentials: Mutex::default(),
        }
    }
}

/// `issue` never touches the console's tables.
#[async_trait]
impl crate::store::ConsoleStore for FakeStore {
    async fn insert_local_account(&self, _: &LocalAccount) -> StoreResult<()> {
        unreachable!("console table")
    }
    async fn local_account(&self, _: &str) -> StoreResult<Option<LocalAccount>> {
        unreachable!("console table")
    }
    async fn list_local_accounts(&self) -> StoreResult<Vec<LocalAccount>> {
        unreachable!("console table")
    }
    async fn set_local_password(&self, _: &str, _: &str) -> StoreResult<()> {
        unreachable!("console table")
    }
    async fn set_local_roles(&self, _: &str, _: &[String]) -> StoreResult<()> {
        unreachable!("console table")
    }
    async fn record_local_failure(&self, _: &str, _: Option<DateTime<Utc>>) -> StoreResult<i64> {
        unreachable!("console table")
    }
    async fn record_local_success(&self, _: &str) -> StoreResult<()> {
        unreachable!("console table")
    }
    async fn insert_console_session(&self, _: &ConsoleSession) -> StoreResult<()> {
        unreachable!("console table")
    }
    async fn console_session(&self, _: &[u8]) -> StoreResult<Option<ConsoleSession>> {
        unreachable!("console table")
    }
    async fn touch_console_session(&self, _: &[u8], _: DateTime<Utc>) -> StoreResult<()> {
        unreachable!("console table")
    }
    async fn end_console_session(&self, _: &[u8], _: DateTime<Utc>) -> StoreResult<bool> {
        unreachable!("console table")
    }
    async fn end_console_sessions_of(&self, _: &str, _: DateTime<Utc>) -> StoreResult<u64> {
        unreachable!("console table")
    }
    async fn insert_access_request(&self, _: &AccessRequest) -> StoreResult<()> {
        unreachable!("console table")
    }
    async fn access_request(&self, _: Uuid) -> StoreResult<Option<AccessRequest>> {
        unreachable!("console table")
    }
    async fn access_request_for_credential(&self, _: Uuid) -> StoreResult<Option<AccessRequest>> {
        unreachable!("console table")
    }
    async fn list_access_requests(&self, _: &RequestFilter) -> StoreResult<Vec<AccessRequest>> {
        unreachable!("console table")
    }
    async fn decide_access_request(
        &self,
        _: Uuid,
        _: Decision,
        _: &str,
        _: Option<&str>,
        _: DateTime<Utc>,
    ) -> StoreResult<bool> {
        unreachable!("console table")
    }
    async fn mark_request_issued(&self, _: Uuid, _: RequestStatus, _: Uuid) -> StoreResult<bool> {
        unreachable!("console table")
    }
    async fn cancel_access_request(&self, _: Uuid, _: &str) -> StoreResult<bool> {
        unreachable!("console table")
    }
    async fn append_audit(&self, _: &NewAuditEntry) -> StoreResult<AuditEntry> {
        unreachable!("console table")
    }
    async fn list_audit(&self, _: Option<i64>, _: i64) -> StoreResult<Vec<AuditEntry>> {
        unreachable!("console table")
    }
    async fn edit_target(&self, _: Uuid, _: &TargetEdit) -> StoreResult<Target> {
        unreachable!("console table")
    }
    async fn set_grant_approval(&self, _: Uuid, _: bool) -> StoreResult<()> {
        unreachable!("console table")
    }
}

/// `issue` never touches the statement index.
#[async_trait]
impl crate::store::SearchStore for FakeStore {
    async fn sessions_to_index(&self, _: i64) -> StoreResult<Vec<SessionToIndex>> {
        unreachable!("statement index")
    }
    async fn save_index(&self, _: &IndexUpdate<'_>) -> StoreResult<bool> {
        unreachable!("statement index")
    }
    async fn session_stats(
        &self,
        _: &[Uuid],
    ) -> StoreResult<std::collections::HashMap<Uuid, SessionStats>> {
        unreachable!("statement index")
    }
    async fn search_statements(
        &self,
        _: &StatementQuery,
        _: &StatementPage,
    ) -> StoreResult<Vec<StatementHit>> {
        unreachable!("statement index")
    }
    async fn event_hashes(
        &self,
        _: &[(Uuid, i64)],
    ) -> StoreResult<std::collections::HashMap<(Uuid, i64), Vec<u8>>> {
        unreachable!("statement index")
    }
}

/// `issue` never cancels queries.
#[async_trait]
impl crate::store::cancel::CancelStore for FakeStore {
    async fn request_cancels(&self, _: &[crate::store::cancel::CancelKey]) -> StoreResult<()> {
        unreachable!("cancel requests")
    }
    async fn watch_cancel_requests(
        &self,
        _: std::time::Duration,
    ) -> StoreResult<tokio::sync::mpsc::Receiver<crate::store::cancel::CancelKey>> {
        unreachable!("cancel requests")
    }
}

#[async_trait]
impl Store for FakeStore {
    fn engine(&self) -> &'static str {
        "fake"
    }
    async fn upsert_person(
        &self,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
        _: &[String],
    ) -> StoreResult<Person> {
        unreachable!("issue does not write people")
    }
    async fn person_by_login(&self, login: &str) -> StoreResult<Option<Person>> {
        Ok(self.people.iter().find(|p| p.login == login).cloned())
    }
    async fn list_people(&self) -> StoreResult<Vec<Person>> {
        Ok(self.people.clone())
    }
    async fn add_target(&self, _: &NewTarget) -> StoreResult<Target> {
        unreachable!("issue does not write targets")
    }
    async fn target_by_name(&self, name: &str) -> StoreResult<Option<Target>> {
        Ok(self.targets.iter().find(|t| t.name == name).cloned())
    }
    async fn target_by_id(&self, id: Uuid) -> StoreResult<Option<Target>> {
        Ok(self.targets.iter().find(|t| t.id == id).cloned())
    }
    async fn list_targets(&self) -> StoreResult<Vec<Target>> {
        Ok(self.targets.clone())
    }
    async fn remove_target(&self, _: &str) -> StoreResult<bool> {
        unreachable!("issue does not remove targets")
    }
    async fn set_target_recording(
        &self,
        _: &str,
        _: RecordingPolicy,
        _: Option<i64>,
        _: Option<i64>,
    ) -> StoreResult<Target> {
        unreachable!("issue does not write targets")
    }
    async fn set_target_retention(&self, _: &str, _: Option<u32>) -> StoreResult<Target> {
        unreachable!("issue does not write targets")
    }
    async fn request_termination(
        &self,
        _: Uuid,
        _: &str,
        _: &str,
        _: DateTime<Utc>,
    ) -> StoreResult<TerminationOutcome> {
        unreachable!("issue does not end sessions")
    }
    async fn terminations_since(&self, _: DateTime<Utc>) -> StoreResult<Vec<Termination>> {
        unreachable!("issue does not end sessions")
    }
    async fn purge_sessions(&self, _: Uuid, _: DateTime<Utc>) -> StoreResult<u64> {
        unreachable!("issue does not delete sessions")
    }
    async fn register_key(
        &self,
        _: &crate::store::KeyRegistration,
        _: bool,
    ) -> StoreResult<crate::store::KeyRegistration> {
        unreachable!("issue does not register keys")
    }
    async fn set_target_login(&self, _: &TargetLogin) -> StoreResult<()> {
        unreachable!("issue does not write upstream logins")
    }
    async fn target_login(&self, _: Uuid, _: &str) -> StoreResult<Option<TargetLogin>> {
        unreachable!("issue does not read upstream logins")
    }
    async fn list_target_logins(&self, _: Uuid) -> StoreResult<Vec<TargetLogin>> {
        unreachable!("issue does not read upstream logins")
    }
    async fn remove_target_login(&self, _: Uuid, _: &str) -> StoreResult<bool> {
        unreachable!("issue does not write upstream logins")
    }
    async fn append_blocks(&self, _: &[EventBlock]) -> StoreResult<()> {
        unreachable!("issue does not record")
    }
    async fn session_events(&self, _: Uuid, _: i64, _: i64) -> StoreResult<Vec<StoredEvent>> {
        unreachable!("issue does not read recordings")
    }
    async fn seal_recording(&self, _: &RecordingSeal) -> StoreResult<()> {
        unreachable!("issue does not record")
    }
    async fn recording_seal(&self, _: Uuid) -> StoreResult<Option<RecordingSeal>> {
        unreachable!("issue does not read recordings")
    }
    async fn add_grant(&self, _: &NewGrant) -> StoreResult<Grant> {
        unreachable!("issue does not write grants")
    }
    async fn list_grants(&self, _: Option<Uuid>) -> StoreResult<Vec<Grant>> {
        Ok(self.grants.clone())
    }
    async fn remove_grant(&self, _: Uuid) -> StoreResult<bool> {
        unreachable!("issue does not remove grants")
    }
    async fn matching_grants(
        &self,
        login: &str,
        groups: &[String],
        target_id: Uuid,
        db_role: &str,
    ) -> StoreResult<Vec<Grant>> {
        let for_them = |s: &GrantSubject| match s {
            GrantSubject::Person(p) => p == login,
            GrantSubject::Group(g) => groups.contains(g),
        };
        Ok(self
            .grants
            .iter()
            .filter(|g| g.target_id == target_id && g.db_role == db_role && for_them(&g.subject))
            .cloned()
            .collect())
    }
    async fn insert_credential(&self, credential: &Credential) -> StoreResult<()> {
        self.credentials.lock().unwrap().push(credential.clone());
        Ok(())
    }
    async fn credential(&self, id: Uuid) -> StoreResult<Option<Credential>> {
        Ok(self
            .credentials
            .lock()
            .unwrap()
            .iter()
            .find(|c| c.id == id)
            .cloned())
    }
    async fn revoke_credential(&self, _: Uuid, _: DateTime<Utc>) -> StoreResult<bool> {
        unreachable!("issue does not revoke")
    }
    async fn list_credentials(&self, _: Option<&str>) -> StoreResult<Vec<Credential>> {
        Ok(self.credentials.lock().unwrap().clone())
    }
    async fn revoked_since(&self, _: DateTime<Utc>) -> StoreResult<Vec<Uuid>> {
        Ok(Vec::new())
    }
    async fn insert_session(&self, _: &NewSession) -> StoreResult<()> {
        unreachable!("issue does not record sessions")
    }
    async fn end_session(&self, _: Uuid, _: &SessionEnd) -> StoreResult<()> {
        unreachable!("issue does not record sessions")
    }
    async fn session(&self, _: Uuid) -> StoreResult<Option<Session>> {
        Ok(None)
    }
    async fn list_sessions(&self, _: i64) -> StoreResult<Vec<Session>> {
        Ok(Vec::new())
    }
    async fn find_sessions(
        &self,
        _: &SessionFilter,
        _: &SessionPage,
    ) -> StoreResult<Vec<SessionSummary>> {
        Ok(Vec::new())
    }
}

fn request(login: &str, target: &str, role: &str, lifetime: Option<i64>) -> IssueRequest {
    IssueRequest {
        person_login: login.into(),
        target_name: target.into(),
        db_role: role.into(),
        lifetime_secs: lifetime,
        reason: Some("incident 42".into()),
        default_lifetime_secs: DEFAULT_LIFETIME_SECS,
    }
}

#[tokio::test]
async fn issue_records_the_credential_and_returns_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let store = FakeStore::with(
        &[(GrantSubject::Person("alice".into()), "app_ro", 8 * 3600)],
        true,
    );
    let issued = issue(
        &store,
        &signer,
        request("alice", "shop", "app_ro", Some(1800)),
    )
    .await
    .unwrap();
    assert_eq!(issued.lifetime_secs, 1800);
    assert_eq!(issued.capped_by_grant, None);
    assert_eq!(
        store.credential(issued.credential.id).await.unwrap(),
        Some(issued.credential.clone())
    );
    assert_eq!(issued.credential.reason.as_deref(), Some("incident 42"));
    let claims = signer.verify(&issued.token).unwrap();
    assert_eq!(claims.jti, issued.credential.id);
    assert_eq!(claims.exp - claims.iat, 1800);
}

#[tokio::test]
async fn issue_uses_the_default_lifetime_capped_by_the_largest_grant() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let store = FakeStore::with(
        &[
            (GrantSubject::Person("alice".into()), "app_ro", 600),
            (GrantSubject::Group("dev".into()), "app_ro", 1800),
        ],
        true,
    );
    let issued = issue(&store, &signer, request("alice", "shop", "app_ro", None))
        .await
        .unwrap();
    assert_eq!(issued.lifetime_secs, 1800);
    assert_eq!(issued.capped_by_grant, Some(1800));
}

#[tokio::test]
async fn issue_without_a_matching_grant_says_what_to_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let store = FakeStore::with(&[(GrantSubject::Group("ops".into()), "app_ro", 600)], true);
    let err = issue(&store, &signer, request("alice", "shop", "app_ro", None))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no grant lets alice use role app_ro on target shop; ask an admin for one"
    );
    assert!(store.credentials.lock().unwrap().is_empty());
}

#[tokio::test]
async fn issue_refuses_unknown_people_unknown_or_disabled_targets_and_bad_lifetimes() {
    let dir = tempfile::tempdir().unwrap();
    let signer = signer_in(&dir, "signing.key");
    let grant = [(GrantSubject::Person("alice".into()), "app_ro", 600)];
    let store = FakeStore::with(&grant, true);
    let err = issue(&store, &signer, request("bob", "shop", "app_ro", None))
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::UnknownPerson(_)), "{err}");
    let err = issue(&store, &signer, request("alice", "nope", "app_ro", None))
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::UnknownTarget(_)), "{err}");
    let err = issue(&store, &signer, request("alice", "shop", "app_ro", Some(0)))
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::BadLifetime(0)), "{err}");
    let disabled = FakeStore::with(&grant, false);
    let err = issue(&disabled, &signer, request("alice", "shop", "app_ro", None))
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::TargetDisabled(_)), "{err}");
}
