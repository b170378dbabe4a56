//! Fuzz target: ONNX protobuf bytes → `kiln_onnx::import_bytes` → `kiln_ir::verify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kiln_fuzz::check_onnx_import(data);
});
