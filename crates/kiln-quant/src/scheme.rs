//! Quantization schemes and the arithmetic that turns an observed real range into a scale and
//! zero point, following onnxruntime's `quant_utils.compute_scale_zp` to the bit (DESIGN §5).
//!
//! A [`QuantScheme`] is the whole-model choice (activation type, narrow range, reduce range);
//! it hands out a [`TensorScheme`] for activations and one for weights, and
//! [`params_from_range`] maps `(min, max)` to a [`Quant`] for a tensor scheme.

use crate::observer::{PerChannelMinMax, Range};
use kiln_ir::{DType, Quant, Tensor};
use thiserror::Error;

/// Why quantization parameters could not be computed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SchemeError {
    #[error("range [{min}, {max}] is not a pair of finite numbers with min <= max")]
    BadRange { min: f32, max: f32 },
    #[error("{dtype} cannot hold quantized values (i8 or u8 expected)")]
    BadDType { dtype: DType },
    #[error("minimum real range {0} is not a finite number >= 0")]
    BadMinRealRange(f32),
    #[error("quantization axis {axis} is out of range for a weight of shape {shape:?}")]
    BadAxis { axis: usize, shape: Vec<usize> },
    #[error("weight must be an f32 tensor, got {dtype}")]
    WeightNotFloat { dtype: DType },
    #[error("bias has {bias} elements but the weight has {channels} quantization channels")]
    BiasLength { bias: usize, channels: usize },
}

/// How activations (every non-constant tensor) are quantized: always per tensor.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum ActivationType {
    /// u8 with a free zero point (onnxruntime's and PyTorch's default).
    #[default]
    U8Asymmetric,
    /// i8 with zero point 0 (TensorRT-style symmetric toolkits).
    I8Symmetric,
}

/// The whole-model quantization choice. Weights are always i8 symmetric per output channel
/// (axis 0; axis 1 for ConvTranspose — the caller picks the axis); biases are i32 with scale
/// `s_x·s_w[c]` and zero point 0 ([`bias_quant`]).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct QuantScheme {
    pub activations: ActivationType,
    /// Symmetric i8 tensors use −127..127 instead of −128..127, so that the quantized range is
    /// symmetric like the real one. onnxruntime always does this for symmetric int8, so it is
    /// the default.
    pub narrow_range: bool,
    /// Weights use 7 bits (i8 −64..64), onnxruntime's `reduce_range`: it keeps
    /// `pmaddubsw`-style u8×i8 pair sums from saturating i16 on x86 without VNNI. Like
    /// onnxruntime (and unlike PyTorch, which reduces activations), activations keep 8 bits.
    pub reduce_range: bool,
    /// onnxruntime's `MinimumRealRange`: widen `max` so that `max − min` is at least this, to
    /// keep scales of near-constant tensors from becoming tiny.
    pub min_real_range: Option<f32>,
}

impl Default for QuantScheme {
    fn default() -> Self {
        QuantScheme {
            activations: ActivationType::U8Asymmetric,
            narrow_range: true,
            reduce_range: false,
            min_real_range: None,
        }
    }
}

impl QuantScheme {
    /// The scheme every activation tensor gets.
    pub fn activation(&self) -> TensorScheme {
        match self.activations {
            ActivationType::U8Asymmetric => TensorScheme {
                dtype: DType::U8,
                symmetric: false,
                narrow_range: false,
                reduce_range: false,
                min_real_range: self.min_real_range,
            },
            ActivationType::I8Symmetric => TensorScheme {
                dtype: DType::I8,
                symmetric: true,
                narrow_range: self.narrow_range,
                reduce_range: false,
                min_real_range: self.min_real_range,
            },
        }
    }

    /// The scheme of each output channel of a weight.
    pub fn weight(&self) -> TensorScheme {
        TensorScheme {
            dtype: DType::I8,
            symmetric: true,
            narrow_range: self.narrow_range,
            reduce_range: self.reduce_range,
            min_real_range: self.min_real_range,
        }
    }
}

/// How one tensor (or one channel of it) is quantized.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct TensorScheme {
    /// `I8` or `U8`.
    pub dtype: DType,
    /// Range made symmetric around 0 and the zero point fixed at the middle of the integer
    /// range (0 for i8, 128 for u8).
    pub symmetric: bool,
    /// Symmetric i8 in −127..127 (ignored otherwise).
    pub narrow_range: bool,
    /// 7-bit range: u8 0..127, i8 −64..64 (onnxruntime's `ONNX_INT_TYPE_REDUCED_RANGE`).
    pub reduce_range: bool,
    pub min_real_range: Option<f32>,
}

impl TensorScheme {
    /// The integer range `[qmin, qmax]` values are quantized into. Mirrors onnxruntime's
    /// `get_qmin_qmax_for_qType`: reduce range wins over the symmetric narrow range.
    pub fn int_range(&self) -> Result<(i32, i32), SchemeError> {
        match (self.dtype, self.reduce_range) {
            (DType::U8, true) => Ok((0, 127)),
            (DType::I8, true) => Ok((-64, 64)),
            (DType::U8, false) => Ok((0, 255)),
            (DType::I8, false) if self.symmetric && self.narrow_range => Ok((-127, 127)),
            (DType::I8, false) => Ok((-128, 127)),
            (dtype, _) => Err(SchemeError::BadDType { dtype }),
        }
    }
}

/// Scale and zero point for values observed in `[min, max]`, exactly as onnxruntime's
/// `compute_scale_zp(rmin, rmax, qmin, qmax, symmetric, min_real_range)` computes them for
/// float32 `rmin`/`rmax`:
///
/// 1. the range is widened to include 0 (`rmin = min(rmin, 0)`, `rmax = max(rmax, 0)`, in
///    f32), so that 0 — zero padding, ReLU's floor — is exactly representable;
/// 2. with a minimum real range `m`: `rmax = max(rmax, rmin + m)` (f32);
/// 3. symmetric: `rmin, rmax = −absmax, absmax`;
/// 4. `scale = (rmax − rmin) / (qmax − qmin)` in f64;
/// 5. if that scale is below the smallest normal f32 (the range is empty, e.g. a tensor that
///    is constantly 0), scale 1 and zero point 0 — onnxruntime's choice; PyTorch would give
///    `scale = f32::EPSILON` instead;
/// 6. otherwise the zero point is `round_half_even((qmin + qmax) / 2)` when symmetric (0 for
///    i8, 128 for u8: every channel gets the same one, which onnxruntime's per-channel
///    kernels require) or `round_half_even(qmin − rmin / scale)` (f64) when not, and the
///    scale is rounded to f32 last.
///
/// A constant non-zero tensor `c` is not degenerate: its range becomes `[min(c,0), max(c,0)]`.
pub fn params_from_range(min: f32, max: f32, scheme: &TensorScheme) -> Result<Quant, SchemeError> {
    let (scale, zero_point) = scale_zero_point(min, max, scheme)?;
    Ok(Quant::per_tensor(scale, zero_point))
}

/// [`params_from_range`] as a bare `(scale, zero_point)` pair.
pub fn scale_zero_point(
    min: f32,
    max: f32,
    scheme: &TensorScheme,
) -> Result<(f32, i32), SchemeError> {
    if !(min.is_finite() && max.is_finite() && min <= max) {
        return Err(SchemeError::BadRange { min, max });
    }
    let (qmin, qmax) = scheme.int_range()?;
    let mut rmin = min.min(0.0);
    let mut rmax = max.max(0.0);
    if let Some(m) = scheme.min_real_range {
        if !(m.is_finite() && m >= 0.0) {
            return Err(SchemeError::BadMinRealRange(m));
        }
        rmax = rmax.max(rmin + m);
    }
    if scheme.symmetric {
        let absmax = rmin.abs().max(rmax.abs());
        rmin = -absmax;
        rmax = absmax;
    }
    // f64 so that a range near f32::MAX cannot overflow (onnxruntime promotes likewise).
    let scale = (rmax as f64 - rmin as f64) / (qmax as f64 - qmin as f64);
    if scale < f32::MIN_POSITIVE as f64 {
        return Ok((1.0, 0));
    }
    let zero_point = if scheme.symmetric {
        ((qmin + qmax) as f64 / 2.0).round_ties_even()
    } else {
        (qmin as f64 - rmin as f64 / scale).round_ties_even()
    };
    // rmin <= 0 <= rmax puts qmin - rmin/scale in [qmin, qmax] up to rounding; the clamp
    // only guards that last ulp.
    let zero_point = (zero_point as i64).clamp(qmin as i64, qmax as i64) as i32;
    Ok((scale as f32, zero_point))
}

/// Per-channel parameters for a weight along `axis` (0 for Conv/Gemm/MatMul weights laid out
/// output-channel first, 1 for ConvTranspose): min-max per channel, then
/// [`params_from_range`] with the weight scheme — onnxruntime's `quantize_weight_per_channel`.
/// Non-finite weight values are skipped; a channel with no finite value gets scale 1, zero
/// point 0 (onnxruntime's result for an empty channel).
pub fn weight_params(
    weight: &Tensor,
    axis: usize,
    scheme: &QuantScheme,
) -> Result<Quant, SchemeError> {
    if axis >= weight.shape().len() {
        return Err(SchemeError::BadAxis {
            axis,
            shape: weight.shape().to_vec(),
        });
    }
    let mut observer = PerChannelMinMax::new(axis);
    observer
        .observe(weight)
        .map_err(|_| SchemeError::WeightNotFloat {
            dtype: weight.dtype(),
        })?;
    let ts = scheme.weight();
    let mut scales = Vec::new();
    let mut zero_points = Vec::new();
    for r in observer.ranges() {
        let Range { min, max } = r.unwrap_or(Range { min: 0.0, max: 0.0 });
        let (s, z) = scale_zero_point(min, max, &ts)?;
        scales.push(s);
        zero_points.push(z);
    }
    Ok(Quant::PerAxis {
        axis,
        scales,
        zero_points,
    })
}

/// The i32 bias quantization for an input scale and a weight's quantization: scale
/// `s_x · s_w[c]` (multiplied in f32, as onnxruntime does), zero point 0.
pub fn bias_quant(input_scale: f32, weight: &Quant) -> Quant {
    match weight {
        Quant::PerTensor { scale, .. } => Quant::per_tensor(input_scale * scale, 0),
        Quant::PerAxis { scales, .. } => Quant::PerAxis {
            axis: 0,
            scales: scales.iter().map(|s| input_scale * s).collect(),
            zero_points: vec![0; scales.len()],
        },
    }
}

/// A quantized bias: its i32 values, their quantization, and how many values saturated i32
/// (a warning: the bias scale is too small for the bias).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedBias {
    pub values: Vec<i32>,
    pub quant: Quant,
    pub saturated: usize,
}

/// Quantize a bias the way onnxruntime's `quantize_bias_static_impl` does:
/// `round_half_even(b as f64 / scale as f64)` clipped to the i32 range, with the scale of
/// [`bias_quant`]. Non-finite bias values saturate (NaN to 0) and count as saturated.
pub fn quantize_bias(
    bias: &[f32],
    input_scale: f32,
    weight: &Quant,
) -> Result<QuantizedBias, SchemeError> {
    let quant = bias_quant(input_scale, weight);
    if let Quant::PerAxis { scales, .. } = &quant {
        if scales.len() != bias.len() {
            return Err(SchemeError::BiasLength {
                bias: bias.len(),
                channels: scales.len(),
            });
        }
    }
    let mut saturated = 0;
    let values = bias
        .iter()
        .enumerate()
        .map(|(c, &b)| {
            let (scale, _) = quant.params_at(c);
            let q = (b as f64 / scale as f64).round_ties_even();
            if !(q >= i32::MIN as f64 && q <= i32::MAX as f64) {
                saturated += 1;
            }
            if q.is_nan() {
                0
            } else {
                q.clamp(i32::MIN as f64, i32::MAX as f64) as i32
            }
        })
        .collect();
    Ok(QuantizedBias {
        values,
        quant,
        saturated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u8_asym() -> TensorScheme {
        QuantScheme::default().activation()
    }

    fn i8_sym(narrow: bool) -> TensorScheme {
        QuantScheme {
            activations: ActivationType::I8Symmetric,
            narrow_range: narrow,
            ..QuantScheme::default()
        }
        .activation()
    }

    #[test]
    fn u8_asymmetric_hand_derived() {
        // [-1, 3]: scale = 4/255 (f64, then f32); zp = round(0 - (-1)/(4/255)) = round(63.75) = 64
        let (s, z) = scale_zero_point(-1.0, 3.0, &u8_asym()).unwrap();
        assert_eq!(s, (4.0f64 / 255.0) as f32);
        assert_eq!(z, 64);
        // an all-positive range is widened to include 0: [0, 6] -> scale 6/255, zp 0
        let (s, z) = scale_zero_point(2.0, 6.0, &u8_asym()).unwrap();
        assert_eq!((s, z), ((6.0f64 / 255.0) as f32, 0));
        // all-negative [-5, -1] -> [-5, 0]: zp = round(0 + 5/(5/255)) = 255
        let (s, z) = scale_zero_point(-5.0, -1.0, &u8_asym()).unwrap();
        assert_eq!((s, z), ((5.0f64 / 255.0) as f32, 255));
    }

    #[test]
    fn zero_point_rounds_half_to_even() {
        // [-0.5, 0.5] over 255 steps: zp = round(0.5 / (1/255)) = round(127.5) = 128 (even);
        // [-1.5/255·k ...]: pick rmin/scale = -126.5 exactly: range [-126.5, 128.5] -> scale 1,
        // zp = round(126.5) = 126 (half to even, not 127)
        let (_, z) = scale_zero_point(-0.5, 0.5, &u8_asym()).unwrap();
        assert_eq!(z, 128);
        let (s, z) = scale_zero_point(-126.5, 128.5, &u8_asym()).unwrap();
        assert_eq!((s, z), (1.0, 126));
    }

    #[test]
    fn i8_symmetric_narrow_and_full() {
        // narrow: [-2, 1] -> absmax 2, scale = 4/254, zp = round(0/2) = 0
        let (s, z) = scale_zero_point(-2.0, 1.0, &i8_sym(true)).unwrap();
        assert_eq!((s, z), ((4.0f64 / 254.0) as f32, 0));
        // full -128..127: scale = 4/255, zp = round(-0.5) = -0 -> 0 (half to even)
        let (s, z) = scale_zero_point(-2.0, 1.0, &i8_sym(false)).unwrap();
        assert_eq!((s, z), ((4.0f64 / 255.0) as f32, 0));
    }

    #[test]
    fn u8_symmetric_and_reduced_ranges() {
        // u8 symmetric: zp = round((0 + 255)/2) = round(127.5) = 128
        let u8_sym = TensorScheme {
            symmetric: true,
            ..u8_asym()
        };
        assert_eq!(scale_zero_point(-1.0, 1.0, &u8_sym).unwrap().1, 128);
        // reduce range: u8 0..127, i8 -64..64 (onnxruntime's table)
        let reduced_u8 = TensorScheme {
            reduce_range: true,
            ..u8_asym()
        };
        assert_eq!(reduced_u8.int_range().unwrap(), (0, 127));
        let (s, z) = scale_zero_point(0.0, 127.0, &reduced_u8).unwrap();
        assert_eq!((s, z), (1.0, 0));
        let w = QuantScheme {
            reduce_range: true,
            ..QuantScheme::default()
        }
        .weight();
        assert_eq!(w.int_range().unwrap(), (-64, 64));
        // [-3, 2] -> absmax 3 -> scale 6/128
        assert_eq!(
            scale_zero_point(-3.0, 2.0, &w).unwrap(),
            ((6.0f64 / 128.0) as f32, 0)
        );
    }

    #[test]
    fn constant_tensors() {
        // constant 0: the widened range is empty -> onnxruntime's scale 1, zp 0
        assert_eq!(scale_zero_point(0.0, 0.0, &u8_asym()).unwrap(), (1.0, 0));
        assert_eq!(scale_zero_point(0.0, 0.0, &i8_sym(true)).unwrap(), (1.0, 0));
        // constant 5: range [0, 5], a normal scale
        assert_eq!(
            scale_zero_point(5.0, 5.0, &u8_asym()).unwrap(),
            ((5.0f64 / 255.0) as f32, 0)
        );
        // a range below the smallest normal f32 after division is degenerate too
        assert_eq!(scale_zero_point(0.0, 1e-37, &u8_asym()).unwrap(), (1.0, 0));
    }

    #[test]
    fn min_real_range_widens_max() {
        let scheme = TensorScheme {
            min_real_range: Some(0.51),
            ..u8_asym()
        };
        // [0, 0.1] -> rmax = max(0.1, 0 + 0.51) = 0.51 -> scale 0.51/255
        let (s, z) = scale_zero_point(0.0, 0.1, &scheme).unwrap();
        assert_eq!((s, z), ((0.51f32 as f64 / 255.0) as f32, 0));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(scale_zero_point(f32::NAN, 1.0, &u8_asym()).is_err());
        assert!(scale_zero_point(0.0, f32::INFINITY, &u8_asym()).is_err());
        assert!(scale_zero_point(2.0, 1.0, &u8_asym()).is_err());
        let bad = TensorScheme {
            dtype: DType::I32,
            ..u8_asym()
        };
        assert!(matches!(
            scale_zero_point(0.0, 1.0, &bad),
            Err(SchemeError::BadDType { .. })
        ));
    }

    #[test]
    fn per_channel_weights_and_bias() {
        // 2 output channels: [-1, 0.5] -> scale 1/127; [0, 0, 0] -> scale 1, zp 0
        let w = Tensor::from_f32(vec![2, 3], vec![-1.0, 0.5, 0.25, 0.0, 0.0, 0.0]).unwrap();
        let q = weight_params(&w, 0, &QuantScheme::default()).unwrap();
        assert_eq!(
            q,
            Quant::PerAxis {
                axis: 0,
                scales: vec![(2.0f64 / 254.0) as f32, 1.0],
                zero_points: vec![0, 0],
            }
        );
        assert!(matches!(
            weight_params(&w, 2, &QuantScheme::default()),
            Err(SchemeError::BadAxis { .. })
        ));
        // bias scale = 0.5 · s_w[c]; b = [1, -3] -> [round(1/(0.5/127)), round(-3/0.5)]
        let b = quantize_bias(&[1.0, -3.0], 0.5, &q).unwrap();
        let s0 = 0.5f32 * (2.0f64 / 254.0) as f32;
        assert_eq!(b.quant.params_at(0), (s0, 0));
        assert_eq!(
            b.values,
            vec![(1.0f64 / s0 as f64).round_ties_even() as i32, -6]
        );
        assert_eq!(b.saturated, 0);
        // a huge bias saturates and is counted
        let b = quantize_bias(&[1e30, 0.0], 0.5, &q).unwrap();
        assert_eq!((b.values[0], b.saturated), (i32::MAX, 1));
        assert!(quantize_bias(&[1.0], 0.5, &q).is_err());
    }
}
