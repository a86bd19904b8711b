//! Client bytes: headers located as the relay does, frames through the recorder's capture,
//! the password message through its parser.
//!
//! The target, its invariants and seeds are `harness::fuzz` (tests/src/fuzz.rs); its corpus is
//! tests/fuzz/corpus/client_frames/.
#![no_main]

use harness::fuzz::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| Target::Client.run(input));
