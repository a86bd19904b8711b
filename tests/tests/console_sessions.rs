//! Finding sessions in the console: everyone's for auditors, one's own for users (whatever the
//! URL says), filters in the URL, statement search over the index with highlighted, escaped
//! snippets, and paging.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::ConsoleLab;
use harness::pg;
use harness::web_client::{WebClient, decode_entities};
use reqwest::StatusCode;

/// A word nobody else types, so the search finds exactly alice's statement.
const WORD: &str = "zanzibarquux";
/// Script that must reach the page only as text.
const PAYLOAD: &str = "<script>alert(1)</script>";

/// Polls `path` until its body contains `needle` (the indexer runs every couple of seconds).
async fn eventually(client: &WebClient, path: &str, needle: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = client.get(path).await?;
        page.expect(StatusCode::OK, path)?;
        if page.body.contains(needle) {
            return Ok(page.body.clone());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{path} never showed {needle:?}:\n{}", page.body);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn auditors_find_statements_users_see_only_their_own_sessions() -> Result<()> {
    find_statements_and_sessions(ConsoleLab::start(&[])?).await
}

#[tokio::test]
async fn auditors_find_statements_on_a_postgres_store() -> Result<()> {
    find_statements_and_sessions(ConsoleLab::start_with_pg_store(&[])?).await
}

async fn find_statements_and_sessions(lab: ConsoleLab) -> Result<()> {
    // alice's statements, through the gateway, with a payload in the SQL text.
    lab.lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.lab.issue("shop", pg::SCRAM_USER, &[])?;
    let sql = format!("SELECT '{WORD}' AS word, '{PAYLOAD}' AS payload");
    lab.lab.psql("shop", &issued.token, &sql)?;
    lab.lab
        .psql("shop", &issued.token, "SELECT * FROM no_such_table")
        .err()
        .context("a query on a missing table should fail")?;

    let carol = WebClient::oidc(&lab, "carol").await?;
    // Full-text search: the statement, with the word marked and the payload as text.
    let body = eventually(&carol, &format!("/sessions?q={WORD}"), "<mark>").await?;
    ensure!(body.contains(&format!("<mark>{WORD}</mark>")), "{body}");
    ensure!(
        !body.contains(PAYLOAD),
        "the payload reached the page unescaped:\n{body}"
    );
    ensure!(
        decode_entities(&body).contains(PAYLOAD),
        "the payload should be shown as text:\n{body}"
    );
    // Substring search finds it from a fragment; filters narrow it.
    let body = carol
        .get(&format!("/sessions?q={}&mode=substring", &WORD[2..9]))
        .await?
        .body
        .clone();
    ensure!(
        body.contains("<mark>"),
        "substring search found nothing:\n{body}"
    );
    let none = carol
        .get(&format!("/sessions?q={WORD}&person=bob"))
        .await?
        .body
        .clone();
    ensure!(none.contains("No recorded statement matches"), "{none}");
    // Errors filter: the failing statement, with its SQLSTATE.
    let errors = eventually(&carol, "/sessions?errors=yes", "42P01").await?;
    ensure!(errors.contains("no_such_table"), "{errors}");

    // The session list: alice's sessions with their counts and recording state.
    let list = eventually(&carol, "/sessions?person=alice", ">verified<").await?;
    ensure!(list.contains("<td>alice</td>"), "{list}");
    // The group she was in when the session started finds it; another group does not.
    let in_dev = carol.get("/sessions?group=dev").await?.body.clone();
    ensure!(in_dev.contains("<td>alice</td>"), "{in_dev}");
    let elsewhere = carol.get("/sessions?group=finance").await?.body.clone();
    ensure!(elsewhere.contains("No session matches"), "{elsewhere}");
    // Groups narrow sessions, not statements: said, not ignored.
    carol
        .get(&format!("/sessions?group=dev&q={WORD}"))
        .await?
        .expect(StatusCode::BAD_REQUEST, "a group with a statement search")?;

    // alice sees her own; asking for bob's gives hers anyway; bob sees none of hers.
    let alice = WebClient::oidc(&lab, "alice").await?;
    let mine = alice.get("/sessions?person=bob").await?;
    mine.expect(StatusCode::OK, "alice's sessions")?;
    ensure!(
        mine.body.contains("data-session="),
        "alice should see her sessions"
    );
    let bob = WebClient::oidc(&lab, "bob").await?;
    let his = bob.get(&format!("/sessions?q={WORD}")).await?;
    ensure!(
        his.body.contains("No recorded statement matches"),
        "bob found alice's statement:\n{}",
        his.body
    );

    // Hostile filters are refused with a message, not an error page of the store.
    for bad in [
        "/sessions?status=gone",
        "/sessions?from=2026-13-40",
        "/sessions?class=evil",
        "/sessions?before=not-a-cursor",
        "/sessions?mode=regex&q=x",
    ] {
        carol.get(bad).await?.expect(StatusCode::BAD_REQUEST, bad)?;
    }
    // Hostile text is just text.
    for text in ["\"", "*", "NEAR(a b)", "(((", "%_\\", &"x".repeat(2000)] {
        let url = reqwest::Url::parse_with_params("http://console/sessions", &[("q", text)])?;
        let path = format!("/sessions?{}", url.query().unwrap_or_default());
        carol.get(&path).await?.expect(StatusCode::OK, &path)?;
    }
    Ok(())
}
