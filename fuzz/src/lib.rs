//! The checks behind kiln's fuzz targets, shared with `tests/fuzz_regressions.rs` (which
//! includes this file by path) so that a saved crash input replays the exact same code.
//!
//! Each check returns the stage's error for input it rejects — that is fine, bad input
//! must be an error — and panics only when kiln broke one of its own promises: a panic
//! inside a library, an imported graph that does not verify, a `.kir` or `.npy` round
//! trip that changes the data.

use kiln_ir::{DType, Graph, Tensor};
use std::time::Duration;

/// Memory budget for imports under the fuzzer: far below libFuzzer's 2 GiB RSS limit, so
/// a model claiming big tensors is refused by the budget rather than killing the run.
pub const FUZZ_MAX_MEMORY: u64 = 256 << 20;

/// The end-to-end target runs only graphs whose every value has at most this many
/// elements, and at most [`PIPELINE_MAX_NODES`] nodes, so one input cannot run for long.
pub const PIPELINE_MAX_ELEMENTS: usize = 2048;
pub const PIPELINE_MAX_NODES: usize = 48;
/// Most element operations one node may cost (see [`within_caps`]).
pub const PIPELINE_MAX_WORK: u128 = 1 << 22;

/// Import options for fuzzing: a small memory budget and dynamic dims set to 2.
pub fn fuzz_import_options(max_memory: u64) -> kiln_onnx::ImportOptions {
    kiln_onnx::ImportOptions {
        default_dim: Some(2),
        max_memory: Some(max_memory),
        ..kiln_onnx::ImportOptions::default()
    }
}

/// ONNX bytes → import → verify. The importer promises verified graphs: a graph that
/// imports but does not verify is a bug.
pub fn check_onnx_import(data: &[u8]) -> Result<Graph, kiln_onnx::OnnxError> {
    let graph = kiln_onnx::import_bytes(data, None, &fuzz_import_options(FUZZ_MAX_MEMORY))?;
    if let Err(e) = kiln_ir::verify(&graph) {
        panic!("the importer returned a graph that does not verify: {e}");
    }
    Ok(graph)
}

/// `.kir` text → parse; a graph that parses must print and parse back to the same text
/// (the text format's exact round trip).
pub fn check_kir_text(text: &str) -> Result<Graph, kiln_ir::IrError> {
    let graph = kiln_ir::text::parse_graph(text)?;
    let printed = kiln_ir::text::print_graph(&graph);
    let reparsed = kiln_ir::text::parse_graph(&printed).unwrap_or_else(|e| {
        panic!("a parsed graph printed as text that does not parse: {e}\n{printed}")
    });
    let reprinted = kiln_ir::text::print_graph(&reparsed);
    assert_eq!(printed, reprinted, "print(parse(print(g))) != print(g)");
    // The verifier must give an answer (Ok or Err), never panic, on any parsed graph.
    let _ = kiln_ir::verify(&graph);
    Ok(graph)
}

/// Rule-file text → parse → build the egg rewrites (which `expect`s what the parser
/// checked). Also feeds the same text to the pipelines-file parser.
pub fn check_rules(text: &str) -> Result<kiln_opt::RuleSet, kiln_opt::OptError> {
    let known: Vec<&str> = kiln_opt::pass_names().iter().map(|(n, _)| *n).collect();
    let _ = kiln_opt::passes::parse_pipelines("fuzz.sexp", text, &known);
    let set = kiln_opt::parse_rule_file("fuzz.rules", text)?;
    let _ = set.rewrites();
    Ok(set)
}

/// `.npy` bytes → tensor; a tensor read must write back to bytes that read as the same
/// tensor. The same bytes also go to the `.npz` reader.
pub fn check_npy(data: &[u8]) -> Result<Tensor, kiln_ir::npy::NpyError> {
    let _ = kiln_ir::npy::read_npz(data);
    let tensor = kiln_ir::npy::read_npy(data)?;
    let written = kiln_ir::npy::write_npy(&tensor);
    let reread = kiln_ir::npy::read_npy(&written)
        .unwrap_or_else(|e| panic!("write_npy wrote a file read_npy rejects: {e}"));
    assert_eq!(
        written,
        kiln_ir::npy::write_npy(&reread),
        "a .npy round trip changed the tensor"
    );
    Ok(tensor)
}

/// Why the end-to-end check stopped early; every variant is a legitimate rejection.
#[derive(Debug)]
pub enum PipelineStop {
    Import(kiln_onnx::OnnxError),
    /// The graph is beyond the fuzzing caps (not an error of kiln's).
    TooBig(String),
    Optimize(kiln_opt::OptError),
    Calibration(kiln_quant::CalibError),
    Interpret(kiln_interp::InterpError),
    Quantize(kiln_quant::QuantError),
}

impl PipelineStop {
    /// The stage and the error's variant, e.g. `Import::MemoryLimit` (what
    /// `tests/fuzz-regressions/expected.txt` records).
    pub fn kind(&self) -> String {
        let (stage, detail) = match self {
            PipelineStop::Import(e) => ("Import", variant_name(e)),
            PipelineStop::TooBig(_) => ("TooBig", String::new()),
            PipelineStop::Optimize(e) => ("Optimize", variant_name(e)),
            PipelineStop::Calibration(e) => ("Calibration", variant_name(e)),
            PipelineStop::Interpret(e) => ("Interpret", variant_name(e)),
            PipelineStop::Quantize(e) => ("Quantize", variant_name(e)),
        };
        if detail.is_empty() {
            stage.to_string()
        } else {
            format!("{stage}::{detail}")
        }
    }
}

impl std::fmt::Display for PipelineStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PipelineStop::Import(e) => write!(f, "import: {e}"),
            PipelineStop::TooBig(why) => write!(f, "beyond the fuzzing caps: {why}"),
            PipelineStop::Optimize(e) => write!(f, "-O1: {e}"),
            PipelineStop::Calibration(e) => write!(f, "calibration data: {e}"),
            PipelineStop::Interpret(e) => write!(f, "interpreter: {e}"),
            PipelineStop::Quantize(e) => write!(f, "quantize: {e}"),
        }
    }
}

/// An error's enum variant path from its `Debug` text: `MemoryLimit { .. }` →
/// `MemoryLimit`, `Optimize(Verify { .. })` → `Optimize::Verify`.
pub fn variant_name(e: &dyn std::fmt::Debug) -> String {
    let text = format!("{e:?}");
    let mut parts = Vec::new();
    let mut rest = text.as_str();
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        parts.push(&rest[..end]);
        if rest[end..].starts_with('(') {
            rest = &rest[end + 1..];
        } else {
            break;
        }
    }
    parts.join("::")
}

/// What the end-to-end check ran through.
#[derive(Debug, PartialEq, Eq)]
pub enum PipelineReached {
    /// The float graph ran; quantization refused the graph with an error.
    FloatOnly,
    /// The quantized graph ran too.
    Quantized,
}

fn numel(shape: &[usize]) -> u128 {
    shape.iter().map(|&d| d as u128).product()
}

/// Refuse graphs beyond the caps: too many nodes, a value with too many elements, or a
/// node whose work estimate — output elements × the largest input's elements, an upper
/// bound for every op (each output element reads at most all of an input's elements per
/// input: conv, matmul, pools, resize) — is too high.
pub fn within_caps(graph: &Graph) -> Result<(), String> {
    if graph.node_count() > PIPELINE_MAX_NODES {
        return Err(format!("{} nodes", graph.node_count()));
    }
    for id in graph.node_ids() {
        let node = graph.node(id);
        let mut out_elems = 0u128;
        for o in &node.outputs {
            let n = numel(&o.ty.shape);
            if n > PIPELINE_MAX_ELEMENTS as u128 {
                return Err(format!("value {} has {n} elements", o.name));
            }
            out_elems += n;
        }
        let largest_input = node
            .inputs()
            .iter()
            .map(|&v| numel(&graph.value_type(v).shape))
            .max()
            .unwrap_or(1);
        let work = out_elems.saturating_mul(largest_input.max(1));
        if work > PIPELINE_MAX_WORK {
            return Err(format!(
                "node {} costs up to {work} element operations",
                node.name
            ));
        }
    }
    Ok(())
}

/// Small optimizer limits, so saturation cannot take long either.
pub fn fuzz_opt_options() -> kiln_opt::OptOptions {
    kiln_opt::OptOptions {
        verify: true,
        node_limit: 5_000,
        iter_limit: 8,
        time_limit: Duration::from_secs(2),
        rules_dir: None,
    }
}

/// ONNX bytes of a small model → import → `-O1` → run the float graph → quantize with two
/// seeded random calibration samples → run the quantized graph on the same input.
pub fn check_pipeline(data: &[u8]) -> Result<PipelineReached, PipelineStop> {
    let graph = kiln_onnx::import_bytes(data, None, &fuzz_import_options(16 << 20))
        .map_err(PipelineStop::Import)?;
    if let Err(e) = kiln_ir::verify(&graph) {
        panic!("the importer returned a graph that does not verify: {e}");
    }
    within_caps(&graph).map_err(PipelineStop::TooBig)?;
    let opt = fuzz_opt_options();
    let (optimized, _) = kiln_opt::run_pipeline(
        &graph,
        &kiln_opt::pipeline(kiln_opt::OptLevel::O1),
        &opt,
        &mut |_, _, _| {},
    )
    .map_err(PipelineStop::Optimize)?;
    within_caps(&optimized).map_err(PipelineStop::TooBig)?;

    let specs = kiln_quant::input_specs(&optimized);
    let inputs: Vec<Tensor> = if specs.iter().all(|s| s.dtype == DType::F32) {
        let set =
            kiln_quant::CalibrationSet::random(&specs, 1, 7).map_err(PipelineStop::Calibration)?;
        set.get(0).map_err(PipelineStop::Calibration)?
    } else {
        specs
            .iter()
            .map(|s| Tensor::zeros(s.dtype, s.shape.clone()).expect("shape within the caps"))
            .collect()
    };
    kiln_interp::run(&optimized, &inputs).map_err(PipelineStop::Interpret)?;

    let calibration = match kiln_quant::CalibrationSet::random(&specs, 2, 11) {
        Ok(set) => set,
        // Random calibration needs f32 inputs; other graphs stop after the float run.
        Err(_) => return Ok(PipelineReached::FloatOnly),
    };
    let config = kiln_quant::QuantizeConfig {
        optimize: false,
        opt,
        progress: kiln_quant::Progress::Hidden,
        ..kiln_quant::QuantizeConfig::default()
    };
    let quantized = match kiln_quant::quantize(&optimized, &calibration, &config) {
        Ok(q) => q,
        Err(e) => return Err(PipelineStop::Quantize(e)),
    };
    if let Err(e) = kiln_ir::verify(&quantized.graph) {
        panic!("the quantizer returned a graph that does not verify: {e}");
    }
    within_caps(&quantized.graph).map_err(PipelineStop::TooBig)?;
    kiln_interp::run(&quantized.graph, &inputs).map_err(PipelineStop::Interpret)?;
    Ok(PipelineReached::Quantized)
}
