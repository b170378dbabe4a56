//! Differential test against onnxruntime on real architectures: each model under
//! `$KILN_ASSETS/models` (nine "light" architectures with seeded realistic weights and PP-OCRv4
//! text detection, prepared by `tools/prepare_assets.py`) is imported, verified and run on the
//! reference interpreter with the saved input, and every output is compared with
//! onnxruntime's (CPU, graph optimizations disabled, one thread).
//!
//! Criterion: max|kiln − ort| / max|ort| ≤ 1e-4 per output tensor (f32 sums in a different
//! order drift by ~1e-6 relative per layer; 1e-4 leaves room for ~100 layers, while a wrong
//! pad, stride or layout is off by O(1)). The table also shows the largest elementwise
//! relative error with a floor of 1e-3·max|ort| (reported, not gated).
//!
//! Each model also goes through the `kiln` binary: `info`, `dump` in all three formats (the
//! text dump must parse back and verify, the JSON must parse) and `kiln run`, whose output
//! files must equal the library run bit for bit.
//!
//! Heavy: tools/test.sh runs it in release (`cargo test --release -p kiln-cli --test
//! differential`); a debug build skips it unless `KILN_DIFFERENTIAL_DEBUG=1`.

#[path = "support/mod.rs"]
mod support;

use kiln_ir::Tensor;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;
use support::{catch_panic, error_stats, ErrorStats};

const SUITE: &str = "differential";

/// Max |kiln − ort| / max|ort| allowed per output.
const MAX_REL_ERR: f64 = 1e-4;

/// Every model `tools/prepare_assets.py` prepares; a missing one is a failure (a broken
/// download must not shrink the suite silently).
const EXPECTED_MODELS: &[&str] = &[
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
    "ppocrv4_det",
];

/// One model's row of the table.
struct Row {
    model: String,
    onnx_nodes: u64,
    kiln_nodes: usize,
    /// Worst output by max_rel_to_peak.
    worst: ErrorStats,
    interp_ms: f64,
    ort_ms: f64,
    ort_optimized_ms: f64,
}

fn main() -> ExitCode {
    if cfg!(debug_assertions) && std::env::var_os("KILN_DIFFERENTIAL_DEBUG").is_none() {
        println!(
            "{SUITE}: skipped in a debug build (tools/test.sh runs it with \
             `cargo test --release -p kiln-cli --test differential`)"
        );
        return ExitCode::SUCCESS;
    }
    let assets = match support::assets_dir(SUITE) {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    if let Err(e) = support::check_comparator() {
        eprintln!("{SUITE}: self-check failed: {e}");
        return ExitCode::FAILURE;
    }
    support::install_quiet_panic_hook();
    let models_dir = assets.join("models");
    let filters = support::name_filters();
    let mut names: Vec<String> = EXPECTED_MODELS.iter().map(|s| s.to_string()).collect();
    // Models added to the assets later run too.
    if let Ok(entries) = std::fs::read_dir(&models_dir) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".json") {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        }
    }
    names.retain(|n| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())));

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for name in &names {
        print!("{SUITE}: {name} ... ");
        use std::io::Write;
        std::io::stdout().flush().ok();
        match catch_panic(|| run_model(&models_dir, name)) {
            Ok((row, output_errors)) => {
                let verdict = if output_errors.is_empty() {
                    "ok"
                } else {
                    "FAIL"
                };
                println!(
                    "{verdict} (max rel err {:.2e}, {:.0} ms)",
                    row.worst.max_rel_to_peak, row.interp_ms
                );
                for e in output_errors {
                    failures.push(format!("{name}: {e}"));
                }
                rows.push(row);
            }
            Err(e) => {
                println!("FAIL");
                failures.push(format!("{name}: {e}"));
            }
        }
    }

    print_table(&rows);
    for f in &failures {
        println!("FAIL {f}");
    }
    println!(
        "{SUITE}: {} of {} models within max rel err {MAX_REL_ERR:e}",
        names.len() - failures_models(&failures, &names),
        names.len()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Number of models with at least one failure line.
fn failures_models(failures: &[String], names: &[String]) -> usize {
    names
        .iter()
        .filter(|n| failures.iter().any(|f| f.starts_with(&format!("{n}: "))))
        .count()
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<14} | {:>10} | {:>10} | {:>11} | {:>13} | {:>14} | {:>12} | {:>12} |",
        "model",
        "onnx nodes",
        "kiln nodes",
        "max rel err",
        "max elem rel",
        "kiln interp ms",
        "ORT ms",
        "ORT opt ms"
    );
    println!(
        "|{:-<16}|{:->12}|{:->12}|{:->13}|{:->15}|{:->16}|{:->14}|{:->14}|",
        "", "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<14} | {:>10} | {:>10} | {:>11.2e} | {:>13.2e} | {:>14.1} | {:>12.1} | {:>12.1} |",
            r.model,
            r.onnx_nodes,
            r.kiln_nodes,
            r.worst.max_rel_to_peak,
            r.worst.max_elementwise_rel,
            r.interp_ms,
            r.ort_ms,
            r.ort_optimized_ms
        );
    }
    println!(
        "(ORT: onnxruntime medians from the manifest, 1 thread; \"ORT ms\" with graph \
         optimizations disabled as for the reference outputs, \"ORT opt ms\" with all enabled. \
         kiln: one run of the reference interpreter, {} threads.)",
        kiln_interp::gemm::default_threads()
    );
    println!();
}

fn manifest_str<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("manifest: missing string '{key}'"))
}

fn manifest_shape(v: &Value) -> Result<Vec<usize>, String> {
    v.get("shape")
        .and_then(Value::as_array)
        .and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<Vec<usize>>>()
        })
        .ok_or_else(|| "manifest: missing or bad 'shape'".to_string())
}

fn read_npy(path: &Path) -> Result<Tensor, String> {
    kiln_ir::npy::read_npy_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Import, verify, run and compare one model; the row plus one message per output over the
/// tolerance.
fn run_model(models_dir: &Path, name: &str) -> Result<(Row, Vec<String>), String> {
    let manifest_path = models_dir.join(format!("{name}.json"));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).map_err(|e| {
            format!(
                "cannot read {}: {e} (run tools/prepare_assets.py; its log says why this model is \
                 missing)",
                manifest_path.display()
            )
        })?)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let inputs = manifest
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or("manifest: missing 'inputs'")?;
    let outputs = manifest
        .get("outputs")
        .and_then(Value::as_array)
        .ok_or("manifest: missing 'outputs'")?;

    let mut input_shapes = HashMap::new();
    let mut feeds = Vec::new();
    for inp in inputs {
        let input_name = manifest_str(inp, "name")?;
        input_shapes.insert(input_name.to_string(), manifest_shape(inp)?);
        feeds.push((
            input_name.to_string(),
            read_npy(&models_dir.join(manifest_str(inp, "file")?))?,
        ));
    }
    let options = kiln_onnx::ImportOptions {
        input_shapes,
        ..Default::default()
    };
    let model_path = models_dir.join(manifest_str(&manifest, "model")?);
    let graph =
        kiln_onnx::import_file(&model_path, &options).map_err(|e| format!("import: {e}"))?;
    kiln_ir::verify(&graph).map_err(|e| format!("verify: {e}"))?;

    // Feed in the imported graph's input order, matched by name.
    let ordered_feeds = graph
        .inputs()
        .iter()
        .map(|&v| {
            let input_name = graph.value_name(v);
            feeds
                .iter()
                .find(|(n, _)| n == input_name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| format!("graph input '{input_name}' has no saved input"))
        })
        .collect::<Result<Vec<Tensor>, String>>()?;
    let start = Instant::now();
    let results =
        kiln_interp::run(&graph, &ordered_feeds).map_err(|e| format!("interpreter: {e}"))?;
    let interp_ms = start.elapsed().as_secs_f64() * 1e3;

    if results.len() != outputs.len() {
        return Err(format!(
            "kiln produced {} outputs, onnxruntime {}",
            results.len(),
            outputs.len()
        ));
    }
    let mut errors = Vec::new();
    let mut worst: Option<ErrorStats> = None;
    for (k, (actual, out)) in results.iter().zip(outputs).enumerate() {
        let out_name = manifest_str(out, "name")?;
        let expected = read_npy(&models_dir.join(manifest_str(out, "file")?))?;
        if actual.shape() != expected.shape() || actual.dtype() != expected.dtype() {
            errors.push(format!(
                "output {k} ('{out_name}'): {} {:?}, onnxruntime {} {:?}",
                actual.dtype(),
                actual.shape(),
                expected.dtype(),
                expected.shape()
            ));
            continue;
        }
        let (Some(a), Some(b)) = (actual.as_f32(), expected.as_f32()) else {
            errors.push(format!(
                "output {k} ('{out_name}'): dtype {} (the differential test compares f32 outputs)",
                actual.dtype()
            ));
            continue;
        };
        let stats = error_stats(a, b);
        if stats.max_rel_to_peak > MAX_REL_ERR || stats.non_finite_mismatches > 0 {
            errors.push(format!(
                "output {k} ('{out_name}'): max rel err {:.3e} > {MAX_REL_ERR:e} (max abs err {:.3e} \
                 at {:?}: kiln {}, onnxruntime {}; {} non-finite mismatches)",
                stats.max_rel_to_peak,
                stats.max_abs,
                support::unravel(stats.max_abs_at, expected.shape()),
                a[stats.max_abs_at],
                b[stats.max_abs_at],
                stats.non_finite_mismatches
            ));
        }
        if worst.is_none_or(|w| stats.max_rel_to_peak > w.max_rel_to_peak) {
            worst = Some(stats);
        }
    }
    if let Err(e) = check_cli(&model_path, &options.input_shapes, &feeds, &results) {
        errors.push(format!("kiln CLI: {e}"));
    }
    let ort = manifest.get("onnxruntime");
    let ort_ms = |key: &str| {
        ort.and_then(|o| o.get(key))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let row = Row {
        model: name.to_string(),
        onnx_nodes: manifest
            .get("onnx_nodes")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        kiln_nodes: graph
            .node_ids()
            .filter(|&id| !graph.node(id).op.is_source())
            .count(),
        worst: worst.unwrap_or(ErrorStats {
            max_rel_to_peak: f64::NAN,
            max_elementwise_rel: f64::NAN,
            max_abs: f64::NAN,
            max_abs_at: 0,
            non_finite_mismatches: 0,
        }),
        interp_ms,
        ort_ms: ort_ms("unoptimized_ms_median"),
        ort_optimized_ms: ort_ms("optimized_ms_median"),
    };
    Ok((row, errors))
}

/// Runs `kiln` with `args`; stdout on success, the command line and stderr on failure.
fn kiln(args: &[std::ffi::OsString]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .map_err(|e| format!("cannot start kiln: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`kiln {}` failed: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("kiln printed non-UTF-8: {e}"))
}

/// `kiln info`, `kiln dump --format text|dot|json` and `kiln run` on the model: each must
/// succeed, the dumps must be well-formed, and `kiln run` must write exactly the outputs the
/// library run produced.
fn check_cli(
    model: &Path,
    input_shapes: &HashMap<String, Vec<usize>>,
    feeds: &[(String, Tensor)],
    expected: &[Tensor],
) -> Result<(), String> {
    use std::ffi::OsString;
    let work = std::env::temp_dir().join(format!(
        "kiln-differential-{}-{}",
        std::process::id(),
        model.file_stem().unwrap_or_default().to_string_lossy()
    ));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut shape_args: Vec<OsString> = Vec::new();
    let mut sorted: Vec<_> = input_shapes.iter().collect();
    sorted.sort();
    for (name, dims) in sorted {
        let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        shape_args.push("--input-shape".into());
        shape_args.push(format!("{name}={}", dims.join(",")).into());
    }
    let with = |head: &[&str]| -> Vec<OsString> {
        let mut v: Vec<OsString> = head.iter().map(OsString::from).collect();
        v.push(model.as_os_str().to_owned());
        v.extend(shape_args.iter().cloned());
        v
    };

    let info = kiln(&with(&["info"]))?;
    if !info.contains("op histogram") || !info.contains("parameters") {
        return Err(format!(
            "`kiln info` lacks the histogram or parameter count:\n{info}"
        ));
    }
    let text = kiln(&with(&["dump", "--format", "text"]))?;
    let reparsed = kiln_ir::text::parse_graph(&text)
        .map_err(|e| format!("`kiln dump` text does not parse back: {e}"))?;
    kiln_ir::verify(&reparsed).map_err(|e| format!("`kiln dump` text does not verify: {e}"))?;
    let dot = kiln(&with(&["dump", "--format", "dot"]))?;
    if !dot.trim_start().starts_with("digraph") || !dot.trim_end().ends_with('}') {
        return Err("`kiln dump --format dot` is not a digraph".into());
    }
    let json = kiln(&with(&["dump", "--format", "json"]))?;
    serde_json::from_str::<Value>(&json)
        .map_err(|e| format!("`kiln dump --format json` is not JSON: {e}"))?;

    // the reference interpreter: this suite checks it (the JIT is checked against it by
    // kiln-runtime's `models` and `jit_exact`)
    let mut run_args = with(&["run", "--backend", "interp"]);
    for (k, (name, tensor)) in feeds.iter().enumerate() {
        let file = work.join(format!("input_{k}.npy"));
        kiln_ir::npy::write_npy_file(&file, tensor)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        run_args.push("--input".into());
        let mut arg = OsString::from(format!("{name}="));
        arg.push(file.as_os_str());
        run_args.push(arg);
    }
    let out_dir = work.join("out");
    run_args.push("--output-dir".into());
    run_args.push(out_dir.as_os_str().to_owned());
    kiln(&run_args)?;
    let mut written: Vec<_> = std::fs::read_dir(&out_dir)
        .map_err(|e| format!("{}: {e}", out_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    written.sort();
    if written.len() != expected.len() {
        return Err(format!(
            "`kiln run` wrote {} files for {} outputs",
            written.len(),
            expected.len()
        ));
    }
    // Matched by content: the files are named after sanitized output names, whose sorted
    // order need not be the graph's output order.
    for want in expected {
        let found = written
            .iter()
            .any(|path| read_npy(path).is_ok_and(|got| got.bitwise_eq(want)));
        if !found {
            return Err("`kiln run` output differs from the library run".into());
        }
    }
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}
