//! What recording costs per statement, piece by piece, for a pgbench-like `SELECT` by primary
//! key (the simple protocol): capture (on the relay), classification, canonical JSON, chaining
//! into store blocks.
//! Prints nanoseconds per statement; the end-to-end numbers come from `scripts/bench`.

use std::hint::black_box;
use std::time::Instant;

use chrono::Utc;
use gateway::protocol::backend;
use gateway::protocol::frame::Frame;
use gateway::record::Direction;
use gateway::record::capture::{Capture, CaptureLimits};
use gateway::record::chain::{Chain, kind_name};
use gateway::record::classify::classify;
use gateway::record::event::{Event, EventTimes, write_event_with};
use gateway::store::EventBlock;

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

    // As the tap writes them: one buffer per chunk (here per statement), times shared.
    let started = Instant::now();
    let mut texts = Vec::with_capacity(ROUNDS);
    for statement in events.chunks(5) {
        let mut text = String::with_capacity(5 * 160);
        let mut ends = [0; 5];
        let mut times = EventTimes::default();
        for (event, end) in statement.iter().zip(&mut ends) {
            write_event_with(event, &mut text, &mut times);
            *end = text.len();
        }
        texts.push((text, ends));
    }
    per_statement("canonical JSON (the tap's writer)", started);

    let started = Instant::now();
    for event in events.iter().take(ROUNDS) {
        black_box(serde_json::to_string(event).expect("serialises"));
    }
    per_statement("  (serde_json, 1 event of 5: avoided)", started);

    // As the writer chains them: SHA-256 links, packed into store blocks.
    let id = uuid::Uuid::new_v4();
    let mut chain = Chain::new(id);
    let started = Instant::now();
    let mut block = EventBlock::new(id, 0, chain.last_hash());
    for (statement, (text, ends)) in events.chunks(5).zip(&texts) {
        let mut start = 0;
        for (event, &end) in statement.iter().zip(ends) {
            let body = &text[start..end];
            start = end;
            let hash = chain.link_next(event.seq, body).expect("in order");
            if !block.has_room(body.len()) {
                black_box(&block);
                block = EventBlock::new(id, event.seq as i64, *black_box(&hash));
            }
            block
                .push(at, kind_name(&event.kind), body, &hash)
                .expect("storable");
        }
    }
    black_box(block);
    per_statement("chaining into store blocks (SHA-256)", started);
}
