//! `kiln demo`: the README's first command. Runs every pipeline stage that exists on the
//! embedded demo model (tools/gen_demo_model.py) and prints what each stage did.

use crate::info::print_info;
use anyhow::{Context, Result};
use kiln_ir::{DType, Generator};
use kiln_onnx::ImportOptions;
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

    if !args.no_ir {
        println!("\n[2] the IR (kiln dump; large constants shown as summaries):\n");
        print!("{}", kiln_ir::text::print_graph(&graph));
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
    let outputs = kiln_interp::run(&graph, &[input]).context("running the demo model")?;
    println!(
        "\n[3] reference interpreter on a seeded N(0,1) input {} (seed {}): {:.2} ms",
        input_ty,
        args.seed,
        start.elapsed().as_secs_f64() * 1e3
    );
    let probs = outputs[0].to_f32_vec();
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    println!(
        "    top-5 classes of output '{}':",
        graph.value_name(graph.outputs()[0])
    );
    for (class, p) in ranked.iter().take(5) {
        println!("      class {class}: {p:.4}");
    }
    println!("    sum of probabilities: {:.6}", probs.iter().sum::<f32>());
    Ok(())
}
