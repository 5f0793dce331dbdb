//! cargo-fuzz target `ping_json_array`: see `tagwatch_fuzz::ping_json_array` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tagwatch_fuzz::ping_json_array(data));
