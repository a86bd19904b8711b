//! The templates' data. Every value from a person, a token claim or the store is rendered
//! through askama's HTML escaping (the templates never mark anything safe).

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::auth::{Role, Viewer};

/// Renders a template; a template that fails to render is a bug, shown as a plain 500.
pub fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The page could not be rendered; see the pgbastion log.",
            )
                .into_response()
        }
    }
}

/// The top bar: who is signed in, what they may open, and the sign-out form's token.
#[derive(Debug, Clone)]
pub struct Nav {
    pub login: String,
    pub roles: String,
    pub csrf: String,
    pub active: &'static str,
    pub user: bool,
    pub approver: bool,
    pub auditor: bool,
    pub admin: bool,
}

impl Nav {
    pub fn new(viewer: &Viewer, active: &'static str) -> Nav {
        Nav {
            login: viewer.login.clone(),
            roles: viewer.roles.names().join(", "),
            csrf: viewer.csrf.clone(),
            active,
            user: viewer.roles.has(Role::User),
            approver: viewer.roles.has(Role::Approver),
            auditor: viewer.roles.has(Role::Auditor),
            admin: viewer.roles.has(Role::Admin),
        }
    }

    /// `class="active"` for the current section's link.
    pub fn is(&self, section: &str) -> bool {
        self.active == section
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub oidc_label: Option<String>,
    pub local: bool,
    pub error: Option<String>,
    pub next: String,
    pub login_csrf: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub title: &'static str,
    pub message: String,
    pub status: u16,
}

impl IntoResponse for ErrorPage {
    fn into_response(self) -> Response {
        render(&self)
    }
}

/// Formats a time for pages: UTC, to the second.
pub fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// "1h 30m", "45m", "2d".
pub fn duration(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}
