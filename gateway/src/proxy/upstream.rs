//! The gateway's own login to the target server, with credentials the person never sees.
//!
//! TLS modes: disable, require (encrypted, certificate not checked) and verify-full (checked
//! against the target's CA and host name). Authentication: trust, cleartext, md5, SCRAM-SHA-256
//! and SCRAM-SHA-256-PLUS (channel binding `tls-server-end-point` when TLS is on), using the
//! postgres-protocol crate's SCRAM and md5.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::framed::{ReadError, read_frame};
use crate::protocol::backend::{self, AuthRequest, ErrorFields};
use crate::protocol::{frontend, startup};
use crate::store::{Target, UpstreamTls};

/// A connection to the target: plain TCP or TLS.
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why the upstream login failed. The person sees a short version naming the target; the
/// session record keeps the detail.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("the server does not accept TLS, but the target's TLS mode is {0}")]
    TlsRefused(&'static str),
    #[error("TLS handshake with the server failed: {0}")]
    Tls(io::Error),
    #[error("target TLS configuration is invalid: {0}")]
    TlsConfig(String),
    #[error("the server refused the login: {severity} {code} {message}")]
    Refused {
        severity: String,
        code: String,
        message: String,
    },
    #[error(
        "the target has no upstream login for role '{0}' (add one with `pgbastion target login add`)"
    )]
    NoLogin(String),
    #[error("cannot read the store: {0}")]
    Store(String),
    #[error("cannot unseal the upstream secret: {0}")]
    Secret(String),
    #[error("the server asks for a password, but the target has no upstream secret")]
    NoSecret,
    #[error("the server asks for authentication method {0}, which pgbastion cannot answer")]
    UnsupportedAuth(String),
    #[error("SCRAM exchange failed: {0}")]
    Scram(io::Error),
    #[error("the server broke the protocol during login: {0}")]
    Protocol(#[from] ReadError),
}

/// A logged-in upstream session, ready to relay.
pub struct Upstream {
    pub stream: UpstreamStream,
    /// The server backend's cancel key.
    pub backend_key: Option<(i32, i32)>,
    /// Messages after AuthenticationOk (ParameterStatus, notices, ReadyForQuery) to pass on to
    /// the client, BackendKeyData left out (the gateway sends its own).
    pub welcome: BytesMut,
    /// Bytes the server sent after ReadyForQuery (normally none).
    pub leftover: BytesMut,
}

/// The largest message accepted from a server during login (ParameterStatus and notices).
const LOGIN_MESSAGE_LIMIT: usize = 1024 * 1024;

/// Opens the transport to the target, with TLS as its mode says.
pub async fn connect_transport(target: &Target) -> Result<UpstreamStream, UpstreamError> {
    let addr = format!("{}:{}", target.host, target.port);
    let mut tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
    // Small request/response messages: never wait to coalesce.
    let _ = tcp.set_nodelay(true);
    if target.tls_mode == UpstreamTls::Disable {
        return Ok(UpstreamStream::Plain(tcp));
    }
    tcp.write_all(&startup::encode_ssl_request())
        .await
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    if answer[0] != b'S' {
        return Err(UpstreamError::TlsRefused(target.tls_mode.as_str()));
    }
    let config = client_tls_config(target)?;
    let name = ServerName::try_from(target.host.clone()).map_err(|_| {
        UpstreamError::TlsConfig(format!("'{}' is not a valid host name", target.host))
    })?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(UpstreamError::Tls)?;
    Ok(UpstreamStream::Tls(Box::new(tls)))
}

fn client_tls_config(target: &Target) -> Result<Arc<rustls::ClientConfig>, UpstreamError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| UpstreamError::TlsConfig(e.to_string()))?;
    let config = match target.tls_mode {
        UpstreamTls::VerifyFull => {
            let pem = target.ca_pem.as_deref().ok_or_else(|| {
                UpstreamError::TlsConfig("verify-full needs the target's CA certificate".into())
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert =
                    cert.map_err(|e| UpstreamError::TlsConfig(format!("CA certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| UpstreamError::TlsConfig(format!("CA certificate: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `require` mode: the channel is encrypted but the certificate is not checked (as libpq's
/// sslmode=require). Handshake signatures are still verified.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

/// Connects to the target and logs in as `user` with `params` as the startup parameters.
pub async fn login(
    target: &Target,
    user: &str,
    secret: Option<&str>,
    params: &[(String, String)],
) -> Result<Upstream, UpstreamError> {
    let mut stream = connect_transport(target).await?;
    let mut out = BytesMut::from(&startup::encode_startup(params)[..]);
    send(&mut stream, &mut out).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramSha256> = None;
    let mut welcome = BytesMut::new();
    let mut backend_key = None;
    loop {
        let frame = read_frame(&mut stream, &mut buf, LOGIN_MESSAGE_LIMIT).await?;
        match frame.tag {
            backend::AUTHENTICATION => {
                match AuthRequest::parse(&frame.body).map_err(ReadError::from)? {
                    AuthRequest::Ok => {}
                    AuthRequest::CleartextPassword => {
                        frontend::password(&mut out, secret.ok_or(UpstreamError::NoSecret)?);
                        send(&mut stream, &mut out).await?;
                    }
                    AuthRequest::Md5Password { salt } => {
                        let secret = secret.ok_or(UpstreamError::NoSecret)?;
                        frontend::password(
                            &mut out,
                            &md5_hash(user.as_bytes(), secret.as_bytes(), salt),
                        );
                        send(&mut stream, &mut out).await?;
                    }
                    AuthRequest::Sasl { mechanisms } => {
                        let secret = secret.ok_or(UpstreamError::NoSecret)?;
                        let (mechanism, binding) = choose_scram(&stream, &mechanisms)?;
                        let exchange = ScramSha256::new(secret.as_bytes(), binding);
                        frontend::sasl_initial_response(&mut out, mechanism, exchange.message());
                        scram = Some(exchange);
                        send(&mut stream, &mut out).await?;
                    }
                    AuthRequest::SaslContinue { data } => {
                        let exchange = scram
                            .as_mut()
                            .ok_or(UpstreamError::UnsupportedAuth("SASL out of order".into()))?;
                        exchange.update(&data).map_err(UpstreamError::Scram)?;
                        frontend::sasl_response(&mut out, exchange.message());
                        send(&mut stream, &mut out).await?;
                    }
                    AuthRequest::SaslFinal { data } => {
                        let mut exchange = scram
                            .take()
                            .ok_or(UpstreamError::UnsupportedAuth("SASL out of order".into()))?;
                        // Proves the server knew the password too: a fake server is refused here.
                        exchange.finish(&data).map_err(UpstreamError::Scram)?;
                    }
                    AuthRequest::Unsupported(code) => {
                        return Err(UpstreamError::UnsupportedAuth(format!("code {code}")));
                    }
                }
            }
            backend::ERROR_RESPONSE => {
                let f = ErrorFields::parse(&frame.body);
                return Err(UpstreamError::Refused {
                    severity: f.severity,
                    code: f.code,
                    message: f.message,
                });
            }
            backend::BACKEND_KEY_DATA => {
                backend_key =
                    Some(backend::parse_backend_key_data(&frame.body).map_err(ReadError::from)?);
            }
            // The gateway asked for 3.0 and no options; a server answering this is still fine.
            backend::NEGOTIATE_PROTOCOL_VERSION => {}
            tag => {
                backend::put_message(&mut welcome, tag, |b| b.extend_from_slice(&frame.body));
                if tag == backend::READY_FOR_QUERY {
                    return Ok(Upstream {
                        stream,
                        backend_key,
                        welcome,
                        leftover: buf,
                    });
                }
            }
        }
    }
}

fn choose_scram(
    stream: &UpstreamStream,
    mechanisms: &[String],
) -> Result<(&'static str, ChannelBinding), UpstreamError> {
    let offers = |m: &str| mechanisms.iter().any(|x| x == m);
    match stream {
        UpstreamStream::Tls(tls) => {
            let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            if let Some(cert) = cert.filter(|_| offers("SCRAM-SHA-256-PLUS")) {
                return Ok((
                    "SCRAM-SHA-256-PLUS",
                    ChannelBinding::tls_server_end_point(end_point_hash(cert)),
                ));
            }
            if offers("SCRAM-SHA-256") {
                return Ok(("SCRAM-SHA-256", ChannelBinding::unrequested()));
            }
        }
        UpstreamStream::Plain(_) => {
            if offers("SCRAM-SHA-256") {
                return Ok(("SCRAM-SHA-256", ChannelBinding::unsupported()));
            }
        }
    }
    Err(UpstreamError::UnsupportedAuth(format!(
        "SASL {}",
        mechanisms.join(", ")
    )))
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash function,
/// SHA-256 for MD5 and SHA-1 (and for anything unknown).
fn end_point_hash(cert: &CertificateDer<'_>) -> Vec<u8> {
    const SHA384: [&str; 2] = ["1.2.840.113549.1.1.12", "1.2.840.10045.4.3.3"];
    const SHA512: [&str; 2] = ["1.2.840.113549.1.1.13", "1.2.840.10045.4.3.4"];
    let oid = x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, c)| c.signature_algorithm.algorithm.to_id_string())
        .unwrap_or_default();
    if SHA384.contains(&oid.as_str()) {
        sha2::Sha384::digest(cert.as_ref()).to_vec()
    } else if SHA512.contains(&oid.as_str()) {
        sha2::Sha512::digest(cert.as_ref()).to_vec()
    } else {
        sha2::Sha256::digest(cert.as_ref()).to_vec()
    }
}

async fn send(stream: &mut UpstreamStream, out: &mut BytesMut) -> Result<(), UpstreamError> {
    stream
        .write_all(out)
        .await
        .map_err(|e| UpstreamError::Protocol(ReadError::Io(e)))?;
    stream
        .flush()
        .await
        .map_err(|e| UpstreamError::Protocol(ReadError::Io(e)))?;
    out.clear();
    Ok(())
}

/// Sends a CancelRequest for `key` to the target's server (over TLS when the target uses TLS).
pub async fn cancel(target: &Target, key: (i32, i32)) -> Result<(), UpstreamError> {
    let mut stream = connect_transport(target).await?;
    let packet = startup::encode_cancel(key.0, key.1);
    stream
        .write_all(&packet)
        .await
        .map_err(|e| UpstreamError::Protocol(ReadError::Io(e)))?;
    stream
        .flush()
        .await
        .map_err(|e| UpstreamError::Protocol(ReadError::Io(e)))?;
    // The server closes the connection when it has handled the request.
    let mut sink = [0u8; 16];
    let _ = stream.read(&mut sink).await;
    Ok(())
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
