//! Key material kept in the data directory: the gateway's TLS identity and the key that seals
//! upstream secrets.
//!
//! Everything is generated on first start and reused afterwards. Files are created with mode 0600
//! (and the data directory 0700) because whoever reads them can impersonate the gateway or decrypt
//! every upstream password in the store.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Errors about key files; each names the file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "found {present} but not {missing}: restore the missing file, or delete both to have \
         pgbastion generate a new self-signed pair"
    )]
    HalfPair { present: PathBuf, missing: PathBuf },
    #[error("{path} is not a usable PEM {what}: {message}")]
    BadPem {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    CertGen(#[from] rcgen::Error),
    #[error("the TLS certificate and key cannot be used: {0}")]
    Tls(#[from] rustls::Error),
    #[error(
        "{path} does not hold a secret key (64 hex characters); restore it from a backup (a new \
         key cannot decrypt the upstream passwords already stored)"
    )]
    BadSecretKey { path: PathBuf },
    #[error(
        "cannot decrypt the upstream secret: the secret key in {path} is not the one it was sealed \
         with (restore that file from a backup, or set the target's password again)"
    )]
    WrongSecretKey { path: PathBuf },
    #[error("the sealed upstream secret is damaged: {0}; set the target's password again")]
    BadSealed(&'static str),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = path.to_path_buf();
    move |source| KeyError::Io {
        action,
        path,
        source,
    }
}

/// Creates `dir` (and its parents) with mode 0700 if it does not exist yet.
pub fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create the directory", dir))
}

/// Writes a new file readable by its owner only. Fails if the file exists, so that two processes
/// starting at once cannot overwrite each other's keys.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    if let Some(parent) = path.parent() {
        ensure_private_dir(parent)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(contents).map_err(io_error("write", path))?;
    file.sync_all().map_err(io_error("write", path))
}

/// Reads a key file, warning when others may read it too (they could steal the key).
pub(crate) fn read_private(path: &Path) -> Result<Vec<u8>, KeyError> {
    let bytes = fs::read(path).map_err(io_error("read", path))?;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            "key file is readable by other users; run chmod 600 on it"
        );
    }
    Ok(bytes)
}

/// The gateway's certificate chain and private key, as rustls wants them.
pub struct TlsIdentity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("certs", &self.certs.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Loads the PEM certificate chain and key, or, when neither file exists, generates a self-signed
/// certificate for 127.0.0.1, localhost and `hostnames`.
pub fn load_or_create_tls(
    cert: &Path,
    key: &Path,
    hostnames: &[String],
) -> Result<TlsIdentity, KeyError> {
    match (cert.exists(), key.exists()) {
        (true, true) => load_tls(cert, key),
        (false, false) => {
            let (cert_pem, key_pem) = self_signed(hostnames)?;
            write_private(key, key_pem.as_bytes())?;
            write_private(cert, cert_pem.as_bytes())?;
            tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
            load_tls(cert, key)
        }
        (true, false) => Err(KeyError::HalfPair {
            present: cert.into(),
            missing: key.into(),
        }),
        (false, true) => Err(KeyError::HalfPair {
            present: key.into(),
            missing: cert.into(),
        }),
    }
}

fn load_tls(cert: &Path, key: &Path) -> Result<TlsIdentity, KeyError> {
    let cert_pem = fs::read(cert).map_err(io_error("read", cert))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| KeyError::BadPem {
            path: cert.into(),
            what: "certificate chain",
            message: format!("{e:?}"),
        })?;
    if certs.is_empty() {
        return Err(KeyError::BadPem {
            path: cert.into(),
            what: "certificate chain",
            message: "no CERTIFICATE block found".into(),
        });
    }
    let key_pem = read_private(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| KeyError::BadPem {
        path: key.into(),
        what: "private key",
        message: format!("{e:?}"),
    })?;
    Ok(TlsIdentity {
        certs,
        key: key_der,
    })
}

/// A self-signed certificate (PEM) and its ECDSA P-256 key (PKCS#8 PEM), valid for ten years.
fn self_signed(hostnames: &[String]) -> Result<(String, String), KeyError> {
    let mut names: Vec<String> = vec!["127.0.0.1".into(), "localhost".into()];
    for host in hostnames {
        if !host.is_empty() && !names.contains(host) {
            names.push(host.clone());
        }
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pgbastion gateway");
    let today = chrono::Utc::now().date_naive();
    use chrono::Datelike;
    let (y, m, d) = (today.year(), today.month() as u8, today.day().min(28) as u8);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + 10, m, d);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The TLS configuration of the client leg: TLS 1.2 and 1.3 with the ring provider, and ALPN
/// `postgresql`, which PostgreSQL 17 clients require for direct TLS (`sslnegotiation=direct`).
pub fn server_tls_config(id: &TlsIdentity) -> Result<Arc<rustls::ServerConfig>, KeyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(id.certs.clone(), id.key.clone_key())?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// Format version of a sealed secret: `[1][12-byte nonce][ciphertext + 16-byte tag]`.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Binds ciphertexts to their purpose, so a sealed value cannot be replayed in another context
/// that might reuse the key later.
const SEALED_AAD: &[u8] = b"pgbastion upstream secret";

/// Seals and opens upstream secrets with ChaCha20-Poly1305 under a 32-byte key kept in a file of
/// the data directory, never in the store: a copy of the store alone reveals no password.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    path: PathBuf,
    fingerprint: String,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretBox {
    /// Loads the key from `path` (64 hex characters), generating it on first use.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, KeyError> {
        if !path.exists() {
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            write_private(path, format!("{}\n", hex::encode(key)).as_bytes())?;
            tracing::info!(path = %path.display(), "generated the secret key; back it up");
        }
        let text = read_private(path)?;
        let key = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| hex::decode(t.trim()).ok())
            .filter(|k| k.len() == 32)
            .ok_or_else(|| KeyError::BadSecretKey { path: path.into() })?;
        Ok(SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            path: path.to_path_buf(),
            fingerprint: secret_fingerprint(&key),
        })
    }

    /// Names the key without revealing it (a one-way derivation), so that processes sharing a
    /// store can tell whether they hold the same one.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encrypts an upstream secret under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        self.seal_for(SEALED_AAD, plaintext)
    }

    /// Decrypts what [`SecretBox::seal`] produced; refuses anything altered or sealed under
    /// another key.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.open_for(SEALED_AAD, sealed)
    }

    /// Like [`SecretBox::seal`] for another purpose (e.g. a browser's pending sign-in), bound to
    /// it: what was sealed for one purpose does not open for another.
    pub fn seal_for(&self, purpose: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: purpose,
                },
            )
            .expect("ChaCha20-Poly1305 encryption only fails past 256 GiB");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// Opens what [`SecretBox::seal_for`] sealed for `purpose`.
    pub fn open_for(&self, purpose: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (&version, rest) = sealed
            .split_first()
            .ok_or(KeyError::BadSealed("it is empty"))?;
        if version != SEALED_V1 {
            return Err(KeyError::BadSealed("unknown format version"));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(KeyError::BadSealed("it is too short"));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        // An AEAD cannot tell a wrong key from tampering; the wrong key is by far the likelier
        // cause in practice (a data directory restored without its secret.key), so say that.
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose,
                },
            )
            .map_err(|_| KeyError::WrongSecretKey {
                path: self.path.clone(),
            })
    }
}

/// Hex SHA-256 of a domain string and the key: the secret key itself is never stored, and
/// this hash of it reveals nothing of it.
fn secret_fingerprint(key: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"pgbastion secret key fingerprint v1\0");
    hash.update(key);
    hex::encode(hash.finalize())
}

/// A key that every process sharing a store must hold the same of: a console and a gateway
/// with different signing keys would mean tokens the gateway rejects; with different secret
/// keys, upstream passwords the gateway cannot open; with different recording keys, seals the
/// console cannot check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SharedKey {
    Signing,
    Recording,
    Secrets,
}

impl SharedKey {
    pub const ALL: [SharedKey; 3] = [SharedKey::Signing, SharedKey::Recording, SharedKey::Secrets];

    /// The name stored in `shared_keys.purpose` and given to `serve --replace-key`.
    pub fn name(self) -> &'static str {
        match self {
            SharedKey::Signing => "signing",
            SharedKey::Recording => "recording",
            SharedKey::Secrets => "secrets",
        }
    }

    pub fn from_name(name: &str) -> Option<SharedKey> {
        SharedKey::ALL.into_iter().find(|k| k.name() == name)
    }

    fn describe(self) -> &'static str {
        match self {
            SharedKey::Signing => "token signing key (credentials.signing_key)",
            SharedKey::Recording => "recording key (recording.key_file)",
            SharedKey::Secrets => "secret key (secrets.key_file)",
        }
    }

    /// How to rotate on purpose, beyond `--replace-key`.
    fn rotation_hint(self) -> &'static str {
        match self {
            SharedKey::Recording => {
                "; or list the old key's public half in recording.retired_public_keys, which \
                 also keeps its recordings verifiable"
            }
            SharedKey::Signing => "; tokens signed with the old key stop working",
            SharedKey::Secrets => {
                "; upstream passwords sealed with the old key must then be set again"
            }
        }
    }
}

/// A shared key this process loaded: what it is, where from, and its public fingerprint.
#[derive(Debug, Clone)]
pub struct HeldKey {
    pub purpose: SharedKey,
    pub path: PathBuf,
    pub fingerprint: String,
}

/// Why a process may not use the store with its keys.
#[derive(Debug, thiserror::Error)]
pub enum SharedKeyError {
    #[error(
        "the {what} at {path} is not the key the other processes on this store use: this process \
         holds fingerprint {ours}, the store has {theirs}, registered by {by} at {at}. Give every \
         gateway and console the same key file (copy it, or point the setting at it); to replace \
         the key on purpose, start one process with `pgbastion serve --replace-key {name}` and \
         then every other one with the new file{hint}",
        what = .purpose.describe(),
        name = .purpose.name(),
        hint = .purpose.rotation_hint(),
    )]
    Mismatch {
        purpose: SharedKey,
        path: PathBuf,
        ours: String,
        theirs: String,
        by: String,
        at: chrono::DateTime<chrono::Utc>,
    },
    #[error("cannot register the shared keys in the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Registers each held key's fingerprint in the store, or checks it against the one registered
/// before. A different registered key is replaced only when `may_replace` says so (a deliberate
/// rotation); the replaced registrations are returned, for the audit log.
pub async fn register_shared_keys(
    store: &dyn crate::store::Store,
    held: &[HeldKey],
    registered_by: &str,
    may_replace: impl Fn(&HeldKey, &crate::store::KeyRegistration) -> bool,
) -> Result<Vec<crate::store::KeyRegistration>, SharedKeyError> {
    let mut replaced = Vec::new();
    for key in held {
        let ours = crate::store::KeyRegistration {
            purpose: key.purpose.name().to_string(),
            fingerprint: key.fingerprint.clone(),
            registered_by: registered_by.to_string(),
            registered_at: chrono::Utc::now(),
        };
        let theirs = store.register_key(&ours, false).await?;
        if theirs.fingerprint == ours.fingerprint {
            continue;
        }
        if !may_replace(key, &theirs) {
            return Err(SharedKeyError::Mismatch {
                purpose: key.purpose,
                path: key.path.clone(),
                ours: ours.fingerprint,
                theirs: theirs.fingerprint,
                by: theirs.registered_by,
                at: theirs.registered_at,
            });
        }
        store.register_key(&ours, true).await?;
        tracing::warn!(
            key = key.purpose.name(),
            old = %theirs.fingerprint,
            new = %ours.fingerprint,
            "replaced the key registered for every process on this store; restart the others \
             with the new key"
        );
        replaced.push(theirs);
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(purpose: SharedKey, fingerprint: &str) -> HeldKey {
        HeldKey {
            purpose,
            path: PathBuf::from(format!("/keys/{}.key", purpose.name())),
            fingerprint: fingerprint.repeat(64),
        }
    }

    #[tokio::test]
    async fn a_second_process_with_another_key_is_refused_unless_it_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let first = [held(SharedKey::Signing, "a"), held(SharedKey::Secrets, "b")];
        let never = |_: &HeldKey, _: &crate::store::KeyRegistration| false;
        let replaced = register_shared_keys(store.as_ref(), &first, "gw1", never)
            .await
            .unwrap();
        assert!(replaced.is_empty());
        // The same keys again (a restart, another gateway): accepted.
        register_shared_keys(store.as_ref(), &first, "gw2", never)
            .await
            .unwrap();

        let other = [held(SharedKey::Signing, "a"), held(SharedKey::Secrets, "c")];
        let err = register_shared_keys(store.as_ref(), &other, "gw3", never)
            .await
            .unwrap_err()
            .to_string();
        for needle in [
            "secret key (secrets.key_file)",
            "/keys/secrets.key",
            &"b".repeat(64),
            &"c".repeat(64),
            "registered by gw1",
            "--replace-key secrets",
        ] {
            assert!(err.contains(needle), "{needle:?} missing: {err}");
        }

        let replaced = register_shared_keys(store.as_ref(), &other, "gw3", |key, _| {
            key.purpose == SharedKey::Secrets
        })
        .await
        .unwrap();
        assert_eq!(replaced.len(), 1);
        assert_eq!(replaced[0].fingerprint, "b".repeat(64));
        // Now the first set is the odd one out.
        assert!(
            register_shared_keys(store.as_ref(), &first, "gw1", never)
                .await
                .is_err()
        );
    }

    #[test]
    fn the_secret_key_fingerprint_names_the_key_without_revealing_it() {
        let dir = tempfile::tempdir().unwrap();
        let one = SecretBox::load_or_create(&dir.path().join("one.key")).unwrap();
        let two = SecretBox::load_or_create(&dir.path().join("two.key")).unwrap();
        let again = SecretBox::load_or_create(&dir.path().join("one.key")).unwrap();
        assert_eq!(one.fingerprint(), again.fingerprint());
        assert_ne!(one.fingerprint(), two.fingerprint());
        let key = std::fs::read_to_string(dir.path().join("one.key")).unwrap();
        assert!(!one.fingerprint().contains(key.trim()));
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn tls_identity_is_generated_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (cert, key) = (data.join("gateway.crt"), data.join("gateway.key"));
        let first = load_or_create_tls(&cert, &key, &["db.example.com".into()]).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o600);
        let second = load_or_create_tls(&cert, &key, &[]).unwrap();
        assert_eq!(first.certs, second.certs);
        assert_eq!(first.key.secret_der(), second.key.secret_der());

        let (_, parsed) = x509_parser::parse_x509_certificate(&first.certs[0]).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
        // x509-parser renders an IP SAN as hex bytes: 7f:00:00:01 is 127.0.0.1.
        for want in [
            "7f:00:00:01",
            "DNSName(localhost)",
            "DNSName(db.example.com)",
        ] {
            assert!(
                names.iter().any(|n| n.contains(want)),
                "{want} missing from {names:?}"
            );
        }
    }

    #[test]
    fn half_a_tls_pair_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("gateway.crt"),
            dir.path().join("gateway.key"),
        );
        fs::write(&cert, "x").unwrap();
        let err = load_or_create_tls(&cert, &key, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gateway.crt") && err.contains("gateway.key"),
            "{err}"
        );
    }

    #[test]
    fn garbage_certificate_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("gateway.crt"),
            dir.path().join("gateway.key"),
        );
        fs::write(&cert, "not pem").unwrap();
        fs::write(&key, "not pem").unwrap();
        let err = load_or_create_tls(&cert, &key, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.crt"), "{err}");
    }

    #[test]
    fn server_tls_config_offers_postgresql_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create_tls(&dir.path().join("c"), &dir.path().join("k"), &[]).unwrap();
        let config = server_tls_config(&id).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"postgresql".to_vec()]);
    }

    #[test]
    fn secret_box_round_trips_and_key_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let sealed = SecretBox::load_or_create(&path).unwrap().seal(b"hunter2");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(sealed[0], SEALED_V1);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"hunter2");
    }

    #[test]
    fn secret_box_uses_a_fresh_nonce_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::load_or_create(&dir.path().join("secret.key")).unwrap();
        assert_ne!(sb.seal(b"same"), sb.seal(b"same"));
    }

    #[test]
    fn tampered_sealed_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::load_or_create(&dir.path().join("secret.key")).unwrap();
        let sealed = sb.seal(b"hunter2");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(sb.open(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
        assert!(matches!(sb.open(&[]), Err(KeyError::BadSealed(_))));
        assert!(matches!(
            sb.open(&sealed[..10]),
            Err(KeyError::BadSealed(_))
        ));
    }

    #[test]
    fn secret_sealed_under_another_key_names_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::load_or_create(&dir.path().join("a.key")).unwrap();
        let b = SecretBox::load_or_create(&dir.path().join("b.key")).unwrap();
        let err = b.open(&a.seal(b"hunter2")).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot decrypt the upstream secret"),
            "{err}"
        );
        assert!(err.contains("b.key"), "{err}");
    }

    #[test]
    fn damaged_secret_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        fs::write(&path, "abcd\n").unwrap();
        let err = SecretBox::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("secret.key"), "{err}");
    }
}
