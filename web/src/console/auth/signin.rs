//! The sign-in page, local password sign-in, and sign-out.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{Duration, Utc};
use gateway::store::AuthMethod;
use serde::Deserialize;

use super::session::{self, cookie_value};
use super::{ClientAddr, Form, NoFields, Roles, password};
use crate::console::AppState;
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{LoginPage, render};

/// Double-submit cookie protecting the sign-in form itself (login CSRF: a site signing you in
/// to its own account).
const LOGIN_COOKIE: &str = "pgbastion_login";
/// Longest lock after repeated failures.
const MAX_LOCK_SECS: i64 = 86_400;
const MAX_LOGIN_CHARS: usize = 200;

#[derive(Debug, Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    pub next: Option<String>,
}

/// Where to go after signing in: only a path of this console.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

pub async fn page(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    login_page(&state, &headers, q.next.as_deref(), None, StatusCode::OK)
}

fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    next: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let token = cookie_value(headers, LOGIN_COOKIE)
        .filter(|t| t.len() >= 32)
        .unwrap_or_else(session::random_token);
    let page = LoginPage {
        oidc_label: state
            .oidc
            .as_ref()
            .map(|_| state.config.oidc.button_label.clone()),
        local: state.config.console.local_login,
        error,
        next: safe_next(next),
        login_csrf: token.clone(),
    };
    let mut res = (status, render(&page)).into_response();
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; Secure; SameSite=Strict; Max-Age=3600"
    );
    session::set_cookie(&mut res, &cookie);
    res
}

#[derive(Debug, Deserialize)]
pub struct LocalForm {
    #[serde(default)]
    login: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    login_csrf: String,
}

pub async fn local(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LocalForm>,
) -> ConsoleResult<Response> {
    if !state.config.console.local_login {
        return Err(ConsoleError::Forbidden(
            "Sign-in with a local account is turned off here; use your company account.".into(),
        ));
    }
    let cookie = cookie_value(&headers, LOGIN_COOKIE).unwrap_or_default();
    if cookie.len() < 32 || !super::constant_time_eq(cookie.as_bytes(), form.login_csrf.as_bytes())
    {
        return Ok(login_page(
            &state,
            &headers,
            form.next.as_deref(),
            Some("The sign-in form expired. Please try again.".into()),
            StatusCode::FORBIDDEN,
        ));
    }
    let addr = addr.unwrap_or_else(|| "unknown".into());
    let login: String = form.login.trim().chars().take(MAX_LOGIN_CHARS).collect();
    if !state.throttle.allows(&addr) {
        return Err(ConsoleError::TooManyRequests(
            "Too many failed sign-ins from your address. Wait a few minutes and try again.".into(),
        ));
    }
    let account = state.store.local_account(&login).await?;
    let now = Utc::now();
    if let Some(until) = account
        .as_ref()
        .and_then(|a| a.locked_until)
        .filter(|t| *t > now)
    {
        state.throttle.failed(&addr);
        return Ok(login_page(
            &state,
            &headers,
            form.next.as_deref(),
            Some(format!(
                "This account is locked after repeated failed sign-ins until {} UTC.",
                until.format("%H:%M:%S")
            )),
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let phc = account
        .as_ref()
        .map(|a| a.password_hash.clone())
        .unwrap_or_else(|| password::decoy_hash().to_string());
    let typed = form.password;
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let matches = tokio::task::spawn_blocking(move || password::verify(&typed, &phc))
        .await
        .map_err(|e| ConsoleError::Internal(format!("password check failed: {e}")))?;
    let account = match account {
        Some(a) if matches && !a.disabled => a,
        other => {
            state.throttle.failed(&addr);
            if let Some(a) = &other {
                let failures = a.failed_attempts + 1;
                let max = state.config.console.login_max_failures;
                let lock = (failures >= max).then(|| {
                    let doublings = (failures - max).min(20) as u32;
                    let secs =
                        (state.config.console.login_lockout_secs << doublings).min(MAX_LOCK_SECS);
                    now + Duration::seconds(secs)
                });
                state.store.record_local_failure(&a.login, lock).await?;
            }
            state
                .audit(
                    &login,
                    "signin.failed",
                    None,
                    serde_json::json!({ "method": "local" }),
                    Some(addr),
                )
                .await?;
            return Ok(login_page(
                &state,
                &headers,
                form.next.as_deref(),
                Some("Wrong login or password.".into()),
                StatusCode::UNAUTHORIZED,
            ));
        }
    };
    // The address's failures stay counted: one good account must not reset guessing at others.
    state.store.record_local_success(&account.login).await?;
    let roles = Roles::from_names(&account.roles);
    if roles.is_empty() {
        return Err(ConsoleError::Forbidden(format!(
            "{} has no console role. Ask an admin to give the account one.",
            account.login
        )));
    }
    if state.store.person_by_login(&account.login).await?.is_none() {
        state
            .store
            .upsert_person(&account.login, None, None, &[])
            .await?;
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let token = session::create(
        &state,
        &account.login,
        roles,
        AuthMethod::Local,
        Some(addr.clone()),
        agent,
    )
    .await?;
    state
        .audit(
            &account.login,
            "signin",
            None,
            serde_json::json!({ "method": "local", "roles": roles.names() }),
            Some(addr),
        )
        .await?;
    Ok(signed_in(
        &token,
        state.config.console.session_absolute_secs,
        &safe_next(form.next.as_deref()),
    ))
}

/// The redirect that completes a sign-in, setting the session cookie.
pub fn signed_in(token: &str, max_age_secs: i64, next: &str) -> Response {
    let mut res = Redirect::to(next).into_response();
    session::set_cookie(&mut res, &session::session_cookie(token, max_age_secs));
    res
}

pub async fn logout(
    State(state): State<AppState>,
    form: Form<NoFields>,
) -> ConsoleResult<Response> {
    let viewer = form.viewer;
    state
        .store
        .end_console_session(&viewer.token_hash, Utc::now())
        .await?;
    state
        .audit(
            &viewer.login,
            "signout",
            None,
            serde_json::json!({}),
            viewer.client_addr.clone(),
        )
        .await?;
    let mut res = Redirect::to("/login").into_response();
    session::set_cookie(&mut res, &session::clear_cookie());
    Ok(res)
}
