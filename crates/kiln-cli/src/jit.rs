//! The JIT backend of `kiln run` and `kiln bench`: bring a graph into the form the code
//! generator compiles (a QDQ model's quantize/dequantize pairs converted to integer ops by
//! the `quantize` rules, then `-O1`), compile it to machine code, and time every stage.

use anyhow::{Context, Result};
use kiln_ir::{Graph, Op};
use kiln_opt::{OptLevel, OptOptions};
use kiln_runtime::{CompiledModel, Model, Options, RuntimeError};
use std::path::Path;
use std::time::{Duration, Instant};

/// Where compile time goes, stage by stage, in order.
#[derive(Default)]
pub struct StageTimes(pub Vec<(&'static str, Duration)>);

impl StageTimes {
    pub fn add(&mut self, stage: &'static str, time: Duration) {
        self.0.push((stage, time));
    }

    pub fn total(&self) -> Duration {
        self.0.iter().map(|(_, t)| *t).sum()
    }

    /// `import 12.3 ms, optimize 80.1 ms, ...`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(stage, t)| format!("{stage} {:.1} ms", t.as_secs_f64() * 1e3))
            .collect();
        parts.join(", ")
    }
}

/// Whether the graph is in QDQ form: a conv, gemm or matmul whose weights come from a
/// dequantize (an imported onnxruntime / TensorRT-style QDQ model, or `kiln quantize -o
/// m.onnx`). An integer graph (`.kir` from `kiln quantize`) has qconv/qmatmul there instead;
/// its remaining dequantize nodes are the float islands' boundaries.
fn is_qdq(graph: &Graph) -> bool {
    graph.node_ids().any(|id| {
        let node = graph.node(id);
        matches!(node.op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul)
            && node
                .inputs()
                .get(1)
                .is_some_and(|w| matches!(graph.node(w.node).op, Op::Dequantize))
    })
}

/// The graph the code generator compiles: a QDQ graph converted to integer ops (qconv,
/// qmatmul, integer data movement, float islands between explicit boundaries), then `-O1`
/// (BatchNorm folding, activation and residual fusion on what remains in float).
pub fn prepare(graph: &Graph, model: &Path, times: &mut StageTimes) -> Result<Graph> {
    let opts = OptOptions {
        // the verifier runs once at the end (compile checks types again)
        verify: false,
        ..OptOptions::default()
    };
    let graph = if is_qdq(graph) {
        let start = Instant::now();
        // A conv or gemm followed by its activation is quantized as one unit
        // (`DQ → conv → relu → Q`, as kiln quantize and PyTorch write it): fuse the activation
        // first, so the quantize rules see `DQ → conv{act} → Q` and make one qconv whose clamp
        // is the activation, instead of leaving the conv in float.
        let (graph, _) =
            kiln_opt::run_pipeline(graph, &["fuse-activation"], &opts, &mut |_, _, _| {})
                .with_context(|| format!("{}: fusing activations", model.display()))?;
        let (g, _) = kiln_quant::convert_qdq(&graph, &opts).with_context(|| {
            format!(
                "{}: converting quantize/dequantize pairs to integer ops",
                model.display()
            )
        })?;
        times.add("quantize rules", start.elapsed());
        g
    } else {
        graph.clone()
    };
    let start = Instant::now();
    let passes = kiln_opt::pipeline(OptLevel::O1);
    let (graph, _) = kiln_opt::run_pipeline(&graph, &passes, &opts, &mut |_, _, _| {})
        .with_context(|| format!("{}: optimizing (-O1)", model.display()))?;
    kiln_ir::verify(&graph).with_context(|| format!("{}: after -O1", model.display()))?;
    times.add("optimize -O1", start.elapsed());
    Ok(graph)
}

/// Which fusions [`compile`] applies (results are bit-identical for each; `kiln bench`
/// turns them off to measure what they gain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fusion {
    /// Float islands into one kernel each.
    pub chains: bool,
    /// An island that alone reads an int8 conv's output into the conv's epilogue.
    pub conv_epilogues: bool,
    /// `quantize(average_pool(dequantize x))` into one int8 average pool.
    pub int8_pools: bool,
}

impl Fusion {
    /// Every fusion (the default).
    pub const ALL: Fusion = Fusion {
        chains: true,
        conv_epilogues: true,
        int8_pools: true,
    };
}

/// Compile a prepared graph to machine code with `threads` threads per large kernel and
/// the given fusions.
pub fn compile(
    graph: Graph,
    model: &Path,
    threads: usize,
    fusion: Fusion,
    times: &mut StageTimes,
) -> Result<CompiledModel> {
    let options = Options {
        threads,
        fuse_elementwise: fusion.chains,
        fuse_conv_epilogues: fusion.conv_epilogues,
        fuse_int8_pools: fusion.int8_pools,
        ..Options::default()
    };
    let start = Instant::now();
    let compiled = Model::from_graph(graph)
        .compile(&options)
        .map_err(|e| match e {
            RuntimeError::NoKernel(_) => anyhow::Error::new(e).context(format!(
                "{}: the JIT backend cannot compile this model (--backend interp runs it in \
                 the reference interpreter)",
                model.display()
            )),
            e => anyhow::Error::new(e).context(format!("{}: compiling", model.display())),
        })?;
    times.add("codegen", start.elapsed());
    Ok(compiled)
}

/// How many threads the host can run at once (the default of `--threads`).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
