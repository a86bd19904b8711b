//! "Test connection": the gateway logs in to a target exactly as a session granted its default
//! login would (same TLS, same sealed secret, same login code), then says goodbye at once.

use std::time::{Duration, Instant};

use gateway::protocol::backend::PARAMETER_STATUS;
use gateway::protocol::frame::{HEADER_LEN, parse_header};
use gateway::protocol::frontend;
use gateway::proxy::upstream::{self, Upstream};
use gateway::store::Target;
use tokio::io::AsyncWriteExt;

use crate::console::AppState;

/// How the test went, as the edit page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    pub message: String,
    pub millis: u128,
}

/// Logs in to `target` as its upstream user, within the gateway's upstream connect timeout.
pub async fn run(state: &AppState, target: &Target) -> Outcome {
    let started = Instant::now();
    let failed = |message: String| Outcome {
        ok: false,
        message,
        millis: started.elapsed().as_millis(),
    };
    let secret = match unsealed_secret(state, target) {
        Ok(secret) => secret,
        Err(message) => return failed(message),
    };
    let params = [
        ("user", target.upstream_user.as_str()),
        ("database", target.database.as_str()),
        ("application_name", "pgbastion connection test"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let limit = Duration::from_secs(state.config.gateway.upstream_connect_timeout_secs);
    let login = upstream::login(target, &target.upstream_user, secret.as_deref(), &params);
    match tokio::time::timeout(limit, login).await {
        Err(_) => failed(format!(
            "No answer within {} s (gateway.upstream_connect_timeout_secs).",
            limit.as_secs()
        )),
        Ok(Err(e)) => failed(format!("Cannot log in: {e}.")),
        Ok(Ok(upstream)) => {
            let millis = started.elapsed().as_millis();
            let version = server_version(&upstream.welcome);
            say_goodbye(upstream).await;
            Outcome {
                ok: true,
                message: success_message(
                    &target.upstream_user,
                    &target.database,
                    version.as_deref(),
                    millis,
                ),
                millis,
            }
        }
    }
}

fn unsealed_secret(state: &AppState, target: &Target) -> Result<Option<String>, String> {
    let Some(sealed) = &target.upstream_secret_sealed else {
        return Ok(None);
    };
    let plain = state.secrets.open(sealed).map_err(|e| {
        format!(
            "The stored secret cannot be opened with this data directory's secret.key ({e}); \
             enter the password again."
        )
    })?;
    String::from_utf8(plain)
        .map(Some)
        .map_err(|_| "The stored secret is not UTF-8 text; enter the password again.".into())
}

fn success_message(user: &str, database: &str, version: Option<&str>, millis: u128) -> String {
    let version = version
        .map(|v| format!(", PostgreSQL {v}"))
        .unwrap_or_default();
    format!("Connected as {user} to database {database}{version} in {millis} ms.")
}

/// The `server_version` the server reported in its ParameterStatus messages after login.
fn server_version(mut welcome: &[u8]) -> Option<String> {
    while let Ok(Some(header)) = parse_header(welcome, usize::MAX) {
        let body = welcome.get(HEADER_LEN..header.frame_len())?;
        if header.tag == PARAMETER_STATUS {
            let mut parts = body.split(|b| *b == 0);
            if parts.next() == Some(b"server_version".as_slice()) {
                return parts
                    .next()
                    .map(|v| String::from_utf8_lossy(v).into_owned());
            }
        }
        welcome = &welcome[header.frame_len()..];
    }
    None
}

/// Sends Terminate so the server logs a clean disconnect rather than an unexpected EOF, then
/// closes (TLS close_notify included). Failures do not matter: the test already succeeded.
async fn say_goodbye(mut upstream: Upstream) {
    let mut out = Default::default();
    frontend::terminate(&mut out);
    let _ = upstream.stream.write_all(&out).await;
    let _ = upstream.stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::protocol::backend::{READY_FOR_QUERY, put_message};

    fn welcome(messages: &[(u8, &[u8])]) -> Vec<u8> {
        let mut buf = Default::default();
        for (tag, body) in messages {
            put_message(&mut buf, *tag, |b| b.extend_from_slice(body));
        }
        buf.to_vec()
    }

    #[test]
    fn the_server_version_comes_from_its_parameter_status() {
        let with = welcome(&[
            (PARAMETER_STATUS, b"client_encoding\0UTF8\0"),
            (
                PARAMETER_STATUS,
                b"server_version\x0015.8 (Debian 15.8-0+deb12u1)\0",
            ),
            (READY_FOR_QUERY, b"I"),
        ]);
        assert_eq!(
            server_version(&with).as_deref(),
            Some("15.8 (Debian 15.8-0+deb12u1)")
        );
        assert_eq!(server_version(&welcome(&[(READY_FOR_QUERY, b"I")])), None);
        // A cut-off message ends the search instead of reading past the buffer.
        for end in [12, 40] {
            assert_eq!(server_version(&with[..end]), None, "{end}");
        }
    }

    #[test]
    fn success_names_user_database_version_and_time() {
        assert_eq!(
            success_message("shop_ro", "shop", Some("15.8"), 12),
            "Connected as shop_ro to database shop, PostgreSQL 15.8 in 12 ms."
        );
        assert_eq!(
            success_message("shop_ro", "shop", None, 3),
            "Connected as shop_ro to database shop in 3 ms."
        );
    }
}
