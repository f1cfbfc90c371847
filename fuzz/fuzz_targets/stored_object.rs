//! See `ringkv_shared::fuzz_checks::stored_object` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringkv_shared::fuzz_checks::stored_object(data));
