//! One session: the page with its header and the replay player (`static/replay.js`), the
//! player's data a page at a time, and the live view.
//!
//! - [`feed`]: a recording folded into entries, a page at a time from a quiet point.
//! - [`entry`]: the entries as the player receives them (JSON).
//! - [`sql`]: parameters written into SQL, client introspection told apart.
//!
//! Who sees what: auditors and admins any session, a person with role `user` only their own.
//! Anyone else gets "not found", so session ids do not leak. Nothing here changes a recording.

mod entry;
mod feed;
mod live;
mod sql;
mod terminate;

use std::time::Instant;

use askama::Template;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use chrono::Utc;
use gateway::record::integrity::assess;
use gateway::store::{AccessRequest, Credential, EndReason, RequestStatus, Session};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::parse_id;
use crate::console::AppState;
use crate::console::auth::{Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, duration, render, time};
use entry::Entry;
use feed::{Cursor, Feed};

/// Statements per page: a page of a busy session is a few hundred KiB of JSON at most.
const PAGE_STATEMENTS: usize = 200;
/// Events read from the store per query.
const EVENTS_PER_READ: i64 = 1_000;
/// Events one page reads at most. Above the folder's forced cut (10,000 events without a
/// quiet point), so every page moves the cursor on.
const MAX_EVENTS_PER_PAGE: usize = 25_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions/{id}", get(show))
        .route("/sessions/{id}/replay", get(page))
        .route("/sessions/{id}/live", get(live::follow))
        .route("/sessions/{id}/terminate", post(terminate::terminate))
}

/// The session, if the viewer may see it.
pub async fn visible_session(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
) -> ConsoleResult<Session> {
    let id: Uuid = parse_id(id)?;
    let everyone = viewer.roles.has(Role::Auditor) || viewer.roles.has(Role::Admin);
    if !everyone {
        viewer.require(Role::User)?;
    }
    match state.store.session(id).await? {
        Some(session) if everyone || session.person_login == viewer.login => Ok(session),
        _ => Err(ConsoleError::NotFound("There is no such session.".into())),
    }
}

#[derive(Template)]
#[template(path = "session.html")]
pub struct SessionPage {
    pub nav: Nav,
    pub id: String,
    pub person: String,
    pub target: String,
    pub role: String,
    pub client: String,
    pub application: String,
    pub tls: String,
    pub started: String,
    /// RFC 3339, for the player's clock.
    pub started_iso: String,
    pub ended: String,
    pub length: String,
    /// Milliseconds from start to end (or to now, while live).
    pub length_ms: i64,
    pub live: bool,
    pub end_reason: String,
    pub bytes: String,
    pub recording: String,
    pub credential: Option<CredentialView>,
    /// The statement to open at (`?seq=` from a search hit).
    pub seq: String,
    /// The viewer may end the session (it is live, and they are allowed to).
    pub can_terminate: bool,
    /// Someone asked to end it; the gateway has not yet.
    pub termination: Option<String>,
    /// What is known of the recording's integrity without reading it (the panel checks all).
    pub integrity: String,
    pub integrity_css: &'static str,
    pub integrity_explain: String,
    /// The access request behind the credential, when it came from the console.
    pub request: Option<RequestView>,
}

pub struct RequestView {
    pub requested: String,
    pub reason: String,
    /// "approved by bob at …: comment", or "granted without approval".
    pub decision: String,
}

pub struct CredentialView {
    pub id: String,
    pub issued: String,
    pub expires: String,
    pub revoked: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    #[serde(default)]
    seq: Option<i64>,
}

/// A termination asked for, in words: still to be carried out while the session runs, or how it
/// ended (the gateway may act on it before the admin's redirected page loads).
async fn termination_notice(state: &AppState, session: &Session) -> ConsoleResult<Option<String>> {
    let carried_out = match (session.ended_at, session.end_reason) {
        (None, _) => false,
        (Some(_), Some(EndReason::Terminated)) => true,
        (Some(_), _) => return Ok(None),
    };
    let asked = state.store.terminations_since(session.started_at).await?;
    Ok(asked
        .into_iter()
        .find(|t| t.session_id == session.id)
        .map(|t| {
            let (asked, then) = if carried_out {
                ("Ended", "The gateway has ended the session.")
            } else {
                (
                    "Ending",
                    "The gateway ends the session within a few seconds.",
                )
            };
            format!(
                "{asked}: {} asked to end it at {}: {}. {then}",
                t.requested_by,
                time(t.requested_at),
                t.reason
            )
        }))
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> ConsoleResult<Response> {
    let s = visible_session(&state, &viewer, &id).await?;
    let credential = state.store.credential(s.credential_id).await?;
    let request = state
        .store
        .access_request_for_credential(s.credential_id)
        .await?;
    let stats = state.store.session_stats(&[s.id]).await?;
    let seal = state.store.recording_seal(s.id).await?;
    let integrity = assess(&s, stats.get(&s.id), seal.as_ref(), &state.verifier);
    let end = s.ended_at.unwrap_or_else(Utc::now);
    let page = SessionPage {
        nav: Nav::new(&viewer, "sessions"),
        id: s.id.to_string(),
        person: s.person_login.clone(),
        target: s.target_name.clone(),
        role: s.db_role.clone(),
        client: s.client_addr.clone(),
        application: s.application_name.clone().unwrap_or_default(),
        tls: s.tls_version.clone().unwrap_or_else(|| "none".into()),
        started: time(s.started_at),
        started_iso: entry::stamp(s.started_at),
        ended: s.ended_at.map(time).unwrap_or_default(),
        length: duration((end - s.started_at).num_seconds().max(0)),
        length_ms: (end - s.started_at).num_milliseconds().max(0),
        live: s.ended_at.is_none(),
        end_reason: match (&s.end_reason, &s.end_detail) {
            (Some(r), Some(d)) => format!("{} ({d})", r.as_str().replace('_', " ")),
            (Some(r), None) => r.as_str().replace('_', " "),
            _ => String::new(),
        },
        bytes: format!(
            "{} from the client, {} to it",
            s.bytes_client_to_server, s.bytes_server_to_client
        ),
        recording: format!("{:?}", s.recording).to_lowercase(),
        credential: credential.as_ref().map(credential_view),
        seq: q.seq.map(|s| s.to_string()).unwrap_or_default(),
        can_terminate: s.ended_at.is_none() && terminate::may_terminate(&state, &viewer),
        termination: termination_notice(&state, &s).await?,
        integrity: integrity.label(),
        integrity_css: integrity.css(),
        integrity_explain: integrity.explain(),
        request: request.as_ref().map(request_view),
    };
    Ok(render(&page))
}

fn request_view(r: &AccessRequest) -> RequestView {
    let decision = match (&r.decided_by, r.decided_at) {
        (Some(by), Some(at)) => format!(
            "{} by {by} at {}{}",
            if r.status == RequestStatus::Denied {
                "denied"
            } else {
                "approved"
            },
            time(at),
            r.decision_comment
                .as_deref()
                .filter(|c| !c.is_empty())
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ),
        _ => "granted without approval (the grant does not require it)".into(),
    };
    RequestView {
        requested: time(r.requested_at),
        reason: r.reason.clone(),
        decision,
    }
}

fn credential_view(c: &Credential) -> CredentialView {
    CredentialView {
        id: c.id.to_string(),
        issued: time(c.issued_at),
        expires: time(c.expires_at),
        revoked: c.revoked_at.map(time).unwrap_or_default(),
        reason: c.reason.clone().unwrap_or_default(),
    }
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    seq: i64,
    #[serde(default)]
    status: Option<char>,
}

impl PageQuery {
    fn cursor(&self) -> ConsoleResult<Cursor> {
        let status = self.status.unwrap_or('I');
        if self.seq < 0 || !matches!(status, 'I' | 'T' | 'E') {
            return Err(ConsoleError::BadRequest(
                "The replay position is not understood.".into(),
            ));
        }
        Ok(Cursor {
            seq: self.seq,
            status,
        })
    }
}

/// One page of the player's data.
#[derive(Debug, Serialize)]
pub struct ReplayPage {
    pub entries: Vec<Entry>,
    /// Where the next page starts; `None` once the recording has been read to its end.
    pub next: Option<Cursor>,
    /// The session is still going on: follow it with the live view from `next`.
    pub live: bool,
}

pub async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> ConsoleResult<Json<ReplayPage>> {
    let session = visible_session(&state, &viewer, &id).await?;
    let cursor = q.cursor()?;
    let took = Instant::now();
    let page = read_page(&state, &session, cursor).await?;
    tracing::debug!(session = %session.id, from = cursor.seq, entries = page.entries.len(), took = ?took.elapsed(), "replay page");
    Ok(Json(page))
}

async fn read_page(
    state: &AppState,
    session: &Session,
    cursor: Cursor,
) -> ConsoleResult<ReplayPage> {
    let mut feed = Feed::new(session.started_at, cursor);
    let mut from = cursor.seq;
    let mut read = 0;
    // Read before the events: a session seen ended now has all its events stored (the
    // gateway ends a session after its last event is written).
    let ended = session.ended_at.is_some();
    loop {
        let events = state
            .store
            .session_events(session.id, from, EVENTS_PER_READ)
            .await?;
        let exhausted = (events.len() as i64) < EVENTS_PER_READ;
        for event in &events {
            feed.push(event);
            read += 1;
            from = event.seq + 1;
            if feed.is_quiet() && feed.ready_statements() >= PAGE_STATEMENTS {
                return Ok(ReplayPage {
                    entries: feed.take_ready(),
                    next: Some(feed.cursor()),
                    live: !ended,
                });
            }
        }
        if exhausted {
            break;
        }
        if read >= MAX_EVENTS_PER_PAGE {
            return Ok(ReplayPage {
                entries: feed.take_ready(),
                next: Some(feed.cursor()),
                live: !ended,
            });
        }
    }
    if ended {
        feed.finish();
        return Ok(ReplayPage {
            entries: feed.take_ready(),
            next: None,
            live: false,
        });
    }
    Ok(ReplayPage {
        entries: feed.take_ready(),
        next: Some(feed.cursor()),
        live: true,
    })
}
