//! The console as people use it, in a real headless Chromium (`tests/js/journey.mjs`, with
//! playwright-core): alice signs in through the identity provider and asks for access to `shop`,
//! bob approves it, alice collects the credential and copies the token, connects through the
//! gateway with the psql command the page showed, finds the session under "My sessions" and
//! signs out.
//! On every console page: no browser errors, the Content-Security-Policy sent and enforced.
//!
//! Screenshots of each step go to `<target>/test-artifacts/console/`, with the script's stderr
//! (`journey-stderr.log`).

use anyhow::{Context, ensure};
use harness::browser::{BrowserScript, artifacts_dir, require_browser_tools};
use harness::clients::psql_with_env;
use harness::{ConsoleLab, pg};
use serde_json::Value;

/// Must match journey.mjs.
const REASON: &str = "INC-1234 investigate orders";
const COMMENT: &str = "OK for INC-1234, read only please";
const LIFETIME: &str = "2h";

/// `value[key]` as a string, or a failure naming what is missing.
fn string<'a>(value: &'a Value, key: &str) -> anyhow::Result<&'a str> {
    value[key]
        .as_str()
        .with_context(|| format!("no string {key:?} in {value}"))
}

/// The cells of a table row as journey.mjs reports it (`{"cells": [...], "buttons": [...]}`).
fn cells(row: &Value) -> Vec<&str> {
    row["cells"]
        .as_array()
        .map(|cells| cells.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn buttons(row: &Value) -> Vec<&str> {
    row["buttons"]
        .as_array()
        .map(|buttons| buttons.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn request_approval_credential_and_session_in_a_real_browser() {
    require_browser_tools().unwrap_or_else(|e| panic!("{e:#}"));
    let out_dir = artifacts_dir("console").unwrap_or_else(|e| panic!("{e:#}"));
    let lab = ConsoleLab::start(&[]).unwrap_or_else(|e| panic!("console lab: {e:#}"));
    let mut journey = BrowserScript::start("journey.mjs", &lab.url(), &out_dir)
        .unwrap_or_else(|e| panic!("{e:#}"));
    if let Err(e) = run(&lab, &mut journey) {
        let status = journey.child.stop();
        panic!(
            "{e:#}\n\njourney.mjs ({status:?}) stderr:\n{}\n\npgbastion serve log:\n{}\n\n\
             provider log:\n{}\n\nscreenshots: {}",
            journey.stderr(),
            lab.lab.bastion.log(),
            lab.idp.log(),
            out_dir.display()
        );
    }
}

fn run(lab: &ConsoleLab, journey: &mut BrowserScript) -> anyhow::Result<()> {
    let url = lab.url();
    let gateway_port = lab.lab.bastion.gateway_port;

    let signin = journey.step("signin")?;
    ensure!(
        string(&signin, "loginUrl")? == format!("{url}/login"),
        "the console did not send a stranger to sign in: {signin}"
    );
    ensure!(
        signin["providerPages"] == 2,
        "the provider should have shown a login and a consent page: {signin}"
    );
    ensure!(
        string(&signin, "landedOn")? == format!("{url}/"),
        "alice did not land on the home page after signing in: {signin}"
    );
    ensure!(
        signin["navLogin"] == "alice",
        "the top bar does not show alice: {signin}"
    );
    ensure!(
        signin["heading"] == "Database access",
        "alice should see the access page: {signin}"
    );
    ensure!(
        signin["targets"] == serde_json::json!(["shop"]),
        "alice should be offered exactly `shop`: {signin}"
    );

    let requested = journey.step("requested")?;
    ensure!(
        requested["button"] == "Request approval",
        "the request button should say approval is needed: {requested}"
    );
    ensure!(
        string(&requested, "url")? == format!("{url}/requests"),
        "after requesting, alice should be on /requests: {requested}"
    );
    let row = &requested["row"];
    ensure!(
        cells(row).starts_with(&["shop", pg::SCRAM_USER, LIFETIME, REASON, "pending"]),
        "alice's request should be listed as pending for {LIFETIME}: {requested}"
    );
    ensure!(
        buttons(row) == ["Withdraw"],
        "a pending request can only be withdrawn: {requested}"
    );

    let approved = journey.step("approved")?;
    let bob = &approved["signedIn"];
    ensure!(
        string(bob, "loginUrl")? == format!("{url}/login?next=%2Fapprovals"),
        "bob should be sent to sign in and back to /approvals: {approved}"
    );
    ensure!(
        string(bob, "landedOn")? == format!("{url}/approvals") && bob["navLogin"] == "bob",
        "bob did not land on /approvals signed in: {approved}"
    );
    let pending = &approved["pending"];
    ensure!(
        cells(pending).starts_with(&["alice", "shop", pg::SCRAM_USER, LIFETIME, REASON]),
        "bob should see alice's request waiting: {approved}"
    );
    ensure!(
        buttons(pending) == ["Approve", "Deny"],
        "bob should be able to approve or deny: {approved}"
    );
    ensure!(
        approved["waitingEmpty"] == "Nothing is waiting for a decision.",
        "after the decision nothing should wait: {approved}"
    );
    let decided = cells(&approved["decided"]);
    ensure!(
        decided.len() == 8
            && decided[..6] == ["alice", "shop", pg::SCRAM_USER, REASON, "approved", "bob"]
            && decided[6].ends_with(" UTC")
            && decided[7] == COMMENT,
        "the decision should be listed with the reason, bob, when, and his comment: {approved}"
    );

    let credential = journey.step("credential")?;
    let row = cells(&credential["approved"]);
    ensure!(
        row.get(4) == Some(&"approved")
            && row
                .get(6)
                .is_some_and(|c| c.contains("bob") && c.contains(COMMENT)),
        "alice should see the request approved by bob, with his comment: {credential}"
    );
    ensure!(
        buttons(&credential["approved"]).contains(&"Get credential"),
        "an approved request offers its credential: {credential}"
    );
    ensure!(
        credential["heading"] == "Your credential for shop",
        "the credential page has the wrong heading: {credential}"
    );
    ensure!(
        string(&credential, "notice")?.contains(&format!("({LIFETIME}")),
        "the credential should say it lasts {LIFETIME}: {credential}"
    );
    let token = string(&credential, "token")?;
    ensure!(
        token.split('.').count() == 3 && token.len() > 100,
        "the token should be a JWT: {credential}"
    );
    ensure!(
        credential["clipboard"] == token,
        "the Copy button did not put the token on the clipboard: {credential}"
    );
    let conninfo =
        format!("host=127.0.0.1 port={gateway_port} dbname=shop user=alice sslmode=require");
    ensure!(
        string(&credential, "psql")? == format!("PGPASSWORD={token} psql \"{conninfo}\""),
        "the psql command is not the one for this gateway and token: {credential}"
    );
    ensure!(
        string(&credential, "uri")?
            == format!("postgresql://alice:{token}@127.0.0.1:{gateway_port}/shop?sslmode=require"),
        "the connection URI is not the one for this gateway and token: {credential}"
    );
    let after = &credential["afterCollect"];
    ensure!(
        cells(after).get(4) == Some(&"issued") && buttons(after).is_empty(),
        "a collected request should say issued and offer nothing more: {credential}"
    );

    // What alice would paste: the page's psql command, i.e. its connection string and token.
    let out = psql_with_env(
        &conninfo,
        "SELECT current_user, current_setting('pgbastion.identity');",
        &[("PGPASSWORD", token)],
    )?;
    ensure!(
        out.status.success(),
        "psql with the page's command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = String::from_utf8_lossy(&out.stdout);
    ensure!(
        answer.trim() == format!("{}|alice", pg::SCRAM_USER),
        "the session should run as the granted role for alice, got {answer:?}"
    );
    let (session_id, events) = recorded_session(lab)?;

    journey.say("sessions")?;
    let sessions = journey.step("sessions")?;
    ensure!(
        sessions["header"]
            == serde_json::json!([
                "Started",
                "Target",
                "Role",
                "Client",
                "Application",
                "Length",
                "Statements",
                "Errors",
                "Risky",
                "Events",
                "Status",
                "Recording"
            ]),
        "the sessions table has other columns than expected: {sessions}"
    );
    let rows = sessions["rows"].as_array().context("sessions rows")?;
    ensure!(
        rows.len() == 1 && rows[0]["id"] == session_id.to_string(),
        "alice's sessions should list exactly session {session_id}: {sessions}"
    );
    let row = cells(&rows[0]);
    ensure!(
        row.len() == 12
            && row[1] == "shop"
            && row[2] == pg::SCRAM_USER
            && row[3].starts_with("127.0.0.1")
            && row[4] == "psql"
            && row[9] == events.to_string()
            && row[10].starts_with("ended")
            && row[11] == "verified",
        "the session row should show shop, the role, psql, {events} events, ended, verified: \
         {sessions}"
    );

    let signout = journey.step("signout")?;
    ensure!(
        string(&signout, "afterSignOut")? == format!("{url}/login")
            && string(&signout, "requestsLeadTo")? == format!("{url}/login?next=%2Frequests"),
        "after signing out, alice should be asked to sign in again: {signout}"
    );

    let admin = journey.step("admin")?;
    let rows = |path: &str| -> Vec<String> {
        admin["pages"][path]["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    ensure!(
        rows("/admin/targets").iter().any(|r| r.contains("shop")),
        "dave should see target shop on the targets page: {admin}"
    );
    ensure!(
        rows("/admin/grants")
            .iter()
            .any(|r| r.contains("pgb-users") && r.contains(pg::SCRAM_USER)),
        "dave should see the group grant: {admin}"
    );
    ensure!(
        rows("/admin/people").iter().any(|r| r.contains("alice")),
        "dave should see alice among people: {admin}"
    );
    let audit = rows("/audit").join("\n");
    for action in [
        "request.create",
        "request.approve",
        "credential.issue",
        "signin",
    ] {
        ensure!(
            audit.contains(action),
            "the audit log should show {action}: {admin}"
        );
    }
    ensure!(
        admin["carolAudit"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "carol (auditor) should read the audit log: {admin}"
    );
    ensure!(
        admin["carolAdmin"]["status"] == 403 && admin["carolAdmin"]["title"] == "Not allowed",
        "carol (auditor) must not open the admin pages: {admin}"
    );

    let checks = journey.step("checks")?;
    ensure!(
        checks["consoleErrors"] == serde_json::json!([]),
        "console pages logged errors: {:#}",
        checks["consoleErrors"]
    );
    let documents = checks["documents"].as_array().context("documents")?;
    ensure!(
        documents.len() >= 8,
        "too few console documents seen: {checks}"
    );
    for document in documents {
        let csp = document["csp"].as_str().unwrap_or_default();
        ensure!(
            csp.contains("script-src 'self'")
                && csp.contains("style-src 'self'")
                && !csp.contains("unsafe"),
            "a console response without the strict CSP: {document}"
        );
    }
    for page in checks["pages"].as_array().context("pages")? {
        ensure!(
            page["inlineScripts"] == 0
                && page["inlineStyles"] == 0
                && page["offsite"] == serde_json::json!([]),
            "a console page has inline code or off-site resources: {page}"
        );
    }
    ensure!(
        checks["cspProbe"]
            == serde_json::json!({ "inlineRan": false, "violation": "script-src-elem" }),
        "an injected inline script must be blocked by the CSP: {}",
        checks["cspProbe"]
    );

    journey.step("done")?;
    let status = journey.exit_status()?;
    ensure!(status.success(), "journey.mjs exited with {status}");
    Ok(())
}

/// alice's one session, once it ended and its recording is sealed: its id and event count.
fn recorded_session(lab: &ConsoleLab) -> anyhow::Result<(uuid::Uuid, i64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sessions = lab.lab.ended_sessions(1).await?;
        let session = sessions
            .iter()
            .find(|s| s.person_login == "alice" && s.ended_at.is_some())
            .with_context(|| format!("no ended session of alice in the store: {sessions:?}"))?;
        let (_, seal) = lab.lab.sealed_recording(session.id).await?;
        // The list shows "verified" once the indexer has checked the chain up to the seal.
        let store = lab.lab.store().await?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let stats = store.session_stats(&[session.id]).await?;
            let checked = stats.get(&session.id).is_some_and(|s| {
                s.complete && s.chain_verified_seq.map(|seq| seq + 1) == Some(seal.event_count)
            });
            if checked {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "the indexer did not check session {} within 20 s: {stats:?}",
                session.id
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Ok((session.id, seal.event_count))
    })
}
