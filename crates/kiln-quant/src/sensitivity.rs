//! Per-layer sensitivity: the end-to-end output error each layer causes when it is the only
//! quantized layer of the model, for fallback ranked by measured harm
//! (`--fallback-sensitivity N` keeps the N most harmful layers in float).
//!
//! A layer's own output SQNR (`--fallback-sqnr`) says how much error it *holds*, not how much
//! it *causes*: a layer can be noisy with no effect on the result (a branch the output
//! barely depends on), or quiet and still ruin it (a small error amplified by what follows,
//! like the logits in front of a sigmoid that a threshold reads). Quantizing one layer at a
//! time with everything else in float and measuring the graph outputs isolates each layer's
//! contribution; it is the analysis of onnxruntime's and TensorRT's debugging guides, made a
//! fallback criterion.

use crate::calibrate::Calibration;
use crate::config::QuantizeConfig;
use crate::insert::{insert_qdq, BiasCorrections};
use crate::plan::{plan, NodeRole, QuantPlan};
use crate::QuantError;
use kiln_ir::{Graph, Tensor};
use serde::Serialize;
use std::collections::BTreeSet;

/// The damage of one layer quantized alone.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerSensitivity {
    pub node: String,
    pub op: String,
    pub role: NodeRole,
    /// SQNR (dB) of the graph outputs (all of them pooled) when only this layer is quantized;
    /// `None` when they are exact.
    pub output_sqnr_db: Option<f64>,
}

impl LayerSensitivity {
    /// The output SQNR with exact agreement as +∞ (for ranking).
    pub fn sqnr(&self) -> f64 {
        self.output_sqnr_db.unwrap_or(f64::INFINITY)
    }
}

/// Whether quantizing a node in `role` adds error of its own. Movement moves integers
/// (it is quantized only behind a quantized producer, so it cannot be quantized alone) and
/// an island tail belongs to its island.
fn adds_error(role: NodeRole) -> bool {
    matches!(
        role,
        NodeRole::Compute | NodeRole::Island | NodeRole::Concat
    )
}

/// Output SQNR accumulator: Σ x² and Σ (x − x̂)² over every output element and sample.
#[derive(Default)]
struct NoiseSums {
    signal: f64,
    noise: f64,
}

impl NoiseSums {
    fn add(&mut self, reference: &Tensor, approx: &Tensor) {
        for (a, b) in reference.to_f32_vec().iter().zip(approx.to_f32_vec()) {
            let (a, b) = (*a as f64, b as f64);
            self.signal += a * a;
            self.noise += (a - b) * (a - b);
        }
    }

    fn sqnr_db(&self) -> Option<f64> {
        (self.noise > 0.0).then(|| 10.0 * (self.signal / self.noise).log10())
    }
}

/// Measure every error-adding layer of `full_plan` quantized alone (everything else, and
/// the nodes in `skip`, in float) on `samples`, most harmful (lowest output SQNR) first.
/// Costs one interpreter run per layer and sample; `progress(done, total)` is called after
/// each layer.
pub fn measure_sensitivity(
    float: &Graph,
    calibration: &Calibration,
    config: &QuantizeConfig,
    skip: &BTreeSet<String>,
    full_plan: &QuantPlan,
    samples: &[Vec<Tensor>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LayerSensitivity>, QuantError> {
    if samples.is_empty() {
        return Err(QuantError::NoSamples);
    }
    let float_outputs: Vec<Vec<Tensor>> = samples
        .iter()
        .enumerate()
        .map(|(sample, inputs)| {
            kiln_interp::run(float, inputs).map_err(|source| QuantError::Run {
                graph: "float",
                sample,
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    let quantized: Vec<(String, String, NodeRole)> = full_plan
        .nodes
        .iter()
        .filter_map(|n| match n.decision {
            crate::plan::Decision::Quantized { role } => Some((n.node.clone(), n.op.clone(), role)),
            crate::plan::Decision::Float { .. } => None,
        })
        .collect();
    let candidates: Vec<&(String, String, NodeRole)> = quantized
        .iter()
        .filter(|(_, _, r)| adds_error(*r))
        .collect();
    let mut out = Vec::with_capacity(candidates.len());
    for (done, (name, op, role)) in candidates.iter().enumerate() {
        let mut alone: BTreeSet<String> = skip.clone();
        alone.extend(
            quantized
                .iter()
                .filter(|(other, _, _)| other != name)
                .map(|(other, _, _)| other.clone()),
        );
        let single = plan(float, calibration, config, &alone)?;
        let qdq = insert_qdq(float, &single, &config.scheme, &BiasCorrections::new())?;
        let mut sums = NoiseSums::default();
        for (sample, (inputs, reference)) in samples.iter().zip(&float_outputs).enumerate() {
            let approx =
                kiln_interp::run(&qdq.graph, inputs).map_err(|source| QuantError::Run {
                    graph: "quantized",
                    sample,
                    source,
                })?;
            for (r, a) in reference.iter().zip(&approx) {
                sums.add(r, a);
            }
        }
        out.push(LayerSensitivity {
            node: name.clone(),
            op: op.clone(),
            role: *role,
            output_sqnr_db: sums.sqnr_db(),
        });
        progress(done + 1, candidates.len());
    }
    out.sort_by(|a, b| a.sqnr().total_cmp(&b.sqnr()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::{input_specs, CalibrationSet};
    use crate::calibrate::{calibrate, float_values_to_observe, Progress};
    use crate::observer::MinMax;
    use kiln_ir::text::parse_graph;

    /// Two 1×1 convs; the second one's output channels differ in scale by 40 000×, so its
    /// per-tensor output quantization rounds channel 1 away.
    const GRAPH: &str = "graph @s(%x: f32[1,2,4,4]) -> (f32[1,2,4,4]) {
  %w1 = const @c0 : f32[2,2,1,1] = [0.5, -0.25, 0.75, 0.5]
  %c1 = conv(%x, %w1) {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], groups=1} : f32[1,2,4,4]
  %w2 = const @c1 : f32[2,2,1,1] = [400.0, 0.0, 0.0, 0.01]
  %c2 = conv(%c1, %w2) {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], groups=1} : f32[1,2,4,4]
  return %c2
}";

    #[test]
    fn each_layer_alone_and_the_most_harmful_first() {
        let g = parse_graph(GRAPH).unwrap();
        let data = CalibrationSet::random(&input_specs(&g), 4, 7).unwrap();
        let values = float_values_to_observe(&g).unwrap();
        let cal = calibrate(
            &g,
            &values,
            data.iter(),
            &mut |_| Box::new(MinMax::new()),
            Progress::Hidden,
        )
        .unwrap();
        let cfg = QuantizeConfig {
            optimize: false,
            progress: Progress::Hidden,
            ..QuantizeConfig::default()
        };
        let skip = BTreeSet::new();
        let full = plan(&g, &cal, &cfg, &skip).unwrap();
        let samples: Vec<Vec<Tensor>> = data.iter().map(|s| s.unwrap()).collect();
        let mut calls = Vec::new();
        let s = measure_sensitivity(&g, &cal, &cfg, &skip, &full, &samples, &mut |d, t| {
            calls.push((d, t))
        })
        .unwrap();
        assert_eq!(calls, [(1, 2), (2, 2)]);
        let names: Vec<&str> = s.iter().map(|l| l.node.as_str()).collect();
        // Each entry is the graph output with only that layer quantized: recompute it
        // directly (plan with the other layer skipped, Q/DQ, interpreter) for both layers.
        for l in &s {
            let mut alone: BTreeSet<String> = BTreeSet::new();
            for other in ["c1", "c2"] {
                if other != l.node {
                    alone.insert(other.to_string());
                }
            }
            let p = plan(&g, &cal, &cfg, &alone).unwrap();
            let q = insert_qdq(&g, &p, &cfg.scheme, &BiasCorrections::new()).unwrap();
            let mut sums = NoiseSums::default();
            for inputs in &samples {
                let r = kiln_interp::run(&g, inputs).unwrap();
                let a = kiln_interp::run(&q.graph, inputs).unwrap();
                sums.add(&r[0], &a[0]);
            }
            assert_eq!(l.output_sqnr_db, sums.sqnr_db(), "{}", l.node);
            assert_eq!(l.role, NodeRole::Compute);
        }
        assert!(s[0].sqnr() <= s[1].sqnr(), "{names:?}");
        // 8-bit quantization of one layer: finite SQNR, far above 0 dB.
        assert!(s.iter().all(|l| l.sqnr().is_finite() && l.sqnr() > 10.0));
    }
}
