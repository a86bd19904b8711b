//! Fuzzing the decoders that read what clients and servers send, on the stable toolchain.
//!
//! cargo-fuzz needs a nightly compiler, which these machines do not have; so this is a
//! mutational fuzzer without coverage feedback: valid seeds (every message type the gateway
//! reads, both directions, startup packets) are mutated the ways that break decoders (bit
//! flips, interesting integers in length fields, truncation, insertion, splicing) by a seeded
//! generator, so a failure reproduces from its seed and iteration. Each input goes through the
//! same code the gateway runs on it:
//!
//! - [`Target::Startup`]: the startup packet's length word and body (`protocol::startup`).
//! - [`Target::Client`], [`Target::Server`]: frames split from the bytes, some cut short as the
//!   relay streams large ones, through the recorder's capture in that direction, and the
//!   client's password message and the server's authentication, error and key messages through
//!   the gateway's own parsers.
//! - [`Target::Session`]: both directions interleaved through one capture, its events folded
//!   into statements with details as the console's replay does.
//!
//! A panic is a finding: the input is written to `target/fuzz-findings/` with its seed.
//! `tests/tests/fuzz.rs` runs a short fixed run in the suite; `scripts/fuzz` runs for as long as
//! asked.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use chrono::Utc;
use gateway::protocol::backend::{AuthRequest, ErrorFields, parse_backend_key_data};
use gateway::protocol::frame::split_frames;
use gateway::protocol::frontend::parse_password;
use gateway::protocol::startup;
use gateway::record::CaptureLimits;
use gateway::record::Direction;
use gateway::record::capture::Capture;
use gateway::record::event::{Event, EventKind};
use gateway::record::statements::StatementFolder;

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

fn run_startup(input: &[u8]) {
    let Some((len_word, body)) = input.split_first_chunk::<4>() else {
        return;
    };
    if let Ok(len) = startup::body_len(*len_word, 10_000) {
        let _ = startup::decode(&body[..len.min(body.len())]);
    }
    let _ = startup::decode(body);
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

fn run_one_way(direction: Direction, input: &[u8]) {
    let mut capture = Capture::new(limits());
    let mut out = Vec::new();
    for frame in frames(input) {
        match (direction, frame.tag) {
            (Direction::ClientToServer, b'p') => {
                let _ = parse_password(&frame.body);
            }
            (Direction::ServerToClient, b'R') => {
                let _ = AuthRequest::parse(&frame.body);
            }
            (Direction::ServerToClient, b'E' | b'N') => {
                let _ = ErrorFields::parse(&frame.body);
            }
            (Direction::ServerToClient, b'K') => {
                let _ = parse_backend_key_data(&frame.body);
            }
            _ => {}
        }
        capture.on_frame(direction, &frame, Utc::now(), &mut out);
    }
}

fn run_session(input: &[u8]) {
    let mut capture = Capture::new(limits());
    let mut folder = StatementFolder::with_details(0, 'I');
    let mut kinds: Vec<EventKind> = Vec::new();
    let mut seq = 0u64;
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
        for kind in kinds.drain(..) {
            folder.push(&Event {
                seq,
                at: Utc::now(),
                kind,
            });
            seq += 1;
        }
    }
    folder.finish();
    let _ = folder.take_finished_with_details();
    let _ = folder.take_loose();
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
