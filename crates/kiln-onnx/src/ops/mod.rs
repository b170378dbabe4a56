//! ONNX node → IR conversion, one function per ONNX op, dispatched by op type. Each
//! converter reads the attributes of the node's opset version, resolves them against the
//! static input shapes, and builds the IR op through [`Importer::emit`] (which folds nodes
//! whose inputs are all constants).

mod conv;
mod quant;
mod resize;
mod shape;

use crate::attrs::NodeCx;
use crate::error::OnnxError;
use crate::importer::Importer;
use crate::tensor::dtype_from_onnx;
use kiln_ir::{Activation, BinaryOp, DType, GemmAttrs, Op, Tensor, TensorData, TensorType};

/// ONNX op types (ai.onnx domain) kiln imports, sorted.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "ConvInteger",
    "ConvTranspose",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "DynamicQuantizeLinear",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LRN",
    "LeakyRelu",
    "MatMul",
    "MatMulInteger",
    "MaxPool",
    "Mul",
    "Pad",
    "QLinearConv",
    "QLinearMatMul",
    "QuantizeLinear",
    "Range",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Upsample",
];

/// Convert one node, binding its outputs in the importer.
pub(crate) fn convert(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    if cx.node.domain == "com.microsoft" {
        return quant::convert_com_microsoft(im, cx);
    }
    if cx.node.domain != "ai.onnx" {
        return Err(unsupported(cx));
    }
    match cx.proto.op_type() {
        "Relu" => activation(im, cx, Activation::Relu),
        "Sigmoid" => activation(im, cx, Activation::Sigmoid),
        "Tanh" => activation(im, cx, Activation::Tanh),
        "HardSwish" => activation(im, cx, Activation::HardSwish),
        "LeakyRelu" => {
            let alpha = cx.float("alpha", 0.01)?;
            activation(im, cx, Activation::LeakyRelu { alpha })
        }
        "HardSigmoid" => {
            let alpha = cx.float("alpha", 0.2)?;
            let beta = cx.float("beta", 0.5)?;
            activation(im, cx, Activation::HardSigmoid { alpha, beta })
        }
        "Clip" => clip(im, cx),
        "Add" => binary(im, cx, BinaryOp::Add),
        "Sub" => binary(im, cx, BinaryOp::Sub),
        "Mul" => binary(im, cx, BinaryOp::Mul),
        "Div" => binary(im, cx, BinaryOp::Div),
        "Sum" => sum(im, cx),
        "MatMul" => {
            let (a, b) = (im.req_input(cx, 0)?, im.req_input(cx, 1)?);
            emit_main(im, cx, Op::MatMul, &[a, b])
        }
        "Gemm" => gemm(im, cx),
        "BatchNormalization" => batch_norm(im, cx),
        "LRN" => lrn(im, cx),
        "Concat" => concat(im, cx),
        "Flatten" => flatten(im, cx),
        "Transpose" => transpose(im, cx),
        "Softmax" => softmax(im, cx),
        "ReduceMean" => reduce_mean(im, cx),
        "Identity" => {
            let x = im.req_input(cx, 0)?;
            emit_main(im, cx, Op::Identity, &[x])
        }
        "Dropout" => dropout(im, cx),
        "Gather" => gather(im, cx),
        "Cast" => cast(im, cx),
        "CastLike" => {
            // CastLike (15+): Cast to the element type of the second input.
            let (x, like) = (im.req_input(cx, 0)?, im.req_input(cx, 1)?);
            let to = im.ty(like).dtype;
            emit_main(im, cx, Op::Cast { to }, &[x])
        }
        "Conv" => conv::conv(im, cx),
        "ConvTranspose" => conv::conv_transpose(im, cx),
        "MaxPool" => conv::max_pool(im, cx),
        "AveragePool" => conv::average_pool(im, cx),
        "GlobalAveragePool" => {
            let x = im.req_input(cx, 0)?;
            emit_main(im, cx, Op::GlobalAveragePool, &[x])
        }
        "GlobalMaxPool" => {
            let x = im.req_input(cx, 0)?;
            emit_main(im, cx, Op::GlobalMaxPool, &[x])
        }
        "Reshape" => shape::reshape(im, cx),
        "Squeeze" => shape::squeeze(im, cx),
        "Unsqueeze" => shape::unsqueeze(im, cx),
        "Slice" => shape::slice(im, cx),
        "Split" => shape::split(im, cx),
        "Pad" => shape::pad(im, cx),
        "Constant" => shape::constant(im, cx),
        "ConstantOfShape" => shape::constant_of_shape(im, cx),
        "Shape" => shape::shape(im, cx),
        "Range" => shape::range(im, cx),
        "Resize" => resize::resize(im, cx),
        "Upsample" => resize::upsample(im, cx),
        "QuantizeLinear" => quant::quantize_linear(im, cx),
        "DequantizeLinear" => quant::dequantize_linear(im, cx),
        "QLinearConv" => quant::qlinear_conv(im, cx),
        "QLinearMatMul" => quant::qlinear_matmul(im, cx),
        "ConvInteger" => quant::conv_integer(im, cx),
        "MatMulInteger" => quant::matmul_integer(im, cx),
        "DynamicQuantizeLinear" => quant::dynamic_quantize_linear(im, cx),
        _ => Err(unsupported(cx)),
    }
}

fn unsupported(cx: &NodeCx) -> OnnxError {
    OnnxError::UnsupportedOp {
        node: Box::new(cx.node.clone()),
        supported: SUPPORTED_OPS.join(", "),
    }
}

/// Build `op` with the node's first output.
fn emit_main(
    im: &mut Importer,
    cx: &NodeCx,
    op: Op,
    inputs: &[kiln_ir::ValueId],
) -> Result<(), OnnxError> {
    let out = im.main_output(cx)?;
    im.emit(cx, op, inputs, &[out])?;
    Ok(())
}

fn activation(im: &mut Importer, cx: &NodeCx, act: Activation) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    emit_main(im, cx, Op::Activation(act), &[x])
}

fn binary(im: &mut Importer, cx: &NodeCx, op: BinaryOp) -> Result<(), OnnxError> {
    let (a, b) = (im.req_input(cx, 0)?, im.req_input(cx, 1)?);
    emit_main(im, cx, Op::Binary(op), &[a, b])
}

/// Clip: bounds are attributes before opset 11 and optional constant inputs from 11 on;
/// an absent bound is unbounded.
fn clip(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let (min, max) = if cx.opset() < 11 {
        (
            cx.float_opt("min")?.map_or(f64::NEG_INFINITY, f64::from),
            cx.float_opt("max")?.map_or(f64::INFINITY, f64::from),
        )
    } else {
        let bound = |i: usize, what: &str, default: f64| -> Result<f64, OnnxError> {
            match im.const_input(cx, i, what)? {
                None => Ok(default),
                Some(t) if t.numel() == 1 => Ok(t.to_f64_vec()[0]),
                Some(t) => Err(cx.err(format!(
                    "{what} must be a scalar, got shape {:?}",
                    t.shape()
                ))),
            }
        };
        (
            bound(1, "min", f64::NEG_INFINITY)?,
            bound(2, "max", f64::INFINITY)?,
        )
    };
    emit_main(im, cx, Op::Activation(Activation::Clip { min, max }), &[x])
}

fn sum(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let inputs = (0..im.input_count(cx))
        .map(|i| im.req_input(cx, i))
        .collect::<Result<Vec<_>, _>>()?;
    match inputs.len() {
        0 => Err(cx.err("Sum needs at least one input")),
        // A one-operand sum is a copy; Identity says so to every later pass.
        1 => emit_main(im, cx, Op::Identity, &inputs),
        _ => emit_main(im, cx, Op::Sum, &inputs),
    }
}

fn gemm(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let mut inputs = vec![im.req_input(cx, 0)?, im.req_input(cx, 1)?];
    inputs.extend(im.input(cx, 2)?);
    let attrs = GemmAttrs {
        alpha: cx.float("alpha", 1.0)?,
        beta: cx.float("beta", 1.0)?,
        trans_a: cx.bool("transA", false)?,
        trans_b: cx.bool("transB", false)?,
        act: None,
    };
    emit_main(im, cx, Op::Gemm(attrs), &inputs)
}

/// Inference-mode BatchNormalization. The statistics outputs exist only in training mode
/// (opset < 14: mean, var, saved_mean, saved_var; 14+: running_mean, running_var).
fn batch_norm(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    if cx.opset() >= 14 && cx.bool("training_mode", false)? {
        return Err(cx.err("training_mode=1 is not supported (kiln imports inference graphs)"));
    }
    let inputs = (0..5)
        .map(|i| im.req_input(cx, i))
        .collect::<Result<Vec<_>, _>>()?;
    if cx.opset() < 9 && cx.int("spatial", 1)? == 0 {
        // spatial=0 normalizes per activation with [C, D1, ...] statistics; with [C]
        // statistics it is the same as the spatial form.
        if let Some(&p) = inputs[1..].iter().find(|&&p| im.shape(p).len() != 1) {
            return Err(cx.err(format!(
                "spatial=0 with per-activation statistics of shape {:?} is not supported",
                im.shape(p)
            )));
        }
    }
    let epsilon = cx.float("epsilon", 1e-5)?;
    for i in 1..cx.proto.output.len() {
        if let Some(name) = im.output_name(cx, i) {
            im.mark_unavailable(
                name,
                format!(
                    "output {i} of BatchNormalization node '{}' is computed only in training mode",
                    cx.node.name
                ),
            );
        }
    }
    emit_main(im, cx, Op::BatchNorm { epsilon }, &inputs)
}

fn lrn(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let size = cx
        .int_opt("size")?
        .ok_or_else(|| cx.err("attribute 'size' is required"))?;
    let op = Op::Lrn {
        size: cx.to_usize("size", size)?,
        alpha: cx.float("alpha", 1e-4)?,
        beta: cx.float("beta", 0.75)?,
        bias: cx.float("bias", 1.0)?,
    };
    emit_main(im, cx, op, &[x])
}

fn concat(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let inputs = (0..im.input_count(cx))
        .filter_map(|i| im.input(cx, i).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let first = *inputs
        .first()
        .ok_or_else(|| cx.err("Concat needs at least one input"))?;
    let axis = cx
        .int_opt("axis")?
        .ok_or_else(|| cx.err("attribute 'axis' is required"))?;
    let axis = cx.axis("axis", axis, im.shape(first).len())?;
    emit_main(im, cx, Op::Concat { axis }, &inputs)
}

fn flatten(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let rank = im.shape(x).len() as i64;
    let axis = cx.int("axis", 1)?;
    // Flatten's axis ranges over [-rank, rank]: axis == rank puts everything in dim 0.
    if !(-rank..=rank).contains(&axis) {
        return Err(cx.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    let axis = if axis < 0 { axis + rank } else { axis } as usize;
    emit_main(im, cx, Op::Flatten { axis }, &[x])
}

fn transpose(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let rank = im.shape(x).len();
    let perm = match cx.ints_opt("perm")? {
        // Default: reverse the dims.
        None => (0..rank).rev().collect(),
        Some(p) => {
            let perm = cx.to_usizes("perm", &p)?;
            let mut seen = vec![false; rank];
            let valid = perm.len() == rank
                && perm
                    .iter()
                    .all(|&d| d < rank && !std::mem::replace(&mut seen[d], true));
            if !valid {
                return Err(cx.err(format!("perm {p:?} is not a permutation of 0..{rank}")));
            }
            perm
        }
    };
    emit_main(im, cx, Op::Transpose { perm }, &[x])
}

/// Softmax: before opset 13 the input is coerced to 2-D at `axis` (default 1); from 13 on
/// it normalizes along one axis (default -1). The two agree when `axis` is the last dim,
/// so only other axes keep the legacy flag.
fn softmax(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let rank = im.shape(x).len();
    let legacy_opset = cx.opset() < 13;
    let axis = cx.int("axis", if legacy_opset { 1 } else { -1 })?;
    let axis = cx.axis("axis", axis, rank)?;
    let legacy = legacy_opset && axis + 1 != rank;
    emit_main(im, cx, Op::Softmax { axis, legacy }, &[x])
}

/// ReduceMean: axes are an attribute before opset 18 and an optional input from 18 on.
/// No axes means all axes, unless `noop_with_empty_axes` (18+) makes it an identity.
fn reduce_mean(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let rank = im.shape(x).len();
    let keepdims = cx.bool("keepdims", true)?;
    let (axes, noop_if_empty) = if cx.opset() >= 18 {
        (
            im.const_ints(cx, 1, "axes")?,
            cx.bool("noop_with_empty_axes", false)?,
        )
    } else {
        (cx.ints_opt("axes")?, false)
    };
    let axes = match axes {
        Some(a) if !a.is_empty() => cx.axes("axes", &a, rank)?,
        _ if noop_if_empty => return emit_main(im, cx, Op::Identity, &[x]),
        _ => (0..rank).collect(),
    };
    emit_main(im, cx, Op::ReduceMean { axes, keepdims }, &[x])
}

/// Dropout at inference is the identity; its mask output is all true. Training mode is the
/// identity too when the ratio is 0 (ONNX: "if ratio is 0 ... output = input, mask = all
/// true"); with a nonzero ratio it draws a random mask, which kiln does not import.
fn dropout(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    if cx.opset() >= 12 {
        if let Some(mode) = im.const_input(cx, 2, "training_mode")? {
            if mode.to_f64_vec().iter().any(|&v| v != 0.0) {
                // ratio: input 1, default 0.5.
                let ratio = im.const_input(cx, 1, "ratio")?.map(|r| r.to_f64_vec());
                if !ratio.is_some_and(|r| r.iter().all(|&v| v == 0.0)) {
                    return Err(cx.err(
                        "training_mode=true with a nonzero ratio draws a random mask: not \
                         supported (kiln imports inference graphs)",
                    ));
                }
            }
        }
    }
    let shape = im.shape(x).to_vec();
    emit_main(im, cx, Op::Dropout, &[x])?;
    if let Some(mask) = im.output_name(cx, 1) {
        im.charge_value(cx, mask, &TensorType::new(DType::Bool, shape.clone()))?;
        // x's type passed inference, so its element count fits.
        let n = shape.iter().product();
        let ones = Tensor::new(shape, TensorData::Bool(vec![true; n]))
            .map_err(|e| cx.err(format!("mask: {e}")))?;
        im.bind_const(mask, ones, None);
    }
    Ok(())
}

fn gather(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let (data, indices) = (im.req_input(cx, 0)?, im.req_input(cx, 1)?);
    let axis = cx.axis("axis", cx.int("axis", 0)?, im.shape(data).len())?;
    // Constant indices (the common case: shape arithmetic, embedding lookups) are checked
    // here, where the error can name them; ONNX allows [-dim, dim).
    if let Some(values) = im.const_of(indices).and_then(Tensor::to_i64_vec) {
        let dim = im.shape(data)[axis] as i64;
        if let Some(bad) = values.iter().find(|&&i| !(-dim..dim).contains(&i)) {
            let valid = match dim {
                0 => "the axis is empty".to_string(),
                _ => format!("valid: -{dim}..={}", dim - 1),
            };
            return Err(cx.err(format!(
                "index {bad} in constant indices '{}' is out of range for axis {axis} of size \
                 {dim} ({valid})",
                cx.proto.input[1],
            )));
        }
    }
    emit_main(im, cx, Op::Gather { axis }, &[data, indices])
}

fn cast(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let to = cx
        .int_opt("to")?
        .ok_or_else(|| cx.err("attribute 'to' is required"))?;
    let to: DType = i32::try_from(to)
        .map_err(|_| format!("unknown element type {to}"))
        .and_then(dtype_from_onnx)
        .map_err(|msg| cx.err(format!("cast target: {msg}")))?;
    emit_main(im, cx, Op::Cast { to }, &[x])
}

#[cfg(test)]
mod tests {
    use crate::proto::tensor_proto::DataType;
    use crate::testutil::*;
    use crate::OnnxError;
    use kiln_ir::{Activation, DType, GemmAttrs, Graph, Op, Tensor};

    fn unary(
        opset: i64,
        op: &str,
        dims: &[i64],
        attrs: Vec<crate::proto::AttributeProto>,
    ) -> Result<Graph, OnnxError> {
        ModelBuilder::new(opset)
            .input("x", dims)
            .node(named(node(op, &["x"], &["y"], attrs), "n"))
            .output("y")
            .import()
    }

    #[test]
    fn clip_bounds_come_from_attributes_before_opset_11_and_inputs_after() {
        let relu6 = Op::Activation(Activation::Clip { min: 0.0, max: 6.0 });
        let old = unary(
            9,
            "Clip",
            &[4],
            vec![attr_float("min", 0.0), attr_float("max", 6.0)],
        )
        .unwrap();
        assert_eq!(output_op(&old, 0), &relu6);
        let new = ModelBuilder::new(13)
            .input("x", &[4])
            .init(tensor_f32("lo", &[], &[0.0]))
            .init(tensor_f32("hi", &[], &[6.0]))
            .node(node("Clip", &["x", "lo", "hi"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&new, 0), &relu6);
        // An omitted bound ("" or absent) is unbounded.
        let only_max = ModelBuilder::new(13)
            .input("x", &[4])
            .init(tensor_f32("hi", &[], &[6.0]))
            .node(node("Clip", &["x", "", "hi"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(
            output_op(&only_max, 0),
            &Op::Activation(Activation::Clip {
                min: f64::NEG_INFINITY,
                max: 6.0
            })
        );
    }

    #[test]
    fn activation_attributes_have_onnx_defaults() {
        let g = unary(13, "LeakyRelu", &[2], vec![]).unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::Activation(Activation::LeakyRelu { alpha: 0.01 })
        );
        let g = unary(13, "HardSigmoid", &[2], vec![attr_float("alpha", 0.25)]).unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::Activation(Activation::HardSigmoid {
                alpha: 0.25,
                beta: 0.5
            })
        );
        let err = unary(13, "LeakyRelu", &[2], vec![attr_int("alpha", 1)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node 'n' (LeakyRelu, domain ai.onnx, opset 13): attribute 'alpha' is INT, expected FLOAT"
        );
    }

    #[test]
    fn softmax_before_opset_13_is_legacy_unless_the_axis_is_last() {
        let g = unary(11, "Softmax", &[2, 3, 4], vec![]).unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::Softmax {
                axis: 1,
                legacy: true
            }
        );
        // Coercing [2, 3] to 2-D at axis 1 is the shape itself: same as the modern form.
        let g = unary(11, "Softmax", &[2, 3], vec![]).unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::Softmax {
                axis: 1,
                legacy: false
            }
        );
        let g = unary(13, "Softmax", &[2, 3, 4], vec![]).unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::Softmax {
                axis: 2,
                legacy: false
            }
        );
        let g = unary(13, "Softmax", &[2, 3, 4], vec![attr_int("axis", -2)]).unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::Softmax {
                axis: 1,
                legacy: false
            }
        );
    }

    #[test]
    fn reduce_mean_axes_attribute_and_input_forms() {
        let g = unary(
            13,
            "ReduceMean",
            &[2, 3, 4],
            vec![attr_ints("axes", &[-1, 1]), attr_int("keepdims", 0)],
        )
        .unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::ReduceMean {
                axes: vec![1, 2],
                keepdims: false
            }
        );
        let g = unary(13, "ReduceMean", &[2, 3], vec![]).unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::ReduceMean {
                axes: vec![0, 1],
                keepdims: true
            }
        );
        let with_axes = ModelBuilder::new(18)
            .input("x", &[2, 3, 4])
            .init(tensor_i64("axes", &[2], &[-1, 1]))
            .node(node(
                "ReduceMean",
                &["x", "axes"],
                &["y"],
                vec![attr_int("keepdims", 0)],
            ))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(
            output_op(&with_axes, 0),
            &Op::ReduceMean {
                axes: vec![1, 2],
                keepdims: false
            }
        );
        let noop = unary(
            18,
            "ReduceMean",
            &[2, 3],
            vec![attr_int("noop_with_empty_axes", 1)],
        )
        .unwrap();
        assert_eq!(output_op(&noop, 0), &Op::Identity);
        let all = unary(18, "ReduceMean", &[2, 3], vec![]).unwrap();
        assert_eq!(
            output_op(&all, 0),
            &Op::ReduceMean {
                axes: vec![0, 1],
                keepdims: true
            }
        );
    }

    #[test]
    fn batch_norm_imports_inference_mode_only() {
        let bn = |opset: i64, attrs, outputs: &[&str]| {
            ModelBuilder::new(opset)
                .input("x", &[1, 2, 3, 3])
                .init(tensor_f32("s", &[2], &[1.0, 2.0]))
                .init(tensor_f32("b", &[2], &[0.0, 1.0]))
                .init(tensor_f32("m", &[2], &[0.5, 0.5]))
                .init(tensor_f32("v", &[2], &[1.0, 4.0]))
                .node(named(
                    node(
                        "BatchNormalization",
                        &["x", "s", "b", "m", "v"],
                        outputs,
                        attrs,
                    ),
                    "bn",
                ))
        };
        let g = bn(9, vec![attr_float("epsilon", 1e-3)], &["y"])
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::BatchNorm { epsilon: 1e-3 });
        let err = bn(15, vec![attr_int("training_mode", 1)], &["y"])
            .output("y")
            .import()
            .unwrap_err();
        assert!(
            err.to_string().contains("training_mode=1 is not supported"),
            "{err}"
        );
        // Running statistics exist only in training; asking for them says so.
        let err = bn(9, vec![], &["y", "mean"])
            .output("mean")
            .import()
            .unwrap_err();
        assert!(
            err.to_string().contains(
                "output 1 of BatchNormalization node 'bn' is computed only in training mode"
            ),
            "{err}"
        );
    }

    #[test]
    fn dropout_is_an_identity_with_an_all_true_mask() {
        let g = ModelBuilder::new(13)
            .input("x", &[2, 2])
            .init(tensor_f32("ratio", &[], &[0.3]))
            .node(node("Dropout", &["x", "ratio"], &["y", "mask"], vec![]))
            .output("y")
            .output("mask")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Dropout);
        let mask = g
            .const_tensor(g.outputs()[1])
            .expect("the mask is a constant");
        assert_eq!(mask.data(), &kiln_ir::TensorData::Bool(vec![true; 4]));
        let training = ModelBuilder::new(13)
            .input("x", &[2])
            .init(tensor_raw("t", DataType::Bool, &[], vec![1]))
            .node(node("Dropout", &["x", "", "t"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap_err();
        assert!(training
            .to_string()
            .contains("training_mode=true with a nonzero ratio"));
        // Training mode with ratio 0 is the identity (ONNX Dropout spec).
        let zero_ratio = ModelBuilder::new(13)
            .input("x", &[2])
            .init(tensor_f32("r", &[], &[0.0]))
            .init(tensor_raw("t", DataType::Bool, &[], vec![1]))
            .node(node("Dropout", &["x", "r", "t"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&zero_ratio, 0), &Op::Dropout);
    }

    #[test]
    fn gemm_transpose_and_friends() {
        let g = ModelBuilder::new(13)
            .input("a", &[3, 2])
            .init(tensor_f32("b", &[4, 3], &[0.0; 12]))
            .node(node(
                "Gemm",
                &["a", "b"],
                &["y"],
                vec![
                    attr_int("transA", 1),
                    attr_int("transB", 1),
                    attr_float("alpha", 2.0),
                ],
            ))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::Gemm(GemmAttrs {
                alpha: 2.0,
                beta: 1.0,
                trans_a: true,
                trans_b: true,
                act: None
            })
        );
        assert_eq!(g.value_type(g.outputs()[0]).shape, vec![2, 4]);
        let g = unary(13, "Transpose", &[2, 3, 4], vec![]).unwrap();
        assert_eq!(
            output_op(&g, 0),
            &Op::Transpose {
                perm: vec![2, 1, 0]
            }
        );
        let err = unary(
            13,
            "Transpose",
            &[2, 3, 4],
            vec![attr_ints("perm", &[0, 0, 1])],
        )
        .unwrap_err();
        assert!(err.to_string().contains("is not a permutation"), "{err}");
        let g = unary(13, "Flatten", &[2, 3, 4], vec![attr_int("axis", 3)]).unwrap();
        assert_eq!(output_op(&g, 0), &Op::Flatten { axis: 3 });
        assert_eq!(g.value_type(g.outputs()[0]).shape, vec![24, 1]);
        let g = unary(13, "Flatten", &[2, 3, 4], vec![attr_int("axis", -1)]).unwrap();
        assert_eq!(output_op(&g, 0), &Op::Flatten { axis: 2 });
    }

    #[test]
    fn cast_targets_map_to_ir_dtypes() {
        let cast = |to: DataType| unary(13, "Cast", &[2], vec![attr_int("to", to as i64)]);
        assert_eq!(
            output_op(&cast(DataType::Int64).unwrap(), 0),
            &Op::Cast { to: DType::I64 }
        );
        // Half precision is computed as f32.
        assert_eq!(
            output_op(&cast(DataType::Float16).unwrap(), 0),
            &Op::Cast { to: DType::F32 }
        );
        let err = cast(DataType::Double).unwrap_err();
        assert!(
            err.to_string()
                .contains("cast target: element type DOUBLE is not supported"),
            "{err}"
        );
        let like = ModelBuilder::new(15)
            .input("x", &[2])
            .input_typed("l", DataType::Int32, Some(&[Dim::Fixed(1)]))
            .node(node("CastLike", &["x", "l"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&like, 0), &Op::Cast { to: DType::I32 });
    }

    #[test]
    fn concat_and_gather_normalize_negative_axes() {
        let g = ModelBuilder::new(13)
            .input("a", &[2, 3])
            .input("b", &[2, 5])
            .node(node(
                "Concat",
                &["a", "b"],
                &["y"],
                vec![attr_int("axis", -1)],
            ))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Concat { axis: 1 });
        let g = ModelBuilder::new(13)
            .input("data", &[4, 3])
            .init(tensor_i64("idx", &[2], &[2, -1]))
            .node(node(
                "Gather",
                &["data", "idx"],
                &["y"],
                vec![attr_int("axis", -2)],
            ))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Gather { axis: 0 });
        // Rows 2 and 3 (-1 wraps) of [[0,1,2],[3,4,5],[6,7,8],[9,10,11]].
        let data = Tensor::from_f32(vec![4, 3], (0..12).map(|v| v as f32).collect()).unwrap();
        assert_eq!(
            run(&g, &[data])[0].as_f32().unwrap(),
            &[6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
        );
    }

    #[test]
    fn gather_checks_constant_indices_at_import() {
        let gather = |data: &[i64], indices: &[i64]| {
            ModelBuilder::new(13)
                .input("data", data)
                .init(tensor_i64("idx", &[indices.len() as i64], indices))
                .node(named(node("Gather", &["data", "idx"], &["y"], vec![]), "g"))
                .output("y")
                .import()
        };
        gather(&[4, 3], &[-4, 3]).unwrap();
        assert_eq!(
            gather(&[4, 3], &[0, 4]).unwrap_err().to_string(),
            "node 'g' (Gather, domain ai.onnx, opset 13): index 4 in constant indices 'idx' is \
             out of range for axis 0 of size 4 (valid: -4..=3)"
        );
        assert!(gather(&[4, 3], &[-5])
            .unwrap_err()
            .to_string()
            .contains("index -5 in constant indices 'idx'"));
        assert!(gather(&[0, 3], &[0])
            .unwrap_err()
            .to_string()
            .ends_with("out of range for axis 0 of size 0 (the axis is empty)"));
        // Shape → Gather folds to a constant; an index past the rank is caught all the same.
        let err = ModelBuilder::new(13)
            .input("x", &[2, 3])
            .init(tensor_i64("idx", &[], &[2]))
            .node(node("Shape", &["x"], &["s"], vec![]))
            .node(named(node("Gather", &["s", "idx"], &["y"], vec![]), "g"))
            .output("y")
            .import()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("index 2 in constant indices 'idx' is out of range for axis 0 of size 2"),
            "{err}"
        );
    }

    #[test]
    fn sum_of_one_input_is_an_identity() {
        let g = unary(13, "Sum", &[2], vec![]).unwrap();
        assert_eq!(output_op(&g, 0), &Op::Identity);
        let g = ModelBuilder::new(13)
            .input("a", &[2])
            .input("b", &[2])
            .input("c", &[2])
            .node(node("Sum", &["a", "b", "c"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Sum);
        assert_eq!(output_node(&g, 0).inputs().len(), 3);
    }
}
