//! Asking for access: a request (with a reason), its approval when a grant needs one, and the
//! credential, shown once.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use gateway::credential::{self, CredentialError, IssueRequest, Issued};
use gateway::store::{AccessRequest, RequestFilter, RequestStatus};
use serde::Deserialize;
use uuid::Uuid;

use super::parse_id;
use crate::connection::Connection;
use crate::console::AppState;
use crate::console::auth::{Form, NoFields, Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, duration, render, time};

const MAX_REASON_CHARS: usize = 1000;
/// An approval is for now, not for whenever: it must be collected within this many hours.
const APPROVAL_VALID_HOURS: i64 = 24;

#[derive(Debug, Deserialize)]
pub struct RequestForm {
    target: String,
    role: String,
    lifetime_secs: i64,
    #[serde(default)]
    reason: String,
}

#[derive(Template)]
#[template(path = "credential.html")]
pub struct CredentialPage {
    pub nav: Nav,
    pub token: String,
    pub id: String,
    pub target: String,
    pub role: String,
    pub expires: String,
    pub lifetime: String,
    pub capped: Option<String>,
    pub psql: String,
    pub uri: String,
    pub env: String,
}

fn credential_page(state: &AppState, viewer: &Viewer, issued: &Issued) -> Response {
    let c = Connection::new(&state.config, issued);
    let cred = &issued.credential;
    render(&CredentialPage {
        nav: Nav::new(viewer, "credentials"),
        token: issued.token.clone(),
        id: cred.id.to_string(),
        target: cred.target_name.clone(),
        role: cred.db_role.clone(),
        expires: time(cred.expires_at),
        lifetime: duration(issued.lifetime_secs),
        capped: issued.capped_by_grant.map(duration),
        psql: c.psql,
        uri: c.uri,
        env: c.env,
    })
}

/// The grant check's refusals, as a person would read them.
fn refused(e: CredentialError) -> ConsoleError {
    match e {
        CredentialError::Store(e) => ConsoleError::Store(e),
        CredentialError::NoGrant { .. }
        | CredentialError::UnknownTarget(_)
        | CredentialError::TargetDisabled(_)
        | CredentialError::UnknownPerson(_)
        | CredentialError::BadLifetime(_) => ConsoleError::Forbidden(e.to_string()),
        other => ConsoleError::Internal(other.to_string()),
    }
}

async fn issue(state: &AppState, request: &AccessRequest) -> Result<Issued, ConsoleError> {
    credential::issue(
        state.store.as_ref(),
        &state.signer,
        IssueRequest {
            person_login: request.person_login.clone(),
            target_name: request.target_name.clone(),
            db_role: request.db_role.clone(),
            lifetime_secs: Some(request.lifetime_secs),
            reason: Some(request.reason.clone()),
            default_lifetime_secs: state.config.credentials.default_lifetime_secs,
        },
    )
    .await
    .map_err(refused)
}

/// `POST /access`: a new request. Without a grant that needs approval, the credential comes
/// back at once; otherwise the request waits for an approver.
pub async fn request(
    State(state): State<AppState>,
    Form { viewer, form }: Form<RequestForm>,
) -> ConsoleResult<Response> {
    viewer.require(Role::User)?;
    let reason = form.reason.trim().to_string();
    if reason.is_empty() {
        return Err(ConsoleError::BadRequest(
            "Say why you need access: the reason is shown to approvers and auditors.".into(),
        ));
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ConsoleError::BadRequest(format!(
            "The reason may have at most {MAX_REASON_CHARS} characters."
        )));
    }
    if form.lifetime_secs <= 0 {
        return Err(ConsoleError::BadRequest("Choose a lifetime.".into()));
    }
    let person = state
        .store
        .person_by_login(&viewer.login)
        .await?
        .ok_or_else(|| ConsoleError::Forbidden("You are not a known person here.".into()))?;
    let target = state
        .store
        .target_by_name(&form.target)
        .await?
        .filter(|t| t.enabled)
        .ok_or_else(|| {
            ConsoleError::NotFound(format!("No target '{}' is available.", form.target))
        })?;
    let grants = state
        .store
        .matching_grants(&person.login, &person.groups, target.id, &form.role)
        .await?;
    let Some(max) = grants.iter().map(|g| g.max_lifetime_secs).max() else {
        return Err(ConsoleError::Forbidden(format!(
            "No grant lets you use role {} on {}.",
            form.role, target.name
        )));
    };
    let needs_approval = grants.iter().all(|g| g.requires_approval);
    let request = AccessRequest {
        id: Uuid::new_v4(),
        person_login: person.login.clone(),
        target_id: target.id,
        target_name: target.name.clone(),
        db_role: form.role.clone(),
        reason,
        lifetime_secs: form.lifetime_secs.min(max),
        status: RequestStatus::Pending,
        requested_at: Utc::now(),
        decided_by: None,
        decided_at: None,
        decision_comment: None,
        credential_id: None,
    };
    state.store.insert_access_request(&request).await?;
    state
        .audit(
            &viewer.login,
            "request.create",
            Some(request.id.to_string()),
            serde_json::json!({
                "target": request.target_name,
                "role": request.db_role,
                "lifetime_secs": request.lifetime_secs,
                "reason": request.reason,
                "needs_approval": needs_approval,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    if needs_approval {
        return Ok(Redirect::to("/requests").into_response());
    }
    let issued = issue(&state, &request).await?;
    if !state
        .store
        .mark_request_issued(request.id, RequestStatus::Pending, issued.credential.id)
        .await?
    {
        // Cancelled in the blink between insert and issue: the credential must not stand.
        state
            .store
            .revoke_credential(issued.credential.id, Utc::now())
            .await?;
        return Err(ConsoleError::Conflict(
            "The request was withdrawn meanwhile.".into(),
        ));
    }
    audit_issued(&state, &viewer, &request, &issued).await?;
    Ok(credential_page(&state, &viewer, &issued))
}

async fn audit_issued(
    state: &AppState,
    viewer: &Viewer,
    request: &AccessRequest,
    issued: &Issued,
) -> ConsoleResult<()> {
    state
        .audit(
            &viewer.login,
            "credential.issue",
            Some(issued.credential.id.to_string()),
            serde_json::json!({
                "request": request.id,
                "target": request.target_name,
                "role": request.db_role,
                "expires_at": issued.credential.expires_at,
                "approved_by": request.decided_by,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(())
}

pub struct RequestRow {
    pub id: String,
    pub target: String,
    pub role: String,
    pub lifetime: String,
    pub reason: String,
    pub status: &'static str,
    pub requested: String,
    pub decided_by: String,
    pub comment: String,
    /// When it was decided (empty while pending).
    pub decided: String,
    pub collectable: bool,
    pub cancellable: bool,
}

impl RequestRow {
    pub fn new(r: &AccessRequest) -> RequestRow {
        RequestRow {
            id: r.id.to_string(),
            target: r.target_name.clone(),
            role: r.db_role.clone(),
            lifetime: duration(r.lifetime_secs),
            reason: r.reason.clone(),
            status: r.status.as_str(),
            requested: time(r.requested_at),
            decided_by: r.decided_by.clone().unwrap_or_default(),
            comment: r.decision_comment.clone().unwrap_or_default(),
            decided: r.decided_at.map(time).unwrap_or_default(),
            collectable: r.status == RequestStatus::Approved,
            cancellable: matches!(r.status, RequestStatus::Pending | RequestStatus::Approved),
        }
    }
}

#[derive(Template)]
#[template(path = "requests.html")]
pub struct RequestsPage {
    pub nav: Nav,
    pub rows: Vec<RequestRow>,
}

pub async fn my_requests(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult<Response> {
    viewer.require(Role::User)?;
    let filter = RequestFilter {
        person_login: Some(viewer.login.clone()),
        status: None,
        limit: 200,
    };
    let rows = state
        .store
        .list_access_requests(&filter)
        .await?
        .iter()
        .map(RequestRow::new)
        .collect();
    Ok(render(&RequestsPage {
        nav: Nav::new(&viewer, "requests"),
        rows,
    }))
}

/// `POST /requests/{id}/collect`: the credential of an approved request, once.
pub async fn collect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form { viewer, .. }: Form<NoFields>,
) -> ConsoleResult<Response> {
    viewer.require(Role::User)?;
    let id = parse_id(&id)?;
    let request = state
        .store
        .access_request(id)
        .await?
        .filter(|r| r.person_login == viewer.login)
        .ok_or_else(|| ConsoleError::NotFound("You have no such request.".into()))?;
    match request.status {
        RequestStatus::Approved => {}
        RequestStatus::Issued => {
            return Err(ConsoleError::Conflict(
                "The credential for this request was already issued and shown once. Request \
                 access again if you need a new one."
                    .into(),
            ));
        }
        other => {
            return Err(ConsoleError::Conflict(format!(
                "This request is {}, not approved.",
                other.as_str()
            )));
        }
    }
    let decided = request.decided_at.unwrap_or(request.requested_at);
    if Utc::now() - decided > chrono::Duration::hours(APPROVAL_VALID_HOURS) {
        return Err(ConsoleError::Conflict(format!(
            "This approval is older than {APPROVAL_VALID_HOURS} hours and has lapsed. Request \
             access again."
        )));
    }
    // The grant is checked again now: it may have been removed since the approval.
    let issued = issue(&state, &request).await?;
    if !state
        .store
        .mark_request_issued(id, RequestStatus::Approved, issued.credential.id)
        .await?
    {
        // Another tab collected it first: only one credential per approval.
        state
            .store
            .revoke_credential(issued.credential.id, Utc::now())
            .await?;
        return Err(ConsoleError::Conflict(
            "The credential for this request was already collected.".into(),
        ));
    }
    audit_issued(&state, &viewer, &request, &issued).await?;
    Ok(credential_page(&state, &viewer, &issued))
}

/// `POST /requests/{id}/cancel`: the requester withdraws a request not yet collected.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form { viewer, .. }: Form<NoFields>,
) -> ConsoleResult<Response> {
    viewer.require(Role::User)?;
    let id = parse_id(&id)?;
    if !state.store.cancel_access_request(id, &viewer.login).await? {
        return Err(ConsoleError::Conflict(
            "Only your own pending or approved requests can be withdrawn.".into(),
        ));
    }
    state
        .audit(
            &viewer.login,
            "request.cancel",
            Some(id.to_string()),
            serde_json::json!({}),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(Redirect::to("/requests").into_response())
}
