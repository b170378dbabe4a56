//! `kiln demo`: the README's first command. Runs every pipeline stage on the embedded demo
//! model (tools/gen_demo_model.py) — import, optimize, interpret, quantize, JIT-compile and
//! run the int8 machine code — and prints what each stage did.

use crate::info::print_info;
use crate::jit::StageTimes;
use anyhow::{Context, Result};
use kiln_ir::{DType, Generator, Op};
use kiln_onnx::ImportOptions;
use kiln_opt::{OptLevel, OptOptions};
use kiln_quant::{input_specs, CalibrationSet, Progress, QuantizeConfig};
use std::time::Instant;

/// The embedded demo model: Conv+BN+ReLU stem, a residual block, a 10-class head.
pub const DEMO_MODEL: &[u8] = include_bytes!("../assets/demo.onnx");

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Don't print the IR dump (only the summaries and results).
    #[arg(long)]
    pub no_ir: bool,
    /// Seed of the demo's random input image (standard normal, 1×3×32×32).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub fn demo(args: DemoArgs) -> Result<()> {
    println!(
        "== kiln demo: embedded model (tools/gen_demo_model.py, {} bytes)\n",
        DEMO_MODEL.len()
    );

    let start = Instant::now();
    let graph = kiln_onnx::import_bytes(DEMO_MODEL, None, &ImportOptions::default())
        .context("importing the embedded demo model")?;
    kiln_ir::verify(&graph).context("verifying the imported demo model")?;
    println!(
        "[1] import ONNX -> kiln IR, shape inference, verify: {:.2} ms\n",
        start.elapsed().as_secs_f64() * 1e3
    );
    print_info(&graph, "demo.onnx")?;

    let start = Instant::now();
    let passes = kiln_opt::pipeline(OptLevel::O1);
    let mut per_pass = Vec::new();
    let (optimized, _) = kiln_opt::run_pipeline(
        &graph,
        &passes,
        &OptOptions {
            verify: true,
            ..OptOptions::default()
        },
        &mut |pass, _, stats| per_pass.push((pass.to_string(), stats.ops_before, stats.ops_after)),
    )
    .context("optimizing the demo model (-O1)")?;
    println!(
        "\n[2] optimize -O1 (e-graph rewrites from passes/*.rules, verified after each pass): {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    for (pass, before, after) in &per_pass {
        println!("    {pass:<16} {before:>3} -> {after:>3} ops");
    }
    let batch_norms =
        |g: &kiln_ir::Graph| kiln_opt::count_op(g, |op| matches!(op, Op::BatchNorm { .. }));
    let fused = kiln_opt::count_op(&optimized, |op| match op {
        Op::Conv(c) => c.act.is_some(),
        _ => false,
    });
    println!(
        "    batch_norm {} -> {}, convs with a fused activation: {fused}",
        batch_norms(&graph),
        batch_norms(&optimized)
    );

    if !args.no_ir {
        println!("\n    the optimized IR (kiln dump -O1; large constants shown as summaries):\n");
        print!("{}", kiln_ir::text::print_graph(&optimized));
    }

    let input_value = graph.inputs()[0];
    let input_ty = graph.value_type(input_value).clone();
    let input = Generator::Normal {
        seed: args.seed,
        mean: 0.0,
        std: 1.0,
    }
    .generate(DType::F32, &input_ty.shape)?;
    let start = Instant::now();
    let outputs = kiln_interp::run(&graph, std::slice::from_ref(&input))
        .context("running the imported demo model")?;
    let interp_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let optimized_outputs =
        kiln_interp::run(&optimized, &[input]).context("running the optimized demo model")?;
    let optimized_ms = start.elapsed().as_secs_f64() * 1e3;
    println!(
        "\n[3] reference interpreter on a seeded N(0,1) input {} (seed {}): imported {:.2} ms, optimized {:.2} ms",
        input_ty, args.seed, interp_ms, optimized_ms
    );
    let probs = outputs[0].to_f32_vec();
    let optimized_probs = optimized_outputs[0].to_f32_vec();
    let peak = probs.iter().fold(0f32, |m, p| m.max(p.abs()));
    let max_diff = probs
        .iter()
        .zip(&optimized_probs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let mut ranked: Vec<(usize, f32)> = optimized_probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    println!(
        "    top-5 classes of output '{}' (optimized graph):",
        graph.value_name(graph.outputs()[0])
    );
    for (class, p) in ranked.iter().take(5) {
        println!("      class {class}: {p:.4}");
    }
    println!(
        "    sum of probabilities: {:.6}; optimized vs imported: max |diff| / max |p| = {:.2e}",
        optimized_probs.iter().sum::<f32>(),
        if peak > 0.0 {
            max_diff / peak
        } else {
            max_diff
        }
    );

    // [4] int8: calibrate on seeded images (the demo ships no data set; a real model is
    // calibrated on its own data with `kiln quantize --calibration DIR`).
    let start = Instant::now();
    let calibration = CalibrationSet::random(&input_specs(&graph), 16, args.seed + 1)
        .context("seeded calibration set for the demo")?;
    let config = QuantizeConfig {
        progress: Progress::Hidden,
        ..QuantizeConfig::default()
    };
    let quantized =
        kiln_quant::quantize(&graph, &calibration, &config).context("quantizing the demo model")?;
    let count = |g: &kiln_ir::Graph, pred: fn(&Op) -> bool| kiln_opt::count_op(g, pred);
    println!(
        "\n[4] quantize to int8 (min-max calibration on 16 seeded N(0,1) images; per-channel i8 \
         weights, u8 activations): {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "    {} qconv, {} qmatmul, {} quantize / {} dequantize boundaries (float islands between)",
        count(&quantized.graph, |op| matches!(op, Op::QConv(_))),
        count(&quantized.graph, |op| matches!(op, Op::QMatMul)),
        count(&quantized.graph, |op| matches!(op, Op::Quantize)),
        count(&quantized.graph, |op| matches!(op, Op::Dequantize)),
    );
    let input = Generator::Normal {
        seed: args.seed,
        mean: 0.0,
        std: 1.0,
    }
    .generate(DType::F32, &input_ty.shape)?;
    let start = Instant::now();
    let int8_outputs =
        kiln_interp::run(&quantized.graph, &[input]).context("running the quantized demo model")?;
    let int8_probs = int8_outputs[0].to_f32_vec();
    let dot: f64 = probs
        .iter()
        .zip(&int8_probs)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let top = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i)
    };
    println!(
        "    int8 graph on the same input (interpreter, exact integer semantics): {:.2} ms; \
         cosine vs float {:.6}; top class {} (float: {})",
        start.elapsed().as_secs_f64() * 1e3,
        dot / (norm(&probs) * norm(&int8_probs)),
        top(&int8_probs),
        top(&probs)
    );

    // [5] the int8 graph as machine code: the same integer arithmetic, JIT-compiled.
    let mut times = StageTimes::default();
    let demo_path = std::path::Path::new("demo.onnx");
    let prepared = crate::jit::prepare(&quantized.graph, demo_path, &mut times)?;
    let threads = crate::jit::default_threads();
    let mut compiled = crate::jit::compile(
        prepared,
        demo_path,
        threads,
        crate::jit::Fusion::ALL,
        &mut times,
    )?;
    println!(
        "\n[5] JIT-compile the int8 graph with Cranelift for this host ({} kernels, {threads} \
         thread(s)): {:.2} ms ({})",
        compiled.schedule().count(),
        times.total().as_secs_f64() * 1e3,
        times.summary()
    );
    let plan = compiled.plan();
    println!(
        "    memory plan: one arena of {} for {} of intermediates",
        crate::info::human_bytes(plan.peak_bytes),
        crate::info::human_bytes(plan.sum_bytes)
    );
    let input = Generator::Normal {
        seed: args.seed,
        mean: 0.0,
        std: 1.0,
    }
    .generate(DType::F32, &input_ty.shape)?;
    let jit_outputs = compiled
        .run(std::slice::from_ref(&input))
        .context("running the compiled int8 demo model")?;
    const RUNS: usize = 20;
    let mut run_ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            compiled
                .run(std::slice::from_ref(&input))
                .map(|_| start.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()
        .context("running the compiled int8 demo model")?;
    run_ms.sort_by(f64::total_cmp);
    let jit_probs = jit_outputs[0].to_f32_vec();
    // Everything up to the dequantized logits is integer arithmetic, identical in both; only
    // the final float softmax may round differently (polynomial vs libm exp).
    let max_rel = int8_probs
        .iter()
        .zip(&jit_probs)
        .map(|(a, b)| (a - b).abs() / a.abs().max(f32::MIN_POSITIVE))
        .fold(0f32, f32::max);
    println!(
        "    run: median {:.3} ms over {RUNS} runs; vs the int8 interpreter: max relative \
         difference {max_rel:.1e} (softmax rounding), top class {}",
        run_ms[RUNS / 2],
        top(&jit_probs)
    );
    println!(
        "\n(next: `kiln quantize MODEL --calibration DIR -o model.int8.onnx`, \
         `kiln run MODEL --backend jit`, `kiln bench MODEL --compare-ort`, `kiln dump --after NAME`)"
    );
    Ok(())
}
