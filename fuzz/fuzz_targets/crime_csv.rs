//! cargo-fuzz target `crime_csv`: see `tagwatch_fuzz::crime_csv` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tagwatch_fuzz::crime_csv(data));
