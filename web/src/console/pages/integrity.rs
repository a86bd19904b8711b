//! The integrity panel of one session: its recording checked now, event by event (read in
//! pages), with its seal, beside what the statement indexer found, and how to check an export
//! away from pgbastion. Viewing it changes nothing, so it is not audited; exports are.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use gateway::record::chain::{ChainVerifier, VerifyError};
use gateway::record::integrity::{Integrity, assess};
use gateway::store::{RecordingSeal, Session, Store, StoreError};

use super::export::file_safe;
use super::replay::visible_session;
use crate::console::AppState;
use crate::console::auth::Viewer;
use crate::console::error::ConsoleResult;
use crate::console::view::{Nav, render, time};

/// Events read from the store per query.
const EVENTS_PER_READ: i64 = 1_000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/sessions/{id}/integrity", get(show))
}

/// The seal as the panel shows it.
pub struct SealView {
    pub key_id: String,
    pub signed_at: String,
    pub events: i64,
    pub final_hash: String,
    /// The signature verifies with one of the console's keys.
    pub signature_valid: bool,
    /// Why it does not, when it does not.
    pub signature_problem: String,
}

#[derive(Template)]
#[template(path = "integrity.html")]
pub struct IntegrityPage {
    pub nav: Nav,
    pub id: String,
    pub person: String,
    pub target: String,
    pub started: String,
    pub live: bool,
    /// Events read and checked.
    pub events: u64,
    pub first_hash: String,
    pub last_hash: String,
    pub seal: Option<SealView>,
    /// "verified", "broken", "unsealed" or "live": the badge's text and colour follow it.
    pub result: &'static str,
    pub result_css: &'static str,
    pub result_detail: String,
    /// What the indexer knows (the session list shows this).
    pub indexed_label: String,
    pub indexed_css: &'static str,
    pub indexed_detail: String,
    pub export_file: String,
    pub key_ids: Vec<String>,
}

/// The full check of a stored recording.
struct Check {
    events: u64,
    first_hash: Option<Vec<u8>>,
    last_hash: Option<Vec<u8>>,
    outcome: Result<bool, VerifyError>,
}

async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> ConsoleResult<Response> {
    let session = visible_session(&state, &viewer, &id).await?;
    let seal = state.store.recording_seal(session.id).await?;
    let check = check_recording(state.store.as_ref(), &session, seal.as_ref(), &state).await?;
    let stats = state.store.session_stats(&[session.id]).await?;
    let indexed = assess(
        &session,
        stats.get(&session.id),
        seal.as_ref(),
        &state.verifier,
    );
    let (result, result_css, result_detail) = match &check.outcome {
        Ok(true) => (
            "verified",
            "active",
            format!(
                "all {} events link up from the first, and the seal covers exactly them",
                check.events
            ),
        ),
        Ok(false) if session.ended_at.is_none() => (
            "live",
            "issued",
            format!(
                "{} events so far link up; the recording is sealed when the session ends",
                check.events
            ),
        ),
        Ok(false) => (
            "unsealed",
            "pending",
            format!(
                "{} events link up, but nothing seals the recording, so events cut off its end \
                 would go unnoticed",
                check.events
            ),
        ),
        Err(e) => (
            "broken",
            "revoked",
            match e.seq() {
                Some(seq) => format!("broken at seq {seq}: {e}"),
                None => e.to_string(),
            },
        ),
    };
    let seal_view = seal.as_ref().map(|seal| {
        let signature = state.verifier.check_signature(seal);
        SealView {
            key_id: seal.key_id.clone(),
            signed_at: time(seal.sealed_at),
            events: seal.event_count,
            final_hash: hex::encode(&seal.final_hash),
            signature_valid: signature.is_ok(),
            signature_problem: signature.err().map(|e| e.to_string()).unwrap_or_default(),
        }
    });
    let key_ids = state
        .verifier
        .key_ids()
        .into_iter()
        .map(str::to_string)
        .collect();
    let hex_or_none = |hash: &Option<Vec<u8>>| hash.as_deref().map(hex::encode).unwrap_or_default();
    Ok(render(&IntegrityPage {
        nav: Nav::new(&viewer, "sessions"),
        id: session.id.to_string(),
        person: session.person_login.clone(),
        target: session.target_name.clone(),
        started: time(session.started_at),
        live: session.ended_at.is_none(),
        events: check.events,
        first_hash: hex_or_none(&check.first_hash),
        last_hash: hex_or_none(&check.last_hash),
        seal: seal_view,
        result,
        result_css,
        result_detail,
        indexed_label: indexed.label(),
        indexed_css: indexed.css(),
        indexed_detail: indexed_detail(&indexed, stats.get(&session.id)),
        export_file: format!(
            "pgbastion-{}-{}.jsonl",
            file_safe(&session.target_name),
            session.id
        ),
        key_ids,
    }))
}

fn indexed_detail(integrity: &Integrity, stats: Option<&gateway::store::SessionStats>) -> String {
    let checked = match stats.and_then(|s| s.chain_verified_seq) {
        Some(seq) => format!("events 0 to {seq} link up"),
        None => "no event checked yet".into(),
    };
    format!("{} ({checked})", integrity.explain())
}

/// Reads the recording in pages and checks every link, then the seal. A live session is
/// checked as far as it is stored.
async fn check_recording(
    store: &dyn Store,
    session: &Session,
    seal: Option<&RecordingSeal>,
    state: &AppState,
) -> Result<Check, StoreError> {
    let mut verifier = ChainVerifier::new(session.id);
    let mut check = Check {
        events: 0,
        first_hash: None,
        last_hash: None,
        outcome: Ok(false),
    };
    let mut from = 0;
    loop {
        let page = store
            .session_events(session.id, from, EVENTS_PER_READ)
            .await?;
        for event in &page {
            if check.first_hash.is_none() {
                check.first_hash = Some(event.hash.clone());
            }
            if let Err(e) = verifier.push(event) {
                check.events = verifier.next_seq();
                check.outcome = Err(e);
                return Ok(check);
            }
            check.last_hash = Some(event.hash.clone());
        }
        match page.last() {
            Some(last) if page.len() as i64 == EVENTS_PER_READ => from = last.seq + 1,
            _ => break,
        }
        // Hashing is CPU work on the runtime's threads: let the relays run between pages.
        tokio::task::yield_now().await;
    }
    check.events = verifier.next_seq();
    check.outcome = verifier
        .finish(seal, &state.verifier)
        .map(|report| report.sealed);
    Ok(check)
}
