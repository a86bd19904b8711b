//! What every console handler shares.

use std::path::PathBuf;
use std::sync::Arc;

use gateway::config::Config;
use gateway::credential::CredentialSigner;
use gateway::keys::SecretBox;
use gateway::record::chain::{ChainError, Verifier};
use gateway::record::integrity::configured_keys;
use gateway::store::{NewAuditEntry, Store};

use super::auth::oidc::Oidc;
use super::auth::throttle::Throttle;

/// Cheap to clone: everything is behind an `Arc`.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Arc<Config>,
    pub signer: Arc<CredentialSigner>,
    /// Seals upstream secrets entered in the admin pages, and the pending-sign-in cookie.
    pub secrets: Arc<SecretBox>,
    /// `None` when no provider is configured.
    pub oidc: Option<Arc<Oidc>>,
    /// Failed local sign-ins per client address.
    pub throttle: Arc<Throttle>,
    /// `config.console.public_url()`, e.g. `http://127.0.0.1:8080`.
    pub public_url: Arc<str>,
    /// Where `static/` is served from.
    pub static_dir: PathBuf,
    /// Proxies whose `X-Forwarded-For` is believed (`console.trusted_proxies`).
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// Public keys that check recording seals: the recording key and the retired ones
    /// (`recording.retired_public_keys`), loaded as `pgbastion verify` loads them.
    pub verifier: Arc<Verifier>,
}

/// Why the console cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Oidc(#[from] super::auth::oidc::OidcError),
    #[error("cannot load the recording key's public half to check seals: {0}")]
    RecordingKey(#[from] ChainError),
}

impl AppState {
    /// Everything the console needs; discovers the identity provider if one is configured (a
    /// provider that is down does not stop the console).
    pub async fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        signer: Arc<CredentialSigner>,
        secrets: Arc<SecretBox>,
    ) -> Result<AppState, StateError> {
        let public_url: Arc<str> = config.console.public_url().into();
        // `serve` creates the recording key before the console starts, so it is there.
        let verifier = Arc::new(configured_keys(&config)?);
        let oidc = if config.oidc.issuer_url.is_empty() {
            None
        } else {
            Some(Arc::new(Oidc::new(&config.oidc, &public_url).await?))
        };
        Ok(AppState {
            store,
            signer,
            secrets,
            oidc,
            throttle: Arc::new(Throttle::default()),
            trusted_proxies: config.console.trusted_proxies.clone().into(),
            verifier,
            public_url,
            static_dir: config
                .console
                .static_dir
                .clone()
                .unwrap_or_else(default_static_dir),
            config,
        })
    }

    /// Whether cookies get `Secure` and pages an HSTS header.
    pub fn https(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// Appends to the audit log. A failure is logged, never hidden: the caller decides whether
    /// the action may stand without its audit line (most may not and fail with it).
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        object: Option<String>,
        detail: serde_json::Value,
        client_addr: Option<String>,
    ) -> Result<(), gateway::store::StoreError> {
        let entry = NewAuditEntry {
            actor: actor.to_string(),
            action: action.to_string(),
            object,
            detail,
            client_addr,
        };
        self.store
            .append_audit(&entry)
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!(error = %e, action, actor, "cannot write the audit log");
                e
            })
    }
}

/// `static/` next to the binary's working directory, or beside the workspace when run by cargo.
pub fn default_static_dir() -> PathBuf {
    let here = PathBuf::from("static");
    if here.is_dir() {
        return here;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../static"))
}
