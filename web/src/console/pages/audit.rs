//! The audit log, for admins and auditors: newest first, paged by id.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::console::AppState;
use crate::console::auth::{Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, render, time};

const PAGE: i64 = 100;

pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub detail: String,
    pub client: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub nav: Nav,
    pub rows: Vec<AuditRow>,
    /// The `before` of the next page, when there may be one.
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    before: Option<i64>,
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> ConsoleResult<Response> {
    if !(viewer.roles.has(Role::Admin) || viewer.roles.has(Role::Auditor)) {
        return Err(ConsoleError::Forbidden(
            "The audit log is for admins and auditors.".into(),
        ));
    }
    let entries = state.store.list_audit(q.before, PAGE).await?;
    let next = (entries.len() as i64 == PAGE)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    let rows = entries
        .into_iter()
        .map(|e| AuditRow {
            at: time(e.at),
            actor: e.actor,
            action: e.action,
            object: e.object.unwrap_or_default(),
            detail: readable(&e.detail),
            client: e.client_addr.unwrap_or_default(),
        })
        .collect();
    Ok(render(&AuditPage {
        nav: Nav::new(&viewer, "audit"),
        rows,
        next,
    }))
}

/// An entry's detail as `key: value` lines (strings unquoted, lists joined), which reads
/// better than JSON in a table; anything that is not an object stays JSON.
fn readable(detail: &serde_json::Value) -> String {
    use serde_json::Value;
    fn value(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "—".into(),
            Value::Array(items) => items.iter().map(value).collect::<Vec<_>>().join(", "),
            other => other.to_string(),
        }
    }
    match detail.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", value(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        None => detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn details_read_as_lines() {
        let d =
            serde_json::json!({"roles": ["user", "approver"], "method": "oidc", "n": 3, "c": null});
        assert_eq!(
            super::readable(&d),
            "c: —\nmethod: oidc\nn: 3\nroles: user, approver"
        );
        assert_eq!(super::readable(&serde_json::json!({})), "");
    }
}
