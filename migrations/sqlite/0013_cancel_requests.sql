-- Cancel requests handed between gateway processes sharing this store (conventions in
-- 0001_initial.sql). A client cancels a query on a new connection, which may reach another
-- gateway than the one holding its session: that gateway stores the key here, and every
-- gateway polls for rows it has not read yet (by id, at its revocation poll interval) and
-- cancels if the session is its own. The PostgreSQL engine passes keys by NOTIFY instead and
-- has no such table.
--
-- A row holds a client's secret key and is useful only while the query runs, so rows are
-- deleted about ten seconds after they were written (by the next write). AUTOINCREMENT keeps
-- ids growing even after every row has been deleted, so a poller reading "after id N" never
-- misses a new row.
CREATE TABLE cancel_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    process_id   INTEGER NOT NULL CHECK (process_id BETWEEN -2147483648 AND 2147483647),
    secret_key   INTEGER NOT NULL CHECK (secret_key BETWEEN -2147483648 AND 2147483647),
    requested_at TEXT    NOT NULL
) STRICT;

-- Writers delete the old rows by time.
CREATE INDEX cancel_requests_requested_at_idx ON cancel_requests (requested_at);
