//! Fuzzing the decoders that read what clients and servers send.
//!
//! Two fuzzers run the same targets ([`Target::run`]):
//!
//! - This module's own, on the stable toolchain with nothing to install: a mutational fuzzer
//!   without coverage feedback. Valid seeds (every message type the gateway reads, both
//!   directions, startup packets) are mutated the ways that break decoders (bit flips,
//!   interesting integers in length fields, truncation, insertion, splicing) by a seeded
//!   generator, so a failure reproduces from its seed and iteration.
//! - libFuzzer, coverage-guided, through cargo-fuzz: the crate in `tests/fuzz/` has one
//!   `fuzz_target!` per target calling [`Target::run`], and starts from the same seeds written
//!   as files (`tests/fuzz/corpus/`, [`write_seed_corpus`]).
//!
//! Each input goes through the same code the gateway runs on it, and each target asserts what
//! must hold of the result, not only that nothing panics:
//!
//! - [`Target::Startup`]: the startup packet's length word and body (`protocol::startup`);
//!   accepted lengths are within bounds, and a packet that decodes encodes back to its bytes.
//! - [`Target::Client`], [`Target::Server`]: headers located as the relay does (every length
//!   checked against the bytes, with and without a limit) and frames split from the bytes as
//!   the recorder does, some cut short as the relay streams large ones, through the recorder's
//!   capture in that direction; and the client's password message and the server's
//!   authentication, error and key messages through the gateway's own parsers, whose results
//!   must come from the body. What the capture records stays within its caps, and no value
//!   says it is shorter than the text kept of it (lossily kept text aside).
//! - [`Target::Session`]: both directions interleaved through one capture, its events folded
//!   into statements by the replay's folder (with details) and the index's, which must agree;
//!   statements come out once, in order, and a finished session resumes at its end.
//!
//! In this module's runs a panic is a finding: the input is written to
//! `target/fuzz-findings/` with its seed. `tests/tests/fuzz.rs` runs a short fixed run in the
//! suite and replays the libFuzzer corpus ([`replay_corpus`]); `scripts/fuzz` runs either
//! fuzzer for as long as asked.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use chrono::Utc;
use gateway::protocol::ProtocolError;
use gateway::protocol::backend::{AuthRequest, ErrorFields, parse_backend_key_data};
use gateway::protocol::frame::{HEADER_LEN, Header, parse_header, split_frames};
use gateway::protocol::frontend::parse_password;
use gateway::protocol::startup::{self, StartupPacket};
use gateway::record::CaptureLimits;
use gateway::record::Direction;
use gateway::record::capture::Capture;
use gateway::record::event::{Capped, Event, EventKind};
use gateway::record::statements::{IndexedStatement, StatementFolder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Startup,
    Client,
    Server,
    Session,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Startup,
        Target::Client,
        Target::Server,
        Target::Session,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Startup => "startup",
            Target::Client => "client",
            Target::Server => "server",
            Target::Session => "session",
        }
    }

    pub fn by_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The name of its cargo-fuzz target (`tests/fuzz/fuzz_targets/`), which is also its corpus
    /// folder's under `tests/fuzz/corpus/`.
    pub fn corpus_name(self) -> &'static str {
        match self {
            Target::Startup => "startup",
            Target::Client => "client_frames",
            Target::Server => "server_frames",
            Target::Session => "session",
        }
    }

    fn seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::Startup => startup_seeds(),
            Target::Client => vec![client_stream()],
            Target::Server => vec![server_stream()],
            // A direction byte before each frame: even client, odd server.
            Target::Session => vec![session_stream()],
        }
    }

    /// Runs one input; a panic propagates.
    pub fn run(self, input: &[u8]) {
        match self {
            Target::Startup => run_startup(input),
            Target::Client => run_one_way(Direction::ClientToServer, input),
            Target::Server => run_one_way(Direction::ServerToClient, input),
            Target::Session => run_session(input),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub executions: u64,
    pub findings: Vec<PathBuf>,
    pub elapsed: Duration,
}

/// Mutates the target's seeds `iterations` times (or until `budget` passes) from `seed`.
pub fn fuzz(target: Target, seed: u64, iterations: u64, budget: Duration) -> Report {
    let seeds = target.seeds();
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut report = Report::default();
    // The hook would print every caught panic; findings are reported by file instead.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for seed_input in &seeds {
        check(target, seed_input, seed, 0, &mut report);
    }
    for i in 1..=iterations {
        if started.elapsed() > budget {
            break;
        }
        let mut input = seeds[rng.below(seeds.len())].clone();
        let rounds = 1 + rng.below(8);
        for _ in 0..rounds {
            mutate(&mut input, &seeds, &mut rng);
        }
        check(target, &input, seed, i, &mut report);
    }
    std::panic::set_hook(hook);
    report.elapsed = started.elapsed();
    report
}

fn check(target: Target, input: &[u8], seed: u64, iteration: u64, report: &mut Report) {
    report.executions += 1;
    if catch_unwind(AssertUnwindSafe(|| target.run(input))).is_err() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-findings");
        let path = dir.join(format!("{}-{seed}-{iteration}.bin", target.name()));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(&path, input);
        report.findings.push(path);
    }
}

// ---- the targets ----
//
// Each target asserts what must hold of its decoders' output, not only that they return: what
// a decoder reads back encodes to the bytes it was read from, lengths are checked before they
// are trusted, and what the capture keeps stays within its caps and says how long each value was.

/// The startup packet limit the handshake applies.
const STARTUP_LIMIT: usize = 10_000;

fn run_startup(input: &[u8]) {
    let Some((len_word, body)) = input.split_first_chunk::<4>() else {
        return;
    };
    if let Ok(len) = startup::body_len(*len_word, STARTUP_LIMIT) {
        let total = len + 4;
        assert!(
            (startup::MIN_STARTUP_LEN..=STARTUP_LIMIT).contains(&total),
            "body_len accepted a packet of {total} bytes"
        );
        assert_eq!(i32::from_be_bytes(*len_word) as usize, total);
        check_startup(&body[..len.min(body.len())]);
    }
    check_startup(body);
}

/// A startup body that decodes is exactly the packet it decodes to: encoding it again gives
/// the same bytes (so nothing was invented, skipped or read past the end).
fn check_startup(body: &[u8]) {
    let Ok(packet) = startup::decode(body) else {
        return;
    };
    let again = match &packet {
        StartupPacket::SslRequest => startup::encode_ssl_request()[4..].to_vec(),
        StartupPacket::GssEncRequest => startup::GSSENC_REQUEST_CODE.to_be_bytes().to_vec(),
        StartupPacket::CancelRequest {
            process_id,
            secret_key,
        } => startup::encode_cancel(*process_id, *secret_key)[4..].to_vec(),
        StartupPacket::Startup(m) => {
            assert_eq!(m.major, 3, "a startup message of protocol {}", m.major);
            let mut packet = startup::encode_startup(&m.params);
            // The encoder writes 3.0; the client's minor version is what it asked for.
            let version = (3i32 << 16) | i32::from(m.minor);
            packet[4..8].copy_from_slice(&version.to_be_bytes());
            packet.split_off(4)
        }
    };
    assert_eq!(
        again, body,
        "{packet:?} does not encode back to the bytes it was decoded from"
    );
}

/// Small caps, so that capping paths run as often as the rest.
fn limits() -> CaptureLimits {
    CaptureLimits {
        max_sql_bytes: 64,
        max_value_bytes: 16,
        max_rows: 3,
        max_result_bytes: 64,
        max_copy_bytes: 32,
        ..CaptureLimits::default()
    }
}

/// Frames of `bytes`; one in five cut short (the relay hands over the first part of a message
/// too large to hold).
fn frames(bytes: &[u8]) -> Vec<gateway::protocol::frame::Frame> {
    let mut frames = split_frames(Bytes::copy_from_slice(bytes)).unwrap_or_default();
    for (i, frame) in frames.iter_mut().enumerate() {
        if i % 5 == 4 && !frame.body.is_empty() {
            frame.body = frame.body.slice(..frame.body.len() / 2);
        }
    }
    frames
}

/// A client message limit small enough that fuzzed lengths cross it often.
const FRAME_LIMIT: usize = 1024;

/// How a walk over headers stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalkEnd {
    /// At the end of the input, or before a message not all there.
    Partial,
    /// A length word below 4 (it counts itself).
    TooSmall,
    /// A body over the limit.
    TooLarge,
}

/// Locates messages header by header as the relay does, checking each header against the
/// bytes it was read from: where each whole message starts, and why the walk stopped.
fn walk_headers(input: &[u8], limit: usize) -> (Vec<(usize, Header)>, WalkEnd) {
    let mut found = Vec::new();
    let mut at = 0;
    loop {
        let rest = &input[at..];
        let wire_len = rest
            .get(1..HEADER_LEN)
            .map(|l| i64::from(i32::from_be_bytes([l[0], l[1], l[2], l[3]])));
        match (parse_header(rest, limit), wire_len) {
            (Ok(None), None) => return (found, WalkEnd::Partial),
            (Ok(Some(h)), Some(len)) => {
                assert_eq!(h.tag, rest[0]);
                assert_eq!(h.body_len as i64 + 4, len, "body length of {h:?}");
                assert!(h.body_len <= limit, "{h:?} over the limit of {limit}");
                assert_eq!(h.frame_len(), HEADER_LEN + h.body_len);
                if rest.len() < h.frame_len() {
                    return (found, WalkEnd::Partial);
                }
                found.push((at, h));
                at += h.frame_len();
            }
            (Err(ProtocolError::LengthTooSmall { len: refused }), Some(len)) => {
                assert!(
                    len < 4 && refused == len,
                    "length {len} refused as too small"
                );
                return (found, WalkEnd::TooSmall);
            }
            (Err(ProtocolError::TooLarge { len: refused, .. }), Some(len)) => {
                assert!(
                    len - 4 > limit as i64 && refused as i64 == len - 4,
                    "length {len} refused as over {limit}"
                );
                return (found, WalkEnd::TooLarge);
            }
            (other, len) => panic!("header {other:?} for the length word {len:?}"),
        }
    }
}

/// The recorder's split gives the relay's messages, each the input's own bytes, in order.
fn check_framing(input: &[u8]) {
    let (whole, end) = walk_headers(input, usize::MAX);
    assert_ne!(end, WalkEnd::TooLarge, "no body is over usize::MAX");
    let (capped, _) = walk_headers(input, FRAME_LIMIT);
    assert!(
        capped.len() <= whole.len() && capped[..] == whole[..capped.len()],
        "a limit changed where messages start"
    );
    match split_frames(Bytes::copy_from_slice(input)) {
        Ok(frames) => {
            assert_ne!(end, WalkEnd::TooSmall, "a length below 4 was split");
            assert_eq!(frames.len(), whole.len());
            for (frame, (at, h)) in frames.iter().zip(&whole) {
                assert!(frame.is_complete());
                assert_eq!((frame.tag, frame.body_len), (h.tag, h.body_len));
                assert_eq!(&frame.body[..], &input[at + HEADER_LEN..at + h.frame_len()]);
            }
        }
        Err(e) => assert_eq!(end, WalkEnd::TooSmall, "split refused the input: {e}"),
    }
}

fn run_one_way(direction: Direction, input: &[u8]) {
    check_framing(input);
    let limits = limits();
    let mut capture = Capture::new(limits);
    let mut out = Vec::new();
    for frame in frames(input) {
        let body = &frame.body[..];
        match (direction, frame.tag) {
            (Direction::ClientToServer, b'p') => {
                if let Ok(password) = parse_password(body) {
                    assert_eq!([password.as_bytes(), b"\0"].concat(), body);
                }
            }
            (Direction::ServerToClient, b'R') => check_auth_request(body),
            (Direction::ServerToClient, b'E' | b'N') => {
                let f = ErrorFields::parse(body);
                if std::str::from_utf8(body).is_ok() {
                    let read = [&f.severity, &f.code, &f.message]
                        .into_iter()
                        .chain(f.detail.as_ref())
                        .chain(f.hint.as_ref())
                        .map(|v| v.len())
                        .sum::<usize>();
                    assert!(read <= body.len(), "{f:?} is longer than its message");
                }
            }
            (Direction::ServerToClient, b'K') => {
                if let Ok((process_id, secret_key)) = parse_backend_key_data(body) {
                    let read = [process_id.to_be_bytes(), secret_key.to_be_bytes()].concat();
                    assert_eq!(read, body[..8]);
                }
            }
            _ => {}
        }
        let before = out.len();
        capture.on_frame(direction, &frame, Utc::now(), &mut out);
        check_events(&out[before..], &limits);
    }
    let before = out.len();
    capture.finish(&mut out);
    check_events(&out[before..], &limits);
}

/// What an authentication request holds was in its body.
fn check_auth_request(body: &[u8]) {
    let Ok(request) = AuthRequest::parse(body) else {
        return;
    };
    let after_code = &body[4..];
    match &request {
        AuthRequest::Md5Password { salt } => assert_eq!(salt[..], after_code[..4]),
        AuthRequest::Sasl { mechanisms } => {
            let read: usize = mechanisms.iter().map(|m| m.len() + 1).sum();
            assert!(read < after_code.len(), "{request:?} read past its body");
            assert!(
                mechanisms
                    .iter()
                    .all(|m| !m.is_empty() && !m.contains('\0'))
            );
        }
        AuthRequest::SaslContinue { data } | AuthRequest::SaslFinal { data } => {
            assert_eq!(data[..], *after_code)
        }
        AuthRequest::Ok | AuthRequest::CleartextPassword | AuthRequest::Unsupported(_) => {}
    }
}

/// What the capture recorded stays within its caps and says truthfully how long each value was.
fn check_events(events: &[EventKind], limits: &CaptureLimits) {
    for (i, event) in events.iter().enumerate() {
        let capped = |value: &Capped, cap: usize| check_capped(value, cap, event);
        match event {
            EventKind::Query { sql, .. } | EventKind::Parse { sql, .. } => {
                capped(sql, limits.max_sql_bytes)
            }
            EventKind::Execute { sql: Some(sql), .. } => capped(sql, limits.max_sql_bytes),
            EventKind::Bind { params, .. } | EventKind::FunctionCall { args: params, .. } => {
                for value in params.iter().filter_map(|p| p.value.as_ref()) {
                    capped(value, limits.max_value_bytes);
                }
            }
            EventKind::Rows { rows, omitted } => {
                assert!(!rows.is_empty() || *omitted > 0, "an empty Rows event");
                assert!(rows.len() <= limits.max_rows, "{} rows kept", rows.len());
                let values = || rows.iter().flatten().flatten();
                let kept: usize = values().map(|v| v.text.len()).sum();
                assert!(kept <= limits.max_result_bytes, "{kept} bytes of rows kept");
                for value in values() {
                    capped(value, limits.max_value_bytes);
                }
            }
            EventKind::CopyData { data } => {
                capped(data, limits.max_copy_bytes);
                match events.get(i + 1) {
                    Some(EventKind::CopyEnd { bytes, .. }) => assert_eq!(
                        data.len, *bytes,
                        "COPY data of {} bytes, COPY end says {bytes}",
                        data.len
                    ),
                    other => panic!("COPY data followed by {other:?}, not its end"),
                }
            }
            EventKind::Notification { payload, .. } => capped(payload, limits.max_value_bytes),
            _ => {}
        }
    }
}

fn check_capped(value: &Capped, cap: usize, event: &EventKind) {
    assert!(
        value.text.len() <= cap,
        "{} bytes kept over a cap of {cap}: {event:?}",
        value.text.len()
    );
    if value.hex {
        assert!(
            value.text.len().is_multiple_of(2)
                && value
                    .text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "not lowercase hex: {event:?}"
        );
    }
    // Text that was not UTF-8 is kept lossily: a replacement character stands for fewer bytes
    // than its own three.
    if !value.redacted && !value.text.contains(char::REPLACEMENT_CHARACTER) {
        let kept = if value.hex {
            value.text.len() / 2
        } else {
            value.text.len()
        };
        assert!(
            kept as u64 <= value.len,
            "{kept} bytes kept of a value said to be {} long: {event:?}",
            value.len
        );
    }
}

/// Both folders of a session: the replay's (with details) and the index's.
struct Folders {
    replay: StatementFolder,
    index: StatementFolder,
    from_replay: Vec<IndexedStatement>,
    from_index: Vec<IndexedStatement>,
    loose: Vec<i64>,
    seq: u64,
}

impl Folders {
    fn push(&mut self, kinds: &mut Vec<EventKind>) {
        for kind in kinds.drain(..) {
            let event = Event {
                seq: self.seq,
                at: Utc::now(),
                kind,
            };
            self.replay.push(&event);
            self.index.push(&event);
            self.seq += 1;
        }
        self.take();
    }

    fn take(&mut self) {
        self.from_replay.extend(
            self.replay
                .take_finished_with_details()
                .into_iter()
                .map(|(statement, _)| statement),
        );
        self.from_index.extend(self.index.take_finished());
        self.loose
            .extend(self.replay.take_loose().into_iter().map(|(seq, _)| seq));
    }
}

fn run_session(input: &[u8]) {
    let limits = limits();
    let mut capture = Capture::new(limits);
    let mut folders = Folders {
        replay: StatementFolder::with_details(0, 'I'),
        index: StatementFolder::new(0),
        from_replay: Vec::new(),
        from_index: Vec::new(),
        loose: Vec::new(),
        seq: 0,
    };
    let mut kinds: Vec<EventKind> = Vec::new();
    let mut rest = input;
    while let Some((&direction, after)) = rest.split_first() {
        let Some(len) = after
            .get(1..5)
            .and_then(|l| <[u8; 4]>::try_from(l).ok())
            .map(|l| i32::from_be_bytes(l).max(4) as usize + 1)
        else {
            break;
        };
        let (frame_bytes, next) = after.split_at(len.min(after.len()));
        rest = next;
        let direction = if direction % 2 == 0 {
            Direction::ClientToServer
        } else {
            Direction::ServerToClient
        };
        for frame in frames(frame_bytes) {
            capture.on_frame(direction, &frame, Utc::now(), &mut kinds);
        }
        check_events(&kinds, &limits);
        folders.push(&mut kinds);
    }
    capture.finish(&mut kinds);
    check_events(&kinds, &limits);
    folders.push(&mut kinds);
    folders.replay.finish();
    folders.index.finish();
    folders.take();

    let events = i64::try_from(folders.seq).unwrap();
    for folder in [&folders.replay, &folders.index] {
        assert_eq!(folder.next_seq(), events);
        assert_eq!(
            folder.resume_seq(),
            events,
            "a finished session resumes at its end"
        );
    }
    // Statements come out once each, in order, each at an event of the session.
    for pair in folders.from_replay.windows(2) {
        assert!(pair[0].seq < pair[1].seq, "statements out of order");
    }
    if let Some(last) = folders.from_replay.last() {
        assert!(
            last.seq < events,
            "a statement at seq {} of {events}",
            last.seq
        );
    }
    assert!(folders.loose.iter().all(|&seq| (0..events).contains(&seq)));
    // The replay shows the statements the index holds.
    assert_eq!(
        folders.from_replay, folders.from_index,
        "the replay's folder and the index's disagree"
    );
}

// ---- mutation ----

/// xorshift64: seeded, so a run reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: [i32; 12] = [
    0,
    1,
    3,
    4,
    5,
    8,
    -1,
    -2,
    0x7fff_ffff,
    i32::MIN,
    0x10000,
    255,
];

fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    if input.is_empty() {
        input.push(rng.next() as u8);
        return;
    }
    let at = rng.below(input.len());
    match rng.below(9) {
        0 => input[at] ^= 1 << rng.below(8),
        1 => input[at] = [0, 0xff, 0x7f, 0x80, b'\0', b'Q', b'D'][rng.below(7)],
        2 => {
            // An interesting integer where a length or count may be.
            let value = INTERESTING[rng.below(INTERESTING.len())].to_be_bytes();
            let at = at.min(input.len().saturating_sub(4));
            let end = (at + 4).min(input.len());
            input[at..end].copy_from_slice(&value[..end - at]);
        }
        3 => {
            let value = (INTERESTING[rng.below(INTERESTING.len())] as i16).to_be_bytes();
            let at = at.min(input.len().saturating_sub(2));
            let end = (at + 2).min(input.len());
            input[at..end].copy_from_slice(&value[..end - at]);
        }
        4 => input.truncate(at),
        5 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        6 => {
            let end = (at + 1 + rng.below(64)).min(input.len());
            input.drain(at..end);
        }
        7 => {
            // A stretch repeated (a message sent twice, a field doubled).
            let end = (at + 1 + rng.below(64)).min(input.len());
            let copy = input[at..end].to_vec();
            input.splice(at..at, copy);
        }
        _ => {
            // Splice in part of a seed.
            let other = &seeds[rng.below(seeds.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(128)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
        }
    }
    // Bounded, so that a run measures decoders, not memcpy.
    input.truncate(64 * 1024);
}

// ---- seeds: every message the gateway reads, valid ----

fn msg(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let mut b = BytesMut::new();
    body(&mut b);
    out.put_u8(tag);
    out.put_i32(b.len() as i32 + 4);
    out.put_slice(&b);
}

fn cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn startup_seeds() -> Vec<Vec<u8>> {
    let packet = |body: &[u8]| {
        let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        p.extend_from_slice(body);
        p
    };
    let mut startup = BytesMut::new();
    startup.put_i32(startup::PROTOCOL_3_0);
    for (k, v) in [
        ("user", "alice"),
        ("database", "shop"),
        ("application_name", "psql"),
        ("options", "-c search_path=app"),
    ] {
        cstr(&mut startup, k);
        cstr(&mut startup, v);
    }
    startup.put_u8(0);
    let mut cancel = BytesMut::new();
    cancel.put_i32(startup::CANCEL_REQUEST_CODE);
    cancel.put_i32(4242);
    cancel.put_i32(-77);
    vec![
        packet(&startup),
        packet(&startup::SSL_REQUEST_CODE.to_be_bytes()),
        packet(&startup::GSSENC_REQUEST_CODE.to_be_bytes()),
        packet(&cancel),
    ]
}

fn client_stream() -> Vec<u8> {
    let mut b = BytesMut::new();
    msg(&mut b, b'p', |m| cstr(m, "token"));
    msg(&mut b, b'Q', |m| {
        cstr(m, "SELECT 1; ALTER ROLE x PASSWORD 'secret'")
    });
    msg(&mut b, b'P', |m| {
        cstr(m, "s1");
        cstr(m, "SELECT $1::int, $2::text, $3::bytea");
        m.put_i16(3);
        m.put_u32(23);
        m.put_u32(25);
        m.put_u32(17);
    });
    msg(&mut b, b'B', |m| {
        cstr(m, "p1");
        cstr(m, "s1");
        m.put_i16(2);
        m.put_i16(0);
        m.put_i16(1);
        m.put_i16(3);
        m.put_i32(2);
        m.put_slice(b"42");
        m.put_i32(-1);
        m.put_i32(3);
        m.put_slice(&[0, 1, 2]);
        m.put_i16(1);
        m.put_i16(0);
    });
    msg(&mut b, b'D', |m| {
        m.put_u8(b'P');
        cstr(m, "p1");
    });
    msg(&mut b, b'E', |m| {
        cstr(m, "p1");
        m.put_i32(10);
    });
    msg(&mut b, b'H', |_| {});
    msg(&mut b, b'C', |m| {
        m.put_u8(b'S');
        cstr(m, "s1");
    });
    msg(&mut b, b'S', |_| {});
    msg(&mut b, b'F', |m| {
        m.put_u32(1598);
        m.put_i16(1);
        m.put_i16(0);
        m.put_i16(1);
        m.put_i32(1);
        m.put_slice(b"7");
        m.put_i16(0);
    });
    msg(&mut b, b'Q', |m| cstr(m, "COPY t FROM STDIN"));
    msg(&mut b, b'd', |m| m.put_slice(b"1\tone\n2\ttwo\n"));
    msg(&mut b, b'c', |_| {});
    msg(&mut b, b'f', |m| cstr(m, "client gave up"));
    msg(&mut b, b'X', |_| {});
    b.to_vec()
}

fn server_messages() -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    let mut one = |f: &dyn Fn(&mut BytesMut)| {
        let mut b = BytesMut::new();
        f(&mut b);
        all.push(b.to_vec());
    };
    one(&|b| msg(b, b'R', |m| m.put_i32(0)));
    one(&|b| {
        msg(b, b'R', |m| {
            m.put_i32(10);
            cstr(m, "SCRAM-SHA-256");
            m.put_u8(0);
        })
    });
    one(&|b| {
        msg(b, b'R', |m| {
            m.put_i32(5);
            m.put_slice(&[1, 2, 3, 4]);
        })
    });
    one(&|b| {
        msg(b, b'K', |m| {
            m.put_i32(99);
            m.put_i32(1234);
        })
    });
    one(&|b| {
        msg(b, b'S', |m| {
            cstr(m, "client_encoding");
            cstr(m, "UTF8");
        })
    });
    one(&|b| msg(b, b'1', |_| {}));
    one(&|b| msg(b, b'2', |_| {}));
    one(&|b| {
        msg(b, b't', |m| {
            m.put_i16(2);
            m.put_u32(23);
            m.put_u32(25);
        })
    });
    one(&|b| {
        msg(b, b'T', |m| {
            m.put_i16(2);
            for (name, oid) in [("id", 23u32), ("note", 25)] {
                cstr(m, name);
                m.put_u32(0);
                m.put_i16(0);
                m.put_u32(oid);
                m.put_i16(-1);
                m.put_i32(-1);
                m.put_i16(0);
            }
        })
    });
    one(&|b| {
        msg(b, b'D', |m| {
            m.put_i16(2);
            m.put_i32(1);
            m.put_slice(b"1");
            m.put_i32(-1);
        })
    });
    one(&|b| msg(b, b'C', |m| cstr(m, "SELECT 1")));
    one(&|b| msg(b, b's', |_| {}));
    one(&|b| msg(b, b'n', |_| {}));
    one(&|b| msg(b, b'I', |_| {}));
    one(&|b| {
        msg(b, b'E', |m| {
            for (code, value) in [
                (b'S', "ERROR"),
                (b'V', "ERROR"),
                (b'C', "42P01"),
                (b'M', "relation \"x\" does not exist"),
                (b'P', "15"),
                (b'H', "hint"),
            ] {
                m.put_u8(code);
                cstr(m, value);
            }
            m.put_u8(0);
        })
    });
    one(&|b| {
        msg(b, b'N', |m| {
            m.put_u8(b'S');
            cstr(m, "NOTICE");
            m.put_u8(b'M');
            cstr(m, "hello");
            m.put_u8(0);
        })
    });
    one(&|b| {
        msg(b, b'A', |m| {
            m.put_i32(7);
            cstr(m, "channel");
            cstr(m, "payload");
        })
    });
    one(&|b| {
        msg(b, b'G', |m| {
            m.put_u8(0);
            m.put_i16(2);
            m.put_i16(0);
            m.put_i16(0);
        })
    });
    one(&|b| {
        msg(b, b'H', |m| {
            m.put_u8(0);
            m.put_i16(1);
            m.put_i16(0);
        })
    });
    one(&|b| msg(b, b'd', |m| m.put_slice(b"1\tone\n")));
    one(&|b| msg(b, b'c', |_| {}));
    one(&|b| {
        msg(b, b'V', |m| {
            m.put_i32(1);
            m.put_slice(b"8");
        })
    });
    one(&|b| msg(b, b'Z', |m| m.put_u8(b'T')));
    one(&|b| msg(b, b'Z', |m| m.put_u8(b'I')));
    all
}

fn server_stream() -> Vec<u8> {
    server_messages().concat()
}

fn session_stream() -> Vec<u8> {
    let client = split_frames(Bytes::from(client_stream())).unwrap_or_default();
    let server = server_messages();
    let mut out = Vec::new();
    // Each client message followed by a few answers, as a session goes.
    for (i, frame) in client.iter().enumerate() {
        out.push(0);
        out.push(frame.tag);
        out.extend_from_slice(&((frame.body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(&frame.body);
        for answer in server.iter().skip(i).take(3) {
            out.push(1);
            out.extend_from_slice(answer);
        }
    }
    out
}

// ---- the libFuzzer corpus ----
//
// `tests/fuzz/corpus/<target>/` holds the seeds below as files (`seed-*`, written by
// `scripts/fuzz --write-corpus`), inputs that once made a decoder fail (`regression-*`), and
// whatever a local cargo-fuzz run added (not committed). The suite replays all of it.

/// `tests/fuzz/corpus`.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// The seeds as named files: each whole seed, and each message of a stream on its own, so the
/// coverage-guided fuzzer starts from every message type.
pub fn seed_files(target: Target) -> Vec<(String, Vec<u8>)> {
    fn each_message(stream: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut files = vec![("seed-stream".to_owned(), stream.to_vec())];
        let mut at = 0;
        while let Ok(Some(h)) = parse_header(&stream[at..], usize::MAX) {
            let name = format!("seed-{:02}-{}", files.len(), char::from(h.tag));
            files.push((name, stream[at..at + h.frame_len()].to_vec()));
            at += h.frame_len();
        }
        files
    }
    match target {
        Target::Startup => ["startup", "ssl-request", "gssenc-request", "cancel-request"]
            .into_iter()
            .map(|name| format!("seed-{name}"))
            .zip(startup_seeds())
            .collect(),
        Target::Client => each_message(&client_stream()),
        Target::Server => each_message(&server_stream()),
        Target::Session => {
            // The whole session, and each client message with the answers that follow it.
            let stream = session_stream();
            let mut files = vec![("seed-stream".to_owned(), stream.clone())];
            let mut group = Vec::new();
            let mut rest = &stream[..];
            while let Some((&direction, after)) = rest.split_first() {
                let Some(h) = parse_header(after, usize::MAX)
                    .ok()
                    .flatten()
                    .filter(|h| h.frame_len() <= after.len())
                else {
                    break;
                };
                if direction == 0 && !group.is_empty() {
                    let name = format!("seed-{:02}-{}", files.len(), char::from(group[1]));
                    files.push((name, std::mem::take(&mut group)));
                }
                group.extend_from_slice(&rest[..1 + h.frame_len()]);
                rest = &after[h.frame_len()..];
            }
            if !group.is_empty() {
                let name = format!("seed-{:02}-{}", files.len(), char::from(group[1]));
                files.push((name, group));
            }
            files
        }
    }
}

/// Writes every target's seed files into `root/<target>/`, replacing the `seed-*` files there.
pub fn write_seed_corpus(root: &Path) -> std::io::Result<usize> {
    let mut written = 0;
    for target in Target::ALL {
        let dir = root.join(target.corpus_name());
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if file_name(&path).starts_with("seed-") {
                std::fs::remove_file(&path)?;
            }
        }
        for (name, bytes) in seed_files(target) {
            std::fs::write(dir.join(name), bytes)?;
            written += 1;
        }
    }
    Ok(written)
}

/// Seed files missing from `root` or different from the seeds, as `target/name`.
pub fn stale_seed_files(root: &Path) -> Vec<String> {
    let mut stale = Vec::new();
    for target in Target::ALL {
        let dir = root.join(target.corpus_name());
        for (name, bytes) in seed_files(target) {
            if std::fs::read(dir.join(&name)).ok().as_ref() != Some(&bytes) {
                stale.push(format!("{}/{name}", target.corpus_name()));
            }
        }
    }
    stale
}

/// What a replay of the corpus found.
#[derive(Debug, Default)]
pub struct CorpusReplay {
    /// Files run, per target.
    pub files: Vec<(Target, usize)>,
    /// Files that made a decoder panic or broke an invariant, with the panic's message.
    pub failures: Vec<(PathBuf, String)>,
}

/// Runs every file of `root/<target>/` through its target, each under `catch_unwind`. A
/// missing folder is an error: the corpus is part of the suite.
pub fn replay_corpus(root: &Path) -> std::io::Result<CorpusReplay> {
    let mut replay = CorpusReplay::default();
    for target in Target::ALL {
        let dir = root.join(target.corpus_name());
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() && !file_name(&entry.path()).starts_with('.') {
                paths.push(entry.path());
            }
        }
        paths.sort();
        for path in &paths {
            let input = std::fs::read(path)?;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target.run(&input))) {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(not a string)");
                replay.failures.push((path.clone(), message.to_owned()));
            }
        }
        replay.files.push((target, paths.len()));
    }
    Ok(replay)
}

fn file_name(path: &Path) -> &str {
    path.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_what_the_decoders_accept() {
        for seed in startup_seeds() {
            let len = startup::body_len(seed[..4].try_into().unwrap(), 10_000).unwrap();
            assert!(startup::decode(&seed[4..4 + len]).is_ok());
        }
        let client = split_frames(Bytes::from(client_stream())).unwrap();
        assert_eq!(client.len(), 15);
        assert!(client.iter().all(|f| f.is_complete()));
        let server = split_frames(Bytes::from(server_stream())).unwrap();
        assert_eq!(server.len(), server_messages().len());
    }

    #[test]
    fn a_run_reproduces_from_its_seed() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        let seeds = vec![client_stream()];
        let (mut x, mut y) = (seeds[0].clone(), seeds[0].clone());
        for _ in 0..100 {
            mutate(&mut x, &seeds, &mut a);
            mutate(&mut y, &seeds, &mut b);
        }
        assert_eq!(x, y);
    }
}
