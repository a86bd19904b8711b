//! A short fuzzing run of every decoder the gateway applies to what clients and servers send
//! (`harness::fuzz`): seeded, so the same inputs run every time and a finding reproduces.
//! `scripts/fuzz` runs longer, with other seeds.

use std::time::Duration;

use harness::fuzz::{Target, fuzz};

/// Mutated inputs per target: a few seconds for all four in a debug build.
const ITERATIONS: u64 = 20_000;

#[test]
fn decoders_survive_mutated_input_in_both_directions() {
    let mut findings = Vec::new();
    for target in Target::ALL {
        let report = fuzz(target, 0x5eed, ITERATIONS, Duration::from_secs(60));
        assert!(
            report.executions > ITERATIONS / 2,
            "{}: only {} inputs ran",
            target.name(),
            report.executions
        );
        eprintln!(
            "{}: {} inputs in {:.1?}",
            target.name(),
            report.executions,
            report.elapsed
        );
        findings.extend(report.findings);
    }
    assert!(
        findings.is_empty(),
        "inputs that made a decoder panic (replay with `scripts/fuzz --replay FILE`): {findings:?}"
    );
}
