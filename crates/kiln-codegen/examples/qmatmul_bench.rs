//! Micro-benchmark of the JIT QMatMul kernel: u8 `a` `[M, K]` times a constant i8 `b`
//! `[K, N]` quantized per column, single thread, as GMAC/s and MACs/cycle next to the peak
//! of the bare inner-product loop (DESIGN §9) and the reference interpreter.
//!
//! `cargo run --release -p kiln-codegen --example qmatmul_bench [-- --m M --k K --n N
//! --runs R --no-vnni]` (default 256 × 512 × 512).

use kiln_codegen::probe::probe_host;
use kiln_codegen::testing::Lcg;
use kiln_codegen::{InnerProduct, JitOptions, QMatMulKernel, QMatMulNode, QMatMulTuning};
use kiln_ir::{DType, Op, Quant, Tensor, TensorData, TensorType};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let m: usize = flag("--m").map_or(Ok(256), |v| v.parse())?;
    let k: usize = flag("--k").map_or(Ok(512), |v| v.parse())?;
    let n: usize = flag("--n").map_or(Ok(512), |v| v.parse())?;
    let runs: usize = flag("--runs").map_or(Ok(30), |v| v.parse())?;
    let allow_vnni = !args.iter().any(|a| a == "--no-vnni");

    // deterministic pseudo-random contents (an LCG): only the timing matters here
    let mut lcg = Lcg::new(0x2545_F491_4F6C_DD1D);
    let mut next = move || lcg.next_u32();
    let a = Tensor::new(
        vec![m, k],
        TensorData::U8((0..m * k).map(|_| next() as u8).collect()),
    )?;
    let b = Tensor::new(
        vec![k, n],
        TensorData::I8((0..k * n).map(|_| next() as i8).collect()),
    )?;
    let a_ty = TensorType::new(DType::U8, vec![m, k]).with_quant(Quant::per_tensor(0.02, 128));
    let b_ty = TensorType::new(DType::I8, vec![k, n]).with_quant(Quant::PerAxis {
        axis: 1,
        scales: (0..n).map(|i| 0.0001 + 0.00001 * i as f32).collect(),
        zero_points: vec![0; n],
    });
    let y_ty = TensorType::new(DType::U8, vec![m, n]).with_quant(Quant::per_tensor(0.05, 100));
    let node = QMatMulNode {
        a_ty: &a_ty,
        b_ty: &b_ty,
        b: Some(&b),
        out_ty: &y_ty,
    };
    let probe = probe_host(300)?;
    let t = Instant::now();
    let tuning = QMatMulTuning {
        allow_vnni,
        ..QMatMulTuning::default()
    };
    let kernel = QMatMulKernel::compile(&node, &JitOptions::default(), &tuning)?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let TensorData::U8(av) = a.data() else {
        unreachable!("a was built as u8")
    };
    let mut out = vec![0u8; m * n];
    let mut scratch = kernel.new_scratch();
    for _ in 0..3 {
        kernel.run_into(av, &mut out, &mut scratch)?;
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            kernel
                .run_into(av, &mut out, &mut scratch)
                .expect("buffers were checked by the warm-up runs");
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let (median, best) = (times[times.len() / 2], times[0]);

    let t = Instant::now();
    let want = kiln_interp::eval_op(
        &Op::QMatMul,
        &[&a, &b],
        &[&a_ty, &b_ty],
        std::slice::from_ref(&y_ty),
    )?;
    let interp_s = t.elapsed().as_secs_f64();
    let exact = want[0].data() == &TensorData::U8(out);

    let macs = kernel.macs() as f64;
    let peak = match (kernel.inner_product(), probe.vpdpbusd_macs_per_second) {
        (InnerProduct::Vpdpbusd, Some(rate)) => rate,
        _ => probe.pmaddwd_macs_per_second,
    };
    println!(
        "qmatmul {m}x{k} * {k}x{n}, u8 x i8 per-column; tile {:?}, inner product {:?}",
        kernel.tile(),
        kernel.inner_product()
    );
    println!("  MACs per run          {:.1} M", macs / 1e6);
    println!("  compile               {compile_ms:.1} ms");
    println!(
        "  jit median of {runs:<3}     {:.3} ms (best {:.3} ms)",
        median * 1e3,
        best * 1e3
    );
    println!(
        "  jit (median)          {:.1} GMAC/s, {:.2} MACs/cycle, {:.0} % of the bare loop \
         ({:.1} GMAC/s)",
        macs / median / 1e9,
        macs / median / probe.clock_hz,
        100.0 * macs / median / peak,
        peak / 1e9
    );
    println!(
        "  interpreter (1 run)   {:.1} ms ({:.1}x the jit)",
        interp_s * 1e3,
        interp_s / median
    );
    println!("  bit-exact vs interp   {exact}");
    if !exact {
        return Err("the JIT result differs from the interpreter".into());
    }
    Ok(())
}
