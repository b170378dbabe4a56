//! Quantized ops with onnxruntime's integer arithmetic (DESIGN §5), bit for bit:
//!
//! - quantize: `q = sat(round_half_even(x / s) + zp)`, `x / s` in f32; NaN → the type's
//!   minimum (MLAS clamps with `maxps`, which returns the bound for NaN);
//! - dequantize: `(q − zp) · s` in f32, `q − zp` in i32;
//! - qconv / qmatmul: `acc = Σ (x − zp_x)(w − zp_w) + bias` in i32, then
//!   [`requantize`]: `acc` (as f32) `· ((s_x · s_w) / s_y)` (the multiplier computed in
//!   f32 in that order), clamped to `[q_min − zp_y, q_max − zp_y]`, rounded half to even,
//!   plus `zp_y`; a fused Relu/Clip is a clamp in the quantized domain;
//! - conv_integer / matmul_integer: the i32 accumulator alone;
//! - dynamic_quantize: onnxruntime's DynamicQuantizeLinear — u8 parameters from the
//!   tensor's own range (zero included), then quantize as above.
//!
//! Padding a quantized input reads its zero point: the code subtracts zero points first and
//! pads the differences with 0, which is the same thing.

use crate::conv::{conv_accumulate, ConvGeometry};
use crate::elem::make_tensor;
use crate::matmul::MatMulPlan;
use kiln_ir::{Activation, ConvAttrs, DType, Quant, Tensor, TensorData, TensorType};

/// The quantization parameters of a value's type, or an error naming the value.
fn quant_of<'a>(ty: &'a TensorType, what: &str) -> Result<&'a Quant, String> {
    ty.quant
        .as_ref()
        .ok_or_else(|| format!("{what} ({ty}) has no quantization parameters"))
}

/// Inclusive range of a quantized integer dtype.
fn q_range(dtype: DType, what: &str) -> Result<(i32, i32), String> {
    match dtype {
        DType::I8 => Ok((i8::MIN as i32, i8::MAX as i32)),
        DType::U8 => Ok((0, u8::MAX as i32)),
        DType::I32 => Ok((i32::MIN, i32::MAX)),
        d => Err(format!("{what} must be i8, u8 or i32, got {d}")),
    }
}

/// Scales and zero points for each of `n` indices along `axis` (a per-tensor quant
/// repeated), after checking that a per-axis quant is along `axis` with `n` entries and
/// every zero point fits `range`.
fn params_along(
    q: &Quant,
    axis: Option<usize>,
    n: usize,
    range: (i32, i32),
    what: &str,
) -> Result<(Vec<f32>, Vec<i32>), String> {
    let (scales, zps) = match q {
        Quant::PerTensor { scale, zero_point } => (vec![*scale; n], vec![*zero_point; n]),
        Quant::PerAxis {
            axis: qa,
            scales,
            zero_points,
        } => {
            if Some(*qa) != axis || scales.len() != n || zero_points.len() != n {
                return Err(format!(
                    "{what}: per-axis quantization along axis {qa} with {} scales, expected \
                     {} entries along axis {axis:?}",
                    scales.len(),
                    n
                ));
            }
            (scales.clone(), zero_points.clone())
        }
    };
    if let Some(z) = zps.iter().find(|&&z| z < range.0 || z > range.1) {
        return Err(format!(
            "{what}: zero point {z} outside [{}, {}]",
            range.0, range.1
        ));
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(format!("{what}: scale {s} is not a positive finite number"));
    }
    Ok((scales, zps))
}

/// For a tensor of `shape` quantized along `axis`: the parameter index of each element.
fn axis_index(shape: &[usize], axis: Option<usize>) -> impl Fn(usize) -> usize {
    let (dim, inner) = match axis {
        Some(a) => (shape[a], shape[a + 1..].iter().product::<usize>()),
        None => (1, 1),
    };
    move |flat| (flat / inner.max(1)) % dim.max(1)
}

fn store_q(dtype: DType, shape: Vec<usize>, q: Vec<i32>) -> Result<Tensor, String> {
    // `q` is already saturated to `dtype`'s range, so the narrowing casts are exact.
    let data = match dtype {
        DType::I8 => TensorData::I8(q.into_iter().map(|v| v as i8).collect()),
        DType::U8 => TensorData::U8(q.into_iter().map(|v| v as u8).collect()),
        DType::I32 => TensorData::I32(q),
        d => return Err(format!("cannot store quantized values as {d}")),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// Round-half-even and saturate an f32 already divided by its scale.
#[inline]
fn saturate_round(v: f32, zp: i32, (lo, hi): (i32, i32)) -> i32 {
    if v.is_nan() {
        return lo;
    }
    // f64 holds every rounded f32 plus any i32 zero point exactly
    (v.round_ties_even() as f64 + zp as f64).clamp(lo as f64, hi as f64) as i32
}

/// QuantizeLinear into the output type's dtype and quantization (per tensor or per axis).
pub(crate) fn quantize(x: &Tensor, out: &TensorType) -> Result<Tensor, String> {
    let q = quant_of(out, "output")?;
    let range = q_range(out.dtype, "quantize output")?;
    let values: Vec<f32> = match x.data() {
        TensorData::F32(v) => v.clone(),
        // ONNX QuantizeLinear-21 takes int32 input; onnxruntime converts it to float first
        TensorData::I32(v) => v.iter().map(|&i| i as f32).collect(),
        _ => {
            return Err(format!(
                "quantize of a {} tensor (f32 or i32 expected)",
                x.dtype()
            ))
        }
    };
    let axis = q.axis();
    if let Some(a) = axis {
        if a >= x.shape().len() {
            return Err(format!(
                "quantization axis {a} out of range for {:?}",
                x.shape()
            ));
        }
    }
    let n = axis.map_or(1, |a| x.shape()[a]);
    let (scales, zps) = params_along(q, axis, n, range, "output")?;
    let at = axis_index(x.shape(), axis);
    let out_q: Vec<i32> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = at(i);
            saturate_round(v / scales[c], zps[c], range)
        })
        .collect();
    store_q(out.dtype, x.shape().to_vec(), out_q)
}

/// Integer elements of a quantized tensor as i32.
fn ints(t: &Tensor, what: &str) -> Result<Vec<i32>, String> {
    Ok(match t.data() {
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        _ => return Err(format!("{what} must be i8, u8 or i32, got {}", t.dtype())),
    })
}

/// DequantizeLinear with the input type's quantization.
pub(crate) fn dequantize(x: &Tensor, ty: &TensorType) -> Result<Tensor, String> {
    let q = quant_of(ty, "input")?;
    let range = q_range(x.dtype(), "dequantize input")?;
    let axis = q.axis();
    if let Some(a) = axis {
        if a >= x.shape().len() {
            return Err(format!(
                "quantization axis {a} out of range for {:?}",
                x.shape()
            ));
        }
    }
    let n = axis.map_or(1, |a| x.shape()[a]);
    let (scales, zps) = params_along(q, axis, n, range, "input")?;
    let at = axis_index(x.shape(), axis);
    let out: Vec<f32> = ints(x, "input")?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let c = at(i);
            v.wrapping_sub(zps[c]) as f32 * scales[c]
        })
        .collect();
    make_tensor(x.shape().to_vec(), out)
}

/// onnxruntime's `MlasRequantizeOutput` for one accumulator.
#[inline]
pub(crate) fn requantize(acc: i32, multiplier: f32, zp: i32, (lo, hi): (i32, i32)) -> i32 {
    let v = acc as f32 * multiplier;
    let v = v
        .max((lo as i64 - zp as i64) as f32)
        .min((hi as i64 - zp as i64) as f32);
    v.round_ties_even() as i32 + zp
}

/// The quantized-domain clamp bounds of a fused activation: Relu clamps at the zero point,
/// Clip at its bounds quantized like any value. Other activations are not clamps.
fn quantized_act_bounds(
    act: Option<&Activation>,
    scale: f32,
    zp: i32,
    range: (i32, i32),
) -> Result<(i32, i32), String> {
    match act {
        None => Ok(range),
        Some(Activation::Relu) => Ok((zp.max(range.0), range.1)),
        Some(Activation::Clip { min, max }) => {
            let lo = saturate_round(*min as f32 / scale, zp, range);
            let hi = saturate_round(*max as f32 / scale, zp, range);
            Ok((lo, hi))
        }
        Some(a) => Err(format!(
            "fused {} is not a clamp, so it cannot run in the quantized domain",
            a.name()
        )),
    }
}

/// Elements minus their zero points, where the zero point index of element `i` is
/// `at(i)`.
fn centered(
    t: &Tensor,
    zps: &[i32],
    at: impl Fn(usize) -> usize,
    what: &str,
) -> Result<Vec<i32>, String> {
    Ok(ints(t, what)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.wrapping_sub(zps[at(i)]))
        .collect())
}

/// An i8/u8 operand of a quantized op (i32 quantized operands are not in ONNX's op set).
fn check_8bit(t: &Tensor, what: &str) -> Result<(i32, i32), String> {
    match t.dtype() {
        DType::I8 | DType::U8 => q_range(t.dtype(), what),
        d => Err(format!("{what} must be i8 or u8, got {d}")),
    }
}

/// The optional i32 bias of a quantized conv (scale `s_x·s_w`, zero point 0).
fn qbias(bias: Option<(&Tensor, &TensorType)>, channels: usize) -> Result<Vec<i32>, String> {
    let Some((b, ty)) = bias else {
        return Ok(vec![0; channels]);
    };
    let TensorData::I32(v) = b.data() else {
        return Err(format!("bias must be i32, got {}", b.dtype()));
    };
    if v.len() != channels || b.shape().len() != 1 {
        return Err(format!(
            "bias {:?} for {channels} output channels",
            b.shape()
        ));
    }
    if let Some(q) = &ty.quant {
        let nonzero = match q {
            Quant::PerTensor { zero_point, .. } => *zero_point != 0,
            Quant::PerAxis { zero_points, .. } => zero_points.iter().any(|&z| z != 0),
        };
        if nonzero {
            return Err("bias must have zero point 0".to_string());
        }
    }
    Ok(v.clone())
}

/// Quantized convolution (ONNX QLinearConv with an optional fused clamp): x (u8/i8,
/// per-tensor), w (i8/u8, per-tensor or per-output-channel), [bias i32].
pub(crate) fn qconv(
    inputs: &[&Tensor],
    types: &[&TensorType],
    out: &TensorType,
    attrs: &ConvAttrs,
) -> Result<Tensor, String> {
    let (x, w) = (inputs[0], inputs[1]);
    let g = ConvGeometry::new(x.shape(), w.shape(), attrs)?;
    let x_range = check_8bit(x, "input")?;
    let w_range = check_8bit(w, "weight")?;
    let out_range = q_range(out.dtype, "output")?;
    let (sx, zx) = params_along(quant_of(types[0], "input")?, None, 1, x_range, "input")
        .map_err(|e| format!("{e} (the input must be quantized per tensor)"))?;
    let (sw, zw) = params_along(
        quant_of(types[1], "weight")?,
        Some(0),
        g.c_out,
        w_range,
        "weight",
    )?;
    let (sy, zy) = params_along(quant_of(out, "output")?, None, 1, out_range, "output")
        .map_err(|e| format!("{e} (the output must be quantized per tensor)"))?;
    let bias = qbias(inputs.get(2).map(|b| (*b, types[2])), g.c_out)?;
    let xc = centered(x, &zx, |_| 0, "input")?;
    let k_per_out = w.numel() / g.c_out.max(1);
    let wc = centered(w, &zw, |i| i / k_per_out.max(1), "weight")?;
    let acc = conv_accumulate(&xc, &wc, &g);
    let (lo, hi) = quantized_act_bounds(attrs.act.as_ref(), sy[0], zy[0], out_range)?;
    let multipliers: Vec<f32> = sw.iter().map(|&s| sx[0] * s / sy[0]).collect();
    let out_n = acc.len() / (g.batch * g.c_out).max(1);
    let q: Vec<i32> = acc
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let c = (i / out_n.max(1)) % g.c_out;
            requantize(a.wrapping_add(bias[c]), multipliers[c], zy[0], out_range)
                // max then min, not clamp: a fused Clip with min > max gives max everywhere
                // (ONNX Clip), where clamp would panic.
                .max(lo)
                .min(hi)
        })
        .collect();
    store_q(out.dtype, g.output_shape(), q)
}

/// Quantized matrix multiply (ONNX QLinearMatMul): a (per-tensor), b (per-tensor or per
/// column, i.e. along its last axis).
pub(crate) fn qmatmul(
    inputs: &[&Tensor],
    types: &[&TensorType],
    out: &TensorType,
) -> Result<Tensor, String> {
    let (a, b) = (inputs[0], inputs[1]);
    let plan = MatMulPlan::new(a.shape(), b.shape())?;
    let a_range = check_8bit(a, "a")?;
    let b_range = check_8bit(b, "b")?;
    let out_range = q_range(out.dtype, "output")?;
    let (sa, za) = params_along(quant_of(types[0], "a")?, None, 1, a_range, "a")
        .map_err(|e| format!("{e} (a must be quantized per tensor)"))?;
    let b_axis = b.shape().len() - 1;
    let (sb, zb) = params_along(quant_of(types[1], "b")?, Some(b_axis), plan.n, b_range, "b")?;
    let (sy, zy) = params_along(quant_of(out, "output")?, None, 1, out_range, "output")
        .map_err(|e| format!("{e} (the output must be quantized per tensor)"))?;
    let ac = centered(a, &za, |_| 0, "a")?;
    let n = plan.n;
    let bc = centered(b, &zb, |i| i % n, "b")?;
    let acc = plan.run(&ac, &bc);
    let multipliers: Vec<f32> = sb.iter().map(|&s| sa[0] * s / sy[0]).collect();
    let q: Vec<i32> = acc
        .iter()
        .enumerate()
        .map(|(i, &v)| requantize(v, multipliers[i % n], zy[0], out_range))
        .collect();
    store_q(out.dtype, plan.out_shape, q)
}

/// An optional zero-point input: a scalar (or one-element) tensor, or one value per
/// `per_len` entries; same dtype as the operand it belongs to.
fn zero_points(
    zp: Option<&Tensor>,
    operand: &Tensor,
    per_len: usize,
    what: &str,
) -> Result<Vec<i32>, String> {
    let Some(z) = zp else {
        return Ok(vec![0; per_len]);
    };
    if z.dtype() != operand.dtype() {
        return Err(format!(
            "{what} zero point is {}, the operand {}",
            z.dtype(),
            operand.dtype()
        ));
    }
    let v = ints(z, what)?;
    match v.len() {
        1 => Ok(vec![v[0]; per_len]),
        n if n == per_len && z.shape().len() == 1 => Ok(v),
        _ => Err(format!(
            "{what} zero point of shape {:?} (scalar or [{per_len}])",
            z.shape()
        )),
    }
}

/// ONNX ConvInteger: `Σ (x − x_zp)(w − w_zp[c])` in i32; `w_zp` may be per output channel.
pub(crate) fn conv_integer(inputs: &[&Tensor], attrs: &ConvAttrs) -> Result<Tensor, String> {
    let (x, w) = (inputs[0], inputs[1]);
    let g = ConvGeometry::new(x.shape(), w.shape(), attrs)?;
    if attrs.act.is_some() {
        return Err("conv_integer has no fused activation".to_string());
    }
    check_8bit(x, "input")?;
    check_8bit(w, "weight")?;
    let zx = zero_points(inputs.get(2).copied(), x, 1, "input")?;
    let zw = zero_points(inputs.get(3).copied(), w, g.c_out, "weight")?;
    let xc = centered(x, &zx, |_| 0, "input")?;
    let k_per_out = w.numel() / g.c_out.max(1);
    let wc = centered(w, &zw, |i| i / k_per_out.max(1), "weight")?;
    make_tensor(g.output_shape(), conv_accumulate(&xc, &wc, &g))
}

/// ONNX DynamicQuantizeLinear as onnxruntime computes it (`GetQuantizationParameter`):
/// `min = min(min x, 0)`, `max = max(max x, 0)` (NaN skipped), `scale = (max − min) / 255`
/// in f32 (1 when `max = min`, i.e. x is all zeros), `zp = round_half_even(clamp(0 − min /
/// scale, 0, 255))`, then `y = quantize(x)` with those parameters. Returns y (u8, no static
/// parameters), the scale (f32 scalar) and the zero point (u8 scalar).
pub(crate) fn dynamic_quantize(x: &Tensor) -> Result<Vec<Tensor>, String> {
    let values = x
        .as_f32()
        .ok_or_else(|| format!("input must be f32, got {}", x.dtype()))?;
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
    let zero_point = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even();
    let ty = TensorType::new(DType::U8, x.shape().to_vec())
        .with_quant(Quant::per_tensor(scale, zero_point as i32));
    let y = quantize(x, &ty)?;
    Ok(vec![
        y,
        Tensor::from_f32(vec![], vec![scale]).map_err(|e| e.to_string())?,
        Tensor::new(vec![], TensorData::U8(vec![zero_point as u8])).map_err(|e| e.to_string())?,
    ])
}

/// ONNX MatMulInteger: `Σ (a − a_zp[row])(b − b_zp[col])` in i32.
pub(crate) fn matmul_integer(inputs: &[&Tensor]) -> Result<Tensor, String> {
    let (a, b) = (inputs[0], inputs[1]);
    let plan = MatMulPlan::new(a.shape(), b.shape())?;
    check_8bit(a, "a")?;
    check_8bit(b, "b")?;
    let (m, k, n) = (plan.m, plan.k, plan.n);
    let za = zero_points(inputs.get(2).copied(), a, m, "a")?;
    let zb = zero_points(inputs.get(3).copied(), b, n, "b")?;
    let ac = centered(a, &za, |i| (i / k.max(1)) % m.max(1), "a")?;
    let bc = centered(b, &zb, |i| i % n.max(1), "b")?;
    make_tensor(plan.out_shape.clone(), plan.run(&ac, &bc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qtype(dtype: DType, shape: &[usize], scale: f32, zp: i32) -> TensorType {
        TensorType::new(dtype, shape.to_vec()).with_quant(Quant::per_tensor(scale, zp))
    }

    #[test]
    fn dynamic_quantize_by_hand() {
        // onnxruntime 1.31's DynamicQuantizeLinear gives y = [0, 127, 255], scale 0.01176471,
        // zero point 85 for x = [−1, 0.5, 2]: range [−1, 2], scale f32(3/255) (a hair above
        // 3/255), zero point round(84.99999…) = 85; 0.5/scale = 42.4999… rounds to 42, not to
        // the tie 42.5 exact arithmetic would give.
        let x = Tensor::from_f32(vec![3], vec![-1.0, 0.5, 2.0]).unwrap();
        let out = dynamic_quantize(&x).unwrap();
        assert_eq!(out[0].data(), &TensorData::U8(vec![0, 127, 255]));
        assert_eq!(out[1].as_f32().unwrap(), &[3.0f32 / 255.0]);
        assert_eq!(out[2].data(), &TensorData::U8(vec![85]));
        // all positive: the range is widened to include 0, zero point 0 (onnxruntime:
        // [100, 255], scale 0.01, zero point 0)
        let x = Tensor::from_f32(vec![2], vec![1.0, 2.55]).unwrap();
        let out = dynamic_quantize(&x).unwrap();
        assert_eq!(out[0].data(), &TensorData::U8(vec![100, 255]));
        assert_eq!(out[2].data(), &TensorData::U8(vec![0]));
        // all zeros: scale 1, zero point 0 (onnxruntime's max == min case; same output)
        let x = Tensor::from_f32(vec![2], vec![0.0, 0.0]).unwrap();
        let out = dynamic_quantize(&x).unwrap();
        assert_eq!(out[0].data(), &TensorData::U8(vec![0, 0]));
        assert_eq!(out[1].as_f32().unwrap(), &[1.0f32]);
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        // onnxruntime 1.31 (QuantizeLinear-21, scale 1, zero point 10) maps
        // [NaN, inf, -inf, 2.5, 3.5, -2.5, 1e10, -0.5] to u8 [0, 255, 0, 12, 14, 8, 255, 10]
        // and i8 [-128, 127, -128, 12, 14, 8, 127, 10].
        let x = Tensor::from_f32(
            vec![8],
            vec![
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                2.5,
                3.5,
                -2.5,
                1e10,
                -0.5,
            ],
        )
        .unwrap();
        let y = quantize(&x, &qtype(DType::U8, &[8], 1.0, 10)).unwrap();
        assert_eq!(
            y.data(),
            &TensorData::U8(vec![0, 255, 0, 12, 14, 8, 255, 10])
        );
        let y = quantize(&x, &qtype(DType::I8, &[8], 1.0, 10)).unwrap();
        assert_eq!(
            y.data(),
            &TensorData::I8(vec![-128, 127, -128, 12, 14, 8, 127, 10])
        );
        // x / s is computed in f32: 0.3 / 0.1 ≈ 3 → 3; 0.25 / 0.1f32 = 2.49999996 rounds
        // to 2.5 in f32, and 2.5 rounds half to even → 2
        let x = Tensor::from_f32(vec![2], vec![0.3, 0.25]).unwrap();
        let y = quantize(&x, &qtype(DType::I8, &[2], 0.1, 0)).unwrap();
        assert_eq!(y.data(), &TensorData::I8(vec![3, 2]));
    }

    #[test]
    fn per_axis_quantize_and_dequantize() {
        // axis 1 of a [1,2,2]: channel 0 scale 1 zp 0, channel 1 scale 0.5 zp 4
        let q = Quant::PerAxis {
            axis: 1,
            scales: vec![1.0, 0.5],
            zero_points: vec![0, 4],
        };
        let ty = TensorType::new(DType::I8, vec![1, 2, 2]).with_quant(q);
        let x = Tensor::from_f32(vec![1, 2, 2], vec![1.0, -2.0, 1.0, -2.0]).unwrap();
        let y = quantize(&x, &ty).unwrap();
        // channel 1: 1/0.5 + 4 = 6, -2/0.5 + 4 = 0
        assert_eq!(y.data(), &TensorData::I8(vec![1, -2, 6, 0]));
        let back = dequantize(&y, &ty).unwrap();
        assert_eq!(back.as_f32().unwrap(), &[1.0, -2.0, 1.0, -2.0]);
        // a quantization axis that does not match the tensor is an error
        let bad = TensorType::new(DType::I8, vec![1, 2, 2]).with_quant(Quant::PerAxis {
            axis: 2,
            scales: vec![1.0],
            zero_points: vec![0],
        });
        assert!(quantize(&x, &bad).is_err());
    }

    #[test]
    fn requantize_matches_mlas_formula() {
        // 7 · 0.5 = 3.5 → 4 (half even); 5 · 0.5 = 2.5 → 2; + zp 100
        assert_eq!(requantize(7, 0.5, 100, (0, 255)), 104);
        assert_eq!(requantize(5, 0.5, 100, (0, 255)), 102);
        // saturates on both sides
        assert_eq!(requantize(-1000, 0.5, 100, (0, 255)), 0);
        assert_eq!(requantize(1000, 0.5, 100, (0, 255)), 255);
    }

    #[test]
    fn qconv_1x1_by_hand() {
        // x u8 zp 128 s 0.5: values 130, 120 → centered 2, -8. w i8 per-channel: channel 0
        // [3, 1] zp 0 s 0.25, channel 1 [-1, 2] zp 1 s 0.5 → centered [-2, 1].
        // acc0 = 2·3 + (-8)·1 = -2, + bias 10 = 8 → 8 · (0.5·0.25/0.125 = 1) = 8 + zp 5 = 13
        // acc1 = 2·(-2) + (-8)·1 = -12, + bias 0 → -12 · (0.5·0.5/0.125 = 2) = -24 + 5 = -19
        let x = Tensor::new(vec![1, 2, 1, 1], TensorData::U8(vec![130, 120])).unwrap();
        let w = Tensor::new(vec![2, 2, 1, 1], TensorData::I8(vec![3, 1, -1, 2])).unwrap();
        let b = Tensor::new(vec![2], TensorData::I32(vec![10, 0])).unwrap();
        let xt = qtype(DType::U8, &[1, 2, 1, 1], 0.5, 128);
        let wt = TensorType::new(DType::I8, vec![2, 2, 1, 1]).with_quant(Quant::PerAxis {
            axis: 0,
            scales: vec![0.25, 0.5],
            zero_points: vec![0, 1],
        });
        let bt = TensorType::new(DType::I32, vec![2]);
        let yt = qtype(DType::I8, &[1, 2, 1, 1], 0.125, 5);
        let mut attrs = ConvAttrs {
            kernel: vec![1, 1],
            strides: vec![1, 1],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            groups: 1,
            act: None,
        };
        let y = qconv(&[&x, &w, &b], &[&xt, &wt, &bt], &yt, &attrs).unwrap();
        assert_eq!(y.data(), &TensorData::I8(vec![13, -19]));
        // fused relu clamps at the output zero point 5
        attrs.act = Some(Activation::Relu);
        let y = qconv(&[&x, &w, &b], &[&xt, &wt, &bt], &yt, &attrs).unwrap();
        assert_eq!(y.data(), &TensorData::I8(vec![13, 5]));
        // fused clip [-1, 1] → quantized [-1/0.125 + 5, 1/0.125 + 5] = [-3, 13]
        attrs.act = Some(Activation::Clip {
            min: -1.0,
            max: 1.0,
        });
        let y = qconv(&[&x, &w, &b], &[&xt, &wt, &bt], &yt, &attrs).unwrap();
        assert_eq!(y.data(), &TensorData::I8(vec![13, -3]));
        attrs.act = Some(Activation::Sigmoid);
        assert!(qconv(&[&x, &w, &b], &[&xt, &wt, &bt], &yt, &attrs).is_err());
    }

    #[test]
    fn qconv_pads_with_the_input_zero_point() {
        // 1-D, kernel 3, pad 1, all-ones weight: the padded taps read zp_x, contributing 0.
        // x = [zp+1, zp+2] → outputs (0+1+2, 1+2+0) = 3, 3 with unit multiplier.
        let x = Tensor::new(vec![1, 1, 2], TensorData::U8(vec![101, 102])).unwrap();
        let w = Tensor::new(vec![1, 1, 3], TensorData::I8(vec![1, 1, 1])).unwrap();
        let xt = qtype(DType::U8, &[1, 1, 2], 1.0, 100);
        let wt = qtype(DType::I8, &[1, 1, 3], 1.0, 0);
        let yt = qtype(DType::U8, &[1, 1, 2], 1.0, 0);
        let attrs = ConvAttrs {
            kernel: vec![3],
            strides: vec![1],
            pads: vec![1, 1],
            dilations: vec![1],
            groups: 1,
            act: None,
        };
        let y = qconv(&[&x, &w], &[&xt, &wt], &yt, &attrs).unwrap();
        assert_eq!(y.data(), &TensorData::U8(vec![3, 3]));
    }

    #[test]
    fn qmatmul_by_hand() {
        // a = [[130, 126]] zp 128 → [2, -2]; b = [[1],[3]] zp 0 → 2 - 6 = -4;
        // multiplier 0.5 · 1 / 0.25 = 2 → -8 + zp 10 = 2
        let a = Tensor::new(vec![1, 2], TensorData::U8(vec![130, 126])).unwrap();
        let b = Tensor::new(vec![2, 1], TensorData::I8(vec![1, 3])).unwrap();
        let at = qtype(DType::U8, &[1, 2], 0.5, 128);
        let bt = qtype(DType::I8, &[2, 1], 1.0, 0);
        let yt = qtype(DType::U8, &[1, 1], 0.25, 10);
        let y = qmatmul(&[&a, &b], &[&at, &bt], &yt).unwrap();
        assert_eq!(y.data(), &TensorData::U8(vec![2]));
    }

    #[test]
    fn integer_ops_by_hand() {
        // MatMulInteger: a [[3, 4]] zp 1 → [2, 3]; b [[1, 2], [3, 4]] with per-column zp
        // [1, 0] → [[0, 2], [2, 4]]; product [2·0+3·2, 2·2+3·4] = [6, 16]
        let a = Tensor::new(vec![1, 2], TensorData::U8(vec![3, 4])).unwrap();
        let b = Tensor::new(vec![2, 2], TensorData::U8(vec![1, 2, 3, 4])).unwrap();
        let za = Tensor::new(vec![], TensorData::U8(vec![1])).unwrap();
        let zb = Tensor::new(vec![2], TensorData::U8(vec![1, 0])).unwrap();
        let y = matmul_integer(&[&a, &b, &za, &zb]).unwrap();
        assert_eq!(y.data(), &TensorData::I32(vec![6, 16]));
        // ConvInteger 1-D, kernel 2, pad (1, 0), x zp 2: x = [3, 5] → [1, 3], padded [0, 1, 3]
        // w = [1, 1] zp 0: outputs 0+1 = 1, 1+3 = 4
        let x = Tensor::new(vec![1, 1, 2], TensorData::U8(vec![3, 5])).unwrap();
        let w = Tensor::new(vec![1, 1, 2], TensorData::U8(vec![1, 1])).unwrap();
        let zx = Tensor::new(vec![], TensorData::U8(vec![2])).unwrap();
        let attrs = ConvAttrs {
            kernel: vec![2],
            strides: vec![1],
            pads: vec![1, 0],
            dilations: vec![1],
            groups: 1,
            act: None,
        };
        let y = conv_integer(&[&x, &w, &zx], &attrs).unwrap();
        assert_eq!(y.data(), &TensorData::I32(vec![1, 4]));
    }

    /// QConv against the integer definition written out directly: padded taps read the
    /// input zero point, products of centered values summed in i64 (no overflow at these
    /// sizes), then the MLAS requantization formula.
    #[test]
    fn qconv_matches_naive_integer_loop_on_random_shapes() {
        use crate::test_util::Rng;
        let mut rng = Rng::new(3);
        for case_no in 0..150 {
            let groups = [1, 2, 3][rng.usize(0, 2)];
            let (cin_g, cout_g) = (rng.usize(1, 4), rng.usize(1, 3));
            let (cin, cout) = (cin_g * groups, cout_g * groups);
            let k = [rng.usize(1, 3), rng.usize(1, 3)];
            let s = [rng.usize(1, 2), rng.usize(1, 2)];
            let dl = [rng.usize(1, 2), rng.usize(1, 2)];
            let span = [dl[0] * (k[0] - 1) + 1, dl[1] * (k[1] - 1) + 1];
            let pads = [
                rng.usize(0, span[0] - 1),
                rng.usize(0, span[1] - 1),
                rng.usize(0, span[0] - 1),
                rng.usize(0, span[1] - 1),
            ];
            let hw = [rng.usize(span[0], 7), rng.usize(span[1], 7)];
            let x_signed = rng.usize(0, 1) == 1;
            let xv: Vec<i32> = (0..cin * hw[0] * hw[1])
                .map(|_| if x_signed { rng.int(-128, 127) } else { rng.int(0, 255) } as i32)
                .collect();
            let wv: Vec<i32> = (0..cout * cin_g * k[0] * k[1])
                .map(|_| rng.int(-128, 127) as i32)
                .collect();
            let bias: Vec<i32> = (0..cout).map(|_| rng.int(-5000, 5000) as i32).collect();
            let zx = if x_signed {
                rng.int(-20, 20)
            } else {
                rng.int(100, 150)
            } as i32;
            let zw: Vec<i32> = (0..cout).map(|_| rng.int(-3, 3) as i32).collect();
            let sx = 0.01 + rng.f32().abs() * 0.05;
            let sw: Vec<f32> = (0..cout).map(|_| 0.001 + rng.f32().abs() * 0.01).collect();
            let (sy, zy) = (0.02 + rng.f32().abs() * 0.1, rng.int(0, 255) as i32);
            let out_hw = [
                (hw[0] + pads[0] + pads[2] - span[0]) / s[0] + 1,
                (hw[1] + pads[1] + pads[3] - span[1]) / s[1] + 1,
            ];
            // the definition
            let mut want = Vec::new();
            for co in 0..cout {
                let grp = co / cout_g;
                for oy in 0..out_hw[0] {
                    for ox in 0..out_hw[1] {
                        let mut acc = bias[co] as i64;
                        for ci in 0..cin_g {
                            for ky in 0..k[0] {
                                for kx in 0..k[1] {
                                    let iy = (oy * s[0] + ky * dl[0]) as isize - pads[0] as isize;
                                    let ix = (ox * s[1] + kx * dl[1]) as isize - pads[1] as isize;
                                    let inside = (0..hw[0] as isize).contains(&iy)
                                        && (0..hw[1] as isize).contains(&ix);
                                    let xq = if inside {
                                        xv[((grp * cin_g + ci) * hw[0] + iy as usize) * hw[1]
                                            + ix as usize]
                                    } else {
                                        zx
                                    };
                                    let wq = wv[((co * cin_g + ci) * k[0] + ky) * k[1] + kx];
                                    acc += ((xq - zx) * (wq - zw[co])) as i64;
                                }
                            }
                        }
                        let m = sx * sw[co] / sy;
                        let r = (acc as i32 as f32 * m).round_ties_even() as i64 + zy as i64;
                        want.push(r.clamp(0, 255) as u8);
                    }
                }
            }
            let x_data = if x_signed {
                TensorData::I8(xv.iter().map(|&v| v as i8).collect())
            } else {
                TensorData::U8(xv.iter().map(|&v| v as u8).collect())
            };
            let x_dtype = if x_signed { DType::I8 } else { DType::U8 };
            let x = Tensor::new(vec![1, cin, hw[0], hw[1]], x_data).unwrap();
            let w = Tensor::new(
                vec![cout, cin_g, k[0], k[1]],
                TensorData::I8(wv.iter().map(|&v| v as i8).collect()),
            )
            .unwrap();
            let b = Tensor::new(vec![cout], TensorData::I32(bias.clone())).unwrap();
            let xt = qtype(x_dtype, x.shape(), sx, zx);
            let wt = TensorType::new(DType::I8, w.shape().to_vec()).with_quant(Quant::PerAxis {
                axis: 0,
                scales: sw.clone(),
                zero_points: zw.clone(),
            });
            let bt = TensorType::new(DType::I32, vec![cout]);
            let yt = qtype(DType::U8, &[1, cout, out_hw[0], out_hw[1]], sy, zy);
            let attrs = ConvAttrs {
                kernel: k.to_vec(),
                strides: s.to_vec(),
                pads: vec![pads[0], pads[1], pads[2], pads[3]],
                dilations: dl.to_vec(),
                groups,
                act: None,
            };
            let y = qconv(&[&x, &w, &b], &[&xt, &wt, &bt], &yt, &attrs).unwrap();
            assert_eq!(y.data(), &TensorData::U8(want), "case {case_no}: {attrs:?}");
        }
    }
}
