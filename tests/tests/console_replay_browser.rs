//! The audit console's session pages in a real headless Chromium (`tests/js/replay.mjs`, with
//! playwright-core), on sessions recorded through the gateway:
//!
//! - search: carol (auditor) finds a statement by a word, opens the hit and lands on it in the
//!   replay, highlighted and scrolled into view;
//! - the player: play at 16x (statements one by one, at the recording's pace), pause, seek on
//!   the timeline, next error (SQLSTATE and psql's caret), next risky, protocol noise, a result
//!   table cut by the target's row cap;
//! - the live view: statements appear as they run, the badge turns to "ended" when the client
//!   leaves; dave (admin) ends a live session from its page and the client gets 57P01 with his
//!   reason;
//! - XSS: a session full of payloads (SQL, parameters, column names, values, error, hint,
//!   notice, notification, application_name) shown on its page, in search hits and in the
//!   session list, where none runs or creates an element and all read as text.
//!
//! On every console page: no browser errors, no CSP violation, the strict CSP sent.
//! Screenshots of each step go to `<target>/test-artifacts/replay/`, with the script's stderr
//! (`replay-stderr.log`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use gateway::store::Session;
use harness::browser::{BrowserScript, artifacts_dir, require_browser_tools};
use harness::clients::{tls_config, tokio_postgres_connect_with};
use harness::{ConsoleLab, pg};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// Rows the target's recording keeps per statement; the big SELECT returns [`BIRDS`].
const ROW_CAP: usize = 3;
const BIRDS: usize = 10;
/// Between the statements of the replayed session: at 16x a reveal every ~45 ms, slow enough
/// to tell from "instant", quick enough for the suite.
const GAP: Duration = Duration::from_millis(700);
/// The word carol searches for; nobody else types it.
const WORD: &str = "pelicanwing";
const ERROR_SQL: &str = "SELECT nme FROM birds";
const RISKY_SQL: &str = "DELETE FROM birds";
const TERMINATE_REASON: &str = "INC-9 unapproved change";

/// The word in the XSS session's SQL payload statement, to search it by.
const XSS_WORD: &str = "xssmarker";
/// Each payload would set `window.__pwned` or create an element if it ever became HTML. Those
/// built by `concat` in SQL reach the page only from where they are meant to (a value, an
/// error, a notice), not from the statement's text.
const P_SQL: &str = "<script>window.__pwned=1</script>";
const P_COLUMN: &str = "<img src=x onerror=window.__pwned=2>";
const P_ROW: &str = "<svg onload=window.__pwned=3>";
const P_PARAM: &str = "<img src=x onerror=window.__pwned=4>";
const P_ERROR: &str = "<script>window.__pwned=5</script>";
const P_HINT: &str = "<img src=x onerror=window.__pwned=6>";
const P_NOTICE: &str = "<iframe srcdoc=x onload=window.__pwned=7>";
const P_APP: &str = "<img src=x onerror=window.__pwned=8>";
const P_NOTIFY: &str = "<svg onload=window.__pwned=9>";

#[test]
fn search_replay_live_view_and_xss_proofing_in_a_real_browser() {
    require_browser_tools().unwrap_or_else(|e| panic!("{e:#}"));
    let out_dir = artifacts_dir("replay").unwrap_or_else(|e| panic!("{e:#}"));
    // The gateway looks for termination requests five times a second.
    let lab = ConsoleLab::start(&[("PGBASTION_GATEWAY_REVOCATION_POLL_MILLIS", "200")])
        .unwrap_or_else(|e| panic!("console lab: {e:#}"));
    // carol signs in while the sessions are recorded.
    let mut script = BrowserScript::start("replay.mjs", &lab.url(), &out_dir)
        .unwrap_or_else(|e| panic!("{e:#}"));
    if let Err(e) = run(&lab, &mut script) {
        let status = script.child.stop();
        panic!(
            "{e:#}\n\nreplay.mjs ({status:?}) stderr:\n{}\n\npgbastion serve log:\n{}\n\n\
             screenshots: {}",
            script.stderr(),
            lab.lab.bastion.log(),
            out_dir.display()
        );
    }
}

fn run(lab: &ConsoleLab, script: &mut BrowserScript) -> Result<()> {
    // One worker: the clients' connection tasks keep running between the test's steps.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    lab.lab.bastion.cli_ok(&[
        "target",
        "recording",
        "shop",
        "--policy",
        "strict",
        "--rows",
        &ROW_CAP.to_string(),
    ])?;
    lab.lab.grant("shop", pg::SCRAM_USER)?;
    let token = lab.lab.issue("shop", pg::SCRAM_USER, &[])?.token;
    let mut known = Vec::new();

    rt.block_on(record_replay_session(lab, &token))?;
    let replay = rt.block_on(next_session(lab, &mut known, true))?;
    rt.block_on(record_xss_session(lab, &token))?;
    let xss = rt.block_on(next_session(lab, &mut known, true))?;

    let signin = script.step("signin")?;
    ensure!(
        signin["navLogin"] == "carol",
        "carol is not signed in: {signin}"
    );
    script.say(
        &json!({
            "replay": replay.id,
            "word": WORD,
            "xss": xss.id,
            "xssWord": XSS_WORD,
            "payloads": [P_SQL, P_COLUMN, P_ROW, P_PARAM, P_ERROR, P_HINT, P_NOTICE, P_APP, P_NOTIFY],
            "searchPayloads": [P_SQL],
            "listPayloads": [P_APP],
        })
        .to_string(),
    )?;
    check_search(&script.step("search")?, replay.id)?;
    check_player(&script.step("player")?)?;
    check_xss(&script.step("xss")?)?;
    long_session(lab, script, &rt, &token, &mut known)?;
    live_view(lab, script, &rt, &token, &mut known)?;
    terminate(lab, script, &rt, &token, &mut known)?;
    check_pages(&script.step("checks")?)?;

    script.step("done")?;
    let status = script.exit_status()?;
    ensure!(status.success(), "replay.mjs exited with {status}");
    Ok(())
}

/// The session the player is tried on: statements spaced by [`GAP`], a result over the row
/// cap, an extended-protocol statement, an error with a position, the searched word and a
/// risky DELETE.
async fn record_replay_session(lab: &ConsoleLab, token: &str) -> Result<()> {
    let client = lab.lab.client("shop", token).await?;
    client
        .simple_query("CREATE TEMP TABLE birds (id int, name text)")
        .await?;
    client
        .simple_query(&format!(
            "INSERT INTO birds SELECT g, 'bird ' || g FROM generate_series(1, {BIRDS}) g"
        ))
        .await?;
    tokio::time::sleep(GAP).await;
    client
        .simple_query("SELECT id, name FROM birds ORDER BY id")
        .await?;
    tokio::time::sleep(GAP).await;
    let rows = client
        .query("SELECT name FROM birds WHERE id = $1", &[&4i32])
        .await?;
    ensure!(rows.len() == 1, "the extended query returned {rows:?}");
    tokio::time::sleep(GAP).await;
    ensure!(
        client.simple_query(ERROR_SQL).await.is_err(),
        "{ERROR_SQL} should fail"
    );
    tokio::time::sleep(GAP).await;
    client
        .simple_query(&format!("SELECT '{WORD}' AS bird_of_the_day"))
        .await?;
    tokio::time::sleep(GAP).await;
    client.simple_query(RISKY_SQL).await?;
    Ok(())
}

/// `concat('<first half>', '<second half>')`: SQL that yields the payload without its text
/// appearing whole in the statement.
fn concat(payload: &str) -> String {
    let (a, b) = payload.split_at(payload.find("__pwned").expect("a payload"));
    format!("concat('{a}', '{b}')")
}

/// A session whose every recorded string is a payload, as alice's client with a hostile
/// application_name.
async fn record_xss_session(lab: &ConsoleLab, token: &str) -> Result<()> {
    let conn = format!(
        "host=127.0.0.1 port={} user=alice dbname=shop password={token} sslmode=require \
         application_name='{P_APP}'",
        lab.lab.bastion.gateway_port
    );
    let (client, _task) = tokio_postgres_connect_with(&conn, tls_config(None, None)?).await?;
    client
        .simple_query(&format!("SELECT '{XSS_WORD} {P_SQL}' AS shown"))
        .await?;
    client
        .simple_query(&format!(
            "SELECT 2 AS \"{P_COLUMN}\", {} AS v",
            concat(P_ROW)
        ))
        .await?;
    client.query("SELECT $1::text AS echo", &[&P_PARAM]).await?;
    let raised = client
        .simple_query(&format!(
            "DO $$ BEGIN RAISE EXCEPTION '%', {} USING HINT = {}; END $$",
            concat(P_ERROR),
            concat(P_HINT)
        ))
        .await;
    ensure!(raised.is_err(), "RAISE EXCEPTION should fail");
    client
        .simple_query(&format!(
            "DO $$ BEGIN RAISE NOTICE '%', {}; END $$",
            concat(P_NOTICE)
        ))
        .await?;
    client.simple_query("LISTEN xss").await?;
    client
        .simple_query(&format!("SELECT pg_notify('xss', {})", concat(P_NOTIFY)))
        .await?;
    Ok(())
}

/// The first session not in `known` (then added to it), once the gateway stored it; `ended`
/// also waits for its end and its recording's seal.
async fn next_session(lab: &ConsoleLab, known: &mut Vec<Uuid>, ended: bool) -> Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let session = loop {
        let found = lab
            .lab
            .sessions()
            .await?
            .into_iter()
            .find(|s| !known.contains(&s.id) && (!ended || s.ended_at.is_some()));
        match found {
            Some(session) => break session,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => bail!(
                "no new session (ended: {ended}) within 15 s; log:\n{}",
                lab.lab.bastion.log()
            ),
        }
    };
    known.push(session.id);
    if ended {
        lab.lab.sealed_recording(session.id).await?;
    }
    Ok(session)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn check_search(search: &Value, replay: Uuid) -> Result<()> {
    let hits = search["hits"].as_array().context("hits")?;
    ensure!(
        hits.len() == 1,
        "exactly one statement has {WORD}: {search:#}"
    );
    let hit = &hits[0];
    ensure!(
        hit["session"] == replay.to_string(),
        "the hit is not in the replayed session: {search:#}"
    );
    ensure!(
        strings(&hit["marks"]) == [WORD],
        "the word should be highlighted: {search:#}"
    );
    let seq = hit["seq"].as_str().context("the hit's seq")?;
    let opened = &search["opened"];
    ensure!(
        opened["url"] == format!("/sessions/{replay}?seq={seq}"),
        "the link should open the replay at the hit: {search:#}"
    );
    ensure!(
        opened["wantedCount"] == 1
            && opened["seq"] == seq
            && strings(&opened["classes"]).contains(&"current")
            && opened["sql"]
                .as_str()
                .is_some_and(|s| s.contains(&format!("SELECT '{WORD}'"))),
        "the hit's statement should be the highlighted, current one: {search:#}"
    );
    let top = opened["unscrolledTop"].as_f64().context("unscrolledTop")?;
    let height = opened["innerHeight"].as_f64().context("innerHeight")?;
    ensure!(
        top > height,
        "the statement is on the first screen anyway, so this run does not prove scrolling: \
         {search:#}"
    );
    ensure!(
        opened["inView"] == true && opened["scrolled"].as_f64().is_some_and(|s| s > 0.0),
        "the hit's statement should be scrolled into view: {search:#}"
    );
    Ok(())
}

fn check_player(player: &Value) -> Result<()> {
    let offsets: Vec<f64> = player["offsetsMs"]
        .as_array()
        .context("offsetsMs")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let total = offsets.len();
    ensure!(
        total == 7,
        "the session has 7 statements, the recording shows {total}: {player:#}"
    );
    let loaded = &player["loaded"];
    ensure!(
        loaded["statements"] == total && loaded["loadState"] == format!("{total} statements"),
        "the player should open with all statements shown: {player:#}"
    );

    let table = &player["resultTable"];
    ensure!(
        strings(&table["header"]) == ["id", "name"],
        "the result's columns: {table:#}"
    );
    let rows = table["rows"].as_array().context("rows")?;
    ensure!(
        rows.len() == ROW_CAP && rows[0] == json!(["1", "bird 1"]),
        "the first {ROW_CAP} rows should be shown: {table:#}"
    );
    ensure!(
        table["rowCount"] == format!("({BIRDS} rows)"),
        "psql's row count: {table:#}"
    );
    let omitted = BIRDS - ROW_CAP;
    ensure!(
        strings(&table["omitted"]) == [format!("{omitted} more rows not recorded (recording cap)")],
        "the rows cut by the cap should be counted: {table:#}"
    );
    let extended = &player["extended"];
    ensure!(
        extended["params"] == json!([["$1", "integer", "4", ""]])
            && extended["inlined"] == "SELECT name FROM birds WHERE id = 4"
            && strings(&extended["rows"]) == ["bird 4"],
        "the extended statement should show its parameter, written in and listed: {extended:#}"
    );

    let play = &player["play16"];
    ensure!(
        play["labelWhilePlaying"] == "⏸ Pause",
        "the button should offer Pause while playing: {play:#}"
    );
    let counts: Vec<u64> = play["counts"]
        .as_array()
        .context("counts")?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let one_by_one: Vec<u64> = (0..=total as u64).collect();
    ensure!(
        counts == one_by_one,
        "playing should start over and reveal the statements one by one: {play:#}"
    );
    let revealed: Vec<f64> = play["revealedAtMs"]
        .as_array()
        .context("revealedAtMs")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    ensure!(revealed.len() == total, "{play:#}");
    for (k, (at, offset)) in revealed.iter().zip(&offsets).enumerate() {
        // setTimeout never fires early; each wait may lose under a millisecond to rounding.
        ensure!(
            *at >= offset / 16.0 - 10.0,
            "statement {k} came at {at} ms, before its time at 16x ({} ms): {player:#}",
            offset / 16.0
        );
    }
    eprintln!("at 16x, statements came at {revealed:?} ms; recorded at {offsets:?} ms");
    let last = offsets[total - 1];
    ensure!(
        revealed[total - 1] < last / 2.0,
        "the last statement came at {} ms: not 16x faster than the recording ({last} ms): \
         {play:#}",
        revealed[total - 1]
    );
    ensure!(
        play["statementsAtEnd"] == total
            && play["statementsASecondLater"] == total
            && play["labelAfter"] == "▶ Play"
            && play["position"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("statement {total} of {total} "))),
        "playing should stop at the end: {play:#}"
    );

    let pause = &player["pause"];
    let at_pause = pause["atPause"].as_u64().context("atPause")?;
    ensure!(
        (3..total as u64).contains(&at_pause)
            && pause["aMomentLater"] == at_pause
            && pause["labelAfterPause"] == "▶ Play",
        "Pause should stop the playback where it is: {pause:#}"
    );
    let seek = &player["seek"];
    let after_seek = seek["statements"].as_u64().context("seek statements")?;
    ensure!(
        after_seek < at_pause
            && after_seek <= 2
            && seek["position"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("statement {after_seek} of {total} ")))
            && seek["position"] != pause["positionAtPause"],
        "a click near the timeline's start should show only the first statements: {seek:#} \
         (paused at {pause:#})"
    );

    let error = &player["nextError"];
    ensure!(
        error["count"] == 1
            && strings(&error["classes"]).contains(&"has-error")
            && error["sql"]
                .as_str()
                .is_some_and(|s| s.ends_with(ERROR_SQL)),
        "Next error should make the failed statement current: {error:#}"
    );
    ensure!(
        strings(&error["errorMain"]) == ["ERROR:  42703: column \"nme\" does not exist"],
        "the error should show its SQLSTATE: {error:#}"
    );
    // psql: the line, then a caret under the position (character 8, "nme").
    let caret = format!("LINE 1: {ERROR_SQL}\n{}^", " ".repeat("LINE 1: ".len() + 7));
    ensure!(
        strings(&error["errorLine"]) == [caret.as_str()],
        "the error should show psql's LINE 1 and caret: {error:#}"
    );
    ensure!(
        error["inView"] == true,
        "the error should be scrolled into view: {error:#}"
    );
    let risky = &player["nextRisky"];
    ensure!(
        risky["count"] == 1
            && strings(&risky["classes"]).contains(&"risky")
            && risky["sql"]
                .as_str()
                .is_some_and(|s| s.ends_with(RISKY_SQL))
            && !strings(&risky["badges"]).is_empty()
            && risky["inView"] == true,
        "Next risky should make the DELETE current, with its risk named: {risky:#}"
    );

    let noise = &player["noise"];
    let shown = strings(&noise["shown"]);
    ensure!(
        strings(&noise["hidden"]).is_empty() && strings(&noise["hiddenAgain"]).is_empty(),
        "protocol lines should be hidden unless asked for: {noise:#}"
    );
    ensure!(
        noise["inDocument"].as_u64() == Some(shown.len() as u64)
            && shown
                .iter()
                .any(|l| l.starts_with("-- Parse")
                    && l.contains("SELECT name FROM birds WHERE id = $1"))
            && shown.iter().any(|l| l.starts_with("-- Bind"))
            && shown.contains(&"-- Sync"),
        "the toggle should show the extended statement's Parse, Bind and Sync: {noise:#}"
    );
    Ok(())
}

/// None ran, none became an element, every one reads as text.
fn check_clean(page: &Value, what: &str) -> Result<()> {
    ensure!(
        page["pwned"].is_null(),
        "a payload ran on the {what}: {page:#}"
    );
    ensure!(
        page["withHandlers"] == json!([]) && page["injectedElements"] == json!([]),
        "a payload became an element on the {what}: {page:#}"
    );
    ensure!(
        page["missingText"] == json!([]),
        "payloads should read as text on the {what}: {page:#}"
    );
    ensure!(
        page["violations"] == json!([]),
        "CSP violations on the {what}: {page:#}"
    );
    Ok(())
}

fn check_xss(xss: &Value) -> Result<()> {
    let session = &xss["sessionPage"];
    check_clean(session, "session page")?;
    ensure!(
        session["loadState"] == "7 statements",
        "the XSS session should show its 7 statements: {session:#}"
    );
    ensure!(
        strings(&session["scripts"]) == ["/static/app.js", "/static/replay.js"],
        "only the console's own scripts: {session:#}"
    );
    // Each payload where it was recorded, as text.
    let has = |key: &str, text: &str| strings(&session[key]).iter().any(|s| s.contains(text));
    for (key, payload) in [
        ("columns", P_COLUMN),
        ("cells", P_SQL),
        ("cells", P_ROW),
        ("cells", P_PARAM),
        ("params", P_PARAM),
        ("inlined", P_PARAM),
        ("errors", P_ERROR),
        ("errorExtras", P_HINT),
        ("notices", P_NOTICE),
        ("events", P_NOTIFY),
        ("events", P_APP),
    ] {
        ensure!(
            has(key, payload),
            "{payload} should show in {key}: {session:#}"
        );
    }
    ensure!(
        session["application"] == P_APP,
        "the application name as text: {session:#}"
    );
    let search = &xss["searchPage"];
    check_clean(search, "search page")?;
    ensure!(
        strings(&search["marks"]).contains(&XSS_WORD)
            && strings(&search["snippets"])
                .iter()
                .any(|s| s.contains(P_SQL)),
        "the hit's snippet should show the payload as text: {search:#}"
    );
    let list = &xss["listPage"];
    check_clean(list, "session list")?;
    ensure!(
        strings(&list["listedApplications"]).contains(&P_APP),
        "the session list should show the application name as text: {list:#}"
    );
    Ok(())
}

/// carol watches a session while it runs and until it ends.
/// Statements of the long session: more entries than the player puts on the page at once
/// (1,500), with one error near the end.
const LONG: usize = 2_000;

fn long_session(
    lab: &ConsoleLab,
    script: &mut BrowserScript,
    rt: &Runtime,
    token: &str,
    known: &mut Vec<Uuid>,
) -> Result<()> {
    rt.block_on(async {
        let client = lab.lab.client("shop", token).await?;
        for i in 0..LONG {
            if i == LONG - 50 {
                ensure!(
                    client
                        .simple_query("SELECT * FROM long_missing")
                        .await
                        .is_err()
                );
            } else {
                client.simple_query(&format!("SELECT {i} AS n")).await?;
            }
        }
        anyhow::Ok(())
    })?;
    let session = rt.block_on(next_session(lab, known, true))?;
    script.say(&json!({ "long": session.id }).to_string())?;
    let long = script.step("long")?;
    let on_page = |facts: &Value| facts["onPage"].as_u64().unwrap_or(u64::MAX);
    let opened = &long["opened"];
    ensure!(
        opened["loadState"] == format!("{LONG} statements")
            && on_page(opened) <= 1_500
            && opened["bars"][0]
                .as_str()
                .is_some_and(|b| b.contains("earlier entries are off the page")),
        "a long session opens at its end with a bounded page and a bar for the rest: {opened:#}"
    );
    let at_start = &long["atStart"];
    ensure!(
        at_start["firstSeq"] == 0 && on_page(at_start) <= 3,
        "seeking to the start shows the start only: {at_start:#}"
    );
    let at_error = &long["atError"];
    ensure!(
        at_error["current"]["sql"]
            .as_str()
            .is_some_and(|sql| sql.contains("long_missing"))
            && at_error["current"]["count"] == 1
            && on_page(at_error) <= 1_500
            && at_error["current"]["inView"] == true,
        "Next error reaches the error near the end within a bounded page: {at_error:#}"
    );
    let earlier = &long["earlier"];
    ensure!(
        earlier["firstSeq"].as_i64() < at_error["firstSeq"].as_i64() && on_page(earlier) <= 1_500,
        "the bar brings earlier entries back: {earlier:#}"
    );
    Ok(())
}

fn live_view(
    lab: &ConsoleLab,
    script: &mut BrowserScript,
    rt: &Runtime,
    token: &str,
    known: &mut Vec<Uuid>,
) -> Result<()> {
    let client = rt.block_on(lab.lab.client("shop", token))?;
    rt.block_on(client.simple_query("SELECT 'live one' AS a"))?;
    let session = rt.block_on(next_session(lab, known, false))?;
    script.say(&json!({ "live": session.id }).to_string())?;
    let open = script.step("live-open")?;
    ensure!(
        open["badge"] == "live"
            && strings(&open["statements"]).contains(&"shop=> SELECT 'live one' AS a")
            && open["loadState"]
                .as_str()
                .is_some_and(|s| s.starts_with("Live:")),
        "the live session's page should show it live with its statement: {open:#}"
    );
    ensure!(
        open["terminateForm"] == 0,
        "carol (auditor) must not be offered to end sessions: {open:#}"
    );

    rt.block_on(async {
        client.simple_query("SELECT 'live two' AS b").await?;
        client.simple_query("SELECT 'live three' AS c").await
    })?;
    script.say("live-more")?;
    let more = script.step("live-more")?;
    let statements = strings(&more["statements"]);
    ensure!(
        more["sameDocument"] == true
            && statements.contains(&"shop=> SELECT 'live two' AS b")
            && statements.contains(&"shop=> SELECT 'live three' AS c"),
        "new statements should appear without a reload: {more:#}"
    );
    let waited = more["appearedAfterMs"]
        .as_u64()
        .context("appearedAfterMs")?;
    eprintln!("live statements appeared in the page {waited} ms after they ran");
    ensure!(
        waited < 5_000,
        "new statements took {waited} ms to appear: {more:#}"
    );

    drop(client);
    script.say("live-close")?;
    let closed = script.step("live-close")?;
    ensure!(
        closed["badge"] == "ended"
            && closed["sameDocument"] == true
            && strings(&closed["events"])
                .last()
                .is_some_and(|e| e.starts_with("-- session ended: client quit")),
        "the page should say the session ended when the client left: {closed:#}"
    );
    Ok(())
}

/// dave ends a live session from its page; the client gets the FATAL with his reason.
fn terminate(
    lab: &ConsoleLab,
    script: &mut BrowserScript,
    rt: &Runtime,
    token: &str,
    known: &mut Vec<Uuid>,
) -> Result<()> {
    let client = rt.block_on(lab.lab.client("shop", token))?;
    rt.block_on(client.simple_query("SELECT 'before the end'"))?;
    let session = rt.block_on(next_session(lab, known, false))?;
    // A statement is running when the request comes: its answer is the FATAL.
    let running = rt.spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    script.say(&json!({ "terminate": session.id, "reason": TERMINATE_REASON }).to_string())?;
    let asked = script.step("terminate-asked")?;
    ensure!(
        asked["signedIn"]["navLogin"] == "dave",
        "dave is not signed in: {asked:#}"
    );
    ensure!(
        asked["alert"]
            .as_str()
            .is_some_and(|a| a.contains("dave asked to end it") && a.contains(TERMINATE_REASON))
            && asked["formAfter"] == 0,
        "the page should say the session is being ended, by whom and why: {asked:#}"
    );

    let answer = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), running).await })
        .context("the gateway did not end the session within 15 s of dave's request")??;
    let err = match answer {
        Ok(rows) => bail!("the running statement finished normally: {rows:?}"),
        Err(err) => err,
    };
    let db = err
        .as_db_error()
        .with_context(|| format!("the client got no server error but {err:?}"))?;
    ensure!(
        db.code() == &SqlState::ADMIN_SHUTDOWN && db.severity() == "FATAL",
        "the client should get FATAL 57P01: {db:?}"
    );
    let message = format!("terminating connection: ended by dave: {TERMINATE_REASON}");
    ensure!(
        db.message() == message,
        "the client should read who and why: {db:?}"
    );

    script.say("terminated")?;
    let ended = script.step("terminated")?;
    ensure!(
        ended["badge"] == "ended"
            && ended["sameDocument"] == true
            && strings(&ended["events"])
                .last()
                .is_some_and(|e| e.contains("terminated") && e.contains(TERMINATE_REASON)),
        "dave's page should follow the session to its end: {ended:#}"
    );
    let reloaded = &ended["reloaded"];
    ensure!(
        strings(&reloaded["end"])
            .iter()
            .any(|e| e.contains("terminated") && e.contains(TERMINATE_REASON))
            && reloaded["terminateForm"] == 0,
        "the ended session's page should say why it ended and offer no form: {ended:#}"
    );
    Ok(())
}

fn check_pages(checks: &Value) -> Result<()> {
    ensure!(
        checks["consoleErrors"] == json!([]),
        "console pages logged errors: {:#}",
        checks["consoleErrors"]
    );
    ensure!(
        checks["violations"] == json!([]),
        "CSP violations: {:#}",
        checks["violations"]
    );
    let documents = checks["documents"].as_array().context("documents")?;
    ensure!(
        documents.len() >= 10,
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
    Ok(())
}
