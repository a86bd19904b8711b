//! `/admin/grants`: who may use which database role on which target, for how long at most,
//! and whether a second person must approve each credential.

use std::collections::{BTreeSet, HashMap};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use gateway::store::{Grant, GrantSubject, NewGrant, StoreError};
use serde::Deserialize;

use super::super::parse_id;
use super::{Choice, Done, done_redirect, gone, parse_flag, path_segment, pg_name, ticked};
use crate::console::AppState;
use crate::console::auth::{Form, NoFields, Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, duration, render, time};

/// The maximum lifetimes offered; 8 hours (the CLI's default) is preselected.
const LIFETIMES: [i64; 10] = [
    900, 1800, 3600, 7200, 14_400, 28_800, 43_200, 86_400, 259_200, 604_800,
];
const DEFAULT_LIFETIME: i64 = 28_800;
/// Shorter than a minute is no use to anyone; longer than a week is not short-lived.
const LIFETIME_RANGE: std::ops::RangeInclusive<i64> = 60..=604_800;
/// Longest person login or group name taken.
const MAX_SUBJECT_CHARS: usize = 200;

pub struct GrantRow {
    pub id: String,
    pub kind: &'static str,
    pub who: String,
    pub target: String,
    pub target_path: String,
    pub role: String,
    pub max_lifetime: String,
    pub requires_approval: bool,
    pub created: String,
    /// The gateway has no upstream login for the role: sessions under the grant are refused.
    pub missing_login: bool,
}

#[derive(Template)]
#[template(path = "admin_grants.html")]
pub struct GrantsPage {
    pub nav: Nav,
    pub rows: Vec<GrantRow>,
    pub notice: Option<String>,
    pub warning: Option<String>,
    pub targets: Vec<String>,
    pub lifetimes: Vec<Choice>,
    /// Known logins and groups, offered as suggestions.
    pub people: Vec<String>,
    pub groups: Vec<String>,
}

fn describe_subject(subject: &GrantSubject) -> (&'static str, String) {
    match subject {
        GrantSubject::Person(login) => ("person", login.clone()),
        GrantSubject::Group(group) => ("group", group.clone()),
    }
}

/// Roles each target can log in as upstream: its default login and its role logins.
async fn upstream_logins(state: &AppState) -> ConsoleResult<HashMap<uuid::Uuid, Vec<String>>> {
    let mut logins = HashMap::new();
    for target in state.store.list_targets().await? {
        let mut roles: Vec<String> = state
            .store
            .list_target_logins(target.id)
            .await?
            .into_iter()
            .map(|l| l.role)
            .collect();
        roles.push(target.upstream_user);
        logins.insert(target.id, roles);
    }
    Ok(logins)
}

fn row(grant: &Grant, logins: &HashMap<uuid::Uuid, Vec<String>>) -> GrantRow {
    let (kind, who) = describe_subject(&grant.subject);
    GrantRow {
        id: grant.id.to_string(),
        kind,
        who,
        target: grant.target_name.clone(),
        target_path: path_segment(&grant.target_name),
        role: grant.db_role.clone(),
        max_lifetime: duration(grant.max_lifetime_secs),
        requires_approval: grant.requires_approval,
        created: time(grant.created_at),
        missing_login: !logins
            .get(&grant.target_id)
            .is_some_and(|roles| roles.contains(&grant.db_role)),
    }
}

/// The notice (and a warning) after a change, from the grants as they are now.
fn notices(done: &Done, rows: &[GrantRow]) -> (Option<String>, Option<String>) {
    let find = || {
        done.id
            .as_deref()
            .and_then(|id| rows.iter().find(|r| r.id == id))
    };
    if done.is("removed") {
        return (
            Some(
                "Grant removed. Credentials already issued under it stay valid until they \
                 expire or are revoked."
                    .into(),
            ),
            None,
        );
    }
    let Some(r) = find() else {
        return (None, None);
    };
    if done.is("added") {
        let notice = format!(
            "Grant added: {} {} may use role {} on {} for up to {}{}.",
            r.kind,
            r.who,
            r.role,
            r.target,
            r.max_lifetime,
            if r.requires_approval {
                ", each credential approved by an approver"
            } else {
                ""
            }
        );
        let warning = r.missing_login.then(|| {
            format!(
                "Target {} has no upstream login for role {} yet: sessions under this grant are \
                 refused until an admin adds one (pgbastion target login add).",
                r.target, r.role
            )
        });
        return (Some(notice), warning);
    }
    if done.is("approval") {
        let now = if r.requires_approval {
            "now need an approver's approval"
        } else {
            "no longer need approval"
        };
        return (
            Some(format!(
                "Credentials for role {} on {} under the grant of {} {} {now}.",
                r.role, r.target, r.kind, r.who
            )),
            None,
        );
    }
    (None, None)
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let logins = upstream_logins(&state).await?;
    let rows: Vec<GrantRow> = state
        .store
        .list_grants(None)
        .await?
        .iter()
        .map(|g| row(g, &logins))
        .collect();
    let (notice, warning) = notices(&done, &rows);
    let targets = state
        .store
        .list_targets()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    let people_list = state.store.list_people().await?;
    let groups: BTreeSet<String> = people_list
        .iter()
        .flat_map(|p| p.groups.iter().cloned())
        .collect();
    Ok(render(&GrantsPage {
        nav: Nav::new(&viewer, "grants"),
        rows,
        notice,
        warning,
        targets,
        lifetimes: LIFETIMES
            .iter()
            .map(|secs| Choice {
                value: secs.to_string(),
                label: duration(*secs),
                selected: *secs == DEFAULT_LIFETIME,
            })
            .collect(),
        people: people_list.into_iter().map(|p| p.login).collect(),
        groups: groups.into_iter().collect(),
    }))
}

#[derive(Debug, Default, Deserialize)]
pub struct GrantFields {
    #[serde(default)]
    subject_kind: String,
    #[serde(default)]
    subject_name: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    db_role: String,
    #[serde(default)]
    max_lifetime_secs: String,
    #[serde(default)]
    requires_approval: Option<String>,
}

/// The grant form, checked as far as it can be without the store.
#[derive(Debug, PartialEq, Eq)]
struct Checked {
    subject: GrantSubject,
    target: String,
    db_role: String,
    max_lifetime_secs: i64,
    requires_approval: bool,
}

fn check(f: &GrantFields) -> Result<Checked, ConsoleError> {
    let name = f.subject_name.trim();
    let what = match f.subject_kind.as_str() {
        "person" => "person's login",
        "group" => "group name",
        other => {
            return Err(ConsoleError::BadRequest(format!(
                "The subject kind '{other}' is unknown: choose person or group."
            )));
        }
    };
    if name.is_empty() {
        return Err(ConsoleError::BadRequest(format!("The {what} is empty.")));
    }
    if name.chars().count() > MAX_SUBJECT_CHARS || name.chars().any(char::is_control) {
        return Err(ConsoleError::BadRequest(format!(
            "The {what} must be at most {MAX_SUBJECT_CHARS} characters, without control \
             characters."
        )));
    }
    let subject = if f.subject_kind == "person" {
        GrantSubject::Person(name.to_string())
    } else {
        GrantSubject::Group(name.to_string())
    };
    let target = f.target.trim();
    if target.is_empty() {
        return Err(ConsoleError::BadRequest("Choose a target.".into()));
    }
    let max_lifetime_secs = f
        .max_lifetime_secs
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|secs| LIFETIME_RANGE.contains(secs))
        .ok_or_else(|| {
            ConsoleError::BadRequest(format!(
                "The maximum lifetime '{}' must be a number of seconds from {} to {}.",
                f.max_lifetime_secs.trim(),
                LIFETIME_RANGE.start(),
                LIFETIME_RANGE.end()
            ))
        })?;
    Ok(Checked {
        subject,
        target: target.to_string(),
        db_role: pg_name("database role", &f.db_role)?,
        max_lifetime_secs,
        requires_approval: ticked(&f.requires_approval),
    })
}

pub async fn add(
    State(state): State<AppState>,
    Form { viewer, form }: Form<GrantFields>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let checked = check(&form)?;
    let target = state
        .store
        .target_by_name(&checked.target)
        .await?
        .ok_or_else(|| {
            ConsoleError::BadRequest(format!("There is no target '{}'.", checked.target))
        })?;
    if let GrantSubject::Person(login) = &checked.subject
        && state.store.person_by_login(login).await?.is_none()
    {
        return Err(ConsoleError::BadRequest(format!(
            "There is no person '{login}'. People appear once they sign in, or when added with \
             `pgbastion person add {login}`; or grant a group instead."
        )));
    }
    let (kind, who) = describe_subject(&checked.subject);
    let grant = state
        .store
        .add_grant(&NewGrant {
            subject: checked.subject.clone(),
            target_id: target.id,
            db_role: checked.db_role.clone(),
            max_lifetime_secs: checked.max_lifetime_secs,
            requires_approval: checked.requires_approval,
        })
        .await
        .map_err(|e| match e {
            StoreError::Duplicate { .. } => ConsoleError::Conflict(format!(
                "The {kind} {who} already has a grant for role {} on {}. Change that grant's \
                 approval in the table, or remove it first.",
                checked.db_role, target.name
            )),
            StoreError::NotFound { .. } => gone("target", &target.name),
            other => other.into(),
        })?;
    state
        .audit(
            &viewer.login,
            "grant.add",
            Some(grant.id.to_string()),
            serde_json::json!({
                "subject": grant.subject,
                "target": grant.target_name,
                "role": grant.db_role,
                "max_lifetime_secs": grant.max_lifetime_secs,
                "requires_approval": grant.requires_approval,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(done_redirect(
        "/admin/grants",
        "added",
        &[("id", &grant.id.to_string())],
    ))
}

async fn find(state: &AppState, id: &str) -> ConsoleResult<Grant> {
    let id = parse_id(id)?;
    state
        .store
        .list_grants(None)
        .await?
        .into_iter()
        .find(|g| g.id == id)
        .ok_or_else(|| gone("grant", &id.to_string()))
}

fn grant_detail(grant: &Grant) -> serde_json::Value {
    serde_json::json!({
        "subject": grant.subject,
        "target": grant.target_name,
        "role": grant.db_role,
        "max_lifetime_secs": grant.max_lifetime_secs,
        "requires_approval": grant.requires_approval,
    })
}

pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form { viewer, .. }: Form<NoFields>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let grant = find(&state, &id).await?;
    if !state.store.remove_grant(grant.id).await? {
        return Err(gone("grant", &grant.id.to_string()));
    }
    state
        .audit(
            &viewer.login,
            "grant.remove",
            Some(grant.id.to_string()),
            grant_detail(&grant),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(done_redirect("/admin/grants", "removed", &[]))
}

#[derive(Debug, Deserialize)]
pub struct ApprovalForm {
    #[serde(default)]
    requires_approval: String,
}

pub async fn set_approval(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Form { viewer, form }: Form<ApprovalForm>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let requires_approval = parse_flag("requires_approval", &form.requires_approval)?;
    let grant = find(&state, &id).await?;
    state
        .store
        .set_grant_approval(grant.id, requires_approval)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => gone("grant", &grant.id.to_string()),
            other => other.into(),
        })?;
    let mut detail = grant_detail(&grant);
    detail["requires_approval"] = requires_approval.into();
    detail["was"] = grant.requires_approval.into();
    state
        .audit(
            &viewer.login,
            "grant.approval",
            Some(grant.id.to_string()),
            detail,
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(done_redirect(
        "/admin/grants",
        "approval",
        &[("id", &grant.id.to_string())],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> GrantFields {
        GrantFields {
            subject_kind: "group".into(),
            subject_name: " dev ".into(),
            target: "shop".into(),
            db_role: "app_ro".into(),
            max_lifetime_secs: "28800".into(),
            requires_approval: None,
        }
    }

    fn message(f: &GrantFields) -> String {
        let e = check(f).unwrap_err();
        assert!(matches!(e, ConsoleError::BadRequest(_)), "{e:?}");
        e.to_string()
    }

    #[test]
    fn a_complete_form_gives_the_grant() {
        assert_eq!(
            check(&fields()).unwrap(),
            Checked {
                subject: GrantSubject::Group("dev".into()),
                target: "shop".into(),
                db_role: "app_ro".into(),
                max_lifetime_secs: 28_800,
                requires_approval: false,
            }
        );
        let mut f = fields();
        f.subject_kind = "person".into();
        f.subject_name = "alice".into();
        f.requires_approval = Some("on".into());
        let c = check(&f).unwrap();
        assert_eq!(c.subject, GrantSubject::Person("alice".into()));
        assert!(c.requires_approval);
    }

    /// Makes one field of a good form wrong.
    type Spoil = fn(&mut GrantFields);

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(Spoil, &str); 7] = [
            (|f| f.subject_kind = "robot".into(), "subject kind"),
            (|f| f.subject_name = " ".into(), "group name is empty"),
            (|f| f.subject_name = "x".repeat(201), "group name"),
            (|f| f.target = String::new(), "target"),
            (|f| f.db_role = String::new(), "database role"),
            (
                |f| f.max_lifetime_secs = "8h".into(),
                "maximum lifetime '8h'",
            ),
            (
                |f| f.max_lifetime_secs = "604801".into(),
                "maximum lifetime",
            ),
        ];
        for (spoil, field) in cases {
            let mut f = fields();
            spoil(&mut f);
            let err = message(&f);
            assert!(err.contains(field), "{field}: {err}");
        }
        let mut f = fields();
        f.subject_kind = "person".into();
        f.subject_name = String::new();
        assert!(message(&f).contains("person's login is empty"));
    }

    #[test]
    fn every_offered_lifetime_is_accepted() {
        for secs in LIFETIMES {
            let mut f = fields();
            f.max_lifetime_secs = secs.to_string();
            assert_eq!(check(&f).unwrap().max_lifetime_secs, secs);
        }
        assert!(LIFETIMES.contains(&DEFAULT_LIFETIME));
        for bad in ["0", "59", "-3600"] {
            let mut f = fields();
            f.max_lifetime_secs = bad.into();
            assert!(check(&f).is_err(), "{bad}");
        }
    }

    fn grant_row(id: &str, missing_login: bool, requires_approval: bool) -> GrantRow {
        GrantRow {
            id: id.into(),
            kind: "group",
            who: "dev".into(),
            target: "shop".into(),
            target_path: "shop".into(),
            role: "app_rw".into(),
            max_lifetime: "8h".into(),
            requires_approval,
            created: String::new(),
            missing_login,
        }
    }

    fn done(what: &str, id: Option<&str>) -> Done {
        Done {
            done: Some(what.into()),
            id: id.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn notices_describe_the_stored_grant_and_warn_about_a_missing_login() {
        let rows = [grant_row("g1", true, false), grant_row("g2", false, true)];
        let (notice, warning) = notices(&done("added", Some("g1")), &rows);
        assert_eq!(
            notice.as_deref(),
            Some("Grant added: group dev may use role app_rw on shop for up to 8h.")
        );
        assert!(
            warning
                .unwrap()
                .contains("no upstream login for role app_rw")
        );
        let (notice, warning) = notices(&done("approval", Some("g2")), &rows);
        assert!(
            notice
                .unwrap()
                .ends_with("now need an approver's approval.")
        );
        assert_eq!(warning, None);
        // An id that is not in the table (or a made-up link) shows nothing.
        assert_eq!(notices(&done("added", Some("nope")), &rows), (None, None));
        assert!(notices(&done("removed", None), &rows).0.is_some());
    }
}
