#![no_main]
//! See sluice_fuzz::config.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sluice_fuzz::config::run(data));
