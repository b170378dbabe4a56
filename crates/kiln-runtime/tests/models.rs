//! Realized models (`$KILN_ASSETS/models/NAME.onnx`) optimized with `-O1`, compiled to
//! machine code and run against the interpreter on the stored input: every output within
//! 1e-4 of its largest magnitude. Then the same models quantized as `kiln quantize` does
//! (u8 activations, min-max ranges from the first calibration samples listed in
//! `$KILN_ASSETS/quant/manifest.json`): the integer graph must compile with no missing
//! kernel and run within 1e-2 of its largest output of the interpreter running the same
//! integer graph. (Its integer kernels are bit-exact, but the f32 islands between quantize
//! boundaries agree only to rounding: where that rounding crosses a quantization step the
//! value moves one step, e.g. one 1/255 step of PP-OCR's u8 sigmoid output, 3.9e-3 of its
//! maximum of 1. A wrong kernel errs by the order of the output itself.) A model with ops
//! that have no kernel yet is reported with the missing ops (by mnemonic and count) and
//! not run. Skips with a message when `KILN_ASSETS` is unset.

use kiln_ir::{Graph, Tensor, TensorData};
use kiln_opt::{pipeline, run_pipeline, OptLevel, OptOptions};
use kiln_quant::{input_specs, CalibrationSet, Progress, QuantizeConfig};
use kiln_runtime::{CompiledModel, Model, Options, RuntimeError};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Models that must run end to end; the others report what they lack.
const MUST_RUN: &[&str] = &["squeezenet", "resnet50", "ppocrv4_det"];
const MODELS: &[&str] = &["squeezenet", "resnet50", "ppocrv4_det"];
/// Calibration samples per quantized model (the interpreter runs each: a few keep the test
/// short, and the ranges only need to be plausible for a compile-and-run check).
const CALIBRATION_SAMPLES: usize = 4;

fn input_name(models: &Path, name: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(models.join(format!("{name}.json")))
        .map_err(|e| format!("{name}.json: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{name}.json: {e}"))?;
    json["inputs"][0]["name"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{name}.json has no inputs[0].name"))
}

fn imported(models: &Path, name: &str, input: &Tensor) -> Result<Graph, String> {
    let opts = kiln_onnx::ImportOptions {
        input_shapes: HashMap::from([(input_name(models, name)?, input.shape().to_vec())]),
        ..Default::default()
    };
    kiln_onnx::import_file(&models.join(format!("{name}.onnx")), &opts)
        .map_err(|e| format!("import: {e}"))
}

fn optimized(graph: &Graph) -> Result<Graph, String> {
    let passes = pipeline(OptLevel::O1);
    let (graph, _) = run_pipeline(graph, &passes, &OptOptions::default(), &mut |_, _, _| {})
        .map_err(|e| format!("O1: {e}"))?;
    Ok(graph)
}

/// Largest `|got − want| / max|want|` over all outputs.
fn relative_error(got: &[Tensor], want: &[Tensor]) -> Result<f32, String> {
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        if g.shape() != w.shape() {
            return Err(format!("shape {:?}, expected {:?}", g.shape(), w.shape()));
        }
        let (TensorData::F32(g), TensorData::F32(w)) = (g.data(), w.data()) else {
            return Err("f32 outputs expected".to_string());
        };
        let scale = w.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    Ok(worst)
}

/// Compile `graph`: `Ok(None)` (printed) when ops lack kernels.
fn compile(label: &str, graph: &Graph) -> Result<Option<CompiledModel>, String> {
    match Model::from_graph(graph.clone()).compile(&Options::default()) {
        Ok(c) => Ok(Some(c)),
        Err(RuntimeError::NoKernel(missing)) => {
            let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
            for m in &missing {
                *ops.entry(m.op).or_insert(0) += 1;
            }
            println!("{label}: ops without kernels: {ops:?}");
            Ok(None)
        }
        Err(e) => Err(format!("compile: {e}")),
    }
}

/// Compile and run `graph` on `input` against the interpreter: `Ok(Some(error))` when it
/// ran, `Ok(None)` when ops lack kernels.
fn check_graph(label: &str, graph: &Graph, input: Tensor) -> Result<Option<f32>, String> {
    let start = Instant::now();
    let Some(mut compiled) = compile(label, graph)? else {
        return Ok(None);
    };
    let compile_time = start.elapsed();
    let inputs = [input];
    let start = Instant::now();
    let got = compiled.run(&inputs).map_err(|e| format!("run: {e}"))?;
    let run_time = start.elapsed();
    let want = kiln_interp::run(graph, &inputs).map_err(|e| format!("interpreter: {e}"))?;
    let error = relative_error(&got, &want)?;
    println!(
        "{label}: {} kernels, compile {compile_time:.2?}, run {run_time:.2?}, max error \
         {error:.2e} of max |output|",
        compiled.schedule().count()
    );
    Ok(Some(error))
}

fn read_input(models: &Path, name: &str) -> Result<Tensor, String> {
    kiln_ir::npy::read_npy_file(models.join(format!("{name}.input_0.npy")))
        .map_err(|e| format!("input: {e}"))
}

fn check(models: &Path, name: &str) -> Result<Option<f32>, String> {
    let input = read_input(models, name)?;
    let graph = optimized(&imported(models, name, &input)?)?;
    check_graph(&format!("{name} (-O1)"), &graph, input)
}

/// The first [`CALIBRATION_SAMPLES`] calibration files of `name` in the quantization
/// assets' manifest, copied into a fresh directory (a calibration set is a directory).
fn calibration_dir(quant: &Path, name: &str) -> Result<PathBuf, String> {
    let manifest = quant.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).map_err(|e| format!("{manifest:?}: {e}"))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{manifest:?}: {e}"))?;
    let files = json["models"][name]["calibration"]["inputs"]
        .as_array()
        .ok_or_else(|| format!("{manifest:?} lists no calibration inputs for {name}"))?;
    let dir = std::env::temp_dir().join(format!("kiln-models-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    for file in files.iter().take(CALIBRATION_SAMPLES) {
        let file = file
            .as_str()
            .ok_or_else(|| format!("{manifest:?}: a calibration input is not a path"))?;
        let from = quant.join(file);
        let to = dir.join(
            from.file_name()
                .ok_or_else(|| format!("{file}: no file name"))?,
        );
        std::fs::copy(&from, &to).map_err(|e| format!("{from:?}: {e}"))?;
    }
    Ok(dir)
}

/// Quantize `name` as `kiln quantize` does and compile and run the integer graph.
fn check_quantized(models: &Path, quant: &Path, name: &str) -> Result<Option<f32>, String> {
    let input = read_input(models, name)?;
    let graph = imported(models, name, &input)?;
    let dir = calibration_dir(quant, name)?;
    let data = CalibrationSet::open(&dir, &input_specs(&graph), None)
        .map_err(|e| format!("calibration: {e}"));
    let config = QuantizeConfig {
        eval_samples: Some(1),
        progress: Progress::Hidden,
        ..QuantizeConfig::default()
    };
    let start = Instant::now();
    let quantized = data.and_then(|data| {
        kiln_quant::quantize(&graph, &data, &config).map_err(|e| format!("quantize: {e}"))
    });
    std::fs::remove_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let quantized = quantized?;
    println!(
        "{name} (int8): quantized in {:.2?}, {} nodes",
        start.elapsed(),
        quantized.graph.node_count()
    );
    check_graph(&format!("{name} (int8)"), &quantized.graph, input)
}

fn main() {
    if cfg!(debug_assertions) {
        println!(
            "models: skipped (unoptimized build: the interpreter reference takes minutes; \
             tools/test.sh runs `cargo test --release -p kiln-runtime --test models`)"
        );
        return;
    }
    let Some(assets) = std::env::var_os("KILN_ASSETS") else {
        println!("models: skipped (KILN_ASSETS is not set)");
        return;
    };
    let models = Path::new(&assets).join("models");
    let quant = Path::new(&assets).join("quant");
    let mut failures = Vec::new();
    for &name in MODELS {
        if !models.join(format!("{name}.onnx")).exists() {
            println!("{name}: skipped ({name}.onnx not in {})", models.display());
            continue;
        }
        match check(&models, name) {
            Ok(Some(error)) if error <= 1e-4 => {}
            Ok(Some(error)) => failures.push(format!("{name}: error {error:.2e} > 1e-4")),
            Ok(None) if MUST_RUN.contains(&name) => {
                failures.push(format!("{name}: ops without kernels"))
            }
            Ok(None) => {}
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        if !quant.join("manifest.json").exists() {
            println!(
                "{name} (int8): skipped (no {})",
                quant.join("manifest.json").display()
            );
            continue;
        }
        match check_quantized(&models, &quant, name) {
            Ok(Some(error)) if error <= 1e-2 => {}
            Ok(Some(error)) => failures.push(format!("{name} (int8): error {error:.2e} > 1e-2")),
            Ok(None) => failures.push(format!("{name} (int8): ops without kernels")),
            Err(e) => failures.push(format!("{name} (int8): {e}")),
        }
    }
    if !failures.is_empty() {
        eprintln!("failures:\n  {}", failures.join("\n  "));
        std::process::exit(1);
    }
    println!("models: ok");
}
