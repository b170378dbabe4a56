//! Micro-benchmark of the JIT QConv kernel: an int8 3×3 conv 64 → 64 on 56×56 (pad 1,
//! u8 activations, per-channel i8 weights, bias, fused ReLU), single thread, reported as
//! GMAC/s and MACs/cycle next to the peak of the bare `pmaddwd` (or `vpdpbusd`) loop
//! measured the same way (DESIGN §9), and next to the reference interpreter on the same problem.
//!
//! `cargo run --release -p kiln-codegen --example qconv_bench [-- --runs N --disasm FILE]`
//! (`--channels C --size S` change the layer, `--rows R --cols V` the micro-kernel tile,
//! `--no-vnni` forces the `pmaddwd` inner product on VNNI hosts). `--depthwise` benchmarks a
//! 3×3 depthwise conv instead (96 channels by default, `groups == C`), through the depthwise
//! kernel, or through the general micro-kernel with `--general`.
//!
//! `--dw-suite` instead times the depthwise layers of PP-OCRv4 det and ShuffleNet (3×3 and
//! 5×5, strides 1 and 2, their channel counts and sizes; u8 activations, ReLU) through the
//! depthwise kernel, one line per shape: best and median of `--runs` runs and GMAC/s from
//! the best, checked bit-exact against the interpreter (`--no-vnni`, `--rows`, `--cols` and
//! `--disasm` apply; `--only I` runs just the layer of index `I`).
//!
//! `--general-suite` times the small-K general-path layers of ShuffleNet and PP-OCRv4 det
//! (3-channel stems, grouped and narrow 1×1 convs) the same way, plus the widening step
//! alone (`widen ms`, and its share of the best time), checked against the interpreter.
//!
//! `--epilogue-suite` times the residual-add layers of ResNet-50 and ShuffleNet (the 1×1
//! convs whose output a `quantize(relu(dequantize(y) + dequantize(r)))` island reads) two
//! ways, alternating: the conv then the fused-chain kernel (`y` written and read back), and
//! the conv with the island in its epilogue (`QConvKernel::compile_fused`); the same for a
//! `dequantize(y)` to f32 after the conv. Both outputs are checked equal, bit for bit.

use kiln_codegen::probe::probe_host;
use kiln_codegen::testing::Lcg;
use kiln_codegen::{
    ChainArg, ChainNode, ChainOp, ElementwiseChainKernel, InnerProduct, JitOptions, QConvEpilogue,
    QConvKernel, QConvNode, QConvPath, QConvTuning,
};
use kiln_ir::{Activation, BinaryOp, ConvAttrs, DType, Op, Quant, Tensor, TensorData, TensorType};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A depthwise layer of the suite: `channels` channels, a `size`×`size` input, a
/// `kernel`×`kernel` window with pad `kernel / 2` ("same" at stride 1).
struct DwShape {
    model: &'static str,
    channels: usize,
    size: usize,
    kernel: usize,
    stride: usize,
}

/// The depthwise layers of PP-OCRv4 det (640×640 input) and ShuffleNet (224×224).
const DW_SUITE: [DwShape; 15] = [
    DwShape {
        model: "ppocr",
        channels: 16,
        size: 160,
        kernel: 3,
        stride: 1,
    },
    DwShape {
        model: "ppocr",
        channels: 32,
        size: 160,
        kernel: 3,
        stride: 2,
    },
    DwShape {
        model: "ppocr",
        channels: 48,
        size: 80,
        kernel: 3,
        stride: 1,
    },
    DwShape {
        model: "ppocr",
        channels: 48,
        size: 80,
        kernel: 3,
        stride: 2,
    },
    DwShape {
        model: "ppocr",
        channels: 96,
        size: 40,
        kernel: 3,
        stride: 1,
    },
    DwShape {
        model: "ppocr",
        channels: 96,
        size: 40,
        kernel: 3,
        stride: 2,
    },
    DwShape {
        model: "ppocr",
        channels: 192,
        size: 20,
        kernel: 5,
        stride: 1,
    },
    DwShape {
        model: "ppocr",
        channels: 192,
        size: 20,
        kernel: 5,
        stride: 2,
    },
    DwShape {
        model: "ppocr",
        channels: 384,
        size: 10,
        kernel: 5,
        stride: 1,
    },
    DwShape {
        model: "shufflenet",
        channels: 112,
        size: 56,
        kernel: 3,
        stride: 2,
    },
    DwShape {
        model: "shufflenet",
        channels: 136,
        size: 28,
        kernel: 3,
        stride: 1,
    },
    DwShape {
        model: "shufflenet",
        channels: 136,
        size: 28,
        kernel: 3,
        stride: 2,
    },
    DwShape {
        model: "shufflenet",
        channels: 272,
        size: 14,
        kernel: 3,
        stride: 1,
    },
    DwShape {
        model: "shufflenet",
        channels: 272,
        size: 14,
        kernel: 3,
        stride: 2,
    },
    DwShape {
        model: "shufflenet",
        channels: 544,
        size: 7,
        kernel: 3,
        stride: 1,
    },
];

/// Time every [`DW_SUITE`] layer through the depthwise kernel (one line each).
/// `only`: just the layer of that index; `disasm`: write the last layer's listing there.
fn dw_suite(
    runs: usize,
    tuning: QConvTuning,
    only: Option<usize>,
    disasm: Option<&String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut next = lcg();
    println!(
        "{:<11} {:>4} {:>9} {:>7} {:>8} {:>9} {:>9} {:>8}  inner",
        "model", "ch", "in→out", "kernel", "MACs(M)", "best ms", "median ms", "GMAC/s"
    );
    for (index, shape) in DW_SUITE.iter().enumerate() {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let (c, k, s) = (shape.channels, shape.kernel, shape.stride);
        let mut layer = SuiteLayer::new(
            &mut next,
            [c, c, c],
            shape.size,
            k,
            s,
            &tuning,
            disasm.is_some(),
        )?;
        layer.write_disassembly(disasm, false)?;
        let (best, med) =
            layer.time_and_check(runs, &format!("{} {c}ch {k}x{k} s{s}", shape.model))?;
        let kernel = &layer.kernel;
        let macs = kernel.macs() as f64;
        println!(
            "{:<11} {c:>4} {:>9} {:>7} {:>8.2} {:>9.3} {:>9.3} {:>8.1}  {:?}{}",
            shape.model,
            format!("{}→{}", shape.size, layer.out_size),
            format!("{k}x{k} s{s}"),
            macs / 1e6,
            best * 1e3,
            med * 1e3,
            macs / best / 1e9,
            kernel.inner_product(),
            if kernel.path() == QConvPath::Depthwise {
                ""
            } else {
                " (general path)"
            },
        );
    }
    Ok(())
}

/// One layer of a suite, built and compiled: `c_in → c_out` in `groups` groups, a
/// `size`×`size` u8 input (zero point 128), per-channel i8 weights, an i32 bias, pad
/// `kernel / 2`, ReLU, u8 output; contents from `next`.
struct SuiteLayer {
    x: Tensor,
    w: Tensor,
    b: Tensor,
    types: [TensorType; 4],
    attrs: ConvAttrs,
    kernel: QConvKernel,
    out_size: usize,
}

impl SuiteLayer {
    fn new(
        next: &mut impl FnMut() -> u32,
        [ci, co, g]: [usize; 3],
        size: usize,
        k: usize,
        s: usize,
        tuning: &QConvTuning,
        capture_disassembly: bool,
    ) -> Result<SuiteLayer, Box<dyn std::error::Error>> {
        let out_size = (size + 2 * (k / 2) - k) / s + 1;
        let cin_g = ci / g;
        let x = Tensor::new(
            vec![1, ci, size, size],
            TensorData::U8((0..ci * size * size).map(|_| next() as u8).collect()),
        )?;
        let w = Tensor::new(
            vec![co, cin_g, k, k],
            TensorData::I8((0..co * cin_g * k * k).map(|_| next() as i8).collect()),
        )?;
        let b = Tensor::new(
            vec![co],
            TensorData::I32((0..co).map(|_| (next() % 20000) as i32 - 10000).collect()),
        )?;
        let x_ty = TensorType::new(DType::U8, vec![1, ci, size, size])
            .with_quant(Quant::per_tensor(0.02, 128));
        let w_ty = TensorType::new(DType::I8, vec![co, cin_g, k, k]).with_quant(Quant::PerAxis {
            axis: 0,
            scales: (0..co).map(|i| 0.001 + 0.0001 * (i % 64) as f32).collect(),
            zero_points: vec![0; co],
        });
        let b_ty = TensorType::new(DType::I32, vec![co]);
        let y_ty = TensorType::new(DType::U8, vec![1, co, out_size, out_size])
            .with_quant(Quant::per_tensor(0.05, 0));
        let attrs = ConvAttrs {
            kernel: vec![k, k],
            strides: vec![s, s],
            pads: vec![k / 2; 4],
            dilations: vec![1, 1],
            groups: g,
            act: Some(Activation::Relu),
        };
        let node = QConvNode {
            attrs: &attrs,
            x_ty: &x_ty,
            w: &w,
            w_ty: &w_ty,
            bias: Some((&b, &b_ty)),
            out_ty: &y_ty,
        };
        let options = JitOptions {
            capture_disassembly,
            verify: Some(false),
        };
        let kernel = QConvKernel::compile(&node, &options, tuning)?;
        Ok(SuiteLayer {
            x,
            w,
            b,
            types: [x_ty, w_ty, b_ty, y_ty],
            attrs,
            kernel,
            out_size,
        })
    }

    /// The node the layer's kernel was compiled from.
    fn node(&self) -> QConvNode<'_> {
        let [x_ty, w_ty, b_ty, y_ty] = &self.types;
        QConvNode {
            attrs: &self.attrs,
            x_ty,
            w: &self.w,
            w_ty,
            bias: Some((&self.b, b_ty)),
            out_ty: y_ty,
        }
    }

    /// The input's elements.
    fn xv(&self) -> &[u8] {
        let TensorData::U8(xv) = self.x.data() else {
            unreachable!("x was built as u8")
        };
        xv
    }

    /// Write the compute function's listing (with the widening step's first when
    /// `with_widen`) to `path`, if given.
    fn write_disassembly(
        &self,
        path: Option<&String>,
        with_widen: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        if let (Some(path), Some(listing)) = (path, self.kernel.disassembly()) {
            if with_widen {
                let widen = self.kernel.widen_disassembly().unwrap_or_default();
                std::fs::write(path, format!("{widen}\n{listing}"))?;
            } else {
                std::fs::write(path, listing)?;
            }
        }
        Ok(())
    }

    /// Three warm-up runs, then `runs` timed ones: `(best, median)` seconds; the output is
    /// then checked bit for bit against the interpreter (`what` names the layer).
    fn time_and_check(
        &mut self,
        runs: usize,
        what: &str,
    ) -> Result<(f64, f64), Box<dyn std::error::Error>> {
        let mut scratch = self.kernel.new_scratch();
        let mut out = vec![0u8; self.types[3].shape.iter().product()];
        for _ in 0..3 {
            self.kernel.run_into(self.xv(), &mut out, &mut scratch)?;
        }
        let times: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                self.kernel
                    .run_into(self.xv(), &mut out, &mut scratch)
                    .expect("buffers were checked by the warm-up runs");
                t.elapsed().as_secs_f64()
            })
            .collect();
        let best = times.iter().copied().fold(f64::INFINITY, f64::min);
        let [x_ty, w_ty, b_ty, y_ty] = &self.types;
        let want = kiln_interp::eval_op(
            &Op::QConv(self.attrs.clone()),
            &[&self.x, &self.w, &self.b],
            &[x_ty, w_ty, b_ty],
            std::slice::from_ref(y_ty),
        )?;
        let TensorData::U8(wv) = want[0].data() else {
            unreachable!("the output type is u8")
        };
        if wv != &out {
            return Err(format!("{what}: differs from the interpreter").into());
        }
        Ok((best, median(times)))
    }

    /// The widening step alone, `runs` times: the best time in seconds.
    fn time_widen(&self, runs: usize) -> f64 {
        let mut scratch = self.kernel.new_scratch();
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                self.kernel
                    .widen_into(self.xv(), &mut scratch)
                    .expect("one image and the kernel's own scratch");
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// A general-path layer of the suite: `c_in → c_out` in `groups` groups, a `size`×`size`
/// input, a `kernel`×`kernel` window at `stride` with pad `kernel / 2`.
struct GeneralShape {
    model: &'static str,
    c_in: usize,
    c_out: usize,
    groups: usize,
    size: usize,
    kernel: usize,
    stride: usize,
}

const fn general(
    model: &'static str,
    c_in: usize,
    c_out: usize,
    groups: usize,
    size: usize,
    kernel: usize,
    stride: usize,
) -> GeneralShape {
    GeneralShape {
        model,
        c_in,
        c_out,
        groups,
        size,
        kernel,
        stride,
    }
}

/// The small-K general-path layers of ShuffleNet (224×224) and PP-OCRv4 det (320×320):
/// the 3-channel stems and the grouped or narrow 1×1 convs.
const GENERAL_SUITE: [GeneralShape; 10] = [
    general("shufflenet", 3, 24, 1, 224, 3, 2),
    general("shufflenet", 24, 112, 4, 56, 1, 1),
    general("shufflenet", 112, 112, 4, 28, 1, 1),
    general("shufflenet", 136, 136, 4, 28, 1, 1),
    general("shufflenet", 272, 272, 4, 14, 1, 1),
    general("shufflenet", 544, 544, 4, 7, 1, 1),
    general("ppocr", 3, 16, 1, 320, 3, 2),
    general("ppocr", 16, 32, 1, 160, 1, 1),
    general("ppocr", 32, 48, 1, 80, 1, 1),
    general("ppocr", 48, 48, 1, 80, 1, 1),
];

/// Time every [`GENERAL_SUITE`] layer through the general micro-kernel (one line each):
/// the whole kernel and its widening step alone, best and median of `runs` runs.
fn general_suite(
    runs: usize,
    tuning: QConvTuning,
    only: Option<usize>,
    disasm: Option<&String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut next = lcg();
    println!(
        "{:<11} {:>9} {:>3} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7}  tile",
        "model",
        "cin→cout",
        "g",
        "in→out",
        "kernel",
        "MACs(M)",
        "best ms",
        "med ms",
        "widen ms",
        "GMAC/s",
        "widen%"
    );
    for (index, shape) in GENERAL_SUITE.iter().enumerate() {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        let (k, s, g) = (shape.kernel, shape.stride, shape.groups);
        let (ci, co, size) = (shape.c_in, shape.c_out, shape.size);
        let mut layer = SuiteLayer::new(
            &mut next,
            [ci, co, g],
            size,
            k,
            s,
            &tuning,
            disasm.is_some(),
        )?;
        layer.write_disassembly(disasm, true)?;
        let what = format!("{} {ci}→{co} g{g} {k}x{k} s{s}", shape.model);
        let (best, med) = layer.time_and_check(runs, &what)?;
        let widen_best = layer.time_widen(runs);
        let kernel = &layer.kernel;
        let macs = kernel.macs() as f64;
        let (mr, nc) = kernel.tile();
        println!(
            "{:<11} {:>9} {g:>3} {:>9} {:>7} {:>7.2} {:>8.3} {:>8.3} {:>8.3} {:>8.1} {:>6.0}%  {mr}x{nc} {:?}",
            shape.model,
            format!("{ci}→{co}"),
            format!("{size}→{}", layer.out_size),
            format!("{k}x{k} s{s}"),
            macs / 1e6,
            best * 1e3,
            med * 1e3,
            widen_best * 1e3,
            macs / best / 1e9,
            100.0 * widen_best / best,
            kernel.inner_product(),
        );
    }
    Ok(())
}

/// The 1×1 convs whose outputs ResNet-50 (224×224) and ShuffleNet add to a residual.
const EPILOGUE_SUITE: [GeneralShape; 7] = [
    general("resnet50", 64, 256, 1, 56, 1, 1),
    general("resnet50", 128, 512, 1, 28, 1, 1),
    general("resnet50", 256, 1024, 1, 14, 1, 1),
    general("resnet50", 512, 2048, 1, 7, 1, 1),
    general("shufflenet", 136, 136, 4, 28, 1, 1),
    general("shufflenet", 272, 272, 4, 14, 1, 1),
    general("shufflenet", 544, 544, 4, 7, 1, 1),
];

/// Time every [`EPILOGUE_SUITE`] layer with two chains after it — the residual add
/// `quantize(relu(dequantize(y) + dequantize(r)))` (u8 out) and `dequantize(y)` (f32 out)
/// — as conv + chain kernel and as one fused kernel, alternating run by run: median of
/// `runs` each, their ratio, and the conv and chain alone.
fn epilogue_suite(
    runs: usize,
    tuning: QConvTuning,
    disasm: Option<&String>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut next = lcg();
    println!(
        "{:<11} {:>9} {:>3} {:>5} {:<10} {:>8} {:>8} {:>13} {:>8} {:>6}",
        "model",
        "cin→cout",
        "g",
        "size",
        "chain",
        "conv ms",
        "chain ms",
        "conv+chain ms",
        "fused ms",
        "ratio"
    );
    for shape in &EPILOGUE_SUITE {
        let (ci, co, g, size) = (shape.c_in, shape.c_out, shape.groups, shape.size);
        let layer = SuiteLayer::new(&mut next, [ci, co, g], size, 1, 1, &tuning, false)?;
        let y_ty = layer.types[3].clone();
        let shape_of = |dtype, scale, zp| {
            TensorType::new(dtype, y_ty.shape.clone()).with_quant(Quant::per_tensor(scale, zp))
        };
        let f32_ty = TensorType::new(DType::F32, y_ty.shape.clone());
        let node = |op, args: Vec<ChainArg>, out_ty: &TensorType| ChainNode {
            op,
            args,
            out_ty: out_ty.clone(),
        };
        let residual = vec![
            node(ChainOp::Dequantize, vec![ChainArg::Operand(0)], &f32_ty),
            node(ChainOp::Dequantize, vec![ChainArg::Operand(1)], &f32_ty),
            node(
                ChainOp::Binary(BinaryOp::Add),
                vec![ChainArg::Node(0), ChainArg::Node(1)],
                &f32_ty,
            ),
            node(
                ChainOp::Activation(Activation::Relu),
                vec![ChainArg::Node(2)],
                &f32_ty,
            ),
            node(
                ChainOp::Quantize,
                vec![ChainArg::Node(3)],
                &shape_of(DType::U8, 0.06, 0),
            ),
        ];
        let dequantize = vec![node(
            ChainOp::Dequantize,
            vec![ChainArg::Operand(0)],
            &f32_ty,
        )];
        let elements: usize = y_ty.shape.iter().product();
        let r: Vec<u8> = (0..elements).map(|_| next() as u8).collect();
        let cases = [
            (
                "residual",
                vec![y_ty.clone(), shape_of(DType::U8, 0.04, 0)],
                residual,
            ),
            ("dequantize", vec![y_ty.clone()], dequantize),
        ];
        for (what, operands, chain) in cases {
            let options = JitOptions {
                capture_disassembly: disasm.is_some(),
                verify: Some(false),
            };
            let chain_kernel = ElementwiseChainKernel::compile(&operands, &chain, &options)?;
            let epilogue = QConvEpilogue {
                operands: &operands,
                conv_operand: 0,
                nodes: &chain,
            };
            let fused =
                QConvKernel::compile_fused(&layer.node(), Some(&epilogue), &options, &tuning)?;
            if let (Some(path), Some(listing)) = (disasm, fused.disassembly()) {
                std::fs::write(format!("{path}.{what}"), listing)?;
            }
            let rest: Vec<&[u8]> = if operands.len() == 2 {
                vec![&r]
            } else {
                vec![]
            };
            let out_bytes = chain_kernel.out_ty().byte_size();
            let (mut y, mut want, mut got) = (
                vec![0u8; elements],
                vec![0u8; out_bytes],
                vec![0u8; out_bytes],
            );
            let mut scratch = layer.kernel.new_scratch();
            let mut fused_scratch = fused.new_scratch();
            let [mut both, mut one, mut conv, mut chain_t] = [(); 4].map(|_| Vec::new());
            for i in 0..runs + 3 {
                let t = Instant::now();
                layer.kernel.run_into(layer.xv(), &mut y, &mut scratch)?;
                let t_conv = t.elapsed().as_secs_f64();
                let views: Vec<&[u8]> = std::iter::once(y.as_slice())
                    .chain(rest.iter().copied())
                    .collect();
                chain_kernel.run_into(&views, &mut want)?;
                let t_both = t.elapsed().as_secs_f64();
                let t = Instant::now();
                fused.run_fused_into_threads(layer.xv(), &rest, &mut got, &mut fused_scratch, 1)?;
                let t_fused = t.elapsed().as_secs_f64();
                if i >= 3 {
                    both.push(t_both);
                    conv.push(t_conv);
                    chain_t.push(t_both - t_conv);
                    one.push(t_fused);
                }
            }
            if want != got {
                return Err(format!("{ci}→{co} g{g} {size}² {what}: fused output differs").into());
            }
            let (ma, mb) = (median(both), median(one));
            println!(
                "{:<11} {:>9} {g:>3} {size:>5} {what:<10} {:>8.3} {:>8.3} {:>13.3} {:>8.3} {:>5.2}×",
                shape.model,
                format!("{ci}→{co}"),
                median(conv) * 1e3,
                median(chain_t) * 1e3,
                ma * 1e3,
                mb * 1e3,
                ma / mb
            );
        }
    }
    Ok(())
}

/// Deterministic pseudo-random contents (an LCG): only the timing matters here.
fn lcg() -> impl FnMut() -> u32 {
    let mut lcg = Lcg::new(0x2545_F491_4F6C_DD1D);
    move || lcg.next_u32()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let runs: usize = flag("--runs").map_or(Ok(30), |v| v.parse())?;
    let rows: usize = flag("--rows").map_or(Ok(4), |v| v.parse())?;
    let col_vectors: usize = flag("--cols").map_or(Ok(2), |v| v.parse())?;
    let disasm_path = flag("--disasm");
    let allow_vnni = !args.iter().any(|a| a == "--no-vnni");
    if args.iter().any(|a| a == "--dw-suite") {
        let only = flag("--only").map(|v| v.parse()).transpose()?;
        let tuning = QConvTuning {
            rows,
            col_vectors,
            allow_vnni,
            allow_depthwise: true,
        };
        return dw_suite(runs, tuning, only, disasm_path);
    }
    if args.iter().any(|a| a == "--epilogue-suite") {
        let tuning = QConvTuning {
            rows,
            col_vectors,
            allow_vnni,
            allow_depthwise: false,
        };
        return epilogue_suite(runs, tuning, disasm_path);
    }
    if args.iter().any(|a| a == "--general-suite") {
        let only = flag("--only").map(|v| v.parse()).transpose()?;
        let tuning = QConvTuning {
            rows,
            col_vectors,
            allow_vnni,
            allow_depthwise: false,
        };
        return general_suite(runs, tuning, only, disasm_path);
    }
    let depthwise = args.iter().any(|a| a == "--depthwise");
    let allow_depthwise = !args.iter().any(|a| a == "--general");
    let c: usize = flag("--channels").map_or(Ok(if depthwise { 96 } else { 64 }), |v| v.parse())?;
    // input channels per group
    let cin_g = if depthwise { 1 } else { c };
    let hw: usize = flag("--size").map_or(Ok(56), |v| v.parse())?;

    let mut next = lcg();
    let x = Tensor::new(
        vec![1, c, hw, hw],
        TensorData::U8((0..c * hw * hw).map(|_| next() as u8).collect()),
    )?;
    let w = Tensor::new(
        vec![c, cin_g, 3, 3],
        TensorData::I8((0..c * cin_g * 9).map(|_| next() as i8).collect()),
    )?;
    let b = Tensor::new(
        vec![c],
        TensorData::I32((0..c).map(|_| (next() % 20000) as i32 - 10000).collect()),
    )?;
    let x_ty =
        TensorType::new(DType::U8, vec![1, c, hw, hw]).with_quant(Quant::per_tensor(0.02, 128));
    let w_ty = TensorType::new(DType::I8, vec![c, cin_g, 3, 3]).with_quant(Quant::PerAxis {
        axis: 0,
        scales: (0..c).map(|i| 0.001 + 0.0001 * i as f32).collect(),
        zero_points: vec![0; c],
    });
    let b_ty = TensorType::new(DType::I32, vec![c]);
    let y_ty =
        TensorType::new(DType::U8, vec![1, c, hw, hw]).with_quant(Quant::per_tensor(0.05, 0));
    let attrs = ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        groups: c / cin_g,
        act: Some(Activation::Relu),
    };
    let node = QConvNode {
        attrs: &attrs,
        x_ty: &x_ty,
        w: &w,
        w_ty: &w_ty,
        bias: Some((&b, &b_ty)),
        out_ty: &y_ty,
    };

    let probe = probe_host(300)?;
    let options = JitOptions {
        capture_disassembly: disasm_path.is_some(),
        verify: Some(false),
    };
    let t = Instant::now();
    let kernel = QConvKernel::compile(
        &node,
        &options,
        &QConvTuning {
            rows,
            col_vectors,
            allow_vnni,
            allow_depthwise,
        },
    )?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    if let (Some(path), Some(listing)) = (disasm_path, kernel.disassembly()) {
        std::fs::write(path, listing)?;
    }

    let mut scratch = kernel.new_scratch();
    let TensorData::U8(xv) = x.data() else {
        unreachable!("x was built as u8")
    };
    let mut out = vec![0u8; c * hw * hw];
    for _ in 0..3 {
        kernel.run_into(xv, &mut out, &mut scratch)?;
    }
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            kernel
                .run_into(xv, &mut out, &mut scratch)
                .expect("buffers were checked by the warm-up runs");
            t.elapsed().as_secs_f64()
        })
        .collect();
    let jit_best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let jit_s = median(times);

    // the oracle, for a sanity check of the result and as a baseline
    let op = Op::QConv(attrs.clone());
    let t = Instant::now();
    let want = kiln_interp::eval_op(
        &op,
        &[&x, &w, &b],
        &[&x_ty, &w_ty, &b_ty],
        std::slice::from_ref(&y_ty),
    )?;
    let interp_s = t.elapsed().as_secs_f64();
    let TensorData::U8(wv) = want[0].data() else {
        unreachable!("the output type is u8")
    };
    let exact = wv == &out;

    let macs = kernel.macs() as f64;
    let gmacs = macs / jit_s / 1e9;
    let (peak_name, peak_rate) = match (kernel.inner_product(), probe.vpdpbusd_macs_per_second) {
        (InnerProduct::Vpdpbusd, Some(rate)) => ("vpdpbusd", rate),
        _ => ("pmaddwd", probe.pmaddwd_macs_per_second),
    };
    let peak_gmacs = peak_rate / 1e9;
    println!(
        "qconv 3x3 {c}->{c} (groups {}) on {hw}x{hw}, u8 x i8 per-channel, relu; {:?} path, \
         tile {:?} (pixels, channels), inner product {:?}",
        c / cin_g,
        kernel.path(),
        kernel.tile(),
        kernel.inner_product()
    );
    println!("  MACs per run          {:.1} M", macs / 1e6);
    println!("  compile               {compile_ms:.1} ms");
    println!(
        "  jit median of {runs:<3}     {:.3} ms (best {:.3} ms)",
        jit_s * 1e3,
        jit_best * 1e3
    );
    println!(
        "  jit (median)          {gmacs:.1} GMAC/s, {:.2} MACs/cycle",
        macs / jit_s / probe.clock_hz
    );
    println!(
        "  jit (best)            {:.1} GMAC/s, {:.2} MACs/cycle",
        macs / jit_best / 1e9,
        macs / jit_best / probe.clock_hz
    );
    println!(
        "  pmaddwd loop peak     {:.1} GMAC/s, {:.2} MACs/cycle (best of 300)",
        probe.pmaddwd_macs_per_second / 1e9,
        probe.pmaddwd_macs_per_cycle()
    );
    if let Some(rate) = probe.vpdpbusd_macs_per_second {
        println!(
            "  vpdpbusd loop peak    {:.1} GMAC/s, {:.2} MACs/cycle (best of 300)",
            rate / 1e9,
            rate / probe.clock_hz
        );
    }
    println!("  core clock (measured) {:.2} GHz", probe.clock_hz / 1e9);
    println!(
        "  jit / {peak_name} peak {:.0} % (median), {:.0} % (best)",
        100.0 * gmacs / peak_gmacs,
        100.0 * macs / jit_best / 1e9 / peak_gmacs
    );
    println!(
        "  interpreter (1 run)   {:.1} ms ({:.1}x the jit)",
        interp_s * 1e3,
        interp_s / jit_s
    );
    println!("  bit-exact vs interp   {exact}");
    if !exact {
        return Err("the JIT result differs from the interpreter".into());
    }
    Ok(())
}
