//! A short fuzzing run of every decoder the gateway applies to what clients and servers send
//! (`harness::fuzz`): seeded, so the same inputs run every time and a finding reproduces. And a
//! fixed-corpus run: every file of the libFuzzer corpus (`tests/fuzz/corpus/`: the seeds,
//! inputs that once failed, what a local cargo-fuzz run found) through the same targets, without
//! building libFuzzer. `scripts/fuzz` runs longer, with either fuzzer.

use std::time::Duration;

use harness::fuzz::{
    Target, corpus_dir, fuzz, replay_corpus, seed_files, stale_seed_files, write_seed_corpus,
};

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

#[test]
fn every_file_of_the_libfuzzer_corpus_runs_clean() {
    let replay = replay_corpus(&corpus_dir()).expect("the corpus in tests/fuzz/corpus is readable");
    for (target, files) in &replay.files {
        eprintln!("{}: {files} corpus files", target.corpus_name());
        assert!(
            *files >= seed_files(*target).len(),
            "{}: {files} corpus files, fewer than its seeds",
            target.corpus_name()
        );
    }
    assert!(
        replay.failures.is_empty(),
        "corpus files that made a decoder panic or broke an invariant (run one with \
         `cargo fuzz run --fuzz-dir tests/fuzz TARGET FILE`): {:#?}",
        replay.failures
    );
}

#[test]
fn the_committed_corpus_holds_the_seeds_as_the_code_writes_them() {
    let stale = stale_seed_files(&corpus_dir());
    assert!(
        stale.is_empty(),
        "seed files missing or out of date: {stale:?}; write them with `scripts/fuzz --write-corpus`"
    );
}

/// The generator behind `scripts/fuzz --write-corpus`, not part of a normal run.
#[test]
#[ignore = "writes tests/fuzz/corpus; run by scripts/fuzz --write-corpus"]
fn write_the_seed_corpus() {
    let written = write_seed_corpus(&corpus_dir()).expect("writing tests/fuzz/corpus");
    eprintln!("{written} seed files in {}", corpus_dir().display());
}
