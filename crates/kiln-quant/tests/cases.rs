//! Every quantization case under tests/quant/, two kinds by their `// mode:` header:
//!
//! - `rules`: the input is in QDQ form with hand-chosen parameters; the `quantize` rule set
//!   (passes/quantize.rules) converts it;
//! - `pipeline`: the input is a float graph; `kiln_quant::quantize` runs on it (`-O1`,
//!   un-fusing, calibration on seeded normal samples, plan, insertion, rules) with the
//!   `// config:` options, and the snapshot also shows the plan's decisions, the QDQ form
//!   and the outputs' accuracy against the float graph.
//!
//! Both check the op counts of `// expect:` (derived by hand from the plan and the rules),
//! the verifier, and that the integer graph computes what the QDQ graph computes: every
//! quantized value the two share, recomputed from the QDQ graph's own inputs, is within
//! `// max-steps:` integer steps of it (1 where a qconv/qmatmul rounds an exact i32
//! accumulator once and the QDQ form rounds an f32 sum, or where a requantization folded
//! into a qconv rounds once instead of twice; 0 where only data moves). The result's dump is
//! compared with its reviewed snapshot `snapshots/quant__CASE.snap` (review with
//! `cargo insta review`: the snapshots document what insertion and the rules do).

use kiln_ir::{DType, Generator, Graph, Op, Tensor, TensorType, ValueId};
use kiln_quant::{
    convert_qdq, input_specs, quantize, CalibrationSet, Decision, ObserverKind, Progress,
    QuantScheme, QuantizeConfig,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn header(text: &str, key: &str) -> Option<String> {
    let prefix = format!("// {key}:");
    text.lines()
        .take_while(|l| l.starts_with("//"))
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
}

fn count(graph: &Graph, mnemonic: &str) -> usize {
    graph
        .node_ids()
        .filter(|&id| graph.node(id).op.mnemonic() == mnemonic)
        .count()
}

fn check_counts(file: &str, graph: &Graph, spec: &str) {
    let dump = kiln_ir::text::print_graph(graph);
    for kv in spec.split(',') {
        let (op, n) = kv
            .trim()
            .split_once('=')
            .unwrap_or_else(|| panic!("{file}: expect entries are op=count"));
        let n: usize = n.trim().parse().expect("counts are integers");
        assert_eq!(count(graph, op.trim()), n, "{file}: {op} count\n{dump}");
    }
}

/// Seeded normal(0, 1) inputs of the graph's (f32) input types.
fn random_inputs(graph: &Graph, seed: u64) -> Vec<Tensor> {
    graph
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ty = graph.value_type(v);
            Generator::Normal {
                seed: seed * 1000 + i as u64,
                mean: 0.0,
                std: 1.0,
            }
            .generate(DType::F32, &ty.shape)
            .expect("small test shapes")
        })
        .collect()
}

/// How far the integer graph is from the QDQ graph, one rewrite at a time: the integer graph
/// is evaluated node by node with every input the QDQ graph also has (same name, same type)
/// taken from the QDQ graph's run, and each quantized value the two share is compared with
/// the QDQ graph's, in steps (integer differences). So each comparison sees only the
/// rewrites since the last shared values — a qconv or a folded requantization rounds once
/// where the QDQ form rounds an f32 sum (or twice): at most one step apart; data movement
/// is exact (0 steps).
fn max_local_steps(qdq: &Graph, integer: &Graph, samples: &[Vec<Tensor>]) -> (i64, String) {
    let mut worst = (0, String::new());
    for inputs in samples {
        let mut reference: HashMap<String, (Tensor, TensorType)> = HashMap::new();
        kiln_interp::run_observed(qdq, inputs, &mut |v, t| {
            reference.insert(
                qdq.value_name(v).to_string(),
                (t.clone(), qdq.value_type(v).clone()),
            );
        })
        .expect("the QDQ graph runs");
        let shared = |v: ValueId| -> Option<&Tensor> {
            let ty = integer.value_type(v);
            reference
                .get(integer.value_name(v))
                .filter(|(_, rty)| {
                    rty.same_layout(ty)
                        && match (&rty.quant, &ty.quant) {
                            (Some(a), Some(b)) => a.same_as(b),
                            (None, None) => true,
                            _ => false,
                        }
                })
                .map(|(t, _)| t)
        };
        let mut shadow: HashMap<ValueId, Tensor> = HashMap::new();
        for id in integer.topo_order().unwrap() {
            let node = integer.node(id);
            let out = ValueId { node: id, port: 0 };
            let outs = match &node.op {
                Op::Input { index } => vec![inputs[*index].clone()],
                Op::Const(_) => vec![integer.const_tensor(out).expect("data constant").clone()],
                op => {
                    let args: Vec<&Tensor> = node
                        .inputs()
                        .iter()
                        .map(|&v| shared(v).unwrap_or_else(|| &shadow[&v]))
                        .collect();
                    let types: Vec<&TensorType> = node
                        .inputs()
                        .iter()
                        .map(|&v| integer.value_type(v))
                        .collect();
                    let out_types: Vec<TensorType> =
                        node.outputs.iter().map(|o| o.ty.clone()).collect();
                    kiln_interp::eval_op(op, &args, &types, &out_types)
                        .unwrap_or_else(|e| panic!("{}: {e}", node.name))
                }
            };
            if integer.value_type(out).quant.is_some() && !node.op.is_source() {
                if let Some(want) = shared(out) {
                    let want = want.to_i64_vec().expect("integers");
                    let got = outs[0].to_i64_vec().expect("integers");
                    for (a, b) in want.iter().zip(&got) {
                        if (a - b).abs() > worst.0 {
                            worst = ((a - b).abs(), node.outputs[0].name.clone());
                        }
                    }
                }
            }
            for (port, t) in outs.into_iter().enumerate() {
                shadow.insert(
                    ValueId {
                        node: id,
                        port: port as u16,
                    },
                    t,
                );
            }
        }
    }
    worst
}

fn fired(stats: &kiln_opt::PassStats) -> String {
    let fired: Vec<&str> = stats
        .rule_fired
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(r, _)| r.as_str())
        .collect();
    if fired.is_empty() {
        "(none)".into()
    } else {
        fired.join(", ")
    }
}

fn snapshot(case: &str, text: String) {
    insta::with_settings!({
        snapshot_path => "../../../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(format!("quant__{case}"), text);
    });
}

fn check_rules_case(file: &str, text: &str, graph: &Graph) {
    let expect = header(text, "expect").unwrap_or_else(|| panic!("{file}: no // expect:"));
    let steps: i64 = header(text, "max-steps")
        .unwrap_or_else(|| panic!("{file}: no // max-steps:"))
        .parse()
        .expect("max-steps is an integer");
    let (out, stats) = convert_qdq(graph, &kiln_opt::OptOptions::default())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    check_counts(file, &out, &expect);
    assert_eq!(stats.stop_reason, "saturated", "{file}");
    assert_eq!(stats.rejected_type_mismatch, 0, "{file}");
    let samples: Vec<Vec<Tensor>> = [1, 2, 3].map(|seed| random_inputs(graph, seed)).into();
    let (worst, at) = max_local_steps(graph, &out, &samples);
    let dump = kiln_ir::text::print_graph(&out);
    assert!(
        worst <= steps,
        "{file}: '{at}' is {worst} steps from the QDQ graph's (bound {steps})\n{dump}"
    );
    let reparsed = kiln_ir::text::parse_graph(&dump)
        .unwrap_or_else(|e| panic!("{file}: result does not re-parse: {e}\n{dump}"));
    assert_eq!(
        kiln_ir::text::print_graph(&reparsed),
        dump,
        "{file}: round trip"
    );
    snapshot(
        file.trim_end_matches(".kir"),
        format!(
            "// tests/quant/{file} after the quantize rules\n// rules fired: {}\n{dump}",
            fired(&stats)
        ),
    );
}

/// `ops=conv,add skip=NAME,NAME scheme=u8|i8 method=minmax samples=N`
fn config_of(file: &str, spec: &str) -> (QuantizeConfig, usize) {
    let mut cfg = QuantizeConfig {
        progress: Progress::Hidden,
        ..QuantizeConfig::default()
    };
    let mut samples = 4;
    for item in spec.split_whitespace() {
        let (k, v) = item
            .split_once('=')
            .unwrap_or_else(|| panic!("{file}: config items are key=value"));
        match k {
            "ops" => cfg.quantize_ops = Some(QuantizeConfig::parse_ops(v).unwrap()),
            "skip" => cfg.skip = v.split(',').map(str::to_string).collect(),
            "scheme" => {
                cfg.scheme = QuantScheme {
                    activations: match v {
                        "u8" => kiln_quant::ActivationType::U8Asymmetric,
                        "i8" => kiln_quant::ActivationType::I8Symmetric,
                        _ => panic!("{file}: scheme u8 or i8"),
                    },
                    ..QuantScheme::default()
                }
            }
            "method" => cfg.method = v.parse::<ObserverKind>().unwrap(),
            "samples" => samples = v.parse().unwrap(),
            "bias-correction" => cfg.bias_correction = v == "on",
            _ => panic!("{file}: unknown config key {k}"),
        }
    }
    (cfg, samples)
}

fn check_pipeline_case(file: &str, text: &str, graph: &Graph) {
    let expect = header(text, "expect").unwrap_or_else(|| panic!("{file}: no // expect:"));
    let steps: i64 = header(text, "max-steps")
        .unwrap_or_else(|| panic!("{file}: no // max-steps:"))
        .parse()
        .expect("max-steps is an integer");
    let spec = header(text, "config").unwrap_or_default();
    let (cfg, samples) = config_of(file, &spec);
    let data = CalibrationSet::random(&input_specs(graph), samples, 7).unwrap();
    let model = quantize(graph, &data, &cfg).unwrap_or_else(|e| panic!("{file}: {e}"));
    check_counts(file, &model.graph, &expect);
    kiln_ir::verify(&model.qdq).unwrap();
    let dump = kiln_ir::text::print_graph(&model.graph);
    // On the calibration samples min-max ranges hold every value, so folding a
    // requantization into a qconv changes only the rounding, not what saturates.
    let samples: Vec<Vec<Tensor>> = data.iter().map(|s| s.unwrap()).collect();
    let (worst, at) = max_local_steps(&model.qdq, &model.graph, &samples);
    assert!(
        worst <= steps,
        "{file}: '{at}' is {worst} steps from the QDQ graph's (bound {steps})\n{dump}"
    );
    let plan: String = model
        .plan
        .nodes
        .iter()
        .map(|n| match &n.decision {
            Decision::Quantized { role } => format!("//   {} ({}): {role:?}\n", n.node, n.op),
            Decision::Float { reason } => format!("//   {} ({}): float, {reason}\n", n.node, n.op),
        })
        .collect();
    let stats = model.stats.last().expect("the quantize pass ran");
    let outputs: String = model
        .report
        .outputs
        .iter()
        .map(|l| {
            format!(
                "//   {}: SQNR {} dB, cosine {:.6}\n",
                l.value,
                l.sqnr_db.map_or("exact".into(), |d| format!("{d:.2}")),
                l.cosine
            )
        })
        .collect();
    snapshot(
        file.trim_end_matches(".kir"),
        format!(
            "// tests/quant/{file}, quantized ({spec})\n// plan:\n{plan}// QDQ form:\n{}// after the quantize rules (fired: {}):\n{dump}// accuracy vs float on the {} calibration samples:\n{outputs}",
            kiln_ir::text::print_graph(&model.qdq),
            fired(stats),
            model.report.samples
        ),
    );
}

fn check_case(file: &str) {
    let path = repo_root().join("tests/quant").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let graph = kiln_ir::text::parse_graph(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    kiln_ir::verify(&graph).unwrap_or_else(|e| panic!("{file} does not verify: {e}"));
    match header(&text, "mode").as_deref() {
        Some("rules") => check_rules_case(file, &text, &graph),
        Some("pipeline") => check_pipeline_case(file, &text, &graph),
        other => panic!("{file}: // mode: rules or pipeline, found {other:?}"),
    }
}

/// Every file of tests/quant/ is a case.
#[test]
fn every_case_in_tests_quant() {
    let dir = repo_root().join("tests/quant");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/quant exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".kir"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for file in &files {
        if let Err(e) = std::panic::catch_unwind(|| check_case(file)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{file}: {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}
