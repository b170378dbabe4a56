//! `kiln opt` (optimize a model and write it as `.onnx` or `.kir`) and the pass-running half
//! of `kiln dump` (`--after NAME`, `--print-after-all`, `--stats`).

use crate::info::{format_graph, DumpFormat};
use crate::load::load_model;
use crate::passes::PipelineArgs;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use kiln_ir::{ConstValue, Graph, Op};
use kiln_opt::{OptLevel, OptOptions, PassStats};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct OptArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Where to write the optimized model; the extension picks the format: `.onnx`
    /// (standard ONNX, runnable by onnxruntime; fused ops are expanded back into ONNX
    /// nodes) or `.kir` (kiln IR text; weights with more than 16 values are printed as
    /// summaries, so such a file documents the model but cannot run it).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Print what every pass did to stderr: e-graph size, iterations, why saturation
    /// stopped, time, how often each rule fired, op counts before and after.
    #[arg(long)]
    pub stats: bool,
}

/// The file formats `kiln opt` writes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum OutputFormat {
    Onnx,
    Kir,
}

fn output_format(path: &Path) -> Result<OutputFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => Ok(OutputFormat::Onnx),
        Some("kir") => Ok(OutputFormat::Kir),
        Some(other) => bail!(
            "cannot write '{}': unknown output extension '.{other}' (expected .onnx or .kir)",
            path.display()
        ),
        None => bail!(
            "cannot write '{}': the output file needs an extension, .onnx or .kir",
            path.display()
        ),
    }
}

/// Run `passes` on `graph`, calling `after_each` after every pass; errors name the model.
pub fn run_passes(
    graph: &Graph,
    passes: &[String],
    opts: &OptOptions,
    model: &Path,
    after_each: &mut dyn FnMut(&str, &Graph, &PassStats),
) -> Result<(Graph, Vec<PassStats>)> {
    let names: Vec<&str> = passes.iter().map(String::as_str).collect();
    kiln_opt::run_pipeline(graph, &names, opts, after_each)
        .with_context(|| format!("optimizing {}", model.display()))
}

fn total_time(stats: &[PassStats]) -> Duration {
    stats.iter().map(|s| s.time).sum()
}

fn op_count(graph: &Graph) -> usize {
    graph
        .node_ids()
        .filter(|&id| !graph.node(id).op.is_source())
        .count()
}

/// Constants the `.kir` printer shows only as a summary (data beyond the inline limit, or
/// already opaque): their count and bytes.
pub(crate) fn summarized_constants(graph: &Graph) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let (mut count, mut bytes) = (0, 0);
    for id in graph.node_ids() {
        let Op::Const(c) = graph.node(id).op else {
            continue;
        };
        if !seen.insert(c) {
            continue;
        }
        let summarized = match graph.consts.get(c) {
            Some(ConstValue::Data(t)) => t.numel() > kiln_ir::text::INLINE_CONST_LIMIT,
            Some(ConstValue::Opaque { .. }) => true,
            Some(ConstValue::Generated { .. }) | None => false,
        };
        if summarized {
            let v = graph.consts.get(c).expect("checked above");
            count += 1;
            bytes += v.shape().iter().product::<usize>() * v.dtype().size_bytes();
        }
    }
    (count, bytes)
}

pub fn opt(args: OptArgs) -> Result<()> {
    let format = output_format(&args.output)?;
    let passes = args.pipeline.pass_list(OptLevel::O1)?;
    let model = &args.model.model;
    let graph = load_model(&args.model)?;
    let opts = args.pipeline.options();
    let show_stats = args.stats;
    let (optimized, stats) = run_passes(&graph, &passes, &opts, model, &mut |_, _, s| {
        if show_stats {
            // With times: --stats is for people, not snapshots.
            eprint!("{}", s.render(true));
        }
    })?;
    let bytes = match format {
        OutputFormat::Onnx => kiln_onnx::export(&optimized)
            .with_context(|| format!("exporting the optimized {} as ONNX", model.display()))?,
        OutputFormat::Kir => {
            kiln_ir::verify(&optimized)
                .with_context(|| format!("the optimized {} fails verification", model.display()))?;
            kiln_ir::text::print_graph(&optimized).into_bytes()
        }
    };
    std::fs::write(&args.output, bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "kiln opt: {} → {} ({}: {} passes, {} → {} ops, {:.1} ms)",
        model.display(),
        args.output.display(),
        args.pipeline.describe(OptLevel::O1),
        passes.len(),
        op_count(&graph),
        op_count(&optimized),
        total_time(&stats).as_secs_f64() * 1e3
    );
    if format == OutputFormat::Kir {
        let (count, bytes) = summarized_constants(&optimized);
        if count > 0 {
            eprintln!(
                "warning: {count} constants ({}) are written to {} as summaries: the .kir file \
                 shows the model but cannot run it; write .onnx to keep the weights",
                crate::info::human_bytes(bytes),
                args.output.display()
            );
        }
    }
    Ok(())
}

/// What `kiln dump` asked for beyond the plain IR.
pub struct DumpRequest<'a> {
    pub pipeline: &'a PipelineArgs,
    pub after: Option<&'a str>,
    pub print_after_all: bool,
    pub stats: bool,
    pub format: DumpFormat,
}

impl DumpRequest<'_> {
    /// The passes dump runs: `--passes` or `-O` if given; without them, `-O1` when the
    /// user asked to see the IR after passes (`--after`, `--print-after-all`), else none,
    /// so that a plain `kiln dump` shows the imported IR.
    fn default_level(&self) -> OptLevel {
        if self.after.is_some() || self.print_after_all {
            OptLevel::O1
        } else {
            OptLevel::O0
        }
    }
}

/// A printed graph with a header naming the pass, in the syntax of the format (a comment
/// for text and DOT, a wrapping object for JSON).
fn format_after_pass(graph: &Graph, pass: &str, k: usize, n: usize, format: DumpFormat) -> String {
    match format {
        DumpFormat::Json => {
            let wrapped = serde_json::json!({
                "after_pass": pass,
                "index": k,
                "graph": kiln_ir::json::to_json(graph),
            });
            let mut s = serde_json::to_string_pretty(&wrapped)
                .expect("a serde_json::Value always serializes");
            s.push('\n');
            s
        }
        DumpFormat::Text | DumpFormat::Dot => {
            format!(
                "// after pass {pass} ({k} of {n})\n{}",
                format_graph(graph, format)
            )
        }
    }
}

/// `kiln dump` with passes: print the IR after `--after NAME` (every run of it), after every
/// pass, or at the end; stats to stderr.
pub fn dump_with_passes(graph: &Graph, model: &Path, req: &DumpRequest) -> Result<()> {
    let default = req.default_level();
    let passes = req.pipeline.pass_list(default)?;
    if let Some(after) = req.after {
        crate::passes::check_pass_name(after)?;
        if !passes.iter().any(|p| p == after) {
            bail!(
                "--after {after}: pass {after} is not among the passes that run ({}: {}); \
                 choose it with --passes",
                req.pipeline.describe(default),
                if passes.is_empty() {
                    "none".to_string()
                } else {
                    passes.join(", ")
                }
            );
        }
    }
    if passes.is_empty() {
        if req.stats {
            eprintln!(
                "no passes run ({}); choose some with -O1 or --passes",
                req.pipeline.describe(default)
            );
        }
        print!("{}", format_graph(graph, req.format));
        return Ok(());
    }
    // With --after alone, nothing after its last run matters.
    let run_until = match (req.after, req.print_after_all) {
        (Some(after), false) => passes
            .iter()
            .rposition(|p| p == after)
            .expect("checked that the pass is in the list"),
        _ => passes.len() - 1,
    };
    let to_run = &passes[..=run_until];
    let n = to_run.len();
    let after_runs = req
        .after
        .map_or(0, |a| to_run.iter().filter(|p| *p == a).count());
    // A header on every printed graph unless exactly one is printed, so that
    // `kiln dump m.onnx --after fold-bn > m.kir` writes a parseable file.
    let headers = req.print_after_all || after_runs > 1;
    let opts = req.pipeline.options();
    let mut k = 0;
    let start = Instant::now();
    let (last, stats) = run_passes(graph, to_run, &opts, model, &mut |pass, g, s| {
        k += 1;
        if req.stats {
            eprint!("{}", s.render(true));
        }
        if req.print_after_all || req.after == Some(pass) {
            if headers {
                print!("{}", format_after_pass(g, pass, k, n, req.format));
            } else {
                print!("{}", format_graph(g, req.format));
            }
        }
    })?;
    if req.after.is_none() && !req.print_after_all {
        print!("{}", format_graph(&last, req.format));
    }
    if req.stats {
        eprintln!(
            "{} passes, {:.1} ms in passes ({:.1} ms in all)",
            stats.len(),
            total_time(&stats).as_secs_f64() * 1e3,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_extension_picks_the_format() {
        assert_eq!(
            output_format(Path::new("a/b.onnx")).unwrap(),
            OutputFormat::Onnx
        );
        assert_eq!(
            output_format(Path::new("b.kir")).unwrap(),
            OutputFormat::Kir
        );
        let err = output_format(Path::new("out.txt")).unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot write 'out.txt': unknown output extension '.txt' (expected .onnx or .kir)"
        );
        let err = output_format(Path::new("out")).unwrap_err().to_string();
        assert!(err.contains("needs an extension, .onnx or .kir"), "{err}");
    }
}
