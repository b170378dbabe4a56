//! Fuzz target: bytes → `kiln_ir::npy::read_npy` (with a write/read round trip) and
//! `read_npz`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_fuzz::check_npy(data);
});
