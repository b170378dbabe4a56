//! A QConv node's problem, validated and resolved to integers at compile time: geometry
//! (spatial dims padded to three), centered weights, the bias with the input zero point
//! folded in, per-channel requantization multipliers and the output clamp bounds — the
//! same arithmetic as `kiln-interp`'s `quant::qconv`, rearranged for a kernel.

use crate::CodegenError;
use kiln_ir::{Activation, ConvAttrs, DType, Quant, Tensor, TensorData, TensorType};

pub(crate) use crate::spatial::SP;
use crate::spatial::{check_window, widen};

const OP: &str = "qconv";

fn invalid(reason: impl Into<String>) -> CodegenError {
    CodegenError::InvalidOp {
        op: OP,
        reason: reason.into(),
    }
}

#[derive(Clone, Debug)]
pub(crate) struct QConvPlan {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub groups: usize,
    pub cin_g: usize,
    pub cout_g: usize,
    pub input: [usize; SP],
    pub output: [usize; SP],
    pub kernel: [usize; SP],
    pub stride: [usize; SP],
    pub dilation: [usize; SP],
    pub pad_begin: [usize; SP],
    pub pad_end: [usize; SP],
    pub x_dtype: DType,
    pub x_zero_point: i32,
    pub out_dtype: DType,
    pub out_zero_point: i32,
    /// `(q_min − zp_y, q_max − zp_y)` as f32: the requantization clamp before rounding.
    pub requant_bounds: (f32, f32),
    /// The integer clamp after adding `zp_y`: the output range, narrowed by a fused
    /// ReLU/Clip.
    pub act_bounds: (i32, i32),
    /// `w − zp_w[c]`, `[C_out, C_in/groups, k_d, k_h, k_w]`, each in `[-255, 255]`.
    pub weights: Vec<i32>,
    /// `bias[c] − zp_x · Σ_k (w − zp_w)[c, k]` (wrapping i32): the accumulator then only needs
    /// `Σ x_q · (w − zp_w)` over the taps, padding included as `zp_x`.
    pub bias: Vec<i32>,
    /// `s_x · s_w[c] / s_y`, computed in f32 in that order.
    pub multipliers: Vec<f32>,
    pub x_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
}

impl QConvPlan {
    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    pub fn out_pixels(&self) -> usize {
        self.output.iter().product()
    }

    pub fn in_pixels(&self) -> usize {
        self.input.iter().product()
    }

    /// Padded input extent along each spatial dim.
    pub fn padded(&self) -> [usize; SP] {
        std::array::from_fn(|d| self.input[d] + self.pad_begin[d] + self.pad_end[d])
    }

    pub fn macs(&self) -> u64 {
        (self.batch * self.c_out * self.out_pixels() * self.cin_g * self.taps()) as u64
    }

    /// Validate a QConv node: `x` (u8/i8, per tensor), constant `w` (u8/i8, per tensor or
    /// along axis 0), optional constant i32 `bias` (zero point 0), output type `out`
    /// (u8/i8, per tensor). Rejects exactly what the interpreter rejects, plus i32 outputs.
    pub fn new(
        attrs: &ConvAttrs,
        x_ty: &TensorType,
        w: &Tensor,
        w_ty: &TensorType,
        bias: Option<(&Tensor, &TensorType)>,
        out_ty: &TensorType,
    ) -> Result<QConvPlan, CodegenError> {
        if w.dtype() != w_ty.dtype || w.shape() != w_ty.shape.as_slice() {
            return Err(invalid(format!(
                "weight tensor {} {:?} does not match its type {w_ty}",
                w.dtype(),
                w.shape()
            )));
        }
        let geo = Geometry::new(OP, &x_ty.shape, w.shape(), attrs)?;
        let x_range = int8_range(x_ty.dtype, "input")?;
        let w_range = int8_range(w.dtype(), "weight")?;
        let out_range =
            int8_range(out_ty.dtype, "output").map_err(|_| CodegenError::Unsupported {
                op: OP,
                reason: format!("{} output (u8 or i8 only)", out_ty.dtype),
            })?;
        let (sx, zx) = per_tensor(x_ty, x_range, "input")?;
        let (sy, zy) = per_tensor(out_ty, out_range, "output")?;
        let (sw, zw) = weight_params(w_ty, geo.c_out, w_range)?;
        let w_ints: Vec<i32> = match w.data() {
            TensorData::I8(v) => v.iter().map(|&q| q as i32).collect(),
            TensorData::U8(v) => v.iter().map(|&q| q as i32).collect(),
            _ => unreachable!("int8_range accepted only i8 and u8 weights"),
        };
        let per_out = w_ints.len() / geo.c_out.max(1);
        let weights: Vec<i32> = w_ints
            .iter()
            .enumerate()
            .map(|(i, &q)| q - zw[i / per_out.max(1)])
            .collect();
        let raw_bias = qbias(bias, geo.c_out)?;
        let bias = (0..geo.c_out)
            .map(|c| {
                let sum = weights[c * per_out..(c + 1) * per_out]
                    .iter()
                    .fold(0i32, |s, &v| s.wrapping_add(v));
                raw_bias[c].wrapping_sub(zx.wrapping_mul(sum))
            })
            .collect();
        let multipliers = sw.iter().map(|&s| sx * s / sy).collect();
        let act_bounds = quantized_act_bounds(attrs.act.as_ref(), sy, zy, out_range)?;
        let requant_bounds = (
            (out_range.0 as i64 - zy as i64) as f32,
            (out_range.1 as i64 - zy as i64) as f32,
        );
        let out_shape = geo.output_shape();
        Ok(QConvPlan {
            batch: geo.batch,
            c_in: geo.c_in,
            c_out: geo.c_out,
            groups: geo.groups,
            cin_g: geo.c_in / geo.groups,
            cout_g: geo.c_out / geo.groups,
            input: geo.input,
            output: geo.output,
            kernel: geo.kernel,
            stride: geo.stride,
            dilation: geo.dilation,
            pad_begin: geo.pad_begin,
            pad_end: geo.pad_end,
            x_dtype: x_ty.dtype,
            x_zero_point: zx,
            out_dtype: out_ty.dtype,
            out_zero_point: zy,
            requant_bounds,
            act_bounds,
            weights,
            bias,
            multipliers,
            x_shape: x_ty.shape.clone(),
            out_shape,
        })
    }
}

/// Conv geometry with the interpreter's checks (`kiln-interp` `conv::ConvGeometry`).
#[derive(Debug)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub groups: usize,
    pub input: [usize; SP],
    pub output: [usize; SP],
    pub kernel: [usize; SP],
    pub stride: [usize; SP],
    pub dilation: [usize; SP],
    pub pad_begin: [usize; SP],
    pub pad_end: [usize; SP],
    pub spatial_rank: usize,
}

impl Geometry {
    /// `op` names the node kind in errors (`qconv`, `conv`).
    pub(crate) fn new(
        op: &'static str,
        x: &[usize],
        w: &[usize],
        attrs: &ConvAttrs,
    ) -> Result<Geometry, CodegenError> {
        let invalid = |reason: String| CodegenError::InvalidOp { op, reason };
        check_window(
            op,
            &attrs.kernel,
            &attrs.strides,
            &attrs.pads,
            &attrs.dilations,
        )?;
        let nsp = attrs.kernel.len();
        if x.len() != nsp + 2 || w.len() != nsp + 2 {
            return Err(invalid(format!(
                "input {x:?} and weight {w:?} must have rank {} for a {nsp}-D conv",
                nsp + 2
            )));
        }
        if w[2..] != attrs.kernel[..] {
            return Err(invalid(format!(
                "weight {w:?} does not match kernel {:?}",
                attrs.kernel
            )));
        }
        let groups = attrs.groups;
        if groups == 0 || !w[0].is_multiple_of(groups) || x[1] != w[1] * groups {
            return Err(invalid(format!(
                "input channels {} and weight {w:?} do not fit groups={groups}",
                x[1]
            )));
        }
        let mut output = [1; SP];
        for d in 0..nsp {
            let padded = x[2 + d] + attrs.pads[d] + attrs.pads[nsp + d];
            let span = attrs.dilations[d] * attrs.kernel[d].saturating_sub(1) + 1;
            if attrs.kernel[d] == 0 || padded < span {
                return Err(invalid(format!(
                    "kernel {:?} (dilations {:?}) does not fit the padded input {x:?}",
                    attrs.kernel, attrs.dilations
                )));
            }
            output[SP - nsp + d] = (padded - span) / attrs.strides[d] + 1;
        }
        Ok(Geometry {
            batch: x[0],
            c_in: x[1],
            c_out: w[0],
            groups,
            input: widen(&x[2..], 1),
            output,
            kernel: widen(&attrs.kernel, 1),
            stride: widen(&attrs.strides, 1),
            dilation: widen(&attrs.dilations, 1),
            pad_begin: widen(&attrs.pads[..nsp], 0),
            pad_end: widen(&attrs.pads[nsp..], 0),
            spatial_rank: nsp,
        })
    }

    pub(crate) fn output_shape(&self) -> Vec<usize> {
        let mut shape = vec![self.batch, self.c_out];
        shape.extend_from_slice(&self.output[SP - self.spatial_rank..]);
        shape
    }
}

pub(crate) fn int8_range(dtype: DType, what: &str) -> Result<(i32, i32), CodegenError> {
    match dtype {
        DType::I8 => Ok((i8::MIN as i32, i8::MAX as i32)),
        DType::U8 => Ok((0, u8::MAX as i32)),
        d => Err(invalid(format!("{what} must be i8 or u8, got {d}"))),
    }
}

pub(crate) fn check_params(
    scales: &[f32],
    zero_points: &[i32],
    range: (i32, i32),
    what: &str,
) -> Result<(), CodegenError> {
    if let Some(z) = zero_points.iter().find(|&&z| z < range.0 || z > range.1) {
        return Err(invalid(format!(
            "{what}: zero point {z} outside [{}, {}]",
            range.0, range.1
        )));
    }
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(invalid(format!(
            "{what}: scale {s} is not a positive finite number"
        )));
    }
    Ok(())
}

pub(crate) fn per_tensor(
    ty: &TensorType,
    range: (i32, i32),
    what: &str,
) -> Result<(f32, i32), CodegenError> {
    match &ty.quant {
        Some(Quant::PerTensor { scale, zero_point }) => {
            check_params(&[*scale], &[*zero_point], range, what)?;
            Ok((*scale, *zero_point))
        }
        Some(Quant::PerAxis { .. }) => Err(invalid(format!(
            "{what} ({ty}) must be quantized per tensor"
        ))),
        None => Err(invalid(format!(
            "{what} ({ty}) has no quantization parameters"
        ))),
    }
}

fn weight_params(
    ty: &TensorType,
    c_out: usize,
    range: (i32, i32),
) -> Result<(Vec<f32>, Vec<i32>), CodegenError> {
    let (scales, zps) = match &ty.quant {
        Some(Quant::PerTensor { scale, zero_point }) => {
            (vec![*scale; c_out], vec![*zero_point; c_out])
        }
        Some(Quant::PerAxis {
            axis,
            scales,
            zero_points,
        }) => {
            if *axis != 0 || scales.len() != c_out || zero_points.len() != c_out {
                return Err(invalid(format!(
                    "weight: per-axis quantization along axis {axis} with {} scales, expected \
                     {c_out} along axis 0",
                    scales.len()
                )));
            }
            (scales.clone(), zero_points.clone())
        }
        None => {
            return Err(invalid(format!(
                "weight ({ty}) has no quantization parameters"
            )))
        }
    };
    check_params(&scales, &zps, range, "weight")?;
    Ok((scales, zps))
}

fn qbias(bias: Option<(&Tensor, &TensorType)>, channels: usize) -> Result<Vec<i32>, CodegenError> {
    let Some((b, ty)) = bias else {
        return Ok(vec![0; channels]);
    };
    let TensorData::I32(v) = b.data() else {
        return Err(invalid(format!("bias must be i32, got {}", b.dtype())));
    };
    if v.len() != channels || b.shape().len() != 1 {
        return Err(invalid(format!(
            "bias {:?} for {channels} output channels",
            b.shape()
        )));
    }
    let nonzero = match &ty.quant {
        Some(Quant::PerTensor { zero_point, .. }) => *zero_point != 0,
        Some(Quant::PerAxis { zero_points, .. }) => zero_points.iter().any(|&z| z != 0),
        None => false,
    };
    if nonzero {
        return Err(invalid("bias must have zero point 0"));
    }
    Ok(v.clone())
}

/// `sat(round_half_even(v) + zp)`, NaN → the low bound: the interpreter's quantization of a
/// value already divided by its scale.
fn saturate_round(v: f32, zp: i32, (lo, hi): (i32, i32)) -> i32 {
    if v.is_nan() {
        return lo;
    }
    // f64 holds every rounded f32 plus any i32 zero point exactly
    (v.round_ties_even() as f64 + zp as f64).clamp(lo as f64, hi as f64) as i32
}

/// The quantized-domain clamp of a fused activation: ReLU clamps at the zero point, Clip at
/// its bounds quantized like any value (the interpreter's `quantized_act_bounds`).
fn quantized_act_bounds(
    act: Option<&Activation>,
    scale: f32,
    zp: i32,
    range: (i32, i32),
) -> Result<(i32, i32), CodegenError> {
    let (lo, hi) = match act {
        None => range,
        Some(Activation::Relu) => (zp.max(range.0), range.1),
        Some(Activation::Clip { min, max }) => (
            saturate_round(*min as f32 / scale, zp, range),
            saturate_round(*max as f32 / scale, zp, range),
        ),
        Some(a) => {
            return Err(invalid(format!(
                "fused {} is not a clamp, so it cannot run in the quantized domain",
                a.name()
            )))
        }
    };
    if lo > hi {
        return Err(invalid(format!(
            "fused clip bounds quantize to the empty range [{lo}, {hi}]"
        )));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qtype(dtype: DType, shape: &[usize], scale: f32, zp: i32) -> TensorType {
        TensorType::new(dtype, shape.to_vec()).with_quant(Quant::per_tensor(scale, zp))
    }

    fn attrs_1x1() -> ConvAttrs {
        ConvAttrs {
            kernel: vec![1, 1],
            strides: vec![1, 1],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            groups: 1,
            act: None,
        }
    }

    #[test]
    fn folds_the_input_zero_point_into_the_bias() {
        // w = [[3, 1], [-1, 2]] with per-channel zp [0, 1] → centered [[3, 1], [-2, 1]];
        // zp_x = 128: bias' = [10 − 128·4, 0 − 128·(−1)] = [−502, 128]
        let w = Tensor::new(vec![2, 2, 1, 1], TensorData::I8(vec![3, 1, -1, 2])).unwrap();
        let wt = TensorType::new(DType::I8, vec![2, 2, 1, 1]).with_quant(Quant::PerAxis {
            axis: 0,
            scales: vec![0.25, 0.5],
            zero_points: vec![0, 1],
        });
        let b = Tensor::new(vec![2], TensorData::I32(vec![10, 0])).unwrap();
        let bt = TensorType::new(DType::I32, vec![2]);
        let xt = qtype(DType::U8, &[1, 2, 1, 1], 0.5, 128);
        let yt = qtype(DType::I8, &[1, 2, 1, 1], 0.125, 5);
        let plan = QConvPlan::new(&attrs_1x1(), &xt, &w, &wt, Some((&b, &bt)), &yt).unwrap();
        assert_eq!(plan.weights, vec![3, 1, -2, 1]);
        assert_eq!(plan.bias, vec![-502, 128]);
        // 0.5 · 0.25 / 0.125 = 1, 0.5 · 0.5 / 0.125 = 2
        assert_eq!(plan.multipliers, vec![1.0, 2.0]);
        // i8 output with zp 5: [−128 − 5, 127 − 5]
        assert_eq!(plan.requant_bounds, (-133.0, 122.0));
        assert_eq!(plan.act_bounds, (-128, 127));
    }

    #[test]
    fn rejects_what_the_interpreter_rejects() {
        let w = Tensor::new(vec![1, 1, 1, 1], TensorData::I8(vec![1])).unwrap();
        let wt = qtype(DType::I8, &[1, 1, 1, 1], 1.0, 0);
        let xt = qtype(DType::U8, &[1, 1, 1, 1], 1.0, 0);
        let yt = qtype(DType::U8, &[1, 1, 1, 1], 1.0, 0);
        let mut attrs = attrs_1x1();
        attrs.act = Some(Activation::Sigmoid);
        assert!(QConvPlan::new(&attrs, &xt, &w, &wt, None, &yt).is_err());
        let bad_zp = qtype(DType::U8, &[1, 1, 1, 1], 1.0, 300);
        assert!(QConvPlan::new(&attrs_1x1(), &bad_zp, &w, &wt, None, &yt).is_err());
        let i32_out = qtype(DType::I32, &[1, 1, 1, 1], 1.0, 0);
        assert!(matches!(
            QConvPlan::new(&attrs_1x1(), &xt, &w, &wt, None, &i32_out),
            Err(CodegenError::Unsupported { .. })
        ));
        attrs = attrs_1x1();
        attrs.groups = 2;
        assert!(QConvPlan::new(&attrs, &xt, &w, &wt, None, &yt).is_err());
    }
}
