//! The JIT Sum (`SumKernel`), ReduceMean (`ReduceMeanKernel`) and Cast (`CastKernel`)
//! against the reference interpreter (`kiln_interp::eval_op`), bit for bit: Sum of 1–4
//! inputs broadcast to a rank 0–4 shape, ReduceMean over every subset of axes with and
//! without keepdims, and Cast between every pair of f32, i8, u8, i32, i64 and bool with
//! the awkward floats (NaN, infinities, ±0, out of every integer range, halves) and
//! integers of full range; DynamicQuantize (`DynamicQuantizeKernel`: y, scale and zero
//! point) of ranges that straddle 0 or not, with NaNs and all-zero tensors; MatMulInteger
//! (`MatMulIntegerKernel`) of u8/i8 with and without zero points (scalar, per row / per
//! column), batched and 1-D `a`.
//!
//! `PROPTEST_CASES` sets the number of random problems (default 1000; each suite runs a
//! third).

use kiln_codegen::{
    CastKernel, DynamicQuantizeKernel, JitOptions, MatMulIntegerKernel, ReduceMeanKernel, SumKernel,
};
use kiln_ir::{DType, Op, Tensor, TensorData, TensorType};
use proptest::prelude::*;

mod common;
use common::{cases_from_env, interpret};

/// Bytes equal (f32 results compared by bit pattern).
fn assert_same(got: &Tensor, want: &Tensor) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape());
    prop_assert_eq!(got.dtype(), want.dtype());
    let (g, w) = (got.to_le_bytes(), want.to_le_bytes());
    if g != w {
        return Err(TestCaseError::fail(format!(
            "kernel {:?}\n  vs interpreter {:?}",
            got.data(),
            want.data()
        )));
    }
    Ok(())
}

/// The IR's inferred output type of `op`.
fn output_type(op: &Op, inputs: &[&TensorType]) -> TensorType {
    kiln_ir::infer::infer_types(op, inputs)
        .expect("valid problem")
        .remove(0)
}

/// A shape that broadcasts to `out`: a suffix of its dims, each kept or set to 1.
fn broadcast_operand(out: Vec<usize>) -> impl Strategy<Value = Vec<usize>> {
    let rank = out.len();
    (0..=rank, prop::collection::vec(any::<bool>(), rank)).prop_map(move |(len, keep)| {
        (rank - len..rank)
            .map(|d| if keep[d] { out[d] } else { 1 })
            .collect()
    })
}

fn sum_problem() -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(1usize..=5, 0..=4)
        .prop_flat_map(|out| prop::collection::vec(broadcast_operand(out), 1..=4))
}

fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, bool)> {
    prop::collection::vec(1usize..=7, 0..=4).prop_flat_map(|shape| {
        let rank = shape.len();
        (
            Just(shape),
            prop::collection::vec(any::<bool>(), rank),
            any::<bool>(),
        )
            .prop_map(|(shape, mask, keepdims)| {
                // the importer resolves ONNX's "no axes: every axis" to the list (IR
                // inference reads an empty list as no reduction, the interpreter as all)
                let mut axes: Vec<usize> = (0..mask.len()).filter(|&d| mask[d]).collect();
                if axes.is_empty() {
                    axes = (0..mask.len()).collect();
                }
                (shape, axes, keepdims)
            })
    })
}

fn awkward_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        -300.0f32..300.0,
        any::<f32>(),
        prop::sample::select(vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.7,
            127.5,
            128.0,
            255.0,
            256.0,
            300.0,
            -129.0,
            2147483520.0, // the largest f32 below 2^31
            2147483648.0, // 2^31: out of the i32 range
            -2147483648.0,
            -2147483904.0,
            9.223372e18,
            -9.223372e18,
            f32::MAX,
            f32::MIN_POSITIVE,
        ]),
    ]
}

fn values(dtype: DType, n: usize) -> BoxedStrategy<TensorData> {
    match dtype {
        DType::F32 => prop::collection::vec(awkward_f32(), n)
            .prop_map(TensorData::F32)
            .boxed(),
        DType::I8 => prop::collection::vec(any::<i8>(), n)
            .prop_map(TensorData::I8)
            .boxed(),
        DType::U8 => prop::collection::vec(any::<u8>(), n)
            .prop_map(TensorData::U8)
            .boxed(),
        DType::I32 => prop::collection::vec(
            prop_oneof![any::<i32>(), -300i32..300, Just(i32::MIN), Just(i32::MAX)],
            n,
        )
        .prop_map(TensorData::I32)
        .boxed(),
        DType::I64 => prop::collection::vec(
            prop_oneof![any::<i64>(), -300i64..300, Just(i64::MIN), Just(i64::MAX)],
            n,
        )
        .prop_map(TensorData::I64)
        .boxed(),
        _ => prop::collection::vec(any::<bool>(), n)
            .prop_map(TensorData::Bool)
            .boxed(),
    }
}

const CAST_DTYPES: [DType; 6] = [
    DType::F32,
    DType::I8,
    DType::U8,
    DType::I32,
    DType::I64,
    DType::Bool,
];

fn cast_problem() -> impl Strategy<Value = (Tensor, DType)> {
    (
        prop::sample::select(CAST_DTYPES.to_vec()),
        prop::sample::select(CAST_DTYPES.to_vec()),
        prop::collection::vec(1usize..=5, 0..=3),
    )
        .prop_flat_map(|(from, to, shape)| {
            let n = shape.iter().product();
            (values(from, n), Just(shape), Just(to))
        })
        .prop_map(|(data, shape, to)| (Tensor::new(shape, data).expect("sized"), to))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 3))]

    #[test]
    fn sum_jit_matches_interpreter(
        shapes in sum_problem(),
        pool in prop::collection::vec(-100.0f32..100.0, 4 * 625),
    ) {
        let inputs: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let n: usize = s.iter().product();
                Tensor::from_f32(s.clone(), pool[625 * k..625 * k + n].to_vec()).expect("sized")
            })
            .collect();
        let tys: Vec<TensorType> = shapes.iter().map(|s| TensorType::f32(s.clone())).collect();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let ty_refs: Vec<&TensorType> = tys.iter().collect();
        let out_ty = output_type(&Op::Sum, &ty_refs);
        let want = interpret(&Op::Sum, &refs, &ty_refs, &out_ty)?;
        let kernel = SumKernel::compile(&ty_refs, &out_ty, &JitOptions::default())
            .expect("compiles");
        assert_same(&kernel.run(&refs).expect("runs"), &want)?;
    }

    #[test]
    fn reduce_mean_jit_matches_interpreter(
        (shape, axes, keepdims) in shape_and_axes(),
        pool in prop::collection::vec(-100.0f32..100.0, 7 * 7 * 7 * 7),
    ) {
        let n: usize = shape.iter().product();
        let x = Tensor::from_f32(shape.clone(), pool[..n].to_vec()).expect("sized");
        let x_ty = TensorType::f32(shape);
        let op = Op::ReduceMean { axes: axes.clone(), keepdims };
        let out_ty = output_type(&op, &[&x_ty]);
        let want = interpret(&op, &[&x], &[&x_ty], &out_ty)?;
        let kernel = ReduceMeanKernel::compile(&axes, keepdims, &x_ty, &out_ty, &JitOptions::default())
            .expect("compiles");
        assert_same(&kernel.run(&x).expect("runs"), &want)?;
    }

    #[test]
    fn cast_jit_matches_interpreter((x, to) in cast_problem()) {
        let x_ty = TensorType::new(x.dtype(), x.shape().to_vec());
        let out_ty = TensorType::new(to, x.shape().to_vec());
        let want = interpret(&Op::Cast { to }, &[&x], &[&x_ty], &out_ty)?;
        let kernel = CastKernel::compile(&x_ty, &out_ty, &JitOptions::default()).expect("compiles");
        assert_same(&kernel.run(&x).expect("runs"), &want)?;
    }
}

fn dynamic_values() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -50.0f32..50.0,
        2 => 0.0f32..3.0,
        1 => Just(0.0f32),
        1 => Just(f32::NAN),
        1 => -1e-3f32..1e-3,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 3))]

    #[test]
    fn dynamic_quantize_jit_matches_interpreter(
        shape in prop::collection::vec(1usize..=6, 0..=3),
        pool in prop::collection::vec(dynamic_values(), 216),
        all_zero in prop::bool::weighted(0.05),
        positive in prop::bool::weighted(0.2),
    ) {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = pool[..n]
            .iter()
            .map(|&v| if all_zero { 0.0 } else if positive { v.abs() } else { v })
            .collect();
        let x = Tensor::from_f32(shape.clone(), values).expect("sized");
        let x_ty = TensorType::f32(shape);
        let op = Op::DynamicQuantize;
        let out_tys = kiln_ir::infer::infer_types(&op, &[&x_ty]).expect("f32 input");
        let want = kiln_interp::eval_op(&op, &[&x], &[&x_ty], &out_tys)
            .map_err(|e| TestCaseError::fail(format!("interpreter: {e}")))?;
        let kernel = DynamicQuantizeKernel::compile(&x_ty, &JitOptions::default()).expect("compiles");
        let got = kernel.run(&x).expect("runs");
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_same(g, w)?;
        }
    }
}

fn int8(dtype: DType, values: &[i32]) -> TensorData {
    match dtype {
        DType::U8 => TensorData::U8(values.iter().map(|&v| v as u8).collect()),
        _ => TensorData::I8(values.iter().map(|&v| v as i8).collect()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 3))]

    #[test]
    fn matmul_integer_jit_matches_interpreter(
        a_lead in prop::collection::vec(1usize..=3, 0..=2),
        k in 0usize..=9,
        n in 1usize..=11,
        a_signed in any::<bool>(),
        b_signed in any::<bool>(),
        a_zp_kind in 0usize..3,
        b_zp_kind in 0usize..3,
        pool in prop::collection::vec(any::<u8>(), 9 * 9 * 11 + 64),
    ) {
        let (a_dtype, b_dtype) = (
            if a_signed { DType::I8 } else { DType::U8 },
            if b_signed { DType::I8 } else { DType::U8 },
        );
        let mut a_shape = a_lead.clone();
        a_shape.push(k);
        let m = if a_shape.len() >= 2 { a_shape[a_shape.len() - 2] } else { 1 };
        let a_len: usize = a_shape.iter().product();
        let bytes = |from: usize, len: usize| -> Vec<i32> {
            pool[from..from + len].iter().map(|&v| v as i32).collect()
        };
        let a = Tensor::new(a_shape.clone(), int8(a_dtype, &bytes(0, a_len))).expect("sized");
        let b = Tensor::new(vec![k, n], int8(b_dtype, &bytes(a_len, k * n))).expect("sized");
        let zp = |dtype: DType, kind: usize, len: usize, from: usize| match kind {
            0 => None,
            1 => Some(Tensor::new(vec![], int8(dtype, &bytes(from, 1))).expect("sized")),
            _ => Some(Tensor::new(vec![len], int8(dtype, &bytes(from, len))).expect("sized")),
        };
        let a_zp = zp(a_dtype, a_zp_kind, m, 0);
        let mut b_zp = zp(b_dtype, b_zp_kind, n, 7);
        // the interpreter needs an a zero point before b's: give a's as 0 then
        let a_zp_for_interp = match (&a_zp, &b_zp) {
            (None, Some(_)) => Some(Tensor::new(vec![], int8(a_dtype, &[0])).expect("sized")),
            _ => a_zp.clone(),
        };
        let mut inputs: Vec<&Tensor> = vec![&a, &b];
        inputs.extend(a_zp_for_interp.as_ref());
        inputs.extend(b_zp.as_ref());
        let tys: Vec<TensorType> = inputs
            .iter()
            .map(|t| TensorType::new(t.dtype(), t.shape().to_vec()))
            .collect();
        let ty_refs: Vec<&TensorType> = tys.iter().collect();
        // from a and b only: IR inference wants a per-row zero point shaped like a with
        // k → 1, the interpreter (and the kernel) 1-D [m]
        let out_ty = output_type(&Op::MatMulInteger, &ty_refs[..2]);
        let want = interpret(&Op::MatMulInteger, &inputs, &ty_refs, &out_ty)?;
        let a_zp_ty = a_zp_for_interp.as_ref().map(|t| TensorType::new(t.dtype(), t.shape().to_vec()));
        let kernel = MatMulIntegerKernel::compile(
            &tys[0],
            a_zp_ty.as_ref(),
            &b,
            b_zp.take().as_ref(),
            &out_ty,
            &JitOptions::default(),
        )
        .expect("compiles");
        assert_same(&kernel.run(&a, a_zp_for_interp.as_ref()).expect("runs"), &want)?;
    }
}

/// Bad shapes, dtypes and buffers are errors.
#[test]
fn rejects_invalid_reductions_casts_and_buffers() {
    let opts = JitOptions::default();
    let a = TensorType::f32(vec![2, 3]);
    let b = TensorType::f32(vec![4, 3]);
    assert!(SumKernel::compile(&[], &a, &opts).is_err());
    assert!(SumKernel::compile(&[&a, &b], &a, &opts).is_err());
    assert!(SumKernel::compile(&[&a, &a], &b, &opts).is_err());
    let ints = TensorType::new(DType::I32, vec![2, 3]);
    assert!(SumKernel::compile(&[&ints, &ints], &ints, &opts).is_err());
    let sum = SumKernel::compile(&[&a, &a, &a], &a, &opts).expect("valid");
    let mut scratch = sum.new_scratch();
    let mut out = [0f32; 6];
    let ones = [1f32; 6];
    sum.run_into(&[&ones, &ones, &ones], &mut out, &mut scratch)
        .expect("sized");
    assert_eq!(out, [3.0; 6]);
    assert!(sum
        .run_into(&[&ones, &ones], &mut out, &mut scratch)
        .is_err());

    let mean_ty = TensorType::f32(vec![2, 1]);
    assert!(ReduceMeanKernel::compile(&[2], true, &a, &mean_ty, &opts).is_err());
    assert!(ReduceMeanKernel::compile(&[1], false, &a, &mean_ty, &opts).is_err());
    let mean = ReduceMeanKernel::compile(&[1], true, &a, &mean_ty, &opts).expect("valid");
    let mut out = [0f32; 2];
    assert!(mean.run_into(&[1.0; 5], &mut out).is_err());

    let half = TensorType::new(DType::F16, vec![2, 3]);
    assert!(CastKernel::compile(&a, &half, &opts).is_err());
    assert!(CastKernel::compile(&a, &TensorType::new(DType::I8, vec![6]), &opts).is_err());
    assert!(DynamicQuantizeKernel::compile(&ints, &opts).is_err());
    let dq = DynamicQuantizeKernel::compile(&a, &opts).expect("valid");
    assert!(dq.run_into(&[0.0; 6], &mut [0u8; 5]).is_err());
    let cast = CastKernel::compile(&a, &ints, &opts).expect("valid");
    assert!(cast.run_into(&[0u8; 24], &mut [0u8; 20]).is_err());
}
