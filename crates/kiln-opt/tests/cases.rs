//! Every hand-written pass case under tests/opt/: run the passes its `// pass:` header names
//! (one pass, a comma-separated list, or a pipeline such as `O1`; the verifier runs after
//! every pass), check the op counts its `// expect:` header states — what the passes must
//! achieve, derived by hand from the rules' conditions — check that the result computes
//! what the original does on seeded random inputs (reference interpreter, 1e-4 relative),
//! and compare the result's dump with its reviewed insta snapshot
//! `snapshots/opt__CASE.snap` (review changes with `cargo insta review`; never accept
//! blindly: the snapshots are the documentation of what each pass does).

mod common;

use common::*;
use kiln_opt::{pipeline, run_pipeline, OptLevel, OptOptions, PassStats};

fn options() -> OptOptions {
    OptOptions {
        verify: true,
        ..OptOptions::default()
    }
}

/// The passes a `// pass:` header names.
fn passes_of(spec: &str) -> Vec<&str> {
    match spec {
        "O0" => pipeline(OptLevel::O0),
        "O1" => pipeline(OptLevel::O1),
        list => list.split(',').map(str::trim).collect(),
    }
}

/// The rules that fired (and constants folded), per pass: the snapshot's record of what did
/// the work.
fn fired_rules(stats: &[PassStats]) -> String {
    stats
        .iter()
        .map(|s| {
            let fired: Vec<&str> = s
                .rule_fired
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(rule, _)| rule.as_str())
                .collect();
            let fired = if fired.is_empty() {
                "(none)".to_string()
            } else {
                fired.join(", ")
            };
            let folded = match s.folded_constants {
                0 => String::new(),
                n => format!("; {n} constants folded"),
            };
            format!("// {}: {fired}{folded}\n", s.pass)
        })
        .collect()
}

fn check_case(file: &str) {
    let path = repo_root().join("tests/opt").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let graph = kiln_ir::text::parse_graph(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    kiln_ir::verify(&graph).unwrap_or_else(|e| panic!("{file} does not verify: {e}"));
    let spec = header(&text, "pass").unwrap_or_else(|| panic!("{file} has no // pass: header"));
    let expect =
        header(&text, "expect").unwrap_or_else(|| panic!("{file} has no // expect: header"));
    let passes = passes_of(&spec);
    let (optimized, stats) = run_pipeline(&graph, &passes, &options(), &mut |_, _, _| {})
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let dump = kiln_ir::text::print_graph(&optimized);
    let rendered: String = stats.iter().map(|s| s.render(false)).collect();
    for (op, want) in expected_counts(&expect) {
        assert_eq!(
            count(&optimized, &op),
            want,
            "{file}: {op} count after {spec}\n{dump}\n{rendered}"
        );
    }
    for s in &stats {
        assert_eq!(
            s.rejected_type_mismatch, 0,
            "{file}: a rule of {} produced a value of another type",
            s.pass
        );
        if s.rewrite {
            assert_eq!(
                s.stop_reason, "saturated",
                "{file}: {} did not saturate",
                s.pass
            );
        }
    }
    let err = max_relative_error(&graph, &optimized, &[1, 2, 3]);
    assert!(
        err <= 1e-4,
        "{file}: relative error {err:e} after {spec}\n{dump}"
    );
    // The printed result parses back to the same text (dumps are usable as test inputs).
    let reparsed = kiln_ir::text::parse_graph(&dump)
        .unwrap_or_else(|e| panic!("{file}: result does not re-parse: {e}\n{dump}"));
    assert_eq!(
        kiln_ir::text::print_graph(&reparsed),
        dump,
        "{file}: result dump round trip"
    );

    let case = file.trim_end_matches(".kir");
    let snapshot = format!(
        "// tests/opt/{file} after {spec}\n// rules fired:\n{}{dump}",
        fired_rules(&stats)
    );
    insta::with_settings!({
        snapshot_path => "../../../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(format!("opt__{case}"), snapshot);
    });
}

/// Every file of tests/opt/ is a case; a new file is picked up without touching this test.
#[test]
fn every_case_in_tests_opt() {
    let dir = repo_root().join("tests/opt");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/opt exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".kir"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        if let Err(e) = std::panic::catch_unwind(|| check_case(file)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{file}: {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
