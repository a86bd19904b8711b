//! Both directions interleaved (a direction byte before each message) through one capture and
//! the replay's and the index's statement folders.
//!
//! The target, its invariants and seeds are `harness::fuzz` (tests/src/fuzz.rs); its corpus is
//! tests/fuzz/corpus/session/.
#![no_main]

use harness::fuzz::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| Target::Session.run(input));
