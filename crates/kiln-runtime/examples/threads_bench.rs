//! Time compiled models on 1 and N threads (`Options::threads`): one 3×3 64→64 conv on
//! 56×56 and a ResNet-like chain of int8 convs; checks that every thread count gives the
//! same bits. `cargo run --release -p kiln-runtime --example threads_bench -- [--runs R]
//! [--threads N]`.

use kiln_ir::{
    Activation, ConvAttrs, DType, Graph, Op, Output, PoolAttrs, Quant, Tensor, TensorData,
    TensorType, ValueId,
};
use kiln_runtime::{Model, Options};
use std::time::Instant;

/// xorshift64* for weights and inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

/// A 3×3 conv (pad 1) with random symmetric i8 per-channel weights, bias, ReLU, u8 out.
fn conv(
    g: &mut Graph,
    rng: &mut Rng,
    name: &str,
    x: ValueId,
    c_out: usize,
    stride: usize,
) -> ValueId {
    let shape = g.value_type(x).shape.clone();
    let (n, c_in, height, width) = (shape[0], shape[1], shape[2], shape[3]);
    let weights: Vec<i8> = rng
        .bytes(c_out * c_in * 9)
        .into_iter()
        .map(|b| (b as i8) / 2)
        .collect();
    let w = Tensor::new(vec![c_out, c_in, 3, 3], TensorData::I8(weights)).expect("sized");
    let w_quant = Quant::PerAxis {
        axis: 0,
        scales: vec![0.002; c_out],
        zero_points: vec![0; c_out],
    };
    let w = g.add_const(format!("{name}.w"), w, Some(w_quant));
    let bias: Vec<i32> = rng
        .bytes(c_out)
        .into_iter()
        .map(|b| b as i32 * 8 - 1024)
        .collect();
    let b = g.add_const(
        format!("{name}.b"),
        Tensor::new(vec![c_out], TensorData::I32(bias)).expect("sized"),
        None,
    );
    let out = |d: usize| (d + 2 - 3) / stride + 1;
    let ty = TensorType::new(DType::U8, vec![n, c_out, out(height), out(width)])
        .with_quant(Quant::per_tensor(0.05, 0));
    let attrs = ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![stride; 2],
        pads: vec![1; 4],
        dilations: vec![1, 1],
        groups: 1,
        act: Some(Activation::Relu),
    };
    g.add_node_typed(
        name,
        Op::QConv(attrs),
        &[x, w, b],
        vec![Output {
            name: name.into(),
            ty,
        }],
    )[0]
}

fn input(g: &mut Graph, c: usize, s: usize) -> ValueId {
    g.add_input(
        "x",
        TensorType::new(DType::U8, vec![1, c, s, s]).with_quant(Quant::per_tensor(0.05, 0)),
    )
}

fn single_conv() -> Graph {
    let mut rng = Rng(1);
    let mut g = Graph::new("conv64");
    let x = input(&mut g, 64, 56);
    let y = conv(&mut g, &mut rng, "conv", x, 64, 1);
    g.set_outputs(vec![y]);
    g
}

/// 4 convs 64→64 at 56×56, one stride-2 conv to 128 channels, 3 convs 128→128 at 28×28,
/// a 2×2 max pool and a dequantize: 8 convs, 0.87 G MACs (4 · 115.6 M + 57.8 M + 3 · 115.6 M).
fn resnet_like() -> Graph {
    let mut rng = Rng(2);
    let mut g = Graph::new("chain");
    let mut v = input(&mut g, 64, 56);
    for i in 0..4 {
        v = conv(&mut g, &mut rng, &format!("a{i}"), v, 64, 1);
    }
    v = conv(&mut g, &mut rng, "down", v, 128, 2);
    for i in 0..3 {
        v = conv(&mut g, &mut rng, &format!("b{i}"), v, 128, 1);
    }
    let pool = PoolAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
        storage_order: 0,
    };
    v = g
        .add_node("pool", Op::MaxPool(pool), &[v], vec!["pool".into()])
        .expect("infers")[0];
    v = g
        .add_node("deq", Op::Dequantize, &[v], vec!["deq".into()])
        .expect("infers")[0];
    g.set_outputs(vec![v]);
    g
}

fn median_ms(graph: &Graph, threads: usize, runs: usize, input: &[Tensor]) -> (f64, Vec<Tensor>) {
    let options = Options {
        threads,
        ..Options::default()
    };
    let mut model = Model::from_graph(graph.clone())
        .compile(&options)
        .expect("compiles");
    let out = model.run(input).expect("runs");
    for _ in 0..3 {
        model.run(input).expect("runs");
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            model.run(input).expect("runs");
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[runs / 2], out)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let runs = flag("--runs", 30).max(1);
    let many = flag("--threads", 2);
    println!(
        "available parallelism: {:?}",
        std::thread::available_parallelism()
    );
    for graph in [single_conv(), resnet_like()] {
        let ty = graph.value_type(graph.inputs()[0]).clone();
        let x =
            Tensor::new(ty.shape.clone(), TensorData::U8(Rng(3).bytes(ty.numel()))).expect("sized");
        let input = [x];
        let (one, want) = median_ms(&graph, 1, runs, &input);
        let (split, got) = median_ms(&graph, many, runs, &input);
        let same = want.iter().zip(&got).all(|(a, b)| a.bitwise_eq(b));
        println!(
            "{}: 1 thread {one:.3} ms, {many} threads {split:.3} ms (median of {runs}): \
             speedup {:.2}×, identical: {same}",
            graph.name,
            one / split
        );
        assert!(same, "thread counts disagree");
    }
}
