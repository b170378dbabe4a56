//! `kiln bench`: compile a model to machine code (optionally quantizing it first), time it
//! over many runs and, with `--compare-ort`, time onnxruntime on the same inputs and threads
//! in the same process tree (f32, and int8 from `quantize_static`), printing the ratios.
//! The last line is machine-readable.

use crate::jit::{self, StageTimes};
use crate::load::load_model;
use crate::quantize::QuantArgs;
use crate::run::read_inputs;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use kiln_ir::{DType, Graph, Tensor};
use kiln_quant::{input_specs, CalibrationSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// onnxruntime's side of `--compare-ort` (tools/ort_bench.py), carried in the binary.
const ORT_BENCH_PY: &str = include_str!("../../../tools/ort_bench.py");

/// Calibration samples handed to onnxruntime's quantize_static (at most).
const ORT_CALIBRATION_SAMPLES: usize = 64;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A graph input as a .npy file: `--input x=img.npy` (repeat per input). Default: seeded
    /// standard-normal data of each input's declared shape (f32 inputs only).
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = crate::run::parse_input_file)]
    pub inputs: Vec<(String, PathBuf)>,
    /// Threads a large kernel is split over (default: the host's cores); onnxruntime gets
    /// the same number of intra-op threads.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Timed runs (after the warm-up).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Untimed runs first (page faults, caches, thread start-up).
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// Quantize the float model with kiln first (needs --calibration or
    /// --random-calibration) and benchmark its int8 code.
    #[arg(long)]
    pub quantize: bool,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Also time onnxruntime in the same run: the model as given (f32) and, for a float
    /// model, its `quantize_static` QDQ per-channel int8 version calibrated on the same
    /// samples. Needs Python with onnxruntime ($KILN_PYTHON, else python3).
    #[arg(long = "compare-ort")]
    pub compare_ort: bool,
    /// After the timed runs, time every kernel call over another --runs runs and print
    /// where the time goes: per op kind, and the slowest nodes.
    #[arg(long)]
    pub profile: bool,
    /// Compile every node of a float island (dequantize → float ops → quantize) as its own
    /// kernel instead of one fused kernel per chain, to measure what fusion gains.
    #[arg(long = "no-fuse")]
    pub no_fuse: bool,
    /// Keep fused float islands out of the int8 convolutions' epilogues (a residual add or a
    /// dequantize after a conv runs as its own kernel), to measure what that fusion gains.
    #[arg(long = "no-fuse-epilogues")]
    pub no_fuse_epilogues: bool,
    /// Keep `quantize(average_pool(dequantize x))` islands as three kernels instead of one
    /// int8 average pool, to measure what that fusion gains.
    #[arg(long = "no-fuse-pools")]
    pub no_fuse_pools: bool,
}

/// Where the time of one run goes, from the profile of `runs` runs: per op kind, and
/// the 15 slowest kernel calls.
fn print_profile(compiled: &kiln_runtime::CompiledModel, runs: u32) {
    let Some(profile) = compiled.profile() else {
        return;
    };
    let per_run = |d: std::time::Duration| d.as_secs_f64() * 1e3 / f64::from(runs.max(1));
    let total: f64 = profile.iter().map(|&(_, _, t)| per_run(t)).sum();
    let mut by_op: Vec<(&str, usize, f64)> = Vec::new();
    for &(_, op, t) in &profile {
        match by_op.iter_mut().find(|(o, _, _)| *o == op) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += per_run(t);
            }
            None => by_op.push((op, 1, per_run(t))),
        }
    }
    by_op.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("profile    {total:.3} ms per run in kernels (mean of {runs} profiled runs), by op:");
    for (op, calls, ms) in &by_op {
        println!(
            "  {op:<22} {calls:>5} calls {ms:>9.3} ms {:>5.1} %",
            100.0 * ms / total.max(f64::MIN_POSITIVE)
        );
    }
    let mut nodes: Vec<_> = profile.iter().collect();
    nodes.sort_by_key(|n| std::cmp::Reverse(n.2));
    println!("  slowest calls:");
    for (node, op, t) in nodes.into_iter().take(15) {
        println!("  {:>9.3} ms  {op:<16} {node}", per_run(*t));
    }
}

/// Median and 90th percentile (nearest rank) of run times in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latency {
    pub median_ms: f64,
    pub p90_ms: f64,
}

impl Latency {
    pub fn from_samples(mut ms: Vec<f64>) -> Option<Latency> {
        if ms.is_empty() || ms.iter().any(|m| !m.is_finite()) {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median_ms = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        // nearest rank: the smallest value with at least 90 % of the samples at or below it
        let rank = (0.9 * n as f64).ceil() as usize;
        let p90_ms = ms[rank.clamp(1, n) - 1];
        Some(Latency { median_ms, p90_ms })
    }
}

/// The process's peak resident memory (VmHWM) in bytes, where /proc has it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn random_inputs(graph: &Graph, model: &Path) -> Result<Vec<Tensor>> {
    if let Some(&v) = graph
        .inputs()
        .iter()
        .find(|&&v| graph.value_type(v).dtype != DType::F32)
    {
        bail!(
            "{}: input '{}' is {}; random inputs are f32 only, pass --input {}=FILE.npy",
            model.display(),
            graph.value_name(v),
            graph.value_type(v),
            graph.value_name(v)
        );
    }
    let set = CalibrationSet::random(&input_specs(graph), 1, 0x6b696c6e)
        .with_context(|| format!("random inputs for {}", model.display()))?;
    set.get(0)
        .with_context(|| format!("random inputs for {}", model.display()))
}

/// A directory removed when dropped (holds the onnxruntime job, inputs and models).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("kiln-bench-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// onnxruntime's latencies: f32 (the model as given) and int8 (quantize_static), if made.
struct OrtResult {
    version: String,
    f32: Latency,
    int8: Option<Latency>,
}

fn python() -> String {
    std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn latency_of(json: &serde_json::Value, key: &str) -> Option<Latency> {
    let entry = json.get(key)?;
    Some(Latency {
        median_ms: entry.get("median_ms")?.as_f64()?,
        p90_ms: entry.get("p90_ms")?.as_f64()?,
    })
}

fn run_ort(
    args: &BenchArgs,
    float_graph: &Graph,
    inputs: &[Tensor],
    threads: usize,
) -> Result<OrtResult> {
    let model = &args.model.model;
    let scratch = ScratchDir::new()?;
    let write = |name: &str, t: &Tensor| -> Result<String> {
        let path = scratch.0.join(name);
        kiln_ir::npy::write_npy_file(&path, t)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path.display().to_string())
    };
    let names: Vec<&str> = float_graph
        .inputs()
        .iter()
        .map(|&v| float_graph.value_name(v))
        .collect();
    let mut feeds = serde_json::Map::new();
    for (i, (name, t)) in names.iter().zip(inputs).enumerate() {
        feeds.insert(
            name.to_string(),
            write(&format!("input_{i}.npy"), t)?.into(),
        );
    }
    // onnxruntime's int8 model is calibrated on kiln's calibration samples when given
    let mut calibration = Vec::new();
    if args.quant.calibration.is_some() || args.quant.random_calibration.is_some() {
        let set = args.quant.calibration_set(float_graph, model)?;
        for k in 0..set.len().min(ORT_CALIBRATION_SAMPLES) {
            let sample = set
                .get(k)
                .with_context(|| format!("calibration sample {k}"))?;
            let mut entry = serde_json::Map::new();
            for (i, (name, t)) in names.iter().zip(&sample).enumerate() {
                entry.insert(
                    name.to_string(),
                    write(&format!("calib_{k}_{i}.npy"), t)?.into(),
                );
            }
            calibration.push(serde_json::Value::Object(entry));
        }
    } else {
        eprintln!(
            "note: no --calibration: onnxruntime's int8 model is calibrated on the benchmark \
             input alone"
        );
        calibration.push(serde_json::Value::Object(feeds.clone()));
    }
    let absolute =
        std::fs::canonicalize(model).with_context(|| format!("reading {}", model.display()))?;
    let job = serde_json::json!({
        "model": absolute.display().to_string(),
        "inputs": feeds,
        "calibration": calibration,
        "threads": threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "int8_model": scratch.0.join("ort_int8.onnx").display().to_string(),
    });
    let job_path = scratch.0.join("job.json");
    std::fs::write(&job_path, job.to_string())
        .with_context(|| format!("writing {}", job_path.display()))?;
    let script = scratch.0.join("ort_bench.py");
    std::fs::write(&script, ORT_BENCH_PY)
        .with_context(|| format!("writing {}", script.display()))?;
    let python = python();
    let output = Command::new(&python)
        .arg(&script)
        .arg(&job_path)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| {
            format!(
                "--compare-ort runs Python with onnxruntime ('{python}', set KILN_PYTHON to \
                 choose another): pip install onnx==1.23.2 onnxruntime==1.31.1 numpy"
            )
        })?;
    if !output.status.success() {
        bail!(
            "onnxruntime benchmark failed ({}; needs '{python}' with onnx==1.23.2 \
             onnxruntime==1.31.1 numpy — set KILN_PYTHON to choose another interpreter)",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let json: serde_json::Value = serde_json::from_str(last)
        .with_context(|| format!("reading onnxruntime's result line '{last}'"))?;
    let f32 = latency_of(&json, "f32")
        .with_context(|| format!("onnxruntime's result has no f32 latency: {last}"))?;
    Ok(OrtResult {
        version: json["versions"]["onnxruntime"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        f32,
        int8: latency_of(&json, "int8"),
    })
}

fn model_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".to_string());
    // the machine-readable line is space-separated key=value pairs
    stem.chars()
        .map(|c| {
            if c.is_whitespace() || c == '=' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn ms(x: f64) -> String {
    format!("{x:.2}")
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if !args.quantize && args.quant.calibration.is_some() && !args.compare_ort {
        bail!("--calibration is used by --quantize (and by --compare-ort's onnxruntime int8)");
    }
    let path = args.model.model.clone();
    if args.compare_ort && path.extension().and_then(|e| e.to_str()) != Some("onnx") {
        bail!(
            "--compare-ort needs an ONNX model (onnxruntime cannot read {})",
            path.display()
        );
    }
    let threads = args
        .threads
        .map_or_else(jit::default_threads, |n| n as usize);
    let mut times = StageTimes::default();

    let start = Instant::now();
    let float_graph = load_model(&args.model)?;
    times.add("import", start.elapsed());
    let inputs = if args.inputs.is_empty() {
        random_inputs(&float_graph, &path)?
    } else {
        read_inputs(&float_graph, &args.inputs)?
    };

    // Calibration is a separate step (minutes on large sets), not part of compile time.
    let graph = if args.quantize {
        let start = Instant::now();
        let model = args.quant.quantize(&float_graph, &path)?;
        eprintln!(
            "quantized in {:.1} s (calibration and accuracy report; not compile time)",
            start.elapsed().as_secs_f64()
        );
        model.graph
    } else {
        float_graph.clone()
    };
    let prepared = jit::prepare(&graph, &path, &mut times)?;
    let fusion = jit::Fusion {
        chains: !args.no_fuse,
        conv_epilogues: !args.no_fuse && !args.no_fuse_epilogues,
        int8_pools: !args.no_fuse && !args.no_fuse_pools,
    };
    let mut compiled = jit::compile(prepared, &path, threads, fusion, &mut times)?;
    let compile_ms = times.total().as_secs_f64() * 1e3;
    let plan = compiled.plan().clone();
    eprintln!(
        "compiled {} kernels in {compile_ms:.1} ms: {}",
        compiled.schedule().count(),
        times.summary()
    );

    eprint!("kiln: {} warm-up + {} timed runs", args.warmup, args.runs);
    for _ in 0..args.warmup {
        compiled
            .run(&inputs)
            .context("running the compiled model")?;
    }
    let mut samples = Vec::with_capacity(args.runs as usize);
    for _ in 0..args.runs {
        let start = Instant::now();
        compiled
            .run(&inputs)
            .context("running the compiled model")?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!();
    let kiln = Latency::from_samples(samples).context("no finite run times")?;
    if args.profile {
        compiled.set_profiling(true);
        for _ in 0..args.runs {
            compiled
                .run(&inputs)
                .context("running the compiled model")?;
        }
        print_profile(&compiled, args.runs);
        compiled.set_profiling(false);
    }
    let rss = peak_rss_bytes();

    let ort = if args.compare_ort {
        Some(run_ort(&args, &float_graph, &inputs, threads)?)
    } else {
        None
    };

    let name = model_name(&path);
    let precision = if args.quantize || graph_is_integer(&compiled) {
        "int8"
    } else {
        "f32"
    };
    println!(
        "model      {}  ({name}, {threads} thread(s))",
        path.display()
    );
    println!("compile    {compile_ms:.1} ms  ({})", times.summary());
    println!(
        "memory     activations {} bytes (one arena; {} bytes if every intermediate had its \
         own buffer), int8 conv scratch {} bytes (shared by every conv), weights {} bytes{}",
        plan.peak_bytes,
        plan.sum_bytes,
        compiled.conv_scratch_bytes(),
        plan.const_bytes,
        rss.map_or_else(String::new, |b| format!(", process peak RSS {b} bytes"))
    );
    println!("{:<22} {:>10} {:>10}", "latency", "median ms", "p90 ms");
    println!(
        "{:<22} {:>10} {:>10}",
        format!("kiln {precision}"),
        ms(kiln.median_ms),
        ms(kiln.p90_ms)
    );
    let mut tail = String::new();
    if let Some(ort) = &ort {
        let label = if graph_is_integer(&compiled) && !args.quantize {
            "(model as given)"
        } else {
            "f32"
        };
        println!(
            "{:<22} {:>10} {:>10}   kiln is {:.2}x its speed",
            format!("onnxruntime {label}"),
            ms(ort.f32.median_ms),
            ms(ort.f32.p90_ms),
            ort.f32.median_ms / kiln.median_ms
        );
        tail.push_str(&format!(" ort_f32_median_ms={}", ms(ort.f32.median_ms)));
        if let Some(int8) = ort.int8 {
            println!(
                "{:<22} {:>10} {:>10}   kiln is {:.2}x its speed",
                "onnxruntime int8",
                ms(int8.median_ms),
                ms(int8.p90_ms),
                int8.median_ms / kiln.median_ms
            );
            tail.push_str(&format!(" ort_int8_median_ms={}", ms(int8.median_ms)));
        }
        println!("(onnxruntime {}, same inputs and threads)", ort.version);
    }
    println!(
        "bench: model={name} threads={threads} compile_ms={compile_ms:.1} median_ms={} \
         p90_ms={} peak_bytes={}{tail}",
        ms(kiln.median_ms),
        ms(kiln.p90_ms),
        plan.peak_bytes
    );
    Ok(())
}

/// Whether the compiled model runs int8 kernels (a quantized model).
fn graph_is_integer(compiled: &kiln_runtime::CompiledModel) -> bool {
    compiled
        .schedule()
        .any(|(_, op)| matches!(op, "qconv" | "qmatmul"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Median of an odd count is the middle value, of an even count the mean of the two
    /// middle values; p90 is the nearest-rank percentile (for 10 samples: the 9th).
    #[test]
    fn median_and_p90() {
        let l = Latency::from_samples(vec![5.0, 1.0, 3.0]).unwrap();
        assert_eq!((l.median_ms, l.p90_ms), (3.0, 5.0));
        let ten: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        let l = Latency::from_samples(ten).unwrap();
        assert_eq!((l.median_ms, l.p90_ms), (5.5, 9.0));
        assert_eq!(Latency::from_samples(vec![]), None);
        assert_eq!(Latency::from_samples(vec![1.0, f64::NAN]), None);
    }

    #[test]
    fn model_names_fit_the_machine_readable_line() {
        assert_eq!(model_name(Path::new("/m/resnet50.onnx")), "resnet50");
        assert_eq!(model_name(Path::new("a b=c.kir")), "a_b_c");
    }
}
