-- Recording events in blocks, and the recording policy of each session (conventions in
-- 0001_initial.sql).
--
-- Why blocks: with one row per event, the recorder's CPU went to storing rows rather than to
-- recording: a B-tree insert, seven bound parameters and their encoding per event, about five
-- events per pgbench transaction. A block is one row holding a run of consecutive events of one
-- session, as the recording writer flushes them (every 10 ms: typically tens to hundreds of
-- events), so those costs are paid once per run instead of once per event. The store's API still
-- takes and returns single events; only this table changed.
--
-- Columns, for the events first_seq..last_seq (no gaps inside a block):
--   first_at, last_at  the first and last event's time, for finding a session's events by time
--   kinds              the events' kinds joined by ',' (kinds never hold one)
--   body               the events' canonical JSON joined by '\n': canonical JSON never holds a
--                      raw newline (the store refuses a body that does), so splitting at '\n'
--                      gives each body back byte for byte, as it was hashed
--   ats                each event's time, 8-byte big-endian microseconds since the epoch
--   prev_hash          the first event's prev_hash; each later event's prev_hash is the hash of
--                      the event before it, so only the first one is stored
--   hashes             the events' SHA-256 hashes, 32 bytes each, concatenated
-- A block never overlaps another of its session: the store checks that in the transaction that
-- adds it (the primary key alone only stops two blocks starting at the same seq).
--
-- A rowid table rather than WITHOUT ROWID: blocks are large (many events, result rows, COPY
-- data), far larger than the small rows WITHOUT ROWID suits. The primary key's index serves
-- reading a session from a seq on, finding its last event, and the cascade from sessions, which
-- removes a session's recording with the session as before.

CREATE TABLE recording_blocks (
    session_id BLOB    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    first_seq  INTEGER NOT NULL CHECK (first_seq >= 0),
    last_seq   INTEGER NOT NULL CHECK (last_seq >= first_seq),
    first_at   TEXT    NOT NULL,
    last_at    TEXT    NOT NULL,
    kinds      TEXT    NOT NULL CHECK (kinds <> ''),
    body       TEXT    NOT NULL,
    ats        BLOB    NOT NULL CHECK (length(ats) = 8 * (last_seq - first_seq + 1)),
    prev_hash  BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hashes     BLOB    NOT NULL CHECK (length(hashes) = 32 * (last_seq - first_seq + 1)),
    PRIMARY KEY (session_id, first_seq)
) STRICT;

-- Every stored event becomes a block of its own: exact, and the chain and seals stay valid
-- because no body, hash or time changes. `at` is fixed-width text (0001_initial.sql), so its
-- first 19 characters are the second and characters 21 to 26 the microseconds.
INSERT INTO recording_blocks
    (session_id, first_seq, last_seq, first_at, last_at, kinds, body, ats, prev_hash, hashes)
SELECT session_id, seq, seq, at, at, kind, body,
       unhex(printf('%016x',
                    unixepoch(substr(at, 1, 19)) * 1000000 + CAST(substr(at, 21, 6) AS INTEGER))),
       prev_hash, hash
FROM recording_events;

DROP TABLE recording_events;

-- How the session was recorded (its target's policy when it started): 'off' tells a session
-- recorded without events from one whose events were deleted. What sessions from before this
-- column were recorded with is not known (their target's policy may have changed since); they
-- get 'strict', the default policy, so a recording of theirs that is missing stays suspect.
ALTER TABLE sessions ADD COLUMN recording TEXT NOT NULL DEFAULT 'strict'
    CHECK (recording IN ('strict', 'buffered', 'off'));
