//! `kiln info` and `kiln dump`: what a model contains, and its IR in text, DOT or JSON —
//! as imported, or after optimization passes (run by [`crate::opt::dump_with_passes`]).

use crate::load::load_model;
use crate::opt::{dump_with_passes, DumpRequest};
use crate::passes::PipelineArgs;
use crate::ModelArgs;
use anyhow::Result;
use kiln_ir::{Graph, Op};
use std::collections::{BTreeMap, BTreeSet};

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Default)]
pub enum DumpFormat {
    /// kiln IR text (the .kir format, parseable by `kiln dump`/`kiln run`)
    #[default]
    Text,
    /// Graphviz DOT (`kiln dump m.onnx --format dot | dot -Tsvg > m.svg`)
    Dot,
    /// JSON (nodes in topological order; constants summarized)
    Json,
}

#[derive(clap::Args)]
pub struct DumpArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DumpFormat::Text)]
    pub format: DumpFormat,
    // Passes to run before dumping: -O, --passes, --rules-dir, --verify.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Print the IR right after pass NAME (after each run of it, if it runs more than
    /// once) and stop there; e.g. `kiln dump model.onnx --after fold-bn`.
    #[arg(long, value_name = "NAME")]
    pub after: Option<String>,
    /// Print the IR after every pass, each headed by a comment naming the pass.
    #[arg(long)]
    pub print_after_all: bool,
    /// Print what every pass did to stderr: e-graph size, iterations, why saturation
    /// stopped, time, how often each rule fired, op counts before and after.
    #[arg(long)]
    pub stats: bool,
}

/// Counts and sizes shown by `kiln info` (and the demo).
pub struct ModelSummary {
    pub nodes: usize,
    pub op_histogram: Vec<(&'static str, usize)>,
    pub parameters: usize,
    pub parameter_bytes: usize,
    pub macs: u64,
}

pub fn summarize(graph: &Graph) -> Result<ModelSummary> {
    let mut histogram: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut used_consts = BTreeSet::new();
    let mut macs = 0u64;
    let mut nodes = 0;
    for id in graph.topo_order()? {
        let node = graph.node(id);
        match node.op {
            Op::Input { .. } => continue,
            Op::Const(c) => {
                used_consts.insert(c);
                continue;
            }
            _ => {}
        }
        nodes += 1;
        *histogram.entry(node.op.mnemonic()).or_default() += 1;
        let in_shapes: Vec<&[usize]> = node
            .inputs()
            .iter()
            .map(|&v| graph.value_type(v).shape.as_slice())
            .collect();
        macs += node
            .op
            .macs(&in_shapes, &node.outputs[0].ty.shape)
            .unwrap_or(0);
    }
    let (mut parameters, mut parameter_bytes) = (0, 0);
    for c in used_consts {
        if let Some(v) = graph.consts.get(c) {
            let n: usize = v.shape().iter().product();
            parameters += n;
            parameter_bytes += n * v.dtype().size_bytes();
        }
    }
    let mut op_histogram: Vec<_> = histogram.into_iter().collect();
    op_histogram.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    Ok(ModelSummary {
        nodes,
        op_histogram,
        parameters,
        parameter_bytes,
        macs,
    })
}

/// A human-readable byte count (KiB/MiB with one decimal).
pub fn human_bytes(n: usize) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The `kiln info` report, also printed by the demo.
pub fn print_info(graph: &Graph, title: &str) -> Result<()> {
    let s = summarize(graph)?;
    println!("model {title} (graph @{})", graph.name);
    println!("  inputs:");
    for &v in graph.inputs() {
        let o = graph.output(v);
        println!("    {:<24} {}", o.name, o.ty);
    }
    println!("  outputs:");
    for &v in graph.outputs() {
        let o = graph.output(v);
        println!("    {:<24} {}", o.name, o.ty);
    }
    println!(
        "  {} ops, {} parameters ({}), {:.3} GMACs",
        s.nodes,
        s.parameters,
        human_bytes(s.parameter_bytes),
        s.macs as f64 / 1e9
    );
    println!("  op histogram:");
    for (op, count) in &s.op_histogram {
        println!("    {op:<24} {count}");
    }
    Ok(())
}

pub fn info(args: InfoArgs) -> Result<()> {
    let graph = load_model(&args.model)?;
    print_info(&graph, &args.model.model.display().to_string())
}

/// The graph in a dump format, as `kiln dump` prints it.
pub fn format_graph(graph: &Graph, format: DumpFormat) -> String {
    match format {
        DumpFormat::Text => kiln_ir::text::print_graph(graph),
        DumpFormat::Dot => kiln_ir::dot::to_dot(graph),
        DumpFormat::Json => format!("{}\n", kiln_ir::json::to_json_string(graph)),
    }
}

pub fn dump(args: DumpArgs) -> Result<()> {
    let graph = load_model(&args.model)?;
    let request = DumpRequest {
        pipeline: &args.pipeline,
        after: args.after.as_deref(),
        print_after_all: args.print_after_all,
        stats: args.stats,
        format: args.format,
    };
    dump_with_passes(&graph, &args.model.model, &request)
}
