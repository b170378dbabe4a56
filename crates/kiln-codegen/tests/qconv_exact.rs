//! The JIT QConv kernel against the reference interpreter (`kiln_interp::eval_op`), bit for
//! bit, over random problems: channels that are not multiples of the vector width, odd
//! spatial sizes, 1-D/2-D/3-D, strides 1–3, dilations 1–2, asymmetric pads, groups
//! (depthwise included), non-zero zero points, u8/i8 activations and outputs, per-tensor and
//! per-channel weights, bias or none, no activation / ReLU / Clip.
//!
//! `PROPTEST_CASES` sets the number of random problems (default 1000).

use kiln_codegen::{
    InnerProduct, Int8, Jit, JitOptions, QConvKernel, QConvNode, QConvPath, QConvTuning,
};
use kiln_ir::{Activation, ConvAttrs, DType, Op, Quant, Tensor, TensorData, TensorType};
use proptest::prelude::*;

mod common;
use common::{cases_from_env, spatial};

/// SplitMix64: the tensor contents of a case come from one seed, so proptest shrinks the
/// problem's shape while the data stays reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    /// Uniform in `[lo, hi)`.
    fn float(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

#[derive(Clone, Debug)]
struct Case {
    rank: usize,
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<usize>,
    input: Vec<usize>,
    x_signed: bool,
    out_signed: bool,
    w_unsigned: bool,
    per_channel: bool,
    /// 0: none, 1: relu, 2: clip
    act: u8,
    bias: bool,
    /// Scales that are powers of two, so that many products land exactly on .5 ties.
    tie_scales: bool,
    /// Signed weights with zero point 0 (else occasionally ±5): centered weights that fit
    /// i8, so VNNI hosts run these through `vpdpbusd`.
    symmetric_weights: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let rank = prop_oneof![2 => Just(2usize), 1 => Just(1usize), 1 => Just(3usize)];
    // group shapes: plain, grouped, depthwise (one input channel per group)
    let channels = prop_oneof![
        (Just(1usize), 1usize..=19, 1usize..=21),
        (2usize..=3, 1usize..=5, 1usize..=6),
        (1usize..=13, Just(1usize), 1usize..=2),
    ];
    (
        rank,
        channels,
        1usize..=2,
        any::<[bool; 8]>(),
        0u8..=2,
        any::<u64>(),
    )
        .prop_flat_map(|(rank, (groups, cin_g, cout_g), batch, flags, act, seed)| {
            spatial(rank).prop_map(move |sp| Case {
                rank,
                batch,
                groups,
                cin_g,
                cout_g,
                kernel: sp.kernel,
                strides: sp.strides,
                dilations: sp.dilations,
                pads: sp.pads,
                input: sp.input,
                x_signed: flags[0],
                out_signed: flags[1],
                w_unsigned: flags[2] && flags[3],
                per_channel: flags[4],
                act,
                bias: flags[5],
                tie_scales: flags[6],
                symmetric_weights: flags[7],
                seed,
            })
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

/// Compile and run the case's kernel and the interpreter; `Err` describes a mismatch.
fn check(case: &Case, tuning: &QConvTuning) -> Result<(), String> {
    check_with(case, tuning).map(|_| ())
}

/// [`check`], returning the inner product the kernel used.
fn check_with(case: &Case, tuning: &QConvTuning) -> Result<InnerProduct, String> {
    check_path(case, tuning).map(|(inner, _)| inner)
}

/// [`check`], returning the inner product and the path (general or depthwise) the kernel
/// was built as.
fn check_path(case: &Case, tuning: &QConvTuning) -> Result<(InnerProduct, QConvPath), String> {
    let mut rng = Rng(case.seed);
    let (c_in, c_out) = (case.cin_g * case.groups, case.cout_g * case.groups);
    let mut x_shape = vec![case.batch, c_in];
    x_shape.extend(&case.input);
    let mut w_shape = vec![c_out, case.cin_g];
    w_shape.extend(&case.kernel);
    let x = int8_tensor(x_shape.clone(), case.x_signed, &mut rng);
    let w = int8_tensor(w_shape.clone(), !case.w_unsigned, &mut rng);
    let scale = |rng: &mut Rng, lo: f32, hi: f32| {
        if case.tie_scales {
            2f32.powi(rng.int(-9, -1) as i32)
        } else {
            rng.float(lo, hi)
        }
    };
    let (x_lo, x_hi) = if case.x_signed { (-128, 127) } else { (0, 255) };
    let x_zp = rng.int(x_lo, x_hi) as i32;
    let x_ty = TensorType::new(dtype(case.x_signed), x_shape)
        .with_quant(Quant::per_tensor(scale(&mut rng, 0.002, 0.05), x_zp));
    // symmetric weights as real toolkits make them, with occasional non-zero zero points
    let w_zp = |rng: &mut Rng| -> i32 {
        if case.w_unsigned {
            rng.int(100, 150) as i32
        } else if !case.symmetric_weights && rng.int(0, 3) == 0 {
            rng.int(-5, 5) as i32
        } else {
            0
        }
    };
    let w_quant = if case.per_channel {
        Quant::PerAxis {
            axis: 0,
            scales: (0..c_out).map(|_| scale(&mut rng, 0.001, 0.02)).collect(),
            zero_points: (0..c_out).map(|_| w_zp(&mut rng)).collect(),
        }
    } else {
        Quant::per_tensor(scale(&mut rng, 0.001, 0.02), w_zp(&mut rng))
    };
    let w_ty = TensorType::new(w.dtype(), w_shape).with_quant(w_quant);
    let bias = Tensor::new(
        vec![c_out],
        TensorData::I32((0..c_out).map(|_| rng.int(-20000, 20000) as i32).collect()),
    )
    .expect("shape matches data");
    let bias_ty = TensorType::new(DType::I32, vec![c_out]);
    let (y_lo, y_hi) = if case.out_signed {
        (-128, 127)
    } else {
        (0, 255)
    };
    let y_zp = rng.int(y_lo, y_hi) as i32;
    let y_scale = scale(&mut rng, 0.005, 0.2);
    let act = match case.act {
        0 => None,
        1 => Some(Activation::Relu),
        _ => {
            let a = rng.float(-3.0, 1.0) as f64;
            Some(Activation::Clip {
                min: a,
                max: a + rng.float(0.1, 4.0) as f64,
            })
        }
    };
    let attrs = ConvAttrs {
        kernel: case.kernel.clone(),
        strides: case.strides.clone(),
        pads: case.pads.clone(),
        dilations: case.dilations.clone(),
        groups: case.groups,
        act,
    };
    let op = Op::QConv(attrs.clone());
    let mut inputs = vec![&x, &w];
    let mut types = vec![&x_ty, &w_ty];
    if case.bias {
        inputs.push(&bias);
        types.push(&bias_ty);
    }
    // QConv's output type is a free choice (quantization), its shape the conv geometry's
    let out_shape = conv_output_shape(case);
    let y_ty = TensorType::new(dtype(case.out_signed), out_shape)
        .with_quant(Quant::per_tensor(y_scale, y_zp));
    let want = kiln_interp::eval_op(&op, &inputs, &types, std::slice::from_ref(&y_ty))
        .map_err(|e| format!("interpreter rejected the case: {e}"))?;
    let node = QConvNode {
        attrs: &attrs,
        x_ty: &x_ty,
        w: &w,
        w_ty: &w_ty,
        bias: case.bias.then_some((&bias, &bias_ty)),
        out_ty: &y_ty,
    };
    let kernel = QConvKernel::compile(&node, &JitOptions::default(), tuning)
        .map_err(|e| format!("compile: {e}"))?;
    let got = kernel.run(&x).map_err(|e| format!("run: {e}"))?;
    if got != want[0] {
        let as_i32 = |t: &Tensor| -> Vec<i32> {
            match t.data() {
                TensorData::U8(v) => v.iter().map(|&q| q as i32).collect(),
                TensorData::I8(v) => v.iter().map(|&q| q as i32).collect(),
                _ => Vec::new(),
            }
        };
        let (g, w) = (as_i32(&got), as_i32(&want[0]));
        let wrong: Vec<usize> = (0..g.len().min(w.len()))
            .filter(|&i| g[i] != w[i])
            .collect();
        return Err(format!(
            "{} of {} outputs differ (tile {:?}); first at flat index {}: jit {} interp {}",
            wrong.len(),
            w.len(),
            kernel.tile(),
            wrong.first().copied().unwrap_or(0),
            wrong.first().map_or(0, |&i| g[i]),
            wrong.first().map_or(0, |&i| w[i]),
        ));
    }
    // split over 2 and 3 threads (fewer where there are fewer channel tiles): the same bits
    for threads in [2, 3] {
        let split = run_threaded(&kernel, &x, &got, threads)?;
        if split != got {
            return Err(format!("{threads} threads give another result than 1"));
        }
    }
    Ok((kernel.inner_product(), kernel.path()))
}

/// `kernel.run_into_threads` on `x`, into a tensor shaped and typed like `like`.
fn run_threaded(
    kernel: &QConvKernel,
    x: &Tensor,
    like: &Tensor,
    threads: usize,
) -> Result<Tensor, String> {
    fn go<X: Int8, Y: Int8 + Default>(
        kernel: &QConvKernel,
        x: &[X],
        len: usize,
        threads: usize,
    ) -> Result<Vec<Y>, String> {
        let mut out = vec![Y::default(); len];
        kernel
            .run_into_threads(x, &mut out, &mut kernel.new_scratch(), threads)
            .map_err(|e| format!("run_into_threads: {e}"))?;
        Ok(out)
    }
    let len = like.numel();
    let data = match (x.data(), like.data()) {
        (TensorData::U8(x), TensorData::U8(_)) => TensorData::U8(go(kernel, x, len, threads)?),
        (TensorData::U8(x), TensorData::I8(_)) => TensorData::I8(go(kernel, x, len, threads)?),
        (TensorData::I8(x), TensorData::U8(_)) => TensorData::U8(go(kernel, x, len, threads)?),
        (TensorData::I8(x), TensorData::I8(_)) => TensorData::I8(go(kernel, x, len, threads)?),
        _ => return Err("int8 input and output expected".into()),
    };
    Tensor::new(like.shape().to_vec(), data).map_err(|e| e.to_string())
}

/// ONNX conv output extent per spatial dim: `(in + pads − span) / stride + 1`.
fn conv_output_shape(case: &Case) -> Vec<usize> {
    let mut shape = vec![case.batch, case.cout_g * case.groups];
    for d in 0..case.rank {
        let padded = case.input[d] + case.pads[d] + case.pads[case.rank + d];
        let span = case.dilations[d] * (case.kernel[d] - 1) + 1;
        shape.push((padded - span) / case.strides[d] + 1);
    }
    shape
}

/// The inner product the default tuning must pick for a case with symmetric i8 weights
/// (centered weights in [-128, 127]): the host's byte dot product (`vpdpbusd` on x86 VNNI,
/// `sdot`/`usdot` on AArch64 with dotprod/i8mm, `InnerProduct::select`), else `pmaddwd`.
fn expected_default_inner(case: &Case) -> InnerProduct {
    assert!(case.symmetric_weights && !case.w_unsigned);
    let host = Jit::host(&JitOptions::default()).expect("host is supported");
    let x_dtype = if case.x_signed { DType::I8 } else { DType::U8 };
    InnerProduct::select(host.features(), x_dtype)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000)))]

    /// Both inner products: `vpdpbusd` where the host has VNNI and the weights fit i8
    /// (the default), and `pmaddwd` forced.
    #[test]
    fn qconv_jit_matches_interpreter(case in case()) {
        let used = check_with(&case, &QConvTuning::default());
        if case.symmetric_weights && !case.w_unsigned {
            prop_assert_eq!(used, Ok(expected_default_inner(&case)));
        } else {
            prop_assert!(used.is_ok(), "{:?}", used);
        }
        let pmaddwd = QConvTuning { allow_vnni: false, ..QConvTuning::default() };
        prop_assert_eq!(check(&case, &pmaddwd), Ok(()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 4))]

    /// Other micro-kernel shapes: every tile size must give the same bits.
    #[test]
    fn qconv_jit_matches_interpreter_other_tiles(
        case in case(),
        rows in 1usize..=6,
        col_vectors in 1usize..=3,
        allow_vnni in any::<bool>(),
        allow_depthwise in any::<bool>(),
    ) {
        let tuning = QConvTuning { rows, col_vectors, allow_vnni, allow_depthwise };
        prop_assert_eq!(check(&case, &tuning), Ok(()));
    }
}

/// Depthwise problems (`groups == C_in == C_out`, 1 to 37 channels: partial channel tiles,
/// counts that are not multiples of 4 or 16).
fn depthwise_case() -> impl Strategy<Value = Case> {
    (case(), 1usize..=37).prop_map(|(case, channels)| Case {
        groups: channels,
        cin_g: 1,
        cout_g: 1,
        ..case
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(1000) / 2))]

    /// The depthwise kernel, chosen by default, with `vpdpbusd` where possible and with
    /// `pmaddwd` forced, in random tiles; and the general path forced on the same problem.
    #[test]
    fn depthwise_jit_matches_interpreter(
        case in depthwise_case(),
        rows in 1usize..=6,
        col_vectors in 1usize..=3,
    ) {
        let default = check_path(&case, &QConvTuning::default()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(default.1, QConvPath::Depthwise);
        if case.symmetric_weights && !case.w_unsigned {
            prop_assert_eq!(default.0, expected_default_inner(&case));
        }
        for allow_vnni in [false, true] {
            let tuning = QConvTuning { rows, col_vectors, allow_vnni, allow_depthwise: true };
            prop_assert_eq!(check(&case, &tuning), Ok(()));
        }
        let general = QConvTuning { allow_depthwise: false, ..QConvTuning::default() };
        prop_assert_eq!(check_path(&case, &general).map(|(_, p)| p), Ok(QConvPath::General));
    }
}

/// The benchmark's layer (3×3, 64 → 64, pad 1) on a small image, with many channel pairs
/// so the k-loop runs as a loop rather than straight-line code.
#[test]
fn wide_channels_use_the_k_loop() {
    for (x_signed, act) in [(false, 1u8), (true, 0u8)] {
        let case = Case {
            rank: 2,
            batch: 1,
            groups: 1,
            cin_g: 64,
            cout_g: 64,
            kernel: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            input: vec![9, 11],
            x_signed,
            out_signed: x_signed,
            w_unsigned: false,
            per_channel: true,
            act,
            bias: true,
            tie_scales: false,
            symmetric_weights: true,
            seed: 7,
        };
        // symmetric i8 weights: the default takes `vpdpbusd` on VNNI hosts
        assert_eq!(
            check_with(&case, &QConvTuning::default()),
            Ok(expected_default_inner(&case))
        );
        let pmaddwd = QConvTuning {
            allow_vnni: false,
            ..QConvTuning::default()
        };
        assert_eq!(check(&case, &pmaddwd), Ok(()));
        // an odd number of channel pairs leaves one pair after the unrolled-by-2 loop
        let odd = Case {
            cin_g: 19 * 2 - 1,
            ..case
        };
        assert_eq!(check(&odd, &QConvTuning::default()), Ok(()));
    }
}
