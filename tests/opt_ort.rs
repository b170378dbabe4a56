//! The optimizer end to end against onnxruntime: for real architectures under
//! `$KILN_ASSETS/models` (prepared by `tools/prepare_assets.py`), `kiln opt -O1 --verify -o
//! OUT.onnx` writes the optimized model, onnxruntime (via `$KILN_PYTHON`; CPU, graph
//! optimizations disabled, one thread) runs it on the saved input, and its output is compared
//! with the saved onnxruntime output of the *original* model.
//!
//! This checks the rewrites (BatchNorm folding, activation fusion, ...) and the ONNX exporter
//! together, against an oracle independent of kiln's interpreter. Criterion as in
//! tests/differential.rs: max|opt − ref| / max|ref| ≤ 1e-4 per output (folding changes the
//! f32 rounding by ~1e-6 per layer; a wrong fold or export is off by O(1)).
//!
//! Heavy: run in release (`cargo test --release -p kiln-cli --test opt_ort`); a debug build
//! skips it unless `KILN_OPT_ORT_DEBUG=1`.

#[path = "support/mod.rs"]
mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use support::{catch_panic, error_stats, ErrorStats};

const SUITE: &str = "opt_ort";

const MAX_REL_ERR: f64 = 1e-4;

/// Models with BatchNorm in every arrangement the passes handle: conv+BN+relu (resnet50),
/// pre-activation BN after concat (densenet121), BN in inception blocks (inception_v2),
/// grouped convs and channel shuffles (shufflenet), ConvTranspose+BN, HardSigmoid and
/// Resize with trained weights (ppocrv4_det). A missing one is a failure.
const MODELS: &[&str] = &[
    "resnet50",
    "densenet121",
    "inception_v2",
    "shufflenet",
    "ppocrv4_det",
];

/// Runs the optimized model in onnxruntime: argv = model, output dir, then NAME=FILE.npy
/// per input. Writes output_K.npy per output (in the session's order) and prints
/// `checker ok` and the outputs' names, one per line.
const ORT_SCRIPT: &str = r#"
import sys, numpy as np, onnx, onnxruntime as ort
model, out_dir, feeds = sys.argv[1], sys.argv[2], sys.argv[3:]
onnx.checker.check_model(onnx.load(model), full_check=True)
print("checker ok")
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
inputs = {k: np.load(v) for k, v in (f.split("=", 1) for f in feeds)}
for k, (o, y) in enumerate(zip(s.get_outputs(), s.run(None, inputs))):
    np.save(f"{out_dir}/output_{k}.npy", y)
    print(o.name)
"#;

struct Row {
    model: String,
    bn_before: usize,
    bn_after: usize,
    ops_before: String,
    ops_after: String,
    worst: ErrorStats,
    pass_ms: String,
}

fn main() -> ExitCode {
    if cfg!(debug_assertions) && std::env::var_os("KILN_OPT_ORT_DEBUG").is_none() {
        println!(
            "{SUITE}: skipped in a debug build (tools/test.sh runs it with \
             `cargo test --release -p kiln-cli --test opt_ort`)"
        );
        return ExitCode::SUCCESS;
    }
    let assets = match support::assets_dir(SUITE) {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let python = match std::env::var_os("KILN_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                eprintln!("{SUITE}: KILN_PYTHON is not set under CI=true: run tools/test.sh");
                return ExitCode::FAILURE;
            }
            println!(
                "{SUITE}: skipped — KILN_PYTHON (a python with onnx and onnxruntime) not set \
                 (run tools/test.sh)"
            );
            return ExitCode::SUCCESS;
        }
    };
    if let Err(e) = support::check_comparator() {
        eprintln!("{SUITE}: self-check failed: {e}");
        return ExitCode::FAILURE;
    }
    support::install_quiet_panic_hook();
    let work = std::env::temp_dir().join(format!("kiln-opt-ort-{}", std::process::id()));
    let filters = support::name_filters();
    let models: Vec<&str> = MODELS
        .iter()
        .copied()
        .filter(|n| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .collect();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for name in &models {
        print!("{SUITE}: {name} ... ");
        use std::io::Write;
        std::io::stdout().flush().ok();
        let dir = work.join(name);
        let result = catch_panic(|| run_model(&assets.join("models"), name, &python, &dir));
        match result {
            Ok((row, errors)) => {
                println!(
                    "{} (max rel err {:.2e})",
                    if errors.is_empty() { "ok" } else { "FAIL" },
                    row.worst.max_rel_to_peak
                );
                failures.extend(errors.into_iter().map(|e| format!("{name}: {e}")));
                rows.push(row);
            }
            Err(e) => {
                println!("FAIL");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    print_table(&rows);
    for f in &failures {
        println!("FAIL {f}");
    }
    if failures.is_empty() {
        println!(
            "{SUITE}: {} models optimized with -O1 match onnxruntime",
            models.len()
        );
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<12} | {:>9} | {:>8} | {:>10} | {:>9} | {:>11} | {:>12} |",
        "model", "BN before", "BN after", "ops before", "ops after", "max rel err", "pass time ms"
    );
    println!(
        "|{:-<14}|{:->11}|{:->10}|{:->12}|{:->11}|{:->13}|{:->14}|",
        "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<12} | {:>9} | {:>8} | {:>10} | {:>9} | {:>11.2e} | {:>12} |",
            r.model,
            r.bn_before,
            r.bn_after,
            r.ops_before,
            r.ops_after,
            r.worst.max_rel_to_peak,
            r.pass_ms
        );
    }
    println!(
        "(ops: kiln IR op nodes before and after -O1, from `kiln opt`; BN after: BatchNormalization \
         nodes of the exported model; max rel err: onnxruntime on the optimized model vs \
         onnxruntime on the original, max|a − b| / max|b|; pass time: the -O1 passes in `kiln opt`)"
    );
    println!();
}

fn manifest_str<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("manifest: missing string '{key}'"))
}

fn read_npy(path: &Path) -> Result<kiln_ir::Tensor, String> {
    kiln_ir::npy::read_npy_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `(ops before, ops after, pass ms)` from the summary line `kiln opt` prints:
/// `kiln opt: M → OUT (-O1: 4 passes, 126 → 72 ops, 812.3 ms)`.
fn parse_opt_summary(stderr: &str) -> Result<(String, String, String), String> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("kiln opt: "))
        .ok_or_else(|| format!("kiln opt printed no summary:\n{stderr}"))?;
    let inner = line
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .ok_or_else(|| format!("unexpected summary: {line}"))?;
    let parts: Vec<&str> = inner.split(", ").collect();
    let ops = parts
        .iter()
        .find_map(|p| p.strip_suffix(" ops"))
        .and_then(|p| p.split_once(" → "))
        .ok_or_else(|| format!("no op counts in: {line}"))?;
    let ms = parts
        .iter()
        .find_map(|p| p.strip_suffix(" ms"))
        .ok_or_else(|| format!("no pass time in: {line}"))?;
    Ok((ops.0.to_string(), ops.1.to_string(), ms.to_string()))
}

fn count_batch_norms(g: &kiln_ir::Graph) -> usize {
    g.node_ids()
        .filter(|&id| matches!(g.node(id).op, kiln_ir::Op::BatchNorm { .. }))
        .count()
}

fn run_model(
    models_dir: &Path,
    name: &str,
    python: &Path,
    dir: &Path,
) -> Result<(Row, Vec<String>), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let manifest_path = models_dir.join(format!("{name}.json"));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).map_err(|e| {
            format!(
                "cannot read {}: {e} (run tools/prepare_assets.py)",
                manifest_path.display()
            )
        })?)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let model_path = models_dir.join(manifest_str(&manifest, "model")?);
    let inputs = manifest
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("manifest: missing 'inputs'")?;
    let outputs = manifest
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("manifest: missing 'outputs'")?;

    let mut shape_args = Vec::new();
    let mut feeds = Vec::new();
    let mut input_shapes = std::collections::HashMap::new();
    for inp in inputs {
        let input_name = manifest_str(inp, "name")?;
        let shape: Vec<usize> = inp
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|d| d.iter().map(|v| v.as_u64().map(|v| v as usize)).collect())
            .ok_or("manifest: bad input shape")?;
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        shape_args.push("--input-shape".to_string());
        shape_args.push(format!("{input_name}={}", dims.join(",")));
        input_shapes.insert(input_name.to_string(), shape);
        let file = models_dir.join(manifest_str(inp, "file")?);
        feeds.push(format!("{input_name}={}", file.display()));
    }

    let original = kiln_onnx::import_file(
        &model_path,
        &kiln_onnx::ImportOptions {
            input_shapes,
            ..Default::default()
        },
    )
    .map_err(|e| format!("import: {e}"))?;

    let out_model = dir.join(format!("{name}.O1.onnx"));
    let opt = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("opt")
        .arg(&model_path)
        .args(["-O1", "--verify", "-o"])
        .arg(&out_model)
        .args(&shape_args)
        .output()
        .map_err(|e| format!("cannot run kiln: {e}"))?;
    let opt_stderr = String::from_utf8_lossy(&opt.stderr).into_owned();
    if !opt.status.success() {
        return Err(format!("kiln opt -O1 failed: {opt_stderr}"));
    }
    let (ops_before, ops_after, pass_ms) = parse_opt_summary(&opt_stderr)?;
    let optimized = kiln_onnx::import_file(&out_model, &Default::default())
        .map_err(|e| format!("re-import of {}: {e}", out_model.display()))?;

    let ort = Command::new(python)
        .arg("-c")
        .arg(ORT_SCRIPT)
        .arg(&out_model)
        .arg(dir)
        .args(&feeds)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !ort.status.success() {
        return Err(format!(
            "onnxruntime on {}: {}",
            out_model.display(),
            String::from_utf8_lossy(&ort.stderr)
        ));
    }
    let ort_stdout = String::from_utf8_lossy(&ort.stdout).into_owned();
    let mut lines = ort_stdout.lines();
    if lines.next() != Some("checker ok") {
        return Err(format!("onnx checker: {ort_stdout}"));
    }
    let ort_names: Vec<&str> = lines.collect();
    if ort_names.len() != outputs.len() {
        return Err(format!(
            "the optimized model has {} outputs, the original {}",
            ort_names.len(),
            outputs.len()
        ));
    }

    let mut errors = Vec::new();
    let mut worst: Option<ErrorStats> = None;
    for (k, (out, ort_name)) in outputs.iter().zip(&ort_names).enumerate() {
        let out_name = manifest_str(out, "name")?;
        if out_name != *ort_name {
            errors.push(format!(
                "output {k} is '{ort_name}' in the optimized model, '{out_name}' in the original"
            ));
        }
        let expected = read_npy(&models_dir.join(manifest_str(out, "file")?))?;
        let actual = read_npy(&dir.join(format!("output_{k}.npy")))?;
        let (Some(a), Some(b)) = (actual.as_f32(), expected.as_f32()) else {
            errors.push(format!("output {k} ('{out_name}'): not f32"));
            continue;
        };
        if actual.shape() != expected.shape() {
            errors.push(format!(
                "output {k} ('{out_name}'): shape {:?}, reference {:?}",
                actual.shape(),
                expected.shape()
            ));
            continue;
        }
        let stats = error_stats(a, b);
        if stats.max_rel_to_peak > MAX_REL_ERR || stats.non_finite_mismatches > 0 {
            errors.push(format!(
                "output {k} ('{out_name}'): max rel err {:.3e} > {MAX_REL_ERR:e} (max abs err \
                 {:.3e} at {:?}; {} non-finite mismatches)",
                stats.max_rel_to_peak,
                stats.max_abs,
                support::unravel(stats.max_abs_at, expected.shape()),
                stats.non_finite_mismatches
            ));
        }
        if worst.is_none_or(|w| stats.max_rel_to_peak > w.max_rel_to_peak) {
            worst = Some(stats);
        }
    }
    let row = Row {
        model: name.to_string(),
        bn_before: count_batch_norms(&original),
        bn_after: count_batch_norms(&optimized),
        ops_before,
        ops_after,
        worst: worst.unwrap_or(ErrorStats {
            max_rel_to_peak: f64::NAN,
            max_elementwise_rel: f64::NAN,
            max_abs: f64::NAN,
            max_abs_at: 0,
            non_finite_mismatches: 0,
        }),
        pass_ms,
    };
    Ok((row, errors))
}
