//! Quantized models: QDQ (QuantizeLinear / DequantizeLinear) and QOperator (QLinearConv,
//! QLinearMatMul, ConvInteger, MatMulInteger, and onnxruntime's `com.microsoft` QLinear ops).
//! Scales and zero points must be constants; they become the quantization parameters in the
//! integer tensors' types.

use super::conv::{average_pool, conv_attrs};
use crate::attrs::NodeCx;
use crate::error::OnnxError;
use crate::importer::Importer;
use crate::proto::tensor_proto::DataType;
use crate::proto::NodeProto;
use crate::tensor::onnx_dtype_name;
use kiln_ir::{Activation, BinaryOp, DType, GemmAttrs, Op, Quant, Tensor, TensorType, ValueId};

/// Quantization parameters from constant inputs `scale_at` and `zero_point_at` (optional)
/// for data of `data_shape`. A one-element scale is per-tensor; a 1-D scale is per-axis
/// along `axis`; anything else is block quantization, which kiln does not support.
/// Returns the parameters and the zero point's dtype (`None` without a zero point).
fn quant_params(
    im: &Importer,
    cx: &NodeCx,
    scale_at: usize,
    zero_point_at: usize,
    axis: i64,
    data_shape: &[usize],
) -> Result<(Quant, Option<DType>), OnnxError> {
    let scale_name = cx.proto.input.get(scale_at).cloned().unwrap_or_default();
    let scale = im
        .const_input(cx, scale_at, "scale")?
        .ok_or_else(|| cx.err(format!("required input {scale_at} (scale) is missing")))?;
    let zero_point = im.const_input(cx, zero_point_at, "zero point")?;
    if scale.dtype() != DType::F32 {
        return Err(cx.err(format!(
            "scale '{scale_name}' must be a float tensor, got {}",
            scale.dtype()
        )));
    }
    let scales = scale.to_f32_vec();
    // ONNX allows any float; a zero, negative or non-finite scale cannot be a quantized
    // tensor's type (the verifier requires positive finite scales).
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(cx.err(format!(
            "scale '{scale_name}' has value {s}; kiln needs positive finite scales"
        )));
    }
    let zp_dtype = zero_point.as_ref().map(Tensor::dtype);
    if let Some(dt) = zp_dtype {
        if !matches!(dt, DType::U8 | DType::I8 | DType::I32) {
            return Err(cx.err(format!(
                "zero point has type {dt}; kiln supports u8 and i8 quantization (and i32 to dequantize)"
            )));
        }
    }
    let zero_points: Vec<i32> = match &zero_point {
        None => vec![0; scales.len()],
        Some(z) => {
            if z.numel() != scales.len() {
                return Err(cx.err(format!(
                    "zero point has shape {:?}, the scale {:?}",
                    z.shape(),
                    scale.shape()
                )));
            }
            z.to_i64_vec()
                .expect("integer zero point")
                .into_iter()
                .map(|v| v as i32)
                .collect()
        }
    };
    if scale.numel() == 1 {
        return Ok((Quant::per_tensor(scales[0], zero_points[0]), zp_dtype));
    }
    if scale.shape().len() != 1 {
        return Err(cx.err(format!(
            "scale '{scale_name}' of shape {:?}: block quantization is not supported (per-tensor and per-axis only)",
            scale.shape()
        )));
    }
    let axis = cx.axis("axis", axis, data_shape.len())?;
    if data_shape[axis] != scales.len() {
        return Err(cx.err(format!(
            "per-axis scale '{scale_name}' has {} entries, but axis {axis} of the data {data_shape:?} has {}",
            scales.len(),
            data_shape[axis]
        )));
    }
    Ok((
        Quant::PerAxis {
            axis,
            scales,
            zero_points,
        },
        zp_dtype,
    ))
}

/// A zero point has the element type of the integers it belongs to.
fn check_zero_point_type(
    cx: &NodeCx,
    zp: Option<DType>,
    data: DType,
    what: &str,
) -> Result<(), OnnxError> {
    match zp {
        Some(z) if z != data => Err(cx.err(format!(
            "the zero point of {what} is {z}, but {what} is {data}"
        ))),
        _ => Ok(()),
    }
}

/// Reject block quantization and element types other than u8/i8 named by attributes.
fn check_quant_attrs(cx: &NodeCx) -> Result<Option<DType>, OnnxError> {
    if cx.int("block_size", 0)? != 0 {
        return Err(cx.err("block quantization (block_size) is not supported"));
    }
    match cx.int_opt("output_dtype")? {
        None | Some(0) => Ok(None),
        Some(t) if t == DataType::Uint8 as i64 => Ok(Some(DType::U8)),
        Some(t) if t == DataType::Int8 as i64 => Ok(Some(DType::I8)),
        // DequantizeLinear-23 may name its float output type; f16 is computed as f32.
        Some(t)
            if cx.proto.op_type() == "DequantizeLinear"
                && (t == DataType::Float as i64 || t == DataType::Float16 as i64) =>
        {
            Ok(None)
        }
        Some(t) => Err(cx.err(format!(
            "output_dtype {} is not supported (kiln quantizes to u8 and i8)",
            onnx_dtype_name(t as i32)
        ))),
    }
}

pub(crate) fn quantize_linear(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let output_dtype = check_quant_attrs(cx)?;
    if let Some(p) = cx.int_opt("precision")? {
        if p != 0 && p != DataType::Float as i64 {
            return Err(cx.err(format!(
                "precision {} is not supported (kiln quantizes in f32)",
                onnx_dtype_name(p as i32)
            )));
        }
    }
    let shape = im.shape(x).to_vec();
    let (quant, zp_dtype) = quant_params(im, cx, 1, 2, cx.int("axis", 1)?, &shape)?;
    let dtype = match (zp_dtype, output_dtype) {
        (Some(z), Some(o)) if z != o => {
            return Err(cx.err(format!("zero point type {z} differs from output_dtype {o}")))
        }
        (Some(z), _) => z,
        (None, Some(o)) => o,
        // ONNX: without a zero point or output_dtype the result is uint8.
        (None, None) => DType::U8,
    };
    if !matches!(dtype, DType::U8 | DType::I8) {
        return Err(cx.err(format!(
            "quantizing to {dtype} is not supported (u8 and i8 only)"
        )));
    }
    let out = im.main_output(cx)?;
    let ty = TensorType::new(dtype, shape).with_quant(quant);
    im.emit_typed(cx, Op::Quantize, &[x], &[out], vec![ty])?;
    Ok(())
}

/// `x` with casts to its own element type skipped. PyTorch's ONNX exporter writes
/// QuantizeLinear → Cast(to = uint8) → DequantizeLinear for every quantized activation: the
/// cast changes nothing, but in the IR a cast computes on real values, so the integers it
/// passes on could not carry the DequantizeLinear's parameters. The skipped cast is left
/// without users and removed with the other dead nodes.
fn skip_identity_casts(im: &Importer, mut x: ValueId) -> ValueId {
    while let Op::Cast { to } = im.graph.node(x.node).op {
        let source = im.graph.node(x.node).inputs()[0];
        if im.ty(source).dtype != to {
            break;
        }
        x = source;
    }
    x
}

pub(crate) fn dequantize_linear(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = skip_identity_casts(im, im.req_input(cx, 0)?);
    check_quant_attrs(cx)?;
    let shape = im.shape(x).to_vec();
    let (quant, zp_dtype) = quant_params(im, cx, 1, 2, cx.int("axis", 1)?, &shape)?;
    check_zero_point_type(cx, zp_dtype, im.ty(x).dtype, "input x")?;
    let xq = im.quantized_view(cx, x, quant, "input x")?;
    let out = im.main_output(cx)?;
    im.emit(cx, Op::Dequantize, &[xq], &[out])?;
    Ok(())
}

/// The output type of a QLinear op: the zero point's dtype (u8 without one) and
/// per-tensor parameters.
fn qlinear_output_type(
    cx: &NodeCx,
    quant: Quant,
    zp_dtype: Option<DType>,
    shape: Vec<usize>,
) -> Result<TensorType, OnnxError> {
    if !matches!(quant, Quant::PerTensor { .. }) {
        return Err(cx.err("the output must be quantized per tensor"));
    }
    let dtype = zp_dtype.unwrap_or(DType::U8);
    if !matches!(dtype, DType::U8 | DType::I8) {
        return Err(cx.err(format!(
            "output type {dtype} is not supported (u8 and i8 only)"
        )));
    }
    Ok(TensorType::new(dtype, shape).with_quant(quant))
}

/// QLinearConv: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
/// y_zero_point, [B]. The bias is i32 with scale `s_x·s_w` and zero point 0.
pub(crate) fn qlinear_conv(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let w = im.req_input(cx, 3)?;
    let attrs = conv_attrs(im, cx, x, w)?;
    let x_shape = im.shape(x).to_vec();
    let w_shape = im.shape(w).to_vec();
    let (qx, x_zp) = quant_params(im, cx, 1, 2, 1, &x_shape)?;
    if !matches!(qx, Quant::PerTensor { .. }) {
        return Err(cx.err("x must be quantized per tensor"));
    }
    check_zero_point_type(cx, x_zp, im.ty(x).dtype, "input x")?;
    // Weights may be quantized per output channel (axis 0).
    let (qw, w_zp) = quant_params(im, cx, 4, 5, 0, &w_shape)?;
    check_zero_point_type(cx, w_zp, im.ty(w).dtype, "weight w")?;
    let (qy, y_zp_dtype) = quant_params(im, cx, 6, 7, 1, &[])?;
    let mut inputs = vec![
        im.quantized_view(cx, x, qx.clone(), "input x")?,
        im.quantized_view(cx, w, qw.clone(), "weight w")?,
    ];
    if let Some(b) = im.input(cx, 8)? {
        if im.ty(b).dtype != DType::I32 {
            return Err(cx.err(format!("bias must be i32, got {}", im.ty(b))));
        }
        let (sx, _) = qx.params_at(0);
        let qb = match &qw {
            Quant::PerTensor { scale, .. } => Quant::per_tensor(sx * scale, 0),
            Quant::PerAxis { scales, .. } => Quant::PerAxis {
                axis: 0,
                scales: scales.iter().map(|s| sx * s).collect(),
                zero_points: vec![0; scales.len()],
            },
        };
        inputs.push(im.quantized_view(cx, b, qb, "bias B")?);
    }
    let op = Op::QConv(attrs);
    let shape = im.infer_shapes(cx, &op, &inputs)?.swap_remove(0);
    let ty = qlinear_output_type(cx, qy, y_zp_dtype, shape)?;
    let out = im.main_output(cx)?;
    im.emit_typed(cx, op, &inputs, &[out], vec![ty])?;
    Ok(())
}

/// QLinearMatMul: a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
/// y_zero_point. `b` may be quantized per column.
pub(crate) fn qlinear_matmul(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let a = im.req_input(cx, 0)?;
    let b = im.req_input(cx, 3)?;
    let a_shape = im.shape(a).to_vec();
    let b_shape = im.shape(b).to_vec();
    let (qa, a_zp) = quant_params(im, cx, 1, 2, a_shape.len() as i64 - 2, &a_shape)?;
    check_zero_point_type(cx, a_zp, im.ty(a).dtype, "input a")?;
    if !matches!(qa, Quant::PerTensor { .. }) {
        return Err(
            cx.err("per-row quantization of a is not supported (a must be quantized per tensor)")
        );
    }
    let (qb, b_zp) = quant_params(im, cx, 4, 5, b_shape.len() as i64 - 1, &b_shape)?;
    check_zero_point_type(cx, b_zp, im.ty(b).dtype, "input b")?;
    let (qy, y_zp_dtype) = quant_params(im, cx, 6, 7, 1, &[])?;
    let inputs = [
        im.quantized_view(cx, a, qa, "input a")?,
        im.quantized_view(cx, b, qb, "input b")?,
    ];
    let op = Op::QMatMul;
    let shape = im.infer_shapes(cx, &op, &inputs)?.swap_remove(0);
    let ty = qlinear_output_type(cx, qy, y_zp_dtype, shape)?;
    let out = im.main_output(cx)?;
    im.emit_typed(cx, op, &inputs, &[out], vec![ty])?;
    Ok(())
}

/// The inputs of ConvInteger / MatMulInteger: the two operands and their optional zero
/// points. A b zero point without an a zero point gets an explicit 0 for a, because the
/// IR's optional inputs are trailing.
fn integer_op_inputs(im: &mut Importer, cx: &NodeCx) -> Result<Vec<ValueId>, OnnxError> {
    let mut inputs = vec![im.req_input(cx, 0)?, im.req_input(cx, 1)?];
    let a_zp = im.input(cx, 2)?;
    let b_zp = im.input(cx, 3)?;
    match (a_zp, b_zp) {
        (None, None) => {}
        (Some(az), None) => inputs.push(az),
        (az, Some(bz)) => {
            let az = match az {
                Some(az) => az,
                None => {
                    let dtype = im.ty(inputs[0]).dtype;
                    let zero = Tensor::zeros(dtype, vec![]).map_err(|e| cx.err(e.to_string()))?;
                    let name = im.fresh_value_name(&format!("{}_zero_point", cx.node.name));
                    im.bind_const(&name, zero, None)
                }
            };
            inputs.push(az);
            inputs.push(bz);
        }
    }
    Ok(inputs)
}

pub(crate) fn conv_integer(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let inputs = integer_op_inputs(im, cx)?;
    let attrs = conv_attrs(im, cx, inputs[0], inputs[1])?;
    let out = im.main_output(cx)?;
    im.emit(cx, Op::ConvInteger(attrs), &inputs, &[out])?;
    Ok(())
}

/// DynamicQuantizeLinear: x → y (u8), y_scale, y_zero_point, all three IR outputs (named even
/// when the model drops them).
pub(crate) fn dynamic_quantize_linear(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let outputs: Vec<String> = (0..3)
        .map(|i| match im.output_name(cx, i) {
            Some(name) => name.to_string(),
            None => im.fresh_value_name(&format!("{}_unused", cx.node.name)),
        })
        .collect();
    im.emit(cx, Op::DynamicQuantize, &[x], &outputs)?;
    Ok(())
}

pub(crate) fn matmul_integer(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let inputs = integer_op_inputs(im, cx)?;
    let out = im.main_output(cx)?;
    im.emit(cx, Op::MatMulInteger, &inputs, &[out])?;
    Ok(())
}

/// onnxruntime's `com.microsoft` quantized ops kiln imports, sorted (QOperator-format models
/// from onnxruntime's quantizer use them for everything but convolutions and matmuls).
pub(crate) const COM_MICROSOFT_OPS: &[&str] = &[
    "DequantizeLinear",
    "QGemm",
    "QLinearAdd",
    "QLinearAveragePool",
    "QLinearConcat",
    "QLinearGlobalAveragePool",
    "QLinearLeakyRelu",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearSoftmax",
    "QuantizeLinear",
];

/// Convert a node of onnxruntime's `com.microsoft` domain.
///
/// The IR has integer ops only for convolution and matmul, so each of these imports as what
/// its definition says it computes: dequantize the inputs, the float op, quantize with the
/// output's parameters. onnxruntime's kernels compute the same real-valued function with their
/// own rounding (QLinearAdd in fixed point on AVX2, lookup tables for Sigmoid/LeakyRelu/Concat
/// built by exactly this composition, an integer sum for GlobalAveragePool), so results agree
/// within one output step; the QConv rewrites (DESIGN §5) can later absorb these
/// dequantize/quantize pairs like any QDQ model's.
pub(crate) fn convert_com_microsoft(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    match cx.proto.op_type() {
        // UseQDQContribOps: the standard ops under onnxruntime's domain.
        "QuantizeLinear" => quantize_linear(im, cx),
        "DequantizeLinear" => dequantize_linear(im, cx),
        "QLinearAdd" => qlinear_binary(im, cx, BinaryOp::Add),
        "QLinearMul" => qlinear_binary(im, cx, BinaryOp::Mul),
        "QLinearSigmoid" => qlinear_unary(im, cx, Op::Activation(Activation::Sigmoid)),
        "QLinearLeakyRelu" => {
            let alpha = cx.float("alpha", 0.01)?;
            qlinear_unary(im, cx, Op::Activation(Activation::LeakyRelu { alpha }))
        }
        "QLinearGlobalAveragePool" => {
            reject_channels_last(cx)?;
            qlinear_unary(im, cx, Op::GlobalAveragePool)
        }
        "QLinearAveragePool" => qlinear_average_pool(im, cx),
        "QLinearSoftmax" => qlinear_softmax(im, cx),
        "QLinearConcat" => qlinear_concat(im, cx),
        "QGemm" => qgemm(im, cx),
        _ => Err(OnnxError::UnsupportedOp {
            node: Box::new(cx.node.clone()),
            supported: COM_MICROSOFT_OPS.join(", "),
        }),
    }
}

/// Input `x_at` (u8/i8) read with the per-tensor parameters at `scale_at` / `zp_at`, and
/// dequantized to f32.
fn dequantized_input(
    im: &mut Importer,
    cx: &NodeCx,
    x_at: usize,
    scale_at: usize,
    zp_at: usize,
    what: &str,
) -> Result<ValueId, OnnxError> {
    Ok(dequantized_input_named(im, cx, x_at, scale_at, zp_at, what)?.0)
}

/// [`dequantized_input`] and the name of the f32 value.
fn dequantized_input_named(
    im: &mut Importer,
    cx: &NodeCx,
    x_at: usize,
    scale_at: usize,
    zp_at: usize,
    what: &str,
) -> Result<(ValueId, String), OnnxError> {
    let x = skip_identity_casts(im, im.req_input(cx, x_at)?);
    let shape = im.shape(x).to_vec();
    let (quant, zp_dtype) = quant_params(im, cx, scale_at, zp_at, 1, &shape)?;
    if !matches!(quant, Quant::PerTensor { .. }) {
        return Err(cx.err(format!("{what} must be quantized per tensor")));
    }
    if !matches!(im.ty(x).dtype, DType::U8 | DType::I8) {
        return Err(cx.err(format!("{what} must be u8 or i8, got {}", im.ty(x))));
    }
    check_zero_point_type(cx, zp_dtype, im.ty(x).dtype, what)?;
    let xq = im.quantized_view(cx, x, quant, what)?;
    let name = im.fresh_value_name(&format!("{}_{}", cx.node.name, what.replace(' ', "_")));
    let x = im.emit(cx, Op::Dequantize, &[xq], std::slice::from_ref(&name))?[0];
    Ok((x, name))
}

/// A fresh f32 value name for an intermediate of this node.
fn float_name(im: &mut Importer, cx: &NodeCx) -> String {
    im.fresh_value_name(&format!("{}_float", cx.node.name))
}

/// Quantize the f32 result `y` into the node's output with the per-tensor parameters at
/// `scale_at` / `zp_at`. Without a zero point the output has the input's integer type
/// (`input_dtype`), as onnxruntime's `T` type constraint says.
fn quantize_to_output(
    im: &mut Importer,
    cx: &NodeCx,
    y: ValueId,
    scale_at: usize,
    zp_at: usize,
    input_dtype: DType,
) -> Result<(), OnnxError> {
    let shape = im.shape(y).to_vec();
    let (quant, zp_dtype) = quant_params(im, cx, scale_at, zp_at, 1, &shape)?;
    let ty = qlinear_output_type(cx, quant, zp_dtype.or(Some(input_dtype)), shape)?;
    let out = im.main_output(cx)?;
    im.emit_typed(cx, Op::Quantize, &[y], &[out], vec![ty])?;
    Ok(())
}

/// QLinearAdd / QLinearMul: A, A_scale, A_zero_point, B, B_scale, B_zero_point, C_scale,
/// C_zero_point (broadcasting like Add / Mul).
fn qlinear_binary(im: &mut Importer, cx: &NodeCx, op: BinaryOp) -> Result<(), OnnxError> {
    let a = dequantized_input(im, cx, 0, 1, 2, "input A")?;
    let b = dequantized_input(im, cx, 3, 4, 5, "input B")?;
    let dtype = im.ty(im.req_input(cx, 0)?).dtype;
    let name = float_name(im, cx);
    let y = im.emit(cx, Op::Binary(op), &[a, b], &[name])?[0];
    quantize_to_output(im, cx, y, 6, 7, dtype)
}

/// The QLinear ops of one input X, X_scale, X_zero_point, Y_scale, Y_zero_point around a
/// float op.
fn qlinear_unary(im: &mut Importer, cx: &NodeCx, op: Op) -> Result<(), OnnxError> {
    let x = dequantized_input(im, cx, 0, 1, 2, "input X")?;
    let dtype = im.ty(im.req_input(cx, 0)?).dtype;
    let name = float_name(im, cx);
    let y = im.emit(cx, op, &[x], &[name])?[0];
    quantize_to_output(im, cx, y, 3, 4, dtype)
}

/// `channels_last = 1` (NHWC pooling) is not imported.
fn reject_channels_last(cx: &NodeCx) -> Result<(), OnnxError> {
    if cx.int("channels_last", 0)? != 0 {
        return Err(cx.err("channels_last = 1 (NHWC) is not supported"));
    }
    Ok(())
}

/// QLinearAveragePool: AveragePool's attributes on X, X_scale, X_zero_point, Y_scale,
/// Y_zero_point. The float pool is built by the AveragePool converter itself, on a copy of
/// the node that reads the dequantized input and writes an intermediate.
fn qlinear_average_pool(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    reject_channels_last(cx)?;
    let (_, x_name) = dequantized_input_named(im, cx, 0, 1, 2, "input X")?;
    let dtype = im.ty(im.req_input(cx, 0)?).dtype;
    let pooled = float_name(im, cx);
    let mut proto = cx.proto.clone();
    proto.input = vec![x_name];
    proto.output = vec![pooled.clone()];
    let float_cx = NodeCx {
        proto: &proto,
        node: cx.node.clone(),
    };
    average_pool(im, &float_cx)?;
    // The pooled value, looked up by name as a node reading it would.
    let reader = NodeProto {
        input: vec![pooled],
        ..NodeProto::default()
    };
    let y = im.req_input(
        &NodeCx {
            proto: &reader,
            node: cx.node.clone(),
        },
        0,
    )?;
    quantize_to_output(im, cx, y, 3, 4, dtype)
}

/// QLinearSoftmax: X, X_scale, X_zero_point, Y_scale, Y_zero_point; `axis`, and `opset`, the
/// Softmax version whose semantics apply (before 13: over the dims from `axis` on, coerced
/// to 2-D).
fn qlinear_softmax(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let softmax_opset = cx
        .int_opt("opset")?
        .ok_or_else(|| cx.err("attribute 'opset' is required"))?;
    let x = dequantized_input(im, cx, 0, 1, 2, "input X")?;
    let dtype = im.ty(im.req_input(cx, 0)?).dtype;
    let rank = im.shape(x).len();
    let legacy_opset = softmax_opset < 13;
    let axis = cx.int("axis", if legacy_opset { 1 } else { -1 })?;
    let axis = cx.axis("axis", axis, rank)?;
    let op = Op::Softmax {
        axis,
        legacy: legacy_opset && axis + 1 != rank,
    };
    let name = float_name(im, cx);
    let y = im.emit(cx, op, &[x], &[name])?[0];
    quantize_to_output(im, cx, y, 3, 4, dtype)
}

/// QLinearConcat: Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per input; `axis`.
/// onnxruntime requantizes each input whose parameters differ from Y's through a lookup
/// table built as quantize(dequantize(x)) — this composition — and copies the others, which
/// the composition reproduces exactly (`(q − zp)·s / s` rounds back to `q − zp`).
fn qlinear_concat(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let count = im.input_count(cx);
    if count < 5 || !(count - 2).is_multiple_of(3) {
        return Err(cx.err(format!(
            "expected Y_scale, Y_zero_point and (X, X_scale, X_zero_point) triples, got {count} \
             inputs"
        )));
    }
    let mut inputs = Vec::with_capacity((count - 2) / 3);
    for k in 0..(count - 2) / 3 {
        let at = 2 + 3 * k;
        inputs.push(dequantized_input(
            im,
            cx,
            at,
            at + 1,
            at + 2,
            &format!("input {k}"),
        )?);
    }
    let dtype = im.ty(im.req_input(cx, 2)?).dtype;
    let axis = cx
        .int_opt("axis")?
        .ok_or_else(|| cx.err("attribute 'axis' is required"))?;
    let axis = cx.axis("axis", axis, im.shape(inputs[0]).len())?;
    let name = float_name(im, cx);
    let y = im.emit(cx, Op::Concat { axis }, &inputs, &[name])?[0];
    quantize_to_output(im, cx, y, 0, 1, dtype)
}

/// QGemm: A, a_scale, a_zero_point, B, b_scale, b_zero_point, [C], [y_scale],
/// [y_zero_point]; `alpha`, `transA`, `transB`. `Y = alpha·A'·B' + C`, where C is i32 with
/// scale `alpha·a_scale·b_scale` and zero point 0 (onnxruntime's definition: the scale
/// `alpha/beta·a_scale·b_scale` with beta fixed at 1). b may be quantized per output column.
/// Without y_scale the output is the f32 result.
fn qgemm(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let alpha = cx.float("alpha", 1.0)?;
    let trans_a = cx.bool("transA", false)?;
    let trans_b = cx.bool("transB", false)?;
    let a = dequantized_input(im, cx, 0, 1, 2, "input A")?;
    let a_dtype = im.ty(im.req_input(cx, 0)?).dtype;
    let (_, sa, _) = per_tensor_param(im, cx, 1, 2, "a")?;

    // B's columns (outputs) are its axis 0 when transposed, else axis 1.
    let b = im.req_input(cx, 3)?;
    let b_shape = im.shape(b).to_vec();
    if b_shape.len() != 2 {
        return Err(cx.err(format!("B must be 2-D, got shape {b_shape:?}")));
    }
    let column_axis = if trans_b { 0 } else { 1 };
    let (qb, b_zp) = quant_params(im, cx, 4, 5, column_axis as i64, &b_shape)?;
    check_zero_point_type(cx, b_zp, im.ty(b).dtype, "input B")?;
    let bq = im.quantized_view(cx, b, qb.clone(), "input B")?;
    let b_name = im.fresh_value_name(&format!("{}_input_B", cx.node.name));
    let b = im.emit(cx, Op::Dequantize, &[bq], &[b_name])?[0];

    let mut inputs = vec![a, b];
    if let Some(c) = im.input(cx, 6)? {
        if im.ty(c).dtype != DType::I32 {
            return Err(cx.err(format!("C must be i32, got {}", im.ty(c))));
        }
        let c_shape = im.shape(c).to_vec();
        // C's scale per output column n: alpha·a_scale·b_scale[n], multiplied in f32.
        let qc = match &qb {
            Quant::PerTensor { scale, .. } => Quant::per_tensor(alpha * sa * scale, 0),
            Quant::PerAxis { scales, .. } => {
                let columns = scales.len();
                if c_shape.last() != Some(&columns) {
                    return Err(cx.err(format!(
                        "C of shape {c_shape:?} cannot take per-column scales for {columns} \
                         columns"
                    )));
                }
                Quant::PerAxis {
                    axis: c_shape.len() - 1,
                    scales: scales.iter().map(|s| alpha * sa * s).collect(),
                    zero_points: vec![0; columns],
                }
            }
        };
        let cq = im.quantized_view(cx, c, qc, "input C")?;
        let c_name = im.fresh_value_name(&format!("{}_input_C", cx.node.name));
        inputs.push(im.emit(cx, Op::Dequantize, &[cq], &[c_name])?[0]);
    }
    let op = Op::Gemm(GemmAttrs {
        alpha,
        beta: 1.0,
        trans_a,
        trans_b,
        act: None,
    });
    if im.input(cx, 7)?.is_none() {
        // No y_scale: the f32 result is the output.
        let out = im.main_output(cx)?;
        im.emit(cx, op, &inputs, &[out])?;
        return Ok(());
    }
    let name = float_name(im, cx);
    let y = im.emit(cx, op, &inputs, &[name])?[0];
    quantize_to_output(im, cx, y, 7, 8, a_dtype)
}

/// The per-tensor scale at `scale_at` (with its zero point at `zp_at`) as `(quant, scale,
/// zero point)`.
fn per_tensor_param(
    im: &Importer,
    cx: &NodeCx,
    scale_at: usize,
    zp_at: usize,
    what: &str,
) -> Result<(Quant, f32, i32), OnnxError> {
    let (q, _) = quant_params(im, cx, scale_at, zp_at, 0, &[])?;
    match q {
        Quant::PerTensor { scale, zero_point } => Ok((q, scale, zero_point)),
        Quant::PerAxis { .. } => Err(cx.err(format!("{what} must be quantized per tensor"))),
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::tensor_proto::DataType;
    use crate::testutil::*;
    use kiln_ir::{BinaryOp, DType, Op, Quant, Tensor, TensorData, TensorType};

    fn u8_scalar(name: &str, v: u8) -> crate::proto::TensorProto {
        tensor_raw(name, DataType::Uint8, &[], vec![v])
    }

    fn i8_tensor(name: &str, dims: &[i64], v: &[i8]) -> crate::proto::TensorProto {
        tensor_raw(
            name,
            DataType::Int8,
            dims,
            v.iter().map(|&b| b as u8).collect(),
        )
    }

    #[test]
    fn quantize_dequantize_round_trip() {
        let g = ModelBuilder::new(13)
            .input("x", &[3])
            .init(tensor_f32("s", &[], &[0.5]))
            .init(u8_scalar("zp", 10))
            .node(node("QuantizeLinear", &["x", "s", "zp"], &["q"], vec![]))
            .node(node("DequantizeLinear", &["q", "s", "zp"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Dequantize);
        let q = output_operand(&g, 0, 0);
        assert_eq!(g.node(q.node).op, Op::Quantize);
        assert_eq!(
            g.value_type(q),
            &TensorType::new(DType::U8, vec![3]).with_quant(Quant::per_tensor(0.5, 10))
        );
        // q = sat(round(x / 0.5) + 10): 1 → 12, -3 → 4, 200 → 410 → 255; y = 0.5·(q − 10).
        let x = Tensor::from_f32(vec![3], vec![1.0, -3.0, 200.0]).unwrap();
        assert_eq!(run(&g, &[x])[0].as_f32().unwrap(), &[1.0, -3.0, 122.5]);
    }

    #[test]
    fn pytorch_identity_cast_between_quantize_and_dequantize_is_skipped() {
        // PyTorch's exporter: QuantizeLinear → Cast(to = UINT8) → DequantizeLinear.
        let g = ModelBuilder::new(13)
            .input("x", &[3])
            .init(tensor_f32("s", &[], &[0.5]))
            .init(u8_scalar("zp", 10))
            .node(node("QuantizeLinear", &["x", "s", "zp"], &["q"], vec![]))
            .node(node(
                "Cast",
                &["q"],
                &["c"],
                vec![attr_int("to", DataType::Uint8 as i64)],
            ))
            .node(node("DequantizeLinear", &["c", "s", "zp"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Dequantize);
        assert_eq!(g.node(output_operand(&g, 0, 0).node).op, Op::Quantize);
        assert!(!compute_ops(&g)
            .iter()
            .any(|op| matches!(op, Op::Cast { .. })));
        // As in quantize_dequantize_round_trip: 1 → 12 → 1, -3 → 4 → -3, 200 → 255 → 122.5.
        let x = Tensor::from_f32(vec![3], vec![1.0, -3.0, 200.0]).unwrap();
        assert_eq!(run(&g, &[x])[0].as_f32().unwrap(), &[1.0, -3.0, 122.5]);
    }

    #[test]
    fn quantize_without_zero_point_is_u8_unless_output_dtype_says_otherwise() {
        let q = |opset: i64, attrs| {
            let g = ModelBuilder::new(opset)
                .input("x", &[2])
                .init(tensor_f32("s", &[], &[0.5]))
                .node(node("QuantizeLinear", &["x", "s"], &["q"], attrs))
                .output("q")
                .import()
                .unwrap();
            g.value_type(g.outputs()[0]).clone()
        };
        assert_eq!(q(13, vec![]).dtype, DType::U8);
        assert_eq!(
            q(21, vec![attr_int("output_dtype", DataType::Int8 as i64)]).dtype,
            DType::I8
        );
    }

    #[test]
    fn constant_weights_quantize_at_import_and_keep_their_dequantize() {
        let g = ModelBuilder::new(13)
            .init(tensor_f32("w", &[2], &[0.3, -0.3]))
            .init(tensor_f32("s", &[], &[0.1]))
            .init(i8_tensor("zp", &[], &[0]))
            .node(node("QuantizeLinear", &["w", "s", "zp"], &["wq"], vec![]))
            .node(node("DequantizeLinear", &["wq", "s", "zp"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Dequantize);
        let wq = output_operand(&g, 0, 0);
        // round(0.3 / 0.1) = 3 (0.3/0.1 is 2.9999998 in f32, still nearest to 3).
        assert_eq!(
            g.const_tensor(wq).unwrap().data(),
            &TensorData::I8(vec![3, -3])
        );
        assert_eq!(g.value_type(wq).quant, Some(Quant::per_tensor(0.1, 0)));
    }

    #[test]
    fn dequantize_puts_the_parameters_on_the_integer_value() {
        let w = i8_tensor("w", &[2, 3], &[1, 2, 3, -1, -2, -3]);
        let g = ModelBuilder::new(13)
            .input_typed("x", DataType::Uint8, Some(&[Dim::Fixed(4)]))
            .init(w)
            .init(tensor_f32("xs", &[], &[0.25]))
            .init(u8_scalar("xz", 128))
            .init(tensor_f32("ws", &[2], &[0.1, 0.2]))
            .init(tensor_f32("ws2", &[], &[0.5]))
            .node(node(
                "DequantizeLinear",
                &["x", "xs", "xz"],
                &["xf"],
                vec![],
            ))
            .node(node(
                "DequantizeLinear",
                &["w", "ws"],
                &["wf"],
                vec![attr_int("axis", 0)],
            ))
            .node(node("DequantizeLinear", &["w", "ws2"], &["wf2"], vec![]))
            .output("xf")
            .output("wf")
            .output("wf2")
            .import()
            .unwrap();
        assert_eq!(
            g.value_type(g.inputs()[0]).quant,
            Some(Quant::per_tensor(0.25, 128))
        );
        let w1 = output_operand(&g, 1, 0);
        let w2 = output_operand(&g, 2, 0);
        assert_eq!(
            g.value_type(w1).quant,
            Some(Quant::PerAxis {
                axis: 0,
                scales: vec![0.1, 0.2],
                zero_points: vec![0, 0]
            })
        );
        // The same integers read with other parameters: a second constant node, same data.
        assert_ne!(w1, w2);
        assert_eq!(g.value_type(w2).quant, Some(Quant::per_tensor(0.5, 0)));
        assert_eq!(g.node(w1.node).op, g.node(w2.node).op);
        // 0.5 · [1, 2, 3, -1, -2, -3]
        assert_eq!(
            run(
                &g,
                &[Tensor::new(vec![4], TensorData::U8(vec![0, 128, 129, 255])).unwrap()]
            )[2]
            .as_f32()
            .unwrap(),
            &[0.5, 1.0, 1.5, -0.5, -1.0, -1.5]
        );
    }

    #[test]
    fn unsupported_quantization_is_a_clear_error() {
        let dq = |inits: Vec<crate::proto::TensorProto>, inputs: &[&str], attrs| {
            let mut m = ModelBuilder::new(21).input_typed(
                "x",
                DataType::Int8,
                Some(&[Dim::Fixed(2), Dim::Fixed(4)]),
            );
            for t in inits {
                m = m.init(t);
            }
            m.node(named(node("DequantizeLinear", inputs, &["y"], attrs), "dq"))
                .output("y")
                .import()
                .unwrap_err()
                .to_string()
        };
        let blocked = dq(
            vec![tensor_f32("s", &[2, 2], &[1.0; 4])],
            &["x", "s"],
            vec![attr_int("axis", 1), attr_int("block_size", 2)],
        );
        assert!(
            blocked.ends_with("block quantization (block_size) is not supported"),
            "{blocked}"
        );
        let rank2 = dq(
            vec![tensor_f32("s", &[2, 2], &[1.0; 4])],
            &["x", "s"],
            vec![],
        );
        assert!(
            rank2.contains("block quantization is not supported"),
            "{rank2}"
        );
        let zero = dq(vec![tensor_f32("s", &[], &[0.0])], &["x", "s"], vec![]);
        assert!(zero.contains("kiln needs positive finite scales"), "{zero}");
        let int4 = dq(
            vec![
                tensor_f32("s", &[], &[1.0]),
                tensor_raw("z", DataType::Int4, &[], vec![0]),
            ],
            &["x", "s", "z"],
            vec![],
        );
        assert!(
            int4.contains("tensor 'z': element type INT4 is not supported"),
            "{int4}"
        );
        let mismatch = dq(
            vec![tensor_f32("s", &[], &[1.0]), u8_scalar("z", 3)],
            &["x", "s", "z"],
            vec![],
        );
        assert!(
            mismatch.contains("the zero point of input x is u8, but input x is i8"),
            "{mismatch}"
        );
        let axis = dq(
            vec![tensor_f32("s", &[3], &[1.0; 3])],
            &["x", "s"],
            vec![attr_int("axis", 1)],
        );
        assert!(
            axis.contains("has 3 entries, but axis 1 of the data [2, 4] has 4"),
            "{axis}"
        );
    }

    #[test]
    fn computed_integers_cannot_be_read_with_two_parameter_sets() {
        let err = ModelBuilder::new(13)
            .input_typed("x", DataType::Uint8, Some(&[Dim::Fixed(2), Dim::Fixed(2)]))
            .init(tensor_i64("shape", &[1], &[4]))
            .init(tensor_f32("s1", &[], &[0.5]))
            .init(tensor_f32("s2", &[], &[0.25]))
            .node(node("Reshape", &["x", "shape"], &["r"], vec![]))
            .node(node("DequantizeLinear", &["r", "s1"], &["a"], vec![]))
            .node(named(
                node("DequantizeLinear", &["r", "s2"], &["b"], vec![]),
                "dq2",
            ))
            .output("a")
            .output("b")
            .import()
            .unwrap_err();
        assert!(err.to_string().starts_with("node 'dq2' (DequantizeLinear, domain ai.onnx, opset 13): input x 'r' is already read"), "{err}");
    }

    #[test]
    fn qlinear_conv_becomes_qconv_with_quantized_operands() {
        let g = ModelBuilder::new(13)
            .input_typed(
                "x",
                DataType::Uint8,
                Some(&[Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(3)]),
            )
            .init(tensor_f32("xs", &[], &[0.5]))
            .init(u8_scalar("xz", 128))
            .init(i8_tensor("w", &[2, 1, 1, 1], &[1, -1]))
            .init(tensor_f32("ws", &[2], &[0.1, 0.2]))
            .init(i8_tensor("wz", &[2], &[0, 0]))
            .init(tensor_f32("ys", &[], &[0.25]))
            .init(u8_scalar("yz", 100))
            .init(tensor_raw(
                "b",
                DataType::Int32,
                &[2],
                [10i32, -20].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ))
            .node(node(
                "QLinearConv",
                &["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                &["y"],
                vec![],
            ))
            .output("y")
            .import()
            .unwrap();
        assert!(matches!(output_op(&g, 0), Op::QConv(_)));
        assert_eq!(
            g.value_type(g.outputs()[0]),
            &TensorType::new(DType::U8, vec![1, 2, 3, 3]).with_quant(Quant::per_tensor(0.25, 100))
        );
        let bias = output_operand(&g, 0, 2);
        assert_eq!(
            g.value_type(bias).quant,
            Some(Quant::PerAxis {
                axis: 0,
                scales: vec![0.5f32 * 0.1, 0.5f32 * 0.2],
                zero_points: vec![0, 0]
            })
        );
        // Every x = 130 (x − 128 = 2). Channel 0: acc 2·1 + 10 = 12, 12·(0.5·0.1/0.25) = 2.4
        // → 2 + 100 = 102. Channel 1: 2·(−1) − 20 = −22, −22·(0.5·0.2/0.25) = −8.8 → −9 + 100 = 91.
        let x = Tensor::new(vec![1, 1, 3, 3], TensorData::U8(vec![130; 9])).unwrap();
        let y = run(&g, &[x]).remove(0);
        assert_eq!(
            y.data(),
            &TensorData::U8([vec![102; 9], vec![91; 9]].concat())
        );
    }

    #[test]
    fn qlinear_matmul_accepts_per_column_weights() {
        let g = ModelBuilder::new(10)
            .input_typed("a", DataType::Uint8, Some(&[Dim::Fixed(2), Dim::Fixed(3)]))
            .init(tensor_f32("as", &[], &[0.5]))
            .init(u8_scalar("az", 0))
            .init(i8_tensor("b", &[3, 2], &[1, 2, 3, 4, 5, 6]))
            .init(tensor_f32("bs", &[2], &[0.1, 0.2]))
            .init(i8_tensor("bz", &[2], &[0, 0]))
            .init(tensor_f32("ys", &[], &[0.1]))
            .init(u8_scalar("yz", 0))
            .node(node(
                "QLinearMatMul",
                &["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                &["y"],
                vec![],
            ))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::QMatMul);
        let b = output_operand(&g, 0, 1);
        assert_eq!(
            g.value_type(b).quant.as_ref().and_then(Quant::axis),
            Some(1)
        );
        assert_eq!(g.value_type(g.outputs()[0]).shape, vec![2, 2]);
    }

    #[test]
    fn integer_ops_get_an_explicit_zero_for_an_omitted_first_zero_point() {
        let g = ModelBuilder::new(10)
            .input_typed(
                "x",
                DataType::Uint8,
                Some(&[Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(3)]),
            )
            .init(i8_tensor("w", &[1, 1, 2, 2], &[1, 1, 1, 1]))
            .init(i8_tensor("wz", &[], &[1]))
            .node(node("ConvInteger", &["x", "w", "", "wz"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert!(matches!(output_op(&g, 0), Op::ConvInteger(_)));
        let xz = output_operand(&g, 0, 2);
        assert_eq!(g.const_tensor(xz).unwrap().data(), &TensorData::U8(vec![0]));
        assert_eq!(
            g.value_type(g.outputs()[0]),
            &TensorType::new(DType::I32, vec![1, 1, 2, 2])
        );
        let g = ModelBuilder::new(10)
            .input_typed("a", DataType::Uint8, Some(&[Dim::Fixed(2), Dim::Fixed(3)]))
            .init(tensor_raw("b", DataType::Uint8, &[3, 1], vec![1, 2, 3]))
            .init(u8_scalar("az", 1))
            .node(node("MatMulInteger", &["a", "b", "az"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::MatMulInteger);
        assert_eq!(output_node(&g, 0).inputs().len(), 3);
    }

    // ---- onnxruntime's com.microsoft QLinear ops. Expected integers are onnxruntime 1.31.1's
    // outputs for the same one-node models (CPU, optimizations disabled); inputs avoid exact
    // rounding ties, where onnxruntime's kernels and the dequantize → op → quantize import
    // may round differently (tests/prequantized.rs measures that on real models).

    /// Import a model whose nodes may be in the com.microsoft domain (opset 1).
    fn import_ms(builder: ModelBuilder) -> Result<kiln_ir::Graph, crate::OnnxError> {
        use prost::Message;
        let mut model = builder.model();
        model.opset_import.push(crate::proto::OperatorSetIdProto {
            domain: Some("com.microsoft".into()),
            version: Some(1),
        });
        crate::import_bytes(
            &model.encode_to_vec(),
            None,
            &crate::ImportOptions::default(),
        )
    }

    fn ms(mut n: crate::proto::NodeProto) -> crate::proto::NodeProto {
        n.domain = Some("com.microsoft".into());
        n
    }

    fn fixed(dims: &[i64]) -> Vec<Dim> {
        dims.iter().map(|&d| Dim::Fixed(d)).collect()
    }

    fn u8_tensor(name: &str, dims: &[i64], v: &[u8]) -> crate::proto::TensorProto {
        tensor_raw(name, DataType::Uint8, dims, v.to_vec())
    }

    fn i32_tensor(name: &str, dims: &[i64], v: &[i32]) -> crate::proto::TensorProto {
        tensor_raw(
            name,
            DataType::Int32,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    fn run_u8(g: &kiln_ir::Graph, shape: &[usize], x: &[u8]) -> Tensor {
        let x = Tensor::new(shape.to_vec(), TensorData::U8(x.to_vec())).unwrap();
        run(g, &[x]).remove(0)
    }

    fn run_i8(g: &kiln_ir::Graph, shape: &[usize], x: &[i8]) -> Tensor {
        let x = Tensor::new(shape.to_vec(), TensorData::I8(x.to_vec())).unwrap();
        run(g, &[x]).remove(0)
    }

    #[test]
    fn qlinear_add_imports_as_dequantize_add_quantize() {
        let g = import_ms(
            ModelBuilder::new(13)
                .input_typed("x", DataType::Uint8, Some(&fixed(&[6])))
                .init(tensor_f32("as", &[], &[0.05]))
                .init(u8_scalar("az", 128))
                .init(u8_tensor("b", &[1], &[200]))
                .init(tensor_f32("bs", &[], &[0.02]))
                .init(u8_scalar("bz", 10))
                .init(tensor_f32("cs", &[], &[0.07]))
                .init(u8_scalar("cz", 100))
                .node(ms(node(
                    "QLinearAdd",
                    &["x", "as", "az", "b", "bs", "bz", "cs", "cz"],
                    &["y"],
                    vec![],
                )))
                .output("y"),
        )
        .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Quantize);
        assert_eq!(
            g.value_type(g.outputs()[0]),
            &TensorType::new(DType::U8, vec![6]).with_quant(Quant::per_tensor(0.07, 100))
        );
        let add = output_operand(&g, 0, 0);
        assert_eq!(g.node(add.node).op, Op::Binary(BinaryOp::Add));
        for &operand in g.node(add.node).inputs() {
            assert_eq!(g.node(operand.node).op, Op::Dequantize);
        }
        // x = 0: 0.05·(0 − 128) + 0.02·(200 − 10) = −2.6 → −2.6 / 0.07 = −37.1 → 63.
        let y = run_u8(&g, &[6], &[0, 10, 100, 128, 200, 255]);
        assert_eq!(y.data(), &TensorData::U8(vec![63, 70, 134, 154, 206, 245]));
    }

    #[test]
    fn qlinear_mul_keeps_the_signed_type() {
        let g = import_ms(
            ModelBuilder::new(13)
                .input_typed("x", DataType::Int8, Some(&fixed(&[5])))
                .init(tensor_f32("as", &[], &[0.1]))
                .init(i8_tensor("az", &[], &[-3]))
                .init(i8_tensor("b", &[5], &[7, -20, 33, -128, 90]))
                .init(tensor_f32("bs", &[], &[0.03]))
                .init(i8_tensor("bz", &[], &[2]))
                .init(tensor_f32("cs", &[], &[0.3]))
                .init(i8_tensor("cz", &[], &[5]))
                .node(ms(node(
                    "QLinearMul",
                    &["x", "as", "az", "b", "bs", "bz", "cs", "cz"],
                    &["y"],
                    vec![],
                )))
                .output("y"),
        )
        .unwrap();
        let y = run_i8(&g, &[5], &[-100, -1, 0, 50, 127]);
        assert_eq!(y.data(), &TensorData::I8(vec![0, 5, 6, -64, 119]));
    }

    #[test]
    fn qlinear_concat_requantizes_each_input_to_the_output() {
        let g = import_ms(
            ModelBuilder::new(13)
                .input_typed("x", DataType::Uint8, Some(&fixed(&[1, 2, 2])))
                .init(tensor_f32("ys", &[], &[0.1]))
                .init(u8_scalar("yz", 128))
                .init(u8_tensor("c", &[1, 1, 2], &[3, 255]))
                .init(tensor_f32("cs", &[], &[0.05]))
                .init(u8_scalar("cz", 0))
                .node(ms(node(
                    "QLinearConcat",
                    &["ys", "yz", "x", "ys", "yz", "c", "cs", "cz"],
                    &["y"],
                    vec![attr_int("axis", 1)],
                )))
                .output("y"),
        )
        .unwrap();
        // x has the output's parameters and is copied; c = [0.15, 12.75] → [130, 255].
        let y = run_u8(&g, &[1, 2, 2], &[100, 130, 250, 0]);
        assert_eq!(y.shape(), &[1, 3, 2]);
        assert_eq!(y.data(), &TensorData::U8(vec![100, 130, 250, 0, 130, 255]));
    }

    #[test]
    fn qlinear_pools_resolve_their_geometry() {
        let pool = |op: &str, attrs| {
            import_ms(
                ModelBuilder::new(13)
                    .input_typed("x", DataType::Uint8, Some(&fixed(&[1, 1, 4, 4])))
                    .init(tensor_f32("xs", &[], &[0.5]))
                    .init(u8_scalar("xz", 10))
                    .init(tensor_f32("ys", &[], &[0.5]))
                    .init(u8_scalar("yz", 20))
                    .node(ms(node(op, &["x", "xs", "xz", "ys", "yz"], &["y"], attrs)))
                    .output("y"),
            )
        };
        let g = pool(
            "QLinearAveragePool",
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_int("count_include_pad", 0),
            ],
        )
        .unwrap();
        let pooled = output_operand(&g, 0, 0);
        let Op::AveragePool(attrs) = &g.node(pooled.node).op else {
            panic!("expected an average pool, got {:?}", g.node(pooled.node).op);
        };
        assert_eq!(attrs.pads, vec![1, 1, 1, 1]);
        assert!(!attrs.count_include_pad);
        let x: Vec<u8> = (0..16u32).map(|i| (i * 13 % 256) as u8).collect();
        // Top-left window: x ∈ {0, 13, 52, 65} − 10, mean 22.5·0.5 = 11.25 → 22.5 steps,
        // a tie rounded to even (22) by both onnxruntime and kiln → 42.
        assert_eq!(
            run_u8(&g, &[1, 1, 4, 4], &x).data(),
            &TensorData::U8(vec![42, 62, 120, 140])
        );

        let channels_last = pool(
            "QLinearAveragePool",
            vec![
                attr_ints("kernel_shape", &[2, 2]),
                attr_int("channels_last", 1),
            ],
        )
        .unwrap_err();
        assert!(
            channels_last
                .to_string()
                .ends_with("channels_last = 1 (NHWC) is not supported"),
            "{channels_last}"
        );

        let g = import_ms(
            ModelBuilder::new(13)
                .input_typed("x", DataType::Uint8, Some(&fixed(&[1, 2, 2, 2])))
                .init(tensor_f32("xs", &[], &[0.5]))
                .init(u8_scalar("xz", 10))
                .init(tensor_f32("ys", &[], &[1.0]))
                .init(u8_scalar("yz", 128))
                .node(ms(node(
                    "QLinearGlobalAveragePool",
                    &["x", "xs", "xz", "ys", "yz"],
                    &["y"],
                    vec![attr_int("channels_last", 0)],
                )))
                .output("y"),
        )
        .unwrap();
        // Channel 0: mean(1, 2, 3, 7) − 10 = −6.75, ·0.5 = −3.375 → −3 + 128 = 125.
        assert_eq!(
            run_u8(&g, &[1, 2, 2, 2], &[1, 2, 3, 7, 200, 201, 250, 255]).data(),
            &TensorData::U8(vec![125, 236])
        );
    }

    #[test]
    fn qlinear_softmax_follows_its_opset_attribute() {
        let softmax = |shape: &[i64], attrs| {
            import_ms(
                ModelBuilder::new(13)
                    .input_typed("x", DataType::Uint8, Some(&fixed(shape)))
                    .init(tensor_f32("xs", &[], &[0.2]))
                    .init(u8_scalar("xz", 100))
                    .init(tensor_f32("ys", &[], &[1.0 / 256.0]))
                    .init(u8_scalar("yz", 0))
                    .node(ms(node(
                        "QLinearSoftmax",
                        &["x", "xs", "xz", "ys", "yz"],
                        &["y"],
                        attrs,
                    )))
                    .output("y"),
            )
            .unwrap()
        };
        let g = softmax(&[2, 3], vec![attr_int("axis", -1), attr_int("opset", 13)]);
        assert_eq!(
            run_u8(&g, &[2, 3], &[100, 110, 90, 0, 255, 128]).data(),
            &TensorData::U8(vec![30, 222, 4, 0, 255, 0])
        );
        // Softmax-11 semantics over [2, 3, 4] from axis 1: the legacy 2-D coercion.
        let g = softmax(&[2, 3, 4], vec![attr_int("axis", 1), attr_int("opset", 11)]);
        let float = output_operand(&g, 0, 0);
        assert_eq!(
            g.node(float.node).op,
            Op::Softmax {
                axis: 1,
                legacy: true
            }
        );
    }

    #[test]
    fn qgemm_with_and_without_output_quantization() {
        let qgemm = |quantized_output: bool, alpha: f32| {
            let mut m = ModelBuilder::new(13)
                .input_typed("a", DataType::Uint8, Some(&fixed(&[2, 3])))
                .init(tensor_f32("as", &[], &[0.1]))
                .init(u8_scalar("az", 120))
                .init(i8_tensor(
                    "b",
                    &[4, 3],
                    &[1, -2, 3, 4, 5, -6, -7, 8, 9, 127, -128, 0],
                ))
                .init(tensor_f32("bs", &[4], &[0.01, 0.02, 0.03, 0.04]))
                .init(i8_tensor("bz", &[4], &[0; 4]))
                .init(i32_tensor("c", &[4], &[100, -200, 0, 500]));
            let mut inputs = vec!["a", "as", "az", "b", "bs", "bz", "c"];
            if quantized_output {
                m = m
                    .init(tensor_f32("ys", &[], &[0.05]))
                    .init(u8_scalar("yz", 128));
                inputs.extend(["ys", "yz"]);
            }
            import_ms(
                m.node(ms(node(
                    "QGemm",
                    &inputs,
                    &["y"],
                    vec![attr_int("transB", 1), attr_float("alpha", alpha)],
                )))
                .output("y"),
            )
            .unwrap()
        };
        let a = [120, 130, 200, 0, 255, 121];
        let g = qgemm(true, 1.0);
        // C is read with scale alpha·a_scale·b_scale[n] per output column.
        let gemm = output_operand(&g, 0, 0);
        let c = g.node(gemm.node).inputs()[2];
        let c_int = g.node(c.node).inputs()[0];
        assert_eq!(
            g.value_type(c_int).quant,
            Some(Quant::PerAxis {
                axis: 0,
                scales: [0.01f32, 0.02, 0.03, 0.04]
                    .iter()
                    .map(|s| 0.1 * s)
                    .collect(),
                zero_points: vec![0; 4]
            })
        );
        assert_eq!(
            run_u8(&g, &[2, 3], &a).data(),
            &TensorData::U8(vec![134, 103, 176, 66, 122, 128, 244, 0])
        );
        let g = qgemm(false, 0.5);
        assert!(matches!(output_op(&g, 0), Op::Gemm(_)));
        let y = run_u8(&g, &[2, 3], &a);
        let expected = [0.16, -0.63, 1.2, -1.56, -0.1435, -0.011, 2.8935, -64.04];
        for (got, want) in y.as_f32().unwrap().iter().zip(expected) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn qlinear_sigmoid_and_leaky_relu() {
        let unary = |op: &str, attrs, ys: f32, yz: i8| {
            import_ms(
                ModelBuilder::new(13)
                    .input_typed("x", DataType::Int8, Some(&fixed(&[5])))
                    .init(tensor_f32("xs", &[], &[0.05]))
                    .init(i8_tensor("xz", &[], &[0]))
                    .init(tensor_f32("ys", &[], &[ys]))
                    .init(i8_tensor("yz", &[], &[yz]))
                    .node(ms(node(op, &["x", "xs", "xz", "ys", "yz"], &["y"], attrs)))
                    .output("y"),
            )
            .unwrap()
        };
        let x = [-128, -20, 0, 3, 127];
        let g = unary("QLinearSigmoid", vec![], 1.0 / 256.0, -128);
        assert_eq!(
            run_i8(&g, &[5], &x).data(),
            &TensorData::I8(vec![-128, -59, 0, 10, 127])
        );
        let g = unary("QLinearLeakyRelu", vec![attr_float("alpha", 0.1)], 0.04, 10);
        assert_eq!(
            run_i8(&g, &[5], &x).data(),
            &TensorData::I8(vec![-6, 8, 10, 14, 127])
        );
    }

    #[test]
    fn unknown_com_microsoft_ops_list_the_supported_ones() {
        let err = import_ms(
            ModelBuilder::new(13)
                .input("x", &[2])
                .node(ms(named(node("FusedGemm", &["x"], &["y"], vec![]), "fg")))
                .output("y"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "unsupported op 'FusedGemm' (domain com.microsoft, opset 1) in node 'fg'; \
                 supported: {}",
                super::COM_MICROSOFT_OPS.join(", ")
            )
        );
        assert!(super::COM_MICROSOFT_OPS.windows(2).all(|w| w[0] < w[1]));
    }
}
