-- The keys every process sharing this store must hold the same of (token signing, recording,
-- secret box), by a public fingerprint only: a process with another key refuses to start rather
-- than mint tokens other gateways reject or seal secrets they cannot open.
CREATE TABLE shared_keys (
    purpose       TEXT PRIMARY KEY,
    fingerprint   TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    registered_at TIMESTAMPTZ NOT NULL
);
