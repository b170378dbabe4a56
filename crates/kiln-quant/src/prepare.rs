//! Before calibration: un-fuse what the integer ops cannot express. `-O1` fuses residual adds
//! and every activation into convs, but a `qconv` has no residual input and can only clamp
//! (relu, clip) its requantized output. For the nodes that will be quantized:
//!
//! - `conv(x, w, b, r) {act}` becomes `act(add(conv(x, w, b), r))`: the add is the quantized
//!   residual add, requantized on its own (onnxruntime's QDQ form of a ResNet block);
//! - a conv or gemm with a fused sigmoid, tanh, leaky relu, hard sigmoid or hard swish keeps
//!   the op and gets the activation as a separate float op after it.
//!
//! The f32 arithmetic is unchanged (the fused conv adds the bias, then the residual, then
//! applies the activation, in that order), so the result is the float reference the
//! quantized graph is compared with, and the values calibration observes.

use crate::rebuild::GraphBuilder;
use kiln_ir::{Activation, BinaryOp, Graph, IrError, Node, Op, ValueId};

/// The activation a quantized output cannot clamp to (anything but relu and clip).
fn non_clamp(act: &Option<Activation>) -> Option<Activation> {
    match act {
        None | Some(Activation::Relu) | Some(Activation::Clip { .. }) => None,
        Some(a) => Some(a.clone()),
    }
}

/// Un-fuse residuals and non-clamp activations of the conv/gemm nodes `selected` accepts.
/// Node and value names are kept where the value survives: the final value of a split node
/// keeps its name (consumers and graph outputs are unaffected), the new intermediate ones
/// are `NAME.conv`, `NAME.residual`, `NAME.pre`.
pub fn unfuse_for_quantization(
    graph: &Graph,
    selected: &dyn Fn(&Node) -> bool,
) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new(graph);
    for id in graph.topo_order()? {
        let node = graph.node(id);
        if node.op.is_source() {
            if matches!(node.op, Op::Const(_)) {
                b.copy_node(id);
            }
            continue;
        }
        if !selected(node) {
            b.copy_node(id);
            continue;
        }
        let inputs: Vec<ValueId> = node.inputs().iter().map(|&v| b.get(v)).collect();
        let out = &node.outputs[0];
        let result = match &node.op {
            Op::Conv(attrs) if inputs.len() == 4 || non_clamp(&attrs.act).is_some() => {
                let residual = inputs.get(3).copied();
                let act = attrs.act.clone();
                let mut plain = attrs.clone();
                plain.act = None;
                let pre_name = if residual.is_some() {
                    format!("{}.conv", out.name)
                } else {
                    format!("{}.pre", out.name)
                };
                let pre_name = b.fresh(&pre_name);
                let conv = b.add_named_node(
                    &node.name,
                    &pre_name,
                    Op::Conv(plain),
                    &inputs[..inputs.len().min(3)],
                    out.ty.clone(),
                );
                let summed = match residual {
                    None => conv,
                    Some(r) => {
                        let sum_name = if act.is_some() {
                            b.fresh(&format!("{}.residual", out.name))
                        } else {
                            out.name.clone()
                        };
                        let node_name = b.fresh(&format!("{}.residual", node.name));
                        b.add_named_node(
                            &node_name,
                            &sum_name,
                            Op::Binary(BinaryOp::Add),
                            &[conv, r],
                            out.ty.clone(),
                        )
                    }
                };
                match act {
                    None => summed,
                    Some(act) => {
                        let node_name = b.fresh(&format!("{}.act", node.name));
                        b.add_named_node(
                            &node_name,
                            &out.name,
                            Op::Activation(act),
                            &[summed],
                            out.ty.clone(),
                        )
                    }
                }
            }
            Op::Gemm(attrs) if non_clamp(&attrs.act).is_some() => {
                let act = attrs.act.clone().expect("non_clamp saw an activation");
                let mut plain = attrs.clone();
                plain.act = None;
                let pre_name = b.fresh(&format!("{}.pre", out.name));
                let gemm = b.add_named_node(
                    &node.name,
                    &pre_name,
                    Op::Gemm(plain),
                    &inputs,
                    out.ty.clone(),
                );
                let node_name = b.fresh(&format!("{}.act", node.name));
                b.add_named_node(
                    &node_name,
                    &out.name,
                    Op::Activation(act),
                    &[gemm],
                    out.ty.clone(),
                )
            }
            _ => {
                b.copy_node(id);
                continue;
            }
        };
        b.set(ValueId { node: id, port: 0 }, result);
    }
    let outputs = graph.outputs().iter().map(|&v| b.get(v)).collect();
    let out = b.finish(outputs);
    kiln_ir::verify(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::text::{parse_graph, print_graph};
    use kiln_ir::{Generator, Tensor};

    const RESIDUAL: &str = "graph @block(%x: f32[1,2,4,4], %r: f32[1,3,4,4]) -> (f32[1,3,4,4]) {
  %w = const @c0 : f32[3,2,3,3] = normal(seed=1, mean=0.0, std=0.3)
  %b = const @c1 : f32[3] = normal(seed=2, mean=0.0, std=0.1)
  %w2 = const @c2 : f32[3,3,1,1] = normal(seed=3, mean=0.0, std=0.3)
  %y = conv(%x, %w, %b, %r) {kernel=[3,3], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], groups=1, act=relu} : f32[1,3,4,4] @conv1
  %z = conv(%y, %w2, %b) {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], groups=1, act=hard_swish} : f32[1,3,4,4] @conv2
  return %z
}";

    fn graph() -> Graph {
        parse_graph(RESIDUAL).unwrap()
    }

    #[test]
    fn residual_and_hard_swish_are_split_off_and_values_are_unchanged() {
        let g = graph();
        let out = unfuse_for_quantization(&g, &|_| true).unwrap();
        let text = print_graph(&out);
        assert!(text.contains("%y.conv = conv(%x, %w, %b) {"), "{text}");
        assert!(text.contains("%y.residual = add(%y.conv, %r)"), "{text}");
        assert!(text.contains("%y = relu(%y.residual)"), "{text}");
        assert!(text.contains("%z.pre = conv(%y, %w2, %b)"), "{text}");
        assert!(text.contains("%z = hard_swish(%z.pre)"), "{text}");
        // the same f32 operations in the same order: bit-identical results
        let inputs: Vec<Tensor> = [(vec![1, 2, 4, 4], 5), (vec![1, 3, 4, 4], 6)]
            .into_iter()
            .map(|(shape, seed)| {
                Generator::Normal {
                    seed,
                    mean: 0.0,
                    std: 1.0,
                }
                .generate(kiln_ir::DType::F32, &shape)
                .unwrap()
            })
            .collect();
        let want = kiln_interp::run(&g, &inputs).unwrap();
        let got = kiln_interp::run(&out, &inputs).unwrap();
        assert!(want[0].bitwise_eq(&got[0]));
    }

    #[test]
    fn unselected_nodes_stay_fused() {
        let g = graph();
        let out = unfuse_for_quantization(&g, &|n| n.name == "conv2").unwrap();
        let text = print_graph(&out);
        assert!(text.contains("%y = conv(%x, %w, %b, %r)"), "{text}");
        assert!(text.contains("%z = hard_swish(%z.pre)"), "{text}");
    }
}
