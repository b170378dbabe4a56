//! Ahead-of-time objects (docs/aot.md) against the JIT and the interpreter, bit for bit:
//! each case (the demo model's residual block, quantized; realized SqueezeNet, quantized on
//! its calibration samples; PP-OCRv4 det at 64×64, quantized on crops of rendered pages; the
//! residual block also with i8 activations) is compiled with
//! `kiln_runtime::aot::compile_object` for x86_64-unknown-linux-gnu and for
//! aarch64-unknown-linux-gnu without features, with `+dotprod`, `+i8mm` and both, linked with
//! examples/aot/run_model.c, and run natively and under
//! `qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu`. Every output file must equal the JIT's
//! output bytes, and the objects of both ISAs must produce the same bytes. The int8 tensors
//! entering each Dequantize are added as graph outputs, so the integer kernels are also
//! compared bit for bit with the interpreter (the f32 islands after them are the
//! interpreter's arithmetic only up to rounding: docs/kernels.md). `nm` must show
//! `NAME_run` and `NAME_scratch_size` as the only global symbols, and
//! `aarch64-linux-gnu-objdump -d` the byte dot product each AArch64 variant must select
//! (`sdot`, `usdot` or neither, [`Variant::dot_u8`]) and not the other. `KILN_AOT_KEEP=1`
//! keeps the objects, headers and executables.
//!
//! Needs cc, aarch64-linux-gnu-gcc, aarch64-linux-gnu-objdump, qemu-aarch64 and nm (tools/test.sh installs them); when
//! one is missing the test prints why and passes, except under `CI=true`, where it fails.
//! SqueezeNet and PP-OCRv4 det need `$KILN_ASSETS` and run in release builds (tools/test.sh runs it), or in
//! debug with `KILN_AOT_DEBUG=1`.

use kiln_codegen::aot::AotTarget;
use kiln_codegen::QConvTuning;
use kiln_ir::{Graph, Op, Tensor};
use kiln_opt::{pipeline, run_pipeline, OptLevel, OptOptions};
use kiln_quant::{
    input_specs, ActivationType, CalibrationSet, Progress, QuantScheme, QuantizeConfig,
};
use kiln_runtime::aot::{compile_object, AotOptions};
use kiln_runtime::{Model, Options};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const X86: &str = "x86_64-unknown-linux-gnu";
const ARM: &str = "aarch64-unknown-linux-gnu";

/// The tools the test runs; `None` when all are present, else what is missing.
fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = [
        "cc",
        "aarch64-linux-gnu-gcc",
        "aarch64-linux-gnu-objdump",
        "qemu-aarch64",
        "nm",
        "make",
    ]
    .into_iter()
    .filter(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .map_or(true, |o| !o.status.success())
    })
    .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn run(cmd: &mut Command) -> Result<std::process::Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn optimized(graph: &Graph) -> Result<Graph, String> {
    let (graph, _) = run_pipeline(
        graph,
        &pipeline(OptLevel::O1),
        &OptOptions::default(),
        &mut |_, _, _| {},
    )
    .map_err(|e| format!("O1: {e}"))?;
    Ok(graph)
}

/// `graph` with the int8 input of every Dequantize added as a graph output.
fn with_integer_outputs(mut graph: Graph) -> Graph {
    let mut outputs = graph.outputs().to_vec();
    for id in graph.node_ids().collect::<Vec<_>>() {
        let node = graph.node(id);
        if matches!(node.op, Op::Dequantize) {
            if let Some(&x) = node.inputs().first() {
                if !matches!(graph.node(x.node).op, Op::Const(_)) && !outputs.contains(&x) {
                    outputs.push(x);
                }
            }
        }
    }
    graph.set_outputs(outputs);
    graph
}

/// One compiled-and-run configuration.
struct Variant {
    label: &'static str,
    triple: &'static str,
    features: &'static [&'static str],
    /// The AArch64 byte dot product the object must contain with u8 activations (none:
    /// neither `sdot` nor `usdot`), as `InnerProduct::select` picks it.
    dot_u8: Option<&'static str>,
    /// The same with i8 activations.
    dot_i8: Option<&'static str>,
}

const VARIANTS: &[Variant] = &[
    // +fma: the f32 kernels then fuse exactly as the JIT does on this (FMA) host and on
    // AArch64, so every output can be compared bit for bit
    Variant {
        label: "x86-64",
        triple: X86,
        features: &["+avx", "+avx2", "+fma"],
        dot_u8: None,
        dot_i8: None,
    },
    Variant {
        label: "aarch64",
        triple: ARM,
        features: &[],
        dot_u8: None,
        dot_i8: None,
    },
    // u8 activations shifted to i8 (bias folds 128·Σw)
    Variant {
        label: "aarch64+dotprod",
        triple: ARM,
        features: &["+dotprod"],
        dot_u8: Some("sdot"),
        dot_i8: Some("sdot"),
    },
    // i8 activations shifted to u8
    Variant {
        label: "aarch64+i8mm",
        triple: ARM,
        features: &["+i8mm"],
        dot_u8: Some("usdot"),
        dot_i8: Some("usdot"),
    },
    // each activation type unshifted
    Variant {
        label: "aarch64+dotprod+i8mm",
        triple: ARM,
        features: &["+dotprod", "+i8mm"],
        dot_u8: Some("usdot"),
        dot_i8: Some("sdot"),
    },
];

/// How many instructions of each mnemonic in `mnemonics` the disassembly of `object` has.
fn count_mnemonics(object: &Path, mnemonics: &[&str]) -> Result<Vec<usize>, String> {
    let dump = run(Command::new("aarch64-linux-gnu-objdump")
        .arg("-d")
        .arg(object))?;
    let text = String::from_utf8_lossy(&dump.stdout);
    // an instruction line is `addr:\tencoding \tmnemonic\toperands`; the hex encoding
    // never equals a mnemonic
    Ok(mnemonics
        .iter()
        .map(|m| {
            text.lines()
                .filter(|l| l.split_whitespace().nth(2) == Some(m))
                .count()
        })
        .collect())
}

/// Compile, link and run `graph` on `inputs` for every variant; compare with the JIT
/// (all outputs) and the interpreter (integer outputs).
fn check_case(
    name: &str,
    i8_activations: bool,
    graph: &Graph,
    inputs: &[Tensor],
    work: &Path,
) -> Result<(), String> {
    let graph = with_integer_outputs(graph.clone());
    let jit = Model::from_graph(graph.clone())
        .compile(&Options::default())
        .map_err(|e| format!("JIT compile: {e}"))?
        .run(inputs)
        .map_err(|e| format!("JIT run: {e}"))?;
    let interp = kiln_interp::run(&graph, inputs).map_err(|e| format!("interpreter: {e}"))?;
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    let mut input_files = Vec::new();
    for (i, t) in inputs.iter().enumerate() {
        let path = dir.join(format!("input_{i}.npy"));
        kiln_ir::npy::write_npy_file(&path, t).map_err(|e| format!("{path:?}: {e}"))?;
        input_files.push(path);
    }
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/aot/run_model.c");
    let mut first_isa_outputs: Option<Vec<Tensor>> = None;
    for v in VARIANTS {
        let features: Vec<String> = v.features.iter().map(|f| f.to_string()).collect();
        let target = AotTarget::new(v.triple, &features).map_err(|e| e.to_string())?;
        let symbol = format!("{name}_{}", v.label.replace(['-', '+'], "_"));
        let started = Instant::now();
        let object = compile_object(
            &graph,
            &AotOptions {
                target,
                name: symbol.clone(),
                qconv: QConvTuning::default(),
            },
        )
        .map_err(|e| format!("{}: compile: {e}", v.label))?;
        let compile_time = started.elapsed();
        let o = dir.join(format!("{symbol}.o"));
        let h = dir.join(format!("{symbol}.h"));
        std::fs::write(&o, &object.object).map_err(|e| format!("{o:?}: {e}"))?;
        std::fs::write(&h, &object.header).map_err(|e| format!("{h:?}: {e}"))?;
        // only the two entry points are global
        let nm = run(Command::new("nm").arg("-g").arg("--defined-only").arg(&o))?;
        let mut globals: Vec<String> = String::from_utf8_lossy(&nm.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        globals.sort();
        let expected = vec![format!("{symbol}_run"), format!("{symbol}_scratch_size")];
        if globals != expected {
            return Err(format!("{}: nm shows globals {globals:?}", v.label));
        }
        let mut dot_note = String::new();
        if v.triple == ARM {
            let want = if i8_activations { v.dot_i8 } else { v.dot_u8 };
            let names = ["sdot", "usdot"];
            let counts = count_mnemonics(&o, &names)?;
            for (name, &count) in names.iter().zip(&counts) {
                if (want == Some(*name)) != (count > 0) {
                    return Err(format!(
                        "{}: {count} `{name}` in the object, expected {}",
                        v.label,
                        if want == Some(*name) { "some" } else { "none" }
                    ));
                }
            }
            dot_note = format!(", {} sdot, {} usdot", counts[0], counts[1]);
        }
        let exe = dir.join(format!("run_{symbol}"));
        let cc = if v.triple == ARM {
            "aarch64-linux-gnu-gcc"
        } else {
            "cc"
        };
        run(Command::new(cc)
            .args(["-O2", "-std=c11", "-Wall", "-Werror"])
            .arg(format!("-DKILN_MODEL={symbol}"))
            .arg("-include")
            .arg(&h)
            .arg(&harness)
            .arg(&o)
            .arg("-o")
            .arg(&exe))?;
        let out_dir = dir.join(format!("out_{symbol}"));
        std::fs::create_dir_all(&out_dir).map_err(|e| format!("{out_dir:?}: {e}"))?;
        let mut cmd = if v.triple == ARM {
            let mut c = Command::new("qemu-aarch64");
            c.args(["-cpu", "max", "-L", "/usr/aarch64-linux-gnu"])
                .arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let started_run = Instant::now();
        run(cmd.args(&input_files).arg(&out_dir))?;
        let run_time = started_run.elapsed();
        let mut outputs = Vec::new();
        for k in 0..jit.len() {
            let path = out_dir.join(format!("output_{k}.npy"));
            outputs.push(kiln_ir::npy::read_npy_file(&path).map_err(|e| format!("{path:?}: {e}"))?);
        }
        for (k, ((got, want), reference)) in outputs.iter().zip(&jit).zip(&interp).enumerate() {
            if got.to_le_bytes() != want.to_le_bytes() || got.shape() != want.shape() {
                return Err(format!("{}: output {k} differs from the JIT's", v.label));
            }
            let integer = !matches!(got.dtype(), kiln_ir::DType::F32 | kiln_ir::DType::F16);
            if integer && got.to_le_bytes() != reference.to_le_bytes() {
                return Err(format!(
                    "{}: int8 output {k} differs from the interpreter's",
                    v.label
                ));
            }
        }
        match &first_isa_outputs {
            None => first_isa_outputs = Some(outputs),
            Some(first) => {
                if first
                    .iter()
                    .zip(&outputs)
                    .any(|(a, b)| a.to_le_bytes() != b.to_le_bytes())
                {
                    return Err(format!(
                        "{}: bytes differ from {}",
                        v.label, VARIANTS[0].label
                    ));
                }
            }
        }
        println!(
            "aot {name} {:<20} object {:>9} bytes ({} functions, {} code, {} data), scratch {} \
             bytes{}, compile {:.2?}, run {:.2?}{}: {} outputs equal the JIT's bit for bit",
            v.label,
            object.object.len(),
            object.stats.functions,
            object.stats.code_bytes,
            object.stats.data_bytes,
            object.stats.scratch_bytes,
            dot_note,
            compile_time,
            run_time,
            if v.triple == ARM { " (qemu)" } else { "" },
            jit.len()
        );
    }
    Ok(())
}

/// The demo model (a conv stem, a residual block, a classifier head), quantized on seeded
/// noise with `activations`.
fn residual_block(activations: ActivationType) -> Result<(Graph, Vec<Tensor>), String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo.onnx");
    let graph = kiln_onnx::import_file(&path, &Default::default()).map_err(|e| e.to_string())?;
    let data = CalibrationSet::random(&input_specs(&graph), 4, 7).map_err(|e| e.to_string())?;
    let config = QuantizeConfig {
        eval_samples: Some(1),
        progress: Progress::Hidden,
        scheme: QuantScheme {
            activations,
            ..QuantScheme::default()
        },
        ..QuantizeConfig::default()
    };
    let quantized = kiln_quant::quantize(&graph, &data, &config).map_err(|e| e.to_string())?;
    let input = data.get(0).map_err(|e| e.to_string())?;
    Ok((optimized(&quantized.graph)?, input))
}

fn squeezenet(assets: &Path) -> Result<(Graph, Vec<Tensor>), String> {
    let models = assets.join("models");
    let graph = kiln_onnx::import_file(&models.join("squeezenet.onnx"), &Default::default())
        .map_err(|e| e.to_string())?;
    let calibration = assets.join("quant/calib/squeezenet");
    let data = CalibrationSet::open(&calibration, &input_specs(&graph), None)
        .map_err(|e| format!("{calibration:?}: {e}"))?;
    let config = QuantizeConfig {
        eval_samples: Some(1),
        progress: Progress::Hidden,
        ..QuantizeConfig::default()
    };
    let quantized = kiln_quant::quantize(&graph, &data, &config).map_err(|e| e.to_string())?;
    let input = kiln_ir::npy::read_npy_file(models.join("squeezenet.input_0.npy"))
        .map_err(|e| e.to_string())?;
    Ok((optimized(&quantized.graph)?, vec![input]))
}

/// Rows 96..160 and columns 64..128 of a rendered page `[1, 3, 320, 320]` (lines of text).
fn page_crop(path: &Path) -> Result<Tensor, String> {
    const SIDE: usize = PPOCR_SIDE;
    let page = kiln_ir::npy::read_npy_file(path).map_err(|e| format!("{path:?}: {e}"))?;
    let (Some(values), [1, 3, 320, 320]) = (page.as_f32(), page.shape()) else {
        return Err(format!(
            "{path:?}: expected f32[1,3,320,320], got {:?}",
            page.shape()
        ));
    };
    let mut crop = Vec::with_capacity(3 * SIDE * SIDE);
    for c in 0..3 {
        for y in 96..96 + SIDE {
            let row = (c * 320 + y) * 320 + 64;
            crop.extend_from_slice(&values[row..row + SIDE]);
        }
    }
    Tensor::from_f32(vec![1, 3, SIDE, SIDE], crop).map_err(|e| e.to_string())
}

/// Side of the PP-OCRv4 det case's input: small, so that four AArch64 variants run under
/// qemu in seconds, and a multiple of 32 (the detector downsamples five times).
const PPOCR_SIDE: usize = 64;

/// PP-OCRv4 det at 64×64, quantized (MinMax) on crops of 8 rendered calibration pages and
/// run on the same crop of an evaluation page. Covers what the other cases don't: depthwise
/// and 5×5 convs, hard_swish/hard_sigmoid islands, squeeze-excite muls, nearest Resize,
/// f32 ConvTranspose with fused relu and sigmoid.
fn ppocr_det(assets: &Path, work: &Path) -> Result<(Graph, Vec<Tensor>), String> {
    let model = assets.join("models/ppocrv4_det.onnx");
    let options = kiln_onnx::ImportOptions {
        input_shapes: [("x".to_string(), vec![1, 3, PPOCR_SIDE, PPOCR_SIDE])].into(),
        ..Default::default()
    };
    let graph = kiln_onnx::import_file(&model, &options).map_err(|e| e.to_string())?;
    let calibration = work.join("ppocr_calibration");
    std::fs::create_dir_all(&calibration).map_err(|e| format!("{calibration:?}: {e}"))?;
    let pages = assets.join("quant/pages");
    for k in 0..8 {
        let crop = page_crop(&pages.join(format!("calib/{k:04}.npy")))?;
        let path = calibration.join(format!("{k:04}.npy"));
        kiln_ir::npy::write_npy_file(&path, &crop).map_err(|e| format!("{path:?}: {e}"))?;
    }
    let data = CalibrationSet::open(&calibration, &input_specs(&graph), None)
        .map_err(|e| format!("{calibration:?}: {e}"))?;
    let config = QuantizeConfig {
        eval_samples: Some(1),
        progress: Progress::Hidden,
        ..QuantizeConfig::default()
    };
    let quantized = kiln_quant::quantize(&graph, &data, &config).map_err(|e| e.to_string())?;
    let input = page_crop(&pages.join("eval/0000.npy"))?;
    Ok((optimized(&quantized.graph)?, vec![input]))
}

/// examples/aot/Makefile as a user runs it (`make check`, its own copy in `work`) on the
/// demo model with a seeded input: builds every variant with the `kiln` binary, runs them
/// (AArch64 under qemu) and compares their outputs byte for byte.
fn makefile_example(work: &Path) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = work.join("makefile");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{dir:?}: {e}"))?;
    for file in ["Makefile", "run_model.c"] {
        std::fs::copy(root.join("examples/aot").join(file), dir.join(file))
            .map_err(|e| format!("examples/aot/{file}: {e}"))?;
    }
    let model = root.join("crates/kiln-cli/assets/demo.onnx");
    let graph = kiln_onnx::import_file(&model, &Default::default()).map_err(|e| e.to_string())?;
    let specs = input_specs(&graph);
    let input = CalibrationSet::random(&specs, 1, 3)
        .and_then(|set| set.get(0))
        .map_err(|e| e.to_string())?;
    kiln_ir::npy::write_npy_file(dir.join("input.npy"), &input[0]).map_err(|e| e.to_string())?;
    let out = run(Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(&dir)
        .arg("check")
        .arg(format!("KILN={}", env!("CARGO_BIN_EXE_kiln")))
        .arg(format!("MODEL={}", model.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().last().unwrap_or_default();
    if summary != "all 4 variants wrote identical outputs" {
        return Err(format!("make check ended with {summary:?}"));
    }
    println!("aot examples/aot/Makefile: make check: {summary}");
    Ok(())
}

fn main() -> ExitCode {
    if let Some(missing) = missing_tools() {
        if std::env::var("CI").as_deref() == Ok("true") {
            eprintln!("aot: FAILED: missing {missing} (tools/test.sh installs them)");
            return ExitCode::FAILURE;
        }
        println!(
            "aot: skipped: missing {missing} (apt-get install gcc-aarch64-linux-gnu qemu-user)"
        );
        return ExitCode::SUCCESS;
    }
    let work: PathBuf = std::env::temp_dir().join(format!("kiln-aot-{}", std::process::id()));
    let mut failures = Vec::new();
    // (name, i8 activations, the case)
    type Case = (&'static str, bool, Result<(Graph, Vec<Tensor>), String>);
    let mut cases: Vec<Case> = vec![
        (
            "residual",
            false,
            residual_block(ActivationType::U8Asymmetric),
        ),
        (
            "residual_i8",
            true,
            residual_block(ActivationType::I8Symmetric),
        ),
    ];
    match std::env::var_os("KILN_ASSETS") {
        Some(_) if cfg!(debug_assertions) && std::env::var_os("KILN_AOT_DEBUG").is_none() => {
            println!(
                "aot: squeezenet and ppocr_det run in release builds (tools/test.sh; \
                 KILN_AOT_DEBUG=1 in debug)"
            )
        }
        Some(assets) => {
            let assets = Path::new(&assets);
            cases.push(("squeezenet", false, squeezenet(assets)));
            cases.push(("ppocr_det", false, ppocr_det(assets, &work)));
        }
        None => println!("aot: KILN_ASSETS unset: squeezenet and ppocr_det skipped"),
    }
    for (name, i8_activations, case) in cases {
        let result = case
            .and_then(|(graph, inputs)| check_case(name, i8_activations, &graph, &inputs, &work));
        if let Err(e) = result {
            eprintln!("aot {name}: FAILED: {e}");
            failures.push(name);
        }
    }
    if let Err(e) = makefile_example(&work) {
        eprintln!("aot examples/aot/Makefile: FAILED: {e}");
        failures.push("makefile");
    }
    if !failures.is_empty() {
        eprintln!(
            "aot: {} case(s) failed: {failures:?} (files in {work:?})",
            failures.len()
        );
        return ExitCode::FAILURE;
    }
    if std::env::var_os("KILN_AOT_KEEP").is_some() {
        println!("aot: all cases passed; files kept in {work:?}");
    } else {
        let _ = std::fs::remove_dir_all(&work);
        println!("aot: all cases passed");
    }
    ExitCode::SUCCESS
}
