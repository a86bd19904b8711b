//! Exports of recordings and search results, streamed page by page (a session may hold millions
//! of events):
//!
//! - `/sessions/{id}/export.jsonl`: the recording in the format `pgbastion verify --file`
//!   checks with only the public key ([`gateway::record::export`]);
//! - `/sessions/{id}/export.csv`: its statements;
//! - `/sessions/search.csv`, `/sessions/search.jsonl`: the statements a search of `/sessions`
//!   finds (same URL filters), newest first, up to [`search::MAX_SEARCH_ROWS`].
//!
//! This module decides who may export what and logs it; [`stream`] sends a download as it is
//! written, [`session`] and [`search`] write the files.
//!
//! Who may export what is who may see it (auditors and admins any session, `user` only their
//! own; another's session is "not found"), and every export is in the audit log before its
//! first byte goes out.

mod search;
mod session;
mod stream;

use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;
use gateway::store::Session;

use self::search::{MAX_SEARCH_ROWS, SearchFormat};
use self::stream::download;
use super::replay::visible_session;
use super::sessions::{Filters, statement_query, visible_person};
use crate::console::AppState;
use crate::console::auth::Viewer;
use crate::console::error::ConsoleResult;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions/{id}/export.jsonl", get(session_jsonl))
        .route("/sessions/{id}/export.csv", get(session_csv))
        .route("/sessions/search.csv", get(search_csv))
        .route("/sessions/search.jsonl", get(search_jsonl))
        .merge(super::integrity::routes())
}

async fn session_jsonl(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> ConsoleResult<Response> {
    let session = visible_session(&state, &viewer, &id).await?;
    audit_session_export(&state, &viewer, &session, "jsonl").await?;
    let store = state.store.clone();
    let id = session.id;
    Ok(download(
        "application/x-ndjson",
        &format!("pgbastion-{}-{id}.jsonl", file_safe(&session.target_name)),
        move |out| async move { session::write_recording(store.as_ref(), id, &out).await },
    ))
}

async fn session_csv(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> ConsoleResult<Response> {
    let session = visible_session(&state, &viewer, &id).await?;
    audit_session_export(&state, &viewer, &session, "csv").await?;
    let store = state.store.clone();
    let name = format!(
        "pgbastion-{}-{}.csv",
        file_safe(&session.target_name),
        session.id
    );
    Ok(download(
        "text/csv; charset=utf-8",
        &name,
        move |out| async move { session::write_statements(store.as_ref(), &session, &out).await },
    ))
}

async fn search_csv(
    state: State<AppState>,
    viewer: Viewer,
    filters: Query<Filters>,
    raw: RawQuery,
) -> ConsoleResult<Response> {
    search_export(state, viewer, filters, raw, SearchFormat::Csv).await
}

async fn search_jsonl(
    state: State<AppState>,
    viewer: Viewer,
    filters: Query<Filters>,
    raw: RawQuery,
) -> ConsoleResult<Response> {
    search_export(state, viewer, filters, raw, SearchFormat::Jsonl).await
}

async fn search_export(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(filters): Query<Filters>,
    RawQuery(raw): RawQuery,
    format: SearchFormat,
) -> ConsoleResult<Response> {
    // A user's own statements only, whatever the URL says.
    let (_, person) = visible_person(&viewer, &filters.person)?;
    let query = statement_query(&filters, person)?;
    let (extension, content_type) = match format {
        SearchFormat::Csv => ("csv", "text/csv; charset=utf-8"),
        SearchFormat::Jsonl => ("jsonl", "application/x-ndjson"),
    };
    state
        .audit(
            &viewer.login,
            "sessions.export",
            None,
            serde_json::json!({
                "format": extension,
                "filters": raw.unwrap_or_default(),
                "max_rows": MAX_SEARCH_ROWS,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    let store = state.store.clone();
    let name = format!(
        "pgbastion-search-{}.{extension}",
        Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    Ok(download(content_type, &name, move |out| async move {
        search::write(store.as_ref(), &query, format, &out).await
    }))
}

async fn audit_session_export(
    state: &AppState,
    viewer: &Viewer,
    session: &Session,
    format: &str,
) -> ConsoleResult<()> {
    state
        .audit(
            &viewer.login,
            "session.export",
            Some(session.id.to_string()),
            serde_json::json!({
                "format": format,
                "person": session.person_login,
                "target": session.target_name,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(())
}

/// A target name as part of a file name: letters, digits, `-`, `_` and `.` (a name is the
/// admin's choice, and a quote or slash would break the header or the path).
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_safe("shop-eu_1.db"), "shop-eu_1.db");
        assert_eq!(file_safe("a\"b/c\\d e"), "a_b_c_d_e");
    }
}
