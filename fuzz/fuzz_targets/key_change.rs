#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    coffer_fuzz::keep_caught_panics();
    coffer_fuzz::targets::key_change(data)
});
