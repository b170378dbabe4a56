//! Micro-benchmark of the JIT int8 MaxPool kernel: ResNet's stem pool (3×3, stride 2,
//! pad 1) on u8 `[1, 64, 112, 112]`, single thread, next to the reference interpreter.
//!
//! `cargo run --release -p kiln-codegen --example maxpool_bench [-- --runs R --channels C
//! --size S]`

use kiln_codegen::testing::Lcg;
use kiln_codegen::{JitOptions, MaxPoolKernel};
use kiln_ir::{DType, Op, PoolAttrs, Tensor, TensorData, TensorType};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let runs: usize = flag("--runs").map_or(Ok(30), |v| v.parse())?;
    let c: usize = flag("--channels").map_or(Ok(64), |v| v.parse())?;
    let hw: usize = flag("--size").map_or(Ok(112), |v| v.parse())?;
    // deterministic pseudo-random contents (an LCG): only the timing matters here
    let mut lcg = Lcg::new(0x2545_F491_4F6C_DD1D);
    let data: Vec<u8> = (0..c * hw * hw).map(|_| lcg.next_u32() as u8).collect();
    let shape = vec![1, c, hw, hw];
    let x = Tensor::new(shape.clone(), TensorData::U8(data.clone()))?;
    let x_ty = TensorType::new(DType::U8, shape);
    let attrs = PoolAttrs {
        kernel: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
        storage_order: 0,
    };
    let t = Instant::now();
    let kernel = MaxPoolKernel::compile(&attrs, &x_ty, &JitOptions::default())?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut out = vec![0u8; kernel.output_shape().iter().product()];
    let mut scratch = kernel.new_scratch();
    for _ in 0..3 {
        kernel.run_into(&data, &mut out, &mut scratch)?;
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            kernel
                .run_into(&data, &mut out, &mut scratch)
                .expect("buffers were checked by the warm-up runs");
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let out_ty = TensorType::new(DType::U8, kernel.output_shape().to_vec());
    let t = Instant::now();
    let want = kiln_interp::eval_op(
        &Op::MaxPool(attrs),
        &[&x],
        &[&x_ty],
        std::slice::from_ref(&out_ty),
    )?;
    let interp_s = t.elapsed().as_secs_f64();
    let exact = want[0].data() == &TensorData::U8(out);
    println!(
        "max_pool 3x3 s2 p1, u8 [1, {c}, {hw}, {hw}] -> {:?}",
        kernel.output_shape()
    );
    println!("  compile               {compile_ms:.1} ms");
    println!(
        "  jit median of {runs:<3}     {:.3} ms (best {:.3} ms)",
        times[times.len() / 2] * 1e3,
        times[0] * 1e3
    );
    println!("  interpreter (1 run)   {:.2} ms", interp_s * 1e3);
    println!("  bit-exact vs interp   {exact}");
    if !exact {
        return Err("the JIT result differs from the interpreter".into());
    }
    Ok(())
}
