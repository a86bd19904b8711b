//! The gateway under hostile input: malformed startup packets, broken TLS, bad password
//! messages, forged and misused tokens, stalling clients, floods and stray cancel requests,
//! against the real `pgbastion` binary in front of a real PostgreSQL cluster.
//!
//! Every test asserts a precise outcome (an ErrorResponse with its SQLSTATE and message, or a
//! close within a time bound), then that a normal session still works and that the gateway
//! never panicked.

use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use harness::clients::{tls_config, tokio_postgres_connect_with};
use harness::pg::{self, PgCluster};
use harness::{Bastion, ChildGuard};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const PERSON: &str = "alice";
const TARGET: &str = "shop";
/// A second target alice may use, for tokens presented at the wrong one.
const OTHER_TARGET: &str = "warehouse";
/// The upstream login and the granted role.
const ROLE: &str = pg::SCRAM_USER;
/// A role narrower than the upstream login, for the tests of role confinement.
const NARROW_ROLE: &str = "app_ro";
/// The gateway's default `max_startup_packet_bytes`.
const MAX_STARTUP: i32 = 10_000;
/// `max_client_message_bytes` of every lab: 1 MiB.
const MAX_CLIENT_MESSAGE: usize = 1024 * 1024;
/// How long the gateway may take to close a connection whose input it can judge at once.
const QUICKLY: Duration = Duration::from_secs(2);
/// How long to wait for an answer the gateway owes us.
const REPLY: Duration = Duration::from_secs(10);

/// `pqcomm.h` codes.
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;
const CANCEL_REQUEST: i32 = 80_877_102;
const PROTOCOL_3_0: i32 = 196_608;

// ---------------------------------------------------------------------------------------------
// The lab: a cluster, a bastion in front of it, alice with a grant and a token.
// ---------------------------------------------------------------------------------------------

struct Lab {
    pg: PgCluster,
    bastion: Bastion,
    _gateway: ChildGuard,
    /// A valid token for alice on [`TARGET`] as [`ROLE`].
    token: String,
}

impl Lab {
    /// Starts everything; `env` adds gateway settings to the lab's own.
    fn start(env: &[(&str, &str)]) -> anyhow::Result<Lab> {
        let pg = PgCluster::start()?;
        let limit = MAX_CLIENT_MESSAGE.to_string();
        let mut bastion =
            Bastion::with_env(&[("PGBASTION_GATEWAY_MAX_CLIENT_MESSAGE_BYTES", &limit)])?;
        for (name, value) in env {
            bastion.set_env(name, value);
        }
        bastion.cli_ok(&["person", "add", PERSON])?;
        let port = pg.port().to_string();
        for target in [TARGET, OTHER_TARGET] {
            let out = bastion
                .command(&[
                    "target",
                    "add",
                    target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port,
                    "--database",
                    pg::APP_DB,
                    "--user",
                    ROLE,
                    "--tls",
                    "disable",
                    "--password-env",
                    "UPSTREAM_SECRET",
                ])
                .env("UPSTREAM_SECRET", PgCluster::password(ROLE))
                .output()?;
            ensure!(
                out.status.success(),
                "target add failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            bastion.cli_ok(&[
                "grant", "add", "--target", target, "--person", PERSON, "--role", ROLE,
            ])?;
        }
        let gateway = bastion.serve()?;
        let mut lab = Lab {
            pg,
            bastion,
            _gateway: gateway,
            token: String::new(),
        };
        lab.token = lab.issue(TARGET, &[])?["token"]
            .as_str()
            .context("token")?
            .to_owned();
        Ok(lab)
    }

    /// `token issue --format json` for alice on `target`.
    fn issue(&self, target: &str, extra: &[&str]) -> anyhow::Result<Value> {
        self.issue_for_role(target, ROLE, extra)
    }

    fn issue_for_role(&self, target: &str, role: &str, extra: &[&str]) -> anyhow::Result<Value> {
        let mut args = vec![
            "token", "issue", "--person", PERSON, "--target", target, "--role", role, "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = self.bastion.cli_ok(&args)?;
        serde_json::from_str(out.trim()).with_context(|| format!("token issue printed {out}"))
    }

    /// Creates [`NARROW_ROLE`], a role the upstream login may `SET ROLE` to (as it must for the
    /// gateway to use it), grants it to alice on [`TARGET`], and returns a token for it.
    fn narrow_role_token(&self) -> anyhow::Result<String> {
        self.pg.psql(
            pg::APP_DB,
            &format!(
                "CREATE ROLE {NARROW_ROLE} LOGIN PASSWORD 'narrow-secret'; \
                 GRANT {NARROW_ROLE} TO {ROLE}; GRANT SELECT ON items TO {NARROW_ROLE}"
            ),
        )?;
        // Sessions run upstream as the granted role itself, so the target needs its login.
        let out = self
            .bastion
            .command(&[
                "target",
                "login",
                "add",
                TARGET,
                NARROW_ROLE,
                "--password-env",
                "ROLE_SECRET",
            ])
            .env("ROLE_SECRET", "narrow-secret")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.bastion.cli_ok(&[
            "grant",
            "add",
            "--target",
            TARGET,
            "--person",
            PERSON,
            "--role",
            NARROW_ROLE,
        ])?;
        let issued = self.issue_for_role(TARGET, NARROW_ROLE, &[])?;
        Ok(issued["token"].as_str().context("token")?.to_owned())
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.bastion.gateway_addr()
    }

    async fn tcp(&self) -> anyhow::Result<TcpStream> {
        let tcp = TcpStream::connect(self.addr()).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }

    /// SSLRequest, 'S', then a TLS handshake (no ALPN, as libpq before 17).
    async fn tls(&self) -> anyhow::Result<Tls> {
        let mut tcp = self.tcp().await?;
        tcp.write_all(&packet(SSL_REQUEST, &[])).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        ensure!(answer == *b"S", "SSLRequest answered {answer:?}");
        Ok(tls_handshake(tcp, None).await?)
    }

    /// A TLS session up to the password request: SSLRequest, TLS, StartupMessage, then
    /// AuthenticationCleartextPassword read.
    async fn at_password_prompt(&self, user: &str, database: &str) -> anyhow::Result<Tls> {
        self.prompt_with(&[("user", user), ("database", database)])
            .await
    }

    /// [`Lab::at_password_prompt`] with any startup parameters.
    async fn prompt_with(&self, params: &[(&str, &str)]) -> anyhow::Result<Tls> {
        let mut tls = self.tls().await?;
        tls.write_all(&startup(params)).await?;
        expect_password_request(&mut tls).await?;
        Ok(tls)
    }

    /// A raw login with `password`: the messages up to ReadyForQuery, or the error that ended it.
    async fn login(
        &self,
        user: &str,
        database: &str,
        password: &str,
    ) -> anyhow::Result<Result<(Tls, Vec<Msg>), PgError>> {
        self.login_with(&[("user", user), ("database", database)], password)
            .await
    }

    /// [`Lab::login`] with any startup parameters.
    async fn login_with(
        &self,
        params: &[(&str, &str)],
        password: &str,
    ) -> anyhow::Result<Result<(Tls, Vec<Msg>), PgError>> {
        let mut tls = self.prompt_with(params).await?;
        tls.write_all(&password_message(password)).await?;
        Ok(match read_until_ready(&mut tls).await? {
            Ok(msgs) => Ok((tls, msgs)),
            Err(e) => Err(e),
        })
    }

    /// The error a raw login with `password` ends with; fails if it succeeds.
    async fn refusal(&self, user: &str, database: &str, password: &str) -> anyhow::Result<PgError> {
        match self.login(user, database, password).await? {
            Ok(_) => bail!("the gateway let {user} into {database} with {password:.40}"),
            Err(e) => Ok(e),
        }
    }

    /// A raw session logged in with the lab's token, and its BackendKeyData.
    async fn raw_session(&self) -> anyhow::Result<(Tls, (i32, i32))> {
        let (tls, msgs) = self
            .login(PERSON, TARGET, &self.token)
            .await?
            .map_err(|e| anyhow!("login refused: {e}"))?;
        let key = msgs
            .iter()
            .find(|m| m.tag == b'K')
            .context("no BackendKeyData")?;
        ensure!(
            key.body.len() == 8,
            "BackendKeyData of {} bytes",
            key.body.len()
        );
        let pid = i32::from_be_bytes(key.body[..4].try_into()?);
        let secret = i32::from_be_bytes(key.body[4..].try_into()?);
        Ok((tls, (pid, secret)))
    }

    fn conn_str(&self, token: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={PERSON} dbname={TARGET} password={token} \
             sslmode=require application_name=hostile connect_timeout=10",
            self.bastion.gateway_port
        )
    }

    /// A tokio-postgres session through the gateway with the lab's token.
    async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, _task) =
            tokio_postgres_connect_with(&self.conn_str(&self.token), tls_config(None, None)?)
                .await?;
        Ok(client)
    }

    /// A fresh session answers `select 1`.
    async fn assert_session_works(&self) -> anyhow::Result<()> {
        let client = self.client().await.context("a normal session")?;
        let one: i32 = client.query_one("select 1", &[]).await?.get(0);
        ensure!(one == 1);
        Ok(())
    }

    /// The end of every test: a normal session still works and the gateway never panicked.
    async fn assert_healthy(&self) -> anyhow::Result<()> {
        self.assert_session_works().await?;
        self.assert_no_panic()
    }

    fn assert_no_panic(&self) -> anyhow::Result<()> {
        let log = self.bastion.log();
        ensure!(!log.contains("panicked"), "the gateway panicked:\n{log}");
        Ok(())
    }

    /// [`Lab::client`], retried for a few seconds while the gateway is full: a session's slot
    /// is free only once the gateway has seen the session end.
    async fn client_once_a_slot_is_free(&self) -> anyhow::Result<tokio_postgres::Client> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.client().await {
                Ok(client) => return Ok(client),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(e.context("no slot became free")),
            }
        }
    }

    /// [`Lab::assert_healthy`] for a gateway that was full.
    async fn assert_healthy_once_a_slot_is_free(&self) -> anyhow::Result<()> {
        let client = self.client_once_a_slot_is_free().await?;
        let one: i32 = client.query_one("select 1", &[]).await?.get(0);
        ensure!(one == 1);
        self.assert_no_panic()
    }
}

// ---------------------------------------------------------------------------------------------
// The wire, by hand.
// ---------------------------------------------------------------------------------------------

type Tls = TlsStream<TcpStream>;

/// A TLS handshake over `tcp`, accepting any server certificate, offering `alpn` if given.
async fn tls_handshake(tcp: TcpStream, alpn: Option<&[u8]>) -> io::Result<Tls> {
    let mut config = tls_config(None, None).map_err(io::Error::other)?;
    config.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
    let connector = TlsConnector::from(std::sync::Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").map_err(io::Error::other)?;
    connector.connect(name, tcp).await
}

/// An untagged startup-phase packet: length, code, body.
fn packet(code: i32, body: &[u8]) -> Vec<u8> {
    let len = 8 + body.len() as i32;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A protocol 3.0 StartupMessage.
fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in params {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    packet(PROTOCOL_3_0, &body)
}

/// A tagged message: tag, length (counting itself), body.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A tagged message header with any length at all.
fn header(tag: u8, len: i32) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&len.to_be_bytes());
    out
}

fn password_message(password: &str) -> Vec<u8> {
    let mut body = password.as_bytes().to_vec();
    body.push(0);
    message(b'p', &body)
}

fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

#[derive(Debug, Clone)]
struct Msg {
    tag: u8,
    body: Vec<u8>,
}

/// The fields of an ErrorResponse that a client acts on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PgError {
    severity: String,
    code: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl PgError {
    fn parse(body: &[u8]) -> PgError {
        let mut e = PgError::default();
        let mut rest = body;
        while let Some((&field, tail)) = rest.split_first() {
            if field == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            let value = String::from_utf8_lossy(&tail[..end]).into_owned();
            rest = tail.get(end + 1..).unwrap_or_default();
            match field {
                b'V' => e.severity = value,
                b'S' if e.severity.is_empty() => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                b'D' => e.detail = Some(value),
                b'H' => e.hint = Some(value),
                _ => {}
            }
        }
        e
    }

    /// Checks severity, SQLSTATE and a fragment of the message.
    fn assert_is(&self, severity: &str, code: &str, fragment: &str) {
        assert_eq!(
            (self.severity.as_str(), self.code.as_str()),
            (severity, code),
            "{self}"
        );
        assert!(
            self.message.contains(fragment),
            "message lacks {fragment:?}: {self}"
        );
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// One tagged message, or `None` if the stream ends (cleanly or not) before a new one.
async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<Option<Msg>> {
    let read = async {
        let mut head = [0u8; 5];
        match s.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if is_closed(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        ensure!(
            (4..1 << 24).contains(&len),
            "server message '{}' with length {len}",
            head[0].escape_ascii()
        );
        let mut body = vec![0u8; len as usize - 4];
        s.read_exact(&mut body).await?;
        Ok(Some(Msg { tag: head[0], body }))
    };
    tokio::time::timeout(REPLY, read)
        .await
        .map_err(|_| anyhow!("no message from the gateway within {REPLY:?}"))?
}

/// The ways a peer that went away shows up on a read.
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// The next message must be an ErrorResponse; returns it.
async fn expect_error<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<PgError> {
    match read_message(s).await? {
        Some(Msg { tag: b'E', body }) => Ok(PgError::parse(&body)),
        Some(m) => bail!(
            "expected an ErrorResponse, got '{}' {:?}",
            m.tag.escape_ascii(),
            m.body
        ),
        None => bail!("expected an ErrorResponse, the connection closed"),
    }
}

/// The ErrorResponse that ends a running query (RowDescription may come before it, no row may).
async fn expect_query_error<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<PgError> {
    loop {
        match read_message(s).await? {
            Some(Msg { tag: b'T', .. }) => continue,
            Some(Msg { tag: b'E', body }) => return Ok(PgError::parse(&body)),
            other => bail!("expected the query to fail, got {other:?}"),
        }
    }
}

async fn expect_password_request<S: AsyncRead + Unpin>(s: &mut S) -> anyhow::Result<()> {
    match read_message(s).await? {
        Some(Msg { tag: b'R', body }) if body == 3i32.to_be_bytes() => Ok(()),
        Some(Msg { tag: b'E', body }) => {
            bail!("refused before the password: {}", PgError::parse(&body))
        }
        other => bail!("expected AuthenticationCleartextPassword, got {other:?}"),
    }
}

/// Messages up to and including ReadyForQuery, or the ErrorResponse met first.
async fn read_until_ready<S: AsyncRead + Unpin>(
    s: &mut S,
) -> anyhow::Result<Result<Vec<Msg>, PgError>> {
    let mut msgs = Vec::new();
    loop {
        match read_message(s).await? {
            Some(Msg { tag: b'E', body }) => return Ok(Err(PgError::parse(&body))),
            Some(m) if m.tag == b'Z' => {
                msgs.push(m);
                return Ok(Ok(msgs));
            }
            Some(m) => msgs.push(m),
            None => bail!("the connection closed before ReadyForQuery; got {msgs:?}"),
        }
    }
}

/// Runs a simple query on a raw session: the first column of the first row, as text.
async fn raw_query<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    sql: &str,
) -> anyhow::Result<Result<Option<String>, PgError>> {
    s.write_all(&query(sql)).await?;
    let msgs = match read_until_ready(s).await? {
        Ok(msgs) => msgs,
        Err(e) => {
            // After an ERROR the server still sends ReadyForQuery; a FATAL closes instead.
            let _ = read_message(s).await;
            return Ok(Err(e));
        }
    };
    let Some(row) = msgs.iter().find(|m| m.tag == b'D') else {
        return Ok(Ok(None));
    };
    // DataRow: i16 column count, then i32 length and bytes per column.
    let len = i32::from_be_bytes(row.body[2..6].try_into()?);
    Ok(Ok(Some(
        String::from_utf8_lossy(&row.body[6..6 + len as usize]).into_owned(),
    )))
}

/// Reads until the gateway closes the connection; fails if it is still open after `within`.
/// Returns what the gateway sent before closing.
async fn closed_within<S: AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> anyhow::Result<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => bail!("the connection was still open after {within:?}; received {got:?}"),
            Ok(Ok(0)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            // A reset, or TLS ending without close_notify: closed all the same.
            Ok(Err(_)) => return Ok(got),
        }
    }
}

/// Sends `bytes` on a fresh TCP connection (without closing our side) and checks that the
/// gateway closes it quickly without a word.
async fn assert_startup_bytes_close_silently(lab: &Lab, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tcp = lab.tcp().await?;
    // The gateway may close before reading everything: a failed write is part of the outcome.
    let _ = tcp.write_all(bytes).await;
    let got = closed_within(&mut tcp, QUICKLY)
        .await
        .with_context(|| format!("after sending {:?}", bytes.escape_ascii().to_string()))?;
    ensure!(got.is_empty(), "the gateway answered {got:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Token forgery, by hand: base64url, JSON pieces, Ed25519 with rcgen, HMAC from rustls.
// ---------------------------------------------------------------------------------------------

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = B64URL
            .iter()
            .position(|&x| x == c)
            .with_context(|| format!("{:?} is not base64url", c as char))?;
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// The three parts of a JWT, the first two decoded.
struct Jwt {
    header: Value,
    claims: Value,
    signature: String,
}

impl Jwt {
    fn parse(token: &str) -> anyhow::Result<Jwt> {
        let parts: Vec<&str> = token.split('.').collect();
        ensure!(parts.len() == 3, "a JWT has three parts: {token}");
        Ok(Jwt {
            header: serde_json::from_slice(&b64url_decode(parts[0])?)?,
            claims: serde_json::from_slice(&b64url_decode(parts[1])?)?,
            signature: parts[2].to_owned(),
        })
    }

    /// `header.claims`, as signed.
    fn signing_input(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes())
        )
    }

    fn with_signature(header: &Value, claims: &Value, signature: &[u8]) -> String {
        format!(
            "{}.{}",
            Jwt::signing_input(header, claims),
            b64url_encode(signature)
        )
    }
}

fn ed25519_sign(key: &rcgen::KeyPair, header: &Value, claims: &Value) -> anyhow::Result<String> {
    use rcgen::SigningKey;
    let signature = key.sign(Jwt::signing_input(header, claims).as_bytes())?;
    Ok(Jwt::with_signature(header, claims, &signature))
}

/// HMAC-SHA256 (RFC 2104) from the hash and HMAC of rustls' ring provider.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use rustls::crypto::tls13::OkmBlock;
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite");
    // Keys longer than the hash's block are replaced by their hash (RFC 2104, section 3).
    let hashed;
    let key = if key.len() > 64 {
        hashed = suite.common.hash_provider.hash(key);
        hashed.as_ref()
    } else {
        key
    };
    suite
        .hkdf_provider
        .hmac_sign(&OkmBlock::new(key), msg)
        .as_ref()
        .to_vec()
}

/// The bastion's own token signing key.
fn signing_key(lab: &Lab) -> anyhow::Result<rcgen::KeyPair> {
    let pem = std::fs::read_to_string(lab.bastion.data_path().join("signing.key"))?;
    Ok(rcgen::KeyPair::from_pem(&pem)?)
}

/// A small deterministic generator, so a failing garbage case can be replayed.
struct XorShift(u64);

impl XorShift {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Encryption negotiation.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn plaintext_startup_is_refused_with_28000_asking_for_tls() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let mut tcp = lab.tcp().await?;
    tcp.write_all(&startup(&[("user", PERSON), ("database", TARGET)]))
        .await?;
    let e = expect_error(&mut tcp).await?;
    e.assert_is("FATAL", "28000", "TLS");
    let hint = e.hint.clone().unwrap_or_default();
    assert!(hint.contains("sslmode"), "hint lacks sslmode: {e}");
    closed_within(&mut tcp, QUICKLY).await?;
    lab.assert_healthy().await
}

#[tokio::test]
async fn gssenc_request_is_declined_then_ssl_request_leads_to_a_working_session()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let mut tcp = lab.tcp().await?;
    tcp.write_all(&packet(GSSENC_REQUEST, &[])).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    assert_eq!(answer, *b"N", "GSSENCRequest must be declined");
    tcp.write_all(&packet(SSL_REQUEST, &[])).await?;
    tcp.read_exact(&mut answer).await?;
    assert_eq!(answer, *b"S", "SSLRequest must be accepted");
    let mut tls = tls_handshake(tcp, None).await?;
    tls.write_all(&startup(&[("user", PERSON), ("database", TARGET)]))
        .await?;
    expect_password_request(&mut tls).await?;
    tls.write_all(&password_message(&lab.token)).await?;
    read_until_ready(&mut tls)
        .await?
        .map_err(|e| anyhow!("login refused: {e}"))?;
    let one = raw_query(&mut tls, "select 1").await?;
    assert_eq!(one, Ok(Some("1".into())));
    lab.assert_healthy().await
}

#[tokio::test]
async fn ssl_request_followed_by_garbage_instead_of_a_client_hello_closes_the_connection()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for garbage in [
        b"this is not a TLS ClientHello at all\r\n".to_vec(),
        // A handshake record header that lies about its version.
        vec![
            0x16, 0x7f, 0x7f, 0x00, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ],
        // A StartupMessage where the ClientHello should be.
        startup(&[("user", PERSON), ("database", TARGET)]),
    ] {
        let mut tcp = lab.tcp().await?;
        tcp.write_all(&packet(SSL_REQUEST, &[])).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        assert_eq!(answer, *b"S");
        let _ = tcp.write_all(&garbage).await;
        let got = closed_within(&mut tcp, QUICKLY).await?;
        // At most a TLS alert record (content type 21), never a protocol message in clear.
        assert!(
            got.is_empty() || got[0] == 0x15,
            "after {garbage:?} the gateway sent {got:?}"
        );
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn direct_tls_with_alpn_postgresql_logs_in_and_runs_queries() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let mut tls = tls_handshake(lab.tcp().await?, Some(b"postgresql")).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    tls.write_all(&startup(&[("user", PERSON), ("database", TARGET)]))
        .await?;
    expect_password_request(&mut tls).await?;
    tls.write_all(&password_message(&lab.token)).await?;
    let msgs = read_until_ready(&mut tls)
        .await?
        .map_err(|e| anyhow!("login refused: {e}"))?;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(msgs[0].tag, b'R');
    assert_eq!(msgs[0].body, 0i32.to_be_bytes(), "AuthenticationOk first");
    assert!(tags.contains(&b'S'), "ParameterStatus: {tags:?}");
    assert!(tags.contains(&b'K'), "BackendKeyData: {tags:?}");
    assert_eq!(tags.last(), Some(&b'Z'));
    assert_eq!(
        raw_query(&mut tls, "select count(*) from items").await?,
        Ok(Some(pg::ITEM_COUNT.to_string()))
    );
    tls.write_all(&message(b'X', &[])).await?;
    closed_within(&mut tls, QUICKLY).await?;
    lab.assert_healthy().await
}

#[tokio::test]
async fn direct_tls_without_alpn_postgresql_closes_the_connection() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    // No ALPN at all: the handshake completes, then the gateway hangs up.
    let mut tls = tls_handshake(lab.tcp().await?, None).await?;
    let _ = tls
        .write_all(&startup(&[("user", PERSON), ("database", TARGET)]))
        .await;
    let got = closed_within(&mut tls, QUICKLY).await?;
    assert!(got.is_empty(), "the gateway answered {got:?}");

    // Another protocol only: the handshake itself is refused.
    match tls_handshake(lab.tcp().await?, Some(b"http/1.1")).await {
        Err(_) => {}
        Ok(mut tls) => {
            let _ = tls
                .write_all(&startup(&[("user", PERSON), ("database", TARGET)]))
                .await;
            let got = closed_within(&mut tls, QUICKLY).await?;
            assert!(got.is_empty(), "the gateway answered {got:?}");
        }
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn encryption_requested_again_inside_tls_closes_the_connection() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for code in [SSL_REQUEST, GSSENC_REQUEST] {
        // After SSLRequest, and after direct TLS.
        let via_request = lab.tls().await?;
        let direct = tls_handshake(lab.tcp().await?, Some(b"postgresql")).await?;
        for mut tls in [via_request, direct] {
            tls.write_all(&packet(code, &[])).await?;
            let got = closed_within(&mut tls, QUICKLY).await?;
            assert!(got.is_empty(), "the gateway answered {got:?}");
        }
    }
    lab.assert_healthy().await
}

// ---------------------------------------------------------------------------------------------
// Malformed startup packets.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn negative_startup_length_closes_the_connection() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for len in [-1i32, -8, i32::MIN] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        assert_startup_bytes_close_silently(&lab, &bytes).await?;
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn startup_lengths_below_eight_close_the_connection() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for len in [0i32, 4, 7] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        assert_startup_bytes_close_silently(&lab, &bytes).await?;
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn startup_length_over_the_limit_closes_the_connection_before_the_body_arrives()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for len in [MAX_STARTUP + 1, i32::MAX] {
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
        bytes.extend_from_slice(b"user\0alice\0");
        assert_startup_bytes_close_silently(&lab, &bytes).await?;
    }
    // Exactly at the limit is still read (and then refused for its content, a huge value).
    let mut big = startup(&[("user", PERSON), ("database", TARGET), ("x", "")]);
    let pad = MAX_STARTUP as usize - big.len();
    big.splice(big.len() - 2..big.len() - 2, std::iter::repeat_n(b'y', pad));
    big[..4].copy_from_slice(&MAX_STARTUP.to_be_bytes());
    assert_eq!(big.len(), MAX_STARTUP as usize);
    let mut tcp = lab.tcp().await?;
    tcp.write_all(&big).await?;
    let e = expect_error(&mut tcp).await?;
    e.assert_is("FATAL", "28000", "TLS");
    lab.assert_healthy().await
}

#[tokio::test]
async fn startup_length_one_byte_short_closes_the_connection() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let mut bytes = startup(&[("user", PERSON), ("database", TARGET)]);
    let len = bytes.len() as i32 - 1;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    // The packet the gateway reads lacks the list's final NUL; that NUL then trails it.
    assert_startup_bytes_close_silently(&lab, &bytes).await?;
    lab.assert_healthy().await
}

#[tokio::test]
async fn startup_length_one_byte_long_closes_the_connection_once_the_byte_arrives()
-> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let mut bytes = startup(&[("user", PERSON), ("database", TARGET)]);
    let len = bytes.len() as i32 + 1;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    let mut tcp = lab.tcp().await?;
    tcp.write_all(&bytes).await?;
    // The gateway waits for the byte it was promised, and says nothing meanwhile...
    let mut one = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut one)).await;
    assert!(
        early.is_err(),
        "the gateway acted on a partial packet: {early:?}"
    );
    // ... then finds it trailing the parameter list.
    tcp.write_all(b"\0").await?;
    let got = closed_within(&mut tcp, QUICKLY).await?;
    assert!(got.is_empty(), "the gateway answered {got:?}");
    lab.assert_healthy().await
}

#[tokio::test]
async fn truncated_startup_packet_then_eof_closes_the_connection() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let bytes = startup(&[("user", PERSON), ("database", TARGET)]);
    let mut tcp = lab.tcp().await?;
    tcp.write_all(&bytes[..bytes.len() / 2]).await?;
    tcp.shutdown().await?;
    let got = closed_within(&mut tcp, QUICKLY).await?;
    assert!(got.is_empty(), "the gateway answered {got:?}");
    // The same inside TLS.
    let mut tls = lab.tls().await?;
    tls.write_all(&bytes[..bytes.len() / 2]).await?;
    tls.shutdown().await?;
    let got = closed_within(&mut tls, QUICKLY).await?;
    assert!(got.is_empty(), "the gateway answered {got:?}");
    lab.assert_healthy().await
}

#[tokio::test]
async fn random_garbage_closes_the_connection() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for seed in 1..=24u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut garbage = rng.bytes(64);
        // Every fourth one looks like the start of a TLS handshake record.
        if seed % 4 == 0 {
            garbage[0] = 0x16;
        }
        let mut tcp = lab.tcp().await?;
        let _ = tcp.write_all(&garbage).await;
        let got = closed_within(&mut tcp, QUICKLY)
            .await
            .with_context(|| format!("seed {seed}: {garbage:02x?}"))?;
        assert!(
            got.is_empty() || got[0] == 0x15,
            "seed {seed}: the gateway answered {got:?}"
        );
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn http_request_closes_the_connection() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    assert_startup_bytes_close_silently(
        &lab,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8.0\r\n\r\n",
    )
    .await?;
    assert_startup_bytes_close_silently(&lab, b"POST /login HTTP/1.0\r\n\r\n").await?;
    lab.assert_healthy().await
}

#[tokio::test]
async fn replication_startup_is_refused_with_0a000() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for mode in ["database", "true"] {
        let mut tls = lab.tls().await?;
        tls.write_all(&startup(&[
            ("user", PERSON),
            ("database", TARGET),
            ("replication", mode),
        ]))
        .await?;
        let e = expect_error(&mut tls).await?;
        e.assert_is("FATAL", "0A000", "replication");
        closed_within(&mut tls, QUICKLY).await?;
    }
    lab.assert_healthy().await
}

// ---------------------------------------------------------------------------------------------
// The password message.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn password_message_with_the_wrong_tag_is_refused_with_08p01() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let mut tls = lab.at_password_prompt(PERSON, TARGET).await?;
    tls.write_all(&query("select 1")).await?;
    let e = expect_error(&mut tls).await?;
    e.assert_is("FATAL", "08P01", "expected a password message");
    closed_within(&mut tls, QUICKLY).await?;
    lab.assert_healthy().await
}

#[tokio::test]
async fn password_without_its_nul_or_with_bad_bytes_is_refused_with_08p01() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let token = lab.token.as_bytes();
    for body in [
        token.to_vec(),
        [token, b"\0extra"].concat(),
        [token, b"\0\0"].concat(),
        b"\xff\xfe not UTF-8\0".to_vec(),
        Vec::new(),
    ] {
        let mut tls = lab.at_password_prompt(PERSON, TARGET).await?;
        tls.write_all(&message(b'p', &body)).await?;
        let e = expect_error(&mut tls)
            .await
            .with_context(|| format!("body {:?}", body.escape_ascii().to_string()))?;
        e.assert_is("FATAL", "08P01", "invalid password message");
        closed_within(&mut tls, QUICKLY).await?;
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn login_and_query_pipelined_in_one_write_work() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    // A client that does not wait for the password request nor for ReadyForQuery.
    let mut tls = lab.tls().await?;
    let mut bytes = startup(&[("user", PERSON), ("database", TARGET)]);
    bytes.extend_from_slice(&password_message(&lab.token));
    bytes.extend_from_slice(&query("select 'first'"));
    bytes.extend_from_slice(&query("select 'second'"));
    tls.write_all(&bytes).await?;
    expect_password_request(&mut tls).await?;
    read_until_ready(&mut tls)
        .await?
        .map_err(|e| anyhow!("login refused: {e}"))?;
    for expected in ["first", "second"] {
        let msgs = read_until_ready(&mut tls)
            .await?
            .map_err(|e| anyhow!("query failed: {e}"))?;
        let row = msgs.iter().find(|m| m.tag == b'D').context("no row")?;
        assert!(row.body.ends_with(expected.as_bytes()), "{msgs:?}");
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn password_longer_than_the_startup_limit_is_refused_with_08p01() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for len in [MAX_STARTUP + 5, 1 << 24, i32::MAX] {
        let mut tls = lab.at_password_prompt(PERSON, TARGET).await?;
        let mut bytes = header(b'p', len);
        bytes.extend_from_slice(&[b'a'; 100]);
        tls.write_all(&bytes).await?;
        let e = expect_error(&mut tls).await?;
        e.assert_is("FATAL", "08P01", "exceeds the limit");
        closed_within(&mut tls, QUICKLY).await?;
    }
    for len in [-1, 0, 3] {
        let mut tls = lab.at_password_prompt(PERSON, TARGET).await?;
        tls.write_all(&header(b'p', len)).await?;
        let e = expect_error(&mut tls).await?;
        e.assert_is("FATAL", "08P01", "invalid password message");
        closed_within(&mut tls, QUICKLY).await?;
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn empty_password_is_refused_with_28p01() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let e = lab.refusal(PERSON, TARGET, "").await?;
    e.assert_is("FATAL", "28P01", "password authentication failed");
    lab.assert_healthy().await
}

// ---------------------------------------------------------------------------------------------
// Tokens: forged, expired, revoked, misused.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn forged_tokens_are_all_refused_with_the_same_28p01_message() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let real = Jwt::parse(&lab.token)?;
    assert_eq!(real.header["alg"], "EdDSA", "{}", real.header);
    let ours = signing_key(&lab)?;
    let stranger = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let with = |field: &str, value: Value| {
        let mut claims = real.claims.clone();
        claims[field] = value;
        claims
    };
    let none = serde_json::json!({"alg": "none", "typ": "JWT"});
    let hs256 = serde_json::json!({"alg": "HS256", "typ": "JWT"});
    let hs256_input = Jwt::signing_input(&hs256, &real.claims);
    let forgeries: Vec<(&str, String)> = vec![
        ("garbage", "hunter2".into()),
        ("empty", String::new()),
        ("three dots", "a.b.c".into()),
        (
            "alg none, no signature",
            format!("{}.", Jwt::signing_input(&none, &real.claims)),
        ),
        (
            "alg none, real signature",
            format!(
                "{}.{}",
                Jwt::signing_input(&none, &real.claims),
                real.signature
            ),
        ),
        (
            "signed by another Ed25519 key",
            ed25519_sign(&stranger, &real.header, &real.claims)?,
        ),
        (
            "role changed under the real signature",
            format!(
                "{}.{}",
                Jwt::signing_input(&real.header, &with("role", "postgres".into())),
                real.signature
            ),
        ),
        (
            "expiry pushed back under the real signature",
            format!(
                "{}.{}",
                Jwt::signing_input(
                    &real.header,
                    &with(
                        "exp",
                        (real.claims["exp"].as_i64().unwrap_or(0) + 86_400).into()
                    )
                ),
                real.signature
            ),
        ),
        (
            "HS256 keyed with the public key PEM",
            Jwt::with_signature(
                &hs256,
                &real.claims,
                &hmac_sha256(ours.public_key_pem().as_bytes(), hs256_input.as_bytes()),
            ),
        ),
        (
            "HS256 keyed with the raw public key",
            Jwt::with_signature(
                &hs256,
                &real.claims,
                &hmac_sha256(ours.public_key_raw(), hs256_input.as_bytes()),
            ),
        ),
        (
            "truly signed, credential id unknown to the store",
            ed25519_sign(
                &ours,
                &real.header,
                &with("jti", uuid::Uuid::new_v4().to_string().into()),
            )?,
        ),
        (
            "truly signed, role differs from the stored credential",
            ed25519_sign(&ours, &real.header, &with("role", pg::SUPERUSER.into()))?,
        ),
        (
            "truly signed, for another audience",
            ed25519_sign(&ours, &real.header, &with("aud", "another-gateway".into()))?,
        ),
        (
            // Were the expiry checked before the signature, this would say "expired at".
            "signed by another key, long expired",
            ed25519_sign(&stranger, &real.header, &with("exp", 1_000_000_000.into()))?,
        ),
        (
            // The forger's own public key embedded in the header (CVE-2018-0114 style).
            "signed by another key that the header carries as a JWK",
            ed25519_sign(
                &stranger,
                &serde_json::json!({
                    "alg": "EdDSA",
                    "typ": "JWT",
                    "jwk": {
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "x": b64url_encode(stranger.public_key_raw()),
                    },
                }),
                &real.claims,
            )?,
        ),
        ("longer than any token", "A".repeat(9_000)),
        ("the token with a newline", format!("{}\n", lab.token)),
    ];
    let mut first: Option<(&str, PgError)> = None;
    for (what, token) in &forgeries {
        let e = lab
            .refusal(PERSON, TARGET, token)
            .await
            .with_context(|| what.to_string())?;
        assert_eq!(
            (e.severity.as_str(), e.code.as_str()),
            ("FATAL", "28P01"),
            "{what}: {e}"
        );
        match &first {
            None => first = Some((what, e)),
            Some((first_what, first_e)) => assert_eq!(
                &e, first_e,
                "{what} and {first_what} must be refused with the same words"
            ),
        }
    }
    let (_, e) = first.context("no forgeries")?;
    assert!(e.message.contains("password authentication failed"), "{e}");
    let said = format!("{e}").to_lowercase();
    for telltale in [
        "signature",
        "alg",
        "key",
        "audience",
        "store",
        "role",
        "claim",
    ] {
        assert!(
            !said.contains(telltale),
            "the refusal mentions {telltale:?}: {e}"
        );
    }
    // The real token itself still works: the refusals were about the forgeries.
    lab.assert_healthy().await
}

#[tokio::test]
async fn expired_token_is_refused_with_28p01_saying_when_it_expired() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let issued = lab.issue(TARGET, &["--lifetime", "1s"])?;
    let token = issued["token"].as_str().context("token")?;
    let expires_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(issued["expires_at"].clone())?;
    // The gateway tolerates LEEWAY_SECS of clock skew after the expiry.
    let refused_from = expires_at + chrono::TimeDelta::seconds(gateway::credential::LEEWAY_SECS);
    let wait = (refused_from - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let e = lab.refusal(PERSON, TARGET, token).await?;
    e.assert_is("FATAL", "28P01", "expired at");
    let when = expires_at.format("%Y-%m-%d %H:%M:%S").to_string();
    assert!(e.message.contains(&when), "message lacks {when}: {e}");
    lab.assert_healthy().await
}

#[tokio::test]
async fn revoked_token_is_refused_with_28p01_saying_it_was_revoked() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let issued = lab.issue(TARGET, &[])?;
    let token = issued["token"].as_str().context("token")?;
    let id = issued["credential_id"].as_str().context("credential_id")?;
    // It works before...
    let (mut tls, _) = lab
        .login(PERSON, TARGET, token)
        .await?
        .map_err(|e| anyhow!("{e}"))?;
    tls.write_all(&message(b'X', &[])).await?;
    lab.bastion.cli_ok(&["token", "revoke", id])?;
    // ... and not after.
    let e = lab.refusal(PERSON, TARGET, token).await?;
    e.assert_is("FATAL", "28P01", "revoked");
    lab.assert_healthy().await
}

#[tokio::test]
async fn token_presented_for_another_user_is_refused_with_28000() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for user in ["mallory", "Alice", "alice "] {
        let e = lab.refusal(user, TARGET, &lab.token).await?;
        e.assert_is("FATAL", "28000", "not for user");
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn token_presented_at_another_target_is_refused_with_28000() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    // alice's token for shop, at warehouse, which she may also use with a token of its own.
    let e = lab.refusal(PERSON, OTHER_TARGET, &lab.token).await?;
    e.assert_is("FATAL", "28000", "not for user");
    // And a target nobody registered.
    let e = lab.refusal(PERSON, "postgres", &lab.token).await?;
    e.assert_is("FATAL", "28000", "not for user");
    lab.assert_healthy().await
}

// ---------------------------------------------------------------------------------------------
// Role confinement: the granted role is the one the person works as.
// ---------------------------------------------------------------------------------------------

/// `select current_user, current_setting('pgbastion.identity', true)` on a raw session.
async fn whoami<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> anyhow::Result<String> {
    raw_query(
        s,
        "select current_user || ' as ' \
         || coalesce(current_setting('pgbastion.identity', true), '?')",
    )
    .await?
    .map_err(|e| anyhow!("{e}"))?
    .context("no row")
}

#[tokio::test]
async fn startup_parameters_cannot_change_the_granted_role_or_the_identity() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let token = lab.narrow_role_token()?;
    let expected = format!("{NARROW_ROLE} as {PERSON}");
    let base = [("user", PERSON), ("database", TARGET)];
    let (mut tls, _) = lab
        .login_with(&base, &token)
        .await?
        .map_err(|e| anyhow!("{e}"))?;
    assert_eq!(
        whoami(&mut tls).await?,
        expected,
        "without extra parameters"
    );
    // PostgreSQL applies startup-packet settings after those of `options`, and GUC names are
    // case-insensitive: each of these would undo the gateway's `-c role=...` or identity.
    let mut broken = Vec::new();
    for extra in [
        ("role", "none"),
        ("ROLE", ROLE),
        ("Role", "none"),
        ("pgbastion.identity", "mallory"),
        ("PgBastion.Identity", "mallory"),
        ("options", "-c role=none"),
    ] {
        let mut params = base.to_vec();
        params.push(extra);
        // Refusing such a startup packet is fine; logging in as someone else is not.
        if let Ok((mut tls, _)) = lab.login_with(&params, &token).await? {
            let got = whoami(&mut tls).await?;
            if got != expected {
                broken.push(format!("{}={} gave {got}", extra.0, extra.1));
            }
        }
    }
    assert!(broken.is_empty(), "expected {expected}: {broken:?}");
    lab.assert_healthy().await
}

#[tokio::test]
async fn set_role_after_login_cannot_leave_the_granted_role() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let token = lab.narrow_role_token()?;
    let (mut tls, _) = lab
        .login(PERSON, TARGET, &token)
        .await?
        .map_err(|e| anyhow!("{e}"))?;
    let expected = format!("{NARROW_ROLE} as {PERSON}");
    assert_eq!(whoami(&mut tls).await?, expected);
    let mut broken = Vec::new();
    for sql in [
        "set role none",
        &format!("set role {ROLE}"),
        "reset role",
        // `SET pgbastion.identity` itself cannot be prevented upstream (a placeholder setting
        // any session may change); the identity that counts is pgbastion's session record.
    ] {
        // Refusing the statement is fine; working as another role or person is not.
        if raw_query(&mut tls, sql).await?.is_ok() {
            let got = whoami(&mut tls).await?;
            if got != expected {
                broken.push(format!("{sql:?} gave {got}"));
            }
        }
    }
    assert!(broken.is_empty(), "expected {expected}: {broken:?}");
    lab.assert_healthy().await
}

// ---------------------------------------------------------------------------------------------
// Resource limits.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn clients_stalling_during_authentication_are_dropped_after_the_auth_timeout()
-> anyhow::Result<()> {
    let lab = Lab::start(&[("PGBASTION_GATEWAY_AUTH_TIMEOUT_SECS", "2")])?;
    let started = Instant::now();
    // Silent from the first byte; silent after TLS; silent at the password prompt.
    let mut silent = lab.tcp().await?;
    let mut after_tls = lab.tls().await?;
    let mut at_prompt = lab.at_password_prompt(PERSON, TARGET).await?;
    // And one that trickles a startup packet, a byte at a time, never finishing it.
    let mut trickling = lab.tcp().await?;
    let closed_at = |result: anyhow::Result<Vec<u8>>| result.map(|_| started.elapsed());
    let trickle = async {
        let packet = startup(&[("user", PERSON), ("database", TARGET)]);
        let mut chunk = [0u8; 64];
        for byte in packet.iter().take(packet.len() - 1).cycle() {
            if trickling.write_all(&[*byte]).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(250), trickling.read(&mut chunk)).await
            {
                Err(_) => {}
                Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
                Ok(Ok(n)) => bail!("the gateway answered {:?}", &chunk[..n]),
            }
            ensure!(started.elapsed() < REPLY, "still open after {REPLY:?}");
        }
        closed_at(closed_within(&mut trickling, REPLY).await)
    };
    let prompt = async {
        let e = expect_error(&mut at_prompt).await?;
        anyhow::Ok((e, started.elapsed()))
    };
    // Meanwhile a normal session logs in and works.
    let normal = async {
        lab.assert_session_works().await?;
        anyhow::Ok(started.elapsed())
    };
    let (silent_at, after_tls_at, prompt, trickle_at, normal_at) = tokio::join!(
        async { closed_at(closed_within(&mut silent, REPLY).await) },
        async { closed_at(closed_within(&mut after_tls, REPLY).await) },
        prompt,
        trickle,
        normal,
    );
    let normal_at = normal_at?;
    assert!(
        normal_at < Duration::from_secs(2),
        "normal login took {normal_at:?}"
    );
    let (e, prompt_at) = prompt?;
    e.assert_is("FATAL", "08006", "timed out");
    closed_within(&mut at_prompt, QUICKLY).await?;
    for (what, at) in [
        ("silent", silent_at?),
        ("after TLS", after_tls_at?),
        ("at the prompt", prompt_at),
        ("trickling", trickle_at?),
    ] {
        assert!(
            (Duration::from_millis(1500)..Duration::from_secs(5)).contains(&at),
            "{what}: closed after {at:?}"
        );
    }
    lab.assert_healthy().await
}

#[tokio::test]
async fn connections_over_max_connections_get_53300_until_one_ends() -> anyhow::Result<()> {
    let lab = Lab::start(&[("PGBASTION_GATEWAY_MAX_CONNECTIONS", "2")])?;
    let first = lab.client().await?;
    let second = lab.client().await?;
    let err = lab.client().await.err().context("a third session got in")?;
    let db = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .with_context(|| format!("not a server error: {err:#}"))?;
    assert_eq!(db.code(), &SqlState::TOO_MANY_CONNECTIONS, "{db}");
    assert!(db.message().contains("too many"), "{db}");
    // Both sessions are unharmed.
    for client in [&first, &second] {
        let one: i32 = client.query_one("select 1", &[]).await?.get(0);
        assert_eq!(one, 1);
    }
    // Once one ends, its slot is free again.
    drop(first);
    let third = lab.client_once_a_slot_is_free().await?;
    let one: i32 = third.query_one("select 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    drop((second, third));
    lab.assert_healthy_once_a_slot_is_free().await
}

#[tokio::test]
async fn message_over_max_client_message_bytes_is_refused_with_54000() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let (mut tls, _) = lab.raw_session().await?;
    // A Query that claims 2 MiB; only its first bytes are ever sent.
    let mut bytes = header(b'Q', 2 * MAX_CLIENT_MESSAGE as i32 + 4);
    bytes.extend_from_slice(b"select '");
    bytes.extend_from_slice(&[b'x'; 1000]);
    tls.write_all(&bytes).await?;
    let e = expect_error(&mut tls).await?;
    e.assert_is("FATAL", "54000", "exceeds the limit");
    closed_within(&mut tls, QUICKLY).await?;
    // Just under the limit is fine.
    let (mut tls, _) = lab.raw_session().await?;
    let sql = format!("select length('{}')", "x".repeat(MAX_CLIENT_MESSAGE - 100));
    assert_eq!(
        raw_query(&mut tls, &sql).await?,
        Ok(Some((MAX_CLIENT_MESSAGE - 100).to_string()))
    );
    lab.assert_healthy().await
}

#[tokio::test]
async fn negative_message_length_after_login_is_refused_with_08p01() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    for len in [-1, i32::MIN, 0, 3] {
        let (mut tls, _) = lab.raw_session().await?;
        tls.write_all(&header(b'Q', len)).await?;
        let e = expect_error(&mut tls).await?;
        e.assert_is("FATAL", "08P01", "invalid message from client");
        closed_within(&mut tls, QUICKLY).await?;
    }
    lab.assert_healthy().await
}

// ---------------------------------------------------------------------------------------------
// Cancel requests.
// ---------------------------------------------------------------------------------------------

/// A CancelRequest on its own plaintext connection, which the gateway closes without a word.
async fn send_cancel(lab: &Lab, pid: i32, secret: i32) -> anyhow::Result<()> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&secret.to_be_bytes());
    let mut tcp = lab.tcp().await?;
    tcp.write_all(&packet(CANCEL_REQUEST, &body)).await?;
    let got = closed_within(&mut tcp, REPLY).await?;
    ensure!(got.is_empty(), "a cancel request was answered {got:?}");
    Ok(())
}

#[tokio::test]
async fn cancel_request_with_a_wrong_key_cancels_nothing() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let (mut tls, (pid, secret)) = lab.raw_session().await?;
    tls.write_all(&query("select pg_sleep(2), 42")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_cancel(&lab, pid, secret ^ 1).await?;
    send_cancel(&lab, pid, secret.wrapping_add(1 << 20)).await?;
    send_cancel(&lab, pid ^ 1, secret).await?;
    send_cancel(&lab, 0, 0).await?;
    // The same over TLS.
    let mut over_tls = lab.tls().await?;
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&(!secret).to_be_bytes());
    over_tls.write_all(&packet(CANCEL_REQUEST, &body)).await?;
    closed_within(&mut over_tls, REPLY).await?;
    let msgs = read_until_ready(&mut tls)
        .await?
        .map_err(|e| anyhow!("the query failed: {e}"))?;
    assert!(msgs.iter().any(|m| m.tag == b'D'), "no row: {msgs:?}");
    assert_eq!(
        raw_query(&mut tls, "select 'still here'").await?,
        Ok(Some("still here".into()))
    );
    lab.assert_healthy().await
}

#[tokio::test]
async fn cancel_request_with_the_right_key_cancels_the_query_with_57014() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    // A raw client, with the key the gateway gave it, over plaintext.
    let (mut tls, (pid, secret)) = lab.raw_session().await?;
    tls.write_all(&query("select pg_sleep(30)")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    send_cancel(&lab, pid, secret).await?;
    let e = expect_query_error(&mut tls).await?;
    e.assert_is("ERROR", "57014", "cancel");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    // The session goes on.
    assert!(matches!(
        read_message(&mut tls).await?,
        Some(Msg { tag: b'Z', .. })
    ));
    assert_eq!(raw_query(&mut tls, "select 7").await?, Ok(Some("7".into())));

    // tokio-postgres' own cancel token, over TLS.
    let client = lab.client().await?;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    token
        .cancel_query(MakeRustlsConnect::new(tls_config(None, None)?))
        .await?;
    let err = tokio::time::timeout(REPLY, sleeper)
        .await??
        .err()
        .context("the query was not cancelled")?;
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    lab.assert_healthy().await
}

#[tokio::test]
async fn cancel_request_is_honoured_while_the_gateway_is_full() -> anyhow::Result<()> {
    let lab = Lab::start(&[("PGBASTION_GATEWAY_MAX_CONNECTIONS", "2")])?;
    let (mut busy, (pid, secret)) = lab.raw_session().await?;
    let other = lab.client().await?;
    busy.write_all(&query("select pg_sleep(30)")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // PostgreSQL serves cancel requests whatever its connection count: a full server is
    // exactly when people need to stop a runaway query.
    let sent = Instant::now();
    send_cancel(&lab, pid, secret).await?;
    let e = tokio::time::timeout(Duration::from_secs(5), expect_query_error(&mut busy))
        .await
        .map_err(|_| anyhow!("the query still ran {:?} after the cancel", sent.elapsed()))??;
    e.assert_is("ERROR", "57014", "cancel");
    drop((busy, other));
    lab.assert_healthy_once_a_slot_is_free().await
}

// ---------------------------------------------------------------------------------------------
// Floods.
// ---------------------------------------------------------------------------------------------

/// One hostile connection of kind `n % 8`; returns once the gateway has closed it.
async fn garbage_connection(lab: &Lab, n: u64) -> anyhow::Result<()> {
    let mut rng = XorShift(n.wrapping_add(1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    match n % 8 {
        0 => {
            let mut tcp = lab.tcp().await?;
            let _ = tcp.write_all(&rng.bytes(64)).await;
            closed_within(&mut tcp, REPLY).await?;
        }
        1 => {
            let mut tcp = lab.tcp().await?;
            let _ = tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            closed_within(&mut tcp, REPLY).await?;
        }
        2 => {
            let mut tcp = lab.tcp().await?;
            let _ = tcp.write_all(&i32::MAX.to_be_bytes()).await;
            closed_within(&mut tcp, REPLY).await?;
        }
        3 => {
            let mut tcp = lab.tcp().await?;
            tcp.write_all(&packet(SSL_REQUEST, &[])).await?;
            let _ = tcp.write_all(&rng.bytes(200)).await;
            closed_within(&mut tcp, REPLY).await?;
        }
        4 => {
            let mut tls = lab.at_password_prompt(PERSON, TARGET).await?;
            tls.write_all(&password_message(&b64url_encode(&rng.bytes(300))))
                .await?;
            expect_error(&mut tls).await?;
        }
        5 => {
            let mut tls = lab.at_password_prompt(PERSON, TARGET).await?;
            let _ = tls.write_all(&rng.bytes(100)).await;
            closed_within(&mut tls, REPLY).await?;
        }
        6 => {
            let mut tls = tls_handshake(lab.tcp().await?, None).await?;
            let _ = tls.write_all(&rng.bytes(50)).await;
            closed_within(&mut tls, REPLY).await?;
        }
        _ => {
            let (mut tls, _) = lab.raw_session().await?;
            tls.write_all(&header(b'Q', -5)).await?;
            expect_error(&mut tls).await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn fifty_garbage_connections_do_not_disturb_a_working_session() -> anyhow::Result<()> {
    let lab = Lab::start(&[])?;
    let client = lab.client().await?;
    let storm_over = std::cell::Cell::new(false);
    let storm = async {
        let results = join_all((0..50u64).map(|n| garbage_connection(&lab, n))).await;
        storm_over.set(true);
        for (n, r) in results.into_iter().enumerate() {
            r.with_context(|| format!("garbage connection {n} (kind {})", n % 8))?;
        }
        anyhow::Ok(())
    };
    // Queries one after the other for as long as the storm lasts, and a few more.
    let steady = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut done = 0i32;
        while !storm_over.get() || done < 20 {
            ensure!(Instant::now() < deadline, "the storm never ended");
            let n: i32 = client
                .query_one("select $1::int4 + 1", &[&done])
                .await
                .with_context(|| format!("query {done} during the storm"))?
                .get(0);
            ensure!(n == done + 1, "wrong answer {n} for {done}");
            done += 1;
        }
        anyhow::Ok(done)
    };
    let (storm, steady) = tokio::join!(storm, steady);
    storm?;
    steady?;
    lab.assert_healthy().await
}

/// Runs futures concurrently on the current task, returning their results in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}

#[test]
fn hmac_helper_matches_rfc_4231() {
    // Test case 2 (a short key) and test case 6 (a key longer than the block).
    let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        b64url_encode(&tag),
        b64url_encode(&hex(
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ))
    );
    let tag = hmac_sha256(
        &[0xaa; 131],
        b"Test Using Larger Than Block-Size Key - Hash Key First",
    );
    assert_eq!(
        tag,
        hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    );
    assert_eq!(
        b64url_decode(&b64url_encode(b"any carnal pleas")).unwrap(),
        b"any carnal pleas"
    );
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}
