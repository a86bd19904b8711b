//! Sessions: a person's own ("My sessions"), or, for auditors and admins, everyone's, with
//! filters that live in the URL (so a search can be shared), keyset paging, and the counts of
//! the statement index (statements, errors, risky). With free text or a statement filter the
//! page lists matching statements instead, with highlighted snippets.

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use gateway::record::integrity::assess;
use gateway::store::search::{MARK_END, MARK_START, class_name, parse_class};
use gateway::store::{
    SessionFilter, SessionPage, SessionStatus, SessionSummary, StatementHit, StatementPage,
    StatementQuery, TextMatch,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::console::AppState;
use crate::console::auth::{Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, duration, render, time};

const PAGE: i64 = 50;
const MAX_TEXT_CHARS: usize = 500;

/// The filters, as the URL carries them. Empty fields mean "any".
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub person: String,
    #[serde(default)]
    pub target: String,
    /// A group the person was in when the session started.
    #[serde(default)]
    pub group: String,
    /// live, ended or terminated.
    #[serde(default)]
    pub status: String,
    /// Dates (UTC), inclusive.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// Free text over statements and their parameters.
    #[serde(default)]
    pub q: String,
    /// "words" (default) or "substring".
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub errors: String,
    #[serde(default)]
    pub risky: String,
    /// Keyset cursor of the next page: `RFC3339,uuid` (sessions) or `RFC3339,uuid,seq`.
    #[serde(default)]
    pub before: String,
}

impl Filters {
    fn statement_search(&self) -> bool {
        !self.q.trim().is_empty()
            || !self.class.is_empty()
            || !self.errors.is_empty()
            || !self.risky.is_empty()
    }

    /// The filters as a query string, without the page cursor (for the exports' links).
    fn query_string(&self) -> String {
        let full = self.next_url("");
        let query = full.split_once('?').map_or("", |(_, q)| q);
        query
            .strip_suffix("before=")
            .unwrap_or(query)
            .trim_end_matches('&')
            .to_string()
    }

    /// This page's URL with `before` set to `cursor`.
    fn next_url(&self, cursor: &str) -> String {
        let pairs = [
            ("person", &self.person),
            ("target", &self.target),
            ("group", &self.group),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
            ("q", &self.q),
            ("mode", &self.mode),
            ("class", &self.class),
            ("errors", &self.errors),
            ("risky", &self.risky),
        ];
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if !v.is_empty() {
                url.append_pair(k, v);
            }
        }
        url.append_pair("before", cursor);
        format!("/sessions?{}", url.finish())
    }
}

fn bad(what: &str, value: &str) -> ConsoleError {
    ConsoleError::BadRequest(format!("The filter {what} '{value}' is not understood."))
}

fn date(what: &str, value: &str, end_of_day: bool) -> ConsoleResult<Option<DateTime<Utc>>> {
    if value.is_empty() {
        return Ok(None);
    }
    let day = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| bad(what, value))?;
    let day = if end_of_day {
        day.succ_opt().ok_or_else(|| bad(what, value))?
    } else {
        day
    };
    Ok(Some(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc()))
}

fn flag(what: &str, value: &str) -> ConsoleResult<Option<bool>> {
    match value {
        "" => Ok(None),
        "yes" => Ok(Some(true)),
        "no" => Ok(Some(false)),
        other => Err(bad(what, other)),
    }
}

fn opt(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// The statement search the filters ask for, limited to `person` (a user's own sessions).
pub fn statement_query(f: &Filters, person: Option<String>) -> ConsoleResult<StatementQuery> {
    let text: String = f.q.trim().chars().take(MAX_TEXT_CHARS).collect();
    Ok(StatementQuery {
        text: (!text.is_empty()).then_some(text),
        text_match: match f.mode.as_str() {
            "" | "words" => TextMatch::Words,
            "substring" => TextMatch::Substring,
            other => return Err(bad("mode", other)),
        },
        session_id: None,
        person,
        target: opt(&f.target),
        class: match f.class.as_str() {
            "" => None,
            name => Some(parse_class(name).ok_or_else(|| bad("class", name))?),
        },
        has_error: flag("errors", &f.errors)?,
        risky: flag("risky", &f.risky)?,
        after: date("from", &f.from, false)?,
        before: date("to", &f.to, true)?,
    })
}

/// Whose sessions the viewer may see: everyone's (auditors, admins: `Ok(None)` or the person
/// the filter names) or only their own.
pub fn visible_person(viewer: &Viewer, asked: &str) -> ConsoleResult<(bool, Option<String>)> {
    let everyone = viewer.roles.has(Role::Auditor) || viewer.roles.has(Role::Admin);
    if everyone {
        Ok((true, opt(asked)))
    } else {
        viewer.require(Role::User)?;
        Ok((false, Some(viewer.login.clone())))
    }
}

pub struct SessionRow {
    pub id: String,
    pub person: String,
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
    /// From the statement index; empty until it has seen the session.
    pub statements: String,
    pub errors: String,
    pub risky: String,
    pub integrity: String,
    /// The integrity badge's colour class, and what it means.
    pub integrity_css: &'static str,
    pub integrity_title: String,
}

/// A snippet cut into plain pieces, each marked as a match or not: the template escapes each
/// piece and wraps matches in `<mark>`, so nothing recorded is ever trusted as HTML.
pub struct HitRow {
    pub session: String,
    pub seq: i64,
    pub at: String,
    pub person: String,
    pub target: String,
    pub class: &'static str,
    pub risks: String,
    pub error: String,
    pub outcome: String,
    pub parts: Vec<(String, bool)>,
}

#[derive(Template)]
#[template(path = "sessions.html")]
pub struct SessionsPage {
    pub nav: Nav,
    /// Everyone's sessions (auditors, admins), or only the viewer's.
    pub everyone: bool,
    pub person: String,
    pub target: String,
    pub group: String,
    pub status: String,
    pub from: String,
    pub to: String,
    pub q: String,
    pub mode: String,
    pub class: String,
    pub errors: String,
    pub risky: String,
    pub searching: bool,
    pub rows: Vec<SessionRow>,
    pub hits: Vec<HitRow>,
    pub next: Option<String>,
    pub classes: Vec<&'static str>,
    /// The filters as a query string, for the search's export links.
    pub export_query: String,
}

pub async fn mine(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(f): Query<Filters>,
) -> ConsoleResult<Response> {
    // A user's own sessions only, whatever the URL says.
    let (everyone, person) = visible_person(&viewer, &f.person)?;
    let after = date("from", &f.from, false)?;
    let before_time = date("to", &f.to, true)?;
    let mut page = SessionsPage {
        nav: Nav::new(&viewer, "sessions"),
        everyone,
        person: if everyone {
            f.person.clone()
        } else {
            String::new()
        },
        target: f.target.clone(),
        group: f.group.clone(),
        status: f.status.clone(),
        from: f.from.clone(),
        to: f.to.clone(),
        q: f.q.clone(),
        mode: f.mode.clone(),
        class: f.class.clone(),
        errors: f.errors.clone(),
        risky: f.risky.clone(),
        searching: f.statement_search(),
        rows: Vec::new(),
        hits: Vec::new(),
        next: None,
        export_query: f.query_string(),
        classes: [
            "read",
            "write",
            "ddl",
            "privilege",
            "transaction",
            "utility",
            "unknown",
        ]
        .to_vec(),
    };
    if page.searching {
        if !f.group.trim().is_empty() {
            return Err(ConsoleError::BadRequest(
                "The group filter narrows the session list; clear the search text, class, \
                 errors and risky filters to use it."
                    .into(),
            ));
        }
        let query = statement_query(&f, person)?;
        let cursor = statement_cursor(&f.before)?;
        let hits = state
            .store
            .search_statements(
                &query,
                &StatementPage {
                    before: cursor,
                    limit: PAGE,
                },
            )
            .await?;
        if let Some(last) = hits.last().filter(|_| hits.len() as i64 == PAGE) {
            let (at, id, seq) = last.cursor();
            page.next = Some(f.next_url(&format!("{},{id},{seq}", at.to_rfc3339())));
        }
        page.hits = hits.iter().map(hit_row).collect();
    } else {
        let filter = SessionFilter {
            person,
            target: opt(&f.target),
            started_after: after,
            started_before: before_time,
            status: match f.status.as_str() {
                "" => None,
                "live" => Some(SessionStatus::Live),
                "ended" => Some(SessionStatus::Ended),
                "terminated" => Some(SessionStatus::Terminated),
                other => return Err(bad("status", other)),
            },
            group: opt(&f.group),
        };
        let sessions = state
            .store
            .find_sessions(
                &filter,
                &SessionPage {
                    before: session_cursor(&f.before)?,
                    limit: PAGE,
                },
            )
            .await?;
        let ids: Vec<Uuid> = sessions.iter().map(|s| s.session.id).collect();
        let stats = state.store.session_stats(&ids).await?;
        let mut seals = HashMap::new();
        for summary in sessions.iter().filter(|s| s.sealed) {
            if let Some(seal) = state.store.recording_seal(summary.session.id).await? {
                seals.insert(summary.session.id, seal);
            }
        }
        if let Some(last) = sessions.last().filter(|_| sessions.len() as i64 == PAGE) {
            let (at, id) = last.cursor();
            page.next = Some(f.next_url(&format!("{},{id}", at.to_rfc3339())));
        }
        page.rows = sessions
            .iter()
            .map(|s| session_row(s, &stats, &seals, &state.verifier))
            .collect();
    }
    Ok(render(&page))
}

fn session_cursor(value: &str) -> ConsoleResult<Option<(DateTime<Utc>, Uuid)>> {
    if value.is_empty() {
        return Ok(None);
    }
    let (at, id) = value.split_once(',').ok_or_else(|| bad("before", value))?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad("before", value))?;
    let id = id.parse().map_err(|_| bad("before", value))?;
    Ok(Some((at.with_timezone(&Utc), id)))
}

fn statement_cursor(value: &str) -> ConsoleResult<Option<(DateTime<Utc>, Uuid, i64)>> {
    if value.is_empty() {
        return Ok(None);
    }
    let (rest, seq) = value.rsplit_once(',').ok_or_else(|| bad("before", value))?;
    let (at, id) = session_cursor(rest)?.ok_or_else(|| bad("before", value))?;
    let seq = seq.parse().map_err(|_| bad("before", value))?;
    Ok(Some((at, id, seq)))
}

fn session_row(
    s: &SessionSummary,
    stats: &HashMap<Uuid, gateway::store::SessionStats>,
    seals: &HashMap<Uuid, gateway::store::RecordingSeal>,
    keys: &gateway::record::chain::Verifier,
) -> SessionRow {
    let session = &s.session;
    let now = Utc::now();
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
    let counts = stats.get(&session.id);
    let count = |f: fn(&gateway::store::SessionStats) -> i64| {
        counts.map(|c| f(c).to_string()).unwrap_or_default()
    };
    let integrity = assess(session, counts, seals.get(&session.id), keys);
    SessionRow {
        id: session.id.to_string(),
        person: session.person_login.clone(),
        target: session.target_name.clone(),
        role: session.db_role.clone(),
        client: client_ip(&session.client_addr),
        application: session.application_name.clone().unwrap_or_default(),
        started: time(session.started_at),
        length: duration((end - session.started_at).num_seconds().max(0)),
        status,
        badge,
        events: s.event_count,
        statements: count(|c| c.statements),
        errors: count(|c| c.errors),
        risky: count(|c| c.risky),
        integrity: integrity.label(),
        integrity_css: integrity.css(),
        integrity_title: integrity.explain(),
    }
}

fn hit_row(hit: &StatementHit) -> HitRow {
    let error = match &hit.sqlstate {
        Some(code) => format!("error {code}"),
        None if hit.has_error => "error".into(),
        None => String::new(),
    };
    let outcome = match (&hit.tag, hit.rows) {
        (Some(tag), _) => tag.clone(),
        (None, Some(rows)) => format!("{rows} rows"),
        _ => String::new(),
    };
    HitRow {
        session: hit.session_id.to_string(),
        seq: hit.seq,
        at: time(hit.at),
        person: hit.person_login.clone(),
        target: hit.target_name.clone(),
        class: class_name(hit.class),
        risks: hit.risks.join(", "),
        error,
        outcome,
        parts: snippet_parts(&hit.snippet),
    }
}

/// Splits a snippet at its markers into (text, is_match) pieces.
fn snippet_parts(snippet: &str) -> Vec<(String, bool)> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut inside = false;
    for c in snippet.chars() {
        if c == MARK_START || c == MARK_END {
            if !current.is_empty() {
                parts.push((std::mem::take(&mut current), inside));
            }
            inside = c == MARK_START;
        } else {
            current.push(c);
        }
    }
    if !current.is_empty() {
        parts.push((current, inside));
    }
    parts
}

/// The client's address without its (ephemeral) port: `192.0.2.7:51234` → `192.0.2.7`,
/// `[2001:db8::1]:5000` → `2001:db8::1`.
fn client_ip(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sock) => sock.ip().to_string(),
        Err(_) => addr.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_links_carry_the_filters_but_not_the_page() {
        let f = Filters {
            q: "a&b c".into(),
            target: "shop".into(),
            before: "2026-01-01T00:00:00+00:00,x,1".into(),
            ..Filters::default()
        };
        assert_eq!(f.query_string(), "target=shop&q=a%26b+c");
        assert_eq!(Filters::default().query_string(), "");
    }

    #[test]
    fn snippets_split_at_their_markers_and_cursors_round_trip() {
        let s = format!("SELECT {MARK_START}orders{MARK_END} FROM x <b>");
        assert_eq!(
            snippet_parts(&s),
            [
                ("SELECT ".to_string(), false),
                ("orders".to_string(), true),
                (" FROM x <b>".to_string(), false)
            ]
        );
        let id = Uuid::new_v4();
        let at = Utc::now();
        let (a, i, seq) = statement_cursor(&format!("{},{id},42", at.to_rfc3339()))
            .unwrap()
            .unwrap();
        assert_eq!((a, i, seq), (at, id, 42));
        assert!(session_cursor("garbage").is_err());
        assert!(date("from", "2026-13-01", false).is_err());
        assert_eq!(client_ip("192.0.2.7:51234"), "192.0.2.7");
    }
}
