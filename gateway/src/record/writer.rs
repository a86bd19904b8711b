//! The batching writer: one task per gateway that chains the events of every session, stores
//! them in transactions, and seals each recording when its session has ended.
//!
//! Taps hand over events through a queue under a short lock (one hand-over per relay chunk).
//! The writer takes everything queued at once, so while one transaction commits the next batch
//! gathers: under load each commit carries many sessions' events (group commit). It wakes on a
//! short timer for `buffered` sessions and at once when a `strict` session waits.
//!
//! Nothing is dropped: events the store cannot take stay in memory, in order, and are retried
//! with back-off. A bound on what may wait ([`RecorderSettings::max_buffered_events`]) turns a
//! long outage into ended sessions instead of unbounded memory; `strict` sessions end as soon as
//! a commit they wait for fails.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::RecordingFailed;
use super::chain::{Chain, RecordingKey, kind_name};
use super::event::{Event, EventTimes, write_event_with};
use super::journal::{Journal, Segment};
use super::recorder::RecorderSettings;
use crate::metrics::{self, StoreOperation};
use crate::store::{
    EventBlock, MAX_BLOCK_BODY_BYTES, MAX_BLOCK_EVENTS, RecordingPolicy, SessionEnd, Store,
    StoreError,
};

/// Events chained between two yields to the runtime (see `Writer::chain`).
const CHAIN_SLICE: usize = 256;
/// Events written per transaction at most (a backlog after an outage goes in several).
const MAX_BATCH: usize = 2_000;
/// How long a commit is awaited at most before the writer gives up on it (its outcome is then
/// unknown, and settled by [`Writer::drop_stored`] on the next attempt).
fn hard_timeout(commit_timeout: Duration) -> Duration {
    (commit_timeout * 6).max(Duration::from_secs(30))
}
/// Back-off between attempts while the store fails.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What a session's tap and the writer share: how far its events are committed, and whether
/// its recording failed.
pub struct Progress {
    session_id: Uuid,
    policy: RecordingPolicy,
    /// Number of the session's events committed (so the next seq to commit).
    committed: AtomicU64,
    failed: OnceLock<String>,
    waker: Mutex<Option<Waker>>,
}

impl Progress {
    fn new(session_id: Uuid, policy: RecordingPolicy) -> Self {
        Progress {
            session_id,
            policy,
            committed: AtomicU64::new(0),
            failed: OnceLock::new(),
            waker: Mutex::new(None),
        }
    }

    pub(super) fn check(&self) -> Result<(), RecordingFailed> {
        match self.failed.get() {
            Some(why) => Err(RecordingFailed(why.clone())),
            None => Ok(()),
        }
    }

    /// Ready once `count` events are committed (or the recording failed).
    pub(super) fn poll_committed(
        &self,
        cx: &mut Context<'_>,
        count: u64,
    ) -> Poll<Result<(), RecordingFailed>> {
        if let Some(result) = self.settled(count) {
            return Poll::Ready(result);
        }
        *self.waker.lock().expect("waker lock") = Some(cx.waker().clone());
        // Checked again: the writer may have moved on between the first check and the store.
        match self.settled(count) {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }

    fn settled(&self, count: u64) -> Option<Result<(), RecordingFailed>> {
        self.check()
            .err()
            .map(Err)
            .or_else(|| (self.committed.load(Ordering::Acquire) >= count).then_some(Ok(())))
    }

    fn advance(&self, committed: u64) {
        self.committed.fetch_max(committed, Ordering::AcqRel);
        self.wake();
    }

    fn fail(&self, why: String) {
        if self.failed.set(why).is_ok() {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.lock().expect("waker lock").take() {
            waker.wake();
        }
    }
}

/// One hand-over from a tap: a chunk's events as their canonical JSON (written on the tap's
/// side, since the journal needs it before the chunk is forwarded), all in one buffer.
struct Job {
    progress: Arc<Progress>,
    events: Vec<Encoded>,
    /// The events' bodies, one after the other.
    text: String,
    /// The journal position before these events.
    first_position: u64,
    /// Set on the session's last hand-over: once stored, the session's end is written and the
    /// recording sealed.
    end: Option<SessionEnd>,
}

/// What the writer needs of an event besides its body: the event itself stays with the tap.
struct Encoded {
    seq: u64,
    at: DateTime<Utc>,
    kind: &'static str,
    /// Where its body ends in [`Job::text`] (it starts where the previous one ends).
    end: usize,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    closed: bool,
    journal: Option<Journal>,
    /// Events journaled (or, without a journal, handed over) so far.
    position: u64,
}

struct Inner {
    queue: Mutex<Queue>,
    /// Wakes the writer at once (a strict session waits, or shutdown).
    wake: Notify,
    /// Events handed over and not yet committed.
    buffered: AtomicUsize,
    max_buffered: usize,
    /// False from a failed commit until the next one succeeds: strict sessions refuse new
    /// statements meanwhile.
    store_healthy: AtomicBool,
}

/// What strict sessions are told while the store fails.
pub(super) const UNHEALTHY: &str = "the recording store is not taking events; strict recording refuses \
                         statements until it is back";

/// Whether handed-over events are already durable (journaled) or only in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handover {
    Journaled,
    InMemory,
}

/// Each event with its body, out of a job's shared text.
fn bodies<'t>(
    events: &'t [Encoded],
    text: &'t str,
) -> impl Iterator<Item = (&'t Encoded, &'t str)> + Clone {
    events.iter().scan(0, move |start, e| {
        let body = &text[*start..e.end];
        *start = e.end;
        Some((e, body))
    })
}

/// Links one event into its session's chain and adds it to `block`, the session's open block
/// of this round (one row in the store); a full block goes to `backlog` and a new one starts,
/// its columns sized for `size_hint` (the round's events and bytes of the session) at once.
fn chain_into(
    block: &mut Option<EventBlock>,
    recording: &mut Recording,
    event: &Encoded,
    body: &str,
    size_hint: (usize, usize),
    backlog: &mut VecDeque<EventBlock>,
) -> Result<(), String> {
    // Checked before the chain moves on, so that the chain never holds an unstored link.
    EventBlock::check(event.kind, body).map_err(|why| why.to_string())?;
    let prev = recording.chain.last_hash();
    let hash = recording
        .chain
        .link_next(event.seq, body)
        .map_err(|e| e.to_string())?;
    if block.as_ref().is_some_and(|b| !b.has_room(body.len())) {
        backlog.extend(block.take());
    }
    let block = block.get_or_insert_with(|| {
        let mut new = EventBlock::new(recording.chain.session_id(), event.seq as i64, prev);
        new.reserve(
            size_hint.0.min(MAX_BLOCK_EVENTS),
            size_hint.1.min(MAX_BLOCK_BODY_BYTES),
        );
        new
    });
    block
        .push(event.at, event.kind, body, &hash)
        .map_err(|why| why.to_string())
}

/// The taps' side of the writer.
#[derive(Clone)]
pub struct WriterHandle {
    inner: Arc<Inner>,
}

impl WriterHandle {
    /// Registers a session and hands over its first event (the session start).
    pub(super) fn start(
        &self,
        session_id: Uuid,
        policy: RecordingPolicy,
        first: Event,
    ) -> Result<Arc<Progress>, RecordingFailed> {
        let progress = Arc::new(Progress::new(session_id, policy));
        if policy == RecordingPolicy::Strict && !self.store_healthy() {
            return Err(RecordingFailed(UNHEALTHY.into()));
        }
        let strict = policy == RecordingPolicy::Strict;
        self.submit(&progress, &mut vec![first], strict)?;
        Ok(progress)
    }

    /// Whether the last commit succeeded.
    pub(super) fn store_healthy(&self) -> bool {
        self.inner.store_healthy.load(Ordering::Relaxed)
    }

    /// The store takes events but more slowly than sessions make them: over half the bound
    /// waits for it. Taps then hold each chunk until its events are committed, which slows the
    /// sessions down to the store's pace instead of letting the backlog reach the bound, where
    /// sessions are ended. (A store that takes nothing at all is not "behind": strict sessions
    /// are refused and buffered ones fill the bound, as their policies say.)
    pub(super) fn behind(&self) -> bool {
        self.store_healthy() && self.buffered() > self.inner.max_buffered / 2
    }

    /// Queues (and journals) `events`, leaving the vector empty for reuse; refused, and the
    /// session's recording failed, when the buffer is full or the journal cannot be written.
    /// `urgent` wakes the writer at once when the events are not journaled (a strict session
    /// then waits for the commit).
    pub(super) fn submit(
        &self,
        progress: &Arc<Progress>,
        events: &mut Vec<Event>,
        urgent: bool,
    ) -> Result<Handover, RecordingFailed> {
        self.hand_over(progress, events, None, urgent)
    }

    /// Queues the session's last events (whatever the bound: a recording must say how it ended).
    pub(super) fn finish(&self, progress: &Arc<Progress>, mut events: Vec<Event>, end: SessionEnd) {
        if let Err(e) = self.hand_over(progress, &mut events, Some(end), false) {
            // Only the journal can refuse here; the events are queued regardless.
            warn!(session = %progress.session_id, error = %e, "the end of a session is not journaled");
        }
    }

    fn hand_over(
        &self,
        progress: &Arc<Progress>,
        events: &mut Vec<Event>,
        end: Option<SessionEnd>,
        urgent: bool,
    ) -> Result<Handover, RecordingFailed> {
        let n = events.len();
        // Dropped here, on the relay's thread, where their values were allocated: freeing
        // them on the writer's thread cost glibc's malloc more than the whole encoding.
        let mut text = String::with_capacity(n * 160);
        let mut times = EventTimes::default();
        let encoded: Vec<Encoded> = events
            .drain(..)
            .map(|event| {
                write_event_with(&event, &mut text, &mut times);
                Encoded {
                    seq: event.seq,
                    at: event.at,
                    kind: kind_name(&event.kind),
                    end: text.len(),
                }
            })
            .collect();
        let ending = end.is_some();
        let mut queue = self.inner.queue.lock().expect("queue lock");
        if queue.closed && !ending {
            drop(queue);
            let why = "the recorder has stopped (gateway shutting down)".to_string();
            progress.fail(why.clone());
            return Err(RecordingFailed(why));
        }
        let first_position = queue.position;
        let mut refusal = None;
        let journaled = match queue.journal.as_mut() {
            Some(journal) => match journal.append(
                progress.session_id,
                bodies(&encoded, &text).map(|(e, body)| (e.seq, body)),
            ) {
                Ok(position) => Some(position),
                Err(e) => {
                    refusal = Some(format!("cannot write the recording journal: {e}"));
                    None
                }
            },
            None => None,
        };
        queue.position = journaled.unwrap_or(first_position + n as u64);
        let handover = match journaled {
            Some(_) => Handover::Journaled,
            None => Handover::InMemory,
        };
        let buffered = self.inner.buffered.fetch_add(n, Ordering::Relaxed);
        if refusal.is_none() && !ending && buffered + n > self.inner.max_buffered {
            refusal = Some(format!(
                "the recording buffer is full ({buffered} events wait for the store): the \
                 session is ended rather than recorded incompletely"
            ));
        }
        // Queued even when refused: these events describe frames already seen, and a
        // recording with a gap would be worse than a short overshoot of the bound.
        queue.jobs.push(Job {
            progress: progress.clone(),
            events: encoded,
            text,
            first_position,
            end,
        });
        drop(queue);
        if ending || (urgent && handover == Handover::InMemory) {
            self.inner.wake.notify_one();
        }
        match refusal {
            Some(why) => {
                progress.fail(why.clone());
                Err(RecordingFailed(why))
            }
            None => Ok(handover),
        }
    }

    /// Events handed over and not yet stored (for metrics and tests).
    pub fn buffered(&self) -> usize {
        self.inner.buffered.load(Ordering::Relaxed)
    }

    /// No more sessions: the writer stores what it holds, seals, and returns.
    pub(super) fn close(&self) {
        self.inner.queue.lock().expect("queue lock").closed = true;
        self.inner.wake.notify_one();
    }
}

/// One session as the writer tracks it.
struct Recording {
    chain: Chain,
    progress: Arc<Progress>,
    /// Set when the session has ended: stored on its row, then the recording is sealed.
    end: Option<SessionEnd>,
}

/// The writer task's state.
pub struct Writer {
    inner: Arc<Inner>,
    store: Arc<dyn Store>,
    key: Arc<RecordingKey>,
    flush_interval: Duration,
    commit_timeout: Duration,
    recordings: HashMap<Uuid, Recording>,
    /// Chained events not yet stored, in order, as the blocks (rows) they will be stored in.
    backlog: VecDeque<EventBlock>,
    /// Whether the last attempt failed, and the next delay.
    retry: Option<Duration>,
    /// When preparing a spare journal segment last failed.
    spare_failed: Option<Instant>,
}

/// Builds the writer and the handle taps use; with a `journal`, every event is journaled when
/// it is handed over.
pub fn writer(
    store: Arc<dyn Store>,
    key: Arc<RecordingKey>,
    settings: &RecorderSettings,
    journal: Option<Journal>,
) -> (Writer, WriterHandle) {
    let inner = Arc::new(Inner {
        queue: Mutex::new(Queue {
            journal,
            ..Queue::default()
        }),
        wake: Notify::new(),
        buffered: AtomicUsize::new(0),
        max_buffered: settings.max_buffered_events,
        store_healthy: AtomicBool::new(true),
    });
    let writer = Writer {
        inner: inner.clone(),
        store,
        key,
        flush_interval: settings.flush_interval,
        commit_timeout: settings.commit_timeout,
        recordings: HashMap::new(),
        backlog: VecDeque::new(),
        retry: None,
        spare_failed: None,
    };
    (writer, WriterHandle { inner })
}

impl Writer {
    /// Runs until the handle is closed and everything is stored, or until `give_up` completes
    /// after the close (the store stayed unreachable); returns how many events were not stored.
    pub async fn run(mut self, give_up: impl std::future::Future<Output = ()>) -> usize {
        tokio::pin!(give_up);
        let mut closing = false;
        loop {
            // Closing with a healthy store: no waiting, just drain.
            if !closing || self.retry.is_some() {
                let delay = self.retry.unwrap_or(self.flush_interval);
                tokio::select! {
                    // While the store fails, only the back-off timer (and shutdown) wakes us.
                    _ = self.inner.wake.notified(), if self.retry.is_none() => {}
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut give_up, if closing => return self.abandon(),
                }
            }
            let (jobs, closed) = {
                let mut queue = self.inner.queue.lock().expect("queue lock");
                (std::mem::take(&mut queue.jobs), queue.closed)
            };
            closing = closed;
            self.chain(jobs).await;
            if self.write_backlog().await {
                self.release_journal();
                self.seal_ended().await;
            }
            self.prepare_spare_segment().await;
            // Once per round, off the taps' path: what still waits for the store.
            metrics::get()
                .recorder_queued_events
                .set(self.inner.buffered.load(Ordering::Relaxed) as f64);
            if closing && self.backlog.is_empty() && !self.has_unsealed_ends() {
                let mut queue = self.inner.queue.lock().expect("queue lock");
                if queue.jobs.is_empty() {
                    let stored = queue.position;
                    if let Some(journal) = queue.journal.take() {
                        journal.close(stored);
                    }
                    return 0;
                }
            }
        }
    }

    fn has_unsealed_ends(&self) -> bool {
        self.recordings.values().any(|r| r.end.is_some())
    }

    /// Links queued events into their sessions' chains and appends them to the backlog.
    ///
    /// It yields to the runtime every [`CHAIN_SLICE`] events: a round of busy sessions is
    /// thousands of events (milliseconds of hashing), and the relays that share this worker
    /// thread would otherwise stall behind it, their clients idle.
    async fn chain(&mut self, mut jobs: Vec<Job>) {
        // Grouped by session here, a few dozen jobs, so that a session's events of the round
        // make one block: one row in the store, where hundreds of blocks of a few events each
        // cost SQLite most of the writer's time. Stable: each session's jobs keep their order.
        jobs.sort_by_key(|job| job.progress.session_id);
        let mut since_yield = 0;
        for run in jobs.chunk_by(|a, b| a.progress.session_id == b.progress.session_id) {
            let progress = &run[0].progress;
            let id = progress.session_id;
            let recording = self.recordings.entry(id).or_insert_with(|| Recording {
                chain: Chain::new(id),
                progress: progress.clone(),
                end: None,
            });
            // One block (row) for the session's events of this round, its columns sized once.
            let events: usize = run.iter().map(|job| job.events.len()).sum();
            let bytes: usize = run.iter().map(|job| job.text.len()).sum();
            let mut block = None;
            for job in run {
                since_yield += job.events.len();
                if since_yield >= CHAIN_SLICE {
                    since_yield = 0;
                    tokio::task::yield_now().await;
                }
                for (event, body) in bodies(&job.events, &job.text) {
                    let chained = chain_into(
                        &mut block,
                        recording,
                        event,
                        body,
                        (events, bytes),
                        &mut self.backlog,
                    );
                    if let Err(why) = chained {
                        // A recorder bug, not an outage: say so loudly and stop this session.
                        error!(session = %id, error = %why, "cannot chain an event");
                        metrics::get().recorder_events_dropped.increment(1);
                        self.inner.buffered.fetch_sub(1, Ordering::Relaxed);
                        recording.progress.fail(format!("recording error: {why}"));
                    }
                }
                if job.end.is_some() {
                    recording.end = job.end.clone();
                }
            }
            self.backlog.extend(block);
        }
    }

    /// Gives the journal its next segment before it needs it: made on a blocking thread,
    /// outside the queue lock.
    async fn prepare_spare_segment(&mut self) {
        // After a failure (a full disk), once a second: the rotation itself tries meanwhile.
        if self
            .spare_failed
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        let dir = {
            let queue = self.inner.queue.lock().expect("queue lock");
            match queue.journal.as_ref().and_then(Journal::wants_spare) {
                Some(dir) => dir,
                None => return,
            }
        };
        match tokio::task::spawn_blocking(move || Segment::prepare(&dir)).await {
            Ok(Ok(segment)) => {
                let mut queue = self.inner.queue.lock().expect("queue lock");
                match queue.journal.as_mut() {
                    Some(journal) => journal.give_spare(segment),
                    None => segment.discard(),
                }
            }
            // The rotation will try again itself, on the relay's path, and fail the session
            // if it cannot.
            Ok(Err(e)) => {
                if self.spare_failed.is_none() {
                    warn!(error = %e, "cannot prepare the next journal segment");
                }
                self.spare_failed = Some(Instant::now());
                return;
            }
            Err(e) => warn!(error = %e, "preparing the next journal segment failed"),
        }
        self.spare_failed = None;
    }

    /// Everything taken from the queue is stored: journal segments holding only stored events
    /// can go.
    fn release_journal(&self) {
        let mut queue = self.inner.queue.lock().expect("queue lock");
        let stored = queue
            .jobs
            .first()
            .map_or(queue.position, |job| job.first_position);
        if let Some(journal) = queue.journal.as_mut() {
            journal.release(stored);
        }
    }

    /// Stores the backlog in transactions; false when the store failed (retry later).
    async fn write_backlog(&mut self) -> bool {
        while !self.backlog.is_empty() {
            // Whole blocks, up to MAX_BATCH events (at least one block). Each block is a row
            // and was made whole by `chain`: a session's events of a round together.
            let mut n = 0;
            let mut events = 0;
            for block in &self.backlog {
                if n > 0 && events + block.len() > MAX_BATCH {
                    break;
                }
                n += 1;
                events += block.len();
            }
            let started = Instant::now();
            let appended = self.append_front(n).await;
            let m = metrics::get();
            m.recorder_commit_duration
                .record(started.elapsed().as_secs_f64());
            m.recorder_batch_events.record(events as f64);
            let failure = match appended {
                Ok(()) => None,
                // An earlier attempt that gave up waiting may have committed after all, in
                // part or whole: drop what the store holds, then try the rest again.
                Err(StoreError::Duplicate { .. }) => match self.drop_stored(n).await {
                    Ok(()) => continue,
                    Err(e) => Some(e),
                },
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failure {
                self.failed(&why);
                return false;
            }
            if self.retry.take().is_some() {
                info!("the store takes recordings again");
            }
            self.inner.store_healthy.store(true, Ordering::Relaxed);
            let mut done: HashMap<Uuid, u64> = HashMap::new();
            for block in self.backlog.drain(..n) {
                done.insert(block.session_id(), block.last_seq() as u64 + 1);
            }
            self.inner.buffered.fetch_sub(events, Ordering::Relaxed);
            for (id, committed) in done {
                if let Some(recording) = self.recordings.get(&id) {
                    recording.progress.advance(committed);
                }
            }
        }
        true
    }

    /// Appends the first `n` backlog blocks in one transaction. Past `commit_timeout` the
    /// strict sessions waiting on it are ended (they may not wait longer), but the commit is
    /// still awaited, up to [`hard_timeout`]: abandoning it early would leave its outcome
    /// unknown.
    async fn append_front(&mut self, n: usize) -> Result<(), StoreError> {
        self.backlog.make_contiguous();
        let batch = &self.backlog.as_slices().0[..n];
        let append = self.store.append_blocks(batch);
        tokio::pin!(append);
        tokio::select! {
            result = &mut append => return result,
            _ = tokio::time::sleep(self.commit_timeout) => {}
        }
        let why = format!(
            "the store did not commit within {} ms",
            self.commit_timeout.as_millis()
        );
        let waiting: HashSet<Uuid> = batch.iter().map(EventBlock::session_id).collect();
        self.fail_strict(waiting, &why);
        match tokio::time::timeout(hard_timeout(self.commit_timeout), append).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Corrupt(format!("{why}; gave up waiting"))),
        }
    }

    /// Removes from the front `n` blocks of the backlog those the store already holds
    /// (checking they are the same events), after a batch was refused as a duplicate. Blocks
    /// go to the store whole, in one transaction each attempt, so a block is stored whole or
    /// not at all.
    async fn drop_stored(&mut self, n: usize) -> Result<(), String> {
        let ranges = crate::store::seq_ranges(&self.backlog.make_contiguous()[..n]);
        let mut stored: HashMap<(Uuid, i64), Vec<u8>> = HashMap::new();
        for (id, (lowest, highest)) in ranges {
            let events = self
                .store
                .session_events(id, lowest, highest - lowest + 1)
                .await
                .map_err(|e| e.to_string())?;
            for e in events {
                stored.insert((e.session_id, e.seq), e.hash);
            }
        }
        // Which of the front blocks the store holds, decided before anything is removed: on a
        // mismatch the backlog stays whole.
        let mut held = Vec::with_capacity(n);
        for block in self.backlog.iter().take(n) {
            let id = block.session_id();
            let mut events = 0;
            for (seq, hash) in (block.first_seq()..).zip(block.hashes()) {
                match stored.get(&(id, seq)) {
                    Some(same) if same == hash => events += 1,
                    Some(_) => {
                        error!(session = %id, seq, "the store holds a different event under this seq");
                        return Err(format!(
                            "the store holds a different event as {id} seq {seq}"
                        ));
                    }
                    None => {}
                }
            }
            if events != 0 && events != block.len() {
                return Err(format!(
                    "the store holds part of a block of {id} (seq {} to {})",
                    block.first_seq(),
                    block.last_seq()
                ));
            }
            held.push(events != 0);
        }
        let mut kept = VecDeque::with_capacity(self.backlog.len());
        let mut dropped = 0;
        for (i, block) in self.backlog.drain(..).enumerate() {
            if held.get(i) == Some(&true) {
                dropped += block.len();
                if let Some(recording) = self.recordings.get(&block.session_id()) {
                    recording.progress.advance(block.last_seq() as u64 + 1);
                }
            } else {
                kept.push_back(block);
            }
        }
        self.backlog = kept;
        self.inner.buffered.fetch_sub(dropped, Ordering::Relaxed);
        if dropped == 0 {
            return Err("the store refused a batch as a duplicate, yet holds none of it".into());
        }
        warn!(
            events = dropped,
            "events of an abandoned attempt were stored after all"
        );
        Ok(())
    }

    /// The store refused or timed out: strict sessions with events waiting end now; buffered
    /// ones go on within the bound.
    fn failed(&mut self, why: &str) {
        metrics::get()
            .store_error(StoreOperation::Recording)
            .increment(1);
        let next = match self.retry {
            None => {
                warn!(
                    error = why,
                    waiting = self.backlog.iter().map(EventBlock::len).sum::<usize>(),
                    "cannot store recordings; retrying"
                );
                RETRY_MIN
            }
            Some(delay) => (delay * 2).min(RETRY_MAX),
        };
        self.retry = Some(next);
        self.inner.store_healthy.store(false, Ordering::Relaxed);
        let waiting: HashSet<Uuid> = self.backlog.iter().map(EventBlock::session_id).collect();
        self.fail_strict(waiting, why);
    }

    /// Ends the strict sessions among `sessions`: their statements cannot be recorded in time.
    fn fail_strict(&self, sessions: HashSet<Uuid>, why: &str) {
        for id in sessions {
            if let Some(recording) = self.recordings.get(&id)
                && recording.progress.policy == RecordingPolicy::Strict
            {
                recording.progress.fail(format!(
                    "the statement was not run because it could not be recorded ({why})"
                ));
            }
        }
    }

    /// Stores the end of every ended session whose events are all stored, and seals its
    /// recording. The session row's end goes first: a seal means the whole session is stored.
    async fn seal_ended(&mut self) {
        let ready: Vec<Uuid> = self
            .recordings
            .iter()
            .filter(|(_, r)| r.end.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let recording = &self.recordings[&id];
            let end = recording.end.clone().expect("filtered on end");
            let seal = recording.chain.seal(&self.key);
            let stored = async {
                self.store.end_session(id, &end).await?;
                match self.store.seal_recording(&seal).await {
                    Err(StoreError::Duplicate { .. }) => Ok(()),
                    other => other,
                }
            };
            match tokio::time::timeout(self.commit_timeout, stored).await {
                Ok(Ok(())) => {
                    self.recordings.remove(&id);
                }
                Ok(Err(e)) => {
                    self.failed(&e.to_string());
                    return;
                }
                Err(_) => {
                    self.failed("the store did not answer in time");
                    return;
                }
            }
        }
    }

    /// The store stayed unreachable through the shutdown deadline: say exactly what is lost.
    fn abandon(self) -> usize {
        let queued: usize = self
            .inner
            .queue
            .lock()
            .expect("queue lock")
            .jobs
            .iter()
            .map(|job| job.events.len())
            .sum();
        let lost = self.backlog.iter().map(EventBlock::len).sum::<usize>() + queued;
        // Seen only by a scrape racing the exit; the log and the exit status say it for sure.
        metrics::get()
            .recorder_events_dropped
            .increment(lost as u64);
        let sessions: HashSet<Uuid> = self.backlog.iter().map(EventBlock::session_id).collect();
        error!(
            events = lost,
            sessions = sessions.len(),
            "shutting down with recording events the store did not take"
        );
        lost
    }
}

#[cfg(test)]
mod tests;
