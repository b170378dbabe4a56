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
