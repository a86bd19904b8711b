//! The tap of one recorded session: runs [`Capture`] on each frame as the relay shows it, numbers
//! the events, and hands them to the writer once per chunk.
//!
//! Capture runs here, on the relay's task, because it only reads the frames the relay already
//! holds and keeps small values (capped); the costly part (JSON, hashing, the store) is the
//! writer's. One hand-over per chunk, not per frame, keeps the queue's lock and the writer's
//! wake-ups off the per-message path.

use std::sync::Arc;
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};

use super::capture::Capture;
use super::event::{Event, EventKind};
use super::writer::{Handover, Progress, UNHEALTHY, WriterHandle};
use super::{Direction, RecordingFailed, Release, SessionTap};
use crate::protocol::frame::Frame;
use crate::store::{RecordingPolicy, SessionEnd};

pub(super) struct StoreTap {
    policy: RecordingPolicy,
    capture: Capture,
    next_seq: u64,
    /// Events of the chunk being shown, not yet handed over.
    pending: Vec<Event>,
    scratch: Vec<EventKind>,
    /// The time of the chunk being shown: one clock read per chunk.
    now: Option<DateTime<Utc>>,
    /// Under `strict`: the number of events that must be committed before the held chunk goes.
    wait_for: u64,
    progress: Arc<Progress>,
    writer: WriterHandle,
}

impl StoreTap {
    /// A tap whose first event (the session start, seq 0) was already handed to the writer.
    pub(super) fn new(
        policy: RecordingPolicy,
        capture: Capture,
        progress: Arc<Progress>,
        writer: WriterHandle,
    ) -> Self {
        StoreTap {
            policy,
            capture,
            next_seq: 1,
            pending: Vec::new(),
            scratch: Vec::new(),
            now: None,
            wait_for: 0,
            progress,
            writer,
        }
    }

    fn push(&mut self, at: DateTime<Utc>, kind: EventKind) {
        self.pending.push(Event {
            seq: self.next_seq,
            at,
            kind,
        });
        self.next_seq += 1;
    }
}

impl SessionTap for StoreTap {
    fn frame(&mut self, direction: Direction, frame: Frame) {
        let at = *self.now.get_or_insert_with(Utc::now);
        self.capture
            .on_frame(direction, &frame, at, &mut self.scratch);
        let mut kinds = std::mem::take(&mut self.scratch);
        for kind in kinds.drain(..) {
            self.push(at, kind);
        }
        self.scratch = kinds;
    }

    fn chunk_done(&mut self, direction: Direction) -> Result<Release, RecordingFailed> {
        self.now = None;
        // Handed over from `pending`, which keeps its capacity for the next chunk.
        if let Err(failed) = self.progress.check() {
            // Kept anyway (the writer may still store them): they show what was refused.
            if !self.pending.is_empty() {
                let _ = self.writer.submit(&self.progress, &mut self.pending, false);
            }
            return Err(failed);
        }
        if self.pending.is_empty() {
            return Ok(Release::Now);
        }
        let urgent =
            self.policy == RecordingPolicy::Strict && direction == Direction::ClientToServer;
        if urgent && !self.writer.store_healthy() {
            // The statement is not forwarded; its events are kept to show what was refused.
            let _ = self.writer.submit(&self.progress, &mut self.pending, false);
            return Err(RecordingFailed(UNHEALTHY.into()));
        }
        let handover = self
            .writer
            .submit(&self.progress, &mut self.pending, urgent)?;
        // Journaled events are durable already; only in-memory ones make a strict chunk wait,
        // and any chunk waits while the store is behind (back-pressure, either policy).
        if (urgent && handover == Handover::InMemory) || self.writer.behind() {
            self.wait_for = self.next_seq;
            Ok(Release::AfterCommit)
        } else {
            Ok(Release::Now)
        }
    }

    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RecordingFailed>> {
        self.progress.poll_committed(cx, self.wait_for)
    }

    fn end(mut self: Box<Self>, end: &SessionEnd) {
        let at = end.ended_at;
        // What the capture still holds of an unfinished statement comes before the end.
        self.capture.finish(&mut self.scratch);
        let mut kinds = std::mem::take(&mut self.scratch);
        for kind in kinds.drain(..) {
            self.push(at, kind);
        }
        self.push(
            at,
            EventKind::SessionEnd {
                reason: end.reason.as_str().to_string(),
                detail: end.detail.clone(),
                bytes_client_to_server: end.bytes_client_to_server.max(0) as u64,
                bytes_server_to_client: end.bytes_server_to_client.max(0) as u64,
            },
        );
        let events = std::mem::take(&mut self.pending);
        self.writer.finish(&self.progress, events, end.clone());
    }
}
