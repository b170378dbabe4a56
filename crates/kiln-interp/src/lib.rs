//! kiln's reference interpreter: executes an IR [`Graph`] with exact ONNX semantics (integer
//! ops bit-exact with onnxruntime's arithmetic) — the oracle every optimizer pass, the
//! quantizer and the JIT kernels are checked against — and evaluates single ops for the
//! importer's constant folding ([`eval_op`]).
//!
//! Convolutions and matrix products go through a cache-blocked GEMM ([`gemm`]) so that real
//! models (resnet50 at 224×224) run in seconds, with results independent of thread count.

mod conv;
mod elem;
mod elementwise;
pub mod gemm;
mod matmul;
mod movement;
mod pool;
mod quant;
mod reduce;
mod resize;
#[cfg(test)]
mod test_util;

use kiln_ir::{Graph, IrError, Op, Tensor, TensorType, ValueId};
use std::borrow::Cow;
use std::collections::HashMap;
use thiserror::Error;

/// Why a graph could not be executed.
#[derive(Debug, Error)]
pub enum InterpError {
    #[error("node '{node}' ({op}): {msg}")]
    Op {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("graph takes {expected} inputs, got {got}")]
    InputCount { expected: usize, got: usize },
    #[error("input {index} ('{name}'): expected {expected}, got {got}")]
    Input {
        index: usize,
        name: String,
        expected: String,
        got: String,
    },
    #[error(transparent)]
    Ir(#[from] IrError),
}

/// Run the graph on its inputs (in graph-input order); returns graph outputs in order.
/// Checks each input's dtype and shape against the graph input types.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    run_observed(graph, inputs, &mut |_, _| {})
}

/// Same as [`run`], calling `observe(value, tensor)` for every value as it is produced
/// (graph inputs and constants included) — for calibration observers and per-layer
/// accuracy reports. Intermediate values are freed after their last use, so memory stays
/// bounded by the live set rather than the whole model.
pub fn run_observed(
    graph: &Graph,
    inputs: &[Tensor],
    observe: &mut dyn FnMut(ValueId, &Tensor),
) -> Result<Vec<Tensor>, InterpError> {
    execute(graph, inputs, observe, &mut 0)
}

/// The interpreter loop; `peak_live` receives the most values held at once (for tests of
/// the liveness-based freeing).
fn execute(
    graph: &Graph,
    inputs: &[Tensor],
    observe: &mut dyn FnMut(ValueId, &Tensor),
    peak_live: &mut usize,
) -> Result<Vec<Tensor>, InterpError> {
    if inputs.len() != graph.inputs().len() {
        return Err(InterpError::InputCount {
            expected: graph.inputs().len(),
            got: inputs.len(),
        });
    }
    let order = graph.topo_order()?;
    // Uses still pending per value; graph outputs are never freed.
    let mut pending: HashMap<ValueId, usize> = HashMap::new();
    for &id in &order {
        for &v in graph.node(id).inputs() {
            *pending.entry(v).or_insert(0) += 1;
        }
    }
    let is_output = |v: &ValueId| graph.outputs().contains(v);
    let mut values: HashMap<ValueId, Cow<'_, Tensor>> = HashMap::new();

    for id in order {
        let node = graph.node(id);
        let op_error = |msg: String| InterpError::Op {
            node: node.name.clone(),
            op: node.op.mnemonic(),
            msg,
        };
        let produced: Vec<Cow<'_, Tensor>> = match &node.op {
            Op::Input { index } => {
                let t = inputs.get(*index).ok_or_else(|| InterpError::InputCount {
                    expected: index + 1,
                    got: inputs.len(),
                })?;
                let ty = &node.outputs[0].ty;
                if t.dtype() != ty.dtype || t.shape() != ty.shape.as_slice() {
                    return Err(InterpError::Input {
                        index: *index,
                        name: node.name.clone(),
                        expected: ty.to_string(),
                        got: TensorType::new(t.dtype(), t.shape().to_vec()).to_string(),
                    });
                }
                vec![Cow::Borrowed(t)]
            }
            Op::Const(cid) => {
                let t = graph.consts.tensor(*cid)?;
                let ty = &node.outputs[0].ty;
                if t.dtype() != ty.dtype || t.shape() != ty.shape.as_slice() {
                    return Err(op_error(format!(
                        "constant holds {} {:?} but the node declares {ty}",
                        t.dtype(),
                        t.shape()
                    )));
                }
                vec![Cow::Borrowed(t)]
            }
            op => {
                let args: Vec<&Tensor> = node
                    .inputs()
                    .iter()
                    .map(|v| {
                        values.get(v).map(|t| t.as_ref()).ok_or_else(|| {
                            op_error(format!("input {v:?} was not computed (dangling edge)"))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let arg_types: Vec<&TensorType> =
                    node.inputs().iter().map(|&v| graph.value_type(v)).collect();
                let out_types: Vec<TensorType> =
                    node.outputs.iter().map(|o| o.ty.clone()).collect();
                let outs = eval_op(op, &args, &arg_types, &out_types).map_err(op_error)?;
                outs.into_iter().map(Cow::Owned).collect()
            }
        };
        for &v in node.inputs() {
            let left = pending.get_mut(&v).expect("every input was counted");
            *left -= 1;
            if *left == 0 && !is_output(&v) {
                values.remove(&v);
            }
        }
        for (port, t) in produced.into_iter().enumerate() {
            let v = ValueId {
                node: id,
                port: port as u16,
            };
            observe(v, &t);
            if pending.get(&v).copied().unwrap_or(0) > 0 || is_output(&v) {
                values.insert(v, t);
            }
        }
        *peak_live = (*peak_live).max(values.len());
    }
    graph
        .outputs()
        .iter()
        .map(|v| {
            values
                .get(v)
                .map(|t| t.as_ref().clone())
                .ok_or_else(|| InterpError::Op {
                    node: graph.value_name(*v).to_string(),
                    op: "output",
                    msg: "graph output was never computed".to_string(),
                })
        })
        .collect()
}

/// Evaluate one op on concrete inputs. `outputs` are the node's declared output types: their
/// count is how many outputs to produce, and ops whose result type is not a function of the
/// inputs (quantize, qconv, qmatmul, resize, pools) take dtype, shape and quantization from
/// them. Every result is checked against its declared dtype and shape.
pub fn eval_op(
    op: &Op,
    inputs: &[&Tensor],
    input_types: &[&TensorType],
    outputs: &[TensorType],
) -> Result<Vec<Tensor>, String> {
    if inputs.len() != input_types.len() {
        return Err(format!(
            "{} input tensors but {} input types",
            inputs.len(),
            input_types.len()
        ));
    }
    for (i, (t, ty)) in inputs.iter().zip(input_types).enumerate() {
        if t.dtype() != ty.dtype || t.shape() != ty.shape.as_slice() {
            return Err(format!(
                "input {i} is {} {:?} but its type says {ty}",
                t.dtype(),
                t.shape()
            ));
        }
    }
    if outputs.is_empty() {
        return Err("no output types given".to_string());
    }
    if rejects_quantized_inputs(op) {
        if let Some(i) = input_types.iter().position(|t| t.quant.is_some()) {
            return Err(format!(
                "input {i} is a quantized {} tensor; {} computes on real values and needs a \
                 dequantize first",
                input_types[i].dtype,
                op.mnemonic()
            ));
        }
    }
    let results = dispatch(op, inputs, input_types, outputs)?;
    if results.len() != outputs.len() {
        return Err(format!(
            "produced {} outputs, the node declares {}",
            results.len(),
            outputs.len()
        ));
    }
    for (i, (t, ty)) in results.iter().zip(outputs).enumerate() {
        if t.dtype() != ty.dtype || t.shape() != ty.shape.as_slice() {
            return Err(format!(
                "output {i} computed as {} {:?} but the node declares {ty}",
                t.dtype(),
                t.shape()
            ));
        }
    }
    Ok(results)
}

/// Ops whose arithmetic reads integer inputs as plain numbers: a quantized tensor reaching
/// them means a missing dequantize, which would silently compute garbage.
fn rejects_quantized_inputs(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_)
            | Op::ConvTranspose(_)
            | Op::BatchNorm { .. }
            | Op::Activation(_)
            | Op::Binary(_)
            | Op::Sum
            | Op::MatMul
            | Op::Gemm(_)
            | Op::AveragePool(_)
            | Op::GlobalAveragePool
            | Op::Lrn { .. }
            | Op::Softmax { .. }
            | Op::ReduceMean { .. }
            | Op::Cast { .. }
            | Op::Quantize
    )
}

/// Exactly `n` inputs (or between `min` and `max` with [`arity_range`]).
fn arity(inputs: &[&Tensor], n: usize) -> Result<(), String> {
    arity_range(inputs, n, n)
}

fn arity_range(inputs: &[&Tensor], min: usize, max: usize) -> Result<(), String> {
    if inputs.len() < min || inputs.len() > max {
        let want = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(format!("expects {want} inputs, got {}", inputs.len()));
    }
    Ok(())
}

fn dispatch(
    op: &Op,
    inputs: &[&Tensor],
    input_types: &[&TensorType],
    outputs: &[TensorType],
) -> Result<Vec<Tensor>, String> {
    let one = |t: Result<Tensor, String>| t.map(|t| vec![t]);
    match op {
        Op::Input { .. } | Op::Const(_) => {
            Err("graph sources are bound by run(), not evaluated".to_string())
        }
        Op::Conv(attrs) => {
            arity_range(inputs, 2, 4)?;
            one(conv::conv(
                inputs[0],
                inputs[1],
                inputs.get(2).copied(),
                inputs.get(3).copied(),
                attrs,
            ))
        }
        Op::ConvTranspose(attrs) => {
            arity_range(inputs, 2, 3)?;
            one(conv::conv_transpose(
                inputs[0],
                inputs[1],
                inputs.get(2).copied(),
                attrs,
            ))
        }
        Op::BatchNorm { epsilon } => one(elementwise::batch_norm(inputs, *epsilon)),
        Op::Activation(act) => {
            arity(inputs, 1)?;
            one(elementwise::activation(act, inputs[0]))
        }
        Op::Binary(b) => {
            arity(inputs, 2)?;
            one(elementwise::binary(*b, inputs[0], inputs[1]))
        }
        Op::Sum => one(elementwise::sum(inputs)),
        Op::MatMul => {
            arity(inputs, 2)?;
            one(matmul::matmul(inputs[0], inputs[1]))
        }
        Op::Gemm(attrs) => {
            arity_range(inputs, 2, 3)?;
            one(matmul::gemm_op(
                inputs[0],
                inputs[1],
                inputs.get(2).copied(),
                attrs,
            ))
        }
        Op::MaxPool(attrs) => {
            arity(inputs, 1)?;
            pool::max_pool(inputs[0], attrs, outputs.len() > 1)
        }
        Op::AveragePool(attrs) => {
            arity(inputs, 1)?;
            one(pool::average_pool(inputs[0], attrs))
        }
        Op::GlobalAveragePool => {
            arity(inputs, 1)?;
            one(pool::global_pool(inputs[0], false))
        }
        Op::GlobalMaxPool => {
            arity(inputs, 1)?;
            one(pool::global_pool(inputs[0], true))
        }
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => {
            arity(inputs, 1)?;
            one(pool::lrn(inputs[0], *size, *alpha, *beta, *bias))
        }
        Op::Concat { axis } => one(movement::concat(inputs, *axis)),
        Op::Split { axis, sizes } => {
            arity(inputs, 1)?;
            movement::split(inputs[0], *axis, sizes)
        }
        Op::Slice { axes } => {
            arity(inputs, 1)?;
            one(movement::slice(inputs[0], axes))
        }
        Op::Reshape { shape } => {
            arity(inputs, 1)?;
            one(movement::with_shape(inputs[0], shape.clone()))
        }
        Op::Flatten { axis } => {
            arity(inputs, 1)?;
            one(movement::flatten(inputs[0], *axis))
        }
        Op::Transpose { perm } => {
            arity(inputs, 1)?;
            one(movement::transpose(inputs[0], perm))
        }
        Op::Squeeze { axes } => {
            arity(inputs, 1)?;
            one(movement::squeeze(inputs[0], axes))
        }
        Op::Unsqueeze { axes } => {
            arity(inputs, 1)?;
            one(movement::unsqueeze(inputs[0], axes))
        }
        Op::Pad { mode, pads, value } => {
            arity(inputs, 1)?;
            one(movement::pad(inputs[0], *mode, pads, *value))
        }
        Op::Resize(attrs) => {
            arity(inputs, 1)?;
            one(resize::resize(inputs[0], input_types[0], attrs))
        }
        Op::Softmax { axis, legacy } => {
            arity(inputs, 1)?;
            one(reduce::softmax(inputs[0], *axis, *legacy))
        }
        Op::ReduceMean { axes, keepdims } => {
            arity(inputs, 1)?;
            one(reduce::reduce_mean(inputs[0], axes, *keepdims))
        }
        Op::Identity => {
            arity(inputs, 1)?;
            Ok(vec![inputs[0].clone()])
        }
        Op::Dropout => {
            // Inference dropout is the identity; the optional mask output is all true.
            arity(inputs, 1)?;
            let mut outs = vec![inputs[0].clone()];
            if outputs.len() > 1 {
                let mask = kiln_ir::TensorData::Bool(vec![true; inputs[0].numel()]);
                outs.push(
                    Tensor::new(inputs[0].shape().to_vec(), mask).map_err(|e| e.to_string())?,
                );
            }
            Ok(outs)
        }
        Op::Cast { to } => {
            arity(inputs, 1)?;
            one(movement::cast(inputs[0], *to))
        }
        Op::Gather { axis } => {
            arity(inputs, 2)?;
            one(movement::gather(inputs[0], inputs[1], *axis))
        }
        Op::Quantize => {
            arity(inputs, 1)?;
            one(quant::quantize(inputs[0], &outputs[0]))
        }
        Op::Dequantize => {
            arity(inputs, 1)?;
            one(quant::dequantize(inputs[0], input_types[0]))
        }
        Op::QConv(attrs) => {
            arity_range(inputs, 2, 3)?;
            one(quant::qconv(inputs, input_types, &outputs[0], attrs))
        }
        Op::QMatMul => {
            arity(inputs, 2)?;
            one(quant::qmatmul(inputs, input_types, &outputs[0]))
        }
        Op::ConvInteger(attrs) => {
            arity_range(inputs, 2, 4)?;
            one(quant::conv_integer(inputs, attrs))
        }
        Op::MatMulInteger => {
            arity_range(inputs, 2, 4)?;
            one(quant::matmul_integer(inputs))
        }
        Op::DynamicQuantize => {
            arity(inputs, 1)?;
            quant::dynamic_quantize(inputs[0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Activation, BinaryOp, DType, Output, Quant, TensorData};

    fn f32_type(shape: &[usize]) -> TensorType {
        TensorType::f32(shape.to_vec())
    }

    fn out(name: &str, ty: TensorType) -> Vec<Output> {
        vec![Output {
            name: name.to_string(),
            ty,
        }]
    }

    /// `y = relu(x) + c` over [2]
    fn relu_add_graph() -> Graph {
        let mut g = Graph::new("relu_add");
        let x = g.add_input("x", f32_type(&[2]));
        let c = g.add_const(
            "c",
            Tensor::from_f32(vec![2], vec![10.0, 20.0]).unwrap(),
            None,
        );
        let r = g.add_node_typed(
            "r",
            Op::Activation(Activation::Relu),
            &[x],
            out("r", f32_type(&[2])),
        );
        let y = g.add_node_typed(
            "y",
            Op::Binary(BinaryOp::Add),
            &[r[0], c],
            out("y", f32_type(&[2])),
        );
        g.set_outputs(vec![y[0], r[0]]);
        g
    }

    #[test]
    fn runs_a_graph_and_returns_outputs_in_order() {
        let g = relu_add_graph();
        let x = Tensor::from_f32(vec![2], vec![-1.0, 2.0]).unwrap();
        let outs = run(&g, &[x]).unwrap();
        // relu(-1, 2) = (0, 2); + (10, 20) = (10, 22)
        assert_eq!(outs[0].as_f32().unwrap(), &[10.0, 22.0]);
        assert_eq!(outs[1].as_f32().unwrap(), &[0.0, 2.0]);
    }

    #[test]
    fn observes_every_value() {
        let g = relu_add_graph();
        let x = Tensor::from_f32(vec![2], vec![-1.0, 2.0]).unwrap();
        let mut seen = Vec::new();
        run_observed(&g, &[x], &mut |v, t| {
            seen.push((g.value_name(v).to_string(), t.numel()))
        })
        .unwrap();
        let mut names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(names, ["c", "r", "x", "y"]);
    }

    #[test]
    fn checks_inputs_against_the_graph() {
        let g = relu_add_graph();
        let wrong_shape = Tensor::from_f32(vec![3], vec![0.0; 3]).unwrap();
        let err = run(&g, &[wrong_shape]).unwrap_err();
        assert!(matches!(err, InterpError::Input { index: 0, .. }), "{err}");
        assert!(err.to_string().contains("f32[2]"), "{err}");
        let wrong_dtype = Tensor::from_i64(vec![2], vec![0, 0]).unwrap();
        assert!(matches!(
            run(&g, &[wrong_dtype]),
            Err(InterpError::Input { .. })
        ));
        assert!(matches!(
            run(&g, &[]),
            Err(InterpError::InputCount {
                expected: 1,
                got: 0
            })
        ));
    }

    #[test]
    fn op_errors_name_the_node() {
        // declared output shape disagrees with what the op computes
        let mut g = Graph::new("bad");
        let x = g.add_input("x", f32_type(&[2]));
        let y = g.add_node_typed(
            "relu_1",
            Op::Activation(Activation::Relu),
            &[x],
            out("y", f32_type(&[3])),
        );
        g.set_outputs(vec![y[0]]);
        let err = run(&g, &[Tensor::from_f32(vec![2], vec![0.0; 2]).unwrap()]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("relu_1") && msg.contains("relu") && msg.contains("f32[3]"),
            "{msg}"
        );
    }

    #[test]
    fn frees_intermediates_after_their_last_use() {
        // a chain of 40 relus holds at most the input, one running value and its successor
        let mut g = Graph::new("chain");
        let mut v = g.add_input("x", f32_type(&[4]));
        for i in 0..40 {
            v = g.add_node_typed(
                format!("r{i}"),
                Op::Activation(Activation::Relu),
                &[v],
                out(&format!("v{i}"), f32_type(&[4])),
            )[0];
        }
        g.set_outputs(vec![v]);
        let mut peak = 0;
        let x = Tensor::from_f32(vec![4], vec![1.0, -1.0, 2.0, -2.0]).unwrap();
        let outs = execute(&g, &[x], &mut |_, _| {}, &mut peak).unwrap();
        assert_eq!(outs[0].as_f32().unwrap(), &[1.0, 0.0, 2.0, 0.0]);
        assert!(peak <= 2, "peak live values {peak}");
    }

    #[test]
    fn quantized_inputs_to_float_ops_are_rejected() {
        let q = TensorType::new(DType::U8, vec![2]).with_quant(Quant::per_tensor(0.5, 3));
        let t = Tensor::new(vec![2], TensorData::U8(vec![1, 2])).unwrap();
        let err = eval_op(
            &Op::Activation(Activation::Relu),
            &[&t],
            &[&q],
            std::slice::from_ref(&q),
        )
        .unwrap_err();
        assert!(err.contains("dequantize"), "{err}");
        // data movement keeps quantized values as they are
        let y = eval_op(
            &Op::Reshape { shape: vec![1, 2] },
            &[&t],
            &[&q],
            std::slice::from_ref(&q),
        );
        assert!(
            y.is_err(),
            "declared output shape [2] does not match [1, 2]"
        );
        let q12 = TensorType {
            shape: vec![1, 2],
            ..q.clone()
        };
        let y = eval_op(&Op::Reshape { shape: vec![1, 2] }, &[&t], &[&q], &[q12]).unwrap();
        assert_eq!(y[0].data(), t.data());
    }

    #[test]
    fn dropout_mask_and_quantize_dequantize_round_trip() {
        let x = Tensor::from_f32(vec![3], vec![0.5, -1.0, 2.0]).unwrap();
        let xt = f32_type(&[3]);
        let outs = eval_op(
            &Op::Dropout,
            &[&x],
            &[&xt],
            &[xt.clone(), TensorType::new(DType::Bool, vec![3])],
        )
        .unwrap();
        assert_eq!(outs[0], x);
        assert_eq!(outs[1].data(), &TensorData::Bool(vec![true; 3]));
        // scale 0.5, zp 2: 0.5 → 3, -1 → 0, 2 → 6; and back exactly
        let qt = TensorType::new(DType::U8, vec![3]).with_quant(Quant::per_tensor(0.5, 2));
        let q = eval_op(&Op::Quantize, &[&x], &[&xt], std::slice::from_ref(&qt)).unwrap();
        assert_eq!(q[0].data(), &TensorData::U8(vec![3, 0, 6]));
        let back = eval_op(&Op::Dequantize, &[&q[0]], &[&qt], &[xt]).unwrap();
        assert_eq!(back[0], x);
    }
}
