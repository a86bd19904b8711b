//! `/admin/people`: who is known, their groups, and for local accounts their console roles.
//! People who sign in through the identity provider get their roles from the group mapping
//! in the configuration, at each sign-in; this page only shows that mapping.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use gateway::store::{LocalAccount, Person, StoreError};
use serde::Deserialize;

use super::{Done, done_redirect, gone, path_segment, ticked};
use crate::console::AppState;
use crate::console::auth::{Form, NoFields, Role, Roles, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, render, time};

pub struct RoleBox {
    pub name: &'static str,
    pub checked: bool,
}

/// What a local account adds to a person's row.
pub struct LocalView {
    pub roles: Vec<RoleBox>,
    pub state: String,
    /// Whether it can sign in now.
    pub usable: bool,
}

pub struct PersonRow {
    pub login: String,
    pub path: String,
    pub name: String,
    pub email: String,
    pub groups: String,
    pub local: Option<LocalView>,
    pub is_self: bool,
}

/// One line of the configured group-to-role mapping.
pub struct Mapping {
    pub role: &'static str,
    pub groups: String,
}

#[derive(Template)]
#[template(path = "admin_people.html")]
pub struct PeoplePage {
    pub nav: Nav,
    pub rows: Vec<PersonRow>,
    pub notice: Option<String>,
    /// The identity provider's issuer, when one is configured.
    pub provider: Option<String>,
    pub mapping: Vec<Mapping>,
}

/// Whether and why a local account can sign in now.
fn account_state(account: &LocalAccount, now: DateTime<Utc>) -> (String, bool) {
    if account.disabled {
        return ("disabled".into(), false);
    }
    if let Some(until) = account.locked_until.filter(|until| *until > now) {
        return (
            format!(
                "locked until {} after {} failed sign-ins",
                time(until),
                account.failed_attempts
            ),
            false,
        );
    }
    if Roles::from_names(&account.roles).is_empty() {
        return ("no roles: cannot sign in".into(), false);
    }
    if account.failed_attempts > 0 {
        return (
            format!("active ({} failed sign-ins)", account.failed_attempts),
            true,
        );
    }
    ("active".into(), true)
}

fn local_view(account: &LocalAccount, now: DateTime<Utc>) -> LocalView {
    let roles = Roles::from_names(&account.roles);
    let (state, usable) = account_state(account, now);
    LocalView {
        roles: Role::ALL
            .into_iter()
            .map(|r| RoleBox {
                name: r.as_str(),
                checked: roles.has(r),
            })
            .collect(),
        state,
        usable,
    }
}

/// People and local accounts by login (an account normally has its person, but need not).
fn rows(
    people: Vec<Person>,
    accounts: Vec<LocalAccount>,
    viewer: &str,
    now: DateTime<Utc>,
) -> Vec<PersonRow> {
    let mut by_login: BTreeMap<String, (Option<Person>, Option<LocalAccount>)> = BTreeMap::new();
    for p in people {
        let entry = by_login.entry(p.login.clone()).or_default();
        entry.0 = Some(p);
    }
    for a in accounts {
        let entry = by_login.entry(a.login.clone()).or_default();
        entry.1 = Some(a);
    }
    by_login
        .into_iter()
        .map(|(login, (person, account))| PersonRow {
            path: path_segment(&login),
            name: person
                .as_ref()
                .and_then(|p| p.display_name.clone())
                .unwrap_or_default(),
            email: person
                .as_ref()
                .and_then(|p| p.email.clone())
                .unwrap_or_default(),
            groups: person.map(|p| p.groups.join(", ")).unwrap_or_default(),
            local: account.as_ref().map(|a| local_view(a, now)),
            is_self: login == viewer,
            login,
        })
        .collect()
}

fn sessions(n: u64) -> String {
    match n {
        1 => "1 console session".into(),
        n => format!("{n} console sessions"),
    }
}

fn notice(done: &Done, rows: &[PersonRow]) -> Option<String> {
    let login = done.name.as_deref()?;
    let row = rows.iter().find(|r| r.login == login)?;
    let ended = sessions(done.count()?);
    if done.is("roles") {
        let roles: Vec<&str> = row
            .local
            .as_ref()?
            .roles
            .iter()
            .filter(|r| r.checked)
            .map(|r| r.name)
            .collect();
        let roles = if roles.is_empty() {
            "none (the account cannot sign in)".to_string()
        } else {
            roles.join(", ")
        };
        return Some(format!(
            "Console roles of {login}: {roles}. {ended} ended, so the change applies at once."
        ));
    }
    if done.is("signout") {
        return Some(format!("{ended} of {login} ended."));
    }
    None
}

fn mapping(oidc: &gateway::config::OidcConfig) -> Vec<Mapping> {
    [
        (Role::User, &oidc.user_groups),
        (Role::Approver, &oidc.approver_groups),
        (Role::Auditor, &oidc.auditor_groups),
        (Role::Admin, &oidc.admin_groups),
    ]
    .into_iter()
    .map(|(role, groups)| Mapping {
        role: role.as_str(),
        groups: groups.join(", "),
    })
    .collect()
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let rows = rows(
        state.store.list_people().await?,
        state.store.list_local_accounts().await?,
        &viewer.login,
        Utc::now(),
    );
    let oidc = &state.config.oidc;
    Ok(render(&PeoplePage {
        nav: Nav::new(&viewer, "people"),
        notice: notice(&done, &rows),
        rows,
        provider: (!oidc.issuer_url.is_empty()).then(|| oidc.issuer_url.clone()),
        mapping: mapping(oidc),
    }))
}

#[derive(Debug, Default, Deserialize)]
pub struct RolesForm {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    approver: Option<String>,
    #[serde(default)]
    auditor: Option<String>,
    #[serde(default)]
    admin: Option<String>,
}

/// The ticked roles; an admin may not take their own admin role away (with no other admin
/// left, nobody could give it back from the console).
fn chosen_roles(form: &RolesForm, login: &str, viewer: &str) -> Result<Roles, ConsoleError> {
    let roles = [
        (Role::User, &form.user),
        (Role::Approver, &form.approver),
        (Role::Auditor, &form.auditor),
        (Role::Admin, &form.admin),
    ]
    .into_iter()
    .filter(|(_, field)| ticked(field))
    .fold(Roles::default(), |acc, (role, _)| acc.with(role));
    if login == viewer && !roles.has(Role::Admin) {
        return Err(ConsoleError::BadRequest(
            "You cannot remove your own admin role: another admin has to. Keep admin ticked."
                .into(),
        ));
    }
    Ok(roles)
}

pub async fn set_roles(
    State(state): State<AppState>,
    Path(login): Path<String>,
    Form { viewer, form }: Form<RolesForm>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let roles = chosen_roles(&form, &login, &viewer.login)?;
    let account = state.store.local_account(&login).await?.ok_or_else(|| {
        ConsoleError::NotFound(format!(
            "{login} has no local account; people who sign in through the identity provider \
             get their roles from the group mapping."
        ))
    })?;
    state
        .store
        .set_local_roles(&login, &roles.names())
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => gone("local account", &login),
            other => other.into(),
        })?;
    // The roles of a console session are fixed at sign-in: end them so the change applies now.
    let ended = state
        .store
        .end_console_sessions_of(&login, Utc::now())
        .await?;
    state
        .audit(
            &viewer.login,
            "person.roles",
            Some(login.clone()),
            serde_json::json!({
                "roles": roles.names(),
                "was": Roles::from_names(&account.roles).names(),
                "sessions_ended": ended,
            }),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(done_redirect(
        "/admin/people",
        "roles",
        &[("name", &login), ("count", &ended.to_string())],
    ))
}

pub async fn sign_out(
    State(state): State<AppState>,
    Path(login): Path<String>,
    Form { viewer, .. }: Form<NoFields>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let known = state.store.person_by_login(&login).await?.is_some()
        || state.store.local_account(&login).await?.is_some();
    if !known {
        return Err(gone("person", &login));
    }
    let ended = state
        .store
        .end_console_sessions_of(&login, Utc::now())
        .await?;
    state
        .audit(
            &viewer.login,
            "person.signout",
            Some(login.clone()),
            serde_json::json!({ "sessions_ended": ended }),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(done_redirect(
        "/admin/people",
        "signout",
        &[("name", &login), ("count", &ended.to_string())],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(roles: &[&str]) -> LocalAccount {
        let now = Utc::now();
        LocalAccount {
            login: "root".into(),
            password_hash: "$argon2id$...".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            failed_attempts: 0,
            locked_until: None,
            disabled: false,
            created_at: now,
            password_changed_at: now,
        }
    }

    fn form(roles: &[&str]) -> RolesForm {
        let on = |name: &str| roles.contains(&name).then(|| "on".to_string());
        RolesForm {
            user: on("user"),
            approver: on("approver"),
            auditor: on("auditor"),
            admin: on("admin"),
        }
    }

    #[test]
    fn ticked_boxes_become_the_roles() {
        let roles = chosen_roles(&form(&["user", "auditor"]), "alice", "root").unwrap();
        assert_eq!(roles.names(), ["user", "auditor"]);
        assert!(
            chosen_roles(&form(&[]), "alice", "root")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_admin_cannot_drop_their_own_admin_role() {
        let err = chosen_roles(&form(&["user"]), "root", "root").unwrap_err();
        assert!(matches!(err, ConsoleError::BadRequest(_)));
        assert!(err.to_string().contains("your own admin role"), "{err}");
        let kept = chosen_roles(&form(&["admin", "auditor"]), "root", "root").unwrap();
        assert_eq!(kept.names(), ["auditor", "admin"]);
        // Another admin's may go.
        assert!(chosen_roles(&form(&["user"]), "dave", "root").is_ok());
    }

    #[test]
    fn the_account_state_says_why_it_cannot_sign_in() {
        let now = Utc::now();
        assert_eq!(
            account_state(&account(&["admin"]), now),
            ("active".into(), true)
        );
        let mut locked = account(&["admin"]);
        locked.failed_attempts = 5;
        locked.locked_until = Some(now + chrono::Duration::minutes(10));
        let (state, usable) = account_state(&locked, now);
        assert!(
            state.starts_with("locked until") && state.contains("5 failed"),
            "{state}"
        );
        assert!(!usable);
        locked.locked_until = Some(now - chrono::Duration::minutes(1));
        assert_eq!(
            account_state(&locked, now),
            ("active (5 failed sign-ins)".into(), true)
        );
        assert!(!account_state(&account(&[]), now).1);
        let mut disabled = account(&["admin"]);
        disabled.disabled = true;
        assert_eq!(account_state(&disabled, now), ("disabled".into(), false));
    }

    #[test]
    fn rows_join_people_and_local_accounts_by_login() {
        let now = Utc::now();
        let person = |login: &str| Person {
            id: uuid::Uuid::new_v4(),
            login: login.into(),
            display_name: Some(format!("{login} name")),
            email: None,
            groups: vec!["dev".into(), "ops".into()],
            created_at: now,
        };
        let mut orphan = account(&["auditor"]);
        orphan.login = "zed".into();
        let got = rows(
            vec![person("alice"), person("root")],
            vec![account(&["admin"]), orphan],
            "root",
            now,
        );
        let summary: Vec<(&str, bool, bool, &str)> = got
            .iter()
            .map(|r| {
                (
                    r.login.as_str(),
                    r.local.is_some(),
                    r.is_self,
                    r.groups.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("alice", false, false, "dev, ops"),
                ("root", true, true, "dev, ops"),
                ("zed", true, false, ""),
            ]
        );
    }

    #[test]
    fn notices_only_speak_of_listed_people() {
        let now = Utc::now();
        let rows = rows(Vec::new(), vec![account(&["admin", "user"])], "root", now);
        let done = |what: &str, name: &str| Done {
            done: Some(what.into()),
            name: Some(name.into()),
            count: Some("2".into()),
            ..Default::default()
        };
        assert_eq!(
            notice(&done("roles", "root"), &rows).as_deref(),
            Some(
                "Console roles of root: user, admin. 2 console sessions ended, so the change applies at once."
            )
        );
        assert_eq!(
            notice(&done("signout", "root"), &rows).as_deref(),
            Some("2 console sessions of root ended.")
        );
        assert_eq!(notice(&done("signout", "Call 555-0100 now"), &rows), None);
    }
}
