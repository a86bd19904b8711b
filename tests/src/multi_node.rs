//! Several pgbastion processes on one store, as a deployment past one machine runs them:
//! gateways (`serve --role gateway`) and consoles (`serve --role console`), each with its own
//! data directory and ports, sharing the key files of one directory.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use gateway::store::{Session, Store};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{CancelToken, Client};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::clients::{install_crypto_provider, tls_config, tokio_postgres_connect_with};
use crate::process::port_open;
use crate::{Bastion, ChildGuard, TestCa};

/// How long a process may take to listen, or to refuse to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings that make a process use the key files in `keys_dir`, as every process of a
/// deployment must.
pub fn shared_key_env(keys_dir: &Path) -> Vec<(String, String)> {
    [
        ("PGBASTION_CREDENTIALS_SIGNING_KEY", "signing.key"),
        ("PGBASTION_RECORDING_KEY_FILE", "recording.key"),
        ("PGBASTION_SECRETS_KEY_FILE", "secret.key"),
    ]
    .into_iter()
    .map(|(var, file)| (var.to_owned(), keys_dir.join(file).display().to_string()))
    .collect()
}

/// A bastion (its own data directory and ports) on the store at `store_url`, with the shared
/// keys of `keys_dir` and `extra` settings.
pub fn node(store_url: &str, keys_dir: &Path, extra: &[(&str, &str)]) -> anyhow::Result<Bastion> {
    let mut bastion = Bastion::new()?;
    bastion.set_env("PGBASTION_STORE_URL", store_url);
    for (var, value) in shared_key_env(keys_dir) {
        bastion.set_env(&var, &value);
    }
    for (var, value) in extra {
        bastion.set_env(var, value);
    }
    Ok(bastion)
}

/// Starts `pgbastion serve --role ROLE` (output appended to the bastion's log) and waits until
/// it listens: on the gateway port, or for `console`, the console port.
pub fn serve_role(bastion: &Bastion, role: &str) -> anyhow::Result<ChildGuard> {
    let mut guard = spawn_role(bastion, role)?;
    let addr = if role == "console" {
        bastion.console_addr()
    } else {
        bastion.gateway_addr()
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = guard.try_wait()? {
            bail!(
                "serve --role {role} exited ({status}) before listening; log:\n{}",
                bastion.log()
            );
        }
        if port_open(addr) {
            return Ok(guard);
        }
        ensure!(
            Instant::now() < deadline,
            "serve --role {role} did not listen on {addr} within {START_TIMEOUT:?}; log:\n{}",
            bastion.log()
        );
        sleep(Duration::from_millis(50));
    }
}

/// Starts `pgbastion serve --role ROLE` expecting it to refuse: fails if it listens or runs on
/// past the timeout, else returns its log.
pub fn serve_refused(bastion: &Bastion, role: &str) -> anyhow::Result<String> {
    let mut guard = spawn_role(bastion, role)?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = guard.try_wait()? {
            ensure!(!status.success(), "serve --role {role} exited successfully");
            return Ok(bastion.log());
        }
        ensure!(
            !port_open(bastion.gateway_addr()) && Instant::now() < deadline,
            "serve --role {role} started instead of refusing; log:\n{}",
            bastion.log()
        );
        sleep(Duration::from_millis(50));
    }
}

fn spawn_role(bastion: &Bastion, role: &str) -> anyhow::Result<ChildGuard> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(bastion.log_path())
        .with_context(|| format!("cannot open {}", bastion.log_path().display()))?;
    let child = bastion
        .command(&["serve", "--role", role])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start pgbastion serve")?;
    Ok(ChildGuard::new(
        format!("pgbastion serve --role {role}"),
        child,
    ))
}

/// Adds a local console account (`user add LOGIN ROLE_ARGS --password-stdin`).
pub fn add_local_account(
    bastion: &Bastion,
    login: &str,
    role_args: &[&str],
    password: &str,
) -> anyhow::Result<()> {
    let mut args = vec!["user", "add", login];
    args.extend_from_slice(role_args);
    args.push("--password-stdin");
    let mut child = bastion
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run pgbastion {args:?}"))?;
    child
        .stdin
        .take()
        .context("piped stdin")?
        .write_all(password.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "pgbastion {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Connects as `user` with `token` to the gateway of `bastion`, naming the session
/// `application_name` so that it can be found in the store.
pub async fn connect(
    bastion: &Bastion,
    user: &str,
    target: &str,
    token: &str,
    application_name: &str,
) -> anyhow::Result<Client> {
    let conn = format!(
        "host=127.0.0.1 port={} user={user} dbname={target} password={token} sslmode=require \
         application_name={application_name}",
        bastion.gateway_port
    );
    let (client, _task) = tokio_postgres_connect_with(&conn, tls_config(None, None)?).await?;
    Ok(client)
}

/// The live session named `application_name`, once a gateway has stored it.
pub async fn live_session(store: &dyn Store, application_name: &str) -> anyhow::Result<Session> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = store.list_sessions(100).await?.into_iter().find(|s| {
            s.ended_at.is_none() && s.application_name.as_deref() == Some(application_name)
        });
        match found {
            Some(session) => return Ok(session),
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => bail!("no live session named {application_name} within 10 s"),
        }
    }
}

/// `pqcomm.h`: the codes of the SSLRequest and the CancelRequest.
const SSL_REQUEST_CODE: i32 = 80_877_103;
const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// The (process id, secret key) that `token` sends with its CancelRequest. tokio-postgres keeps
/// them to itself, so they are read by standing in for the server the token would cancel at:
/// the token's own SSLRequest, TLS and CancelRequest, over an in-memory pipe.
pub async fn cancel_key(token: &CancelToken) -> anyhow::Result<(i32, i32)> {
    let (client_end, server_end) = tokio::io::duplex(16 * 1024);
    let tls = MakeTlsConnect::<tokio::io::DuplexStream>::make_tls_connect(
        &mut MakeRustlsConnect::new(tls_config(None, None)?),
        "localhost",
    )?;
    let (sent, read) = tokio::join!(
        token.cancel_query_raw(client_end, tls),
        read_cancel_request(server_end)
    );
    sent.context("the cancel token could not send to the stand-in server")?;
    read
}

/// The server's side of [`cancel_key`]: 'S' to the SSLRequest, TLS, then the 16 bytes.
async fn read_cancel_request(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
) -> anyhow::Result<(i32, i32)> {
    let mut ssl_request = [0u8; 8];
    stream.read_exact(&mut ssl_request).await?;
    ensure!(
        ssl_request[4..] == SSL_REQUEST_CODE.to_be_bytes(),
        "not an SSLRequest: {ssl_request:?}"
    );
    stream.write_all(b"S").await?;
    let cert = TestCa::new("stand-in CA")?.server_cert(&["localhost"])?;
    install_crypto_provider();
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?,
        )?;
    // The token hangs up as soon as it has sent: session tickets written after its Finished
    // would find the pipe closed.
    config.send_tls13_tickets = 0;
    let mut tls = TlsAcceptor::from(Arc::new(config)).accept(stream).await?;
    let mut packet = [0u8; 16];
    tls.read_exact(&mut packet).await?;
    // To the token's close_notify: the token fails if its close finds no one there.
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await?;
    ensure!(rest.is_empty(), "more than a CancelRequest: {rest:?}");
    let field = |i: usize| i32::from_be_bytes(packet[i..i + 4].try_into().expect("4 bytes"));
    ensure!(
        field(0) == 16 && field(4) == CANCEL_REQUEST_CODE,
        "not a CancelRequest: {packet:?}"
    );
    Ok((field(8), field(12)))
}

/// Sends a CancelRequest for the key to the gateway at `addr` as libpq does: on a connection of
/// its own, in TLS after an SSLRequest. The gateway answers nothing and closes.
pub async fn send_cancel(addr: SocketAddr, key: (i32, i32)) -> anyhow::Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut ssl_request = 8i32.to_be_bytes().to_vec();
    ssl_request.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    tcp.write_all(&ssl_request).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    ensure!(answer == *b"S", "the gateway refused TLS: {answer:?}");
    let connector = TlsConnector::from(Arc::new(tls_config(None, None)?));
    let mut tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let mut packet = Vec::with_capacity(16);
    for field in [16, CANCEL_REQUEST_CODE, key.0, key.1] {
        packet.extend_from_slice(&field.to_be_bytes());
    }
    tls.write_all(&packet).await?;
    tls.flush().await?;
    // Read to the gateway's close (an end without close_notify is an error to rustls, and fine).
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    ensure!(
        answer.is_empty(),
        "a cancel request was answered: {answer:?}"
    );
    Ok(())
}

/// Cancels with tokio-postgres' own `token`, sent to the gateway at `addr` instead of the one
/// the session is on (what a load balancer does to a client's cancel connection).
pub async fn cancel_at(token: &CancelToken, addr: SocketAddr) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    let tls = MakeTlsConnect::<TcpStream>::make_tls_connect(
        &mut MakeRustlsConnect::new(tls_config(None, None)?),
        "localhost",
    )?;
    token.cancel_query_raw(tcp, tls).await?;
    Ok(())
}

/// The value of the counter `series` (name and labels as the exposition writes them, e.g.
/// `pgbastion_cancel_requests_total{step="applied"}`) at the metrics listener `addr`.
pub async fn counter(addr: SocketAddr, series: &str) -> anyhow::Result<f64> {
    let body = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .with_context(|| format!("no {series} in /metrics:\n{body}"))?
        .trim()
        .parse()
        .with_context(|| format!("{series} is not a number"))
}
