//! The JIT data-movement kernels (`MoveKernel`: Transpose, Slice, Split, Pad, Gather with
//! constant indices) against the reference interpreter (`kiln_interp::eval_op`), bit for
//! bit: every dtype (f32, f16, i8, u8 — also as per-tensor quantized tensors — i32, i64,
//! bool), ranks 1–5 with odd extents, random permutations, slices with negative steps,
//! negative (cropping) pads, every pad mode, negative and repeated indices.
//!
//! `PROPTEST_CASES` sets the number of random problems (default 1000; each test here runs a
//! fifth).

use kiln_codegen::{JitOptions, MoveKernel};
use kiln_ir::{DType, Op, PadMode, Quant, SliceAxis, Tensor, TensorData, TensorType};
use proptest::prelude::*;

mod common;
use common::cases_from_env;

/// Dtype indices: `DType::ALL`, then one more, a quantized u8 (see `x_type`).
const DTYPE_CHOICES: usize = DType::ALL.len() + 1;

/// A tensor of `dtype` and `shape` from random bytes (bools 0/1; every bit pattern of the
/// other types, NaNs included: they are moved, not computed).
fn tensor(dtype: DType, shape: &[usize], bytes: &[u8]) -> Tensor {
    let n: usize = shape.iter().product();
    let bytes = &bytes[..n * dtype.size_bytes()];
    let data = match dtype {
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b % 2 == 1).collect()),
        _ => kiln_codegen::tensor_data_from_le_bytes(dtype, bytes),
    };
    Tensor::new(shape.to_vec(), data).expect("sized to the shape")
}

/// The input type: the index past `DType::ALL` is a quantized u8 (as ORT's QDQ and
/// QOperator models move them).
fn x_type(dtype_index: usize, shape: &[usize]) -> TensorType {
    match DType::ALL.get(dtype_index) {
        Some(&dtype) => TensorType::new(dtype, shape.to_vec()),
        None => TensorType::new(DType::U8, shape.to_vec()).with_quant(Quant::per_tensor(0.02, 128)),
    }
}

/// The interpreter's outputs of `op` on `x` (and a constant second input), their types
/// from shape inference.
fn interpret(op: &Op, x: &Tensor, x_ty: &TensorType, extra: Option<&Tensor>) -> Vec<Tensor> {
    let mut inputs = vec![x];
    let mut types = vec![x_ty.clone()];
    if let Some(e) = extra {
        inputs.push(e);
        types.push(TensorType::new(e.dtype(), e.shape().to_vec()));
    }
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let outputs = kiln_ir::infer::infer_types(op, &type_refs).expect("valid op");
    kiln_interp::eval_op(op, &inputs, &type_refs, &outputs).expect("the interpreter runs it")
}

fn same(got: &Tensor, want: &Tensor) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape());
    prop_assert_eq!(got.dtype(), want.dtype());
    prop_assert_eq!(got.to_le_bytes(), want.to_le_bytes());
    Ok(())
}

/// A shape of rank 1–5 with extents 1–7 (0 on occasion), a dtype index and input bytes.
fn shaped() -> impl Strategy<Value = (Vec<usize>, usize, Vec<u8>)> {
    (
        prop::collection::vec(prop_oneof![8 => 1usize..=7, 1 => Just(0usize)], 1..=5),
        0..DTYPE_CHOICES,
        prop::collection::vec(any::<u8>(), 8 * 7usize.pow(5)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 5))]

    #[test]
    fn transpose_matches_interpreter(
        (shape, dtype, bytes) in shaped(),
        seed in any::<u64>(),
    ) {
        // a random permutation (Fisher–Yates on the seed's bits)
        let rank = shape.len();
        let mut perm: Vec<usize> = (0..rank).collect();
        let mut s = seed;
        for i in (1..rank).rev() {
            let j = (s % (i as u64 + 1)) as usize;
            s /= i as u64 + 1;
            perm.swap(i, j);
        }
        let x_ty = x_type(dtype, &shape);
        let x = tensor(x_ty.dtype, &shape, &bytes);
        let op = Op::Transpose { perm: perm.clone() };
        let want = interpret(&op, &x, &x_ty, None);
        let out_ty = TensorType::new(x_ty.dtype, want[0].shape().to_vec());
        let kernel = MoveKernel::compile_transpose(&perm, &x_ty, &out_ty, &JitOptions::default())
            .expect("compiles");
        same(&kernel.run(&x).expect("runs"), &want[0])?;
    }

    #[test]
    fn slice_and_split_match_interpreter(
        (shape, dtype, bytes) in shaped(),
        picks in prop::collection::vec((any::<u16>(), any::<u16>(), -3i64..=3), 1..=3),
        split_axis in any::<u16>(),
    ) {
        let rank = shape.len();
        let x_ty = x_type(dtype, &shape);
        let x = tensor(x_ty.dtype, &shape, &bytes);
        // slices in the IR's normal form: start inside the axis, end anywhere from -1
        let mut axes: Vec<SliceAxis> = Vec::new();
        for (a, b, step) in picks {
            let axis = a as usize % rank;
            if axes.iter().any(|s| s.axis == axis) || shape[axis] == 0 {
                continue;
            }
            let dim = shape[axis] as i64;
            let step = if step == 0 { 1 } else { step };
            let start = a as i64 / 8 % dim;
            let end = b as i64 % (dim + 2) - 1;
            axes.push(SliceAxis { axis, start, end, step });
        }
        let op = Op::Slice { axes: axes.clone() };
        let want = interpret(&op, &x, &x_ty, None);
        let out_ty = TensorType::new(x_ty.dtype, want[0].shape().to_vec());
        let kernel = MoveKernel::compile_slice(&axes, &x_ty, &out_ty, &JitOptions::default())
            .expect("compiles");
        same(&kernel.run(&x).expect("runs"), &want[0])?;

        // split along an axis into up to three random parts
        let axis = split_axis as usize % rank;
        let dim = shape[axis];
        let first = split_axis as usize / 8 % (dim + 1);
        let second = (split_axis as usize / 64) % (dim - first + 1);
        let sizes = vec![first, second, dim - first - second];
        let op = Op::Split { axis, sizes: sizes.clone() };
        let want = interpret(&op, &x, &x_ty, None);
        let out_tys: Vec<TensorType> = want
            .iter()
            .map(|t| TensorType::new(x_ty.dtype, t.shape().to_vec()))
            .collect();
        let refs: Vec<&TensorType> = out_tys.iter().collect();
        let kernels = MoveKernel::compile_split(axis, &sizes, &x_ty, &refs, &JitOptions::default())
            .expect("compiles");
        prop_assert_eq!(kernels.len(), want.len());
        for (k, w) in kernels.iter().zip(&want) {
            same(&k.run(&x).expect("runs"), w)?;
        }
    }

    #[test]
    fn pad_matches_interpreter(
        (shape, dtype, bytes) in shaped(),
        raw_pads in prop::collection::vec(-2i64..=4, 10),
        mode in 0usize..4,
        value in prop_oneof![Just(0.0f64), -300.0f64..300.0, Just(f64::NAN), Just(1e10)],
    ) {
        let rank = shape.len();
        let mode = [PadMode::Constant, PadMode::Reflect, PadMode::Edge, PadMode::Wrap][mode];
        let mut pads = vec![0i64; 2 * rank];
        for d in 0..rank {
            // crop at most what the axis has, leaving at least one element for the
            // non-constant modes (the interpreter rejects padding an emptied axis)
            let (mut begin, mut end) = (raw_pads[d], raw_pads[5 + d]);
            let dim = shape[d] as i64;
            let keep = if mode == PadMode::Constant { 0 } else { 1 };
            if dim == 0 && mode != PadMode::Constant {
                begin = begin.min(0);
                end = end.min(0);
            }
            begin = begin.max(-(dim - keep).max(0));
            end = end.max(-(dim - keep + begin.min(0)).max(0));
            pads[d] = begin;
            pads[rank + d] = end;
        }
        let x_ty = x_type(dtype, &shape);
        let x = tensor(x_ty.dtype, &shape, &bytes);
        // integer tensors take integral pad values in their range (as the IR requires)
        let value = match x_ty.dtype.int_range() {
            Some((lo, hi)) if value.is_nan() => (lo.max(0) as f64).min(hi as f64),
            Some((lo, hi)) => value.trunc().clamp(lo as f64, hi as f64),
            None => value,
        };
        let op = Op::Pad { mode, pads: pads.clone(), value };
        let want = interpret(&op, &x, &x_ty, None);
        let out_ty = TensorType::new(x_ty.dtype, want[0].shape().to_vec());
        let kernel =
            MoveKernel::compile_pad(mode, &pads, value, &x_ty, &out_ty, &JitOptions::default())
                .expect("compiles");
        same(&kernel.run(&x).expect("runs"), &want[0])?;
    }

    #[test]
    fn gather_matches_interpreter(
        (shape, dtype, bytes) in shaped(),
        axis in any::<u16>(),
        index_shape in prop::collection::vec(1usize..=3, 0..=2),
        raw in prop::collection::vec(any::<u16>(), 9),
        wide in any::<bool>(),
    ) {
        let rank = shape.len();
        let axis = axis as usize % rank;
        // an empty axis has no index to gather
        let mut shape = shape;
        shape[axis] = shape[axis].max(1);
        let dim = shape[axis] as i64;
        let n: usize = index_shape.iter().product();
        // indices in [-dim, dim): negative ones count from the back
        let values: Vec<i64> = raw[..n].iter().map(|&r| r as i64 % (2 * dim) - dim).collect();
        let indices = if wide {
            Tensor::new(index_shape.clone(), TensorData::I64(values))
        } else {
            Tensor::new(
                index_shape.clone(),
                TensorData::I32(values.iter().map(|&v| v as i32).collect()),
            )
        }
        .expect("sized");
        let x_ty = x_type(dtype, &shape);
        let x = tensor(x_ty.dtype, &shape, &bytes);
        let op = Op::Gather { axis };
        let want = interpret(&op, &x, &x_ty, Some(&indices));
        let out_ty = TensorType::new(x_ty.dtype, want[0].shape().to_vec());
        let kernel =
            MoveKernel::compile_gather(axis, &indices, &x_ty, &out_ty, &JitOptions::default())
                .expect("compiles");
        same(&kernel.run(&x).expect("runs"), &want[0])?;
    }
}

/// What the interpreter rejects is rejected at compile time.
#[test]
fn invalid_ops_are_rejected() {
    let opts = JitOptions::default();
    let x_ty = TensorType::new(DType::F32, vec![2, 3]);
    let out_ty = TensorType::new(DType::F32, vec![3, 2]);
    assert!(MoveKernel::compile_transpose(&[1], &x_ty, &out_ty, &opts).is_err());
    let outside = SliceAxis {
        axis: 1,
        start: 3,
        end: 4,
        step: 1,
    };
    assert!(MoveKernel::compile_slice(&[outside], &x_ty, &out_ty, &opts).is_err());
    let index = Tensor::new(vec![1], TensorData::I64(vec![3])).expect("sized");
    let gathered = TensorType::new(DType::F32, vec![2, 1]);
    assert!(MoveKernel::compile_gather(1, &index, &x_ty, &gathered, &opts).is_err());
    let padded = TensorType::new(DType::F32, vec![2, 1]);
    assert!(MoveKernel::compile_pad(
        PadMode::Reflect,
        &[0, -1, 0, -1],
        0.0,
        &x_ty,
        &padded,
        &opts
    )
    .is_ok());
    let emptied = TensorType::new(DType::F32, vec![2, 1]);
    assert!(
        MoveKernel::compile_pad(PadMode::Edge, &[0, -3, 0, 1], 0.0, &x_ty, &emptied, &opts)
            .is_err()
    );
}
