//! [`StoreRecorder`]: the recorder the gateway runs, writing every session to the store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::capture::{Capture, CaptureLimits, SecretPatterns};
use super::chain::RecordingKey;
use super::event::{Event, EventKind, FORMAT_VERSION};
use super::journal::{JOURNAL_DIR, Journal};
use super::tap::StoreTap;
use super::writer::{self, WriterHandle};
use super::{Recorder, RecordingFailed, SessionInfo, SessionTap};
use crate::config::RecordingConfig;
use crate::store::{RecordingPolicy, Store, Target};

/// The recorder's settings, from `[recording]`.
#[derive(Debug, Clone)]
pub struct RecorderSettings {
    /// Caps for targets that set none of their own.
    pub limits: CaptureLimits,
    pub max_buffered_events: usize,
    pub flush_interval: Duration,
    pub commit_timeout: Duration,
    pub shutdown_flush: Duration,
    /// Where the journal lives; `None` without one (strict sessions then wait for each commit).
    pub journal_dir: Option<PathBuf>,
    /// Columns whose values are redacted.
    pub secrets: Arc<SecretPatterns>,
}

impl RecorderSettings {
    /// Settings from a validated config (`Config::load` checked the secret patterns; should
    /// they still be unusable, only role passwords are redacted and the error is logged).
    pub fn from_config(c: &RecordingConfig, data_dir: &Path) -> Self {
        let secrets = SecretPatterns::new(&c.secret_patterns).unwrap_or_else(|e| {
            tracing::error!(error = %e, "recording.secret_patterns is unusable");
            SecretPatterns::none()
        });
        RecorderSettings {
            secrets: Arc::new(secrets),
            limits: CaptureLimits {
                max_sql_bytes: c.max_sql_bytes,
                max_value_bytes: c.max_value_bytes,
                max_rows: c.max_rows,
                max_result_bytes: c.max_result_bytes,
                max_copy_bytes: c.max_copy_bytes,
                ..CaptureLimits::default()
            },
            max_buffered_events: c.max_buffered_events,
            flush_interval: Duration::from_millis(c.flush_interval_millis),
            commit_timeout: Duration::from_millis(c.commit_timeout_millis),
            shutdown_flush: Duration::from_secs(c.shutdown_flush_secs),
            journal_dir: c.journal.then(|| data_dir.join(JOURNAL_DIR)),
        }
    }

    /// The caps for one target: its own row caps where it sets them, the defaults otherwise.
    pub fn limits_for(&self, target: &Target) -> CaptureLimits {
        let cap = |own: Option<i64>, default: usize| {
            own.map_or(default, |v| usize::try_from(v).unwrap_or(0))
        };
        CaptureLimits {
            max_rows: cap(target.record_max_rows, self.limits.max_rows),
            max_result_bytes: cap(target.record_max_result_bytes, self.limits.max_result_bytes),
            ..self.limits
        }
    }
}

/// Records sessions into the store through one batching writer task.
pub struct StoreRecorder {
    writer: WriterHandle,
    task: Mutex<Option<JoinHandle<usize>>>,
    give_up: CancellationToken,
    settings: RecorderSettings,
}

impl StoreRecorder {
    /// Opens the journal (recover what a previous run left there first: [`super::recover`])
    /// and starts the writer task on the current runtime.
    pub fn start(
        store: Arc<dyn Store>,
        key: Arc<RecordingKey>,
        settings: &RecorderSettings,
    ) -> std::io::Result<StoreRecorder> {
        let journal = match &settings.journal_dir {
            Some(dir) => Some(Journal::open(dir)?),
            None => None,
        };
        let (writer, handle) = writer::writer(store, key, settings, journal);
        let give_up = CancellationToken::new();
        let task = tokio::spawn(writer.run(give_up.clone().cancelled_owned()));
        Ok(StoreRecorder {
            writer: handle,
            task: Mutex::new(Some(task)),
            give_up,
            settings: settings.clone(),
        })
    }

    /// Events handed over and not yet stored.
    pub fn buffered(&self) -> usize {
        self.writer.buffered()
    }

    /// Call once every session has ended: stores and seals what is left, trying for
    /// `shutdown_flush_secs` if the store is failing. Returns the number of events lost (0
    /// unless the store stayed unreachable).
    pub async fn shutdown(&self) -> usize {
        self.writer.close();
        let Some(mut task) = self.task.lock().expect("task lock").take() else {
            return 0;
        };
        let lost = tokio::select! {
            done = &mut task => done,
            _ = tokio::time::sleep(self.settings.shutdown_flush) => {
                self.give_up.cancel();
                task.await
            }
        };
        lost.unwrap_or_else(|e| {
            tracing::error!(error = %e, "the recording writer failed");
            usize::MAX
        })
    }
}

impl Recorder for StoreRecorder {
    fn start(&self, s: &SessionInfo) -> Result<Option<Box<dyn SessionTap>>, RecordingFailed> {
        let policy = s.target.recording;
        if policy == RecordingPolicy::Off {
            return Ok(None);
        }
        let first = Event {
            seq: 0,
            at: s.started_at,
            kind: EventKind::SessionStart {
                session_id: s.session_id,
                credential_id: s.credential_id,
                person: s.person_login.clone(),
                groups: s.groups.clone(),
                target: s.target.name.clone(),
                db_role: s.db_role.clone(),
                client_addr: s.client_addr.to_string(),
                application_name: s.application_name.clone(),
                tls_version: s.tls_version.clone(),
                format_version: FORMAT_VERSION,
            },
        };
        let progress = self.writer.start(s.session_id, policy, first)?;
        Ok(Some(Box::new(StoreTap::new(
            policy,
            Capture::with_secrets(
                self.settings.limits_for(&s.target),
                self.settings.secrets.clone(),
            ),
            progress,
            self.writer.clone(),
        ))))
    }
}
