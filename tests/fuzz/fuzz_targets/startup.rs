//! Startup packets: the length word and the body through `protocol::startup`.
//!
//! The target, its invariants and seeds are `harness::fuzz` (tests/src/fuzz.rs); its corpus is
//! tests/fuzz/corpus/startup/.
#![no_main]

use harness::fuzz::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| Target::Startup.run(input));
