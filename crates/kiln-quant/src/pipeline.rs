//! `kiln quantize` as a library call: optimize (`-O1`), un-fuse what integer ops cannot
//! express, calibrate, plan, insert Q/DQ, convert to integer ops with the `quantize` rules,
//! and measure the result against the float graph — with optional bias correction and
//! SQNR-driven fallback of layers to float.

use crate::bias_correction::measure_bias_corrections;
use crate::calib::CalibrationSet;
use crate::calibrate::Progress;
use crate::calibrate::{calibrate, float_values_to_observe, Calibration};
use crate::config::QuantizeConfig;
use crate::convert::convert_qdq;
use crate::insert::{insert_qdq, BiasCorrections};
use crate::plan::{plan, NodeRole, QuantPlan};
use crate::prepare::unfuse_for_quantization;
use crate::report::{accuracy_report, AccuracyReport};
use crate::sensitivity::{measure_sensitivity, LayerSensitivity};
use crate::QuantError;
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, ValueId};
use kiln_opt::{pipeline, run_pipeline, OptLevel, PassStats};
use serde::Serialize;
use std::collections::BTreeSet;
use std::io::IsTerminal;

/// At most this many fallback rounds: each keeps the layers where the SQNR first drops below
/// the threshold in float and measures again.
pub const MAX_FALLBACK_ROUNDS: usize = 8;

/// Why fallback kept a layer in float.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FallbackCriterion {
    /// `--fallback-sensitivity`: among the most harmful layers quantized alone;
    /// `sqnr_db` is the graph outputs' SQNR with only this layer quantized.
    Sensitivity,
    /// `--fallback-sqnr`: where the SQNR first dropped below the threshold; `sqnr_db` is the
    /// layer's own output SQNR in that round.
    Sqnr,
}

/// A layer kept in float by `--fallback-sensitivity` or `--fallback-sqnr`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FallbackLayer {
    pub node: String,
    /// See [`FallbackCriterion`] for which SQNR (dB) this is.
    pub sqnr_db: f64,
    pub criterion: FallbackCriterion,
    /// The `--fallback-sqnr` round (0 for sensitivity fallback, which runs before it).
    pub round: usize,
}

/// Everything `kiln quantize` produces.
#[derive(Clone, Debug)]
pub struct QuantizedModel {
    /// The float reference: the input after `-O1` and un-fusing (what was calibrated).
    pub float: Graph,
    /// The QDQ form (fake quantization; onnxruntime's QDQ format).
    pub qdq: Graph,
    /// Integer ops: qconv/qmatmul, data movement on integers, float islands between
    /// explicit quantize/dequantize boundaries. Runs in kiln's interpreter.
    pub graph: Graph,
    pub plan: QuantPlan,
    pub calibration: Calibration,
    /// The final graph against the float one, on the evaluation samples.
    pub report: AccuracyReport,
    pub fallback: Vec<FallbackLayer>,
    /// Every layer's damage quantized alone, most harmful first (empty without
    /// `--fallback-sensitivity`).
    pub sensitivity: Vec<LayerSensitivity>,
    /// Per-channel additions made to float biases (empty without bias correction).
    pub bias_corrections: BiasCorrections,
    /// `-O1`'s passes, then the `quantize` rules' pass.
    pub stats: Vec<PassStats>,
    pub warnings: Vec<String>,
}

impl QuantizedModel {
    /// `--report-json`: the accuracy report, every node's decision (quantized in which role,
    /// or float and why), the layers fallback kept in float, and the warnings.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Summary<'a> {
            accuracy: &'a AccuracyReport,
            nodes: &'a [crate::plan::NodePlan],
            fallback: &'a [FallbackLayer],
            sensitivity: &'a [LayerSensitivity],
            bias_corrected_layers: usize,
            warnings: &'a [String],
        }
        serde_json::to_string_pretty(&Summary {
            accuracy: &self.report,
            nodes: &self.plan.nodes,
            fallback: &self.fallback,
            sensitivity: &self.sensitivity,
            bias_corrected_layers: self.bias_corrections.len(),
            warnings: &self.warnings,
        })
        .expect("the summary holds only plain data")
    }
}

/// Check `--skip` names against the graph: each must name a node or a value.
fn check_skip_names(graph: &Graph, skip: &[String]) -> Result<(), QuantError> {
    for name in skip {
        let found = graph.node_ids().any(|id| {
            let node = graph.node(id);
            &node.name == name || node.outputs.iter().any(|o| &o.name == name)
        });
        if !found {
            return Err(QuantError::UnknownSkip {
                name: name.clone(),
                hint: " (names are those after -O1: a BatchNorm or activation fused into a \
                       conv goes by the conv's name)"
                    .to_string(),
            });
        }
    }
    Ok(())
}

/// The nodes to keep in float after a report: quantized nodes whose output is below the
/// threshold while every quantized op they read from is not — where the SQNR first drops —
/// and quantized nodes reading a value that was quantized just for them (a graph input or
/// a float op's output: the boundary's own quantization) when that value is below it.
fn fallback_culprits(
    graph: &Graph,
    plan: &QuantPlan,
    report: &AccuracyReport,
    threshold: f64,
) -> Result<Vec<(NodeId, f64)>, QuantError> {
    let sqnr = |v: ValueId| {
        report
            .layer(graph.value_name(v))
            .map_or(f64::INFINITY, |l| l.sqnr())
    };
    let mut out = Vec::new();
    for id in graph.topo_order()? {
        let node = graph.node(id);
        let Some(role) = plan.role(id) else { continue };
        let below: Vec<ValueId> = node
            .inputs()
            .iter()
            .copied()
            .filter(|&v| {
                graph.value_type(v).dtype == DType::F32
                    && !matches!(graph.node(v.node).op, Op::Const(_))
                    && sqnr(v) < threshold
            })
            .collect();
        let from_quantized = below.iter().any(|v| plan.role(v.node).is_some());
        let at_boundary = below.iter().any(|v| plan.role(v.node).is_none());
        let here = sqnr(ValueId { node: id, port: 0 });
        // Moving integers adds no error of its own, but a movement op can be the one reader
        // of a boundary's quantization.
        let adds_error = role != NodeRole::Movement;
        if (adds_error && here < threshold && !from_quantized) || at_boundary {
            out.push((id, here));
        }
    }
    Ok(out)
}

/// Quantize `graph` with calibration data `data` (samples in graph-input order) as `config`
/// says. The accuracy report, bias correction and fallback use the first
/// `config.eval_samples` samples.
pub fn quantize(
    graph: &Graph,
    data: &CalibrationSet,
    config: &QuantizeConfig,
) -> Result<QuantizedModel, QuantError> {
    if let Some(t) = config.fallback_sqnr {
        if !t.is_finite() {
            return Err(QuantError::BadThreshold(t));
        }
    }
    let mut stats = Vec::new();
    let optimized = if config.optimize {
        let (g, s) = run_pipeline(
            graph,
            &pipeline(OptLevel::O1),
            &config.opt,
            &mut |_, _, _| {},
        )
        .map_err(QuantError::Optimize)?;
        stats.extend(s);
        g
    } else {
        graph.clone()
    };
    check_skip_names(&optimized, &config.skip)?;
    let mut skip: BTreeSet<String> = config.skip.iter().cloned().collect();
    let float = unfuse_for_quantization(&optimized, &|node| {
        config.selects(node.op.mnemonic())
            && !skip.contains(&node.name)
            && !node.outputs.iter().any(|o| skip.contains(&o.name))
    })?;

    let values = float_values_to_observe(&float)?;
    let activation_scheme = config.scheme.activation();
    let mut build_error = None;
    let calibration = calibrate(
        &float,
        &values,
        data.iter(),
        &mut |_| match config.method.build(&activation_scheme) {
            Ok(o) => o,
            Err(e) => {
                build_error.get_or_insert(e);
                Box::new(crate::observer::MinMax::new())
            }
        },
        config.progress,
    )?;
    if let Some(e) = build_error {
        return Err(QuantError::Observer(e));
    }
    let mut warnings = calibration.warnings();
    let eval_len = config.eval_samples.unwrap_or(data.len()).min(data.len());
    let eval = || data.iter().take(eval_len);

    let mut fallback = Vec::new();
    let mut sensitivity = Vec::new();
    if let Some(count) = config.fallback_sensitivity.filter(|&n| n > 0) {
        let full_plan = plan(&float, &calibration, config, &skip)?;
        let samples: Vec<Vec<Tensor>> = data
            .iter()
            .take(config.sensitivity_samples.max(1))
            .enumerate()
            .map(|(sample, s)| s.map_err(|source| QuantError::Data { sample, source }))
            .collect::<Result<_, _>>()?;
        let visible = config.progress == Progress::Auto && std::io::stderr().is_terminal();
        sensitivity = measure_sensitivity(
            &float,
            &calibration,
            config,
            &skip,
            &full_plan,
            &samples,
            &mut |done, total| {
                if visible {
                    eprint!("\rsensitivity: {done}/{total} layers quantized alone");
                    if done == total {
                        eprintln!();
                    }
                }
            },
        )?;
        for layer in sensitivity.iter().take(count) {
            skip.insert(layer.node.clone());
            fallback.push(FallbackLayer {
                node: layer.node.clone(),
                sqnr_db: layer.sqnr(),
                criterion: FallbackCriterion::Sensitivity,
                round: 0,
            });
        }
    }
    let mut round = 0;
    loop {
        let plan = plan(&float, &calibration, config, &skip)?;
        let bias_corrections = if config.bias_correction {
            measure_bias_corrections(&float, &plan, &config.scheme, eval())?
        } else {
            BiasCorrections::new()
        };
        let qdq = insert_qdq(&float, &plan, &config.scheme, &bias_corrections)?;
        let (converted, convert_stats) = convert_qdq(&qdq.graph, &config.opt)?;
        let report = accuracy_report(&float, &converted, eval())?;
        let culprits = match config.fallback_sqnr {
            Some(t) if round < MAX_FALLBACK_ROUNDS => fallback_culprits(&float, &plan, &report, t)?,
            _ => Vec::new(),
        };
        if culprits.is_empty() {
            if let (Some(t), true) = (config.fallback_sqnr, round == MAX_FALLBACK_ROUNDS) {
                warnings.push(format!(
                    "fallback stopped after {MAX_FALLBACK_ROUNDS} rounds; layers below {t} dB may remain"
                ));
            }
            warnings.extend(qdq.warnings);
            stats.push(convert_stats);
            return Ok(QuantizedModel {
                float,
                qdq: qdq.graph,
                graph: converted,
                plan,
                calibration,
                report,
                fallback,
                sensitivity,
                bias_corrections,
                stats,
                warnings,
            });
        }
        for (id, sqnr_db) in culprits {
            let name = float.node(id).name.clone();
            skip.insert(name.clone());
            fallback.push(FallbackLayer {
                node: name,
                sqnr_db,
                criterion: FallbackCriterion::Sqnr,
                round,
            });
        }
        round += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::input_specs;
    use crate::calibrate::Progress;
    use kiln_ir::text::parse_graph;

    const TWO_CONVS: &str = "graph @t(%x: f32[1,2,4,4]) -> (f32[1,2,4,4]) {
  %w1 = const @c0 : f32[2,2,3,3] = normal(seed=1, mean=0.0, std=0.3)
  %c1 = conv(%x, %w1) {kernel=[3,3], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], groups=1, act=relu} : f32[1,2,4,4]
  %w2 = const @c1 : f32[2,2,3,3] = normal(seed=2, mean=0.0, std=0.3)
  %c2 = conv(%c1, %w2) {kernel=[3,3], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], groups=1} : f32[1,2,4,4]
  return %c2
}";

    fn run(threshold: Option<f64>) -> QuantizedModel {
        let g = parse_graph(TWO_CONVS).unwrap();
        let data = CalibrationSet::random(&input_specs(&g), 2, 3).unwrap();
        let cfg = QuantizeConfig {
            fallback_sqnr: threshold,
            progress: Progress::Hidden,
            ..QuantizeConfig::default()
        };
        quantize(&g, &data, &cfg).unwrap()
    }

    #[test]
    fn fallback_walks_from_the_first_drop() {
        // 8-bit quantization cannot reach 200 dB (that would take ~33 bits), so every layer
        // falls back, one boundary at a time: round 0 finds the input's quantization below
        // the threshold and drops its reader c1; in round 1 c1 is float, so c1's output is
        // quantized at a boundary for c2, which drops next; round 2 has nothing quantized.
        let m = run(Some(200.0));
        let rounds: Vec<(&str, usize)> = m
            .fallback
            .iter()
            .map(|f| (f.node.as_str(), f.round))
            .collect();
        assert_eq!(rounds, [("c1", 0), ("c2", 1)]);
        assert_eq!(
            kiln_opt::count_op(&m.graph, |op| matches!(op, Op::QConv(_))),
            0
        );
        assert_eq!(m.report.outputs[0].sqnr_db, None, "all float: exact");
        // Nothing falls back when every layer is above the threshold (8-bit layers here
        // are far above 0 dB).
        let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(json["fallback"][1]["node"], "c2");
        assert_eq!(json["nodes"][0]["decision"]["kind"], "float");
        assert_eq!(json["nodes"][0]["decision"]["reason"], "skipped");
        let m = run(Some(0.0));
        assert!(m.fallback.is_empty());
        let json: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(json["nodes"][0]["decision"]["role"], "compute");
        assert_eq!(
            kiln_opt::count_op(&m.graph, |op| matches!(op, Op::QConv(_))),
            2
        );
    }

    #[test]
    fn bad_configs_are_errors_naming_what_is_wrong() {
        let g = parse_graph(TWO_CONVS).unwrap();
        let data = CalibrationSet::random(&input_specs(&g), 1, 3).unwrap();
        let cfg = QuantizeConfig {
            skip: vec!["conv9".into()],
            progress: Progress::Hidden,
            ..QuantizeConfig::default()
        };
        let err = quantize(&g, &data, &cfg).unwrap_err();
        assert!(err.to_string().contains("'conv9'"), "{err}");
        let cfg = QuantizeConfig {
            fallback_sqnr: Some(f64::NAN),
            progress: Progress::Hidden,
            ..QuantizeConfig::default()
        };
        assert!(matches!(
            quantize(&g, &data, &cfg),
            Err(QuantError::BadThreshold(_))
        ));
    }
}
