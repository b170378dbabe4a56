//! End-to-end tests of the `kiln` binary: help texts, `info`/`dump`/`run`/`demo` on the
//! embedded demo model, and the error messages a user sees for bad invocations.

use kiln_ir::{DType, Generator, Tensor};

mod support;
use support::cli::{kiln, stderr_of_failure, temp_dir};

const DEMO: &str = "crates/kiln-cli/assets/demo.onnx";

fn stdout_of(args: &[&str]) -> String {
    let out = kiln(args);
    assert!(
        out.status.success(),
        "kiln {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_command_has_help() {
    let top = stdout_of(&["--help"]);
    for cmd in ["demo", "info", "dump", "run"] {
        assert!(top.contains(cmd), "top-level help lists {cmd}");
        let help = stdout_of(&[cmd, "--help"]);
        assert!(help.contains("Usage: kiln"), "{cmd} --help shows usage");
    }
    assert!(stdout_of(&["run", "--help"]).contains("--output-dir"));
    assert!(stdout_of(&["dump", "--help"]).contains("--format"));
    assert!(stdout_of(&["info", "--help"]).contains("--input-shape"));
}

/// The demo model is built by tools/gen_demo_model.py: 3 convs each followed by a BN, 3 ReLUs,
/// one Add, MaxPool, GlobalAveragePool, Flatten, Gemm, Softmax. Parameters, derived by hand:
/// stem 16·3·3·3 = 432, two block convs 16·16·3·3 = 2304 each, three BNs 4·16 = 64 each,
/// fc 10·16 + 10 = 170  →  432 + 2·2304 + 3·64 + 170 = 5402.
/// MACs: stem 16·32·32 outputs × 27 = 442368; each block conv 16384 × 144 = 2359296;
/// gemm 10 × 16 = 160  →  5161120 ≈ 0.005 GMACs.
#[test]
fn info_on_the_demo_model() {
    let text = stdout_of(&["info", DEMO]);
    assert!(
        text.contains("input") && text.contains("f32[1,3,32,32]"),
        "{text}"
    );
    assert!(
        text.contains("probs") && text.contains("f32[1,10]"),
        "{text}"
    );
    assert!(text.contains("5402 parameters"), "{text}");
    assert!(text.contains("0.005 GMACs"), "{text}");
    for (op, count) in [
        ("conv", 3),
        ("batch_norm", 3),
        ("relu", 3),
        ("add", 1),
        ("gemm", 1),
    ] {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(op))
            .unwrap_or_else(|| panic!("no histogram line for {op} in\n{text}"));
        assert_eq!(
            line.split_whitespace().nth(1),
            Some(count.to_string().as_str()),
            "{line}"
        );
    }
}

#[test]
fn dump_formats() {
    let text = stdout_of(&["dump", DEMO]);
    assert!(text.starts_with("graph @"), "{text}");
    let dot = stdout_of(&["dump", DEMO, "--format", "dot"]);
    assert!(dot.starts_with("digraph"), "{dot}");
    let json = stdout_of(&["dump", DEMO, "--format", "json"]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert!(value.is_object());
}

#[test]
fn run_writes_one_npy_per_output() {
    let dir = temp_dir("run");
    let input = Generator::Normal {
        seed: 3,
        mean: 0.0,
        std: 1.0,
    }
    .generate(DType::F32, &[1, 3, 32, 32])
    .unwrap();
    let input_path = dir.join("x.npy");
    kiln_ir::npy::write_npy_file(&input_path, &input).unwrap();
    let out_dir = dir.join("out");
    stdout_of(&[
        "run",
        DEMO,
        "--input",
        &format!("input={}", input_path.display()),
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    let probs: Tensor = kiln_ir::npy::read_npy_file(out_dir.join("probs.npy")).unwrap();
    assert_eq!(probs.shape(), &[1, 10]);
    // softmax output: a probability distribution
    let sum: f32 = probs.to_f32_vec().iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "softmax sums to {sum}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_errors_name_the_problem() {
    let dir = temp_dir("errors");
    let err = stderr_of_failure(&["run", DEMO]);
    assert!(
        err.contains("missing --input input=FILE.npy") && err.contains("f32[1,3,32,32]"),
        "{err}"
    );

    let wrong = Tensor::zeros(DType::F32, vec![1, 3, 16, 16]).unwrap();
    let wrong_path = dir.join("wrong.npy");
    kiln_ir::npy::write_npy_file(&wrong_path, &wrong).unwrap();
    let err = stderr_of_failure(&[
        "run",
        DEMO,
        "--input",
        &format!("input={}", wrong_path.display()),
    ]);
    assert!(
        err.contains("wrong.npy") && err.contains("must be f32[1,3,32,32]"),
        "{err}"
    );

    let err = stderr_of_failure(&[
        "run",
        DEMO,
        "--input",
        &format!("nosuch={}", wrong_path.display()),
    ]);
    assert!(err.contains("no input 'nosuch'"), "{err}");

    let err = stderr_of_failure(&["info", "does/not/exist.onnx"]);
    assert!(err.contains("does/not/exist.onnx"), "{err}");

    let err = stderr_of_failure(&[
        "info",
        "tests/kir/conv_bn_relu.kir",
        "--input-shape",
        "x=1,2",
    ]);
    assert!(
        err.contains("--input-shape applies to ONNX models"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn demo_runs_and_reports_each_stage() {
    let text = stdout_of(&["demo"]);
    assert!(text.contains("[1] import"), "{text}");
    assert!(
        text.contains("the optimized IR"),
        "the demo prints the IR: {text}"
    );
    assert!(text.contains("top-5 classes"), "{text}");
    assert!(text.contains("[4] quantize to int8"), "{text}");
    assert!(text.contains("[5] JIT-compile the int8 graph"), "{text}");
    // The JIT's int8 output agrees with the int8 interpreter up to softmax rounding
    // (tests/jit_cli.rs checks the same through `kiln run`).
    let rel: f64 = text
        .split("max relative difference ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the demo prints the JIT's difference: {text}"));
    assert!(rel <= 1e-5, "JIT vs interpreter differ by {rel}: {text}");
    let quiet = stdout_of(&["demo", "--no-ir"]);
    assert!(
        !quiet.contains("the optimized IR"),
        "--no-ir hides the IR: {quiet}"
    );
}
