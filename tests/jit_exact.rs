//! The JIT backend against the reference interpreter on every quantized model of the asset
//! suites: `kiln run --backend jit` must give `--backend interp`'s bytes.
//!
//! Models:
//!
//! - every realized model of the differential suite (`$KILN_ASSETS/models`: the light
//!   architectures and PP-OCRv4 det), quantized the way `kiln quantize` does it
//!   (`kiln_quant::quantize` with the default options: MinMax, u8 activations, i8 per-channel
//!   weights) on the first [`CALIBRATION_SAMPLES`] samples of its calibration set from
//!   `tools/quant_assets.py` (`$KILN_ASSETS/quant`), or, for a model that has none, on as many
//!   samples of seeded normal noise (`kiln quantize --random-calibration N`; the asset
//!   script's calibration images of the light models are seeded N(0, 1) noise too);
//! - every model onnxruntime's `quantize_static` wrote under `$KILN_ASSETS/quant` (the QDQ
//!   and QOperator imports of `tests/prequantized.rs`).
//!
//! Each graph is brought into the form the JIT backend compiles (`crates/kiln-cli/src/jit.rs`:
//! quantize/dequantize pairs converted to integer ops by the `quantize` rules, then `-O1`),
//! then run on the model's stored input by `kiln_interp::run` and by
//! `kiln_runtime::Model::from_graph(g).compile(&Options::default())`.
//!
//! The JIT's outputs are also compared with the interpreter's on the graph as loaded (what
//! `kiln run --backend interp` runs). For kiln's own int8 graphs this is gated by the same
//! rules (preparing them only merges reshapes). For the onnxruntime-quantized imports it is
//! reported only: as loaded, a QDQ model rounds f32 convolutions between its
//! quantize/dequantize nodes (simulated quantization) and a QOperator model's `com.microsoft`
//! ops run as dequantize → float op → quantize, while the JIT runs the integer conversion,
//! which rounds once per op; the two differ by a step in a few elements by design
//! (`tests/prequantized.rs` measures the graph as loaded against onnxruntime).
//!
//! Besides the model's outputs, every integer tensor a dequantize node reads is compared
//! (made an extra output of both runs): the last integer values before each float island,
//! which a model ending in a float op (softmax) would otherwise show only through it.
//!
//! Criterion, per output: identical bytes when no float op computes anything on the way to it
//! (integer kernels, quantize/dequantize and data movement are bit-exact by design, see
//! docs/kernels.md); when a float island does (an f32 op between a dequantize and a quantize,
//! or after the last dequantize), the JIT's f32 kernels may sum or approximate in another
//! order, so the output must be within [`FLOAT_ISLAND_REL`] of its largest magnitude (the
//! f32 kernels' own tolerance against the interpreter). Either way identical bytes are
//! reported as "bit-exact". An integer tensor read by a dequantize must be identical when no
//! float op precedes it; after a float island it is reported only (a rounding difference
//! there may move a value across a quantization boundary, which the model outputs then
//! show). A model the JIT cannot compile (ops without kernels) fails, listing the ops.
//!
//! Heavy: tools/test.sh runs it in release (`cargo test --release -p kiln-cli --test
//! jit_exact`); a debug build skips it. A positional argument filters models by name.

#[path = "support/mod.rs"]
mod support;

use kiln_ir::{DType, Graph, Op, Tensor, TensorData, ValueId};
use kiln_quant::{CalibrationSet, QuantizeConfig};
use kiln_runtime::{Model, Options, RuntimeError};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use support::catch_panic;

const SUITE: &str = "jit_exact";

/// Calibration samples per realized model: the test checks the kernels on whatever scales
/// calibration picks, so one sample suffices. Each sample costs a float run for calibration
/// and a float and an int8 run for `kiln quantize`'s accuracy report (vgg19: ~10 s here).
const CALIBRATION_SAMPLES: usize = 1;

/// Max |jit − interp| / max|interp| of an output that a float island computes: the f32
/// kernels' tolerance against the interpreter (kiln-runtime's f32 proptests use the same).
const FLOAT_ISLAND_REL: f64 = 1e-5;

/// The differential suite's models (`tests/differential.rs`); models added to the assets
/// later run too.
const REALIZED_MODELS: &[&str] = &[
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

/// The onnxruntime-quantized models and formats `tools/quant_assets.py` writes
/// (`tests/prequantized.rs`).
const ORT_MODELS: &[&str] = &["resnet50", "squeezenet", "shufflenet", "ppocrv4_det"];
const ORT_FORMATS: &[&str] = &["qdq_u8s8", "qop_u8s8", "qdq_s8sym"];

/// One model to check.
enum Case {
    /// `$KILN_ASSETS/models/NAME`, quantized by kiln.
    Realized { name: String },
    /// `$KILN_ASSETS/quant/models/MODEL.FORMAT.onnx`, quantized by onnxruntime.
    OrtQuantized { model: String, format: String },
}

impl Case {
    fn label(&self) -> String {
        match self {
            Case::Realized { name } => format!("{name} (kiln int8)"),
            Case::OrtQuantized { model, format } => format!("{model}.{format}"),
        }
    }
}

/// How an output was judged.
#[derive(Clone, Debug, PartialEq)]
enum Rule {
    /// Only integer kernels, quantize/dequantize and data movement lead to it: identical
    /// bytes required.
    Exact,
    /// Float ops (mnemonic → count) compute on the way to it: within [`FLOAT_ISLAND_REL`].
    FloatIsland(BTreeMap<&'static str, usize>),
}

/// The comparison of one output.
struct OutputCheck {
    name: String,
    rule: Rule,
    /// Identical bytes.
    bit_exact: bool,
    /// max |jit − interp| (0 when bit-exact).
    max_abs: f64,
    /// max |jit − interp| / max |interp| (0 when bit-exact).
    max_rel: f64,
    /// Elements whose values differ, of `total`.
    differing: usize,
    total: usize,
    /// Why the output fails its rule, if it does.
    failure: Option<String>,
}

impl OutputCheck {
    fn summary(&self) -> String {
        let rule = match &self.rule {
            Rule::Exact => "exact rule".to_string(),
            Rule::FloatIsland(ops) => format!(
                "float-island rule ({FLOAT_ISLAND_REL:e} rel; {})",
                ops.iter()
                    .map(|(op, n)| format!("{op} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let result = if self.bit_exact {
            "bit-exact".to_string()
        } else {
            format!(
                "{} of {} elements differ, max abs diff {:.3e}, rel {:.3e}",
                self.differing, self.total, self.max_abs, self.max_rel
            )
        };
        format!("'{}': {result} [{rule}]", self.name)
    }
}

/// One model's row of the table.
struct Row {
    label: String,
    kernels: usize,
    compile_ms: f64,
    interp_ms: f64,
    jit_ms: f64,
    /// The model's outputs.
    outputs: Vec<OutputCheck>,
    /// The integer inputs of the dequantize nodes ([`int8_probes`]).
    probes: Vec<OutputCheck>,
    /// The model's outputs against the interpreter on the graph before preparation (gated
    /// for kiln's own int8 graphs, reported for the onnxruntime-quantized imports).
    as_loaded: Vec<OutputCheck>,
    gate_as_loaded: bool,
}

impl Row {
    fn verdict(&self) -> String {
        if self.outputs.iter().all(|o| o.bit_exact) {
            return "bit-exact".to_string();
        }
        let worst = self
            .outputs
            .iter()
            .map(|o| o.max_rel)
            .fold(0.0f64, f64::max);
        let abs = self
            .outputs
            .iter()
            .map(|o| o.max_abs)
            .fold(0.0f64, f64::max);
        format!("max diff {abs:.3e} (rel {worst:.3e})")
    }

    /// "17/17 bit-exact" over the probes.
    fn probe_summary(&self) -> String {
        let exact = self.probes.iter().filter(|p| p.bit_exact).count();
        format!("{exact}/{} bit-exact", self.probes.len())
    }
}

fn main() -> ExitCode {
    if cfg!(debug_assertions) {
        println!(
            "{SUITE}: skipped in a debug build (the interpreter reference takes minutes \
             unoptimized; tools/test.sh runs `cargo test --release -p kiln-cli --test jit_exact`)"
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
    let models_dir = assets.join("models");
    let quant_dir = assets.join("quant");
    let quant_manifest = match read_json(&quant_dir.join("manifest.json")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{SUITE}: {e} (run tools/quant_assets.py)");
            return ExitCode::FAILURE;
        }
    };

    let mut names: Vec<String> = REALIZED_MODELS.iter().map(|s| s.to_string()).collect();
    if let Ok(entries) = std::fs::read_dir(&models_dir) {
        let mut extra: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                file.strip_suffix(".json").map(str::to_string)
            })
            .filter(|n| !names.contains(n))
            .collect();
        extra.sort();
        names.extend(extra);
    }
    let mut cases: Vec<Case> = names
        .into_iter()
        .map(|name| Case::Realized { name })
        .collect();
    for model in ORT_MODELS {
        for format in ORT_FORMATS {
            cases.push(Case::OrtQuantized {
                model: model.to_string(),
                format: format.to_string(),
            });
        }
    }
    let filters = support::name_filters();
    cases.retain(|c| filters.is_empty() || filters.iter().any(|f| c.label().contains(f.as_str())));

    let suite_start = Instant::now();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    // Cases that did not get to run (import, quantization or compile failed).
    let mut failed_rows: Vec<String> = Vec::new();
    for case in &cases {
        let label = case.label();
        let case_start = Instant::now();
        print!("{SUITE}: {label} ... ");
        use std::io::Write;
        std::io::stdout().flush().ok();
        let result = catch_panic(|| match case {
            Case::Realized { name } => {
                run_realized(&models_dir, &quant_dir, &quant_manifest, name, &label)
            }
            Case::OrtQuantized { model, format } => {
                run_ort_quantized(&quant_dir, &quant_manifest, model, format, &label)
            }
        });
        match result {
            Ok(row) => {
                let failed: Vec<(&str, &OutputCheck)> = row
                    .outputs
                    .iter()
                    .map(|o| ("output", o))
                    .chain(row.probes.iter().map(|p| ("int8 tensor", p)))
                    .chain(
                        row.as_loaded
                            .iter()
                            .map(|o| ("output vs graph as loaded", o)),
                    )
                    .filter(|(_, o)| o.failure.is_some())
                    .collect();
                println!(
                    "{}: {} kernels, compile {:.0} ms, interp {:.0} ms, jit {:.0} ms, {}; \
                     dequantize inputs {} ({:.1} s with import and quantization)",
                    if failed.is_empty() { "ok" } else { "FAIL" },
                    row.kernels,
                    row.compile_ms,
                    row.interp_ms,
                    row.jit_ms,
                    row.verdict(),
                    row.probe_summary(),
                    case_start.elapsed().as_secs_f64()
                );
                for o in &row.outputs {
                    println!("    output {}", o.summary());
                }
                for o in &row.as_loaded {
                    println!(
                        "    {} output {}",
                        if row.gate_as_loaded {
                            "as loaded (--backend interp):"
                        } else {
                            "as loaded (--backend interp; reported, not gated):"
                        },
                        o.summary()
                    );
                }
                for p in row.probes.iter().filter(|p| !p.bit_exact) {
                    println!("    dequantize input {}", p.summary());
                }
                for (what, o) in failed {
                    failures.push(format!(
                        "{label}: {what} '{}': {}",
                        o.name,
                        o.failure.as_deref().unwrap_or_default()
                    ));
                }
                rows.push(row);
            }
            Err(e) => {
                println!("FAIL ({:.1} s): {e}", case_start.elapsed().as_secs_f64());
                failures.push(format!("{label}: {e}"));
                failed_rows.push(label);
            }
        }
    }

    print_table(&rows, &failed_rows);
    for f in &failures {
        println!("FAIL {f}");
    }
    let failed_cases = cases
        .iter()
        .filter(|c| {
            let prefix = format!("{}: ", c.label());
            failures.iter().any(|f| f.starts_with(&prefix))
        })
        .count();
    println!(
        "{SUITE}: {} of {} quantized models run by the JIT as the interpreter does \
         ({:.0} s)",
        cases.len() - failed_cases,
        cases.len(),
        suite_start.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_table(rows: &[Row], failed: &[String]) {
    println!();
    println!(
        "| {:<26} | {:>7} | {:>10} | {:>9} | {:>8} | {:<34} | {:<18} |",
        "model", "kernels", "compile ms", "interp ms", "jit ms", "outputs", "dequantize inputs"
    );
    println!(
        "|{:-<28}|{:->9}|{:->12}|{:->11}|{:->10}|{:-<36}|{:-<20}|",
        "", "", "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<26} | {:>7} | {:>10.0} | {:>9.0} | {:>8.0} | {:<34} | {:<18} |",
            r.label,
            r.kernels,
            r.compile_ms,
            r.interp_ms,
            r.jit_ms,
            r.verdict(),
            r.probe_summary()
        );
    }
    for label in failed {
        println!(
            "| {label:<26} | {:>7} | {:>10} | {:>9} | {:>8} | {:<34} | {:<18} |",
            "-", "-", "-", "-", "FAIL (below)", "-"
        );
    }
    println!(
        "(one run each on the stored input; interpreter {} threads, JIT {} threads)",
        kiln_interp::gemm::default_threads(),
        Options::default().threads
    );
    println!();
}

fn read_json(path: &Path) -> Result<Value, String> {
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

fn field_shape(v: &Value) -> Result<Vec<usize>, String> {
    field(v, "shape")?
        .as_array()
        .and_then(|dims| {
            dims.iter()
                .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect::<Option<Vec<usize>>>()
        })
        .ok_or_else(|| "manifest: bad 'shape'".to_string())
}

fn read_npy(path: &Path) -> Result<Tensor, String> {
    kiln_ir::npy::read_npy_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(format!("kiln-{SUITE}-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Quantize a realized model as `kiln quantize` does and compare the JIT with the
/// interpreter on its stored input.
fn run_realized(
    models_dir: &Path,
    quant_dir: &Path,
    quant_manifest: &Value,
    name: &str,
    label: &str,
) -> Result<Row, String> {
    let manifest_path = models_dir.join(format!("{name}.json"));
    let manifest = read_json(&manifest_path).map_err(|e| {
        format!("{e} (run tools/prepare_assets.py; its log says why this model is missing)")
    })?;
    let mut input_shapes = HashMap::new();
    let mut feeds = Vec::new();
    for input in field(&manifest, "inputs")?
        .as_array()
        .ok_or("manifest: 'inputs' is not a list")?
    {
        let input_name = field_str(input, "name")?;
        input_shapes.insert(input_name.to_string(), field_shape(input)?);
        feeds.push((
            input_name.to_string(),
            read_npy(&models_dir.join(field_str(input, "file")?))?,
        ));
    }
    let options = kiln_onnx::ImportOptions {
        input_shapes,
        ..Default::default()
    };
    let model_path = models_dir.join(field_str(&manifest, "model")?);
    let graph =
        kiln_onnx::import_file(&model_path, &options).map_err(|e| format!("import: {e}"))?;
    kiln_ir::verify(&graph).map_err(|e| format!("verify: {e}"))?;

    let specs = kiln_quant::input_specs(&graph);
    // The asset script's calibration files when it wrote some for this model (as
    // `kiln quantize --calibration DIR` reads them: a directory of .npy files, here holding
    // the first few), seeded noise (`--random-calibration N`) otherwise.
    let calibration_files: Vec<PathBuf> = quant_manifest["models"][name]["calibration"]["inputs"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(Value::as_str)
                .take(CALIBRATION_SAMPLES)
                .map(|f| quant_dir.join(f))
                .collect()
        })
        .unwrap_or_default();
    let calibration_dir;
    let data = if calibration_files.is_empty() {
        CalibrationSet::random(&specs, CALIBRATION_SAMPLES, 0)
            .map_err(|e| format!("random calibration: {e}"))?
    } else {
        calibration_dir = TempDir::new(name)?;
        for (k, file) in calibration_files.iter().enumerate() {
            let copy = calibration_dir.0.join(format!("{k:04}.npy"));
            std::fs::copy(file, &copy).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        CalibrationSet::open(&calibration_dir.0, &specs, None)
            .map_err(|e| format!("calibration data: {e}"))?
    };
    let config = QuantizeConfig {
        // no progress bar in the suite's output; the graph does not depend on it
        progress: kiln_quant::Progress::Hidden,
        ..QuantizeConfig::default()
    };
    let quantized =
        kiln_quant::quantize(&graph, &data, &config).map_err(|e| format!("quantize: {e}"))?;

    // Inputs in the graph's order, matched by name.
    let inputs = quantized
        .graph
        .inputs()
        .iter()
        .map(|&v| {
            let input_name = quantized.graph.value_name(v);
            feeds
                .iter()
                .find(|(n, _)| n == input_name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| format!("graph input '{input_name}' has no stored input"))
        })
        .collect::<Result<Vec<Tensor>, String>>()?;
    compare_backends(&quantized.graph, &inputs, label, true)
}

/// Import an onnxruntime-quantized model and compare the JIT with the interpreter on its
/// stored evaluation input.
fn run_ort_quantized(
    quant_dir: &Path,
    quant_manifest: &Value,
    model: &str,
    format: &str,
    label: &str,
) -> Result<Row, String> {
    let entry = &quant_manifest["models"][model];
    if entry.is_null() {
        return Err(format!(
            "model '{model}' missing from manifest.json (tools/quant_assets.py's log says why)"
        ));
    }
    let fmt = field(field(entry, "formats")?, format)?;
    let input = field(entry, "input")?;
    let input_name = field_str(input, "name")?;
    let options = kiln_onnx::ImportOptions {
        input_shapes: HashMap::from([(input_name.to_string(), field_shape(input)?)]),
        ..Default::default()
    };
    let model_path = quant_dir.join(field_str(fmt, "model")?);
    let graph =
        kiln_onnx::import_file(&model_path, &options).map_err(|e| format!("import: {e}"))?;
    kiln_ir::verify(&graph).map_err(|e| format!("verify: {e}"))?;
    let reference = field(fmt, "references")?
        .as_array()
        .and_then(|r| r.first())
        .ok_or("manifest: no references")?;
    let x = read_npy(&quant_dir.join(field_str(reference, "input")?))?;
    compare_backends(&graph, &[x], label, false)
}

/// The graph the JIT backend compiles (`crates/kiln-cli/src/jit.rs`, `prepare`): a graph
/// with dequantize nodes goes through the `quantize` rules (quantize/dequantize pairs around
/// float ops become integer ops), then everything through `-O1`.
fn prepare_for_jit(graph: &Graph) -> Result<Graph, String> {
    let opts = kiln_opt::OptOptions {
        verify: false,
        ..kiln_opt::OptOptions::default()
    };
    let has_dequantize = graph
        .node_ids()
        .any(|id| matches!(graph.node(id).op, Op::Dequantize));
    let converted = if has_dequantize {
        kiln_quant::convert_qdq(graph, &opts)
            .map_err(|e| format!("quantize rules: {e}"))?
            .0
    } else {
        graph.clone()
    };
    let passes = kiln_opt::pipeline(kiln_opt::OptLevel::O1);
    let (optimized, _) = kiln_opt::run_pipeline(&converted, &passes, &opts, &mut |_, _, _| {})
        .map_err(|e| format!("-O1: {e}"))?;
    kiln_ir::verify(&optimized).map_err(|e| format!("after -O1: {e}"))?;
    Ok(optimized)
}

/// The integer tensors the dequantize nodes read, each once, in graph order: the last
/// integer values before each float island and output, which the model outputs would
/// otherwise only show through a float op.
fn int8_probes(graph: &Graph) -> Result<Vec<ValueId>, String> {
    let mut probes = Vec::new();
    for id in graph.topo_order().map_err(|e| e.to_string())? {
        let node = graph.node(id);
        if !matches!(node.op, Op::Dequantize) {
            continue;
        }
        let Some(&x) = node.inputs().first() else {
            continue;
        };
        let integer = matches!(graph.value_type(x).dtype, DType::U8 | DType::I8);
        let is_source = graph.node(x.node).op.is_source();
        if integer && !is_source && !probes.contains(&x) && !graph.outputs().contains(&x) {
            probes.push(x);
        }
    }
    Ok(probes)
}

/// Prepare `loaded` for the JIT, compile it, run it and the interpreter on `inputs`, and
/// compare every output, and every integer tensor a dequantize reads (made an extra graph
/// output of both runs; outputs change no kernel, only where its result is written). The
/// JIT's outputs are also compared with the interpreter's on `loaded` itself, what
/// `kiln run --backend interp` runs: gated when `gate_as_loaded`, reported otherwise.
fn compare_backends(
    loaded: &Graph,
    inputs: &[Tensor],
    label: &str,
    gate_as_loaded: bool,
) -> Result<Row, String> {
    let mut graph = prepare_for_jit(loaded)?;
    let model_outputs = graph.outputs().len();
    let probes = int8_probes(&graph)?;
    let mut outputs = graph.outputs().to_vec();
    outputs.extend(&probes);
    graph.set_outputs(outputs);
    let start = Instant::now();
    let mut compiled = match Model::from_graph(graph.clone()).compile(&Options::default()) {
        Ok(c) => c,
        Err(RuntimeError::NoKernel(missing)) => {
            let mut ops: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for m in &missing {
                ops.entry(m.op).or_default().push(&m.node);
            }
            let listed: Vec<String> = ops
                .iter()
                .map(|(op, nodes)| {
                    let shown: Vec<&str> = nodes.iter().take(3).copied().collect();
                    format!(
                        "{op} ×{} (e.g. {}{})",
                        nodes.len(),
                        shown.join(", "),
                        if nodes.len() > shown.len() {
                            ", …"
                        } else {
                            ""
                        }
                    )
                })
                .collect();
            return Err(format!(
                "compile: no kernel for {} node(s): {}",
                missing.len(),
                listed.join("; ")
            ));
        }
        Err(e) => return Err(format!("compile: {e}")),
    };
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let want = kiln_interp::run(&graph, inputs).map_err(|e| format!("interpreter: {e}"))?;
    let interp_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let got = compiled.run(inputs).map_err(|e| format!("jit run: {e}"))?;
    let jit_ms = start.elapsed().as_secs_f64() * 1e3;
    if got.len() != want.len() || want.len() != graph.outputs().len() {
        return Err(format!(
            "the JIT returned {} outputs, the interpreter {}",
            got.len(),
            want.len()
        ));
    }
    let mut outputs: Vec<OutputCheck> = graph
        .outputs()
        .iter()
        .zip(got.iter().zip(&want))
        .map(|(&v, (g, w))| {
            compare_output(
                graph.value_name(v).to_string(),
                float_ops_upstream(&graph, v),
                g,
                w,
            )
        })
        .collect();
    let mut probes = outputs.split_off(model_outputs);
    // An integer tensor after a float island may differ by a step where the island's
    // rounding crossed a quantization boundary; that shows (and is judged) in the model
    // outputs, so such probes are reported, not gated.
    for p in &mut probes {
        if p.rule != Rule::Exact {
            p.failure = None;
        }
    }
    let reference =
        kiln_interp::run(loaded, inputs).map_err(|e| format!("interpreter as loaded: {e}"))?;
    if reference.len() != model_outputs {
        return Err(format!(
            "the graph as loaded has {} outputs, prepared for the JIT {model_outputs}",
            reference.len()
        ));
    }
    // The rule is the prepared graph's (on kiln's own graphs preparing only merges
    // reshapes).
    let as_loaded = graph.outputs()[..model_outputs]
        .iter()
        .zip(got.iter().zip(&reference))
        .map(|(&v, (g, r))| {
            let mut check = compare_output(
                graph.value_name(v).to_string(),
                float_ops_upstream(&graph, v),
                g,
                r,
            );
            if !gate_as_loaded {
                check.failure = None;
            }
            check
        })
        .collect();
    Ok(Row {
        label: label.to_string(),
        kernels: compiled.schedule().count(),
        compile_ms,
        interp_ms,
        jit_ms,
        outputs,
        probes,
        as_loaded,
        gate_as_loaded,
    })
}

/// Whether `op` computes a float value that the JIT may round differently from the
/// interpreter. Dequantize (one multiply per element, by design the same in both) and ops
/// that only move or select values are exact; so are ops whose outputs are all integers.
fn is_float_compute(graph: &Graph, id: kiln_ir::NodeId) -> bool {
    let node = graph.node(id);
    let exact = matches!(
        node.op,
        Op::Input { .. }
            | Op::Const(_)
            | Op::Dequantize
            | Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Transpose { .. }
            | Op::Identity
            | Op::Dropout
            | Op::Concat { .. }
            | Op::Split { .. }
            | Op::Slice { .. }
            | Op::Gather { .. }
            | Op::MaxPool(_)
            | Op::GlobalMaxPool
    );
    !exact && node.outputs.iter().any(|o| o.ty.dtype == DType::F32)
}

/// The float-computing ops (mnemonic → count) among the nodes `v` depends on, itself
/// included.
fn float_ops_upstream(graph: &Graph, v: ValueId) -> BTreeMap<&'static str, usize> {
    let mut seen = HashSet::new();
    let mut stack = vec![v.node];
    let mut ops = BTreeMap::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        if is_float_compute(graph, id) {
            *ops.entry(graph.node(id).op.mnemonic()).or_insert(0) += 1;
        }
        stack.extend(graph.node(id).inputs().iter().map(|u| u.node));
    }
    ops
}

/// Compare the JIT's output `got` with the interpreter's `want` under the rule the float
/// ops upstream of it call for.
fn compare_output(
    name: String,
    float_ops: BTreeMap<&'static str, usize>,
    got: &Tensor,
    want: &Tensor,
) -> OutputCheck {
    let rule = if float_ops.is_empty() {
        Rule::Exact
    } else {
        Rule::FloatIsland(float_ops)
    };
    let mut check = OutputCheck {
        name,
        rule,
        bit_exact: false,
        max_abs: f64::INFINITY,
        max_rel: f64::INFINITY,
        differing: 0,
        total: want.numel(),
        failure: None,
    };
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        check.failure = Some(format!(
            "the JIT gives {} {:?}, the interpreter {} {:?}",
            got.dtype(),
            got.shape(),
            want.dtype(),
            want.shape()
        ));
        return check;
    }
    if got.bitwise_eq(want) {
        check.bit_exact = true;
        check.max_abs = 0.0;
        check.max_rel = 0.0;
        return check;
    }
    let (a, b) = (got.to_f64_vec(), want.to_f64_vec());
    let peak = b
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |m, x| m.max(x.abs()));
    let mut differing = 0usize;
    let mut first = None;
    let mut max_abs = 0.0f64;
    let mut max_abs_at = 0usize;
    let mut non_finite = 0usize;
    for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
        // bitwise_eq failed, so some element differs in its bytes; NaN payloads aside, a
        // difference shows in the values
        let same = x == y || (x.is_nan() && y.is_nan());
        if same {
            continue;
        }
        differing += 1;
        first.get_or_insert(i);
        if x.is_finite() && y.is_finite() {
            if (x - y).abs() > max_abs {
                max_abs = (x - y).abs();
                max_abs_at = i;
            }
        } else {
            non_finite += 1;
        }
    }
    check.differing = differing;
    check.max_abs = if non_finite > 0 {
        f64::INFINITY
    } else {
        max_abs
    };
    check.max_rel = if peak > 0.0 {
        check.max_abs / peak
    } else if check.max_abs == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    let details = |first: usize| {
        format!(
            "{differing} of {} elements differ (bytes differ: {}); first at {:?}: jit {}, \
             interp {}; max abs diff {:.3e} at {:?}: jit {}, interp {} (max |interp| {peak:.4e}, \
             rel {:.3e}){}",
            a.len(),
            if differing == 0 {
                "-0.0/NaN bits only"
            } else {
                "yes"
            },
            support::unravel(first, want.shape()),
            a[first],
            b[first],
            max_abs,
            support::unravel(max_abs_at, want.shape()),
            a[max_abs_at],
            b[max_abs_at],
            check.max_rel,
            if non_finite > 0 {
                format!("; {non_finite} non-finite mismatches")
            } else {
                String::new()
            }
        )
    };
    check.failure = match &check.rule {
        Rule::Exact => Some(format!(
            "not bit-exact (no float op upstream): {}",
            details(first.unwrap_or(0))
        )),
        Rule::FloatIsland(_) if check.max_rel <= FLOAT_ISLAND_REL => None,
        Rule::FloatIsland(_) => Some(format!(
            "float-island output over {FLOAT_ISLAND_REL:e} relative: {}",
            details(first.unwrap_or(0))
        )),
    };
    check
}

/// The comparison rules on hand-made tensors (this binary has no `#[test]` harness): a
/// comparison that passed everything would make every model "bit-exact".
fn self_check() -> Result<(), String> {
    let f32s = |v: Vec<f32>| Tensor::from_f32(vec![v.len()], v).expect("sized");
    let u8s = |v: Vec<u8>| Tensor::new(vec![v.len()], TensorData::U8(v)).expect("sized");
    let island = || Rule::FloatIsland(BTreeMap::from([("sigmoid", 1)]));
    let check = |got: &Tensor, want: &Tensor, float: bool| {
        let ops = if float {
            BTreeMap::from([("sigmoid", 1)])
        } else {
            BTreeMap::new()
        };
        compare_output("y".into(), ops, got, want)
    };
    // identical bytes: bit-exact under either rule
    let c = check(&u8s(vec![1, 2, 3]), &u8s(vec![1, 2, 3]), false);
    if !c.bit_exact || c.failure.is_some() || c.rule != Rule::Exact {
        return Err("equal u8 tensors not bit-exact".into());
    }
    // one integer off by one: a failure naming index 1 under the exact rule
    let c = check(&u8s(vec![1, 3, 3]), &u8s(vec![1, 2, 3]), false);
    if c.failure
        .as_deref()
        .is_none_or(|f| !f.contains("first at [1]"))
        || c.max_abs != 1.0
    {
        return Err(format!("u8 off by one: {:?}", c.failure));
    }
    // 1 + 2⁻²³ against 1: a relative difference of 1.2e-7, a failure when exact is
    // required, accepted for a float island (≤ 1e-5)
    let (a, b) = (f32s(vec![1.0 + f32::EPSILON, 0.5]), f32s(vec![1.0, 0.5]));
    if check(&a, &b, false).failure.is_none() {
        return Err("an f32 rounding difference passed the exact rule".into());
    }
    let c = check(&a, &b, true);
    if c.failure.is_some() || c.bit_exact || c.rule != island() {
        return Err(format!(
            "an f32 rounding difference failed the float-island rule: {:?}",
            c.failure
        ));
    }
    // 1.0001 against 1: 1e-4 relative, over the float-island tolerance
    if check(&f32s(vec![1.0001, 0.5]), &b, true).failure.is_none() {
        return Err("1e-4 relative passed the float-island rule".into());
    }
    // -0.0 against 0.0: equal values, different bytes
    if check(&f32s(vec![-0.0]), &f32s(vec![0.0]), false)
        .failure
        .is_none()
    {
        return Err("-0.0 against 0.0 passed the exact rule".into());
    }
    // NaN against a number, and a dtype mismatch
    if check(&f32s(vec![f32::NAN]), &f32s(vec![0.0]), true)
        .failure
        .is_none()
    {
        return Err("NaN against 0 passed the float-island rule".into());
    }
    if check(&u8s(vec![1]), &f32s(vec![1.0]), false)
        .failure
        .is_none()
    {
        return Err("a dtype mismatch passed".into());
    }
    Ok(())
}
