-- The statement index: what record::statements makes of each session's recording, for the
-- auditor's search and the session list's counts. The indexer (record::indexer) builds it off
-- the recording path. It is derived data, not part of a recording's integrity: the recordings
-- stay the authority, and deleting a session's rows here and resetting its session_stats row
-- has it indexed again.
--
-- pg_trgm answers substring searches from an index. It ships with PostgreSQL (contrib) and is a
-- trusted extension from PostgreSQL 13 on: the store's role needs only the CREATE privilege on
-- its database (which the owner of the database has). On an older server, or where that role
-- may not create it, a superuser runs CREATE EXTENSION pg_trgm in the store's database first.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE recorded_statements (
    session_id      uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- The seq of the event that ran the statement (Query, Execute, FunctionCall; the Parse of
    -- a Parse that failed on its own): the replay links to it.
    seq             bigint      NOT NULL CONSTRAINT recorded_statements_seq_check CHECK (seq >= 0),
    at              timestamptz NOT NULL,
    -- The session's person and target, copied so the filters need no join.
    person_login    text        NOT NULL,
    target_name     text        NOT NULL,
    class           text        NOT NULL CONSTRAINT recorded_statements_class_check CHECK (class IN
                    ('read', 'write', 'ddl', 'privilege', 'transaction', 'utility', 'unknown')),
    risky           boolean     NOT NULL,
    risks           text[]      NOT NULL,
    has_error       boolean     NOT NULL,
    sqlstate        text,
    error_message   text,
    -- As recorded: capped and redacted by the capture.
    sql             text        NOT NULL,
    -- Bound parameters as SQL literals ("$1 = 'abc', $2 = NULL").
    params          text        NOT NULL,
    tag             text,
    duration_micros bigint      NOT NULL
        CONSTRAINT recorded_statements_duration_check CHECK (duration_micros >= 0),
    rows            bigint      CONSTRAINT recorded_statements_rows_check CHECK (rows >= 0),
    -- Words of the SQL and the parameters: runs of letters and digits, case folded, as the
    -- SQLite engine cuts them. Punctuation becomes space first, because the default parser
    -- keeps 'bob@example.com', 'public.orders' or '/tmp/x' whole, and nobody would find them by
    -- 'bob' or 'orders'. The 'simple' configuration: no stemming or stop words (SQL is not
    -- English).
    search          tsvector    GENERATED ALWAYS AS (to_tsvector('simple',
                        regexp_replace(sql || ' ' || params, '[[:punct:]]+', ' ', 'g'))) STORED,
    CONSTRAINT recorded_statements_pkey PRIMARY KEY (session_id, seq),
    CONSTRAINT recorded_statements_risky_check CHECK (risky = (cardinality(risks) > 0)),
    CONSTRAINT recorded_statements_error_check CHECK (has_error = (sqlstate IS NOT NULL))
);

-- Searches list the newest statements first, one keyset page at a time on (at, session_id,
-- seq): every filter has an index in that order, so a page reads about as many rows as it
-- shows. The flags are rare, hence partial indexes.
CREATE INDEX recorded_statements_at_idx ON recorded_statements (at, session_id, seq);
-- One session's statements ("find in this recording"), in page order.
CREATE INDEX recorded_statements_session_idx ON recorded_statements (session_id, at, seq);
CREATE INDEX recorded_statements_person_idx
    ON recorded_statements (person_login, at, session_id, seq);
CREATE INDEX recorded_statements_target_idx
    ON recorded_statements (target_name, at, session_id, seq);
CREATE INDEX recorded_statements_class_idx ON recorded_statements (class, at, session_id, seq);
CREATE INDEX recorded_statements_error_idx
    ON recorded_statements (at, session_id, seq) WHERE has_error;
CREATE INDEX recorded_statements_risky_idx
    ON recorded_statements (at, session_id, seq) WHERE risky;
CREATE INDEX recorded_statements_search_idx ON recorded_statements USING gin (search);
-- Any part of the SQL, from three characters on (ILIKE '%ustomer_i%').
CREATE INDEX recorded_statements_sql_trgm_idx
    ON recorded_statements USING gin (sql gin_trgm_ops);

-- Per session: how far the indexer got, and the counts the session list shows.
--   indexed_seq  the next seq to read (every event before it was read)
--   resume_seq   where a fresh fold starts again (record::statements: the last quiet point);
--                statements that began after it are not stored yet
--   complete     the session had ended when its last event was read: nothing more will come
-- Every session gets its row when it is inserted (trigger below), so finding the sessions that
-- need indexing reads only the incomplete rows, never all sessions.
CREATE TABLE session_stats (
    session_id  uuid        PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    indexed_seq bigint      NOT NULL DEFAULT 0
        CONSTRAINT session_stats_indexed_seq_check CHECK (indexed_seq >= 0),
    resume_seq  bigint      NOT NULL DEFAULT 0
        CONSTRAINT session_stats_resume_seq_check CHECK (resume_seq BETWEEN 0 AND indexed_seq),
    statements  bigint      NOT NULL DEFAULT 0
        CONSTRAINT session_stats_statements_check CHECK (statements >= 0),
    errors      bigint      NOT NULL DEFAULT 0
        CONSTRAINT session_stats_errors_check CHECK (errors BETWEEN 0 AND statements),
    risky       bigint      NOT NULL DEFAULT 0
        CONSTRAINT session_stats_risky_check CHECK (risky BETWEEN 0 AND statements),
    complete    boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL
);

-- The indexer's work list: incomplete sessions, least recently indexed first.
CREATE INDEX session_stats_pending_idx ON session_stats (updated_at) WHERE NOT complete;

CREATE FUNCTION session_stats_for_new_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO session_stats (session_id, updated_at) VALUES (NEW.id, NEW.started_at);
    RETURN NEW;
END
$$;

CREATE TRIGGER sessions_get_stats AFTER INSERT ON sessions
    FOR EACH ROW EXECUTE FUNCTION session_stats_for_new_session();

-- Sessions recorded before this migration are indexed from their first event, oldest first.
INSERT INTO session_stats (session_id, updated_at) SELECT id, started_at FROM sessions;
