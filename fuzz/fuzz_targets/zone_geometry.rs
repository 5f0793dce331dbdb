//! cargo-fuzz target `zone_geometry`: see `tagwatch_fuzz::zone_geometry` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tagwatch_fuzz::zone_geometry(data));
