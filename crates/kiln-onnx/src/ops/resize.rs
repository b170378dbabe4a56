//! Resize (opsets 10, 11, 13, 18, 19) and Upsample (7, 9): scales, sizes, roi and axes
//! resolved to one [`ResizeAttrs`] with the output size fixed.

use super::emit_main;
use crate::attrs::NodeCx;
use crate::error::OnnxError;
use crate::importer::Importer;
use kiln_ir::{CoordTransform, NearestMode, Op, ResizeAttrs, ResizeMode};

/// Output size from a scale, as onnxruntime computes it: `floor(in · scale)` in f32.
fn scaled_size(input: usize, scale: f32) -> usize {
    (input as f32 * scale).floor().max(0.0) as usize
}

fn check_scales(cx: &NodeCx, scales: &[f32]) -> Result<(), OnnxError> {
    if scales.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
        return Err(cx.err(format!("scales {scales:?} must be positive and finite")));
    }
    Ok(())
}

/// The pre-opset-11 resize (Upsample, Resize-10): asymmetric coordinates, and nearest
/// neighbour rounding down when enlarging, up when shrinking (onnxruntime's "simple" mode;
/// the ONNX spec of these versions does not say, and onnxruntime is the reference these
/// models were checked against).
fn legacy_resize(
    cx: &NodeCx,
    input: &[usize],
    scales: Vec<f32>,
    mode: &str,
) -> Result<ResizeAttrs, OnnxError> {
    if scales.len() != input.len() {
        return Err(cx.err(format!(
            "scales {scales:?} must have one entry per input dim ({})",
            input.len()
        )));
    }
    check_scales(cx, &scales)?;
    let mode = match mode {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        other => return Err(cx.err(format!("mode '{other}' is not nearest or linear"))),
    };
    let enlarges = scales.iter().any(|&s| s > 1.0);
    let shrinks = scales.iter().any(|&s| s < 1.0);
    if mode == ResizeMode::Nearest && enlarges && shrinks {
        return Err(cx.err(format!(
            "nearest resize that enlarges some axes and shrinks others (scales {scales:?}) is not supported before opset 11"
        )));
    }
    Ok(ResizeAttrs {
        sizes: input
            .iter()
            .zip(&scales)
            .map(|(&d, &s)| scaled_size(d, s))
            .collect(),
        mode,
        coord: CoordTransform::Asymmetric,
        nearest: if shrinks {
            NearestMode::Ceil
        } else {
            NearestMode::Floor
        },
        scales,
        roi: vec![],
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        antialias: false,
    })
}

/// Upsample: scales attribute (opset 7/8) or input (9+).
pub(crate) fn upsample(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let input = im.shape(x).to_vec();
    let scales = if cx.opset() < 9 {
        cx.floats_opt("scales")?
            .ok_or_else(|| cx.err("attribute 'scales' is required"))?
    } else {
        im.const_floats(cx, 1, "scales")?
            .ok_or_else(|| cx.err("required input 1 (scales) is missing"))?
    };
    let attrs = legacy_resize(cx, &input, scales, &cx.string("mode", "nearest")?)?;
    emit_main(im, cx, Op::Resize(attrs), &[x])
}

pub(crate) fn resize(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let input = im.shape(x).to_vec();
    let rank = input.len();
    if cx.opset() < 11 {
        let scales = im
            .const_floats(cx, 1, "scales")?
            .ok_or_else(|| cx.err("required input 1 (scales) is missing"))?;
        let attrs = legacy_resize(cx, &input, scales, &cx.string("mode", "nearest")?)?;
        return emit_main(im, cx, Op::Resize(attrs), &[x]);
    }

    let mode = match cx.string("mode", "nearest")?.as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" => ResizeMode::Linear,
        "cubic" => ResizeMode::Cubic,
        other => return Err(cx.err(format!("mode '{other}' is not nearest, linear or cubic"))),
    };
    let coord = match cx
        .string("coordinate_transformation_mode", "half_pixel")?
        .as_str()
    {
        "half_pixel" => CoordTransform::HalfPixel,
        "half_pixel_symmetric" => CoordTransform::HalfPixelSymmetric,
        "pytorch_half_pixel" => CoordTransform::PytorchHalfPixel,
        "align_corners" => CoordTransform::AlignCorners,
        "asymmetric" => CoordTransform::Asymmetric,
        "tf_crop_and_resize" => CoordTransform::TfCropAndResize,
        other => {
            return Err(cx.err(format!(
                "coordinate_transformation_mode '{other}' is not known"
            )))
        }
    };
    let nearest = match cx.string("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => return Err(cx.err(format!("nearest_mode '{other}' is not known"))),
    };
    let axes = match cx.ints_opt("axes")? {
        Some(a) if cx.opset() >= 18 => {
            // Axes keep their given order: scales, sizes and roi entries follow it.
            let axes: Vec<usize> = a
                .iter()
                .map(|&v| cx.axis("axes", v, rank))
                .collect::<Result<_, _>>()?;
            cx.axes("axes", &a, rank)?; // rejects repeated axes
            axes
        }
        _ => (0..rank).collect(),
    };
    let policy = if cx.opset() >= 18 {
        cx.string("keep_aspect_ratio_policy", "stretch")?
    } else {
        "stretch".to_string()
    };

    let non_empty = |v: Option<Vec<f32>>| v.filter(|v| !v.is_empty());
    let roi = non_empty(im.const_floats(cx, 1, "roi")?);
    let scales_in = non_empty(im.const_floats(cx, 2, "scales")?);
    let sizes_in = im.const_ints(cx, 3, "sizes")?.filter(|v| !v.is_empty());

    let roi_full: Vec<f32> = if coord == CoordTransform::TfCropAndResize {
        let roi = roi.ok_or_else(|| cx.err("tf_crop_and_resize needs the roi input"))?;
        if roi.len() != 2 * axes.len() {
            return Err(cx.err(format!("roi {roi:?} must have {} entries", 2 * axes.len())));
        }
        let mut full: Vec<f32> = [vec![0.0; rank], vec![1.0; rank]].concat();
        for (j, &a) in axes.iter().enumerate() {
            full[a] = roi[j];
            full[rank + a] = roi[axes.len() + j];
        }
        full
    } else {
        vec![]
    };

    let mut scales = vec![1.0f32; rank];
    let mut sizes = input.clone();
    match (scales_in, sizes_in) {
        (Some(_), Some(_)) => return Err(cx.err("only one of scales and sizes may be given")),
        (None, None) => return Err(cx.err("one of scales and sizes must be given")),
        (Some(s), None) => {
            if s.len() != axes.len() {
                return Err(cx.err(format!("scales {s:?} must have {} entries", axes.len())));
            }
            check_scales(cx, &s)?;
            for (&a, &sc) in axes.iter().zip(&s) {
                // The spec multiplies by the roi extent for tf_crop_and_resize; onnxruntime
                // and the ONNX reference implementation do not, and kiln follows them.
                scales[a] = sc;
                sizes[a] = scaled_size(input[a], sc);
            }
        }
        (None, Some(sz)) => {
            if sz.len() != axes.len() {
                return Err(cx.err(format!("sizes {sz:?} must have {} entries", axes.len())));
            }
            let sz = cx.to_usizes("sizes", &sz)?;
            if let Some(&a) = axes.iter().find(|&&a| input[a] == 0) {
                return Err(cx.err(format!("cannot resize dim {a} of size 0 to a given size")));
            }
            // Scales as onnxruntime derives them: out / in in f32.
            let ratio = |a: usize, s: usize| s as f32 / input[a] as f32;
            match policy.as_str() {
                "stretch" => {
                    for (&a, &s) in axes.iter().zip(&sz) {
                        sizes[a] = s;
                        scales[a] = ratio(a, s);
                    }
                }
                "not_larger" | "not_smaller" => {
                    // One scale for all axes, the smallest (largest) ratio; sizes rounded
                    // half up (ONNX Resize-18).
                    let ratios = axes.iter().zip(&sz).map(|(&a, &s)| ratio(a, s));
                    let scale = if policy == "not_larger" {
                        ratios.fold(f32::INFINITY, f32::min)
                    } else {
                        ratios.fold(0.0, f32::max)
                    };
                    for &a in &axes {
                        scales[a] = scale;
                        sizes[a] = (scale * input[a] as f32 + 0.5).floor() as usize;
                    }
                }
                other => {
                    return Err(cx.err(format!(
                    "keep_aspect_ratio_policy '{other}' is not stretch, not_larger or not_smaller"
                )))
                }
            }
        }
    }
    let antialias = cx.opset() >= 18 && cx.bool("antialias", false)?;
    let attrs = ResizeAttrs {
        sizes,
        mode,
        coord,
        nearest,
        scales,
        roi: roi_full,
        cubic_coeff_a: cx.float("cubic_coeff_a", -0.75)?,
        exclude_outside: cx.bool("exclude_outside", false)?,
        extrapolation_value: cx.float("extrapolation_value", 0.0)?,
        antialias,
    };
    emit_main(im, cx, Op::Resize(attrs), &[x])
}

#[cfg(test)]
mod tests {
    use crate::proto::{AttributeProto, TensorProto};
    use crate::testutil::*;
    use kiln_ir::{CoordTransform, NearestMode, Op, ResizeAttrs, ResizeMode};

    fn resize(
        opset: i64,
        dims: &[i64],
        inputs: &[&str],
        inits: Vec<TensorProto>,
        attrs: Vec<AttributeProto>,
    ) -> ResizeAttrs {
        let mut m = ModelBuilder::new(opset).input("x", dims);
        for t in inits {
            m = m.init(t);
        }
        let g = m
            .node(node("Resize", inputs, &["y"], attrs))
            .output("y")
            .import()
            .unwrap();
        match output_op(&g, 0) {
            Op::Resize(a) => {
                assert_eq!(g.value_type(g.outputs()[0]).shape, a.sizes);
                a.clone()
            }
            other => panic!("resize expected, got {other:?}"),
        }
    }

    #[test]
    fn resize_10_is_asymmetric_nearest_rounding_down_when_enlarging_and_up_when_shrinking() {
        let up = resize(
            10,
            &[1, 1, 2, 3],
            &["x", "s"],
            vec![tensor_f32("s", &[4], &[1.0, 1.0, 2.0, 1.5])],
            vec![],
        );
        assert_eq!(up.sizes, vec![1, 1, 4, 4]); // floor(3 · 1.5) = 4
        assert_eq!(
            (up.coord, up.nearest, up.mode),
            (
                CoordTransform::Asymmetric,
                NearestMode::Floor,
                ResizeMode::Nearest
            )
        );
        let down = resize(
            10,
            &[1, 1, 4, 10],
            &["x", "s"],
            vec![tensor_f32("s", &[4], &[1.0, 1.0, 0.5, 0.6])],
            vec![],
        );
        assert_eq!(down.sizes, vec![1, 1, 2, 6]);
        assert_eq!(down.nearest, NearestMode::Ceil);
        assert_eq!(down.scales, vec![1.0, 1.0, 0.5, 0.6]);
    }

    #[test]
    fn resize_sizes_give_scales_and_scales_give_sizes() {
        let by_sizes = resize(
            13,
            &[1, 1, 4, 6],
            &["x", "", "", "sz"],
            vec![tensor_i64("sz", &[4], &[1, 1, 8, 3])],
            vec![
                attr_str("mode", "linear"),
                attr_str("coordinate_transformation_mode", "align_corners"),
            ],
        );
        assert_eq!(by_sizes.sizes, vec![1, 1, 8, 3]);
        assert_eq!(by_sizes.scales, vec![1.0, 1.0, 2.0, 0.5]);
        assert_eq!(
            (by_sizes.mode, by_sizes.coord),
            (ResizeMode::Linear, CoordTransform::AlignCorners)
        );
        // Opset 11 needs the roi input slot even when empty; defaults: half_pixel,
        // round_prefer_floor, cubic a = -0.75.
        let by_scales = resize(
            11,
            &[1, 1, 5, 5],
            &["x", "roi", "s"],
            vec![
                tensor_f32("roi", &[0], &[]),
                tensor_f32("s", &[4], &[1.0, 1.0, 0.5, 1.4]),
            ],
            vec![],
        );
        assert_eq!(by_scales.sizes, vec![1, 1, 2, 7]); // floor(2.5), floor(7.0)
        assert_eq!(
            (by_scales.coord, by_scales.nearest),
            (CoordTransform::HalfPixel, NearestMode::RoundPreferFloor)
        );
        assert_eq!(by_scales.cubic_coeff_a, -0.75);
        assert!(by_scales.roi.is_empty());
    }

    #[test]
    fn resize_18_axes_and_aspect_ratio_policy() {
        // Sizes (3, 4) for axes (3, 2) of [1,1,4,6]: ratios 3/6 = 0.5 and 4/4 = 1; not_larger
        // keeps the smaller, 0.5, for both: sizes round(0.5·4) = 2 and round(0.5·6) = 3.
        let a = resize(
            18,
            &[1, 1, 4, 6],
            &["x", "", "", "sz"],
            vec![tensor_i64("sz", &[2], &[3, 4])],
            vec![
                attr_ints("axes", &[3, 2]),
                attr_str("keep_aspect_ratio_policy", "not_larger"),
            ],
        );
        assert_eq!(a.sizes, vec![1, 1, 2, 3]);
        assert_eq!(a.scales, vec![1.0, 1.0, 0.5, 0.5]);
        // not_smaller keeps 1: sizes 4 and 6.
        let a = resize(
            18,
            &[1, 1, 4, 6],
            &["x", "", "", "sz"],
            vec![tensor_i64("sz", &[2], &[3, 4])],
            vec![
                attr_ints("axes", &[3, 2]),
                attr_str("keep_aspect_ratio_policy", "not_smaller"),
            ],
        );
        assert_eq!(a.sizes, vec![1, 1, 4, 6]);
        // tf_crop_and_resize: the roi for axes (2, 3) expands to every axis.
        let a = resize(
            18,
            &[1, 1, 4, 4],
            &["x", "roi", "s"],
            vec![
                tensor_f32("roi", &[4], &[0.1, 0.2, 0.9, 0.8]),
                tensor_f32("s", &[2], &[0.5, 0.5]),
            ],
            vec![
                attr_ints("axes", &[2, 3]),
                attr_str("coordinate_transformation_mode", "tf_crop_and_resize"),
                attr_float("extrapolation_value", 10.0),
            ],
        );
        assert_eq!(a.roi, vec![0.0, 0.0, 0.1, 0.2, 1.0, 1.0, 0.9, 0.8]);
        assert_eq!(a.sizes, vec![1, 1, 2, 2]);
        assert_eq!(a.extrapolation_value, 10.0);
    }

    #[test]
    fn resize_needs_exactly_one_of_scales_and_sizes() {
        let err = ModelBuilder::new(13)
            .input("x", &[1, 1, 2, 2])
            .node(node("Resize", &["x"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("one of scales and sizes must be given"),
            "{err}"
        );
    }

    #[test]
    fn upsample_scales_move_from_attribute_to_input_at_opset_9() {
        let attr = ModelBuilder::new(7)
            .input("x", &[1, 1, 2, 2])
            .node(node(
                "Upsample",
                &["x"],
                &["y"],
                vec![attr_floats("scales", &[1.0, 1.0, 2.0, 3.0])],
            ))
            .output("y")
            .import()
            .unwrap();
        let input = ModelBuilder::new(9)
            .input("x", &[1, 1, 2, 2])
            .init(tensor_f32("s", &[4], &[1.0, 1.0, 2.0, 3.0]))
            .node(node("Upsample", &["x", "s"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&attr, 0), output_op(&input, 0));
        let Op::Resize(a) = output_op(&attr, 0) else {
            panic!("resize expected")
        };
        assert_eq!(a.sizes, vec![1, 1, 4, 6]);
        assert_eq!(
            (a.coord, a.nearest),
            (CoordTransform::Asymmetric, NearestMode::Floor)
        );
    }
}
