#![no_main]
//! See sluice_fuzz::control.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_fuzz::control::run(data));
