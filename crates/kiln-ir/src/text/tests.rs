//! Round-trip, error and robustness tests of the text format.

use super::*;
use crate::dtype::DType;
use crate::graph::{Output, ValueId};
use crate::op::*;
use crate::pool::{ConstValue, Generator};
use crate::tensor::{Tensor, TensorData};

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::f32(shape.to_vec())
}

fn ty(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, shape.to_vec())
}

/// Add a node named after its first output, with explicit output types.
fn node(
    g: &mut Graph,
    out: &str,
    op: Op,
    inputs: &[ValueId],
    types: Vec<TensorType>,
) -> Vec<ValueId> {
    let outputs = types
        .into_iter()
        .enumerate()
        .map(|(i, ty)| Output {
            name: if i == 0 {
                out.to_string()
            } else {
                format!("{out}_{i}")
            },
            ty,
        })
        .collect();
    g.add_node_typed(out, op, inputs, outputs)
}

fn generated(generator: Generator, dtype: DType, shape: &[usize]) -> ConstValue {
    let tensor = generator.generate(dtype, shape).expect("small test shape");
    ConstValue::Generated { generator, tensor }
}

/// A graph with every op of op.rs, each attribute set to a non-default value somewhere.
/// Output types are plausible but not checked: the round trip does not depend on them.
fn every_op_graph() -> Graph {
    let mut g = Graph::new("every_op");
    let x = g.add_input("x", f32t(&[1, 4, 8, 8]));
    let m = g.add_input("m", f32t(&[4, 4]));
    let w = g.add_const_value(
        "w",
        generated(
            Generator::Normal {
                seed: 3,
                mean: 0.0,
                std: 0.1,
            },
            DType::F32,
            &[4, 2, 3, 3],
        ),
        None,
    );
    let b = g.add_const_value(
        "b",
        generated(
            Generator::Uniform {
                seed: 9,
                low: -0.5,
                high: 0.5,
            },
            DType::F32,
            &[4],
        ),
        None,
    );
    let big = g.add_const(
        "big",
        Tensor::from_f32(vec![4, 8], (0..32).map(|i| i as f32 * 0.25 - 3.0).collect()).unwrap(),
        None,
    );
    let ones = g.add_const_value(
        "ones",
        generated(Generator::Full { value: 1.0 }, DType::F32, &[4]),
        None,
    );
    let ramp = g.add_const_value(
        "ramp",
        generated(
            Generator::Arange {
                start: -1.0,
                step: 0.5,
            },
            DType::F32,
            &[4],
        ),
        None,
    );
    let idx = g.add_const("idx", Tensor::from_i64(vec![2], vec![3, -1]).unwrap(), None);
    let t8 = f32t(&[1, 4, 8, 8]);

    let c = node(
        &mut g,
        "conv",
        Op::Conv(ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![2, 1],
            pads: vec![1, 0, 1, 2],
            dilations: vec![1, 2],
            groups: 2,
            act: Some(Activation::Clip { min: 0.0, max: 6.0 }),
        }),
        &[x, w, b],
        vec![t8.clone()],
    )[0];
    let c2 = node(
        &mut g,
        "conv_leaky",
        Op::Conv(ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            groups: 2,
            act: Some(Activation::LeakyRelu { alpha: 0.2 }),
        }),
        &[c, w],
        vec![t8.clone()],
    )[0];
    let c3 = node(
        &mut g,
        "conv_hs",
        Op::Conv(ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            groups: 2,
            act: Some(Activation::HardSigmoid {
                alpha: 0.25,
                beta: 0.375,
            }),
        }),
        &[c2, w],
        vec![t8.clone()],
    )[0];
    let ct = node(
        &mut g,
        "deconv",
        Op::ConvTranspose(ConvTransposeAttrs {
            kernel: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![0, 0, 1, 1],
            dilations: vec![1, 2],
            output_padding: vec![1, 0],
            groups: 2,
            act: Some(Activation::Relu),
        }),
        &[c3, w, b],
        vec![f32t(&[1, 4, 16, 16])],
    )[0];
    let bn = node(
        &mut g,
        "bn",
        Op::BatchNorm { epsilon: 1e-3 },
        &[c3, ones, b, ramp, ones],
        vec![t8.clone()],
    )[0];
    let acts = [
        Activation::Relu,
        Activation::Clip {
            min: f64::NEG_INFINITY,
            max: 6.0,
        },
        Activation::Clip {
            min: -1.5,
            max: f64::INFINITY,
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::HardSigmoid {
            alpha: 0.3,
            beta: 0.4,
        },
        Activation::HardSwish,
    ];
    let mut a = bn;
    for (i, act) in acts.into_iter().enumerate() {
        a = node(
            &mut g,
            &format!("act{i}"),
            Op::Activation(act),
            &[a],
            vec![t8.clone()],
        )[0];
    }
    for bin in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        a = node(
            &mut g,
            bin.name(),
            Op::Binary(bin),
            &[a, bn],
            vec![t8.clone()],
        )[0];
    }
    let s = node(&mut g, "sum", Op::Sum, &[a, bn, c3], vec![t8.clone()])[0];
    let mm = node(&mut g, "mm", Op::MatMul, &[m, big], vec![f32t(&[4, 8])])[0];
    let gemm = node(
        &mut g,
        "gemm",
        Op::Gemm(GemmAttrs {
            alpha: 0.5,
            beta: 2.0,
            trans_a: true,
            trans_b: true,
            act: Some(Activation::Tanh),
        }),
        &[m, m, ones],
        vec![f32t(&[4, 4])],
    )[0];
    let pool = |ceil_mode, count_include_pad, storage_order| PoolAttrs {
        kernel: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 2],
        ceil_mode,
        count_include_pad,
        storage_order,
    };
    let mp = node(
        &mut g,
        "maxpool",
        Op::MaxPool(pool(true, false, 1)),
        &[s],
        vec![f32t(&[1, 4, 4, 4]), ty(DType::I64, &[1, 4, 4, 4])],
    );
    node(
        &mut g,
        "maxpool_cip",
        Op::MaxPool(pool(false, true, 0)),
        &[s],
        vec![f32t(&[1, 4, 4, 4])],
    );
    node(
        &mut g,
        "avgpool",
        Op::AveragePool(pool(false, true, 0)),
        &[s],
        vec![f32t(&[1, 4, 4, 4])],
    );
    node(
        &mut g,
        "avgpool_so",
        Op::AveragePool(pool(true, false, 1)),
        &[s],
        vec![f32t(&[1, 4, 4, 4])],
    );
    node(
        &mut g,
        "gap",
        Op::GlobalAveragePool,
        &[s],
        vec![f32t(&[1, 4, 1, 1])],
    );
    node(
        &mut g,
        "gmp",
        Op::GlobalMaxPool,
        &[s],
        vec![f32t(&[1, 4, 1, 1])],
    );
    node(
        &mut g,
        "lrn",
        Op::Lrn {
            size: 5,
            alpha: 2e-4,
            beta: 0.5,
            bias: 2.0,
        },
        &[s],
        vec![t8.clone()],
    );
    let cat = node(
        &mut g,
        "cat",
        Op::Concat { axis: 1 },
        &[s, bn],
        vec![f32t(&[1, 8, 8, 8])],
    )[0];
    let split = node(
        &mut g,
        "split",
        Op::Split {
            axis: 1,
            sizes: vec![3, 5],
        },
        &[cat],
        vec![f32t(&[1, 3, 8, 8]), f32t(&[1, 5, 8, 8])],
    );
    node(
        &mut g,
        "slice",
        Op::Slice {
            axes: vec![
                SliceAxis {
                    axis: 2,
                    start: 1,
                    end: 7,
                    step: 2,
                },
                SliceAxis {
                    axis: 3,
                    start: 7,
                    end: -1,
                    step: -1,
                },
            ],
        },
        &[split[1]],
        vec![f32t(&[1, 5, 3, 8])],
    );
    let rs = node(
        &mut g,
        "reshape",
        Op::Reshape {
            shape: vec![1, 256],
        },
        &[s],
        vec![f32t(&[1, 256])],
    )[0];
    node(
        &mut g,
        "flatten",
        Op::Flatten { axis: 2 },
        &[s],
        vec![f32t(&[4, 64])],
    );
    node(
        &mut g,
        "transpose",
        Op::Transpose {
            perm: vec![0, 2, 3, 1],
        },
        &[s],
        vec![f32t(&[1, 8, 8, 4])],
    );
    let sq = node(
        &mut g,
        "squeeze",
        Op::Squeeze { axes: vec![0] },
        &[rs],
        vec![f32t(&[256])],
    )[0];
    node(
        &mut g,
        "unsqueeze",
        Op::Unsqueeze { axes: vec![0, 2] },
        &[sq],
        vec![f32t(&[1, 256, 1])],
    );
    node(
        &mut g,
        "pad",
        Op::Pad {
            mode: PadMode::Reflect,
            pads: vec![0, 0, 1, -1, 0, 0, 2, -2],
            value: 0.5,
        },
        &[s],
        vec![f32t(&[1, 4, 11, 5])],
    );
    for (i, (mode, coord, nearest)) in [
        (
            ResizeMode::Cubic,
            CoordTransform::TfCropAndResize,
            NearestMode::Ceil,
        ),
        (
            ResizeMode::Linear,
            CoordTransform::HalfPixelSymmetric,
            NearestMode::Floor,
        ),
        (
            ResizeMode::Nearest,
            CoordTransform::PytorchHalfPixel,
            NearestMode::RoundPreferCeil,
        ),
        (
            ResizeMode::Nearest,
            CoordTransform::AlignCorners,
            NearestMode::RoundPreferFloor,
        ),
        (
            ResizeMode::Nearest,
            CoordTransform::Asymmetric,
            NearestMode::RoundPreferFloor,
        ),
        (
            ResizeMode::Linear,
            CoordTransform::HalfPixel,
            NearestMode::RoundPreferFloor,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let crop = coord == CoordTransform::TfCropAndResize;
        node(
            &mut g,
            &format!("resize{i}"),
            Op::Resize(ResizeAttrs {
                sizes: vec![1, 4, 16, 16],
                mode,
                coord,
                nearest,
                scales: vec![1.0, 1.0, 2.0, 2.0],
                roi: if crop {
                    vec![0.0, 0.0, 0.1, 0.2, 1.0, 1.0, 0.9, 0.8]
                } else {
                    vec![]
                },
                cubic_coeff_a: -0.5,
                exclude_outside: crop,
                extrapolation_value: 1.5,
                antialias: crop,
            }),
            &[s],
            vec![f32t(&[1, 4, 16, 16])],
        );
    }
    node(
        &mut g,
        "softmax",
        Op::Softmax {
            axis: 1,
            legacy: true,
        },
        &[gemm],
        vec![f32t(&[4, 4])],
    );
    node(
        &mut g,
        "mean",
        Op::ReduceMean {
            axes: vec![2, 3],
            keepdims: false,
        },
        &[s],
        vec![f32t(&[1, 4])],
    );
    node(&mut g, "id", Op::Identity, &[s], vec![t8.clone()]);
    node(&mut g, "drop", Op::Dropout, &[s], vec![t8.clone()]);
    node(
        &mut g,
        "half",
        Op::Cast { to: DType::F16 },
        &[s],
        vec![ty(DType::F16, &[1, 4, 8, 8])],
    );
    node(
        &mut g,
        "gather",
        Op::Gather { axis: 1 },
        &[mm, idx],
        vec![f32t(&[4, 2])],
    );

    let qt = ty(DType::U8, &[1, 4, 8, 8]).with_quant(Quant::per_tensor(0.0213, 128));
    let q = node(&mut g, "q", Op::Quantize, &[s], vec![qt.clone()])[0];
    node(&mut g, "dq", Op::Dequantize, &[q], vec![t8.clone()]);
    let qw = g.add_const_value(
        "qw",
        generated(
            Generator::Uniform {
                seed: 5,
                low: -100.0,
                high: 100.0,
            },
            DType::I8,
            &[4, 2, 3, 3],
        ),
        Some(Quant::PerAxis {
            axis: 0,
            scales: vec![0.01, 0.02, 0.015, 1e-7],
            zero_points: vec![0, 0, 0, 0],
        }),
    );
    let qb = g.add_const(
        "qb",
        Tensor::new(vec![4], TensorData::I32(vec![1, -2, 300000, i32::MIN])).unwrap(),
        Some(Quant::per_tensor(2.13e-4, 0)),
    );
    let qconv = |act| {
        Op::QConv(ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            groups: 2,
            act,
        })
    };
    node(
        &mut g,
        "qconv",
        qconv(Some(Activation::Relu)),
        &[q, qw, qb],
        vec![qt.clone()],
    );
    let qm = ty(DType::I8, &[4, 4]).with_quant(Quant::per_tensor(0.5, -3));
    let qmm_in = node(&mut g, "qm", Op::Quantize, &[m], vec![qm.clone()])[0];
    node(&mut g, "qmatmul", Op::QMatMul, &[qmm_in, qmm_in], vec![qm]);
    let zp = g.add_const(
        "zp",
        Tensor::new(vec![], TensorData::U8(vec![128])).unwrap(),
        None,
    );
    let raw_q = node(
        &mut g,
        "raw",
        Op::Cast { to: DType::U8 },
        &[s],
        vec![ty(DType::U8, &[1, 4, 8, 8])],
    )[0];
    let raw_w = g.add_const_value(
        "raw_w",
        generated(
            Generator::Uniform {
                seed: 6,
                low: 0.0,
                high: 255.0,
            },
            DType::U8,
            &[4, 2, 3, 3],
        ),
        None,
    );
    node(
        &mut g,
        "convint",
        Op::ConvInteger(conv_plain()),
        &[raw_q, raw_w, zp],
        vec![ty(DType::I32, &[1, 4, 8, 8])],
    );
    let raw_m = node(
        &mut g,
        "raw_m",
        Op::Cast { to: DType::I8 },
        &[m],
        vec![ty(DType::I8, &[4, 4])],
    )[0];
    node(
        &mut g,
        "mmint",
        Op::MatMulInteger,
        &[raw_m, raw_m],
        vec![ty(DType::I32, &[4, 4])],
    );
    node(
        &mut g,
        "dynq",
        Op::DynamicQuantize,
        &[m],
        vec![
            ty(DType::U8, &[4, 4]),
            ty(DType::F32, &[]),
            ty(DType::U8, &[]),
        ],
    );
    let flags = g.add_const(
        "flags",
        Tensor::new(vec![3], TensorData::Bool(vec![true, false, true])).unwrap(),
        None,
    );
    let halfs = g.add_const(
        "halfs",
        Tensor::new(
            vec![2],
            TensorData::F16(vec![half::f16::from_f32(0.1), half::f16::NEG_INFINITY]),
        )
        .unwrap(),
        None,
    );
    let bytes = g.add_const(
        "bytes",
        Tensor::new(vec![2], TensorData::I8(vec![-128, 127])).unwrap(),
        None,
    );
    node(
        &mut g,
        "misc",
        Op::Identity,
        &[flags],
        vec![ty(DType::Bool, &[3])],
    );
    g.set_outputs(vec![ct, mp[0], mp[1], gemm, split[0], halfs, bytes]);
    g
}

fn conv_plain() -> ConvAttrs {
    ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        groups: 1,
        act: None,
    }
}

/// What a graph says, in print order, independent of node ids: per node its name, op,
/// input value names and outputs; then the results.
fn summary_of(g: &Graph) -> Vec<String> {
    let mut lines = Vec::new();
    let numbering = const_numbering(g, &g.topo_order().unwrap());
    for id in g.topo_order().unwrap() {
        let n = g.node(id);
        let op = match &n.op {
            Op::Const(c) => format!(
                "Const(c{}) = {:?}",
                numbering[c],
                g.consts.get(*c).map(describe_const)
            ),
            op => format!("{op:?}"),
        };
        let inputs: Vec<&str> = n.inputs().iter().map(|&v| g.value_name(v)).collect();
        lines.push(format!("{} {op} {inputs:?} {:?}", n.name, n.outputs));
    }
    let outs: Vec<&str> = g.outputs().iter().map(|&v| g.value_name(v)).collect();
    lines.push(format!(
        "name={} inputs={:?} outputs={outs:?}",
        g.name,
        g.inputs().len()
    ));
    lines
}

fn describe_const(c: &ConstValue) -> String {
    match c {
        ConstValue::Data(t) => format!(
            "Data({:?} {:?} {:?})",
            t.dtype(),
            t.shape(),
            t.to_le_bytes()
        ),
        ConstValue::Generated { generator, tensor } => {
            format!(
                "Generated({generator:?} {:?} {:?})",
                tensor.dtype(),
                tensor.shape()
            )
        }
        ConstValue::Opaque { dtype, shape, .. } => format!("Opaque({dtype:?} {shape:?})"),
    }
}

/// `print(parse(print(g))) == print(g)`, returning the text.
fn assert_round_trip(g: &Graph) -> String {
    let text = print_graph(g);
    let parsed = parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let again = print_graph(&parsed);
    assert_eq!(text, again, "printing the parsed graph changed the text");
    text
}

#[test]
fn every_op_round_trips_exactly() {
    let g = every_op_graph();
    let text = assert_round_trip(&g);
    let parsed = parse_graph(&text).unwrap();
    // Everything but the one large data constant (which reads back as opaque) is equal.
    let original = summary_of(&g);
    let back = summary_of(&parsed);
    assert_eq!(original.len(), back.len());
    for (a, b) in original.iter().zip(&back) {
        if a.starts_with("big ") {
            assert!(b.contains("Opaque(F32 [4, 8])"), "{b}");
        } else {
            assert_eq!(a, b);
        }
    }
    // Every op of the IR occurs in the test graph.
    for mnemonic in crate::op::OP_MNEMONICS {
        let present = g.node_ids().any(|n| g.node(n).op.mnemonic() == *mnemonic);
        assert!(present, "the every-op graph lacks {mnemonic}");
    }
}

#[test]
fn printed_form_of_attributes_types_and_constants() {
    let text = print_graph(&every_op_graph());
    for expected in [
        "graph @every_op(%x: f32[1,4,8,8], %m: f32[4,4]) -> (",
        "%w = const @c0 : f32[4,2,3,3] = normal(seed=3, mean=0.0, std=0.1)  // 288 B",
        "%b = const @c1 : f32[4] = uniform(seed=9, low=-0.5, high=0.5)\n",
        "%ones = const @c3 : f32[4] = full(1.0)\n",
        "%ramp = const @c4 : f32[4] = arange(start=-1.0, step=0.5)\n",
        "%conv = conv(%x, %w, %b) {kernel=[3,3], strides=[2,1], pads=[1,0,1,2], dilations=[1,2], \
         groups=2, act=clip(min=0.0, max=6.0)} : f32[1,4,8,8]\n",
        "act=leaky_relu(alpha=0.2)",
        "act=relu}",
        "%act1 = clip(%act0) {min=-inf, max=6.0}",
        "{alpha=0.5, beta=2.0, trans_a=true, trans_b=true, act=tanh}",
        "%maxpool, %maxpool_1 = max_pool(%sum) {kernel=[3,3], strides=[2,2], pads=[1,1,1,1], \
         dilations=[1,2], ceil_mode=true, storage_order=1} : f32[1,4,4,4], i64[1,4,4,4]\n",
        "ceil_mode=false, count_include_pad=true, storage_order=0}",
        "{axes=[2,3], starts=[1,7], ends=[7,-1], steps=[2,-1]}",
        "{mode=reflect, pads=[0,0,1,-1,0,0,2,-2], value=0.5}",
        "mode=cubic, coord=tf_crop_and_resize, nearest=ceil, cubic_coeff_a=-0.5",
        "%half = cast(%sum) {to=f16} : f16[1,4,8,8]",
        "%q = quantize(%sum) : u8[1,4,8,8] q(0.0213, 128)\n",
        ": i8[4,2,3,3] q(axis=0, scales=[0.01, 0.02, 0.015, 1e-7], zps=[0, 0, 0, 0]) = uniform(",
        "= [1, -2, 300000, -2147483648]",
        "= [true, false, true]",
        "%halfs = const @c",
        ": f16[2] = [0.099975586, -inf]",
        "%zp = const @c8 : u8[] = [128]",
        "  return %deconv, %maxpool, %maxpool_1, %gemm, %split, %halfs, %bytes\n}\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // The 32-element data constant prints as a summary: min -3, max 4.75, mean 0.875,
    // std = 0.25·sqrt((32²−1)/12) = 0.25·9.2331 = 2.3083 (population std of an arithmetic
    // sequence with step 0.25).
    assert!(
        text.contains("%big = const @c2 : f32[4,8] = summary(min=-3, max=4.75, mean=0.875, std=2.308)  // 128 B"),
        "{text}"
    );
}

#[test]
fn summarized_constants_parse_as_opaque_and_print_identically() {
    let text = print_graph(&every_op_graph());
    let parsed = parse_graph(&text).unwrap();
    let big = parsed
        .node_ids()
        .find(|&n| parsed.node(n).name == "big")
        .unwrap();
    let Op::Const(id) = parsed.node(big).op else {
        panic!("big is a constant")
    };
    assert!(matches!(
        parsed.consts.get(id),
        Some(ConstValue::Opaque { .. })
    ));
    assert_eq!(
        parsed.consts.tensor(id),
        Err(crate::IrError::OpaqueConst { id: id.0 })
    );
    assert!(parsed
        .const_tensor(ValueId { node: big, port: 0 })
        .is_none());
    // Generated constants come back with their data.
    let w = parsed
        .node_ids()
        .find(|&n| parsed.node(n).name == "w")
        .unwrap();
    assert_eq!(
        parsed
            .const_tensor(ValueId { node: w, port: 0 })
            .map(|t| t.numel()),
        Some(72)
    );
}

#[test]
fn stat_formatting_is_idempotent() {
    let samples = [
        0.0012345678,
        -0.051,
        147456.0,
        9.99996,
        1e-5,
        -3.0e12,
        0.00099999999,
        2.30867,
        1.0,
        123456789.0,
        f64::MIN_POSITIVE,
        f64::MAX,
    ];
    for x in samples {
        let once = fmt_stat(x);
        let twice = fmt_stat(once.parse::<f64>().unwrap());
        assert_eq!(once, twice, "{x}");
    }
    assert_eq!(fmt_stat(0.0012345678), "0.001235");
    assert_eq!(fmt_stat(147456.0), "147500");
    assert_eq!(fmt_stat(9.99996), "10");
    assert_eq!(fmt_stat(1e-5), "1e-5");
    assert_eq!(fmt_stat(-3.0e12), "-3e12");
    assert_eq!(fmt_stat(f64::NAN), "nan");
    assert_eq!(fmt_stat(f64::NEG_INFINITY), "-inf");
}

#[test]
fn constant_numbering_ignores_pool_insertion_order() {
    let build = |swap: bool| {
        let mut g = Graph::new("g");
        let x = g.add_input("x", f32t(&[2]));
        let a = Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap();
        let b = Tensor::from_f32(vec![2], vec![3.0, 4.0]).unwrap();
        // Intern the pool entries in a different order, then use them in the same order.
        let (ia, ib) = if swap {
            let ib = g.consts.intern_tensor(b);
            (g.consts.intern_tensor(a), ib)
        } else {
            let ia = g.consts.intern_tensor(a);
            (ia, g.consts.intern_tensor(b))
        };
        let ca = g.add_const_node("a", ia, f32t(&[2]));
        let cb = g.add_const_node("b", ib, f32t(&[2]));
        let s = node(&mut g, "s", Op::Sum, &[x, ca, cb], vec![f32t(&[2])])[0];
        g.set_outputs(vec![s]);
        g
    };
    let plain = print_graph(&build(false));
    assert_eq!(plain, print_graph(&build(true)));
    assert!(
        plain.contains("%a = const @c0 : f32[2] = [1.0, 2.0]"),
        "{plain}"
    );
    assert!(
        plain.contains("%b = const @c1 : f32[2] = [3.0, 4.0]"),
        "{plain}"
    );
}

#[test]
fn shared_constants_print_their_value_once() {
    let mut g = Graph::new("g");
    let t = Tensor::from_f32(vec![2], vec![0.5, -0.0]).unwrap();
    let a = g.add_const("a", t.clone(), None);
    let b = g.add_const("b", t, Some(Quant::per_tensor(0.5, 0)));
    g.set_outputs(vec![a, b]);
    let text = assert_round_trip(&g);
    assert!(
        text.contains("%a = const @c0 : f32[2] = [0.5, -0.0]\n"),
        "{text}"
    );
    assert!(
        text.contains("%b = const @c0 : f32[2] q(0.5, 0)\n"),
        "{text}"
    );
}

#[test]
fn quoted_names_node_names_and_multi_output_nodes_round_trip() {
    let names = [
        "/layer1/conv/Conv_output_0",
        "onnx::Conv_123",
        "with space",
        "quote\"and\\backslash",
        "tab\tnewline\ncontrol\u{1}",
        "ünïcode→名前",
        "",
        "0",
        "a.b_c",
    ];
    let mut g = Graph::new("my graph: v1");
    let x = g.add_input("input:0", f32t(&[1, 6]));
    // A graph input whose node name differs from its value name.
    g.output_mut(x).name = "renamed input".to_string();
    let mut prev = x;
    for (i, name) in names.iter().enumerate() {
        let outputs = vec![Output {
            name: name.to_string(),
            ty: f32t(&[1, 6]),
        }];
        // Every other node gets a node name different from its output.
        let node_name = if i % 2 == 0 {
            format!("/node {i}")
        } else {
            name.to_string()
        };
        prev = g.add_node_typed(
            node_name,
            Op::Activation(Activation::Relu),
            &[prev],
            outputs,
        )[0];
    }
    let parts = g.add_node_typed(
        "/split",
        Op::Split {
            axis: 1,
            sizes: vec![2, 4],
        },
        &[prev],
        vec![
            Output {
                name: "part:0".into(),
                ty: f32t(&[1, 2]),
            },
            Output {
                name: "part:1".into(),
                ty: f32t(&[1, 4]),
            },
        ],
    );
    g.set_outputs(vec![parts[1], parts[0], prev]);
    crate::verify(&g).unwrap();
    let text = assert_round_trip(&g);
    assert!(
        text.starts_with("graph @\"my graph: v1\"(%\"renamed input\": f32[1,6] @\"input:0\") -> ("),
        "{text}"
    );
    assert!(text.contains("%\"part:0\", %\"part:1\" = split(%a.b_c) {axis=1, sizes=[2,4]} : f32[1,2], f32[1,4] @\"/split\"\n"), "{text}");
    assert!(
        text.contains("%\"tab\\tnewline\\ncontrol\\u{1}\" = relu("),
        "{text}"
    );
    assert!(
        text.contains(
            "%\"/layer1/conv/Conv_output_0\" = relu(%\"renamed input\") : f32[1,6] @\"/node 0\"\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("%a.b_c = relu(%0) : f32[1,6] @\"/node 8\"\n"),
        "{text}"
    );
    let parsed = parse_graph(&text).unwrap();
    assert_eq!(summary_of(&g), summary_of(&parsed));
    assert_eq!(parsed.node(parsed.inputs()[0].node).name, "input:0");
}

#[test]
fn non_finite_and_signed_zero_values_round_trip() {
    let mut g = Graph::new("nf");
    let vals = vec![f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e-45, f32::MAX, 0.1];
    let c = g.add_const("c", Tensor::from_f32(vec![6], vals.clone()).unwrap(), None);
    let n = g.add_const(
        "n",
        Tensor::from_f32(vec![1], vec![f32::NAN]).unwrap(),
        None,
    );
    let clip = node(
        &mut g,
        "clip",
        Op::Activation(Activation::Clip {
            min: f64::NEG_INFINITY,
            max: f64::NAN,
        }),
        &[c],
        vec![f32t(&[6])],
    )[0];
    g.set_outputs(vec![clip, n]);
    let text = assert_round_trip(&g);
    assert!(
        text.contains("= [inf, -inf, -0.0, 1e-45, 3.4028235e38, 0.1]"),
        "{text}"
    );
    assert!(text.contains("{min=-inf, max=nan}"), "{text}");
    assert!(text.contains("= [nan]"), "{text}");
    let parsed = parse_graph(&text).unwrap();
    let c = parsed
        .node_ids()
        .find(|&id| parsed.node(id).name == "c")
        .unwrap();
    let back = parsed.const_tensor(ValueId { node: c, port: 0 }).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(back.as_f32().unwrap()), bits(&vals));
}

#[test]
fn hand_written_text_may_omit_defaults_and_add_comments() {
    let text = "// a hand-written test input
graph @tiny(%x: f32[1,2,4,4]) -> (f32[1,2,4,4]) {   // header
  %w = const @c7 : f32[2,2,3,3] = normal(seed=1, mean=0, std=0.5)
  %y = conv(%x, %w) {kernel=[3,3], pads=[1,1,1,1]} : f32[1,2,4,4]
  %z = batch_norm(%y, %s, %s, %s, %s) : f32[1,2,4,4]
  %s = const @c1 : f32[2] = [1, 2]
  return %z
}";
    let err = parse_graph(text).unwrap_err();
    assert_eq!(
        err,
        crate::IrError::Parse {
            line: 5,
            col: 23,
            msg: "undefined value %s (values must be defined before they are used)".into()
        }
    );
    let fixed = text.replace(
        "  %z = batch_norm(%y, %s, %s, %s, %s) : f32[1,2,4,4]\n  %s = const @c1 : f32[2] = [1, 2]\n",
        "  %s = const @c1 : f32[2] = [1, 2]\n  %z = batch_norm(%y, %s, %s, %s, %s) : f32[1,2,4,4]\n",
    );
    let g = parse_graph(&fixed).unwrap();
    crate::verify(&g).unwrap();
    let text = assert_round_trip(&g);
    assert!(
        text.contains(
            "%y = conv(%x, %w) {kernel=[3,3], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], groups=1} : f32[1,2,4,4]"
        ),
        "{text}"
    );
    assert!(
        text.contains("%z = batch_norm(%y, %s, %s, %s, %s) {epsilon=1e-5}"),
        "{text}"
    );
    assert!(
        text.contains("%w = const @c0 : f32[2,2,3,3] = normal(seed=1, mean=0.0, std=0.5)"),
        "{text}"
    );
    assert!(
        text.contains("%s = const @c1 : f32[2] = [1.0, 2.0]"),
        "{text}"
    );
}

fn parse_err(src: &str) -> (usize, usize, String) {
    match parse_graph(src) {
        Err(crate::IrError::Parse { line, col, msg }) => (line, col, msg),
        other => panic!("expected a parse error for {src:?}, got {other:?}"),
    }
}

#[test]
fn parse_errors_say_where_and_what() {
    let head = "graph @g(%x: f32[2]) -> (f32[2]) {\n";
    let case = |body: &str| parse_err(&format!("{head}{body}\n  return %x\n}}"));

    let (l, c, m) = case("  %y = frobnicate(%x) : f32[2]");
    assert_eq!((l, c), (2, 8));
    assert!(
        m.starts_with("unknown op 'frobnicate' (valid ops: conv, conv_transpose, batch_norm, relu"),
        "{m}"
    );
    assert!(m.contains("matmul_integer)"), "{m}");

    assert_eq!(
        case("  %y = relu(%nope) : f32[2]"),
        (
            2,
            13,
            "undefined value %nope (values must be defined before they are used)".into()
        )
    );
    assert_eq!(
        case("  %y = relu(%x) : f33[2]"),
        (2, 19, "expected a type such as f32[1,3] (dtypes: f32, f16, i8, u8, i32, i64, bool), found 'f33'".into())
    );
    assert_eq!(
        case("  %y = relu(%x) : f32[2,-1]"),
        (
            2,
            25,
            "expected a dimension (a non-negative integer), found -1".into()
        )
    );
    assert_eq!(
        case("  %y = relu(%x) : f32[2"),
        (3, 3, "expected ']', found 'return'".into())
    );
    assert_eq!(
        case("  %y = conv(%x, %x) {strides=[1]} : f32[2]"),
        (2, 8, "conv: missing attribute 'kernel'".into())
    );
    assert_eq!(
        case("  %y = relu(%x) {alpha=1.0} : f32[2]"),
        (
            2,
            18,
            "relu has no attribute 'alpha' (it has no attributes)".into()
        )
    );
    assert_eq!(
        case("  %y = softmax(%x) {axis=0, axes=1} : f32[2]"),
        (
            2,
            29,
            "softmax has no attribute 'axes' (expected one of axis, legacy)".into()
        )
    );
    assert_eq!(
        case("  %y = softmax(%x) {axis=0, axis=1} : f32[2]"),
        (2, 29, "attribute 'axis' given twice (first at 2:21)".into())
    );
    assert_eq!(
        case("  %y = pad(%x) {pads=[1,1], mode=mirror} : f32[4]"),
        (
            2,
            34,
            "expected one of constant, reflect, edge, wrap, found 'mirror'".into()
        )
    );
    assert_eq!(
        case("  %y = gemm(%x, %x) {act=swish} : f32[2]"),
        (2, 26, "unknown activation 'swish' (expected one of relu, clip, leaky_relu, sigmoid, tanh, hard_sigmoid, hard_swish)".into())
    );
    assert_eq!(
        case("  %y = reshape(%x) {shape=[1.5]} : f32[2]"),
        (2, 28, "expected a non-negative integer, found 1.5".into())
    );
    assert_eq!(
        case("  %x = relu(%x) : f32[2]"),
        (2, 3, "value %x is already defined (at 1:10)".into())
    );
    assert_eq!(
        case("  %a, %b = relu(%x) : f32[2]"),
        (2, 21, "2 value(s) defined but 1 type(s) given".into())
    );
    assert_eq!(
        case("  %c = const @c0 : f32[3] = [1.0, 2.0]"),
        (
            2,
            29,
            "a constant of type f32[3] needs 3 values, found 2".into()
        )
    );
    assert_eq!(
        case("  %c = const @c0 : u8[1] = [256]"),
        (2, 29, "expected a u8 value, found 256".into())
    );
    assert_eq!(
        case("  %c = const @c4 : f32[1]"),
        (
            2,
            14,
            "constant @c4 has no value: its first use must give one ('= [..]', a generator such as 'normal(..)', or 'summary(..)')"
                .into()
        )
    );
    assert_eq!(
        case("  %c = const @c0 : f32[1] = [1.0]\n  %d = const @c0 : f32[2]"),
        (3, 20, "constant @c0 is f32[1], not f32[2]".into())
    );
    assert_eq!(
        case("  %c = const @c0 : f32[1] = [1.0]\n  %d = const @c0 : f32[1] = [2.0]"),
        (
            3,
            14,
            "constant @c0 already has a value (given on line 2)".into()
        )
    );
    assert_eq!(
        case("  %c = const @w : f32[1] = [1.0]"),
        (
            2,
            14,
            "expected a constant reference like '@c0', found '@w'".into()
        )
    );
    assert_eq!(
        case("  %c = const @c0 : f32[4] = normal(seed=1, mean=0.0)"),
        (2, 29, "normal: missing 'std'".into())
    );
    assert_eq!(
        case("  %c = const @c0 : f32[4] = full(1.0, 2.0)"),
        (2, 39, "full: 'positional value' given twice".into())
    );
    assert_eq!(
        case("  %c = const @c0 : f32[4] = zeros()"),
        (2, 29, "unknown constant form 'zeros' (expected '[..]', summary, normal, uniform, full or arange)".into())
    );
    assert_eq!(
        case("  %c = const @c0 : f32[1000000,1000000] = full(0.0)"),
        (
            2,
            43,
            "generated constant f32[1000000,1000000] has more than 268435456 elements".into()
        )
    );
    assert_eq!(
        case("  %y = quantize(%x) : u8[2] q(axis=0, scales=[0.1], zps=[0, 0])"),
        (
            2,
            57,
            "per-axis quantization has 1 scales but 2 zero points".into()
        )
    );
    assert_eq!(
        case("  %y = input() : f32[2]"),
        (
            2,
            8,
            "graph inputs are declared in the graph header, not with 'input'".into()
        )
    );

    assert_eq!(
        parse_err("graph @g(%x: f32[2]) -> (f32[3]) {\n  return %x\n}"),
        (
            1,
            26,
            "result 0 is declared f32[3] but %x returned there is f32[2]".into()
        )
    );
    assert_eq!(
        parse_err("graph @g(%x: f32[2]) -> (f32[2]) {\n  return\n}"),
        (
            2,
            3,
            "the graph header declares 1 result(s) but 'return' gives 0".into()
        )
    );
    assert_eq!(
        parse_err("graph @g(%x: f32[2]) -> (f32[2]) {\n  return %x\n} extra"),
        (
            3,
            3,
            "expected end of input after the graph's closing '}', found 'extra'".into()
        )
    );
    assert_eq!(
        parse_err("graph @g(%x: f32[2]) -> (f32[2]) {\n  %y = relu(%x) : f32[2]\n"),
        (
            3,
            1,
            "expected a statement or 'return', found end of input".into()
        )
    );
    assert_eq!(
        parse_err("grahp"),
        (1, 1, "expected 'graph', found 'grahp'".into())
    );
    assert_eq!(
        parse_err(""),
        (1, 1, "expected 'graph', found end of input".into())
    );
}

/// A deterministic stream of pseudo-random numbers for the mutation test (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Random edits of valid text never make the parser panic, and whatever still parses
/// prints to a fixed point.
#[test]
fn mutated_text_never_panics_and_what_parses_round_trips() {
    let text = print_graph(&every_op_graph());
    let chars: Vec<char> = text.chars().collect();
    let alphabet: Vec<char> = "%@\"\\()[]{},:=-> 0123456789.eqinfa_/ü\n".chars().collect();
    let mut rng = Rng(2024);
    let mut parsed_ok = 0;
    for _ in 0..400 {
        let mut s = chars.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(s.len());
            match rng.below(3) {
                0 => {
                    s.remove(at);
                }
                1 => s.insert(at, alphabet[rng.below(alphabet.len())]),
                _ => s[at] = alphabet[rng.below(alphabet.len())],
            }
        }
        let mutated: String = s.into_iter().collect();
        if let Ok(g) = parse_graph(&mutated) {
            parsed_ok += 1;
            assert_round_trip(&g);
        }
    }
    // Truncation at every character boundary of the first lines.
    for end in 0..chars.len().min(600) {
        let prefix: String = chars[..end].iter().collect();
        assert!(parse_graph(&prefix).is_err());
    }
    assert!(
        parsed_ok > 0,
        "some mutations (e.g. in comments or numbers) still parse"
    );
    // Deep nesting is an error, not a stack overflow.
    let deep = format!(
        "graph @g(%x: f32[1]) -> (f32[1]) {{\n  %y = relu(%x) {{a={}}} : f32[1]\n  return %y\n}}",
        "[".repeat(100_000)
    );
    assert_eq!(
        parse_err(&deep),
        (2, 28, "values nested more than 8 deep".into())
    );
}

#[test]
fn kir_test_inputs_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/kir");
    for name in ["conv_bn_relu.kir", "residual_block.kir"] {
        let path = dir.join(name);
        let src =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let g = parse_graph(&src).unwrap_or_else(|e| panic!("{name}: {e}"));
        crate::verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let printed = assert_round_trip(&g);
        // The files are written in printed form, so a dump of them differs from the file
        // only by its leading comment.
        let body: String = src
            .lines()
            .skip_while(|l| l.starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(printed, body, "{name} is not in printed form");
    }
}

/// Broken graphs still print, with the problem visible, and the printed text is rejected
/// rather than silently repaired.
#[test]
fn broken_graphs_print_but_do_not_parse() {
    let mut g = Graph::new("broken");
    let x = g.add_input("x", f32t(&[2]));
    g.add_node_typed("sink", Op::Identity, &[x], vec![]);
    let text = print_graph(&g);
    assert!(
        text.contains("  <node sink (identity) has no outputs>\n"),
        "{text}"
    );
    assert!(parse_graph(&text).is_err());

    let mut g = Graph::new("dangling");
    let x = g.add_input("x", f32t(&[2]));
    let y = node(&mut g, "y", Op::Identity, &[x], vec![f32t(&[2])])[0];
    g.set_outputs(vec![y]);
    g.remove_node(y.node);
    let text = print_graph(&g);
    assert!(text.contains("-> (?) {"), "{text}");
    assert!(text.contains("return %\"?dangling\""), "{text}");
    assert_eq!(parse_err(&text), (1, 33, "unexpected character '?'".into()));

    let mut g = Graph::new("no_pool_entry");
    let c = g.add_const_node("c", crate::pool::ConstId(7), f32t(&[2]));
    g.set_outputs(vec![c]);
    let text = print_graph(&g);
    assert!(
        text.contains("%c = const @c0 : f32[2]  // missing from the constant pool"),
        "{text}"
    );
    assert!(parse_err(&text).2.starts_with("constant @c0 has no value"));
}
