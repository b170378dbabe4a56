//! Strategies shared by the kernel suites (each suite includes this module with
//! `mod common;`): the case count from `PROPTEST_CASES`, window geometry for convs and
//! pools, Resize problems, and the interpreter's result to compare with.

// Each suite uses a part of this module; the rest is dead code in that suite's build.
#![allow(dead_code)]

use kiln_codegen::{JitOptions, ResizeKernel};
use kiln_ir::{CoordTransform, NearestMode, Op, ResizeAttrs, ResizeMode, Tensor, TensorType};
use proptest::prelude::*;
use std::ops::Range;

/// `PROPTEST_CASES` when set, else `default`.
pub fn cases_from_env(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Per spatial dim attributes and input extent of a conv or pool window.
#[derive(Clone, Debug)]
pub struct Spatial {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begins, then ends.
    pub pads: Vec<usize>,
    pub input: Vec<usize>,
}

impl Spatial {
    /// The floor-mode output extents: `(in + pads − span) / stride + 1`.
    pub fn output(&self) -> Vec<usize> {
        let rank = self.kernel.len();
        (0..rank)
            .map(|d| {
                let span = self.dilations[d] * (self.kernel[d] - 1) + 1;
                (self.input[d] + self.pads[d] + self.pads[rank + d] - span) / self.strides[d] + 1
            })
            .collect()
    }
}

/// `rank` spatial dims: kernels 1–3, strides 1–3, dilations 1–2, pads 0–3 on each side
/// (also past the kernel: outputs that see only padding), inputs large enough that the
/// padded extent covers the kernel.
pub fn spatial(rank: usize) -> impl Strategy<Value = Spatial> {
    let dim = (
        1usize..=3,
        1usize..=3,
        1usize..=2,
        0usize..=3,
        0usize..=3,
        0usize..=6,
    )
        .prop_map(|(k, s, d, pb, pe, extra)| {
            let span = d * (k - 1) + 1;
            let input = span.saturating_sub(pb + pe).max(1) + extra;
            (k, s, d, pb, pe, input)
        });
    prop::collection::vec(dim, rank).prop_map(|dims| {
        let mut pads: Vec<usize> = dims.iter().map(|d| d.3).collect();
        pads.extend(dims.iter().map(|d| d.4));
        Spatial {
            kernel: dims.iter().map(|d| d.0).collect(),
            strides: dims.iter().map(|d| d.1).collect(),
            dilations: dims.iter().map(|d| d.2).collect(),
            pads,
            input: dims.iter().map(|d| d.5).collect(),
        }
    })
}

/// [`spatial`] of rank 1 to 3.
pub fn spatial_1d_to_3d() -> impl Strategy<Value = Spatial> {
    (1usize..=3).prop_flat_map(spatial)
}

pub fn coord_transform() -> impl Strategy<Value = CoordTransform> {
    prop_oneof![
        Just(CoordTransform::HalfPixel),
        Just(CoordTransform::HalfPixelSymmetric),
        Just(CoordTransform::PytorchHalfPixel),
        Just(CoordTransform::AlignCorners),
        Just(CoordTransform::Asymmetric),
        Just(CoordTransform::TfCropAndResize),
    ]
}

pub fn nearest_mode() -> impl Strategy<Value = NearestMode> {
    prop_oneof![
        Just(NearestMode::RoundPreferFloor),
        Just(NearestMode::RoundPreferCeil),
        Just(NearestMode::Floor),
        Just(NearestMode::Ceil),
    ]
}

/// A Resize in `mode` of a random shape (rank 1–4, extents 1–6): per axis the output extent
/// (1 to `max_out`, or unchanged), the scale (`out / in` as the importer derives it, or a
/// free one: the IR keeps them apart), a crop box for `tf_crop_and_resize` (partly outside
/// the input), any coordinate transform and nearest mode, antialiasing and
/// `exclude_outside` for the interpolating modes, an extrapolation value from
/// `extrapolation`.
pub fn resize_problem(
    mode: ResizeMode,
    max_out: usize,
    extrapolation: Range<f32>,
) -> impl Strategy<Value = (Vec<usize>, ResizeAttrs)> {
    let axis = (
        1usize..=6,
        0..=max_out,
        0usize..=3,
        -0.3f32..0.6,
        0.4f32..1.3,
    );
    (
        prop::collection::vec(axis, 1..=4),
        coord_transform(),
        nearest_mode(),
        any::<[bool; 2]>(),
        prop_oneof![Just(-0.75f32), Just(-0.5f32)],
        extrapolation,
    )
        .prop_map(
            move |(axes, coord, nearest, [antialias, exclude_outside], a, extrapolation)| {
                let shape: Vec<usize> = axes.iter().map(|a| a.0).collect();
                let sizes: Vec<usize> = axes
                    .iter()
                    .map(|&(i, o, ..)| if o == 0 { i } else { o })
                    .collect();
                let scales = axes
                    .iter()
                    .zip(&sizes)
                    .map(|(&(i, _, pick, ..), &o)| match pick {
                        0 => 0.6,
                        1 => 2.5,
                        _ => o as f32 / i as f32,
                    })
                    .collect();
                let mut roi: Vec<f32> = axes.iter().map(|a| a.3).collect();
                roi.extend(axes.iter().map(|a| a.4));
                let interpolating = mode != ResizeMode::Nearest;
                let attrs = ResizeAttrs {
                    sizes,
                    mode,
                    coord,
                    nearest,
                    scales,
                    roi: if coord == CoordTransform::TfCropAndResize {
                        roi
                    } else {
                        Vec::new()
                    },
                    cubic_coeff_a: a,
                    exclude_outside: exclude_outside && interpolating,
                    extrapolation_value: extrapolation,
                    antialias: antialias && interpolating,
                };
                (shape, attrs)
            },
        )
}

/// The interpreter's result of `op` on `inputs` (of `types`) with one output of type
/// `out`: the reference every suite compares with.
pub fn interpret(
    op: &Op,
    inputs: &[&Tensor],
    types: &[&TensorType],
    out: &TensorType,
) -> Result<Tensor, TestCaseError> {
    let mut outputs = kiln_interp::eval_op(op, inputs, types, std::slice::from_ref(out))
        .map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
    outputs
        .pop()
        .ok_or_else(|| TestCaseError::fail("the interpreter gave no output"))
}

/// A Resize kernel on `x` (of type `x_ty`) equals the interpreter bit for bit.
pub fn resize_matches_interpreter(
    x: &Tensor,
    x_ty: &TensorType,
    attrs: &ResizeAttrs,
) -> Result<(), TestCaseError> {
    let mut out_ty = TensorType::new(x_ty.dtype, attrs.sizes.clone());
    out_ty.quant = x_ty.quant.clone();
    let want = interpret(&Op::Resize(attrs.clone()), &[x], &[x_ty], &out_ty)?;
    let kernel = ResizeKernel::compile(attrs, x_ty, &out_ty, &JitOptions::default())
        .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
    let got = kernel
        .run(x)
        .map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
    prop_assert!(got.bitwise_eq(&want), "got {:?}, want {:?}", got, want);
    Ok(())
}
