//! Configuration: one TOML file (every key optional), overridable by `PGBASTION_*` variables.
//!
//! With no file at all pgbastion runs: data in `./pgbastion-data`, an embedded SQLite store there,
//! the gateway on 127.0.0.1:6432, TLS certificate and signing key generated on first start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where generated keys, the TLS certificate and the SQLite store live.
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub gateway: GatewayConfig,
    pub credentials: CredentialConfig,
    pub console: ConsoleConfig,
    pub oidc: OidcConfig,
    pub recording: RecordingConfig,
    pub secrets: SecretsConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://...`. Empty means `sqlite://<data_dir>/pgbastion.db`.
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Host name people put in their connection strings (shown by `token issue`).
    pub public_host: String,
    /// PEM certificate chain and key for the client leg. Empty: `<data_dir>/gateway.crt|key`,
    /// self-signed and generated on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Concurrent client connections; further ones are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// Largest startup packet accepted (PostgreSQL itself allows 10,000 bytes).
    pub max_startup_packet_bytes: usize,
    /// Largest single message a client may send.
    pub max_client_message_bytes: usize,
    /// Time a client has from connecting to finishing authentication.
    pub auth_timeout_secs: u64,
    /// Time to connect and log in upstream.
    pub upstream_connect_timeout_secs: u64,
    /// How often the gateway looks for revoked credentials to end their live sessions.
    pub revocation_poll_millis: u64,
    /// On SIGTERM: how long live sessions may go on before they are ended with a FATAL
    /// (0: at once). New connections are refused from the first moment.
    pub shutdown_grace_secs: u64,
    /// Threads that run sessions; 0 means one per CPU. On a host shared with busy neighbours
    /// (the database, the clients), fewer threads cut cross-thread wake-ups and so latency.
    pub worker_threads: usize,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` over plain HTTP, e.g.
    /// `127.0.0.1:9187`. Unset: only on the console's address (so a process with the console
    /// off serves no metrics unless this is set).
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CredentialConfig {
    pub issuer: String,
    pub audience: String,
    /// Lifetime when none is asked for (capped by the grant).
    pub default_lifetime_secs: i64,
    /// Ed25519 PKCS#8 PEM. Empty: `<data_dir>/signing.key`, generated on first start.
    pub signing_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the web console (with `serve`).
    pub enabled: bool,
    pub listen: SocketAddr,
    /// The address people type into their browser, e.g. `https://bastion.example.com`; the
    /// OpenID Connect redirect URI is built from it. Empty: `http://<listen>`.
    pub public_url: String,
    /// PEM certificate chain and key: serve the console over HTTPS. Without them the console
    /// speaks plain HTTP, for loopback or behind a TLS-terminating proxy. Cookies are always
    /// `Secure` (browsers accept that on http://127.0.0.1 and http://localhost).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The console's CSS and JavaScript (the repository's `static/`). Unset: `./static`, else
    /// the `static/` of the source tree the binary was built from.
    pub static_dir: Option<PathBuf>,
    /// Allow sign-in with local accounts (`pgbastion user add`).
    pub local_login: bool,
    /// Addresses of reverse proxies in front of the console whose `X-Forwarded-For` names the
    /// real client (for the audit log and the sign-in throttle). Empty: the TCP peer is the
    /// client.
    #[serde(deserialize_with = "ip_list_or_commas")]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// A console session ends after this long without a request.
    pub session_idle_secs: i64,
    /// A console session ends this long after sign-in, active or not.
    pub session_absolute_secs: i64,
    /// Failed local sign-ins in a row before the account is locked for a while.
    pub login_max_failures: i64,
    /// How long the first lock lasts; each further failure while over the limit doubles it
    /// (capped at a day).
    pub login_lockout_secs: i64,
    /// Let auditors end live sessions too (admins always can). Off by default: auditing is
    /// reading, and ending someone's session is an act of its own.
    pub auditors_can_terminate: bool,
}

/// Sign-in through an OpenID Connect provider (authorization code flow with PKCE). Off while
/// `issuer_url` is empty.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OidcConfig {
    /// The provider's issuer, e.g. `https://login.example.com/realms/staff`; its discovery
    /// document is read at start.
    pub issuer_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for (`openid` is always asked).
    #[serde(deserialize_with = "list_or_commas")]
    pub scopes: Vec<String>,
    /// What the sign-in button says.
    pub button_label: String,
    /// Claims (from the ID token or userinfo) that give the login, email, name and groups.
    pub login_claim: String,
    pub email_claim: String,
    pub name_claim: String,
    pub groups_claim: String,
    /// Groups whose members get each console role. Someone in none of them cannot sign in.
    #[serde(deserialize_with = "list_or_commas")]
    pub user_groups: Vec<String>,
    #[serde(deserialize_with = "list_or_commas")]
    pub approver_groups: Vec<String>,
    #[serde(deserialize_with = "list_or_commas")]
    pub auditor_groups: Vec<String>,
    #[serde(deserialize_with = "list_or_commas")]
    pub admin_groups: Vec<String>,
}

/// Defaults for every target's recording (a target may set its own row caps and policy), and the
/// writer's bounds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Result rows kept per statement (0: none); a target may set its own.
    pub max_rows: usize,
    /// Bytes of result values kept per statement (0: no rows); a target may set its own.
    pub max_result_bytes: usize,
    /// Bytes kept of each parameter, column value or notification payload.
    pub max_value_bytes: usize,
    /// Bytes kept of each statement's SQL text.
    pub max_sql_bytes: usize,
    /// Bytes of COPY data kept per COPY (0: none; counts are always recorded).
    pub max_copy_bytes: usize,
    /// Events that may wait for the store (all sessions together). Past this, sessions that
    /// produce more are ended rather than recorded incompletely.
    pub max_buffered_events: usize,
    /// How often buffered events are written (strict sessions are written at once).
    pub flush_interval_millis: u64,
    /// A commit slower than this counts as a store failure (strict sessions end).
    pub commit_timeout_millis: u64,
    /// At shutdown, how long to keep trying to store what is left.
    pub shutdown_flush_secs: u64,
    /// Journal every recorded event to `<data_dir>/journal` before forwarding it: events
    /// survive a killed gateway, and strict sessions need not wait for each store commit.
    /// Without it, strict sessions wait for the store on every statement.
    pub journal: bool,
    /// Column names whose values are never stored (result columns, parameters bound to them,
    /// literals assigned to them): case-insensitive globs with `*`. In the environment, a
    /// comma-separated list. An empty list redacts only role passwords.
    #[serde(deserialize_with = "list_or_commas")]
    pub secret_patterns: Vec<String>,
    /// How often the retention job deletes the sessions of targets that keep them for a
    /// limited number of days (`pgbastion target retention`).
    pub retention_interval_secs: u64,
    /// Ed25519 PKCS#8 PEM that seals recordings. Empty: `<data_dir>/recording.key`, generated
    /// on first start. Every process sharing a store must use the same one.
    pub key_file: Option<PathBuf>,
    /// Public keys (PEM, `pgbastion verify --show-public-key`) of recording keys used before a
    /// rotation: recordings they sealed still verify. In the environment, comma-separated.
    #[serde(deserialize_with = "path_list_or_commas")]
    pub retired_public_keys: Vec<PathBuf>,
}

/// The key that seals upstream secrets (target passwords).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// 64 hex characters. Empty: `<data_dir>/secret.key`, generated on first use. Every process
    /// sharing a store must use the same one: the console seals what gateways open.
    pub key_file: Option<PathBuf>,
}

/// A list as a TOML array, or as one comma-separated string (how an environment variable
/// carries it).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match Either::deserialize(d)? {
        Either::List(items) => items,
        Either::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Paths as a TOML array, or as one comma-separated string.
fn path_list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    Ok(list_or_commas(d)?.into_iter().map(PathBuf::from).collect())
}

/// IP addresses as a TOML array, or as one comma-separated string; anything else names itself.
fn ip_list_or_commas<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<std::net::IpAddr>, D::Error> {
    list_or_commas(d)?
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|_| serde::de::Error::custom(format!("'{s}' is not an IP address")))
        })
        .collect()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter, e.g. `info,gateway=debug`.
    pub filter: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./pgbastion-data"),
            store: StoreConfig::default(),
            gateway: GatewayConfig::default(),
            credentials: CredentialConfig::default(),
            console: ConsoleConfig::default(),
            oidc: OidcConfig::default(),
            recording: RecordingConfig::default(),
            secrets: SecretsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:6432".parse().expect("valid literal"),
            public_host: "127.0.0.1".into(),
            tls_cert: None,
            tls_key: None,
            max_connections: 1000,
            max_startup_packet_bytes: 10_000,
            max_client_message_bytes: 64 * 1024 * 1024,
            auth_timeout_secs: 15,
            upstream_connect_timeout_secs: 10,
            revocation_poll_millis: 1000,
            shutdown_grace_secs: 30,
            worker_threads: 0,
            metrics_listen: None,
        }
    }
}

impl Default for CredentialConfig {
    fn default() -> Self {
        CredentialConfig {
            issuer: "pgbastion".into(),
            audience: "pgbastion-gateway".into(),
            default_lifetime_secs: 3600,
            signing_key: None,
        }
    }
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            public_url: String::new(),
            tls_cert: None,
            tls_key: None,
            static_dir: None,
            local_login: true,
            trusted_proxies: Vec::new(),
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            login_max_failures: 5,
            login_lockout_secs: 60,
            auditors_can_terminate: false,
        }
    }
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer_url: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            scopes: ["openid", "email", "profile", "groups"]
                .map(String::from)
                .to_vec(),
            button_label: "Sign in with your company account".into(),
            login_claim: "preferred_username".into(),
            email_claim: "email".into(),
            name_claim: "name".into(),
            groups_claim: "groups".into(),
            user_groups: Vec::new(),
            approver_groups: Vec::new(),
            auditor_groups: Vec::new(),
            admin_groups: Vec::new(),
        }
    }
}

impl ConsoleConfig {
    /// Where browsers reach the console, without a trailing slash.
    pub fn public_url(&self) -> String {
        if self.public_url.is_empty() {
            let scheme = if self.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", self.listen)
        } else {
            self.public_url.trim_end_matches('/').to_string()
        }
    }
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            max_rows: 100,
            max_result_bytes: 64 * 1024,
            max_value_bytes: 4 * 1024,
            max_sql_bytes: 64 * 1024,
            max_copy_bytes: 64 * 1024,
            max_buffered_events: 500_000,
            flush_interval_millis: 10,
            commit_timeout_millis: 5_000,
            shutdown_flush_secs: 30,
            journal: true,
            secret_patterns: crate::record::capture::DEFAULT_SECRET_PATTERNS
                .iter()
                .map(|p| p.to_string())
                .collect(),
            retention_interval_secs: 3600,
            key_file: None,
            retired_public_keys: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            filter: "info".into(),
        }
    }
}

impl Config {
    /// `sqlite://<data_dir>/pgbastion.db` unless a store URL is configured.
    pub fn store_url(&self) -> String {
        if self.store.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("pgbastion.db").display())
        } else {
            self.store.url.clone()
        }
    }

    pub fn tls_cert_path(&self) -> PathBuf {
        self.gateway
            .tls_cert
            .clone()
            .unwrap_or_else(|| self.data_dir.join("gateway.crt"))
    }

    pub fn tls_key_path(&self) -> PathBuf {
        self.gateway
            .tls_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("gateway.key"))
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.credentials
            .signing_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("signing.key"))
    }

    /// The key that seals upstream secrets; deliberately a file, never a row in the store.
    pub fn secret_key_path(&self) -> PathBuf {
        self.secrets
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }

    /// The key that seals recordings.
    pub fn recording_key_path(&self) -> PathBuf {
        self.recording
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::record::chain::RECORDING_KEY_FILE))
    }
}

/// A configuration that cannot be used, with the key and the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A value of the right type that cannot work (a zero timeout, an unknown log format).
    #[error("setting {key}: {message}")]
    Value { key: &'static str, message: String },
}

/// Prefix of every override variable.
const ENV_PREFIX: &str = "PGBASTION_";
/// Names the config file; not a setting itself.
const ENV_CONFIG_FILE: &str = "PGBASTION_CONFIG";
/// Sections of the file; `PGBASTION_<SECTION>_<KEY>` sets `[section] key`.
const SECTIONS: &[&str] = &[
    "store",
    "gateway",
    "credentials",
    "console",
    "oidc",
    "recording",
    "secrets",
    "log",
];

/// One `PGBASTION_*` variable, mapped to the key it sets.
struct EnvOverride {
    var: String,
    section: Option<&'static str>,
    key: String,
    raw: String,
    /// Whether `raw` is currently inserted as a string (after a typed guess was refused).
    as_string: bool,
}

impl EnvOverride {
    fn parse(var: String, raw: String) -> Option<EnvOverride> {
        let name = var.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
        let (section, key) = match name.split_once('_') {
            Some((first, rest)) if !rest.is_empty() => {
                match SECTIONS.iter().find(|s| **s == first) {
                    Some(section) => (Some(*section), rest.to_string()),
                    None => (None, name.clone()),
                }
            }
            _ => (None, name.clone()),
        };
        Some(EnvOverride {
            var,
            section,
            key,
            raw,
            as_string: false,
        })
    }

    /// The dotted key as `serde_path_to_error` prints it.
    fn dotted(&self) -> String {
        match self.section {
            Some(section) => format!("{section}.{}", self.key),
            None => self.key.clone(),
        }
    }

    /// Environment values are untyped text; guess the TOML type so integers and booleans work,
    /// and fall back to a string if the field turns out to want one (see `Config::load`).
    fn value(&self) -> toml::Value {
        if !self.as_string {
            if let Ok(i) = self.raw.parse::<i64>() {
                return toml::Value::Integer(i);
            }
            if let Ok(b) = self.raw.parse::<bool>() {
                return toml::Value::Boolean(b);
            }
            if let Ok(f) = self.raw.parse::<f64>() {
                return toml::Value::Float(f);
            }
        }
        toml::Value::String(self.raw.clone())
    }

    fn apply(&self, root: &mut toml::Table) {
        let table = match self.section {
            Some(section) => {
                let entry = root
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if !entry.is_table() {
                    *entry = toml::Value::Table(toml::Table::new());
                }
                entry.as_table_mut().expect("just made a table")
            }
            None => root,
        };
        table.insert(self.key.clone(), self.value());
    }
}

impl Config {
    /// Loads `path` (if given), then applies `PGBASTION_*` overrides from `env`, then validates.
    ///
    /// `PGBASTION_DATA_DIR` sets `data_dir`, `PGBASTION_GATEWAY_MAX_CONNECTIONS` sets
    /// `[gateway] max_connections`, and so on for every key. An unknown variable is an error, so a
    /// typo does not silently leave a default in place.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(path) => load_file(path)?,
            None => toml::Table::new(),
        };

        let mut overrides: Vec<EnvOverride> = env
            .into_iter()
            .filter(|(var, _)| var != ENV_CONFIG_FILE)
            .filter_map(|(var, raw)| EnvOverride::parse(var, raw))
            .collect();
        overrides.sort_by(|a, b| a.var.cmp(&b.var));
        for o in &overrides {
            o.apply(&mut table);
        }

        // Each round either succeeds, fails for good, or turns one typed guess into a string, so
        // it ends after at most `overrides.len() + 1` rounds.
        loop {
            let value = toml::Value::Table(table.clone());
            let err = match serde_path_to_error::deserialize::<_, Config>(value) {
                Ok(config) => {
                    config.validate()?;
                    return Ok(config);
                }
                Err(err) => err,
            };
            let at = err.path().to_string();
            let message = err.inner().message().to_string();
            let Some(o) = overrides.iter_mut().find(|o| at == o.dotted()) else {
                // The file alone parsed, so an error elsewhere is still an override's: a section
                // name used as a key, e.g. `PGBASTION_GATEWAY=1`.
                let culprit = overrides.iter().find(|o| at.starts_with(&o.dotted()));
                return Err(match culprit {
                    Some(o) => ConfigError::Env {
                        var: o.var.clone(),
                        message,
                    },
                    None => ConfigError::Env {
                        var: "PGBASTION_*".into(),
                        message,
                    },
                });
            };
            if message.starts_with("unknown field") {
                return Err(ConfigError::Env {
                    var: o.var.clone(),
                    message: format!("no such setting ({message})"),
                });
            }
            if o.as_string {
                return Err(ConfigError::Env {
                    var: o.var.clone(),
                    message: format!("bad value '{}' for {at}: {message}", o.raw),
                });
            }
            o.as_string = true;
            o.apply(&mut table);
        }
    }

    /// Refuses values of the right type that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
            if value == 0 {
                return Err(ConfigError::Value {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        let g = &self.gateway;
        positive("gateway.max_connections", g.max_connections as u64)?;
        positive(
            "gateway.max_client_message_bytes",
            g.max_client_message_bytes as u64,
        )?;
        positive("gateway.auth_timeout_secs", g.auth_timeout_secs)?;
        positive(
            "gateway.upstream_connect_timeout_secs",
            g.upstream_connect_timeout_secs,
        )?;
        positive("gateway.revocation_poll_millis", g.revocation_poll_millis)?;
        let r = &self.recording;
        positive(
            "recording.max_buffered_events",
            r.max_buffered_events as u64,
        )?;
        positive("recording.flush_interval_millis", r.flush_interval_millis)?;
        positive("recording.commit_timeout_millis", r.commit_timeout_millis)?;
        positive(
            "recording.retention_interval_secs",
            r.retention_interval_secs,
        )?;
        crate::record::capture::SecretPatterns::new(&r.secret_patterns).map_err(|message| {
            ConfigError::Value {
                key: "recording.secret_patterns",
                message,
            }
        })?;
        // A startup packet holds at least its length, the protocol version and a user name.
        if g.max_startup_packet_bytes < 64 {
            return Err(ConfigError::Value {
                key: "gateway.max_startup_packet_bytes",
                message: format!(
                    "{} is too small; use at least 64",
                    g.max_startup_packet_bytes
                ),
            });
        }
        if g.public_host.trim().is_empty() {
            return Err(ConfigError::Value {
                key: "gateway.public_host",
                message: "must not be empty (it goes into the connection strings people use)"
                    .into(),
            });
        }
        if g.tls_cert.is_some() != g.tls_key.is_some() {
            return Err(ConfigError::Value {
                key: "gateway.tls_cert",
                message: "set both gateway.tls_cert and gateway.tls_key, or neither".into(),
            });
        }
        self.validate_console()?;
        if let Some(metrics) = g.metrics_listen {
            let console = self.console.enabled.then_some(self.console.listen);
            if metrics == g.listen || Some(metrics) == console {
                return Err(ConfigError::Value {
                    key: "gateway.metrics_listen",
                    message: format!(
                        "{metrics} is already the gateway's or the console's address; the \
                         console serves /metrics itself, so leave this unset or pick another port"
                    ),
                });
            }
        }
        let c = &self.credentials;
        if c.default_lifetime_secs <= 0 {
            return Err(ConfigError::Value {
                key: "credentials.default_lifetime_secs",
                message: "must be greater than 0".into(),
            });
        }
        for (key, value) in [
            ("credentials.issuer", &c.issuer),
            ("credentials.audience", &c.audience),
        ] {
            if value.is_empty() {
                return Err(ConfigError::Value {
                    key,
                    message: "must not be empty".into(),
                });
            }
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Value {
                key: "log.format",
                message: format!(
                    "'{}' is not a log format; use text or json",
                    self.log.format
                ),
            });
        }
        let url = &self.store.url;
        if !(url.is_empty()
            || url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Value {
                key: "store.url",
                message: "use sqlite://PATH or postgres://..., or leave it empty for SQLite in \
                          the data directory"
                    .into(),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Value {
                key: "data_dir",
                message: "must not be empty".into(),
            });
        }
        Ok(())
    }
}

impl Config {
    fn validate_console(&self) -> Result<(), ConfigError> {
        let c = &self.console;
        for (key, value) in [
            ("console.session_idle_secs", c.session_idle_secs),
            ("console.session_absolute_secs", c.session_absolute_secs),
            ("console.login_max_failures", c.login_max_failures),
            ("console.login_lockout_secs", c.login_lockout_secs),
        ] {
            if value <= 0 {
                return Err(ConfigError::Value {
                    key,
                    message: "must be greater than 0".into(),
                });
            }
        }
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            return Err(ConfigError::Value {
                key: "console.tls_cert",
                message: "set both console.tls_cert and console.tls_key, or neither".into(),
            });
        }
        if !(c.public_url.is_empty()
            || c.public_url.starts_with("http://")
            || c.public_url.starts_with("https://"))
        {
            return Err(ConfigError::Value {
                key: "console.public_url",
                message: format!("'{}' is not an http:// or https:// URL", c.public_url),
            });
        }
        let o = &self.oidc;
        if !o.issuer_url.is_empty() {
            if !(o.issuer_url.starts_with("https://") || o.issuer_url.starts_with("http://")) {
                return Err(ConfigError::Value {
                    key: "oidc.issuer_url",
                    message: format!("'{}' is not an http(s) URL", o.issuer_url),
                });
            }
            if o.client_id.is_empty() {
                return Err(ConfigError::Value {
                    key: "oidc.client_id",
                    message: "must be set when oidc.issuer_url is".into(),
                });
            }
            let mapped = [
                &o.user_groups,
                &o.approver_groups,
                &o.auditor_groups,
                &o.admin_groups,
            ];
            if mapped.iter().all(|groups| groups.is_empty()) {
                return Err(ConfigError::Value {
                    key: "oidc.user_groups",
                    message: "no group maps to any console role, so nobody could sign in; set \
                              oidc.user_groups (and approver_groups, auditor_groups, \
                              admin_groups)"
                        .into(),
                });
            }
        }
        if !c.local_login && o.issuer_url.is_empty() && c.enabled {
            return Err(ConfigError::Value {
                key: "console.local_login",
                message: "with local sign-in off, set oidc.issuer_url, or nobody can sign in"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Reads and type-checks the file on its own, so that its mistakes are reported with the file, the
/// line and the key, before any environment override is mixed in.
fn load_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };

    let de = toml::Deserializer::parse(&text)
        .map_err(|e| invalid(format!("{}{}", line_of(&text, &e), e.message().trim_end())))?;
    if let Err(err) = serde_path_to_error::deserialize::<_, Config>(de) {
        let place = describe_key(&err.path().to_string());
        let inner = err.inner();
        return Err(invalid(format!(
            "{}{place}: {}",
            line_of(&text, inner),
            inner.message().trim_end()
        )));
    }
    text.parse::<toml::Table>()
        .map_err(|e| invalid(format!("{}{}", line_of(&text, &e), e.message().trim_end())))
}

/// Names a key the way the file spells it: `key 'listen' in [gateway]` rather than a path.
fn describe_key(path: &str) -> String {
    match path.rsplit_once('.') {
        Some((section, field)) => format!("key '{field}' in [{section}]"),
        None if path == "." || path.is_empty() => "top level".to_string(),
        None => format!("key '{path}'"),
    }
}

/// `line N, ` for an error with a position (toml's own Display spans several lines).
fn line_of(text: &str, err: &toml::de::Error) -> String {
    match err.span() {
        Some(span) => {
            let end = span.start.min(text.len());
            let line = text.as_bytes()[..end]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            format!("line {line}, ")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("pgbastion.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn trusted_proxies_are_ip_addresses_from_a_list_or_commas() {
        let config = Config::load(
            None,
            env(&[("PGBASTION_CONSOLE_TRUSTED_PROXIES", "10.0.0.2, ::1")]),
        )
        .unwrap();
        assert_eq!(
            config.console.trusted_proxies,
            vec![
                "10.0.0.2".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let err = Config::load(
            None,
            env(&[("PGBASTION_CONSOLE_TRUSTED_PROXIES", "10.0.0.2,proxy.local")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("PGBASTION_CONSOLE_TRUSTED_PROXIES"), "{err}");
        assert!(err.contains("'proxy.local' is not an IP address"), "{err}");
    }

    #[test]
    fn no_file_and_no_env_gives_defaults() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.store_url(), "sqlite://./pgbastion-data/pgbastion.db");
    }

    #[test]
    fn file_values_replace_defaults_and_others_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            r#"
data_dir = "/var/lib/pgbastion"
[gateway]
listen = "0.0.0.0:7432"
max_connections = 50
tls_cert = "/etc/pgbastion/gw.crt"
tls_key = "/etc/pgbastion/gw.key"
[log]
format = "json"
"#,
        );
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/pgbastion"));
        assert_eq!(config.gateway.listen, "0.0.0.0:7432".parse().unwrap());
        assert_eq!(config.gateway.max_connections, 50);
        assert_eq!(
            config.tls_cert_path(),
            PathBuf::from("/etc/pgbastion/gw.crt")
        );
        assert_eq!(config.log.format, "json");
        assert_eq!(config.gateway.auth_timeout_secs, 15);
        assert_eq!(config.credentials, CredentialConfig::default());
    }

    #[test]
    fn env_overrides_every_kind_of_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[gateway]\nmax_connections = 50\n");
        let config = Config::load(
            Some(&path),
            env(&[
                ("PGBASTION_CONFIG", "/ignored.toml"),
                ("PGBASTION_DATA_DIR", "/tmp/pgb"),
                ("PGBASTION_GATEWAY_LISTEN", "127.0.0.1:7000"),
                ("PGBASTION_GATEWAY_MAX_CONNECTIONS", "7"),
                ("PGBASTION_GATEWAY_TLS_CERT", "/c.pem"),
                ("PGBASTION_GATEWAY_TLS_KEY", "/k.pem"),
                ("PGBASTION_GATEWAY_METRICS_LISTEN", "127.0.0.1:9187"),
                ("PGBASTION_STORE_URL", "postgres://u@db/pgbastion"),
                ("PGBASTION_CREDENTIALS_DEFAULT_LIFETIME_SECS", "600"),
                // A string field whose value looks like a number stays a string.
                ("PGBASTION_CREDENTIALS_ISSUER", "1234"),
                ("PGBASTION_CONSOLE_LISTEN", "[::1]:8081"),
                ("PGBASTION_LOG_FORMAT", "json"),
                ("PGBASTION_LOG_FILTER", "debug,gateway=trace"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/pgb"));
        assert_eq!(config.gateway.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.gateway.max_connections, 7);
        assert_eq!(config.gateway.tls_cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(
            config.gateway.metrics_listen,
            Some("127.0.0.1:9187".parse().unwrap())
        );
        assert_eq!(config.store_url(), "postgres://u@db/pgbastion");
        assert_eq!(config.credentials.default_lifetime_secs, 600);
        assert_eq!(config.credentials.issuer, "1234");
        assert_eq!(config.console.listen, "[::1]:8081".parse().unwrap());
        assert_eq!(config.log.format, "json");
        assert_eq!(config.log.filter, "debug,gateway=trace");
    }

    #[test]
    fn secret_patterns_come_from_a_list_or_a_comma_separated_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "[recording]\nsecret_patterns = [\"*pin*\", \"iban\"]\n",
        );
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.recording.secret_patterns, ["*pin*", "iban"]);
        let config = Config::load(
            None,
            env(&[("PGBASTION_RECORDING_SECRET_PATTERNS", "*pin*, iban")]),
        )
        .unwrap();
        assert_eq!(config.recording.secret_patterns, ["*pin*", "iban"]);
        assert!(
            Config::load(None, env(&[]))
                .unwrap()
                .recording
                .secret_patterns
                .iter()
                .any(|p| p == "*password*")
        );
        let path = write(&dir, "[recording]\nsecret_patterns = [\"ok\", \" \"]\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("recording.secret_patterns"), "{err}");
    }

    #[test]
    fn shared_key_files_are_configurable_and_default_to_the_data_directory() {
        let config = Config::load(None, env(&[("PGBASTION_DATA_DIR", "/d")])).unwrap();
        assert_eq!(config.secret_key_path(), PathBuf::from("/d/secret.key"));
        assert_eq!(
            config.recording_key_path(),
            PathBuf::from("/d/recording.key")
        );
        assert!(config.recording.retired_public_keys.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "[recording]\nkey_file = \"/k/rec.key\"\nretired_public_keys = [\"/k/old1.pub\"]\n\
             [secrets]\nkey_file = \"/k/secret.key\"\n",
        );
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.recording_key_path(), PathBuf::from("/k/rec.key"));
        assert_eq!(config.secret_key_path(), PathBuf::from("/k/secret.key"));
        assert_eq!(
            config.recording.retired_public_keys,
            [PathBuf::from("/k/old1.pub")]
        );
        let config = Config::load(
            None,
            env(&[
                ("PGBASTION_SECRETS_KEY_FILE", "/e/secret.key"),
                (
                    "PGBASTION_RECORDING_RETIRED_PUBLIC_KEYS",
                    "/e/a.pub, /e/b.pub",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(config.secret_key_path(), PathBuf::from("/e/secret.key"));
        assert_eq!(
            config.recording.retired_public_keys,
            [PathBuf::from("/e/a.pub"), PathBuf::from("/e/b.pub")]
        );
    }

    #[test]
    fn unknown_key_in_file_names_the_file_the_line_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[gateway]\nlistn = \"0.0.0.0:1\"\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("[gateway]"), "{err}");
        assert!(err.contains("listn"), "{err}");
        assert!(
            err.contains("listen"),
            "the known keys are suggested: {err}"
        );
    }

    #[test]
    fn wrong_type_in_file_names_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "data_dir = \"x\"\n\n[gateway]\nmax_connections = \"lots\"\n",
        );
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("key 'max_connections' in [gateway]"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn toml_syntax_error_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "[gateway\n");
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("config file "), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = Config::load(Some(Path::new("/nonexistent/pgbastion.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read config file /nonexistent/pgbastion.toml"),
            "{err}"
        );
    }

    #[test]
    fn unknown_env_var_is_an_error_naming_it() {
        for var in ["PGBASTION_FOO", "PGBASTION_GATEWAY_LISTN", "PGBASTION_LOG"] {
            let err = Config::load(None, env(&[(var, "1")])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Env { var: v, .. } if v == var),
                "{var}: {err}"
            );
        }
    }

    #[test]
    fn wrong_type_in_env_names_the_variable() {
        let err = Config::load(None, env(&[("PGBASTION_GATEWAY_MAX_CONNECTIONS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("environment variable PGBASTION_GATEWAY_MAX_CONNECTIONS"),
            "{err}"
        );
        assert!(err.contains("many"), "{err}");
        let err = Config::load(None, env(&[("PGBASTION_GATEWAY_LISTEN", "nowhere")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PGBASTION_GATEWAY_LISTEN"), "{err}");
    }

    #[test]
    fn auditors_may_not_terminate_sessions_unless_configured() {
        let config = Config::load(None, env(&[])).unwrap();
        assert!(!config.console.auditors_can_terminate);
        let config = Config::load(
            None,
            env(&[("PGBASTION_CONSOLE_AUDITORS_CAN_TERMINATE", "true")]),
        )
        .unwrap();
        assert!(config.console.auditors_can_terminate);
    }

    #[test]
    fn impossible_values_are_refused_by_validate() {
        let cases = [
            (
                "PGBASTION_GATEWAY_MAX_CONNECTIONS",
                "0",
                "gateway.max_connections",
            ),
            (
                "PGBASTION_GATEWAY_AUTH_TIMEOUT_SECS",
                "0",
                "gateway.auth_timeout_secs",
            ),
            (
                "PGBASTION_CREDENTIALS_DEFAULT_LIFETIME_SECS",
                "-5",
                "credentials.default_lifetime_secs",
            ),
            ("PGBASTION_LOG_FORMAT", "xml", "log.format"),
            ("PGBASTION_STORE_URL", "mysql://x", "store.url"),
            (
                "PGBASTION_GATEWAY_TLS_CERT",
                "/only-cert.pem",
                "gateway.tls_cert",
            ),
            (
                "PGBASTION_RECORDING_RETENTION_INTERVAL_SECS",
                "0",
                "recording.retention_interval_secs",
            ),
            // The console's default address, which serves /metrics already.
            (
                "PGBASTION_GATEWAY_METRICS_LISTEN",
                "127.0.0.1:8080",
                "gateway.metrics_listen",
            ),
        ];
        for (var, value, key) in cases {
            let err = Config::load(None, env(&[(var, value)])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Value { key: k, .. } if *k == key),
                "{var}: {err}"
            );
        }
    }
}
