//! The pass manager's promises: saturation stops at the node, iteration and time limits and
//! says so, with a result that still verifies and computes the same values; passes and
//! pipelines are listed with descriptions; rule files can be read from a directory at run
//! time, and a malformed one is reported with file:line:col; unknown passes are errors that
//! list the known ones.

mod common;

use common::*;
use kiln_ir::Graph;
use kiln_opt::{
    pass_names, pipeline, pipelines, run_pass, run_pipeline, OptError, OptLevel, OptOptions,
};
use std::time::Duration;

fn case(file: &str) -> Graph {
    let text =
        std::fs::read_to_string(repo_root().join("tests/opt").join(file)).expect("the case exists");
    kiln_ir::text::parse_graph(&text).expect("the case parses")
}

fn verified() -> OptOptions {
    OptOptions {
        verify: true,
        ..OptOptions::default()
    }
}

/// The HardSwish spelled with clip and div needs several rounds of rewrites (commute,
/// reassociate, recognise the gate, recognise the product, fuse): a good subject for limits.
fn hard_swish_case() -> Graph {
    case("hard_swish_from_clip_div.kir")
}

#[test]
fn an_iteration_limit_stops_saturation_and_is_reported() {
    let graph = hard_swish_case();
    let opts = OptOptions {
        iter_limit: 1,
        ..verified()
    };
    let (out, stats) = run_pass(&graph, "fuse-activation", &opts).unwrap();
    assert_eq!(stats.stop_reason, "iteration limit 1");
    assert_eq!(stats.iterations, 1);
    // One round is not enough to see the HardSwish: the div is still there, and the graph
    // still computes the same thing.
    assert_eq!(
        count(&out, "div"),
        1,
        "{}",
        kiln_ir::text::print_graph(&out)
    );
    assert!(max_relative_error(&graph, &out, &[1]) <= 1e-6);
    // Unlimited, the same pass saturates and fuses everything.
    let (full, stats) = run_pass(&graph, "fuse-activation", &verified()).unwrap();
    assert_eq!(stats.stop_reason, "saturated");
    assert_eq!(count(&full, "conv"), 1);
    assert_eq!(kiln_opt::op_histogram(&full).values().sum::<usize>(), 1);
}

#[test]
fn a_node_limit_stops_saturation_and_is_reported() {
    let graph = hard_swish_case();
    let opts = OptOptions {
        node_limit: 5,
        ..verified()
    };
    let (out, stats) = run_pass(&graph, "fuse-activation", &opts).unwrap();
    assert!(
        stats.stop_reason.starts_with("node limit "),
        "{}",
        stats.stop_reason
    );
    assert!(max_relative_error(&graph, &out, &[1]) <= 1e-6);
}

#[test]
fn a_time_limit_stops_saturation_and_is_reported() {
    let graph = hard_swish_case();
    let opts = OptOptions {
        time_limit: Duration::ZERO,
        ..verified()
    };
    let (out, stats) = run_pass(&graph, "fuse-activation", &opts).unwrap();
    assert!(
        stats.stop_reason.starts_with("time limit "),
        "{}",
        stats.stop_reason
    );
    assert!(max_relative_error(&graph, &out, &[1]) <= 1e-6);
}

#[test]
fn every_pass_is_listed_with_a_description_and_pipelines_name_only_known_passes() {
    let names = pass_names();
    for (name, description) in &names {
        assert!(!description.is_empty(), "{name} has no description");
        assert!(
            !description.contains('\n'),
            "{name}: descriptions are one line"
        );
    }
    let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
    for p in pipelines() {
        assert!(!p.description.is_empty());
        for pass in &p.passes {
            assert!(
                known.contains(&pass.as_str()),
                "pipeline {} names unknown pass {pass}",
                p.name
            );
        }
    }
    assert!(pipeline(OptLevel::O0).is_empty());
    let o1 = pipeline(OptLevel::O1);
    let at = |p: &str| {
        o1.iter()
            .position(|q| *q == p)
            .unwrap_or_else(|| panic!("O1 runs {p}"))
    };
    // fold-bn before bn-affine (a BN with a producer folds backward first), fuse-residual
    // before fuse-activation (relu(conv + r) needs the residual fused first).
    assert!(at("simplify") < at("fold-bn"));
    assert!(at("fold-bn") < at("bn-affine"));
    assert!(at("fuse-residual") < at("fuse-activation"));
}

#[test]
fn unknown_passes_are_errors_that_list_the_known_ones() {
    let err = run_pass(&hard_swish_case(), "fold-everything", &verified()).unwrap_err();
    assert!(matches!(err, OptError::UnknownPass { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("fold-everything") && msg.contains("fold-bn") && msg.contains("dce"),
        "{msg}"
    );
}

#[test]
fn the_callback_sees_every_pass_in_order_with_its_stats() {
    let graph = case("o1_resnet_bottleneck.kir");
    let mut seen = Vec::new();
    let (out, stats) = run_pipeline(
        &graph,
        &pipeline(OptLevel::O1),
        &verified(),
        &mut |pass, g, s| {
            assert_eq!(pass, s.pass);
            assert_eq!(
                kiln_opt::op_histogram(g).values().sum::<usize>(),
                s.ops_after
            );
            seen.push(pass.to_string());
        },
    )
    .unwrap();
    assert_eq!(seen, pipeline(OptLevel::O1));
    assert_eq!(stats.len(), seen.len());
    assert_eq!(
        stats.last().unwrap().ops_after,
        kiln_opt::op_histogram(&out).values().sum::<usize>()
    );
    // The stats text names the rules that did the work, with and without times.
    let fold = stats.iter().find(|s| s.pass == "fold-bn").unwrap();
    let text = fold.render(false);
    // 4 convs, 4 BNs, 3 relus and an add; the BNs fold away.
    assert!(text.starts_with("pass fold-bn: ops 12 -> 8"), "{text}");
    assert!(text.contains("  rule fold-bn-into-conv: 4\n"), "{text}");
    assert!(text.contains("  batch_norm: 4 -> 0\n"), "{text}");
    assert!(!text.contains(" ms"));
    assert!(
        fold.to_string().contains(" ms"),
        "Display (for --stats) includes times"
    );
}

#[test]
fn rule_files_load_from_a_directory_and_errors_point_into_them() {
    let dir = std::env::temp_dir().join(format!("kiln-opt-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A fold-bn that only knows about convs without bias: the biased conv's BN stays.
    std::fs::write(
        dir.join("fold-bn.rules"),
        "(pass fold-bn \"only bias-less convs\")\n\
         (rule fold-bn-into-bias-less-conv\n\
           (batch_norm (conv ?x ?w absent absent ?c) ?g ?beta ?mean ?var ?bn)\n\
           => (conv ?x (scale-out-channels ?w (bn-scale ?g ?var ?bn) ?c)\n\
                  (bn-fold-bias absent ?beta ?mean (bn-scale ?g ?var ?bn)) absent ?c)\n\
           (if (no-activation ?c) (single-use (conv ?x ?w absent absent ?c))))\n",
    )
    .unwrap();
    let opts = OptOptions {
        rules_dir: Some(dir.clone()),
        ..verified()
    };
    let (out, stats) = run_pass(&case("fold_bn_conv2d.kir"), "fold-bn", &opts).unwrap();
    assert_eq!(count(&out, "batch_norm"), 1);
    assert_eq!(
        stats.rule_fired.keys().collect::<Vec<_>>(),
        ["fold-bn-into-bias-less-conv"]
    );
    let (out, _) = run_pass(&case("fold_bn_conv2d_no_bias.kir"), "fold-bn", &opts).unwrap();
    assert_eq!(count(&out, "batch_norm"), 0);

    // A typo on line 3 is reported there.
    std::fs::write(
        dir.join("fold-bn.rules"),
        "; header\n(pass fold-bn \"x\")\n(rule r (batch_norm ?x ?g ?b ?m ?v ?bn) => (conv ?x))\n",
    )
    .unwrap();
    let err = run_pass(&case("fold_bn_conv2d.kir"), "fold-bn", &opts).unwrap_err();
    let msg = err.to_string();
    let file = dir.join("fold-bn.rules").display().to_string();
    assert!(
        msg.starts_with(&format!("{file}:3:44: conv takes 4 inputs")),
        "{msg}"
    );
    // A file declaring another pass is refused.
    std::fs::write(dir.join("fold-bn.rules"), "(pass simplify \"x\")\n").unwrap();
    let msg = run_pass(&case("fold_bn_conv2d.kir"), "fold-bn", &opts)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("declares pass simplify, expected fold-bn"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// docs/passes.md is the pass catalogue: it has a section for every pass and names every
/// function a rule file may call.
#[test]
fn the_pass_catalogue_covers_every_pass_and_function() {
    let doc =
        std::fs::read_to_string(repo_root().join("docs/passes.md")).expect("docs/passes.md exists");
    for (pass, _) in pass_names() {
        assert!(
            doc.contains(&format!("`{pass}`")),
            "docs/passes.md does not mention pass {pass}"
        );
    }
    for set in kiln_opt::passes::builtin_rule_sets() {
        assert!(
            doc.contains(&format!("\n## {}\n", set.name)),
            "docs/passes.md has no section for {}",
            set.name
        );
    }
    for f in kiln_opt::functions::FUNCTIONS {
        assert!(
            doc.contains(&format!("`{}`", f.name)),
            "docs/passes.md does not describe function {}",
            f.name
        );
    }
}
