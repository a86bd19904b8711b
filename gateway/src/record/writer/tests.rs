//! The recorder from tap to store, on an in-memory SQLite store.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use chrono::Utc;

use super::*;
use crate::protocol::backend::put_message;
use crate::protocol::frame::Frame;
use crate::record::chain::{self, RECORDING_KEY_FILE};
use crate::record::{Direction, Recorder, Release, SessionInfo, StoreRecorder};
use crate::store::{self, EndReason, NewSession, RecordingPolicy, SessionEnd, Target, UpstreamTls};

fn frame(tag: u8, body: &[u8]) -> Frame {
    let mut buf = BytesMut::new();
    put_message(&mut buf, tag, |b| b.extend_from_slice(body));
    let bytes = buf.freeze();
    Frame {
        tag,
        body_len: body.len(),
        body: bytes.slice(5..),
    }
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
    store
        .insert_session(&NewSession {
            id: info.session_id,
            person_login: info.person_login.clone(),
            target_id: target.id,
            target_name: target.name.clone(),
            db_role: info.db_role.clone(),
            credential_id: info.credential_id,
            client_addr: info.client_addr.to_string(),
            application_name: info.application_name.clone(),
            tls_version: info.tls_version.clone(),
            started_at: info.started_at,
        })
        .await
        .unwrap();
    info
}

fn settings() -> RecorderSettings {
    RecorderSettings::from_config(&crate::config::RecordingConfig::default())
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
    let recorder = StoreRecorder::start(f.store.clone(), f.key.clone(), &settings());
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
    let mut row_description = Vec::new();
    row_description.extend_from_slice(&1i16.to_be_bytes());
    row_description.extend_from_slice(b"n\0");
    row_description.extend_from_slice(&[0; 6]);
    row_description.extend_from_slice(&23u32.to_be_bytes());
    row_description.extend_from_slice(&[0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    tap.frame(Direction::ServerToClient, frame(b'T', &row_description));
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
    let recorder = StoreRecorder::start(f.store.clone(), f.key.clone(), &settings());
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
    let (_writer, handle) = writer(f.store.clone(), f.key.clone(), &settings);
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
        .submit(&progress, vec![event(1), event(2)], false)
        .unwrap();
    let failed = handle.submit(&progress, vec![event(3)], false).unwrap_err();
    assert!(failed.0.contains("buffer is full"), "{failed}");
    assert!(progress.check().is_err(), "the session is told to end");
    assert_eq!(
        handle.buffered(),
        4,
        "the refused chunk's events are still kept"
    );
}

#[tokio::test]
async fn the_writer_drains_everything_it_was_given_before_shutdown_returns() {
    let f = fixture().await;
    let recorder = StoreRecorder::start(f.store.clone(), f.key.clone(), &settings());
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
