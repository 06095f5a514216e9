#![no_main]
//! `cargo +nightly fuzz run graphs`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| optc_fuzz::graphs::target(data));
