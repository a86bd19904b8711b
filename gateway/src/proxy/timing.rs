//! Statement latency as the relay sees it: from a client's Query or Execute to the server's
//! answer, for the `pgbastion_statement_duration_seconds` histogram.
//!
//! The relay already reads every message's tag; the clock only matches tags. Requests waiting
//! for an answer sit in a small ring inside the relay (no allocation, no lock), and the clock is
//! read at most once per chunk, only for chunks that start or finish a statement.
//!
//! Matching follows the protocol's ordering rules:
//! - a Query is answered by the next ReadyForQuery (all of its statements: one observation);
//! - an Execute by its CommandComplete, EmptyQueryResponse, PortalSuspended or ErrorResponse;
//! - after an error the server skips the Executes up to the next Sync: the ReadyForQuery that
//!   answers that Sync clears them without an observation;
//! - Sync and FunctionCall are answered by a ReadyForQuery too, but are not timed.
//!
//! A client that pipelines more than [`DEPTH`] requests gets no timings until everything it
//! sent has been answered (counted without the ring), then timing resumes.

use std::time::{Duration, Instant};

use crate::record::Direction;

/// Requests that may wait for an answer while still being timed.
const DEPTH: usize = 16;

// Message tags this needs (client: frontend; server: backend).
const QUERY: u8 = b'Q';
const EXECUTE: u8 = b'E';
const SYNC: u8 = b'S';
const FUNCTION_CALL: u8 = b'F';
const COMMAND_COMPLETE: u8 = b'C';
const EMPTY_QUERY_RESPONSE: u8 = b'I';
const PORTAL_SUSPENDED: u8 = b's';
const ERROR_RESPONSE: u8 = b'E';
const READY_FOR_QUERY: u8 = b'Z';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Query,
    Execute,
    /// Sync or FunctionCall: answered by ReadyForQuery, not timed.
    Sync,
}

/// The requests of one session still waiting for their answer.
pub struct StatementClock {
    kinds: [Request; DEPTH],
    /// When each request was seen; `None` for untimed ones.
    started: [Option<Instant>; DEPTH],
    head: usize,
    len: usize,
    /// Requests answered by a ReadyForQuery not answered yet, counted even past [`DEPTH`].
    awaiting_ready: u32,
    /// The ring overflowed: nothing is timed until `awaiting_ready` is back to 0.
    overflowed: bool,
    /// The clock read for the current chunk, if it was needed.
    now: Option<Instant>,
}

impl Default for StatementClock {
    fn default() -> Self {
        StatementClock {
            kinds: [Request::Sync; DEPTH],
            started: [None; DEPTH],
            head: 0,
            len: 0,
            awaiting_ready: 0,
            overflowed: false,
            now: None,
        }
    }
}

impl StatementClock {
    /// A new chunk is being cut: the next clock read is fresh.
    pub fn begin_chunk(&mut self) {
        self.now = None;
    }

    /// Sees one message going `direction`; returns the latency of the statement it answered,
    /// if it answered a timed one.
    pub fn message(&mut self, direction: Direction, tag: u8) -> Option<Duration> {
        match direction {
            Direction::ClientToServer => {
                self.request(tag);
                None
            }
            Direction::ServerToClient => self.answer(tag),
        }
    }

    fn request(&mut self, tag: u8) {
        let kind = match tag {
            QUERY => Request::Query,
            EXECUTE => Request::Execute,
            SYNC | FUNCTION_CALL => Request::Sync,
            _ => return,
        };
        if kind != Request::Execute {
            self.awaiting_ready = self.awaiting_ready.saturating_add(1);
        }
        if self.overflowed {
            return;
        }
        if self.len == DEPTH {
            self.overflowed = true;
            self.len = 0;
            return;
        }
        let started = (kind != Request::Sync).then(|| self.now());
        let at = (self.head + self.len) % DEPTH;
        self.kinds[at] = kind;
        self.started[at] = started;
        self.len += 1;
    }

    fn answer(&mut self, tag: u8) -> Option<Duration> {
        match tag {
            COMMAND_COMPLETE | EMPTY_QUERY_RESPONSE | PORTAL_SUSPENDED | ERROR_RESPONSE => {
                // Only an Execute is finished by these; a Query's statements end at its
                // ReadyForQuery, and an error before any Execute belongs to the Sync's batch.
                if self.front() == Some(Request::Execute) {
                    return self.pop();
                }
                None
            }
            READY_FOR_QUERY => {
                self.awaiting_ready = self.awaiting_ready.saturating_sub(1);
                if self.overflowed {
                    self.overflowed = self.awaiting_ready > 0;
                    return None;
                }
                // Executes skipped after an error end with the batch, untimed.
                while self.front() == Some(Request::Execute) {
                    self.head = (self.head + 1) % DEPTH;
                    self.len -= 1;
                }
                self.pop()
            }
            _ => None,
        }
    }

    fn front(&self) -> Option<Request> {
        (self.len > 0).then(|| self.kinds[self.head])
    }

    /// Takes the oldest request; its latency if it was timed.
    fn pop(&mut self) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let started = self.started[self.head];
        self.head = (self.head + 1) % DEPTH;
        self.len -= 1;
        let started = started?;
        Some(self.now().saturating_duration_since(started))
    }

    fn now(&mut self) -> Instant {
        *self.now.get_or_insert_with(Instant::now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{ClientToServer as C, ServerToClient as S};

    /// Feeds messages (one chunk each) and returns how many statements were timed.
    fn timed(clock: &mut StatementClock, messages: &[(Direction, u8)]) -> usize {
        messages
            .iter()
            .filter(|(d, tag)| {
                clock.begin_chunk();
                clock.message(*d, *tag).is_some()
            })
            .count()
    }

    #[test]
    fn a_simple_query_is_one_statement_whatever_it_holds() {
        let mut clock = StatementClock::default();
        // "select 1; select 2": two CommandCompletes, one ReadyForQuery.
        let n = timed(
            &mut clock,
            &[
                (C, b'Q'),
                (S, b'T'),
                (S, b'D'),
                (S, b'C'),
                (S, b'C'),
                (S, b'Z'),
            ],
        );
        assert_eq!(n, 1);
        assert_eq!(clock.len, 0);
    }

    #[test]
    fn each_execute_of_a_pipeline_is_timed_and_the_sync_is_not() {
        let mut clock = StatementClock::default();
        let batch = [
            (C, b'P'),
            (C, b'B'),
            (C, b'E'),
            (C, b'B'),
            (C, b'E'),
            (C, b'S'),
            (S, b'1'),
            (S, b'2'),
            (S, b'C'),
            (S, b'2'),
            (S, b's'),
            (S, b'Z'),
        ];
        assert_eq!(timed(&mut clock, &batch), 2);
        assert_eq!((clock.len, clock.awaiting_ready), (0, 0));
    }

    #[test]
    fn executes_skipped_after_an_error_end_untimed_with_their_sync() {
        let mut clock = StatementClock::default();
        let batch = [
            (C, b'E'),
            (C, b'E'),
            (C, b'E'),
            (C, b'S'),
            (C, b'Q'),
            (S, b'E'), // the first Execute fails; the other two are skipped
            (S, b'Z'), // answers the Sync
            (S, b'E'), // the Query fails
            (S, b'Z'), // and ends
        ];
        assert_eq!(timed(&mut clock, &batch), 2);
        assert_eq!((clock.len, clock.awaiting_ready), (0, 0));
    }

    #[test]
    fn an_error_before_any_execute_leaves_the_sync_waiting() {
        let mut clock = StatementClock::default();
        // Parse fails, the client only sent Parse and Sync.
        let batch = [(C, b'P'), (C, b'S'), (S, b'E'), (S, b'Z')];
        assert_eq!(timed(&mut clock, &batch), 0);
        assert_eq!((clock.len, clock.awaiting_ready), (0, 0));
    }

    #[test]
    fn a_deep_pipeline_stops_timing_until_everything_is_answered() {
        let mut clock = StatementClock::default();
        let mut sent = Vec::new();
        for _ in 0..DEPTH + 4 {
            sent.extend([(C, b'E'), (C, b'S')]);
        }
        assert_eq!(timed(&mut clock, &sent), 0);
        assert!(clock.overflowed);
        let mut answers = Vec::new();
        for _ in 0..DEPTH + 4 {
            answers.extend([(S, b'C'), (S, b'Z')]);
        }
        assert_eq!(
            timed(&mut clock, &answers),
            0,
            "no timing while out of step"
        );
        assert!(!clock.overflowed);
        // In step again.
        assert_eq!(timed(&mut clock, &[(C, b'Q'), (S, b'Z')]), 1);
    }

    #[test]
    fn latency_is_measured_from_request_to_answer() {
        let mut clock = StatementClock::default();
        clock.begin_chunk();
        clock.message(C, b'Q');
        std::thread::sleep(Duration::from_millis(20));
        clock.begin_chunk();
        let took = clock.message(S, b'Z').expect("timed");
        assert!(took >= Duration::from_millis(20), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
