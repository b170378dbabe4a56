//! Q/DQ insertion: apply a [`QuantPlan`] to its float graph, giving the QDQ form —
//! onnxruntime's `quantize_static` QDQ output, and kiln's fake-quantized graph:
//!
//! - every quantized activation `v` gets `v.q = quantize(v)` and `v.dq = dequantize(v.q)`,
//!   and every consumer reads `v.dq` (float consumers too: that dequantize is the explicit
//!   boundary of a float island);
//! - a compute node reads its weight as `dequantize(w.q)`, `w.q` an i8 constant quantized
//!   symmetrically per output channel (axis 0; axis 1 for conv_transpose; the output column
//!   for gemm/matmul), and its bias as `dequantize(b.q)`, `b.q` i32 with scale `s_x·s_w[c]`
//!   and zero point 0;
//! - a quantized graph output is `dequantize(v.q)` under the output's name (the float value
//!   becomes `v.float`).
//!
//! Insertion is not an equality — it changes values, by design — so it is a plain pass driven
//! by the plan, not a rewrite an extractor could take or leave. The `quantize` rules
//! (`passes/quantize.rules`) then turn this form into integer ops.

use crate::guards::{bias_limit as guard_bias_limit, finite_weight, max_offset, reduction_length};
use crate::plan::{ActivationQuant, NodeRole, QuantPlan};
use crate::rebuild::GraphBuilder;
use crate::scheme::{quantize_bias, weight_params, QuantScheme};
use crate::QuantError;
use kiln_ir::{DType, Graph, Node, Op, Quant, Tensor, TensorType, ValueId};
use std::collections::HashMap;

/// Per-channel additions to the float biases of compute nodes, by node name (bias
/// correction).
pub type BiasCorrections = HashMap<String, Vec<f32>>;

/// The QDQ graph and what insertion noticed.
#[derive(Clone, Debug)]
pub struct QdqGraph {
    pub graph: Graph,
    /// E.g. biases that saturated i32 (their scale `s_x·s_w` is too small for them).
    pub warnings: Vec<String>,
}

/// Quantize an f32 tensor with `quant` into `dtype` exactly as the interpreter's (and
/// onnxruntime's) QuantizeLinear does.
pub(crate) fn quantize_tensor(t: &Tensor, dtype: DType, quant: &Quant) -> Result<Tensor, String> {
    let in_ty = TensorType::new(t.dtype(), t.shape().to_vec());
    let out_ty = TensorType::new(dtype, t.shape().to_vec()).with_quant(quant.clone());
    let mut out = kiln_interp::eval_op(&Op::Quantize, &[t], &[&in_ty], &[out_ty])?;
    Ok(out.remove(0))
}

/// Where the output channels of a compute node's weight are, and how many of them.
fn weight_axis(op: &Op, w: &TensorType) -> usize {
    match op {
        Op::ConvTranspose(_) => 1,
        Op::Gemm(g) if g.trans_b => 0,
        Op::Gemm(_) | Op::MatMul => w.rank() - 1,
        _ => 0,
    }
}

struct Inserter<'a> {
    b: GraphBuilder<'a>,
    plan: &'a QuantPlan,
    scheme: &'a QuantScheme,
    /// The dequantized form of each quantized value (what consumers read).
    dequantized: HashMap<ValueId, ValueId>,
    warnings: Vec<String>,
}

impl Inserter<'_> {
    /// The value a consumer reads for old value `v`.
    fn read(&mut self, v: ValueId) -> ValueId {
        if let Some(&dq) = self.dequantized.get(&v) {
            return dq;
        }
        self.mapped(v)
    }

    /// The copy of `v`, copying its constant on first use (constants are copied only where
    /// something reads them as they are, so replaced weights leave no dead copies).
    fn mapped(&mut self, v: ValueId) -> ValueId {
        if matches!(self.b.old.node(v.node).op, Op::Const(_)) && self.b.try_get(v).is_none() {
            self.b.copy_node(v.node);
        }
        self.b.get(v)
    }

    /// `new.q = quantize(new)`, `dequantize(new.q)`; the dequantized value is named `dq_name`
    /// (the `.dq` name, or the graph output's own name).
    fn quantize_value(&mut self, old: ValueId, new: ValueId, params: &ActivationQuant) {
        let name = self.b.g.value_name(new).to_string();
        let is_output = self.b.old.outputs().contains(&old)
            && !matches!(self.b.old.node(old.node).op, Op::Input { .. });
        let dq_name = if is_output {
            // the graph output keeps its name on the dequantized value
            let float_name = self.b.fresh(&format!("{name}.float"));
            self.b.g.output_mut(new).name = float_name;
            name.clone()
        } else {
            self.b.fresh(&format!("{name}.dq"))
        };
        let shape = self.b.g.value_type(new).shape.clone();
        let q_ty = TensorType::new(params.dtype, shape.clone()).with_quant(params.quant.clone());
        let q = self
            .b
            .add_node(&format!("{name}.q"), Op::Quantize, &[new], q_ty);
        let dq = self.b.add_named_node(
            &dq_name,
            &dq_name,
            Op::Dequantize,
            &[q],
            TensorType::f32(shape),
        );
        self.dequantized.insert(old, dq);
    }

    /// `dequantize(c)` for a new quantized constant `c` named after `base`.
    fn dequantized_const(&mut self, base: &str, t: Tensor, quant: Quant) -> ValueId {
        let shape = t.shape().to_vec();
        let c = self.b.add_const(&format!("{base}.q"), t, Some(quant));
        self.b.add_node(
            &format!("{base}.dq"),
            Op::Dequantize,
            &[c],
            TensorType::f32(shape),
        )
    }

    /// Inputs of a compute node: the activation dequantized, the weight and bias quantized
    /// behind dequantizes.
    fn compute_inputs(
        &mut self,
        node: &Node,
        corrections: Option<&Vec<f32>>,
    ) -> Result<Vec<ValueId>, QuantError> {
        let old = self.b.old;
        let ins = node.inputs();
        // Only ops with a bias input take a correction; a gemm without C gets one only where
        // C would be added as it is (beta 1).
        let corrections = match &node.op {
            Op::MatMul => None,
            Op::Gemm(g) if ins.len() < 3 && g.beta != 1.0 => None,
            _ => corrections,
        };
        let node_err = |msg: String| QuantError::Node {
            node: node.name.clone(),
            op: node.op.mnemonic(),
            msg,
        };
        let x = self.read(ins[0]);
        let x_params = self
            .plan
            .value(ins[0])
            .ok_or_else(|| node_err("its input was not planned as quantized".into()))?;
        let (s_x, _) = x_params.quant.params_at(0);

        let w_ty = old.value_type(ins[1]).clone();
        let w = old
            .const_tensor(ins[1])
            .ok_or_else(|| node_err("weight is not a constant".into()))?;
        let axis = weight_axis(&node.op, &w_ty);
        let w_quant =
            weight_params(w, axis, self.scheme).map_err(|e| node_err(format!("weight: {e}")))?;
        let w_range = self
            .scheme
            .weight()
            .int_range()
            .map_err(|e| node_err(format!("weight: {e}")))?;
        let (w, non_finite) = finite_weight(w, &w_quant, w_range);
        if non_finite.total() > 0 {
            self.warnings.push(format!(
                "node '{}': weight '{}' has {} NaN and {} infinite values (of {}): NaN is \
                 quantized as 0, ±infinity as its channel's saturated end",
                node.name,
                old.value_name(ins[1]),
                non_finite.nan,
                non_finite.infinite,
                w.numel()
            ));
        }
        // The accumulator bound (docs/quantization.md, "Numerical guards"): reject a K that
        // could overflow i32, and keep the bias within the headroom left.
        let bias_limit = match reduction_length(&node.op, w.shape()) {
            Some(k) => {
                let x_range = self
                    .scheme
                    .activation()
                    .int_range()
                    .map_err(|e| node_err(format!("input: {e}")))?;
                let x_offset = max_offset(x_range, x_params.quant.params_at(0).1);
                let w_offset = match &w_quant {
                    Quant::PerTensor { zero_point, .. } => max_offset(w_range, *zero_point),
                    Quant::PerAxis { zero_points, .. } => zero_points
                        .iter()
                        .map(|&z| max_offset(w_range, z))
                        .max()
                        .unwrap_or(0),
                };
                guard_bias_limit(k, x_offset, w_offset).map_err(node_err)?
            }
            None => i32::MAX as i64,
        };
        let w_q = quantize_tensor(&w, DType::I8, &w_quant).map_err(node_err)?;
        let w_name = old.value_name(ins[1]).to_string();
        let w_dq = self.dequantized_const(&w_name, w_q, w_quant.clone());

        let channels = node.outputs[0].ty.shape.get(1).copied().unwrap_or(0);
        let bias: Option<(Vec<f32>, String)> = match ins.get(2) {
            Some(&c) => {
                let t = old
                    .const_tensor(c)
                    .and_then(|t| t.as_f32())
                    .ok_or_else(|| node_err("bias is not an f32 constant".into()))?;
                Some((t.to_vec(), old.value_name(c).to_string()))
            }
            None => corrections.map(|_| (vec![0.0; channels], format!("{}.b", node.name))),
        };
        let mut inputs = vec![x, w_dq];
        if let Some((mut values, name)) = bias {
            if let Some(corr) = corrections {
                if corr.len() != values.len() {
                    return Err(node_err(format!(
                        "bias correction has {} channels, the bias {}",
                        corr.len(),
                        values.len()
                    )));
                }
                for (b, c) in values.iter_mut().zip(corr) {
                    *b += c;
                }
            }
            // One bias scale per output channel: conv_transpose's weight has C_out/groups
            // scales along axis 1, repeated for each group.
            let per_channel = match (&node.op, &w_quant) {
                (
                    Op::ConvTranspose(_),
                    Quant::PerAxis {
                        scales,
                        zero_points,
                        ..
                    },
                ) => Quant::PerAxis {
                    axis: 0,
                    scales: (0..values.len())
                        .map(|c| scales[c % scales.len()])
                        .collect(),
                    zero_points: (0..values.len())
                        .map(|c| zero_points[c % zero_points.len()])
                        .collect(),
                },
                _ => w_quant,
            };
            let non_finite_bias = values.iter().filter(|b| !b.is_finite()).count();
            if non_finite_bias > 0 {
                self.warnings.push(format!(
                    "node '{}': bias '{}' has {} NaN or infinite values (of {}): NaN is \
                     quantized as 0, ±infinity saturates",
                    node.name,
                    name,
                    non_finite_bias,
                    values.len()
                ));
            }
            let mut qb = quantize_bias(&values, s_x, &per_channel)
                .map_err(|e| node_err(format!("bias: {e}")))?;
            // |acc| ≤ i32::MAX − bias_limit, so a bias within ±bias_limit cannot overflow.
            let limit = bias_limit.min(i32::MAX as i64) as i32;
            for q in &mut qb.values {
                if q.unsigned_abs() > limit as u32 {
                    if *q != i32::MAX && *q != i32::MIN {
                        qb.saturated += 1;
                    }
                    *q = (*q).clamp(-limit, limit);
                }
            }
            if qb.saturated > 0 {
                self.warnings.push(format!(
                    "node '{}': {} of {} bias values saturated (beyond i32, or beyond the accumulator's headroom: scale s_x·s_w too small for them)",
                    node.name,
                    qb.saturated,
                    values.len()
                ));
            }
            let t = Tensor::new(vec![values.len()], kiln_ir::TensorData::I32(qb.values))
                .map_err(|e| node_err(e.to_string()))?;
            inputs.push(self.dequantized_const(&name, t, qb.quant));
        }
        Ok(inputs)
    }
}

/// Insert Q/DQ pairs per `plan` into its float graph, with optional bias corrections.
pub fn insert_qdq(
    graph: &Graph,
    plan: &QuantPlan,
    scheme: &QuantScheme,
    corrections: &BiasCorrections,
) -> Result<QdqGraph, QuantError> {
    let mut ins = Inserter {
        b: GraphBuilder::new(graph),
        plan,
        scheme,
        dequantized: HashMap::new(),
        warnings: Vec::new(),
    };
    for id in graph.topo_order()? {
        let node = graph.node(id);
        let new_outputs: Vec<ValueId> = match &node.op {
            Op::Const(_) => continue,
            Op::Input { .. } => vec![ins.b.get(ValueId { node: id, port: 0 })],
            _ => {
                let inputs = if plan.role(id) == Some(NodeRole::Compute) {
                    ins.compute_inputs(node, corrections.get(&node.name))?
                } else {
                    node.inputs().iter().map(|&v| ins.read(v)).collect()
                };
                ins.b.copy_node_with_inputs(id, &inputs)
            }
        };
        for (port, new) in new_outputs.into_iter().enumerate() {
            let old = ValueId {
                node: id,
                port: port as u16,
            };
            if let Some(params) = plan.value(old) {
                let params = params.clone();
                ins.quantize_value(old, new, &params);
            }
        }
    }
    let outputs: Vec<ValueId> = graph
        .outputs()
        .iter()
        .map(|&v| match graph.node(v.node).op {
            Op::Input { .. } => ins.b.get(v),
            _ => ins.read(v),
        })
        .collect();
    let Inserter { b, warnings, .. } = ins;
    let out = b.finish(outputs);
    kiln_ir::verify(&out).map_err(QuantError::Verify)?;
    Ok(QdqGraph {
        graph: out,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuantizeConfig;
    use crate::plan::plan;
    use crate::test_util::calibration_of;
    use kiln_ir::text::parse_graph;
    use kiln_ir::TensorData;
    use std::collections::BTreeSet;

    const CONV: &str = "graph @c(%x: f32[1,2,1,1]) -> (f32[1,2,1,1]) {
  %w = const @c0 : f32[2,2,1,1] = [0.3, -1.0, 0.25, 0.1]
  %b = const @c1 : f32[2] = [0.1, -0.05]
  %y = conv(%x, %w, %b) {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], groups=1} : f32[1,2,1,1]
  return %y
}";

    fn qdq() -> Graph {
        let g = parse_graph(CONV).unwrap();
        // x in [0, 2.55]: u8 scale 2.55/255 = 0.01, zero point 0; y in [-1, 1.55]: scale
        // 2.55/255 = 0.01, zero point round(0 − (−1)/0.01) = 100.
        let cal = calibration_of(&g, &[("x", 0.0, 2.55), ("y", -1.0, 1.55)]);
        let cfg = QuantizeConfig::default();
        let p = plan(&g, &cal, &cfg, &BTreeSet::new()).unwrap();
        insert_qdq(&g, &p, &cfg.scheme, &BiasCorrections::new())
            .unwrap()
            .graph
    }

    fn value<'a>(g: &'a Graph, name: &str) -> (ValueId, &'a TensorType) {
        let v = g
            .node_ids()
            .map(|id| ValueId { node: id, port: 0 })
            .find(|&v| g.value_name(v) == name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", kiln_ir::text::print_graph(g)));
        (v, g.value_type(v))
    }

    #[test]
    fn non_finite_weights_and_biases_warn_and_get_defined_values() {
        let g = parse_graph(
            "graph @c(%x: f32[1,2,1,1]) -> (f32[1,2,1,1]) {
  %w = const @c0 : f32[2,2,1,1] = [nan, -1.0, inf, 0.25]
  %b = const @c1 : f32[2] = [nan, 0.5]
  %y = conv(%x, %w, %b) {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], groups=1} : f32[1,2,1,1]
  return %y
}",
        )
        .unwrap();
        let cal = calibration_of(&g, &[("x", 0.0, 2.55), ("y", -1.0, 1.55)]);
        let cfg = QuantizeConfig::default();
        let p = plan(&g, &cal, &cfg, &BTreeSet::new()).unwrap();
        let q = insert_qdq(&g, &p, &cfg.scheme, &BiasCorrections::new()).unwrap();
        let joined = q.warnings.join("\n");
        assert!(
            joined.contains("node 'y': weight 'w' has 1 NaN and 1 infinite values (of 4)"),
            "{joined}"
        );
        assert!(joined.contains("bias 'b' has 1 NaN"), "{joined}");
        // Channel 0's finite values {−1} give scale 1/127: NaN → 0, −1 → −127. Channel 1's
        // finite {0.25} give scale 0.25/127: +∞ → its saturated end 127, 0.25 → 127.
        let (wq, _) = value(&q.graph, "w.q");
        assert_eq!(
            q.graph.const_tensor(wq).unwrap().data(),
            &TensorData::I8(vec![0, -127, 127, 127])
        );
        // The NaN bias is 0; 0.5 / (0.01 · 0.25/127) = 25400.
        let (bq, _) = value(&q.graph, "b.q");
        assert_eq!(
            q.graph.const_tensor(bq).unwrap().data(),
            &TensorData::I32(vec![0, 25400])
        );
    }

    #[test]
    fn a_reduction_that_could_overflow_i32_is_rejected_naming_the_node() {
        // u8 input (zero point 0: |x − zp| ≤ 255) times narrow i8 weights (|w| ≤ 127):
        // 32385 per product; 2^31 − 1 = 2147483647 allows K ≤ 66311. K = 66312 must be
        // rejected, K = 66311 accepted.
        let graph = |k: usize| {
            parse_graph(&format!(
                "graph @m(%x: f32[1,{k}]) -> (f32[1,1]) {{
  %w = const @c0 : f32[{k},1] = normal(seed=1, mean=0.0, std=0.1)
  %y = matmul(%x, %w) : f32[1,1]
  return %y
}}"
            ))
            .unwrap()
        };
        let cfg = QuantizeConfig::default();
        for (k, ok) in [(66_311, true), (66_312, false)] {
            let g = graph(k);
            let cal = calibration_of(&g, &[("x", 0.0, 1.0), ("y", -1.0, 1.0)]);
            let p = plan(&g, &cal, &cfg, &BTreeSet::new()).unwrap();
            match insert_qdq(&g, &p, &cfg.scheme, &BiasCorrections::new()) {
                Ok(_) => assert!(ok, "K = {k} accepted"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!ok, "K = {k} rejected: {msg}");
                    assert!(
                        msg.contains("node 'y' (matmul)") && msg.contains("K = 66312"),
                        "{msg}"
                    );
                }
            }
        }
    }

    #[test]
    fn conv_weights_and_bias_are_quantized_by_hand() {
        let g = qdq();
        let (xq, xq_ty) = value(&g, "x.q");
        assert_eq!(g.node(xq.node).op, Op::Quantize);
        assert_eq!(xq_ty.dtype, DType::U8);
        let (s, z) = xq_ty.quant.as_ref().unwrap().params_at(0);
        assert!((s - 0.01).abs() < 1e-9 && z == 0, "{s} {z}");
        let (_, yq_ty) = value(&g, "y.q");
        let (s, z) = yq_ty.quant.as_ref().unwrap().params_at(0);
        assert!((s - 0.01).abs() < 1e-9 && z == 100, "{s} {z}");
        // Weights, symmetric i8 per output channel over −127..127: channel 0 max |w| = 1 →
        // scale 2/254 = 1/127, 0.3·127 = 38.1 → 38, −1 → −127; channel 1 max 0.25 → scale
        // 0.25/127, 0.25 → 127, 0.1/0.25·127 = 50.8 → 51.
        let (wq, wq_ty) = value(&g, "w.q");
        assert_eq!(
            g.const_tensor(wq).unwrap().data(),
            &TensorData::I8(vec![38, -127, 127, 51])
        );
        let Some(Quant::PerAxis {
            axis: 0, scales, ..
        }) = &wq_ty.quant
        else {
            panic!("{wq_ty:?}")
        };
        assert!((scales[0] - 1.0 / 127.0).abs() < 1e-9 && (scales[1] - 0.25 / 127.0).abs() < 1e-9);
        // Bias, i32 with scale s_x·s_w[c]: 0.1 / (0.01/127) = 1270, −0.05 / (0.01·0.25/127)
        // = −2540.
        let (bq, _) = value(&g, "b.q");
        assert_eq!(
            g.const_tensor(bq).unwrap().data(),
            &TensorData::I32(vec![1270, -2540])
        );
        // The conv reads dequantized operands; the graph output keeps its name on the
        // dequantized value.
        let (y, _) = value(&g, "y");
        assert_eq!(g.node(y.node).op, Op::Dequantize);
        assert_eq!(g.outputs(), &[y]);
        let (yf, _) = value(&g, "y.float");
        assert!(matches!(g.node(yf.node).op, Op::Conv(_)));
    }
}
