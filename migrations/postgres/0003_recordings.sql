-- Session recordings.
--
-- Each session's events form a hash chain: `hash` is SHA-256 over `prev_hash` and `body`, and
-- `body` is the event's canonical JSON, exactly the bytes that were hashed. So `body` is text,
-- not jsonb: jsonb would reorder keys and normalise whitespace and numbers, and the chain would
-- no longer verify.
--
-- Events and seals reference their session with ON DELETE CASCADE: the gateway writes the
-- session row before the first event, an event without its session is meaningless, and a
-- retention job removing old sessions removes their recordings in the same statement instead
-- of leaving orphans behind.

CREATE TABLE recording_events (
    session_id uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq        bigint      NOT NULL CHECK (seq >= 0),
    at         timestamptz NOT NULL,
    kind       text        NOT NULL CHECK (kind <> ''),
    body       text        NOT NULL,
    prev_hash  bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash       bytea       NOT NULL CHECK (octet_length(hash) = 32),
    -- Also the index for paging a session's events and for the cascade from sessions.
    CONSTRAINT recording_events_pkey PRIMARY KEY (session_id, seq)
);

-- The signature that closes a recording: at most one per session.
CREATE TABLE recording_seals (
    session_id  uuid        PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    event_count bigint      NOT NULL CHECK (event_count >= 0),
    final_hash  bytea       NOT NULL CHECK (octet_length(final_hash) = 32),
    -- Ed25519 signatures are always 64 bytes.
    signature   bytea       NOT NULL CHECK (octet_length(signature) = 64),
    -- SHA-256 of the signing public key, hex.
    key_id      text        NOT NULL CHECK (key_id <> ''),
    sealed_at   timestamptz NOT NULL
);
