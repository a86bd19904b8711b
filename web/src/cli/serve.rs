//! `pgbastion serve`: everything the gateway needs, then the accept loop until a signal.

use std::sync::Arc;

use anyhow::Context as _;
use gateway::config::Config;
use gateway::credential::CredentialSigner;
use gateway::keys::{self, SecretBox};
use gateway::proxy::{self, Services};
use gateway::record::NullRecorder;
use tokio::net::TcpListener;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let ctx = super::Ctx::open(config).await?;
    let config = ctx.config;

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
    println!(
        "pgbastion gateway listening on {local} (store: {}, data: {})",
        ctx.store.engine(),
        config.data_dir.display()
    );

    let services = Services {
        config,
        store: ctx.store,
        signer: Arc::new(signer),
        secrets: Arc::new(secrets),
        tls,
        recorder: Arc::new(NullRecorder),
    };
    proxy::serve(listener, services, shutdown_signal())
        .await
        .context("gateway stopped")?;
    tracing::info!("gateway stopped");
    Ok(())
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
