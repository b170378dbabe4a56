//! Micro-benchmark of the int8 average pool (`PoolKernel::compile_int8_average`) against
//! the f32 island it replaces — the Dequantize kernel, the f32 pool, the Quantize kernel —
//! on ShuffleNet's four average pools (three 3×3 stride-2 shortcuts and the final 7×7
//! global pool) and an Inception-style 3×3 stride-1 pool: single thread, the two timed
//! alternately, median of `--runs` runs each, outputs checked equal bit for bit.
//!
//! `cargo run --release -p kiln-codegen --example int8_pool_bench [-- --runs R]`

use kiln_codegen::testing::Lcg;
use kiln_codegen::{DequantizeKernel, JitOptions, PoolKernel, PoolKind, QuantizeKernel};
use kiln_ir::{DType, PoolAttrs, Quant, TensorType};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .map_or(Ok(100), |v| v.parse::<usize>())?
        .max(1);
    // (model, input shape, window; 0: global, stride, pad)
    let pools: [(&str, [usize; 4], usize, usize, usize); 5] = [
        ("shufflenet", [1, 24, 56, 56], 3, 2, 1),
        ("shufflenet", [1, 136, 28, 28], 3, 2, 1),
        ("shufflenet", [1, 272, 14, 14], 3, 2, 1),
        ("shufflenet", [1, 544, 7, 7], 0, 0, 0),
        ("inception", [1, 256, 28, 28], 3, 1, 1),
    ];
    let options = JitOptions::default();
    let mut lcg = Lcg::new(0x2545_F491_4F6C_DD1D);
    println!(
        "{:<11} {:<18} {:>7} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "model", "input", "window", "dq ms", "pool ms", "q ms", "int8 ms", "ratio"
    );
    for (model, shape, window, stride, pad) in pools {
        let n: usize = shape.iter().product();
        let x: Vec<u8> = (0..n).map(|_| lcg.next_u32() as u8).collect();
        let x_ty =
            TensorType::new(DType::U8, shape.to_vec()).with_quant(Quant::per_tensor(0.03, 100));
        let f32_ty = TensorType::new(DType::F32, shape.to_vec());
        let attrs = PoolAttrs {
            kernel: if window == 0 {
                vec![shape[2], shape[3]]
            } else {
                vec![window; 2]
            },
            strides: vec![stride.max(1); 2],
            pads: vec![pad; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        };
        let pool = PoolKernel::compile(PoolKind::Average, &attrs, &f32_ty, &options)?;
        let out_shape = pool.output_shape().to_vec();
        let m: usize = out_shape.iter().product();
        let y_ty =
            TensorType::new(DType::U8, out_shape.clone()).with_quant(Quant::per_tensor(0.02, 100));
        let dequantize = DequantizeKernel::compile(&x_ty, &f32_ty, &options)?;
        let quantize =
            QuantizeKernel::compile(&TensorType::new(DType::F32, out_shape), &y_ty, &options)?;
        let int8 = PoolKernel::compile_int8_average(&attrs, &x_ty, &y_ty, &options)?;
        let (mut xf, mut pooled, mut want, mut got) =
            (vec![0f32; n], vec![0f32; m], vec![0u8; m], vec![0u8; m]);
        let (mut pool_scratch, mut int8_scratch) = (pool.new_scratch(), int8.new_scratch());
        let [mut t_dq, mut t_pool, mut t_q, mut t_int8] = [(); 4].map(|_| Vec::with_capacity(runs));
        for i in 0..runs + 3 {
            let t = Instant::now();
            dequantize.run_into(&x, &mut xf)?;
            let a = t.elapsed().as_secs_f64();
            pool.run_into(&xf, &mut pooled, &mut pool_scratch)?;
            let b = t.elapsed().as_secs_f64();
            quantize.run_into(&pooled, &mut want)?;
            let c = t.elapsed().as_secs_f64();
            let t = Instant::now();
            int8.run_int8_into(&x, &mut got, &mut int8_scratch)?;
            let d = t.elapsed().as_secs_f64();
            if i >= 3 {
                t_dq.push(a);
                t_pool.push(b - a);
                t_q.push(c - b);
                t_int8.push(d);
            }
        }
        if want != got {
            return Err(format!("{model} {shape:?}: the int8 pool differs from the island").into());
        }
        let island = median(t_dq.clone()) + median(t_pool.clone()) + median(t_q.clone());
        println!(
            "{model:<11} {:<18} {:>7} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>5.2}×",
            format!("{shape:?}"),
            if window == 0 {
                "global".to_string()
            } else {
                format!("{window}x{window} s{stride}")
            },
            median(t_dq) * 1e3,
            median(t_pool) * 1e3,
            median(t_q) * 1e3,
            median(t_int8.clone()) * 1e3,
            island / median(t_int8)
        );
    }
    Ok(())
}
