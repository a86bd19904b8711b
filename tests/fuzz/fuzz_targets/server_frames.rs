//! Server bytes: headers located as the relay does, frames through the recorder's capture,
//! authentication, error and key messages through the gateway's parsers.
//!
//! The target, its invariants and seeds are `harness::fuzz` (tests/src/fuzz.rs); its corpus is
//! tests/fuzz/corpus/server_frames/.
#![no_main]

use harness::fuzz::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| Target::Server.run(input));
