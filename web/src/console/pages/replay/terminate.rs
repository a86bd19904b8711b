//! Ending a live session from its page, with a reason the person connected is shown.
//!
//! The console only stores the request (`Store::request_termination`); the gateway process
//! running the session, whichever it is, finds it on its next poll and ends the session with a
//! FATAL carrying the reason. Admins may always do this, auditors when
//! `console.auditors_can_terminate` is set; anyone else sees no such action.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use gateway::store::{StoreError, TerminationOutcome};
use serde::Deserialize;

use super::visible_session;
use crate::console::AppState;
use crate::console::auth::{Form, Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};

/// Whether the viewer may end live sessions.
pub fn may_terminate(state: &AppState, viewer: &Viewer) -> bool {
    viewer.roles.has(Role::Admin)
        || (viewer.roles.has(Role::Auditor) && state.config.console.auditors_can_terminate)
}

#[derive(Debug, Deserialize)]
pub struct TerminateFields {
    #[serde(default)]
    reason: String,
}

pub async fn terminate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form { viewer, form }: Form<TerminateFields>,
) -> ConsoleResult<Response> {
    let session = visible_session(&state, &viewer, &id).await?;
    if !may_terminate(&state, &viewer) {
        return Err(ConsoleError::Forbidden(
            "Only admins (and auditors, if the console allows it) may end sessions.".into(),
        ));
    }
    let reason = form.reason.trim();
    let outcome = state
        .store
        .request_termination(session.id, &viewer.login, reason, Utc::now())
        .await
        .map_err(|e| match e {
            StoreError::Invalid(message) => ConsoleError::BadRequest(message),
            other => other.into(),
        })?;
    match outcome {
        TerminationOutcome::Requested => {
            state
                .audit(
                    &viewer.login,
                    "session.terminate",
                    Some(session.id.to_string()),
                    serde_json::json!({
                        "person": session.person_login,
                        "target": session.target_name,
                        "role": session.db_role,
                        "reason": reason,
                    }),
                    viewer.client_addr.clone(),
                )
                .await?;
        }
        // Asked before: the page shows the session ending (or ended) either way.
        TerminationOutcome::AlreadyRequested(_) => {}
        TerminationOutcome::AlreadyEnded => {
            return Err(ConsoleError::Conflict(
                "The session has ended already.".into(),
            ));
        }
        TerminationOutcome::NotFound => {
            return Err(ConsoleError::NotFound("There is no such session.".into()));
        }
    }
    Ok(Redirect::to(&format!("/sessions/{}?terminating=1", session.id)).into_response())
}
