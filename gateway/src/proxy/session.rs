//! One client connection from accept to close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use chrono::Utc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, timeout_at};
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use super::Shared;
use super::auth::{self, Authorized};
use super::handshake::{self, ClientStream, Opening};
use super::registry::StopOrder;
use super::relay::{Relay, RelayEnd, RelayError};
use super::upstream::{self, Upstream, UpstreamError};
use crate::metrics::{self, AuthOutcome, Refusal, StoreOperation};
use crate::protocol::backend::{self, ErrorMessage};
use crate::protocol::startup::StartupMessage;
use crate::protocol::{ProtocolError, frontend};
use crate::record::SessionInfo;
use crate::store::{EndReason, SessionEnd};

/// Counts a connection in `pgbastion_connections_active` while it lives.
struct ActiveConnection;

impl ActiveConnection {
    fn open() -> Self {
        metrics::get().connections_active.increment(1.0);
        ActiveConnection
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        metrics::get().connections_active.decrement(1.0);
    }
}

/// Serves one accepted connection. `_permit` holds its slot under `max_connections`.
pub async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let _active = ActiveConnection::open();
    let _ = tcp.set_nodelay(true);
    let gw = &shared.config.gateway;
    let deadline = Instant::now() + Duration::from_secs(gw.auth_timeout_secs);
    // The startup and login phases are boxed: a session's task is as big as its largest
    // state, and they are only needed for a moment while the relay state lives for hours.
    let opening = match timeout_at(
        deadline,
        Box::pin(handshake::open(
            tcp,
            &shared.tls,
            gw.max_startup_packet_bytes,
        )),
    )
    .await
    {
        Ok(Ok(opening)) => opening,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "connection refused during startup");
            metrics::get().refused(Refusal::Startup).increment(1);
            return;
        }
        Err(_) => {
            debug!(%peer, "startup timed out");
            metrics::get().refused(Refusal::Startup).increment(1);
            return;
        }
    };
    match opening {
        Opening::Cancel {
            process_id,
            secret_key,
        } => cancel(&shared, process_id, secret_key).await,
        Opening::Session {
            mut stream,
            startup,
        } => {
            // A login has no session id yet (a refused one never gets one): its lines carry
            // the client and the user name it claims.
            let span = info_span!("login", %peer, user = startup.param("user").unwrap_or_default());
            let login = async {
                if let Err(refusal) = check_startup(&startup) {
                    metrics::get().refused(Refusal::Startup).increment(1);
                    handshake::refuse(&mut *stream, &refusal).await;
                    return None;
                }
                let mut buf = BytesMut::new();
                match timeout_at(
                    deadline,
                    Box::pin(auth::authenticate(&mut stream, &mut buf, &startup, &shared)),
                )
                .await
                {
                    Ok(Ok(a)) => {
                        metrics::get()
                            .authentication(AuthOutcome::Accepted)
                            .increment(1);
                        Some((buf, a))
                    }
                    Ok(Err(refusal)) => {
                        info!(reason = %refusal.log, "authentication refused");
                        let outcome = AuthOutcome::of_refusal(refusal.error.code);
                        refused_login(outcome);
                        handshake::refuse(&mut *stream, &refusal.error).await;
                        None
                    }
                    Err(_) => {
                        info!("authentication timed out");
                        refused_login(AuthOutcome::TimedOut);
                        let error = ErrorMessage::fatal("08006", "authentication timed out");
                        handshake::refuse(&mut *stream, &error).await;
                        None
                    }
                }
            };
            if let Some((buf, authorized)) = login.instrument(span).await {
                // Every line logged about the session, here or in what it calls, carries its
                // id and person through this span. Entering it on each poll of the relay costs
                // a few atomic operations: no measurable change in `scripts/bench`.
                let session_id = Uuid::new_v4();
                let span = info_span!("session", session = %session_id,
                    person = %authorized.credential.person_login);
                let session = Session {
                    id: session_id,
                    peer,
                    deadline,
                };
                run(stream, buf, startup, authorized, session, &shared)
                    .instrument(span)
                    .await;
            }
        }
    }
}

fn refused_login(outcome: AuthOutcome) {
    let m = metrics::get();
    m.authentication(outcome).increment(1);
    m.refused(Refusal::Authentication).increment(1);
    if outcome == AuthOutcome::StoreUnavailable {
        m.store_error(StoreOperation::Authentication).increment(1);
    }
}

/// Answers a connection over the limit with PostgreSQL's "too many clients" error, over TLS.
/// Cancel requests are still honoured: a full gateway is when someone most needs to stop a
/// runaway query.
pub async fn refuse_busy(tcp: TcpStream, shared: Arc<Shared>, _permit: OwnedSemaphorePermit) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let max_startup = shared.config.gateway.max_startup_packet_bytes;
    match timeout_at(deadline, handshake::open(tcp, &shared.tls, max_startup)).await {
        Ok(Ok(Opening::Session { mut stream, .. })) => {
            let error = ErrorMessage::fatal(
                "53300",
                format!(
                    "sorry, too many clients already: the gateway allows {} connections",
                    shared.config.gateway.max_connections
                ),
            );
            handshake::refuse(&mut *stream, &error).await;
        }
        Ok(Ok(Opening::Cancel {
            process_id,
            secret_key,
        })) => cancel(&shared, process_id, secret_key).await,
        _ => {}
    }
}

/// Checks what the StartupMessage asks for before asking for a password.
fn check_startup(startup: &StartupMessage) -> Result<(), ErrorMessage> {
    if startup.param("user").is_none_or(str::is_empty) {
        return Err(ErrorMessage::fatal(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        ));
    }
    if let Some(mode) = startup
        .param("replication")
        .filter(|v| !matches!(*v, "false" | "off" | "no" | "0"))
    {
        return Err(ErrorMessage::fatal(
            "0A000",
            format!(
                "replication connections (replication={mode}) are not supported through pgbastion"
            ),
        ));
    }
    Ok(())
}

/// Startup parameters for the upstream login: the client's own (application_name, options,
/// client_encoding, DateStyle, ...) unchanged, with user and database replaced by the upstream
/// login and database, and the person's identity, the session id and the credential id added.
///
/// The identity settings go in as startup parameters of their own, which PostgreSQL applies
/// after everything in `options`, and any `pgbastion.*` parameter the client sent is dropped, so
/// a client cannot set them at login. (It can still `SET` them later: they are informational
/// for server-side logs; pgbastion's own session record is the authoritative who-did-what.)
fn upstream_params(
    startup: &StartupMessage,
    a: &Authorized,
    upstream_user: &str,
    session_id: Uuid,
) -> Vec<(String, String)> {
    let mut params = vec![
        ("user".to_string(), upstream_user.to_string()),
        ("database".to_string(), a.target.database.clone()),
    ];
    for (k, v) in &startup.params {
        let lower = k.to_ascii_lowercase();
        // `role` and `session_authorization` pass: the session is the granted role itself,
        // so PostgreSQL's own membership rules bound what they can do.
        let reserved = matches!(lower.as_str(), "user" | "database" | "replication")
            || lower.starts_with("_pq_.")
            || lower.starts_with("pgbastion.");
        if !reserved {
            params.push((k.clone(), v.clone()));
        }
    }
    params.push((
        "pgbastion.identity".to_string(),
        a.credential.person_login.clone(),
    ));
    params.push(("pgbastion.session_id".to_string(), session_id.to_string()));
    params.push((
        "pgbastion.credential_id".to_string(),
        a.credential.id.to_string(),
    ));
    params
}

/// The `_pq_.` protocol options a client asked for; the gateway supports none of them.
fn protocol_options(startup: &StartupMessage) -> Vec<&str> {
    startup
        .params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect()
}

/// A session whose credential was accepted: its id, the client, and the login deadline.
struct Session {
    id: Uuid,
    peer: SocketAddr,
    deadline: Instant,
}

async fn run(
    mut client: Box<ClientStream>,
    client_buf: BytesMut,
    startup: StartupMessage,
    authorized: Authorized,
    session: Session,
    shared: &Shared,
) {
    let Session {
        id: session_id,
        peer,
        deadline,
    } = session;
    let credential = &authorized.credential;
    let target = authorized.target.clone();
    let info = SessionInfo {
        session_id,
        credential_id: credential.id,
        person_login: credential.person_login.clone(),
        groups: authorized.groups.clone(),
        target: target.clone(),
        db_role: credential.db_role.clone(),
        client_addr: peer,
        application_name: startup.param("application_name").map(str::to_owned),
        tls_version: handshake::tls_version(&client),
        started_at: Utc::now(),
    };
    if let Err(e) = shared.store.insert_session(&info.new_session()).await {
        warn!(%peer, error = %e, "cannot store the session; refusing it");
        metrics::get()
            .store_error(StoreOperation::Session)
            .increment(1);
        metrics::get()
            .refused(Refusal::StoreUnavailable)
            .increment(1);
        let error = ErrorMessage::fatal(
            "57P03",
            "the gateway cannot record sessions right now; try again shortly",
        );
        handshake::refuse(&mut *client, &error).await;
        return;
    }
    info!(%peer, target = %target.name, role = %credential.db_role, "session started");
    // Every way a session ends goes through here once.
    let end = |reason, detail: Option<String>, bytes: (u64, u64)| {
        metrics::get().session_ended(reason);
        SessionEnd {
            ended_at: Utc::now(),
            reason,
            detail,
            bytes_client_to_server: bytes.0 as i64,
            bytes_server_to_client: bytes.1 as i64,
        }
    };

    let upstream = match timeout_at(
        deadline.min(upstream_deadline(shared)),
        Box::pin(login_upstream(&startup, &authorized, session_id, shared)),
    )
    .await
    {
        Ok(Ok(u)) => u,
        Ok(Err(e)) => {
            metrics::get().refused(Refusal::Upstream).increment(1);
            fail_upstream(&mut client, &target.name, &e.to_string(), user_facing(&e)).await;
            finish(
                shared,
                session_id,
                end(EndReason::UpstreamFailed, Some(e.to_string()), (0, 0)),
            )
            .await;
            return;
        }
        Err(_) => {
            metrics::get().refused(Refusal::Upstream).increment(1);
            let detail = "login to the target timed out".to_string();
            fail_upstream(
                &mut client,
                &target.name,
                &detail,
                "the target did not answer in time",
            )
            .await;
            finish(
                shared,
                session_id,
                end(EndReason::UpstreamFailed, Some(detail), (0, 0)),
            )
            .await;
            return;
        }
    };
    let Upstream {
        stream: mut server,
        backend_key,
        welcome,
        leftover,
    } = upstream;
    let mut registration =
        shared
            .registry
            .register(session_id, credential.id, target.clone(), backend_key);

    // Login complete: AuthenticationOk, the server's parameters, our own cancel key, then the
    // server's ReadyForQuery (always the last 6 bytes of `welcome`).
    let mut hello = BytesMut::with_capacity(welcome.len() + 32);
    let unsupported = protocol_options(&startup);
    if startup.minor > 0 || !unsupported.is_empty() {
        backend::negotiate_protocol_version(&mut hello, &unsupported);
    }
    backend::authentication_ok(&mut hello);
    let (params, ready) = welcome.split_at(welcome.len() - 6);
    hello.extend_from_slice(params);
    backend::backend_key_data(&mut hello, registration.process_id, registration.secret_key);
    hello.extend_from_slice(ready);
    if client.write_all(&hello).await.is_err() || client.flush().await.is_err() {
        finish(
            shared,
            session_id,
            end(
                EndReason::ClientQuit,
                Some("client left during login".into()),
                (0, 0),
            ),
        )
        .await;
        return;
    }

    let mut tap = match shared.recorder.start(&info) {
        Ok(tap) => tap,
        Err(failed) => {
            warn!(error = %failed, "cannot record the session; refusing it");
            metrics::get().refused(Refusal::Recording).increment(1);
            metrics::get().ended_by_recording(target.recording);
            let _ = client.write_all(&recording_refusal(&failed)).await;
            let _ = client.shutdown().await;
            let mut bye = BytesMut::new();
            frontend::terminate(&mut bye);
            let _ = server.write_all(&bye).await;
            finish(
                shared,
                session_id,
                end(
                    EndReason::Error,
                    Some(format!("recording failed: {failed}")),
                    (0, 0),
                ),
            )
            .await;
            return;
        }
    };
    let mut relay = Relay::new(
        shared.config.gateway.max_client_message_bytes,
        client_buf,
        leftover,
    );
    let outcome = tokio::select! {
        biased;
        order = registration.stop.wait_for(Option::is_some) => {
            Err(order.map(|o| o.clone().expect("waited for Some")).unwrap_or(StopOrder {
                reason: EndReason::Error,
                message: "gateway stopped".into(),
            }))
        }
        end = relay.run(&mut *client, &mut server, &mut tap) => Ok(end),
    };
    let (reason, detail) = match outcome {
        Ok(RelayEnd::RecordingFailed(failed)) => {
            warn!(error = %failed, "recording failed; ending the session");
            metrics::get().ended_by_recording(target.recording);
            let _ = relay
                .close_client_with(&mut *client, &recording_error(&failed))
                .await;
            (
                EndReason::Error,
                Some(format!("recording failed: {failed}")),
            )
        }
        Ok(relay_end) => conclude(relay_end, &mut relay, &mut client).await,
        Err(order) => {
            let error = ErrorMessage::fatal("57P01", order.message.clone());
            let _ = relay.close_client_with(&mut *client, &error).await;
            (order.reason, Some(order.message))
        }
    };
    if !relay.client_said_goodbye() {
        // Tell the server goodbye so it logs a clean disconnect, not a lost client.
        let mut bye = BytesMut::new();
        frontend::terminate(&mut bye);
        let _ = server.write_all(&bye).await;
    }
    let _ = server.shutdown().await;
    let session_end = end(reason, detail, relay.bytes());
    drop(registration);
    info!(reason = reason.as_str(), "session ended");
    match tap.take() {
        Some(tap) => tap.end(&session_end),
        None => finish(shared, session_id, session_end).await,
    }
}

/// What a client is told when its session cannot be recorded: nothing it sent after the last
/// recorded statement was run.
fn recording_error(failed: &crate::record::RecordingFailed) -> ErrorMessage {
    ErrorMessage::fatal(
        "57000",
        format!("pgbastion ends this session because it cannot be recorded: {failed}"),
    )
    .with_hint(
        "the statement was not sent to the database; reconnect once the recording store is \
         back (an admin can see the cause in the gateway log)",
    )
}

fn recording_refusal(failed: &crate::record::RecordingFailed) -> BytesMut {
    let mut out = BytesMut::new();
    recording_error(failed).encode(&mut out);
    out
}

fn upstream_deadline(shared: &Shared) -> Instant {
    Instant::now() + Duration::from_secs(shared.config.gateway.upstream_connect_timeout_secs)
}

async fn login_upstream(
    startup: &StartupMessage,
    a: &Authorized,
    session_id: Uuid,
    shared: &Shared,
) -> Result<Upstream, UpstreamError> {
    // Sessions run upstream as the granted role itself, never as a shared login that switches
    // roles (the client could switch back).
    let role = a.credential.db_role.as_str();
    let sealed = if role == a.target.upstream_user {
        a.target.upstream_secret_sealed.clone()
    } else {
        let login = shared
            .store
            .target_login(a.target.id, role)
            .await
            .map_err(|e| UpstreamError::Store(e.to_string()))?
            .ok_or_else(|| UpstreamError::NoLogin(role.to_string()))?;
        login.secret_sealed
    };
    let secret = match sealed {
        Some(sealed) => {
            let plain = shared
                .secrets
                .open(&sealed)
                .map_err(|e| UpstreamError::Secret(e.to_string()))?;
            Some(
                String::from_utf8(plain)
                    .map_err(|_| UpstreamError::Secret("upstream secret is not UTF-8".into()))?,
            )
        }
        None => None,
    };
    let params = upstream_params(startup, a, role, session_id);
    upstream::login(&a.target, role, secret.as_deref(), &params).await
}

/// The part of an upstream failure a person may see: it names no host, user or secret.
fn user_facing(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Connect { .. } => "the target's server is unreachable",
        UpstreamError::Refused { .. } => "the target's server refused the gateway's login",
        UpstreamError::TlsRefused(_) | UpstreamError::Tls(_) | UpstreamError::TlsConfig(_) => {
            "the gateway cannot set up a secure connection to the target"
        }
        UpstreamError::NoLogin(_) => {
            "the target has no upstream login for the granted role; an admin must add one"
        }
        _ => "the gateway could not log in to the target",
    }
}

async fn fail_upstream(client: &mut ClientStream, target: &str, detail: &str, shown: &str) {
    warn!(target, error = detail, "upstream login failed");
    let error = ErrorMessage::fatal(
        "08001",
        format!("cannot connect to target \"{target}\": {shown}"),
    )
    .with_hint("an admin can see the cause in the session record and the gateway log");
    handshake::refuse(client, &error).await;
}

/// Turns how the relay ended into an end reason, telling the client about protocol errors.
async fn conclude(
    end: RelayEnd,
    relay: &mut Relay,
    client: &mut ClientStream,
) -> (EndReason, Option<String>) {
    // A server that sent FATAL ended the session, even if the client hung up on reading it
    // before the server's close arrived here.
    if let Some(fatal) = relay.server_fatal()
        && !matches!(end, RelayEnd::ClientFailed(RelayError::Protocol(_)))
    {
        return (
            EndReason::ServerClosed,
            Some(format!("server sent {fatal}")),
        );
    }
    match end {
        RelayEnd::ClientClosed { said_goodbye: true } => (EndReason::ClientQuit, None),
        RelayEnd::ClientClosed {
            said_goodbye: false,
        } => (
            EndReason::ClientQuit,
            Some("client disconnected without Terminate".into()),
        ),
        // The server went away without a FATAL (an immediate shutdown, a backend killed while
        // blocked writing): the client is told by the gateway rather than finding a closed
        // socket, if its stream is at a message boundary.
        RelayEnd::ServerClosed => {
            tell_client_server_gone(relay, client, "the target's server closed the connection")
                .await;
            (EndReason::ServerClosed, None)
        }
        RelayEnd::RecordingFailed(failed) => (
            EndReason::Error,
            Some(format!("recording failed: {failed}")),
        ),
        RelayEnd::ServerFailed(e) => {
            tell_client_server_gone(
                relay,
                client,
                "the connection to the target's server failed",
            )
            .await;
            (
                EndReason::ServerClosed,
                Some(format!("server connection failed: {e}")),
            )
        }
        RelayEnd::ClientFailed(RelayError::Protocol(e)) => {
            let code = if matches!(e, ProtocolError::TooLarge { .. }) {
                "54000"
            } else {
                "08P01"
            };
            let error = ErrorMessage::fatal(code, format!("invalid message from client: {e}"));
            let _ = relay.close_client_with(client, &error).await;
            (
                EndReason::Error,
                Some(format!("client broke the protocol: {e}")),
            )
        }
        RelayEnd::ClientFailed(e) => (
            EndReason::ClientQuit,
            Some(format!("client connection failed: {e}")),
        ),
    }
}

/// FATAL 08006 (connection_failure) to the client of a session whose server went silent.
async fn tell_client_server_gone(relay: &mut Relay, client: &mut ClientStream, what: &str) {
    let error = ErrorMessage::fatal(
        "08006",
        format!("{what}; the session has ended (reconnect to start a new one)"),
    );
    // The client may be gone as well; nothing more to do then.
    let _ = relay.close_client_with(client, &error).await;
}

async fn finish(shared: &Shared, session_id: Uuid, end: SessionEnd) {
    if let Err(e) = shared.store.end_session(session_id, &end).await {
        warn!(session = %session_id, error = %e, "cannot store the end of the session");
        metrics::get()
            .store_error(StoreOperation::Session)
            .increment(1);
    }
}

async fn cancel(shared: &Shared, process_id: i32, secret_key: i32) {
    // Unknown keys are ignored without an answer, as PostgreSQL does.
    let Some((target, key)) = shared.registry.cancel_route(process_id, secret_key) else {
        debug!("cancel request with an unknown key");
        return;
    };
    if let Err(e) = upstream::cancel(&target, key).await {
        warn!(target = %target.name, error = %e, "cannot forward cancel request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_is_refused_and_user_is_required() {
        let m = |params: &[(&str, &str)]| StartupMessage {
            major: 3,
            minor: 0,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(
            check_startup(&m(&[("user", "a"), ("replication", "database")]))
                .unwrap_err()
                .code,
            "0A000"
        );
        assert!(check_startup(&m(&[("user", "a"), ("replication", "false")])).is_ok());
        assert_eq!(
            check_startup(&m(&[("database", "x")])).unwrap_err().code,
            "28000"
        );
    }
}
