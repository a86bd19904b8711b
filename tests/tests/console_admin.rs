//! The admin pages over HTTP: only admins open or use them; a target added and edited in the
//! browser works through the gateway, its secret never comes back; the connection test tells a
//! right password from a wrong one; grants added, switched to approval and removed.

use anyhow::{Context, Result, ensure};
use harness::ConsoleLab;
use harness::console::{ROOT_LOGIN, ROOT_PASSWORD};
use harness::pg::{self, PgCluster};
use harness::web_client::{WebClient, decode_entities};
use reqwest::StatusCode;

const ADMIN_PAGES: [&str; 4] = [
    "/admin/targets",
    "/admin/targets/shop",
    "/admin/grants",
    "/admin/people",
];

/// The target form's fields for the lab's cluster, as the SCRAM role with `password`.
fn target_fields<'a>(csrf: &'a str, port: &'a str, password: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("host", "127.0.0.1"),
        ("port", port),
        ("database", pg::APP_DB),
        ("tls_mode", "disable"),
        ("ca_pem", ""),
        ("upstream_user", pg::SCRAM_USER),
        ("upstream_password", password),
        ("recording", "strict"),
    ]
}

#[tokio::test]
async fn only_admins_open_or_use_the_admin_pages() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let alice = WebClient::oidc(&lab, "alice").await?;
    let carol = WebClient::oidc(&lab, "carol").await?;
    for who in [&alice, &carol] {
        let csrf = who.csrf().await?;
        for path in ADMIN_PAGES {
            who.get(path).await?.expect(StatusCode::FORBIDDEN, path)?;
        }
        let add = who
            .post_form(
                "/admin/targets",
                &[("csrf", &csrf), ("name", "sneaky"), ("host", "127.0.0.1")],
            )
            .await?;
        add.expect(StatusCode::FORBIDDEN, "a non-admin adding a target")?;
        who.post_form(
            "/admin/targets/shop/enabled",
            &[("csrf", &csrf), ("enabled", "false")],
        )
        .await?
        .expect(StatusCode::FORBIDDEN, "a non-admin disabling a target")?;
    }
    let store = lab.lab.store().await?;
    ensure!(store.target_by_name("sneaky").await?.is_none());
    ensure!(store.target_by_name("shop").await?.context("shop")?.enabled);
    Ok(())
}

#[tokio::test]
async fn an_admin_adds_tests_edits_and_grants_a_target_whose_secret_never_comes_back() -> Result<()>
{
    let lab = ConsoleLab::start(&[])?;
    let root = WebClient::local(&lab, ROOT_LOGIN, ROOT_PASSWORD).await?;
    let csrf = root.csrf().await?;
    let port = lab.lab.pg.port().to_string();
    let wrong = "not-the-password-1234";
    let right = PgCluster::password(pg::SCRAM_USER);

    // Added with a wrong password: the connection test says so.
    let mut add = target_fields(&csrf, &port, wrong);
    add.push(("name", "orders"));
    root.post_form("/admin/targets", &add)
        .await?
        .expect_redirect_path("/admin/targets", "adding a target")?;
    let tested = root
        .post_form("/admin/targets/orders/test", &[("csrf", &csrf)])
        .await?;
    let text = decode_entities(&tested.body);
    ensure!(
        text.contains("password authentication failed"),
        "the test should report the wrong password: {}",
        tested.body
    );

    // A new password fixes it; the page never shows either.
    root.post_form("/admin/targets/orders", &target_fields(&csrf, &port, right))
        .await?
        .expect_redirect_path("/admin/targets/orders", "editing a target")?;
    let tested = root
        .post_form("/admin/targets/orders/test", &[("csrf", &csrf)])
        .await?;
    ensure!(
        decode_entities(&tested.body).contains(&format!("Connected as {}", pg::SCRAM_USER)),
        "the test should connect: {}",
        tested.body
    );
    for path in ["/admin/targets", "/admin/targets/orders"] {
        let page = root.get(path).await?;
        ensure!(
            !page.body.contains(right) && !page.body.contains(wrong),
            "{path} shows a secret"
        );
    }
    let audit = lab.lab.store().await?.list_audit(None, 200).await?;
    let dump = format!("{audit:?}");
    ensure!(
        !dump.contains(right) && !dump.contains(wrong),
        "the audit log holds a secret"
    );
    for action in ["target.add", "target.edit", "target.test"] {
        ensure!(
            audit.iter().any(|e| e.action == action),
            "no {action} in {dump}"
        );
    }

    // A grant from the page, without approval: alice gets a credential at once and it works.
    root.post_form(
        "/admin/grants",
        &[
            ("csrf", &csrf),
            ("subject_kind", "group"),
            ("subject_name", "pgb-users"),
            ("target", "orders"),
            ("db_role", pg::SCRAM_USER),
            ("max_lifetime_secs", "3600"),
        ],
    )
    .await?
    .expect_redirect_path("/admin/grants", "adding a grant")?;
    let alice = WebClient::oidc(&lab, "alice").await?;
    let alice_csrf = alice.csrf().await?;
    let page = alice
        .post_form(
            "/access",
            &[
                ("csrf", &alice_csrf),
                ("target", "orders"),
                ("role", pg::SCRAM_USER),
                ("lifetime_secs", "600"),
                ("reason", "checking the admin pages"),
            ],
        )
        .await?;
    page.expect(StatusCode::OK, "a credential without approval")?;
    let token = page.element_text("token").context("no token on the page")?;
    let out = lab.lab.psql("orders", &token, "SELECT current_user")?;
    ensure!(
        out.trim() == pg::SCRAM_USER,
        "psql through the gateway: {out}"
    );

    // Switched to approval: the next request waits; removed: the target is gone from alice's page.
    let store = lab.lab.store().await?;
    let target = store.target_by_name("orders").await?.context("orders")?;
    let grant = store
        .list_grants(Some(target.id))
        .await?
        .into_iter()
        .next()
        .context("the grant")?;
    root.post_form(
        &format!("/admin/grants/{}/approval", grant.id),
        &[("csrf", &csrf), ("requires_approval", "true")],
    )
    .await?
    .expect_redirect_path("/admin/grants", "switching approval on")?;
    alice
        .post_form(
            "/access",
            &[
                ("csrf", &alice_csrf),
                ("target", "orders"),
                ("role", pg::SCRAM_USER),
                ("lifetime_secs", "600"),
                ("reason", "again"),
            ],
        )
        .await?
        .expect_redirect_path("/requests", "a request that now needs approval")?;
    root.post_form(
        &format!("/admin/grants/{}/remove", grant.id),
        &[("csrf", &csrf)],
    )
    .await?
    .expect_redirect_path("/admin/grants", "removing the grant")?;
    let home = alice.get("/").await?;
    ensure!(
        !home.body.contains("<h2>orders</h2>"),
        "orders still offered"
    );

    // Disabled: its tokens stop working at the gateway.
    root.post_form(
        "/admin/targets/orders/enabled",
        &[("csrf", &csrf), ("enabled", "false")],
    )
    .await?
    .expect_redirect_path("/admin/targets/orders", "disabling the target")?;
    ensure!(
        lab.lab.psql("orders", &token, "SELECT 1").is_err(),
        "a disabled target still let a session in"
    );
    Ok(())
}

#[tokio::test]
async fn an_admin_sets_and_clears_how_long_a_target_keeps_recordings() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let root = WebClient::local(&lab, ROOT_LOGIN, ROOT_PASSWORD).await?;
    let csrf = root.csrf().await?;
    let port = lab.lab.pg.port().to_string();
    let store = lab.lab.store().await?;
    let kept = |days: &'static str| {
        let mut fields = target_fields(&csrf, &port, "");
        fields.push(("retention_days", days));
        fields
    };

    // Added with a retention, as the add form allows.
    let mut add = kept("90");
    add.push(("name", "kept"));
    root.post_form("/admin/targets", &add)
        .await?
        .expect_redirect_path("/admin/targets", "adding a target with a retention")?;
    let target = store.target_by_name("kept").await?.context("kept")?;
    ensure!(target.retention_days == Some(90), "{target:?}");
    let list = root.get("/admin/targets").await?;
    ensure!(
        list.body.contains("90 days"),
        "the list shows the retention"
    );

    // Changed, then cleared (empty = forever); each change is in the audit log.
    for (days, stored) in [("30", Some(30)), ("", None)] {
        root.post_form("/admin/targets/kept", &kept(days))
            .await?
            .expect_redirect_path("/admin/targets/kept", "editing the retention")?;
        let target = store.target_by_name("kept").await?.context("kept")?;
        ensure!(target.retention_days == stored, "{days:?}: {target:?}");
    }
    let page = root.get("/admin/targets/kept").await?;
    ensure!(
        page.body
            .contains(r#"name="retention_days" type="number" min="1" max="36500" value="""#),
        "the edit form shows an empty retention (forever)"
    );
    let audit = store.list_audit(None, 100).await?;
    let edits: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "target.edit" && e.object.as_deref() == Some("kept"))
        .collect();
    ensure!(edits.len() == 2, "two edits audited: {edits:?}");
    for edit in &edits {
        ensure!(
            edit.detail["changed"] == serde_json::json!(["retention_days"]),
            "{edit:?}"
        );
    }
    // Newest first: the last edit cleared it.
    ensure!(
        edits[0].detail["retention_days"].is_null(),
        "{:?}",
        edits[0]
    );
    ensure!(edits[1].detail["retention_days"] == 30, "{:?}", edits[1]);

    // Nonsense is refused, naming the field, and nothing changes.
    let refused = root.post_form("/admin/targets/kept", &kept("0")).await?;
    refused.expect(StatusCode::BAD_REQUEST, "a retention of 0 days")?;
    ensure!(
        decode_entities(&refused.body).contains("Keep recordings for '0' days"),
        "{}",
        refused.body
    );
    let target = store.target_by_name("kept").await?.context("kept")?;
    ensure!(target.retention_days.is_none());
    Ok(())
}
