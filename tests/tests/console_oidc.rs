//! Signing in to the console through a real OpenID Connect provider (`oidc-provider` under
//! Node, see `harness::oidc`): every standard role gets in and lands where it may, and every
//! hostile or broken answer (wrong state, replayed code, forged ID tokens, a person without a
//! role, a provider that is down or refuses) ends without a session and with an audit line.
//!
//! Each test has its own lab: the provider's tamper mode is global to it.

use anyhow::{Context, Result, ensure};
use gateway::store::AuditEntry;
use harness::ConsoleLab;
use harness::console::{ROOT_LOGIN, ROOT_PASSWORD};
use harness::oidc::{Tamper, TestUser};
use harness::web_client::{Page, SESSION_COOKIE, WebClient};
use reqwest::{StatusCode, Url};

/// All of the audit log, newest first.
async fn audit_log(lab: &ConsoleLab) -> Result<Vec<AuditEntry>> {
    Ok(lab.lab.store().await?.list_audit(None, 1000).await?)
}

/// Checks a refused sign-in: the status, a message a person can act on, no session cookie, and
/// a browser that is still sent to the sign-in page.
async fn assert_refused(
    browser: &WebClient,
    page: &Page,
    status: StatusCode,
    message: &str,
    case: &str,
) -> Result<()> {
    page.expect(status, case)?;
    ensure!(
        page.body.contains(message),
        "{case}: the page does not say {message:?}:\n{}",
        page.body
    );
    ensure!(
        !page.sets_session(),
        "{case}: a session cookie was set: {:?}",
        page.set_cookies()
    );
    ensure!(
        browser.cookie(SESSION_COOKIE).is_none(),
        "{case}: the browser holds a session cookie"
    );
    ensure!(
        !browser.is_signed_in().await?,
        "{case}: GET / did not send the browser to /login"
    );
    Ok(())
}

/// `url` with its query parameter `name` set to `value`.
fn with_query(url: &str, name: &str, value: &str) -> Result<String> {
    let mut url = Url::parse(url)?;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    Ok(url.to_string())
}

fn query_value(url: &str, name: &str) -> Result<String> {
    Url::parse(url)?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .with_context(|| format!("no {name} in {url}"))
}

#[tokio::test]
async fn every_standard_role_signs_in_and_reaches_its_pages() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;

    let alice = WebClient::oidc(&lab, "alice").await?;
    let home = alice.get("/").await?;
    home.expect(StatusCode::OK, "alice's start page")?;
    ensure!(
        home.body.contains("<h2>shop</h2>"),
        "alice does not see shop:\n{}",
        home.body
    );
    alice
        .get("/audit")
        .await?
        .expect(StatusCode::FORBIDDEN, "alice opening /audit")?;

    let bob = WebClient::oidc(&lab, "bob").await?;
    bob.get("/approvals")
        .await?
        .expect(StatusCode::OK, "bob opening /approvals")?;

    for auditor_or_admin in ["carol", "dave"] {
        let browser = WebClient::oidc(&lab, auditor_or_admin).await?;
        let audit = browser.get("/audit").await?;
        audit.expect(
            StatusCode::OK,
            &format!("{auditor_or_admin} opening /audit"),
        )?;
        ensure!(audit.body.contains("signin"), "{}", audit.body);
    }

    // A page asked for before signing in is where the sign-in ends.
    let late = WebClient::for_lab(&lab)?;
    late.get("/requests")
        .await?
        .expect_redirect("/login?next=%2Frequests", "/requests signed out")?;
    let start = late.get("/auth/oidc/start?next=%2Frequests").await?;
    start.expect(StatusCode::SEE_OTHER, "start with next")?;
    let authorize = start.location().context("start redirected nowhere")?;
    let callback = lab
        .idp
        .sign_in(late.provider_client(), authorize, "alice")
        .await?;
    late.get(&callback)
        .await?
        .expect_redirect("/requests", "callback with next")?;

    // The person rows come from userinfo: email, name and groups.
    let store = lab.lab.store().await?;
    let roles_of = |login: &str| -> &'static [&'static str] {
        match login {
            "alice" => &["user"],
            "bob" => &["user", "approver"],
            "carol" => &["auditor"],
            _ => &["admin"],
        }
    };
    let audit = audit_log(&lab).await?;
    for user in TestUser::standard()
        .into_iter()
        .filter(|u| u.sub != "mallory")
    {
        let person = store
            .person_by_login(&user.sub)
            .await?
            .with_context(|| format!("no person row for {}", user.sub))?;
        assert_eq!(person.email.as_deref(), Some(user.email.as_str()));
        assert_eq!(person.display_name.as_deref(), Some(user.name.as_str()));
        assert_eq!(person.groups, user.groups, "groups of {}", user.sub);
        let signin = audit
            .iter()
            .find(|e| e.actor == user.sub && e.action == "signin")
            .with_context(|| format!("no signin audit entry for {}", user.sub))?;
        assert_eq!(signin.detail["method"], "oidc");
        assert_eq!(
            signin.detail["roles"],
            serde_json::json!(roles_of(&user.sub))
        );
        assert_eq!(signin.client_addr.as_deref(), Some("127.0.0.1"));
    }
    Ok(())
}

#[tokio::test]
async fn hostile_and_refused_sign_ins_end_without_a_session() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let mut refusals = 0;

    // The state of another sign-in (a response injected into this browser's flow).
    let browser = WebClient::for_lab(&lab)?;
    let callback = browser.oidc_callback_url(&lab, "alice").await?;
    let forged = with_query(&callback, "state", "state-of-someone-else")?;
    let page = browser.get(&forged).await?;
    assert_refused(
        &browser,
        &page,
        StatusCode::BAD_REQUEST,
        "state mismatch",
        "wrong state",
    )
    .await?;
    refusals += 1;

    // A response naming another issuer (RFC 9207 mix-up): refused before the code is used.
    let browser = WebClient::for_lab(&lab)?;
    let callback = browser.oidc_callback_url(&lab, "alice").await?;
    let mixed_up = with_query(&callback, "iss", "http://127.0.0.1:1/other")?;
    let page = browser.get(&mixed_up).await?;
    assert_refused(
        &browser,
        &page,
        StatusCode::BAD_REQUEST,
        "another issuer",
        "other issuer in the response",
    )
    .await?;
    refusals += 1;

    // A callback URL used twice: it signs in once, and never again, whatever the cookies.
    let first = WebClient::for_lab(&lab)?;
    let callback = first.oidc_callback_url(&lab, "alice").await?;
    let pending_before = first.cookies();
    first
        .get(&callback)
        .await?
        .expect_redirect("/", "the first use of the callback")?;
    let page = first.get(&callback).await?;
    page.expect(StatusCode::BAD_REQUEST, "replay in the same browser")?;
    ensure!(!page.sets_session(), "the replay set a session");
    refusals += 1;

    let thief = WebClient::for_lab(&lab)?;
    let page = thief.get(&callback).await?;
    assert_refused(
        &thief,
        &page,
        StatusCode::BAD_REQUEST,
        "was not started here, or was already used",
        "replay without the pending cookie",
    )
    .await?;
    refusals += 1;

    let thief = WebClient::for_lab(&lab)?;
    thief.set_cookies(pending_before);
    let page = thief.get(&callback).await?;
    assert_refused(
        &thief,
        &page,
        StatusCode::FORBIDDEN,
        "invalid_grant",
        "replay with the pending cookie",
    )
    .await?;
    refusals += 1;

    // The used code, with a pending sign-in of the attacker's own: the state matches, the
    // provider refuses the code.
    let thief = WebClient::for_lab(&lab)?;
    let authorize = thief.oidc_start().await?;
    let own_state = query_value(&authorize, "state")?;
    let page = thief
        .get(&with_query(&callback, "state", &own_state)?)
        .await?;
    assert_refused(
        &thief,
        &page,
        StatusCode::FORBIDDEN,
        "invalid_grant",
        "replayed code with a fresh pending cookie",
    )
    .await?;
    refusals += 1;

    // Forged ID tokens: the provider's token endpoint hands them out, the console refuses.
    for (mode, message) in [
        (Tamper::BadNonce, "ID token was rejected"),
        (Tamper::OtherIssuer, "ID token was rejected"),
        (Tamper::ForeignKey, "ID token was rejected"),
        (Tamper::OtherAudience, "ID token was rejected"),
    ] {
        lab.idp.set_tamper(mode).await?;
        let browser = WebClient::for_lab(&lab)?;
        let callback = browser.oidc_callback_url(&lab, "alice").await?;
        let page = browser.get(&callback).await?;
        assert_refused(
            &browser,
            &page,
            StatusCode::FORBIDDEN,
            message,
            &format!("ID token tampered with ({mode:?})"),
        )
        .await?;
        refusals += 1;
    }
    lab.idp.set_tamper(Tamper::None).await?;

    // The person cancels at the provider: it answers error=access_denied.
    let browser = WebClient::for_lab(&lab)?;
    let authorize = browser.oidc_start().await?;
    let callback = abort_at_provider(&browser, &authorize, lab.idp.redirect_uri()).await?;
    ensure!(
        callback.contains("error=access_denied"),
        "the provider answered {callback}"
    );
    let page = browser.get(&callback).await?;
    assert_refused(
        &browser,
        &page,
        StatusCode::FORBIDDEN,
        "The sign-in provider refused: access_denied",
        "access_denied",
    )
    .await?;
    refusals += 1;

    // Someone the provider knows but whose groups give no console role.
    let mallory = WebClient::for_lab(&lab)?;
    let callback = mallory.oidc_callback_url(&lab, "mallory").await?;
    let page = mallory.get(&callback).await?;
    assert_refused(
        &mallory,
        &page,
        StatusCode::FORBIDDEN,
        "groups no-such-group give no role",
        "mallory",
    )
    .await?;
    // Her refusal is logged once, as signin.denied (who and which groups), not also as a
    // signin.failed of an unknown person.

    // After all that, an honest sign-in still works.
    WebClient::oidc(&lab, "alice").await?;

    let audit = audit_log(&lab).await?;
    let failed = audit
        .iter()
        .filter(|e| e.action == "signin.failed" && e.detail["method"] == "oidc")
        .count();
    assert_eq!(
        failed, refusals,
        "one signin.failed per refusal (mallory's is a signin.denied):\n{audit:#?}"
    );
    let denied = audit
        .iter()
        .find(|e| e.action == "signin.denied")
        .context("no signin.denied entry for mallory")?;
    assert_eq!(denied.actor, "mallory");
    assert_eq!(
        denied.detail["groups"],
        serde_json::json!(["no-such-group"])
    );
    let signins: Vec<&str> = audit
        .iter()
        .filter(|e| e.action == "signin")
        .map(|e| e.actor.as_str())
        .collect();
    assert_eq!(signins, ["alice", "alice"], "only the two honest sign-ins");
    Ok(())
}

/// Follows the provider's redirects from `authorize` to its login page, presses its "abort"
/// link, and follows on to the URL it sends the browser back to (not requested).
async fn abort_at_provider(
    browser: &WebClient,
    authorize: &str,
    redirect_uri: &str,
) -> Result<String> {
    let client = browser.provider_client();
    let mut url = Url::parse(authorize)?;
    let mut aborted = false;
    for _ in 0..10 {
        let response = client.get(url.clone()).send().await?;
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .context("a redirect without Location")?;
            url = url.join(location)?;
            if url.as_str().starts_with(redirect_uri) {
                return Ok(url.to_string());
            }
            continue;
        }
        ensure!(
            response.status() == StatusCode::OK && !aborted,
            "{url} answered {}",
            response.status()
        );
        // The development login page at /interaction/UID; its abort link is UID/abort.
        url = Url::parse(&format!("{}/abort", url.as_str().trim_end_matches('/')))?;
        aborted = true;
    }
    anyhow::bail!("the provider never sent the browser back (last: {url})")
}

#[tokio::test]
async fn a_provider_that_goes_down_ends_sign_ins_without_a_session() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let browser = WebClient::for_lab(&lab)?;
    // Started while the provider was up: the console knows its endpoints.
    let authorize = browser.oidc_start().await?;
    let state = query_value(&authorize, "state")?;
    lab.stop_provider()?;

    // The browser comes back with a code the console can no longer exchange.
    let callback = format!(
        "{}/auth/oidc/callback?code=code-from-before&state={state}",
        lab.url()
    );
    let page = browser.get(&callback).await?;
    ensure!(
        page.status.is_client_error() || page.status.is_server_error(),
        "the callback answered {}:\n{}",
        page.status,
        page.body
    );
    ensure!(!page.sets_session(), "a session cookie was set");
    ensure!(
        !browser.is_signed_in().await?,
        "signed in without a provider"
    );

    // A new sign-in still starts (the redirect goes to the provider, which the browser will
    // find down), and local accounts keep working.
    WebClient::for_lab(&lab)?.oidc_start().await?;
    WebClient::local(&lab, ROOT_LOGIN, ROOT_PASSWORD).await?;
    Ok(())
}

#[tokio::test]
async fn a_callback_while_the_provider_is_down_says_it_cannot_be_reached() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let browser = WebClient::for_lab(&lab)?;
    let authorize = browser.oidc_start().await?;
    let state = query_value(&authorize, "state")?;
    lab.stop_provider()?;
    let page = browser
        .get(&format!(
            "{}/auth/oidc/callback?code=code-from-before&state={state}",
            lab.url()
        ))
        .await?;
    assert_refused(
        &browser,
        &page,
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot be reached",
        "callback with the provider down",
    )
    .await
}

#[tokio::test]
async fn a_console_started_while_the_provider_is_down_says_so_and_keeps_local_sign_in() -> Result<()>
{
    let lab = ConsoleLab::start_with_provider_down(&[])?;
    let browser = WebClient::for_lab(&lab)?;
    // Twice: the first try rediscovers (and fails), the second answers from the last failure.
    for attempt in ["first", "second"] {
        let page = browser.get("/auth/oidc/start").await?;
        assert_refused(
            &browser,
            &page,
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "The sign-in provider at {} cannot be reached",
                lab.idp.issuer()
            ),
            &format!("{attempt} start with the provider down"),
        )
        .await?;
        ensure!(
            page.body
                .contains("an admin can still sign in with a local account"),
            "{}",
            page.body
        );
    }
    let login = browser.get("/login").await?;
    login.expect(StatusCode::OK, "/login with the provider down")?;
    login.login_csrf()?;
    browser.sign_in_local(ROOT_LOGIN, ROOT_PASSWORD).await?;
    ensure!(browser.is_signed_in().await?, "root is not signed in");
    Ok(())
}

#[tokio::test]
async fn with_local_sign_in_turned_off_only_the_provider_signs_people_in() -> Result<()> {
    let lab = ConsoleLab::start(&[("PGBASTION_CONSOLE_LOCAL_LOGIN", "false")])?;
    let browser = WebClient::for_lab(&lab)?;
    let login = browser.get("/login").await?;
    login.expect(StatusCode::OK, "GET /login")?;
    ensure!(
        !login.body.contains("name=\"password\""),
        "the sign-in page still offers a password form:\n{}",
        login.body
    );
    // A post made by hand, with a valid sign-in form token from the cookie.
    let token = browser
        .cookie("pgbastion_login")
        .context("GET /login set no pgbastion_login cookie")?;
    let page = browser
        .post_form(
            "/login/local",
            &[
                ("login_csrf", &token),
                ("next", "/"),
                ("login", ROOT_LOGIN),
                ("password", ROOT_PASSWORD),
            ],
        )
        .await?;
    page.expect(StatusCode::FORBIDDEN, "local sign-in while it is off")?;
    ensure!(
        !page.sets_session(),
        "a refused local sign-in set a session"
    );
    WebClient::oidc(&lab, "alice").await?;
    Ok(())
}
