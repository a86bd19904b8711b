//! Console sessions: the cookie, and the row behind it.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use gateway::store::{AuthMethod, ConsoleSession, StoreResult};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::Roles;
use crate::console::AppState;

pub const COOKIE: &str = "pgbastion_session";

/// Don't write `last_seen_at` on every request: once a minute is precise enough for an idle
/// timeout counted in minutes (a shorter idle timeout is touched twice per its length).
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// A fresh random token (256 bits), URL-safe base64.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The session token from the request's cookies, if any.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE)
}

/// The value of cookie `name`.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 4096)
}

/// `Set-Cookie` for a new session. Always `Secure`: browsers accept it on https and on
/// http://localhost and http://127.0.0.1; anything else must be served over https.
pub fn session_cookie(token: &str, max_age_secs: i64) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={max_age_secs}")
}

/// Adds a `Set-Cookie` to `res`. Every cookie here is built from fixed text and URL-safe
/// tokens, so it is always a valid header value; one that were not is left out rather than
/// failing the response.
pub fn set_cookie(res: &mut axum::response::Response, cookie: &str) {
    if let Ok(value) = cookie.parse() {
        res.headers_mut()
            .append(axum::http::header::SET_COOKIE, value);
    }
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0")
}

/// Starts a session for `login` with `roles`; returns the cookie's token.
pub async fn create(
    state: &AppState,
    login: &str,
    roles: Roles,
    method: AuthMethod,
    client_addr: Option<String>,
    user_agent: Option<String>,
) -> StoreResult<String> {
    let token = random_token();
    let now = Utc::now();
    let session = ConsoleSession {
        token_hash: hash_token(&token),
        person_login: login.to_string(),
        roles: roles.names(),
        auth_method: method,
        csrf_token: random_token(),
        client_addr,
        user_agent: user_agent.map(|ua| ua.chars().take(300).collect()),
        created_at: now,
        last_seen_at: now,
        expires_at: now + Duration::seconds(state.config.console.session_absolute_secs),
        ended_at: None,
    };
    state.store.insert_console_session(&session).await?;
    Ok(token)
}

/// The live session behind `token`: not ended, not past its absolute timeout, not idle too
/// long. Moves its idle clock forward.
pub async fn resolve(state: &AppState, token: &str) -> StoreResult<Option<ConsoleSession>> {
    let hash = hash_token(token);
    let Some(session) = state.store.console_session(&hash).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let idle = Duration::seconds(state.config.console.session_idle_secs);
    if session.ended_at.is_some() || session.expires_at <= now || session.last_seen_at + idle <= now
    {
        return Ok(None);
    }
    if now - session.last_seen_at >= TOUCH_EVERY.min(idle / 2) {
        state.store.touch_console_session(&hash, now).await?;
    }
    Ok(Some(session))
}
