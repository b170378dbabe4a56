//! The JIT LRN (`LrnKernel`) against the reference interpreter (`kiln_interp::eval_op`):
//! every element within 1e-5 relative (the sums of squares are bit-exact; the power is
//! `powf` in the interpreter and square roots or `exp(beta·ln d)` in the kernel), for
//! `[N, C, spatial..]` tensors with 1–3 spatial dims of odd extents, window sizes 1–7 (even
//! ones: the window is lopsided), the common betas (0.75, 0.5, 1) and random ones.
//!
//! `PROPTEST_CASES` sets the number of random problems (default 1000; this runs half).

use kiln_codegen::{JitOptions, LrnKernel};
use kiln_ir::{DType, Op, Tensor, TensorType};
use proptest::prelude::*;

mod common;
use common::{cases_from_env, interpret};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 2))]

    #[test]
    fn lrn_jit_matches_interpreter(
        batch in 1usize..=2,
        channels in 1usize..=11,
        spatial in prop::collection::vec(1usize..=7, 1..=3),
        size in 1usize..=7,
        alpha in prop_oneof![Just(1e-4f32), 1e-5f32..2.0],
        beta in prop_oneof![Just(0.75f32), Just(0.5f32), Just(1.0f32), 0.05f32..2.0],
        bias in prop_oneof![Just(1.0f32), Just(2.0f32), 0.1f32..4.0],
        values in prop::collection::vec(-20.0f32..20.0, 2 * 11 * 343),
    ) {
        let mut shape = vec![batch, channels];
        shape.extend(&spatial);
        let n: usize = shape.iter().product();
        let x = Tensor::from_f32(shape.clone(), values[..n].to_vec()).expect("sized");
        let x_ty = TensorType::new(DType::F32, shape);
        let op = Op::Lrn { size, alpha, beta, bias };
        let want = interpret(&op, &[&x], &[&x_ty], &x_ty)?;
        let kernel = LrnKernel::compile(size, alpha, beta, bias, &x_ty, &JitOptions::default())
            .expect("compiles");
        let got = kernel.run(&x).expect("runs");
        for (i, (&g, &w)) in got
            .as_f32()
            .expect("f32")
            .iter()
            .zip(want.as_f32().expect("f32"))
            .enumerate()
        {
            prop_assert!(
                (g - w).abs() <= 1e-5 * w.abs(),
                "element {}: {} vs interpreter {}", i, g, w
            );
        }
    }
}

/// Wrong ranks, sizes, dtypes and buffers are errors.
#[test]
fn rejects_invalid_lrn_and_buffers() {
    let opts = JitOptions::default();
    let flat = TensorType::new(DType::F32, vec![2, 3]);
    assert!(LrnKernel::compile(3, 1e-4, 0.75, 1.0, &flat, &opts).is_err());
    let x_ty = TensorType::new(DType::F32, vec![1, 3, 2]);
    assert!(LrnKernel::compile(0, 1e-4, 0.75, 1.0, &x_ty, &opts).is_err());
    let ints = TensorType::new(DType::I32, vec![1, 3, 2]);
    assert!(LrnKernel::compile(3, 1e-4, 0.75, 1.0, &ints, &opts).is_err());
    let k = LrnKernel::compile(3, 1e-4, 0.75, 1.0, &x_ty, &opts).expect("valid");
    let mut out = [0f32; 6];
    assert!(k.run_into(&[1.0; 6], &mut out).is_ok());
    assert!(k.run_into(&[1.0; 5], &mut out).is_err());
}
