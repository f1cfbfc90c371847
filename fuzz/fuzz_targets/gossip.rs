//! See `ringkv_shared::fuzz_checks::gossip` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringkv_shared::fuzz_checks::gossip(data));
