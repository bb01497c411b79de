//! libFuzzer harness: see `fuzz/targets.rs` for what the target checks.
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::hook_bodies(data));
