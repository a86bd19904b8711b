//! `pgbastion verify`: check that recordings are complete and unaltered, from the store or from
//! an exported file, with only public keys.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{ArgGroup, Args};
use gateway::config::Config;
use gateway::record::chain::{ChainVerifier, RecordingKey, Verifier, VerifyReport, verify};
use gateway::record::export::read_jsonl;
use gateway::record::integrity::{configured_keys, never_relayed};
use gateway::store::{RecordingPolicy, Session, Store};
use uuid::Uuid;

use super::Ctx;

/// Events read from the store per query: bounded memory for any length of recording.
const PAGE: i64 = 1000;

/// The full `--help` text (on the subcommand too: its doc comment would replace it).
pub const LONG_ABOUT: &str = "Check that recordings are complete and unaltered: recompute each session's \
                                hash chain from its first event, check the signed seal, and name the first \
                                event that does not match (edited, deleted, out of order, or cut off the end). \
                                Exits 1 when a recording fails.\n\n\
                                From the store, the recording key (recording.key_file, else the data \
                                directory's) and the retired keys of recording.retired_public_keys are \
                                used; --public-key adds more. An exported file needs only the \
                                public key.\n\n\
                                Examples:\n  \
                                pgbastion verify 0b6f0c1e-8a52-4a4e-9d0e-1f1f7d1c2a3b\n  \
                                pgbastion verify --all\n  \
                                pgbastion verify --show-public-key > recording.pub\n  \
                                pgbastion verify --file session.jsonl --public-key recording.pub";

#[derive(Debug, Args)]
#[command(
    long_about = LONG_ABOUT,
    group(ArgGroup::new("what").required(true).args(["session", "all", "file", "show_public_key"]))
)]
pub struct VerifyArgs {
    /// Session id to verify, from the store.
    session: Option<Uuid>,
    /// Verify every session in the store.
    #[arg(long)]
    all: bool,
    /// A JSONL export to verify offline (no store needed).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// PEM file of public keys that may have sealed the recordings (repeatable).
    #[arg(long = "public-key", value_name = "PATH")]
    public_keys: Vec<PathBuf>,
    /// Print the public half of the recording key, to verify exports elsewhere or to keep it
    /// (recording.retired_public_keys) before the key is rotated.
    #[arg(long)]
    show_public_key: bool,
}

pub async fn run(args: VerifyArgs, config: Config) -> anyhow::Result<()> {
    let key_path = config.recording_key_path();
    if args.show_public_key {
        if !key_path.exists() {
            bail!(
                "there is no recording key at {} yet: the gateway creates it when it records its \
                 first session",
                key_path.display()
            );
        }
        let key = RecordingKey::load(&key_path)?;
        print!("{}", key.public_key_pem());
        return Ok(());
    }
    let mut keys = Verifier::default();
    add_key_files(&mut keys, &args.public_keys)?;
    if let Some(file) = &args.file {
        if args.public_keys.is_empty() {
            bail!(
                "--file needs --public-key PATH: the recording key's public half (run \
                 `pgbastion verify --show-public-key` where the gateway runs)"
            );
        }
        return verify_file(file, &keys);
    }
    // Recordings in the store were sealed by the recording key, or by the keys it replaced
    // (configured, or passed in); with no key yet, unsealed recordings can still be checked.
    let mut keys = configured_keys(&config)?;
    add_key_files(&mut keys, &args.public_keys)?;
    let ctx = Ctx::open(config).await?;
    let store = ctx.store.as_ref();
    if let Some(id) = args.session {
        let session = store
            .session(id)
            .await?
            .with_context(|| format!("session {id} does not exist"))?;
        let line = verify_stored(store, &session, &keys).await?;
        println!("{line}");
        return Ok(());
    }
    let sessions = store.list_sessions(i64::MAX).await?;
    let mut failed = 0;
    for session in &sessions {
        match verify_stored(store, session, &keys).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                failed += 1;
                println!("{e:#}");
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} sessions failed verification",
            sessions.len()
        );
    }
    Ok(())
}

/// Adds the keys of `--public-key` files.
fn add_key_files(keys: &mut Verifier, paths: &[PathBuf]) -> anyhow::Result<()> {
    for path in paths {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the public key {}", path.display()))?;
        keys.add_pem(&pem, &path.display().to_string())?;
    }
    Ok(())
}

fn verify_file(path: &Path, keys: &Verifier) -> anyhow::Result<()> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the export {}", path.display()))?;
    let export = read_jsonl(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a readable export", path.display()))?;
    let id = export.header.session_id;
    let report = verify(id, &export.events, export.seal.as_ref(), keys)
        .with_context(|| format!("session {id}"))?;
    if !report.sealed {
        bail!("session {id}: {}", unsealed(report.events));
    }
    println!("{}", intact(&report));
    Ok(())
}

/// Checks one session of the store and returns the line to print; the error names the session.
async fn verify_stored(
    store: &dyn Store,
    session: &Session,
    keys: &Verifier,
) -> anyhow::Result<String> {
    let id = session.id;
    let mut verifier = ChainVerifier::new(id);
    let mut from_seq = 0;
    loop {
        let page = store.session_events(id, from_seq, PAGE).await?;
        for event in &page {
            verifier
                .push(event)
                .with_context(|| format!("session {id}"))?;
        }
        match page.last() {
            Some(last) if page.len() as i64 == PAGE => from_seq = last.seq + 1,
            _ => break,
        }
    }
    let seal = store.recording_seal(id).await?;
    let report = verifier
        .finish(seal.as_ref(), keys)
        .with_context(|| format!("session {id}"))?;
    if report.sealed {
        return Ok(intact(&report));
    }
    let live = session.ended_at.is_none();
    let never_relayed = never_relayed(session);
    if report.events == 0 && session.recording == RecordingPolicy::Off {
        return Ok(format!(
            "session {id}: not recorded (its target's recording policy was off)"
        ));
    }
    match (report.events, live, never_relayed) {
        (0, _, true) => Ok(format!(
            "session {id}: no recording (it ended before any statement reached the target)"
        )),
        (n, true, _) => Ok(format!(
            "session {id}: {n} events so far, chain intact, live (sealed when it ends)"
        )),
        (0, false, false) => bail!(
            "session {id}: no recording: no events and no seal (recorded by a pgbastion without \
             recording, or its events and seal were deleted)"
        ),
        (n, false, _) => bail!("session {id}: {}", unsealed(n)),
    }
}

fn unsealed(events: u64) -> String {
    format!(
        "{events} events, chain intact, but the recording is not sealed (session still live or \
         gateway killed), so events cut off its end would go unnoticed"
    )
}

fn intact(report: &VerifyReport) -> String {
    let key = report.key_id.as_deref().unwrap_or_default();
    format!(
        "session {}: {} events, chain intact, sealed by key {}…",
        report.session_id,
        report.events,
        &key[..key.len().min(16)]
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use gateway::record::chain::{Chain, RECORDING_KEY_FILE};
    use gateway::record::event::{Event, EventKind};
    use gateway::record::export::write_jsonl;
    use gateway::store::{EndReason, NewSession, RecordingSeal, SessionEnd, StoredEvent};

    use super::*;

    /// A scratch directory removed on drop (this crate has no tempfile).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            let dir = std::env::temp_dir().join(format!("pgbastion-verify-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn recording(session_id: Uuid, key: &RecordingKey) -> (Vec<StoredEvent>, RecordingSeal) {
        let mut chain = Chain::new(session_id);
        let kinds = [
            EventKind::Sync,
            EventKind::ParameterStatus {
                name: "TimeZone".into(),
                value: "UTC".into(),
            },
            EventKind::ReadyForQuery { status: 'I' },
        ];
        let events = kinds
            .into_iter()
            .map(|kind| {
                let event = Event {
                    seq: chain.next_seq(),
                    at: Utc::now(),
                    kind,
                };
                chain.append(&event).unwrap()
            })
            .collect();
        (events, chain.seal(key))
    }

    async fn store_with_session(scratch: &Scratch, ended: bool) -> (Arc<dyn Store>, Session) {
        let url = format!("sqlite://{}", scratch.0.join("pgbastion.db").display());
        let store = gateway::store::open(&url).await.unwrap();
        let id = Uuid::new_v4();
        store
            .insert_session(&NewSession {
                id,
                person_login: "alice".into(),
                target_id: Uuid::new_v4(),
                target_name: "shop".into(),
                db_role: "app_ro".into(),
                credential_id: Uuid::new_v4(),
                client_addr: "127.0.0.1:50000".into(),
                application_name: None,
                tls_version: None,
                started_at: Utc::now(),
                recording: gateway::store::RecordingPolicy::Strict,
                groups: Vec::new(),
            })
            .await
            .unwrap();
        if ended {
            let end = SessionEnd {
                ended_at: Utc::now(),
                reason: EndReason::ClientQuit,
                detail: None,
                bytes_client_to_server: 0,
                bytes_server_to_client: 0,
            };
            store.end_session(id, &end).await.unwrap();
        }
        let session = store.session(id).await.unwrap().unwrap();
        (store, session)
    }

    fn key(scratch: &Scratch) -> RecordingKey {
        RecordingKey::load_or_create(&scratch.0.join(RECORDING_KEY_FILE)).unwrap()
    }

    #[tokio::test]
    async fn sealed_session_in_the_store_verifies_naming_its_key() {
        let scratch = Scratch::new();
        let key = key(&scratch);
        let (store, session) = store_with_session(&scratch, true).await;
        let (events, seal) = recording(session.id, &key);
        store.append_events(&events).await.unwrap();
        store.seal_recording(&seal).await.unwrap();
        let line = verify_stored(store.as_ref(), &session, &key.verifier())
            .await
            .unwrap();
        assert_eq!(
            line,
            format!(
                "session {}: 3 events, chain intact, sealed by key {}…",
                session.id,
                &key.key_id()[..16]
            )
        );
    }

    #[tokio::test]
    async fn a_session_whose_target_records_nothing_is_reported_not_failed() {
        let scratch = Scratch::new();
        let key = key(&scratch);
        let (store, mut session) = store_with_session(&scratch, true).await;
        session.recording = gateway::store::RecordingPolicy::Off;
        let line = verify_stored(store.as_ref(), &session, &key.verifier())
            .await
            .unwrap();
        assert!(line.ends_with("not recorded (its target's recording policy was off)"));
        // The same empty session under strict recording is a failure: its events are gone.
        session.recording = gateway::store::RecordingPolicy::Strict;
        let err = verify_stored(store.as_ref(), &session, &key.verifier())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no events and no seal"), "{err}");
    }

    #[tokio::test]
    async fn ended_session_without_a_seal_fails_as_unsealed() {
        let scratch = Scratch::new();
        let key = key(&scratch);
        let (store, session) = store_with_session(&scratch, true).await;
        store
            .append_events(&recording(session.id, &key).0)
            .await
            .unwrap();
        let err = verify_stored(store.as_ref(), &session, &key.verifier())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("the recording is not sealed"), "{err}");
    }

    #[tokio::test]
    async fn live_session_without_a_seal_is_reported_live() {
        let scratch = Scratch::new();
        let key = key(&scratch);
        let (store, session) = store_with_session(&scratch, false).await;
        store
            .append_events(&recording(session.id, &key).0)
            .await
            .unwrap();
        let line = verify_stored(store.as_ref(), &session, &key.verifier())
            .await
            .unwrap();
        assert!(line.ends_with("3 events so far, chain intact, live (sealed when it ends)"));
    }

    fn export_file(scratch: &Scratch, events: &[StoredEvent], seal: &RecordingSeal) -> PathBuf {
        let path = scratch.0.join("session.jsonl");
        let file = std::fs::File::create(&path).unwrap();
        write_jsonl(file, seal.session_id, events, Some(seal)).unwrap();
        path
    }

    #[test]
    fn export_verifies_with_only_the_public_key() {
        let scratch = Scratch::new();
        let key = key(&scratch);
        let (events, seal) = recording(Uuid::new_v4(), &key);
        let path = export_file(&scratch, &events, &seal);
        let keys = Verifier::from_pem(key.public_key_pem(), "recording.pub").unwrap();
        verify_file(&path, &keys).unwrap();
    }

    #[test]
    fn tampered_export_fails_naming_the_event() {
        let scratch = Scratch::new();
        let key = key(&scratch);
        let (mut events, seal) = recording(Uuid::new_v4(), &key);
        events[1].body = events[1].body.replace("UTC", "CET");
        let path = export_file(&scratch, &events, &seal);
        let err = verify_file(&path, &key.verifier()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("event at seq 1 (parameter_status at")
                && text.ends_with("hash does not match its content (edited)"),
            "{text}"
        );
    }
}
