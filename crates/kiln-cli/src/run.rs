//! `kiln run`: execute a model on `.npy` inputs — as JIT-compiled machine code (default) or in
//! the reference interpreter — and write one `.npy` per graph output; with `--quantize`,
//! execute its quantized integer graph and compare each output with the float run.

use crate::jit::{self, StageTimes};
use crate::load::load_model;
use crate::quantize::{cosine_and_sqnr, real_values, QuantArgs};
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use kiln_ir::{Graph, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A graph input as a .npy file of the declared dtype and shape: `--input x=img.npy`.
    /// Repeat for each input.
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = parse_input_file)]
    pub inputs: Vec<(String, PathBuf)>,
    /// Directory for the outputs, one NAME.npy per graph output (characters outside
    /// [A-Za-z0-9._-] in NAME become '_').
    #[arg(long = "output-dir", default_value = ".")]
    pub output_dir: PathBuf,
    /// jit: compile the model to machine code for this CPU (a QDQ model's quantize/dequantize
    /// pairs become integer kernels; -O1 first) and run that; interp: the reference
    /// interpreter, on the graph as loaded. An op without a kernel is an error naming it.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    /// Threads a large JIT kernel is split over (default: the host's cores). Results are
    /// identical for every count.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Quantize the model first (needs --calibration or --random-calibration) and run the
    /// integer graph instead of the float one; prints each output's cosine and SQNR against
    /// the float model on the same inputs.
    #[arg(long)]
    pub quantize: bool,
    #[command(flatten)]
    pub quant: QuantArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Jit,
    Interp,
}

pub fn parse_input_file(s: &str) -> Result<(String, PathBuf), String> {
    let (name, file) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=FILE.npy, got '{s}'"))?;
    if name.is_empty() || file.is_empty() {
        return Err(format!("expected NAME=FILE.npy, got '{s}'"));
    }
    Ok((name.to_string(), PathBuf::from(file)))
}

/// The file name an output is written to: `[A-Za-z0-9._-]` kept, everything else `_`.
pub fn output_file_name(value_name: &str) -> String {
    let stem: String = value_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}.npy")
}

/// Read every graph input from the given files, checking names, dtypes and shapes.
pub fn read_inputs(graph: &Graph, files: &[(String, PathBuf)]) -> Result<Vec<Tensor>> {
    let mut by_name: HashMap<&str, &Path> = HashMap::new();
    for (name, file) in files {
        if by_name.insert(name, file).is_some() {
            bail!("input '{name}' given twice");
        }
    }
    let declared: Vec<String> = graph
        .inputs()
        .iter()
        .map(|&v| format!("{} ({})", graph.value_name(v), graph.value_type(v)))
        .collect();
    for name in by_name.keys() {
        if !graph.inputs().iter().any(|&v| graph.value_name(v) == *name) {
            bail!(
                "the model has no input '{name}'; its inputs are: {}",
                declared.join(", ")
            );
        }
    }
    let mut tensors = Vec::new();
    for &v in graph.inputs() {
        let (name, ty) = (graph.value_name(v), graph.value_type(v));
        let Some(file) = by_name.get(name) else {
            bail!(
                "missing --input {name}=FILE.npy ({ty}); the model's inputs are: {}",
                declared.join(", ")
            );
        };
        let t = kiln_ir::npy::read_npy_file(file)
            .with_context(|| format!("reading input '{name}' from {}", file.display()))?;
        if t.dtype() != ty.dtype || t.shape() != ty.shape.as_slice() {
            bail!(
                "{}: input '{name}' must be {ty}, the file holds {}",
                file.display(),
                kiln_ir::TensorType::new(t.dtype(), t.shape().to_vec())
            );
        }
        tensors.push(t);
    }
    Ok(tensors)
}

/// Whether any quantization option was given (they only mean something with --quantize).
fn quant_options_given(q: &QuantArgs) -> bool {
    q.calibration.is_some()
        || q.random_calibration.is_some()
        || q.quantize_ops.is_some()
        || !q.skip.is_empty()
        || q.fallback_sqnr.is_some()
        || q.fallback_sensitivity.is_some()
        || q.bias_correction
        || q.dynamic
        || q.preprocess.is_some()
}

pub fn run(args: RunArgs) -> Result<()> {
    if !args.quantize && quant_options_given(&args.quant) {
        bail!("--calibration and the other quantization options need --quantize");
    }
    let float_graph = load_model(&args.model)?;
    let inputs = read_inputs(&float_graph, &args.inputs)?;
    let (graph, float_outputs) = if args.quantize {
        let quantized = args
            .quant
            .quantized_graph(&float_graph, &args.model.model)?;
        let float_outputs = kiln_interp::run(&float_graph, &inputs)
            .with_context(|| format!("running the float {}", args.model.model.display()))?;
        (quantized, Some(float_outputs))
    } else {
        (float_graph.clone(), None)
    };
    if args.backend == Backend::Interp && args.threads.is_some() {
        bail!("--threads applies to --backend jit (the interpreter runs on one thread)");
    }
    let (outputs, elapsed) = match args.backend {
        Backend::Interp => {
            let start = Instant::now();
            let outputs = kiln_interp::run(&graph, &inputs)
                .with_context(|| format!("running {}", args.model.model.display()))?;
            (outputs, start.elapsed())
        }
        Backend::Jit => {
            let path = &args.model.model;
            let mut times = StageTimes::default();
            let prepared = jit::prepare(&graph, path, &mut times)?;
            let threads = args
                .threads
                .map_or_else(jit::default_threads, |n| n as usize);
            let mut compiled = jit::compile(prepared, path, threads, jit::Fusion::ALL, &mut times)?;
            eprintln!(
                "compiled {} kernels in {:.1} ms ({}); arena {} bytes",
                compiled.schedule().count(),
                times.total().as_secs_f64() * 1e3,
                times.summary(),
                compiled.plan().peak_bytes
            );
            let start = Instant::now();
            let outputs = compiled
                .run(&inputs)
                .with_context(|| format!("running the compiled {}", path.display()))?;
            (outputs, start.elapsed())
        }
    };
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    for (&v, t) in graph.outputs().iter().zip(&outputs) {
        let path = args.output_dir.join(output_file_name(graph.value_name(v)));
        kiln_ir::npy::write_npy_file(&path, t)
            .with_context(|| format!("writing {}", path.display()))?;
        let s = t.stats();
        println!(
            "{} {}{:?} -> {}  (min {:.4} max {:.4} mean {:.4})",
            graph.value_name(v),
            t.dtype(),
            t.shape(),
            path.display(),
            s.min,
            s.max,
            s.mean
        );
    }
    println!(
        "{}{}: {:.1} ms",
        match args.backend {
            Backend::Jit => "jit",
            Backend::Interp => "interpreter",
        },
        if args.quantize {
            " (quantized graph)"
        } else {
            ""
        },
        elapsed.as_secs_f64() * 1e3
    );
    if let Some(float_outputs) = float_outputs {
        for ((&v, quantized), (&fv, float)) in graph
            .outputs()
            .iter()
            .zip(&outputs)
            .zip(float_graph.outputs().iter().zip(&float_outputs))
        {
            let approx = real_values(quantized, graph.value_type(v));
            let reference = real_values(float, float_graph.value_type(fv));
            if approx.len() != reference.len() {
                bail!(
                    "output '{}': the quantized graph gives {} values, the float one {}",
                    graph.value_name(v),
                    approx.len(),
                    reference.len()
                );
            }
            let (cosine, sqnr) = cosine_and_sqnr(&reference, &approx);
            println!(
                "{} vs float: cosine {cosine:.6}, SQNR {}",
                graph.value_name(v),
                sqnr.map_or_else(|| "exact".to_string(), |d| format!("{d:.2} dB"))
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_are_sanitized() {
        assert_eq!(output_file_name("probs"), "probs.npy");
        assert_eq!(
            output_file_name("/model/head/Conv_output:0"),
            "_model_head_Conv_output_0.npy"
        );
        assert_eq!(output_file_name("a b.c-d"), "a_b.c-d.npy");
    }
}
