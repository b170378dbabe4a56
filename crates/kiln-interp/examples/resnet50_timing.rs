//! Benchmark: the interpreter on a ResNet-50 (batch 1, 224×224, v1.5 bottlenecks, unfolded
//! BatchNorm) built directly in the IR with seeded random weights — median of 3 runs and where
//! the time goes per op kind. Run `cargo run --release -p kiln-interp --example resnet50_timing`.
//! (The differential suite times the realized ONNX resnet50 the same way, next to onnxruntime.)

use kiln_ir::{
    Activation, BinaryOp, ConvAttrs, GemmAttrs, Generator, Graph, Op, Output, PoolAttrs, Tensor,
    TensorType, ValueId,
};
use std::time::Instant;

struct Builder {
    g: Graph,
    seed: u64,
    count: usize,
}

impl Builder {
    fn name(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{what}_{}", self.count)
    }

    fn constant(&mut self, shape: &[usize], mean: f32, std: f32) -> ValueId {
        self.seed += 1;
        let t = Generator::Normal {
            seed: self.seed,
            mean,
            std,
        }
        .generate(kiln_ir::DType::F32, shape)
        .expect("small shape");
        let name = self.name("w");
        self.g.add_const(name, t, None)
    }

    fn node(&mut self, op: Op, inputs: &[ValueId], shape: Vec<usize>) -> ValueId {
        let name = self.name(op.mnemonic());
        let outputs = vec![Output {
            name: name.clone(),
            ty: TensorType::f32(shape),
        }];
        self.g.add_node_typed(name, op, inputs, outputs)[0]
    }

    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.g.value_type(v).shape.clone()
    }

    /// conv (He-initialized, no bias) + batch norm (+ relu)
    fn conv_bn(
        &mut self,
        x: ValueId,
        c_out: usize,
        k: usize,
        stride: usize,
        relu: bool,
    ) -> ValueId {
        let s = self.shape(x);
        let (c_in, h, w) = (s[1], s[2], s[3]);
        let pad = k / 2;
        let std = (2.0 / (c_in * k * k) as f32).sqrt();
        let weight = self.constant(&[c_out, c_in, k, k], 0.0, std);
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        let attrs = ConvAttrs {
            kernel: vec![k, k],
            strides: vec![stride, stride],
            pads: vec![pad; 4],
            dilations: vec![1, 1],
            groups: 1,
            act: None,
        };
        let y = self.node(Op::Conv(attrs), &[x, weight], vec![1, c_out, oh, ow]);
        let scale = self.constant(&[c_out], 1.0, 0.1);
        let bias = self.constant(&[c_out], 0.0, 0.1);
        let mean = self.constant(&[c_out], 0.0, 0.1);
        let var = self.constant(&[c_out], 1.0, 0.05);
        let bn = self.node(
            Op::BatchNorm { epsilon: 1e-5 },
            &[y, scale, bias, mean, var],
            vec![1, c_out, oh, ow],
        );
        if relu {
            self.node(
                Op::Activation(Activation::Relu),
                &[bn],
                vec![1, c_out, oh, ow],
            )
        } else {
            bn
        }
    }

    fn bottleneck(&mut self, x: ValueId, width: usize, stride: usize) -> ValueId {
        let c_in = self.shape(x)[1];
        let a = self.conv_bn(x, width, 1, 1, true);
        let b = self.conv_bn(a, width, 3, stride, true);
        let c = self.conv_bn(b, width * 4, 1, 1, false);
        let shortcut = if stride != 1 || c_in != width * 4 {
            self.conv_bn(x, width * 4, 1, stride, false)
        } else {
            x
        };
        let s = self.shape(c);
        let sum = self.node(Op::Binary(BinaryOp::Add), &[c, shortcut], s.clone());
        self.node(Op::Activation(Activation::Relu), &[sum], s)
    }
}

fn resnet50() -> Graph {
    let mut b = Builder {
        g: Graph::new("resnet50"),
        seed: 0,
        count: 0,
    };
    let x = b.g.add_input("data", TensorType::f32(vec![1, 3, 224, 224]));
    let stem = b.conv_bn(x, 64, 7, 2, true);
    let pool = PoolAttrs {
        kernel: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
        storage_order: 0,
    };
    let mut v = b.node(Op::MaxPool(pool), &[stem], vec![1, 64, 56, 56]);
    for (stage, (&blocks, &width)) in [3, 4, 6, 3].iter().zip(&[64, 128, 256, 512]).enumerate() {
        for i in 0..blocks {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            v = b.bottleneck(v, width, stride);
        }
    }
    let gap = b.node(Op::GlobalAveragePool, &[v], vec![1, 2048, 1, 1]);
    let flat = b.node(Op::Flatten { axis: 1 }, &[gap], vec![1, 2048]);
    let fc_w = b.constant(&[1000, 2048], 0.0, 0.02);
    let fc_b = b.constant(&[1000], 0.0, 0.01);
    let gemm = GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
        act: None,
    };
    let logits = b.node(Op::Gemm(gemm), &[flat, fc_w, fc_b], vec![1, 1000]);
    let probs = b.node(
        Op::Softmax {
            axis: 1,
            legacy: false,
        },
        &[logits],
        vec![1, 1000],
    );
    b.g.set_outputs(vec![probs]);
    b.g
}

fn main() {
    let g = resnet50();
    let input = Generator::Uniform {
        seed: 99,
        low: -1.0,
        high: 1.0,
    }
    .generate(kiln_ir::DType::F32, &[1, 3, 224, 224])
    .expect("small shape");
    let mut times = Vec::new();
    let mut first: Option<Tensor> = None;
    for _ in 0..3 {
        let t0 = Instant::now();
        let out = kiln_interp::run(&g, std::slice::from_ref(&input)).expect("resnet50 runs");
        times.push(t0.elapsed().as_secs_f64());
        let probs = out[0].as_f32().expect("f32 output");
        let total: f32 = probs.iter().sum();
        if (total - 1.0).abs() >= 1e-3 {
            eprintln!("warning: softmax sums to {total}, not 1");
        }
        if first.as_ref().is_some_and(|f| !f.bitwise_eq(&out[0])) {
            eprintln!("warning: repeated runs are not bit-identical");
        }
        first = Some(out[0].clone());
    }
    // where the time goes: the gap before each value is observed is its node's run time
    let mut per_op: std::collections::BTreeMap<&'static str, f64> = Default::default();
    let mut last = Instant::now();
    kiln_interp::run_observed(&g, std::slice::from_ref(&input), &mut |v, _| {
        let now = Instant::now();
        *per_op.entry(g.node(v.node).op.mnemonic()).or_default() += (now - last).as_secs_f64();
        last = now;
    })
    .expect("resnet50 runs");
    for (op, t) in &per_op {
        println!("  {op:<22} {t:.3} s");
    }
    times.sort_by(f64::total_cmp);
    println!(
        "resnet50 batch 1: median {:.3} s over {} runs ({} threads)",
        times[times.len() / 2],
        times.len(),
        kiln_interp::gemm::default_threads()
    );
}
