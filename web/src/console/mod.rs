//! The web console: sign-in (OpenID Connect and local accounts), access requests with
//! approval, short-lived credentials, and the admin pages.
//!
//! - [`state`]: what every handler shares ([`AppState`]).
//! - [`auth`]: who is asking: console sessions and their cookie, CSRF, roles, the two sign-in
//!   methods.
//! - [`pages`]: one module per part of the console; each renders a template of `templates/`.
//! - [`headers`]: security headers on every response.
//! - [`error`]: the typed errors of this layer, shown as an error page.
//! - [`server`]: the listener (plain HTTP or HTTPS).
//! - [`health`]: `/healthz`, `/readyz` and `/metrics`, without sign-in.

pub mod auth;
mod error;
mod headers;
pub mod health;
mod pages;
mod server;
mod state;
mod view;

pub use server::serve;
pub use state::AppState;

use axum::Router;
use axum::routing::{get, post};
use tower_http::services::ServeDir;

/// Largest form body accepted: forms here are small; a target's CA bundle is the largest field.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// Every route of the console.
pub fn router(state: AppState) -> Router {
    let static_dir = state.static_dir.clone();
    Router::new()
        .route("/", get(pages::home::show))
        .route("/login", get(auth::signin::page))
        .route("/login/local", post(auth::signin::local))
        .route("/logout", post(auth::signin::logout))
        .route("/auth/oidc/start", get(auth::oidc::start))
        .route("/auth/oidc/callback", get(auth::oidc::callback))
        .route("/access", post(pages::access::request))
        .route("/requests", get(pages::access::my_requests))
        .route("/requests/{id}/collect", post(pages::access::collect))
        .route("/requests/{id}/cancel", post(pages::access::cancel))
        .route("/approvals", get(pages::approvals::list))
        .route("/approvals/{id}", post(pages::approvals::decide))
        .route("/credentials", get(pages::credentials::list))
        .route("/credentials/{id}/revoke", post(pages::credentials::revoke))
        .route("/sessions", get(pages::sessions::mine))
        .route("/audit", get(pages::audit::list))
        .merge(health::routes())
        .merge(pages::replay::routes())
        .merge(pages::export::routes())
        .merge(pages::admin::routes())
        .nest_service("/static", ServeDir::new(static_dir))
        .fallback(pages::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            headers::security_headers,
        ))
        .with_state(state)
}
