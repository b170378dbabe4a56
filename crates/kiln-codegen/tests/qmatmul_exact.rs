//! The JIT QMatMul kernel against the reference interpreter (`kiln_interp::eval_op`), bit
//! for bit, over random problems: odd `M`, `K`, `N` (not multiples of the vector width),
//! 1-D operands, broadcast batch dims, u8/i8 operands and outputs, per-tensor and per-column
//! `b`, non-zero zero points, constant or run-time `b`, random tiles, both inner products.
//!
//! `PROPTEST_CASES` sets the number of random problems (default 1000; this suite runs half).

use kiln_codegen::{
    InnerProduct, Int8, Jit, JitOptions, QMatMulKernel, QMatMulNode, QMatMulTuning,
};
use kiln_ir::{DType, Op, Quant, Tensor, TensorData, TensorType};
use proptest::prelude::*;

mod common;
use common::cases_from_env;

/// SplitMix64: tensor contents come from one seed, so proptest shrinks shapes while the data
/// stays reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn float(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

#[derive(Clone, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    /// `a` is 1-D `[K]` (else `a_batch ++ [M, K]`); likewise `b` `[K]`
    a_vector: bool,
    b_vector: bool,
    a_batch: Vec<usize>,
    b_batch: Vec<usize>,
    a_signed: bool,
    b_signed: bool,
    out_signed: bool,
    per_column: bool,
    /// i8 `b` with zero point 0: `vpdpbusd` on VNNI hosts
    symmetric_b: bool,
    constant_b: bool,
    tie_scales: bool,
    seed: u64,
}

fn batch_dims() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![Just(1usize), 2usize..=3], 0..=2)
}

/// Batch dims of `a` and `b` that broadcast: one shape, each side dropping leading dims
/// and setting some to 1.
fn batches() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (batch_dims(), any::<[bool; 4]>(), 0usize..=2, 0usize..=2).prop_map(
        |(batch, ones, a_drop, b_drop)| {
            let side = |drop: usize, ones: &[bool]| -> Vec<usize> {
                batch
                    .iter()
                    .enumerate()
                    .skip(drop.min(batch.len()))
                    .map(|(i, &d)| if ones[i] { 1 } else { d })
                    .collect()
            };
            (side(a_drop, &ones[..2]), side(b_drop, &ones[2..]))
        },
    )
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=9, 0usize..=37, 1usize..=21),
        batches(),
        any::<[bool; 10]>(),
        any::<u64>(),
    )
        .prop_map(|((m, k, n), (a_batch, b_batch), f, seed)| Case {
            m,
            k,
            n,
            a_vector: f[0] && f[1],
            b_vector: f[2] && f[3],
            a_batch,
            b_batch,
            a_signed: f[4],
            b_signed: f[5] || f[8],
            out_signed: f[6],
            per_column: f[7],
            symmetric_b: f[8],
            constant_b: f[9],
            tie_scales: f[1] && !f[0],
            seed,
        })
}

fn int8_tensor(shape: Vec<usize>, signed: bool, rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let data = if signed {
        TensorData::I8((0..n).map(|_| rng.int(-128, 127) as i8).collect())
    } else {
        TensorData::U8((0..n).map(|_| rng.int(0, 255) as u8).collect())
    };
    Tensor::new(shape, data).expect("shape matches data")
}

fn dtype(signed: bool) -> DType {
    if signed {
        DType::I8
    } else {
        DType::U8
    }
}

/// numpy broadcast of the batch dims (the strategy only makes compatible ones).
fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| (i + s.len()).checked_sub(rank).map_or(1, |j| s[j]);
    (0..rank).map(|i| dim(a, i).max(dim(b, i))).collect()
}

/// Compile and run the case's kernel and the interpreter; `Err` describes a mismatch.
fn check(case: &Case, tuning: &QMatMulTuning) -> Result<InnerProduct, String> {
    let mut rng = Rng(case.seed);
    let a_shape: Vec<usize> = if case.a_vector {
        vec![case.k]
    } else {
        case.a_batch
            .iter()
            .copied()
            .chain([case.m, case.k])
            .collect()
    };
    let b_shape: Vec<usize> = if case.b_vector {
        vec![case.k]
    } else {
        case.b_batch
            .iter()
            .copied()
            .chain([case.k, case.n])
            .collect()
    };
    let n = if case.b_vector { 1 } else { case.n };
    let a = int8_tensor(a_shape.clone(), case.a_signed, &mut rng);
    let b = int8_tensor(b_shape.clone(), case.b_signed, &mut rng);
    let scale = |rng: &mut Rng, lo: f32, hi: f32| {
        if case.tie_scales {
            2f32.powi(rng.int(-9, -1) as i32)
        } else {
            rng.float(lo, hi)
        }
    };
    let range = |signed: bool| if signed { (-128, 127) } else { (0, 255) };
    let (alo, ahi) = range(case.a_signed);
    let a_ty = TensorType::new(dtype(case.a_signed), a_shape).with_quant(Quant::per_tensor(
        scale(&mut rng, 0.002, 0.05),
        rng.int(alo, ahi) as i32,
    ));
    let b_zp = |rng: &mut Rng| -> i32 {
        if case.symmetric_b {
            0
        } else {
            let (lo, hi) = range(case.b_signed);
            rng.int(lo, hi) as i32
        }
    };
    let b_quant = if case.per_column {
        Quant::PerAxis {
            axis: b_shape.len() - 1,
            scales: (0..n).map(|_| scale(&mut rng, 0.001, 0.02)).collect(),
            zero_points: (0..n).map(|_| b_zp(&mut rng)).collect(),
        }
    } else {
        Quant::per_tensor(scale(&mut rng, 0.001, 0.02), b_zp(&mut rng))
    };
    let b_ty = TensorType::new(dtype(case.b_signed), b_shape).with_quant(b_quant);
    // a 1-D operand has no batch dims
    let mut out_shape = match (case.a_vector, case.b_vector) {
        (true, true) => Vec::new(),
        (true, false) => case.b_batch.clone(),
        (false, true) => case.a_batch.clone(),
        (false, false) => broadcast(&case.a_batch, &case.b_batch),
    };
    if !case.a_vector {
        out_shape.push(case.m);
    }
    if !case.b_vector {
        out_shape.push(case.n);
    }
    let (ylo, yhi) = range(case.out_signed);
    let out_ty = TensorType::new(dtype(case.out_signed), out_shape).with_quant(Quant::per_tensor(
        scale(&mut rng, 0.005, 0.2),
        rng.int(ylo, yhi) as i32,
    ));
    let want = kiln_interp::eval_op(
        &Op::QMatMul,
        &[&a, &b],
        &[&a_ty, &b_ty],
        std::slice::from_ref(&out_ty),
    )
    .map_err(|e| format!("interpreter rejected the case: {e}"))?;
    let node = QMatMulNode {
        a_ty: &a_ty,
        b_ty: &b_ty,
        b: case.constant_b.then_some(&b),
        out_ty: &out_ty,
    };
    let kernel = QMatMulKernel::compile(&node, &JitOptions::default(), tuning)
        .map_err(|e| format!("compile: {e}"))?;
    let got = kernel
        .run(&a, (!case.constant_b).then_some(&b))
        .map_err(|e| format!("run: {e}"))?;
    if got != want[0] {
        return Err(format!(
            "outputs differ (tile {:?}, {:?}):\njit    {:?}\ninterp {:?}",
            kernel.tile(),
            kernel.inner_product(),
            got.data(),
            want[0].data()
        ));
    }
    // split over 2 and 3 threads (fewer where there are fewer column tiles): the same bits
    for threads in [2, 3] {
        let b_run = (!case.constant_b).then_some(&b);
        if run_threaded(&kernel, &a, b_run, &got, threads)? != got {
            return Err(format!("{threads} threads give another result than 1"));
        }
    }
    Ok(kernel.inner_product())
}

/// The kernel's `run_*_threads` entry on `a` (and a run-time `b`), into a tensor shaped and
/// typed like `like`.
fn run_threaded(
    kernel: &QMatMulKernel,
    a: &Tensor,
    b: Option<&Tensor>,
    like: &Tensor,
    threads: usize,
) -> Result<Tensor, String> {
    fn go<A: Int8, Y: Int8 + Default>(
        kernel: &QMatMulKernel,
        a: &[A],
        b: Option<&Tensor>,
        len: usize,
        threads: usize,
    ) -> Result<Vec<Y>, String> {
        let mut out = vec![Y::default(); len];
        let scratch = &mut kernel.new_scratch();
        let result = match b.map(Tensor::data) {
            None => kernel.run_into_threads(a, &mut out, scratch, threads),
            Some(TensorData::U8(b)) => {
                kernel.run_with_b_into_threads(a, b, &mut out, scratch, threads)
            }
            Some(TensorData::I8(b)) => {
                kernel.run_with_b_into_threads(a, b, &mut out, scratch, threads)
            }
            Some(other) => return Err(format!("b of {}", other.dtype())),
        };
        result.map_err(|e| format!("threaded run: {e}"))?;
        Ok(out)
    }
    let len = like.numel();
    let data = match (a.data(), like.data()) {
        (TensorData::U8(a), TensorData::U8(_)) => TensorData::U8(go(kernel, a, b, len, threads)?),
        (TensorData::U8(a), TensorData::I8(_)) => TensorData::I8(go(kernel, a, b, len, threads)?),
        (TensorData::I8(a), TensorData::U8(_)) => TensorData::U8(go(kernel, a, b, len, threads)?),
        (TensorData::I8(a), TensorData::I8(_)) => TensorData::I8(go(kernel, a, b, len, threads)?),
        _ => return Err("int8 a and output expected".into()),
    };
    Tensor::new(like.shape().to_vec(), data).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 2))]

    #[test]
    fn qmatmul_jit_matches_interpreter(
        case in case(),
        rows in 1usize..=6,
        col_vectors in 1usize..=3,
    ) {
        let default = check(&case, &QMatMulTuning::default()).map_err(TestCaseError::fail)?;
        if case.symmetric_b && case.b_signed {
            let host = Jit::host(&JitOptions::default()).expect("host is supported");
            // vpdpbusd on x86 VNNI, sdot/usdot on AArch64 with dotprod/i8mm, else pmaddwd
            let a_dtype = if case.a_signed { DType::I8 } else { DType::U8 };
            let want = InnerProduct::select(host.features(), a_dtype);
            prop_assert_eq!(default, want);
        }
        for allow_vnni in [false, true] {
            let tuning = QMatMulTuning { rows, col_vectors, allow_vnni };
            prop_assert!(check(&case, &tuning).is_ok(), "{:?}", check(&case, &tuning));
        }
    }
}

/// Wrong buffers and the wrong entry point are errors, not panics or silent reads.
#[test]
fn rejects_wrong_buffers() {
    let a_ty = TensorType::new(DType::U8, vec![3, 5]).with_quant(Quant::per_tensor(0.1, 7));
    let b_ty = TensorType::new(DType::I8, vec![5, 2]).with_quant(Quant::per_tensor(0.2, 0));
    let y_ty = TensorType::new(DType::U8, vec![3, 2]).with_quant(Quant::per_tensor(0.3, 1));
    let b = Tensor::new(vec![5, 2], TensorData::I8(vec![1; 10])).expect("shape matches");
    let node = QMatMulNode {
        a_ty: &a_ty,
        b_ty: &b_ty,
        b: Some(&b),
        out_ty: &y_ty,
    };
    let kernel = QMatMulKernel::compile(&node, &JitOptions::default(), &QMatMulTuning::default())
        .expect("valid node");
    let mut scratch = kernel.new_scratch();
    let (a, mut out) = (vec![0u8; 15], vec![0u8; 6]);
    assert!(kernel.run_into(&a, &mut out, &mut scratch).is_ok());
    assert!(kernel.run_into(&a[..14], &mut out, &mut scratch).is_err());
    assert!(kernel.run_into(&a, &mut out[..5], &mut scratch).is_err());
    let mut signed_out = vec![0i8; 6];
    assert!(kernel.run_into(&a, &mut signed_out, &mut scratch).is_err());
    let b_run = vec![0i8; 10];
    assert!(kernel
        .run_with_b_into(&a, &b_run, &mut out, &mut scratch)
        .is_err());
    // a b of the wrong shape for its type
    let wrong_b = Tensor::new(vec![2, 5], TensorData::I8(vec![1; 10])).expect("shape matches");
    let node = QMatMulNode {
        b: Some(&wrong_b),
        ..node
    };
    assert!(
        QMatMulKernel::compile(&node, &JitOptions::default(), &QMatMulTuning::default()).is_err()
    );
}
