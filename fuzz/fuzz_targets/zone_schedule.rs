//! cargo-fuzz target `zone_schedule`: see `tagwatch_fuzz::zone_schedule` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tagwatch_fuzz::zone_schedule(data));
