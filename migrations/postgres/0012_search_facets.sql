-- Search filters inside the word and trigram indexes (both in 0007_statement_index.sql).
--
-- A common word searched with a filter it rarely or never meets (class = write and "select")
-- is the planner's blind spot: it takes word and filter to be independent, expects a match
-- every few rows and walks the newest statements through the filter's index, reading all of
-- them when they never meet. With the filters as lexemes of their own in the tsvector, the
-- GIN index intersects word and filter itself; the search counts those matches first and, when
-- they are few, sorts just them (gateway/src/store/search/postgres.rs).
--
-- The facet lexemes begin with '~', which a searched word never holds (words are runs of
-- letters and digits), so no search for words finds them:
--   ~c<class>      the statement class ('~cwrite')
--   ~e0 / ~e1      without / with an error
--   ~r0 / ~r1      not risky / risky
--   ~p<md5>        the person's login (md5: any login as one short lexeme)
--   ~t<md5>        the target's name
-- They are a first sieve only: the search still applies its filters to the rows.
--
-- Rebuilding the column rewrites the table (about a minute per million statements).
ALTER TABLE recorded_statements DROP COLUMN search;
ALTER TABLE recorded_statements ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', regexp_replace(sql || ' ' || params, '[[:punct:]]+', ' ', 'g'))
    || array_to_tsvector(ARRAY[
        '~c' || class,
        '~e' || has_error::int,
        '~r' || risky::int,
        '~p' || md5(person_login),
        '~t' || md5(target_name)
    ])
) STORED;
CREATE INDEX recorded_statements_search_idx ON recorded_statements USING gin (search);

-- Substrings with filters, likewise: the trigram index also holds the filtered columns (their
-- values as GIN keys, through btree_gin, which ships with PostgreSQL and is trusted like
-- pg_trgm), so one index scan intersects "ustomer" with class = 'utility'. The index still
-- answers a substring alone: GIN uses any subset of its columns.
CREATE EXTENSION IF NOT EXISTS btree_gin;
DROP INDEX recorded_statements_sql_trgm_idx;
CREATE INDEX recorded_statements_sql_trgm_idx ON recorded_statements USING gin (
    sql gin_trgm_ops, class, person_login, target_name, session_id, has_error, risky
);
