//! Dynamic quantization (`kiln quantize --dynamic`): MatMul and Gemm with constant weights
//! become int8 matrix multiplies whose activation parameters are computed at run time from
//! each input's own range — onnxruntime's `quantize_dynamic` and PyTorch's
//! `quantize_dynamic`. No calibration data.
//!
//! Each selected `y = matmul(a, W)` / `y = gemm(a, B, C)` becomes, as onnxruntime writes it:
//!
//! ```text
//! a.q, a.scale, a.zero_point = dynamic_quantize(a)      u8, per tensor, from a's range
//! acc   = matmul_integer(a.q, W.q, a.zero_point)       i32; W.q i8 [K, N], symmetric per column
//! scale = mul(a.scale, W.scale)                         f32 [N], W.scale per column
//! y     = mul(cast<f32>(acc), scale) [+ C] [act]
//! ```
//!
//! One `dynamic_quantize` is shared by every matmul reading the same activation. Everything
//! else stays float.

use crate::guards::{bias_limit, max_offset};
use crate::rebuild::GraphBuilder;
use crate::scheme::{weight_params, QuantScheme};
use crate::QuantError;
use kiln_ir::{BinaryOp, DType, Graph, Node, NodeId, Op, Quant, Tensor, TensorData, ValueId};
use std::collections::HashMap;

/// The result of [`quantize_dynamic`].
#[derive(Clone, Debug)]
pub struct DynamicModel {
    /// The dynamically quantized graph (runs in the interpreter; exports to ONNX as
    /// DynamicQuantizeLinear + MatMulInteger).
    pub graph: Graph,
    /// The matmuls and gemms quantized, by node name.
    pub quantized: Vec<String>,
    /// Matmuls and gemms left in float, with why.
    pub float: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// A weight as `[K, N]` f32 values (transposed from a gemm's `[N, K]` with transB), or why
/// the node cannot be dynamically quantized.
fn weight_kn(graph: &Graph, node: &Node) -> Result<(Vec<f32>, usize, usize), String> {
    let ins = node.inputs();
    let w = graph
        .const_tensor(ins[1])
        .ok_or("the weight is not a constant")?;
    let values = w.as_f32().ok_or("the weight is not f32")?;
    let [rows, cols] = w.shape()[..] else {
        return Err(format!("the weight has shape {:?}, not [K, N]", w.shape()));
    };
    let trans_b = matches!(&node.op, Op::Gemm(g) if g.trans_b);
    if !trans_b {
        return Ok((values.to_vec(), rows, cols));
    }
    let (n, k) = (rows, cols);
    let mut t = vec![0.0; k * n];
    for r in 0..n {
        for c in 0..k {
            t[c * n + r] = values[r * k + c];
        }
    }
    Ok((t, k, n))
}

/// Whether `node` can be dynamically quantized, as a reason when not.
fn check_node(graph: &Graph, node: &Node) -> Result<(), String> {
    let ins = node.inputs();
    if graph.value_type(ins[0]).dtype != DType::F32 {
        return Err("its input is not f32".into());
    }
    match &node.op {
        Op::MatMul => Ok(()),
        Op::Gemm(g) => {
            if g.trans_a || g.alpha != 1.0 {
                return Err("gemm with transA or alpha ≠ 1".into());
            }
            let n = node.outputs[0].ty.shape.get(1).copied().unwrap_or(0);
            match ins.get(2) {
                None => Ok(()),
                Some(&c) => match graph.const_tensor(c).and_then(Tensor::as_f32) {
                    Some(v) if v.len() == n || v.len() == 1 => Ok(()),
                    _ => Err("gemm C is not a constant [N] bias".into()),
                },
            }
        }
        _ => Err("not a matmul or gemm".into()),
    }
}

/// Dynamically quantize every MatMul/Gemm of `graph` with a constant 2-D weight whose op is
/// selected by `selects` (kiln mnemonics) and whose name is not in `skip`.
pub fn quantize_dynamic(
    graph: &Graph,
    scheme: &QuantScheme,
    selects: &dyn Fn(&str) -> bool,
    skip: &[String],
) -> Result<DynamicModel, QuantError> {
    for name in skip {
        if !graph.node_ids().any(|id| &graph.node(id).name == name) {
            return Err(QuantError::UnknownSkip {
                name: name.clone(),
                hint: String::new(),
            });
        }
    }
    let mut b = GraphBuilder::new(graph);
    let mut quantized = Vec::new();
    let mut float = Vec::new();
    let mut warnings = Vec::new();
    // One dynamic_quantize per activation: (y, scale, zero point).
    let mut dynamic: HashMap<ValueId, [ValueId; 3]> = HashMap::new();
    let w_range = scheme
        .weight()
        .int_range()
        .map_err(|source| QuantError::Scheme {
            value: "weights".into(),
            source,
        })?;
    for id in graph.topo_order()? {
        let node = graph.node(id);
        if !matches!(node.op, Op::MatMul | Op::Gemm(_)) {
            b.copy_node(id);
            continue;
        }
        let eligible = if !selects(node.op.mnemonic()) {
            Err("op not selected for quantization".to_string())
        } else if skip.contains(&node.name) {
            Err("skipped".to_string())
        } else {
            check_node(graph, node).and_then(|()| weight_kn(graph, node))
        };
        let (w, k, n) = match eligible {
            Ok(w) => w,
            Err(reason) => {
                float.push((node.name.clone(), reason));
                b.copy_node(id);
                continue;
            }
        };
        rewrite(
            &mut b,
            graph,
            id,
            (w, k, n),
            scheme,
            w_range,
            &mut dynamic,
            &mut warnings,
        )?;
        quantized.push(node.name.clone());
    }
    let outputs = graph.outputs().iter().map(|&v| b.get(v)).collect();
    let out = b.finish(outputs);
    kiln_ir::verify(&out).map_err(QuantError::Verify)?;
    Ok(DynamicModel {
        graph: out,
        quantized,
        float,
        warnings,
    })
}

/// Replace node `id` (checked by [`check_node`]) by the dynamic int8 form.
#[allow(clippy::too_many_arguments)]
fn rewrite(
    b: &mut GraphBuilder,
    graph: &Graph,
    id: NodeId,
    (w, k, n): (Vec<f32>, usize, usize),
    scheme: &QuantScheme,
    w_range: (i32, i32),
    dynamic: &mut HashMap<ValueId, [ValueId; 3]>,
    warnings: &mut Vec<String>,
) -> Result<(), QuantError> {
    let node = graph.node(id);
    let node_err = |msg: String| QuantError::Node {
        node: node.name.clone(),
        op: node.op.mnemonic(),
        msg,
    };
    let ir = |e: kiln_ir::IrError| node_err(e.to_string());
    let ins = node.inputs();
    let a = ins[0];
    let a_name = graph.value_name(a).to_string();

    let w = Tensor::new(vec![k, n], TensorData::F32(w)).map_err(ir)?;
    let non_finite = w
        .as_f32()
        .expect("built from f32 values")
        .iter()
        .filter(|v| !v.is_finite())
        .count();
    let w_quant = weight_params(&w, 1, scheme).map_err(|e| node_err(format!("weight: {e}")))?;
    let (w, _) = crate::guards::finite_weight(&w, &w_quant, w_range);
    if non_finite > 0 {
        warnings.push(format!(
            "node '{}': weight has {non_finite} NaN or infinite values: NaN is quantized as 0, \
             ±infinity as its column's saturated end",
            node.name
        ));
    }
    // u8 activations with any zero point times the weights: the accumulator bound.
    let w_offset = match &w_quant {
        Quant::PerAxis { zero_points, .. } => zero_points
            .iter()
            .map(|&z| max_offset(w_range, z))
            .max()
            .unwrap_or(0),
        Quant::PerTensor { zero_point, .. } => max_offset(w_range, *zero_point),
    };
    bias_limit(k, 255, w_offset).map_err(node_err)?;
    let w_q = crate::insert::quantize_tensor(&w, DType::I8, &w_quant).map_err(node_err)?;
    let Quant::PerAxis { scales, .. } = &w_quant else {
        unreachable!("weight_params gives per-axis parameters")
    };
    let scales = Tensor::from_f32(vec![n], scales.clone()).map_err(ir)?;

    let [a_q, a_scale, a_zp] = match dynamic.get(&a) {
        Some(v) => *v,
        None => {
            let names = [
                b.fresh(&format!("{a_name}.dynamic_q")),
                b.fresh(&format!("{a_name}.scale")),
                b.fresh(&format!("{a_name}.zero_point")),
            ];
            let node_name = b.fresh(&format!("{a_name}.dynamic_quantize"));
            let outs =
                b.g.add_node(node_name, Op::DynamicQuantize, &[b.get(a)], names.to_vec())
                    .map_err(ir)?;
            let v = [outs[0], outs[1], outs[2]];
            dynamic.insert(a, v);
            v
        }
    };
    let base = node.name.clone();
    let w_name = graph.value_name(ins[1]).to_string();
    let w_q = b.add_const(&format!("{w_name}.q"), w_q, None);
    let w_scale = b.add_const(&format!("{w_name}.scale"), scales, None);
    let add = |b: &mut GraphBuilder, suffix: &str, op: Op, inputs: &[ValueId]| {
        let name = b.fresh(&format!("{base}.{suffix}"));
        b.g.add_node(name.clone(), op, inputs, vec![name])
            .map(|v| v[0])
            .map_err(ir)
    };
    let scale = add(b, "scale", Op::Binary(BinaryOp::Mul), &[a_scale, w_scale])?;
    let acc = add(b, "acc", Op::MatMulInteger, &[a_q, w_q, a_zp])?;
    let acc_f = add(b, "acc_f32", Op::Cast { to: DType::F32 }, &[acc])?;
    let out_name = node.outputs[0].name.clone();
    let bias = match (&node.op, ins.get(2)) {
        (Op::Gemm(g), Some(&c)) => {
            let t = graph
                .const_tensor(c)
                .and_then(Tensor::as_f32)
                .ok_or_else(|| node_err("C is not an f32 constant".into()))?;
            let values: Vec<f32> = if t.len() == 1 {
                vec![t[0] * g.beta; n]
            } else {
                t.iter().map(|&v| v * g.beta).collect()
            };
            Some(Tensor::from_f32(vec![n], values).map_err(ir)?)
        }
        _ => None,
    };
    let act = match &node.op {
        Op::Gemm(g) => g.act.clone(),
        _ => None,
    };
    let mut steps: Vec<(&str, Op, Option<ValueId>)> =
        vec![("scaled", Op::Binary(BinaryOp::Mul), Some(scale))];
    if let Some(bias) = bias {
        let c = b.add_const(&format!("{base}.bias"), bias, None);
        steps.push(("biased", Op::Binary(BinaryOp::Add), Some(c)));
    }
    if let Some(act) = act {
        steps.push(("act", Op::Activation(act), None));
    }
    // The last step takes the node's name and its output's name and type.
    let last_step = steps.len() - 1;
    let mut value = acc_f;
    for (i, (suffix, op, extra)) in steps.into_iter().enumerate() {
        let inputs: Vec<ValueId> = std::iter::once(value).chain(extra).collect();
        value = if i == last_step {
            b.add_named_node(
                &node.name,
                &out_name,
                op,
                &inputs,
                node.outputs[0].ty.clone(),
            )
        } else {
            add(b, suffix, op, &inputs)?
        };
    }
    b.set(ValueId { node: id, port: 0 }, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::text::parse_graph;

    const MLP: &str = "graph @m(%x: f32[1,3]) -> (f32[1,2], f32[1,2]) {
  %w = const @c0 : f32[3,2] = [1.0, 0.0, 0.0, 2.0, 1.0, -1.0]
  %y = matmul(%x, %w) : f32[1,2]
  %b = const @c1 : f32[2,3] = [1.0, 0.0, 1.0, 0.0, 2.0, -1.0]
  %c = const @c2 : f32[2] = [0.25, -0.5]
  %z = gemm(%x, %b, %c) {alpha=1.0, beta=1.0, trans_a=false, trans_b=true} : f32[1,2]
  return %y, %z
}";

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn matmul_and_gemm_by_hand() {
        let g = parse_graph(MLP).unwrap();
        let m = quantize_dynamic(&g, &QuantScheme::default(), &all, &[]).unwrap();
        assert_eq!(m.quantized, ["y", "z"]);
        // one dynamic_quantize shared by both
        let count = |f: &dyn Fn(&Op) -> bool| {
            m.graph
                .node_ids()
                .filter(|&id| f(&m.graph.node(id).op))
                .count()
        };
        assert_eq!(count(&|op| matches!(op, Op::DynamicQuantize)), 1);
        assert_eq!(count(&|op| matches!(op, Op::MatMulInteger)), 2);
        let x = Tensor::from_f32(vec![1, 3], vec![1.0, -1.0, 0.5]).unwrap();
        let out = kiln_interp::run(&m.graph, &[x]).unwrap();
        // x in [−1, 1]: scale f32(2/255), a hair above 2/255, so 1/scale = 127.4999… and
        // the zero point is round(127.4999…) = 127; x.q = round(x/scale) + 127 =
        // [254, 0, 191], x − zp = [127, −127, 64].
        // W columns: max |w| 1 and 2 → scales 1/127, 2/127; W.q = [[127, 0], [0, 127],
        // [127, −64]] (−1/f32(2/127) is −63.5 in f32, half to even → −64).
        // acc = [127·127 + 64·127, −127·127 + 64·(−64)] = [24257, −20225];
        // y = acc · (2/255)·[1/127, 2/127] = [48514/32385, −80900/32385].
        let y = out[0].as_f32().unwrap();
        assert!((y[0] - 48514.0 / 32385.0).abs() < 1e-5, "{y:?}");
        assert!((y[1] + 80900.0 / 32385.0).abs() < 1e-5, "{y:?}");
        // The gemm with transB has the same weight transposed, plus its bias.
        let z = out[1].as_f32().unwrap();
        assert!((z[0] - (48514.0 / 32385.0 + 0.25)).abs() < 1e-5, "{z:?}");
        assert!((z[1] - (-80900.0 / 32385.0 - 0.5)).abs() < 1e-5, "{z:?}");
        // outputs keep their names
        assert_eq!(m.graph.value_name(m.graph.outputs()[1]), "z");
    }

    #[test]
    fn unselected_skipped_and_unknown_nodes() {
        let g = parse_graph(MLP).unwrap();
        let only_matmul = |op: &str| op == "matmul";
        let m = quantize_dynamic(&g, &QuantScheme::default(), &only_matmul, &[]).unwrap();
        assert_eq!(m.quantized, ["y"]);
        assert_eq!(
            m.float,
            [(
                "z".to_string(),
                "op not selected for quantization".to_string()
            )]
        );
        let m = quantize_dynamic(&g, &QuantScheme::default(), &all, &["y".into()]).unwrap();
        assert_eq!(m.quantized, ["z"]);
        let err = quantize_dynamic(&g, &QuantScheme::default(), &all, &["nope".into()]);
        assert!(matches!(err, Err(QuantError::UnknownSkip { .. })));
    }
}
