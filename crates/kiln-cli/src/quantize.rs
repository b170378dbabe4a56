//! `kiln quantize` (calibrate a model, write it as ONNX QDQ or integer `.kir`, report the
//! per-layer accuracy) and the quantization options `kiln run --quantize` shares with it.

use crate::load::load_model;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use kiln_ir::{DType, Graph, Op, Quant, Tensor, TensorType};
use kiln_quant::{
    input_specs, ActivationType, CalibrationSet, ObserverKind, Preprocess, QuantScheme,
    QuantizeConfig, QuantizedModel,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Calibration data and quantization choices (shared by `kiln quantize` and
/// `kiln run --quantize`).
#[derive(clap::Args, Clone)]
pub struct QuantArgs {
    /// Calibration data: a directory of .npy files (one sample each; for several inputs one
    /// subdirectory per input, named after it), an .npz (arrays named after the inputs,
    /// samples stacked on axis 0), or a directory of images (needs --preprocess).
    #[arg(long, value_name = "PATH")]
    pub calibration: Option<PathBuf>,
    /// Calibrate on N samples of seeded standard-normal noise instead of data. Ranges from
    /// noise rarely match real inputs: for trying the pipeline, not for deployment.
    #[arg(
        long = "random-calibration",
        value_name = "N",
        conflicts_with = "calibration"
    )]
    pub random_calibration: Option<usize>,
    /// Seed of --random-calibration.
    #[arg(long, default_value_t = 0, requires = "random_calibration")]
    pub seed: u64,
    /// How activation ranges are calibrated: minmax, moving-average[=C], percentile[=P]
    /// (default 99.999), entropy (KL divergence) or mse.
    #[arg(long, default_value = "minmax", value_parser = parse_method)]
    pub method: ObserverKind,
    /// Activation type: u8 (asymmetric, onnxruntime's default) or i8 (symmetric, zero point
    /// 0). Weights are always i8 symmetric per output channel.
    #[arg(long, default_value = "u8", value_parser = parse_activations)]
    pub activations: ActivationType,
    /// Only quantize these op kinds (ONNX or kiln names: Conv,Gemm,MatMul,Add,...);
    /// default: every op kiln can quantize.
    #[arg(long = "quantize-ops", value_name = "OP,...")]
    pub quantize_ops: Option<String>,
    /// Keep these nodes (or the nodes producing these values) in float; names as after -O1.
    #[arg(long, value_name = "NODE,...", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Keep in float the layers where the SQNR first drops below DB decibels, re-measuring
    /// after each round.
    #[arg(long = "fallback-sqnr", value_name = "DB")]
    pub fallback_sqnr: Option<f64>,
    /// Keep in float the N layers that hurt the model's outputs most: each quantizable
    /// layer is quantized alone (everything else float) on the first --sensitivity-samples
    /// calibration samples and ranked by the outputs' SQNR. Costs one interpreter run per
    /// layer and sample. Combines with --fallback-sqnr, which then starts from the result.
    #[arg(long = "fallback-sensitivity", value_name = "N")]
    pub fallback_sensitivity: Option<usize>,
    /// Samples the --fallback-sensitivity analysis runs.
    #[arg(
        long = "sensitivity-samples",
        value_name = "N",
        default_value_t = kiln_quant::DEFAULT_SENSITIVITY_SAMPLES,
        requires = "fallback_sensitivity"
    )]
    pub sensitivity_samples: usize,
    /// Correct each quantized conv/gemm bias by the mean output error per channel measured
    /// on the calibration samples.
    #[arg(long = "bias-correction")]
    pub bias_correction: bool,
    /// Dynamic quantization, no calibration: MatMul/Gemm with constant weights get i8
    /// weights (symmetric, per output column) and u8 activations whose scale and zero point
    /// are computed from each input at run time (DynamicQuantizeLinear + MatMulInteger, as
    /// onnxruntime's and PyTorch's quantize_dynamic). Everything else stays float.
    #[arg(
        long,
        conflicts_with_all = ["calibration", "random_calibration", "fallback_sqnr",
                              "fallback_sensitivity", "bias_correction", "preprocess"]
    )]
    pub dynamic: bool,
    /// How images become input tensors, e.g.
    /// "resize=224,224 mean=0.485,0.456,0.406 std=0.229,0.224,0.225 layout=nchw"
    /// (keys: resize, mean, std, scale, layout, channels).
    #[arg(long, value_name = "SPEC", value_parser = parse_preprocess)]
    pub preprocess: Option<Preprocess>,
}

fn parse_method(s: &str) -> Result<ObserverKind, String> {
    s.parse::<ObserverKind>().map_err(|e| e.to_string())
}

fn parse_activations(s: &str) -> Result<ActivationType, String> {
    match s {
        "u8" => Ok(ActivationType::U8Asymmetric),
        "i8" => Ok(ActivationType::I8Symmetric),
        _ => Err(format!("'{s}': expected u8 or i8")),
    }
}

fn parse_preprocess(s: &str) -> Result<Preprocess, String> {
    s.parse::<Preprocess>().map_err(|e| e.to_string())
}

impl QuantArgs {
    /// The calibration set for `graph`: the --calibration path, or seeded noise when
    /// --random-calibration asks for it (with a warning on stderr).
    pub fn calibration_set(&self, graph: &Graph, model: &Path) -> Result<CalibrationSet> {
        let inputs = input_specs(graph);
        let set = match (&self.calibration, self.random_calibration) {
            (Some(path), _) => {
                if !path.exists() {
                    bail!(
                        "calibration data {} does not exist (expected a directory of .npy \
                         files or images, or an .npz)",
                        path.display()
                    );
                }
                CalibrationSet::open(path, &inputs, self.preprocess.as_ref()).with_context(
                    || {
                        format!(
                            "opening calibration data {} for {}",
                            path.display(),
                            model.display()
                        )
                    },
                )?
            }
            (None, Some(count)) => {
                if count == 0 {
                    bail!("--random-calibration needs at least one sample");
                }
                let set = CalibrationSet::random(&inputs, count, self.seed)
                    .with_context(|| format!("random calibration for {}", model.display()))?;
                eprintln!(
                    "warning: calibrating on {} — ranges from noise do not reflect real \
                     inputs; pass --calibration with representative data for a model you \
                     will deploy",
                    set.description()
                );
                set
            }
            (None, None) => bail!(
                "quantization needs calibration data: --calibration PATH (a directory of .npy \
                 files or images, or an .npz), or --random-calibration N to calibrate on noise"
            ),
        };
        if set.is_empty() {
            bail!(
                "the calibration data ({}) has no samples",
                set.description()
            );
        }
        Ok(set)
    }

    pub fn config(&self) -> Result<QuantizeConfig> {
        let quantize_ops = self
            .quantize_ops
            .as_deref()
            .map(QuantizeConfig::parse_ops)
            .transpose()?;
        Ok(QuantizeConfig {
            method: self.method.clone(),
            scheme: QuantScheme {
                activations: self.activations,
                ..QuantScheme::default()
            },
            quantize_ops,
            skip: self
                .skip
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            fallback_sqnr: self.fallback_sqnr,
            fallback_sensitivity: self.fallback_sensitivity,
            sensitivity_samples: self.sensitivity_samples,
            bias_correction: self.bias_correction,
            ..QuantizeConfig::default()
        })
    }

    /// `--dynamic`: the dynamically quantized graph (no calibration). Only matmul and gemm
    /// can be; `--quantize-ops` narrows that further.
    pub fn quantize_dynamic(
        &self,
        graph: &Graph,
        model: &Path,
    ) -> Result<kiln_quant::DynamicModel> {
        let config = self.config()?;
        let selects = |op: &str| matches!(op, "matmul" | "gemm") && config.selects(op);
        kiln_quant::quantize_dynamic(graph, &config.scheme, &selects, &config.skip)
            .with_context(|| format!("dynamically quantizing {}", model.display()))
    }

    /// The quantized graph `kiln run --quantize` executes: dynamic with `--dynamic`, else
    /// calibrated static quantization's integer graph.
    pub fn quantized_graph(&self, graph: &Graph, model: &Path) -> Result<Graph> {
        if self.dynamic {
            let m = self.quantize_dynamic(graph, model)?;
            for w in &m.warnings {
                eprintln!("warning: {w}");
            }
            eprintln!(
                "dynamic quantization: {} matmul/gemm quantized, {} left in float",
                m.quantized.len(),
                m.float.len()
            );
            Ok(m.graph)
        } else {
            Ok(self.quantize(graph, model)?.graph)
        }
    }

    /// Calibrate and quantize `graph` (loaded from `model`), saying on stderr where the
    /// data comes from.
    pub fn quantize(&self, graph: &Graph, model: &Path) -> Result<QuantizedModel> {
        if self.dynamic {
            bail!(
                "--dynamic is not available here: this command needs calibrated (static) \
                 quantization"
            );
        }
        let config = self.config()?;
        let data = self.calibration_set(graph, model)?;
        eprintln!(
            "calibrating {} on {} ({})",
            model.display(),
            data.description(),
            config.method
        );
        kiln_quant::quantize(graph, &data, &config)
            .with_context(|| format!("quantizing {}", model.display()))
    }
}

#[derive(clap::Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Where to write the quantized model; the extension picks the form: `.onnx` (standard
    /// QDQ: QuantizeLinear/DequantizeLinear around float ops, what onnxruntime runs) or
    /// `.kir` (kiln IR text of the integer graph: qconv, qmatmul, integer data movement).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// Print the per-layer accuracy table (SQNR, cosine, max error vs float), worst first.
    #[arg(long)]
    pub report: bool,
    /// Write the accuracy report, every node's decision and the fallback layers as JSON.
    #[arg(long = "report-json", value_name = "FILE")]
    pub report_json: Option<PathBuf>,
}

/// The file formats `kiln quantize` writes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum OutputFormat {
    Onnx,
    Kir,
}

fn output_format(path: &Path) -> Result<OutputFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("onnx") => Ok(OutputFormat::Onnx),
        Some("kir") => Ok(OutputFormat::Kir),
        _ => bail!(
            "cannot write '{}': the output needs the extension .onnx (QDQ ONNX) or .kir \
             (integer kiln IR)",
            path.display()
        ),
    }
}

/// Nodes of the integer graph by what they compute, for the summary line.
struct OpSummary {
    integer_compute: usize,
    quantize: usize,
    dequantize: usize,
}

fn summarize_ops(graph: &Graph) -> OpSummary {
    let mut s = OpSummary {
        integer_compute: 0,
        quantize: 0,
        dequantize: 0,
    };
    for id in graph.node_ids() {
        match graph.node(id).op {
            Op::QConv(_) | Op::QMatMul => s.integer_compute += 1,
            Op::Quantize => s.quantize += 1,
            Op::Dequantize => s.dequantize += 1,
            _ => {}
        }
    }
    s
}

/// `kiln quantize --dynamic`: no calibration, no accuracy report (there is no data to measure
/// on); the summary lists what was quantized and what stayed float.
fn quantize_dynamic(args: &QuantizeArgs, format: OutputFormat, graph: &Graph) -> Result<()> {
    let model_path = &args.model.model;
    if args.report || args.report_json.is_some() {
        bail!("--report and --report-json need calibration data, which --dynamic does not use");
    }
    let start = Instant::now();
    let model = args.quant.quantize_dynamic(graph, model_path)?;
    let bytes = match format {
        OutputFormat::Onnx => kiln_onnx::export(&model.graph)
            .with_context(|| format!("exporting the quantized {} as ONNX", model_path.display()))?,
        OutputFormat::Kir => kiln_ir::text::print_graph(&model.graph).into_bytes(),
    };
    std::fs::write(&args.output, bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    for w in &model.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "kiln quantize: {} → {} (dynamic: i8 weights per column, u8 activations quantized at \
         run time, {:.1} s)",
        model_path.display(),
        args.output.display(),
        start.elapsed().as_secs_f64()
    );
    println!(
        "  {} matmul/gemm quantized (DynamicQuantizeLinear + MatMulInteger), {} left in float",
        model.quantized.len(),
        model.float.len()
    );
    for (node, reason) in &model.float {
        println!("  float: {node} ({reason})");
    }
    if model.quantized.is_empty() {
        eprintln!(
            "warning: nothing was quantized: --dynamic quantizes MatMul/Gemm with a constant \
             2-D weight"
        );
    }
    Ok(())
}

pub fn quantize(args: QuantizeArgs) -> Result<()> {
    let format = output_format(&args.output)?;
    let model_path = &args.model.model;
    let graph = load_model(&args.model)?;
    if args.quant.dynamic {
        return quantize_dynamic(&args, format, &graph);
    }
    let start = Instant::now();
    let model = args.quant.quantize(&graph, model_path)?;
    let elapsed = start.elapsed();
    let bytes = match format {
        OutputFormat::Onnx => kiln_onnx::export(&model.qdq)
            .with_context(|| format!("exporting the quantized {} as ONNX", model_path.display()))?,
        OutputFormat::Kir => kiln_ir::text::print_graph(&model.graph).into_bytes(),
    };
    std::fs::write(&args.output, bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if let Some(path) = &args.report_json {
        std::fs::write(path, model.to_json())
            .with_context(|| format!("writing the report {}", path.display()))?;
    }

    for w in &model.warnings {
        eprintln!("warning: {w}");
    }
    let quantized = model
        .plan
        .nodes
        .iter()
        .filter(|n| matches!(n.decision, kiln_quant::Decision::Quantized { .. }))
        .count();
    let ops = summarize_ops(&model.graph);
    println!(
        "kiln quantize: {} → {} ({} form, {}, {} activations, {:.1} s)",
        model_path.display(),
        args.output.display(),
        match format {
            OutputFormat::Onnx => "QDQ ONNX",
            OutputFormat::Kir => "integer .kir",
        },
        args.quant.method,
        match args.quant.activations {
            ActivationType::U8Asymmetric => "u8",
            ActivationType::I8Symmetric => "i8",
        },
        elapsed.as_secs_f64()
    );
    println!(
        "  {quantized} of {} nodes quantized ({} integer conv/matmul), {} quantize and {} \
         dequantize boundaries (float islands between them), {} kept in float by fallback",
        model.plan.nodes.len(),
        ops.integer_compute,
        ops.quantize,
        ops.dequantize,
        model.fallback.len()
    );
    for f in &model.fallback {
        match f.criterion {
            kiln_quant::FallbackCriterion::Sensitivity => println!(
                "  fallback (sensitivity): {} — outputs at {:.2} dB with it alone quantized",
                f.node, f.sqnr_db
            ),
            kiln_quant::FallbackCriterion::Sqnr => println!(
                "  fallback (round {}): {} at {:.2} dB",
                f.round, f.node, f.sqnr_db
            ),
        }
    }
    for out in &model.report.outputs {
        println!(
            "  output {}: SQNR {} cosine {:.6} over {} sample(s)",
            out.value,
            out.sqnr_db
                .map_or_else(|| "exact".to_string(), |d| format!("{d:.2} dB")),
            out.cosine,
            model.report.samples
        );
    }
    if format == OutputFormat::Kir {
        let (count, bytes) = crate::opt::summarized_constants(&model.graph);
        if count > 0 {
            eprintln!(
                "warning: {count} constants ({}) are written to {} as summaries: the .kir file \
                 shows the integer graph but cannot run it; write .onnx to keep the weights",
                crate::info::human_bytes(bytes),
                args.output.display()
            );
        }
    }
    if args.report {
        println!();
        print!("{}", model.report.table(None));
    }
    Ok(())
}

/// A tensor's real values: integers carrying quantization parameters are dequantized
/// (`(q − zp)·scale`), everything else widened to f32.
pub fn real_values(t: &Tensor, ty: &TensorType) -> Vec<f32> {
    let values = t.to_f32_vec();
    match &ty.quant {
        Some(Quant::PerTensor { scale, zero_point }) if ty.dtype != DType::F32 => values
            .iter()
            .map(|&q| (q - *zero_point as f32) * scale)
            .collect(),
        Some(Quant::PerAxis {
            axis,
            scales,
            zero_points,
        }) if ty.dtype != DType::F32 => {
            let inner: usize = t.shape()[axis + 1..].iter().product();
            let channels = t.shape()[*axis];
            values
                .iter()
                .enumerate()
                .map(|(i, &q)| {
                    let c = (i / inner.max(1)) % channels.max(1);
                    (q - zero_points[c] as f32) * scales[c]
                })
                .collect()
        }
        _ => values,
    }
}

/// Cosine similarity and SQNR (dB; `None` when equal) of `approx` against `reference`.
pub fn cosine_and_sqnr(reference: &[f32], approx: &[f32]) -> (f64, Option<f64>) {
    let (mut dot, mut rr, mut aa, mut noise) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&r, &a) in reference.iter().zip(approx) {
        let (r, a) = (r as f64, a as f64);
        dot += r * a;
        rr += r * r;
        aa += a * a;
        noise += (r - a) * (r - a);
    }
    let cosine = if rr == 0.0 && aa == 0.0 {
        1.0
    } else {
        dot / (rr.sqrt() * aa.sqrt())
    };
    let sqnr = (noise > 0.0).then(|| 10.0 * (rr / noise).log10());
    (cosine, sqnr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_sqnr_by_hand() {
        // identical vectors: cosine 1 (to rounding of the square roots), no noise
        let (c, s) = cosine_and_sqnr(&[1.0, 2.0], &[1.0, 2.0]);
        assert!((c - 1.0).abs() < 1e-12 && s.is_none());
        // both all zeros: defined as cosine 1
        assert_eq!(cosine_and_sqnr(&[0.0], &[0.0]), (1.0, None));
        // reference (3,4): Σx² = 25; approx (3,3): noise 1 → SQNR 10·log10(25) ≈ 13.98 dB;
        // cosine (9+12)/(5·√18) = 21/21.2132 ≈ 0.98995
        let (c, s) = cosine_and_sqnr(&[3.0, 4.0], &[3.0, 3.0]);
        assert!((c - 21.0 / (5.0 * 18f64.sqrt())).abs() < 1e-12);
        assert!((s.unwrap() - 10.0 * 25f64.log10()).abs() < 1e-12);
    }

    #[test]
    fn quantized_values_are_dequantized() {
        let t = Tensor::new(vec![2], kiln_ir::TensorData::U8(vec![130, 126])).unwrap();
        let ty = TensorType {
            dtype: DType::U8,
            shape: vec![2],
            quant: Some(Quant::per_tensor(0.5, 128)),
        };
        // (130 − 128)·0.5 = 1, (126 − 128)·0.5 = −1
        assert_eq!(real_values(&t, &ty), [1.0, -1.0]);
    }

    #[test]
    fn option_syntax() {
        assert!(parse_activations("i8").is_ok());
        assert!(parse_activations("i16").unwrap_err().contains("u8 or i8"));
        assert!(parse_method("percentile=99.9").is_ok());
        assert!(parse_method("kl").is_err());
        assert!(output_format(Path::new("m.onnx")).is_ok());
        assert!(output_format(Path::new("m.txt"))
            .unwrap_err()
            .to_string()
            .contains(".onnx"));
    }
}
