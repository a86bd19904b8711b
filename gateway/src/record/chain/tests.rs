use std::os::unix::fs::PermissionsExt;

use chrono::{TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::record::event::{
    Capped, Column, Event, EventKind, Param, ServerMessage, StatementClass,
};

fn capped(text: &str) -> Capped {
    Capped {
        text: text.into(),
        len: text.len() as u64,
        hex: false,
        redacted: false,
    }
}

fn server_message() -> ServerMessage {
    ServerMessage {
        severity: "ERROR".into(),
        code: "42P01".into(),
        message: "relation \"nope\" does not exist".into(),
        detail: None,
        hint: None,
        position: Some(15),
    }
}

fn session_start(session_id: Uuid) -> EventKind {
    EventKind::SessionStart {
        session_id,
        credential_id: Uuid::new_v4(),
        person: "alice".into(),
        groups: vec!["dev".into()],
        target: "shop".into(),
        db_role: "app_ro".into(),
        client_addr: "127.0.0.1:50000".into(),
        application_name: Some("psql".into()),
        tls_version: Some("TLSv1_3".into()),
        format_version: crate::record::event::FORMAT_VERSION,
    }
}

/// One event of every kind, so that tests cover every tag.
fn every_kind(session_id: Uuid) -> Vec<EventKind> {
    vec![
        session_start(session_id),
        EventKind::Query {
            sql: capped("select 1"),
            class: StatementClass::Read,
            risks: vec![],
        },
        EventKind::Parse {
            statement: "s1".into(),
            sql: capped("select $1::int"),
            param_types: vec![23],
            class: StatementClass::Read,
            risks: vec![],
        },
        EventKind::Bind {
            portal: String::new(),
            statement: "s1".into(),
            params: vec![Param {
                type_oid: 23,
                value: None,
            }],
        },
        EventKind::Execute {
            portal: String::new(),
            statement: "s1".into(),
            sql: Some(capped("select $1::int")),
            max_rows: 0,
        },
        EventKind::Describe {
            target: 'S',
            name: "s1".into(),
        },
        EventKind::Close {
            target: 'P',
            name: String::new(),
        },
        EventKind::Sync,
        EventKind::Flush,
        EventKind::FunctionCall {
            function_oid: 1598,
            args: vec![],
        },
        EventKind::RowDescription {
            columns: vec![Column {
                name: "int4".into(),
                type_oid: 23,
            }],
        },
        EventKind::Rows {
            rows: vec![vec![Some(capped("1")), None]],
            omitted: 0,
        },
        EventKind::CommandComplete {
            tag: "SELECT 1".into(),
            rows: Some(1),
            duration_micros: 120,
        },
        EventKind::EmptyQuery,
        EventKind::PortalSuspended,
        EventKind::Error(server_message()),
        EventKind::Notice(server_message()),
        EventKind::ReadyForQuery { status: 'I' },
        EventKind::CopyStart {
            direction: "in".into(),
            binary: false,
        },
        EventKind::CopyData {
            data: capped("1\tx\n"),
        },
        EventKind::CopyEnd {
            direction: "in".into(),
            bytes: 4,
            rows: 1,
            outcome: "done".into(),
        },
        EventKind::Notification {
            process_id: 42,
            channel: "jobs".into(),
            payload: capped("go"),
        },
        EventKind::ParameterStatus {
            name: "TimeZone".into(),
            value: "UTC".into(),
        },
        EventKind::SessionEnd {
            reason: "client_quit".into(),
            detail: None,
            bytes_client_to_server: 100,
            bytes_server_to_client: 200,
        },
    ]
}

struct Fixture {
    _dir: tempfile::TempDir,
    key: RecordingKey,
    session_id: Uuid,
    events: Vec<StoredEvent>,
    seal: RecordingSeal,
}

impl Fixture {
    /// A sealed recording of one event of every kind.
    fn new() -> Fixture {
        Fixture::with(every_kind)
    }

    fn with(kinds: impl FnOnce(Uuid) -> Vec<EventKind>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = RecordingKey::load_or_create(&dir.path().join(RECORDING_KEY_FILE)).unwrap();
        let session_id = Uuid::new_v4();
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        let mut chain = Chain::new(session_id);
        let events = kinds(session_id)
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let event = Event {
                    seq: i as u64,
                    at: start + chrono::Duration::milliseconds(i as i64),
                    kind,
                };
                chain.append(&event).unwrap()
            })
            .collect();
        let seal = chain.seal(&key);
        Fixture {
            _dir: dir,
            key,
            session_id,
            events,
            seal,
        }
    }

    fn verify(&self, events: &[StoredEvent]) -> Result<VerifyReport, VerifyError> {
        self.verify_sealed(events, &self.seal)
    }

    fn verify_sealed(
        &self,
        events: &[StoredEvent],
        seal: &RecordingSeal,
    ) -> Result<VerifyReport, VerifyError> {
        verify(self.session_id, events, Some(seal), &self.key.verifier())
    }
}

#[test]
fn kind_names_match_the_serde_tags() {
    for kind in every_kind(Uuid::new_v4()) {
        let value = serde_json::to_value(Event {
            seq: 0,
            at: Utc::now(),
            kind: kind.clone(),
        })
        .unwrap();
        assert_eq!(value["type"], kind_name(&kind), "{kind:?}");
    }
}

#[test]
fn intact_sealed_recording_verifies() {
    let f = Fixture::new();
    let report = f.verify(&f.events).unwrap();
    assert_eq!(report.events, f.events.len() as u64);
    assert!(report.sealed);
    assert_eq!(report.key_id.as_deref(), Some(f.key.key_id()));
    assert_eq!(report.final_hash.to_vec(), f.events.last().unwrap().hash);
}

#[test]
fn stored_event_links_to_its_predecessor_and_hashes_its_body() {
    let f = Fixture::new();
    assert_eq!(f.events[0].prev_hash, genesis(f.session_id));
    assert_eq!(f.events[0].kind, "session_start");
    for pair in f.events.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        let prev: Hash = pair[0].hash.as_slice().try_into().unwrap();
        assert_eq!(pair[1].hash, link(&prev, &pair[1].body));
    }
}

#[test]
fn recording_with_only_the_session_start_verifies() {
    let f = Fixture::with(|id| vec![session_start(id)]);
    let report = f.verify(&f.events).unwrap();
    assert_eq!((report.events, report.sealed), (1, true));
}

#[test]
fn recording_without_any_event_verifies_against_a_zero_count_seal() {
    let f = Fixture::with(|_| vec![]);
    assert_eq!(f.seal.final_hash, genesis(f.session_id));
    let report = f.verify(&[]).unwrap();
    assert_eq!((report.events, report.sealed), (0, true));
}

#[test]
fn edited_event_body_is_named_by_its_seq() {
    let f = Fixture::new();
    for seq in 0..f.events.len() {
        let mut events = f.events.clone();
        // A change that keeps the JSON valid and the seq, kind and time the same.
        events[seq].body = events[seq].body.replacen('}', ",\"x\":1}", 1);
        let err = f.verify(&events).unwrap_err();
        assert!(
            matches!(&err, VerifyError::Edited { event } if event.seq == seq as i64),
            "seq {seq}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "event at seq {seq} ({} at 2026-03-01T10:00:00",
                events[seq].kind
            )),
            "{text}"
        );
        assert!(
            text.ends_with("hash does not match its content (edited)"),
            "{text}"
        );
    }
}

#[test]
fn body_edited_into_invalid_json_is_named_as_edited() {
    let f = Fixture::new();
    let mut events = f.events.clone();
    events[3].body.truncate(10);
    let err = f.verify(&events).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Edited { event } if event.seq == 3),
        "{err}"
    );
}

#[test]
fn deleted_event_is_named_by_its_seq() {
    let f = Fixture::new();
    for seq in 0..f.events.len() - 1 {
        let mut events = f.events.clone();
        events.remove(seq);
        let err = f.verify(&events).unwrap_err();
        assert_eq!(err, VerifyError::Missing { seq: seq as u64 }, "{err}");
        assert_eq!(err.to_string(), format!("seq {seq} is missing (deleted)"));
    }
}

#[test]
fn deleted_event_is_named_even_when_later_seq_columns_were_renumbered() {
    let f = Fixture::new();
    let mut events = f.events.clone();
    events.remove(5);
    for event in &mut events[5..] {
        event.seq -= 1;
    }
    assert_eq!(
        f.verify(&events).unwrap_err(),
        VerifyError::Missing { seq: 5 }
    );
}

#[test]
fn swapped_events_are_named_as_out_of_order() {
    let f = Fixture::new();
    let mut events = f.events.clone();
    events.swap(10, 11);
    let err = f.verify(&events).unwrap_err();
    assert_eq!(err.to_string(), "events 10 and 11 are out of order");
}

#[test]
fn contents_swapped_under_unchanged_seq_columns_are_named_as_out_of_order() {
    let f = Fixture::new();
    let mut events = f.events.clone();
    let (a, b) = (events[10].clone(), events[11].clone());
    events[10] = StoredEvent { seq: 10, ..b };
    events[11] = StoredEvent { seq: 11, ..a };
    assert_eq!(
        f.verify(&events).unwrap_err(),
        VerifyError::OutOfOrder {
            first: 10,
            second: 11
        }
    );
}

#[test]
fn copied_event_is_named_as_a_duplicate() {
    let f = Fixture::new();
    let mut events = f.events.clone();
    events.insert(4, events[3].clone());
    assert_eq!(
        f.verify(&events).unwrap_err(),
        VerifyError::Duplicate { seq: 3 }
    );
}

#[test]
fn truncated_tail_is_named_by_the_seal() {
    let f = Fixture::new();
    let total = f.events.len();
    let err = f.verify(&f.events[..total - 3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "chain ends at seq {} but the seal says {total} events (truncated)",
            total - 4
        )
    );
    assert_eq!(
        f.verify(&[]).unwrap_err(),
        VerifyError::Emptied {
            sealed: total as u64
        }
    );
}

#[test]
fn event_added_after_the_seal_is_detected() {
    let f = Fixture::new();
    let mut chain = Chain::after(f.events.last().unwrap()).unwrap();
    let mut events = f.events.clone();
    events.push(
        chain
            .append(&Event {
                seq: chain.next_seq(),
                at: Utc::now(),
                kind: EventKind::Sync,
            })
            .unwrap(),
    );
    let err = f.verify(&events).unwrap_err();
    assert!(matches!(err, VerifyError::Extended { .. }), "{err}");
}

#[test]
fn changed_seal_count_breaks_its_signature() {
    let f = Fixture::new();
    for count in [f.seal.event_count - 1, f.seal.event_count + 1, -1] {
        let seal = RecordingSeal {
            event_count: count,
            ..f.seal.clone()
        };
        let err = f.verify_sealed(&f.events, &seal).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "seal signature is not valid for key {} (the seal was altered)",
                f.key.key_id()
            )
        );
    }
}

#[test]
fn seal_signed_with_another_key_is_refused_naming_that_key() {
    let f = Fixture::new();
    let other = Fixture::new();
    let foreign = other.key.seal(
        f.session_id,
        f.events.len() as u64,
        &f.seal.final_hash.clone().try_into().unwrap(),
    );
    let err = f.verify_sealed(&f.events, &foreign).unwrap_err();
    assert!(
        matches!(&err, VerifyError::UnknownKey { key_id, .. } if key_id == other.key.key_id()),
        "{err}"
    );
    // Another key's signature under this key's id is a forgery.
    let forged = RecordingSeal {
        key_id: f.key.key_id().to_string(),
        ..foreign
    };
    assert!(matches!(
        f.verify_sealed(&f.events, &forged),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[test]
fn chain_rewritten_and_rehashed_is_caught_by_the_seal() {
    let f = Fixture::new();
    let mut chain = Chain::new(f.session_id);
    let rewritten: Vec<StoredEvent> = f
        .events
        .iter()
        .map(|stored| {
            let mut event: Event = serde_json::from_str(&stored.body).unwrap();
            if let EventKind::Query { sql, .. } = &mut event.kind {
                *sql = capped("select 2");
            }
            chain.append(&event).unwrap()
        })
        .collect();
    assert_eq!(
        f.verify(&rewritten).unwrap_err(),
        VerifyError::FinalHashMismatch
    );
}

#[test]
fn unsealed_recording_verifies_as_unsealed() {
    let f = Fixture::new();
    let report = verify(f.session_id, &f.events, None, &Verifier::default()).unwrap();
    assert!(!report.sealed);
    assert_eq!(report.key_id, None);
}

#[test]
fn edited_kind_column_is_named() {
    let f = Fixture::new();
    let mut events = f.events.clone();
    events[1].kind = "sync".into();
    let err = f.verify(&events).unwrap_err().to_string();
    assert!(
        err.ends_with("the stored kind is sync but its content says query (edited)"),
        "{err}"
    );
}

#[test]
fn edited_time_column_is_named_but_store_precision_is_not() {
    let f = Fixture::new();
    let mut events = f.events.clone();
    events[2].at += chrono::Duration::nanoseconds(300);
    f.verify(&events).unwrap();
    events[2].at += chrono::Duration::hours(1);
    let err = f.verify(&events).unwrap_err();
    assert!(
        matches!(err, VerifyError::ColumnEdited { column: "time", .. }),
        "{err}"
    );
}

#[test]
fn edited_prev_hash_column_is_named_as_a_broken_link() {
    let f = Fixture::new();
    let mut events = f.events.clone();
    events[6].prev_hash[0] ^= 1;
    let err = f.verify(&events).unwrap_err();
    assert!(
        matches!(&err, VerifyError::BrokenLink { event } if event.seq == 6),
        "{err}"
    );
}

#[test]
fn recording_of_another_session_does_not_verify() {
    let f = Fixture::new();
    let other = Fixture::new();
    let err = verify(other.session_id, &f.events, None, &f.key.verifier()).unwrap_err();
    assert!(matches!(err, VerifyError::ForeignEvent { .. }), "{err}");
    // Relabelled as the other session, the first event no longer links to that genesis.
    let relabelled: Vec<StoredEvent> = f
        .events
        .iter()
        .map(|e| StoredEvent {
            session_id: other.session_id,
            ..e.clone()
        })
        .collect();
    let err = verify(other.session_id, &relabelled, None, &f.key.verifier()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::BrokenLink { event } if event.seq == 0),
        "{err}"
    );
}

#[test]
fn chain_refuses_an_event_out_of_sequence() {
    let mut chain = Chain::new(Uuid::new_v4());
    let event = Event {
        seq: 1,
        at: Utc::now(),
        kind: EventKind::Sync,
    };
    assert!(matches!(
        chain.append(&event),
        Err(ChainError::OutOfSequence {
            expected: 0,
            got: 1,
            ..
        })
    ));
}

#[test]
fn old_recordings_verify_after_a_key_rotation() {
    let old = Fixture::new();
    let new = Fixture::new();
    let mut keys = Verifier::from_pem(new.key.public_key_pem(), "new.pub").unwrap();
    keys.add_pem(old.key.public_key_pem(), "old.pub").unwrap();
    assert_eq!(keys.key_ids().len(), 2);
    verify(old.session_id, &old.events, Some(&old.seal), &keys).unwrap();
    verify(new.session_id, &new.events, Some(&new.seal), &keys).unwrap();
}

#[test]
fn public_key_pem_holding_two_keys_loads_both() {
    let (a, b) = (Fixture::new(), Fixture::new());
    let both = format!("{}{}", a.key.public_key_pem(), b.key.public_key_pem());
    let keys = Verifier::from_pem(&both, "keys.pub").unwrap();
    let mut want = vec![a.key.key_id(), b.key.key_id()];
    want.sort_unstable();
    assert_eq!(keys.key_ids(), want);
}

#[test]
fn recording_key_is_private_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(RECORDING_KEY_FILE);
    let first = RecordingKey::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let again = RecordingKey::load(&path).unwrap();
    assert_eq!(first.key_id(), again.key_id());
    assert_eq!(first.public_key_pem(), again.public_key_pem());
    assert_eq!(first.key_id().len(), 64);
    assert!(
        first
            .public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
}

#[test]
fn non_ed25519_keys_are_refused_naming_where_they_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let p256 = rcgen::KeyPair::generate().unwrap();
    let path = dir.path().join(RECORDING_KEY_FILE);
    std::fs::write(&path, p256.serialize_pem()).unwrap();
    let err = RecordingKey::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("recording.key") && err.contains("Ed25519"),
        "{err}"
    );

    let err = Verifier::from_pem(&p256.public_key_pem(), "ops.pub")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ops.pub does not hold an Ed25519 public key"),
        "{err}"
    );
    let err = Verifier::from_pem("hello", "empty.pub")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no PUBLIC KEY block"), "{err}");
}

#[test]
fn seal_message_is_the_documented_layout() {
    let session_id = Uuid::new_v4();
    let message = seal_message(session_id, 0x0102, &[7; 32]);
    assert!(message.starts_with(b"pgbastion-seal-v1\0"));
    let rest = &message[18..];
    assert_eq!(&rest[..16], session_id.as_bytes());
    assert_eq!(&rest[16..24], &[0, 0, 0, 0, 0, 0, 1, 2]);
    assert_eq!(&rest[24..], &[7; 32]);
}

#[test]
fn genesis_differs_per_session() {
    assert_ne!(genesis(Uuid::new_v4()), genesis(Uuid::new_v4()));
}
