//! The client's side of the startup phase: encryption negotiation, TLS, the StartupMessage.
//!
//! Accepted: SSLRequest then TLS, and PostgreSQL 17 direct TLS (ALPN `postgresql`). GSSENCRequest
//! is answered 'N' (the client may then ask for TLS). Plaintext sessions are refused with an
//! error the user can act on; CancelRequests are accepted in plaintext and under TLS.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::protocol::ProtocolError;
use crate::protocol::backend::ErrorMessage;
use crate::protocol::startup::{self, StartupMessage, StartupPacket, TLS_HANDSHAKE_BYTE};

pub type ClientStream = TlsStream<TcpStream>;

/// What the client asked for.
pub enum Opening {
    /// A session over TLS.
    Session {
        stream: Box<ClientStream>,
        startup: StartupMessage,
    },
    /// A request to cancel the running query of a session.
    Cancel { process_id: i32, secret_key: i32 },
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("direct TLS without ALPN 'postgresql'")]
    NoAlpn,
    #[error("client asked for a session without TLS")]
    Plaintext,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the startup phase on a fresh connection.
pub async fn open(
    mut tcp: TcpStream,
    tls: &Arc<rustls::ServerConfig>,
    max_startup: usize,
) -> Result<Opening, HandshakeError> {
    let acceptor = TlsAcceptor::from(tls.clone());
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE_BYTE {
        let stream = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
        // Without ALPN the client is not a PostgreSQL 17 client speaking direct TLS (maybe a
        // web browser or a misdirected TLS client): PostgreSQL refuses these too.
        if stream.get_ref().1.alpn_protocol() != Some(b"postgresql".as_slice()) {
            return Err(HandshakeError::NoAlpn);
        }
        return inside_tls(Box::new(stream), max_startup).await;
    }
    loop {
        match read_packet(&mut tcp, max_startup).await? {
            StartupPacket::SslRequest => {
                tcp.write_all(b"S").await?;
                let stream = acceptor.accept(tcp).await.map_err(HandshakeError::Tls)?;
                return inside_tls(Box::new(stream), max_startup).await;
            }
            StartupPacket::GssEncRequest => tcp.write_all(b"N").await?,
            StartupPacket::CancelRequest {
                process_id,
                secret_key,
            } => {
                return Ok(Opening::Cancel {
                    process_id,
                    secret_key,
                });
            }
            StartupPacket::Startup(_) => {
                let mut out = BytesMut::new();
                ErrorMessage::fatal("28000", "pgbastion accepts connections only over TLS")
                    .with_hint(
                        "connect with sslmode=require (or verify-full with the gateway's CA)",
                    )
                    .encode(&mut out);
                tcp.write_all(&out).await?;
                return Err(HandshakeError::Plaintext);
            }
        }
    }
}

async fn inside_tls(
    mut stream: Box<ClientStream>,
    max_startup: usize,
) -> Result<Opening, HandshakeError> {
    match read_packet(&mut stream, max_startup).await? {
        StartupPacket::Startup(startup) => Ok(Opening::Session { stream, startup }),
        StartupPacket::CancelRequest {
            process_id,
            secret_key,
        } => Ok(Opening::Cancel {
            process_id,
            secret_key,
        }),
        StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
            Err(ProtocolError::BadStartup("encryption requested twice").into())
        }
    }
}

/// Reads one startup packet, checking its length before reading the rest.
pub async fn read_packet<S>(stream: &mut S, max_len: usize) -> Result<StartupPacket, HandshakeError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let body_len = startup::body_len(len, max_len)?;
    let mut body = vec![0u8; body_len];
    stream.read_exact(&mut body).await?;
    Ok(startup::decode(&body)?)
}

/// Sends a FATAL error to a client and closes its stream (best effort: it may be gone).
pub async fn refuse<S>(stream: &mut S, error: &ErrorMessage)
where
    S: AsyncWrite + Unpin + ?Sized,
{
    let mut out = BytesMut::new();
    error.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// "TLSv1.3" style name of the negotiated protocol version.
pub fn tls_version(stream: &ClientStream) -> Option<String> {
    stream.get_ref().1.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    })
}
