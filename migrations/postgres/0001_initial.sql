-- pgbastion store, PostgreSQL engine.
--
-- Ids (UUIDv4) and timestamps come from the gateway, not from column defaults, so that both
-- engines store exactly the same values and several gateways agree on one clock source per row.
-- Enumerations are text with CHECK constraints: readable in psql, and the same strings the
-- SQLite engine stores.

CREATE TABLE people (
    id           uuid        PRIMARY KEY,
    login        text        NOT NULL CHECK (login <> ''),
    display_name text,
    email        text,
    groups       text[]      NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL,
    CONSTRAINT people_login_key UNIQUE (login)
);

CREATE TABLE targets (
    id                     uuid        PRIMARY KEY,
    name                   text        NOT NULL CHECK (name <> ''),
    host                   text        NOT NULL,
    port                   integer     NOT NULL CHECK (port BETWEEN 0 AND 65535),
    database               text        NOT NULL,
    tls_mode               text        NOT NULL
                           CHECK (tls_mode IN ('disable', 'require', 'verify-full')),
    ca_pem                 text,
    upstream_user          text        NOT NULL,
    -- Sealed with the data directory's key; never the clear password.
    upstream_secret_sealed bytea,
    enabled                boolean     NOT NULL DEFAULT true,
    created_at             timestamptz NOT NULL,
    CONSTRAINT targets_name_key UNIQUE (name)
);

CREATE TABLE grants (
    id                uuid        PRIMARY KEY,
    subject_kind      text        NOT NULL CHECK (subject_kind IN ('person', 'group')),
    subject_name      text        NOT NULL CHECK (subject_name <> ''),
    -- A grant means nothing without its target: removing the target removes its grants.
    target_id         uuid        NOT NULL REFERENCES targets (id) ON DELETE CASCADE,
    db_role           text        NOT NULL CHECK (db_role <> ''),
    max_lifetime_secs bigint      NOT NULL CHECK (max_lifetime_secs > 0),
    created_at        timestamptz NOT NULL,
    -- Also the index for matching_grants (target, role) and list_grants (target).
    CONSTRAINT grants_subject_role_key UNIQUE (target_id, db_role, subject_kind, subject_name)
);

-- Credentials and sessions are history: they keep the target's id and name as plain values
-- (no foreign key) so that removing a target does not erase who used it.
CREATE TABLE credentials (
    id           uuid        PRIMARY KEY,
    person_login text        NOT NULL,
    target_id    uuid        NOT NULL,
    target_name  text        NOT NULL,
    db_role      text        NOT NULL,
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    reason       text
);

CREATE INDEX credentials_person_issued_idx ON credentials (person_login, issued_at DESC);
CREATE INDEX credentials_issued_idx ON credentials (issued_at DESC);
-- Gateways poll for recent revocations; only revoked rows belong in this index.
CREATE INDEX credentials_revoked_at_idx ON credentials (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE sessions (
    id                     uuid        PRIMARY KEY,
    person_login           text        NOT NULL,
    target_id              uuid        NOT NULL,
    target_name            text        NOT NULL,
    db_role                text        NOT NULL,
    credential_id          uuid        NOT NULL,
    client_addr            text        NOT NULL,
    application_name       text,
    tls_version            text,
    started_at             timestamptz NOT NULL,
    ended_at               timestamptz,
    end_reason             text CHECK (end_reason IN ('client_quit', 'server_closed', 'revoked',
                                       'terminated', 'gateway_shutdown', 'upstream_failed', 'error')),
    end_detail             text,
    bytes_client_to_server bigint      NOT NULL DEFAULT 0 CHECK (bytes_client_to_server >= 0),
    bytes_server_to_client bigint      NOT NULL DEFAULT 0 CHECK (bytes_server_to_client >= 0),
    -- An ended session always says why.
    CONSTRAINT sessions_end_complete CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);

CREATE INDEX sessions_started_at_idx ON sessions (started_at DESC);
CREATE INDEX sessions_credential_idx ON sessions (credential_id);
