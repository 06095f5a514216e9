#![no_main]
//! `cargo +nightly fuzz run text`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| optc_fuzz::text::target(data));
