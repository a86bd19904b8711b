-- The console: local accounts, console sign-in sessions, access requests with approval, and
-- the audit log.

-- A grant can require a second person's approval before a credential is issued under it.
ALTER TABLE grants ADD COLUMN requires_approval boolean NOT NULL DEFAULT false;

-- Accounts that sign in with a password (bootstrap and break-glass); everyone else signs in
-- through the identity provider. The login is also the person's login.
CREATE TABLE local_accounts (
    login               text        PRIMARY KEY CHECK (login <> ''),
    -- An argon2id PHC string; never the password.
    password_hash       text        NOT NULL CHECK (password_hash LIKE '$argon2%'),
    -- Console roles: 'user', 'approver', 'auditor', 'admin'.
    roles               text[]      NOT NULL DEFAULT '{}',
    failed_attempts     bigint      NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    locked_until        timestamptz,
    disabled            boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL,
    password_changed_at timestamptz NOT NULL
);

-- Signed-in browsers. The cookie holds a random token; only its SHA-256 is stored, so a copy
-- of the store does not let anyone sign in.
CREATE TABLE console_sessions (
    token_hash   bytea       PRIMARY KEY CHECK (length(token_hash) = 32),
    person_login text        NOT NULL,
    roles        text[]      NOT NULL,
    auth_method  text        NOT NULL CHECK (auth_method IN ('oidc', 'local')),
    csrf_token   text        NOT NULL CHECK (length(csrf_token) >= 32),
    client_addr  text,
    user_agent   text,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    -- The absolute timeout; the idle one is last_seen_at plus the configured idle time.
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz
);

CREATE INDEX console_sessions_person_idx ON console_sessions (person_login);

-- What people asked for, and what became of it. Like credentials, requests are history and keep
-- the target's id and name as plain values.
CREATE TABLE access_requests (
    id               uuid        PRIMARY KEY,
    person_login     text        NOT NULL,
    target_id        uuid        NOT NULL,
    target_name      text        NOT NULL,
    db_role          text        NOT NULL,
    reason           text        NOT NULL CHECK (reason <> ''),
    lifetime_secs    bigint      NOT NULL CHECK (lifetime_secs > 0),
    status           text        NOT NULL
                     CHECK (status IN ('pending', 'approved', 'denied', 'issued', 'cancelled')),
    requested_at     timestamptz NOT NULL,
    decided_by       text,
    decided_at       timestamptz,
    decision_comment text,
    credential_id    uuid,
    -- Nobody approves their own request, whatever the code above does.
    CONSTRAINT access_requests_not_self_decided
        CHECK (decided_by IS NULL OR decided_by <> person_login)
);

CREATE INDEX access_requests_person_idx ON access_requests (person_login, requested_at DESC);
CREATE INDEX access_requests_pending_idx ON access_requests (requested_at) WHERE status = 'pending';

-- Who did what in the console (and through the command line): append-only.
CREATE TABLE audit_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    object      text,
    detail      jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(detail) = 'object'),
    client_addr text
);
