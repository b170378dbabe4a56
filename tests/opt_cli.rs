//! End-to-end tests of the optimizer's command line: `kiln passes`, `kiln dump` with passes
//! (`--after`, `--print-after-all`, `--stats`) and `kiln opt` writing `.kir` and `.onnx`, with
//! the optimized ONNX checked numerically against the reference interpreter on the original.
//! The binary is a debug build here, so the IR verifier runs after every pass.

#[path = "support/mod.rs"]
mod support;

use kiln_ir::{DType, Generator, Graph, Op, Tensor};
use std::path::Path;

use support::cli::{kiln, repo_root, stderr_of_failure, temp_dir};

const DEMO: &str = "crates/kiln-cli/assets/demo.onnx";
const CONV_BN_RELU: &str = "tests/kir/conv_bn_relu.kir";

/// stdout and stderr of a successful run.
fn run_ok(args: &[&str]) -> (String, String) {
    let out = kiln(args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "kiln {args:?} failed: {stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

fn stdout_of(args: &[&str]) -> String {
    run_ok(args).0
}

fn parse_kir(text: &str) -> Graph {
    let g = kiln_ir::text::parse_graph(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    kiln_ir::verify(&g).unwrap();
    g
}

fn read_kir(path: &str) -> Graph {
    parse_kir(&std::fs::read_to_string(repo_root().join(path)).unwrap())
}

fn count_ops(g: &Graph, mnemonic: &str) -> usize {
    g.node_ids()
        .filter(|&id| g.node(id).op.mnemonic() == mnemonic)
        .count()
}

/// A standard-normal input per graph input, from a fixed seed.
fn seeded_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    g.inputs()
        .iter()
        .map(|&v| {
            let ty = g.value_type(v);
            assert_eq!(ty.dtype, DType::F32);
            Generator::Normal {
                seed,
                mean: 0.0,
                std: 1.0,
            }
            .generate(DType::F32, &ty.shape)
            .unwrap()
        })
        .collect()
}

/// Interpret `optimized` and `original` on the same seeded input; every output agrees to
/// `max|a − b| / max|b| ≤ tol` (folding BatchNorm changes the rounding, not the function).
fn assert_same_function(original: &Graph, optimized: &Graph, tol: f64) {
    let inputs = seeded_inputs(original, 5);
    let want = kiln_interp::run(original, &inputs).unwrap();
    let got = kiln_interp::run(optimized, &inputs).unwrap();
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.shape(), g.shape());
        let stats = support::error_stats(g.as_f32().unwrap(), w.as_f32().unwrap());
        assert!(
            stats.max_rel_to_peak <= tol && stats.non_finite_mismatches == 0,
            "{stats:?}"
        );
    }
}

#[test]
fn help_explains_the_optimizer_commands() {
    let top = stdout_of(&["--help"]);
    for cmd in ["passes", "opt", "dump"] {
        assert!(top.contains(cmd), "top-level help lists {cmd}:\n{top}");
    }
    let opt = stdout_of(&["opt", "--help"]);
    for flag in [
        "-O <LEVEL>",
        "--passes",
        "--output",
        "--stats",
        "--verify",
        "--rules-dir",
        ".onnx",
        ".kir",
        "--input-shape",
    ] {
        assert!(opt.contains(flag), "opt --help mentions {flag}:\n{opt}");
    }
    let dump = stdout_of(&["dump", "--help"]);
    for flag in [
        "--after <NAME>",
        "--print-after-all",
        "--stats",
        "--passes",
        "-O <LEVEL>",
        "--format",
    ] {
        assert!(dump.contains(flag), "dump --help mentions {flag}:\n{dump}");
    }
    assert!(stdout_of(&["passes", "--help"]).contains("Usage: kiln passes"));
}

#[test]
fn passes_lists_every_pass_and_pipeline_on_one_line() {
    let text = stdout_of(&["passes"]);
    for (name, description) in kiln_opt::pass_names() {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{text}"));
        let first_words: String = description
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(line.contains(&first_words), "{line}");
    }
    let o1 = text
        .lines()
        .find(|l| l.trim_start().starts_with("-O1 "))
        .unwrap_or_else(|| panic!("no -O1 line:\n{text}"));
    assert!(
        o1.contains(&kiln_opt::pipeline(kiln_opt::OptLevel::O1).join(", ")),
        "{o1}"
    );
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("-O0 ")),
        "{text}"
    );
}

/// A plain dump is the imported IR, as before the optimizer existed (the snapshot tests pin
/// its exact text).
#[test]
fn plain_dump_runs_no_pass() {
    let text = stdout_of(&["dump", CONV_BN_RELU]);
    assert_eq!(text, kiln_ir::text::print_graph(&read_kir(CONV_BN_RELU)));
    assert_eq!(stdout_of(&["dump", CONV_BN_RELU, "-O0"]), text);
}

#[test]
fn dump_after_fold_bn_shows_the_folded_conv() {
    let original = read_kir(CONV_BN_RELU);
    assert_eq!(count_ops(&original, "batch_norm"), 1);
    // --after alone runs -O1 up to the pass; with --passes only that list runs.
    for args in [
        vec!["dump", CONV_BN_RELU, "--after", "fold-bn"],
        vec![
            "dump",
            CONV_BN_RELU,
            "--passes",
            "fold-bn",
            "--after",
            "fold-bn",
        ],
        vec!["dump", CONV_BN_RELU, "-O1", "--after", "fold-bn"],
    ] {
        let text = stdout_of(&args);
        assert!(!text.contains("batch_norm"), "{args:?}:\n{text}");
        let after = parse_kir(&text);
        assert_eq!(count_ops(&after, "batch_norm"), 0);
        assert_eq!(count_ops(&after, "conv"), 1);
        // fold-bn runs before fuse-activation: the relu is still a node of its own.
        assert_eq!(count_ops(&after, "relu"), 1, "{text}");
    }
    // After the whole pipeline the relu is fused into the conv.
    let o1 = parse_kir(&stdout_of(&["dump", CONV_BN_RELU, "-O1"]));
    let ops: Vec<&Op> = o1
        .node_ids()
        .map(|id| &o1.node(id).op)
        .filter(|op| !op.is_source())
        .collect();
    assert!(
        matches!(ops.as_slice(), [Op::Conv(a)] if a.act == Some(kiln_ir::Activation::Relu)),
        "{ops:?}"
    );
}

#[test]
fn print_after_all_heads_each_pass() {
    let text = stdout_of(&["dump", CONV_BN_RELU, "--print-after-all"]);
    let o1 = kiln_opt::pipeline(kiln_opt::OptLevel::O1);
    let headers: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("// after pass "))
        .collect();
    assert_eq!(headers.len(), o1.len(), "{text}");
    for (k, (header, pass)) in headers.iter().zip(&o1).enumerate() {
        assert_eq!(
            *header,
            format!("// after pass {pass} ({} of {})", k + 1, o1.len())
        );
    }
    // Each section is a graph of its own.
    let sections: Vec<&str> = text.split("// after pass ").skip(1).collect();
    for s in sections {
        let body = s.split_once('\n').unwrap().1;
        parse_kir(body);
    }
    // A pass listed twice is printed after each run, with headers.
    let twice = stdout_of(&[
        "dump",
        CONV_BN_RELU,
        "--passes",
        "simplify,fold-bn,simplify",
        "--after",
        "simplify",
    ]);
    assert_eq!(
        twice.matches("// after pass simplify").count(),
        2,
        "{twice}"
    );
}

#[test]
fn stats_report_every_pass_on_stderr() {
    let (stdout, stderr) = run_ok(&["dump", CONV_BN_RELU, "-O1", "--stats"]);
    parse_kir(&stdout); // stdout stays a clean dump
    for pass in kiln_opt::pipeline(kiln_opt::OptLevel::O1) {
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("pass {pass}: ops ")))
            .unwrap_or_else(|| panic!("no stats for {pass}:\n{stderr}"));
        if pass != "dce" {
            assert!(
                line.contains("e-graph") && line.contains("iterations"),
                "{line}"
            );
        }
        assert!(line.contains(" ms"), "{line}");
    }
    // fold-bn folded exactly one batch_norm: its conv rule fired, the op count dropped.
    let fired: usize = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("rule fold-bn-into-conv: "))
        .unwrap_or_else(|| panic!("no fold-bn-into-conv line:\n{stderr}"))
        .parse()
        .unwrap();
    assert!(fired >= 1, "{stderr}");
    assert!(stderr.contains("batch_norm: 1 -> 0"), "{stderr}");
    assert!(stderr.contains(" passes, "), "{stderr}");
    // With no passes there is nothing to report, and the dump says so.
    let (_, quiet) = run_ok(&["dump", CONV_BN_RELU, "--stats"]);
    assert!(quiet.contains("no passes run (-O0)"), "{quiet}");
    // kiln opt prints the same report.
    let dir = temp_dir("stats");
    let out = dir.join("o.kir");
    let (_, opt_stderr) = run_ok(&["opt", CONV_BN_RELU, "-o", out.to_str().unwrap(), "--stats"]);
    assert!(opt_stderr.contains("pass fold-bn: ops "), "{opt_stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn opt_writes_kir_that_reads_back_identically() {
    let dir = temp_dir("kir");
    let first = dir.join("first.kir");
    let (_, stderr) = run_ok(&["opt", CONV_BN_RELU, "-o", first.to_str().unwrap()]);
    assert!(stderr.contains("-O1: "), "{stderr}");
    let text = std::fs::read_to_string(&first).unwrap();
    let g = parse_kir(&text);
    assert_eq!(count_ops(&g, "batch_norm"), 0);
    // Printing the parsed file reproduces it; -O0 of it changes nothing.
    assert_eq!(kiln_ir::text::print_graph(&g), text);
    let second = dir.join("second.kir");
    run_ok(&[
        "opt",
        first.to_str().unwrap(),
        "-O0",
        "-o",
        second.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&second).unwrap(), text);
    // The folded weight has 216 values: printed as a summary, with a warning.
    assert!(stderr.contains("warning: 1 constants"), "{stderr}");

    // A small graph keeps every constant: -O0 to .kir is the input, computing the same.
    let small = dir.join("small.kir");
    run_ok(&[
        "opt",
        "tests/kir/residual_block.kir",
        "-O0",
        "-o",
        small.to_str().unwrap(),
    ]);
    let back = parse_kir(&std::fs::read_to_string(&small).unwrap());
    assert_same_function(&read_kir("tests/kir/residual_block.kir"), &back, 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

/// `kiln opt -o x.onnx`: the written model imports and computes what the original computes.
#[test]
fn opt_writes_onnx_that_computes_the_original_function() {
    let dir = temp_dir("onnx");
    for (model, original) in [
        (CONV_BN_RELU, read_kir(CONV_BN_RELU)),
        (
            DEMO,
            kiln_onnx::import_file(&repo_root().join(DEMO), &Default::default()).unwrap(),
        ),
        (
            "tests/kir/residual_block.kir",
            read_kir("tests/kir/residual_block.kir"),
        ),
    ] {
        for level in ["-O1", "-O0"] {
            let out = dir.join(format!(
                "{}{level}.onnx",
                Path::new(model).file_stem().unwrap().to_str().unwrap()
            ));
            run_ok(&["opt", model, level, "-o", out.to_str().unwrap()]);
            let optimized = kiln_onnx::import_file(&out, &Default::default())
                .unwrap_or_else(|e| panic!("{model} {level}: {e}"));
            if level == "-O1" {
                assert_eq!(count_ops(&optimized, "batch_norm"), 0, "{model}");
                assert!(count_ops(&optimized, "conv") > 0);
                // Folding rounds differently; 1e-5 of the output's peak is ~100 f32 ulps.
                assert_same_function(&original, &optimized, 1e-5);
            } else {
                // Nothing ran: the export round trip alone, which is exact.
                assert_same_function(&original, &optimized, 0.0);
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_name_the_file_and_what_was_expected() {
    let dir = temp_dir("errors");
    let txt = dir.join("out.txt");
    let err = stderr_of_failure(&["opt", CONV_BN_RELU, "-o", txt.to_str().unwrap()]);
    assert!(
        err.contains("out.txt': unknown output extension '.txt' (expected .onnx or .kir)"),
        "{err}"
    );
    assert!(!txt.exists());

    let out = dir.join("out.onnx");
    let err = stderr_of_failure(&[
        "opt",
        CONV_BN_RELU,
        "--passes",
        "fold-bn,frob",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("unknown pass 'frob' (known passes: "), "{err}");
    for pass in support_known_passes() {
        assert!(err.contains(&pass), "{err} lists {pass}");
    }
    let err = stderr_of_failure(&["dump", CONV_BN_RELU, "--after", "frob"]);
    assert!(err.contains("unknown pass 'frob'"), "{err}");
    let err = stderr_of_failure(&[
        "dump",
        CONV_BN_RELU,
        "--passes",
        "simplify",
        "--after",
        "fold-bn",
    ]);
    assert!(
        err.contains("--after fold-bn: pass fold-bn is not among the passes that run (--passes simplify: simplify)"),
        "{err}"
    );
    let err = stderr_of_failure(&[
        "opt",
        CONV_BN_RELU,
        "-O1",
        "--passes",
        "dce",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    let err = stderr_of_failure(&["opt", CONV_BN_RELU, "-O2", "-o", out.to_str().unwrap()]);
    assert!(err.contains("possible values: 0, 1"), "{err}");
    let err = stderr_of_failure(&["opt", "no/such/model.onnx", "-o", out.to_str().unwrap()]);
    assert!(err.contains("no/such/model.onnx"), "{err}");
    assert!(!out.exists());

    // A .kir with summarized weights cannot be exported: the error names the constant.
    let summarized = dir.join("summarized.kir");
    run_ok(&["opt", CONV_BN_RELU, "-o", summarized.to_str().unwrap()]);
    let err = stderr_of_failure(&[
        "opt",
        summarized.to_str().unwrap(),
        "-O0",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        err.contains("exporting the optimized") && err.contains("has no data"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn support_known_passes() -> Vec<String> {
    kiln_opt::pass_names()
        .into_iter()
        .map(|(n, _)| n.to_string())
        .collect()
}
