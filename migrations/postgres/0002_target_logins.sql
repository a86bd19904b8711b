-- Per-role upstream logins.
--
-- Sessions log in upstream as the granted role itself, so that a session cannot leave its role
-- (a shared login that switched roles with SET ROLE could be switched back by the client). The
-- target's own upstream_user is its default login; every other role granted on the target needs
-- a row here with the secret pgbastion logs in with.

CREATE TABLE target_logins (
    -- The logins go with their target.
    target_id     uuid        NOT NULL REFERENCES targets (id) ON DELETE CASCADE,
    -- The PostgreSQL role name, sent upstream as the startup `user`.
    role          text        NOT NULL CHECK (role <> ''),
    -- Sealed with the data directory's key; never the clear password. NULL: trust or
    -- certificate login.
    secret_sealed bytea,
    created_at    timestamptz NOT NULL,
    CONSTRAINT target_logins_pkey PRIMARY KEY (target_id, role)
);
