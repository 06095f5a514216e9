#![no_main]
//! `cargo +nightly fuzz run import`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| optc_fuzz::import::target(data));
