//! Fuzz target, end to end on small models: ONNX bytes → import → `-O1` → interpreter →
//! quantize (two seeded random calibration samples) → interpreter, with element, node and
//! work caps so that one input cannot run for long.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_fuzz::check_pipeline(data);
});
