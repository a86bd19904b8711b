//! Recording end to end: sessions through the real gateway are recorded in order, chained,
//! sealed and verifiable; store outages follow the target's policy (strict refuses, buffered
//! catches up) and nothing is lost at shutdown.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway::store::{EndReason, StoredEvent};
use harness::Lab;
use harness::pg::{self, PgCluster};
use serde_json::Value;
use uuid::Uuid;

fn bodies(events: &[StoredEvent]) -> anyhow::Result<Vec<Value>> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.body).context("event body is JSON"))
        .collect()
}

/// The SQL of every `query` event, in order.
fn queries(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "query")
        .map(|e| e["sql"]["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// The only session in the store, once it has ended.
async fn only_session(lab: &Lab) -> anyhow::Result<Uuid> {
    let sessions = lab.ended_sessions(1).await?;
    ensure!(sessions.len() == 1, "sessions: {sessions:?}");
    Ok(sessions[0].id)
}

fn verify_ok(lab: &Lab, session: Uuid) -> anyhow::Result<String> {
    lab.bastion.cli_ok(&["verify", &session.to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psql_session_is_recorded_in_order_bound_to_the_person_and_sealed() -> anyhow::Result<()>
{
    let lab = Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let script = "select id, name from items order by id limit 3;\n\
                  begin;\n\
                  create temp table scratch (x int);\n\
                  insert into scratch values (1), (2);\n\
                  commit;\n\
                  select 1/0;\n";
    let refused = lab.psql("shop", &issued.token, script).unwrap_err();
    ensure!(
        refused.to_string().contains("division by zero"),
        "{refused}"
    );

    let id = only_session(&lab).await?;
    let (stored, seal) = lab.sealed_recording(id).await?;
    let events = bodies(&stored)?;
    ensure!(seal.event_count as usize == stored.len());
    for (i, e) in stored.iter().enumerate() {
        ensure!(e.seq == i as i64, "seq without gaps");
    }

    let start = &events[0];
    assert_eq!(start["type"], "session_start");
    assert_eq!(start["person"], "alice");
    assert_eq!(start["groups"], serde_json::json!(["dev"]));
    assert_eq!(start["target"], "shop");
    assert_eq!(start["db_role"], pg::SCRAM_USER);
    assert_eq!(start["credential_id"], issued.credential_id.as_str());
    assert_eq!(start["session_id"], id.to_string());
    let end = events.last().context("events")?;
    assert_eq!(end["type"], "session_end");
    assert_eq!(end["reason"], "client_quit");
    ensure!(end["bytes_client_to_server"].as_u64() > Some(0));

    assert_eq!(
        queries(&events),
        [
            "select id, name from items order by id limit 3;",
            "begin;",
            "create temp table scratch (x int);",
            "insert into scratch values (1), (2);",
            "commit;",
            "select 1/0;",
        ]
    );
    let rows = of_type(&events, "rows");
    assert_eq!(rows[0]["rows"][0][1]["text"], "item 1");
    assert_eq!(rows[0]["rows"].as_array().map(Vec::len), Some(3));
    let tags: Vec<&str> = of_type(&events, "command_complete")
        .iter()
        .filter_map(|e| e["tag"].as_str())
        .collect();
    assert_eq!(
        tags,
        ["SELECT 3", "BEGIN", "CREATE TABLE", "INSERT 0 2", "COMMIT"]
    );
    let statuses: Vec<&str> = of_type(&events, "ready_for_query")
        .iter()
        .filter_map(|e| e["status"].as_str())
        .collect();
    // The ReadyForQuery of the login is the gateway's welcome, before the recording starts.
    assert_eq!(statuses, ["I", "T", "T", "T", "I", "I"]);
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["code"], "22012");
    let classes: Vec<&str> = of_type(&events, "query")
        .iter()
        .filter_map(|e| e["class"].as_str())
        .collect();
    assert_eq!(
        classes,
        ["read", "transaction", "ddl", "write", "transaction", "read"]
    );

    let out = verify_ok(&lab, id)?;
    ensure!(out.contains("chain intact, sealed"), "verify said: {out}");
    let session = lab.store().await?.session(id).await?.context("session")?;
    assert_eq!(session.end_reason, Some(EndReason::ClientQuit));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_statement_reused_many_times_is_attributed_with_each_bind() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let client = lab.client("shop", &issued.token).await?;
    let statement = client
        .prepare("select name from items where id = $1 and name <> $2")
        .await?;
    for id in [7i32, 8, 9] {
        let row = client
            .query_one(&statement, &[&id, &"none'); drop table items; --"])
            .await?;
        assert_eq!(row.get::<_, String>(0), format!("item {id}"));
    }
    drop(client);

    let id = only_session(&lab).await?;
    let (stored, _) = lab.sealed_recording(id).await?;
    let events = bodies(&stored)?;
    let parses = of_type(&events, "parse");
    assert_eq!(parses.len(), 1, "prepared once");
    let statement_name = parses[0]["statement"].as_str().context("name")?;
    ensure!(
        !statement_name.is_empty(),
        "tokio-postgres names its statements"
    );
    let executes = of_type(&events, "execute");
    assert_eq!(executes.len(), 3);
    for e in &executes {
        assert_eq!(e["statement"], statement_name);
        assert_eq!(
            e["sql"]["text"],
            "select name from items where id = $1 and name <> $2"
        );
    }
    let binds = of_type(&events, "bind");
    let first_params: Vec<&str> = binds
        .iter()
        .map(|b| b["params"][0]["value"]["text"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(first_params, ["7", "8", "9"], "binary int4 decoded");
    assert_eq!(
        binds[0]["params"][1]["value"]["text"],
        "none'); drop table items; --"
    );
    let tags: Vec<&str> = of_type(&events, "command_complete")
        .iter()
        .filter_map(|e| e["tag"].as_str())
        .collect();
    assert_eq!(tags, ["SELECT 1", "SELECT 1", "SELECT 1"]);
    verify_ok(&lab, id)?;
    Ok(())
}

/// A lab whose store is a PostgreSQL cluster of its own, which tests stop and start, with a
/// table the person may write, to see what really ran.
fn lab_with_pg_store() -> anyhow::Result<(Lab, PgCluster)> {
    let (lab, store) =
        Lab::start_with_pg_store(&[("PGBASTION_RECORDING_COMMIT_TIMEOUT_MILLIS", "1000")])?;
    create_probe_table(&lab)?;
    Ok((lab, store))
}

fn create_probe_table(lab: &Lab) -> anyhow::Result<()> {
    lab.pg.psql(
        pg::APP_DB,
        &format!(
            "create table probe (n int); grant all on probe to {}",
            pg::SCRAM_USER
        ),
    )?;
    Ok(())
}

fn probe_rows(lab: &Lab) -> anyhow::Result<Vec<i32>> {
    let out = lab.pg.psql(pg::APP_DB, "select n from probe order by n")?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().context("probe row"))
        .collect()
}

/// Waits for `what` to hold, up to `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_target_refuses_a_statement_it_cannot_record_and_nothing_runs_unrecorded()
-> anyhow::Result<()> {
    let (lab, mut store) = lab_with_pg_store()?;
    let issued = lab.scram_target("prod", &["--recording", "strict"])?;
    let client = lab.client("prod", &issued.token).await?;
    client.execute("insert into probe values (1)", &[]).await?;

    store.stop()?;
    // Until the gateway notices (its next commit fails, within milliseconds), statements are
    // journaled and run; from then on the strict target refuses them.
    let mut executed = vec![1];
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let n = executed.len() as i32 + 1;
        match client
            .execute(&format!("insert into probe values ({n})"), &[])
            .await
        {
            Ok(_) => executed.push(n),
            Err(e) => break e,
        }
        ensure!(
            Instant::now() < deadline,
            "never refused while the store was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let message = refused
        .as_db_error()
        .map(|e| (e.code().code().to_owned(), e.message().to_owned()));
    let (code, text) = message.with_context(|| format!("a clear error, got {refused:?}"))?;
    assert_eq!(code, "57000");
    ensure!(text.contains("cannot be recorded"), "{text}");
    ensure!(client.is_closed() || client.simple_query("select 1").await.is_err());
    assert_eq!(
        probe_rows(&lab)?,
        executed,
        "the refused insert never reached the server"
    );

    // The store comes back: the recording catches up, including the refused statement and
    // why the session ended, and is sealed.
    store.start_again()?;
    let sessions = lab.ended_sessions(1).await?;
    let id = sessions[0].id;
    let (stored, _) = lab.sealed_recording(id).await?;
    let events = bodies(&stored)?;
    let end = events.last().context("end")?;
    assert_eq!(end["type"], "session_end");
    assert_eq!(end["reason"], "error");
    ensure!(
        end["detail"]
            .as_str()
            .is_some_and(|d| d.contains("recording failed")),
        "{end}"
    );
    let sql: Vec<&str> = of_type(&events, "parse")
        .iter()
        .filter_map(|e| e["sql"]["text"].as_str())
        .collect();
    for n in &executed {
        let insert = format!("insert into probe values ({n})");
        ensure!(
            sql.contains(&insert.as_str()),
            "executed `{insert}` is recorded: {sql:?}"
        );
    }
    let seqs: Vec<(i64, &str)> = stored.iter().map(|e| (e.seq, e.kind.as_str())).collect();
    verify_ok(&lab, id)
        .with_context(|| format!("stored: {seqs:?}\nlog:\n{}", lab.bastion.log()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_target_keeps_going_through_a_store_outage_and_loses_nothing() -> anyhow::Result<()>
{
    let (lab, mut store) = lab_with_pg_store()?;
    let issued = lab.scram_target("etl", &["--recording", "buffered"])?;
    let client = lab.client("etl", &issued.token).await?;
    client.execute("insert into probe values (0)", &[]).await?;
    store.stop()?;
    for n in 1..=50 {
        client
            .execute("insert into probe values ($1)", &[&n])
            .await
            .context("buffered sessions go on while the store is down")?;
    }
    assert_eq!(probe_rows(&lab)?.len(), 51);
    drop(client);
    tokio::time::sleep(Duration::from_millis(500)).await;
    store.start_again()?;

    let store_handle = lab.store().await?;
    eventually(30, "the session's end reaches the store", || {
        let store_handle = store_handle.clone();
        async move {
            let sessions = store_handle.list_sessions(10).await?;
            Ok(sessions.len() == 1 && sessions[0].ended_at.is_some())
        }
    })
    .await?;
    let id = lab.sessions().await?[0].id;
    let (stored, _) = lab.sealed_recording(id).await?;
    let events = bodies(&stored)?;
    let binds = of_type(&events, "bind");
    let values: Vec<&str> = binds
        .iter()
        .filter_map(|b| b["params"][0]["value"]["text"].as_str())
        .collect();
    let expected: Vec<String> = (1..=50).map(|n| n.to_string()).collect();
    if values != expected {
        let seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
        eprintln!("{} events: {seqs:?}", stored.len());
    }
    assert_eq!(
        values, expected,
        "every statement of the outage is recorded, in order"
    );
    verify_ok(&lab, id)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_live_sessions_and_stores_every_event_before_exiting() -> anyhow::Result<()> {
    let mut lab = Lab::start(&[("PGBASTION_GATEWAY_SHUTDOWN_GRACE_SECS", "1")])?;
    let issued = lab.scram_target("shop", &[])?;
    let client = lab.client("shop", &issued.token).await?;
    for n in 0..200 {
        client.query_one("select $1::int", &[&n]).await?;
    }
    lab.gateway.signal(libc::SIGTERM)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = lab.gateway.try_wait()? {
            break status;
        }
        ensure!(
            Instant::now() < deadline,
            "gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(
        status.success(),
        "exit {status}; log:\n{}",
        lab.bastion.log()
    );
    ensure!(client.is_closed() || client.simple_query("select 1").await.is_err());

    // The gateway is gone: whatever it recorded is in the store now, sealed.
    let store = lab.store().await?;
    let sessions = store.list_sessions(10).await?;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].end_reason, Some(EndReason::GatewayShutdown));
    let id = sessions[0].id;
    ensure!(
        store.recording_seal(id).await?.is_some(),
        "sealed before exit"
    );
    let (stored, _) = lab.sealed_recording(id).await?;
    let events = bodies(&stored)?;
    assert_eq!(of_type(&events, "execute").len(), 200);
    verify_ok(&lab, id)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_target_records_the_session_but_no_statements() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let issued = lab.scram_target("bulk", &["--recording", "off"])?;
    lab.psql("bulk", &issued.token, "select 1")?;
    let id = only_session(&lab).await?;
    let store = lab.store().await?;
    assert!(store.session_events(id, 0, 10).await?.is_empty());
    assert!(store.recording_seal(id).await?.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_with_sigkill_loses_no_executed_statement() -> anyhow::Result<()> {
    let mut lab = Lab::start(&[])?;
    create_probe_table(&lab)?;
    let issued = lab.scram_target("prod", &["--recording", "strict"])?;
    let client = lab.client("prod", &issued.token).await?;
    for n in 1..=300 {
        client
            .execute("insert into probe values ($1)", &[&n])
            .await?;
    }
    // No chance to flush anything: the writer may hold the last events only in memory and
    // in the journal.
    lab.gateway.kill()?;
    let executed = probe_rows(&lab)?;
    assert_eq!(executed.len(), 300);

    lab.gateway = lab.bastion.serve()?;
    let store = lab.store().await?;
    let id = store.list_sessions(10).await?[0].id;
    let (stored, _) = lab.sealed_recording(id).await?;
    let events = bodies(&stored)?;
    let values: Vec<i32> = of_type(&events, "bind")
        .iter()
        .filter_map(|b| b["params"][0]["value"]["text"].as_str())
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(
        values, executed,
        "every statement the server ran is recorded, in order"
    );
    let end = events.last().context("end")?;
    assert_eq!(end["type"], "session_end");
    ensure!(
        end["detail"]
            .as_str()
            .is_some_and(|d| d.contains("stopped abruptly")),
        "{end}"
    );
    let session = store.session(id).await?.context("session")?;
    assert_eq!(session.end_reason, Some(EndReason::Error));
    verify_ok(&lab, id)?;
    ensure!(
        lab.bastion
            .log()
            .contains("recovered recordings from the journal"),
        "the recovery is logged"
    );
    Ok(())
}
