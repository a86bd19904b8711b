//! A session's integrity as pages show it, known without reading its recording: the statement
//! indexer checks the hash chain as it folds the events (`session_stats.chain_*`, migration
//! 0009), and only the seal, one signature, is checked here.
//!
//! The full check, event by event, is `pgbastion verify` and the console's integrity panel;
//! this is what a list of fifty sessions can afford on every view.

use std::path::Path;

use crate::config::Config;
use crate::keys::KeyError;

use super::chain::{ChainError, Hash, RECORDING_KEY_FILE, RecordingKey, Verifier, genesis};
use crate::store::{EndReason, RecordingPolicy, RecordingSeal, Session, SessionStats};

/// What is known of a recording's integrity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// Every event links up and the seal, signed by a known key, covers exactly them.
    Verified { events: u64, key_id: String },
    /// The chain breaks at `seq`, or (`None`) the seal does not verify or does not match it.
    Broken { seq: Option<i64>, reason: String },
    /// The session ended and its chain links up, but nothing seals it: events cut off its end
    /// would go unnoticed.
    Unsealed { events: u64 },
    /// The session is live; its events so far link up.
    Recording { events: u64 },
    /// The indexer has not checked the whole recording yet.
    Pending,
    /// Nothing was recorded: the target's policy was off, or no message was ever relayed.
    NotRecorded,
}

impl Integrity {
    /// A short label for a list or a badge.
    pub fn label(&self) -> String {
        match self {
            Integrity::Verified { .. } => "verified".into(),
            Integrity::Broken { seq: Some(seq), .. } => format!("broken at seq {seq}"),
            Integrity::Broken { seq: None, .. } => "seal invalid".into(),
            Integrity::Unsealed { .. } => "unsealed".into(),
            Integrity::Recording { .. } => "recording".into(),
            Integrity::Pending => "checking".into(),
            Integrity::NotRecorded => "not recorded".into(),
        }
    }

    /// The badge's colour class in `static/style.css`.
    pub fn css(&self) -> &'static str {
        match self {
            Integrity::Verified { .. } => "active",
            Integrity::Broken { .. } => "revoked",
            Integrity::Unsealed { .. } => "pending",
            Integrity::Recording { .. } => "issued",
            Integrity::Pending => "expired",
            Integrity::NotRecorded => "cancelled",
        }
    }

    /// One sentence for a tooltip or a panel.
    pub fn explain(&self) -> String {
        match self {
            Integrity::Verified { events, key_id } => format!(
                "{events} events link up and the seal of key {}… covers exactly them",
                &key_id[..key_id.len().min(16)]
            ),
            Integrity::Broken { reason, .. } => reason.clone(),
            Integrity::Unsealed { events } => format!(
                "{events} events link up, but the recording is not sealed, so events cut off \
                 its end would go unnoticed"
            ),
            Integrity::Recording { events } => {
                format!("live: {events} events checked so far link up")
            }
            Integrity::Pending => "the indexer has not checked the whole recording yet".into(),
            Integrity::NotRecorded => "nothing was recorded for this session".into(),
        }
    }
}

/// Judges a session from what the indexer verified (`stats`) and its seal, without reading
/// events. A seal counts only when its signature verifies with `keys` and it covers exactly the
/// events the indexer found linked, ending at the hash it found.
pub fn assess(
    session: &Session,
    stats: Option<&SessionStats>,
    seal: Option<&RecordingSeal>,
    keys: &Verifier,
) -> Integrity {
    let nothing_linked = stats.is_none_or(|s| s.chain_verified_seq.is_none());
    if session.recording == RecordingPolicy::Off && nothing_linked && seal.is_none() {
        return Integrity::NotRecorded;
    }
    let Some(stats) = stats else {
        return Integrity::Pending;
    };
    if let Some(seq) = stats.chain_broken_seq {
        return Integrity::Broken {
            seq: Some(seq),
            reason: stats.chain_broken_reason.clone().unwrap_or_default(),
        };
    }
    let events = stats.chain_verified_seq.map_or(0, |seq| seq + 1);
    let final_hash: Hash = match &stats.chain_hash {
        None => genesis(session.id),
        Some(hash) => match hash.as_slice().try_into() {
            Ok(hash) => hash,
            Err(_) => return Integrity::Pending,
        },
    };
    let events = u64::try_from(events).unwrap_or_default();
    if !stats.complete {
        return match session.ended_at {
            None => Integrity::Recording { events },
            Some(_) => Integrity::Pending,
        };
    }
    // Complete means every stored event was read; the chain check must have kept up with it
    // (a row indexed before the chain was checked has not).
    if u64::try_from(stats.indexed_seq).ok() != Some(events) {
        return Integrity::Pending;
    }
    match seal {
        Some(seal) => match keys.check_seal(session.id, events, &final_hash, seal) {
            Ok(()) => Integrity::Verified {
                events,
                key_id: seal.key_id.clone(),
            },
            Err(e) => Integrity::Broken {
                seq: e.seq().and_then(|seq| i64::try_from(seq).ok()),
                reason: e.to_string(),
            },
        },
        None if events == 0 && never_relayed(session) => Integrity::NotRecorded,
        None => Integrity::Unsealed { events },
    }
}

/// A session that ended before any message reached its target: the upstream login failed, or
/// the recorder refused the session before its first statement (the gateway says so in the
/// detail). Having no events is its normal state, not a deletion.
pub fn never_relayed(session: &Session) -> bool {
    session.end_reason == Some(EndReason::UpstreamFailed)
        || (session.end_reason == Some(EndReason::Error)
            && session
                .end_detail
                .as_deref()
                .is_some_and(|d| d.starts_with("recording failed")))
}

/// The public keys that check the seals of recordings in the store: the data directory's
/// recording key (none yet: no key, and unsealed recordings can still be judged).
pub fn data_dir_keys(data_dir: &Path) -> Result<Verifier, ChainError> {
    let mut keys = Verifier::default();
    add_data_dir_key(&mut keys, data_dir)?;
    Ok(keys)
}

/// Adds the public half of the data directory's recording key, if there is one yet, to `keys`
/// (which may hold older keys, given after a rotation).
pub fn add_data_dir_key(keys: &mut Verifier, data_dir: &Path) -> Result<(), ChainError> {
    add_key_file(keys, &data_dir.join(RECORDING_KEY_FILE))
}

/// Adds the public half of the recording key at `path`, if there is one yet, to `keys`.
pub fn add_key_file(keys: &mut Verifier, path: &Path) -> Result<(), ChainError> {
    if path.exists() {
        let key = RecordingKey::load(path)?;
        keys.add_pem(key.public_key_pem(), &path.display().to_string())?;
    }
    Ok(())
}

/// The public keys that check the seals of recordings in the store, as the configuration names
/// them: the recording key (`recording.key_file`, once it exists) and the keys it replaced
/// (`recording.retired_public_keys`), so that recordings sealed before a rotation still verify.
pub fn configured_keys(config: &Config) -> Result<Verifier, ChainError> {
    let mut keys = retired_keys(config)?;
    add_key_file(&mut keys, &config.recording_key_path())?;
    Ok(keys)
}

/// Only the retired keys of `recording.retired_public_keys`; a missing file is an error, since
/// the recordings it sealed would silently turn unverifiable.
pub fn retired_keys(config: &Config) -> Result<Verifier, ChainError> {
    let mut keys = Verifier::default();
    for path in &config.recording.retired_public_keys {
        let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            action: "read the retired recording public key (recording.retired_public_keys)",
            path: path.clone(),
            source,
        })?;
        keys.add_pem(&pem, &path.display().to_string())?;
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::record::chain::link;

    fn session(ended: bool) -> Session {
        let now = Utc::now();
        Session {
            id: Uuid::new_v4(),
            person_login: "alice".into(),
            target_id: Uuid::new_v4(),
            target_name: "shop".into(),
            db_role: "app_ro".into(),
            credential_id: Uuid::new_v4(),
            client_addr: "192.0.2.7:5000".into(),
            application_name: None,
            tls_version: None,
            started_at: now,
            ended_at: ended.then_some(now),
            end_reason: ended.then_some(EndReason::ClientQuit),
            end_detail: None,
            bytes_client_to_server: 0,
            bytes_server_to_client: 0,
            recording: RecordingPolicy::Strict,
            groups: Vec::new(),
        }
    }

    /// Stats of a session whose first `events` events the indexer found linked, ending at
    /// `hash`.
    fn stats(events: i64, hash: Option<Hash>, complete: bool) -> SessionStats {
        SessionStats {
            statements: 0,
            errors: 0,
            risky: 0,
            indexed_seq: events,
            complete,
            chain_verified_seq: (events > 0).then_some(events - 1),
            chain_hash: hash.map(|h| h.to_vec()),
            chain_broken_seq: None,
            chain_broken_reason: None,
        }
    }

    struct Keys {
        key: RecordingKey,
        _dir: tempfile::TempDir,
    }

    fn keys() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let key = RecordingKey::load_or_create(&dir.path().join(RECORDING_KEY_FILE)).unwrap();
        Keys { key, _dir: dir }
    }

    /// A chain of three (made-up) events of `session` and its final hash.
    fn three_events(session: &Session) -> Hash {
        (0..3).fold(genesis(session.id), |prev, i| link(&prev, &format!("{i}")))
    }

    #[test]
    fn sealed_session_whose_chain_the_indexer_checked_is_verified() {
        let keys = keys();
        let s = session(true);
        let hash = three_events(&s);
        let seal = keys.key.seal(s.id, 3, &hash);
        let got = assess(
            &s,
            Some(&stats(3, Some(hash), true)),
            Some(&seal),
            &keys.key.verifier(),
        );
        assert_eq!(
            got,
            Integrity::Verified {
                events: 3,
                key_id: keys.key.key_id().to_string()
            }
        );
        assert_eq!((got.label().as_str(), got.css()), ("verified", "active"));
    }

    #[test]
    fn a_chain_the_indexer_found_broken_is_broken_at_its_seq() {
        let keys = keys();
        let s = session(true);
        let mut st = stats(2, Some(three_events(&s)), true);
        st.chain_broken_seq = Some(2);
        st.chain_broken_reason = Some("event at seq 2: edited".into());
        let seal = keys.key.seal(s.id, 3, &three_events(&s));
        let got = assess(&s, Some(&st), Some(&seal), &keys.key.verifier());
        assert_eq!(
            got,
            Integrity::Broken {
                seq: Some(2),
                reason: "event at seq 2: edited".into()
            }
        );
        assert_eq!(got.label(), "broken at seq 2");
    }

    #[test]
    fn a_seal_counts_only_with_a_valid_signature_over_what_the_indexer_verified() {
        let keys = keys();
        let s = session(true);
        let hash = three_events(&s);
        let verifier = keys.key.verifier();
        // Truncated: the seal covers three events, the chain holds two.
        let two = (0..2).fold(genesis(s.id), |prev, i| link(&prev, &format!("{i}")));
        let seal = keys.key.seal(s.id, 3, &hash);
        let got = assess(&s, Some(&stats(2, Some(two), true)), Some(&seal), &verifier);
        assert!(
            matches!(&got, Integrity::Broken { seq: Some(2), reason } if reason.contains("truncated")),
            "{got:?}"
        );
        // Rewritten: same count, another final hash.
        let got = assess(&s, Some(&stats(3, Some(two), true)), Some(&seal), &verifier);
        assert!(
            matches!(&got, Integrity::Broken { seq: None, reason } if reason.contains("rewritten")),
            "{got:?}"
        );
        // A forged signature, and a key nobody gave the console.
        let mut forged = seal.clone();
        forged.signature[0] ^= 1;
        let got = assess(
            &s,
            Some(&stats(3, Some(hash), true)),
            Some(&forged),
            &verifier,
        );
        assert!(
            matches!(&got, Integrity::Broken { seq: None, reason } if reason.contains("not valid")),
            "{got:?}"
        );
        assert_eq!(got.label(), "seal invalid");
        let got = assess(
            &s,
            Some(&stats(3, Some(hash), true)),
            Some(&seal),
            &Verifier::default(),
        );
        assert!(
            matches!(&got, Integrity::Broken { seq: None, reason } if reason.contains("not among the public keys")),
            "{got:?}"
        );
    }

    #[test]
    fn ended_session_without_a_seal_is_unsealed() {
        let keys = keys();
        let s = session(true);
        let got = assess(
            &s,
            Some(&stats(3, Some(three_events(&s)), true)),
            None,
            &keys.key.verifier(),
        );
        assert_eq!(got, Integrity::Unsealed { events: 3 });
        assert_eq!(got.css(), "pending");
    }

    #[test]
    fn live_session_is_recording_with_the_events_checked_so_far() {
        let s = session(false);
        let got = assess(
            &s,
            Some(&stats(3, Some(three_events(&s)), false)),
            None,
            &Verifier::default(),
        );
        assert_eq!(got, Integrity::Recording { events: 3 });
    }

    #[test]
    fn ended_session_the_indexer_has_not_finished_is_pending() {
        let s = session(true);
        let keys = Verifier::default();
        assert_eq!(assess(&s, None, None, &keys), Integrity::Pending);
        let hash = three_events(&s);
        assert_eq!(
            assess(&s, Some(&stats(3, Some(hash), false)), None, &keys),
            Integrity::Pending
        );
        // Complete, but the chain check is behind the fold (indexed before it was checked).
        let mut behind = stats(3, Some(hash), true);
        behind.indexed_seq = 10;
        assert_eq!(assess(&s, Some(&behind), None, &keys), Integrity::Pending);
    }

    #[test]
    fn sessions_without_a_recording_are_not_recorded() {
        let keys = Verifier::default();
        let mut off = session(true);
        off.recording = RecordingPolicy::Off;
        assert_eq!(
            assess(&off, Some(&stats(0, None, true)), None, &keys),
            Integrity::NotRecorded
        );
        assert_eq!(assess(&off, None, None, &keys), Integrity::NotRecorded);
        let mut failed = session(true);
        failed.end_reason = Some(EndReason::UpstreamFailed);
        assert_eq!(
            assess(&failed, Some(&stats(0, None, true)), None, &keys),
            Integrity::NotRecorded
        );
        // A recorded session with no events and no seal lost them: unsealed, not "nothing".
        let s = session(true);
        assert_eq!(
            assess(&s, Some(&stats(0, None, true)), None, &keys),
            Integrity::Unsealed { events: 0 }
        );
    }

    #[test]
    fn configured_keys_are_the_key_file_and_the_retired_public_keys() {
        let dir = tempfile::tempdir().unwrap();
        let old = RecordingKey::load_or_create(&dir.path().join("old.key")).unwrap();
        let old_pub = dir.path().join("old.pub");
        std::fs::write(&old_pub, old.public_key_pem()).unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        config.recording.key_file = Some(dir.path().join("new.key"));
        config.recording.retired_public_keys = vec![old_pub];
        assert_eq!(configured_keys(&config).unwrap().key_ids(), [old.key_id()]);
        let new = RecordingKey::load_or_create(&dir.path().join("new.key")).unwrap();
        let mut both = vec![old.key_id(), new.key_id()];
        both.sort_unstable();
        assert_eq!(configured_keys(&config).unwrap().key_ids(), both);
        config.recording.retired_public_keys = vec![dir.path().join("gone.pub")];
        let err = configured_keys(&config).unwrap_err().to_string();
        assert!(
            err.contains("gone.pub") && err.contains("retired_public_keys"),
            "{err}"
        );
    }

    #[test]
    fn keys_of_a_data_directory_are_its_recording_key_or_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(data_dir_keys(dir.path()).unwrap().key_ids().is_empty());
        let key = RecordingKey::load_or_create(&dir.path().join(RECORDING_KEY_FILE)).unwrap();
        assert_eq!(data_dir_keys(dir.path()).unwrap().key_ids(), [key.key_id()]);
    }
}
