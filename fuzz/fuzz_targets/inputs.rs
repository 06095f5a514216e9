#![no_main]
//! `cargo +nightly fuzz run inputs`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| optc_fuzz::inputs::target(data));
