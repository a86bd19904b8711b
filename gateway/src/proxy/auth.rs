//! The client's login: the password is a pgbastion credential (a signed token), checked here.
//!
//! Refusals use SQLSTATE 28P01 (the credential itself is bad: forged, expired, revoked) or 28000
//! (a good credential used for the wrong user, target, or without a grant). Messages tell a
//! person what to do next, and never which cryptographic check failed.

use std::sync::Arc;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;

use super::Shared;
use super::framed::{ReadError, read_frame};
use super::handshake::ClientStream;
use crate::credential::TokenRejection;
use crate::protocol::backend::{self, ErrorMessage};
use crate::protocol::frontend;
use crate::protocol::startup::StartupMessage;
use crate::store::{Credential, Target};

/// A client whose credential was accepted.
pub struct Authorized {
    pub credential: Credential,
    pub target: Arc<Target>,
    /// The person's groups at login (recorded with the session).
    pub groups: Vec<String>,
}

/// Why a client was not let in; `error` is what the client is told.
#[derive(Debug)]
pub struct Refusal {
    pub error: ErrorMessage,
    /// What went into the gateway log (never the token).
    pub log: String,
}

fn refuse(code: &'static str, message: impl Into<String>, log: impl Into<String>) -> Refusal {
    Refusal {
        error: ErrorMessage::fatal(code, message),
        log: log.into(),
    }
}

const GET_A_NEW_ONE: &str =
    "request a new credential in the pgbastion console or with `pgbastion token issue`";

fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Asks for the password, checks it, and returns who may connect where.
pub async fn authenticate(
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    startup: &StartupMessage,
    shared: &Shared,
) -> Result<Authorized, Refusal> {
    let user = startup.param("user").unwrap_or_default();
    let database = startup.param("database").unwrap_or(user);
    let mut out = BytesMut::new();
    backend::authentication_cleartext_password(&mut out);
    stream.write_all(&out).await.map_err(|e| {
        refuse(
            "08006",
            "connection failed",
            format!("sending auth request: {e}"),
        )
    })?;
    let frame = read_frame(stream, buf, shared.config.gateway.max_startup_packet_bytes)
        .await
        .map_err(|e| match e {
            ReadError::Closed => refuse(
                "08006",
                "connection closed",
                "client closed during authentication",
            ),
            other => refuse(
                "08P01",
                format!("invalid password message: {other}"),
                other.to_string(),
            ),
        })?;
    if frame.tag != frontend::PASSWORD_MESSAGE {
        return Err(refuse(
            "08P01",
            format!(
                "expected a password message, got message type '{}'",
                frame.tag.escape_ascii()
            ),
            "client sent something else than a password",
        ));
    }
    let token = frontend::parse_password(&frame.body)
        .map_err(|e| refuse("08P01", "invalid password message", e.to_string()))?;
    check_token(token, user, database, shared).await
}

/// Every check a credential must pass, in the order that reveals least to a forger: nothing about
/// the store is consulted before the signature is known to be ours.
pub async fn check_token(
    token: &str,
    user: &str,
    database: &str,
    shared: &Shared,
) -> Result<Authorized, Refusal> {
    let bad_password = |why: &str| {
        refuse(
            "28P01",
            format!(
                "password authentication failed for user \"{user}\": the password must be a valid pgbastion credential"
            ),
            format!("token refused for user {user}: {why}"),
        )
    };
    let claims = shared
        .signer
        .verify(token)
        .map_err(|rejection| match rejection {
            TokenRejection::Expired { at } => {
                let mut r = refuse(
                    "28P01",
                    format!("credential expired at {}", utc(at)),
                    format!("expired token for user {user}"),
                );
                r.error = r.error.with_hint(GET_A_NEW_ONE);
                r
            }
            TokenRejection::NotYetValid => refuse(
                "28P01",
                "credential is not valid yet; check the clock of the machine that issued it",
                format!("not-yet-valid token for user {user}"),
            ),
            other => bad_password(&format!("{other:?}")),
        })?;
    let wrong_place = || {
        refuse(
            "28000",
            format!("this credential is not for user \"{user}\" on database \"{database}\""),
            format!(
                "token for {} on {} used as {user} on {database}",
                claims.sub, claims.tgt
            ),
        )
    };
    if claims.sub != user || claims.tgt != database {
        return Err(wrong_place());
    }
    let unavailable = |e: crate::store::StoreError| {
        refuse(
            "57P03",
            "the gateway cannot check credentials right now; try again shortly",
            format!("store error during authentication: {e}"),
        )
    };
    let credential = shared
        .store
        .credential(claims.jti)
        .await
        .map_err(unavailable)?;
    let Some(credential) = credential else {
        return Err(bad_password("credential id not in the store"));
    };
    if let Some(at) = credential.revoked_at {
        let mut r = refuse(
            "28P01",
            format!("credential was revoked at {}", utc(at)),
            format!("revoked credential {} used by {user}", credential.id),
        );
        r.error = r.error.with_hint(GET_A_NEW_ONE);
        return Err(r);
    }
    if credential.person_login != claims.sub
        || credential.target_id != claims.tid
        || credential.db_role != claims.role
    {
        return Err(bad_password("claims differ from the stored credential"));
    }
    let target = shared
        .store
        .target_by_id(credential.target_id)
        .await
        .map_err(unavailable)?;
    let Some(target) = target.filter(|t| t.enabled && t.name == database) else {
        return Err(refuse(
            "28000",
            format!("target \"{database}\" is not available"),
            format!(
                "target {} of credential {} is gone or disabled",
                claims.tgt, credential.id
            ),
        ));
    };
    let person = shared
        .store
        .person_by_login(user)
        .await
        .map_err(unavailable)?;
    let groups = person.map(|p| p.groups).unwrap_or_default();
    let grants = shared
        .store
        .matching_grants(user, &groups, target.id, &credential.db_role)
        .await
        .map_err(unavailable)?;
    if grants.is_empty() {
        return Err(refuse(
            "28000",
            format!(
                "user \"{user}\" no longer has access to \"{database}\" as role \"{}\"",
                credential.db_role
            ),
            format!("grant for credential {} was removed", credential.id),
        )
        .with_hint("ask an admin for a grant"));
    }
    Ok(Authorized {
        credential,
        target: Arc::new(target),
        groups,
    })
}

impl Refusal {
    fn with_hint(mut self, hint: &str) -> Self {
        self.error = self.error.with_hint(hint);
        self
    }
}
