//! Fuzz target: `.kir` text → `kiln_ir::text::parse_graph`, print/parse round trip, verify.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The parser takes `&str` (files are read with `read_to_string`): only UTF-8 reaches it.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kiln_fuzz::check_kir_text(text);
    }
});
