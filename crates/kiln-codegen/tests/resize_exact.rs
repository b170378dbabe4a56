//! The JIT nearest Resize on quantized int8 tensors (what `kiln quantize` leaves between
//! integer ops, e.g. PP-OCR's FPN upsampling) against the reference interpreter
//! (`kiln_interp::eval_op`), bit for bit: u8/i8 with per-tensor quantization, rank 1–4,
//! up- and downsampling, every coordinate transform and nearest mode, and
//! `tf_crop_and_resize` crops whose positions outside the input take the extrapolation
//! value (truncated and saturated to the dtype); plus i32/i64/f16/bool inputs, which the
//! same gather moves.
//!
//! `PROPTEST_CASES` sets the number of random problems (default 1000; each test here runs a
//! quarter).

use kiln_codegen::{JitOptions, ResizeKernel};
use kiln_ir::{
    CoordTransform, DType, NearestMode, Quant, ResizeAttrs, ResizeMode, Tensor, TensorData,
    TensorType,
};
use proptest::prelude::*;

mod common;
use common::{cases_from_env, resize_matches_interpreter, resize_problem};

#[derive(Clone, Debug)]
struct Case {
    shape: Vec<usize>,
    attrs: ResizeAttrs,
    dtype: DType,
    data: Vec<u8>,
}

/// A nearest resize (outputs up to 13 per axis, extrapolation values past the int8 ranges:
/// they saturate) of one of `dtypes`, with random contents.
fn case(dtypes: &'static [DType]) -> impl Strategy<Value = Case> {
    (
        resize_problem(ResizeMode::Nearest, 13, -300.0..300.0),
        0..dtypes.len(),
    )
        .prop_flat_map(move |((shape, attrs), dtype)| {
            let dtype = dtypes[dtype];
            let bytes = dtype.size_bytes() * shape.iter().product::<usize>();
            prop::collection::vec(any::<u8>(), bytes).prop_map(move |data| Case {
                shape: shape.clone(),
                attrs: attrs.clone(),
                dtype,
                data,
            })
        })
}

/// The input tensor of a case: the random bytes as elements of its dtype (bools 0/1).
fn input(case: &Case) -> Tensor {
    let words = |n: usize| case.data.chunks_exact(n);
    let data = match case.dtype {
        DType::U8 => TensorData::U8(case.data.clone()),
        DType::I8 => TensorData::I8(case.data.iter().map(|&b| b as i8).collect()),
        DType::I32 => TensorData::I32(
            words(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::I64 => TensorData::I64(
            words(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        DType::F16 => TensorData::F16(
            words(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        DType::Bool => TensorData::Bool(case.data.iter().map(|&b| b % 2 == 1).collect()),
        DType::F32 => TensorData::F32(
            words(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
    };
    Tensor::new(case.shape.clone(), data).expect("sized to the shape")
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let mut x_ty = TensorType::new(case.dtype, case.shape.clone());
    if matches!(case.dtype, DType::U8 | DType::I8) {
        let zero_point = if case.dtype == DType::U8 { 128 } else { 0 };
        x_ty = x_ty.with_quant(Quant::per_tensor(0.05, zero_point));
    }
    resize_matches_interpreter(&input(case), &x_ty, &case.attrs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 4))]

    #[test]
    fn nearest_resize_int8_jit_matches_interpreter(case in case(&[DType::U8, DType::I8])) {
        check(&case)?;
    }

    #[test]
    fn nearest_resize_other_dtypes_jit_matches_interpreter(
        case in case(&[DType::I32, DType::I64, DType::F16, DType::Bool])
    ) {
        check(&case)?;
    }
}

/// Nearest ×2 upsampling (PP-OCR's FPN) takes the byte-shuffle path for 1-, 2- and 4-byte
/// elements, at row widths below, at and past one 16-byte vector (so both the vector loop
/// and the element tail run), and matches the interpreter bit for bit.
#[test]
fn doubling_upsample_matches_interpreter() {
    for (dtype, size) in [
        (DType::U8, 1),
        (DType::I8, 1),
        (DType::F16, 2),
        (DType::I32, 4),
    ] {
        for width in [1, 3, 8, 16, 37, 40] {
            let shape = vec![1, 2, 3, width];
            let sizes = vec![1, 2, 6, 2 * width];
            let attrs = ResizeAttrs {
                sizes: sizes.clone(),
                mode: ResizeMode::Nearest,
                coord: CoordTransform::Asymmetric,
                nearest: NearestMode::Floor,
                scales: vec![1.0, 1.0, 2.0, 2.0],
                roi: Vec::new(),
                cubic_coeff_a: -0.75,
                exclude_outside: false,
                extrapolation_value: 0.0,
                antialias: false,
            };
            let elems: usize = shape.iter().product();
            let data: Vec<u8> = (0..elems * size).map(|i| (i * 37 + 11) as u8).collect();
            let case = Case {
                shape: shape.clone(),
                attrs: attrs.clone(),
                dtype,
                data,
            };
            let mut x_ty = TensorType::new(dtype, shape);
            if matches!(dtype, DType::U8 | DType::I8) {
                x_ty = x_ty.with_quant(Quant::per_tensor(0.05, 3));
            }
            let mut out_ty = TensorType::new(dtype, sizes);
            out_ty.quant = x_ty.quant.clone();
            let kernel = ResizeKernel::compile(&attrs, &x_ty, &out_ty, &JitOptions::default())
                .expect("a nearest resize compiles");
            assert_eq!(kernel.strategy(), "gather-doubled", "{dtype} width {width}");
            check(&case).unwrap_or_else(|e| panic!("{dtype} width {width}: {e}"));
        }
    }
}

/// Interpolating an integer tensor is rejected (the interpreter needs a dequantize first),
/// and wrong buffers are errors.
#[test]
fn rejects_linear_int8_and_wrong_buffers() {
    let x_ty = TensorType::new(DType::U8, vec![1, 2, 3, 3]).with_quant(Quant::per_tensor(0.1, 3));
    let out_ty = TensorType::new(DType::U8, vec![1, 2, 6, 6]).with_quant(Quant::per_tensor(0.1, 3));
    let mut attrs = ResizeAttrs {
        sizes: vec![1, 2, 6, 6],
        mode: ResizeMode::Linear,
        coord: CoordTransform::Asymmetric,
        nearest: NearestMode::Floor,
        scales: vec![1.0, 1.0, 2.0, 2.0],
        roi: Vec::new(),
        cubic_coeff_a: -0.75,
        exclude_outside: false,
        extrapolation_value: 0.0,
        antialias: false,
    };
    assert!(ResizeKernel::compile(&attrs, &x_ty, &out_ty, &JitOptions::default()).is_err());
    attrs.mode = ResizeMode::Nearest;
    let kernel =
        ResizeKernel::compile(&attrs, &x_ty, &out_ty, &JitOptions::default()).expect("nearest");
    let mut scratch = kernel.new_scratch();
    let (x, mut out) = (vec![0u8; 18], vec![0u8; 72]);
    assert!(kernel.run_into(&x, &mut out, &mut scratch).is_ok());
    assert!(kernel.run_into(&x[..17], &mut out, &mut scratch).is_err());
    assert!(kernel.run_into(&x, &mut out[..71], &mut scratch).is_err());
    // the output type must be the resize's
    let wrong = TensorType::new(DType::U8, vec![1, 2, 6, 5]);
    assert!(ResizeKernel::compile(&attrs, &x_ty, &wrong, &JitOptions::default()).is_err());
}
