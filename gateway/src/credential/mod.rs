//! Short-lived credentials: signed tokens that people use as their Postgres password.
//!
//! [`issue`] decides whether a person may have one (a grant must match) and records it;
//! [`CredentialSigner`] mints and verifies the token. The token is never stored: the store keeps
//! what it says (the [`Credential`] row), so it can be listed, audited and revoked.

mod token;

use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::keys::KeyError;
use crate::store::{Credential, Store, StoreError};

pub use token::{Claims, CredentialSigner, LEEWAY_SECS, MAX_TOKEN_BYTES, TokenRejection};

/// Lifetime when neither the request nor the configuration names one.
pub const DEFAULT_LIFETIME_SECS: i64 = 3600;

/// Errors of issuing credentials, worded for the person asking.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("token signing key {path}: {message}")]
    SigningKey { path: PathBuf, message: String },
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no person '{0}'; add them with `pgbastion person add {0}`")]
    UnknownPerson(String),
    #[error("no target '{0}'; `pgbastion target list` shows the targets")]
    UnknownTarget(String),
    #[error("target '{0}' is disabled; ask an admin to enable it")]
    TargetDisabled(String),
    #[error("no grant lets {person} use role {role} on target {target}; ask an admin for one")]
    NoGrant {
        person: String,
        role: String,
        target: String,
    },
    #[error("a credential lifetime must be at least 1 second, not {0}s")]
    BadLifetime(i64),
}

/// What someone asks for.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub person_login: String,
    pub target_name: String,
    pub db_role: String,
    /// Requested lifetime in seconds; `None` means `default_lifetime_secs`.
    pub lifetime_secs: Option<i64>,
    pub reason: Option<String>,
    /// From the configuration (`credentials.default_lifetime_secs`).
    pub default_lifetime_secs: i64,
}

/// A credential that was just recorded, and its token (shown once, never stored).
#[derive(Debug, Clone)]
pub struct Issued {
    pub credential: Credential,
    pub token: String,
    /// The lifetime granted, in seconds.
    pub lifetime_secs: i64,
    /// `Some(max)` when the lifetime asked for (or the default) was cut to the grant's maximum.
    pub capped_by_grant: Option<i64>,
}

/// Issues a credential if a grant allows it: the person exists, the target exists and is enabled,
/// and a grant (to the person or one of their groups) covers the role. The lifetime is capped by
/// the most generous matching grant.
pub async fn issue(
    store: &dyn Store,
    signer: &CredentialSigner,
    req: IssueRequest,
) -> Result<Issued, CredentialError> {
    let wanted = req.lifetime_secs.unwrap_or(req.default_lifetime_secs);
    if wanted <= 0 {
        return Err(CredentialError::BadLifetime(wanted));
    }
    let person = store
        .person_by_login(&req.person_login)
        .await?
        .ok_or_else(|| CredentialError::UnknownPerson(req.person_login.clone()))?;
    let target = store
        .target_by_name(&req.target_name)
        .await?
        .ok_or_else(|| CredentialError::UnknownTarget(req.target_name.clone()))?;
    if !target.enabled {
        return Err(CredentialError::TargetDisabled(target.name));
    }
    let grants = store
        .matching_grants(&person.login, &person.groups, target.id, &req.db_role)
        .await?;
    let Some(cap) = grants.iter().map(|g| g.max_lifetime_secs).max() else {
        return Err(CredentialError::NoGrant {
            person: person.login,
            role: req.db_role,
            target: target.name,
        });
    };
    let (lifetime_secs, capped_by_grant) = if wanted > cap {
        (cap, Some(cap))
    } else {
        (wanted, None)
    };

    // Whole seconds, so that the row and the token's iat/exp say exactly the same thing.
    let issued_at = whole_seconds(Utc::now());
    let credential = Credential {
        id: Uuid::new_v4(),
        person_login: person.login,
        target_id: target.id,
        target_name: target.name,
        db_role: req.db_role,
        issued_at,
        expires_at: issued_at + Duration::seconds(lifetime_secs),
        revoked_at: None,
        reason: req.reason,
    };
    // Sign before inserting: a row without a token would be a credential nobody holds.
    let token = signer.mint(&credential)?;
    store.insert_credential(&credential).await?;
    Ok(Issued {
        credential,
        token,
        lifetime_secs,
        capped_by_grant,
    })
}

fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
mod tests;
