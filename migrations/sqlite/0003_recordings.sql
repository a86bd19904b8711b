-- Session recordings (conventions in 0001_initial.sql).
--
-- Each session's events form a hash chain: `hash` is SHA-256 over `prev_hash` and `body`, and
-- `body` is the event's canonical JSON, exactly the bytes that were hashed. So `body` is TEXT
-- returned byte for byte, never re-encoded JSON.
--
-- Events and seals reference their session with ON DELETE CASCADE: the gateway writes the
-- session row before the first event, an event without its session is meaningless, and a
-- retention job removing old sessions removes their recordings in the same statement instead
-- of leaving orphans behind.
--
-- A rowid table rather than WITHOUT ROWID: bodies can be large (result rows, COPY data up to
-- the cap), and SQLite advises WITHOUT ROWID only for rows much smaller than a page. The
-- primary key's index serves paging by (session_id, seq) and the cascade from sessions.

CREATE TABLE recording_events (
    session_id BLOB    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL CHECK (seq >= 0),
    at         TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind <> ''),
    body       TEXT    NOT NULL,
    prev_hash  BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash       BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (session_id, seq)
) STRICT;

-- The signature that closes a recording: at most one per session.
CREATE TABLE recording_seals (
    session_id  BLOB    PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    event_count INTEGER NOT NULL CHECK (event_count >= 0),
    final_hash  BLOB    NOT NULL CHECK (length(final_hash) = 32),
    -- Ed25519 signatures are always 64 bytes.
    signature   BLOB    NOT NULL CHECK (length(signature) = 64),
    -- SHA-256 of the signing public key, hex.
    key_id      TEXT    NOT NULL CHECK (key_id <> ''),
    sealed_at   TEXT    NOT NULL
) STRICT;
