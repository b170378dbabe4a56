//! The IR ⇄ e-graph bridge without rewrites is the identity: every hand-written case
//! (tests/opt, tests/kir) comes back printing exactly as it went in — names, constants,
//! attributes, quantization and multi-output nodes included.

mod common;

use common::repo_root;
use kiln_opt::{parse_rule_file, rules::RuleSet, run_rule_set, OptOptions};

fn no_rules() -> RuleSet {
    parse_rule_file("none.rules", "(pass none \"no rules\")").expect("an empty rule set parses")
}

fn kir_files() -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for dir in ["tests/opt", "tests/kir"] {
        if let Ok(entries) = std::fs::read_dir(repo_root().join(dir)) {
            files.extend(
                entries
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "kir")),
            );
        }
    }
    files.sort();
    files
}

#[test]
fn an_empty_rule_set_round_trips_every_case() {
    let files = kir_files();
    assert!(files.len() > 10);
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let graph =
            kiln_ir::text::parse_graph(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (out, stats) = run_rule_set(&graph, &no_rules(), &OptOptions::default()).unwrap();
        assert_eq!(
            kiln_ir::text::print_graph(&out),
            kiln_ir::text::print_graph(&graph),
            "{} changed going through the e-graph",
            path.display()
        );
        assert_eq!(stats.cost_before, stats.cost_after);
        kiln_ir::verify(&out).unwrap();
    }
}

/// A graph with a multi-output node (max_pool with indices) whose second output is a graph
/// output, a graph output that is a graph input, and two outputs of one value.
#[test]
fn multi_output_nodes_and_aliased_outputs_round_trip() {
    let text = "graph @aliases(%x: f32[1,2,4,4]) -> (f32[1,2,2,2], i64[1,2,2,2], f32[1,2,4,4], f32[1,2,2,2]) {\n  \
        %p, %i = max_pool(%x) {kernel=[2,2], strides=[2,2], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false, storage_order=0} : f32[1,2,2,2], i64[1,2,2,2]\n  \
        return %p, %i, %x, %p\n}\n";
    let graph = match kiln_ir::text::parse_graph(text) {
        Ok(g) => g,
        Err(e) => panic!("{e}"),
    };
    let (out, _) = run_rule_set(&graph, &no_rules(), &OptOptions::default()).unwrap();
    kiln_ir::verify(&out).unwrap();
    let inputs = common::random_inputs(&graph, 7);
    let want = kiln_interp::run(&graph, &inputs).unwrap();
    let got = kiln_interp::run(&out, &inputs).unwrap();
    assert_eq!(want, got);
    let names: Vec<&str> = out.outputs().iter().map(|&v| out.value_name(v)).collect();
    let original: Vec<&str> = graph
        .outputs()
        .iter()
        .map(|&v| graph.value_name(v))
        .collect();
    assert_eq!(names, original);
}
