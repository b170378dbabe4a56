//! End-to-end tests of the JIT backend through the `kiln` binary on the embedded demo model:
//! `kiln run --backend jit` against `--backend interp` (float within 1e-5 of the largest
//! output, int8 graphs byte for byte), a QDQ file compiled to int8 kernels, `kiln bench`'s
//! report and machine-readable last line (with onnxruntime when `$KILN_PYTHON` is set), and
//! the errors for options that do not apply.

use kiln_ir::{DType, Generator, Tensor, TensorData};
use std::path::{Path, PathBuf};

mod support;
use support::cli::{s, stderr_of_failure, succeed, temp_dir};

const DEMO: &str = "crates/kiln-cli/assets/demo.onnx";

fn normal(seed: u64) -> Tensor {
    Generator::Normal {
        seed,
        mean: 0.0,
        std: 1.0,
    }
    .generate(DType::F32, &[1, 3, 32, 32])
    .unwrap()
}

/// A calibration directory of 8 seeded samples and a separate input file.
fn calibration_and_input(dir: &Path) -> (PathBuf, PathBuf) {
    let cal = dir.join("calibration");
    std::fs::create_dir_all(&cal).unwrap();
    for i in 0..8 {
        kiln_ir::npy::write_npy_file(cal.join(format!("s{i}.npy")), &normal(200 + i)).unwrap();
    }
    let input = dir.join("x.npy");
    kiln_ir::npy::write_npy_file(&input, &normal(7)).unwrap();
    (cal, input)
}

/// `kiln run MODEL --input input=X --backend B [extra]` → the `probs` output.
fn run_probs(dir: &Path, model: &str, input: &Path, backend: &str, extra: &[&str]) -> Tensor {
    let out = dir.join(format!("out-{backend}-{}", extra.len()));
    let input_arg = format!("input={}", input.display());
    let mut args = vec![
        "run",
        model,
        "--input",
        &input_arg,
        "--backend",
        backend,
        "--output-dir",
        s(&out),
    ];
    args.extend_from_slice(extra);
    succeed(&args);
    kiln_ir::npy::read_npy_file(out.join("probs.npy")).unwrap()
}

fn f32s(t: &Tensor) -> &[f32] {
    match t.data() {
        TensorData::F32(v) => v,
        other => panic!("f32 output expected, got {:?}", other.dtype()),
    }
}

#[test]
fn help_lists_the_jit_options() {
    let (run_help, _) = succeed(&["run", "--help"]);
    for flag in ["--backend", "jit", "interp", "--threads"] {
        assert!(
            run_help.contains(flag),
            "run --help lists {flag}: {run_help}"
        );
    }
    let (bench_help, _) = succeed(&["bench", "--help"]);
    for flag in [
        "--threads",
        "--runs",
        "--warmup",
        "--compare-ort",
        "--quantize",
        "--calibration",
        "bench: model=NAME",
    ] {
        assert!(
            bench_help.contains(flag),
            "bench --help lists {flag}: {bench_help}"
        );
    }
}

/// The float demo as machine code agrees with the interpreter within 1e-5 of the largest
/// output (f32 kernels sum in another order), whatever the thread count.
#[test]
fn float_demo_jit_matches_interpreter() {
    let dir = temp_dir("float");
    let (_, input) = calibration_and_input(&dir);
    let want = run_probs(&dir, DEMO, &input, "interp", &[]);
    for threads in ["1", "2"] {
        let got = run_probs(&dir, DEMO, &input, "jit", &["--threads", threads]);
        assert_eq!(got.shape(), want.shape());
        let scale = f32s(&want).iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in f32s(&got).iter().zip(f32s(&want)) {
            assert!((a - b).abs() <= 1e-5 * scale, "jit {a} vs interp {b}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Asserts two `probs` outputs come from the same int8 logits. The demo ends
/// `... → QGemm → Dequantize → Softmax`: everything up to the dequantized logits is integer
/// arithmetic (bit-exact), but the float softmax of the JIT (polynomial exp) and of the
/// interpreter (libm exp) may round differently by an ulp or two. Compared in log space,
/// `ln p_i = z_i − logsumexp(z)`, so one quantization step `s` of any logit `z_i` moves
/// `ln p_i` by about `s·(1 − p_i)` — at least 8e-3 with the demo's logit scale of about 0.06 (top class p ≈ 0.86) — while
/// rounding in exp/sum/divide moves it by a few 1e-7. A 1e-5 bound therefore passes ulp
/// noise and fails any integer difference.
fn assert_same_int8_logits(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    for (i, (a, b)) in f32s(got).iter().zip(f32s(want)).enumerate() {
        let d = (a.ln() - b.ln()).abs();
        assert!(
            d <= 1e-5,
            "{what}: probs[{i}] {a} vs {b} (ln differs by {d})"
        );
    }
}

/// The int8 demo: `kiln run --quantize` on both backends and the QDQ `.onnx` compiled by
/// the JIT compute the same int8 logits.
#[test]
fn int8_demo_jit_is_bit_exact_with_interpreter() {
    let dir = temp_dir("int8");
    let (cal, input) = calibration_and_input(&dir);
    let quant = ["--quantize", "--calibration", s(&cal)];
    let interp = run_probs(&dir, DEMO, &input, "interp", &quant);
    let jit = run_probs(&dir, DEMO, &input, "jit", &quant);
    assert_same_int8_logits(&jit, &interp, "run --quantize: jit vs interp");

    // The QDQ file `kiln quantize` writes, compiled by the JIT: its quantize/dequantize
    // pairs become the same integer kernels as `run --quantize`. (An integer `.kir` cannot
    // take part: it prints large constants as summaries and so does not run.)
    let onnx = dir.join("demo.int8.onnx");
    succeed(&["quantize", DEMO, "--calibration", s(&cal), "-o", s(&onnx)]);
    let onnx_jit = run_probs(&dir, s(&onnx), &input, "jit", &[]);
    assert_same_int8_logits(
        &onnx_jit,
        &interp,
        "QDQ .onnx (jit) vs run --quantize (interp)",
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `key=value` pairs of bench's last line, which must start with `bench: `.
fn bench_fields(stdout: &str) -> Vec<(String, String)> {
    let last = stdout.lines().last().expect("bench prints lines");
    let rest = last
        .strip_prefix("bench: ")
        .unwrap_or_else(|| panic!("last line is machine-readable: {last}"));
    rest.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    &fields
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
        .1
}

/// `kiln bench --profile` lists the kernel time by op kind with call counts: the int8 demo's
/// residual island (dequantize, add, relu, quantize) runs in its conv's epilogue
/// (`qconv_fused`; one `fused_elementwise` call with `--no-fuse-epilogues`), its global-pool
/// island is one `int8_average_pool` (three kernels with `--no-fuse-pools`), and with
/// `--no-fuse` every node is a kernel of its own.
#[test]
fn bench_profile_shows_fused_and_unfused_islands() {
    let dir = temp_dir("bench_profile");
    let (cal, _) = calibration_and_input(&dir);
    let base = [
        "bench",
        DEMO,
        "--quantize",
        "--calibration",
        s(&cal),
        "--threads",
        "1",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--profile",
    ];
    let calls = |stdout: &str, op: &str| -> Option<usize> {
        stdout.lines().find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some(op)).then(|| words.next()?.parse().ok())?
        })
    };
    let with = |flag: Option<&str>| {
        let mut args = base.to_vec();
        args.extend(flag);
        succeed(&args).0
    };
    // every fusion: the residual island runs in its conv's epilogue, the global-pool
    // island is one int8 average pool
    let fused = with(None);
    assert!(fused.contains("ms per run in kernels"), "{fused}");
    assert!(fused.contains("slowest calls:"), "{fused}");
    assert_eq!(calls(&fused, "qconv_fused"), Some(1), "{fused}");
    assert_eq!(calls(&fused, "int8_average_pool"), Some(1), "{fused}");
    assert_eq!(calls(&fused, "fused_elementwise"), None, "{fused}");
    assert_eq!(calls(&fused, "add"), None, "{fused}");
    // the residual island as a chain kernel of its own
    let chains = with(Some("--no-fuse-epilogues"));
    assert_eq!(calls(&chains, "qconv_fused"), None, "{chains}");
    assert_eq!(calls(&chains, "fused_elementwise"), Some(1), "{chains}");
    // the pool island as its three nodes
    let pools = with(Some("--no-fuse-pools"));
    assert_eq!(calls(&pools, "int8_average_pool"), None, "{pools}");
    assert_eq!(calls(&pools, "global_average_pool"), Some(1), "{pools}");
    // nothing fused
    let unfused = with(Some("--no-fuse"));
    for op in ["fused_elementwise", "qconv_fused", "int8_average_pool"] {
        assert_eq!(calls(&unfused, op), None, "{unfused}");
    }
    assert_eq!(calls(&unfused, "add"), Some(1), "{unfused}");
    assert_eq!(calls(&unfused, "relu"), Some(1), "{unfused}");
}

/// `kiln bench` on the int8 demo: the report and the machine-readable line in the
/// documented order, with consistent values; with `$KILN_PYTHON`, onnxruntime's f32 and
/// int8 latencies too.
#[test]
fn bench_reports_and_ends_with_a_machine_readable_line() {
    let dir = temp_dir("bench");
    let (cal, _) = calibration_and_input(&dir);
    let base = [
        "bench",
        DEMO,
        "--quantize",
        "--calibration",
        s(&cal),
        "--threads",
        "1",
        "--runs",
        "5",
        "--warmup",
        "1",
    ];
    let (stdout, _) = succeed(&base);
    assert!(stdout.contains("kiln int8"), "{stdout}");
    assert!(
        stdout.contains("codegen"),
        "compile time by stage: {stdout}"
    );
    let fields = bench_fields(&stdout);
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "model",
            "threads",
            "compile_ms",
            "median_ms",
            "p90_ms",
            "peak_bytes"
        ]
    );
    assert_eq!(field(&fields, "model"), "demo");
    assert_eq!(field(&fields, "threads"), "1");
    let num = |k| field(&fields, k).parse::<f64>().unwrap();
    assert!(num("compile_ms") > 0.0);
    assert!(num("median_ms") > 0.0 && num("p90_ms") >= num("median_ms"));
    assert!(num("peak_bytes") > 0.0);

    match std::env::var_os("KILN_PYTHON") {
        None => println!("--compare-ort part skipped: KILN_PYTHON is not set"),
        Some(_) => {
            let mut args = base.to_vec();
            args.push("--compare-ort");
            let (stdout, _) = succeed(&args);
            assert!(stdout.contains("onnxruntime f32"), "{stdout}");
            assert!(stdout.contains("onnxruntime int8"), "{stdout}");
            let fields = bench_fields(&stdout);
            for key in ["ort_f32_median_ms", "ort_int8_median_ms"] {
                assert!(field(&fields, key).parse::<f64>().unwrap() > 0.0);
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn options_that_do_not_apply_are_errors() {
    let dir = temp_dir("errors");
    let (_, input) = calibration_and_input(&dir);
    let input_arg = format!("input={}", input.display());
    let err = stderr_of_failure(&[
        "run",
        DEMO,
        "--input",
        &input_arg,
        "--backend",
        "interp",
        "--threads",
        "2",
    ]);
    assert!(err.contains("--threads applies to --backend jit"), "{err}");
    let err = stderr_of_failure(&["run", DEMO, "--input", &input_arg, "--backend", "gpu"]);
    assert!(err.contains("'gpu'") && err.contains("jit"), "{err}");
    let err = stderr_of_failure(&["bench", "tests/kir/conv_bn_relu.kir", "--compare-ort"]);
    assert!(err.contains("--compare-ort needs an ONNX model"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
