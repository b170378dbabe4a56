//! Resize's coordinate and weight math, shared by the reference interpreter (kiln-interp)
//! and the JIT kernel (kiln-codegen), which must agree bit for bit: the input coordinate an
//! output index maps to (onnxruntime's f32 formulas, `upsamplebase.h`), nearest-pixel
//! selection, and the taps and f64 weights of linear and cubic interpolation (onnx's
//! `op_resize.py`, followed exactly).

use crate::{CoordTransform, NearestMode, ResizeAttrs, ResizeMode};

/// The input coordinate (in f32, onnxruntime's formulas) that output index `x` of an axis
/// maps to.
pub fn original_coordinate(
    coord: CoordTransform,
    x: usize,
    scale: f32,
    in_len: usize,
    out_len: usize,
    roi: (f32, f32),
) -> f32 {
    let x = x as f32;
    let (in_f, out_f) = (in_len as f32, out_len as f32);
    match coord {
        CoordTransform::HalfPixel => (x + 0.5) / scale - 0.5,
        CoordTransform::HalfPixelSymmetric => {
            let output_width = scale * in_f;
            let adjustment = out_f / output_width;
            let center = in_f / 2.0;
            let offset = center * (1.0 - adjustment);
            // onnxruntime writes `+ 0.5` with a double literal here: the last step runs in
            // f64 and is rounded once (it decides nearest-pixel ties, e.g. 5 → 3 columns)
            (offset as f64 + (x as f64 + 0.5) / scale as f64 - 0.5) as f32
        }
        CoordTransform::PytorchHalfPixel => {
            if out_len > 1 {
                (x + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        CoordTransform::AlignCorners => {
            if out_len == 1 {
                0.0
            } else {
                x * (in_f - 1.0) / (out_f - 1.0)
            }
        }
        CoordTransform::Asymmetric => x / scale,
        CoordTransform::TfCropAndResize => {
            let (start, end) = roi;
            if out_len > 1 {
                start * (in_f - 1.0) + (x * (end - start) * (in_f - 1.0)) / (out_f - 1.0)
            } else {
                0.5 * (start + end) * (in_f - 1.0)
            }
        }
    }
}

/// Is an output coordinate outside the input, so that `tf_crop_and_resize` writes the
/// extrapolation value?
pub fn extrapolates(coord: CoordTransform, x_ori: f32, in_len: usize) -> bool {
    coord == CoordTransform::TfCropAndResize && (x_ori < 0.0 || x_ori > in_len as f32 - 1.0)
}

/// Nearest input index of a mapped coordinate, clamped into the axis.
pub fn nearest_index(mode: NearestMode, x_ori: f32, in_len: usize) -> usize {
    let i = match mode {
        // onnxruntime: ties (x.5) go down; everything else rounds to nearest
        NearestMode::RoundPreferFloor => {
            if x_ori == (x_ori as i64) as f32 + 0.5 {
                x_ori.floor() as i64
            } else {
                x_ori.round() as i64
            }
        }
        // `round` sends ties away from zero: up for the coordinates that survive clamping
        NearestMode::RoundPreferCeil => x_ori.round() as i64,
        NearestMode::Floor => x_ori.floor() as i64,
        NearestMode::Ceil => x_ori.ceil() as i64,
    };
    i.clamp(0, in_len as i64 - 1) as usize
}

/// Interpolation coefficients for fractional position `ratio ∈ (0, 1]` (1 for an exact
/// input pixel, which selects the left neighbour set) — op_resize.py's `_linear_coeffs`,
/// `_cubic_coeffs` and their `_antialias` forms.
pub fn coefficients(mode: ResizeMode, ratio: f64, scale: f64, a: f64, antialias: bool) -> Vec<f64> {
    match (mode, antialias) {
        (ResizeMode::Linear, false) => vec![1.0 - ratio, ratio],
        (ResizeMode::Linear, true) => {
            let scale = scale.min(1.0);
            let start = (-1.0 / scale).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            let c: Vec<f64> = (start..start + footprint)
                .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                .collect();
            normalized(c)
        }
        (ResizeMode::Cubic, false) => {
            let (r1, q) = (ratio + 1.0, 1.0 - ratio);
            let q1 = q + 1.0;
            vec![
                ((a * r1 - 5.0 * a) * r1 + 8.0 * a) * r1 - 4.0 * a,
                ((a + 2.0) * ratio - (a + 3.0)) * ratio * ratio + 1.0,
                ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                ((a * q1 - 5.0 * a) * q1 + 8.0 * a) * q1 - 4.0 * a,
            ]
        }
        (ResizeMode::Cubic, true) => {
            let scale = scale.min(1.0);
            let cubic = |x: f64| {
                let x = x.abs();
                let (x2, x3) = (x * x, x * x * x);
                if x <= 1.0 {
                    (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                } else if x < 2.0 {
                    a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                } else {
                    0.0
                }
            };
            let start = (-2.0 / scale).floor() as i64 + 1;
            let end = 2 - start;
            normalized(
                (start..end)
                    .map(|i| cubic(scale * (i as f64 - ratio)))
                    .collect(),
            )
        }
        (ResizeMode::Nearest, _) => unreachable!("nearest resize selects, it has no coefficients"),
    }
}

fn normalized(c: Vec<f64>) -> Vec<f64> {
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}

/// One output position of one axis: `(input index, weight)` taps, or extrapolation.
pub enum Taps {
    Weighted(Vec<(usize, f64)>),
    Extrapolate,
}

/// Taps of every output index along one axis (linear / cubic).
pub fn axis_taps(
    attrs: &ResizeAttrs,
    axis: usize,
    in_len: usize,
    out_len: usize,
    roi: (f32, f32),
) -> Vec<Taps> {
    let scale = attrs.scales[axis];
    (0..out_len)
        .map(|x| {
            let x_ori = original_coordinate(attrs.coord, x, scale, in_len, out_len, roi);
            if extrapolates(attrs.coord, x_ori, in_len) {
                return Taps::Extrapolate;
            }
            let x_ori = x_ori as f64;
            let floor = x_ori.floor();
            let ratio = if x_ori == floor { 1.0 } else { x_ori - floor };
            let mut coeffs = coefficients(
                attrs.mode,
                ratio,
                scale as f64,
                attrs.cubic_coeff_a as f64,
                attrs.antialias,
            );
            let n = coeffs.len() as i64;
            debug_assert!(n % 2 == 0, "every resize kernel has an even footprint");
            // op_resize.py `_get_neighbor`: the n indices nearest to x_ori, ties to the left;
            // for an even footprint that is floor(x) - n/2 + 1 .. (or one lower at an exact
            // integer, matching ratio = 1).
            let first = if x_ori == floor {
                floor as i64 - n / 2
            } else {
                floor as i64 - n / 2 + 1
            };
            let idx: Vec<i64> = (first..first + n).collect();
            if attrs.exclude_outside {
                for (c, &i) in coeffs.iter_mut().zip(&idx) {
                    if i < 0 || i >= in_len as i64 {
                        *c = 0.0;
                    }
                }
                let sum: f64 = coeffs.iter().sum();
                if sum != 0.0 {
                    coeffs.iter_mut().for_each(|c| *c /= sum);
                }
            }
            // outside taps read the edge pixel (op_resize.py pads in 'edge' mode)
            Taps::Weighted(
                idx.iter()
                    .zip(coeffs)
                    .map(|(&i, c)| (i.clamp(0, in_len as i64 - 1) as usize, c))
                    .collect(),
            )
        })
        .collect()
}

/// The crop box `(start, end)` of `axis` for `tf_crop_and_resize`, else the whole axis.
pub fn roi(attrs: &ResizeAttrs, axis: usize) -> (f32, f32) {
    let rank = attrs.sizes.len();
    if attrs.coord == CoordTransform::TfCropAndResize {
        (attrs.roi[axis], attrs.roi[rank + axis])
    } else {
        (0.0, 1.0)
    }
}

/// Does `axis` (of input length `in_len`) map every index to itself: scale 1, unchanged
/// length and the full roi?
pub fn is_identity_axis(attrs: &ResizeAttrs, axis: usize, in_len: usize) -> bool {
    attrs.scales[axis] == 1.0 && attrs.sizes[axis] == in_len && roi(attrs, axis) == (0.0, 1.0)
}

/// Nearest resize as a selection: per axis, the input index each output index reads, or
/// `None` where `tf_crop_and_resize` writes the extrapolation value.
pub fn nearest_maps(attrs: &ResizeAttrs, in_shape: &[usize]) -> Vec<Vec<Option<usize>>> {
    (0..in_shape.len())
        .map(|d| {
            let (in_len, out_len) = (in_shape[d], attrs.sizes[d]);
            let identity = is_identity_axis(attrs, d, in_len);
            (0..out_len)
                .map(|o| {
                    if identity {
                        return Some(o);
                    }
                    let x_ori = original_coordinate(
                        attrs.coord,
                        o,
                        attrs.scales[d],
                        in_len,
                        out_len,
                        roi(attrs, d),
                    );
                    (!extrapolates(attrs.coord, x_ori, in_len))
                        .then(|| nearest_index(attrs.nearest, x_ori, in_len))
                })
                .collect()
        })
        .collect()
}
