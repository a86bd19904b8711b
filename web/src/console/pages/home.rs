//! The start page: what the person can reach and ask for, and where their requests stand.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use gateway::store::{Grant, GrantSubject, Person, RequestFilter, RequestStatus, Target};

use crate::console::AppState;
use crate::console::auth::{Role, Viewer};
use crate::console::error::ConsoleResult;
use crate::console::view::{Nav, duration, render};

/// One database role a person may ask for on a target.
#[derive(Debug, Clone)]
pub struct RoleOption {
    pub role: String,
    pub max_lifetime_secs: i64,
    /// True when every grant that allows it requires approval.
    pub needs_approval: bool,
}

/// A target the person may ask for, with its roles.
#[derive(Debug, Clone)]
pub struct Reachable {
    pub target: Target,
    pub roles: Vec<RoleOption>,
}

/// Whether `grant` is for `person` (directly or through one of their groups).
pub fn grant_applies(grant: &Grant, person: &Person) -> bool {
    match &grant.subject {
        GrantSubject::Person(login) => *login == person.login,
        GrantSubject::Group(group) => person.groups.contains(group),
    }
}

/// The enabled targets and roles `person`'s grants allow, by target name.
pub async fn reachable(state: &AppState, person: &Person) -> ConsoleResult<Vec<Reachable>> {
    let targets: BTreeMap<_, _> = state
        .store
        .list_targets()
        .await?
        .into_iter()
        .filter(|t| t.enabled)
        .map(|t| (t.id, t))
        .collect();
    let mut by_target: BTreeMap<String, Reachable> = BTreeMap::new();
    for grant in state.store.list_grants(None).await? {
        let Some(target) = targets.get(&grant.target_id) else {
            continue;
        };
        if !grant_applies(&grant, person) {
            continue;
        }
        let entry = by_target
            .entry(target.name.clone())
            .or_insert_with(|| Reachable {
                target: target.clone(),
                roles: Vec::new(),
            });
        match entry.roles.iter_mut().find(|r| r.role == grant.db_role) {
            Some(option) => {
                option.max_lifetime_secs = option.max_lifetime_secs.max(grant.max_lifetime_secs);
                option.needs_approval &= grant.requires_approval;
            }
            None => entry.roles.push(RoleOption {
                role: grant.db_role.clone(),
                max_lifetime_secs: grant.max_lifetime_secs,
                needs_approval: grant.requires_approval,
            }),
        }
    }
    Ok(by_target.into_values().collect())
}

/// Lifetimes offered in the request form, up to a grant's maximum.
pub fn lifetime_choices(max_secs: i64) -> Vec<(i64, String)> {
    let mut choices: Vec<(i64, String)> = [900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86_400]
        .into_iter()
        .filter(|s| *s < max_secs)
        .map(|s| (s, duration(s)))
        .collect();
    choices.push((
        max_secs,
        format!("{} (longest allowed)", duration(max_secs)),
    ));
    choices
}

pub struct TargetView {
    pub name: String,
    pub roles: Vec<RoleView>,
}

pub struct RoleView {
    pub role: String,
    pub max: String,
    pub needs_approval: bool,
    pub lifetimes: Vec<(i64, String)>,
    /// The default choice: one hour, or the longest allowed if shorter.
    pub default_lifetime: i64,
}

pub struct OpenRequest {
    pub id: String,
    pub target: String,
    pub role: String,
    pub status: &'static str,
    pub requested: String,
    pub collectable: bool,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage {
    pub nav: Nav,
    pub can_request: bool,
    pub targets: Vec<TargetView>,
    pub open: Vec<OpenRequest>,
    pub pending_approvals: usize,
}

pub async fn show(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult<Response> {
    let can_request = viewer.roles.has(Role::User);
    let mut targets = Vec::new();
    let mut open = Vec::new();
    if can_request {
        if let Some(person) = state.store.person_by_login(&viewer.login).await? {
            for r in reachable(&state, &person).await? {
                targets.push(TargetView {
                    name: r.target.name.clone(),
                    roles: r
                        .roles
                        .iter()
                        .map(|o| RoleView {
                            role: o.role.clone(),
                            max: duration(o.max_lifetime_secs),
                            needs_approval: o.needs_approval,
                            lifetimes: lifetime_choices(o.max_lifetime_secs),
                            default_lifetime: o.max_lifetime_secs.min(3600),
                        })
                        .collect(),
                });
            }
        }
        let filter = RequestFilter {
            person_login: Some(viewer.login.clone()),
            status: None,
            limit: 20,
        };
        for r in state.store.list_access_requests(&filter).await? {
            if matches!(r.status, RequestStatus::Pending | RequestStatus::Approved) {
                open.push(OpenRequest {
                    id: r.id.to_string(),
                    target: r.target_name,
                    role: r.db_role,
                    status: r.status.as_str(),
                    requested: crate::console::view::time(r.requested_at),
                    collectable: r.status == RequestStatus::Approved,
                });
            }
        }
    }
    let pending_approvals = if viewer.roles.has(Role::Approver) {
        let filter = RequestFilter {
            person_login: None,
            status: Some(RequestStatus::Pending),
            limit: 200,
        };
        state
            .store
            .list_access_requests(&filter)
            .await?
            .iter()
            .filter(|r| r.person_login != viewer.login)
            .count()
    } else {
        0
    };
    Ok(render(&HomePage {
        nav: Nav::new(&viewer, "home"),
        can_request,
        targets,
        open,
        pending_approvals,
    }))
}
