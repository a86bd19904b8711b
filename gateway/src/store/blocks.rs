//! Recording events stored in blocks, shared by both engines.
//!
//! A block is one row holding a run of consecutive events of one session (see
//! `migrations/*/0005_recording_blocks.sql` for the columns and why). The recorder's writer
//! builds [`EventBlock`]s directly, event by event as it chains them, so that the forwarding
//! path's events never exist as separate values on the way to the store; `append_events` packs a
//! batch of [`StoredEvent`]s into blocks the same way. Stored blocks are unpacked into events,
//! checking every length so that a row edited by hand is `Corrupt`, never a panic.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{StoreError, StoreResult, StoredEvent};

/// Events per block at most. The writer's batches rarely reach it (a block holds what one
/// session produced in one flush, typically tens to hundreds of events); it bounds what a reader
/// asking for a few events may have to load.
pub const MAX_BLOCK_EVENTS: usize = 1_000;

/// Bytes of bodies per block at most, for the same reason; a bigger body gets a block of its own.
pub const MAX_BLOCK_BODY_BYTES: usize = 1 << 20;

const HASH_LEN: usize = 32;
const AT_LEN: usize = 8;
const KIND_SEPARATOR: char = ',';
/// serde_json escapes control characters inside strings and emits no whitespace between tokens,
/// so a canonical JSON body never holds a raw newline.
const BODY_SEPARATOR: char = '\n';

/// A run of consecutive, chained events of one session, packed into the columns of one row.
/// Only [`EventBlock::push`] adds events, and it keeps the columns consistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBlock {
    pub(super) session_id: Uuid,
    pub(super) first_seq: i64,
    pub(super) last_seq: i64,
    pub(super) first_at: DateTime<Utc>,
    pub(super) last_at: DateTime<Utc>,
    /// The events' kinds joined by ','.
    pub(super) kinds: String,
    /// The events' bodies joined by '\n'.
    pub(super) body: String,
    /// Each event's time: 8-byte big-endian microseconds since the epoch.
    pub(super) ats: Vec<u8>,
    /// The first event's `prev_hash`; each later event's is the hash before it.
    pub(super) prev_hash: [u8; HASH_LEN],
    /// The events' hashes, 32 bytes each.
    pub(super) hashes: Vec<u8>,
}

/// Why an event cannot join a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstorable {
    /// Its body holds a raw newline, which canonical JSON never does.
    Newline,
    /// Its kind is empty or holds a ','.
    Kind,
}

impl std::fmt::Display for Unstorable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unstorable::Newline => "its body holds a raw newline, which canonical JSON never does",
            Unstorable::Kind => "its kind is empty or holds a ','",
        })
    }
}

impl EventBlock {
    /// An empty block whose first event will be `first_seq`, linked to `prev_hash`.
    pub fn new(session_id: Uuid, first_seq: i64, prev_hash: [u8; HASH_LEN]) -> EventBlock {
        EventBlock {
            session_id,
            first_seq,
            last_seq: first_seq - 1,
            first_at: DateTime::<Utc>::MIN_UTC,
            last_at: DateTime::<Utc>::MIN_UTC,
            kinds: String::new(),
            body: String::new(),
            ats: Vec::new(),
            prev_hash,
            hashes: Vec::new(),
        }
    }

    pub fn session_id(&self) -> Uuid {
        self.session_id
    }

    pub fn first_seq(&self) -> i64 {
        self.first_seq
    }

    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The hash of the last event (the first one's `prev_hash` while empty).
    pub fn last_hash(&self) -> &[u8] {
        match self.hashes.len() {
            0 => &self.prev_hash,
            n => &self.hashes[n - HASH_LEN..],
        }
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.hashes.len() / HASH_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether an event with a body of `body_len` bytes may join without passing the caps
    /// ([`MAX_BLOCK_EVENTS`], [`MAX_BLOCK_BODY_BYTES`]); an empty block takes any body.
    pub fn has_room(&self, body_len: usize) -> bool {
        self.is_empty()
            || (self.len() < MAX_BLOCK_EVENTS
                && self.body.len() + 1 + body_len <= MAX_BLOCK_BODY_BYTES)
    }

    /// Room for `events` more events and `body_bytes` more bytes of bodies, reserved at once.
    pub fn reserve(&mut self, events: usize, body_bytes: usize) {
        self.kinds.reserve(events * 16);
        self.body.reserve(body_bytes + events);
        self.ats.reserve(events * AT_LEN);
        self.hashes.reserve(events * HASH_LEN);
    }

    /// Whether an event of `kind` with `body` can be stored in a block and given back as it was.
    pub fn check(kind: &str, body: &str) -> Result<(), Unstorable> {
        if kind.is_empty() || kind.contains(KIND_SEPARATOR) {
            return Err(Unstorable::Kind);
        }
        if body.as_bytes().contains(&b'\n') {
            return Err(Unstorable::Newline);
        }
        Ok(())
    }

    /// The events' hashes, in order.
    pub fn hashes(&self) -> impl Iterator<Item = &[u8]> {
        self.hashes.chunks_exact(HASH_LEN)
    }

    /// Appends the next event: seq [`EventBlock::last_seq`] + 1, its predecessor's hash being
    /// [`EventBlock::last_hash`] (the caller chained it so).
    pub fn push(
        &mut self,
        at: DateTime<Utc>,
        kind: &str,
        body: &str,
        hash: &[u8; HASH_LEN],
    ) -> Result<(), Unstorable> {
        EventBlock::check(kind, body)?;
        if self.is_empty() {
            self.first_at = at;
        } else {
            self.kinds.push(KIND_SEPARATOR);
            self.body.push(BODY_SEPARATOR);
        }
        self.kinds.push_str(kind);
        self.body.push_str(body);
        self.ats
            .extend_from_slice(&at.timestamp_micros().to_be_bytes());
        self.hashes.extend_from_slice(hash);
        self.last_at = at;
        self.last_seq += 1;
        Ok(())
    }
}

/// Cuts `batch` into blocks: maximal runs, in batch order, of events of one session whose seqs
/// follow each other and whose `prev_hash` is the hash of the event before (so that it need not
/// be stored), within [`MAX_BLOCK_EVENTS`] and [`MAX_BLOCK_BODY_BYTES`]. Refuses, as `Corrupt`,
/// an event that a block could not give back as it was (a raw newline in its body, a ',' in its
/// kind, hashes that are not 32 bytes).
pub(super) fn blocks_of(batch: &[StoredEvent]) -> StoreResult<Vec<EventBlock>> {
    let mut blocks: Vec<EventBlock> = Vec::new();
    let mut before: Option<&StoredEvent> = None;
    for event in batch {
        let refuse = |why: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("{} cannot be stored: {why}", event_label(event)))
        };
        if event.seq < 0 {
            return Err(refuse(&"its seq is negative"));
        }
        let (Ok(prev_hash), Ok(hash)) = (
            <[u8; HASH_LEN]>::try_from(event.prev_hash.as_slice()),
            <&[u8; HASH_LEN]>::try_from(event.hash.as_slice()),
        ) else {
            return Err(refuse(&"its prev_hash and hash must be 32 bytes each"));
        };
        let joins = before.is_some_and(|b| continues(b, event))
            && blocks.last().is_some_and(|b| b.has_room(event.body.len()));
        if !joins {
            blocks.push(EventBlock::new(event.session_id, event.seq, prev_hash));
        }
        let block = blocks.last_mut().expect("a block was just pushed");
        block
            .push(event.at, &event.kind, &event.body, hash)
            .map_err(|why| refuse(&why))?;
        before = Some(event);
    }
    Ok(blocks)
}

fn continues(before: &StoredEvent, event: &StoredEvent) -> bool {
    event.session_id == before.session_id
        && before.seq.checked_add(1) == Some(event.seq)
        && event.prev_hash == before.hash
}

/// Whether two blocks of the batch share a `(session, seq)`.
pub(super) fn overlap_within(blocks: &[EventBlock]) -> bool {
    let mut ranges: Vec<(Uuid, i64, i64)> = blocks
        .iter()
        .map(|b| (b.session_id, b.first_seq, b.last_seq))
        .collect();
    ranges.sort_unstable();
    // Sorted by start, some two ranges overlap only if two neighbours do.
    ranges
        .windows(2)
        .any(|pair| pair[0].0 == pair[1].0 && pair[1].1 <= pair[0].2)
}

/// A stored block as read back.
#[derive(Debug)]
pub(super) struct StoredBlock {
    pub first_seq: i64,
    pub last_seq: i64,
    pub kinds: String,
    pub body: String,
    pub ats: Vec<u8>,
    pub prev_hash: Vec<u8>,
    pub hashes: Vec<u8>,
}

impl StoredBlock {
    /// Appends to `out` the block's events with `seq >= from_seq` until `out` holds `limit`.
    /// The whole block is checked first: counts or lengths that disagree are `Corrupt`.
    pub(super) fn unpack_into(
        &self,
        session_id: Uuid,
        from_seq: i64,
        limit: usize,
        out: &mut Vec<StoredEvent>,
    ) -> StoreResult<()> {
        let corrupt = |what: String| {
            StoreError::Corrupt(format!(
                "recording block of session {session_id} starting at seq {}: {what}",
                self.first_seq
            ))
        };
        if self.first_seq < 0 || self.last_seq < self.first_seq {
            return Err(corrupt(format!("its last seq is {}", self.last_seq)));
        }
        let count = u64::try_from(self.last_seq - self.first_seq)
            .ok()
            .and_then(|n| n.checked_add(1))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| corrupt(format!("its last seq is {}", self.last_seq)))?;
        let holds = |column: &str, len: usize, per_event: usize| {
            if len.is_multiple_of(per_event) && len / per_event == count {
                Ok(())
            } else {
                Err(corrupt(format!(
                    "{column} holds {len} bytes, not {per_event} for each of its {count} events"
                )))
            }
        };
        holds("hashes", self.hashes.len(), HASH_LEN)?;
        holds("ats", self.ats.len(), AT_LEN)?;
        if self.prev_hash.len() != HASH_LEN {
            return Err(corrupt(format!(
                "prev_hash holds {} bytes, not {HASH_LEN}",
                self.prev_hash.len()
            )));
        }
        let kinds: Vec<&str> = self.kinds.split(KIND_SEPARATOR).collect();
        if kinds.len() != count || kinds.iter().any(|k| k.is_empty()) {
            return Err(corrupt(format!(
                "kinds names {} events ({} expected) or an empty kind",
                kinds.len(),
                count
            )));
        }
        let bodies: Vec<&str> = self.body.split(BODY_SEPARATOR).collect();
        if bodies.len() != count {
            return Err(corrupt(format!(
                "body holds {} events, not {count}",
                bodies.len()
            )));
        }
        let mut ats = Vec::with_capacity(count);
        for (i, bytes) in self.ats.chunks_exact(AT_LEN).enumerate() {
            let micros = i64::from_be_bytes(bytes.try_into().expect("chunks of AT_LEN"));
            let at = DateTime::from_timestamp_micros(micros).ok_or_else(|| {
                corrupt(format!(
                    "the time of its event {i} ({micros} µs) is out of range"
                ))
            })?;
            ats.push(at);
        }

        let hashes: Vec<&[u8]> = self.hashes.chunks_exact(HASH_LEN).collect();
        let skip = usize::try_from(from_seq.saturating_sub(self.first_seq)).unwrap_or(0);
        for i in skip..count {
            if out.len() >= limit {
                break;
            }
            let prev_hash = if i == 0 {
                &self.prev_hash[..]
            } else {
                hashes[i - 1]
            };
            out.push(StoredEvent {
                session_id,
                seq: self.first_seq + i as i64,
                at: ats[i],
                kind: kinds[i].to_owned(),
                body: bodies[i].to_owned(),
                prev_hash: prev_hash.to_vec(),
                hash: hashes[i].to_vec(),
            });
        }
        Ok(())
    }
}

/// How an event is named in errors: "SESSION seq N".
pub(super) fn event_label(event: &StoredEvent) -> String {
    format!("{} seq {}", event.session_id, event.seq)
}

/// Each session of a batch with the lowest and highest seq the batch holds for it.
pub fn seq_ranges(blocks: &[EventBlock]) -> HashMap<Uuid, (i64, i64)> {
    let mut ranges = HashMap::new();
    for block in blocks.iter().filter(|b| !b.is_empty()) {
        let (lowest, highest) = ranges
            .entry(block.session_id)
            .or_insert((block.first_seq, block.last_seq));
        *lowest = block.first_seq.min(*lowest);
        *highest = block.last_seq.max(*highest);
    }
    ranges
}

/// The first event of `blocks` (session and seq, in batch order) that an earlier block of the
/// batch or a stored block (`stored`: the `(first_seq, last_seq)` of blocks per session)
/// already has.
pub(super) fn first_repeated(
    blocks: &[EventBlock],
    stored: &HashMap<Uuid, Vec<(i64, i64)>>,
) -> Option<(Uuid, i64)> {
    let mut seen: HashMap<Uuid, Vec<(i64, i64)>> = HashMap::new();
    for block in blocks.iter().filter(|b| !b.is_empty()) {
        let (first, last) = (block.first_seq, block.last_seq);
        let earlier = seen.entry(block.session_id).or_default();
        let repeated = earlier
            .iter()
            .chain(stored.get(&block.session_id).into_iter().flatten())
            .filter(|&&(from, to)| from <= last && first <= to)
            .map(|&(from, _)| from.max(first))
            .min();
        if let Some(seq) = repeated {
            return Some((block.session_id, seq));
        }
        earlier.push((first, last));
    }
    None
}

/// The `Duplicate` error naming the first repeated event of a batch found to overlap.
pub(super) fn duplicate(
    blocks: &[EventBlock],
    stored: &HashMap<Uuid, Vec<(i64, i64)>>,
) -> Option<StoreError> {
    first_repeated(blocks, stored).map(|(session_id, seq)| StoreError::Duplicate {
        what: "event",
        name: format!("{session_id} seq {seq}"),
    })
}

/// Checks a batch before it is stored: no empty block (a row must hold an event).
pub(super) fn check_batch(blocks: &[EventBlock]) -> StoreResult<()> {
    match blocks.iter().find(|b| b.is_empty() || b.first_seq < 0) {
        Some(b) => Err(StoreError::Corrupt(format!(
            "a recording block of session {} starting at seq {} cannot be stored: it holds no \
             event or its seq is negative",
            b.session_id, b.first_seq
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(seq: i64) -> Vec<u8> {
        let mut hash = vec![0xab; 24];
        hash.extend_from_slice(&seq.to_be_bytes());
        hash
    }

    fn event(session_id: Uuid, seq: i64) -> StoredEvent {
        StoredEvent {
            session_id,
            seq,
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456 + seq).unwrap(),
            kind: if seq % 2 == 0 { "query" } else { "rows" }.into(),
            body: format!(r#"{{"seq":{seq},"text":"a\nb"}}"#),
            prev_hash: link(seq - 1),
            hash: link(seq),
        }
    }

    fn run(session_id: Uuid, seqs: std::ops::Range<i64>) -> Vec<StoredEvent> {
        seqs.map(|seq| event(session_id, seq)).collect()
    }

    fn stored(block: &EventBlock) -> StoredBlock {
        StoredBlock {
            first_seq: block.first_seq,
            last_seq: block.last_seq,
            kinds: block.kinds.clone(),
            body: block.body.clone(),
            ats: block.ats.clone(),
            prev_hash: block.prev_hash.to_vec(),
            hashes: block.hashes.clone(),
        }
    }

    fn unpack(block: &StoredBlock, from_seq: i64, limit: usize) -> StoreResult<Vec<StoredEvent>> {
        let mut out = Vec::new();
        block.unpack_into(Uuid::nil(), from_seq, limit, &mut out)?;
        Ok(out)
    }

    #[test]
    fn consecutive_linked_events_of_one_session_make_one_block_that_unpacks_to_them() {
        let batch = run(Uuid::nil(), 3..10);
        let blocks = blocks_of(&batch).unwrap();
        assert_eq!(blocks.len(), 1);
        let block = &blocks[0];
        assert_eq!((block.first_seq, block.last_seq), (3, 9));
        assert_eq!(block.kinds, "rows,query,rows,query,rows,query,rows");
        assert_eq!(block.body.matches('\n').count(), 6);
        assert_eq!(block.first_at, batch[0].at);
        assert_eq!(block.last_at, batch[6].at);
        assert_eq!(unpack(&stored(block), 0, 100).unwrap(), batch);
        assert_eq!(unpack(&stored(block), 5, 2).unwrap(), batch[2..4]);
        assert!(unpack(&stored(block), 10, 100).unwrap().is_empty());
    }

    #[test]
    fn a_gap_another_session_or_a_broken_link_starts_a_new_block() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut batch = run(a, 0..3);
        batch.extend(run(a, 4..6)); // gap
        batch.extend(run(b, 6..8)); // other session
        let mut unlinked = event(b, 8);
        unlinked.prev_hash = vec![0; 32];
        batch.push(unlinked);
        batch.extend(run(a, 6..7)); // back to a, right after its last
        let ranges: Vec<(Uuid, i64, i64)> = blocks_of(&batch)
            .unwrap()
            .iter()
            .map(|b| (b.session_id, b.first_seq, b.last_seq))
            .collect();
        assert_eq!(
            ranges,
            [(a, 0, 2), (a, 4, 5), (b, 6, 7), (b, 8, 8), (a, 6, 6)]
        );
    }

    #[test]
    fn blocks_are_cut_at_their_event_and_byte_caps() {
        let batch = run(Uuid::nil(), 0..(MAX_BLOCK_EVENTS as i64 + 5));
        let sizes: Vec<i64> = blocks_of(&batch)
            .unwrap()
            .iter()
            .map(|b| b.last_seq - b.first_seq + 1)
            .collect();
        assert_eq!(sizes, [MAX_BLOCK_EVENTS as i64, 5]);

        let mut big = run(Uuid::nil(), 0..4);
        big[1].body = "x".repeat(MAX_BLOCK_BODY_BYTES);
        let sizes: Vec<i64> = blocks_of(&big)
            .unwrap()
            .iter()
            .map(|b| b.last_seq - b.first_seq + 1)
            .collect();
        assert_eq!(sizes, [1, 1, 2]);
    }

    #[test]
    fn events_a_block_could_not_give_back_are_refused_as_corrupt() {
        let mut newline = event(Uuid::nil(), 0);
        newline.body = "{\"a\":\n1}".into();
        let mut comma = event(Uuid::nil(), 0);
        comma.kind = "a,b".into();
        let mut short = event(Uuid::nil(), 0);
        short.hash.pop();
        for bad in [newline, comma, short] {
            let err = blocks_of(&[bad]).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt(m) if m.contains("seq 0 cannot be stored")),
                "{err:?}"
            );
        }
    }

    #[test]
    fn empty_bodies_round_trip() {
        let mut batch = run(Uuid::nil(), 0..3);
        for e in &mut batch {
            e.body.clear();
        }
        let blocks = blocks_of(&batch).unwrap();
        assert_eq!(unpack(&stored(&blocks[0]), 0, 10).unwrap(), batch);
    }

    #[test]
    fn overlapping_blocks_of_one_session_are_found_in_any_order() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut batch = run(a, 5..9);
        batch.extend(run(b, 0..3));
        batch.extend(run(a, 0..5));
        assert!(!overlap_within(&blocks_of(&batch).unwrap()));
        batch.extend(run(a, 8..9));
        assert!(overlap_within(&blocks_of(&batch).unwrap()));
    }

    #[test]
    fn the_first_repeated_event_is_named_whether_repeated_in_the_batch_or_stored() {
        let a = Uuid::from_u128(1);
        let mut batch = run(a, 0..6);
        batch.extend(run(a, 2..3));
        let blocks = blocks_of(&batch).unwrap();
        let none = HashMap::new();
        assert_eq!(first_repeated(&blocks, &none), Some((a, 2)));
        let stored = HashMap::from([(a, vec![(4, 5)])]);
        assert_eq!(first_repeated(&blocks, &stored), Some((a, 4)));
        assert_eq!(
            duplicate(&blocks, &stored).unwrap().to_string(),
            format!("event '{a} seq 4' already exists")
        );
        let b = Uuid::from_u128(2);
        let other = blocks_of(&run(b, 0..3)).unwrap();
        assert_eq!(first_repeated(&other, &stored), None);
    }

    #[test]
    fn a_block_built_event_by_event_equals_the_packed_events() {
        let batch = run(Uuid::nil(), 4..9);
        let mut block = EventBlock::new(
            Uuid::nil(),
            4,
            batch[0].prev_hash.clone().try_into().unwrap(),
        );
        block.reserve(5, 200);
        for e in &batch {
            assert_eq!(block.last_hash(), e.prev_hash.as_slice());
            assert!(block.has_room(e.body.len()));
            block
                .push(
                    e.at,
                    &e.kind,
                    &e.body,
                    e.hash.as_slice().try_into().unwrap(),
                )
                .unwrap();
        }
        assert_eq!(blocks_of(&batch).unwrap(), [block.clone()]);
        assert_eq!(
            (block.len(), block.first_seq(), block.last_seq()),
            (5, 4, 8)
        );
        let hash = [0; 32];
        assert_eq!(
            block.push(batch[0].at, "", "{}", &hash),
            Err(Unstorable::Kind)
        );
        assert_eq!(
            block.push(batch[0].at, "a,b", "{}", &hash),
            Err(Unstorable::Kind)
        );
        assert_eq!(
            block.push(batch[0].at, "q", "{\n}", &hash),
            Err(Unstorable::Newline)
        );
        assert_eq!(block.len(), 5, "a refused event leaves the block as it was");
    }

    #[test]
    fn empty_blocks_are_refused_before_they_reach_a_row() {
        let empty = EventBlock::new(Uuid::nil(), 0, [0; 32]);
        assert!(matches!(check_batch(&[empty]), Err(StoreError::Corrupt(_))));
        assert!(check_batch(&blocks_of(&run(Uuid::nil(), 0..2)).unwrap()).is_ok());
    }

    #[test]
    fn malformed_blocks_are_corrupt_naming_session_and_block() {
        let batch = run(Uuid::nil(), 7..10);
        let good = stored(&blocks_of(&batch).unwrap()[0]);
        type Spoil = fn(&mut StoredBlock);
        let cases: [(&str, Spoil); 10] = [
            ("hashes holds 95 bytes", |b| {
                b.hashes.pop();
            }),
            ("hashes holds 128 bytes", |b| b.hashes.extend([0; 32])),
            ("ats holds 16 bytes", |b| b.ats.truncate(16)),
            ("prev_hash holds 0 bytes", |b| b.prev_hash.clear()),
            ("kinds names 2 events", |b| b.kinds = "query,rows".into()),
            ("or an empty kind", |b| b.kinds = "query,,rows".into()),
            ("body holds 4 events", |b| b.body.push('\n')),
            ("its last seq is 6", |b| b.last_seq = 6),
            (
                "hashes holds 96 bytes, not 32 for each of its 9223372036854775801 events",
                |b| b.last_seq = i64::MAX,
            ),
            ("out of range", |b| {
                b.ats[..8].copy_from_slice(&i64::MAX.to_be_bytes())
            }),
        ];
        for (message, spoil) in cases {
            let mut block = stored(&blocks_of(&batch).unwrap()[0]);
            spoil(&mut block);
            let err = unpack(&block, 0, 100).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(message)
                    && text.contains(&format!("session {} starting at seq 7", Uuid::nil())),
                "{message}: {text}"
            );
        }
        assert_eq!(unpack(&good, 0, 100).unwrap(), batch);
    }
}
