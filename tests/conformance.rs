//! ONNX backend node conformance: every case under `$KILN_ASSETS/node` (written by
//! `tools/gen_onnx_node_tests.py`) whose ops are all in kiln's op set is imported, run on the
//! reference interpreter and compared with the outputs the ONNX case generators computed.
//!
//! Scope: a case is in scope when every node is in the default domain and its op type is in
//! `kiln_onnx::SUPPORTED_OPS`; other cases are counted as out of scope and not run. In-scope
//! cases known not to pass are listed with a reason in `tests/conformance-exclusions.txt`;
//! they still run, so an exclusion that starts passing (stale) fails the suite, as does one
//! naming a case that does not exist or is out of scope.
//!
//! Comparison: f32 `|a − b| ≤ 1e-5 + 1e-3·|b|` (the ONNX runner's rtol; NaN only matches NaN),
//! integers and bools exact, dtype and shape equal.
//!
//! `cargo test -p kiln-cli --test conformance [-- NAME_SUBSTRING...]` runs it (a filter runs
//! only matching cases and skips the stale-exclusion check for the others).

#[path = "support/mod.rs"]
mod support;

use kiln_ir::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use support::onnx_scan::{scan_model, ModelSummary};
use support::{catch_panic, compare_tensors, Tolerance};

const SUITE: &str = "conformance";

const TOLERANCE: Tolerance = Tolerance {
    rtol: 1e-3,
    atol: 1e-5,
};

const EXCLUSIONS_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/conformance-exclusions.txt"
);

/// Input slots kiln needs as constants at import, per op. The ONNX node tests feed these as
/// graph inputs; the runner binds them to their test data with `frozen_inputs`, so the op's
/// semantics are still checked on exactly the generator's values. Two kinds:
/// - quantization parameters (scales, zero points): kiln's IR keeps them in value types;
/// - shape- and attribute-valued inputs (axes, pads, shapes, scales/sizes, clip bounds, ...):
///   kiln's IR has no shape-valued inputs, the importer resolves them into attributes
///   against static shapes (DESIGN §3).
fn static_input_slots(op_type: &str) -> &'static [usize] {
    match op_type {
        // x, scale, zero_point
        "QuantizeLinear" | "DequantizeLinear" => &[1, 2],
        // x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, [bias]
        "QLinearConv" => &[1, 2, 4, 5, 6, 7],
        // a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp
        "QLinearMatMul" => &[1, 2, 4, 5, 6, 7],
        // x, w, x_zp, w_zp
        "ConvInteger" | "MatMulInteger" => &[2, 3],
        // input, min, max
        "Clip" => &[1, 2],
        // shape
        "ConstantOfShape" => &[0],
        // data, ratio, training_mode
        "Dropout" => &[1, 2],
        // data, pads, constant_value, axes
        "Pad" => &[1, 2, 3],
        // start, limit, delta: the whole op folds to a constant
        "Range" => &[0, 1, 2],
        // data, axes
        "ReduceMean" | "Squeeze" | "Unsqueeze" => &[1],
        // data, shape
        "Reshape" => &[1],
        // x, roi, scales, sizes
        "Resize" => &[1, 2, 3],
        // x, scales
        "Upsample" => &[1],
        // data, starts, ends, axes, steps
        "Slice" => &[1, 2, 3, 4],
        // input, split
        "Split" => &[1],
        _ => &[],
    }
}

#[derive(Debug)]
enum Outcome {
    Pass,
    Fail(String),
    /// Not every op is in kiln's op set; the first such op is named.
    OutOfScope(String),
}

fn main() -> ExitCode {
    let assets = match support::assets_dir(SUITE) {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    if let Err(e) = support::check_comparator().and_then(|()| support::onnx_scan::check_scanner()) {
        eprintln!("{SUITE}: self-check failed: {e}");
        return ExitCode::FAILURE;
    }
    match run_suite(&assets.join("node")) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{SUITE}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run every case; Ok(true) when the suite passes.
fn run_suite(node_dir: &Path) -> Result<bool, String> {
    let start = Instant::now();
    let filters = support::name_filters();
    let all_cases = list_cases(node_dir)?;
    let exclusions = read_exclusions(Path::new(EXCLUSIONS_FILE))?;
    let cases: Vec<&String> = all_cases
        .iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.contains(f.as_str())))
        .collect();

    support::install_quiet_panic_hook();
    let results = run_parallel(node_dir, &cases);

    let mut passed = 0;
    let mut failed = 0;
    let mut excluded = 0;
    let mut out_of_scope = 0;
    let mut problems = Vec::new();
    // reason → excluded cases, for a compact listing
    let mut excluded_by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (case, outcome) in &results {
        match (outcome, exclusions.get(case.as_str())) {
            (Outcome::OutOfScope(_), None) => out_of_scope += 1,
            (Outcome::OutOfScope(op), Some(_)) => {
                out_of_scope += 1;
                problems.push(format!(
                    "exclusion of {case} is pointless: the case is out of scope (op {op}); \
                     remove it from tests/conformance-exclusions.txt"
                ));
            }
            (Outcome::Pass, None) => passed += 1,
            (Outcome::Pass, Some(reason)) => {
                excluded += 1;
                problems.push(format!(
                    "stale exclusion: {case} passes now (excluded because: {reason}); remove it \
                     from tests/conformance-exclusions.txt"
                ));
            }
            (Outcome::Fail(e), None) => {
                failed += 1;
                println!("FAIL {case}: {e}");
            }
            (Outcome::Fail(_), Some(reason)) => {
                excluded += 1;
                excluded_by_reason
                    .entry(reason.as_str())
                    .or_default()
                    .push(case.as_str());
            }
        }
    }
    if filters.is_empty() {
        for case in exclusions.keys() {
            if all_cases.binary_search(&case.to_string()).is_err() {
                problems.push(format!(
                    "exclusion names a case that does not exist: {case} (tests/conformance-exclusions.txt)"
                ));
            }
        }
    }

    if excluded > 0 {
        println!("excluded ({excluded}; tests/conformance-exclusions.txt):");
        for (reason, cases) in &excluded_by_reason {
            println!("  {} — {reason}:\n      {}", cases.len(), cases.join(" "));
        }
    }
    for p in &problems {
        println!("ERROR {p}");
    }
    println!("{SUITE}: {passed} passed, {failed} failed");
    println!(
        "{SUITE}: {excluded} excluded, {out_of_scope} out of scope ({} cases in {:.1} s)",
        results.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(failed == 0 && problems.is_empty())
}

/// Sorted case directory names.
fn list_cases(node_dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(node_dir).map_err(|e| {
        format!(
            "cannot read {}: {e} (run tools/prepare_assets.py)",
            node_dir.display()
        )
    })?;
    let mut cases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", node_dir.display()))?;
        if entry.path().join("model.onnx").is_file() {
            cases.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    if cases.is_empty() {
        return Err(format!("no cases under {}", node_dir.display()));
    }
    cases.sort();
    Ok(cases)
}

/// `case_name  # reason` lines; blank lines and lines starting with `#` are comments. A case
/// without a reason is an error: every exclusion must say why.
fn read_exclusions(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut exclusions = BTreeMap::new();
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (case, reason) = line.split_once('#').ok_or_else(|| {
            format!(
                "{}:{}: '{line}' has no '# reason'",
                path.display(),
                lineno + 1
            )
        })?;
        let (case, reason) = (case.trim(), reason.trim());
        if case.is_empty() || case.contains(char::is_whitespace) || reason.is_empty() {
            return Err(format!(
                "{}:{}: expected 'case_name  # reason', got '{line}'",
                path.display(),
                lineno + 1
            ));
        }
        if exclusions
            .insert(case.to_string(), reason.to_string())
            .is_some()
        {
            return Err(format!(
                "{}:{}: {case} is listed twice",
                path.display(),
                lineno + 1
            ));
        }
    }
    Ok(exclusions)
}

/// Run the cases on a few threads; results in case order.
fn run_parallel(node_dir: &Path, cases: &[&String]) -> Vec<(String, Outcome)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(cases.len()));
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&case) = cases.get(i) else { break };
                let dir = node_dir.join(case);
                let outcome = match catch_panic(|| run_case(&dir)) {
                    Ok(outcome) => outcome,
                    Err(e) => Outcome::Fail(e),
                };
                results
                    .lock()
                    .expect("no thread panics while holding the lock")
                    .push((case.clone(), outcome));
            });
        }
    });
    let mut results = results
        .into_inner()
        .expect("no thread panics while holding the lock");
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn out_of_scope_op(model: &ModelSummary) -> Option<String> {
    model.nodes.iter().find_map(|n| {
        let supported =
            n.is_default_domain() && kiln_onnx::SUPPORTED_OPS.contains(&n.op_type.as_str());
        (!supported).then(|| {
            if n.is_default_domain() {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            }
        })
    })
}

fn run_case(dir: &Path) -> Result<Outcome, String> {
    let model_path = dir.join("model.onnx");
    let model =
        scan_model(&read(&model_path)?).map_err(|e| format!("{}: {e}", model_path.display()))?;
    if let Some(op) = out_of_scope_op(&model) {
        return Ok(Outcome::OutOfScope(op));
    }
    let mut data_sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    data_sets.sort();
    if data_sets.is_empty() {
        return Err(format!("no test_data_set_* in {}", dir.display()));
    }
    for set in &data_sets {
        run_data_set(&model_path, &model, set).map_err(|e| {
            if data_sets.len() > 1 {
                format!("{}: {e}", set.display())
            } else {
                e
            }
        })?;
    }
    Ok(Outcome::Pass)
}

fn read_tensor(path: &Path) -> Result<Tensor, String> {
    kiln_onnx::read_tensor_proto(&read(path)?)
        .map_err(|e| format!("test data {}: {e}", path.display()))
}

fn run_data_set(model_path: &Path, model: &ModelSummary, set: &Path) -> Result<(), String> {
    // Test data by graph input name (inputs that are also initializers have no data file).
    let mut input_data: HashMap<&str, Tensor> = HashMap::new();
    for (k, name) in model.inputs.iter().enumerate() {
        let path = set.join(format!("input_{k}.pb"));
        if path.is_file() {
            input_data.insert(name.as_str(), read_tensor(&path)?);
        } else if !model.initializers.contains(name) {
            return Err(format!(
                "graph input {k} ('{name}') has no tensor test data (a sequence or optional value?)"
            ));
        }
    }

    let mut frozen_inputs = HashMap::new();
    for node in &model.nodes {
        for &slot in static_input_slots(&node.op_type) {
            let Some(name) = node.inputs.get(slot).filter(|n| !n.is_empty()) else {
                continue;
            };
            if let Some(tensor) = input_data.get(name.as_str()) {
                frozen_inputs.insert(name.clone(), tensor.clone());
            }
        }
    }
    let options = kiln_onnx::ImportOptions {
        frozen_inputs,
        ..Default::default()
    };
    let graph = kiln_onnx::import_file(model_path, &options).map_err(|e| format!("import: {e}"))?;

    let feeds = graph
        .inputs()
        .iter()
        .map(|&v| {
            let name = graph.value_name(v);
            input_data.get(name).cloned().ok_or_else(|| {
                format!("imported graph input '{name}' is not a graph input of the model")
            })
        })
        .collect::<Result<Vec<Tensor>, String>>()?;
    let outputs = kiln_interp::run(&graph, &feeds).map_err(|e| format!("interpreter: {e}"))?;

    if outputs.len() != model.outputs.len() {
        return Err(format!(
            "graph has {} outputs, the model declares {}",
            outputs.len(),
            model.outputs.len()
        ));
    }
    for (k, (actual, name)) in outputs.iter().zip(&model.outputs).enumerate() {
        let path = set.join(format!("output_{k}.pb"));
        if !path.is_file() {
            return Err(format!(
                "output {k} ('{name}') has no tensor test data (a sequence or optional value?)"
            ));
        }
        let expected = read_tensor(&path)?;
        compare_tensors(actual, &expected, TOLERANCE)
            .map_err(|e| format!("output {k} ('{name}'): {e}"))?;
    }
    Ok(())
}
