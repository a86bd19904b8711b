//! Exports and the integrity panel in the console, on a session recorded through the real
//! gateway: the JSONL export passes the built `pgbastion verify --file` with only the public key
//! and fails naming the event when one byte changes; the CSV reads back (Python's csv module, a
//! parser that is not ours) with its statements and with formula cells defused; search exports
//! follow the URL's filters; role boundaries (a user's own sessions only, others "not found")
//! and the audit log hold; the panel tells a sealed recording from one edited in the store.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::ConsoleLab;
use harness::pg;
use harness::store_engine::RawSql;
use harness::web_client::WebClient;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// A word nobody else types, so searches find exactly alice's statement.
const WORD: &str = "quokkazephyr";
/// A literal a spreadsheet would run if the cell started with it; inside the SQL it does not.
const FORMULA_LITERAL: &str = "=HYPERLINK(\"http://evil.example/\")";
/// A statement that is itself a formula: the server refuses it, and it is recorded as sent.
const FORMULA_STATEMENT: &str = "=1+1";

const SESSION_COLUMNS: [&str; 12] = [
    "seq",
    "time",
    "offset_secs",
    "class",
    "risks",
    "sql",
    "params",
    "tag",
    "rows",
    "sqlstate",
    "error",
    "duration_ms",
];

/// Rows of a CSV text as Python's csv module reads them.
fn parse_csv(dir: &Path, text: &str) -> Result<Vec<Vec<String>>> {
    let path = dir.join("export.csv");
    std::fs::write(&path, text)?;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import csv, json, sys\n\
             print(json.dumps(list(csv.reader(open(sys.argv[1], newline='', encoding='utf-8')))))",
        )
        .arg(&path)
        .output()
        .context("cannot run python3 (scripts/setup installs it)")?;
    ensure!(
        out.status.success(),
        "python's csv module refused the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `pgbastion verify --file FILE --public-key KEY`: (passed, what it said).
fn verify_file(lab: &ConsoleLab, file: &Path, key: &Path) -> Result<(bool, String)> {
    let out = lab.lab.bastion.cli(&[
        "verify",
        "--file",
        &file.display().to_string(),
        "--public-key",
        &key.display().to_string(),
    ])?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), said))
}

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
            bail!("{path} never showed {needle:?}:\n{}", page.body);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// alice's recorded, sealed session: a statement with [`WORD`] and a formula literal, then
/// [`FORMULA_STATEMENT`], which fails.
async fn record_alices_session(lab: &ConsoleLab) -> Result<Uuid> {
    lab.lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.lab.issue("shop", pg::SCRAM_USER, &[])?;
    let sql = format!(
        "SELECT '{WORD}' AS word, '{}' AS f;\n{FORMULA_STATEMENT};\n",
        FORMULA_LITERAL.replace('\'', "''")
    );
    // psql stops at the failing statement and says so: expected.
    let failed = lab.lab.psql("shop", &issued.token, &sql).err();
    ensure!(failed.is_some(), "{FORMULA_STATEMENT} should fail");
    let sessions = lab.lab.ended_sessions(1).await?;
    let id = sessions.first().context("alice's session")?.id;
    lab.lab.sealed_recording(id).await?;
    Ok(id)
}

#[tokio::test]
async fn recordings_and_searches_export_verifiably_within_the_viewers_rights() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    let id = record_alices_session(&lab).await?;
    let dir = tempfile::tempdir()?;
    let carol = WebClient::oidc(&lab, "carol").await?;
    let alice = WebClient::oidc(&lab, "alice").await?;
    let bob = WebClient::oidc(&lab, "bob").await?;

    // The recording as JSONL, downloaded by an auditor, passes the offline check.
    let path = format!("/sessions/{id}/export.jsonl");
    let export = carol.get(&path).await?;
    export.expect(StatusCode::OK, &path)?;
    let disposition = export.header("content-disposition").unwrap_or_default();
    ensure!(
        disposition == format!("attachment; filename=\"pgbastion-shop-{id}.jsonl\""),
        "{disposition}"
    );
    let file = dir.path().join("session.jsonl");
    std::fs::write(&file, &export.body)?;
    let key = dir.path().join("recording.pub");
    std::fs::write(
        &key,
        lab.lab.bastion.cli_ok(&["verify", "--show-public-key"])?,
    )?;
    let (passed, said) = verify_file(&lab, &file, &key)?;
    ensure!(
        passed && said.contains("chain intact, sealed"),
        "verify --file said: {said}"
    );
    // One byte changed in one event: verify fails naming that event.
    let (line_no, line) = export
        .body
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(WORD))
        .context("the event with the word")?;
    let seq = serde_json::from_str::<Value>(line)?["seq"]
        .as_i64()
        .context("seq")?;
    let mut lines: Vec<String> = export.body.lines().map(str::to_owned).collect();
    lines[line_no] = line.replacen(WORD, &WORD.replacen('q', "Q", 1), 1);
    std::fs::write(&file, lines.join("\n") + "\n")?;
    let (passed, said) = verify_file(&lab, &file, &key)?;
    ensure!(
        !passed && said.contains(&format!("event at seq {seq} (")) && said.contains("(edited)"),
        "one byte of seq {seq} changed; verify said: {said}"
    );

    // The statements as CSV, by their owner: a standard parser reads them back.
    let path = format!("/sessions/{id}/export.csv");
    let csv = alice.get(&path).await?;
    csv.expect(StatusCode::OK, &path)?;
    ensure!(
        csv.header("content-disposition").unwrap_or_default()
            == format!("attachment; filename=\"pgbastion-shop-{id}.csv\"")
    );
    let rows = parse_csv(dir.path(), &csv.body)?;
    ensure!(rows.first().map(Vec::as_slice) == Some(&SESSION_COLUMNS.map(String::from)[..]));
    let column = |name: &str| SESSION_COLUMNS.iter().position(|c| *c == name).unwrap();
    let worded = rows
        .iter()
        .find(|r| r[column("sql")].contains(WORD))
        .with_context(|| format!("the statement with the word: {rows:?}"))?;
    ensure!(
        worded[column("sql")].contains(FORMULA_LITERAL),
        "{worded:?}"
    );
    ensure!(
        worded[column("class")] == "read" && worded[column("tag")] == "SELECT 1",
        "{worded:?}"
    );
    ensure!(worded[column("seq")] == seq.to_string(), "{worded:?}");
    // The statement that is a formula starts with an apostrophe, so a spreadsheet shows it.
    let formula = rows
        .iter()
        .find(|r| r[column("sql")].contains(FORMULA_STATEMENT))
        .with_context(|| format!("the formula statement: {rows:?}"))?;
    ensure!(
        // (psql sends the statement with its semicolon)
        formula[column("sql")].starts_with(&format!("'{FORMULA_STATEMENT}"))
            && formula[column("sqlstate")] == "42601",
        "{formula:?}"
    );

    // Someone else's session is not there at all for a user; their own is.
    for path in [
        format!("/sessions/{id}/export.jsonl"),
        format!("/sessions/{id}/export.csv"),
        format!("/sessions/{id}/integrity"),
    ] {
        bob.get(&path).await?.expect(StatusCode::NOT_FOUND, &path)?;
        alice.get(&path).await?.expect(StatusCode::OK, &path)?;
    }
    let nobody = format!("/sessions/{}/export.jsonl", Uuid::new_v4());
    carol
        .get(&nobody)
        .await?
        .expect(StatusCode::NOT_FOUND, &nobody)?;

    // Search exports follow the filters, and a user's never reach another's statements.
    let found = eventually(&carol, &format!("/sessions/search.csv?q={WORD}"), WORD).await?;
    let rows = parse_csv(dir.path(), &found)?;
    ensure!(rows.len() == 2 && rows[1][0] == id.to_string(), "{rows:?}");
    let narrowed = carol
        .get(&format!("/sessions/search.csv?q={WORD}&person=bob"))
        .await?;
    ensure!(
        parse_csv(dir.path(), &narrowed.body)?.len() == 1,
        "only the header: {}",
        narrowed.body
    );
    let errors_only = carol.get("/sessions/search.csv?errors=yes").await?;
    let rows = parse_csv(dir.path(), &errors_only.body)?;
    ensure!(
        rows.len() == 2 && rows[1][7].starts_with(&format!("'{FORMULA_STATEMENT}")),
        "{rows:?}"
    );
    let bobs = bob.get(&format!("/sessions/search.jsonl?q={WORD}")).await?;
    bobs.expect(StatusCode::OK, "bob's search export")?;
    ensure!(bobs.body.is_empty(), "bob exported alice's: {}", bobs.body);
    // Each JSONL line names its session, seq and the event's hash, as in the verified export.
    let mine = alice
        .get(&format!("/sessions/search.jsonl?q={WORD}&person=bob"))
        .await?;
    let lines: Vec<Value> = mine
        .body
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    ensure!(
        lines.len() == 1,
        "alice's own, whatever the URL says: {lines:?}"
    );
    let hash_in_export = serde_json::from_str::<Value>(line)?["hash"].clone();
    ensure!(
        lines[0]["session_id"] == id.to_string()
            && lines[0]["seq"] == seq
            && lines[0]["event_hash"] == hash_in_export,
        "{lines:?} vs export line {line}"
    );

    // Every export is in the audit log, by whom and of what.
    let audit = lab.lab.store().await?.list_audit(None, 100).await?;
    let logged = |actor: &str, action: &str, format: &str| {
        audit
            .iter()
            .any(|e| e.actor == actor && e.action == action && e.detail["format"] == format)
    };
    ensure!(logged("carol", "session.export", "jsonl"), "{audit:#?}");
    ensure!(logged("alice", "session.export", "csv"), "{audit:#?}");
    ensure!(logged("carol", "sessions.export", "csv"), "{audit:#?}");
    ensure!(logged("alice", "sessions.export", "jsonl"), "{audit:#?}");
    ensure!(
        !audit
            .iter()
            .any(|e| e.actor == "bob" && e.action == "session.export"),
        "a refused export is not an export"
    );
    Ok(())
}

#[tokio::test]
async fn integrity_panel_shows_a_sealed_recording_verified_and_an_edited_one_broken() -> Result<()>
{
    let lab = ConsoleLab::start(&[])?;
    let id = record_alices_session(&lab).await?;
    let carol = WebClient::oidc(&lab, "carol").await?;
    let path = format!("/sessions/{id}/integrity");
    let page = eventually(&carol, &path, "id=\"integrity-verdict\">verified<").await?;
    ensure!(
        page.contains("Signature</th><td><span class=\"badge active\">valid"),
        "{page}"
    );
    ensure!(
        page.contains(&format!(
            "pgbastion verify --file pgbastion-shop-{id}.jsonl --public-key recording.pub"
        )),
        "{page}"
    );
    // The session list's verdict, from the indexer, agrees once it has read the session.
    eventually(
        &carol,
        &path,
        "<span class=\"badge active\">verified</span></h2>",
    )
    .await?;

    // Edit the stored text of the statement, as someone with write access to the store could.
    let url = lab.lab.bastion.store_url();
    let file = url
        .strip_prefix("sqlite://")
        .with_context(|| format!("a SQLite store, not {url}"))?;
    let raw = RawSql::Sqlite(file.into());
    raw.run(&[&format!(
        "UPDATE recording_blocks SET body = replace(body, '{WORD}', 'tampered') \
         WHERE session_id = {}",
        raw.uuid(id)
    )])?;
    let page = carol.get(&path).await?;
    page.expect(StatusCode::OK, &path)?;
    ensure!(
        page.body.contains("id=\"integrity-verdict\">broken<"),
        "{}",
        page.body
    );
    let (events, _) = lab.lab.sealed_recording(id).await?;
    let edited = events
        .iter()
        .find(|e| e.body.contains("tampered"))
        .context("the edited event")?;
    ensure!(
        page.body.contains(&format!(
            "broken at seq {}: event at seq {} (",
            edited.seq, edited.seq
        )),
        "{}",
        page.body
    );
    Ok(())
}
