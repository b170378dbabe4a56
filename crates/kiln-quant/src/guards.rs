//! Numerical guards of weight quantization: non-finite weights get a defined value, and no
//! accepted conv/matmul can overflow its i32 accumulator (docs/quantization.md §3,
//! "Numerical guards", has the bound and its proof).

use kiln_ir::{Op, Quant, Tensor, TensorData};

/// The number of products an integer conv/gemm/matmul output sums (`K`): `C_in/groups ·
/// ∏kernel` for conv and conv_transpose, the reduction length for gemm and matmul. `None`
/// for other ops.
pub fn reduction_length(op: &Op, weight_shape: &[usize]) -> Option<usize> {
    match op {
        // weight [C_out, C_in/groups, k...]
        Op::Conv(_) => Some(weight_shape.iter().skip(1).product()),
        // weight [C_in, C_out/groups, k...]: an output sums over C_in/groups input channels
        // and at most every kernel position
        Op::ConvTranspose(a) => {
            let groups = a.groups.max(1);
            Some(weight_shape.first()? / groups * weight_shape.iter().skip(2).product::<usize>())
        }
        Op::Gemm(g) => Some(if g.trans_b {
            *weight_shape.get(1)?
        } else {
            *weight_shape.first()?
        }),
        Op::MatMul => weight_shape.len().checked_sub(2).map(|i| weight_shape[i]),
        _ => None,
    }
}

/// The largest `|q − zp|` of an integer type's range `[q_min, q_max]` with zero point `zp`.
pub fn max_offset(q_range: (i32, i32), zero_point: i32) -> i64 {
    let (lo, hi) = q_range;
    (hi as i64 - zero_point as i64).max(zero_point as i64 - lo as i64)
}

/// The largest `|Σ (x − zp_x)(w − zp_w)|` over `k` products, or an error saying why it does
/// not fit i32 with room for a bias. Returns the bias limit: `i32::MAX` minus that bound, so
/// that `|acc + bias| ≤ i32::MAX` whenever `|bias|` is within it.
pub fn bias_limit(k: usize, activation_offset: i64, weight_offset: i64) -> Result<i64, String> {
    let per_product = activation_offset * weight_offset;
    let sum = (k as i64).saturating_mul(per_product);
    if sum > i32::MAX as i64 {
        let max_k = i32::MAX as i64 / per_product.max(1);
        return Err(format!(
            "its i32 accumulator could overflow: it sums K = {k} products of up to \
             {activation_offset}·{weight_offset} = {per_product} each ({sum} > 2^31 − 1); \
             integer convs and matmuls accept K ≤ {max_k} (keep this node in float with --skip)"
        ));
    }
    Ok(i32::MAX as i64 - sum)
}

/// What [`finite_weight`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonFinite {
    pub nan: usize,
    pub infinite: usize,
}

impl NonFinite {
    pub fn total(&self) -> usize {
        self.nan + self.infinite
    }
}

/// `weight` with its non-finite values replaced — NaN by 0, ±∞ by the end of its channel's
/// representable range (`scale·q_max`, `scale·q_min`) — so that quantizing it gives 0 and the
/// saturated integers. `quant` was computed from the finite values (see
/// [`crate::weight_params`]); `q_range` is the weight type's integer range.
pub fn finite_weight(weight: &Tensor, quant: &Quant, q_range: (i32, i32)) -> (Tensor, NonFinite) {
    let mut counts = NonFinite::default();
    let Some(values) = weight.as_f32() else {
        return (weight.clone(), counts);
    };
    if values.iter().all(|v| v.is_finite()) {
        return (weight.clone(), counts);
    }
    let (axis, channels) = match quant {
        Quant::PerAxis { axis, scales, .. } => (*axis, scales.len()),
        Quant::PerTensor { .. } => (0, 1),
    };
    let inner: usize = weight.shape().iter().skip(axis + 1).product();
    let fixed = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.is_finite() {
                return v;
            }
            let c = if channels > 1 {
                (i / inner.max(1)) % channels
            } else {
                0
            };
            let (scale, zp) = quant.params_at(c);
            if v.is_nan() {
                counts.nan += 1;
                0.0
            } else {
                counts.infinite += 1;
                let end = if v > 0.0 { q_range.1 } else { q_range.0 };
                scale * (end - zp) as f32
            }
        })
        .collect();
    let t = Tensor::new(weight.shape().to_vec(), TensorData::F32(fixed))
        .expect("same shape and element count as the weight");
    (t, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{ConvAttrs, GemmAttrs};

    #[test]
    fn reduction_lengths() {
        let conv = Op::Conv(ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            groups: 2,
            act: None,
        });
        // weight [8, 4, 3, 3] with groups 2: each output sums C_in/groups = 4 channels × 9
        assert_eq!(reduction_length(&conv, &[8, 4, 3, 3]), Some(36));
        let gemm = Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
            act: None,
        });
        assert_eq!(reduction_length(&gemm, &[10, 512]), Some(512));
        assert_eq!(reduction_length(&Op::MatMul, &[768, 3072]), Some(768));
        assert_eq!(reduction_length(&Op::Identity, &[3]), None);
    }

    #[test]
    fn accumulator_bound() {
        // u8 activations with any zero point: |x − zp| ≤ 255; i8 weights: |w| ≤ 128.
        assert_eq!(max_offset((0, 255), 0), 255);
        assert_eq!(max_offset((0, 255), 128), 128);
        assert_eq!(max_offset((-128, 127), 0), 128);
        assert_eq!(max_offset((-127, 127), 0), 127);
        // 2^31 − 1 = 2147483647; 255·128 = 32640; 2147483647 / 32640 = 65793.7…:
        // K = 65793 fits (65793·32640 = 2147483520, leaving 127 for the bias), 65794 not.
        assert_eq!(bias_limit(65_793, 255, 128), Ok(127));
        let err = bias_limit(65_794, 255, 128).unwrap_err();
        assert!(
            err.contains("K = 65794") && err.contains("K ≤ 65793"),
            "{err}"
        );
        // an ordinary 3×3 conv over 512 channels: K = 4608, far inside
        assert_eq!(
            bias_limit(4608, 255, 127),
            Ok(i32::MAX as i64 - 4608 * 255 * 127)
        );
    }

    #[test]
    fn non_finite_weights_get_defined_values() {
        let w = Tensor::new(
            vec![2, 2],
            TensorData::F32(vec![f32::NAN, 1.0, f32::INFINITY, f32::NEG_INFINITY]),
        )
        .unwrap();
        // channel 0 scale 1/127, channel 1 scale 2/127 (as from ranges ±1, ±2), narrow i8
        let quant = Quant::PerAxis {
            axis: 0,
            scales: vec![1.0 / 127.0, 2.0 / 127.0],
            zero_points: vec![0, 0],
        };
        let (fixed, counts) = finite_weight(&w, &quant, (-127, 127));
        assert_eq!(
            counts,
            NonFinite {
                nan: 1,
                infinite: 2
            }
        );
        let v = fixed.as_f32().unwrap();
        assert_eq!(v[0], 0.0);
        assert_eq!(v[1], 1.0);
        // ±∞ in channel 1 → ±127 steps of 2/127
        assert!((v[2] - 2.0).abs() < 1e-6 && (v[3] + 2.0).abs() < 1e-6);
        let finite = Tensor::new(vec![1], TensorData::F32(vec![0.5])).unwrap();
        assert_eq!(finite_weight(&finite, &quant, (-127, 127)).1.total(), 0);
    }
}
