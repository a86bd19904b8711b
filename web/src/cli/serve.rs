//! `pgbastion serve`: everything the gateway and the console need, then the accept loop until a
//! signal. `--role` splits them into processes of their own that share one PostgreSQL store.

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use gateway::config::Config;
use gateway::credential::CredentialSigner;
use gateway::keys::{self, HeldKey, SecretBox, SharedKey};
use gateway::proxy::{self, Services};
use gateway::record::chain::RecordingKey;
use gateway::record::integrity::retired_keys;
use gateway::record::recover::recover;
use gateway::record::{RecorderSettings, StoreRecorder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use web::console::health::{self, Probe, ReadyFlag};

/// The full `--help` text of `serve`.
pub const LONG_ABOUT: &str = "Run the gateway and the web console: create the data directory and \
    keys if needed, migrate the store, and accept connections until SIGINT or SIGTERM. The \
    console listens on console.listen (127.0.0.1:8080); `pgbastion user add NAME --admin` makes \
    a first account.\n\n\
    To scale past one machine, run several `--role gateway` processes (behind a TCP load \
    balancer) and one or more `--role console` processes, all on one PostgreSQL store and with \
    the same key files (credentials.signing_key, recording.key_file, secrets.key_file); each \
    process keeps its own data_dir. Every process registers its keys' fingerprints in the store \
    and refuses to start when another process registered different ones. See docs/DEPLOYMENT.md.\n\n\
    Examples:\n  \
    pgbastion serve --config /etc/pgbastion.toml\n  \
    pgbastion serve --role gateway --config /etc/pgbastion/gateway.toml\n  \
    pgbastion serve --role console --config /etc/pgbastion/console.toml";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// What this process runs.
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
    /// Make this process's key the one registered for every process on the store (a
    /// deliberate rotation): signing, recording or secrets. Repeatable.
    #[arg(long = "replace-key", value_name = "KEY", value_parser = parse_shared_key)]
    replace_keys: Vec<SharedKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The gateway and (unless console.enabled = false) the console, in one process.
    All,
    /// Only the gateway: its listener, recorder, revocation and termination poll, and the
    /// retention job; /metrics, /healthz and /readyz on gateway.metrics_listen if set.
    Gateway,
    /// Only the web console, with the statement indexer and the retention job; no gateway
    /// listener, no recorder.
    Console,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Console => "console",
        }
    }
}

fn parse_shared_key(name: &str) -> Result<SharedKey, String> {
    SharedKey::from_name(name)
        .ok_or_else(|| format!("'{name}' is not a shared key; use signing, recording or secrets"))
}

/// The keys every process on a store shares.
struct Keys {
    signer: Arc<CredentialSigner>,
    secrets: Arc<SecretBox>,
    recording: RecordingKey,
}

pub async fn run(args: ServeArgs, config: Config) -> anyhow::Result<()> {
    let role = args.role;
    let ctx = super::Ctx::open(config).await?;
    check_role(role, &ctx)?;
    let config = ctx.config.clone();
    let stop = CancellationToken::new();
    // First, before anything records a metric: the recorder behind /metrics and /readyz.
    let probe = Probe::start(ctx.store.clone(), stop.clone())?;
    let keys_ready = probe.component("keys", "not loaded yet");
    let gateway_ready =
        (role != Role::Console).then(|| probe.component("gateway_listener", "not listening"));

    let keys = load_keys(&config)?;
    register_keys(&ctx, &keys, &args).await?;
    let Keys {
        signer,
        secrets,
        recording,
    } = keys;
    let gateway = match role {
        Role::Console => None,
        Role::All | Role::Gateway => Some(start_gateway(&ctx, recording).await?),
    };
    keys_ready.set(true);

    let listener = match (gateway.is_some(), &gateway_ready) {
        (true, Some(ready)) => Some(bind_gateway(&config, &ctx, ready).await?),
        _ => None,
    };
    let metrics_listener = match config.gateway.metrics_listen {
        Some(addr) => {
            let ready = probe.component("metrics_listener", "not listening");
            Some(tokio::spawn(run_metrics(addr, ready, stop.clone())))
        }
        None => None,
    };

    // Deletes recordings past their target's retention. Every process sharing a store runs
    // it; purges are idempotent, so the first to come along does the work.
    let retention = gateway::store::retention::spawn_retention(
        ctx.store.clone(),
        std::time::Duration::from_secs(config.recording.retention_interval_secs),
        stop.clone(),
    );
    let mut console = if role != Role::Gateway && config.console.enabled {
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

    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            // Load balancers stop sending new clients while the sessions drain.
            if let Some(ready) = gateway_ready {
                ready.set(false);
            }
            stop.cancel();
        });
    }
    let served = match (gateway.as_ref(), listener) {
        (Some(recorder), Some(listener)) => {
            let services = Services {
                config: config.clone(),
                store: ctx.store.clone(),
                signer: signer.clone(),
                secrets: secrets.clone(),
                tls: recorder.tls.clone(),
                recorder: recorder.recorder.clone(),
            };
            proxy::serve(listener, services, stop.clone().cancelled_owned())
                .await
                .context("gateway stopped")
        }
        // The console alone: it runs until the signal, or fails (say, its address is taken),
        // and the process with it.
        _ => match console.take() {
            Some(console) => match console.await {
                Ok(result) => result,
                Err(e) => Err(anyhow::anyhow!("console task failed: {e}")),
            },
            None => {
                stop.cancelled().await;
                Ok(())
            }
        },
    };
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
    let Some(gateway) = gateway else {
        served?;
        tracing::info!("console stopped");
        return Ok(());
    };
    // Every session has ended (or the accept loop failed): store and seal what is left.
    let lost = gateway.recorder.shutdown().await;
    served?;
    if lost > 0 {
        anyhow::bail!(
            "gateway stopped with {lost} recording events the store did not take (see the log)"
        );
    }
    tracing::info!("gateway stopped; every recording is stored");
    Ok(())
}

/// A split role means several processes on one store: refused on SQLite (a file several
/// machines cannot share), and a console role with the console switched off runs nothing.
fn check_role(role: Role, ctx: &super::Ctx) -> anyhow::Result<()> {
    if role != Role::All && ctx.store.engine() == "sqlite" {
        anyhow::bail!(
            "--role {} runs pgbastion as several processes sharing one store, which needs a \
             PostgreSQL store (store.url = \"postgres://...\", or PGBASTION_STORE_URL); with \
             the SQLite store run one `pgbastion serve` (--role all), and set \
             console.enabled = false for a gateway without the console",
            role.name()
        );
    }
    if role == Role::Console && !ctx.config.console.enabled {
        anyhow::bail!(
            "--role console with console.enabled = false has nothing to run; remove the \
             setting, or use --role gateway"
        );
    }
    Ok(())
}

fn load_keys(config: &Config) -> anyhow::Result<Keys> {
    let signer = CredentialSigner::load_or_create(
        &config.signing_key_path(),
        &config.credentials.issuer,
        &config.credentials.audience,
    )?;
    let secrets = SecretBox::load_or_create(&config.secret_key_path())?;
    let recording = RecordingKey::load_or_create(&config.recording_key_path())?;
    Ok(Keys {
        signer: Arc::new(signer),
        secrets: Arc::new(secrets),
        recording,
    })
}

/// Registers the shared keys' fingerprints in the store, or refuses to start when another
/// process registered different ones. A registered key is replaced when `--replace-key` names
/// it, or, for the recording key, when it is one of the configured retired keys (the
/// operator rotated it and kept its public half).
async fn register_keys(ctx: &super::Ctx, keys: &Keys, args: &ServeArgs) -> anyhow::Result<()> {
    let config = &ctx.config;
    let held = [
        HeldKey {
            purpose: SharedKey::Signing,
            path: config.signing_key_path(),
            fingerprint: keys.signer.fingerprint().to_string(),
        },
        HeldKey {
            purpose: SharedKey::Recording,
            path: config.recording_key_path(),
            fingerprint: keys.recording.key_id().to_string(),
        },
        HeldKey {
            purpose: SharedKey::Secrets,
            path: config.secret_key_path(),
            fingerprint: keys.secrets.fingerprint().to_string(),
        },
    ];
    let retired = retired_keys(config)?;
    let retired_ids = retired.key_ids();
    let me = format!(
        "{} pid {} (--role {})",
        host_name(),
        std::process::id(),
        args.role.name()
    );
    let replaced = keys::register_shared_keys(ctx.store.as_ref(), &held, &me, |key, theirs| {
        args.replace_keys.contains(&key.purpose)
            || (key.purpose == SharedKey::Recording
                && retired_ids.contains(&theirs.fingerprint.as_str()))
    })
    .await?;
    for old in replaced {
        let new = held
            .iter()
            .find(|k| k.purpose.name() == old.purpose)
            .map(|k| k.fingerprint.clone());
        ctx.audit(
            "key.replace",
            &old.purpose,
            serde_json::json!({
                "old_fingerprint": old.fingerprint,
                "new_fingerprint": new,
                "by": me,
            }),
        )
        .await?;
    }
    Ok(())
}

/// This machine's name, for the operator reading who registered a key.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown host".into())
}

/// The gateway's own parts: the TLS identity for the client leg and the recorder (after the
/// journal of a killed predecessor is stored).
struct GatewayParts {
    tls: Arc<rustls::ServerConfig>,
    recorder: Arc<StoreRecorder>,
}

async fn start_gateway(
    ctx: &super::Ctx,
    recording_key: RecordingKey,
) -> anyhow::Result<GatewayParts> {
    let config = &ctx.config;
    let hostnames = vec![config.gateway.public_host.clone()];
    let identity =
        keys::load_or_create_tls(&config.tls_cert_path(), &config.tls_key_path(), &hostnames)?;
    let tls = keys::server_tls_config(&identity)?;
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
    Ok(GatewayParts { tls, recorder })
}

async fn bind_gateway(
    config: &Config,
    ctx: &super::Ctx,
    ready: &ReadyFlag,
) -> anyhow::Result<TcpListener> {
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
    ready.set(true);
    println!(
        "pgbastion gateway listening on {local} (store: {}, data: {})",
        ctx.store.engine(),
        config.data_dir.display()
    );
    Ok(listener)
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
