//! Cancel requests across gateway processes sharing a store.
//!
//! A client cancels on a new connection, which a load balancer may hand to another gateway than
//! the one holding the session. A gateway that gets a key it does not hold hands it to the store
//! ([`Forwarder`], then [`forward_to_store`]); every gateway watches the store
//! ([`apply_from_store`]) and cancels when the session is its own, with the secret checked as for
//! its own clients. A key that came from the store is never handed back to it, so a request
//! travels at most once, and garbage keys (CancelRequests are unauthenticated) reach the store at
//! most [`FORWARD_PER_SECOND`] a second per gateway.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Shared, upstream};
use crate::metrics::{self, CancelStep, StoreOperation};
use crate::store::Store;
use crate::store::cancel::CancelKey;

/// Requests a gateway may forward at once after a quiet spell: a pool closing many connections
/// cancels them together.
const FORWARD_BURST: f64 = 100.0;
/// Requests a gateway forwards per second over time. People press Ctrl-C a few times a minute;
/// past this it is a flood of guesses, and the excess is shed instead of written to the store.
pub const FORWARD_PER_SECOND: f64 = 50.0;
/// Keys handed to the store in one statement at most.
const MAX_BATCH: usize = 64;
/// How long the watch waits before trying again when the store cannot be watched.
const RETRY: Duration = Duration::from_secs(1);

/// The sending end of the forwarding queue, held by the registry: it takes a key without waiting,
/// or sheds it when the gateway is over its allowance or the store is not keeping up.
pub struct Forwarder {
    queue: mpsc::Sender<CancelKey>,
    allowance: Mutex<Allowance>,
}

impl Forwarder {
    /// A forwarder and the queue [`forward_to_store`] drains.
    pub fn new() -> (Forwarder, mpsc::Receiver<CancelKey>) {
        let (queue, queued) = mpsc::channel(FORWARD_BURST as usize);
        let forwarder = Forwarder {
            queue,
            allowance: Mutex::new(Allowance::full(Instant::now())),
        };
        (forwarder, queued)
    }

    /// Queues `key` for the other gateways; returns whether it was (else it is counted as shed).
    pub fn forward(&self, key: CancelKey) -> bool {
        let allowed = self
            .allowance
            .lock()
            .expect("allowance lock")
            .take(Instant::now());
        if allowed && self.queue.try_send(key).is_ok() {
            return true;
        }
        debug!("cancel request for a session not held here shed: over the forwarding cap");
        metrics::get().cancel_request(CancelStep::Shed).increment(1);
        false
    }
}

/// A token bucket: [`FORWARD_BURST`] tokens, refilled at [`FORWARD_PER_SECOND`].
struct Allowance {
    tokens: f64,
    refilled: Instant,
}

impl Allowance {
    fn full(now: Instant) -> Allowance {
        Allowance {
            tokens: FORWARD_BURST,
            refilled: now,
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let earned =
            now.saturating_duration_since(self.refilled).as_secs_f64() * FORWARD_PER_SECOND;
        self.tokens = (self.tokens + earned).min(FORWARD_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Hands the queued keys to the store, in batches, until `stop` or until the forwarder is gone.
/// A batch the store refuses is lost (counted as shed): a cancel is worth something only now,
/// and the client can send another.
pub async fn forward_to_store(
    store: Arc<dyn Store>,
    mut queued: mpsc::Receiver<CancelKey>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        batch.clear();
        let taken = tokio::select! {
            () = stop.cancelled() => return,
            taken = queued.recv_many(&mut batch, MAX_BATCH) => taken,
        };
        if taken == 0 {
            return;
        }
        let m = metrics::get();
        match store.request_cancels(&batch).await {
            Ok(()) => m
                .cancel_request(CancelStep::Forwarded)
                .increment(taken as u64),
            Err(e) => {
                warn!(error = %e, requests = taken,
                    "cannot hand cancel requests to the other gateways through the store; \
                     they are lost");
                m.store_error(StoreOperation::Cancel).increment(1);
                m.cancel_request(CancelStep::Shed).increment(taken as u64);
            }
        }
    }
}

/// Watches the store for keys any gateway forwarded and cancels the queries of those whose
/// session is held here, until `stop`. Keys for other gateways' sessions, and keys with a wrong
/// secret, are ignored without a word, as PostgreSQL ignores them.
pub async fn apply_from_store(shared: Arc<Shared>, stop: CancellationToken) {
    let poll = Duration::from_millis(shared.config.gateway.revocation_poll_millis.max(50));
    loop {
        let Some(mut requests) = watch(shared.store.as_ref(), poll, &stop).await else {
            return;
        };
        loop {
            let key = tokio::select! {
                () = stop.cancelled() => return,
                key = requests.recv() => key,
            };
            match key {
                Some(key) => apply(&shared, key),
                None => {
                    warn!("the watch for cancel requests of other gateways ended; watching again");
                    break;
                }
            }
        }
    }
}

/// Starts watching the store, trying again every [`RETRY`] while it fails; `None` on `stop`.
async fn watch(
    store: &dyn Store,
    poll: Duration,
    stop: &CancellationToken,
) -> Option<mpsc::Receiver<CancelKey>> {
    let mut failed = false;
    loop {
        match store.watch_cancel_requests(poll).await {
            Ok(requests) => {
                if failed {
                    info!("watching the store for cancel requests of other gateways");
                }
                return Some(requests);
            }
            Err(e) => {
                if !failed {
                    warn!(error = %e,
                        "cannot watch the store for cancel requests of other gateways; \
                         retrying (until then, a cancel sent to another gateway is lost)");
                    metrics::get()
                        .store_error(StoreOperation::Cancel)
                        .increment(1);
                }
                failed = true;
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// Cancels the query of the session `key` names if it is live here, in a task of its own so that
/// a slow target holds up no other cancel.
fn apply(shared: &Shared, key: CancelKey) {
    let Some((target, upstream_key)) = shared.registry.forwarded_cancel_route(key) else {
        return;
    };
    let limit = Duration::from_secs(shared.config.gateway.upstream_connect_timeout_secs);
    tokio::spawn(async move {
        match tokio::time::timeout(limit, upstream::cancel(&target, upstream_key)).await {
            Ok(Ok(())) => {
                debug!(target = %target.name, "cancel request from another gateway applied")
            }
            Ok(Err(e)) => {
                warn!(target = %target.name, error = %e, "cannot forward cancel request")
            }
            Err(_) => warn!(target = %target.name, "cancel request to the target timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(process_id: i32) -> CancelKey {
        CancelKey {
            process_id,
            secret_key: 7,
        }
    }

    #[test]
    fn the_allowance_gives_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut allowance = Allowance::full(start);
        let burst = (0..1000).filter(|_| allowance.take(start)).count();
        assert_eq!(burst, FORWARD_BURST as usize);
        let later = start + Duration::from_secs(2);
        let refilled = (0..1000).filter(|_| allowance.take(later)).count();
        assert_eq!(refilled, (2.0 * FORWARD_PER_SECOND) as usize);
        let much_later = later + Duration::from_secs(3600);
        let capped = (0..1000).filter(|_| allowance.take(much_later)).count();
        assert_eq!(capped, FORWARD_BURST as usize, "a quiet hour saves no more");
    }

    #[tokio::test]
    async fn a_flood_of_keys_is_shed_past_the_burst_without_waiting() {
        let (forwarder, mut queued) = Forwarder::new();
        let forwarded = (0..10_000)
            .filter(|&pid| forwarder.forward(key(pid)))
            .count();
        // The rate may earn a token while the loop runs, but the queue holds a burst at most.
        assert_eq!(forwarded, FORWARD_BURST as usize);
        let mut batch = Vec::new();
        assert_eq!(queued.recv_many(&mut batch, 1000).await, forwarded);
        assert_eq!(batch[0], key(0), "first come, first forwarded");
    }
}
