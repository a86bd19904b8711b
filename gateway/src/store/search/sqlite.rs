//! [`SearchStore`] on the SQLite engine (tables in `migrations/sqlite/0007_statement_index.sql`).
//!
//! FTS5 hands back every match of a word in no useful order, and a page wants the newest few.
//! So a search first counts the matches, up to [`FEW_MATCHES`]: that few are looked up and
//! sorted. The count is of the text together with the filters, which the full-text indexes
//! hold as facets (`fts_query`): a common word with a filter it never meets counts no matches
//! at all, where counting the word's alone would send the search reading all of them. More
//! matches, and text and filters often meet: the statements are read newest first (through the
//! index of the filters) and checked in memory (`snippet::is_match`, microseconds each where
//! asking FTS5 about one row costs a hundred or more) until the page is full. A walk that reads
//! [`WALK_MAX`] statements without filling its page (they met often, but not lately, or not in
//! the time range) lets the full-text index list the rest of the page after all.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::event_hashes::{self, BlockHashes};
use super::fts_query::{self, FullText};
use super::snippet::{is_match, snippet};
use super::{
    ChainProgress, IndexUpdate, MAX_PAGE, Needle, SearchStore, SessionStats, SessionToIndex,
    StatementHit, StatementPage, StatementQuery, class_name, counts, decode_class, insert_chunk,
    signed,
};
use crate::store::models::now;
use crate::store::sqlite::{SqliteStore, groups_json, ts};
use crate::store::{StoreError, StoreResult};

/// Matches of a text up to which its full-text index drives a search: sorting that many takes
/// milliseconds. Text with more matches is in at least one statement in (statements / this),
/// so a walk fills a page of 50 after reading at most 50 times that many, 10,000 statements
/// in a million: tens of milliseconds (`scripts/bench-search`).
const FEW_MATCHES: i64 = 5_000;
/// Statements read per step of a walk.
const WALK_CHUNK: i64 = 256;
/// Statements a walk reads before the full-text index takes over.
const WALK_MAX: usize = 50_000;

/// Sessions per `session_stats` query (one bound parameter each).
const IDS_PER_QUERY: usize = 256;

/// The blocks covering the events `?1` names (a JSON list of `[session id as hex, seq]`): for
/// each key, the block starting last at or before its seq (one step down the primary key of
/// recording_blocks), each block once. One statement for any number of keys, where a list of
/// bound parameters would need a statement per length. SQLite reads a row's columns in order,
/// so the bodies before `hashes` are read too; but only once per block, not once per key.
const COVERING_BLOCKS: &str = "SELECT b.session_id, b.first_seq, b.last_seq, b.hashes \
     FROM recording_blocks b WHERE (b.session_id, b.first_seq) IN (\
       SELECT k.session_id, (SELECT r.first_seq FROM recording_blocks r \
         WHERE r.session_id = k.session_id AND r.first_seq <= k.seq \
         ORDER BY r.first_seq DESC LIMIT 1) \
       FROM (SELECT unhex(value ->> 0) AS session_id, value ->> 1 AS seq \
         FROM json_each(?1)) AS k)";

/// How a search finds its statements.
enum Plan {
    /// By the filters alone.
    Filters,
    /// From the few matches in a full-text index, sorted.
    FewMatches(FullText),
    /// Newest first, each checked in memory; the index finishes a page the walk cannot fill.
    Walk(FullText),
}

/// A keyset position: (at, session_id, seq).
type Key = (DateTime<Utc>, Uuid, i64);

impl SqliteStore {
    /// Whether `full_text` matches at most [`FEW_MATCHES`] statements.
    async fn few_matches(&self, full_text: &FullText) -> StoreResult<bool> {
        let index = full_text.index;
        let mut count = QueryBuilder::<Sqlite>::new(format!(
            "SELECT count(*) FROM (SELECT 1 FROM {index} WHERE {index} MATCH "
        ));
        count
            .push_bind(full_text.query.clone())
            .push(" LIMIT ")
            .push_bind(FEW_MATCHES + 1)
            .push(")");
        let count: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;
        Ok(count <= FEW_MATCHES)
    }

    async fn plan(&self, needle: &Needle, query: &StatementQuery) -> StoreResult<Plan> {
        let Some(full_text) = fts_query::full_text(needle, query) else {
            return Ok(Plan::Filters);
        };
        Ok(if self.few_matches(&full_text).await? {
            Plan::FewMatches(full_text)
        } else {
            Plan::Walk(full_text)
        })
    }

    /// The statements matching the filters (and `full_text`), newest first from `before`.
    async fn select(
        &self,
        query: &StatementQuery,
        before: Option<Key>,
        limit: i64,
        full_text: Option<&FullText>,
    ) -> StoreResult<Vec<SqliteRow>> {
        let mut sql = QueryBuilder::<Sqlite>::new(
            "SELECT r.session_id, r.seq, r.at, r.person_login, r.target_name, r.class, r.risks, \
             r.risky, r.has_error, r.sqlstate, r.error_message, r.tag, r.rows, \
             r.duration_micros, r.sql, r.params ",
        );
        match full_text {
            Some(FullText { index, query: text }) => {
                // CROSS JOIN keeps this order: the few matches first, then their rows (the
                // planner would otherwise ask FTS5 about each row a filter's index yields).
                sql.push(format_args!(
                    "FROM {index} CROSS JOIN recorded_statements r ON r.id = {index}.rowid \
                     WHERE {index} MATCH "
                ))
                .push_bind(text.clone());
            }
            None => {
                sql.push("FROM recorded_statements r WHERE 1 = 1");
            }
        }
        push_filters(&mut sql, query, before);
        sql.push(" ORDER BY r.at DESC, r.session_id DESC, r.seq DESC LIMIT ")
            .push_bind(limit);
        Ok(sql.build().fetch_all(&self.pool).await?)
    }

    /// See the module documentation.
    async fn walk(
        &self,
        query: &StatementQuery,
        mut before: Option<Key>,
        limit: i64,
        needle: &Needle,
        full_text: &FullText,
    ) -> StoreResult<Vec<StatementHit>> {
        let mut hits = Vec::new();
        let mut walked = 0;
        loop {
            let rows = self.select(query, before, WALK_CHUNK, None).await?;
            for row in &rows {
                before = Some((
                    row.try_get("at")?,
                    row.try_get("session_id")?,
                    row.try_get("seq")?,
                ));
                if is_match(row.try_get("sql")?, row.try_get("params")?, needle) {
                    hits.push(hit_from_row(row, needle)?);
                    if hits.len() as i64 == limit {
                        return Ok(hits);
                    }
                }
            }
            walked += rows.len();
            if (rows.len() as i64) < WALK_CHUNK {
                return Ok(hits);
            }
            if walked >= WALK_MAX {
                let rest = limit - hits.len() as i64;
                for row in self.select(query, before, rest, Some(full_text)).await? {
                    hits.push(hit_from_row(&row, needle)?);
                }
                return Ok(hits);
            }
        }
    }
}

fn push_filters(sql: &mut QueryBuilder<Sqlite>, query: &StatementQuery, before: Option<Key>) {
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
    // Constants, not parameters: the partial indexes apply only to a literal condition.
    match query.has_error {
        Some(true) => sql.push(" AND r.has_error = 1"),
        Some(false) => sql.push(" AND r.has_error = 0"),
        None => sql,
    };
    match query.risky {
        Some(true) => sql.push(" AND r.risky = 1"),
        Some(false) => sql.push(" AND r.risky = 0"),
        None => sql,
    };
    if let Some(after) = query.after {
        sql.push(" AND r.at >= ").push_bind(ts(after));
    }
    if let Some(before) = query.before {
        sql.push(" AND r.at < ").push_bind(ts(before));
    }
    if let Some((at, session_id, seq)) = before {
        sql.push(" AND (r.at, r.session_id, r.seq) < (")
            .push_bind(ts(at))
            .push(", ")
            .push_bind(session_id)
            .push(", ")
            .push_bind(seq)
            .push(")");
    }
}

fn hit_from_row(row: &SqliteRow, needle: &Needle) -> StoreResult<StatementHit> {
    let risks: &str = row.try_get("risks")?;
    let risks = serde_json::from_str(risks).map_err(|e| {
        StoreError::Corrupt(format!(
            "recorded_statements.risks is not a JSON list of strings: {e}"
        ))
    })?;
    Ok(StatementHit {
        session_id: row.try_get("session_id")?,
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        person_login: row.try_get("person_login")?,
        target_name: row.try_get("target_name")?,
        class: decode_class(row.try_get("class")?)?,
        risks,
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

fn stats_from_row(row: &SqliteRow) -> StoreResult<(Uuid, SessionStats)> {
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
}

#[async_trait]
impl SearchStore for SqliteStore {
    async fn sessions_to_index(&self, limit: i64) -> StoreResult<Vec<SessionToIndex>> {
        // The recording's end is the end of its last block: one step down the primary key of
        // recording_blocks per incomplete session.
        let rows = sqlx::query(
            "SELECT st.session_id, s.person_login, s.target_name, st.indexed_seq, \
             st.resume_seq, s.ended_at IS NOT NULL AS ended, st.chain_verified_seq, \
             st.chain_hash, st.chain_broken_seq, st.chain_broken_reason \
             FROM session_stats st JOIN sessions s ON s.id = st.session_id \
             WHERE st.complete = 0 AND (s.ended_at IS NOT NULL OR COALESCE(\
               (SELECT b.last_seq FROM recording_blocks b WHERE b.session_id = st.session_id \
                ORDER BY b.first_seq DESC LIMIT 1), -1) >= st.indexed_seq) \
             ORDER BY st.updated_at LIMIT ?",
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
        // IMMEDIATE: the write lock first, so the check below and the inserts see no other
        // writer in between (and a read never has to be upgraded to a write).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let claimed = sqlx::query(
            "UPDATE session_stats SET indexed_seq = ?, resume_seq = ?, complete = ?, \
             statements = statements + ?, errors = errors + ?, risky = risky + ?, \
             updated_at = ?, chain_hash = ?, chain_verified_seq = ?, chain_broken_reason = ?, \
             chain_broken_seq = ? \
             WHERE session_id = ? AND indexed_seq = ? AND resume_seq = ? AND complete = 0",
        )
        .bind(update.to_seq)
        .bind(update.resume_seq)
        .bind(update.complete)
        .bind(statements)
        .bind(errors)
        .bind(risky)
        .bind(ts(now()))
        .bind(chain.hash)
        .bind(chain.verified)
        .bind(chain.reason)
        .bind(chain.broken)
        .bind(update.session_id)
        .bind(update.from_seq)
        .bind(update.from_resume_seq)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut rest = update.statements;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(insert_chunk(rest.len()));
            let mut insert = QueryBuilder::<Sqlite>::new(
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
                    .push_bind(ts(s.at))
                    .push_bind(update.person_login)
                    .push_bind(update.target_name)
                    .push_bind(class_name(s.class))
                    .push_bind(!s.risks.is_empty())
                    .push_bind(groups_json(&s.risks))
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
        let mut stats = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT session_id, statements, errors, risky, indexed_seq, complete, \
                 chain_verified_seq, chain_hash, chain_broken_seq, chain_broken_reason \
                 FROM session_stats WHERE session_id IN (",
            );
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            query.push(")");
            for row in query.build().fetch_all(&self.pool).await? {
                let (id, s) = stats_from_row(&row)?;
                stats.insert(id, s);
            }
        }
        Ok(stats)
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
        let rows = match self.plan(&needle, query).await? {
            Plan::Filters => self.select(query, page.before, limit, None).await?,
            Plan::FewMatches(full_text) => {
                self.select(query, page.before, limit, Some(&full_text))
                    .await?
            }
            Plan::Walk(full_text) => {
                return self
                    .walk(query, page.before, limit, &needle, &full_text)
                    .await;
            }
        };
        rows.iter().map(|row| hit_from_row(row, &needle)).collect()
    }

    async fn event_hashes(
        &self,
        keys: &[(Uuid, i64)],
    ) -> StoreResult<HashMap<(Uuid, i64), Vec<u8>>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let list: Vec<(String, i64)> = keys
            .iter()
            .map(|(id, seq)| (id.simple().to_string(), *seq))
            .collect();
        let list = serde_json::to_string(&list).expect("a list of strings and numbers");
        let rows = sqlx::query(COVERING_BLOCKS)
            .bind(list)
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
