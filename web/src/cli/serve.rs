//! `pgbastion serve`: everything the gateway needs, then the accept loop until a signal.

use std::sync::Arc;

use anyhow::Context as _;
use gateway::config::Config;
use gateway::credential::CredentialSigner;
use gateway::keys::{self, SecretBox};
use gateway::proxy::{self, Services};
use gateway::record::chain::{RECORDING_KEY_FILE, RecordingKey};
use gateway::record::recover::recover;
use gateway::record::{RecorderSettings, StoreRecorder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use web::console::health::{self, Probe, ReadyFlag};

pub async fn run(config: Config) -> anyhow::Result<()> {
    let ctx = super::Ctx::open(config).await?;
    let config = ctx.config;
    let stop = CancellationToken::new();
    // First, before anything records a metric: the recorder behind /metrics and /readyz.
    let probe = Probe::start(ctx.store.clone(), stop.clone())?;
    let keys_ready = probe.component("keys", "not loaded yet");
    let gateway_ready = probe.component("gateway_listener", "not listening");

    let hostnames = vec![config.gateway.public_host.clone()];
    let identity =
        keys::load_or_create_tls(&config.tls_cert_path(), &config.tls_key_path(), &hostnames)?;
    let tls = keys::server_tls_config(&identity)?;
    let signer = CredentialSigner::load_or_create(
        &config.signing_key_path(),
        &config.credentials.issuer,
        &config.credentials.audience,
    )?;
    let secrets = SecretBox::load_or_create(&config.secret_key_path())?;
    let recording_key = RecordingKey::load_or_create(&config.data_dir.join(RECORDING_KEY_FILE))?;
    let settings = RecorderSettings::from_config(&config.recording, &config.data_dir);
    if let Some(dir) = &settings.journal_dir {
        // What a killed predecessor left unstored goes to the store before anything new.
        match recover(dir, ctx.store.as_ref(), &recording_key).await {
            Ok(r) if r.segments > 0 => tracing::warn!(
                sessions = r.sessions,
                events = r.events,
                unreadable_lines = r.unreadable_lines,
                "recovered recordings from the journal of a gateway that did not stop cleanly"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "journal recovery failed"),
        }
    }
    let recorder = Arc::new(
        StoreRecorder::start(ctx.store.clone(), Arc::new(recording_key), &settings)
            .context("cannot open the recording journal")?,
    );
    keys_ready.set(true);

    let addr = config.gateway.listen;
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "address in use".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        anyhow::anyhow!(
            "cannot listen on {addr}: {why}; set gateway.listen or PGBASTION_GATEWAY_LISTEN"
        )
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    gateway_ready.set(true);
    println!(
        "pgbastion gateway listening on {local} (store: {}, data: {})",
        ctx.store.engine(),
        config.data_dir.display()
    );
    let metrics_listener = match config.gateway.metrics_listen {
        Some(addr) => {
            let ready = probe.component("metrics_listener", "not listening");
            Some(tokio::spawn(run_metrics(addr, ready, stop.clone())))
        }
        None => None,
    };

    let signer = Arc::new(signer);
    let secrets = Arc::new(secrets);
    // Deletes recordings past their target's retention. Every process sharing a store runs
    // it; purges are idempotent, so the first to come along does the work.
    let retention = gateway::store::retention::spawn_retention(
        ctx.store.clone(),
        std::time::Duration::from_secs(config.recording.retention_interval_secs),
        stop.clone(),
    );
    let console = if config.console.enabled {
        let app = web::console::AppState::new(
            Arc::new(config.clone()),
            ctx.store.clone(),
            signer.clone(),
            secrets.clone(),
        )
        .await?;
        // The auditor's search and the session list's counts read the statement index.
        gateway::record::indexer::spawn_indexer(
            ctx.store.clone(),
            gateway::record::indexer::DEFAULT_INTERVAL,
            stop.clone(),
        );
        let ready = probe.component("console_listener", "not listening");
        Some(tokio::spawn(run_console(app, ready, stop.clone())))
    } else {
        None
    };

    let services = Services {
        config,
        store: ctx.store,
        signer,
        secrets,
        tls,
        recorder: recorder.clone(),
    };
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            // Load balancers stop sending new clients while the sessions drain.
            gateway_ready.set(false);
            stop.cancel();
        });
    }
    let served = proxy::serve(listener, services, stop.clone().cancelled_owned()).await;
    // The gateway may have stopped on its own (accept failure): the console goes with it.
    stop.cancel();
    if let Some(console) = console {
        match console.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "console failed"),
            Err(e) => tracing::error!(error = %e, "console task failed"),
        }
    }
    if let Some(metrics) = metrics_listener {
        match metrics.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "metrics listener failed"),
            Err(e) => tracing::error!(error = %e, "metrics listener task failed"),
        }
    }
    // A retention round is never cut short: its purge and audit entry go together.
    if let Err(e) = retention.await {
        tracing::error!(error = %e, "retention task failed");
    }
    // Every session has ended (or the accept loop failed): store and seal what is left.
    let lost = recorder.shutdown().await;
    served.context("gateway stopped")?;
    if lost > 0 {
        anyhow::bail!(
            "gateway stopped with {lost} recording events the store did not take (see the log)"
        );
    }
    tracing::info!("gateway stopped; every recording is stored");
    Ok(())
}

/// Serves `/metrics`, `/healthz` and `/readyz` over plain HTTP on `addr` until `stop`: for a
/// process without the console, or a scraper kept off the console's address.
async fn run_metrics(
    addr: std::net::SocketAddr,
    ready: ReadyFlag,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for metrics: {e}; set gateway.metrics_listen or \
             PGBASTION_GATEWAY_METRICS_LISTEN"
        )
    })?;
    ready.set(true);
    let local = listener.local_addr().unwrap_or(addr);
    println!("pgbastion metrics listening on {local} (/metrics, /healthz, /readyz)");
    axum::serve(listener, health::routes::<()>())
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
        .context("metrics listener stopped")
}

/// Binds the console's address and serves it until `stop`.
async fn run_console(
    app: web::console::AppState,
    ready: ReadyFlag,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let console = &app.config.console;
    let addr = console.listen;
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr} for the console: {e}; set console.listen or \
             PGBASTION_CONSOLE_LISTEN (or console.enabled = false)"
        )
    })?;
    let tls = match (&console.tls_cert, &console.tls_key) {
        (Some(cert), Some(key)) => {
            let hosts = vec![app.config.gateway.public_host.clone()];
            let identity = keys::load_or_create_tls(cert, key, &hosts)?;
            // The gateway's config speaks PostgreSQL's ALPN; browsers need HTTP's.
            let mut config = (*keys::server_tls_config(&identity)?).clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some(Arc::new(config))
        }
        _ => None,
    };
    let local = listener.local_addr().unwrap_or(addr);
    ready.set(true);
    println!(
        "pgbastion console listening on {local} (open {})",
        app.public_url
    );
    let router = web::console::router(app);
    web::console::serve(listener, router, tls, stop)
        .await
        .context("console stopped")
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what service managers send).
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                // Without a SIGTERM handler only Ctrl-C stops us; say so rather than fail.
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
