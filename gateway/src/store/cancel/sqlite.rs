//! [`CancelStore`] on the SQLite engine (table in `migrations/sqlite/0013_cancel_requests.sql`):
//! a row per request, read by every watcher that has not read it yet (by its ever-growing id),
//! and deleted a few seconds later, when the next request is stored.

use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::mpsc;

use super::{CancelKey, CancelStore, OutageLog, WATCH_CAPACITY};
use crate::store::StoreResult;
use crate::store::models::now;
use crate::store::sqlite::{SqliteStore, ts};

/// How long a request is kept: a watcher that has not read it by then is too late to stop the
/// query its client meant, and would only cancel a later one.
const KEEP: TimeDelta = TimeDelta::seconds(10);

#[async_trait]
impl CancelStore for SqliteStore {
    async fn request_cancels(&self, keys: &[CancelKey]) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let at = now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM cancel_requests WHERE requested_at < ?")
            .bind(ts(at - KEEP))
            .execute(&mut *tx)
            .await?;
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO cancel_requests (process_id, secret_key, requested_at) ",
        );
        insert.push_values(keys, |mut row, key| {
            row.push_bind(key.process_id)
                .push_bind(key.secret_key)
                .push_bind(ts(at));
        });
        insert.build().execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn watch_cancel_requests(
        &self,
        poll: Duration,
    ) -> StoreResult<mpsc::Receiver<CancelKey>> {
        // Ids only grow (AUTOINCREMENT), and SQLite commits one writer at a time, so a row
        // committed after this read has a larger id than any row seen now.
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM cancel_requests")
            .fetch_one(&self.pool)
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        tokio::spawn(poll_requests(self.pool.clone(), last, poll, tx));
        Ok(rx)
    }
}

/// Passes on the requests stored after `last`, looking every `poll`, until the receiver is
/// dropped.
async fn poll_requests(
    pool: SqlitePool,
    mut last: i64,
    poll: Duration,
    tx: mpsc::Sender<CancelKey>,
) {
    let mut outage = OutageLog::default();
    loop {
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(poll) => {}
        }
        // Rows older than KEEP are left alone: their queries are history, whatever delayed us.
        let rows = sqlx::query(
            "SELECT id, process_id, secret_key FROM cancel_requests \
             WHERE id > ? AND requested_at >= ? ORDER BY id",
        )
        .bind(last)
        .bind(ts(now() - KEEP))
        .fetch_all(&pool)
        .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                outage.failed(&e);
                continue;
            }
        };
        outage.worked();
        for row in rows {
            let Ok(id) = row.try_get::<i64, _>("id") else {
                continue;
            };
            last = last.max(id);
            let (Ok(process_id), Ok(secret_key)) = (
                row.try_get::<i32, _>("process_id"),
                row.try_get::<i32, _>("secret_key"),
            ) else {
                // The table's CHECKs keep both in i32; a row that is not is nobody's key.
                continue;
            };
            let key = CancelKey {
                process_id,
                secret_key,
            };
            if tx.send(key).await.is_err() {
                return;
            }
        }
    }
}
