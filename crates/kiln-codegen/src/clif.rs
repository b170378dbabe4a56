//! Small CLIF-building helpers shared by the kernel generators: a function's entry and
//! exit, counted loops, addresses with constant offsets, vector constants and reinterpreting
//! casts, and the int8 inner product trees that Cranelift's x64 backend turns into single
//! instructions.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    self, types, BlockArg, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

/// A function of `signature` for `target`: `body(builder, parameters)` fills it from the
/// entry block on and gives the values to return from the block it ends in; every block is
/// sealed at the end (kernels build loops with block parameters, never use-before-def
/// across unsealed blocks).
pub(crate) fn define_function_returning(
    signature: Signature,
    target: TargetFrontendConfig,
    body: impl FnOnce(&mut FunctionBuilder, &[Value]) -> Vec<Value>,
) -> Function {
    let mut func = Function::with_name_signature(UserFuncName::default(), signature);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let results = body(&mut b, &params);
    b.ins().return_(&results);
    b.seal_all_blocks();
    b.finalize(target);
    func
}

/// [`define_function_returning`] for a kernel entry that returns nothing.
pub(crate) fn define_function(
    signature: Signature,
    target: TargetFrontendConfig,
    body: impl FnOnce(&mut FunctionBuilder, &[Value]),
) -> Function {
    define_function_returning(signature, target, |b, params| {
        body(b, params);
        Vec::new()
    })
}

/// Loads and stores through kernel arguments: the kernel's caller guarantees the buffers
/// are in bounds (checked once in Rust before the call), so no access traps.
pub(crate) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Accesses kiln itself aligned to their size (packed weights, scratch), so SSE encodings
/// can fold them into memory operands.
pub(crate) fn mem_aligned() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// `body(i)` for `i` in `0..count` (an `i64` value), as a do-while loop; a single
/// iteration is emitted inline with a constant index and none at all for `count == 0`.
pub(crate) fn counted_loop(
    b: &mut FunctionBuilder,
    count: usize,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) {
    match count {
        0 => {}
        1 => {
            let zero = b.ins().iconst(types::I64, 0);
            body(b, zero);
        }
        _ => {
            let header = b.create_block();
            let i = b.append_block_param(header, types::I64);
            let exit = b.create_block();
            let zero = b.ins().iconst(types::I64, 0);
            b.ins().jump(header, &[BlockArg::Value(zero)]);
            b.switch_to_block(header);
            body(b, i);
            let next = b.ins().iadd_imm_u(i, 1);
            let more = b
                .ins()
                .icmp_imm_u(IntCC::UnsignedLessThan, next, count as i64);
            b.ins()
                .brif(more, header, &[BlockArg::Value(next)], exit, &[]);
            b.switch_to_block(exit);
        }
    }
}

/// `body(i)` for `i` in `0..count` where `count` is an i64 known only at run time.
pub(crate) fn counted_loop_dyn(
    b: &mut FunctionBuilder,
    count: Value,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) {
    let header = b.create_block();
    let i = b.append_block_param(header, types::I64);
    let body_block = b.create_block();
    let exit = b.create_block();
    let zero = b.ins().iconst(types::I64, 0);
    b.ins().jump(header, &[BlockArg::Value(zero)]);
    b.switch_to_block(header);
    let more = b.ins().icmp(IntCC::SignedLessThan, i, count);
    b.ins().brif(more, body_block, &[], exit, &[]);
    b.switch_to_block(body_block);
    body(b, i);
    let next = b.ins().iadd_imm_u(i, 1);
    b.ins().jump(header, &[BlockArg::Value(next)]);
    b.switch_to_block(exit);
}

/// `body(i)` for `i` in `start..end`, two i64 values known only at run time (no
/// iteration when `end <= start`, compared unsigned).
pub(crate) fn range_loop(
    b: &mut FunctionBuilder,
    start: Value,
    end: Value,
    mut body: impl FnMut(&mut FunctionBuilder, Value),
) {
    let header = b.create_block();
    let i = b.append_block_param(header, types::I64);
    let body_block = b.create_block();
    let exit = b.create_block();
    b.ins().jump(header, &[BlockArg::Value(start)]);
    b.switch_to_block(header);
    let more = b.ins().icmp(IntCC::UnsignedLessThan, i, end);
    b.ins().brif(more, body_block, &[], exit, &[]);
    b.switch_to_block(body_block);
    body(b, i);
    let next = b.ins().iadd_imm_u(i, 1);
    b.ins().jump(header, &[BlockArg::Value(next)]);
    b.switch_to_block(exit);
}

/// `base + index · scale` (pointer arithmetic in i64).
pub(crate) fn scaled(b: &mut FunctionBuilder, base: Value, index: Value, scale: usize) -> Value {
    if scale == 0 {
        return base;
    }
    let off = if scale.is_power_of_two() {
        b.ins().ishl_imm_u(index, scale.trailing_zeros() as i64)
    } else {
        b.ins().imul_imm_u(index, scale as i64)
    };
    b.ins().iadd(base, off)
}

/// An address and an immediate offset for a load/store at `base + offset`: the offset goes
/// into the instruction when it fits the 32-bit immediate, else into the address.
pub(crate) fn at(b: &mut FunctionBuilder, base: Value, offset: usize) -> (Value, i32) {
    match i32::try_from(offset) {
        Ok(imm) => (base, imm),
        Err(_) => (b.ins().iadd_imm_u(base, offset as i64), 0),
    }
}

/// The low (`high == false`) or high half of a vector's lanes, widened to twice their
/// width: sign-extended when `signed` (i8 → i16 → i32), zero-extended otherwise (u8).
pub(crate) fn widen_half(b: &mut FunctionBuilder, v: Value, signed: bool, high: bool) -> Value {
    match (signed, high) {
        (true, false) => b.ins().swiden_low(v),
        (true, true) => b.ins().swiden_high(v),
        (false, false) => b.ins().uwiden_low(v),
        (false, true) => b.ins().uwiden_high(v),
    }
}

/// Reinterpret a 128-bit vector as another lane type (little-endian lane order, as on every
/// target kiln supports).
pub(crate) fn vcast(b: &mut FunctionBuilder, ty: ir::Type, v: Value) -> Value {
    if b.func.dfg.value_type(v) == ty {
        return v;
    }
    let flags = MemFlagsData::new().with_endianness(ir::Endianness::Little);
    b.ins().bitcast(ty, flags, v)
}

pub(crate) fn splat_i32(b: &mut FunctionBuilder, v: i32) -> Value {
    let s = b.ins().iconst(types::I32, v as i64);
    b.ins().splat(types::I32X4, s)
}

pub(crate) fn splat_f32(b: &mut FunctionBuilder, v: f32) -> Value {
    let s = b.ins().f32const(v);
    b.ins().splat(types::F32X4, s)
}

/// An int8 inner-product step `(builder, acc, activations, weights) → acc'`.
pub(crate) type Accumulate = fn(&mut FunctionBuilder, Value, Value, Value) -> Value;

/// `acc + pmaddwd(a, w)` on I16X8 operands: lane `j` of the I32X4 result adds
/// `a[2j]·w[2j] + a[2j+1]·w[2j+1]`. Written as the tree the x64 backend matches
/// (`iadd_pairwise(imul(swiden_low a, swiden_low w), imul(swiden_high a, swiden_high w))`,
/// cranelift-codegen `isa/x64/lower.isle`, "i32x4.dot_i16x8_s") so it costs one `pmaddwd`
/// and one `paddd`. The products of kiln's operands (|a| ≤ 255, |w| ≤ 255) and their pair
/// sums fit i32, so the instruction's only wrap-around case (−32768² · 2) cannot occur.
pub(crate) fn pmaddwd_accumulate(b: &mut FunctionBuilder, acc: Value, a: Value, w: Value) -> Value {
    let a_lo = b.ins().swiden_low(a);
    let w_lo = b.ins().swiden_low(w);
    let a_hi = b.ins().swiden_high(a);
    let w_hi = b.ins().swiden_high(w);
    let lo = b.ins().imul(a_lo, w_lo);
    let hi = b.ins().imul(a_hi, w_hi);
    let dot = b.ins().iadd_pairwise(lo, hi);
    b.ins().iadd(acc, dot)
}

/// `acc + vpdpbusd(a, w)` on I8X16 operands, `a` read as u8 and `w` as i8: lane `j` of the
/// I32X4 result adds `Σ_{h<4} a[4j+h]·w[4j+h]`. Written as the tree the x64 backend folds
/// into one `vpdpbusd` with AVX-VNNI or AVX512-VNNI+VL (cranelift-codegen
/// `isa/x64/lower.isle`, rules 7 and 8 after "AVX-VNNI: fold the u8*i8 widening
/// dot-accumulate tree"): [`byte_dot_tree`] with `lo = imul(swiden_low w, uwiden_low a)`,
/// `hi` likewise — the signed operand first. Its meaning is exact everywhere: a u8·s8
/// product fits i16, four of them fit i32, and the accumulation wraps like `vpdpbusd`
/// (not the saturating `vpdpbusds`).
pub(crate) fn vpdpbusd_accumulate(
    b: &mut FunctionBuilder,
    acc: Value,
    a: Value,
    w: Value,
) -> Value {
    let w_lo = b.ins().swiden_low(w);
    let a_lo = b.ins().uwiden_low(a);
    let w_hi = b.ins().swiden_high(w);
    let a_hi = b.ins().uwiden_high(a);
    let lo = b.ins().imul(w_lo, a_lo);
    let hi = b.ins().imul(w_hi, a_hi);
    byte_dot_tree(b, acc, lo, hi)
}

/// `acc + usdot(a, w)`: [`vpdpbusd_accumulate`]'s meaning (`a` u8, `w` i8) as the tree
/// Cranelift's AArch64 backend folds into one `usdot` with FEAT_I8MM
/// (cranelift-codegen `isa/aarch64/lower.isle`, rule 9 after "With FEAT_I8MM"): the
/// *unsigned* operand first in each `imul`, `lo = imul(uwiden_low a, swiden_low w)`.
pub(crate) fn usdot_accumulate(b: &mut FunctionBuilder, acc: Value, a: Value, w: Value) -> Value {
    let a_lo = b.ins().uwiden_low(a);
    let w_lo = b.ins().swiden_low(w);
    let a_hi = b.ins().uwiden_high(a);
    let w_hi = b.ins().swiden_high(w);
    let lo = b.ins().imul(a_lo, w_lo);
    let hi = b.ins().imul(a_hi, w_hi);
    byte_dot_tree(b, acc, lo, hi)
}

/// `acc + sdot(a, w)` on I8X16 operands, both read as i8: lane `j` adds
/// `Σ_{h<4} a[4j+h]·w[4j+h]`, as the tree the AArch64 backend folds into one `sdot` with
/// FEAT_DotProd (`isa/aarch64/lower.isle`, rule 8 after "With FEAT_DotProd"). Exact: an
/// s8·s8 product fits i16 (−128·−128 = 16384), four of them fit i32.
pub(crate) fn sdot_accumulate(b: &mut FunctionBuilder, acc: Value, a: Value, w: Value) -> Value {
    let a_lo = b.ins().swiden_low(a);
    let w_lo = b.ins().swiden_low(w);
    let a_hi = b.ins().swiden_high(a);
    let w_hi = b.ins().swiden_high(w);
    let lo = b.ins().imul(a_lo, w_lo);
    let hi = b.ins().imul(a_hi, w_hi);
    byte_dot_tree(b, acc, lo, hi)
}

/// The reduction both backends match after the I16X8 products `lo` (low bytes) and `hi`
/// (high bytes): `iadd(iadd_pairwise(iadd_pairwise(swiden_low lo, swiden_high lo),
/// iadd_pairwise(swiden_low hi, swiden_high hi)), acc)` — all in i32, the accumulator
/// last.
fn byte_dot_tree(b: &mut FunctionBuilder, acc: Value, lo: Value, hi: Value) -> Value {
    let lo_l = b.ins().swiden_low(lo);
    let lo_h = b.ins().swiden_high(lo);
    let lo_sum = b.ins().iadd_pairwise(lo_l, lo_h);
    let hi_l = b.ins().swiden_low(hi);
    let hi_h = b.ins().swiden_high(hi);
    let hi_sum = b.ins().iadd_pairwise(hi_l, hi_h);
    let dot = b.ins().iadd_pairwise(lo_sum, hi_sum);
    b.ins().iadd(dot, acc)
}

/// `max(v, bound)` lane-wise with Rust's `f32::max` NaN rule (a NaN `v` gives `bound`),
/// as the `bitselect(fcmp lt bound v, v, bound)` tree that x64 lowers to one `maxps`.
pub(crate) fn fmax_to_bound(b: &mut FunctionBuilder, v: Value, bound: Value) -> Value {
    let gt = b.ins().fcmp(FloatCC::LessThan, bound, v);
    let mask = vcast(b, types::F32X4, gt);
    b.ins().bitselect(mask, v, bound)
}

/// `min(v, bound)` lane-wise with Rust's `f32::min` NaN rule (one `minps` on x64).
pub(crate) fn fmin_to_bound(b: &mut FunctionBuilder, v: Value, bound: Value) -> Value {
    let lt = b.ins().fcmp(FloatCC::LessThan, v, bound);
    let mask = vcast(b, types::F32X4, lt);
    b.ins().bitselect(mask, v, bound)
}
