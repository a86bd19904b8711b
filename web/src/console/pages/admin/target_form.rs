//! The target form's fields and their checks, shared by "add" and "edit". The rules follow
//! `pgbastion target add` (a CA only with verify-full, a port in range, a known TLS mode and
//! recording policy) and add what a form needs that a shell already enforces (no empty
//! fields, no control characters, bounded sizes).

use gateway::store::retention::MAX_RETENTION_DAYS;
use gateway::store::{RecordingPolicy, UpstreamTls};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use super::{pg_name, ticked};
use crate::console::error::ConsoleError;

pub const TLS_MODES: [&str; 3] = ["disable", "require", "verify-full"];
pub const RECORDING_POLICIES: [&str; 3] = ["strict", "buffered", "off"];

/// A password longer than this is a paste gone wrong.
const MAX_PASSWORD_BYTES: usize = 1024;

/// The form as the browser sends it: every field text, so that a wrong one gets a message
/// naming it rather than a decoding error.
#[derive(Debug, Default, Deserialize)]
pub struct TargetFields {
    /// Only in the "add" form: the name cannot change (people's connection strings use it).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: String,
    #[serde(default)]
    pub database: String,
    #[serde(default)]
    pub tls_mode: String,
    #[serde(default)]
    pub ca_pem: String,
    #[serde(default)]
    pub upstream_user: String,
    #[serde(default)]
    pub upstream_password: String,
    #[serde(default)]
    pub recording: String,
    /// Days ended sessions are kept; empty keeps them forever.
    #[serde(default)]
    pub retention_days: String,
    /// Only in the "edit" form.
    #[serde(default)]
    pub clear_secret: Option<String>,
}

/// The checked connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub tls_mode: UpstreamTls,
    pub ca_pem: Option<String>,
    pub upstream_user: String,
    pub recording: RecordingPolicy,
    /// Days ended sessions are kept; None: forever.
    pub retention_days: Option<u32>,
}

/// What to do with the stored upstream secret.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretChange {
    Keep,
    Clear,
    Set(String),
}

impl std::fmt::Debug for SecretChange {
    // Never prints the password, not even in a test failure.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretChange::Keep => "Keep",
            SecretChange::Clear => "Clear",
            SecretChange::Set(_) => "Set(..)",
        })
    }
}

impl SecretChange {
    /// For the audit log: what happened to the secret, never the secret.
    pub fn describe(&self) -> &'static str {
        match self {
            SecretChange::Keep => "kept",
            SecretChange::Clear => "cleared",
            SecretChange::Set(_) => "replaced",
        }
    }
}

/// The target name rule shared with the command line (`crate::validate`).
pub fn target_name(value: &str) -> Result<String, ConsoleError> {
    crate::validate::target_name(value).map_err(ConsoleError::BadRequest)
}

fn host(value: &str) -> Result<String, ConsoleError> {
    crate::validate::host(value).map_err(ConsoleError::BadRequest)
}

fn port(value: &str) -> Result<u16, ConsoleError> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(ConsoleError::BadRequest(format!(
            "The port '{}' is not a port number (1 to 65535).",
            value.trim()
        ))),
    }
}

/// The CA bundle: required for verify-full (and only used there), and it must hold at least
/// one certificate the gateway can read.
fn ca_pem(tls_mode: UpstreamTls, value: &str) -> Result<Option<String>, ConsoleError> {
    let pem = value.trim();
    if tls_mode != UpstreamTls::VerifyFull {
        if !pem.is_empty() {
            return Err(ConsoleError::BadRequest(
                "The CA certificate is only used with TLS mode verify-full: clear it, or \
                 choose verify-full."
                    .into(),
            ));
        }
        return Ok(None);
    }
    if pem.is_empty() {
        return Err(ConsoleError::BadRequest(
            "TLS mode verify-full needs the CA certificate (PEM) that signed the server's \
             certificate."
                .into(),
        ));
    }
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        cert.map_err(|e| {
            ConsoleError::BadRequest(format!("The CA certificate cannot be read as PEM: {e}."))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(ConsoleError::BadRequest(
            "The CA certificate holds no '-----BEGIN CERTIFICATE-----' block.".into(),
        ));
    }
    // Kept as entered, with one final newline.
    Ok(Some(format!("{pem}\n")))
}

/// Days to keep ended sessions: a whole number from 1 to a century, or empty for forever.
fn retention_days(value: &str) -> Result<Option<u32>, ConsoleError> {
    let text = value.trim();
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(days) if (1..=MAX_RETENTION_DAYS).contains(&days) => Ok(Some(days)),
        _ => Err(ConsoleError::BadRequest(format!(
            "Keep recordings for '{text}' days is not possible: give a whole number of days \
             from 1 to {MAX_RETENTION_DAYS}, or leave it empty to keep them forever."
        ))),
    }
}

/// A new password: taken as typed (spaces included); empty means "none" (add) or "keep"
/// (edit).
fn password(value: &str) -> Result<Option<String>, ConsoleError> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > MAX_PASSWORD_BYTES {
        return Err(ConsoleError::BadRequest(format!(
            "The upstream password is longer than {MAX_PASSWORD_BYTES} bytes."
        )));
    }
    // The wire protocol ends a password at a NUL: the server would check a different one.
    if value.contains('\0') {
        return Err(ConsoleError::BadRequest(
            "The upstream password contains a NUL character, which PostgreSQL cannot take.".into(),
        ));
    }
    Ok(Some(value.to_string()))
}

impl TargetFields {
    /// The connection settings, checked.
    pub fn settings(&self) -> Result<Settings, ConsoleError> {
        let tls_mode: UpstreamTls = self.tls_mode.parse().map_err(|_| {
            ConsoleError::BadRequest(format!(
                "The TLS mode '{}' is unknown: choose disable, require or verify-full.",
                self.tls_mode
            ))
        })?;
        let recording: RecordingPolicy = self.recording.parse().map_err(|_| {
            ConsoleError::BadRequest(format!(
                "The recording policy '{}' is unknown: choose strict, buffered or off.",
                self.recording
            ))
        })?;
        Ok(Settings {
            host: host(&self.host)?,
            port: port(&self.port)?,
            database: pg_name("upstream database", &self.database)?,
            tls_mode,
            ca_pem: ca_pem(tls_mode, &self.ca_pem)?,
            upstream_user: pg_name("upstream user", &self.upstream_user)?,
            recording,
            retention_days: retention_days(&self.retention_days)?,
        })
    }

    /// The "add" form's password: none when empty.
    pub fn new_password(&self) -> Result<Option<String>, ConsoleError> {
        password(&self.upstream_password)
    }

    /// The "edit" form's secret: a new password, the "clear" box, or neither.
    pub fn secret_change(&self) -> Result<SecretChange, ConsoleError> {
        let new = password(&self.upstream_password)?;
        match (new, ticked(&self.clear_secret)) {
            (Some(_), true) => Err(ConsoleError::BadRequest(
                "Either enter a new upstream password or tick \"clear the stored secret\", \
                 not both."
                    .into(),
            )),
            (Some(p), false) => Ok(SecretChange::Set(p)),
            (None, true) => Ok(SecretChange::Clear),
            (None, false) => Ok(SecretChange::Keep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed test CA (P-256, CN "pgbastion test CA"; its key was thrown away).
    const TEST_CA: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBkDCCATWgAwIBAgIUCiGgtaRq2/tNsNQaVjIbR5i6UEowCgYIKoZIzj0EAwIw\n\
HDEaMBgGA1UEAwwRcGdiYXN0aW9uIHRlc3QgQ0EwIBcNMjYxMTI1MDYyNjU3WhgP\n\
MjEyNjExMDEwNjI2NTdaMBwxGjAYBgNVBAMMEXBnYmFzdGlvbiB0ZXN0IENBMFkw\n\
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEb8c+qfoRj4CT+Ui52daYx0YFOSEogrV/\n\
8zkqMNor4aJAqcKr9MQsDoPdewei+HQilslYA2TyFlXryPbMY8XQhaNTMFEwHQYD\n\
VR0OBBYEFJpi5UJpyMeNJlb/2dvVrcVRGGNeMB8GA1UdIwQYMBaAFJpi5UJpyMeN\n\
Jlb/2dvVrcVRGGNeMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh\n\
ALCIj6JMonLWGodbUrZx9otgc60bc6KuWnpbHpudBlk9AiEA0Ga30BYHg9CNU5LB\n\
kJ1jcsJFRGBk7kGcfmkvmfER9Mc=\n\
-----END CERTIFICATE-----\n";

    fn ca() -> String {
        TEST_CA.to_string()
    }

    fn fields() -> TargetFields {
        TargetFields {
            name: "shop".into(),
            host: "db.internal".into(),
            port: "5432".into(),
            database: "shop".into(),
            tls_mode: "require".into(),
            upstream_user: "shop_ro".into(),
            recording: "strict".into(),
            ..Default::default()
        }
    }

    fn message(e: ConsoleError) -> String {
        assert!(matches!(e, ConsoleError::BadRequest(_)), "{e:?}");
        e.to_string()
    }

    #[test]
    fn a_complete_form_gives_its_settings() {
        let s = fields().settings().unwrap();
        assert_eq!(
            s,
            Settings {
                host: "db.internal".into(),
                port: 5432,
                database: "shop".into(),
                tls_mode: UpstreamTls::Require,
                ca_pem: None,
                upstream_user: "shop_ro".into(),
                recording: RecordingPolicy::Strict,
                retention_days: None,
            }
        );
    }

    #[test]
    fn retention_is_empty_for_forever_or_days_up_to_a_century() {
        let mut f = fields();
        for (text, days) in [("", None), ("  ", None), ("30", Some(30)), (" 1 ", Some(1))] {
            f.retention_days = text.into();
            assert_eq!(f.settings().unwrap().retention_days, days, "{text:?}");
        }
        for text in ["0", "-1", "1.5", "a week", "36501"] {
            f.retention_days = text.into();
            let err = message(f.settings().unwrap_err());
            assert!(err.contains("Keep recordings"), "{text}: {err}");
        }
    }

    #[test]
    fn target_names_are_plain_words() {
        for good in ["shop", "shop_2", "_x", "billing-eu.v2", &"a".repeat(63)] {
            assert_eq!(target_name(good).unwrap(), good);
        }
        assert_eq!(target_name(" shop ").unwrap(), "shop");
        for bad in [
            "",
            "a b",
            "-shop",
            ".shop",
            "shop;drop",
            "café",
            "a/b",
            &"a".repeat(64),
        ] {
            let err = message(target_name(bad).unwrap_err());
            assert!(err.contains("target name"), "{bad}: {err}");
        }
    }

    #[test]
    fn ports_are_1_to_65535() {
        for (text, ok) in [("1", true), ("65535", true), (" 6432 ", true)] {
            assert_eq!(port(text).is_ok(), ok, "{text}");
        }
        for text in ["0", "65536", "-1", "", "54x"] {
            assert!(message(port(text).unwrap_err()).contains("port"), "{text}");
        }
    }

    #[test]
    fn hosts_are_names_or_addresses_without_port_or_spaces() {
        for good in [
            "db.internal",
            "10.0.0.5",
            "::1",
            "fe80::1",
            "db-1_a.example.com",
        ] {
            assert_eq!(host(good).unwrap(), good);
        }
        for bad in [
            "",
            "db internal",
            "db:5432",
            "db:5432/x",
            "[::1]",
            "d\nb",
            &"a".repeat(254),
        ] {
            assert!(message(host(bad).unwrap_err()).contains("host"), "{bad:?}");
        }
    }

    /// Makes one field of a good form wrong.
    type Spoil = fn(&mut TargetFields);

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(Spoil, &str); 7] = [
            (|f| f.host = String::new(), "host"),
            (|f| f.port = "99999".into(), "port"),
            (|f| f.database = String::new(), "upstream database"),
            (|f| f.upstream_user = "x".repeat(64), "upstream user"),
            (|f| f.tls_mode = "prefer".into(), "TLS mode"),
            (|f| f.recording = "sometimes".into(), "recording policy"),
            (|f| f.ca_pem = ca(), "CA certificate"),
        ];
        for (spoil, field) in cases {
            let mut f = fields();
            spoil(&mut f);
            let err = message(f.settings().unwrap_err());
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn verify_full_needs_a_readable_ca() {
        let mut f = fields();
        f.tls_mode = "verify-full".into();
        assert!(message(f.settings().unwrap_err()).contains("needs the CA"));
        f.ca_pem = "not a certificate".into();
        assert!(message(f.settings().unwrap_err()).contains("no '-----BEGIN CERTIFICATE"));
        f.ca_pem = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".into();
        assert!(message(f.settings().unwrap_err()).contains("cannot be read"));
        let pem = ca();
        f.ca_pem = format!("\n{pem}\n\n");
        let s = f.settings().unwrap();
        assert_eq!(s.tls_mode, UpstreamTls::VerifyFull);
        assert_eq!(
            s.ca_pem.as_deref(),
            Some(format!("{}\n", pem.trim()).as_str())
        );
    }

    #[test]
    fn an_empty_password_is_none_and_a_typed_one_is_kept_as_typed() {
        let mut f = fields();
        assert_eq!(f.new_password().unwrap(), None);
        f.upstream_password = " pass word ".into();
        assert_eq!(f.new_password().unwrap().as_deref(), Some(" pass word "));
        f.upstream_password = "a\0b".into();
        assert!(message(f.new_password().unwrap_err()).contains("NUL"));
        f.upstream_password = "x".repeat(1025);
        assert!(message(f.new_password().unwrap_err()).contains("upstream password"));
    }

    #[test]
    fn the_secret_is_kept_unless_replaced_or_cleared_and_never_both() {
        let mut f = fields();
        assert_eq!(f.secret_change().unwrap(), SecretChange::Keep);
        f.clear_secret = Some("on".into());
        assert_eq!(f.secret_change().unwrap(), SecretChange::Clear);
        f.upstream_password = "s3cret".into();
        assert!(message(f.secret_change().unwrap_err()).contains("not both"));
        f.clear_secret = None;
        let set = f.secret_change().unwrap();
        assert_eq!(set, SecretChange::Set("s3cret".into()));
        assert_eq!(format!("{set:?}"), "Set(..)");
        assert_eq!(set.describe(), "replaced");
    }
}
