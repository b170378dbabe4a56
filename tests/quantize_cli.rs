//! End-to-end tests of `kiln quantize` and `kiln run --quantize` on the embedded demo model:
//! help texts, the QDQ ONNX it writes (read back by kiln's importer and, with `$KILN_PYTHON`,
//! run by onnxruntime), the accuracy report, and the errors for bad calibration data.

use kiln_ir::{DType, Generator, Graph, Op, Quant, Tensor};
use kiln_onnx::ImportOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::cli::{repo_root, s, stderr_of_failure, succeed, temp_dir};

const DEMO: &str = "crates/kiln-cli/assets/demo.onnx";

fn normal(seed: u64, shape: &[usize]) -> Tensor {
    Generator::Normal {
        seed,
        mean: 0.0,
        std: 1.0,
    }
    .generate(DType::F32, shape)
    .unwrap()
}

/// A calibration directory of `count` seeded standard-normal 1×3×32×32 samples (the demo
/// model's input), one .npy each.
fn calibration_dir(dir: &Path, count: u64) -> PathBuf {
    let cal = dir.join("calibration");
    std::fs::create_dir_all(&cal).unwrap();
    for i in 0..count {
        kiln_ir::npy::write_npy_file(
            cal.join(format!("sample{i}.npy")),
            &normal(100 + i, &[1, 3, 32, 32]),
        )
        .unwrap();
    }
    cal
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

fn count_ops(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.node_ids().filter(|&id| pred(&g.node(id).op)).count()
}

#[test]
fn help_texts() {
    let (top, _) = succeed(&["--help"]);
    assert!(top.contains("quantize"), "{top}");
    let (help, _) = succeed(&["quantize", "--help"]);
    for flag in [
        "--calibration",
        "--method",
        "--activations",
        "--quantize-ops",
        "--skip",
        "--report",
        "--report-json",
        "--fallback-sqnr",
        "--fallback-sensitivity",
        "--sensitivity-samples",
        "--dynamic",
        "--bias-correction",
        "--preprocess",
        "--random-calibration",
        "--seed",
        "--input-shape",
        "--output",
    ] {
        assert!(help.contains(flag), "quantize --help lists {flag}: {help}");
    }
    let (run_help, _) = succeed(&["run", "--help"]);
    assert!(
        run_help.contains("--quantize") && run_help.contains("--calibration"),
        "{run_help}"
    );
}

/// Quantize the demo model with 8 seeded samples to QDQ ONNX; read it back; compare kiln's
/// interpreter on it with the float model on an input outside the calibration set; and run
/// the same model through `kiln run --quantize`, which must agree with the QDQ file.
#[test]
fn quantize_demo_to_qdq_onnx() {
    let dir = temp_dir("qdq");
    let cal = calibration_dir(&dir, 8);
    let out = dir.join("demo.int8.onnx");
    let report_json = dir.join("report.json");
    let (stdout, _) = succeed(&[
        "quantize",
        DEMO,
        "--calibration",
        s(&cal),
        "-o",
        s(&out),
        "--report",
        "--report-json",
        s(&report_json),
    ]);
    assert!(stdout.contains("nodes quantized"), "{stdout}");
    // --report: the per-layer table, worst first, naming the demo's layers
    assert!(stdout.contains("value (worst first)"), "{stdout}");
    assert!(
        stdout.contains("stem.relu") && stdout.contains("logits"),
        "{stdout}"
    );

    // --report-json: valid JSON with one entry per compared value
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_json).unwrap()).unwrap();
    let layers = json["accuracy"]["layers"].as_array().expect("layers array");
    assert!(layers.len() >= 5, "{json}");
    for layer in layers {
        assert!(
            layer["value"].is_string() && layer["cosine"].is_number(),
            "{layer}"
        );
    }
    assert_eq!(json["accuracy"]["samples"], 8);
    assert!(json["nodes"].as_array().is_some_and(|n| !n.is_empty()));

    // The file is standard QDQ: QuantizeLinear/DequantizeLinear around float ops.
    let qdq = kiln_onnx::import_file(&repo_root().join(&out), &ImportOptions::default()).unwrap();
    assert!(count_ops(&qdq, |op| matches!(op, Op::Quantize)) > 0);
    assert!(count_ops(&qdq, |op| matches!(op, Op::Dequantize)) > 0);

    let float = kiln_onnx::import_file(&repo_root().join(DEMO), &ImportOptions::default()).unwrap();
    let x = normal(7, &[1, 3, 32, 32]);
    let float_probs = kiln_interp::run(&float, std::slice::from_ref(&x)).unwrap();
    let quant_probs = kiln_interp::run(&qdq, std::slice::from_ref(&x)).unwrap();
    let c = cosine(&float_probs[0].to_f32_vec(), &quant_probs[0].to_f32_vec());
    // Measured: cosine 0.999999 (output SQNR ≈ 55 dB). For noise uncorrelated with the
    // signal, 1 − cos ≈ 1 / (2·SNR), so 0.999 still allows an SQNR near 27 dB — far below
    // what 8 bits give on a five-layer net — while a wrong scale, zero point or weight axis
    // drops the cosine well under 0.99.
    assert!(c > 0.999, "cosine of the quantized softmax vs float: {c}");

    // `kiln run --quantize` runs the integer graph (qconv, ...) and compares with float.
    let x_path = dir.join("x.npy");
    kiln_ir::npy::write_npy_file(&x_path, &x).unwrap();
    let run_dir = dir.join("run");
    let (stdout, _) = succeed(&[
        "run",
        DEMO,
        "--input",
        &format!("input={}", x_path.display()),
        "--output-dir",
        s(&run_dir),
        "--quantize",
        "--calibration",
        s(&cal),
    ]);
    assert!(stdout.contains("probs vs float: cosine"), "{stdout}");
    assert!(stdout.contains("quantized graph"), "{stdout}");
    let integer_probs = kiln_ir::npy::read_npy_file(run_dir.join("probs.npy")).unwrap();
    // The integer graph and the QDQ graph it was converted from compute the same integers
    // (the conversion preserves the arithmetic; docs/quantization.md), so their softmax
    // outputs agree to f32 rounding.
    let (a, b) = (integer_probs.to_f32_vec(), quant_probs[0].to_f32_vec());
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(max_diff <= 1e-6, "integer graph vs QDQ graph: {max_diff}");

    if let Some(python) = std::env::var_os("KILN_PYTHON").filter(|p| !p.is_empty()) {
        onnxruntime_agrees(Path::new(&python), &repo_root().join(&out), &qdq, &dir, &x);
    }
}

/// onnxruntime on the QDQ file, both as written (graph optimizations off: fake quantization
/// in f32, like kiln's interpreter) and with its default optimizations (Q/DQ pairs fused into
/// QLinearConv/QLinearMatMul: integer kernels).
const ORT_SCRIPT: &str = r#"
import sys, onnx, numpy as np, onnxruntime as ort
model_path, x_path, out_dir = sys.argv[1:4]
m = onnx.load(model_path)
onnx.checker.check_model(m)
print("opset", max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")))
x = np.load(x_path)
for level, tag in [(ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "plain"),
                   (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "fused")]:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    np.save(f"{out_dir}/ort_{tag}.npy", sess.run(None, {sess.get_inputs()[0].name: x})[0])
"#;

fn onnxruntime_agrees(python: &Path, model: &Path, qdq: &Graph, dir: &Path, x: &Tensor) {
    let x_path = dir.join("x.npy");
    kiln_ir::npy::write_npy_file(&x_path, x).unwrap();
    let out = Command::new(python)
        .args(["-c", ORT_SCRIPT])
        .arg(model)
        .arg(&x_path)
        .arg(dir)
        .output()
        .expect("KILN_PYTHON runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "onnxruntime: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opset: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("opset "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the script prints the opset");
    assert!(
        opset >= 13,
        "per-axis QuantizeLinear needs opset 13, got {opset}"
    );

    let kiln_probs = kiln_interp::run(qdq, std::slice::from_ref(x)).unwrap()[0].to_f32_vec();
    // The output is a float softmax of dequantized logits. Both runtimes compute the same
    // integers unless an f32 rounding difference moves a value across a rounding boundary:
    // one LSB (scale s) on logit i. With p = softmax(z), ∂p_j/∂z_i = p_j(δ_ij − p_i), so
    // moving every logit by at most s moves p_j by at most s·Σ_i |p_j(δ_ij − p_i)| =
    // 2·s·p_j(1 − p_j) ≤ s/2: "within 1 LSB of the logits" is |Δp| ≤ s/2 per element.
    let logit_scale = softmax_input_scale(qdq);
    let tolerance = logit_scale / 2.0;
    for tag in ["plain", "fused"] {
        let ort = kiln_ir::npy::read_npy_file(dir.join(format!("ort_{tag}.npy"))).unwrap();
        let ort = ort.to_f32_vec();
        assert_eq!(ort.len(), kiln_probs.len());
        let max_diff = ort
            .iter()
            .zip(&kiln_probs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            max_diff <= tolerance,
            "onnxruntime ({tag}) vs kiln on the QDQ model: {max_diff} > {tolerance} \
             (half the logits' scale {logit_scale})"
        );
    }
}

/// The scale of the quantized logits the demo's softmax reads through a dequantize.
fn softmax_input_scale(g: &Graph) -> f32 {
    let softmax = g
        .node_ids()
        .find(|&id| matches!(g.node(id).op, Op::Softmax { .. }))
        .expect("the demo ends in a softmax");
    let logits = g.node(softmax).inputs()[0];
    let dq = g.node(logits.node);
    assert!(
        matches!(dq.op, Op::Dequantize),
        "the softmax reads dequantized logits"
    );
    match g.value_type(dq.inputs()[0]).quant {
        Some(Quant::PerTensor { scale, .. }) => scale,
        ref other => panic!("logits quantized per tensor, got {other:?}"),
    }
}

/// `--fallback-sensitivity N`: every quantized layer is measured alone, the JSON report holds
/// the ranking (most harmful first), and exactly the N worst stay in float — the summary and
/// the report's decisions agree with the ranking.
#[test]
fn fallback_by_measured_sensitivity() {
    let dir = temp_dir("sensitivity");
    let cal = calibration_dir(&dir, 3);
    let out = dir.join("demo.int8.onnx");
    let report_json = dir.join("report.json");
    let (stdout, _) = succeed(&[
        "quantize",
        DEMO,
        "--calibration",
        s(&cal),
        "-o",
        s(&out),
        "--fallback-sensitivity",
        "2",
        "--sensitivity-samples",
        "2",
        "--report-json",
        s(&report_json),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_json).unwrap()).unwrap();
    let ranking = json["sensitivity"].as_array().unwrap();
    assert!(ranking.len() > 2, "{ranking:?}");
    let sqnr = |v: &serde_json::Value| v["output_sqnr_db"].as_f64().unwrap_or(f64::INFINITY);
    assert!(
        ranking.windows(2).all(|w| sqnr(&w[0]) <= sqnr(&w[1])),
        "most harmful first: {ranking:?}"
    );
    let fallback = json["fallback"].as_array().unwrap();
    assert_eq!(fallback.len(), 2, "{fallback:?}");
    for (f, r) in fallback.iter().zip(ranking) {
        assert_eq!(f["node"], r["node"]);
        assert_eq!(f["criterion"], "sensitivity");
        let node = f["node"].as_str().unwrap();
        assert!(
            stdout.contains(&format!("fallback (sensitivity): {node}")),
            "{stdout}"
        );
        let decision = json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == node)
            .unwrap();
        assert_eq!(decision["decision"]["kind"], "float", "{decision}");
    }
    // the third-ranked layer stays quantized
    let third = ranking[2]["node"].as_str().unwrap();
    let decision = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == third)
        .unwrap();
    assert_eq!(decision["decision"]["kind"], "quantized", "{decision}");
    assert!(stdout.contains("2 kept in float by fallback"), "{stdout}");
}

/// A two-layer MLP (matmul + bias + relu, then a transB gemm with bias), for `--dynamic`.
const MLP: &str = "graph @mlp(%x: f32[4,16]) -> (f32[4,8]) {
  %w1 = const @c0 : f32[16,32] = normal(seed=11, mean=0.0, std=0.25)
  %m = matmul(%x, %w1) : f32[4,32]
  %b1 = const @c1 : f32[32] = normal(seed=12, mean=0.0, std=0.1)
  %a = add(%m, %b1) : f32[4,32]
  %h = relu(%a) : f32[4,32]
  %w2 = const @c2 : f32[8,32] = normal(seed=13, mean=0.0, std=0.25)
  %b2 = const @c3 : f32[8] = normal(seed=14, mean=0.0, std=0.1)
  %y = gemm(%h, %w2, %b2) {alpha=1.0, beta=1.0, trans_a=false, trans_b=true} : f32[4,8]
  return %y
}";

/// onnxruntime on kiln's dynamic model (optimizations off and on) and on the model
/// onnxruntime's own `quantize_dynamic` (per-channel i8 weights) makes from the float one.
const ORT_DYNAMIC_SCRIPT: &str = r#"
import sys, numpy as np, onnxruntime as ort
from onnxruntime.quantization import quantize_dynamic, QuantType
float_path, kiln_path, x_path, out_dir = sys.argv[1:5]
ort_path = f"{out_dir}/ort_dynamic.onnx"
quantize_dynamic(float_path, ort_path, per_channel=True, weight_type=QuantType.QInt8)
x = np.load(x_path)
for path, level, tag in [
        (kiln_path, ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "kiln_plain"),
        (kiln_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "kiln_opt"),
        (ort_path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "ort_dynamic")]:
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    np.save(f"{out_dir}/{tag}.npy", sess.run(None, {"x": x})[0])
"#;

/// `--dynamic`: the written ONNX (DynamicQuantizeLinear + MatMulInteger) reads back into
/// kiln, runs there exactly as `kiln run --quantize --dynamic` does, stays close to float,
/// and — with `$KILN_PYTHON` — onnxruntime agrees on kiln's file and on its own
/// `quantize_dynamic` of the float model, within one accumulator step of the last layer.
#[test]
fn dynamic_quantization_of_matmul_and_gemm() {
    let dir = temp_dir("dynamic");
    let float_path = dir.join("mlp.onnx");
    let float = kiln_ir::text::parse_graph(MLP).unwrap();
    std::fs::write(&float_path, kiln_onnx::export(&float).unwrap()).unwrap();
    let out = dir.join("mlp.dynamic.onnx");
    let (stdout, _) = succeed(&["quantize", s(&float_path), "--dynamic", "-o", s(&out)]);
    assert!(stdout.contains("2 matmul/gemm quantized"), "{stdout}");
    let err = stderr_of_failure(&[
        "quantize",
        s(&float_path),
        "--dynamic",
        "--random-calibration",
        "2",
        "-o",
        s(&out),
    ]);
    assert!(err.contains("--dynamic"), "{err}");

    let dynamic = kiln_onnx::import_file(&out, &ImportOptions::default()).unwrap();
    assert_eq!(
        count_ops(&dynamic, |op| matches!(op, Op::DynamicQuantize)),
        2
    );
    assert_eq!(count_ops(&dynamic, |op| matches!(op, Op::MatMulInteger)), 2);
    let x = normal(21, &[4, 16]);
    let x_path = dir.join("x.npy");
    kiln_ir::npy::write_npy_file(&x_path, &x).unwrap();
    let from_file = kiln_interp::run(&dynamic, std::slice::from_ref(&x)).unwrap()[0].to_f32_vec();

    let run_dir = dir.join("run");
    succeed(&[
        "run",
        s(&float_path),
        "--input",
        &format!("x={}", s(&x_path)),
        "--quantize",
        "--dynamic",
        "--backend",
        "interp",
        "--output-dir",
        s(&run_dir),
    ]);
    let from_run = kiln_ir::npy::read_npy_file(run_dir.join("y.npy"))
        .unwrap()
        .to_f32_vec();
    assert_eq!(
        from_run, from_file,
        "kiln run --quantize --dynamic vs the written file"
    );

    // The hidden activation's range gives the last layer's input scale s_h = max(h)/255
    // (relu: min 0); one step of the last accumulator is s_h·s_w[j], s_w[j] = max|w2[j]|/127.
    let mut hidden_max = 0.0f32;
    let reference = kiln_interp::run_observed(&float, std::slice::from_ref(&x), &mut |v, t| {
        if float.value_name(v) == "h" {
            hidden_max = t.to_f32_vec().into_iter().fold(0.0, f32::max);
        }
    })
    .unwrap()[0]
        .to_f32_vec();
    let w2 = float
        .const_tensor(
            float
                .node_ids()
                .map(|id| kiln_ir::ValueId { node: id, port: 0 })
                .find(|&v| float.value_name(v) == "w2")
                .unwrap(),
        )
        .unwrap()
        .to_f32_vec();
    let w2_scale = w2.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
    let step = hidden_max / 255.0 * w2_scale;
    assert!(
        cosine(&reference, &from_file) > 0.999,
        "dynamic int8 vs float: cosine {}",
        cosine(&reference, &from_file)
    );

    if let Some(python) = std::env::var_os("KILN_PYTHON").filter(|p| !p.is_empty()) {
        let status = Command::new(python)
            .args(["-c", ORT_DYNAMIC_SCRIPT])
            .arg(&float_path)
            .arg(&out)
            .arg(&x_path)
            .arg(&dir)
            .output()
            .expect("KILN_PYTHON runs");
        assert!(
            status.status.success(),
            "onnxruntime: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        for tag in ["kiln_plain", "kiln_opt", "ort_dynamic"] {
            let ort = kiln_ir::npy::read_npy_file(dir.join(format!("{tag}.npy")))
                .unwrap()
                .to_f32_vec();
            let max_diff = ort
                .iter()
                .zip(&from_file)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                max_diff <= step,
                "onnxruntime ({tag}) vs kiln: {max_diff} > one accumulator step {step}"
            );
        }
    }
}

#[test]
fn quantize_to_integer_kir() {
    let dir = temp_dir("kir");
    let cal = calibration_dir(&dir, 2);
    let out = dir.join("demo.int8.kir");
    succeed(&["quantize", DEMO, "--calibration", s(&cal), "-o", s(&out)]);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("qconv("), "{text}");
}

#[test]
fn random_calibration_needs_the_flag_and_warns() {
    let dir = temp_dir("random");
    let out = dir.join("m.onnx");
    let err = stderr_of_failure(&["quantize", DEMO, "-o", s(&out)]);
    assert!(
        err.contains("--calibration") && err.contains("--random-calibration"),
        "{err}"
    );
    let (_, stderr) = succeed(&[
        "quantize",
        DEMO,
        "-o",
        s(&out),
        "--random-calibration",
        "2",
        "--seed",
        "5",
    ]);
    assert!(
        stderr.contains("warning") && stderr.contains("random"),
        "{stderr}"
    );
    assert!(out.exists());
}

#[test]
fn bad_calibration_data_is_an_error_naming_the_file() {
    let dir = temp_dir("bad");
    let out = dir.join("m.onnx");
    let missing = dir.join("no-such-dir");
    let err = stderr_of_failure(&[
        "quantize",
        DEMO,
        "--calibration",
        s(&missing),
        "-o",
        s(&out),
    ]);
    assert!(err.contains("no-such-dir"), "{err}");

    let cal = dir.join("cal");
    std::fs::create_dir_all(&cal).unwrap();
    kiln_ir::npy::write_npy_file(cal.join("a.npy"), &normal(1, &[1, 3, 32, 32])).unwrap();
    kiln_ir::npy::write_npy_file(cal.join("b_small.npy"), &normal(2, &[1, 3, 16, 16])).unwrap();
    let err = stderr_of_failure(&["quantize", DEMO, "--calibration", s(&cal), "-o", s(&out)]);
    assert!(
        err.contains("b_small.npy") && err.contains("[1,3,32,32]"),
        "{err}"
    );

    let err = stderr_of_failure(&[
        "quantize",
        DEMO,
        "--random-calibration",
        "1",
        "--method",
        "kl",
        "-o",
        s(&out),
    ]);
    assert!(err.contains("kl"), "{err}");
    let err = stderr_of_failure(&[
        "quantize",
        DEMO,
        "--random-calibration",
        "1",
        "--skip",
        "conv99",
        "-o",
        s(&out),
    ]);
    assert!(err.contains("'conv99'"), "{err}");
    let err = stderr_of_failure(&[
        "run",
        DEMO,
        "--calibration",
        s(&cal),
        "--input",
        "input=x.npy",
    ]);
    assert!(err.contains("--quantize"), "{err}");
}
