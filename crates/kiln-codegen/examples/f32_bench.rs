//! Micro-benchmark of two f32 JIT kernels on PP-OCRv4 det's shapes (320×320 input), single
//! thread: the 2×2 stride-2 ConvTranspose (24 → 1 channel with sigmoid, 24 → 24 with relu)
//! and GlobalAveragePool, each next to its peer measured in the same run (the kernel they
//! replaced: the ConvTranspose on the conv micro-kernel only, the pool on the window
//! kernel). Prints min and median of both, the speed-up and whether the outputs' bits
//! agree (an FNV-1a hash of each).
//!
//! `cargo run --release -p kiln-codegen --example f32_bench [-- --runs R] [--asm]`
//! (`--asm`: print each ConvTranspose phase 0's machine code listing).

use kiln_codegen::testing::Lcg;
use kiln_codegen::{FConvTransposeKernel, FConvTransposeNode, JitOptions, PoolKernel, PoolKind};
use kiln_ir::{Activation, ConvTransposeAttrs, DType, PoolAttrs, Tensor, TensorData, TensorType};
use std::time::Instant;

/// Deterministic pseudo-random floats in [-1, 1) (an LCG): only timing and the hash matter.
fn floats(len: usize, seed: u64) -> Vec<f32> {
    let mut lcg = Lcg::new(seed);
    (0..len).map(|_| lcg.unit_f32() * 2.0 - 1.0).collect()
}

/// FNV-1a over the output's bits.
fn hash(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325, |h, v| {
        v.to_bits().to_le_bytes().iter().fold(h, |h, &byte| {
            (h ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
        })
    })
}

/// Min and median of sorted times, in ms.
fn min_median(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[0] * 1e3, times[times.len() / 2] * 1e3)
}

/// Times `new` and its `peer` (the previous kernel) alternately, 10 rounds of `runs / 10`
/// after a warm-up (the machine may be shared: interleaving exposes both to the same
/// load); prints min and median of each, the ratio of the minima and the output hashes.
fn report(label: &str, runs: usize, mut new: impl FnMut() -> u64, mut peer: impl FnMut() -> u64) {
    let (hash_new, hash_peer) = (new(), peer());
    let (mut t_new, mut t_peer) = (Vec::new(), Vec::new());
    let time = |f: &mut dyn FnMut() -> u64| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    for _ in 0..10 {
        for _ in 0..runs.div_ceil(10) {
            t_new.push(time(&mut new));
        }
        for _ in 0..runs.div_ceil(10) {
            t_peer.push(time(&mut peer));
        }
    }
    let (new_min, new_median) = min_median(&mut t_new);
    let (peer_min, peer_median) = min_median(&mut t_peer);
    println!("{label}");
    println!("  new   min {new_min:.3} ms  median {new_median:.3} ms  (hash {hash_new:016x})");
    println!("  peer  min {peer_min:.3} ms  median {peer_median:.3} ms  (hash {hash_peer:016x})");
    println!(
        "  speed-up {:.2}x (min), {:.2}x (median); bit-identical: {}",
        peer_min / new_min,
        peer_median / new_median,
        hash_new == hash_peer
    );
}

fn conv_transpose(
    runs: usize,
    c_in: usize,
    c_out: usize,
    size: usize,
    act: Activation,
    asm: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let attrs = ConvTransposeAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        output_padding: vec![0, 0],
        groups: 1,
        act: Some(act.clone()),
    };
    let x_ty = TensorType::new(DType::F32, vec![1, c_in, size, size]);
    let out_ty = TensorType::new(DType::F32, vec![1, c_out, 2 * size, 2 * size]);
    let w = Tensor::new(
        vec![c_in, c_out, 2, 2],
        TensorData::F32(floats(c_in * c_out * 4, 7)),
    )?;
    let bias = Tensor::new(vec![c_out], TensorData::F32(floats(c_out, 11)))?;
    let node = FConvTransposeNode {
        attrs: &attrs,
        x_ty: &x_ty,
        w: &w,
        bias: Some(&bias),
        out_ty: &out_ty,
    };
    let options = JitOptions {
        capture_disassembly: asm,
        ..JitOptions::default()
    };
    let kernel = FConvTransposeKernel::compile(&node, &options)?;
    if let Some(listing) = kernel.phase_disassembly(0) {
        println!("{listing}");
    }
    let peer = FConvTransposeKernel::compile_on_micro_kernel(&node, &options)?;
    let x = floats(c_in * size * size, 3);
    let run = |kernel: &'static FConvTransposeKernel| {
        let mut out = vec![0f32; out_ty.shape.iter().product()];
        let mut scratch = kernel.new_scratch();
        let x = x.clone();
        move || {
            kernel
                .run_into(&x, &mut out, &mut scratch)
                .expect("buffers fit the kernel");
            hash(&out)
        }
    };
    // leaked: the benchmark runs once, and the closures may then own their buffers
    let (kernel, peer) = (Box::leak(Box::new(kernel)), Box::leak(Box::new(peer)));
    let label = format!(
        "conv_transpose 2x2 s2 {c_in}->{c_out} {size}x{size} {act:?} (peer: micro-kernel only)"
    );
    report(&label, runs, run(kernel), run(peer));
    Ok(())
}

fn global_average_pool(
    runs: usize,
    channels: usize,
    size: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let x_ty = TensorType::new(DType::F32, vec![1, channels, size, size]);
    let options = JitOptions::default();
    let kernel = PoolKernel::compile_global(PoolKind::Average, &x_ty, &options)?;
    let attrs = PoolAttrs {
        kernel: vec![size, size],
        strides: vec![1, 1],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
        storage_order: 0,
    };
    let peer = PoolKernel::compile_on_window_kernel(PoolKind::Average, &attrs, &x_ty, &options)?;
    let x = floats(channels * size * size, 5);
    let run = |kernel: &'static PoolKernel| {
        let (mut out, mut scratch) = (vec![0f32; channels], kernel.new_scratch());
        let x = x.clone();
        move || {
            kernel
                .run_into(&x, &mut out, &mut scratch)
                .expect("buffers fit the kernel");
            hash(&out)
        }
    };
    let label =
        format!("global_average_pool [1, {channels}, {size}, {size}] (peer: window kernel)");
    // leaked: the benchmark runs once, and the closures may then own their buffers
    let (kernel, peer) = (Box::leak(Box::new(kernel)), Box::leak(Box::new(peer)));
    report(&label, runs, run(kernel), run(peer));
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(50), |v| v.parse())?;
    let asm = args.iter().any(|a| a == "--asm");
    conv_transpose(runs, 24, 1, 160, Activation::Sigmoid, asm)?;
    conv_transpose(runs, 24, 24, 80, Activation::Relu, asm)?;
    global_average_pool(runs, 96, 80)?;
    global_average_pool(runs, 24, 40)?;
    global_average_pool(runs, 25, 7)?;
    Ok(())
}
