//! Integrity of a recording: a hash chain per session, closed by an Ed25519 seal.
//!
//! The format (version 1), which `pgbastion verify` and anyone with the public key can check:
//!
//! - every event is stored as its canonical JSON, `serde_json::to_string(&event)` (deterministic
//!   because the fields of [`Event`] serialise in declaration order);
//! - `genesis = SHA-256("pgbastion-recording-v1\0" || session_id as 16 bytes)`, so a chain cannot
//!   be moved to another session;
//! - event `n` has `prev_hash` = the hash of event `n - 1` (the genesis for `n = 0`) and
//!   `hash = SHA-256(prev_hash || body)`;
//! - when the session ends, the gateway signs
//!   `"pgbastion-seal-v1\0" || session_id (16 bytes) || event_count (u64, big-endian) || final_hash`
//!   with its recording key. `final_hash` is the hash of the last event (the genesis when there
//!   is none). The seal's `sealed_at` is informational: it is not signed.
//!
//! The chain alone shows that stored events were edited, removed or reordered; only the seal shows
//! that none were cut off the end, or that the whole chain was not rewritten and re-hashed by
//! someone with write access to the store.

mod key;
mod verify;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use key::{RECORDING_KEY_FILE, RecordingKey, Verifier, key_id};
pub use verify::{ChainVerifier, EventRef, VerifyError, VerifyReport, verify};

use crate::keys::KeyError;
use crate::record::event::{Event, EventKind};
use crate::store::{RecordingSeal, StoredEvent};

/// A SHA-256 link of the chain.
pub type Hash = [u8; 32];

const GENESIS_DOMAIN: &[u8] = b"pgbastion-recording-v1\0";
const SEAL_DOMAIN: &[u8] = b"pgbastion-seal-v1\0";

/// Errors while building a chain or handling recording keys.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    KeyFile(#[from] KeyError),
    #[error(
        "{path} is not a usable recording key: {message}; restore it from a backup, or move it \
         away to have pgbastion generate a new one (keep its public key to verify old recordings)"
    )]
    BadRecordingKey {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{origin} does not hold an Ed25519 public key in PEM (BEGIN PUBLIC KEY): {message}")]
    BadPublicKey { origin: String, message: String },
    #[error(
        "event seq {got} was handed to the chain of session {session_id}, where seq {expected} \
         comes next (a recorder bug: events must be chained in order, without gaps)"
    )]
    OutOfSequence {
        session_id: Uuid,
        expected: u64,
        got: u64,
    },
}

/// The hash that event 0 links to.
pub fn genesis(session_id: Uuid) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(GENESIS_DOMAIN);
    hasher.update(session_id.as_bytes());
    hasher.finalize().into()
}

/// The hash of an event whose canonical JSON is `body` and whose predecessor's hash is `prev`.
pub fn link(prev: &Hash, body: &str) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(body.as_bytes());
    hasher.finalize().into()
}

/// The exact bytes a seal signs.
pub fn seal_message(session_id: Uuid, event_count: u64, final_hash: &Hash) -> Vec<u8> {
    let mut message = Vec::with_capacity(SEAL_DOMAIN.len() + 16 + 8 + 32);
    message.extend_from_slice(SEAL_DOMAIN);
    message.extend_from_slice(session_id.as_bytes());
    message.extend_from_slice(&event_count.to_be_bytes());
    message.extend_from_slice(final_hash);
    message
}

/// The serde tag of an event (`"query"`, `"bind"`...), stored beside the body so that readers
/// can filter without parsing it. A match rather than a second serialisation: the recorder runs it
/// for every event, and the compiler makes every new variant name itself here. The test
/// `kind_names_match_the_serde_tags` keeps it equal to the tag.
pub fn kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::SessionStart { .. } => "session_start",
        EventKind::SessionEnd { .. } => "session_end",
        EventKind::Query { .. } => "query",
        EventKind::Parse { .. } => "parse",
        EventKind::Bind { .. } => "bind",
        EventKind::Execute { .. } => "execute",
        EventKind::Describe { .. } => "describe",
        EventKind::Close { .. } => "close",
        EventKind::Sync => "sync",
        EventKind::Flush => "flush",
        EventKind::FunctionCall { .. } => "function_call",
        EventKind::RowDescription { .. } => "row_description",
        EventKind::Rows { .. } => "rows",
        EventKind::CommandComplete { .. } => "command_complete",
        EventKind::EmptyQuery => "empty_query",
        EventKind::PortalSuspended => "portal_suspended",
        EventKind::Error(_) => "error",
        EventKind::Notice(_) => "notice",
        EventKind::ReadyForQuery { .. } => "ready_for_query",
        EventKind::CopyStart { .. } => "copy_start",
        EventKind::CopyData { .. } => "copy_data",
        EventKind::CopyEnd { .. } => "copy_end",
        EventKind::Notification { .. } => "notification",
        EventKind::ParameterStatus { .. } => "parameter_status",
    }
}

/// The growing chain of one session: turns events into stored, linked events.
#[derive(Debug, Clone)]
pub struct Chain {
    session_id: Uuid,
    next_seq: u64,
    prev: Hash,
}

impl Chain {
    /// A chain with no events yet.
    pub fn new(session_id: Uuid) -> Chain {
        Chain {
            session_id,
            next_seq: 0,
            prev: genesis(session_id),
        }
    }

    /// Continues after `last`, the newest event already stored (a writer picking up a session).
    pub fn after(last: &StoredEvent) -> Option<Chain> {
        Some(Chain {
            session_id: last.session_id,
            next_seq: u64::try_from(last.seq).ok()?.checked_add(1)?,
            prev: last.hash.as_slice().try_into().ok()?,
        })
    }

    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    /// The seq the next event must carry; also the number of events chained so far.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The hash of the last event (the genesis while there is none): what a seal signs.
    pub fn last_hash(&self) -> Hash {
        self.prev
    }

    /// Links `event`, which must carry [`Chain::next_seq`], and returns it as stored.
    pub fn append(&mut self, event: &Event) -> Result<StoredEvent, ChainError> {
        let mut body = String::new();
        crate::record::event::write_event(event, &mut body);
        self.append_with_body(event, body)
    }

    /// Like [`Chain::append`] with the event's canonical JSON already made (by the tap, which
    /// journals it before the chunk is forwarded).
    pub fn append_with_body(
        &mut self,
        event: &Event,
        body: String,
    ) -> Result<StoredEvent, ChainError> {
        self.append_encoded(event.seq, event.at, kind_name(&event.kind), body)
    }

    /// Links an event known by its seq, time, kind and canonical JSON.
    pub fn append_encoded(
        &mut self,
        seq: u64,
        at: DateTime<Utc>,
        kind: &'static str,
        body: String,
    ) -> Result<StoredEvent, ChainError> {
        let prev_hash = self.prev.to_vec();
        let hash = self.link_next(seq, &body)?;
        Ok(StoredEvent {
            session_id: self.session_id,
            // Postgres has no unsigned integers; 2^63 events is out of reach.
            seq: seq as i64,
            at,
            kind: kind.to_string(),
            body,
            prev_hash,
            hash: hash.to_vec(),
        })
    }

    /// Links the event `seq` whose canonical JSON is `body` and returns its hash (its
    /// `prev_hash` is [`Chain::last_hash`] before the call).
    pub fn link_next(&mut self, seq: u64, body: &str) -> Result<Hash, ChainError> {
        if seq != self.next_seq {
            return Err(ChainError::OutOfSequence {
                session_id: self.session_id,
                expected: self.next_seq,
                got: seq,
            });
        }
        let hash = link(&self.prev, body);
        self.prev = hash;
        self.next_seq += 1;
        Ok(hash)
    }

    /// Closes the recording: signs the count and final hash with `key`.
    pub fn seal(&self, key: &RecordingKey) -> RecordingSeal {
        key.seal(self.session_id, self.next_seq, &self.prev)
    }
}
