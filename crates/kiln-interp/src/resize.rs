//! ONNX Resize: nearest (every `nearest_mode`), n-linear and cubic (with `exclude_outside`
//! and antialiasing), under every coordinate transform including `tf_crop_and_resize`
//! with its extrapolation value.
//!
//! Resize is separable, so it runs one axis at a time, as onnx's reference implementation
//! (`onnx/reference/ops/op_resize.py`) does; its tap selection and coefficient formulas are
//! followed exactly. Output coordinates map back to input coordinates in f32 with
//! onnxruntime's formulas (`upsamplebase.h`), which decides the nearest pixel the way
//! onnxruntime does at exact ties; interpolation weights and sums are then carried in f64
//! and rounded to f32 once at the end.

use crate::elem::{dispatch_dtype, make_tensor, view};
use crate::movement::gather_mapped;
use kiln_ir::resize_math::{axis_taps, is_identity_axis, nearest_maps, roi, Taps};
use kiln_ir::tensor::strides_of;
use kiln_ir::{CoordTransform, ResizeAttrs, ResizeMode, Tensor, TensorType};

/// Interpolate `src` (shape `shape`) along `axis` to `out_len` positions.
fn interpolate_axis(
    src: &[f64],
    shape: &[usize],
    axis: usize,
    taps: &[Taps],
    extrapolation: f64,
) -> Vec<f64> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let in_len = shape[axis];
    let out_len = taps.len();
    let mut out = vec![0f64; outer * out_len * inner];
    for o in 0..outer {
        for (t, tap) in taps.iter().enumerate() {
            let dst = &mut out[(o * out_len + t) * inner..(o * out_len + t + 1) * inner];
            match tap {
                Taps::Extrapolate => dst.fill(extrapolation),
                Taps::Weighted(ws) => {
                    for &(i, w) in ws {
                        let row = &src[(o * in_len + i) * inner..(o * in_len + i + 1) * inner];
                        dst.iter_mut().zip(row).for_each(|(d, &s)| *d += w * s);
                    }
                }
            }
        }
    }
    out
}

/// Resize `x` (whose type is `ty`) to `attrs.sizes`.
pub(crate) fn resize(x: &Tensor, ty: &TensorType, attrs: &ResizeAttrs) -> Result<Tensor, String> {
    let rank = x.shape().len();
    if attrs.sizes.len() != rank || attrs.scales.len() != rank {
        return Err(format!(
            "sizes {:?} and scales {:?} must have one entry per axis of {:?}",
            attrs.sizes,
            attrs.scales,
            x.shape()
        ));
    }
    if let Some(s) = attrs.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(format!("scale {s} is not a positive finite number"));
    }
    let crop = attrs.coord == CoordTransform::TfCropAndResize;
    if crop && attrs.roi.len() != 2 * rank {
        return Err(format!(
            "tf_crop_and_resize needs a roi of {} values, got {:?}",
            2 * rank,
            attrs.roi
        ));
    }
    if x.shape().contains(&0) && attrs.sizes.iter().any(|&s| s > 0) {
        return Err(format!(
            "cannot resize the empty tensor {:?} to {:?}",
            x.shape(),
            attrs.sizes
        ));
    }
    if attrs.mode == ResizeMode::Nearest {
        if attrs.antialias {
            return Err("antialias is not defined for nearest resize".to_string());
        }
        // Pure selection: any dtype, quantized values included.
        let maps = nearest_maps(attrs, x.shape());
        let strides = strides_of(x.shape());
        return dispatch_dtype!(x.dtype(), T => {
            let src = view::<T>(x)?;
            let fill = <T as crate::elem::Elem>::from_f64_saturating(attrs.extrapolation_value as f64);
            let mut out = Vec::with_capacity(attrs.sizes.iter().product());
            gather_mapped(src, &maps, &strides, 0, 0, true, fill, &mut out);
            make_tensor(attrs.sizes.clone(), out)
        });
    }

    if ty.quant.is_some() {
        return Err(format!(
            "{:?} resize of a quantized tensor needs a dequantize first",
            attrs.mode
        ));
    }
    let src =
        view::<f32>(x).map_err(|e| format!("{e} ({:?} resize is defined on f32)", attrs.mode))?;
    let mut shape = x.shape().to_vec();
    let mut data: Vec<f64> = src.iter().map(|&v| v as f64).collect();
    for d in 0..rank {
        if is_identity_axis(attrs, d, x.shape()[d]) {
            continue;
        }
        let taps = axis_taps(attrs, d, shape[d], attrs.sizes[d], roi(attrs, d));
        data = interpolate_axis(&data, &shape, d, &taps, attrs.extrapolation_value as f64);
        shape[d] = attrs.sizes[d];
    }
    make_tensor(shape, data.into_iter().map(|v| v as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, NearestMode};

    fn attrs(
        sizes: &[usize],
        scales: &[f32],
        mode: ResizeMode,
        coord: CoordTransform,
    ) -> ResizeAttrs {
        ResizeAttrs {
            sizes: sizes.to_vec(),
            mode,
            coord,
            nearest: NearestMode::RoundPreferFloor,
            scales: scales.to_vec(),
            roi: vec![],
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
        }
    }

    fn run(x: &Tensor, a: &ResizeAttrs) -> Vec<f32> {
        let ty = TensorType::new(x.dtype(), x.shape().to_vec());
        resize(x, &ty, a).unwrap().as_f32().unwrap().to_vec()
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn nearest_upsample_asymmetric_floor() {
        // [1,2] ×2 asymmetric: x_ori = o/2 = 0, .5, 1, 1.5 → floor 0,0,1,1
        let x = Tensor::from_f32(vec![2], vec![1., 2.]).unwrap();
        let mut a = attrs(
            &[4],
            &[2.0],
            ResizeMode::Nearest,
            CoordTransform::Asymmetric,
        );
        a.nearest = NearestMode::Floor;
        assert_eq!(run(&x, &a), [1., 1., 2., 2.]);
        // round_prefer_floor: 0.5 → 0, 1.5 → 1 (ties down); round_prefer_ceil: ties up
        a.nearest = NearestMode::RoundPreferFloor;
        assert_eq!(run(&x, &a), [1., 1., 2., 2.]);
        a.nearest = NearestMode::RoundPreferCeil;
        assert_eq!(run(&x, &a), [1., 2., 2., 2.]);
        a.nearest = NearestMode::Ceil;
        assert_eq!(run(&x, &a), [1., 2., 2., 2.]);
    }

    #[test]
    fn linear_half_pixel_and_align_corners() {
        // [0, 4] → 4 outputs, half_pixel: x_ori = (o+0.5)/2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
        // clamped to the edge: 0, 1, 3, 4
        let x = Tensor::from_f32(vec![2], vec![0., 4.]).unwrap();
        let a = attrs(&[4], &[2.0], ResizeMode::Linear, CoordTransform::HalfPixel);
        close(&run(&x, &a), &[0., 1., 3., 4.]);
        // align_corners [0, 3] → 4: x_ori = o/3 → 0, 1, 2, 3... of [0,3]: 0, 1, 2, 3
        let x = Tensor::from_f32(vec![2], vec![0., 3.]).unwrap();
        let a = attrs(
            &[4],
            &[2.0],
            ResizeMode::Linear,
            CoordTransform::AlignCorners,
        );
        close(&run(&x, &a), &[0., 1., 2., 3.]);
        // 2-D bilinear is the product of the 1-D weights: centre of a 2×2 → mean
        let x = Tensor::from_f32(vec![2, 2], vec![0., 2., 4., 6.]).unwrap();
        let a = attrs(
            &[1, 1],
            &[0.5, 0.5],
            ResizeMode::Linear,
            CoordTransform::HalfPixel,
        );
        close(&run(&x, &a), &[3.0]);
    }

    #[test]
    fn cubic_reproduces_linear_data_away_from_edges() {
        // Keys' cubic (any A) reproduces linear functions where all 4 taps are inside:
        // data i, asymmetric ×2: x_ori = o/2, output o/2 for o in 2..=8 (taps 0..=5)
        let x = Tensor::from_f32(vec![6], (0..6).map(|i| i as f32).collect()).unwrap();
        let a = attrs(&[12], &[2.0], ResizeMode::Cubic, CoordTransform::Asymmetric);
        let y = run(&x, &a);
        for (o, v) in y.iter().enumerate().take(9).skip(2) {
            assert!((v - o as f32 / 2.0).abs() < 1e-5, "{o}: {v}");
        }
        // at an exact input pixel the result is that pixel (coefficients 0, 0, 1, 0)
        assert_eq!(y[0], 0.0);
        assert_eq!(y[10], 5.0);
    }

    #[test]
    fn tf_crop_and_resize_extrapolates() {
        // roi [0.5, 1.5] of [0, 10] (len 2): x_ori = 0.5 + o·1/(2-1)... for 2 outputs:
        // o=0 → 0.5 (inside → 5), o=1 → 1.5 (> 1 → extrapolation 7)
        let x = Tensor::from_f32(vec![2], vec![0., 10.]).unwrap();
        let mut a = attrs(
            &[2],
            &[1.0],
            ResizeMode::Linear,
            CoordTransform::TfCropAndResize,
        );
        a.roi = vec![0.5, 1.5];
        a.extrapolation_value = 7.0;
        close(&run(&x, &a), &[5., 7.]);
        a.mode = ResizeMode::Nearest;
        close(&run(&x, &a), &[0., 7.]);
    }

    #[test]
    fn antialias_linear_downsample_averages_a_triangle() {
        // ×0.5 antialiased linear, half_pixel: output 0 sits at x_ori = 0.5; the kernel is a
        // triangle of half-width 2 (1/scale): taps -1,0,1,2 at distances 1.5,.5,.5,1.5 →
        // weights .25,.75,.75,.25 /2; edge-clamped tap -1 reads x[0].
        // x = [0, 4, 8, 12]: (0·.25 + 0·.75 + 4·.75 + 8·.25)/2 = 2.5
        let x = Tensor::from_f32(vec![4], vec![0., 4., 8., 12.]).unwrap();
        let mut a = attrs(&[2], &[0.5], ResizeMode::Linear, CoordTransform::HalfPixel);
        a.antialias = true;
        close(&run(&x, &a)[..1], &[2.5]);
        // exclude_outside drops the tap at -1 and renormalizes: (0·.75+4·.75+8·.25)/1.75
        a.exclude_outside = true;
        close(&run(&x, &a)[..1], &[5.0 / 1.75]);
    }

    #[test]
    fn nearest_moves_quantized_values_and_linear_refuses_them() {
        let x = Tensor::new(vec![2], kiln_ir::TensorData::U8(vec![3, 9])).unwrap();
        let ty = TensorType::new(DType::U8, vec![2]).with_quant(kiln_ir::Quant::per_tensor(0.1, 3));
        let a = attrs(
            &[4],
            &[2.0],
            ResizeMode::Nearest,
            CoordTransform::Asymmetric,
        );
        let y = resize(&x, &ty, &a).unwrap();
        assert_eq!(y.data(), &kiln_ir::TensorData::U8(vec![3, 3, 9, 9]));
        let l = attrs(&[4], &[2.0], ResizeMode::Linear, CoordTransform::Asymmetric);
        assert!(resize(&x, &ty, &l).is_err());
    }
}
