//! Shared helpers of the optimizer's integration tests: loading `.kir` cases, seeded random
//! inputs, and the numerical-equivalence check against the reference interpreter.

#![allow(dead_code)] // each test binary uses a subset

use kiln_ir::{DType, Generator, Graph, Tensor};
use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A case file's `// key: value` header lines.
pub fn header(text: &str, key: &str) -> Option<String> {
    let prefix = format!("// {key}:");
    text.lines()
        .take_while(|l| l.starts_with("//"))
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
}

/// `batch_norm=0, conv=1` → pairs.
pub fn expected_counts(spec: &str) -> Vec<(String, usize)> {
    spec.split(',')
        .map(|kv| {
            let (k, v) = kv
                .trim()
                .split_once('=')
                .expect("expect: entries are op=count");
            (
                k.trim().to_string(),
                v.trim().parse().expect("counts are integers"),
            )
        })
        .collect()
}

pub fn count(graph: &Graph, mnemonic: &str) -> usize {
    graph
        .node_ids()
        .filter(|&id| graph.node(id).op.mnemonic() == mnemonic)
        .count()
}

/// Seeded normal(0, 1) inputs of the graph's input types (f32 inputs only).
pub fn random_inputs(graph: &Graph, seed: u64) -> Vec<Tensor> {
    graph
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let ty = graph.value_type(v);
            assert_eq!(ty.dtype, DType::F32, "test inputs are f32");
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

/// max |a − b| / max |a| over a pair of output tensors (the reference is `a`).
pub fn relative_error(reference: &Tensor, other: &Tensor) -> f64 {
    assert_eq!(reference.shape(), other.shape(), "output shapes differ");
    let (a, b) = (reference.to_f64_vec(), other.to_f64_vec());
    let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
    let diff = a
        .iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// Run both graphs on the same random inputs (several seeds) and return the worst relative
/// error over all outputs.
pub fn max_relative_error(original: &Graph, optimized: &Graph, seeds: &[u64]) -> f64 {
    let mut worst = 0.0f64;
    for &seed in seeds {
        let inputs = random_inputs(original, seed);
        let want = kiln_interp::run(original, &inputs).expect("the original graph runs");
        let got = kiln_interp::run(optimized, &inputs).expect("the optimized graph runs");
        assert_eq!(want.len(), got.len(), "output count changed");
        for (w, g) in want.iter().zip(&got) {
            worst = worst.max(relative_error(w, g));
        }
    }
    worst
}
