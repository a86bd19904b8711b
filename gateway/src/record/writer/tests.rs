//! The recorder from tap to store, on an in-memory SQLite store.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;

use super::*;
use crate::protocol::frame::Frame;
use crate::record::chain::{self, RECORDING_KEY_FILE};
use crate::record::{Direction, Recorder, Release, SessionInfo, SessionTap, StoreRecorder};
use crate::store::{self, EndReason, RecordingPolicy, SessionEnd, Target, UpstreamTls};

fn frame(tag: u8, body: &[u8]) -> Frame {
    Frame::encode(tag, body)
}

fn target(recording: RecordingPolicy) -> Arc<Target> {
    Arc::new(Target {
        id: Uuid::new_v4(),
        name: "shop".into(),
        host: "db".into(),
        port: 5432,
        database: "shop".into(),
        tls_mode: UpstreamTls::Disable,
        ca_pem: None,
        upstream_user: "app".into(),
        upstream_secret_sealed: None,
        enabled: true,
        created_at: Utc::now(),
        recording,
        record_max_rows: Some(1),
        record_max_result_bytes: None,
        retention_days: None,
    })
}

struct Fixture {
    store: Arc<dyn Store>,
    key: Arc<RecordingKey>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = RecordingKey::load_or_create(&dir.path().join(RECORDING_KEY_FILE)).unwrap();
    Fixture {
        store: store::open("sqlite::memory:").await.unwrap(),
        key: Arc::new(key),
        _dir: dir,
    }
}

async fn session(store: &Arc<dyn Store>, target: &Arc<Target>) -> SessionInfo {
    let info = SessionInfo {
        session_id: Uuid::new_v4(),
        credential_id: Uuid::new_v4(),
        person_login: "alice".into(),
        groups: vec!["dev".into()],
        target: target.clone(),
        db_role: "app".into(),
        client_addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
        application_name: Some("psql".into()),
        tls_version: Some("TLSv1.3".into()),
        started_at: Utc::now(),
    };
    store.insert_session(&info.new_session()).await.unwrap();
    info
}

fn settings() -> RecorderSettings {
    // No journal: strict sessions wait for each commit (the journal has its own tests below).
    let config = crate::config::RecordingConfig {
        journal: false,
        ..Default::default()
    };
    RecorderSettings::from_config(&config, std::path::Path::new("/nonexistent"))
}

/// Settings with a journal in the fixture's directory, and that directory.
fn journaled(f: &Fixture) -> (RecorderSettings, std::path::PathBuf) {
    let dir = f._dir.path().join("journal");
    let settings = RecorderSettings {
        journal_dir: Some(dir.clone()),
        ..settings()
    };
    (settings, dir)
}

/// A buffered session's tap straight on a writer's handle (its start event, seq 0, handed over).
fn buffered_tap(handle: &WriterHandle, session_id: Uuid) -> crate::record::tap::StoreTap {
    let start = Event {
        seq: 0,
        at: Utc::now(),
        kind: crate::record::event::EventKind::Sync,
    };
    let progress = handle
        .start(session_id, RecordingPolicy::Buffered, start)
        .unwrap();
    crate::record::tap::StoreTap::new(
        RecordingPolicy::Buffered,
        crate::record::capture::Capture::new(Default::default()),
        progress,
        handle.clone(),
    )
}

fn session_end() -> SessionEnd {
    SessionEnd {
        ended_at: Utc::now(),
        reason: EndReason::ClientQuit,
        detail: None,
        bytes_client_to_server: 10,
        bytes_server_to_client: 20,
    }
}

#[tokio::test]
async fn strict_holds_client_chunks_until_committed_and_seals_at_the_end() {
    let f = fixture().await;
    let recorder = StoreRecorder::start(f.store.clone(), f.key.clone(), &settings()).unwrap();
    let target = target(RecordingPolicy::Strict);
    let info = session(&f.store, &target).await;
    let mut tap = recorder.start(&info).unwrap().expect("recorded");

    tap.frame(Direction::ClientToServer, frame(b'Q', b"select 1\0"));
    assert_eq!(
        tap.chunk_done(Direction::ClientToServer),
        Ok(Release::AfterCommit)
    );
    poll_fn(|cx| tap.poll_release(cx)).await.unwrap();
    // Committed by then: the query is in the store before it may reach the server.
    let stored = f
        .store
        .session_events(info.session_id, 0, 10)
        .await
        .unwrap();
    assert_eq!(
        stored.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["session_start", "query"]
    );

    // Server answers do not wait; two rows with a cap of one keep one.
    tap.frame(
        Direction::ServerToClient,
        Frame::written(|out| crate::protocol::backend::row_description(out, &[("n", 23)])),
    );
    for value in [b"1", b"2"] {
        let mut row = vec![0, 1, 0, 0, 0, 1];
        row.extend_from_slice(value);
        tap.frame(Direction::ServerToClient, frame(b'D', &row));
    }
    tap.frame(Direction::ServerToClient, frame(b'C', b"SELECT 2\0"));
    tap.frame(Direction::ServerToClient, frame(b'Z', b"I"));
    assert_eq!(tap.chunk_done(Direction::ServerToClient), Ok(Release::Now));
    tap.end(&session_end());
    assert_eq!(recorder.shutdown().await, 0);

    let stored = f
        .store
        .session_events(info.session_id, 0, 100)
        .await
        .unwrap();
    let kinds: Vec<&str> = stored.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "session_start",
            "query",
            "row_description",
            "rows",
            "command_complete",
            "ready_for_query",
            "session_end"
        ]
    );
    assert!(
        stored[3].body.contains("\"omitted\":1"),
        "{}",
        stored[3].body
    );
    let seal = f
        .store
        .recording_seal(info.session_id)
        .await
        .unwrap()
        .unwrap();
    let report = chain::verify(info.session_id, &stored, Some(&seal), &f.key.verifier()).unwrap();
    assert!(report.sealed);
    assert_eq!(report.events, 7);
    let row = f.store.session(info.session_id).await.unwrap().unwrap();
    assert_eq!(row.end_reason, Some(EndReason::ClientQuit));
    assert_eq!(row.bytes_server_to_client, 20);
}

#[tokio::test]
async fn buffered_chunks_go_at_once_and_off_records_nothing() {
    let f = fixture().await;
    let recorder = StoreRecorder::start(f.store.clone(), f.key.clone(), &settings()).unwrap();
    let info = session(&f.store, &target(RecordingPolicy::Buffered)).await;
    let mut tap = recorder.start(&info).unwrap().expect("recorded");
    tap.frame(Direction::ClientToServer, frame(b'Q', b"select 1\0"));
    assert_eq!(tap.chunk_done(Direction::ClientToServer), Ok(Release::Now));
    tap.end(&session_end());

    let off = session(&f.store, &target(RecordingPolicy::Off)).await;
    assert!(recorder.start(&off).unwrap().is_none());
    assert_eq!(recorder.shutdown().await, 0);
    let stored = f
        .store
        .session_events(info.session_id, 0, 100)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    assert!(
        f.store
            .recording_seal(info.session_id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        f.store
            .session_events(off.session_id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_full_buffer_fails_the_session_instead_of_dropping_events() {
    let f = fixture().await;
    let settings = RecorderSettings {
        max_buffered_events: 3,
        ..settings()
    };
    // No writer task runs: nothing drains the buffer.
    let (_writer, handle) = writer(f.store.clone(), f.key.clone(), &settings, None);
    let target = target(RecordingPolicy::Buffered);
    let info = session(&f.store, &target).await;
    let event = |seq| Event {
        seq,
        at: Utc::now(),
        kind: crate::record::event::EventKind::Sync,
    };
    let progress = handle
        .start(info.session_id, RecordingPolicy::Buffered, event(0))
        .unwrap();
    handle
        .submit(&progress, &mut vec![event(1), event(2)], false)
        .unwrap();
    let failed = handle
        .submit(&progress, &mut vec![event(3)], false)
        .unwrap_err();
    assert!(failed.0.contains("buffer is full"), "{failed}");
    assert!(progress.check().is_err(), "the session is told to end");
    assert_eq!(
        handle.buffered(),
        4,
        "the refused chunk's events are still kept"
    );
}

#[tokio::test]
async fn a_store_that_falls_behind_slows_sessions_down_instead_of_ending_them() {
    let f = fixture().await;
    let (settings, journal_dir) = journaled(&f);
    let settings = RecorderSettings {
        max_buffered_events: 6,
        ..settings
    };
    std::fs::create_dir_all(&journal_dir).unwrap();
    let journal = crate::record::journal::Journal::open(&journal_dir).unwrap();
    // The writer is not running yet: the store is "slow".
    let (writer, handle) = writer(f.store.clone(), f.key.clone(), &settings, Some(journal));
    let target = target(RecordingPolicy::Buffered);
    let info = session(&f.store, &target).await;
    let mut tap = buffered_tap(&handle, info.session_id);
    // Under half the bound: journaled, forwarded at once.
    tap.frame(Direction::ClientToServer, frame(b'Q', b"select 1\0"));
    assert_eq!(tap.chunk_done(Direction::ClientToServer), Ok(Release::Now));
    // Over half: the chunk waits for its commit rather than the session being ended later.
    tap.frame(Direction::ClientToServer, frame(b'Q', b"select 2\0"));
    tap.frame(Direction::ClientToServer, frame(b'Q', b"select 3\0"));
    assert_eq!(
        tap.chunk_done(Direction::ClientToServer),
        Ok(Release::AfterCommit)
    );
    let waiting = poll_fn(|cx| std::task::Poll::Ready(tap.poll_release(cx).is_pending())).await;
    assert!(waiting, "held until the store catches up");
    // The store catches up: the chunk goes, the session was never failed.
    let running = tokio::spawn(writer.run(std::future::pending()));
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        poll_fn(|cx| tap.poll_release(cx)),
    )
    .await
    .expect("released once committed")
    .expect("the session goes on");
    assert!(!handle.behind());
    running.abort();
}

#[tokio::test]
async fn the_writer_drains_everything_it_was_given_before_shutdown_returns() {
    let f = fixture().await;
    let recorder = StoreRecorder::start(f.store.clone(), f.key.clone(), &settings()).unwrap();
    let target = target(RecordingPolicy::Buffered);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let info = session(&f.store, &target).await;
        let mut tap = recorder.start(&info).unwrap().unwrap();
        for i in 0..50 {
            tap.frame(
                Direction::ClientToServer,
                frame(b'Q', format!("select {i}\0").as_bytes()),
            );
            tap.chunk_done(Direction::ClientToServer).unwrap();
        }
        tap.end(&session_end());
        ids.push(info.session_id);
    }
    assert_eq!(recorder.shutdown().await, 0);
    assert_eq!(recorder.buffered(), 0);
    for id in ids {
        let stored = f.store.session_events(id, 0, 1000).await.unwrap();
        assert_eq!(stored.len(), 52);
        let seal = f.store.recording_seal(id).await.unwrap().unwrap();
        chain::verify(id, &stored, Some(&seal), &f.key.verifier()).unwrap();
    }
}

#[tokio::test]
async fn with_a_journal_strict_chunks_go_at_once_and_a_clean_stop_leaves_no_segment() {
    let f = fixture().await;
    let (settings, journal_dir) = journaled(&f);
    let recorder = StoreRecorder::start(f.store.clone(), f.key.clone(), &settings).unwrap();
    let info = session(&f.store, &target(RecordingPolicy::Strict)).await;
    let mut tap = recorder.start(&info).unwrap().unwrap();
    tap.frame(Direction::ClientToServer, frame(b'Q', b"select 1\0"));
    assert_eq!(tap.chunk_done(Direction::ClientToServer), Ok(Release::Now));
    let segments = crate::record::journal::segments(&journal_dir).unwrap();
    assert_eq!(segments.len(), 1);
    let (lines, _) = crate::record::journal::read_segment(&segments[0]).unwrap();
    assert_eq!(
        lines.len(),
        2,
        "start and query journaled before the chunk goes"
    );
    tap.end(&session_end());
    assert_eq!(recorder.shutdown().await, 0);
    assert!(
        crate::record::journal::segments(&journal_dir)
            .unwrap()
            .is_empty()
    );
    let stored = f
        .store
        .session_events(info.session_id, 0, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
}

#[tokio::test]
async fn what_a_killed_gateway_journaled_is_stored_ended_and_sealed_at_the_next_start() {
    let f = fixture().await;
    let (settings, journal_dir) = journaled(&f);
    let info = session(&f.store, &target(RecordingPolicy::Strict)).await;
    {
        // The writer never runs: as if the process died right after the hand-over.
        let journal = crate::record::journal::Journal::open(&journal_dir).unwrap();
        let (_writer, handle) = writer(f.store.clone(), f.key.clone(), &settings, Some(journal));
        let event = |seq, sql: &str| Event {
            seq,
            at: Utc::now(),
            kind: crate::record::event::EventKind::Query {
                sql: crate::record::event::Capped {
                    text: sql.into(),
                    len: sql.len() as u64,
                    hex: false,
                    redacted: false,
                },
                class: crate::record::event::StatementClass::Write,
                risks: vec![],
            },
        };
        let progress = handle
            .start(info.session_id, RecordingPolicy::Strict, event(0, "start"))
            .unwrap();
        let handover = handle
            .submit(
                &progress,
                &mut vec![event(1, "delete from t where id = 1")],
                true,
            )
            .unwrap();
        assert_eq!(handover, Handover::Journaled);
    }
    assert!(
        f.store
            .session_events(info.session_id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let report = crate::record::recover::recover(&journal_dir, f.store.as_ref(), &f.key)
        .await
        .unwrap();
    assert_eq!(report.sessions, 1);
    assert_eq!(
        report.events, 3,
        "two journaled events and the end that says what happened"
    );
    let stored = f
        .store
        .session_events(info.session_id, 0, 10)
        .await
        .unwrap();
    assert!(stored[1].body.contains("delete from t where id = 1"));
    assert!(stored[2].body.contains("stopped abruptly"));
    let seal = f
        .store
        .recording_seal(info.session_id)
        .await
        .unwrap()
        .unwrap();
    chain::verify(info.session_id, &stored, Some(&seal), &f.key.verifier()).unwrap();
    let row = f.store.session(info.session_id).await.unwrap().unwrap();
    assert_eq!(row.end_reason, Some(EndReason::Error));
    assert!(
        crate::record::journal::segments(&journal_dir)
            .unwrap()
            .is_empty()
    );
    // A second start finds nothing to do.
    let again = crate::record::recover::recover(&journal_dir, f.store.as_ref(), &f.key)
        .await
        .unwrap();
    assert_eq!(again.segments, 0);
}

#[tokio::test]
async fn a_full_disk_under_the_journal_ends_the_session_instead_of_forwarding() {
    let f = fixture().await;
    let (settings, journal_dir) = journaled(&f);
    let mut journal = crate::record::journal::Journal::open(&journal_dir).unwrap();
    journal.simulate_full_disk();
    let (_writer, handle) = writer(f.store.clone(), f.key.clone(), &settings, Some(journal));
    let info = session(&f.store, &target(RecordingPolicy::Buffered)).await;
    let event = Event {
        seq: 0,
        at: Utc::now(),
        kind: crate::record::event::EventKind::Sync,
    };
    let Err(failed) = handle.start(info.session_id, RecordingPolicy::Buffered, event) else {
        panic!("a session whose events cannot be journaled must not start");
    };
    assert!(
        failed.0.contains("cannot write the recording journal") && failed.0.contains("space"),
        "{failed}"
    );
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_not_stored_twice() {
    let f = fixture().await;
    let (mut writer, handle) = writer(f.store.clone(), f.key.clone(), &settings(), None);
    let target = target(RecordingPolicy::Buffered);
    let (a, b) = (
        session(&f.store, &target).await,
        session(&f.store, &target).await,
    );
    let mut taps = vec![
        buffered_tap(&handle, a.session_id),
        buffered_tap(&handle, b.session_id),
    ];
    for tap in &mut taps {
        for i in 0..3 {
            tap.frame(
                Direction::ClientToServer,
                frame(b'Q', format!("select {i}\0").as_bytes()),
            );
            tap.chunk_done(Direction::ClientToServer).unwrap();
        }
    }
    let jobs = std::mem::take(&mut handle.inner.queue.lock().unwrap().jobs);
    writer.chain(jobs).await;
    assert_eq!(writer.backlog.len(), 2, "one block per session and round");
    assert_eq!(handle.buffered(), 8);
    // An earlier attempt committed the first block, but its answer never came back.
    writer
        .store
        .append_blocks(&[writer.backlog[0].clone()])
        .await
        .unwrap();

    assert!(writer.write_backlog().await, "the retry succeeds");
    assert!(writer.backlog.is_empty());
    assert_eq!(handle.buffered(), 0);
    for info in [&a, &b] {
        let stored = f
            .store
            .session_events(info.session_id, 0, 100)
            .await
            .unwrap();
        assert_eq!(stored.len(), 4, "each event once");
        chain::verify(info.session_id, &stored, None, &f.key.verifier()).unwrap();
    }

    // A store holding something else under those seqs is not papered over.
    let c = session(&f.store, &target).await;
    buffered_tap(&handle, c.session_id);
    let jobs = std::mem::take(&mut handle.inner.queue.lock().unwrap().jobs);
    writer.chain(jobs).await;
    let mut forged = EventBlock::new(c.session_id, 0, chain::genesis(c.session_id));
    forged
        .push(Utc::now(), "sync", r#"{"other":1}"#, &[7; 32])
        .unwrap();
    f.store.append_blocks(&[forged]).await.unwrap();
    assert!(
        !writer.write_backlog().await,
        "refused, kept for the operator"
    );
    assert_eq!(writer.backlog.len(), 1);
}
