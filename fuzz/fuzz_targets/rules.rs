//! Fuzz target: `passes/*.rules` text → `kiln_opt::parse_rule_file` → egg rewrites, and the
//! pipelines-file parser on the same text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kiln_fuzz::check_rules(text);
    }
});
