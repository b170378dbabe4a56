//! Empirical bias correction (Nagel et al., "Data-Free Quantization Through Weight
//! Equalization and Bias Correction", §4.2; PyTorch's `_correct_bias`): rounding weights to
//! int8 shifts each output channel's mean by `E[(W̃ − W)·x]`, a systematic error that later
//! layers amplify. Measured on the samples and added back to the float bias before it is
//! quantized.
//!
//! Each compute layer's *own* error is measured, on the float network's input to it: the
//! float op `op(x, W, b)` against the same op on the quantized operands
//! `op(dq(q(x)), W̃, b̃)` (W̃, b̃ the dequantized int8 weight and i32 bias), both without the
//! fused activation — the bias acts before it. Upstream layers' errors are not counted
//! twice, and one float run per sample measures every layer.

use crate::calib::CalibError;
use crate::insert::{quantize_tensor, BiasCorrections};
use crate::plan::{NodeRole, QuantPlan};
use crate::report::real_values;
use crate::scheme::{quantize_bias, weight_params, QuantScheme};
use crate::QuantError;
use kiln_interp::{eval_op, run_observed};
use kiln_ir::{DType, Graph, NodeId, Op, Quant, Tensor, TensorType, ValueId};
use std::collections::HashMap;

/// One layer to correct, with its quantized operands prepared once.
struct Layer {
    node: NodeId,
    /// The op without its fused activation.
    op: Op,
    weight: Tensor,
    bias: Option<Tensor>,
    weight_q: Tensor,
    bias_q: Option<Tensor>,
    input_type: TensorType,
    output_type: TensorType,
    /// Σ (float − quantized) per output channel, and the elements per channel summed.
    diff: Vec<f64>,
    count: usize,
}

fn without_activation(op: &Op) -> Option<Op> {
    match op {
        Op::Conv(a) => Some(Op::Conv(kiln_ir::ConvAttrs {
            act: None,
            ..a.clone()
        })),
        Op::ConvTranspose(a) => Some(Op::ConvTranspose(kiln_ir::ConvTransposeAttrs {
            act: None,
            ..a.clone()
        })),
        Op::Gemm(a) => Some(Op::Gemm(kiln_ir::GemmAttrs {
            act: None,
            ..a.clone()
        })),
        _ => None,
    }
}

/// `t` quantized with `quant` and read back: what the quantized graph computes with.
fn fake_quantize(t: &Tensor, dtype: DType, quant: &Quant) -> Result<Tensor, String> {
    let q = quantize_tensor(t, dtype, quant)?;
    let ty = TensorType::new(dtype, t.shape().to_vec()).with_quant(quant.clone());
    Tensor::from_f32(t.shape().to_vec(), real_values(&q, &ty)?).map_err(|e| e.to_string())
}

fn prepare_layer(
    graph: &Graph,
    plan: &QuantPlan,
    scheme: &QuantScheme,
    id: NodeId,
) -> Result<Option<Layer>, QuantError> {
    let node = graph.node(id);
    let Some(op) = without_activation(&node.op) else {
        return Ok(None);
    };
    let err = |msg: String| QuantError::Node {
        node: node.name.clone(),
        op: node.op.mnemonic(),
        msg,
    };
    let ins = node.inputs();
    let Some(x_params) = plan.value(ins[0]) else {
        return Ok(None);
    };
    let weight = graph
        .const_tensor(ins[1])
        .ok_or_else(|| err("weight is not a constant".into()))?
        .clone();
    let axis = match &node.op {
        Op::ConvTranspose(_) => 1,
        Op::Gemm(g) if !g.trans_b => 1,
        _ => 0,
    };
    let w_quant = weight_params(&weight, axis, scheme).map_err(|e| err(e.to_string()))?;
    let weight_q = fake_quantize(&weight, DType::I8, &w_quant).map_err(err)?;
    let bias = match ins.get(2) {
        Some(&b) => Some(
            graph
                .const_tensor(b)
                .ok_or_else(|| err("bias is not a constant".into()))?
                .clone(),
        ),
        None => None,
    };
    let bias_q = match &bias {
        None => None,
        Some(b) => {
            let values = b
                .as_f32()
                .ok_or_else(|| err("bias is not f32".into()))?
                .to_vec();
            let per_channel = match (&node.op, &w_quant) {
                (Op::ConvTranspose(_), Quant::PerAxis { scales, .. }) => Quant::PerAxis {
                    axis: 0,
                    scales: (0..values.len())
                        .map(|c| scales[c % scales.len()])
                        .collect(),
                    zero_points: vec![0; values.len()],
                },
                _ => w_quant.clone(),
            };
            let (s_x, _) = x_params.quant.params_at(0);
            let qb = quantize_bias(&values, s_x, &per_channel).map_err(|e| err(e.to_string()))?;
            let reals: Vec<f32> = qb
                .values
                .iter()
                .enumerate()
                .map(|(c, &v)| v as f32 * qb.quant.params_at(c).0)
                .collect();
            Some(Tensor::from_f32(b.shape().to_vec(), reals).map_err(|e| err(e.to_string()))?)
        }
    };
    let channels = node.outputs[0].ty.shape.get(1).copied().unwrap_or(0);
    Ok(Some(Layer {
        node: id,
        op,
        weight,
        bias,
        weight_q,
        bias_q,
        input_type: graph.value_type(ins[0]).clone(),
        output_type: node.outputs[0].ty.clone(),
        diff: vec![0.0; channels],
        count: 0,
    }))
}

impl Layer {
    fn observe(&mut self, x: &Tensor, x_q: &Tensor) -> Result<(), String> {
        let w_ty = TensorType::f32(self.weight.shape().to_vec());
        let run = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| -> Result<Vec<f32>, String> {
            let mut args = vec![x, w];
            let mut types = vec![&self.input_type, &w_ty];
            let b_ty = b.map(|b| TensorType::f32(b.shape().to_vec()));
            if let (Some(b), Some(t)) = (b, b_ty.as_ref()) {
                args.push(b);
                types.push(t);
            }
            let mut out = eval_op(
                &self.op,
                &args,
                &types,
                std::slice::from_ref(&self.output_type),
            )?;
            Ok(out.remove(0).to_f32_vec())
        };
        let y = run(x, &self.weight, self.bias.as_ref())?;
        let y_q = run(x_q, &self.weight_q, self.bias_q.as_ref())?;
        let shape = &self.output_type.shape;
        let channels = self.diff.len();
        let inner: usize = shape.get(2..).map_or(1, |s| s.iter().product());
        for (i, (a, b)) in y.iter().zip(&y_q).enumerate() {
            self.diff[(i / inner.max(1)) % channels.max(1)] += (*a - *b) as f64;
        }
        self.count += y.len() / channels.max(1);
        Ok(())
    }
}

/// Per-channel bias corrections for every conv, conv_transpose and gemm the plan quantizes,
/// measured on `samples`.
pub fn measure_bias_corrections<I>(
    graph: &Graph,
    plan: &QuantPlan,
    scheme: &QuantScheme,
    samples: I,
) -> Result<BiasCorrections, QuantError>
where
    I: IntoIterator<Item = Result<Vec<Tensor>, CalibError>>,
{
    let mut layers = Vec::new();
    for id in graph.topo_order()? {
        if plan.role(id) == Some(NodeRole::Compute) {
            if let Some(layer) = prepare_layer(graph, plan, scheme, id)? {
                layers.push(layer);
            }
        }
    }
    // Layers by the value they read, so each is measured as soon as its input exists.
    let mut by_input: HashMap<ValueId, Vec<usize>> = HashMap::new();
    for (i, l) in layers.iter().enumerate() {
        by_input
            .entry(graph.node(l.node).inputs()[0])
            .or_default()
            .push(i);
    }
    let mut count = 0;
    for (index, sample) in samples.into_iter().enumerate() {
        let sample = sample.map_err(|source| QuantError::Data {
            sample: index,
            source,
        })?;
        let mut failure: Option<QuantError> = None;
        run_observed(graph, &sample, &mut |v, t| {
            if failure.is_some() {
                return;
            }
            let Some(consumers) = by_input.get(&v) else {
                return;
            };
            let Some(params) = plan.value(v) else { return };
            let x_q = match fake_quantize(t, params.dtype, &params.quant) {
                Ok(x_q) => x_q,
                Err(msg) => {
                    failure = Some(QuantError::Report(msg));
                    return;
                }
            };
            for &i in consumers {
                if let Err(msg) = layers[i].observe(t, &x_q) {
                    let node = graph.node(layers[i].node);
                    failure = Some(QuantError::Node {
                        node: node.name.clone(),
                        op: node.op.mnemonic(),
                        msg,
                    });
                    return;
                }
            }
        })
        .map_err(|source| QuantError::Run {
            graph: "float",
            sample: index,
            source,
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        count += 1;
    }
    if count == 0 {
        return Err(QuantError::NoSamples);
    }
    Ok(layers
        .into_iter()
        .map(|l| {
            let n = l.count.max(1) as f64;
            (
                graph.node(l.node).name.clone(),
                l.diff.iter().map(|d| (d / n) as f32).collect(),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuantizeConfig;
    use crate::insert::insert_qdq;
    use crate::plan::plan;
    use crate::test_util::calibration_of;
    use kiln_ir::text::parse_graph;
    use kiln_ir::TensorData;
    use std::collections::BTreeSet;

    #[test]
    fn the_correction_is_the_weight_rounding_error_times_the_input() {
        // y = 1.0·x0 + 0.35·x1 with x = [1, 1]. x in [1, 1] → u8 range [0, 1], scale
        // 1/255: 1 quantizes to 255 and reads back as 1. The weight channel has max |w| = 1:
        // scale 1/127; 0.35·127 = 44.45 rounds to 44, read back as 44/127. The float output
        // is 1.35, the quantized one 1 + 44/127, so the correction is 0.35 − 44/127 =
        // 0.0035433.
        let g = parse_graph(
            "graph @c(%x: f32[1,2,1,1]) -> (f32[1,1,1,1]) {
  %w = const @c0 : f32[1,2,1,1] = [1.0, 0.35]
  %y = conv(%x, %w) {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], groups=1} : f32[1,1,1,1]
  return %y
}",
        )
        .unwrap();
        let cal = calibration_of(&g, &[("x", 1.0, 1.0), ("y", 0.0, 2.0)]);
        let cfg = QuantizeConfig::default();
        let p = plan(&g, &cal, &cfg, &BTreeSet::new()).unwrap();
        let x = Tensor::from_f32(vec![1, 2, 1, 1], vec![1.0, 1.0]).unwrap();
        let corrections =
            measure_bias_corrections(&g, &p, &cfg.scheme, [Ok(vec![x.clone()]), Ok(vec![x])])
                .unwrap();
        let want = 0.35 - 44.0 / 127.0;
        assert!(
            (corrections["y"][0] as f64 - want).abs() < 1e-6,
            "{corrections:?} vs {want}"
        );
        // Applied by insertion as a new i32 bias of scale s_x·s_w = 1/(255·127):
        // 0.0035433·32385 = 114.75 → 115.
        let qdq = insert_qdq(&g, &p, &cfg.scheme, &corrections).unwrap().graph;
        let bias = qdq
            .node_ids()
            .find(|&id| qdq.node(id).outputs[0].name == "y.b.q")
            .expect("a bias was added");
        assert_eq!(
            qdq.const_tensor(ValueId {
                node: bias,
                port: 0
            })
            .unwrap()
            .data(),
            &TensorData::I32(vec![115])
        );
    }
}
