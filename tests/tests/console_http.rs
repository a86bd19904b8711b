//! The console over HTTP, as a browser (and an attacker's page) would use it: security headers
//! and cookie flags, CSRF and cross-site refusals, local sign-in with its locks and throttle,
//! session timeouts and sign-out, role boundaries, hostile forms, escaping, and the whole access
//! flow from request to approval to a credential that works through the gateway and stops
//! working when revoked.
//!
//! One lab per theme; each test runs many checks against its lab in order.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use gateway::store::{AccessRequest, RequestFilter, RequestStatus, Store};
use harness::ConsoleLab;
use harness::console::{ROOT_LOGIN, ROOT_PASSWORD};
use harness::pg;
use harness::web_client::{
    LOGIN_COOKIE, Page, SESSION_COOKIE, WebClient, cookie_attributes, decode_entities,
};
use reqwest::StatusCode;
use uuid::Uuid;

const ROLE: &str = pg::SCRAM_USER;

/// Script that must never reach a page unescaped.
const SCRIPT_PAYLOAD: &str = "<script>alert(1)</script>";
/// Breaking out of an attribute into a new element.
const ATTRIBUTE_PAYLOAD: &str = "\"><img src=x onerror=alert(1)>";

// --- Helpers ---

/// Fails unless `page` carries the console's security headers (and `no-store` if asked).
fn check_security_headers(page: &Page, what: &str, no_store: bool) -> Result<()> {
    let csp = page
        .header("content-security-policy")
        .with_context(|| format!("{what}: no Content-Security-Policy"))?;
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        ensure!(
            csp.contains(directive),
            "{what}: CSP lacks {directive}: {csp}"
        );
    }
    ensure!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: CSP allows inline or eval: {csp}"
    );
    // The callback URL carries a code: it must never reach another site in a Referer.
    let referrer = page.header("referrer-policy");
    ensure!(
        matches!(referrer, Some("no-referrer" | "same-origin")),
        "{what}: Referrer-Policy is {referrer:?}"
    );
    for (name, expected) in [
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
    ] {
        ensure!(
            page.header(name) == Some(expected),
            "{what}: {name} is {:?}, not {expected}",
            page.header(name)
        );
    }
    if no_store {
        ensure!(
            page.header("cache-control") == Some("no-store"),
            "{what}: Cache-Control is {:?}, not no-store",
            page.header("cache-control")
        );
    }
    Ok(())
}

/// The message of the sign-in page's alert, entities decoded.
fn login_alert(page: &Page) -> Option<String> {
    let start = page.body.find("role=\"alert\">")? + "role=\"alert\">".len();
    let end = start + page.body[start..].find("</p>")?;
    Some(decode_entities(&page.body[start..end]))
}

/// Fails unless the page has `status` and mentions `message`.
fn expect_page(page: &Page, status: StatusCode, message: &str, what: &str) -> Result<()> {
    page.expect(status, what)?;
    ensure!(
        page.body.contains(message),
        "{what}: the page does not say {message:?}:\n{}",
        page.body
    );
    Ok(())
}

/// Requests access to `target` from the start page's form; returns the answer.
async fn request_access(browser: &WebClient, target: &str, reason: &str) -> Result<Page> {
    let csrf = browser.csrf().await?;
    browser
        .post_form(
            "/access",
            &[
                ("csrf", &csrf),
                ("target", target),
                ("role", ROLE),
                ("lifetime_secs", "3600"),
                ("reason", reason),
            ],
        )
        .await
}

/// `login`'s requests, newest first.
async fn requests_of(store: &dyn Store, login: &str) -> Result<Vec<AccessRequest>> {
    Ok(store
        .list_access_requests(&RequestFilter {
            person_login: Some(login.into()),
            status: None,
            limit: 100,
        })
        .await?)
}

/// Requests shop as `browser` (approval needed) and returns the new request.
async fn pending_request(
    store: &dyn Store,
    browser: &WebClient,
    login: &str,
    reason: &str,
) -> Result<AccessRequest> {
    request_access(browser, "shop", reason)
        .await?
        .expect_redirect("/requests", &format!("{login} requesting shop"))?;
    requests_of(store, login)
        .await?
        .into_iter()
        .next()
        .context("the request was not stored")
}

async fn approve(approver: &WebClient, id: Uuid, comment: &str) -> Result<()> {
    let csrf = approver.csrf().await?;
    approver
        .post_form(
            &format!("/approvals/{id}"),
            &[
                ("csrf", &csrf),
                ("decision", "approve"),
                ("comment", comment),
            ],
        )
        .await?
        .expect_redirect_path("/approvals", "approving")?;
    Ok(())
}

/// Collects an approved request; returns the credential page.
async fn collect(browser: &WebClient, id: Uuid) -> Result<Page> {
    let csrf = browser.csrf().await?;
    browser
        .post_form(&format!("/requests/{id}/collect"), &[("csrf", &csrf)])
        .await
}

/// `fields` and, if given, the form token.
fn with_csrf<'a>(fields: &[(&'a str, &'a str)], csrf: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut all = fields.to_vec();
    all.extend(csrf.map(|c| ("csrf", c)));
    all
}

/// A state-changing form post of one signed-in browser, to send with forged variations.
struct StateChange<'a> {
    browser: &'a WebClient,
    /// The browser's own form token.
    csrf: &'a str,
    path: String,
    /// The fields that would make it succeed, the token aside.
    fields: Vec<(&'a str, &'a str)>,
}

impl StateChange<'_> {
    /// Posts it with `csrf` (or none) and extra headers; fails unless refused with 403.
    async fn refused(
        &self,
        case: &str,
        csrf: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<()> {
        let page = self
            .browser
            .post_form_with(&self.path, &with_csrf(&self.fields, csrf), headers)
            .await?;
        page.expect(
            StatusCode::FORBIDDEN,
            &format!("POST {} with {case}", self.path),
        )?;
        Ok(())
    }
}

/// The token shown on a credential page.
fn token_of(page: &Page) -> Result<String> {
    page.element_text("token")
        .filter(|t| t.split('.').count() == 3)
        .with_context(|| format!("no token on the credential page:\n{}", page.body))
}

/// A credential for `person` on shop with `reason`, issued on the command line.
fn cli_credential(lab: &ConsoleLab, person: &str, reason: &str) -> Result<Uuid> {
    let out = lab.lab.bastion.cli_ok(&[
        "token", "issue", "--person", person, "--target", "shop", "--role", ROLE, "--reason",
        reason, "--format", "json",
    ])?;
    let json: serde_json::Value = serde_json::from_str(out.trim())?;
    Ok(json["credential_id"]
        .as_str()
        .context("credential_id")?
        .parse()?)
}

// --- Headers, cookies, hostile forms ---

#[tokio::test]
async fn responses_carry_security_headers_cookies_are_locked_down_and_hostile_forms_fail()
-> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let anonymous = WebClient::for_lab(&lab)?;

    let login = anonymous.get("/login").await?;
    login.expect(StatusCode::OK, "/login")?;
    check_security_headers(&login, "/login", true)?;
    let login_cookie = login.set_cookie(LOGIN_COOKIE).context("no login cookie")?;
    let attributes = cookie_attributes(login_cookie);
    for flag in ["httponly", "secure"] {
        ensure!(
            attributes.iter().any(|(k, _)| k == flag),
            "login cookie lacks {flag}: {login_cookie}"
        );
    }
    ensure!(
        attributes.contains(&("samesite".into(), "Strict".into())),
        "{login_cookie}"
    );

    let redirect = anonymous.get("/").await?;
    redirect.expect_redirect("/login", "/ signed out")?;
    check_security_headers(&redirect, "the redirect to /login", true)?;
    let missing = anonymous.get("/no/such/page").await?;
    expect_page(
        &missing,
        StatusCode::NOT_FOUND,
        "There is no such page.",
        "404",
    )?;
    check_security_headers(&missing, "a 404 page", true)?;
    let css = anonymous.get("/static/style.css").await?;
    css.expect(StatusCode::OK, "/static/style.css")?;
    check_security_headers(&css, "a static file", false)?;
    ensure!(
        css.header("content-type")
            .is_some_and(|t| t.starts_with("text/css")),
        "style.css is served as {:?}",
        css.header("content-type")
    );

    // The session cookie: from a real sign-in's 303.
    let alice = WebClient::for_lab(&lab)?;
    let callback = alice.oidc_callback_url(&lab, "alice").await?;
    let signed_in = alice.get(&callback).await?;
    signed_in.expect_redirect("/", "the OIDC callback")?;
    check_security_headers(&signed_in, "the callback's redirect", true)?;
    let cookie = signed_in
        .set_cookie(SESSION_COOKIE)
        .context("no session cookie")?;
    let attributes = cookie_attributes(cookie);
    for flag in ["httponly", "secure"] {
        ensure!(
            attributes.iter().any(|(k, _)| k == flag),
            "session cookie lacks {flag}: {cookie}"
        );
    }
    for expected in [("samesite", "Lax"), ("path", "/"), ("max-age", "43200")] {
        ensure!(
            attributes.contains(&(expected.0.into(), expected.1.into())),
            "session cookie lacks {}={}: {cookie}",
            expected.0,
            expected.1
        );
    }
    let token = alice.cookie(SESSION_COOKIE).context("session token")?;
    ensure!(token.len() >= 43, "a short session token: {token}");

    let home = alice.get("/").await?;
    home.expect(StatusCode::OK, "alice's start page")?;
    check_security_headers(&home, "a signed-in page", true)?;
    let forbidden = alice.get("/audit").await?;
    forbidden.expect(StatusCode::FORBIDDEN, "alice on /audit")?;
    check_security_headers(&forbidden, "a 403 page", true)?;

    // Hostile forms, each with a valid token so that only the form itself is wrong.
    let csrf = alice.csrf().await?;
    let before = requests_of(lab.lab.store().await?.as_ref(), "alice").await?;

    let mut huge = format!("csrf={csrf}&target=shop&role={ROLE}&lifetime_secs=3600&reason=");
    huge.push_str(&"x".repeat(300 * 1024));
    let page = alice
        .post_raw(
            "/access",
            "application/x-www-form-urlencoded",
            huge.into_bytes(),
        )
        .await?;
    ensure!(
        matches!(
            page.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::BAD_REQUEST
        ),
        "a 300 KiB form answered {}",
        page.status
    );

    let mut garbage = format!("csrf={csrf}&").into_bytes();
    garbage.extend_from_slice(&[0xff, 0xfe, 0x00, b'%', b'z', 0x80, b'=', 0xc3, b'&', b'=']);
    let page = alice
        .post_raw("/access", "application/x-www-form-urlencoded", garbage)
        .await?;
    expect_page(
        &page,
        StatusCode::BAD_REQUEST,
        "The form is incomplete or malformed",
        "garbage form",
    )?;

    let page = alice.post_form("/access", &[("csrf", &csrf)]).await?;
    expect_page(
        &page,
        StatusCode::BAD_REQUEST,
        "missing field",
        "a form without fields",
    )?;
    let page = alice
        .post_form(
            "/access",
            &[
                ("csrf", &csrf),
                ("target", "shop"),
                ("role", ROLE),
                ("lifetime_secs", "an hour"),
                ("reason", "x"),
            ],
        )
        .await?;
    expect_page(
        &page,
        StatusCode::BAD_REQUEST,
        "The form is incomplete or malformed",
        "a lifetime that is no number",
    )?;
    let page = request_access(&alice, "shop", "   ").await?;
    expect_page(
        &page,
        StatusCode::BAD_REQUEST,
        "Say why you need access",
        "an empty reason",
    )?;
    let page = request_access(&alice, "no-such-target", "INC-1").await?;
    expect_page(
        &page,
        StatusCode::NOT_FOUND,
        "No target",
        "an unknown target",
    )?;

    for (path, fields) in [
        ("/requests/not-a-uuid/collect", vec![]),
        ("/requests/1%27%20OR%201=1/cancel", vec![]),
        ("/credentials/12345/revoke", vec![]),
    ] {
        let page = alice
            .post_form(path, &with_csrf(&fields, Some(&csrf)))
            .await?;
        expect_page(&page, StatusCode::NOT_FOUND, "no such", path)?;
    }
    let after = requests_of(lab.lab.store().await?.as_ref(), "alice").await?;
    assert_eq!(after, before, "a hostile form created or changed a request");
    ensure!(alice.is_signed_in().await?, "alice lost her session");

    // Login CSRF: the sign-in form only counts with its own cookie and field, equal.
    let cases: [(&str, Option<&str>, Option<&str>); 3] = [
        (
            "no cookie",
            None,
            Some("a-token-the-attacker-made-up-0123456789"),
        ),
        (
            "no field",
            Some("a-token-the-attacker-made-up-0123456789"),
            None,
        ),
        (
            "cookie and field differ",
            Some("a-token-the-attacker-made-up-0123456789"),
            Some("another-token-the-attacker-made-up-012345"),
        ),
    ];
    for (case, cookie, field) in cases {
        let browser = WebClient::for_lab(&lab)?;
        if let Some(value) = cookie {
            browser.put_cookie(LOGIN_COOKIE, value, "/login");
        }
        let mut fields = vec![
            ("login", ROOT_LOGIN),
            ("password", ROOT_PASSWORD),
            ("next", "/"),
        ];
        if let Some(value) = field {
            fields.push(("login_csrf", value));
        }
        let page = browser.post_form("/login/local", &fields).await?;
        expect_page(
            &page,
            StatusCode::FORBIDDEN,
            "The sign-in form expired",
            case,
        )?;
        ensure!(!page.sets_session(), "login CSRF ({case}) set a session");
    }
    let page = WebClient::for_lab(&lab)?
        .post_raw(
            "/login/local",
            "application/x-www-form-urlencoded",
            vec![b'a'; 300 * 1024],
        )
        .await?;
    ensure!(
        page.status.is_client_error() && !page.sets_session(),
        "a 300 KiB sign-in form answered {}",
        page.status
    );
    Ok(())
}

// --- CSRF and roles ---

#[tokio::test]
async fn forged_and_cross_site_posts_change_nothing_and_roles_hold() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let store = lab.lab.store().await?;
    let alice = WebClient::oidc(&lab, "alice").await?;
    let bob = WebClient::oidc(&lab, "bob").await?;
    let carol = WebClient::oidc(&lab, "carol").await?;

    // Something for every form to act on: a pending request, an approved one, a credential.
    let pending = pending_request(store.as_ref(), &alice, "alice", "pending one").await?;
    let approved = pending_request(store.as_ref(), &alice, "alice", "approved one").await?;
    approve(&bob, approved.id, "ok").await?;
    let collected = pending_request(store.as_ref(), &alice, "alice", "collected one").await?;
    approve(&bob, collected.id, "ok").await?;
    collect(&alice, collected.id)
        .await?
        .expect(StatusCode::OK, "collecting")?;
    let credential = store
        .access_request(collected.id)
        .await?
        .and_then(|r| r.credential_id)
        .context("the collected request has no credential")?;

    let alice_csrf = alice.csrf().await?;
    let bob_csrf = bob.csrf().await?;
    let posts = [
        StateChange {
            browser: &alice,
            csrf: &alice_csrf,
            path: "/access".into(),
            fields: vec![
                ("target", "shop"),
                ("role", ROLE),
                ("lifetime_secs", "3600"),
                ("reason", "forged"),
            ],
        },
        StateChange {
            browser: &alice,
            csrf: &alice_csrf,
            path: format!("/requests/{}/collect", approved.id),
            fields: vec![],
        },
        StateChange {
            browser: &alice,
            csrf: &alice_csrf,
            path: format!("/requests/{}/cancel", pending.id),
            fields: vec![],
        },
        StateChange {
            browser: &bob,
            csrf: &bob_csrf,
            path: format!("/approvals/{}", pending.id),
            fields: vec![("decision", "approve"), ("comment", "forged")],
        },
        StateChange {
            browser: &alice,
            csrf: &alice_csrf,
            path: format!("/credentials/{credential}/revoke"),
            fields: vec![],
        },
        StateChange {
            browser: &alice,
            csrf: &alice_csrf,
            path: "/logout".into(),
            fields: vec![],
        },
    ];
    let snapshot = |requests: Vec<AccessRequest>| {
        requests
            .into_iter()
            .map(|r| (r.id, r.status))
            .collect::<Vec<_>>()
    };
    let requests_before = snapshot(requests_of(store.as_ref(), "alice").await?);
    let audit_before = store.list_audit(None, 1000).await?.len();

    for post in &posts {
        // Someone else's valid token is as wrong as a made-up one.
        let someone_elses = if post.csrf == alice_csrf {
            &bob_csrf
        } else {
            &alice_csrf
        };
        let made_up = "0123456789abcdef0123456789abcdef0123456789a";
        post.refused("no token", None, &[]).await?;
        post.refused("a made-up token", Some(made_up), &[]).await?;
        post.refused("another session's token", Some(someone_elses), &[])
            .await?;
        let right = Some(post.csrf);
        post.refused(
            "Origin of another site",
            right,
            &[("origin", "http://evil.example")],
        )
        .await?;
        post.refused("Origin null", right, &[("origin", "null")])
            .await?;
        post.refused(
            "Sec-Fetch-Site cross-site",
            right,
            &[("sec-fetch-site", "cross-site")],
        )
        .await?;
    }
    assert_eq!(
        snapshot(requests_of(store.as_ref(), "alice").await?),
        requests_before,
        "a refused POST changed a request"
    );
    let cred = store.credential(credential).await?.context("credential")?;
    assert_eq!(
        cred.revoked_at, None,
        "a refused POST revoked the credential"
    );
    assert_eq!(
        store.list_audit(None, 1000).await?.len(),
        audit_before,
        "a refused POST was audited as done"
    );
    ensure!(
        alice.is_signed_in().await?,
        "a forged sign-out ended alice's session"
    );

    // Same-origin requests with the right token do go through (the checks refuse only what
    // they should).
    let page = alice
        .post_form_with(
            &format!("/requests/{}/cancel", pending.id),
            &[("csrf", &alice_csrf)],
            &[("origin", &lab.url()), ("sec-fetch-site", "same-origin")],
        )
        .await?;
    page.expect_redirect("/requests", "a same-origin cancel")?;

    // Role boundaries. alice (user) reads only her own things.
    for path in ["/approvals", "/audit"] {
        alice
            .get(path)
            .await?
            .expect(StatusCode::FORBIDDEN, &format!("alice on {path}"))?;
    }
    // Credentials are told apart by their reasons (the page shows ids only in revoke forms).
    let bobs_credential = cli_credential(&lab, "bob", "issued-for-bob")?;
    let everyone = alice.get("/credentials?all=1").await?;
    expect_page(
        &everyone,
        StatusCode::OK,
        "My credentials",
        "alice's ?all=1",
    )?;
    ensure!(everyone.body.contains("collected one"), "{}", everyone.body);
    ensure!(
        !everyone.body.contains("issued-for-bob"),
        "alice sees bob's credential:\n{}",
        everyone.body
    );
    let page = alice
        .post_form(
            &format!("/credentials/{bobs_credential}/revoke"),
            &[("csrf", &alice_csrf)],
        )
        .await?;
    expect_page(
        &page,
        StatusCode::NOT_FOUND,
        "There is no such credential.",
        "alice revoking bob's",
    )?;
    let bobs = store.credential(bobs_credential).await?.context("bob's")?;
    assert_eq!(bobs.revoked_at, None, "alice revoked bob's credential");

    // carol (auditor) reads everything and changes nothing.
    let carol_csrf = carol.csrf().await?;
    carol
        .get("/audit")
        .await?
        .expect(StatusCode::OK, "carol on /audit")?;
    let all = carol.get("/credentials?all=1").await?;
    expect_page(&all, StatusCode::OK, "All credentials", "carol's ?all=1")?;
    for reason in ["collected one", "issued-for-bob"] {
        ensure!(
            all.body.contains(reason),
            "carol does not see the credential {reason:?}:\n{}",
            all.body
        );
    }
    ensure!(
        !all.body.contains("/revoke"),
        "carol is offered a revoke button"
    );
    let second_pending = pending_request(store.as_ref(), &alice, "alice", "for carol").await?;
    let page = carol
        .post_form(
            &format!("/approvals/{}", second_pending.id),
            &[("csrf", &carol_csrf), ("decision", "approve")],
        )
        .await?;
    expect_page(
        &page,
        StatusCode::FORBIDDEN,
        "approver role",
        "carol approving",
    )?;
    let page = request_access(&carol, "shop", "auditors do not ask").await?;
    expect_page(
        &page,
        StatusCode::FORBIDDEN,
        "user role",
        "carol requesting",
    )?;
    let page = carol
        .post_form(
            &format!("/credentials/{credential}/revoke"),
            &[("csrf", &carol_csrf)],
        )
        .await?;
    // The console answers someone else's credential with 404 for anyone but an admin.
    ensure!(
        matches!(page.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "carol revoking answered {}",
        page.status
    );
    assert_eq!(
        store
            .access_request(second_pending.id)
            .await?
            .context("request")?
            .status,
        RequestStatus::Pending
    );
    assert!(requests_of(store.as_ref(), "carol").await?.is_empty());
    let cred = store.credential(credential).await?.context("credential")?;
    assert_eq!(cred.revoked_at, None, "carol revoked alice's credential");

    // bob (approver) cannot decide his own request.
    let own = pending_request(store.as_ref(), &bob, "bob", "my own").await?;
    let approvals = bob.get("/approvals").await?;
    expect_page(
        &approvals,
        StatusCode::OK,
        "Your own request",
        "bob's approvals",
    )?;
    ensure!(
        !approvals.body.contains(&format!("/approvals/{}\"", own.id)),
        "bob is offered a form for his own request"
    );
    let page = bob
        .post_form(
            &format!("/approvals/{}", own.id),
            &[
                ("csrf", &bob_csrf),
                ("decision", "approve"),
                ("comment", "me"),
            ],
        )
        .await?;
    expect_page(
        &page,
        StatusCode::FORBIDDEN,
        "cannot decide your own request",
        "bob approving his own",
    )?;
    assert_eq!(
        store
            .access_request(own.id)
            .await?
            .context("request")?
            .status,
        RequestStatus::Pending
    );
    let page = bob
        .post_form(
            "/approvals/..%2f..%2fetc",
            &[("csrf", &bob_csrf), ("decision", "approve")],
        )
        .await?;
    expect_page(
        &page,
        StatusCode::NOT_FOUND,
        "no such",
        "a non-UUID approval",
    )?;

    // mallory never gets a session.
    let mallory = WebClient::for_lab(&lab)?;
    let callback = mallory.oidc_callback_url(&lab, "mallory").await?;
    let page = mallory.get(&callback).await?;
    page.expect(StatusCode::FORBIDDEN, "mallory's callback")?;
    ensure!(!page.sets_session() && !mallory.is_signed_in().await?);
    Ok(())
}

// --- The access flow ---

#[tokio::test]
async fn a_request_is_approved_collected_once_used_and_revoked_over_http() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let store = lab.lab.store().await?;
    let alice = WebClient::oidc(&lab, "alice").await?;
    let bob = WebClient::oidc(&lab, "bob").await?;
    let dave = WebClient::oidc(&lab, "dave").await?;

    let home = alice.get("/").await?;
    expect_page(
        &home,
        StatusCode::OK,
        "needs approval",
        "alice's start page",
    )?;
    let reason = format!("INC-7 {SCRIPT_PAYLOAD} {ATTRIBUTE_PAYLOAD}");
    let request = pending_request(store.as_ref(), &alice, "alice", &reason).await?;
    assert_eq!(request.status, RequestStatus::Pending);
    assert_eq!(request.reason, reason);
    let mine = alice.get("/requests").await?;
    expect_page(&mine, StatusCode::OK, "pending", "alice's requests")?;

    let approvals = bob.get("/approvals").await?;
    expect_page(&approvals, StatusCode::OK, "alice", "bob's approvals")?;
    let comment = format!("ok {ATTRIBUTE_PAYLOAD} {SCRIPT_PAYLOAD}");
    approve(&bob, request.id, &comment).await?;
    let decided = store.access_request(request.id).await?.context("request")?;
    assert_eq!(decided.status, RequestStatus::Approved);
    assert_eq!(decided.decided_by.as_deref(), Some("bob"));
    assert_eq!(decided.decision_comment.as_deref(), Some(comment.as_str()));
    let mine = alice.get("/requests").await?;
    expect_page(
        &mine,
        StatusCode::OK,
        "approved",
        "alice's requests after approval",
    )?;
    ensure!(
        mine.form_actions()
            .contains(&format!("/requests/{}/collect", request.id)),
        "no collect form:\n{}",
        mine.body
    );

    // The credential is shown once.
    let page = collect(&alice, request.id).await?;
    page.expect(StatusCode::OK, "collecting")?;
    let token = token_of(&page)?;
    let psql = page.element_text("psql").context("no psql command")?;
    let uri = page.element_text("uri").context("no URI")?;
    let port = lab.lab.bastion.gateway_port;
    ensure!(
        psql.contains(&format!("PGPASSWORD={token}"))
            && psql.contains(&format!(
                "port={port} dbname=shop user=alice sslmode=require"
            )),
        "psql command: {psql}"
    );
    ensure!(
        uri == format!("postgresql://alice:{token}@127.0.0.1:{port}/shop?sslmode=require"),
        "URI: {uri}"
    );
    let again = collect(&alice, request.id).await?;
    expect_page(
        &again,
        StatusCode::CONFLICT,
        "already issued",
        "a second collect",
    )?;
    ensure!(!again.body.contains(&token), "the token was shown twice");
    let issued = store.access_request(request.id).await?.context("request")?;
    assert_eq!(issued.status, RequestStatus::Issued);
    let credential = issued.credential_id.context("no credential id")?;

    // It works through the gateway, and the session shows under alice's sessions.
    let out = lab.lab.psql("shop", &token, "SELECT current_user")?;
    ensure!(out.contains(ROLE), "psql printed {out}");
    let sessions = alice.get("/sessions").await?;
    expect_page(
        &sessions,
        StatusCode::OK,
        "data-session=",
        "alice's sessions",
    )?;
    ensure!(sessions.body.contains("<td>shop</td>"), "{}", sessions.body);

    // Revoking it ends a live session within a few seconds.
    let client = lab.lab.client("shop", &token).await?;
    client.simple_query("SELECT 1").await?;
    let credentials = alice.get("/credentials").await?;
    let revoke = format!("/credentials/{credential}/revoke");
    ensure!(
        credentials.form_actions().contains(&revoke),
        "no revoke form:\n{}",
        credentials.body
    );
    let csrf = alice.csrf().await?;
    alice
        .post_form(&revoke, &[("csrf", &csrf)])
        .await?
        .expect_redirect("/credentials", "revoking")?;
    let revoked_at = Instant::now();
    loop {
        if client.simple_query("SELECT 1").await.is_err() {
            break;
        }
        ensure!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the live session still runs 5 s after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        lab.lab.psql("shop", &token, "SELECT 1").is_err(),
        "a revoked token still connects"
    );
    expect_page(
        &alice.get("/credentials").await?,
        StatusCode::OK,
        "revoked",
        "credentials after revoking",
    )?;

    // A grant without approval gives the credential at once.
    lab.lab.add_target("fast", ROLE, "disable", &[])?;
    lab.lab.bastion.cli_ok(&[
        "grant", "add", "--target", "fast", "--person", "alice", "--role", ROLE,
    ])?;
    let page = request_access(&alice, "fast", "no approval needed").await?;
    page.expect(StatusCode::OK, "requesting fast")?;
    let fast_token = token_of(&page)?;
    lab.lab.psql("fast", &fast_token, "SELECT 1")?;
    let fast = requests_of(store.as_ref(), "alice").await?;
    assert_eq!(fast[0].target_name, "fast");
    assert_eq!(fast[0].status, RequestStatus::Issued);
    assert_eq!(fast[0].decided_by, None);

    // Hostile text in reasons and comments is shown escaped wherever it appears.
    let pages = [
        ("alice /requests", alice.get("/requests").await?),
        ("bob /approvals", bob.get("/approvals").await?),
        ("dave /audit", dave.get("/audit").await?),
    ];
    for (what, page) in &pages {
        page.expect(StatusCode::OK, what)?;
        for raw in [SCRIPT_PAYLOAD, "<img src=x onerror=alert(1)>"] {
            ensure!(
                !page.body.contains(raw),
                "{what} shows {raw:?} unescaped:\n{}",
                page.body
            );
        }
        // Present, as text: escaped, and the same once unescaped.
        let text = decode_entities(&page.body);
        for payload in [SCRIPT_PAYLOAD, ATTRIBUTE_PAYLOAD] {
            ensure!(
                text.contains(payload),
                "{what} does not show {payload:?} as text"
            );
        }
    }
    Ok(())
}

// --- Local sign-in, sign-out, timeouts ---

#[tokio::test]
async fn local_sign_in_locks_throttles_signs_out_and_times_out() -> Result<()> {
    let mut lab = ConsoleLab::start(&[("PGBASTION_CONSOLE_LOGIN_MAX_FAILURES", "3")])?;
    let password = "ops-password-long-enough";
    lab.add_local_account("ops", &["--role", "user"], password)?;
    let store = lab.lab.store().await?;

    // Wrong password and unknown login: the same answer.
    let browser = WebClient::for_lab(&lab)?;
    let wrong = browser.try_sign_in_local("ops", "not-the-password").await?;
    wrong.expect(StatusCode::UNAUTHORIZED, "a wrong password")?;
    let unknown = browser
        .try_sign_in_local("ghost", "not-the-password")
        .await?;
    unknown.expect(StatusCode::UNAUTHORIZED, "an unknown login")?;
    assert_eq!(
        login_alert(&wrong).as_deref(),
        Some("Wrong login or password.")
    );
    assert_eq!(login_alert(&unknown), login_alert(&wrong));
    ensure!(!wrong.sets_session() && !unknown.sets_session());

    // The third failure locks the account: then even the right password is refused.
    for _ in 0..2 {
        browser
            .try_sign_in_local("ops", "still-not-it")
            .await?
            .expect(StatusCode::UNAUTHORIZED, "a wrong password")?;
    }
    let account = store.local_account("ops").await?.context("ops")?;
    assert_eq!(account.failed_attempts, 3);
    ensure!(
        account.locked_until.is_some_and(|t| t > chrono::Utc::now()),
        "{account:?}"
    );
    let locked = browser.try_sign_in_local("ops", password).await?;
    locked.expect(
        StatusCode::TOO_MANY_REQUESTS,
        "the right password while locked",
    )?;
    ensure!(
        login_alert(&locked).is_some_and(|m| m.contains("locked")),
        "{}",
        locked.body
    );
    ensure!(!locked.sets_session(), "a locked account got a session");
    // The lock is the account's: root still signs in (which also proves the address is not
    // throttled yet).
    WebClient::local(&lab, ROOT_LOGIN, ROOT_PASSWORD).await?;

    // Many failures from one address stop every sign-in from it, root's too. (root's good
    // sign-in above started the address's count afresh.)
    let mut guesses = 0;
    let throttled = loop {
        let page = browser.try_sign_in_local("ghost", "guess").await?;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            break page;
        }
        page.expect(StatusCode::UNAUTHORIZED, "a guess")?;
        guesses += 1;
        ensure!(
            guesses <= 20,
            "more than 20 failed sign-ins from one address went unthrottled"
        );
    };
    expect_page(
        &throttled,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed sign-ins",
        "throttled",
    )?;
    let root = browser.try_sign_in_local(ROOT_LOGIN, ROOT_PASSWORD).await?;
    root.expect(
        StatusCode::TOO_MANY_REQUESTS,
        "root from a throttled address",
    )?;
    ensure!(!root.sets_session(), "a throttled address got a session");
    let audit = store.list_audit(None, 1000).await?;
    let failed = audit
        .iter()
        .filter(|e| e.action == "signin.failed" && e.detail["method"] == "local")
        .count();
    // Three wrong passwords, one unknown login, the guesses; locked and throttled attempts are
    // refused before any password is checked.
    assert_eq!(
        failed,
        4 + guesses,
        "one signin.failed per wrong password or login"
    );

    // Sign-out ends the session in the store: the old cookie is worthless afterwards.
    lab.restart_serve(&[])?; // the throttle lives in memory
    let root = WebClient::local(&lab, ROOT_LOGIN, ROOT_PASSWORD).await?;
    let stolen = root.cookies();
    let csrf = root.csrf().await?;
    let out = root.post_form("/logout", &[("csrf", &csrf)]).await?;
    out.expect_redirect("/login", "signing out")?;
    ensure!(
        root.cookie(SESSION_COOKIE).is_none(),
        "the cookie was not cleared"
    );
    let replay = WebClient::for_lab(&lab)?;
    replay.set_cookies(stolen);
    ensure!(
        !replay.is_signed_in().await?,
        "the signed-out cookie still works"
    );
    ensure!(
        store
            .list_audit(None, 10)
            .await?
            .iter()
            .any(|e| e.action == "signout" && e.actor == ROOT_LOGIN),
        "no signout audit entry"
    );

    // Idle timeout.
    lab.restart_serve(&[("PGBASTION_CONSOLE_SESSION_IDLE_SECS", "2")])?;
    let idle = WebClient::local(&lab, ROOT_LOGIN, ROOT_PASSWORD).await?;
    ensure!(idle.is_signed_in().await?, "a fresh session is refused");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        !idle.is_signed_in().await?,
        "a session idle for 2.5 s outlived a 2 s idle timeout"
    );

    // Absolute timeout, with an idle timeout far away.
    lab.restart_serve(&[
        ("PGBASTION_CONSOLE_SESSION_IDLE_SECS", "1800"),
        ("PGBASTION_CONSOLE_SESSION_ABSOLUTE_SECS", "3"),
    ])?;
    let short = WebClient::for_lab(&lab)?;
    let page = short.try_sign_in_local(ROOT_LOGIN, ROOT_PASSWORD).await?;
    page.expect_redirect("/", "signing in")?;
    let cookie = page
        .set_cookie(SESSION_COOKIE)
        .context("no session cookie")?;
    ensure!(
        cookie_attributes(cookie).contains(&("max-age".into(), "3".into())),
        "the cookie outlives the session: {cookie}"
    );
    ensure!(short.is_signed_in().await?, "a fresh session is refused");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ensure!(
        short.is_signed_in().await?,
        "refused before its absolute timeout"
    );
    tokio::time::sleep(Duration::from_millis(2000)).await;
    ensure!(
        !short.is_signed_in().await?,
        "a session outlived its 3 s absolute timeout"
    );
    Ok(())
}

#[tokio::test]
async fn a_session_in_use_outlives_its_idle_timeout() -> Result<()> {
    let lab = ConsoleLab::start(&[("PGBASTION_CONSOLE_SESSION_IDLE_SECS", "2")])?;
    let root = WebClient::local(&lab, ROOT_LOGIN, ROOT_PASSWORD).await?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        ensure!(
            root.is_signed_in().await?,
            "a session used every second ended after {:.1?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}
