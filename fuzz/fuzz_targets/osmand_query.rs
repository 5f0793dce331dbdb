//! cargo-fuzz target `osmand_query`: see `tagwatch_fuzz::osmand_query` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tagwatch_fuzz::osmand_query(data));
