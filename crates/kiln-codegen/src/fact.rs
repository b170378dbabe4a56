//! f32 activations on F32X4 vectors, shared by the f32 kernels' epilogues (Conv, Gemm) and
//! the standalone activation kernel: the interpreter's `activate_f32` lane by lane, with
//! `exp` (for sigmoid and tanh) as an inline polynomial instead of a libm call.
//!
//! `exp` is Cephes `expf`: `x = n·ln2 + r` with `n = round(x·log2 e)` and `ln2` split in two
//! (`0.693359375` exact in 9 bits, minus `2.12194440e-4`), so `r ∈ [−ln2/2, ln2/2]` is exact
//! up to one rounding; `e^r ≈ 1 + r + r²·P(r)` with Cephes' degree-5 minimax `P` (relative
//! error below 2·2⁻²⁴ on that interval, Cephes' documented bound for IEEE single); `2ⁿ` is
//! applied as two normal powers `2^(n>>1) · 2^(n − (n>>1))` so that subnormal results
//! (down to `e⁻¹⁰⁴`, where f32 `exp` reaches 0) are rounded once, like libm's. The argument
//! is clamped to `[−104, 88.5]`: below, the true result rounds to 0 or the smallest
//! subnormal; above, kiln never asks (sigmoid and tanh only take `exp` of `−|x|`).
//! Tanh uses Cephes `tanhf`'s odd polynomial for `|x| < 0.625` (where `1 − 2/(e²ˣ+1)` would
//! cancel) and `(1 − e)/(1 + e)`, `e = exp(−2|x|)`, above, with the sign put back.

// The polynomial coefficients are written digit for digit as Cephes publishes them, so that
// they can be checked against the source; a few have more digits than an f32 holds.
#![allow(clippy::excessive_precision)]

use crate::clif::{splat_f32, splat_i32, vcast};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::Activation;

/// `cond ? a : b` lane-wise, `cond` an F32X4 comparison result.
fn select(b: &mut FunctionBuilder, cond: Value, a: Value, c: Value) -> Value {
    let mask = vcast(b, types::F32X4, cond);
    b.ins().bitselect(mask, a, c)
}

/// `v < bound ? bound : v` (a NaN stays NaN, as the interpreter's `if x < lo { lo }`).
fn raise_to(b: &mut FunctionBuilder, v: Value, bound: Value) -> Value {
    let below = b.ins().fcmp(FloatCC::LessThan, v, bound);
    select(b, below, bound, v)
}

/// `v > bound ? bound : v` (a NaN stays NaN).
fn lower_to(b: &mut FunctionBuilder, v: Value, bound: Value) -> Value {
    let above = b.ins().fcmp(FloatCC::GreaterThan, v, bound);
    select(b, above, bound, v)
}

/// `v.clamp(lo, hi)` with Rust's NaN rule (NaN stays NaN).
fn clamp(b: &mut FunctionBuilder, v: Value, lo: f32, hi: f32) -> Value {
    let lo = splat_f32(b, lo);
    let hi = splat_f32(b, hi);
    let v = raise_to(b, v, lo);
    lower_to(b, v, hi)
}

/// `a·x + c`, Horner step.
fn mul_add(b: &mut FunctionBuilder, a: Value, x: Value, c: f32) -> Value {
    let c = splat_f32(b, c);
    let p = b.ins().fmul(a, x);
    b.ins().fadd(p, c)
}

/// `e^x` lane-wise (the module comment gives the method and its error).
pub(crate) fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let x = clamp(b, x, -104.0, 88.5);
    let log2e = splat_f32(b, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    let c1 = splat_f32(b, 0.693_359_4);
    let c2 = splat_f32(b, -2.121_944_4e-4);
    let nc1 = b.ins().fmul(n, c1);
    let r = b.ins().fsub(x, nc1);
    let nc2 = b.ins().fmul(n, c2);
    let r = b.ins().fsub(r, nc2);
    let p = splat_f32(b, 1.987_569_1e-4);
    let p = mul_add(b, p, r, 1.398_199_9e-3);
    let p = mul_add(b, p, r, 8.333_452e-3);
    let p = mul_add(b, p, r, 4.166_579_6e-2);
    let p = mul_add(b, p, r, 1.666_666_5e-1);
    let p = mul_add(b, p, r, 5.000_000_1e-1);
    let r2 = b.ins().fmul(r, r);
    let p = b.ins().fmul(p, r2);
    let p = b.ins().fadd(p, r);
    let one = splat_f32(b, 1.0);
    let p = b.ins().fadd(p, one);
    // 2^n as 2^n1 · 2^n2, n1 = n >> 1, n2 = n − n1: n ∈ [−150, 128] after the clamp, so
    // both factors are normal and p·2^n1 is too; a subnormal result is rounded once, at the
    // last product
    let n = b.ins().fcvt_to_sint_sat(types::I32X4, n);
    let n1 = b.ins().sshr_imm_u(n, 1);
    let n2 = b.ins().isub(n, n1);
    let p = times_power_of_two(b, p, n1);
    times_power_of_two(b, p, n2)
}

/// `p · 2^k` for I32X4 `k` in [−126, 127] (the exponent field written directly).
fn times_power_of_two(b: &mut FunctionBuilder, p: Value, k: Value) -> Value {
    let bias = splat_i32(b, 127);
    let e = b.ins().iadd(k, bias);
    let e = b.ins().ishl_imm_u(e, 23);
    let scale = vcast(b, types::F32X4, e);
    b.ins().fmul(p, scale)
}

/// `|x|` and the sign bit of `x` (as an I32X4 mask value).
fn abs_and_sign(b: &mut FunctionBuilder, x: Value) -> (Value, Value) {
    let bits = vcast(b, types::I32X4, x);
    let sign_mask = splat_i32(b, i32::MIN);
    let sign = b.ins().band(bits, sign_mask);
    let abs = b.ins().band_not(bits, sign_mask);
    (vcast(b, types::F32X4, abs), sign)
}

fn with_sign(b: &mut FunctionBuilder, abs: Value, sign: Value) -> Value {
    let bits = vcast(b, types::I32X4, abs);
    let signed = b.ins().bor(bits, sign);
    vcast(b, types::F32X4, signed)
}

/// The interpreter's overflow-free logistic: `1/(1+e)` for `x ≥ 0`, `e/(1+e)` below, with
/// `e = exp(−|x|)`.
fn sigmoid(b: &mut FunctionBuilder, x: Value) -> Value {
    let (abs, _) = abs_and_sign(b, x);
    let neg = b.ins().fneg(abs);
    let e = exp(b, neg);
    let one = splat_f32(b, 1.0);
    let denom = b.ins().fadd(one, e);
    let pos = b.ins().fdiv(one, denom);
    let negative = b.ins().fdiv(e, denom);
    let zero = splat_f32(b, 0.0);
    let non_negative = b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, zero);
    select(b, non_negative, pos, negative)
}

fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let (abs, sign) = abs_and_sign(b, x);
    // |x| ≥ 0.625: (1 − e)/(1 + e), e = exp(−2|x|)
    let minus_two = splat_f32(b, -2.0);
    let arg = b.ins().fmul(abs, minus_two);
    let e = exp(b, arg);
    let one = splat_f32(b, 1.0);
    let num = b.ins().fsub(one, e);
    let den = b.ins().fadd(one, e);
    let large = b.ins().fdiv(num, den);
    // |x| < 0.625: Cephes tanhf, |x| + |x|³·Q(x²)
    let z = b.ins().fmul(abs, abs);
    let q = splat_f32(b, -5.704_988_7e-3);
    let q = mul_add(b, q, z, 2.063_908_9e-2);
    let q = mul_add(b, q, z, -5.373_971_6e-2);
    let q = mul_add(b, q, z, 1.333_144_2e-1);
    let q = mul_add(b, q, z, -3.333_328_2e-1);
    let q = b.ins().fmul(q, z);
    let q = b.ins().fmul(q, abs);
    let small = b.ins().fadd(q, abs);
    let limit = splat_f32(b, 0.625);
    let is_small = b.ins().fcmp(FloatCC::LessThan, abs, limit);
    let magnitude = select(b, is_small, small, large);
    with_sign(b, magnitude, sign)
}

/// `act(v)` lane-wise on an F32X4, the interpreter's `activate_f32` expressions.
pub(crate) fn activate(b: &mut FunctionBuilder, act: &Activation, v: Value) -> Value {
    match *act {
        Activation::Relu => {
            let zero = splat_f32(b, 0.0);
            raise_to(b, v, zero)
        }
        Activation::Clip { min, max } => {
            let (lo, hi) = (splat_f32(b, min as f32), splat_f32(b, max as f32));
            let v = raise_to(b, v, lo);
            lower_to(b, v, hi)
        }
        Activation::LeakyRelu { alpha } => {
            let zero = splat_f32(b, 0.0);
            let alpha = splat_f32(b, alpha);
            let scaled = b.ins().fmul(v, alpha);
            let negative = b.ins().fcmp(FloatCC::LessThan, v, zero);
            select(b, negative, scaled, v)
        }
        Activation::Sigmoid => sigmoid(b, v),
        Activation::Tanh => tanh(b, v),
        Activation::HardSigmoid { alpha, beta } => {
            let alpha = splat_f32(b, alpha);
            let t = mul_add(b, alpha, v, beta);
            clamp(b, t, 0.0, 1.0)
        }
        Activation::HardSwish => {
            let sixth = splat_f32(b, 1.0 / 6.0);
            let t = mul_add(b, v, sixth, 0.5);
            let t = clamp(b, t, 0.0, 1.0);
            b.ins().fmul(v, t)
        }
    }
}
