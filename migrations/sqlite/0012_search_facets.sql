-- Search filters inside the full-text indexes (conventions in 0001_initial.sql; the indexes in
-- 0007_statement_index.sql).
--
-- A common word searched with a filter it rarely or never meets (class = write and "select")
-- used to mean reading the word's every match and checking each against the filter: about a
-- second at a million statements. With the filters as words of their own in the index, FTS5
-- intersects the two lists of matches itself and hands back only the statements that have
-- both. The facets are a first sieve only: the search still applies its filters to the rows,
-- so a facet may match more than its filter, never less.
--
-- Measured (scripts/bench-search, a million statements): those searches take 34-56 ms instead
-- of about a second; the store grows from 0.9 to 1.14 GB and still takes about 18,800
-- statements a second.
--
-- Facets, as words of the word index (computed, never stored: virtual columns):
--   c<class code>  the statement class, one letter (codes below)
--   e0 / e1        without / with an error
--   r0 / r1        not risky / risky
--   p<hex>         the person's login, hex-encoded (one word whatever the login holds)
--   t<hex>         the target's name, hex-encoded
--   s<hex>         the session id
--   d<yyyymmdd>    the day the statement ran (UTC), for a time range of a few weeks
-- The trigram index has the same class, error, risky, person and target facets, each between
-- spaces so that a phrase of one (" cw ") matches it whole; no session or day (their trigrams
-- would cost more index than they save).

ALTER TABLE recorded_statements ADD COLUMN search_facets TEXT GENERATED ALWAYS AS (
    'c' || CASE class WHEN 'read' THEN 'r' WHEN 'write' THEN 'w' WHEN 'ddl' THEN 'd'
        WHEN 'privilege' THEN 'p' WHEN 'transaction' THEN 't' WHEN 'utility' THEN 'u'
        ELSE 'x' END
    || ' e' || has_error || ' r' || risky
    || ' p' || hex(person_login) || ' t' || hex(target_name) || ' s' || hex(session_id)
    || ' d' || replace(substr(at, 1, 10), '-', '')
) VIRTUAL;

ALTER TABLE recorded_statements ADD COLUMN substring_facets TEXT GENERATED ALWAYS AS (
    ' c' || CASE class WHEN 'read' THEN 'r' WHEN 'write' THEN 'w' WHEN 'ddl' THEN 'd'
        WHEN 'privilege' THEN 'p' WHEN 'transaction' THEN 't' WHEN 'utility' THEN 'u'
        ELSE 'x' END
    || ' e' || has_error || ' r' || risky
    || ' p' || hex(person_login) || ' t' || hex(target_name) || ' '
) VIRTUAL;

DROP TRIGGER recorded_statements_indexed;
DROP TRIGGER recorded_statements_unindexed;
DROP TRIGGER recorded_statements_reindexed;
DROP TABLE recorded_statements_fts;
DROP TABLE recorded_statements_trigrams;

-- As in 0007, plus the facets.
CREATE VIRTUAL TABLE recorded_statements_fts USING fts5 (
    sql, params, search_facets,
    content = 'recorded_statements', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0'
);

CREATE VIRTUAL TABLE recorded_statements_trigrams USING fts5 (
    sql, substring_facets,
    content = 'recorded_statements', content_rowid = 'id',
    tokenize = 'trigram'
);

CREATE TRIGGER recorded_statements_indexed AFTER INSERT ON recorded_statements BEGIN
    INSERT INTO recorded_statements_fts (rowid, sql, params, search_facets)
        VALUES (new.id, new.sql, new.params, new.search_facets);
    INSERT INTO recorded_statements_trigrams (rowid, sql, substring_facets)
        VALUES (new.id, new.sql, new.substring_facets);
END;

CREATE TRIGGER recorded_statements_unindexed AFTER DELETE ON recorded_statements BEGIN
    INSERT INTO recorded_statements_fts (recorded_statements_fts, rowid, sql, params, search_facets)
        VALUES ('delete', old.id, old.sql, old.params, old.search_facets);
    INSERT INTO recorded_statements_trigrams
        (recorded_statements_trigrams, rowid, sql, substring_facets)
        VALUES ('delete', old.id, old.sql, old.substring_facets);
END;

-- Any column: the facets follow the class, flags, person and target as well as the text.
CREATE TRIGGER recorded_statements_reindexed AFTER UPDATE ON recorded_statements BEGIN
    INSERT INTO recorded_statements_fts (recorded_statements_fts, rowid, sql, params, search_facets)
        VALUES ('delete', old.id, old.sql, old.params, old.search_facets);
    INSERT INTO recorded_statements_trigrams
        (recorded_statements_trigrams, rowid, sql, substring_facets)
        VALUES ('delete', old.id, old.sql, old.substring_facets);
    INSERT INTO recorded_statements_fts (rowid, sql, params, search_facets)
        VALUES (new.id, new.sql, new.params, new.search_facets);
    INSERT INTO recorded_statements_trigrams (rowid, sql, substring_facets)
        VALUES (new.id, new.sql, new.substring_facets);
END;

-- Statements indexed before this migration, from the table.
INSERT INTO recorded_statements_fts (recorded_statements_fts) VALUES ('rebuild');
INSERT INTO recorded_statements_trigrams (recorded_statements_trigrams) VALUES ('rebuild');
