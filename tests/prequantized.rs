//! Pre-quantized models against onnxruntime: the models onnxruntime's `quantize_static` wrote
//! under `$KILN_ASSETS/quant` (`tools/quant_assets.py`: resnet50, squeezenet, shufflenet and
//! PP-OCRv4 det, each as QDQ u8/s8 per-channel, QOperator u8/s8 and symmetric-int8 QDQ) are
//! imported, verified and run on the reference interpreter with the saved evaluation input,
//! and each output is compared with onnxruntime's output of the same quantized model.
//!
//! Two measures, both in steps of the quantized grid (LSB):
//!
//! - **Per op, teacher-forced** (gated): the interpreter runs the graph with every quantized
//!   activation (each u8/i8 tensor a node computes) replaced, once computed and compared, by
//!   onnxruntime's value of that tensor, so each quantized op (a QuantizeLinear after float ops,
//!   a QLinearConv, a `com.microsoft` QLinear op) is checked on exactly onnxruntime's inputs.
//!   Reference: onnxruntime with graph optimizations **disabled**, which runs the graph as
//!   written — a QDQ model's QuantizeLinear / DequantizeLinear nodes literally with float ops
//!   between (simulated quantization, what kiln imports), a QOperator model's integer kernels
//!   (whose arithmetic kiln's interpreter reproduces bit for bit). What can remain is float
//!   rounding (summation order of a float conv, ~1e-6 relative; a `com.microsoft` op that kiln
//!   imports as dequantize → float op → quantize while onnxruntime rounds an intermediate in
//!   another order) moving a value across a rounding boundary: one step in one element.
//!   Criterion: **every quantized activation within 1 step**, and the model output (computed
//!   from onnxruntime's last quantized tensors) within 1 output step.
//! - **End to end** (reported): the interpreter runs free, and its output is compared with
//!   onnxruntime's, both without and with graph optimizations (with them, onnxruntime fuses QDQ
//!   groups into integer QLinearConv / QGemm kernels that round once where the QDQ graph rounds
//!   the f32 conv output, so it differs from the QDQ graph's semantics by design). A one-step
//!   flip early in the network moves the values after it, so end to end the output can differ
//!   by more than one step in a few elements, most where an op after the last quantization
//!   amplifies (PP-OCR: the sigmoid's input is quantized with a scale of ~1.07, so one step
//!   there is up to ~63 steps of the probability: sigmoid(0) − sigmoid(−1.07) = 0.245). For
//!   scale, the table also shows how far onnxruntime's two modes are from each other.
//!
//! The output's step: every model here ends in a DequantizeLinear, so its output lies on the
//! grid `scale·(q − zp)` and one step is that DequantizeLinear's scale (read from the ONNX model
//! by the asset script, not from kiln's import). A model whose output came from a float op has
//! no grid; its step is taken as the output's range / 255, the resolution of an 8-bit tensor
//! covering it.
//!
//! Models quantized by PyTorch and exported to ONNX (`tools/export_torch_quantized.py`, which
//! needs torch and so is not part of tools/test.sh) are checked the same way when their
//! directory is `$KILN_ASSETS/torch_quant`.
//!
//! Heavy: tools/test.sh runs it in release (`cargo test --release -p kiln-cli --test
//! prequantized`); a debug build skips it unless `KILN_PREQUANTIZED_DEBUG=1`.

#[path = "support/mod.rs"]
mod support;

use kiln_ir::{Graph, Op, Tensor, ValueId};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;
use support::catch_panic;

const SUITE: &str = "prequantized";

/// Max |kiln − ORT (optimizations disabled)| per element, in quantization steps, for each
/// quantized activation and the output under teacher forcing.
const MAX_STEPS: f64 = 1.0;

/// Two grid values `scale·k₁`, `scale·k₂` rounded to f32 differ by `|k₁ − k₂|` steps only
/// within f32 rounding (~1e-7 relative); this much is ignored when gating on whole steps.
const STEP_SLACK: f64 = 1e-3;

/// Every (model, format) `tools/quant_assets.py` writes; a missing one is a failure.
const MODELS: &[&str] = &["resnet50", "squeezenet", "shufflenet", "ppocrv4_det"];
const FORMATS: &[&str] = &["qdq_u8s8", "qop_u8s8", "qdq_s8sym"];

/// The difference between kiln's values and onnxruntime's, in steps.
#[derive(Copy, Clone, Debug, Default)]
struct StepDiff {
    /// max over elements of |kiln − ort| / step.
    max_steps: f64,
    /// Elements that differ by half a step or more (on a grid: by whole steps).
    differing: usize,
    total: usize,
}

impl StepDiff {
    fn merge(self, other: StepDiff) -> StepDiff {
        StepDiff {
            max_steps: self.max_steps.max(other.max_steps),
            differing: self.differing + other.differing,
            total: self.total + other.total,
        }
    }

    fn within(&self, steps: f64) -> bool {
        self.max_steps <= steps + STEP_SLACK
    }
}

/// `|actual − expected| / step` per element; non-finite values count as infinitely far
/// unless both sides are the same non-finite value.
fn step_diff(actual: &[f64], expected: &[f64], step: f64) -> StepDiff {
    let mut d = StepDiff {
        total: expected.len(),
        ..StepDiff::default()
    };
    for (&a, &b) in actual.iter().zip(expected) {
        let steps = if a.is_finite() && b.is_finite() {
            (a - b).abs() / step
        } else if a == b || (a.is_nan() && b.is_nan()) {
            0.0
        } else {
            f64::INFINITY
        };
        d.max_steps = d.max_steps.max(steps);
        if steps >= 0.5 {
            d.differing += 1;
        }
    }
    d
}

/// Teacher-forced comparison of one model on one input.
#[derive(Clone, Debug, Default)]
struct Forced {
    /// Over all quantized activations, in integer steps.
    activations: StepDiff,
    /// The activation with the largest difference.
    worst_activation: String,
    /// Activations compared (onnxruntime's that kiln's graph has by name).
    compared: usize,
    /// The model output computed from onnxruntime's quantized activations, in output steps.
    output: StepDiff,
}

/// One (model, format) row of the table.
struct Row {
    model: String,
    format: String,
    /// Quantization-related node counts of the imported graph, e.g. "qconv 53, quantize 1".
    quant_ops: String,
    forced: Forced,
    /// End to end, against onnxruntime without / with graph optimizations.
    free_vs_ort: StepDiff,
    free_vs_ort_opt: StepDiff,
    /// onnxruntime without optimizations against onnxruntime with them.
    ort_vs_ort_opt: StepDiff,
    step: f64,
    interp_ms: f64,
    ort_ms: f64,
    ort_opt_ms: f64,
}

impl Row {
    /// Why the row fails the criterion, if it does.
    fn failure(&self) -> Option<String> {
        let f = &self.forced;
        if !f.activations.within(MAX_STEPS) {
            return Some(format!(
                "quantized activation '{}' differs from onnxruntime's by {} steps ({} of {} \
                 elements over all {} activations differ), allowed {MAX_STEPS}",
                f.worst_activation,
                f.activations.max_steps,
                f.activations.differing,
                f.activations.total,
                f.compared
            ));
        }
        if !f.output.within(MAX_STEPS) {
            return Some(format!(
                "output from onnxruntime's quantized activations differs by {:.3} steps (step \
                 {:.3e}) in {} of {} elements, allowed {MAX_STEPS}",
                f.output.max_steps, self.step, f.output.differing, f.output.total
            ));
        }
        None
    }
}

fn main() -> ExitCode {
    if cfg!(debug_assertions) && std::env::var_os("KILN_PREQUANTIZED_DEBUG").is_none() {
        println!(
            "{SUITE}: skipped in a debug build (tools/test.sh runs it with \
             `cargo test --release -p kiln-cli --test prequantized`)"
        );
        return ExitCode::SUCCESS;
    }
    let assets = match support::assets_dir(SUITE) {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    if let Err(e) = self_check() {
        eprintln!("{SUITE}: self-check failed: {e}");
        return ExitCode::FAILURE;
    }
    support::install_quiet_panic_hook();
    let quant_dir = assets.join("quant");
    let manifest = match read_manifest(&quant_dir.join("manifest.json")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{SUITE}: {e} (run tools/quant_assets.py)");
            return ExitCode::FAILURE;
        }
    };
    let filters = support::name_filters();
    // (directory, manifest "models" entry, model, format) of every case to run: the
    // onnxruntime-quantized models, all required, then the PyTorch-exported ones when
    // `tools/export_torch_quantized.py` was run into $KILN_ASSETS/torch_quant (it needs torch,
    // which CI does not install).
    let mut cases: Vec<(std::path::PathBuf, Value, String, String)> = Vec::new();
    for model in MODELS {
        for format in FORMATS {
            cases.push((
                quant_dir.clone(),
                manifest["models"][model].clone(),
                model.to_string(),
                format.to_string(),
            ));
        }
    }
    let torch_dir = assets.join("torch_quant");
    match read_manifest(&torch_dir.join("manifest.json")) {
        Ok(torch) => {
            let models = torch["kiln_models"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            for (model, entry) in models {
                let formats = entry["formats"].as_object().cloned().unwrap_or_default();
                for format in formats.keys() {
                    cases.push((
                        torch_dir.clone(),
                        entry.clone(),
                        model.clone(),
                        format.clone(),
                    ));
                }
            }
        }
        Err(_) => println!(
            "{SUITE}: no PyTorch-exported models ({} absent; tools/export_torch_quantized.py \
             writes them)",
            torch_dir.display()
        ),
    }
    cases.retain(|(_, _, model, format)| {
        let case = format!("{model}.{format}");
        filters.is_empty() || filters.iter().any(|f| case.contains(f.as_str()))
    });

    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (dir, entry, model, format) in &cases {
        let case = format!("{model}.{format}");
        print!("{SUITE}: {case} ... ");
        use std::io::Write;
        std::io::stdout().flush().ok();
        match catch_panic(|| run_case(dir, entry, model, format)) {
            Ok(row) => {
                let failure = row.failure();
                println!(
                    "{} (per op: {:.2} steps over {} activations, output {:.2} LSB; end to end: \
                     {:.2} LSB vs ORT, {:.2} LSB vs ORT optimized; {:.0} ms)",
                    if failure.is_none() { "ok" } else { "FAIL" },
                    row.forced.activations.max_steps,
                    row.forced.compared,
                    row.forced.output.max_steps,
                    row.free_vs_ort.max_steps,
                    row.free_vs_ort_opt.max_steps,
                    row.interp_ms
                );
                if let Some(f) = failure {
                    failures.push(format!("{case}: {f}"));
                }
                rows.push(row);
            }
            Err(e) => {
                println!("FAIL");
                failures.push(format!("{case}: {e}"));
            }
        }
    }
    let cases = cases.len();
    print_table(&rows);
    for f in &failures {
        println!("FAIL {f}");
    }
    println!(
        "{SUITE}: {} of {cases} quantized models within {MAX_STEPS} step of onnxruntime per op",
        cases - failures.len()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| {:<18} | {:<20} | {:<38} | {:>13} | {:>10} | {:>13} | {:>14} | {:>14} | {:>8} | {:>6} | {:>6} | {:>6} |",
        "model",
        "format",
        "kiln quantized ops",
        "per-op steps",
        "forced out",
        "e2e vs ORT",
        "e2e vs ORT opt",
        "ORT vs ORT opt",
        "LSB",
        "kiln",
        "ORT",
        "ORTopt"
    );
    println!(
        "|{:-<20}|{:-<22}|{:-<40}|{:->15}|{:->12}|{:->15}|{:->16}|{:->16}|{:->10}|{:->8}|{:->8}|{:->8}|",
        "", "", "", "", "", "", "", "", "", "", "", ""
    );
    let cell = |d: &StepDiff| format!("{:.2} ({}≠)", d.max_steps, d.differing);
    // onnxruntime's times are in tools/quant_assets.py's manifest only.
    let ms = |t: f64| {
        if t.is_finite() {
            format!("{t:.1}")
        } else {
            "-".to_string()
        }
    };
    for r in rows {
        println!(
            "| {:<18} | {:<20} | {:<38} | {:>13} | {:>10.2} | {:>13} | {:>14} | {:>14} | {:>8.2e} | {:>6.0} | {:>6} | {:>6} |",
            r.model,
            r.format,
            r.quant_ops,
            cell(&r.forced.activations),
            r.forced.output.max_steps,
            cell(&r.free_vs_ort),
            cell(&r.free_vs_ort_opt),
            cell(&r.ort_vs_ort_opt),
            r.step,
            r.interp_ms,
            ms(r.ort_ms),
            ms(r.ort_opt_ms)
        );
    }
    println!(
        "(per-op steps: max |kiln − ORT| over every quantized activation with onnxruntime's \
         inputs forced (gated ≤ {MAX_STEPS}), (N≠) elements differing; forced out: the output \
         computed from onnxruntime's activations, in LSB (gated ≤ {MAX_STEPS}); e2e: the free \
         run's output in LSB against onnxruntime without / with graph optimizations, and \
         onnxruntime's two modes against each other (reported). \
         ORT: onnxruntime disabled / all optimizations, medians in ms from the manifest, 1 \
         thread; kiln: one run of the reference interpreter in ms, {} threads.)",
        kiln_interp::gemm::default_threads()
    );
    println!();
}

fn read_manifest(path: &Path) -> Result<Value, String> {
    std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key)
        .filter(|x| !x.is_null())
        .ok_or_else(|| format!("manifest: missing '{key}'"))
}

fn field_str<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| format!("manifest: '{key}' is not a string"))
}

fn read_npy(path: &Path) -> Result<Tensor, String> {
    kiln_ir::npy::read_npy_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The quantization step of each graph output: its DequantizeLinear's scale, or `None` for
/// an output made by a float op (then range / 255 of the reference is used).
fn output_steps(format_entry: &Value) -> Result<Vec<Option<f64>>, String> {
    field(format_entry, "outputs")?
        .as_array()
        .ok_or("manifest: 'outputs' is not a list")?
        .iter()
        .map(
            |out| match out.get("dequantize_scale").and_then(Value::as_array) {
                None => Ok(None),
                Some(scales) if scales.len() == 1 => Ok(scales[0].as_f64()),
                Some(scales) => Err(format!(
                "output '{}' is dequantized per axis ({} scales); this suite expects per-tensor \
                 outputs",
                out.get("name").and_then(Value::as_str).unwrap_or("?"),
                scales.len()
            )),
            },
        )
        .collect()
}

/// Range / 255 of a float output: the step of an 8-bit grid spanning it.
fn float_output_step(reference: &[f64]) -> f64 {
    let (lo, hi) = reference
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if hi > lo {
        (hi - lo) / 255.0
    } else {
        f64::MIN_POSITIVE
    }
}

/// Counts of the quantization ops in the imported graph, sorted by mnemonic.
fn quant_op_counts(graph: &Graph) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for id in graph.node_ids() {
        let op = &graph.node(id).op;
        if matches!(
            op,
            Op::Quantize
                | Op::Dequantize
                | Op::QConv(_)
                | Op::QMatMul
                | Op::ConvInteger(_)
                | Op::MatMulInteger
        ) {
            *counts.entry(op.mnemonic()).or_default() += 1;
        }
    }
    counts
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `graph` on `input` like `kiln_interp::run`, but every computed value named like one
/// of onnxruntime's quantized activations is compared with it and then replaced by it, so
/// each op sees exactly onnxruntime's inputs. Returns the per-activation differences and the
/// graph's first output.
fn run_teacher_forced(
    graph: &Graph,
    input: &Tensor,
    reference: &HashMap<String, Tensor>,
) -> Result<(Forced, Tensor), String> {
    let order = graph.topo_order().map_err(|e| e.to_string())?;
    // Values are dropped after their last use, as the interpreter does (PP-OCR keeps ~1 GB
    // otherwise).
    let mut pending: HashMap<ValueId, usize> = HashMap::new();
    for &id in &order {
        for &v in graph.node(id).inputs() {
            *pending.entry(v).or_default() += 1;
        }
    }
    let mut values: HashMap<ValueId, Tensor> = HashMap::new();
    let mut forced = Forced::default();
    let mut worst = -1.0f64;
    for id in order {
        let node = graph.node(id);
        let produced = match &node.op {
            Op::Input { .. } => vec![input.clone()],
            Op::Const(_) => vec![graph
                .const_tensor(ValueId { node: id, port: 0 })
                .ok_or_else(|| format!("constant '{}' holds no data", node.name))?
                .clone()],
            op => {
                let args: Vec<&Tensor> = node
                    .inputs()
                    .iter()
                    .map(|v| values.get(v).ok_or("an input was not computed"))
                    .collect::<Result<_, _>>()?;
                let arg_types: Vec<_> =
                    node.inputs().iter().map(|&v| graph.value_type(v)).collect();
                let out_types: Vec<_> = node.outputs.iter().map(|o| o.ty.clone()).collect();
                kiln_interp::eval_op(op, &args, &arg_types, &out_types)
                    .map_err(|e| format!("node '{}' ({}): {e}", node.name, op.mnemonic()))?
            }
        };
        for &v in node.inputs() {
            let left = pending.get_mut(&v).expect("every input was counted");
            *left -= 1;
            if *left == 0 && !graph.outputs().contains(&v) {
                values.remove(&v);
            }
        }
        for (port, mut t) in produced.into_iter().enumerate() {
            let v = ValueId {
                node: id,
                port: port as u16,
            };
            let name = graph.value_name(v);
            if let (Some(ort), false) = (reference.get(name), node.op.is_source()) {
                if ort.dtype() != t.dtype() || ort.shape() != t.shape() {
                    return Err(format!(
                        "activation '{name}': kiln computes {} {:?}, onnxruntime {} {:?}",
                        t.dtype(),
                        t.shape(),
                        ort.dtype(),
                        ort.shape()
                    ));
                }
                let ints = |x: &Tensor| -> Vec<f64> {
                    x.to_i64_vec()
                        .expect("quantized activations are integers")
                        .into_iter()
                        .map(|i| i as f64)
                        .collect()
                };
                let d = step_diff(&ints(&t), &ints(ort), 1.0);
                if d.max_steps > worst {
                    worst = d.max_steps;
                    forced.worst_activation = name.to_string();
                }
                forced.activations = forced.activations.merge(d);
                forced.compared += 1;
                t = ort.clone();
            }
            if pending.get(&v).copied().unwrap_or(0) > 0 || graph.outputs().contains(&v) {
                values.insert(v, t);
            }
        }
    }
    let first = graph.outputs().first().ok_or("the graph has no output")?;
    let output = values
        .remove(first)
        .ok_or("the graph output was never computed")?;
    Ok((forced, output))
}

/// Import, verify and run one quantized model on its reference inputs; the row with the
/// largest differences over all reference inputs.
fn run_case(quant_dir: &Path, entry: &Value, model: &str, format: &str) -> Result<Row, String> {
    if entry.is_null() {
        return Err(format!(
            "model '{model}' missing from manifest.json (tools/quant_assets.py's log says why)"
        ));
    }
    let fmt = field(field(entry, "formats")?, format)?;
    let input = field(entry, "input")?;
    let input_name = field_str(input, "name")?;
    let input_shape: Vec<usize> = field(input, "shape")?
        .as_array()
        .and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        })
        .ok_or("manifest: bad input shape")?;
    let options = kiln_onnx::ImportOptions {
        input_shapes: HashMap::from([(input_name.to_string(), input_shape)]),
        ..Default::default()
    };
    let model_path = quant_dir.join(field_str(fmt, "model")?);
    let graph =
        kiln_onnx::import_file(&model_path, &options).map_err(|e| format!("import: {e}"))?;
    kiln_ir::verify(&graph).map_err(|e| format!("verify: {e}"))?;
    if graph.inputs().len() != 1 || graph.value_name(graph.inputs()[0]) != input_name {
        return Err(format!(
            "the imported graph's inputs are not ['{input_name}']"
        ));
    }
    let steps = output_steps(fmt)?;
    if steps.len() != graph.outputs().len() {
        return Err(format!(
            "kiln's graph has {} outputs, the ONNX model {}",
            graph.outputs().len(),
            steps.len()
        ));
    }

    let references = field(fmt, "references")?
        .as_array()
        .filter(|r| !r.is_empty())
        .ok_or("manifest: no references")?;
    let mut forced = Forced::default();
    let mut free_vs_ort = StepDiff::default();
    let mut free_vs_ort_opt = StepDiff::default();
    let mut ort_vs_ort_opt = StepDiff::default();
    let mut step = f64::NAN;
    let mut interp_ms = 0.0;
    for reference in references {
        let x = read_npy(&quant_dir.join(field_str(reference, "input")?))?;
        let load_ref = |key: &str| -> Result<Vec<f64>, String> {
            let t = read_npy(&quant_dir.join(field_str(reference, key)?))?;
            if t.as_f32().is_none() {
                return Err(format!(
                    "the {key} reference is {}, expected f32",
                    t.dtype()
                ));
            }
            Ok(t.to_f64_vec())
        };
        let (ort, ort_opt) = (load_ref("ort")?, load_ref("ort_opt")?);
        // The asset script saves the first output (every model here has one).
        step = steps[0].unwrap_or_else(|| float_output_step(&ort));
        let as_values = |t: &Tensor| -> Result<Vec<f64>, String> {
            if t.as_f32().is_none() || t.numel() != ort.len() {
                return Err(format!(
                    "kiln's output is {} {:?}, onnxruntime's has {} f32 elements",
                    t.dtype(),
                    t.shape(),
                    ort.len()
                ));
            }
            Ok(t.to_f64_vec())
        };

        let start = Instant::now();
        let results = kiln_interp::run(&graph, std::slice::from_ref(&x))
            .map_err(|e| format!("interpreter: {e}"))?;
        interp_ms = start.elapsed().as_secs_f64() * 1e3;
        let free = as_values(results.first().ok_or("kiln produced no output")?)?;
        free_vs_ort = free_vs_ort.merge(step_diff(&free, &ort, step));
        free_vs_ort_opt = free_vs_ort_opt.merge(step_diff(&free, &ort_opt, step));
        ort_vs_ort_opt = ort_vs_ort_opt.merge(step_diff(&ort, &ort_opt, step));

        let activations_path = quant_dir.join(field_str(reference, "ort_quantized")?);
        let activations: HashMap<String, Tensor> = kiln_ir::npy::read_npz_file(&activations_path)
            .map_err(|e| format!("{}: {e}", activations_path.display()))?
            .into_iter()
            .collect();
        let (mut f, output) = run_teacher_forced(&graph, &x, &activations)?;
        if f.compared != activations.len() {
            let names: std::collections::HashSet<&str> = graph
                .node_ids()
                .flat_map(|id| graph.node(id).outputs.iter().map(|o| o.name.as_str()))
                .collect();
            let mut missing: Vec<&String> = activations
                .keys()
                .filter(|n| !names.contains(n.as_str()))
                .collect();
            missing.sort();
            return Err(format!(
                "{} of onnxruntime's {} quantized activations have no value of that name in \
                 kiln's graph, e.g. {:?}",
                activations.len() - f.compared,
                activations.len(),
                &missing[..missing.len().min(5)]
            ));
        }
        f.output = step_diff(&as_values(&output)?, &ort, step);
        if f.activations.max_steps >= forced.activations.max_steps {
            forced.worst_activation = f.worst_activation.clone();
        }
        forced.activations = forced.activations.merge(f.activations);
        forced.output = forced.output.merge(f.output);
        forced.compared += f.compared;
    }
    let ort = field(fmt, "onnxruntime")?;
    let ms = |key: &str| ort.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
    Ok(Row {
        model: model.to_string(),
        format: format.to_string(),
        quant_ops: quant_op_counts(&graph),
        forced,
        free_vs_ort,
        free_vs_ort_opt,
        ort_vs_ort_opt,
        step,
        interp_ms,
        ort_ms: ms("ort_ms_median"),
        ort_opt_ms: ms("ort_opt_ms_median"),
    })
}

/// The step measure on hand-made values (this binary has no `#[test]` harness): a measure
/// that reported 0 for everything would pass every model.
fn self_check() -> Result<(), String> {
    // Step 0.5: 1.0 vs 1.5 is one step; 2.0 vs 2.0 none; 0.0 vs 0.2 is 0.4 steps (below half
    // a step, so not counted as differing).
    let d = step_diff(&[1.0, 2.0, 0.0], &[1.5, 2.0, 0.2], 0.5);
    if (d.max_steps - 1.0).abs() > 1e-9 || d.differing != 1 || d.total != 3 {
        return Err(format!("step_diff gave {d:?}"));
    }
    if !d.within(1.0) || d.within(0.9) {
        return Err(format!(
            "{d:?}: within(1.0) must hold and within(0.9) must not"
        ));
    }
    let nan = step_diff(&[f64::NAN], &[0.0], 1.0);
    if nan.max_steps != f64::INFINITY {
        return Err(format!("NaN against a number gave {nan:?}"));
    }
    // A range of 0..255 has step 1.
    if (float_output_step(&[0.0, 255.0, 3.0]) - 1.0).abs() > 1e-12 {
        return Err("float_output_step([0, 255, 3]) is not 1".into());
    }
    Ok(())
}
