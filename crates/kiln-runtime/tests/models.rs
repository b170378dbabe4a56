//! Realized models (`$KILN_ASSETS/models/NAME.onnx`) optimized with `-O1`, compiled to
//! machine code and run against the interpreter on the stored input: every output within
//! 1e-4 of its largest magnitude. A model with ops that have no kernel yet is reported
//! with the missing ops (by mnemonic and count) and not run. Skips with a message when
//! `KILN_ASSETS` is unset.

use kiln_ir::{Graph, Tensor, TensorData};
use kiln_opt::{pipeline, run_pipeline, OptLevel, OptOptions};
use kiln_runtime::{Model, Options, RuntimeError};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

/// Models that must run end to end; the others report what they lack.
const MUST_RUN: &[&str] = &["squeezenet", "resnet50"];
const MODELS: &[&str] = &["squeezenet", "resnet50", "ppocrv4_det"];

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

fn optimized(models: &Path, name: &str, input: &Tensor) -> Result<Graph, String> {
    let opts = kiln_onnx::ImportOptions {
        input_shapes: HashMap::from([(input_name(models, name)?, input.shape().to_vec())]),
        ..Default::default()
    };
    let graph = kiln_onnx::import_file(&models.join(format!("{name}.onnx")), &opts)
        .map_err(|e| format!("import: {e}"))?;
    let passes = pipeline(OptLevel::O1);
    let (graph, _) = run_pipeline(&graph, &passes, &OptOptions::default(), &mut |_, _, _| {})
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

/// `Ok(Some(error))` when the model ran, `Ok(None)` when ops lack kernels (printed).
fn check(models: &Path, name: &str) -> Result<Option<f32>, String> {
    let input = kiln_ir::npy::read_npy_file(models.join(format!("{name}.input_0.npy")))
        .map_err(|e| format!("input: {e}"))?;
    let graph = optimized(models, name, &input)?;
    let start = Instant::now();
    let mut compiled = match Model::from_graph(graph.clone()).compile(&Options::default()) {
        Ok(c) => c,
        Err(RuntimeError::NoKernel(missing)) => {
            let mut ops: BTreeMap<&str, usize> = BTreeMap::new();
            for m in &missing {
                *ops.entry(m.op).or_insert(0) += 1;
            }
            println!("{name}: after -O1, ops without kernels: {ops:?}");
            return Ok(None);
        }
        Err(e) => return Err(format!("compile: {e}")),
    };
    let compile_time = start.elapsed();
    let inputs = [input];
    let start = Instant::now();
    let got = compiled.run(&inputs).map_err(|e| format!("run: {e}"))?;
    let run_time = start.elapsed();
    let want = kiln_interp::run(&graph, &inputs).map_err(|e| format!("interpreter: {e}"))?;
    let error = relative_error(&got, &want)?;
    println!(
        "{name}: {} kernels, compile {compile_time:.2?}, run {run_time:.2?}, max error \
         {error:.2e} of max |output|",
        compiled.schedule().count()
    );
    Ok(Some(error))
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
    }
    if !failures.is_empty() {
        eprintln!("failures:\n  {}", failures.join("\n  "));
        std::process::exit(1);
    }
    println!("models: ok");
}
