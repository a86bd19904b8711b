//! Recording events stored in blocks, shared by both engines.
//!
//! A block is one row holding a run of consecutive events of one session (see
//! `migrations/*/0005_recording_blocks.sql` for the columns and why). The `Store` API still takes
//! and returns [`StoredEvent`]s: this module packs a batch into blocks and unpacks stored blocks
//! into events, checking every length so that a row edited by hand is `Corrupt`, never a panic.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{StoreError, StoreResult, StoredEvent};

/// Events per block at most. The writer's batches rarely reach it (a block holds what one
/// session produced in one flush, typically tens to hundreds of events); it bounds what a reader
/// asking for a few events may have to load.
pub(super) const MAX_BLOCK_EVENTS: usize = 1_000;

/// Bytes of bodies per block at most, for the same reason; a bigger body gets a block of its own.
pub(super) const MAX_BLOCK_BODY_BYTES: usize = 1 << 20;

const HASH_LEN: usize = 32;
const AT_LEN: usize = 8;
const KIND_SEPARATOR: char = ',';
/// serde_json escapes control characters inside strings and emits no whitespace between tokens,
/// so a canonical JSON body never holds a raw newline.
const BODY_SEPARATOR: char = '\n';

/// A block about to be stored: a run of `events` packed into the columns.
#[derive(Debug)]
pub(super) struct NewBlock<'b> {
    pub session_id: Uuid,
    pub first_seq: i64,
    pub last_seq: i64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// The events' kinds joined by ','.
    pub kinds: String,
    /// The events' bodies joined by '\n'.
    pub body: String,
    /// Each event's time: 8-byte big-endian microseconds since the epoch.
    pub ats: Vec<u8>,
    /// The first event's `prev_hash`; each later event's is the hash before it.
    pub prev_hash: &'b [u8],
    /// The events' hashes, 32 bytes each.
    pub hashes: Vec<u8>,
}

/// Cuts `batch` into blocks: maximal runs, in batch order, of events of one session whose seqs
/// follow each other and whose `prev_hash` is the hash of the event before (so that it need not
/// be stored), within [`MAX_BLOCK_EVENTS`] and [`MAX_BLOCK_BODY_BYTES`]. Refuses, as `Corrupt`,
/// an event that a block could not give back as it was (a raw newline in its body, a ',' in its
/// kind, hashes that are not 32 bytes).
pub(super) fn blocks_of(batch: &[StoredEvent]) -> StoreResult<Vec<NewBlock<'_>>> {
    for event in batch {
        check_storable(event)?;
    }
    let mut blocks = Vec::new();
    let mut start = 0;
    let mut body_bytes = 0;
    for (i, event) in batch.iter().enumerate() {
        if i > start
            && (!continues(&batch[i - 1], event)
                || i - start >= MAX_BLOCK_EVENTS
                || body_bytes + event.body.len() > MAX_BLOCK_BODY_BYTES)
        {
            blocks.push(pack(&batch[start..i]));
            start = i;
            body_bytes = 0;
        }
        body_bytes += event.body.len() + 1;
    }
    if start < batch.len() {
        blocks.push(pack(&batch[start..]));
    }
    Ok(blocks)
}

fn continues(before: &StoredEvent, event: &StoredEvent) -> bool {
    event.session_id == before.session_id
        && before.seq.checked_add(1) == Some(event.seq)
        && event.prev_hash == before.hash
}

fn check_storable(event: &StoredEvent) -> StoreResult<()> {
    let refuse = |why: &str| {
        Err(StoreError::Corrupt(format!(
            "{} cannot be stored: {why}",
            event_label(event)
        )))
    };
    if event.seq < 0 {
        return refuse("its seq is negative");
    }
    if event.kind.is_empty() || event.kind.contains(KIND_SEPARATOR) {
        return refuse("its kind is empty or holds a ','");
    }
    if event.body.contains(BODY_SEPARATOR) {
        return refuse("its body holds a raw newline, which canonical JSON never does");
    }
    if event.prev_hash.len() != HASH_LEN || event.hash.len() != HASH_LEN {
        return refuse("its prev_hash and hash must be 32 bytes each");
    }
    Ok(())
}

/// Packs a non-empty run of events that [`continues`] links.
fn pack(run: &[StoredEvent]) -> NewBlock<'_> {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    let body_len = run.iter().map(|e| e.body.len() + 1).sum();
    let mut kinds = String::with_capacity(run.iter().map(|e| e.kind.len() + 1).sum());
    let mut body = String::with_capacity(body_len);
    let mut ats = Vec::with_capacity(run.len() * AT_LEN);
    let mut hashes = Vec::with_capacity(run.len() * HASH_LEN);
    for (i, event) in run.iter().enumerate() {
        if i > 0 {
            kinds.push(KIND_SEPARATOR);
            body.push(BODY_SEPARATOR);
        }
        kinds.push_str(&event.kind);
        body.push_str(&event.body);
        ats.extend_from_slice(&event.at.timestamp_micros().to_be_bytes());
        hashes.extend_from_slice(&event.hash);
    }
    NewBlock {
        session_id: first.session_id,
        first_seq: first.seq,
        last_seq: last.seq,
        first_at: first.at,
        last_at: last.at,
        kinds,
        body,
        ats,
        prev_hash: &first.prev_hash,
        hashes,
    }
}

/// Whether two blocks of the batch share a `(session, seq)`.
pub(super) fn overlap_within(blocks: &[NewBlock<'_>]) -> bool {
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
pub(super) fn seq_ranges(batch: &[StoredEvent]) -> HashMap<Uuid, (i64, i64)> {
    let mut ranges = HashMap::new();
    for event in batch {
        let (lowest, highest) = ranges
            .entry(event.session_id)
            .or_insert((event.seq, event.seq));
        *lowest = event.seq.min(*lowest);
        *highest = event.seq.max(*highest);
    }
    ranges
}

/// The first event of `batch` whose (session, seq) an earlier event of the batch or a stored
/// block (`stored`: the `(first_seq, last_seq)` of blocks per session) already has.
pub(super) fn first_repeated<'b>(
    batch: &'b [StoredEvent],
    stored: &HashMap<Uuid, Vec<(i64, i64)>>,
) -> Option<&'b StoredEvent> {
    let mut seen = HashSet::new();
    batch.iter().find(|event| {
        !seen.insert((event.session_id, event.seq))
            || stored.get(&event.session_id).is_some_and(|ranges| {
                ranges
                    .iter()
                    .any(|&(first, last)| (first..=last).contains(&event.seq))
            })
    })
}

/// The `Duplicate` error naming the first repeated event of a batch found to overlap.
pub(super) fn duplicate(
    batch: &[StoredEvent],
    stored: &HashMap<Uuid, Vec<(i64, i64)>>,
) -> Option<StoreError> {
    first_repeated(batch, stored).map(|event| StoreError::Duplicate {
        what: "event",
        name: event_label(event),
    })
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

    fn stored(block: &NewBlock<'_>) -> StoredBlock {
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
        batch.push(event(a, 2));
        let none = HashMap::new();
        assert_eq!(first_repeated(&batch, &none).map(|e| e.seq), Some(2));
        let stored = HashMap::from([(a, vec![(4, 5)])]);
        assert_eq!(first_repeated(&batch, &stored).map(|e| e.seq), Some(4));
        assert_eq!(
            duplicate(&batch, &stored).unwrap().to_string(),
            format!("event '{a} seq 4' already exists")
        );
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
