#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pfx_fuzz::control_message(data));
