//! The JIT f32 kernels against the reference interpreter (`kiln_interp::eval_op`) over
//! random small problems: every output within 1e-5 of the largest expected magnitude
//! (f32 kernels sum in a different order than the interpreter, so bitwise equality is not
//! expected; 1e-5 is ~80 ulps of the largest value, far above the rounding of these
//! short reductions and the polynomial `exp`'s 2-ulp error).
//!
//! `PROPTEST_CASES` sets the number of random problems (default 256 each).

use kiln_codegen::{
    ActivationKernel, BatchNormKernel, BinaryKernel, ConcatKernel, FConvKernel, FConvNode,
    FConvTransposeKernel, FConvTransposeNode, GemmKernel, JitOptions, PoolKernel, PoolKind,
    SoftmaxKernel,
};
use kiln_ir::{
    Activation, BinaryOp, ConvAttrs, ConvTransposeAttrs, DType, GemmAttrs, Op, PoolAttrs,
    ResizeAttrs, ResizeMode, Tensor, TensorData, TensorType,
};
use proptest::prelude::*;

mod common;
use common::{
    cases_from_env, interpret, resize_matches_interpreter, resize_problem, spatial_1d_to_3d,
    Spatial,
};

/// A xorshift stream for tensor contents (proptest chooses the seed, so failures shrink
/// to a seed and a shape).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [−scale, scale).
    fn f32(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
    fn tensor(&mut self, shape: Vec<usize>, scale: f32) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.f32(scale)).collect();
        Tensor::new(shape, TensorData::F32(data)).expect("shape and data agree")
    }
}

fn f32_type(shape: Vec<usize>) -> TensorType {
    TensorType {
        dtype: DType::F32,
        shape,
        quant: None,
    }
}

fn activation() -> impl Strategy<Value = Option<Activation>> {
    prop_oneof![
        Just(None),
        Just(Some(Activation::Relu)),
        Just(Some(Activation::Clip {
            min: -0.5,
            max: 1.0
        })),
        Just(Some(Activation::LeakyRelu { alpha: 0.1 })),
        Just(Some(Activation::Sigmoid)),
        Just(Some(Activation::Tanh)),
        Just(Some(Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5
        })),
        Just(Some(Activation::HardSwish)),
    ]
}

/// `got` within `1e-5 · max|want|` of `want`, element by element. The scale is at least the
/// smallest normal f32: a subnormal result has fewer than 24 significant bits, so a tensor
/// of subnormals alone cannot be compared to five significant digits.
fn assert_close(got: &Tensor, want: &Tensor) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.shape(), want.shape());
    let (TensorData::F32(g), TensorData::F32(w)) = (got.data(), want.data()) else {
        return Err(TestCaseError::fail("both outputs must be f32"));
    };
    let scale = w
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    for (i, (a, b)) in g.iter().zip(w).enumerate() {
        prop_assert!(
            (a - b).abs() <= 1e-5 * scale,
            "element {}: got {} want {} (max |want| {})",
            i,
            a,
            b,
            scale
        );
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct ConvCase {
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    spatial: Spatial,
    bias: bool,
    residual: bool,
    act: Option<Activation>,
    seed: u64,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        spatial_1d_to_3d(),
        1usize..=2,
        prop_oneof![Just(1usize), 2usize..=3],
        1usize..=5,
        1usize..=11,
        any::<[bool; 2]>(),
        activation(),
        1u64..u64::MAX,
    )
        .prop_map(
            |(spatial, batch, groups, cin_g, cout_g, [bias, residual], act, seed)| ConvCase {
                batch,
                groups,
                cin_g,
                cout_g,
                spatial,
                bias: bias || residual,
                residual,
                act,
                seed,
            },
        )
}

fn check_conv(case: &ConvCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let sp = &case.spatial;
    let attrs = ConvAttrs {
        kernel: sp.kernel.clone(),
        strides: sp.strides.clone(),
        pads: sp.pads.clone(),
        dilations: sp.dilations.clone(),
        groups: case.groups,
        act: case.act.clone(),
    };
    let (c_in, c_out) = (case.groups * case.cin_g, case.groups * case.cout_g);
    let mut x_shape = vec![case.batch, c_in];
    x_shape.extend(&sp.input);
    let mut w_shape = vec![c_out, case.cin_g];
    w_shape.extend(&attrs.kernel);
    let x = rng.tensor(x_shape.clone(), 1.0);
    let w = rng.tensor(w_shape.clone(), 1.0);
    let b = rng.tensor(vec![c_out], 1.0);
    let mut out_shape = vec![case.batch, c_out];
    out_shape.extend(sp.output());
    let r = rng.tensor(out_shape.clone(), 1.0);
    let mut inputs = vec![&x, &w];
    let mut types = vec![f32_type(x_shape.clone()), f32_type(w_shape)];
    if case.bias {
        inputs.push(&b);
        types.push(f32_type(vec![c_out]));
    }
    if case.residual {
        inputs.push(&r);
        types.push(f32_type(out_shape.clone()));
    }
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = f32_type(out_shape);
    let want = interpret(&Op::Conv(attrs.clone()), &inputs, &type_refs, &out_ty)?;
    let node = FConvNode {
        attrs: &attrs,
        x_ty: &types[0],
        w: &w,
        bias: case.bias.then_some(&b),
        residual: case.residual,
        out_ty: &out_ty,
    };
    let kernel = FConvKernel::compile(&node, &JitOptions::default())
        .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
    let got = kernel
        .run(&x, case.residual.then_some(&r))
        .map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
    assert_close(&got, &want)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    #[test]
    fn conv_f32_jit_is_close_to_interpreter(case in conv_case()) {
        check_conv(&case)?;
    }
}

/// A shape of rank 0–4 with extents 1–6, and a second one broadcast against it (dims
/// dropped from the front, some set to 1).
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, bool)> {
    (
        prop::collection::vec(1usize..=6, 0..=4),
        prop::collection::vec(any::<bool>(), 4),
        0usize..=4,
        any::<bool>(),
    )
        .prop_map(|(out, ones, drop, swap)| {
            let drop = drop.min(out.len());
            let other: Vec<usize> = out[drop..]
                .iter()
                .zip(&ones)
                .map(|(&d, &one)| if one { 1 } else { d })
                .collect();
            (out, other, swap)
        })
}

fn binary_op() -> impl Strategy<Value = BinaryOp> {
    prop_oneof![
        Just(BinaryOp::Add),
        Just(BinaryOp::Sub),
        Just(BinaryOp::Mul),
        Just(BinaryOp::Div)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    #[test]
    fn binary_f32_jit_is_close_to_interpreter(
        (full, other, swap) in broadcast_pair(),
        op in binary_op(),
        seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        let (a_shape, b_shape) = if swap { (other, full.clone()) } else { (full.clone(), other) };
        let a = rng.tensor(a_shape.clone(), 2.0);
        // divisors away from 0, so the quotients stay in a range the bound is meaningful for
        let b = match rng.tensor(b_shape.clone(), 1.0).data() {
            TensorData::F32(v) => Tensor::new(
                b_shape.clone(),
                TensorData::F32(v.iter().map(|x| x + x.signum() * 0.5).collect()),
            )
            .expect("same shape"),
            _ => unreachable!("rng.tensor makes f32 tensors"),
        };
        let (a_ty, b_ty, out_ty) = (f32_type(a_shape), f32_type(b_shape), f32_type(full));
        let want = interpret(&Op::Binary(op), &[&a, &b], &[&a_ty, &b_ty], &out_ty)?;
        let kernel = BinaryKernel::compile(op, &a_ty, &b_ty, &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&a, &b).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        // the same single IEEE operation per element: exact
        prop_assert_eq!(got, want.clone());
    }

    #[test]
    fn activation_f32_jit_is_close_to_interpreter(
        shape in prop::collection::vec(1usize..=7, 0..=3),
        act in activation(),
        scale in prop_oneof![Just(0.01f32), Just(1.0f32), Just(8.0f32), Just(100.0f32)],
        seed in 1u64..u64::MAX,
    ) {
        let act = act.unwrap_or(Activation::Relu);
        let mut rng = Rng(seed);
        let x = rng.tensor(shape.clone(), scale);
        let ty = f32_type(shape);
        let want = interpret(&Op::Activation(act.clone()), &[&x], &[&ty], &ty)?;
        let kernel = ActivationKernel::compile(&act, &ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        assert_close(&got, &want)?;
    }

    #[test]
    fn batch_norm_f32_jit_equals_interpreter(
        shape in prop::collection::vec(1usize..=5, 2..=4),
        seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        let x = rng.tensor(shape.clone(), 3.0);
        let c = shape[1];
        let scale = rng.tensor(vec![c], 2.0);
        let bias = rng.tensor(vec![c], 2.0);
        let mean = rng.tensor(vec![c], 2.0);
        // variances in [0, 2)
        let var = match rng.tensor(vec![c], 1.0).data() {
            TensorData::F32(v) => Tensor::new(vec![c], TensorData::F32(v.iter().map(|x| x + 1.0).collect()))
                .expect("same shape"),
            _ => unreachable!("rng.tensor makes f32 tensors"),
        };
        let ty = f32_type(shape);
        let p_ty = f32_type(vec![c]);
        let op = Op::BatchNorm { epsilon: 1e-5 };
        let want = interpret(
            &op,
            &[&x, &scale, &bias, &mean, &var],
            &[&ty, &p_ty, &p_ty, &p_ty, &p_ty],
            &ty,
        )?;
        let kernel = BatchNormKernel::compile(&ty, [&scale, &bias, &mean, &var], 1e-5, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        prop_assert_eq!(got, want.clone());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    #[test]
    fn gemm_f32_jit_is_close_to_interpreter(
        (m, k, n) in (1usize..=9, 1usize..=13, 1usize..=11),
        (trans_a, trans_b) in any::<(bool, bool)>(),
        c_kind in 0usize..=5,
        (alpha, beta) in prop_oneof![Just((1.0f32, 1.0f32)), Just((0.5f32, -2.0f32))],
        act in activation(),
        seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        let a_shape = if trans_a { vec![k, m] } else { vec![m, k] };
        let b_shape = if trans_b { vec![n, k] } else { vec![k, n] };
        // no C, [N], [1, N], [M, 1], [M, N], scalar
        let c_shape = [None, Some(vec![n]), Some(vec![1, n]), Some(vec![m, 1]), Some(vec![m, n]), Some(vec![])][c_kind].clone();
        let a = rng.tensor(a_shape.clone(), 1.0);
        let b = rng.tensor(b_shape.clone(), 1.0);
        let c = c_shape.clone().map(|s| rng.tensor(s, 1.0));
        let attrs = GemmAttrs { alpha, beta, trans_a, trans_b, act };
        let out_ty = f32_type(vec![m, n]);
        let (a_ty, b_ty) = (f32_type(a_shape), f32_type(b_shape));
        let c_ty = c_shape.map(f32_type);
        let mut inputs = vec![&a, &b];
        let mut types = vec![&a_ty, &b_ty];
        if let (Some(c), Some(c_ty)) = (&c, &c_ty) {
            inputs.push(c);
            types.push(c_ty);
        }
        let want = interpret(&Op::Gemm(attrs.clone()), &inputs, &types, &out_ty)?;
        let kernel = GemmKernel::compile_gemm(&attrs, &a_ty, &b, c.as_ref(), &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&a).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        assert_close(&got, &want)?;
        // the same Gemm with B read at run time
        let kernel = GemmKernel::compile_gemm_runtime_b(&attrs, &a_ty, &b_ty, c.as_ref(), &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run_with_b(&a, &b).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        assert_close(&got, &want)?;
    }

    /// MatMul with B read at run time: batch dims of either operand, broadcast (numpy).
    #[test]
    fn matmul_runtime_b_f32_jit_is_close_to_interpreter(
        batch in prop::collection::vec(1usize..=3, 0..=2),
        a_keep in prop::collection::vec(any::<bool>(), 2),
        b_keep in prop::collection::vec(any::<bool>(), 2),
        (a_rank_cut, b_rank_cut) in (0usize..=2, 0usize..=2),
        (m, k, n) in (1usize..=7, 1usize..=13, 1usize..=11),
        seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        // each operand: a suffix of the batch dims, each kept or 1
        let lead = |keep: &[bool], cut: usize| -> Vec<usize> {
            let from = cut.min(batch.len());
            (from..batch.len()).map(|d| if keep[d] { batch[d] } else { 1 }).collect()
        };
        let mut a_shape = lead(&a_keep, a_rank_cut);
        a_shape.extend([m, k]);
        let mut b_shape = lead(&b_keep, b_rank_cut);
        b_shape.extend([k, n]);
        let a = rng.tensor(a_shape.clone(), 1.0);
        let b = rng.tensor(b_shape.clone(), 1.0);
        let (a_ty, b_ty) = (f32_type(a_shape), f32_type(b_shape));
        let out_ty = kiln_ir::infer::infer_types(&Op::MatMul, &[&a_ty, &b_ty])
            .map_err(TestCaseError::fail)?
            .remove(0);
        let want = interpret(&Op::MatMul, &[&a, &b], &[&a_ty, &b_ty], &out_ty)?;
        let kernel = GemmKernel::compile_matmul_runtime_b(&a_ty, &b_ty, &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run_with_b(&a, &b).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        assert_close(&got, &want)?;
    }

    #[test]
    fn matmul_f32_jit_is_close_to_interpreter(
        lead in prop::collection::vec(1usize..=3, 0..=2),
        (m, k, n) in (1usize..=7, 1usize..=13, 1usize..=11),
        seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        let mut a_shape = lead.clone();
        a_shape.extend([m, k]);
        let mut out_shape = lead;
        out_shape.extend([m, n]);
        let a = rng.tensor(a_shape.clone(), 1.0);
        let b = rng.tensor(vec![k, n], 1.0);
        let (a_ty, b_ty, out_ty) = (f32_type(a_shape), f32_type(vec![k, n]), f32_type(out_shape));
        let want = interpret(&Op::MatMul, &[&a, &b], &[&a_ty, &b_ty], &out_ty)?;
        let kernel = GemmKernel::compile_matmul(&a_ty, &b, &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&a).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        assert_close(&got, &want)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    /// MaxPool and AveragePool: the interpreter's operations in its order, so equal.
    #[test]
    fn pool_f32_jit_equals_interpreter(
        sp in spatial_1d_to_3d(),
        batch in 1usize..=2,
        channels in 1usize..=9,
        (ceil_mode, count_include_pad, average) in any::<(bool, bool, bool)>(),
        seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        let attrs = PoolAttrs {
            kernel: sp.kernel,
            strides: sp.strides,
            pads: sp.pads,
            dilations: sp.dilations,
            ceil_mode,
            count_include_pad,
            storage_order: 0,
        };
        let mut shape = vec![batch, channels];
        shape.extend(&sp.input);
        let x = rng.tensor(shape.clone(), 4.0);
        let x_ty = f32_type(shape);
        let (op, kind) = if average {
            (Op::AveragePool(attrs.clone()), PoolKind::Average)
        } else {
            (Op::MaxPool(attrs.clone()), PoolKind::Max)
        };
        let kernel = PoolKernel::compile(kind, &attrs, &x_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let out_ty = f32_type(kernel.output_shape().to_vec());
        let want = interpret(&op, &[&x], &[&x_ty], &out_ty)?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        prop_assert_eq!(got, want.clone());
    }

    #[test]
    fn global_pool_f32_jit_is_close_to_interpreter(
        shape in prop::collection::vec(1usize..=6, 3..=5),
        max in any::<bool>(),
        seed in 1u64..u64::MAX,
    ) {
        let mut rng = Rng(seed);
        let x = rng.tensor(shape.clone(), 4.0);
        let x_ty = f32_type(shape.clone());
        let (op, kind) = if max {
            (Op::GlobalMaxPool, PoolKind::Max)
        } else {
            (Op::GlobalAveragePool, PoolKind::Average)
        };
        let kernel = PoolKernel::compile_global(kind, &x_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let out_ty = f32_type(kernel.output_shape().to_vec());
        let want = interpret(&op, &[&x], &[&x_ty], &out_ty)?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        assert_close(&got, &want)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    #[test]
    fn softmax_f32_jit_is_close_to_interpreter(
        shape in prop::collection::vec(1usize..=7, 1..=4),
        axis_pick in 0usize..4,
        legacy in any::<bool>(),
        scale in prop_oneof![Just(1.0f32), Just(10.0f32), Just(100.0f32)],
        seed in 1u64..u64::MAX,
    ) {
        let axis = axis_pick % shape.len();
        let mut rng = Rng(seed);
        let x = rng.tensor(shape.clone(), scale);
        let ty = f32_type(shape);
        let op = Op::Softmax { axis, legacy };
        let want = interpret(&op, &[&x], &[&ty], &ty)?;
        let kernel = SoftmaxKernel::compile(axis, legacy, &ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let got = kernel.run(&x).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        assert_close(&got, &want)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    /// Concat moves bytes: equal to the interpreter.
    #[test]
    fn concat_jit_equals_interpreter(
        shape in prop::collection::vec(1usize..=5, 1..=4),
        extents in prop::collection::vec(1usize..=6, 1..=4),
        axis_pick in 0usize..4,
        seed in 1u64..u64::MAX,
    ) {
        let axis = axis_pick % shape.len();
        let mut rng = Rng(seed);
        let shapes: Vec<Vec<usize>> = extents
            .iter()
            .map(|&e| {
                let mut s = shape.clone();
                s[axis] = e;
                s
            })
            .collect();
        let xs: Vec<Tensor> = shapes.iter().map(|s| rng.tensor(s.clone(), 1.0)).collect();
        let tys: Vec<TensorType> = shapes.into_iter().map(f32_type).collect();
        let mut out_shape = shape.clone();
        out_shape[axis] = extents.iter().sum();
        let out_ty = f32_type(out_shape.clone());
        let x_refs: Vec<&Tensor> = xs.iter().collect();
        let ty_refs: Vec<&TensorType> = tys.iter().collect();
        let want = interpret(&Op::Concat { axis }, &x_refs, &ty_refs, &out_ty)?;
        let kernel = ConcatKernel::compile(axis, &ty_refs, &out_ty, &JitOptions::default())
            .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
        let bytes: Vec<Vec<u8>> = xs
            .iter()
            .map(|x| match x.data() {
                TensorData::F32(v) => v.iter().flat_map(|f| f.to_le_bytes()).collect(),
                _ => unreachable!("rng.tensor makes f32 tensors"),
            })
            .collect();
        let byte_refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let mut out = vec![0u8; out_ty.byte_size()];
        kernel.run_into(&byte_refs, &mut out).map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
        let values: Vec<f32> = out
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let got = Tensor::new(out_shape, TensorData::F32(values)).expect("sized to the shape");
        prop_assert_eq!(got, want.clone());
    }
}

#[derive(Clone, Debug)]
struct ConvTransposeCase {
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    spatial: Spatial,
    /// Per spatial dim (the first `rank` entries).
    output_padding: Vec<usize>,
    bias: bool,
    act: Option<Activation>,
    seed: u64,
}

fn conv_transpose_case() -> impl Strategy<Value = ConvTransposeCase> {
    (
        spatial_1d_to_3d(),
        prop::collection::vec(0usize..=2, 3),
        1usize..=2,
        prop_oneof![Just(1usize), 2usize..=3],
        1usize..=4,
        1usize..=9,
        any::<bool>(),
        activation(),
        1u64..u64::MAX,
    )
        .prop_map(
            |(spatial, output_padding, batch, groups, cin_g, cout_g, bias, act, seed)| {
                ConvTransposeCase {
                    batch,
                    groups,
                    cin_g,
                    cout_g,
                    spatial,
                    output_padding,
                    bias,
                    act,
                    seed,
                }
            },
        )
}

fn check_conv_transpose(case: &ConvTransposeCase) -> Result<(), TestCaseError> {
    let mut rng = Rng(case.seed);
    let sp = &case.spatial;
    let rank = sp.kernel.len();
    // `s·(in − 1) + output_padding + dl·(k − 1) + 1 − pads`; pads that leave no output are
    // dropped
    let full: Vec<usize> = (0..rank)
        .map(|d| {
            sp.strides[d] * (sp.input[d] - 1)
                + case.output_padding[d]
                + sp.dilations[d] * (sp.kernel[d] - 1)
                + 1
        })
        .collect();
    let pads_fit = (0..rank).all(|d| full[d] > sp.pads[d] + sp.pads[rank + d]);
    let pads = if pads_fit {
        sp.pads.clone()
    } else {
        vec![0; 2 * rank]
    };
    let out_spatial: Vec<usize> = (0..rank)
        .map(|d| full[d] - pads[d] - pads[rank + d])
        .collect();
    let attrs = ConvTransposeAttrs {
        kernel: sp.kernel.clone(),
        strides: sp.strides.clone(),
        pads,
        dilations: sp.dilations.clone(),
        output_padding: case.output_padding[..rank].to_vec(),
        groups: case.groups,
        act: case.act.clone(),
    };
    let (c_in, c_out) = (case.groups * case.cin_g, case.groups * case.cout_g);
    let mut x_shape = vec![case.batch, c_in];
    x_shape.extend(&sp.input);
    let mut w_shape = vec![c_in, case.cout_g];
    w_shape.extend(&attrs.kernel);
    let mut out_shape = vec![case.batch, c_out];
    out_shape.extend(out_spatial);
    let x = rng.tensor(x_shape.clone(), 1.0);
    let w = rng.tensor(w_shape.clone(), 1.0);
    let b = rng.tensor(vec![c_out], 1.0);
    let mut inputs = vec![&x, &w];
    let mut types = vec![f32_type(x_shape), f32_type(w_shape)];
    if case.bias {
        inputs.push(&b);
        types.push(f32_type(vec![c_out]));
    }
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let out_ty = f32_type(out_shape);
    let want = interpret(
        &Op::ConvTranspose(attrs.clone()),
        &inputs,
        &type_refs,
        &out_ty,
    )?;
    let node = FConvTransposeNode {
        attrs: &attrs,
        x_ty: &types[0],
        w: &w,
        bias: case.bias.then_some(&b),
        out_ty: &out_ty,
    };
    let kernel = FConvTransposeKernel::compile(&node, &JitOptions::default())
        .map_err(|e| TestCaseError::fail(format!("compile: {e}")))?;
    let got = kernel
        .run(&x)
        .map_err(|e| TestCaseError::fail(format!("run: {e}")))?;
    assert_close(&got, &want)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    /// Strides above the dilated kernel (phases without taps), output padding, groups,
    /// 1-D to 3-D.
    #[test]
    fn conv_transpose_f32_jit_is_close_to_interpreter(case in conv_transpose_case()) {
        check_conv_transpose(&case)?;
    }
}

fn check_resize_f32(shape: Vec<usize>, attrs: ResizeAttrs, seed: u64) -> Result<(), TestCaseError> {
    let x = Rng(seed).tensor(shape.clone(), 4.0);
    // the interpreter's f64 operations in its order: equal, not just close
    resize_matches_interpreter(&x, &f32_type(shape), &attrs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    /// Every coordinate transform and nearest mode; extrapolation with tf_crop_and_resize.
    #[test]
    fn resize_nearest_f32_jit_equals_interpreter(
        (shape, attrs) in resize_problem(ResizeMode::Nearest, 7, -2.0..2.0),
        seed in 1u64..u64::MAX,
    ) {
        check_resize_f32(shape, attrs, seed)?;
    }

    /// Linear and cubic, antialiased or not, with and without `exclude_outside`.
    #[test]
    fn resize_interpolating_f32_jit_equals_interpreter(
        (shape, attrs) in prop_oneof![
            resize_problem(ResizeMode::Linear, 7, -2.0..2.0),
            resize_problem(ResizeMode::Cubic, 7, -2.0..2.0),
        ],
        seed in 1u64..u64::MAX,
    ) {
        check_resize_f32(shape, attrs, seed)?;
    }
}
