//! Checking a stored recording: recompute every link from the genesis and name the first event
//! that does not match, then check the seal.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::key::SealCheck;
use super::{Hash, Verifier, genesis, link};
use crate::store::{RecordingSeal, StoredEvent};

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub session_id: Uuid,
    /// Number of events checked.
    pub events: u64,
    /// Hash of the last event (the genesis when there is none).
    pub final_hash: Hash,
    /// False when the recording has no seal: its events are consistent, but nothing proves that
    /// none are missing at the end.
    pub sealed: bool,
    /// The key that signed the seal.
    pub key_id: Option<String>,
}

/// An event as named in reports: "event at seq 17 (query at 2026-03-01T10:00:00Z)".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    pub seq: i64,
    pub kind: String,
    pub at: DateTime<Utc>,
}

impl std::fmt::Display for EventRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "event at seq {} ({} at {})",
            self.seq,
            self.kind,
            self.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
    }
}

impl From<&StoredEvent> for EventRef {
    fn from(event: &StoredEvent) -> EventRef {
        EventRef {
            seq: event.seq,
            kind: event.kind.clone(),
            at: event.at,
        }
    }
}

/// The first thing found wrong with a recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("{event}: hash does not match its content (edited)")]
    Edited { event: EventRef },
    #[error("{event}: its content is not a recording event ({message})")]
    NotAnEvent { event: EventRef, message: String },
    #[error("{event}: the stored {column} is {stored} but its content says {hashed} (edited)")]
    ColumnEdited {
        event: EventRef,
        column: &'static str,
        stored: String,
        hashed: String,
    },
    #[error("{event} belongs to session {other} (copied from another recording)")]
    ForeignEvent { event: EventRef, other: Uuid },
    #[error(
        "{event} does not link to the event before it (that event was edited and re-hashed, or \
         events were inserted or removed before it)"
    )]
    BrokenLink { event: EventRef },
    #[error("seq {seq} is missing (deleted)")]
    Missing { seq: u64 },
    #[error("events {first} and {second} are out of order")]
    OutOfOrder { first: u64, second: u64 },
    #[error("seq {seq} appears twice (an event was copied)")]
    Duplicate { seq: u64 },
    #[error("the seal belongs to session {other}, not {session_id}")]
    ForeignSeal { session_id: Uuid, other: Uuid },
    #[error(
        "the seal was signed by key {key_id}, which is not among the public keys given ({known}); \
         pass the public key that was in use when the session ended"
    )]
    UnknownKey { key_id: String, known: String },
    #[error("seal signature is not valid for key {key_id} (the seal was altered)")]
    BadSignature { key_id: String },
    #[error("chain ends at seq {last_seq} but the seal says {sealed} events (truncated)")]
    Truncated { last_seq: u64, sealed: u64 },
    #[error("the recording has no events but the seal says {sealed} (truncated)")]
    Emptied { sealed: u64 },
    #[error(
        "the seal covers {sealed} events but the recording holds {events} (events added after the \
         seal)"
    )]
    Extended { sealed: u64, events: u64 },
    #[error(
        "the chain's final hash differs from the sealed one (the recording was rewritten and \
         re-hashed)"
    )]
    FinalHashMismatch,
}

/// The fields of a body that are also stored in columns, read back to check those columns (they
/// are outside the hash, so a changed column would otherwise go unseen).
#[derive(Deserialize)]
struct BodyHeader {
    seq: u64,
    at: DateTime<Utc>,
    #[serde(rename = "type")]
    kind: String,
}

/// Verifies a recording event by event, so that a long one can be read from the store in pages.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    session_id: Uuid,
    next_seq: u64,
    prev: Hash,
    /// An event that came before its turn: whether the one it skipped arrives next tells a swap
    /// from a deletion.
    early: Option<(StoredEvent, u64)>,
}

impl ChainVerifier {
    pub fn new(session_id: Uuid) -> ChainVerifier {
        ChainVerifier {
            session_id,
            next_seq: 0,
            prev: genesis(session_id),
            early: None,
        }
    }

    /// Continues a walk that an earlier one verified up to `seq`, the event whose hash is
    /// `hash`: the statement indexer checks each new part of a recording as it comes, without
    /// re-reading what it already checked.
    pub fn resume(session_id: Uuid, seq: u64, hash: Hash) -> ChainVerifier {
        ChainVerifier {
            session_id,
            next_seq: seq + 1,
            prev: hash,
            early: None,
        }
    }

    /// The seq the next event must carry: also how many events link up so far.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last event that linked up (the genesis while there is none).
    pub fn last_hash(&self) -> Hash {
        self.prev
    }

    /// Checks the next event in stored order.
    pub fn push(&mut self, event: &StoredEvent) -> Result<(), VerifyError> {
        if event.session_id != self.session_id {
            return Err(VerifyError::ForeignEvent {
                event: event.into(),
                other: event.session_id,
            });
        }
        let header = self.read_header(event)?;
        if let Some((early, early_seq)) = self.early.take() {
            return Err(if header.seq == self.next_seq {
                VerifyError::OutOfOrder {
                    first: self.next_seq,
                    second: early_seq,
                }
            } else {
                self.skipped(&early)
            });
        }
        if header.seq > self.next_seq {
            self.early = Some((event.clone(), header.seq));
            return Ok(());
        }
        if header.seq < self.next_seq {
            return Err(VerifyError::Duplicate { seq: header.seq });
        }
        check_columns(event, &header)?;
        if event.prev_hash != self.prev {
            return Err(VerifyError::BrokenLink {
                event: event.into(),
            });
        }
        let hash = link(&self.prev, &event.body);
        if event.hash != hash {
            return Err(VerifyError::Edited {
                event: event.into(),
            });
        }
        self.prev = hash;
        self.next_seq += 1;
        Ok(())
    }

    /// Parses the hashed fields of `event`; content that does not parse is either edited (its
    /// hash does not match) or was never an event.
    fn read_header(&self, event: &StoredEvent) -> Result<BodyHeader, VerifyError> {
        serde_json::from_str(&event.body).map_err(|e| {
            let consistent = <Hash>::try_from(event.prev_hash.as_slice())
                .is_ok_and(|prev| link(&prev, &event.body) == event.hash.as_slice());
            if consistent {
                VerifyError::NotAnEvent {
                    event: event.into(),
                    message: e.to_string(),
                }
            } else {
                VerifyError::Edited {
                    event: event.into(),
                }
            }
        })
    }

    /// The verdict on an event that came early and was not followed by the one it skipped: an
    /// edited seq in its content, or a real gap.
    fn skipped(&self, early: &StoredEvent) -> VerifyError {
        let self_consistent = <Hash>::try_from(early.prev_hash.as_slice())
            .is_ok_and(|prev| link(&prev, &early.body) == early.hash.as_slice());
        if self_consistent {
            VerifyError::Missing { seq: self.next_seq }
        } else {
            VerifyError::Edited {
                event: early.into(),
            }
        }
    }

    /// Ends the walk and checks the seal, if there is one.
    pub fn finish(
        self,
        seal: Option<&RecordingSeal>,
        keys: &Verifier,
    ) -> Result<VerifyReport, VerifyError> {
        if let Some((early, _)) = &self.early {
            return Err(self.skipped(early));
        }
        let mut report = VerifyReport {
            session_id: self.session_id,
            events: self.next_seq,
            final_hash: self.prev,
            sealed: false,
            key_id: None,
        };
        let Some(seal) = seal else {
            return Ok(report);
        };
        keys.check_seal(self.session_id, self.next_seq, &self.prev, seal)?;
        report.sealed = true;
        report.key_id = Some(seal.key_id.clone());
        Ok(report)
    }
}

// Seal checks as methods of the keys (inherent methods may live beside the code that uses them
// most): callers outside `chain` reach them through the `Verifier` they hold.
impl Verifier {
    /// Checks only the seal's signature: the key that made it is known and the signature is its.
    pub fn check_signature(&self, seal: &RecordingSeal) -> Result<(), VerifyError> {
        match self.check(seal) {
            SealCheck::Valid => Ok(()),
            SealCheck::UnknownKey => Err(VerifyError::UnknownKey {
                key_id: seal.key_id.clone(),
                known: self.key_ids().join(", "),
            }),
            SealCheck::BadSignature => Err(VerifyError::BadSignature {
                key_id: seal.key_id.clone(),
            }),
        }
    }

    /// Checks that `seal` closes the chain of `session_id` whose `events` events link up to
    /// `final_hash`: the signature first, then what it signs. Lets a caller that verified the
    /// chain earlier (the statement indexer) judge a seal without reading the events again.
    pub fn check_seal(
        &self,
        session_id: Uuid,
        events: u64,
        final_hash: &Hash,
        seal: &RecordingSeal,
    ) -> Result<(), VerifyError> {
        if seal.session_id != session_id {
            return Err(VerifyError::ForeignSeal {
                session_id,
                other: seal.session_id,
            });
        }
        // A seal whose signature fails proves nothing, so its claims are not compared before.
        self.check_signature(seal)?;
        // The signature checked, so the count is a non-negative u64.
        let sealed = seal.event_count as u64;
        if sealed > events {
            return Err(match events.checked_sub(1) {
                Some(last_seq) => VerifyError::Truncated { last_seq, sealed },
                None => VerifyError::Emptied { sealed },
            });
        }
        if sealed < events {
            return Err(VerifyError::Extended { sealed, events });
        }
        if seal.final_hash != final_hash {
            return Err(VerifyError::FinalHashMismatch);
        }
        Ok(())
    }
}

impl VerifyError {
    /// The seq at which the recording goes wrong, when there is one: the bad event, the first
    /// one missing, or the first one past the seal. `None` when the seal itself is at fault.
    pub fn seq(&self) -> Option<u64> {
        match self {
            VerifyError::Edited { event }
            | VerifyError::NotAnEvent { event, .. }
            | VerifyError::ColumnEdited { event, .. }
            | VerifyError::ForeignEvent { event, .. }
            | VerifyError::BrokenLink { event } => u64::try_from(event.seq).ok(),
            VerifyError::Missing { seq } | VerifyError::Duplicate { seq } => Some(*seq),
            VerifyError::OutOfOrder { first, .. } => Some(*first),
            VerifyError::Truncated { last_seq, .. } => Some(last_seq + 1),
            VerifyError::Emptied { .. } => Some(0),
            VerifyError::Extended { sealed, .. } => Some(*sealed),
            VerifyError::ForeignSeal { .. }
            | VerifyError::UnknownKey { .. }
            | VerifyError::BadSignature { .. }
            | VerifyError::FinalHashMismatch => None,
        }
    }
}

/// The seq, time and kind columns must say what the hashed body says.
fn check_columns(event: &StoredEvent, header: &BodyHeader) -> Result<(), VerifyError> {
    let edited = |column, stored: String, hashed: String| VerifyError::ColumnEdited {
        event: event.into(),
        column,
        stored,
        hashed,
    };
    if u64::try_from(event.seq).ok() != Some(header.seq) {
        return Err(edited("seq", event.seq.to_string(), header.seq.to_string()));
    }
    if event.kind != header.kind {
        return Err(edited("kind", event.kind.clone(), header.kind.clone()));
    }
    // PostgreSQL keeps microseconds: compare at that precision so that a faithful store is
    // not taken for an edited one.
    if event.at.trunc_subsecs(6) != header.at.trunc_subsecs(6) {
        return Err(edited(
            "time",
            event.at.to_rfc3339(),
            header.at.to_rfc3339(),
        ));
    }
    Ok(())
}

/// Verifies a whole recording held in memory (see [`ChainVerifier`] for one read in pages).
pub fn verify<'a>(
    session_id: Uuid,
    events: impl IntoIterator<Item = &'a StoredEvent>,
    seal: Option<&RecordingSeal>,
    keys: &Verifier,
) -> Result<VerifyReport, VerifyError> {
    let mut verifier = ChainVerifier::new(session_id);
    for event in events {
        verifier.push(event)?;
    }
    verifier.finish(seal, keys)
}
