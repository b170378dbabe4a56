//! f32 local response normalization across channels (`Op::Lrn`, ONNX LRN):
//! `y = x / (bias + alpha/size · Σ x²)^beta`, the sum over the channels
//! `c − ⌊(size−1)/2⌋ ..= c + ⌈(size−1)/2⌉` clipped to the tensor. [`LrnKernel`] runs 4
//! spatial positions per F32X4 step (a row's last `inner % 4` one at a time through the
//! same vector code), summing the squares in the interpreter's channel order, so the sum
//! and the base `bias + scale · sq` are bit-exact; the power is specialized at compile
//! time: `beta` 1, 0.5, 0.75 (`sqrt(d)·sqrt(sqrt(d))`, two correctly rounded square roots)
//! and 0.25 exactly up to a few roundings, any other `beta` as `exp(beta · ln d)` with the
//! polynomial `exp` of the activations and the `ln` below (within ~2e-6 relative of
//! `powf` for bases up to 1e6).

use crate::clif::{counted_loop, mem, scaled, splat_f32, splat_i32, vcast};
use crate::fact::exp;
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::tensor_io::{check_same_len, f32_operand, f32_result, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{DType, Tensor, TensorType};

const OP: &str = "lrn";

/// `(x, out)`.
type LrnFn = unsafe extern "C" fn(*const f32, *mut f32);

/// How `d^beta` is computed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Power {
    One,
    Half,
    Quarter,
    ThreeQuarters,
    /// `exp(beta · ln d)`.
    General(f32),
}

/// A compiled LRN.
pub struct LrnKernel {
    shape: Vec<usize>,
    len: usize,
    function: LrnFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(LrnKernel, code);

impl LrnKernel {
    /// LRN of an f32 `[N, C, spatial..]` tensor of type `x_ty` (the output has its type).
    pub fn compile(
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<LrnKernel, CodegenError> {
        let shape = &x_ty.shape;
        if shape.len() < 3 || size == 0 {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!(
                    "lrn of {shape:?} with size {size}: needs [N, C, spatial..] and size ≥ 1"
                ),
            });
        }
        if x_ty.dtype != DType::F32 || x_ty.quant.is_some() {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!("input {x_ty}, expected (unquantized) f32"),
            });
        }
        let len = x_ty.numel();
        if 4 * len > i32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "the tensor exceeds the kernel's 32-bit offsets".to_string(),
            });
        }
        let power = match beta {
            1.0 => Power::One,
            0.5 => Power::Half,
            0.25 => Power::Quarter,
            0.75 => Power::ThreeQuarters,
            other => Power::General(other),
        };
        let geometry = Geometry {
            batch: shape[0],
            channels: shape[1],
            inner: shape[2..].iter().product(),
            before: (size - 1) / 2,
            after: (size - 1).div_ceil(2),
            scale: alpha / size as f32,
            bias,
            power,
        };
        let mut jit = Jit::host(options)?;
        let func = build_function(&jit, &geometry);
        let name = format!("lrn_{}", shape_name(shape));
        // SAFETY: `build_function` builds two pointer parameters and no results — `LrnFn`;
        // the kernel owns `jit`, so the code outlives every call.
        let function: LrnFn = unsafe { jit.compile_as(&name, func)? };
        Ok(LrnKernel {
            shape: shape.clone(),
            len,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn run_into(&self, x: &[f32], out: &mut [f32]) -> Result<(), CodegenError> {
        check_same_len(self.name(), x.len(), out.len(), self.len)?;
        // SAFETY: valid while `self.code` lives; the function reads and writes `len`
        // elements of `x` and `out`, whose lengths are checked above.
        unsafe { (self.function)(x.as_ptr(), out.as_mut_ptr()) };
        Ok(())
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let mut out = vec![0f32; self.len];
        self.run_into(f32_operand(self.name(), x, Some(&self.shape))?, &mut out)?;
        f32_result(self.name(), &self.shape, out)
    }
}

struct Geometry {
    batch: usize,
    channels: usize,
    inner: usize,
    before: usize,
    after: usize,
    scale: f32,
    bias: f32,
    power: Power,
}

fn build_function(jit: &Jit, g: &Geometry) -> Function {
    jit.define_kernel(2, |b, p| emit_lrn(b, g, p[0], p[1]))
}

/// For every image and channel `c`, the channel window `lo..hi` (run-time values: one loop
/// serves every channel), then the positions 4 at a time and the rest one at a time.
fn emit_lrn(b: &mut FunctionBuilder, g: &Geometry, x: Value, out: Value) {
    let plane = 4 * g.inner;
    let acc = b.declare_var(types::F32X4);
    counted_loop(b, g.batch, |b, n| {
        let image = b.ins().imul_imm_u(n, (plane * g.channels) as i64);
        let xs = b.ins().iadd(x, image);
        let os = b.ins().iadd(out, image);
        counted_loop(b, g.channels, |b, c| {
            // lo = max(c − before, 0), hi = min(c + after + 1, C)
            let zero = b.ins().iconst(types::I64, 0);
            let start = b.ins().iadd_imm_s(c, -(g.before as i64));
            let below = b.ins().icmp(IntCC::SignedLessThan, start, zero);
            let lo = b.ins().select(below, zero, start);
            let end = b.ins().iadd_imm_u(c, (g.after + 1) as i64);
            let limit = b.ins().iconst(types::I64, g.channels as i64);
            let past = b.ins().icmp(IntCC::SignedGreaterThan, end, limit);
            let hi = b.ins().select(past, limit, end);
            let window = b.ins().isub(hi, lo);
            let first = scaled(b, xs, lo, plane);
            let centre_x = scaled(b, xs, c, plane);
            let centre_out = scaled(b, os, c, plane);
            let positions = |b: &mut FunctionBuilder, offset: Value, width: usize| {
                let load = |b: &mut FunctionBuilder, base: Value| {
                    let addr = b.ins().iadd(base, offset);
                    if width == 4 {
                        b.ins().load(types::F32X4, mem().with_readonly(), addr, 0)
                    } else {
                        let s = b.ins().load(types::F32, mem().with_readonly(), addr, 0);
                        b.ins().splat(types::F32X4, s)
                    }
                };
                let zero = splat_f32(b, 0.0);
                b.def_var(acc, zero);
                crate::clif::counted_loop_dyn(b, window, |b, k| {
                    let row = scaled(b, first, k, plane);
                    let v = load(b, row);
                    let sq = b.ins().fmul(v, v);
                    let s = b.use_var(acc);
                    let s = b.ins().fadd(s, sq);
                    b.def_var(acc, s);
                });
                let sum = b.use_var(acc);
                let scale = splat_f32(b, g.scale);
                let scaled_sum = b.ins().fmul(scale, sum);
                let bias = splat_f32(b, g.bias);
                let base = b.ins().fadd(bias, scaled_sum);
                let denominator = power(b, base, g.power);
                let v = load(b, centre_x);
                let y = b.ins().fdiv(v, denominator);
                let addr = b.ins().iadd(centre_out, offset);
                if width == 4 {
                    b.ins().store(mem(), y, addr, 0);
                } else {
                    let s = b.ins().extractlane(y, 0);
                    b.ins().store(mem(), s, addr, 0);
                }
            };
            counted_loop(b, g.inner / 4, |b, i| {
                let offset = b.ins().ishl_imm_u(i, 4);
                positions(b, offset, 4);
            });
            for i in g.inner / 4 * 4..g.inner {
                let offset = b.ins().iconst(types::I64, (4 * i) as i64);
                positions(b, offset, 1);
            }
        });
    });
}

/// `d^beta` lane-wise.
fn power(b: &mut FunctionBuilder, d: Value, power: Power) -> Value {
    match power {
        Power::One => d,
        Power::Half => b.ins().sqrt(d),
        Power::Quarter => {
            let s = b.ins().sqrt(d);
            b.ins().sqrt(s)
        }
        Power::ThreeQuarters => {
            let s = b.ins().sqrt(d);
            let q = b.ins().sqrt(s);
            b.ins().fmul(s, q)
        }
        Power::General(beta) => {
            let l = ln(b, d);
            let beta = splat_f32(b, beta);
            let t = b.ins().fmul(l, beta);
            exp(b, t)
        }
    }
}

/// Natural logarithm of positive normal F32X4 lanes: `d = m · 2^e` with `m` in
/// `[√½, √2)`, `ln m = 2·atanh(s)`, `s = (m − 1)/(m + 1)` (|s| ≤ 0.1716), by its series
/// to `s^11` (the next term is below 2e-10 relative), plus `e · ln 2` in two parts. Zero,
/// subnormal, negative or non-finite lanes are not LRN bases (the base is `bias` plus a
/// non-negative sum) and give unspecified values.
fn ln(b: &mut FunctionBuilder, d: Value) -> Value {
    let bits = vcast(b, types::I32X4, d);
    // shift the mantissa range to [√½, √2): subtract the bits of √½ before splitting
    let offset = splat_i32(b, 0x3f35_04f3);
    let shifted = b.ins().isub(bits, offset);
    let e = b.ins().sshr_imm_u(shifted, 23);
    let mantissa_mask = splat_i32(b, 0x007f_ffff);
    let m_bits = b.ins().band(shifted, mantissa_mask);
    let m_bits = b.ins().iadd(m_bits, offset);
    let m = vcast(b, types::F32X4, m_bits);
    let one = splat_f32(b, 1.0);
    let num = b.ins().fsub(m, one);
    let den = b.ins().fadd(m, one);
    let s = b.ins().fdiv(num, den);
    let s2 = b.ins().fmul(s, s);
    // 2·(s + s³/3 + s⁵/5 + … + s¹¹/11) by Horner in s²
    let mut p = splat_f32(b, 2.0 / 11.0);
    for k in [9.0f32, 7.0, 5.0, 3.0, 1.0] {
        let c = splat_f32(b, 2.0 / k);
        let t = b.ins().fmul(p, s2);
        p = b.ins().fadd(t, c);
    }
    let ln_m = b.ins().fmul(p, s);
    let e = b.ins().fcvt_from_sint(types::F32X4, e);
    // ln 2 = 0.693359375 + (−2.121944400e-4): the first part has few bits, so e·hi is exact
    let hi = splat_f32(b, 0.693_359_4);
    let lo = splat_f32(b, -2.121_944_4e-4);
    let e_lo = b.ins().fmul(e, lo);
    let r = b.ins().fadd(ln_m, e_lo);
    let e_hi = b.ins().fmul(e, hi);
    b.ins().fadd(r, e_hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general power against `f32::powf` over bases from 1e-6 to 1e6 (through an LRN
    /// of one channel with alpha 0: `y = x / bias^beta`): the rounding of `ln d` (a few
    /// ulps of up to 14) is multiplied by `beta`, so the relative error grows to ~2e-6.
    #[test]
    fn general_power_is_close_to_powf() {
        let x_ty = TensorType::new(DType::F32, vec![1, 1, 3]);
        let xs = [1.0f32, -2.0, 0.5];
        let x = Tensor::from_f32(vec![1, 1, 3], xs.to_vec()).expect("sized");
        for bias in [1e-6f32, 0.37, 1.0, 2.0, 3.5, 1234.5, 9.9e5] {
            for beta in [0.3f32, 0.75, 1.7, -0.5, 0.5, 0.25, 1.0] {
                let k = LrnKernel::compile(1, 0.0, beta, bias, &x_ty, &JitOptions::default())
                    .expect("valid");
                let y = k.run(&x).expect("runs");
                for (&got, &x) in y.as_f32().expect("f32").iter().zip(&xs) {
                    let want = x / bias.powf(beta);
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs(),
                        "bias {bias} beta {beta}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
