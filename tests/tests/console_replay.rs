//! The session page and its replay data: a real session through the gateway (simple and
//! extended queries, a transaction that fails, a notice, COPY) read back as the player gets
//! it; who may see it; paging through a long session without losing or repeating a
//! statement; and the live view following a session as it runs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use harness::ConsoleLab;
use harness::pg;
use harness::web_client::{WebClient, decode_entities};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// The replay data of a session, all pages, as (entries, pages read).
async fn replay_all(client: &WebClient, id: Uuid) -> Result<(Vec<Value>, usize)> {
    let mut entries = Vec::new();
    let mut query = "seq=0&status=I".to_string();
    let mut pages = 0;
    loop {
        let page = client
            .get(&format!("/sessions/{id}/replay?{query}"))
            .await?;
        page.expect(StatusCode::OK, "a replay page")?;
        let json: Value = serde_json::from_str(&page.body)?;
        pages += 1;
        entries.extend(
            json["entries"]
                .as_array()
                .context("entries")?
                .iter()
                .cloned(),
        );
        match json["next"].as_object() {
            Some(next) if !json["live"].as_bool().unwrap_or(false) => {
                query = format!(
                    "seq={}&status={}",
                    next["seq"],
                    next["status"].as_str().unwrap_or("I")
                );
            }
            _ => return Ok((entries, pages)),
        }
        ensure!(pages < 1000, "paging does not end");
    }
}

fn statements(entries: &[Value]) -> Vec<&Value> {
    entries
        .iter()
        .filter(|e| e["kind"] == "statement")
        .collect()
}

fn statement<'a>(entries: &'a [Value], sql_start: &str) -> Result<&'a Value> {
    statements(entries)
        .into_iter()
        .find(|e| e["sql"].as_str().is_some_and(|s| s.starts_with(sql_start)))
        .with_context(|| format!("no statement {sql_start:?} in {entries:#?}"))
}

/// The session the lab's store has, ended and sealed.
async fn only_session(lab: &ConsoleLab) -> Result<Uuid> {
    let sessions = lab.lab.ended_sessions(1).await?;
    let id = sessions.first().context("no session recorded")?.id;
    lab.lab.sealed_recording(id).await?;
    Ok(id)
}

#[tokio::test]
async fn replay_shows_what_the_client_saw_and_only_to_its_viewers() -> Result<()> {
    replay_shows_what_the_client_saw(ConsoleLab::start(&[])?).await
}

#[tokio::test]
async fn replay_shows_what_the_client_saw_and_only_to_its_viewers_on_a_postgres_store() -> Result<()>
{
    replay_shows_what_the_client_saw(ConsoleLab::start_with_pg_store(&[])?).await
}

async fn replay_shows_what_the_client_saw(lab: ConsoleLab) -> Result<()> {
    lab.lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.lab.issue("shop", pg::SCRAM_USER, &[])?;
    {
        let client = lab.lab.client("shop", &issued.token).await?;
        client
            .simple_query("CREATE TEMP TABLE t (id int, note text)")
            .await?;
        client
            .simple_query("INSERT INTO t VALUES (1, 'a'), (2, NULL)")
            .await?;
        client.simple_query("BEGIN").await?;
        let rows = client
            .query(
                "SELECT id, note FROM t WHERE id >= $1 ORDER BY id",
                &[&1i32],
            )
            .await?;
        ensure!(rows.len() == 2);
        ensure!(
            client
                .simple_query("SELECT * FROM missing_table")
                .await
                .is_err()
        );
        client.simple_query("ROLLBACK").await?;
        client
            .simple_query("DO $$ BEGIN RAISE NOTICE 'hello notice'; END $$")
            .await?;
        let copy = client.copy_out("COPY (SELECT 7, 'x') TO STDOUT").await?;
        drop(copy);
    }
    let id = only_session(&lab).await?;

    let carol = WebClient::oidc(&lab, "carol").await?;
    let page = carol.get(&format!("/sessions/{id}")).await?;
    page.expect(StatusCode::OK, "the session page")?;
    ensure!(page.body.contains("/static/replay.js"), "{}", page.body);
    ensure!(page.body.contains(&format!("data-session=\"{id}\"")));

    let (entries, _) = replay_all(&carol, id).await?;
    let select = statement(&entries, "SELECT id, note FROM t")?;
    ensure!(select["prompt"] == "*", "in a transaction: {select:#}");
    ensure!(select["params"][0]["value"] == "1", "{select:#}");
    ensure!(select["params"][0]["type_name"] == "integer", "{select:#}");
    ensure!(
        select["inlined"]
            .as_str()
            .unwrap_or("")
            .contains("id >= 1 ORDER"),
        "{select:#}"
    );
    let result = &select["results"][0];
    let names: Vec<&str> = result["columns"]
        .as_array()
        .context("columns")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    ensure!(names == ["id", "note"], "{result:#}");
    ensure!(
        result["rows"] == serde_json::json!([["1", "a"], ["2", null]]),
        "{result:#}"
    );

    let failed = statement(&entries, "SELECT * FROM missing_table")?;
    ensure!(failed["error"]["code"] == "42P01", "{failed:#}");
    ensure!(failed["error"]["position"] == 15, "{failed:#}");
    let rollback = statement(&entries, "ROLLBACK")?;
    // tokio-postgres sends ROLLBACK before the failed query's ReadyForQuery arrives: the
    // prompt is the status the statement ran in, not the one the client had seen.
    ensure!(
        rollback["prompt"] == "!",
        "in a failed transaction: {rollback:#}"
    );
    let notice = statement(&entries, "DO $$")?;
    ensure!(
        notice["notices"][0]["message"] == "hello notice",
        "{notice:#}"
    );
    let copy = statement(&entries, "COPY (SELECT 7")?;
    let copied = &copy["results"][0]["copy"];
    ensure!(
        copied["direction"] == "out" && copied["rows"] == 1,
        "{copy:#}"
    );
    ensure!(copied["data"][0] == "7\tx\n", "{copy:#}");
    let kinds: Vec<&str> = entries.iter().filter_map(|e| e["what"].as_str()).collect();
    ensure!(
        kinds.first() == Some(&"session_start") && kinds.contains(&"session_end"),
        "{kinds:?}"
    );
    // Entries come in recording order.
    let seqs: Vec<i64> = entries.iter().filter_map(|e| e["seq"].as_i64()).collect();
    ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // alice sees her own session; bob (a user too) does not know it exists; mallory has no
    // role at all.
    let alice = WebClient::oidc(&lab, "alice").await?;
    alice
        .get(&format!("/sessions/{id}/replay"))
        .await?
        .expect(StatusCode::OK, "alice's own replay")?;
    let bob = WebClient::oidc(&lab, "bob").await?;
    for path in [
        format!("/sessions/{id}"),
        format!("/sessions/{id}/replay"),
        format!("/sessions/{id}/live"),
    ] {
        bob.get(&path).await?.expect(StatusCode::NOT_FOUND, &path)?;
    }
    let anonymous = WebClient::for_lab(&lab)?;
    let answer = anonymous.get(&format!("/sessions/{id}/replay")).await?;
    ensure!(
        answer.status != StatusCode::OK,
        "signed-out replay: {}",
        answer.status
    );

    // Hostile positions and ids get a clear refusal.
    for (path, status) in [
        (
            format!("/sessions/{id}/replay?seq=-1"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/sessions/{id}/replay?status=X"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/sessions/{id}/replay?seq=abc"),
            StatusCode::BAD_REQUEST,
        ),
        ("/sessions/not-a-uuid".to_string(), StatusCode::NOT_FOUND),
        (
            format!("/sessions/{}/replay", Uuid::new_v4()),
            StatusCode::NOT_FOUND,
        ),
    ] {
        carol.get(&path).await?.expect(status, &path)?;
    }
    // Past the end: an empty last page.
    let past = carol
        .get(&format!("/sessions/{id}/replay?seq=100000"))
        .await?;
    past.expect(StatusCode::OK, "a page past the end")?;
    let past: Value = serde_json::from_str(&past.body)?;
    ensure!(
        past["entries"].as_array().is_some_and(Vec::is_empty),
        "{past:#}"
    );
    ensure!(past["next"].is_null(), "{past:#}");
    Ok(())
}

#[tokio::test]
async fn long_sessions_come_in_pages_without_losing_or_repeating_a_statement() -> Result<()> {
    long_sessions_come_in_pages(ConsoleLab::start(&[])?).await
}

#[tokio::test]
async fn long_sessions_come_in_pages_on_a_postgres_store() -> Result<()> {
    long_sessions_come_in_pages(ConsoleLab::start_with_pg_store(&[])?).await
}

async fn long_sessions_come_in_pages(lab: ConsoleLab) -> Result<()> {
    const N: usize = 1_100;
    lab.lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.lab.issue("shop", pg::SCRAM_USER, &[])?;
    {
        let client = lab.lab.client("shop", &issued.token).await?;
        let statement = client.prepare("SELECT $1::int + 1").await?;
        for i in 0..N {
            if i % 2 == 0 {
                client.simple_query(&format!("SELECT {i} AS n")).await?;
            } else {
                client.query(&statement, &[&(i as i32)]).await?;
            }
        }
    }
    let id = only_session(&lab).await?;
    let carol = WebClient::oidc(&lab, "carol").await?;
    let (entries, pages) = replay_all(&carol, id).await?;
    let found = statements(&entries);
    let ours: Vec<&&Value> = found
        .iter()
        .filter(|s| {
            let sql = s["sql"].as_str().unwrap_or("");
            sql.starts_with("SELECT $1::int") || sql.ends_with(" AS n")
        })
        .collect();
    ensure!(ours.len() == N, "{} of {N} statements", ours.len());
    ensure!(pages >= N / 200, "{pages} pages for {N} statements");
    let seqs: Vec<i64> = entries.iter().filter_map(|e| e["seq"].as_i64()).collect();
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "entries repeat or go back across pages"
    );
    // Each prepared execution has its own parameter, across page boundaries.
    for (k, s) in ours.iter().enumerate() {
        if k % 2 == 1 {
            let want = k.to_string();
            ensure!(
                s["params"][0]["value"] == want.as_str(),
                "statement {k}: {s:#}"
            );
            let expected = (k + 1).to_string();
            ensure!(
                s["results"][0]["rows"][0][0] == expected.as_str(),
                "statement {k}: {s:#}"
            );
        }
    }
    Ok(())
}

/// Reads server-sent events until `done` says so or 20 s pass; returns the text read.
async fn read_events(
    response: &mut reqwest::Response,
    mut done: impl FnMut(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    while !done(&text) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the live view did not deliver in time; got:\n{text}");
        }
        match tokio::time::timeout(left, response.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => bail!("the live view did not deliver in time; got:\n{text}"),
        }
    }
    Ok(text)
}

#[tokio::test]
async fn the_live_view_follows_a_running_session_until_it_ends() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    lab.lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.lab.issue("shop", pg::SCRAM_USER, &[])?;
    let client = lab.lab.client("shop", &issued.token).await?;
    client.simple_query("SELECT 'first live' AS a").await?;
    let store = lab.lab.store().await?;
    let id = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = store.list_sessions(5).await?.first() {
                break s.id;
            }
            ensure!(Instant::now() < deadline, "the session never showed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let carol = WebClient::oidc(&lab, "carol").await?;
    let page = carol.get(&format!("/sessions/{id}")).await?;
    ensure!(page.body.contains("data-live=\"true\""), "{}", page.body);

    let mut live = carol
        .get_streaming(&format!("/sessions/{id}/live?seq=0&status=I"))
        .await?;
    ensure!(
        live.status() == StatusCode::OK,
        "live view: {}",
        live.status()
    );
    ensure!(
        live.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")),
        "{:?}",
        live.headers()
    );
    let seen = read_events(&mut live, |t| t.contains("first live")).await?;
    ensure!(seen.contains("event: entries"), "{seen}");
    client.simple_query("SELECT 'second live' AS b").await?;
    let seen = read_events(&mut live, |t| t.contains("second live")).await?;
    ensure!(seen.contains("id: "), "messages carry the cursor: {seen}");
    drop(client);
    let seen = read_events(&mut live, |t| t.contains("event: end")).await?;
    ensure!(seen.contains("session ended"), "{seen}");
    Ok(())
}

#[tokio::test]
async fn admins_end_live_sessions_with_a_reason_and_the_page_tells_the_story() -> Result<()> {
    let lab = ConsoleLab::start(&[])?;
    lab.lab.grant("shop", pg::SCRAM_USER)?;
    let issued = lab.lab.issue("shop", pg::SCRAM_USER, &[])?;
    let credential_id: Uuid = issued.credential_id.parse()?;
    // The credential as if it came from an approved console request, so the page shows it.
    let store = lab.lab.store().await?;
    let shop = store.target_by_name("shop").await?.context("target shop")?;
    let request_id = Uuid::new_v4();
    store
        .insert_access_request(&gateway::store::AccessRequest {
            id: request_id,
            person_login: "alice".into(),
            target_id: shop.id,
            target_name: "shop".into(),
            db_role: pg::SCRAM_USER.into(),
            reason: "INC-42 fix the stuck order".into(),
            lifetime_secs: 3600,
            status: gateway::store::RequestStatus::Pending,
            requested_at: chrono::Utc::now(),
            decided_by: None,
            decided_at: None,
            decision_comment: None,
            credential_id: None,
        })
        .await?;
    ensure!(
        store
            .decide_access_request(
                request_id,
                gateway::store::Decision::Approve,
                "bob",
                Some("ok for one hour"),
                chrono::Utc::now(),
            )
            .await?
    );
    ensure!(
        store
            .mark_request_issued(
                request_id,
                gateway::store::RequestStatus::Approved,
                credential_id
            )
            .await?
    );

    let client = lab.lab.client("shop", &issued.token).await?;
    client.simple_query("SELECT 1").await?;
    let id = store
        .list_sessions(5)
        .await?
        .first()
        .context("the session is stored")?
        .id;

    // An auditor sees the story but, by default, no way to end it.
    let carol = WebClient::oidc(&lab, "carol").await?;
    let page = carol.get(&format!("/sessions/{id}")).await?;
    page.expect(StatusCode::OK, "the live session's page")?;
    for needle in [
        "INC-42 fix the stuck order",
        "approved by bob",
        "ok for one hour",
    ] {
        ensure!(
            page.body.contains(needle),
            "{needle:?} missing:\n{}",
            page.body
        );
    }
    ensure!(!page.body.contains("terminate-form"), "{}", page.body);
    let csrf = carol.csrf().await?;
    carol
        .post_form(
            &format!("/sessions/{id}/terminate"),
            &[("csrf", &csrf), ("reason", "curious")],
        )
        .await?
        .expect(StatusCode::FORBIDDEN, "an auditor ending a session")?;

    // An admin ends it; a blank reason or a forged form is refused first.
    let dave = WebClient::oidc(&lab, "dave").await?;
    let page = dave.get(&format!("/sessions/{id}")).await?;
    ensure!(page.body.contains("terminate-form"), "{}", page.body);
    let csrf = dave.csrf().await?;
    let path = format!("/sessions/{id}/terminate");
    dave.post_form(&path, &[("csrf", &csrf), ("reason", "   ")])
        .await?
        .expect(StatusCode::BAD_REQUEST, "a blank reason")?;
    let forged = dave
        .post_form(&path, &[("csrf", "forged"), ("reason", "x")])
        .await?;
    ensure!(
        forged.status == StatusCode::FORBIDDEN,
        "forged: {}",
        forged.status
    );
    // A statement is running when the admin acts: its answer is the FATAL.
    let running = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    dave.post_form(
        &path,
        &[
            ("csrf", &csrf),
            ("reason", "INC-43 <b>unapproved</b> change"),
        ],
    )
    .await?
    .expect_redirect_path(&format!("/sessions/{id}"), "ending the session")?;

    // The client is told why, with admin_shutdown's SQLSTATE, within a few seconds.
    let answer = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .context("the session was not ended within 10 s")??;
    let error = match answer {
        Ok(rows) => bail!("the statement finished normally: {rows:?}"),
        Err(error) => error,
    };
    let db = error.as_db_error().with_context(|| format!("{error:?}"))?;
    ensure!(db.code().code() == "57P01", "{db:?}");
    ensure!(
        db.message().contains("INC-43 <b>unapproved</b> change") && db.message().contains("dave"),
        "{db:?}"
    );
    let ended = lab.lab.ended_sessions(1).await?;
    let session = ended.iter().find(|s| s.id == id).context("session")?;
    ensure!(
        session.end_reason == Some(gateway::store::EndReason::Terminated),
        "{session:?}"
    );
    // The replay ends with it, the audit log has it, the page says so.
    let (entries, _) = replay_all(&dave, id).await?;
    let cut_short = statement(&entries, "SELECT pg_sleep(30)")?;
    ensure!(
        cut_short["interrupted"] == true && cut_short["duration_us"].as_u64() > Some(100_000),
        "the statement the termination cut short: {cut_short:#}"
    );
    let end = entries.last().context("entries")?;
    ensure!(
        end["what"] == "session_end" && end["text"].as_str().unwrap_or("").contains("INC-43"),
        "{end:#}"
    );
    let audit = dave.get("/audit").await?;
    ensure!(audit.body.contains("session.terminate"), "{}", audit.body);
    let page = dave.get(&format!("/sessions/{id}")).await?;
    ensure!(
        !page.body.contains("terminate-form"),
        "ended: {}",
        page.body
    );
    ensure!(
        !page.body.contains("<b>unapproved"),
        "unescaped: {}",
        page.body
    );
    ensure!(
        decode_entities(&page.body).contains("INC-43 <b>unapproved</b> change"),
        "{}",
        page.body
    );
    // Too late now.
    dave.post_form(&path, &[("csrf", &csrf), ("reason", "again")])
        .await?
        .expect(StatusCode::CONFLICT, "ending an ended session")?;
    Ok(())
}
