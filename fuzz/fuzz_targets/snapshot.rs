#![no_main]
//! See sluice_fuzz::snapshot.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_fuzz::snapshot::run(data));
