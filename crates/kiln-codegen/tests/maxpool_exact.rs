//! The JIT int8 MaxPool kernel against the reference interpreter (`kiln_interp::eval_op`),
//! bit for bit, over random problems: 1-D/2-D/3-D, kernels 1–3, strides 1–3, dilations
//! 1–2, asymmetric pads (also past the kernel: windows of padding only), `ceil_mode`,
//! channel counts that are not multiples of 16, batch 1–2, u8 and i8.
//!
//! `PROPTEST_CASES` sets the number of random problems (default 1000; this suite runs a
//! quarter).

use kiln_codegen::{JitOptions, MaxPoolKernel};
use kiln_ir::{DType, Op, PoolAttrs, Tensor, TensorData, TensorType};
use proptest::prelude::*;

mod common;
use common::{cases_from_env, interpret, spatial_1d_to_3d};

#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    channels: usize,
    attrs: PoolAttrs,
    input: Vec<usize>,
    signed: bool,
    data: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        spatial_1d_to_3d(),
        1usize..=2,
        1usize..=37,
        any::<[bool; 2]>(),
    )
        .prop_flat_map(|(sp, batch, channels, flags)| {
            let attrs = PoolAttrs {
                kernel: sp.kernel,
                strides: sp.strides,
                pads: sp.pads,
                dilations: sp.dilations,
                ceil_mode: flags[0],
                count_include_pad: false,
                storage_order: 0,
            };
            let input = sp.input;
            let numel = batch * channels * input.iter().product::<usize>();
            prop::collection::vec(any::<u8>(), numel).prop_map(move |data| Case {
                batch,
                channels,
                attrs: attrs.clone(),
                input: input.clone(),
                signed: flags[1],
                data,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 4))]

    #[test]
    fn max_pool_jit_matches_interpreter(case in case()) {
        let mut shape = vec![case.batch, case.channels];
        shape.extend(&case.input);
        let (dtype, data) = if case.signed {
            (DType::I8, TensorData::I8(case.data.iter().map(|&b| b as i8).collect()))
        } else {
            (DType::U8, TensorData::U8(case.data.clone()))
        };
        let x = Tensor::new(shape.clone(), data).expect("shape matches");
        let x_ty = TensorType::new(dtype, shape);
        let kernel = MaxPoolKernel::compile(&case.attrs, &x_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let out_ty = TensorType::new(dtype, kernel.output_shape().to_vec());
        let want = interpret(&Op::MaxPool(case.attrs.clone()), &[&x], &[&x_ty], &out_ty)?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        prop_assert_eq!(&got, &want);
    }
}

/// The row path (1-D/2-D, horizontal stride 1 or 2, no dilation) on rows wide enough for
/// its 16-pixel vectors: output widths below, at and around multiples of 16 (the last
/// vector moved back), 3×3 and 2×2 windows, pads, `ceil_mode`, u8 and i8 — bit-exact with
/// the interpreter; a dilated pool keeps the window path.
#[test]
fn row_path_matches_interpreter_on_wide_rows() {
    for (width, window, stride, pad, ceil_mode) in [
        (111, 3, 2, 0, false),
        (112, 3, 2, 1, false),
        (33, 3, 2, 1, true),
        (31, 2, 2, 0, true),
        (40, 3, 1, 1, false),
        (16, 2, 1, 0, false),
        (17, 3, 1, 0, false),
        (15, 3, 1, 1, false),
    ] {
        for dtype in [DType::U8, DType::I8] {
            let attrs = PoolAttrs {
                kernel: vec![window, window],
                strides: vec![stride, stride],
                pads: vec![pad, pad, pad, 0],
                dilations: vec![1, 1],
                ceil_mode,
                count_include_pad: false,
                storage_order: 0,
            };
            let shape = vec![2, 5, 9, width];
            let numel: usize = shape.iter().product();
            let bytes: Vec<u8> = (0..numel).map(|i| (i * 97 + 13 * (i / 7)) as u8).collect();
            let data = match dtype {
                DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
                _ => TensorData::U8(bytes),
            };
            let x = Tensor::new(shape.clone(), data).expect("shape matches");
            let x_ty = TensorType::new(dtype, shape);
            let kernel = MaxPoolKernel::compile(&attrs, &x_ty, &JitOptions::default())
                .expect("a valid pool");
            let what = format!("{dtype} width {width} k{window} s{stride} p{pad} ceil {ceil_mode}");
            assert_eq!(kernel.path(), "rows", "{what}");
            let out_ty = TensorType::new(dtype, kernel.output_shape().to_vec());
            let want = interpret(&Op::MaxPool(attrs.clone()), &[&x], &[&x_ty], &out_ty)
                .unwrap_or_else(|e| panic!("{what}: interpreter: {e}"));
            let got = kernel.run(&x).expect("runs");
            assert_eq!(got, want, "{what}");
        }
    }
    let dilated = PoolAttrs {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![0; 4],
        dilations: vec![2, 2],
        ceil_mode: false,
        count_include_pad: false,
        storage_order: 0,
    };
    let x_ty = TensorType::new(DType::U8, vec![1, 2, 9, 9]);
    let kernel = MaxPoolKernel::compile(&dilated, &x_ty, &JitOptions::default()).expect("valid");
    assert_eq!(kernel.path(), "window");
}

/// Wrong buffers and non-int8 inputs are errors.
#[test]
fn rejects_wrong_buffers_and_types() {
    let attrs = PoolAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
        storage_order: 0,
    };
    let x_ty = TensorType::new(DType::U8, vec![1, 3, 4, 4]);
    let kernel = MaxPoolKernel::compile(&attrs, &x_ty, &JitOptions::default()).expect("valid");
    assert_eq!(kernel.output_shape(), &[1, 3, 2, 2]);
    let mut scratch = kernel.new_scratch();
    let (x, mut out) = (vec![0u8; 48], vec![0u8; 12]);
    assert!(kernel.run_into(&x, &mut out, &mut scratch).is_ok());
    assert!(kernel.run_into(&x[..47], &mut out, &mut scratch).is_err());
    assert!(kernel.run_into(&x, &mut out[..11], &mut scratch).is_err());
    let f32_ty = TensorType::new(DType::F32, vec![1, 3, 4, 4]);
    assert!(MaxPoolKernel::compile(&attrs, &f32_ty, &JitOptions::default()).is_err());
}
