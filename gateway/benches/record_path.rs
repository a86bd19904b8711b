//! What recording costs per statement, piece by piece, for a pgbench-like `SELECT` by primary
//! key (the simple protocol): capture (on the relay), classification, canonical JSON, chaining.
//! Prints nanoseconds per statement; the end-to-end numbers come from `scripts/bench`.

use std::hint::black_box;
use std::time::Instant;

use chrono::Utc;
use gateway::protocol::backend;
use gateway::protocol::frame::Frame;
use gateway::record::Direction;
use gateway::record::capture::{Capture, CaptureLimits};
use gateway::record::chain::Chain;
use gateway::record::classify::classify;
use gateway::record::event::Event;

const ROUNDS: usize = 200_000;

fn statement(i: usize) -> Vec<(Direction, Frame)> {
    let sql = format!(
        "SELECT abalance FROM pgbench_accounts WHERE aid = {};\0",
        i % 1_000_000
    );
    let mut row = vec![0, 1, 0, 0, 0, 4];
    row.extend_from_slice(b"1234");
    vec![
        (
            Direction::ClientToServer,
            Frame::encode(b'Q', sql.as_bytes()),
        ),
        (
            Direction::ServerToClient,
            Frame::written(|out| backend::row_description(out, &[("abalance", 23)])),
        ),
        (Direction::ServerToClient, Frame::encode(b'D', &row)),
        (
            Direction::ServerToClient,
            Frame::encode(b'C', b"SELECT 1\0"),
        ),
        (Direction::ServerToClient, Frame::encode(b'Z', b"I")),
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
