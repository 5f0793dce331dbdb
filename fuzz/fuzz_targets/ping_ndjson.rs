//! cargo-fuzz target `ping_ndjson`: see `tagwatch_fuzz::ping_ndjson` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tagwatch_fuzz::ping_ndjson(data));
