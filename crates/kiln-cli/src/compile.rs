//! `kiln compile`: a model (float with calibration options, QDQ ONNX, or integer `.kir`)
//! compiled ahead of time to a relocatable object for x86-64 or AArch64 plus a C header
//! (docs/aot.md).

use crate::jit::{self, StageTimes};
use crate::load::load_model;
use crate::quantize::QuantArgs;
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use kiln_codegen::aot::AotTarget;
use kiln_codegen::QConvTuning;
use kiln_runtime::aot::{compile_object, AotOptions};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct CompileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Target triple: x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu.
    #[arg(long, value_name = "TRIPLE")]
    pub target: String,
    /// CPU features beyond the baseline (x86-64: SSE4.2; AArch64: NEON), comma-separated
    /// with a sign, e.g. `+dotprod,+i8mm` (AArch64: the int8 inner product becomes
    /// sdot / usdot) or `+avx2,+fma,+avxvnni` (x86-64).
    #[arg(long = "cpu-features", value_name = "+F,...", value_delimiter = ',')]
    pub cpu_features: Vec<String>,
    /// Prefix of the exported C symbols (NAME_run, NAME_scratch_size) and header macros.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Where to write the object file.
    #[arg(short = 'o', long = "output", value_name = "NAME.o")]
    pub output: PathBuf,
    /// Where to write the C header (default: the object's path with .h).
    #[arg(long, value_name = "NAME.h")]
    pub header: Option<PathBuf>,
    /// Quantization of a float model (as `kiln quantize`): give --calibration or
    /// --random-calibration to compile the int8 graph; without them the model is compiled
    /// as it is (float, QDQ ONNX or integer .kir).
    #[command(flatten)]
    pub quant: QuantArgs,
}

pub fn compile(args: CompileArgs) -> Result<()> {
    let path = &args.model.model;
    let started = Instant::now();
    let target = AotTarget::new(&args.target, &args.cpu_features).with_context(|| {
        format!(
            "--target {} --cpu-features {:?}",
            args.target, args.cpu_features
        )
    })?;
    let graph = load_model(&args.model)?;
    let quantize = args.quant.calibration.is_some() || args.quant.random_calibration.is_some();
    let graph = if quantize {
        args.quant.quantize(&graph, path)?.graph
    } else {
        graph
    };
    let mut times = StageTimes::default();
    let graph = jit::prepare(&graph, path, &mut times)?;
    let options = AotOptions {
        target,
        name: args.name.clone(),
        qconv: QConvTuning::default(),
    };
    let codegen_start = Instant::now();
    let object = compile_object(&graph, &options).with_context(|| {
        format!(
            "{}: compiling for {}{}",
            path.display(),
            args.target,
            if args.cpu_features.is_empty() {
                String::new()
            } else {
                format!(" ({})", args.cpu_features.join(","))
            }
        )
    })?;
    let codegen = codegen_start.elapsed();
    let header_path = args
        .header
        .clone()
        .unwrap_or_else(|| args.output.with_extension("h"));
    if header_path == args.output {
        bail!(
            "--header and -o name the same file {}",
            header_path.display()
        );
    }
    std::fs::write(&args.output, &object.object)
        .with_context(|| format!("writing {}", args.output.display()))?;
    std::fs::write(&header_path, &object.header)
        .with_context(|| format!("writing {}", header_path.display()))?;
    eprintln!(
        "kiln compile: {} → {} ({} bytes: {} functions, {} bytes of code, {} bytes of data) \
         and {}; {} kernel calls, scratch {} bytes; codegen {:.1} ms, total {:.1} s",
        path.display(),
        args.output.display(),
        object.object.len(),
        object.stats.functions,
        object.stats.code_bytes,
        object.stats.data_bytes,
        header_path.display(),
        object.schedule.len(),
        object.stats.scratch_bytes,
        codegen.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
