//! Proof under faults: what a client sees and what the recording keeps when the target's server
//! dies under a session, when the gateway is stopped or killed during load, and when the disk
//! under the SQLite store fills up. Real processes only; `docs/RELIABILITY.md` sums it up, with
//! the figures these tests print (`-- --nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use gateway::store::{EndReason, Session, StoredEvent};
use harness::clients::tls_config;
use harness::faults::{SmallDisk, terminate_backends, wait_for_running_statement};
use harness::pg::{self, PgCluster};
use harness::{ChildGuard, Lab};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn bodies(events: &[StoredEvent]) -> anyhow::Result<Vec<Value>> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.body).context("event body is JSON"))
        .collect()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn verify_ok(lab: &Lab, session: Uuid) -> anyhow::Result<()> {
    let out = lab.bastion.cli_ok(&["verify", &session.to_string()])?;
    ensure!(out.contains("chain intact, sealed"), "verify said: {out}");
    Ok(())
}

/// The SQLSTATE and message of a server error, or `None` for a connection that just closed.
fn db_error(e: &tokio_postgres::Error) -> Option<(String, String)> {
    e.as_db_error()
        .map(|d| (d.code().code().to_owned(), d.message().to_owned()))
}

/// A client through the gateway whose notices and warnings are kept: a server going down in
/// immediate mode says why only in a WARNING before it closes the connection.
async fn watched_client(lab: &Lab, target: &str, token: &str) -> anyhow::Result<(Client, Watch)> {
    let tls = MakeRustlsConnect::new(tls_config(None, None)?);
    let (client, mut connection) = tokio_postgres::connect(&lab.conn_str(target, token), tls)
        .await
        .context("cannot connect through the gateway")?;
    let (tx, notices) = mpsc::unbounded_channel();
    let connection = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            if let AsyncMessage::Notice(notice) = message? {
                let _ = tx.send(notice);
            }
        }
        Ok(())
    });
    Ok((
        client,
        Watch {
            notices,
            connection,
        },
    ))
}

/// The connection of a [`watched_client`].
struct Watch {
    notices: mpsc::UnboundedReceiver<DbError>,
    connection: JoinHandle<Result<(), tokio_postgres::Error>>,
}

impl Watch {
    /// Waits for the connection to close (up to 15 s) and returns every notice it received,
    /// as (severity, SQLSTATE, message).
    async fn closed(mut self) -> anyhow::Result<Vec<(String, String, String)>> {
        let _ = joined(self.connection, "connection").await?;
        let mut all = Vec::new();
        while let Ok(n) = self.notices.try_recv() {
            all.push((
                n.severity().to_owned(),
                n.code().code().to_owned(),
                n.message().to_owned(),
            ));
        }
        Ok(all)
    }
}

/// How the target's server is made to go away under a running statement.
#[derive(Debug, Clone, Copy)]
enum ServerDeath {
    /// `pg_terminate_backend` from a separate superuser connection: only this backend dies.
    Terminated,
    /// The whole cluster stopped in immediate mode (`pg_ctl -m immediate stop`).
    ImmediateStop,
}

impl ServerDeath {
    fn strike(self, lab: &mut Lab) -> anyhow::Result<()> {
        match self {
            ServerDeath::Terminated => {
                let ended = terminate_backends(&lab.pg, pg::SCRAM_USER)?;
                ensure!(
                    ended == 1,
                    "terminated {ended} backends, expected the session's one"
                );
            }
            ServerDeath::ImmediateStop => lab.pg.stop()?,
        }
        Ok(())
    }

    /// What the client must be told, at the latest when its connection closes: the server's
    /// own words, as a direct connection would show them.
    fn expected_message(self) -> &'static str {
        match self {
            ServerDeath::Terminated => "terminating connection due to administrator command",
            ServerDeath::ImmediateStop => {
                "terminating connection due to immediate shutdown command"
            }
        }
    }
}

/// The one session of the lab, once it has ended, checked to be ended by the server, sealed
/// and verified; returns it with its recording.
async fn ended_by_server(lab: &Lab) -> anyhow::Result<(Session, Vec<Value>)> {
    let sessions = lab.ended_sessions(1).await?;
    ensure!(sessions.len() == 1, "sessions: {sessions:?}");
    let session = sessions[0].clone();
    ensure!(
        session.ended_at.is_some(),
        "the session never ended: {session:?}"
    );
    assert_eq!(
        session.end_reason,
        Some(EndReason::ServerClosed),
        "detail: {:?}",
        session.end_detail
    );
    let (stored, seal) = lab.sealed_recording(session.id).await?;
    assert_eq!(seal.event_count as usize, stored.len());
    let events = bodies(&stored)?;
    let end = events.last().context("no events")?;
    assert_eq!(end["type"], "session_end");
    assert_eq!(end["reason"], "server_closed");
    verify_ok(lab, session.id)?;
    Ok((session, events))
}

/// Waits for a spawned client task, which must end within 15 s once the server is gone.
async fn joined<T>(task: JoinHandle<T>, what: &str) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .with_context(|| format!("{what}: the client hung after the server died"))?
        .context("client task panicked")
}

/// The gateway must pass on what the server said as it went: the recording holds every message
/// the gateway forwarded, so each FATAL in it must be the client's error, and each 57P01
/// warning (a server stopped in immediate mode says why in a WARNING, then closes) must be
/// among the client's notices. A server killed while it was blocked writing to the gateway says
/// nothing at all (PostgreSQL drops the FATAL rather than break the protocol): then the gateway
/// sends its own FATAL 08006 (or just closes, when the client's stream is mid-message).
fn said(e: &Value) -> (Option<&str>, Option<&str>) {
    (e["code"].as_str(), e["message"].as_str())
}

fn assert_client_heard_the_server(
    error: &tokio_postgres::Error,
    notices: &[(String, String, String)],
    events: &[Value],
) -> anyhow::Result<()> {
    let fatal = of_type(events, "error")
        .into_iter()
        .find(|e| e["severity"] == "FATAL");
    match (fatal.map(said), db_error(error)) {
        (Some((Some(code), Some(message))), Some(got)) => {
            assert_eq!((code, message), (got.0.as_str(), got.1.as_str()));
        }
        (Some(fatal), None) => bail!("the server sent {fatal:?}, the client only saw {error:?}"),
        // The server said nothing: the gateway's own FATAL says the server went away.
        (None, Some(got)) => ensure!(
            got.0 == "08006" && got.1.contains("target's server"),
            "the client got {got:?}, which neither the server nor the gateway would send"
        ),
        _ => ensure!(error.is_closed(), "the connection closed: {error:?}"),
    }
    for warning in of_type(events, "notice") {
        if let (Some(code), Some(message)) = said(warning) {
            ensure!(
                notices.iter().any(|(_, c, m)| c == code && m == message),
                "the server warned {code} {message}; the client's notices: {notices:?}"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 1. The upstream server killed mid-query

async fn server_dies_during_a_long_query(death: ServerDeath) -> anyhow::Result<()> {
    let mut lab = Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let (client, watch) = watched_client(&lab, "shop", &issued.token).await?;
    let query = tokio::spawn(async move {
        let result = client.simple_query("select pg_sleep(60)").await;
        (result, client)
    });
    wait_for_running_statement(&lab.pg, pg::SCRAM_USER, "pg_sleep", Duration::from_secs(10))?;
    let struck = Instant::now();
    death.strike(&mut lab)?;
    let (result, client) = joined(query, "pg_sleep").await?;
    let error = result
        .err()
        .context("pg_sleep(60) completed although its server died")?;
    let waited = struck.elapsed();
    ensure!(waited < Duration::from_secs(5), "the error took {waited:?}");
    let notices = watch.closed().await?;
    ensure!(
        client.is_closed(),
        "the gateway closed the client's connection"
    );
    eprintln!("{death:?} during pg_sleep: client error after {waited:?}: {error:?}; {notices:?}");

    let (session, events) = ended_by_server(&lab).await?;
    eprintln!("session end detail: {:?}", session.end_detail);
    assert_client_heard_the_server(&error, &notices, &events)?;
    // An idle server is never blocked writing: it always says why, in its own words.
    let expected = death.expected_message();
    let told = db_error(&error).is_some_and(|(code, m)| code == "57P01" && m == expected)
        || notices
            .iter()
            .any(|(_, c, m)| c == "57P01" && m == expected);
    ensure!(
        told,
        "the client was not told `{expected}`: {error:?}, {notices:?}"
    );
    let queries = of_type(&events, "query");
    assert_eq!(queries.len(), 1);
    assert_eq!(queries[0]["sql"]["text"], "select pg_sleep(60)");
    ensure!(
        of_type(&events, "command_complete").is_empty(),
        "the query never completed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_mid_query_ends_the_session_as_closed_by_the_server()
-> anyhow::Result<()> {
    server_dies_during_a_long_query(ServerDeath::Terminated).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_stopped_in_immediate_mode_mid_query_ends_the_session_as_closed_by_the_server()
-> anyhow::Result<()> {
    server_dies_during_a_long_query(ServerDeath::ImmediateStop).await
}

/// A result far bigger than anything buffered on the way, read row by row.
/// `generate_series` in the select list, not in FROM: a set-returning function in FROM is
/// materialized before the first row is sent.
const ENDLESS_ROWS: &str = "select generate_series(1, 100000000) as g, repeat('x', 200)";

async fn server_dies_while_rows_stream(death: ServerDeath) -> anyhow::Result<()> {
    let mut lab = Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let (client, watch) = watched_client(&lab, "shop", &issued.token).await?;
    let (first_rows, mut got_rows) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let stream = client
            .query_raw(ENDLESS_ROWS, std::iter::empty::<i32>())
            .await;
        let mut stream = match stream {
            Ok(stream) => Box::pin(stream),
            Err(e) => return (0u64, Some(e), client),
        };
        let mut rows = 0u64;
        let mut first_rows = Some(first_rows);
        while let Some(row) = stream.next().await {
            match row {
                Ok(_) => rows += 1,
                Err(e) => return (rows, Some(e), client),
            }
            if rows == 2000
                && let Some(tx) = first_rows.take()
            {
                let _ = tx.send(());
            }
        }
        (rows, None, client)
    });
    tokio::time::timeout(Duration::from_secs(10), &mut got_rows)
        .await
        .context("no rows streamed within 10 s")??;
    death.strike(&mut lab)?;
    let (rows, error, client) = joined(reader, "streaming").await?;
    let error = error.context("100 million rows completed although the server died")?;
    let notices = watch.closed().await?;
    eprintln!(
        "{death:?} while streaming: client read {rows} rows, then {error:?}; notices {notices:?}"
    );
    let (session, events) = ended_by_server(&lab).await?;
    eprintln!("session end detail: {:?}", session.end_detail);
    assert_client_heard_the_server(&error, &notices, &events)?;
    ensure!(client.is_closed());
    let queries = of_type(&events, "parse");
    ensure!(
        queries.iter().any(|q| q["sql"]["text"] == ENDLESS_ROWS),
        "the query is recorded: {queries:?}"
    );
    // The rows the client got are kept even without the server's FATAL: see
    // rows_and_copy_data_received_before_a_silent_server_death_are_recorded.
    ensure!(
        of_type(&events, "command_complete").is_empty(),
        "the query never completed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_while_rows_stream_ends_the_session_as_closed_by_the_server()
-> anyhow::Result<()> {
    server_dies_while_rows_stream(ServerDeath::Terminated).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_stopped_in_immediate_mode_while_rows_stream_ends_the_session_as_closed_by_the_server()
-> anyhow::Result<()> {
    server_dies_while_rows_stream(ServerDeath::ImmediateStop).await
}

// A client whose server dies gets a clear FATAL. A backend terminated while it is blocked
// writing to the gateway (a client reading a big result more slowly than the server makes it)
// sends none: PostgreSQL drops it rather than break the protocol. The gateway then sends its
// own, 08006, when the client's stream is at a message boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_without_a_word_is_reported_to_the_client_by_the_gateway()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let (client, _watch) = watched_client(&lab, "shop", &issued.token).await?;
    let mut stream = Box::pin(
        client
            .query_raw(ENDLESS_ROWS, std::iter::empty::<i32>())
            .await?,
    );
    let (_, error) = starve_then_terminate(&lab, &mut stream).await?;
    let (code, message) =
        db_error(&error).with_context(|| format!("the client got no FATAL, only {error:?}"))?;
    ensure!(
        code.starts_with("08") || code == "57P01",
        "{code} {message}"
    );
    Ok(())
}

/// Reads a few rows, stops reading until the backend is blocked writing, then terminates it:
/// PostgreSQL then sends no FATAL, and the connection just ends. Returns the rows read.
async fn starve_then_terminate<S, T>(
    lab: &Lab,
    stream: &mut std::pin::Pin<Box<S>>,
) -> anyhow::Result<(u64, tokio_postgres::Error)>
where
    S: futures::Stream<Item = Result<T, tokio_postgres::Error>>,
{
    let mut read = 0u64;
    while read < 2000 {
        stream.next().await.context("the result ended early")??;
        read += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    terminate_backends(&lab.pg, pg::SCRAM_USER)?;
    loop {
        match tokio::time::timeout(Duration::from_secs(15), stream.next()).await? {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => return Ok((read, e)),
            None => bail!("the result completed although its server died"),
        }
    }
}

// What the client received before the server died without a FATAL is in the recording: the
// capture collects a result's rows (and COPY data) until the statement ends, and the session's
// end gives out what it holds (`Capture::finish`) before `session_end`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_and_copy_data_received_before_a_silent_server_death_are_recorded()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let (client, _watch) = watched_client(&lab, "shop", &issued.token).await?;
    let mut rows = Box::pin(
        client
            .query_raw(ENDLESS_ROWS, std::iter::empty::<i32>())
            .await?,
    );
    let (read, error) = starve_then_terminate(&lab, &mut rows).await?;
    // Whether the server managed to say why (a FATAL) or not (blocked writing), the rows
    // the client got must be in the recording.
    let _ = db_error(&error);
    let (_, events) = ended_by_server(&lab).await?;
    let kept: usize = of_type(&events, "rows")
        .iter()
        .filter_map(|e| e["rows"].as_array().map(Vec::len))
        .sum();
    ensure!(
        kept > 0,
        "the client read {read} rows; the recording keeps none"
    );

    let lab = Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let (client, _watch) = watched_client(&lab, "shop", &issued.token).await?;
    let copy = format!("copy ({ENDLESS_ROWS}) to stdout");
    let mut data = Box::pin(client.copy_out(copy.as_str()).await?);
    let (read, error) = starve_then_terminate(&lab, &mut data).await?;
    // Whether the server managed to say why (a FATAL) or not (blocked writing), the rows
    // the client got must be in the recording.
    let _ = db_error(&error);
    let (_, events) = ended_by_server(&lab).await?;
    ensure!(
        !of_type(&events, "copy_data").is_empty(),
        "the client read {read} COPY messages; the recording keeps none of them"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. The upstream killed mid-COPY

fn create_big_table(lab: &Lab) -> anyhow::Result<()> {
    lab.pg.psql(
        pg::APP_DB,
        &format!(
            "create table big (n int, note text); grant all on big to {}",
            pg::SCRAM_USER
        ),
    )?;
    Ok(())
}

/// psql running a script fed through its stdin as the test writes it, so that a COPY's rows
/// can arrive slowly. The guard stops it if the test fails.
fn psql_fed_slowly(
    lab: &Lab,
    target: &str,
    token: &str,
) -> anyhow::Result<(ChildGuard, ChildStdin)> {
    let mut command = Command::new(pg::postgres_bin_dir()?.join("psql"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
    let child = command
        .args([
            "-XAt",
            "-v",
            "ON_ERROR_STOP=1",
            "--no-password",
            "-f",
            "-",
            "-d",
        ])
        .arg(lab.uri(target))
        .env("PGPASSWORD", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run psql")?;
    let mut guard = ChildGuard::new("psql", child);
    let stdin = guard.child_mut().stdin.take().context("psql stdin")?;
    Ok((guard, stdin))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_mid_copy_in_ends_the_session_and_keeps_the_partial_copy()
-> anyhow::Result<()> {
    let mut lab = Lab::start(&[])?;
    create_big_table(&lab)?;
    let issued = lab.scram_target("shop", &[])?;
    let (mut psql, mut stdin) = psql_fed_slowly(&lab, "shop", &issued.token)?;
    // With its column list: a COPY whose columns are unknown may carry a secret one, and the
    // recording keeps only its length.
    stdin.write_all(b"copy big (n, note) from stdin;\n")?;
    // Rows go slowly, one every 20 ms, as from a client reading a file over a slow link; each
    // is bigger than libpq's 8 KiB output buffer, so each goes out at once.
    const BEFORE: usize = 30;
    let row = |n: usize| format!("{n}\t{}\n", "x".repeat(10_000));
    for n in 1..=BEFORE {
        stdin.write_all(row(n).as_bytes())?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for_running_statement(&lab.pg, pg::SCRAM_USER, "copy big", Duration::from_secs(5))?;
    ServerDeath::Terminated.strike(&mut lab)?;
    // The client goes on for a second (libpq buffers COPY data and notices the closed
    // connection only when it flushes), then ends the COPY.
    let struck = Instant::now();
    let mut after = 0;
    while struck.elapsed() < Duration::from_secs(1) {
        if stdin.write_all(row(BEFORE + 1 + after).as_bytes()).is_err() {
            break;
        }
        after += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stdin.write_all(b"\\.\n");
    drop(stdin);
    let status = loop {
        if let Some(status) = psql.try_wait()? {
            break status;
        }
        ensure!(
            struck.elapsed() < Duration::from_secs(10),
            "psql still running 10 s after its server died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    psql.child_mut()
        .stderr
        .take()
        .context("psql stderr")?
        .read_to_string(&mut stderr)?;
    eprintln!(
        "COPY FROM STDIN: psql exited ({status}) {:?} after the kill, having written {after} \
         more rows; it said: {stderr}",
        struck.elapsed()
    );
    ensure!(!status.success(), "psql reported success");
    // libpq shows the FATAL when it reads it before a write of COPY data fails; over TLS a
    // failed write ends it at once with "connection to server was lost" (as it would on a
    // direct connection). The FATAL itself was forwarded: it is in the recording, below.
    ensure!(
        stderr.contains("FATAL:  terminating connection due to administrator command")
            || stderr.contains("connection to server was lost"),
        "psql did not say the connection ended: {stderr}"
    );
    let stored = lab.pg.psql(pg::APP_DB, "select count(*) from big")?;
    assert_eq!(stored.trim(), "0", "the interrupted COPY stored nothing");

    let (session, events) = ended_by_server(&lab).await?;
    eprintln!("session end detail: {:?}", session.end_detail);
    let starts = of_type(&events, "copy_start");
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0]["direction"], "in");
    let data = of_type(&events, "copy_data");
    assert_eq!(data.len(), 1, "{data:?}");
    let kept = data[0]["data"]["text"].as_str().unwrap_or_default();
    ensure!(
        kept.starts_with(&row(1)[..100]),
        "the first row is kept: {kept:.100}"
    );
    // libpq may still have held the last few KiB when the server died.
    let seen = data[0]["data"]["len"].as_u64().unwrap_or(kept.len() as u64);
    ensure!(
        seen >= ((BEFORE - 1) * row(1).len()) as u64,
        "the recording counts {seen} bytes of COPY data, the client sent {} before the kill",
        BEFORE * row(1).len()
    );
    let ends = of_type(&events, "copy_end");
    eprintln!(
        "copy_end: {ends:?}; copy_data len {seen}, kept {}",
        kept.len()
    );
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["direction"], "in");
    let fatal = of_type(&events, "error");
    ensure!(
        fatal
            .iter()
            .any(|e| e["code"] == "57P01" && e["severity"] == "FATAL"),
        "the server's FATAL is recorded: {fatal:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_terminated_mid_copy_out_ends_the_session_and_keeps_the_partial_copy()
-> anyhow::Result<()> {
    let mut lab = Lab::start(&[])?;
    let issued = lab.scram_target("shop", &[])?;
    let (client, watch) = watched_client(&lab, "shop", &issued.token).await?;
    let (first_data, mut got_data) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let copy = format!("copy ({ENDLESS_ROWS}) to stdout");
        let mut stream = match client.copy_out(copy.as_str()).await {
            Ok(stream) => Box::pin(stream),
            Err(e) => return (0usize, Some(e), client),
        };
        let mut bytes = 0usize;
        let mut first_data = Some(first_data);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => bytes += chunk.len(),
                Err(e) => return (bytes, Some(e), client),
            }
            if bytes > 256 * 1024
                && let Some(tx) = first_data.take()
            {
                let _ = tx.send(());
            }
        }
        (bytes, None, client)
    });
    tokio::time::timeout(Duration::from_secs(10), &mut got_data)
        .await
        .context("no COPY data within 10 s")??;
    ServerDeath::Terminated.strike(&mut lab)?;
    let (bytes, error, client) = joined(reader, "copy out").await?;
    let error = error.context("the COPY TO STDOUT completed although its server died")?;
    let notices = watch.closed().await?;
    eprintln!("COPY TO STDOUT: client read {bytes} bytes, then {error:?}; notices {notices:?}");
    let (session, events) = ended_by_server(&lab).await?;
    eprintln!("session end detail: {:?}", session.end_detail);
    assert_client_heard_the_server(&error, &notices, &events)?;
    ensure!(client.is_closed());
    let starts = of_type(&events, "copy_start");
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0]["direction"], "out");
    // The data the client got is kept whether or not the server's FATAL ended the COPY: see
    // rows_and_copy_data_received_before_a_silent_server_death_are_recorded.
    ensure!(
        of_type(&events, "command_complete").is_empty(),
        "the COPY never completed"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. The gateway stopped (SIGTERM) or killed (SIGKILL) during load

const LOAD_CLIENTS: i32 = 8;

/// How one load client ended.
struct LoadClient {
    id: i32,
    /// Inserts the server acknowledged.
    acknowledged: u32,
    error: Option<tokio_postgres::Error>,
}

fn create_load_table(lab: &Lab) -> anyhow::Result<()> {
    lab.pg.psql(
        pg::APP_DB,
        &format!(
            "create table load (client int, n int, primary key (client, n)); \
             grant all on load to {}",
            pg::SCRAM_USER
        ),
    )?;
    Ok(())
}

/// Starts [`LOAD_CLIENTS`] sessions, each inserting `(client, n)` for n = 1, 2, ... as fast as
/// it can (one simple query each) until an error or `stop`.
async fn start_load(
    lab: &Lab,
    target: &str,
    token: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<JoinHandle<LoadClient>>> {
    let mut clients = Vec::new();
    for _ in 0..LOAD_CLIENTS {
        clients.push(lab.client(target, token).await?);
    }
    Ok(clients
        .into_iter()
        .zip(1..)
        .map(|(client, id)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut acknowledged = 0;
                let mut error = None;
                while !stop.load(Ordering::Relaxed) {
                    let n = acknowledged + 1;
                    let sql = format!("insert into load values ({id}, {n})");
                    match client.batch_execute(&sql).await {
                        Ok(()) => acknowledged = n,
                        Err(e) => {
                            error = Some(e);
                            break;
                        }
                    }
                }
                LoadClient {
                    id,
                    acknowledged,
                    error,
                }
            })
        })
        .collect())
}

/// Lets the load run, strikes, and collects how every client ended; every client must have
/// got going before the strike and must see an error after it.
async fn load_then(
    lab: &mut Lab,
    target: &str,
    token: &str,
    strike: impl FnOnce(&mut Lab) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<LoadClient>> {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = start_load(lab, target, token, stop.clone()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    strike(lab)?;
    let mut ended = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    for task in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, task).await {
            Ok(client) => ended.push(client?),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                bail!("a load client was still running 15 s after the gateway stopped");
            }
        }
    }
    for client in &ended {
        ensure!(
            client.acknowledged > 0,
            "client {} never got going",
            client.id
        );
        ensure!(
            client.error.is_some(),
            "client {} ended without an error",
            client.id
        );
    }
    Ok(ended)
}

/// `(client, n)` of every row in the load table: what the server committed.
fn committed_inserts(lab: &Lab) -> anyhow::Result<BTreeSet<(i32, i32)>> {
    let out = lab.pg.psql(pg::APP_DB, "select client, n from load")?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (c, n) = l.split_once('|').context("client|n")?;
            Ok((c.trim().parse()?, n.trim().parse()?))
        })
        .collect()
}

/// `(client, n)` of every INSERT in the recordings of `sessions`, which must all be sealed;
/// the recordings' ends by session.
async fn recorded_inserts(
    lab: &Lab,
    sessions: &[Session],
) -> anyhow::Result<(BTreeSet<(i32, i32)>, Vec<Value>)> {
    let mut inserts = BTreeSet::new();
    let mut ends = Vec::new();
    for session in sessions {
        let (stored, _) = lab.sealed_recording(session.id).await?;
        let events = bodies(&stored)?;
        for query in of_type(&events, "query") {
            let sql = query["sql"]["text"].as_str().unwrap_or_default();
            if let Some(values) = sql
                .strip_prefix("insert into load values (")
                .and_then(|v| v.strip_suffix(')'))
            {
                let (c, n) = values.split_once(", ").context("insert values")?;
                inserts.insert((c.parse()?, n.parse()?));
            }
        }
        ends.push(events.last().cloned().unwrap_or_default());
    }
    Ok((inserts, ends))
}

/// Every insert the server committed is recorded; a recorded insert the server did not commit
/// can only be the one each client had in flight.
fn assert_nothing_ran_unrecorded(
    committed: &BTreeSet<(i32, i32)>,
    recorded: &BTreeSet<(i32, i32)>,
) -> anyhow::Result<()> {
    let missing: Vec<_> = committed.difference(recorded).collect();
    ensure!(
        missing.is_empty(),
        "{} committed inserts are not in any recording, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let mut in_flight: BTreeMap<i32, usize> = BTreeMap::new();
    for (client, _) in recorded.difference(committed) {
        *in_flight.entry(*client).or_default() += 1;
    }
    ensure!(
        in_flight.values().all(|&n| n <= 1),
        "recorded but never committed (at most one per client may have been in flight): \
         {in_flight:?}"
    );
    Ok(())
}

fn wait_for_exit(lab: &mut Lab, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = lab.gateway.try_wait()? {
            return Ok(status);
        }
        ensure!(
            Instant::now() < deadline,
            "the gateway did not exit within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_loses_no_event() -> anyhow::Result<()> {
    let mut lab = Lab::start(&[("PGBASTION_GATEWAY_SHUTDOWN_GRACE_SECS", "1")])?;
    create_load_table(&lab)?;
    let issued = lab.scram_target("shop", &["--recording", "strict"])?;
    let mut exit = None;
    let clients = load_then(&mut lab, "shop", &issued.token, |lab| {
        lab.gateway.signal(libc::SIGTERM)?;
        let sent = Instant::now();
        let status = wait_for_exit(lab, Duration::from_secs(15))?;
        exit = Some((status, sent.elapsed()));
        Ok(())
    })
    .await?;
    let (status, took) = exit.context("struck")?;
    ensure!(
        status.success(),
        "exit {status}; log:\n{}",
        lab.bastion.log()
    );
    // Each client is told with a FATAL, unless its next query was on the way when the
    // gateway closed the connection: the unread query makes the close a reset, which discards
    // the FATAL on the client's side (a race of TCP, reported in docs/RELIABILITY.md).
    let mut told = 0;
    for client in &clients {
        let error = client.error.as_ref().context("error")?;
        match db_error(error) {
            Some((code, message)) => {
                assert_eq!(code, "57P01", "{message}");
                assert_eq!(message, "pgbastion gateway is shutting down");
                told += 1;
            }
            None => ensure!(error.is_closed(), "client {}: {error:?}", client.id),
        }
    }

    // The gateway is gone and has not been restarted: what it stored before exiting is all
    // there is.
    let sessions = lab.store().await?.list_sessions(100).await?;
    assert_eq!(sessions.len(), LOAD_CLIENTS as usize);
    for s in &sessions {
        assert_eq!(s.end_reason, Some(EndReason::GatewayShutdown), "{s:?}");
    }
    let committed = committed_inserts(&lab)?;
    let (recorded, _) = recorded_inserts(&lab, &sessions).await?;
    let acknowledged: u32 = clients.iter().map(|c| c.acknowledged).sum();
    eprintln!(
        "SIGTERM: exit after {took:?}; {acknowledged} inserts acknowledged, {} committed, {} \
         recorded; {told} of {LOAD_CLIENTS} clients got the FATAL",
        committed.len(),
        recorded.len(),
    );
    ensure!(committed.len() >= acknowledged as usize);
    assert_nothing_ran_unrecorded(&committed, &recorded)?;
    let verified = lab.bastion.cli_ok(&["verify", "--all"])?;
    ensure!(
        verified.matches("chain intact, sealed").count() == LOAD_CLIENTS as usize,
        "{verified}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_load_on_a_strict_target_loses_no_executed_statement() -> anyhow::Result<()>
{
    let mut lab = Lab::start(&[])?;
    create_load_table(&lab)?;
    let issued = lab.scram_target("shop", &["--recording", "strict"])?;
    let clients = load_then(&mut lab, "shop", &issued.token, |lab| {
        lab.gateway.kill()?;
        Ok(())
    })
    .await?;
    for client in &clients {
        let error = client.error.as_ref().context("error")?;
        ensure!(
            error.is_closed() || db_error(error).is_none(),
            "client {}: a killed gateway can only close the connection: {error:?}",
            client.id
        );
    }
    let committed = committed_inserts(&lab)?;

    // The next start recovers the journal: it stores what the killed gateway had not, ends
    // the sessions and seals them.
    let restarted = Instant::now();
    lab.gateway = lab.bastion.serve()?;
    let sessions = lab.store().await?.list_sessions(100).await?;
    assert_eq!(sessions.len(), LOAD_CLIENTS as usize);
    let (recorded, ends) = recorded_inserts(&lab, &sessions).await?;
    let sealed_after = restarted.elapsed();
    let acknowledged: u32 = clients.iter().map(|c| c.acknowledged).sum();
    eprintln!(
        "SIGKILL: {acknowledged} inserts acknowledged, {} committed, {} recorded; all sealed \
         {sealed_after:?} after the restart; first error: {:?}",
        committed.len(),
        recorded.len(),
        clients[0].error
    );
    assert_nothing_ran_unrecorded(&committed, &recorded)?;
    for end in &ends {
        assert_eq!(end["type"], "session_end");
        ensure!(
            end["detail"]
                .as_str()
                .is_some_and(|d| d.contains("stopped abruptly")),
            "{end}"
        );
    }
    let verified = lab.bastion.cli_ok(&["verify", "--all"])?;
    ensure!(
        verified.matches("chain intact, sealed").count() == LOAD_CLIENTS as usize,
        "{verified}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. The disk under the SQLite store fills up

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

fn probe_rows(lab: &Lab, range: std::ops::Range<i32>) -> anyhow::Result<Vec<i32>> {
    let out = lab.pg.psql(
        pg::APP_DB,
        &format!(
            "select n from probe where n >= {} and n < {} order by n",
            range.start, range.end
        ),
    )?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().context("probe row"))
        .collect()
}

/// Inserts `first`, `first + 1`, ... until the gateway refuses one (up to `limit` inserts);
/// returns the values the client saw succeed and the refusal.
async fn insert_until_refused(
    client: &Client,
    first: i32,
    limit: i32,
) -> (Vec<i32>, Option<tokio_postgres::Error>) {
    let mut acknowledged = Vec::new();
    for n in first..first + limit {
        match client
            .batch_execute(&format!("insert into probe values ({n})"))
            .await
        {
            Ok(()) => acknowledged.push(n),
            Err(e) => return (acknowledged, Some(e)),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (acknowledged, None)
}

/// The server ran what the client was told ran, and at most the one statement after it: the
/// request that was journaled and forwarded while its answer was the first chunk the full disk
/// refused (the client then gets the error, not the answer). Whether that statement is recorded
/// is checked at the end with every other executed row.
fn ran_at_most_the_refused_one(rows: Vec<i32>, acknowledged: Vec<i32>) -> anyhow::Result<()> {
    let next = acknowledged.last().map(|n| n + 1);
    let mut with_next = acknowledged.clone();
    with_next.extend(next);
    ensure!(
        rows == acknowledged || rows == with_next,
        "the server ran {rows:?}; the client was told {acknowledged:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_sqlite_store_refuses_statements_and_nothing_runs_unrecorded()
-> anyhow::Result<()> {
    // Declared first, so it is unmounted last, after the gateway has stopped.
    let disk = SmallDisk::mount(32)?;
    let bastion = disk.bastion(&[])?;
    let lab = Lab::start_with_bastion(PgCluster::start()?, bastion)?;
    create_probe_table(&lab)?;
    let strict = lab.scram_target("prod", &["--recording", "strict"])?;
    lab.add_target(
        "etl",
        pg::SCRAM_USER,
        "disable",
        &["--recording", "buffered"],
    )?;
    lab.grant("etl", pg::SCRAM_USER)?;
    let buffered = lab.issue("etl", pg::SCRAM_USER, &[])?;

    let strict_client = lab.client("prod", &strict.token).await?;
    strict_client
        .batch_execute("insert into probe values (1)")
        .await?;
    let buffered_client = lab.client("etl", &buffered.token).await?;
    buffered_client
        .batch_execute("insert into probe values (1001)")
        .await?;

    let filled = disk.fill()?;
    eprintln!("disk full after a filler of {filled} bytes");

    // Strict: refused with a clear error; nothing the client was refused reached the server.
    let (strict_ok, refused) = insert_until_refused(&strict_client, 2, 200).await;
    let refused = refused.context("a strict target went on with a full disk")?;
    let (code, message) =
        db_error(&refused).with_context(|| format!("a clear error, got {refused:?}"))?;
    eprintln!(
        "strict on a full disk: {} inserts went through, then {code} {message}",
        strict_ok.len()
    );
    assert_eq!(code, "57000", "{message}");
    ensure!(message.contains("cannot be recorded"), "{message}");
    let mut executed = vec![1];
    executed.extend(&strict_ok);
    ran_at_most_the_refused_one(probe_rows(&lab, 1..1000)?, executed)?;

    // Buffered: the journal's open segment was allocated in full before the disk filled, so
    // the session goes on with its events journaled there (stored once the disk has room, as
    // checked below) until that segment is full, and then ends like a strict one.
    let (buffered_ok, buffered_refused) = insert_until_refused(&buffered_client, 1002, 200).await;
    let buffered_error = buffered_refused.map(|e| db_error(&e).unwrap_or_default());
    eprintln!(
        "buffered on a full disk: {} inserts went through, then {buffered_error:?}",
        buffered_ok.len()
    );
    match buffered_error {
        None => assert_eq!(buffered_ok.len(), 200, "went on, every insert journaled"),
        Some((code, message)) => assert_eq!(code, "57000", "{message}"),
    }
    let mut executed_buffered = vec![1001];
    executed_buffered.extend(&buffered_ok);
    ran_at_most_the_refused_one(probe_rows(&lab, 1001..2000)?, executed_buffered)?;

    // A new session while the disk is full: refused at login (57P03), or at its first
    // statement (57000) if the gateway has not noticed yet; either way nothing runs.
    let refusal = match lab.client("prod", &strict.token).await {
        Ok(client) => match client
            .batch_execute("insert into probe values (3000)")
            .await
        {
            Ok(()) => bail!("a new session ran a statement on a full disk"),
            Err(e) => db_error(&e),
        },
        Err(e) => e
            .chain()
            .find_map(|cause| cause.downcast_ref::<tokio_postgres::Error>())
            .and_then(db_error),
    };
    eprintln!("a new session on a full disk: {refusal:?}");
    let (code, message) = refusal.context("a new session is refused with a clear error")?;
    ensure!(code == "57P03" || code == "57000", "{code} {message}");
    assert_eq!(probe_rows(&lab, 3000..3001)?, Vec::<i32>::new());

    // Room again: new sessions work, and every recording is complete and verifies.
    disk.free()?;
    let recovered = Instant::now();
    let client = loop {
        match lab.client("prod", &strict.token).await {
            Ok(client) => match client
                .batch_execute("insert into probe values (4000)")
                .await
            {
                Ok(()) => break client,
                Err(e) if recovered.elapsed() > Duration::from_secs(10) => {
                    bail!("no statement ran 10 s after the disk had room: {e:?}")
                }
                Err(_) => {}
            },
            Err(e) if recovered.elapsed() > Duration::from_secs(10) => {
                bail!("no session 10 s after the disk had room: {e:#}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "statements run again {:?} after the disk had room",
        recovered.elapsed()
    );
    drop(client);
    drop(strict_client);
    drop(buffered_client);

    let store = lab.store().await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let sessions = loop {
        let sessions = store.list_sessions(100).await?;
        if sessions.iter().all(|s| s.ended_at.is_some()) || Instant::now() > deadline {
            break sessions;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sessions {
        let end = format!("{} {:?} {:?}", s.target_name, s.end_reason, s.end_detail);
        *ends.entry(end).or_default() += 1;
    }
    eprintln!("sessions by end: {ends:#?}");
    ensure!(
        sessions.iter().all(|s| s.ended_at.is_some()),
        "sessions still open: {ends:?}"
    );
    let verified = lab.bastion.cli_ok(&["verify", "--all"])?;
    let recorded_sessions: Vec<&Session> = sessions
        .iter()
        .filter(|s| s.bytes_client_to_server > 0)
        .collect();
    let mut recorded = BTreeSet::new();
    for s in &recorded_sessions {
        let (stored, _) = lab.sealed_recording(s.id).await?;
        for query in of_type(&bodies(&stored)?, "query") {
            if let Some(n) = query["sql"]["text"]
                .as_str()
                .and_then(|t| t.strip_prefix("insert into probe values ("))
                .and_then(|t| t.strip_suffix(')'))
            {
                recorded.insert(n.parse::<i32>()?);
            }
        }
    }
    let all_rows: BTreeSet<i32> = probe_rows(&lab, 0..10_000)?.into_iter().collect();
    let missing: Vec<_> = all_rows.difference(&recorded).collect();
    ensure!(
        missing.is_empty(),
        "executed but not recorded: {missing:?}\n{verified}"
    );
    Ok(())
}
