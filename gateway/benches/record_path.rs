//! What recording costs per statement, piece by piece, for a pgbench-like `SELECT` by primary
//! key (the simple protocol): capture (on the relay), classification, canonical JSON, chaining.
//! Prints nanoseconds per statement; the end-to-end numbers come from `scripts/bench`.

use std::hint::black_box;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use chrono::Utc;
use gateway::protocol::frame::Frame;
use gateway::record::Direction;
use gateway::record::capture::{Capture, CaptureLimits};
use gateway::record::chain::Chain;
use gateway::record::classify::classify;
use gateway::record::event::Event;

const ROUNDS: usize = 200_000;

fn frame(tag: u8, body: &[u8]) -> Frame {
    let mut buf = BytesMut::with_capacity(body.len() + 5);
    buf.put_u8(tag);
    buf.put_i32(body.len() as i32 + 4);
    buf.put_slice(body);
    let bytes = buf.freeze();
    Frame {
        tag,
        body_len: body.len(),
        body: bytes.slice(5..),
    }
}

fn statement(i: usize) -> Vec<(Direction, Frame)> {
    let sql = format!(
        "SELECT abalance FROM pgbench_accounts WHERE aid = {};\0",
        i % 1_000_000
    );
    let mut row_description = Vec::new();
    row_description.extend_from_slice(&1i16.to_be_bytes());
    row_description.extend_from_slice(b"abalance\0");
    row_description.extend_from_slice(&[0; 6]);
    row_description.extend_from_slice(&23u32.to_be_bytes());
    row_description.extend_from_slice(&[0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0]);
    let mut row = vec![0, 1, 0, 0, 0, 4];
    row.extend_from_slice(b"1234");
    vec![
        (Direction::ClientToServer, frame(b'Q', sql.as_bytes())),
        (Direction::ServerToClient, frame(b'T', &row_description)),
        (Direction::ServerToClient, frame(b'D', &row)),
        (Direction::ServerToClient, frame(b'C', b"SELECT 1\0")),
        (Direction::ServerToClient, frame(b'Z', b"I")),
    ]
}

fn per_statement(label: &str, started: Instant) {
    let nanos = started.elapsed().as_nanos() as f64 / ROUNDS as f64;
    println!("{label:<44} {nanos:>8.0} ns/statement");
}

fn main() {
    let inputs: Vec<_> = (0..ROUNDS).map(statement).collect();
    let at = Utc::now();

    let mut capture = Capture::new(CaptureLimits::default());
    let mut kinds = Vec::new();
    let mut events = Vec::with_capacity(ROUNDS * 5);
    let started = Instant::now();
    for frames in &inputs {
        for (direction, frame) in frames {
            capture.on_frame(*direction, frame, at, &mut kinds);
        }
        for kind in kinds.drain(..) {
            events.push(Event {
                seq: events.len() as u64,
                at,
                kind,
            });
        }
    }
    per_statement("capture (incl. classification)", started);
    println!("  events per statement: {}", events.len() / ROUNDS);

    let started = Instant::now();
    for i in 0..ROUNDS {
        black_box(classify(&format!(
            "SELECT abalance FROM pgbench_accounts WHERE aid = {i};"
        )));
    }
    per_statement("  of which classification (sqlparser)", started);

    let started = Instant::now();
    for _ in 0..ROUNDS * 5 {
        black_box(serde_json::to_string(&at).expect("serialises"));
    }
    per_statement("  (chrono's own timestamp text, 5x: avoided)", started);

    let started = Instant::now();
    let bodies: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("serialises"))
        .collect();
    per_statement("canonical JSON", started);

    let mut chain = Chain::new(uuid::Uuid::new_v4());
    let started = Instant::now();
    for (event, body) in events.iter().zip(bodies) {
        black_box(chain.append_with_body(event, body).expect("in order"));
    }
    per_statement("chaining (SHA-256, stored form)", started);
}
