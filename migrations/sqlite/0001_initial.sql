-- pgbastion store, SQLite engine.
--
-- STRICT tables, so a value of the wrong type is refused instead of silently stored.
-- Conventions (the same values the PostgreSQL engine stores in native types):
--   uuid       -> BLOB of 16 bytes (what sqlx encodes a Uuid as)
--   timestamp  -> TEXT, RFC 3339 in UTC with exactly six fractional digits and a 'Z'
--                 ("2026-05-01T12:00:00.123456Z"), written by the gateway; fixed width so that
--                 text order is time order and comparisons in WHERE clauses are correct
--   boolean    -> INTEGER 0 or 1
--   text list  -> TEXT holding a JSON array of strings
-- Ids and timestamps come from the gateway, never from column defaults.

CREATE TABLE people (
    id           BLOB    PRIMARY KEY CHECK (length(id) = 16),
    login        TEXT    NOT NULL UNIQUE CHECK (login <> ''),
    display_name TEXT,
    email        TEXT,
    groups       TEXT    NOT NULL DEFAULT '[]'
                 CHECK (json_valid(groups) AND json_type(groups) = 'array'),
    created_at   TEXT    NOT NULL
) STRICT;

CREATE TABLE targets (
    id                     BLOB    PRIMARY KEY CHECK (length(id) = 16),
    name                   TEXT    NOT NULL UNIQUE CHECK (name <> ''),
    host                   TEXT    NOT NULL,
    port                   INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),
    database               TEXT    NOT NULL,
    tls_mode               TEXT    NOT NULL
                           CHECK (tls_mode IN ('disable', 'require', 'verify-full')),
    ca_pem                 TEXT,
    upstream_user          TEXT    NOT NULL,
    -- Sealed with the data directory's key; never the clear password.
    upstream_secret_sealed BLOB,
    enabled                INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    created_at             TEXT    NOT NULL
) STRICT;

CREATE TABLE grants (
    id                BLOB    PRIMARY KEY CHECK (length(id) = 16),
    subject_kind      TEXT    NOT NULL CHECK (subject_kind IN ('person', 'group')),
    subject_name      TEXT    NOT NULL CHECK (subject_name <> ''),
    -- A grant means nothing without its target: removing the target removes its grants
    -- (the store opens every connection with foreign_keys on).
    target_id         BLOB    NOT NULL REFERENCES targets (id) ON DELETE CASCADE,
    db_role           TEXT    NOT NULL CHECK (db_role <> ''),
    max_lifetime_secs INTEGER NOT NULL CHECK (max_lifetime_secs > 0),
    created_at        TEXT    NOT NULL,
    -- Also the index for matching_grants (target, role) and list_grants (target).
    UNIQUE (target_id, db_role, subject_kind, subject_name)
) STRICT;

-- Credentials and sessions are history: they keep the target's id and name as plain values
-- (no foreign key) so that removing a target does not erase who used it.
CREATE TABLE credentials (
    id           BLOB PRIMARY KEY CHECK (length(id) = 16),
    person_login TEXT NOT NULL,
    target_id    BLOB NOT NULL CHECK (length(target_id) = 16),
    target_name  TEXT NOT NULL,
    db_role      TEXT NOT NULL,
    issued_at    TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    revoked_at   TEXT,
    reason       TEXT
) STRICT;

CREATE INDEX credentials_person_issued_idx ON credentials (person_login, issued_at DESC);
CREATE INDEX credentials_issued_idx ON credentials (issued_at DESC);
-- Gateways poll for recent revocations; only revoked rows belong in this index.
CREATE INDEX credentials_revoked_at_idx ON credentials (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE sessions (
    id                     BLOB    PRIMARY KEY CHECK (length(id) = 16),
    person_login           TEXT    NOT NULL,
    target_id              BLOB    NOT NULL CHECK (length(target_id) = 16),
    target_name            TEXT    NOT NULL,
    db_role                TEXT    NOT NULL,
    credential_id          BLOB    NOT NULL CHECK (length(credential_id) = 16),
    client_addr            TEXT    NOT NULL,
    application_name       TEXT,
    tls_version            TEXT,
    started_at             TEXT    NOT NULL,
    ended_at               TEXT,
    end_reason             TEXT CHECK (end_reason IN ('client_quit', 'server_closed', 'revoked',
                                       'terminated', 'gateway_shutdown', 'upstream_failed', 'error')),
    end_detail             TEXT,
    bytes_client_to_server INTEGER NOT NULL DEFAULT 0 CHECK (bytes_client_to_server >= 0),
    bytes_server_to_client INTEGER NOT NULL DEFAULT 0 CHECK (bytes_server_to_client >= 0),
    -- An ended session always says why.
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
) STRICT;

CREATE INDEX sessions_started_at_idx ON sessions (started_at DESC);
CREATE INDEX sessions_credential_idx ON sessions (credential_id);
