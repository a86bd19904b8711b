//! Prometheus metrics: every name, label and bucket in one place, and the handles the gateway
//! records through.
//!
//! The process installs a recorder (`pgbastion serve` installs the Prometheus one) before the
//! first call to [`get`], which resolves every handle once. After that, recording is an atomic
//! add on a handle: no name lookup, no lock, no allocation, so the relay can count every chunk.
//! Without a recorder (the admin commands, unit tests) every handle does nothing.
//!
//! Labels take values from small fixed sets only: never a session id, a person, a target or SQL,
//! so the number of series stays bounded whatever the traffic.

use std::sync::OnceLock;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

use crate::record::Direction;
use crate::store::{EndReason, RecordingPolicy};

pub const CONNECTIONS_ACTIVE: &str = "pgbastion_connections_active";
pub const CONNECTIONS_TOTAL: &str = "pgbastion_connections_total";
pub const CONNECTIONS_REFUSED: &str = "pgbastion_connections_refused_total";
pub const AUTHENTICATIONS: &str = "pgbastion_authentications_total";
pub const BYTES: &str = "pgbastion_bytes_total";
pub const MESSAGES: &str = "pgbastion_messages_total";
pub const STATEMENT_DURATION: &str = "pgbastion_statement_duration_seconds";
pub const SESSIONS_ENDED: &str = "pgbastion_sessions_ended_total";
pub const SESSIONS_ENDED_BY_RECORDING: &str = "pgbastion_sessions_ended_by_recording_total";
pub const RECORDER_QUEUED_EVENTS: &str = "pgbastion_recorder_queued_events";
pub const RECORDER_BATCH_EVENTS: &str = "pgbastion_recorder_batch_events";
pub const RECORDER_COMMIT_DURATION: &str = "pgbastion_recorder_commit_duration_seconds";
pub const RECORDER_EVENTS_DROPPED: &str = "pgbastion_recorder_events_dropped_total";
pub const STORE_ERRORS: &str = "pgbastion_store_errors_total";
pub const CANCEL_REQUESTS: &str = "pgbastion_cancel_requests_total";
pub const BUILD_INFO: &str = "pgbastion_build_info";

/// Bucket bounds of each histogram, for the exporter (`(name, upper bounds)`).
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (
        STATEMENT_DURATION,
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0, 60.0, 300.0,
        ],
    ),
    (
        RECORDER_BATCH_EVENTS,
        &[
            1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
        ],
    ),
    (
        RECORDER_COMMIT_DURATION,
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ],
    ),
];

/// Why a connection was turned away (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `gateway.max_connections`.
    TooManyConnections,
    /// No usable startup: no TLS, a bad packet, a timeout, a disallowed parameter.
    Startup,
    /// The credential was refused or not given in time.
    Authentication,
    /// The session could not be stored.
    StoreUnavailable,
    /// The gateway could not log in to the target.
    Upstream,
    /// The session could not be recorded as its target's policy demands.
    Recording,
}

impl Refusal {
    const ALL: [Refusal; 6] = [
        Refusal::TooManyConnections,
        Refusal::Startup,
        Refusal::Authentication,
        Refusal::StoreUnavailable,
        Refusal::Upstream,
        Refusal::Recording,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::Startup => "startup",
            Refusal::Authentication => "authentication",
            Refusal::StoreUnavailable => "store_unavailable",
            Refusal::Upstream => "upstream",
            Refusal::Recording => "recording",
        }
    }
}

/// How a login's credential check ended (label `outcome`): what happened, never who.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Accepted,
    /// Not a valid credential: forged, malformed, expired, revoked (SQLSTATE 28P01).
    InvalidCredential,
    /// A valid credential used where it does not apply, or without a grant (28000).
    NotPermitted,
    /// The store could not be asked (57P03).
    StoreUnavailable,
    /// The client broke off or sent something else than a password.
    Protocol,
    TimedOut,
}

impl AuthOutcome {
    const ALL: [AuthOutcome; 6] = [
        AuthOutcome::Accepted,
        AuthOutcome::InvalidCredential,
        AuthOutcome::NotPermitted,
        AuthOutcome::StoreUnavailable,
        AuthOutcome::Protocol,
        AuthOutcome::TimedOut,
    ];

    /// The outcome of a refusal, from the SQLSTATE the client is sent.
    pub fn of_refusal(sqlstate: &str) -> AuthOutcome {
        match sqlstate {
            "28P01" => AuthOutcome::InvalidCredential,
            "28000" => AuthOutcome::NotPermitted,
            "57P03" => AuthOutcome::StoreUnavailable,
            _ => AuthOutcome::Protocol,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthOutcome::Accepted => "accepted",
            AuthOutcome::InvalidCredential => "invalid_credential",
            AuthOutcome::NotPermitted => "not_permitted",
            AuthOutcome::StoreUnavailable => "store_unavailable",
            AuthOutcome::Protocol => "protocol_error",
            AuthOutcome::TimedOut => "timed_out",
        }
    }
}

/// What the gateway was doing when the store failed (label `operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    /// Checking a credential at login.
    Authentication,
    /// Storing a session's start or end.
    Session,
    /// Storing recorded events, a session's end with its seal.
    Recording,
    /// Polling for revocations and termination requests.
    Poll,
    /// Handing cancel requests to the other gateways, or watching for theirs.
    Cancel,
}

impl StoreOperation {
    const ALL: [StoreOperation; 5] = [
        StoreOperation::Authentication,
        StoreOperation::Session,
        StoreOperation::Recording,
        StoreOperation::Poll,
        StoreOperation::Cancel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Authentication => "authentication",
            StoreOperation::Session => "session",
            StoreOperation::Recording => "recording",
            StoreOperation::Poll => "poll",
            StoreOperation::Cancel => "cancel",
        }
    }
}

/// What became of a CancelRequest (label `step`). Each request a client sends counts as
/// `received`, then as `applied` (its session is here), `forwarded` or `shed`; each one another
/// gateway forwarded counts as `applied` by the gateway holding its session (and by no other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStep {
    /// A client sent it to this gateway.
    Received,
    /// Not for a session here: handed to the store for the other gateways.
    Forwarded,
    /// Not for a session here, and not forwarded: over the forwarding cap, or the store failed.
    Shed,
    /// For a live session here (from its client or from another gateway): sent to its server.
    Applied,
}

impl CancelStep {
    const ALL: [CancelStep; 4] = [
        CancelStep::Received,
        CancelStep::Forwarded,
        CancelStep::Shed,
        CancelStep::Applied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CancelStep::Received => "received",
            CancelStep::Forwarded => "forwarded",
            CancelStep::Shed => "shed",
            CancelStep::Applied => "applied",
        }
    }
}

fn direction_label(direction: Direction) -> &'static str {
    match direction {
        Direction::ClientToServer => "client_to_server",
        Direction::ServerToClient => "server_to_client",
    }
}

fn direction_index(direction: Direction) -> usize {
    match direction {
        Direction::ClientToServer => 0,
        Direction::ServerToClient => 1,
    }
}

/// The handles of every metric, resolved once.
pub struct Metrics {
    pub connections_active: Gauge,
    pub connections_total: Counter,
    refused: [Counter; Refusal::ALL.len()],
    authentications: [Counter; AuthOutcome::ALL.len()],
    bytes: [Counter; 2],
    messages: [Counter; 2],
    pub statement_duration: Histogram,
    /// Strict, buffered.
    ended_by_recording: [Counter; 2],
    pub recorder_queued_events: Gauge,
    pub recorder_batch_events: Histogram,
    pub recorder_commit_duration: Histogram,
    pub recorder_events_dropped: Counter,
    store_errors: [Counter; StoreOperation::ALL.len()],
    cancel_requests: [Counter; CancelStep::ALL.len()],
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics. The first call registers them all with the recorder installed at that
/// moment (so that every series, counters at 0 included, shows from the first scrape).
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::register)
}

impl Metrics {
    fn register() -> Metrics {
        describe();
        gauge!(BUILD_INFO,
            "version" => env!("CARGO_PKG_VERSION"),
            // Set by a release build that knows its commit; a plain `cargo build` does not.
            "commit" => option_env!("PGBASTION_GIT_COMMIT").unwrap_or("unknown"))
        .set(1.0);
        let both = |name: &'static str| {
            [Direction::ClientToServer, Direction::ServerToClient]
                .map(|d| counter!(name, "direction" => direction_label(d)))
        };
        Metrics {
            connections_active: gauge!(CONNECTIONS_ACTIVE),
            connections_total: counter!(CONNECTIONS_TOTAL),
            refused: Refusal::ALL.map(|r| counter!(CONNECTIONS_REFUSED, "reason" => r.as_str())),
            authentications: AuthOutcome::ALL
                .map(|o| counter!(AUTHENTICATIONS, "outcome" => o.as_str())),
            bytes: both(BYTES),
            messages: both(MESSAGES),
            statement_duration: histogram!(STATEMENT_DURATION),
            ended_by_recording: [RecordingPolicy::Strict, RecordingPolicy::Buffered]
                .map(|p| counter!(SESSIONS_ENDED_BY_RECORDING, "policy" => policy_label(p))),
            recorder_queued_events: gauge!(RECORDER_QUEUED_EVENTS),
            recorder_batch_events: histogram!(RECORDER_BATCH_EVENTS),
            recorder_commit_duration: histogram!(RECORDER_COMMIT_DURATION),
            recorder_events_dropped: counter!(RECORDER_EVENTS_DROPPED),
            store_errors: StoreOperation::ALL
                .map(|op| counter!(STORE_ERRORS, "operation" => op.as_str())),
            cancel_requests: CancelStep::ALL
                .map(|step| counter!(CANCEL_REQUESTS, "step" => step.as_str())),
        }
    }

    pub fn refused(&self, reason: Refusal) -> &Counter {
        &self.refused[reason as usize]
    }

    pub fn authentication(&self, outcome: AuthOutcome) -> &Counter {
        &self.authentications[outcome as usize]
    }

    /// Bytes forwarded in `direction`.
    pub fn bytes(&self, direction: Direction) -> &Counter {
        &self.bytes[direction_index(direction)]
    }

    /// Protocol messages forwarded in `direction`.
    pub fn messages(&self, direction: Direction) -> &Counter {
        &self.messages[direction_index(direction)]
    }

    pub fn store_error(&self, operation: StoreOperation) -> &Counter {
        &self.store_errors[operation as usize]
    }

    pub fn cancel_request(&self, step: CancelStep) -> &Counter {
        &self.cancel_requests[step as usize]
    }

    /// A session ended because its recording could not be kept as its policy demands.
    pub fn ended_by_recording(&self, policy: RecordingPolicy) {
        match policy {
            RecordingPolicy::Strict => self.ended_by_recording[0].increment(1),
            RecordingPolicy::Buffered => self.ended_by_recording[1].increment(1),
            // Unrecorded sessions cannot fail their recording.
            RecordingPolicy::Off => {}
        }
    }

    /// A session ended (once per session that got past its login).
    pub fn session_ended(&self, reason: EndReason) {
        // Looked up by name: once per session, off the relay's path.
        counter!(SESSIONS_ENDED, "reason" => reason.as_str()).increment(1);
    }
}

fn policy_label(policy: RecordingPolicy) -> &'static str {
    match policy {
        RecordingPolicy::Strict => "strict",
        RecordingPolicy::Buffered => "buffered",
        RecordingPolicy::Off => "off",
    }
}

/// HELP lines and units for the exporter.
fn describe() {
    describe_gauge!(
        CONNECTIONS_ACTIVE,
        "Client connections open now, logging in or in session."
    );
    describe_counter!(CONNECTIONS_TOTAL, "Client connections accepted.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Client connections turned away, by reason."
    );
    describe_counter!(AUTHENTICATIONS, "Credential checks at login, by outcome.");
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Bytes relayed between clients and targets, by direction."
    );
    describe_counter!(
        MESSAGES,
        "Protocol messages relayed between clients and targets, by direction."
    );
    describe_histogram!(
        STATEMENT_DURATION,
        Unit::Seconds,
        "From a client's Query or Execute to the target's answer, as the gateway sees them."
    );
    describe_counter!(SESSIONS_ENDED, "Sessions ended, by end reason.");
    describe_counter!(
        SESSIONS_ENDED_BY_RECORDING,
        "Sessions refused or ended because their recording could not be kept, by policy."
    );
    describe_gauge!(
        RECORDER_QUEUED_EVENTS,
        "Recorded events handed to the writer and not yet committed to the store."
    );
    describe_histogram!(
        RECORDER_BATCH_EVENTS,
        "Events per store transaction of the recording writer."
    );
    describe_histogram!(
        RECORDER_COMMIT_DURATION,
        Unit::Seconds,
        "Time of one store transaction of the recording writer."
    );
    describe_counter!(
        RECORDER_EVENTS_DROPPED,
        "Recorded events the store never took (must stay 0)."
    );
    describe_counter!(STORE_ERRORS, "Failed store operations, by operation.");
    describe_counter!(
        CANCEL_REQUESTS,
        "CancelRequests: received from clients, forwarded to the other gateways through the \
         store, shed (not forwarded), applied to a session here."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the running version and commit."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_map_to_outcomes_without_naming_anyone() {
        assert_eq!(
            AuthOutcome::of_refusal("28P01"),
            AuthOutcome::InvalidCredential
        );
        assert_eq!(AuthOutcome::of_refusal("28000"), AuthOutcome::NotPermitted);
        assert_eq!(
            AuthOutcome::of_refusal("57P03"),
            AuthOutcome::StoreUnavailable
        );
        assert_eq!(AuthOutcome::of_refusal("08P01"), AuthOutcome::Protocol);
    }

    #[test]
    fn label_arrays_are_indexed_by_the_enums_in_order() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.as_str());
        }
        for (i, o) in AuthOutcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{}", o.as_str());
        }
        for (i, op) in StoreOperation::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{}", op.as_str());
        }
        for (i, step) in CancelStep::ALL.iter().enumerate() {
            assert_eq!(*step as usize, i, "{}", step.as_str());
        }
    }
}
