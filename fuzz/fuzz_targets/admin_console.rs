#![no_main]
//! See `weir_fuzz::admin_console` for the input layout; the corpus replays on stable in
//! `crates/weir-fuzz/tests/corpus.rs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::admin_console(data));
