#![no_main]
//! See sluice_fuzz::wire.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_fuzz::wire::run(data));
