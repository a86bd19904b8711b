//! Cancel requests between gateway processes sharing a store. A client cancels a query on a new
//! connection, which a load balancer may hand to another gateway than the one holding the
//! session; that gateway hands the key to the store, and every gateway hears of it and cancels
//! if the session is its own. A part of [`super::Store`] (its supertrait), implemented by both
//! engines in this folder: PostgreSQL passes keys by `NOTIFY` (nothing stored), SQLite through
//! the short-lived rows of `cancel_requests` (migration 0013), polled.
//!
//! The keys are a client's secret for as long as its session lives (anyone holding one can
//! cancel its queries), so they never reach a log: [`CancelKey`]'s `Debug` shows the process id
//! only.

mod postgres;
mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::StoreResult;

/// What a CancelRequest carries: the key the gateway gave the client at login.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CancelKey {
    pub process_id: i32,
    pub secret_key: i32,
}

impl fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelKey")
            .field("process_id", &self.process_id)
            .finish_non_exhaustive()
    }
}

/// Keys a watcher holds for its reader before it waits for the reader to catch up.
const WATCH_CAPACITY: usize = 256;

/// Cancel requests handed between the gateway processes of one store.
#[async_trait]
pub trait CancelStore: Send + Sync {
    /// Hands the keys to every gateway process watching the store (this one included). Nothing
    /// is answered: the gateway holding a key's session cancels, the others ignore it.
    async fn request_cancels(&self, keys: &[CancelKey]) -> StoreResult<()>;

    /// The keys requested from now on by any process, in the order they were requested, until
    /// the receiver is dropped. Returns once the watch is in place, so that a request made after
    /// it returns is seen. SQLite is looked at every `poll`; PostgreSQL pushes at once. A store
    /// outage afterwards is logged and outlasted: requests made meanwhile may be lost (a client
    /// can cancel again), later ones come through.
    async fn watch_cancel_requests(&self, poll: Duration)
    -> StoreResult<mpsc::Receiver<CancelKey>>;
}

/// A key as one line of text (`process_id:secret_key`), the payload of a notification.
fn encode(key: CancelKey) -> String {
    format!("{}:{}", key.process_id, key.secret_key)
}

/// The key [`encode`] wrote; `None` for anything else (someone else's notification on the
/// channel).
fn decode(text: &str) -> Option<CancelKey> {
    let (process_id, secret_key) = text.split_once(':')?;
    Some(CancelKey {
        process_id: process_id.parse().ok()?,
        secret_key: secret_key.parse().ok()?,
    })
}

/// Logs a failed watch once per outage rather than on every attempt, and its end.
#[derive(Default)]
struct OutageLog {
    failing: bool,
}

impl OutageLog {
    fn failed(&mut self, error: &dyn fmt::Display) {
        if !self.failing {
            tracing::warn!(error = %error,
                "cannot watch the store for cancel requests of other gateways; retrying \
                 (until it is back, a cancel sent to another gateway is lost)");
            crate::metrics::get()
                .store_error(crate::metrics::StoreOperation::Cancel)
                .increment(1);
        }
        self.failing = true;
    }

    fn worked(&mut self) {
        if self.failing {
            tracing::info!("watching the store for cancel requests again");
        }
        self.failing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_text_and_nothing_else_decodes() {
        for key in [
            CancelKey {
                process_id: 1,
                secret_key: -1,
            },
            CancelKey {
                process_id: i32::MAX,
                secret_key: i32::MIN,
            },
        ] {
            assert_eq!(decode(&encode(key)), Some(key));
        }
        for junk in ["", "1", "1:", ":2", "1:2:3", "a:b", "1:99999999999", " 1:2"] {
            assert_eq!(decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn a_key_never_shows_its_secret_in_logs() {
        let key = CancelKey {
            process_id: 4242,
            secret_key: 987_654_321,
        };
        let shown = format!("{key:?}");
        assert!(shown.contains("4242"), "{shown}");
        assert!(!shown.contains("987654321"), "{shown}");
    }
}
