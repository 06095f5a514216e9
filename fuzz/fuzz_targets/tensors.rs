#![no_main]
//! `cargo +nightly fuzz run tensors`: see fuzz/README.md.
libfuzzer_sys::fuzz_target!(|data: &[u8]| optc_fuzz::tensors::target(data));
