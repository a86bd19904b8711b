//! "My sessions": the gateway sessions a person ran, newest first.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use gateway::store::{SessionFilter, SessionPage};

use crate::console::AppState;
use crate::console::auth::{Role, Viewer};
use crate::console::error::ConsoleResult;
use crate::console::view::{Nav, duration, render, time};

pub struct SessionRow {
    pub id: String,
    pub target: String,
    pub role: String,
    pub client: String,
    pub application: String,
    pub started: String,
    pub length: String,
    pub status: String,
    /// The badge's colour class.
    pub badge: &'static str,
    pub events: i64,
}

#[derive(Template)]
#[template(path = "sessions.html")]
pub struct SessionsPage {
    pub nav: Nav,
    pub rows: Vec<SessionRow>,
}

pub async fn mine(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult<Response> {
    viewer.require(Role::User)?;
    let filter = SessionFilter {
        person: Some(viewer.login.clone()),
        ..Default::default()
    };
    let page = SessionPage {
        before: None,
        limit: 100,
    };
    let now = chrono::Utc::now();
    let rows = state
        .store
        .find_sessions(&filter, &page)
        .await?
        .into_iter()
        .map(|s| {
            let session = s.session;
            let end = session.ended_at.unwrap_or(now);
            let (status, badge) = match (&session.ended_at, &session.end_reason) {
                (None, _) => ("live".to_string(), "active"),
                (Some(_), Some(reason)) => (
                    format!("ended · {}", reason.as_str().replace('_', " ")),
                    match reason.as_str() {
                        "terminated" | "revoked" => "revoked",
                        "client_quit" => "expired",
                        _ => "pending",
                    },
                ),
                (Some(_), None) => ("ended".to_string(), "expired"),
            };
            SessionRow {
                id: session.id.to_string(),
                target: session.target_name,
                role: session.db_role,
                client: client_ip(&session.client_addr),
                application: session.application_name.unwrap_or_default(),
                started: time(session.started_at),
                length: duration((end - session.started_at).num_seconds().max(0)),
                status,
                badge,
                events: s.event_count,
            }
        })
        .collect();
    Ok(render(&SessionsPage {
        nav: Nav::new(&viewer, "sessions"),
        rows,
    }))
}

/// The client's address without its (ephemeral) port: `192.0.2.7:51234` → `192.0.2.7`,
/// `[2001:db8::1]:5000` → `2001:db8::1`.
fn client_ip(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sock) => sock.ip().to_string(),
        Err(_) => addr.to_string(),
    }
}
