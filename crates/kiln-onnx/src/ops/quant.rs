//! Quantized models: QDQ (QuantizeLinear / DequantizeLinear) and QOperator (QLinearConv,
//! QLinearMatMul, ConvInteger, MatMulInteger). Scales and zero points must be constants;
//! they become the quantization parameters in the integer tensors' types.

use super::conv::conv_attrs;
use crate::attrs::NodeCx;
use crate::error::OnnxError;
use crate::importer::Importer;
use crate::proto::tensor_proto::DataType;
use crate::tensor::onnx_dtype_name;
use kiln_ir::{DType, Op, Quant, Tensor, TensorType, ValueId};

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

pub(crate) fn dequantize_linear(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
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

pub(crate) fn matmul_integer(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let inputs = integer_op_inputs(im, cx)?;
    let out = im.main_output(cx)?;
    im.emit(cx, Op::MatMulInteger, &inputs, &[out])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::proto::tensor_proto::DataType;
    use crate::testutil::*;
    use kiln_ir::{DType, Op, Quant, Tensor, TensorData, TensorType};

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
}
