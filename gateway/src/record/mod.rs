//! The recorder tap: where every relayed frame is handed over for recording.
//!
//! The relay calls [`SessionTap::frame`] with each message it forwards, as the same shared bytes
//! (a reference-counted slice of the receive buffer, never a copy), then
//! [`SessionTap::chunk_done`] before it writes them on. [`StoreRecorder`] turns frames into
//! compact events right there ([`capture`]) and hands them to a batching [`writer`] task that
//! chains, stores and seals them off the forwarding path ([`chain`]).
//!
//! Under the `strict` policy a chunk of client messages that produced events waits in the relay
//! until those events are committed ([`SessionTap::poll_release`]); under `buffered` it goes on
//! at once. Either way a recording that cannot be kept ends the session: nothing runs unrecorded
//! and nothing is dropped silently.

pub mod capture;
pub mod chain;
pub mod classify;
pub mod event;
pub mod export;
pub mod indexer;
pub mod integrity;
pub mod journal;
pub mod recorder;
pub mod recover;
pub mod statements;
mod tap;
pub mod writer;

use std::net::SocketAddr;
use std::task::{Context, Poll};

use uuid::Uuid;

use crate::protocol::frame::Frame;
use crate::store::{SessionEnd, Target};
pub use capture::CaptureLimits;
pub use recorder::{RecorderSettings, StoreRecorder};

/// Which way a frame travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// What a recorder learns when a session starts (after the credential was accepted and the
/// upstream login succeeded).
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session_id: Uuid,
    pub credential_id: Uuid,
    pub person_login: String,
    pub groups: Vec<String>,
    /// The target (its name, recording policy and caps).
    pub target: std::sync::Arc<Target>,
    pub db_role: String,
    pub client_addr: SocketAddr,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
    /// When the session started (the first event's time).
    pub started_at: chrono::DateTime<chrono::Utc>,
}

impl SessionInfo {
    /// The session's row as the store first holds it.
    pub fn new_session(&self) -> crate::store::NewSession {
        crate::store::NewSession {
            id: self.session_id,
            person_login: self.person_login.clone(),
            target_id: self.target.id,
            target_name: self.target.name.clone(),
            db_role: self.db_role.clone(),
            credential_id: self.credential_id,
            client_addr: self.client_addr.to_string(),
            application_name: self.application_name.clone(),
            tls_version: self.tls_version.clone(),
            started_at: self.started_at,
            recording: self.target.recording,
            groups: self.groups.clone(),
        }
    }
}

/// Whether a chunk of frames just shown to the tap may be forwarded now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    Now,
    /// Only once [`SessionTap::poll_release`] says so (strict recording).
    AfterCommit,
}

/// The recording of a session cannot be kept: the session must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordingFailed(pub String);

/// Builds one tap per session.
pub trait Recorder: Send + Sync + 'static {
    /// `Ok(None)` when this session is not recorded; an error when it must not start because
    /// it cannot be recorded.
    fn start(&self, session: &SessionInfo) -> Result<Option<Box<dyn SessionTap>>, RecordingFailed>;
}

/// Receives the frames of one session, in order per direction.
pub trait SessionTap: Send {
    /// Called for every message, before it is written to its destination. Must not block: the
    /// relay is waiting.
    fn frame(&mut self, direction: Direction, frame: Frame);
    /// Called after the frames of one chunk were shown, before the chunk is written on.
    fn chunk_done(&mut self, direction: Direction) -> Result<Release, RecordingFailed>;
    /// After [`Release::AfterCommit`]: ready once the chunk's events are stored.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RecordingFailed>>;
    /// Called once, when the session ends, instead of storing `end` on the session row: the
    /// recorder stores it once the recording's last events are stored (so a store outage
    /// delays it rather than losing it).
    fn end(self: Box<Self>, end: &SessionEnd);
}

/// A recorder that records nothing (the gateway without the recording feature).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullRecorder;

impl Recorder for NullRecorder {
    fn start(
        &self,
        _session: &SessionInfo,
    ) -> Result<Option<Box<dyn SessionTap>>, RecordingFailed> {
        Ok(None)
    }
}
