//! The JIT Quantize and Dequantize kernels against the reference interpreter
//! (`kiln_interp::eval_op`), bit for bit, over random shapes (odd sizes, so rows end in
//! partial vectors), per-tensor and per-axis parameters along any axis, u8/i8 (and i32 for
//! dequantize), and inputs that hit the edge cases: exact .5 ties, saturation, ±∞ and NaN.
//!
//! `PROPTEST_CASES` sets the number of random problems (default 1000; each test here runs a
//! quarter).

use kiln_codegen::{DequantizeKernel, JitOptions, QuantizeKernel};
use kiln_ir::{DType, Op, Quant, Tensor, TensorData, TensorType};
use proptest::prelude::*;

mod common;
use common::{cases_from_env, interpret};

/// SplitMix64, as in the other suites.
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
    shape: Vec<usize>,
    /// `None`: per tensor; else the axis (modulo the rank).
    axis: Option<usize>,
    signed: bool,
    /// Power-of-two scales: `x = (k + 0.5)·s` lands exactly on ties.
    tie_scales: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(1usize..=9, 1..=4),
        prop::option::of(0usize..4),
        any::<[bool; 2]>(),
        any::<u64>(),
    )
        .prop_map(|(shape, axis, f, seed)| Case {
            axis: axis.map(|a| a % shape.len()),
            shape,
            signed: f[0],
            tie_scales: f[1],
            seed,
        })
}

fn quant_type(case: &Case, dtype: DType, rng: &mut Rng) -> TensorType {
    let (lo, hi) = if case.signed { (-128, 127) } else { (0, 255) };
    let scale = |rng: &mut Rng| {
        if case.tie_scales {
            2f32.powi(rng.int(-6, 2) as i32)
        } else {
            rng.float(0.001, 0.5)
        }
    };
    let quant = match case.axis {
        None => Quant::per_tensor(scale(rng), rng.int(lo, hi) as i32),
        Some(axis) => {
            let n = case.shape[axis];
            Quant::PerAxis {
                axis,
                scales: (0..n).map(|_| scale(rng)).collect(),
                zero_points: (0..n).map(|_| rng.int(lo, hi) as i32).collect(),
            }
        }
    };
    TensorType::new(dtype, case.shape.clone()).with_quant(quant)
}

fn int_dtype(signed: bool) -> DType {
    if signed {
        DType::I8
    } else {
        DType::U8
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 4))]

    #[test]
    fn quantize_jit_matches_interpreter(case in case()) {
        let mut rng = Rng(case.seed);
        let out_ty = quant_type(&case, int_dtype(case.signed), &mut rng);
        let numel: usize = case.shape.iter().product();
        let values: Vec<f32> = (0..numel)
            .map(|_| match rng.int(0, 19) {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => rng.float(-1e6, 1e6),
                // halves of the smallest scale drawn: ties for power-of-two scales
                4..=9 => (rng.int(-600, 600) as f32 + 0.5) * 2f32.powi(-6),
                _ => rng.float(-40.0, 40.0),
            })
            .collect();
        let x = Tensor::new(case.shape.clone(), TensorData::F32(values)).expect("shape matches");
        let x_ty = TensorType::new(DType::F32, case.shape.clone());
        let want = interpret(&Op::Quantize, &[&x], &[&x_ty], &out_ty)?;
        let kernel = QuantizeKernel::compile(&x_ty, &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        prop_assert_eq!(&got, &want);
    }

    #[test]
    fn dequantize_jit_matches_interpreter(case in case()) {
        let mut rng = Rng(case.seed);
        let x_ty = quant_type(&case, int_dtype(case.signed), &mut rng);
        let numel: usize = case.shape.iter().product();
        let data = if case.signed {
            TensorData::I8((0..numel).map(|_| rng.int(-128, 127) as i8).collect())
        } else {
            TensorData::U8((0..numel).map(|_| rng.int(0, 255) as u8).collect())
        };
        let x = Tensor::new(case.shape.clone(), data).expect("shape matches");
        let out_ty = TensorType::new(DType::F32, case.shape.clone());
        let want = interpret(&Op::Dequantize, &[&x], &[&x_ty], &out_ty)?;
        let kernel = DequantizeKernel::compile(&x_ty, &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        // bitwise: f32 equality would accept -0.0 for 0.0
        let bits = |t: &Tensor| match t.data() {
            TensorData::F32(v) => v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>(),
            _ => Vec::new(),
        };
        prop_assert_eq!(got.shape(), want.shape());
        prop_assert_eq!(bits(&got), bits(&want));
    }
}

/// An i32 quantized type for `case` (the quantizer's biases): scales as for int8; zero
/// point 0 as biases have, or — for `signed` cases — anywhere in i32, where `q − zp` wraps.
fn i32_quant_type(case: &Case, rng: &mut Rng) -> TensorType {
    let zp = |rng: &mut Rng| {
        if case.signed {
            rng.int(i32::MIN as i64, i32::MAX as i64) as i32
        } else {
            0
        }
    };
    let quant = match case.axis {
        None => Quant::per_tensor(rng.float(1e-6, 0.5), zp(rng)),
        Some(axis) => {
            let n = case.shape[axis];
            Quant::PerAxis {
                axis,
                scales: (0..n).map(|_| rng.float(1e-6, 0.5)).collect(),
                zero_points: (0..n).map(|_| zp(rng)).collect(),
            }
        }
    };
    TensorType::new(DType::I32, case.shape.clone()).with_quant(quant)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 4))]

    /// i32 → f32: the conversion rounds above 2²⁴ (values drawn up to the i32 extremes).
    #[test]
    fn dequantize_i32_jit_matches_interpreter(case in case()) {
        let mut rng = Rng(case.seed);
        let x_ty = i32_quant_type(&case, &mut rng);
        let numel: usize = case.shape.iter().product();
        let values: Vec<i32> = (0..numel)
            .map(|_| match rng.int(0, 5) {
                0 => rng.int(i32::MIN as i64, i32::MAX as i64) as i32,
                1 => [i32::MIN, i32::MAX, 1 << 24, (1 << 24) + 1, -(1 << 25) - 3][rng.int(0, 4) as usize],
                _ => rng.int(-5000, 5000) as i32,
            })
            .collect();
        let x = Tensor::new(case.shape.clone(), TensorData::I32(values)).expect("shape matches");
        let out_ty = TensorType::new(DType::F32, case.shape.clone());
        let want = interpret(&Op::Dequantize, &[&x], &[&x_ty], &out_ty)?;
        let kernel = DequantizeKernel::compile(&x_ty, &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        prop_assert!(got.bitwise_eq(&want), "{:?} vs {:?}", got, want);
    }
}

/// Wrong buffers and unsupported types are errors.
#[test]
fn rejects_wrong_buffers_and_types() {
    let x_ty = TensorType::new(DType::F32, vec![2, 3]);
    let q_ty = TensorType::new(DType::U8, vec![2, 3]).with_quant(Quant::per_tensor(0.5, 3));
    let kernel = QuantizeKernel::compile(&x_ty, &q_ty, &JitOptions::default()).expect("valid");
    let mut out = vec![0u8; 6];
    assert!(kernel.run_into(&[0.0; 6], &mut out).is_ok());
    assert!(kernel.run_into(&[0.0; 5], &mut out).is_err());
    let mut signed = vec![0i8; 6];
    assert!(kernel.run_into(&[0.0; 6], &mut signed).is_err());
    let i32_ty = TensorType::new(DType::I32, vec![2, 3]).with_quant(Quant::per_tensor(0.5, 3));
    assert!(QuantizeKernel::compile(&x_ty, &i32_ty, &JitOptions::default()).is_err());
    let no_quant = TensorType::new(DType::U8, vec![2, 3]);
    assert!(DequantizeKernel::compile(&no_quant, &x_ty, &JitOptions::default()).is_err());
    let dq = DequantizeKernel::compile(&q_ty, &x_ty, &JitOptions::default()).expect("valid");
    let mut f = vec![0f32; 6];
    assert!(dq.run_into(&[0u8; 6], &mut f).is_ok());
    assert!(dq.run_into(&[0u8; 7], &mut f).is_err());
    assert!(dq.run_into(&[0i32; 6], &mut f).is_err());
}
