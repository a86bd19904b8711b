-- The console: local accounts, console sign-in sessions, access requests with approval, and
-- the audit log (conventions in 0001_initial.sql).

-- A grant can require a second person's approval before a credential is issued under it.
ALTER TABLE grants ADD COLUMN requires_approval INTEGER NOT NULL DEFAULT 0
    CHECK (requires_approval IN (0, 1));

-- Accounts that sign in with a password (bootstrap and break-glass); everyone else signs in
-- through the identity provider. The login is also the person's login.
CREATE TABLE local_accounts (
    login               TEXT    PRIMARY KEY CHECK (login <> ''),
    -- An argon2id PHC string; never the password.
    password_hash       TEXT    NOT NULL CHECK (password_hash LIKE '$argon2%'),
    -- Console roles: 'user', 'approver', 'auditor', 'admin'.
    roles               TEXT    NOT NULL DEFAULT '[]'
                        CHECK (json_valid(roles) AND json_type(roles) = 'array'),
    failed_attempts     INTEGER NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until        TEXT,
    disabled            INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at          TEXT    NOT NULL,
    password_changed_at TEXT    NOT NULL
) STRICT;

-- Signed-in browsers. The cookie holds a random token; only its SHA-256 is stored, so a copy
-- of the store does not let anyone sign in.
CREATE TABLE console_sessions (
    token_hash   BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
    person_login TEXT NOT NULL,
    roles        TEXT NOT NULL CHECK (json_valid(roles) AND json_type(roles) = 'array'),
    auth_method  TEXT NOT NULL CHECK (auth_method IN ('oidc', 'local')),
    csrf_token   TEXT NOT NULL CHECK (length(csrf_token) >= 32),
    client_addr  TEXT,
    user_agent   TEXT,
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    -- The absolute timeout; the idle one is last_seen_at plus the configured idle time.
    expires_at   TEXT NOT NULL,
    ended_at     TEXT
) STRICT;

CREATE INDEX console_sessions_person_idx ON console_sessions (person_login);

-- What people asked for, and what became of it. Like credentials, requests are history and keep
-- the target's id and name as plain values.
CREATE TABLE access_requests (
    id               BLOB    PRIMARY KEY CHECK (length(id) = 16),
    person_login     TEXT    NOT NULL,
    target_id        BLOB    NOT NULL CHECK (length(target_id) = 16),
    target_name      TEXT    NOT NULL,
    db_role          TEXT    NOT NULL,
    reason           TEXT    NOT NULL CHECK (reason <> ''),
    lifetime_secs    INTEGER NOT NULL CHECK (lifetime_secs > 0),
    status           TEXT    NOT NULL
                     CHECK (status IN ('pending', 'approved', 'denied', 'issued', 'cancelled')),
    requested_at     TEXT    NOT NULL,
    decided_by       TEXT,
    decided_at       TEXT,
    decision_comment TEXT,
    credential_id    BLOB    CHECK (credential_id IS NULL OR length(credential_id) = 16),
    -- Nobody approves their own request, whatever the code above does.
    CHECK (decided_by IS NULL OR decided_by <> person_login)
) STRICT;

CREATE INDEX access_requests_person_idx ON access_requests (person_login, requested_at DESC);
CREATE INDEX access_requests_pending_idx ON access_requests (requested_at) WHERE status = 'pending';

-- Who did what in the console (and through the command line): append-only.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    object      TEXT,
    detail      TEXT    NOT NULL DEFAULT '{}'
                CHECK (json_valid(detail) AND json_type(detail) = 'object'),
    client_addr TEXT
) STRICT;
