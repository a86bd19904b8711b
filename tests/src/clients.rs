//! Clients as the gateway's users would run them: tokio-postgres over rustls, and psql.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Once};

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the spawned connection task returns: how the session ended.
pub type ConnectionTask = JoinHandle<Result<(), tokio_postgres::Error>>;

/// Installs ring as the process's rustls provider, once. Code that calls
/// `ClientConfig::builder()` (not only ours) needs one; losing the race to another
/// installer is fine.
pub fn install_crypto_provider() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration: trusting only `ca_pem` (and checking the host name), or,
/// with `None`, any certificate at all (libpq's `sslmode=require`). `client_cert` is a
/// (certificate PEM, key PEM) pair to present, for the `cert` method.
pub fn tls_config(
    ca_pem: Option<&str>,
    client_cert: Option<(&str, &str)>,
) -> anyhow::Result<ClientConfig> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.context("CA PEM")?)
                    .context("CA certificate")?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider))),
    };
    match client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .context("client certificate PEM")?;
            let key =
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("client key PEM")?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate")
        }
    }
}

/// Connects with tokio-postgres (TLS as `conn_str`'s `sslmode` asks, verified against
/// `ca_pem` when given) and spawns the connection task, which the caller may await to see how
/// the session ended. Needs a tokio runtime.
pub async fn tokio_postgres_connect(
    conn_str: &str,
    ca_pem: Option<&str>,
) -> anyhow::Result<(Client, ConnectionTask)> {
    tokio_postgres_connect_with(conn_str, tls_config(ca_pem, None)?).await
}

/// [`tokio_postgres_connect`] with a TLS configuration of the caller's, e.g. from
/// [`tls_config`] with a client certificate.
pub async fn tokio_postgres_connect_with(
    conn_str: &str,
    tls: ClientConfig,
) -> anyhow::Result<(Client, ConnectionTask)> {
    let (client, connection) = tokio_postgres::connect(conn_str, MakeRustlsConnect::new(tls))
        .await
        .with_context(|| format!("cannot connect with {}", redact(conn_str)))?;
    Ok((client, tokio::spawn(connection)))
}

/// Runs `psql -XAt -v ON_ERROR_STOP=1 -d CONN_URI` with the SQL on stdin; `env` adds libpq
/// variables such as `PGSSLMODE`, `PGSSLROOTCERT` or `PGPASSWORD`. Returns the output whatever
/// the exit status, so tests can check failures too.
pub fn psql(conn_uri: &str, sql: &str) -> anyhow::Result<Output> {
    psql_with_env(conn_uri, sql, &[])
}

pub fn psql_with_env(conn_uri: &str, sql: &str, env: &[(&str, &str)]) -> anyhow::Result<Output> {
    use std::io::Write;

    let mut command = Command::new(psql_path());
    command
        .args(["-XAt", "-v", "ON_ERROR_STOP=1", "-d", conn_uri, "-f", "-"])
        // A test must never wait on a password prompt.
        .arg("--no-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The surrounding environment must not change what a test connects to.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().context("cannot run psql")?;
    let mut stdin = child.stdin.take().context("psql stdin")?;
    let script = sql.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&script));
    let output = child.wait_with_output().context("waiting for psql")?;
    // psql stops reading at the first error; a broken pipe then says nothing new.
    let _ = writer.join();
    Ok(output)
}

/// The psql of the server's own version when there is one, else Debian's wrapper.
fn psql_path() -> std::path::PathBuf {
    crate::pg::postgres_bin_dir()
        .map(|bin| bin.join("psql"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| Path::new("/usr/bin/psql").to_path_buf())
}

/// The connection string without its password, for error messages. Handles both forms:
/// `postgres://user:PASSWORD@host/db` and `... password=PASSWORD ...`.
fn redact(conn_str: &str) -> String {
    if let Some((scheme, rest)) = conn_str.split_once("://") {
        if let Some((userinfo, host_and_more)) = rest.split_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host_and_more}");
        }
        return conn_str.to_owned();
    }
    conn_str
        .split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Accepts any server certificate (no chain, no name check), as libpq's `sslmode=require`
/// does, but still checks the handshake signatures, so the server must hold the key of the
/// certificate it sent.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
