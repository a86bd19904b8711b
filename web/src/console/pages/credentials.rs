//! Credentials: one's own (admins and auditors: everyone's), and revoking them. Revoking ends
//! the live gateway sessions that use the credential (gateways poll for revocations).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;

use super::parse_id;
use crate::console::AppState;
use crate::console::auth::{Form, NoFields, Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, render, time};

pub struct CredentialRow {
    pub id: String,
    pub person: String,
    pub target: String,
    pub role: String,
    pub issued: String,
    pub expires: String,
    pub status: &'static str,
    pub reason: String,
    pub revocable: bool,
}

#[derive(Template)]
#[template(path = "credentials.html")]
pub struct CredentialsPage {
    pub nav: Nav,
    pub rows: Vec<CredentialRow>,
    /// Showing everyone's (admins and auditors may).
    pub everyone: bool,
    pub can_see_everyone: bool,
}

#[derive(Debug, Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    all: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> ConsoleResult<Response> {
    let can_see_everyone = viewer.roles.has(Role::Admin) || viewer.roles.has(Role::Auditor);
    let everyone = q.all.is_some() && can_see_everyone;
    if !everyone && !viewer.roles.has(Role::User) && !can_see_everyone {
        viewer.require(Role::User)?;
    }
    let person = (!everyone).then_some(viewer.login.as_str());
    let now = Utc::now();
    let rows = state
        .store
        .list_credentials(person)
        .await?
        .into_iter()
        .take(500)
        .map(|c| {
            let status = if c.revoked_at.is_some() {
                "revoked"
            } else if c.expires_at <= now {
                "expired"
            } else {
                "active"
            };
            // Only one's own, or an admin's reach; auditors only look.
            let revocable = status == "active"
                && (c.person_login == viewer.login || viewer.roles.has(Role::Admin));
            CredentialRow {
                id: c.id.to_string(),
                person: c.person_login,
                target: c.target_name,
                role: c.db_role,
                issued: time(c.issued_at),
                expires: time(c.expires_at),
                status,
                reason: c.reason.unwrap_or_default(),
                revocable,
            }
        })
        .collect();
    Ok(render(&CredentialsPage {
        nav: Nav::new(&viewer, "credentials"),
        rows,
        everyone,
        can_see_everyone,
    }))
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form { viewer, .. }: Form<NoFields>,
) -> ConsoleResult<Response> {
    let id = parse_id(&id)?;
    let credential = state
        .store
        .credential(id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound("There is no such credential.".into()))?;
    let own = credential.person_login == viewer.login;
    if !own && !viewer.roles.has(Role::Admin) {
        // Someone else's credential looks like no credential at all.
        return Err(ConsoleError::NotFound(
            "There is no such credential.".into(),
        ));
    }
    if own && !viewer.roles.has(Role::Admin) {
        viewer.require(Role::User)?;
    }
    state.store.revoke_credential(id, Utc::now()).await?;
    state
        .audit(
            &viewer.login,
            "credential.revoke",
            Some(id.to_string()),
            serde_json::json!({
                "person": credential.person_login,
                "target": credential.target_name,
                "role": credential.db_role,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    let back = if own {
        "/credentials"
    } else {
        "/credentials?all=1"
    };
    Ok(Redirect::to(back).into_response())
}
