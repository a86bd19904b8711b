//! [`SearchStore::event_hashes`](super::SearchStore::event_hashes), the part both engines share.
//!
//! A search export ties each statement to the hash of its event, for a page of hundreds of
//! statements at a time. Reading those events one by one costs a query (and the unpacking of a
//! whole block of bodies) per statement. Instead each engine reads, in one query, the `hashes`
//! column of the distinct blocks covering the seqs asked for (a page's statements mostly share a
//! few blocks), and [`pick`] cuts each event's 32 bytes out of its block's column.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;

use crate::store::{StoreError, StoreResult};

/// Bytes of one event's hash in a block's `hashes` column (`blocks.rs`, migration 0005).
const HASH_LEN: usize = 32;

/// What an engine reads of a block for [`pick`]: where it starts and ends, and its hashes.
#[derive(Debug)]
pub(super) struct BlockHashes {
    pub session_id: Uuid,
    pub first_seq: i64,
    pub last_seq: i64,
    pub hashes: Vec<u8>,
}

/// The hash of each `(session, seq)` of `keys` that one of `blocks` holds; the others (a gap in
/// the recording, a purged session) are left out. A block whose `hashes` does not hold 32 bytes
/// per event is `Corrupt`, naming it, as `session_events` would find it.
pub(super) fn pick(
    keys: &[(Uuid, i64)],
    blocks: Vec<BlockHashes>,
) -> StoreResult<HashMap<(Uuid, i64), Vec<u8>>> {
    let mut by_start = BTreeMap::new();
    for block in blocks {
        check(&block)?;
        by_start.insert((block.session_id, block.first_seq), block);
    }
    let mut hashes = HashMap::with_capacity(keys.len());
    for &(session_id, seq) in keys {
        // Blocks of a session never overlap: the one holding seq is the last starting at or
        // before it, if it reaches that far.
        let Some((_, block)) = by_start.range(..=(session_id, seq)).next_back() else {
            continue;
        };
        if block.session_id != session_id || block.last_seq < seq {
            continue;
        }
        let start = (seq - block.first_seq) as usize * HASH_LEN;
        hashes.insert(
            (session_id, seq),
            block.hashes[start..start + HASH_LEN].to_vec(),
        );
    }
    Ok(hashes)
}

fn check(block: &BlockHashes) -> StoreResult<()> {
    let events = block
        .last_seq
        .checked_sub(block.first_seq)
        .and_then(|n| usize::try_from(n).ok())
        .and_then(|n| n.checked_add(1));
    match events {
        Some(n) if block.first_seq >= 0 && Some(block.hashes.len()) == n.checked_mul(HASH_LEN) => {
            Ok(())
        }
        _ => Err(StoreError::Corrupt(format!(
            "recording block of session {} starting at seq {}: hashes holds {} bytes, not \
             {HASH_LEN} for each event up to seq {}",
            block.session_id,
            block.first_seq,
            block.hashes.len(),
            block.last_seq
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(session_id: Uuid, seqs: std::ops::RangeInclusive<i64>) -> BlockHashes {
        BlockHashes {
            session_id,
            first_seq: *seqs.start(),
            last_seq: *seqs.end(),
            hashes: seqs.flat_map(|seq| hash(session_id, seq)).collect(),
        }
    }

    /// A hash that names its event.
    fn hash(session_id: Uuid, seq: i64) -> Vec<u8> {
        let mut hash = session_id.as_bytes()[..8].to_vec();
        hash.extend_from_slice(&[0xab; 16]);
        hash.extend_from_slice(&seq.to_be_bytes());
        hash
    }

    #[test]
    fn each_key_gets_the_hash_of_its_own_block_and_keys_in_gaps_get_none() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let blocks = vec![block(a, 0..=4), block(a, 8..=9), block(b, 0..=2)];
        let keys = [
            (a, 0),
            (a, 4),
            (a, 6),
            (a, 9),
            (a, 10),
            (b, 1),
            (b, 3),
            (a, -1),
        ];
        let found = pick(&keys, blocks).unwrap();
        let mut seen: Vec<(Uuid, i64)> = found.keys().copied().collect();
        seen.sort();
        assert_eq!(seen, [(a, 0), (a, 4), (a, 9), (b, 1)]);
        for (key, value) in found {
            assert_eq!(value, hash(key.0, key.1));
        }
    }

    #[test]
    fn a_block_with_short_hashes_is_corrupt_even_if_no_key_falls_in_it() {
        let mut short = block(Uuid::nil(), 3..=5);
        short.hashes.pop();
        let err = pick(&[], vec![short]).unwrap_err().to_string();
        assert!(
            err.contains("starting at seq 3: hashes holds 95 bytes"),
            "{err}"
        );
        let mut reversed = block(Uuid::nil(), 3..=5);
        reversed.last_seq = 1;
        assert!(pick(&[], vec![reversed]).is_err());
    }
}
