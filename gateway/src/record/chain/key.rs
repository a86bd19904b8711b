//! The recording key (Ed25519, PKCS#8 PEM in the data directory) that seals recordings, and the
//! public keys that check seals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{ChainError, Hash, seal_message};
use crate::keys;
use crate::store::RecordingSeal;

/// The recording key's file name in the data directory.
pub const RECORDING_KEY_FILE: &str = "recording.key";

/// Names a public key: lowercase hex SHA-256 of its 32 raw bytes.
pub fn key_id(raw_public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(raw_public_key))
}

/// The private key that seals recordings. Kept apart from the token signing key: whoever can
/// mint tokens must not also be able to forge seals, and the two rotate on different schedules.
pub struct RecordingKey {
    pair: Ed25519KeyPair,
    public_pem: String,
    key_id: String,
}

impl std::fmt::Debug for RecordingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn bad_key(path: &Path, message: impl std::fmt::Display) -> ChainError {
    ChainError::BadRecordingKey {
        path: PathBuf::from(path),
        message: message.to_string(),
    }
}

impl RecordingKey {
    /// Loads the key from `path`, generating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<RecordingKey, ChainError> {
        if !path.exists() {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
                .map_err(|e| bad_key(path, format!("cannot generate: {e}")))?;
            keys::write_private(path, pair.serialize_pem().as_bytes())?;
            tracing::info!(path = %path.display(), "generated the recording key; back it up");
        }
        RecordingKey::load(path)
    }

    /// Loads an existing key (PKCS#8 v1 or v2, so `openssl genpkey -algorithm ed25519` works).
    pub fn load(path: &Path) -> Result<RecordingKey, ChainError> {
        let pem = keys::read_private(path)?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
            .map_err(|e| bad_key(path, format!("no PKCS#8 PRIVATE KEY block ({e:?})")))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| bad_key(path, format!("not an Ed25519 key ({e})")))?;
        let text = std::str::from_utf8(&pem).map_err(|_| bad_key(path, "not a PEM file"))?;
        let public_pem = rcgen::KeyPair::from_pem(text)
            .map_err(|e| bad_key(path, e))?
            .public_key_pem();
        let key_id = key_id(pair.public_key().as_ref());
        Ok(RecordingKey {
            pair,
            public_pem,
            key_id,
        })
    }

    /// The public half as SPKI PEM (`BEGIN PUBLIC KEY`): all a verifier needs.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// Hex SHA-256 of the raw public key; stored in every seal.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs the seal message (see the module documentation of `record::chain`).
    pub fn seal(&self, session_id: Uuid, event_count: u64, final_hash: &Hash) -> RecordingSeal {
        let signature = self
            .pair
            .sign(&seal_message(session_id, event_count, final_hash));
        RecordingSeal {
            session_id,
            event_count: event_count as i64,
            final_hash: final_hash.to_vec(),
            signature: signature.as_ref().to_vec(),
            key_id: self.key_id.clone(),
            sealed_at: Utc::now(),
        }
    }

    /// A verifier that knows this key's public half.
    pub fn verifier(&self) -> Verifier {
        let mut verifier = Verifier::default();
        verifier.insert(self.pair.public_key().as_ref().to_vec());
        verifier
    }
}

/// Why a seal could not be checked, before any recording content is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SealCheck {
    Valid,
    UnknownKey,
    BadSignature,
}

/// Public keys that check seals, found by key id: give it every key the gateway has used, and
/// recordings sealed before a rotation stay verifiable.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, Vec<u8>>,
}

impl Verifier {
    /// Keys from PEM text holding one or several `BEGIN PUBLIC KEY` blocks; `origin` (a file
    /// name) is named in errors.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Verifier, ChainError> {
        let mut verifier = Verifier::default();
        verifier.add_pem(pem, origin)?;
        Ok(verifier)
    }

    /// Adds the keys of another PEM text.
    pub fn add_pem(&mut self, pem: &str, origin: &str) -> Result<(), ChainError> {
        let bad = |message: String| ChainError::BadPublicKey {
            origin: origin.to_string(),
            message,
        };
        let mut found = 0;
        for block in SubjectPublicKeyInfoDer::pem_slice_iter(pem.as_bytes()) {
            let der = block.map_err(|e| bad(format!("{e:?}")))?;
            let (_, spki) = SubjectPublicKeyInfo::from_der(der.as_ref())
                .map_err(|e| bad(format!("not a public key ({e})")))?;
            if spki.algorithm.algorithm != OID_SIG_ED25519 {
                return Err(bad(format!(
                    "the key's algorithm is {}, not Ed25519",
                    spki.algorithm.algorithm
                )));
            }
            let raw = spki.subject_public_key.data.to_vec();
            if raw.len() != 32 {
                return Err(bad(format!("{} bytes instead of 32", raw.len())));
            }
            self.insert(raw);
            found += 1;
        }
        if found == 0 {
            return Err(bad("no PUBLIC KEY block found".into()));
        }
        Ok(())
    }

    fn insert(&mut self, raw: Vec<u8>) {
        self.keys.insert(key_id(&raw), raw);
    }

    /// Ids of the known keys, sorted.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    pub(super) fn check(&self, seal: &RecordingSeal) -> SealCheck {
        let Some(public) = self.keys.get(&seal.key_id) else {
            return SealCheck::UnknownKey;
        };
        let (Ok(count), Ok(final_hash)) = (
            u64::try_from(seal.event_count),
            <Hash>::try_from(seal.final_hash.as_slice()),
        ) else {
            return SealCheck::BadSignature;
        };
        let message = seal_message(seal.session_id, count, &final_hash);
        match UnparsedPublicKey::new(&ED25519, public).verify(&message, &seal.signature) {
            Ok(()) => SealCheck::Valid,
            Err(_) => SealCheck::BadSignature,
        }
    }
}
