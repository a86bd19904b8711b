//! Throughput of the recording writer: `scripts/bench-writer` (not run in CI).
//!
//! Sixteen sessions run pgbench-like statements through the real recorder (capture, canonical
//! JSON, journal), all of them handed over before the writer may run (a single-threaded
//! runtime, and no await while handing over). Then the writer alone is timed while it chains,
//! stores (one transaction per batch) and seals them: statements and events per second into
//! SQLite (a file in a temporary directory, WAL) and into PostgreSQL (a throwaway cluster).
//!
//!   cargo run --release -p pgbastion-tests --example bench_writer -- --statements 100000
//!   ... -- --engine sqlite|postgres|both (default both) --mode simple|prepared|both
//!
//! `simple`: Query, RowDescription, DataRow, CommandComplete, ReadyForQuery (5 events).
//! `prepared`: Bind, Describe, Execute, Sync and their answers as libpq sends them for
//! `pgbench -M prepared` (8 events).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use gateway::config::RecordingConfig;
use gateway::protocol::backend;
use gateway::protocol::frame::Frame;
use gateway::record::chain::{RECORDING_KEY_FILE, RecordingKey};
use gateway::record::{
    Direction, Recorder, RecorderSettings, SessionInfo, SessionTap, StoreRecorder,
};
use gateway::store::{
    EndReason, RecordingPolicy, SessionEnd, Store, Target, UpstreamTls, postgres::PgStore,
    sqlite::SqliteStore,
};
use harness::PgCluster;
use uuid::Uuid;

const SESSIONS: usize = 16;

fn row_description() -> Frame {
    Frame::written(|out| backend::row_description(out, &[("abalance", 23)]))
}

fn answers() -> Vec<Frame> {
    vec![
        Frame::encode(b'D', &[0, 1, 0, 0, 0, 4, b'1', b'2', b'3', b'4']),
        Frame::encode(b'C', b"SELECT 1\0"),
        Frame::encode(b'Z', b"I"),
    ]
}

const SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";

/// The Parse a prepared session sends once.
fn prepare(tap: &mut dyn SessionTap) -> Result<()> {
    let mut parse = b"P0_1\0".to_vec();
    parse.extend_from_slice(SQL.as_bytes());
    parse.extend_from_slice(&[0, 0, 1, 0, 0, 0, 23]);
    tap.frame(Direction::ClientToServer, Frame::encode(b'P', &parse));
    tap.frame(Direction::ClientToServer, Frame::encode(b'S', b""));
    tap.chunk_done(Direction::ClientToServer)?;
    tap.frame(Direction::ServerToClient, Frame::encode(b'1', b""));
    tap.frame(Direction::ServerToClient, Frame::encode(b'Z', b"I"));
    tap.chunk_done(Direction::ServerToClient)?;
    Ok(())
}

/// One statement, as a client chunk and a server chunk.
fn statement(tap: &mut dyn SessionTap, prepared: bool, i: usize) -> Result<()> {
    let aid = (i * 7_919 % 1_000_000).to_string();
    if prepared {
        let mut bind = b"\0P0_1\0".to_vec();
        bind.extend_from_slice(&[0, 0, 0, 1]);
        bind.extend_from_slice(&(aid.len() as i32).to_be_bytes());
        bind.extend_from_slice(aid.as_bytes());
        bind.extend_from_slice(&[0, 0]);
        tap.frame(Direction::ClientToServer, Frame::encode(b'B', &bind));
        tap.frame(Direction::ClientToServer, Frame::encode(b'D', b"P\0"));
        tap.frame(
            Direction::ClientToServer,
            Frame::encode(b'E', b"\0\0\0\0\0"),
        );
        tap.frame(Direction::ClientToServer, Frame::encode(b'S', b""));
    } else {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};\0");
        tap.frame(
            Direction::ClientToServer,
            Frame::encode(b'Q', sql.as_bytes()),
        );
    }
    tap.chunk_done(Direction::ClientToServer)?;
    if prepared {
        tap.frame(Direction::ServerToClient, Frame::encode(b'2', b""));
    }
    tap.frame(Direction::ServerToClient, row_description());
    for answer in answers() {
        tap.frame(Direction::ServerToClient, answer);
    }
    tap.chunk_done(Direction::ServerToClient)?;
    Ok(())
}

async fn run(store: Arc<dyn Store>, statements: usize, prepared: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = Arc::new(RecordingKey::load_or_create(
        &dir.path().join(RECORDING_KEY_FILE),
    )?);
    let config = RecordingConfig {
        // Everything is handed over before the writer runs: no bound, no back-pressure.
        max_buffered_events: usize::MAX / 4,
        ..RecordingConfig::default()
    };
    let settings = RecorderSettings::from_config(&config, dir.path());
    let recorder = StoreRecorder::start(store.clone(), key, &settings)?;
    let target = Arc::new(Target {
        id: Uuid::new_v4(),
        name: "bench".into(),
        host: "db".into(),
        port: 5432,
        database: "bench".into(),
        tls_mode: UpstreamTls::Disable,
        ca_pem: None,
        upstream_user: "app".into(),
        upstream_secret_sealed: None,
        enabled: true,
        created_at: Utc::now(),
        recording: RecordingPolicy::Buffered,
        record_max_rows: None,
        record_max_result_bytes: None,
        retention_days: None,
    });
    let mut taps = Vec::new();
    for i in 0..SESSIONS {
        let info = SessionInfo {
            session_id: Uuid::new_v4(),
            credential_id: Uuid::new_v4(),
            person_login: format!("person{i}"),
            groups: vec![],
            target: target.clone(),
            db_role: "app".into(),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
            application_name: Some("pgbench".into()),
            tls_version: Some("TLSv1.3".into()),
            started_at: Utc::now(),
        };
        store.insert_session(&info.new_session()).await?;
        let mut tap = recorder.start(&info)?.context("the session is recorded")?;
        if prepared {
            prepare(tap.as_mut())?;
        }
        taps.push(tap);
    }
    // Everything so far is stored before the clock starts.
    wait_until_stored(&recorder).await;

    let handed = Instant::now();
    for i in 0..statements {
        statement(taps[i % SESSIONS].as_mut(), prepared, i)?;
    }
    let events = recorder.buffered();
    let relay_side = handed.elapsed();
    let started = Instant::now();
    wait_until_stored(&recorder).await;
    let stored = started.elapsed();
    for tap in taps {
        tap.end(&SessionEnd {
            ended_at: Utc::now(),
            reason: EndReason::ClientQuit,
            detail: None,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
        });
    }
    let lost = recorder.shutdown().await;
    if lost != 0 {
        bail!("{lost} events were not stored");
    }
    let secs = stored.as_secs_f64();
    println!(
        "  {:<8} {statements} statements, {events} events: stored in {:.2} s = {:.0} statements/s, \
         {:.0} events/s (handing over took {:.2} µs per statement)",
        if prepared { "prepared" } else { "simple" },
        secs,
        statements as f64 / secs,
        events as f64 / secs,
        relay_side.as_secs_f64() * 1e6 / statements as f64,
    );
    Ok(())
}

async fn wait_until_stored(recorder: &StoreRecorder) {
    while recorder.buffered() > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn main() -> Result<()> {
    let mut statements = 100_000;
    let mut engine = "both".to_string();
    let mut mode = "both".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--statements" => statements = args.next().context("--statements N")?.parse()?,
            "--engine" => engine = args.next().context("--engine sqlite|postgres|both")?,
            "--mode" => mode = args.next().context("--mode simple|prepared|both")?,
            other => bail!("unknown argument {other}"),
        }
    }
    let modes: Vec<bool> = match mode.as_str() {
        "simple" => vec![false],
        "prepared" => vec![true],
        "both" => vec![false, true],
        other => bail!("--mode {other}: simple, prepared or both"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if matches!(engine.as_str(), "sqlite" | "both") {
            println!("SQLite (file in a temporary directory, WAL)");
            for &prepared in &modes {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}", dir.path().join("store.db").display());
                let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await?);
                run(store, statements, prepared).await?;
            }
        }
        if matches!(engine.as_str(), "postgres" | "both") {
            println!("PostgreSQL (throwaway cluster on this machine)");
            let cluster = PgCluster::start()?;
            for (n, &prepared) in modes.iter().enumerate() {
                let db = format!("store{n}");
                cluster.create_database(&db)?;
                let store: Arc<dyn Store> =
                    Arc::new(PgStore::open(&cluster.superuser_url(&db)).await?);
                run(store, statements, prepared).await?;
            }
        }
        Ok(())
    })
}
