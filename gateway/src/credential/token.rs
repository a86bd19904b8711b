//! The token itself: an EdDSA-signed JWT whose claims say who may use which role on which target,
//! until when.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CredentialError;
use crate::keys;
use crate::store::Credential;

/// Clock skew tolerated between the machine that minted a token and the gateway checking it.
/// Small, because tokens are short-lived and the usual minter is the gateway host itself.
pub const LEEWAY_SECS: i64 = 5;

/// Longest string considered as a token; anything longer is refused before any parsing work.
/// Real tokens are about 500 bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a token says. Every field is required: a token missing one is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The person's login (what they type as the Postgres `user`).
    pub sub: String,
    /// Target name (what they type as the Postgres `database`).
    pub tgt: String,
    pub tid: Uuid,
    /// The database role the gateway logs in as upstream.
    pub role: String,
    /// The credential id, for revocation and audit.
    pub jti: Uuid,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// Why a token was refused. The gateway turns each into a Postgres error the user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("the password is not a pgbastion token; issue one with `pgbastion token issue`")]
    Malformed,
    #[error("the token's signature is not valid; it was not issued by this pgbastion")]
    BadSignature,
    #[error("the token expired at {at}; issue a new one")]
    Expired { at: DateTime<Utc> },
    #[error("the token is not valid yet; check the clocks of this host and the issuer")]
    NotYetValid,
    #[error("the token was issued for another gateway (wrong audience)")]
    WrongAudience,
    #[error("the token was issued by another issuer")]
    WrongIssuer,
}

/// Mints and verifies tokens with an Ed25519 key kept as PKCS#8 PEM in the data directory.
pub struct CredentialSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    public_pem: String,
    fingerprint: String,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for CredentialSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSigner")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn bad_key(path: &Path, message: impl std::fmt::Display) -> CredentialError {
    CredentialError::SigningKey {
        path: PathBuf::from(path),
        message: message.to_string(),
    }
}

impl CredentialSigner {
    /// Loads the signing key from `path`, generating it (mode 0600) on first use.
    pub fn load_or_create(
        path: &Path,
        issuer: &str,
        audience: &str,
    ) -> Result<Self, CredentialError> {
        if !path.exists() {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .map_err(|e| bad_key(path, format!("cannot generate: {e}")))?;
            keys::write_private(path, pair.serialize_pem().as_bytes())?;
            tracing::info!(path = %path.display(), "generated the token signing key");
        }
        let pem = keys::read_private(path)?;
        let text = std::str::from_utf8(&pem).map_err(|_| bad_key(path, "not a PEM file"))?;
        let pair = rcgen::KeyPair::from_pem(text)
            .map_err(|e| bad_key(path, format!("not a PKCS#8 private key ({e})")))?;
        if pair.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(bad_key(
                path,
                "not an Ed25519 key; tokens are signed with EdDSA",
            ));
        }
        let public_pem = pair.public_key_pem();
        let fingerprint = crate::record::chain::key_id(pair.public_key_raw());
        let encoding = EncodingKey::from_ed_pem(&pem).map_err(|e| bad_key(path, e))?;
        let decoding =
            DecodingKey::from_ed_pem(public_pem.as_bytes()).map_err(|e| bad_key(path, e))?;

        // Pinning the one algorithm refuses `alg: none` and HS256-keyed-with-the-public-key.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Time checks are ours (see `verify`): they report when a token expired.
        validation.validate_exp = false;
        validation.validate_nbf = false;

        Ok(CredentialSigner {
            encoding,
            decoding,
            validation,
            public_pem,
            fingerprint,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        })
    }

    /// The SPKI PEM public key, for anyone who wants to check tokens without the gateway.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Hex SHA-256 of the raw public key: what processes sharing a store compare.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Signs the claims of `cred`.
    pub fn mint(&self, cred: &Credential) -> Result<String, CredentialError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: cred.person_login.clone(),
            tgt: cred.target_name.clone(),
            tid: cred.target_id,
            role: cred.db_role.clone(),
            jti: cred.id,
            iat: cred.issued_at.timestamp(),
            nbf: cred.issued_at.timestamp(),
            exp: cred.expires_at.timestamp(),
        };
        self.sign_claims(&claims)
    }

    pub(crate) fn sign_claims(&self, claims: &Claims) -> Result<String, CredentialError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("JWT".into());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// Checks signature, algorithm, issuer, audience, the presence of every claim, and the time
    /// window (with [`LEEWAY_SECS`]). Does not look at revocation: that needs the store.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenRejection> {
        self.verify_at(token, Utc::now())
    }

    pub(crate) fn verify_at(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Claims, TokenRejection> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(TokenRejection::Malformed);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| rejection(e.kind()))?
            .claims;
        let now = now.timestamp();
        if claims.exp <= now - LEEWAY_SECS {
            let at = DateTime::from_timestamp(claims.exp, 0).unwrap_or_default();
            return Err(TokenRejection::Expired { at });
        }
        if claims.nbf > now + LEEWAY_SECS {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(claims)
    }
}

fn rejection(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => TokenRejection::BadSignature,
        ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
        _ => TokenRejection::Malformed,
    }
}
