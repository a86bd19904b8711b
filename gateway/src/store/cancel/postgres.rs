//! [`CancelStore`] on the PostgreSQL engine: `NOTIFY` on one channel, heard by the `LISTEN` of
//! every gateway. Nothing is stored: PostgreSQL delivers a notification to the listening
//! connections when it is committed, within milliseconds, and forgets it.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::{CancelKey, CancelStore, OutageLog, WATCH_CAPACITY, decode, encode};
use crate::store::StoreResult;
use crate::store::postgres::PgStore;

/// The notification channel (also in `docs/DEPLOYMENT.md`).
const CHANNEL: &str = "pgbastion_cancel";
/// How long a watch waits before listening again after the store failed it.
const RETRY: Duration = Duration::from_secs(1);
/// How long listening waits for its connection when the store is slow to answer.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

#[async_trait]
impl CancelStore for PgStore {
    async fn request_cancels(&self, keys: &[CancelKey]) -> StoreResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let payloads: Vec<String> = keys.iter().copied().map(encode).collect();
        sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload")
            .bind(CHANNEL)
            .bind(&payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn watch_cancel_requests(
        &self,
        _poll: Duration,
    ) -> StoreResult<mpsc::Receiver<CancelKey>> {
        // A pool of one connection of its own: LISTEN holds its connection for the life of the
        // gateway, and the store's pool is sized for short operations. The pool is what brings
        // the connection back after an outage.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let listener = listen(&pool).await?;
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        tokio::spawn(pass_on(pool, listener, tx));
        Ok(rx)
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // The pool is this watch's own and is never closed while the watch runs.
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Passes every key heard on the channel to `tx` until its receiver is dropped, listening again
/// whenever the store drops the connection.
async fn pass_on(pool: PgPool, listener: PgListener, tx: mpsc::Sender<CancelKey>) {
    let mut listener = Some(listener);
    let mut outage = OutageLog::default();
    loop {
        let current = match listener.as_mut() {
            Some(current) => current,
            None => {
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
                match listen(&pool).await {
                    Ok(fresh) => {
                        outage.worked();
                        listener.insert(fresh)
                    }
                    Err(e) => {
                        outage.failed(&e);
                        continue;
                    }
                }
            }
        };
        // Cancel-safe enough: dropping `try_recv` loses at most a notification, and it is only
        // dropped when nobody is left to give one to.
        let next = tokio::select! {
            () = tx.closed() => return,
            next = current.try_recv() => next,
        };
        match next {
            Ok(Some(notification)) => {
                // Anything else on the channel is not ours to act on.
                if let Some(key) = decode(notification.payload())
                    && tx.send(key).await.is_err()
                {
                    return;
                }
            }
            // The listener has connected and listens again by now.
            Ok(None) => tracing::warn!(
                "the store connection listening for cancel requests was lost and is back; \
                 a cancel sent to another gateway meanwhile was lost"
            ),
            Err(e) => {
                outage.failed(&e);
                listener = None;
            }
        }
    }
}
