//! The gateway proper: accept, handshake, check the credential, log in upstream, relay.
//!
//! One connection flows through [`session::handle`]: [`handshake`] (TLS, startup packet) →
//! [`auth`] (the credential) → [`upstream`] (the gateway's own login to the target) →
//! [`relay`] (frames both ways, each shown to the recorder tap). [`registry`] holds live
//! sessions for cancel requests and for stopping sessions whose credential was revoked or that
//! an admin terminated; [`cancel`] passes cancel requests between the gateways of one store.

pub mod auth;
pub mod cancel;
pub mod framed;
pub mod handshake;
pub mod registry;
pub mod relay;
pub mod session;
mod timing;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::credential::CredentialSigner;
use crate::keys::SecretBox;
use crate::record::Recorder;
use crate::store::{EndReason, Store};
use registry::{Registry, StopOrder};

/// What the gateway needs from the rest of pgbastion.
pub struct Services {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub signer: Arc<CredentialSigner>,
    pub secrets: Arc<SecretBox>,
    pub tls: Arc<rustls::ServerConfig>,
    pub recorder: Arc<dyn Recorder>,
}

/// State shared by all connections of one gateway process.
pub struct Shared {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub signer: Arc<CredentialSigner>,
    pub secrets: Arc<SecretBox>,
    pub tls: Arc<rustls::ServerConfig>,
    pub recorder: Arc<dyn Recorder>,
    pub registry: Arc<Registry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot accept connections: {0}")]
    Accept(#[source] std::io::Error),
}

/// Connections beyond `max_connections` still get a proper "too many connections" error, but
/// only this many such refusals run at once; past that they are closed without a word.
const MAX_CONCURRENT_REFUSALS: usize = 64;
/// How long stopped sessions get to tell their client and store their end at shutdown.
const SHUTDOWN_FINISH: Duration = Duration::from_secs(10);
/// Revocations and termination requests are looked for this far back on every poll, so
/// gateways whose clocks differ a little, and sessions registered while a poll ran (or still
/// logging in upstream when the request came), are still caught.
const REVOCATION_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Serves gateway connections on `listener` until `shutdown` completes, then stops accepting,
/// lets live sessions go on for `gateway.shutdown_grace_secs`, and ends the rest with a FATAL
/// saying why.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    let (forwarder, forwarded) = cancel::Forwarder::new();
    let shared = Arc::new(Shared {
        registry: Arc::new(Registry::forwarding_to(forwarder)),
        config: services.config,
        store: services.store,
        signer: services.signer,
        secrets: services.secrets,
        tls: services.tls,
        recorder: services.recorder,
    });
    let slots = Arc::new(Semaphore::new(shared.config.gateway.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_CONCURRENT_REFUSALS));
    let tasks = TaskTracker::new();
    let stop_watching = CancellationToken::new();
    tokio::spawn(watch_stop_requests(shared.clone(), stop_watching.clone()));
    tokio::spawn(cancel::forward_to_store(
        shared.store.clone(),
        forwarded,
        stop_watching.clone(),
    ));
    tokio::spawn(cancel::apply_from_store(
        shared.clone(),
        stop_watching.clone(),
    ));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if is_transient(&e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => return Err(ProxyError::Accept(e)),
            },
        };
        crate::metrics::get().connections_total.increment(1);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tasks.spawn(session::handle(tcp, peer, shared.clone(), permit));
            }
            Err(_) => {
                crate::metrics::get()
                    .refused(crate::metrics::Refusal::TooManyConnections)
                    .increment(1);
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tasks.spawn(session::refuse_busy(tcp, shared.clone(), permit));
                }
            }
        }
    }
    drop(listener);
    drain(
        &shared,
        tasks,
        Duration::from_secs(shared.config.gateway.shutdown_grace_secs),
    )
    .await;
    stop_watching.cancel();
    Ok(())
}

/// Shutdown: with the listener closed, live sessions get `grace` to end by themselves; the rest
/// are ended with a FATAL telling the client why, and get a few seconds to record their end.
async fn drain(shared: &Shared, tasks: TaskTracker, grace: Duration) {
    tasks.close();
    tracing::info!(sessions = shared.registry.len(), grace = ?grace, "shutting down: no new connections");
    if tokio::time::timeout(grace, tasks.wait()).await.is_ok() {
        return;
    }
    let order = StopOrder {
        reason: EndReason::GatewayShutdown,
        message: "pgbastion gateway is shutting down".into(),
    };
    let stopped = shared.registry.stop_all(&order);
    tracing::info!(
        sessions = stopped,
        "grace period over; ending the remaining sessions"
    );
    if tokio::time::timeout(SHUTDOWN_FINISH, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not end within {SHUTDOWN_FINISH:?}");
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    !matches!(
        e.kind(),
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::PermissionDenied
    )
}

/// Polls the store for revoked credentials and for termination requests, and stops the
/// matching live sessions here. Works across gateway processes sharing one store: each one
/// stops the sessions it runs. A session ends within about one poll interval.
async fn watch_stop_requests(shared: Arc<Shared>, stop: CancellationToken) {
    let every = Duration::from_millis(shared.config.gateway.revocation_poll_millis.max(50));
    // Since when each kind was last read successfully.
    let mut revocations_read = Utc::now();
    let mut terminations_read = Utc::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if shared.registry.is_empty() {
            revocations_read = Utc::now();
            terminations_read = Utc::now();
            continue;
        }
        stop_revoked(&shared, &mut revocations_read).await;
        stop_terminated(&shared, &mut terminations_read).await;
    }
}

async fn stop_revoked(shared: &Shared, last_read: &mut DateTime<Utc>) {
    let order = StopOrder {
        reason: EndReason::Revoked,
        message: "terminating connection because its pgbastion credential was revoked".into(),
    };
    let started = Utc::now();
    match shared
        .store
        .revoked_since(*last_read - REVOCATION_OVERLAP)
        .await
    {
        Ok(ids) => {
            for id in ids {
                let n = shared.registry.stop_credential(id, &order);
                if n > 0 {
                    tracing::info!(credential = %id, sessions = n, "credential revoked; ending its sessions");
                }
            }
            *last_read = started;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot poll for revoked credentials");
            crate::metrics::get()
                .store_error(crate::metrics::StoreOperation::Poll)
                .increment(1);
        }
    }
}

async fn stop_terminated(shared: &Shared, last_read: &mut DateTime<Utc>) {
    let started = Utc::now();
    match shared
        .store
        .terminations_since(*last_read - REVOCATION_OVERLAP)
        .await
    {
        Ok(requests) => {
            for request in requests {
                let order = StopOrder::terminated(&request);
                if shared.registry.stop_session(request.session_id, &order) {
                    tracing::info!(session = %request.session_id, by = %request.requested_by,
                        "termination requested; ending the session");
                }
            }
            *last_read = started;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot poll for termination requests");
            crate::metrics::get()
                .store_error(crate::metrics::StoreOperation::Poll)
                .increment(1);
        }
    }
}
