//! The recorder tap: where every relayed frame is handed over for recording.
//!
//! The relay calls [`SessionTap::frame`] with each message it forwards, as the same shared bytes
//! (a reference-counted slice of the receive buffer, never a copy). The recording issue implements
//! a [`Recorder`] that turns frames into events and writes them in batches off the forwarding path.

pub mod capture;
pub mod chain;
pub mod classify;
pub mod event;
pub mod export;

use std::net::SocketAddr;

use uuid::Uuid;

use crate::protocol::frame::Frame;
use crate::store::SessionEnd;

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
    pub target_name: String,
    pub db_role: String,
    pub client_addr: SocketAddr,
    pub application_name: Option<String>,
    pub tls_version: Option<String>,
}

/// Builds one tap per session.
pub trait Recorder: Send + Sync + 'static {
    /// `None` when this session is not recorded.
    fn start(&self, session: &SessionInfo) -> Option<Box<dyn SessionTap>>;
}

/// Receives the frames of one session, in order per direction.
pub trait SessionTap: Send {
    /// Called for every message, before it is written to its destination. Must not block: the
    /// relay is waiting.
    fn frame(&mut self, direction: Direction, frame: Frame);
    /// Called once, when the session ends.
    fn end(self: Box<Self>, end: &SessionEnd);
}

/// A recorder that records nothing (the gateway without the recording feature).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullRecorder;

impl Recorder for NullRecorder {
    fn start(&self, _session: &SessionInfo) -> Option<Box<dyn SessionTap>> {
        None
    }
}
