//! [`SearchStore`] on the PostgreSQL engine (tables in
//! `migrations/postgres/0007_statement_index.sql`).
//!
//! The planner chooses between the GIN index of the words (or the trigrams of the SQL) and
//! walking the newest statements through the index of the filters, from the statistics ANALYZE
//! keeps of how common each word is. It takes text and filters to be independent, so a common
//! word with a filter it never meets looks cheap to walk for and is not. A search for text with
//! filters therefore reads the newest [`WALK`] statements passing the filters and checks them
//! for the text: when text and filters meet often, that fills the page. When it does not, it
//! counts the statements matching both through the GIN index holding the words and the
//! filters' facets (lexemes of the tsvector), or for a substring through the trigram index that
//! also holds the filtered columns (both migration 0012). Up to [`FEW_MATCHES`] of them are
//! fetched and sorted; more (they met often, but not lately), and the planner's plan finds
//! them.

use std::collections::HashMap;

use async_trait::async_trait;
use md5::{Digest, Md5};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::event_hashes::{self, BlockHashes};
use super::{
    ChainProgress, IndexUpdate, MAX_PAGE, Needle, SearchStore, SessionStats, SessionToIndex,
    StatementHit, StatementPage, StatementQuery, class_name, contains_pattern, counts,
    decode_class, insert_chunk, signed, snippet::snippet,
};
use crate::store::StoreResult;
use crate::store::models::now;
use crate::store::postgres::PgStore;

/// The blocks covering the events `($1[i], $2[i])`: for each key, the block starting last at or
/// before its seq (one step down the primary key of recording_blocks), each block once. Of a
/// block's content only `hashes` is sent; bodies large enough to be TOASTed are not even read.
const COVERING_BLOCKS: &str = "SELECT b.session_id, b.first_seq, b.last_seq, b.hashes \
     FROM recording_blocks b WHERE (b.session_id, b.first_seq) IN (\
       SELECT k.session_id, (SELECT r.first_seq FROM recording_blocks r \
         WHERE r.session_id = k.session_id AND r.first_seq <= k.seq \
         ORDER BY r.first_seq DESC LIMIT 1) \
       FROM UNNEST($1::uuid[], $2::bigint[]) AS k (session_id, seq))";

/// Statements passing the filters that a search for words with filters reads first.
const WALK: i64 = 10_000;

/// Matches of words and facets up to which they are fetched through the GIN index and sorted,
/// in a few milliseconds.
const FEW_MATCHES: i64 = 5_000;

/// The facet lexemes (migration 0012) of the filters of `query`, as a tsquery's text: `None`
/// without any. Every part is ours (class names, digits, md5 hex), so nothing needs quoting.
fn facets(query: &StatementQuery) -> Option<String> {
    let mut lexemes = Vec::new();
    if let Some(class) = query.class {
        lexemes.push(format!("~c{}", class_name(class)));
    }
    if let Some(has_error) = query.has_error {
        lexemes.push(format!("~e{}", u8::from(has_error)));
    }
    if let Some(risky) = query.risky {
        lexemes.push(format!("~r{}", u8::from(risky)));
    }
    if let Some(person) = &query.person {
        lexemes.push(format!("~p{}", md5_hex(person)));
    }
    if let Some(target) = &query.target {
        lexemes.push(format!("~t{}", md5_hex(target)));
    }
    (!lexemes.is_empty()).then(|| {
        lexemes
            .iter()
            .map(|l| format!("'{l}'"))
            .collect::<Vec<_>>()
            .join(" & ")
    })
}

/// PostgreSQL's `md5(text)`: the hex digest of the UTF-8 bytes.
fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `query` has filters on columns of the trigram index (migration 0012).
fn has_trigram_filters(query: &StatementQuery) -> bool {
    query.session_id.is_some()
        || query.person.is_some()
        || query.target.is_some()
        || query.class.is_some()
        || query.has_error.is_some()
        || query.risky.is_some()
}

/// The filters on columns of the trigram index, spelled as its operator classes match them
/// (`has_error = true`, where [`push_filters`] writes `has_error` for the partial indexes).
fn push_trigram_filters(sql: &mut QueryBuilder<Postgres>, query: &StatementQuery) {
    push_equal_filters(sql, query);
    if let Some(has_error) = query.has_error {
        sql.push(" AND r.has_error = ").push_bind(has_error);
    }
    if let Some(risky) = query.risky {
        sql.push(" AND r.risky = ").push_bind(risky);
    }
}

/// The condition on the text searched for: words (with the filters' `facets`, when given) or a
/// substring.
fn push_text(sql: &mut QueryBuilder<Postgres>, needle: &Needle, facets: Option<&str>) {
    match needle {
        // plainto_tsquery reads any text as words joined by AND: nothing in it is syntax.
        Needle::Words(words) => {
            sql.push(" AND r.search @@ (plainto_tsquery('simple', ")
                .push_bind(words.join(" "))
                .push(")");
            if let Some(facets) = facets {
                sql.push(" && ")
                    .push_bind(facets.to_string())
                    .push("::tsquery");
            }
            sql.push(")");
        }
        Needle::Substring(text) => {
            sql.push(" AND r.sql ILIKE ")
                .push_bind(contains_pattern(text));
        }
        Needle::Nothing | Needle::Unmatchable => {}
    }
}

/// The filters every index takes the same way: a column equal to a parameter.
fn push_equal_filters(sql: &mut QueryBuilder<Postgres>, query: &StatementQuery) {
    if let Some(id) = query.session_id {
        sql.push(" AND r.session_id = ").push_bind(id);
    }
    if let Some(person) = &query.person {
        sql.push(" AND r.person_login = ").push_bind(person.clone());
    }
    if let Some(target) = &query.target {
        sql.push(" AND r.target_name = ").push_bind(target.clone());
    }
    if let Some(class) = query.class {
        sql.push(" AND r.class = ").push_bind(class_name(class));
    }
}

fn push_filters(sql: &mut QueryBuilder<Postgres>, query: &StatementQuery, page: &StatementPage) {
    push_equal_filters(sql, query);
    // Constants, not parameters: the partial indexes apply only to a literal condition.
    match query.has_error {
        Some(true) => sql.push(" AND r.has_error"),
        Some(false) => sql.push(" AND NOT r.has_error"),
        None => sql,
    };
    match query.risky {
        Some(true) => sql.push(" AND r.risky"),
        Some(false) => sql.push(" AND NOT r.risky"),
        None => sql,
    };
    if let Some(after) = query.after {
        sql.push(" AND r.at >= ").push_bind(after);
    }
    if let Some(before) = query.before {
        sql.push(" AND r.at < ").push_bind(before);
    }
    if let Some((at, session_id, seq)) = page.before {
        sql.push(" AND (r.at, r.session_id, r.seq) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(session_id)
            .push(", ")
            .push_bind(seq)
            .push(")");
    }
}

const SELECT_HITS: &str = "SELECT r.session_id, r.seq, r.at, r.person_login, r.target_name, \
     r.class, r.risks, r.risky, r.has_error, r.sqlstate, r.error_message, r.tag, r.rows, \
     r.duration_micros, r.sql, r.params FROM recorded_statements r";
const NEWEST_FIRST: &str = " ORDER BY r.at DESC, r.session_id DESC, r.seq DESC LIMIT ";

impl PgStore {
    /// The page of a search for text under filters (see the module documentation); `None` when
    /// the planner's plan should find it. `facets`: those of the filters, for words.
    async fn text_with_filters(
        &self,
        query: &StatementQuery,
        page: &StatementPage,
        limit: i64,
        needle: &Needle,
        facets: Option<&str>,
    ) -> StoreResult<Option<Vec<PgRow>>> {
        let mut walk = QueryBuilder::<Postgres>::new(SELECT_HITS.replace(
            "FROM recorded_statements r",
            "FROM (SELECT * FROM recorded_statements r WHERE true",
        ));
        push_filters(&mut walk, query, page);
        walk.push(NEWEST_FIRST)
            .push_bind(WALK)
            .push(") r WHERE true");
        push_text(&mut walk, needle, None);
        walk.push(NEWEST_FIRST).push_bind(limit);
        let walked = walk.build().fetch_all(&self.pool).await?;
        if walked.len() as i64 == limit {
            return Ok(Some(walked));
        }
        self.few_matches(query, page, limit, needle, facets).await
    }

    /// The page, when text and filters together match at most [`FEW_MATCHES`] statements;
    /// `None` when they match more. Both queries run with the planner held to bitmap scans (and
    /// the memory to keep them exact) of one GIN index that holds text and filters: the words
    /// with the facets, or the trigrams with the filtered columns (migration 0012). GIN
    /// intersects them itself, skipping through the longer list, which is what makes the count
    /// cheap whatever text and filters the statistics would misjudge.
    async fn few_matches(
        &self,
        query: &StatementQuery,
        page: &StatementPage,
        limit: i64,
        needle: &Needle,
        facets: Option<&str>,
    ) -> StoreResult<Option<Vec<PgRow>>> {
        let mut tx = self.pool.begin().await?;
        for setting in [
            "SET LOCAL enable_seqscan = off",
            "SET LOCAL enable_indexscan = off",
            "SET LOCAL work_mem = '64MB'",
        ] {
            sqlx::query(setting).execute(&mut *tx).await?;
        }
        let mut count = QueryBuilder::<Postgres>::new(
            "SELECT count(*) FROM (SELECT 1 FROM recorded_statements r WHERE true",
        );
        push_text(&mut count, needle, facets);
        if let Needle::Substring(_) = needle {
            push_trigram_filters(&mut count, query);
        }
        count.push(" LIMIT ").push_bind(FEW_MATCHES + 1).push(") m");
        let count: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;
        if count > FEW_MATCHES {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut sql = QueryBuilder::<Postgres>::new(SELECT_HITS);
        sql.push(" WHERE true");
        push_text(&mut sql, needle, facets);
        if let Needle::Substring(_) = needle {
            push_trigram_filters(&mut sql, query);
        }
        push_filters(&mut sql, query, page);
        sql.push(NEWEST_FIRST).push_bind(limit);
        let rows = sql.build().fetch_all(&mut *tx).await?;
        tx.rollback().await?;
        Ok(Some(rows))
    }
}

fn hit_from_row(row: &PgRow, needle: &Needle) -> StoreResult<StatementHit> {
    Ok(StatementHit {
        session_id: row.try_get("session_id")?,
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        person_login: row.try_get("person_login")?,
        target_name: row.try_get("target_name")?,
        class: decode_class(row.try_get("class")?)?,
        risks: row.try_get("risks")?,
        risky: row.try_get("risky")?,
        has_error: row.try_get("has_error")?,
        sqlstate: row.try_get("sqlstate")?,
        tag: row.try_get("tag")?,
        rows: row.try_get("rows")?,
        duration_micros: row.try_get("duration_micros")?,
        snippet: snippet(row.try_get("sql")?, row.try_get("params")?, needle),
        sql: row.try_get("sql")?,
        params: row.try_get("params")?,
        error_message: row.try_get("error_message")?,
    })
}

#[async_trait]
impl SearchStore for PgStore {
    async fn sessions_to_index(&self, limit: i64) -> StoreResult<Vec<SessionToIndex>> {
        // The recording's end is the end of its last block: one step down the primary key of
        // recording_blocks per incomplete session.
        let rows = sqlx::query(
            "SELECT st.session_id, s.person_login, s.target_name, st.indexed_seq, \
             st.resume_seq, s.ended_at IS NOT NULL AS ended, st.chain_verified_seq, \
             st.chain_hash, st.chain_broken_seq, st.chain_broken_reason \
             FROM session_stats st JOIN sessions s ON s.id = st.session_id \
             WHERE NOT st.complete AND (s.ended_at IS NOT NULL OR COALESCE(\
               (SELECT b.last_seq FROM recording_blocks b WHERE b.session_id = st.session_id \
                ORDER BY b.first_seq DESC LIMIT 1), -1) >= st.indexed_seq) \
             ORDER BY st.updated_at LIMIT $1",
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SessionToIndex {
                    session_id: row.try_get("session_id")?,
                    person_login: row.try_get("person_login")?,
                    target_name: row.try_get("target_name")?,
                    indexed_seq: row.try_get("indexed_seq")?,
                    resume_seq: row.try_get("resume_seq")?,
                    ended: row.try_get("ended")?,
                    chain: ChainProgress::from_columns(
                        row.try_get("chain_verified_seq")?,
                        row.try_get("chain_hash")?,
                        row.try_get("chain_broken_seq")?,
                        row.try_get("chain_broken_reason")?,
                    ),
                })
            })
            .collect()
    }

    async fn save_index(&self, update: &IndexUpdate<'_>) -> StoreResult<bool> {
        let (statements, errors, risky) = counts(update.statements);
        let chain = update.chain.columns();
        let mut tx = self.pool.begin().await?;
        // The row lock this takes makes a concurrent save of the same session wait, then find
        // the values changed and update nothing.
        let claimed = sqlx::query(
            "UPDATE session_stats SET indexed_seq = $1, resume_seq = $2, complete = $3, \
             statements = statements + $4, errors = errors + $5, risky = risky + $6, \
             updated_at = $7, chain_verified_seq = $11, chain_hash = $12, \
             chain_broken_seq = $13, chain_broken_reason = $14 \
             WHERE session_id = $8 AND indexed_seq = $9 AND resume_seq = $10 AND NOT complete",
        )
        .bind(update.to_seq)
        .bind(update.resume_seq)
        .bind(update.complete)
        .bind(statements)
        .bind(errors)
        .bind(risky)
        .bind(now())
        .bind(update.session_id)
        .bind(update.from_seq)
        .bind(update.from_resume_seq)
        .bind(chain.verified)
        .bind(chain.hash)
        .bind(chain.broken)
        .bind(chain.reason)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut rest = update.statements;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(insert_chunk(rest.len()));
            let mut insert = QueryBuilder::<Postgres>::new(
                "INSERT INTO recorded_statements (session_id, seq, at, person_login, \
                 target_name, class, risky, risks, has_error, sqlstate, error_message, sql, \
                 params, tag, duration_micros, rows) ",
            );
            insert.push_values(chunk, |mut row, s| {
                let (sqlstate, message) = match &s.error {
                    Some((code, message)) => (Some(code.as_str()), Some(message.as_str())),
                    None => (None, None),
                };
                row.push_bind(update.session_id)
                    .push_bind(s.seq)
                    .push_bind(s.at)
                    .push_bind(update.person_login)
                    .push_bind(update.target_name)
                    .push_bind(class_name(s.class))
                    .push_bind(!s.risks.is_empty())
                    .push_bind(s.risks.as_slice())
                    .push_bind(s.error.is_some())
                    .push_bind(sqlstate)
                    .push_bind(message)
                    .push_bind(s.sql.as_str())
                    .push_bind(s.params.as_str())
                    .push_bind(s.tag.as_deref())
                    .push_bind(signed(s.duration_micros))
                    .push_bind(s.rows.map(signed));
            });
            insert.build().execute(&mut *tx).await?;
            rest = tail;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn session_stats(&self, ids: &[Uuid]) -> StoreResult<HashMap<Uuid, SessionStats>> {
        let rows = sqlx::query(
            "SELECT session_id, statements, errors, risky, indexed_seq, complete, \
             chain_verified_seq, chain_hash, chain_broken_seq, chain_broken_reason \
             FROM session_stats WHERE session_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("session_id")?,
                    SessionStats {
                        statements: row.try_get("statements")?,
                        errors: row.try_get("errors")?,
                        risky: row.try_get("risky")?,
                        indexed_seq: row.try_get("indexed_seq")?,
                        complete: row.try_get("complete")?,
                        chain_verified_seq: row.try_get("chain_verified_seq")?,
                        chain_hash: row.try_get("chain_hash")?,
                        chain_broken_seq: row.try_get("chain_broken_seq")?,
                        chain_broken_reason: row.try_get("chain_broken_reason")?,
                    },
                ))
            })
            .collect()
    }

    async fn search_statements(
        &self,
        query: &StatementQuery,
        page: &StatementPage,
    ) -> StoreResult<Vec<StatementHit>> {
        let needle = Needle::of(query);
        let limit = page.limit.clamp(0, MAX_PAGE);
        if limit == 0 || needle == Needle::Unmatchable {
            return Ok(Vec::new());
        }
        let facets = facets(query);
        let filtered_text = match &needle {
            Needle::Words(_) => facets.is_some(),
            Needle::Substring(_) => has_trigram_filters(query),
            Needle::Nothing | Needle::Unmatchable => false,
        };
        if filtered_text
            && let Some(rows) = self
                .text_with_filters(query, page, limit, &needle, facets.as_deref())
                .await?
        {
            return rows.iter().map(|row| hit_from_row(row, &needle)).collect();
        }
        let mut sql = QueryBuilder::<Postgres>::new(SELECT_HITS);
        sql.push(" WHERE true");
        push_text(&mut sql, &needle, None);
        push_filters(&mut sql, query, page);
        sql.push(NEWEST_FIRST).push_bind(limit);
        let rows = sql.build().fetch_all(&self.pool).await?;
        rows.iter().map(|row| hit_from_row(row, &needle)).collect()
    }

    async fn event_hashes(
        &self,
        keys: &[(Uuid, i64)],
    ) -> StoreResult<HashMap<(Uuid, i64), Vec<u8>>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let (ids, seqs): (Vec<Uuid>, Vec<i64>) = keys.iter().copied().unzip();
        let rows = sqlx::query(COVERING_BLOCKS)
            .bind(ids)
            .bind(seqs)
            .fetch_all(&self.pool)
            .await?;
        let blocks = rows
            .iter()
            .map(|row| {
                Ok(BlockHashes {
                    session_id: row.try_get("session_id")?,
                    first_seq: row.try_get("first_seq")?,
                    last_seq: row.try_get("last_seq")?,
                    hashes: row.try_get("hashes")?,
                })
            })
            .collect::<StoreResult<_>>()?;
        event_hashes::pick(keys, blocks)
    }
}
