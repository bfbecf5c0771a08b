#![no_main]
//! See sluice_fuzz::pipeline.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sluice_fuzz::pipeline::run(data);
});
