//! Replays the inputs that once crashed a fuzz target (`tests/fuzz-regressions/TARGET/`)
//! through the target's own checks, `fuzz/src/lib.rs`, included here by path, and asserts
//! each ends the way `tests/fuzz-regressions/expected.txt` records: no panic, and `ok` or
//! the specific error variant.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod fuzz_checks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const TARGETS: [&str; 5] = ["onnx_import", "kir_text", "rules", "npy", "pipeline"];

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz-regressions")
}

/// `TARGET/FILE` → expected outcome.
fn expected() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(regressions_dir().join("expected.txt"))
        .expect("tests/fuzz-regressions/expected.txt exists");
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, outcome) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("expected.txt: malformed line '{l}'"));
            (key.trim().to_string(), outcome.trim().to_string())
        })
        .collect()
}

fn outcome<T, E: std::fmt::Debug>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("err:{}", fuzz_checks::variant_name(&e)),
    }
}

/// Run one input through its target's check, as the fuzz target does.
fn replay(target: &str, data: &[u8]) -> String {
    let text = || std::str::from_utf8(data).map_err(|e| e.to_string());
    match target {
        "onnx_import" => outcome(fuzz_checks::check_onnx_import(data)),
        "kir_text" => match text() {
            Ok(t) => outcome(fuzz_checks::check_kir_text(t)),
            Err(e) => panic!("kir_text inputs are UTF-8 (the target skips others): {e}"),
        },
        "rules" => match text() {
            Ok(t) => outcome(fuzz_checks::check_rules(t)),
            Err(e) => panic!("rules inputs are UTF-8 (the target skips others): {e}"),
        },
        "npy" => outcome(fuzz_checks::check_npy(data)),
        "pipeline" => match fuzz_checks::check_pipeline(data) {
            Ok(reached) => format!("ok:{reached:?}"),
            Err(stop) => format!("err:{}", stop.kind()),
        },
        other => panic!("unknown fuzz target {other}"),
    }
}

#[test]
fn every_saved_crash_input_now_ends_as_recorded() {
    let expected = expected();
    let mut seen = Vec::new();
    let mut failures = Vec::new();
    for target in TARGETS {
        let dir = regressions_dir().join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("readable directory entry").path())
            .collect();
        files.sort();
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("file names here are ASCII");
            let key = format!("{target}/{name}");
            let data = std::fs::read(&path).expect("readable regression input");
            let got = replay(target, &data);
            match expected.get(&key) {
                Some(want) if *want == got => {}
                Some(want) => failures.push(format!("{key}: expected {want}, got {got}")),
                None => failures.push(format!("{key}: not in expected.txt (got {got})")),
            }
            seen.push(key);
        }
    }
    for key in expected.keys() {
        if !seen.contains(key) {
            failures.push(format!(
                "{key}: listed in expected.txt but the file is missing"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("fuzz regressions: {} inputs replayed", seen.len());
}

#[test]
fn variant_names_follow_the_debug_text() {
    #[derive(Debug)]
    #[allow(dead_code)]
    enum Inner {
        MemoryLimit { bytes: u64 },
        Plain,
    }
    #[derive(Debug)]
    #[allow(dead_code)]
    enum Outer {
        Import(Inner),
    }
    assert_eq!(
        fuzz_checks::variant_name(&Outer::Import(Inner::MemoryLimit { bytes: 1 })),
        "Import::MemoryLimit"
    );
    assert_eq!(fuzz_checks::variant_name(&Inner::Plain), "Plain");
}

/// The end-to-end target reaches its end on a small model: a fuzz target that stopped at the
/// caps or at an error on every well-formed input would test little.
#[test]
fn the_pipeline_check_runs_a_small_model_through_quantization() {
    // conv → batch norm → relu (tests/kir/conv_bn_relu.kir on a 6×6 input): every value
    // within the fuzzing caps (the largest is the 1×8×6×6 output, 288 elements).
    let text = "graph @small(%x: f32[1,3,6,6]) -> (f32[1,8,6,6]) {
  %w = const @c0 : f32[8,3,3,3] = normal(seed=1, mean=0.0, std=0.2)
  %b = const @c1 : f32[8] = [0.05, -0.1, 0.0, 0.2, -0.05, 0.1, 0.15, -0.2]
  %conv = conv(%x, %w, %b) {kernel=[3,3], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], groups=1} : f32[1,8,6,6]
  %gamma = const @c2 : f32[8] = uniform(seed=2, low=0.5, high=1.5)
  %beta = const @c3 : f32[8] = normal(seed=3, mean=0.0, std=0.1)
  %mean = const @c4 : f32[8] = normal(seed=4, mean=0.0, std=0.1)
  %var = const @c5 : f32[8] = uniform(seed=5, low=0.5, high=2.0)
  %bn = batch_norm(%conv, %gamma, %beta, %mean, %var) {epsilon=1e-5} : f32[1,8,6,6]
  %y = relu(%bn) : f32[1,8,6,6]
  return %y
}
";
    let graph = kiln_ir::text::parse_graph(text).expect("the test graph parses");
    let onnx = kiln_onnx::export(&graph).expect("the test graph exports");
    match fuzz_checks::check_pipeline(&onnx) {
        Ok(reached) => assert_eq!(reached, fuzz_checks::PipelineReached::Quantized),
        Err(stop) => panic!("stopped early: {stop}"),
    }
}

/// Replay a whole corpus on the stable toolchain (no sanitizer): `KILN_FUZZ_TARGET=pipeline
/// KILN_FUZZ_CORPUS=fuzz/corpus/pipeline cargo test -p kiln-cli --test fuzz_regressions --
/// --ignored --nocapture replay_corpus` prints each file's outcome and a tally; any panic
/// fails it. Ignored by default: the corpus is not committed (`fuzz/seed.sh` recreates it).
#[test]
#[ignore = "needs KILN_FUZZ_TARGET and KILN_FUZZ_CORPUS"]
fn replay_corpus() {
    let target = std::env::var("KILN_FUZZ_TARGET").expect("KILN_FUZZ_TARGET names a target");
    let dir = std::env::var("KILN_FUZZ_CORPUS").expect("KILN_FUZZ_CORPUS names a directory");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the corpus directory is readable")
        .map(|e| e.expect("readable directory entry").path())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).expect("readable corpus file");
        // the text targets see only UTF-8 (their fuzz targets skip the rest)
        let text_target = !matches!(target.as_str(), "onnx_import" | "npy" | "pipeline");
        if text_target && std::str::from_utf8(&data).is_err() {
            continue;
        }
        let got = replay(&target, &data);
        println!("{}: {got}", path.display());
        *tally.entry(got).or_insert(0) += 1;
    }
    println!("{} files: {tally:?}", files.len());
    assert!(!files.is_empty(), "{dir} holds no inputs");
}
