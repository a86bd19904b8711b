//! `/admin/targets`: the databases behind the gateway. Their upstream secrets are write-only:
//! a page says whether one is stored, never anything about it.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use gateway::store::{NewTarget, StoreError, Target, TargetEdit};
use serde::Deserialize;

use super::connection_test::{self, Outcome};
use super::target_form::{
    RECORDING_POLICIES, SecretChange, Settings, TLS_MODES, TargetFields, target_name,
};
use super::{Choice, Done, choices, done_redirect, gone, parse_flag, path_segment};
use crate::console::AppState;
use crate::console::auth::{Form, NoFields, Role, Viewer};
use crate::console::error::{ConsoleError, ConsoleResult};
use crate::console::view::{Nav, render, time};

pub struct TargetRow {
    pub name: String,
    pub path: String,
    pub upstream: String,
    pub database: String,
    pub tls: &'static str,
    pub user: String,
    pub recording: String,
    /// How long ended sessions are kept ("forever", "30 days").
    pub kept: String,
    pub enabled: bool,
    pub secret: &'static str,
}

#[derive(Template)]
#[template(path = "admin_targets.html")]
pub struct TargetsPage {
    pub nav: Nav,
    pub rows: Vec<TargetRow>,
    pub notice: Option<String>,
    pub tls_modes: Vec<Choice>,
    pub recordings: Vec<Choice>,
}

/// A login the gateway can use on the target, as the edit page lists it.
pub struct LoginRow {
    pub role: String,
    pub kind: &'static str,
    pub secret: &'static str,
    pub since: String,
}

#[derive(Template)]
#[template(path = "admin_target.html")]
pub struct TargetPage {
    pub nav: Nav,
    pub name: String,
    pub path: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub ca_pem: String,
    pub upstream_user: String,
    pub secret_set: bool,
    pub enabled: bool,
    pub caps: String,
    /// The retention field's value: days, or empty for forever.
    pub retention_days: String,
    pub created: String,
    pub tls_modes: Vec<Choice>,
    pub recordings: Vec<Choice>,
    pub logins: Vec<LoginRow>,
    /// Roles granted on the target that the gateway cannot log in as.
    pub missing_logins: Vec<String>,
    pub notice: Option<String>,
    pub test: Option<Outcome>,
}

fn set_or_none(sealed: bool) -> &'static str {
    if sealed { "set" } else { "none" }
}

/// The recording policy, with the row caps the target sets itself.
fn recording_summary(t: &Target) -> String {
    let caps = caps_text(t);
    if caps.is_empty() {
        t.recording.as_str().to_string()
    } else {
        format!("{} ({caps})", t.recording.as_str())
    }
}

/// How long a target keeps ended sessions, for the list.
fn kept_text(days: Option<u32>) -> String {
    match days {
        Some(1) => "1 day".into(),
        Some(n) => format!("{n} days"),
        None => "forever".into(),
    }
}

fn caps_text(t: &Target) -> String {
    [
        ("rows", t.record_max_rows),
        ("bytes", t.record_max_result_bytes),
    ]
    .into_iter()
    .filter_map(|(what, cap)| cap.map(|n| format!("{what} {n}")))
    .collect::<Vec<_>>()
    .join(", ")
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let targets = state.store.list_targets().await?;
    let notice = match done.name.as_deref() {
        Some(name) if done.is("added") && targets.iter().any(|t| t.name == name) => Some(format!(
            "Target {name} added. Open it to test its connection."
        )),
        _ => None,
    };
    let rows = targets
        .into_iter()
        .map(|t| TargetRow {
            path: path_segment(&t.name),
            upstream: format!("{}:{}", t.host, t.port),
            tls: t.tls_mode.as_str(),
            recording: recording_summary(&t),
            kept: kept_text(t.retention_days),
            secret: set_or_none(t.upstream_secret_sealed.is_some()),
            enabled: t.enabled,
            name: t.name,
            database: t.database,
            user: t.upstream_user,
        })
        .collect();
    Ok(render(&TargetsPage {
        nav: Nav::new(&viewer, "targets"),
        rows,
        notice,
        tls_modes: choices(&TLS_MODES, "require"),
        recordings: choices(&RECORDING_POLICIES, "strict"),
    }))
}

/// What the audit log keeps of a target's settings: everything but the secret, of which only
/// whether one is stored.
fn audit_detail(s: &Settings, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "host": s.host,
        "port": s.port,
        "database": s.database,
        "tls_mode": s.tls_mode.as_str(),
        "ca": set_or_none(s.ca_pem.is_some()),
        "upstream_user": s.upstream_user,
        "recording": s.recording.as_str(),
        "retention_days": s.retention_days,
        "secret": secret,
    })
}

pub async fn add(
    State(state): State<AppState>,
    Form { viewer, form }: Form<TargetFields>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let name = target_name(&form.name)?;
    let settings = form.settings()?;
    let sealed = form
        .new_password()?
        .map(|password| state.secrets.seal(password.as_bytes()));
    let secret = set_or_none(sealed.is_some());
    let target = state
        .store
        .add_target(&NewTarget {
            name: name.clone(),
            host: settings.host.clone(),
            port: settings.port,
            database: settings.database.clone(),
            tls_mode: settings.tls_mode,
            ca_pem: settings.ca_pem.clone(),
            upstream_user: settings.upstream_user.clone(),
            upstream_secret_sealed: sealed,
            recording: settings.recording,
            // The gateway's configured caps; `pgbastion target recording` sets a target's own.
            record_max_rows: None,
            record_max_result_bytes: None,
        })
        .await
        .map_err(|e| match e {
            StoreError::Duplicate { .. } => ConsoleError::Conflict(format!(
                "A target named {name} already exists; choose another name or edit that one."
            )),
            other => other.into(),
        })?;
    let target = match settings.retention_days {
        Some(days) => {
            state
                .store
                .set_target_retention(&target.name, Some(days))
                .await?
        }
        None => target,
    };
    state
        .audit(
            &viewer.login,
            "target.add",
            Some(target.name.clone()),
            audit_detail(&settings, secret),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(done_redirect(
        "/admin/targets",
        "added",
        &[("name", &target.name)],
    ))
}

async fn find(state: &AppState, name: &str) -> ConsoleResult<Target> {
    state
        .store
        .target_by_name(name)
        .await?
        .ok_or_else(|| gone("target", name))
}

/// The edit page of `target`, with a notice or a connection test's outcome.
async fn edit_page(
    state: &AppState,
    viewer: &Viewer,
    target: Target,
    notice: Option<String>,
    test: Option<Outcome>,
) -> ConsoleResult<Response> {
    let added = state.store.list_target_logins(target.id).await?;
    let default_login = LoginRow {
        role: target.upstream_user.clone(),
        kind: "default login",
        secret: set_or_none(target.upstream_secret_sealed.is_some()),
        // Part of the target, which may have changed it since: no date of its own.
        since: String::new(),
    };
    let mut missing_logins: Vec<String> = state
        .store
        .list_grants(Some(target.id))
        .await?
        .into_iter()
        .map(|g| g.db_role)
        .filter(|role| *role != target.upstream_user && !added.iter().any(|l| l.role == *role))
        .collect();
    missing_logins.sort();
    missing_logins.dedup();
    let logins = std::iter::once(default_login)
        .chain(added.into_iter().map(|l| LoginRow {
            role: l.role,
            kind: "role login",
            secret: set_or_none(l.secret_sealed.is_some()),
            since: time(l.created_at),
        }))
        .collect();
    Ok(render(&TargetPage {
        nav: Nav::new(viewer, "targets"),
        path: path_segment(&target.name),
        caps: caps_text(&target),
        retention_days: target
            .retention_days
            .map(|d| d.to_string())
            .unwrap_or_default(),
        created: time(target.created_at),
        tls_modes: choices(&TLS_MODES, target.tls_mode.as_str()),
        recordings: choices(&RECORDING_POLICIES, target.recording.as_str()),
        secret_set: target.upstream_secret_sealed.is_some(),
        name: target.name,
        host: target.host,
        port: target.port,
        database: target.database,
        ca_pem: target.ca_pem.unwrap_or_default(),
        upstream_user: target.upstream_user,
        enabled: target.enabled,
        logins,
        missing_logins,
        notice,
        test,
    }))
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(done): Query<Done>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let target = find(&state, &name).await?;
    let notice = if done.is("saved") {
        Some("Saved. Sessions that start from now on use these settings.")
    } else if done.is("enabled") {
        Some("Enabled: people can connect to this target again.")
    } else if done.is("disabled") {
        Some("Disabled: the gateway refuses new sessions to this target until it is enabled.")
    } else {
        None
    };
    edit_page(&state, &viewer, target, notice.map(String::from), None).await
}

/// The current settings of `target`, everything kept but `enabled`.
fn unchanged(target: &Target, enabled: bool) -> TargetEdit {
    TargetEdit {
        host: target.host.clone(),
        port: target.port,
        database: target.database.clone(),
        tls_mode: target.tls_mode,
        ca_pem: target.ca_pem.clone(),
        upstream_user: target.upstream_user.clone(),
        upstream_secret_sealed: None,
        enabled,
    }
}

/// Which settings differ, by field name, for the audit log.
fn changed_fields(before: &Target, after: &Settings, secret: &SecretChange) -> Vec<&'static str> {
    [
        ("host", before.host != after.host),
        ("port", before.port != after.port),
        ("database", before.database != after.database),
        ("tls_mode", before.tls_mode != after.tls_mode),
        ("ca", before.ca_pem != after.ca_pem),
        ("upstream_user", before.upstream_user != after.upstream_user),
        ("recording", before.recording != after.recording),
        (
            "retention_days",
            before.retention_days != after.retention_days,
        ),
        ("secret", *secret != SecretChange::Keep),
    ]
    .into_iter()
    .filter_map(|(field, differs)| differs.then_some(field))
    .collect()
}

pub async fn save(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Form { viewer, form }: Form<TargetFields>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let target = find(&state, &name).await?;
    let settings = form.settings()?;
    let secret = form.secret_change()?;
    let upstream_secret_sealed = match &secret {
        SecretChange::Keep => None,
        SecretChange::Clear => Some(None),
        SecretChange::Set(password) => Some(Some(state.secrets.seal(password.as_bytes()))),
    };
    let edit = TargetEdit {
        host: settings.host.clone(),
        port: settings.port,
        database: settings.database.clone(),
        tls_mode: settings.tls_mode,
        ca_pem: settings.ca_pem.clone(),
        upstream_user: settings.upstream_user.clone(),
        upstream_secret_sealed,
        enabled: target.enabled,
    };
    let missing = |e: StoreError| match e {
        StoreError::NotFound { .. } => gone("target", &name),
        other => other.into(),
    };
    state
        .store
        .edit_target(target.id, &edit)
        .await
        .map_err(missing)?;
    if settings.recording != target.recording {
        // The caps stay as they are: the form does not show them.
        state
            .store
            .set_target_recording(
                &target.name,
                settings.recording,
                target.record_max_rows,
                target.record_max_result_bytes,
            )
            .await
            .map_err(missing)?;
    }
    if settings.retention_days != target.retention_days {
        state
            .store
            .set_target_retention(&target.name, settings.retention_days)
            .await
            .map_err(missing)?;
    }
    let mut detail = audit_detail(&settings, secret.describe());
    detail["changed"] = serde_json::json!(changed_fields(&target, &settings, &secret));
    state
        .audit(
            &viewer.login,
            "target.edit",
            Some(target.name.clone()),
            detail,
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(done_redirect(
        &format!("/admin/targets/{}", path_segment(&target.name)),
        "saved",
        &[],
    ))
}

#[derive(Debug, Deserialize)]
pub struct EnabledForm {
    #[serde(default)]
    enabled: String,
}

pub async fn set_enabled(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Form { viewer, form }: Form<EnabledForm>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let enabled = parse_flag("enabled", &form.enabled)?;
    let target = find(&state, &name).await?;
    state
        .store
        .edit_target(target.id, &unchanged(&target, enabled))
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => gone("target", &name),
            other => other.into(),
        })?;
    let action = if enabled {
        "target.enable"
    } else {
        "target.disable"
    };
    state
        .audit(
            &viewer.login,
            action,
            Some(target.name.clone()),
            serde_json::json!({ "was_enabled": target.enabled }),
            viewer.client_addr.clone(),
        )
        .await?;
    Ok(done_redirect(
        &format!("/admin/targets/{}", path_segment(&target.name)),
        if enabled { "enabled" } else { "disabled" },
        &[],
    ))
}

pub async fn test(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Form { viewer, .. }: Form<NoFields>,
) -> ConsoleResult<Response> {
    viewer.require(Role::Admin)?;
    let target = find(&state, &name).await?;
    let outcome = connection_test::run(&state, &target).await;
    let detail = if outcome.ok {
        serde_json::json!({ "ok": true, "millis": outcome.millis })
    } else {
        serde_json::json!({ "ok": false, "millis": outcome.millis, "error": outcome.message })
    };
    state
        .audit(
            &viewer.login,
            "target.test",
            Some(target.name.clone()),
            detail,
            viewer.client_addr.clone(),
        )
        .await?;
    edit_page(&state, &viewer, target, None, Some(outcome)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::store::{RecordingPolicy, UpstreamTls};

    fn shop() -> Target {
        Target {
            id: uuid::Uuid::new_v4(),
            name: "shop".into(),
            host: "db".into(),
            port: 5432,
            database: "shop".into(),
            tls_mode: UpstreamTls::Require,
            ca_pem: None,
            upstream_user: "shop_ro".into(),
            upstream_secret_sealed: Some(b"sealed".to_vec()),
            recording: RecordingPolicy::Strict,
            record_max_rows: None,
            record_max_result_bytes: None,
            retention_days: None,
            enabled: true,
            created_at: chrono::Utc::now(),
        }
    }

    fn settings_of(t: &Target) -> Settings {
        Settings {
            host: t.host.clone(),
            port: t.port,
            database: t.database.clone(),
            tls_mode: t.tls_mode,
            ca_pem: t.ca_pem.clone(),
            upstream_user: t.upstream_user.clone(),
            recording: t.recording,
            retention_days: t.retention_days,
        }
    }

    #[test]
    fn the_audit_log_names_changed_fields_and_never_the_secret() {
        let before = shop();
        let mut after = settings_of(&before);
        assert!(changed_fields(&before, &after, &SecretChange::Keep).is_empty());
        after.port = 6432;
        after.recording = RecordingPolicy::Off;
        after.retention_days = Some(30);
        let secret = SecretChange::Set("hunter2".into());
        assert_eq!(
            changed_fields(&before, &after, &secret),
            ["port", "recording", "retention_days", "secret"]
        );
        let detail = audit_detail(&after, secret.describe()).to_string();
        assert!(!detail.contains("hunter2"), "{detail}");
        assert!(detail.contains(r#""secret":"replaced""#), "{detail}");
    }

    #[test]
    fn the_recording_column_shows_the_caps_a_target_sets() {
        let mut t = shop();
        assert_eq!(recording_summary(&t), "strict");
        t.record_max_rows = Some(0);
        t.record_max_result_bytes = Some(4096);
        assert_eq!(recording_summary(&t), "strict (rows 0, bytes 4096)");
    }
}
