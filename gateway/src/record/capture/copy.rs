//! COPY in progress: its totals, and the first bytes of its data up to the cap.
//!
//! A COPY whose columns may include a secret one keeps no data at all: finding the secret
//! column's field in every row of text, CSV or binary COPY data is out of scope, so the data is
//! recorded as redacted (its length only) while the byte and row counts stay. Whether a COPY may
//! carry a secret column is decided from its SQL (`redact::sql`): its column list, or the query
//! of `COPY (query) TO STDOUT`; without either, nothing is known about its columns and it may.

use super::super::event::EventKind;
use super::Capture;
use super::redact::redacted;
use super::values::{capped_hex, capped_text, valid_utf8_prefix};
use crate::protocol::frame::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CopyDirection {
    In,
    Out,
    Both,
}

impl CopyDirection {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CopyDirection::In => "in",
            CopyDirection::Out => "out",
            CopyDirection::Both => "both",
        }
    }

    fn carries_data_from(self, from_server: bool) -> bool {
        match self {
            CopyDirection::In => !from_server,
            CopyDirection::Out => from_server,
            CopyDirection::Both => true,
        }
    }
}

/// A COPY in progress: totals, and the first bytes of its data up to the cap.
#[derive(Debug)]
pub(super) struct CopyState {
    pub(super) direction: CopyDirection,
    pub(super) binary: bool,
    /// The data may carry a secret column: none of it is kept.
    pub(super) redacted: bool,
    pub(super) bytes: u64,
    pub(super) newlines: u64,
    pub(super) kept: Vec<u8>,
}

impl Capture {
    pub(super) fn copy_data(&mut self, frame: &Frame, from_server: bool) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        if !copy.direction.carries_data_from(from_server) {
            return;
        }
        copy.bytes += frame.body_len as u64;
        copy.newlines += frame.body.iter().filter(|&&b| b == b'\n').count() as u64;
        if copy.redacted {
            return;
        }
        let room = self.limits.max_copy_bytes.saturating_sub(copy.kept.len());
        copy.kept
            .extend_from_slice(&frame.body[..frame.body.len().min(room)]);
    }

    /// CopyDone from one side: ends the COPY if that side was the one sending data.
    pub(super) fn copy_done(&mut self, from_server: bool, out: &mut Vec<EventKind>) {
        if self
            .copy
            .as_ref()
            .is_some_and(|c| c.direction.carries_data_from(from_server))
        {
            self.finish_copy("done".to_owned(), out);
        }
    }

    /// Ends the COPY in progress, if any: its data up to the cap, then its totals.
    pub(super) fn finish_copy(&mut self, outcome: String, out: &mut Vec<EventKind>) {
        let Some(copy) = self.copy.take() else { return };
        if copy.redacted && copy.bytes > 0 && self.limits.max_copy_bytes > 0 {
            out.push(EventKind::CopyData {
                data: redacted(copy.bytes),
            });
        } else if !copy.kept.is_empty() {
            let len = copy.bytes as usize;
            let data = match valid_utf8_prefix(&copy.kept, copy.kept.len() < len)
                .filter(|_| !copy.binary)
            {
                Some(text) => capped_text(text, self.limits.max_copy_bytes, len),
                None => capped_hex(&copy.kept, self.limits.max_copy_bytes, len),
            };
            out.push(EventKind::CopyData { data });
        }
        out.push(EventKind::CopyEnd {
            direction: copy.direction.as_str().to_owned(),
            bytes: copy.bytes,
            // Binary COPY has no line structure; the command tag carries its row count.
            rows: if copy.binary { 0 } else { copy.newlines },
            outcome,
        });
    }
}
