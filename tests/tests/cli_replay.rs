//! `pgbastion sessions` and `pgbastion replay`, run as the real binary against a store in its
//! data directory, holding recordings written with the library's own hash chain and recording
//! key (as the gateway writes them).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{SubsecRound, Utc};
use gateway::record::chain::{Chain, RECORDING_KEY_FILE, RecordingKey};
use gateway::record::event::{
    Capped, Column, Event, EventKind, Param, ServerMessage, StatementClass,
};
use gateway::store::{EndReason, NewSession, SessionEnd, Store};
use harness::{Bastion, ChildGuard};
use uuid::Uuid;

/// A data directory with its store open and its recording key, as the gateway leaves them.
struct Installation {
    bastion: Bastion,
    store: Arc<dyn Store>,
    key: RecordingKey,
}

impl Installation {
    async fn new() -> Result<Installation> {
        let bastion = Bastion::new()?;
        let store = gateway::store::open(&bastion.store_url()).await?;
        let key = RecordingKey::load_or_create(&bastion.data_path().join(RECORDING_KEY_FILE))?;
        Ok(Installation {
            bastion,
            store,
            key,
        })
    }

    /// A live session of `person` on target `shop`, with its chain started.
    async fn start(&self, person: &str) -> Result<Recording> {
        let id = Uuid::new_v4();
        let started_at = Utc::now().trunc_subsecs(6);
        self.store
            .insert_session(&NewSession {
                id,
                person_login: person.into(),
                target_id: Uuid::new_v4(),
                target_name: "shop".into(),
                db_role: "app_ro".into(),
                credential_id: Uuid::new_v4(),
                client_addr: "192.0.2.7:51234".into(),
                application_name: Some("psql".into()),
                tls_version: Some("TLSv1.3".into()),
                started_at,
                recording: gateway::store::RecordingPolicy::Strict,
                groups: Vec::new(),
            })
            .await?;
        let mut recording = Recording {
            id,
            chain: Chain::new(id),
        };
        self.record(
            &mut recording,
            vec![EventKind::SessionStart {
                session_id: id,
                credential_id: Uuid::nil(),
                person: person.into(),
                groups: vec!["dev".into()],
                target: "shop".into(),
                db_role: "app_ro".into(),
                client_addr: "192.0.2.7:51234".into(),
                application_name: Some("psql".into()),
                tls_version: Some("TLSv1.3".into()),
                format_version: 1,
            }],
        )
        .await?;
        Ok(recording)
    }

    /// Chains and stores `kinds`.
    async fn record(&self, recording: &mut Recording, kinds: Vec<EventKind>) -> Result<()> {
        let mut stored = Vec::new();
        for kind in kinds {
            let event = Event {
                seq: recording.chain.next_seq(),
                at: Utc::now(),
                kind,
            };
            stored.push(recording.chain.append(&event)?);
        }
        self.store.append_events(&stored).await?;
        Ok(())
    }

    /// Records the end, ends the session and seals its recording, in the gateway's order.
    async fn end(&self, mut recording: Recording) -> Result<()> {
        self.record(
            &mut recording,
            vec![EventKind::SessionEnd {
                reason: "client_quit".into(),
                detail: None,
                bytes_client_to_server: 100,
                bytes_server_to_client: 200,
            }],
        )
        .await?;
        let end = SessionEnd {
            ended_at: Utc::now(),
            reason: EndReason::ClientQuit,
            detail: None,
            bytes_client_to_server: 100,
            bytes_server_to_client: 200,
        };
        self.store.end_session(recording.id, &end).await?;
        self.store
            .seal_recording(&recording.chain.seal(&self.key))
            .await?;
        Ok(())
    }

    /// A whole session: started, `kinds` recorded, ended and sealed.
    async fn session(&self, person: &str, kinds: Vec<EventKind>) -> Result<Uuid> {
        let mut recording = self.start(person).await?;
        self.record(&mut recording, kinds).await?;
        let id = recording.id;
        self.end(recording).await?;
        Ok(id)
    }
}

struct Recording {
    id: Uuid,
    chain: Chain,
}

fn text(text: &str) -> Capped {
    Capped {
        text: text.into(),
        len: text.len() as u64,
        hex: false,
        redacted: false,
    }
}

fn query(sql: &str) -> EventKind {
    EventKind::Query {
        sql: text(sql),
        class: StatementClass::Read,
        risks: Vec::new(),
    }
}

fn complete(tag: &str, rows: Option<u64>) -> EventKind {
    EventKind::CommandComplete {
        tag: tag.into(),
        rows,
        duration_micros: 1500,
    }
}

/// What a psql session might leave: a query with rows (one value with an escape sequence in
/// it), a transaction, an extended-protocol statement with parameters, and an error.
fn statements() -> Vec<EventKind> {
    vec![
        EventKind::ParameterStatus {
            name: "TimeZone".into(),
            value: "UTC".into(),
        },
        EventKind::ReadyForQuery { status: 'I' },
        query("SELECT id, name FROM items ORDER BY id;"),
        EventKind::RowDescription {
            columns: vec![
                Column {
                    name: "id".into(),
                    type_oid: 23,
                },
                Column {
                    name: "name".into(),
                    type_oid: 25,
                },
            ],
        },
        EventKind::Rows {
            rows: vec![
                vec![Some(text("1")), Some(text("apple"))],
                vec![Some(text("2")), Some(text("evil\u{1b}[2Jname"))],
            ],
            omitted: 0,
        },
        complete("SELECT 2", Some(2)),
        EventKind::ReadyForQuery { status: 'I' },
        query("BEGIN;"),
        complete("BEGIN", None),
        EventKind::ReadyForQuery { status: 'T' },
        EventKind::Parse {
            statement: String::new(),
            sql: text("UPDATE items SET name = $2 WHERE id = $1"),
            param_types: vec![23, 25],
            class: StatementClass::Write,
            risks: Vec::new(),
        },
        EventKind::Bind {
            portal: String::new(),
            statement: String::new(),
            params: vec![
                Param {
                    type_oid: 23,
                    value: Some(text("42")),
                },
                Param {
                    type_oid: 25,
                    value: None,
                },
            ],
        },
        EventKind::Execute {
            portal: String::new(),
            statement: String::new(),
            sql: Some(text("UPDATE items SET name = $2 WHERE id = $1")),
            max_rows: 0,
        },
        EventKind::Sync,
        complete("UPDATE 1", Some(1)),
        EventKind::ReadyForQuery { status: 'T' },
        query("SELECT * FROM nope;"),
        EventKind::Error(ServerMessage {
            severity: "ERROR".into(),
            code: "42P01".into(),
            message: "relation \"nope\" does not exist".into(),
            detail: None,
            hint: None,
            position: Some(15),
        }),
        EventKind::ReadyForQuery { status: 'E' },
        query("ROLLBACK;"),
        complete("ROLLBACK", None),
        EventKind::ReadyForQuery { status: 'I' },
    ]
}

#[tokio::test]
async fn sessions_lists_recorded_sessions_newest_first_with_their_events_and_seal() -> Result<()> {
    let install = Installation::new().await?;
    let first = install.session("alice", statements()).await?;
    let second = install.session("bob", vec![query("SELECT 1")]).await?;
    let live = install.start("alice").await?;

    let table = install.bastion.cli_ok(&["sessions"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("EVENTS") && lines[0].ends_with("SEALED"),
        "{table}"
    );
    let row = |id: Uuid| {
        lines
            .iter()
            .position(|l| l.starts_with(&id.to_string()))
            .with_context(|| format!("{id} not listed:\n{table}"))
    };
    assert!(
        row(live.id)? < row(second)? && row(second)? < row(first)?,
        "{table}"
    );
    let first_row = lines[row(first)?];
    let cells: Vec<&str> = first_row.split_whitespace().collect();
    assert_eq!(cells[1..5], ["alice", "shop", "app_ro", "192.0.2.7:51234"]);
    // SessionStart, the statements, SessionEnd.
    let events = (statements().len() + 2).to_string();
    assert_eq!(
        cells[cells.len() - 3..],
        ["client_quit", events.as_str(), "yes"]
    );
    let live_row = lines[row(live.id)?];
    assert!(
        live_row.contains(" live ") && live_row.ends_with(" no"),
        "{live_row}"
    );

    let json: serde_json::Value = serde_json::from_str(
        &install
            .bastion
            .cli_ok(&["sessions", "--person", "alice", "--json"])?,
    )?;
    let sessions = json["sessions"].as_array().context("sessions")?;
    assert_eq!(sessions.len(), 2, "{json}");
    assert_eq!(sessions[1]["id"], first.to_string());
    assert_eq!(sessions[1]["event_count"], statements().len() as u64 + 2);
    assert_eq!(sessions[1]["sealed"], true);
    assert_eq!(json["next_before"], serde_json::Value::Null);

    let live_only = install.bastion.cli_ok(&["sessions", "--status", "live"])?;
    assert!(live_only.contains(&live.id.to_string()), "{live_only}");
    assert!(!live_only.contains(&first.to_string()), "{live_only}");
    assert_eq!(
        install.bastion.cli_ok(&["sessions", "--person", "carol"])?,
        "(none)\n"
    );
    Ok(())
}

#[tokio::test]
async fn sessions_pages_with_the_printed_cursor() -> Result<()> {
    let install = Installation::new().await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(install.session("alice", Vec::new()).await?);
    }
    let page = install.bastion.cli_ok(&["sessions", "--limit", "2"])?;
    let cursor = page
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("more sessions: add --before "))
        .with_context(|| format!("no cursor:\n{page}"))?;
    assert!(page.contains(&ids[2].to_string()) && page.contains(&ids[1].to_string()));
    let rest = install
        .bastion
        .cli_ok(&["sessions", "--limit", "2", "--before", cursor])?;
    assert!(rest.contains(&ids[0].to_string()), "{rest}");
    assert!(!rest.contains("more sessions"), "{rest}");
    assert_eq!(rest.lines().count(), 2, "header and one session:\n{rest}");
    Ok(())
}

#[tokio::test]
async fn replay_prints_a_psql_like_transcript() -> Result<()> {
    let install = Installation::new().await?;
    let id = install.session("alice", statements()).await?;
    let out = install.bastion.cli_ok(&["replay", &id.to_string()])?;
    for expected in [
        format!("-- pgbastion session {id}"),
        "-- person      alice".to_string(),
        "-- target      shop, role app_ro".to_string(),
        "-- client      192.0.2.7:51234 (application psql)".to_string(),
        "-- TLS         TLSv1.3".to_string(),
        "-- recording format 1; groups: dev".to_string(),
        "-- parameter TimeZone = UTC".to_string(),
        "shop=> SELECT id, name FROM items ORDER BY id;\n id |      name\n\
         ----+-----------------\n  1 | apple\n  2 | evil\\x1b[2Jname\n(2 rows)\nTime: 1.500 ms"
            .to_string(),
        "shop=> BEGIN;\nBEGIN\n".to_string(),
        "shop=*> UPDATE items SET name = $2 WHERE id = $1\n  $1 = '42'\n  $2 = NULL\nUPDATE 1\n"
            .to_string(),
        "shop=*> SELECT * FROM nope;\nERROR:  42P01: relation \"nope\" does not exist\n\
         LINE 1: SELECT * FROM nope;\n                      ^\n"
            .to_string(),
        "shop=!> ROLLBACK;\nROLLBACK\n".to_string(),
        "-- session ended at ".to_string(),
    ] {
        assert!(out.contains(&expected), "{expected:?} not in:\n{out}");
    }
    assert!(
        !out.contains('\u{1b}'),
        "an escape reached the terminal:\n{out}"
    );

    let missing = Uuid::new_v4();
    let failed = install.bastion.cli(&["replay", &missing.to_string()])?;
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(&format!("session {missing} does not exist")),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn replay_as_jsonl_is_an_export_verify_accepts_with_only_the_public_key() -> Result<()> {
    let install = Installation::new().await?;
    let id = install.session("alice", statements()).await?;
    let export = install
        .bastion
        .cli_ok(&["replay", &id.to_string(), "--format", "jsonl"])?;
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(lines.len(), 1 + statements().len() + 2 + 1, "{export}");
    assert!(
        lines[0].starts_with("{\"pgbastion_recording\":1,"),
        "{export}"
    );
    assert!(lines[lines.len() - 1].starts_with("{\"seal\":"), "{export}");

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("session.jsonl");
    std::fs::write(&file, &export)?;
    let public = dir.path().join("recording.pub");
    std::fs::write(
        &public,
        install.bastion.cli_ok(&["verify", "--show-public-key"])?,
    )?;
    let verified = install.bastion.cli_ok(&[
        "verify",
        "--file",
        file.to_str().context("path")?,
        "--public-key",
        public.to_str().context("path")?,
    ])?;
    let events = statements().len() + 2;
    assert!(
        verified.starts_with(&format!(
            "session {id}: {events} events, chain intact, sealed"
        )),
        "{verified}"
    );

    // One edited byte and the same check fails.
    std::fs::write(&file, export.replacen("apple", "appla", 1))?;
    let tampered = install.bastion.cli(&[
        "verify",
        "--file",
        file.to_str().context("path")?,
        "--public-key",
        public.to_str().context("path")?,
    ])?;
    assert!(!tampered.status.success());
    Ok(())
}

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut ChildGuard) -> Result<mpsc::Receiver<String>> {
    let stdout = child.child_mut().stdout.take().context("stdout is piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Collects lines into `seen` until one contains `needle`.
fn wait_for_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, needle: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    bail!(
        "{needle:?} did not appear; output so far:\n{}",
        seen.join("\n")
    )
}

#[tokio::test]
async fn replay_follow_shows_a_live_session_until_it_is_ended_and_sealed() -> Result<()> {
    let install = Installation::new().await?;
    let mut recording = install.start("alice").await?;
    install
        .record(
            &mut recording,
            vec![query("SELECT 'before';"), complete("SELECT 1", Some(1))],
        )
        .await?;
    let id = recording.id.to_string();
    let child = install
        .bastion
        .command(&["replay", &id, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut child = ChildGuard::new("pgbastion replay --follow", child);
    let rx = lines_of(&mut child)?;
    let mut seen = Vec::new();
    wait_for_line(&rx, &mut seen, "shop=> SELECT 'before';")?;

    install
        .record(
            &mut recording,
            vec![query("SELECT 'after';"), complete("SELECT 1", Some(1))],
        )
        .await?;
    wait_for_line(&rx, &mut seen, "shop=> SELECT 'after';")?;
    assert!(
        child.try_wait()?.is_none(),
        "it stopped while the session was live"
    );

    install.end(recording).await?;
    wait_for_line(&rx, &mut seen, "-- session ended at")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!(
                "replay --follow did not exit after the seal:\n{}",
                seen.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    Ok(())
}
