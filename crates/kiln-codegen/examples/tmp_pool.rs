use kiln_codegen::{DequantizeKernel, JitOptions, PoolKernel, PoolKind, QuantizeKernel};
use kiln_ir::{DType, PoolAttrs, Quant, Tensor, TensorData, TensorType};
use std::time::Instant;
fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
fn main() {
    let shape = vec![1usize, 136, 28, 28];
    let attrs = PoolAttrs {
        kernel: vec![3, 3],
        strides: vec![2, 2],
        pads: vec![1; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
        count_include_pad: false,
        storage_order: 0,
    };
    let x_ty = TensorType::new(DType::U8, shape.clone()).with_quant(Quant::per_tensor(0.03, 100));
    let f_ty = TensorType::new(DType::F32, shape.clone());
    let y_ty =
        TensorType::new(DType::U8, vec![1, 136, 14, 14]).with_quant(Quant::per_tensor(0.02, 100));
    let o = JitOptions {
        capture_disassembly: true,
        verify: Some(false),
    };
    let n: usize = shape.iter().product();
    let x = Tensor::new(
        shape.clone(),
        TensorData::U8((0..n).map(|i| (i * 7 % 251) as u8).collect()),
    )
    .unwrap();
    let int8 = PoolKernel::compile_int8_average(&attrs, &x_ty, &y_ty, &o).unwrap();
    let dq = DequantizeKernel::compile(&x_ty, &f_ty, &o).unwrap();
    let pool = PoolKernel::compile(PoolKind::Average, &attrs, &f_ty, &o).unwrap();
    let q = QuantizeKernel::compile(
        &TensorType::new(DType::F32, vec![1, 136, 14, 14]),
        &y_ty,
        &o,
    )
    .unwrap();
    let xb = x.to_le_bytes();
    let mut out = vec![0u8; 136 * 196];
    let mut s = int8.new_scratch();
    let mut ps = pool.new_scratch();
    let mut f = vec![0f32; n];
    let mut pf = vec![0f32; 136 * 196];
    let mut qo = vec![0u8; 136 * 196];
    let (mut a, mut b, mut c, mut d) = (vec![], vec![], vec![], vec![]);
    let TensorData::U8(xv) = x.data() else {
        panic!()
    };
    for _ in 0..200 {
        let t = Instant::now();
        int8.run_int8_into(&xb, &mut out, &mut s).unwrap();
        a.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        dq.run_into(xv, &mut f).unwrap();
        b.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        pool.run_into(&f, &mut pf, &mut ps).unwrap();
        c.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        q.run_into(&pf, &mut qo).unwrap();
        d.push(t.elapsed().as_secs_f64());
    }
    assert_eq!(out, qo);
    println!(
        "int8 {:.4} ms | dq {:.4} pool {:.4} q {:.4}",
        med(a) * 1e3,
        med(b) * 1e3,
        med(c) * 1e3,
        med(d) * 1e3
    );
    std::fs::write("/tmp/pb/int8.s", int8.disassembly().unwrap_or("")).unwrap();
}
