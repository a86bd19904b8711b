//! Approvers decide others' requests; nobody decides their own.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use gateway::store::{Decision, RequestFilter, RequestStatus};
use serde::Deserialize;

use super::access::RequestRow;
use super::parse_id;
use crate::console::AppState;
use crate::console::auth::{Form, Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, render};

const MAX_COMMENT_CHARS: usize = 1000;

pub struct PendingRow {
    pub row: RequestRow,
    pub person: String,
    pub own: bool,
}

#[derive(Template)]
#[template(path = "approvals.html")]
pub struct ApprovalsPage {
    pub nav: Nav,
    pub pending: Vec<PendingRow>,
    pub decided: Vec<PendingRow>,
    /// What the last decision did, after the redirect.
    pub done: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    done: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Approver)?;
    let all = state
        .store
        .list_access_requests(&RequestFilter {
            person_login: None,
            status: None,
            limit: 300,
        })
        .await?;
    let (pending, decided): (Vec<_>, Vec<_>) = all
        .iter()
        .map(|r| PendingRow {
            row: RequestRow::new(r),
            person: r.person_login.clone(),
            own: r.person_login == viewer.login,
        })
        .partition(|p| p.row.status == RequestStatus::Pending.as_str());
    Ok(render(&ApprovalsPage {
        nav: Nav::new(&viewer, "approvals"),
        pending,
        decided: decided.into_iter().take(50).collect(),
        // A fixed sentence per code: a crafted link cannot put text on the page.
        done: match q.done.as_deref() {
            Some("approved") => {
                Some("Approved. The requester can now collect the credential.".into())
            }
            Some("denied") => Some("Denied. The requester sees your decision and comment.".into()),
            _ => None,
        },
    }))
}

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    decision: String,
    #[serde(default)]
    comment: String,
}

pub async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form { viewer, form }: Form<DecisionForm>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Approver)?;
    let id = parse_id(&id)?;
    let decision = match form.decision.as_str() {
        "approve" => Decision::Approve,
        "deny" => Decision::Deny,
        _ => return Err(ConsoleError::BadRequest("Approve or deny.".into())),
    };
    let comment = form.comment.trim();
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ConsoleError::BadRequest(format!(
            "The comment may have at most {MAX_COMMENT_CHARS} characters."
        )));
    }
    let request = state
        .store
        .access_request(id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("There is no such request.".into()))?;
    if request.person_login == viewer.login {
        return Err(ConsoleError::Forbidden(
            "You cannot decide your own request; another approver must.".into(),
        ));
    }
    let comment = (!comment.is_empty()).then_some(comment);
    if !state
        .store
        .decide_access_request(id, decision, &viewer.login, comment, Utc::now())
        .await?
    {
        return Err(ConsoleError::Conflict(
            "This request was already decided or withdrawn.".into(),
        ));
    }
    let action = match decision {
        Decision::Approve => "request.approve",
        Decision::Deny => "request.deny",
    };
    state
        .audit(
            &viewer.login,
            action,
            Some(id.to_string()),
            serde_json::json!({
                "requester": request.person_login,
                "target": request.target_name,
                "role": request.db_role,
                "comment": comment,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    let done = match decision {
        Decision::Approve => "approved",
        Decision::Deny => "denied",
    };
    Ok(Redirect::to(&format!("/approvals?done={done}")).into_response())
}
