//! CLIF for the data movement the JIT does in Rust between kernel calls: spreading a batch
//! item into a window kernel's channel-last scratch (`PoolGeometry::fill_channel_last`),
//! copying one into the f32 convolutions' zero-padded scratch (`fconv::fill_zero_padded`),
//! and plain byte copies. An object file has no Rust to call.

use crate::clif::{counted_loop, define_function, mem};
use crate::pool_window::{PoolGeometry, ScratchLayout};
use cranelift_codegen::ir::{types, Function, InstBuilder, Signature, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::FunctionBuilder;

/// `fn(x, scratch)`: exactly `geo.fill_channel_last(x, scratch, layout.channels_padded,
/// padding)` for elements of `elem_bytes` (1 or 4) whose bits are `padding_bits`: every
/// scratch element `padding`, then element `(c, d, h, w)` of `x` at padded pixel
/// `(d + pad_d, h + pad_h, w + pad_w)`, channel `c`.
pub(crate) fn build_fill_channel_last(
    geo: &PoolGeometry,
    layout: &ScratchLayout,
    elem_bytes: usize,
    padding_bits: u32,
    signature: Signature,
    target: TargetFrontendConfig,
) -> Function {
    define_function(signature, target, |b, p| {
        let (x, scratch) = (p[0], p[1]);
        let elem: Type = if elem_bytes == 1 {
            types::I8
        } else {
            types::I32
        };
        // the padding, as 16-byte vectors (the scratch is a whole number of them)
        let lane = b.ins().iconst(elem, i64::from(padding_bits));
        let vector = if elem_bytes == 1 {
            types::I8X16
        } else {
            types::I32X4
        };
        let fill = b.ins().splat(vector, lane);
        let vectors = (layout.len * elem_bytes).div_ceil(16);
        counted_loop(b, vectors, |b, i| {
            let at = scaled_add(b, scratch, i, 16);
            b.ins().store(mem(), fill, at, 0);
        });
        let [d_n, h_n, w_n] = geo.input;
        let cp = layout.channels_padded;
        let row_elems = geo.extent[2] * cp;
        counted_loop(b, geo.channels, |b, c| {
            counted_loop(b, d_n, |b, d| {
                counted_loop(b, h_n, |b, h| {
                    // source row ((c·D + d)·H + h)·W, destination row start
                    // ((d + pad_d)·E_h + h + pad_h)·row + pad_w·cp + c
                    let src_row = b.ins().imul_imm_u(c, (d_n * h_n * w_n) as i64);
                    let dh = b.ins().imul_imm_u(d, (h_n * w_n) as i64);
                    let src_row = b.ins().iadd(src_row, dh);
                    let hw = b.ins().imul_imm_u(h, w_n as i64);
                    let src_row = b.ins().iadd(src_row, hw);
                    let src = scaled_add(b, x, src_row, elem_bytes);
                    let dst_d = b.ins().iadd_imm_u(d, geo.pad_begin[0] as i64);
                    let dst_d = b
                        .ins()
                        .imul_imm_u(dst_d, (geo.extent[1] * row_elems) as i64);
                    let dst_h = b.ins().iadd_imm_u(h, geo.pad_begin[1] as i64);
                    let dst_h = b.ins().imul_imm_u(dst_h, row_elems as i64);
                    let dst = b.ins().iadd(dst_d, dst_h);
                    let dst = b.ins().iadd(dst, c);
                    let dst = b.ins().iadd_imm_u(dst, (geo.pad_begin[2] * cp) as i64);
                    let dst = scaled_add(b, scratch, dst, elem_bytes);
                    counted_loop(b, w_n, |b, w| {
                        let from = scaled_add(b, src, w, elem_bytes);
                        let v = b.ins().load(elem, mem(), from, 0);
                        let to = scaled_add(b, dst, w, cp * elem_bytes);
                        b.ins().store(mem(), v, to, 0);
                    });
                });
            });
        });
    })
}

/// `fn(x, scratch)`: exactly `fconv::fill_zero_padded(x, scratch, input, padded,
/// pad_begin)` for `channels` channels, except that the whole scratch (`scratch_bytes`) is
/// zeroed first — the JIT's scratch is zeroed once when allocated and only its interior is
/// ever written, but an object's scratch region is shared with other kernels.
pub(crate) fn build_fill_zero_padded(
    channels: usize,
    input: [usize; 3],
    padded: [usize; 3],
    pad_begin: [usize; 3],
    scratch_bytes: usize,
    signature: Signature,
    target: TargetFrontendConfig,
) -> Function {
    define_function(signature, target, |b, p| {
        let (x, scratch) = (p[0], p[1]);
        let zero_lane = b.ins().iconst(types::I32, 0);
        let zero = b.ins().splat(types::I32X4, zero_lane);
        counted_loop(b, scratch_bytes / 16, |b, i| {
            let at = scaled_add(b, scratch, i, 16);
            b.ins().store(mem(), zero, at, 0);
        });
        for k in (scratch_bytes / 16 * 16..scratch_bytes).step_by(4) {
            b.ins().store(mem(), zero_lane, scratch, k as i32);
        }
        let [d_n, h_n, w_n] = input;
        let [pd, ph, pw] = padded;
        let [bd, bh, bw] = pad_begin;
        counted_loop(b, channels, |b, c| {
            counted_loop(b, d_n, |b, d| {
                counted_loop(b, h_n, |b, h| {
                    // source row ((c·D + d)·H + h)·W, destination ((c·P_d + d + b_d)·P_h
                    // + h + b_h)·P_w + b_w, in floats
                    let src = b.ins().imul_imm_u(c, (d_n * h_n * w_n) as i64);
                    let dh = b.ins().imul_imm_u(d, (h_n * w_n) as i64);
                    let src = b.ins().iadd(src, dh);
                    let hw = b.ins().imul_imm_u(h, w_n as i64);
                    let src = b.ins().iadd(src, hw);
                    let src = scaled_add(b, x, src, 4);
                    let dst = b.ins().imul_imm_u(c, pd as i64);
                    let dst = b.ins().iadd(dst, d);
                    let dst = b.ins().iadd_imm_u(dst, bd as i64);
                    let dst = b.ins().imul_imm_u(dst, ph as i64);
                    let dst = b.ins().iadd(dst, h);
                    let dst = b.ins().iadd_imm_u(dst, bh as i64);
                    let dst = b.ins().imul_imm_u(dst, pw as i64);
                    let dst = b.ins().iadd_imm_u(dst, bw as i64);
                    let dst = scaled_add(b, scratch, dst, 4);
                    counted_loop(b, w_n / 4, |b, i| {
                        let from = scaled_add(b, src, i, 16);
                        let v = b.ins().load(types::I32X4, mem(), from, 0);
                        let to = scaled_add(b, dst, i, 16);
                        b.ins().store(mem(), v, to, 0);
                    });
                    for k in (w_n / 4 * 4..w_n).map(|k| 4 * k as i32) {
                        let v = b.ins().load(types::I32, mem(), src, k);
                        b.ins().store(mem(), v, dst, k);
                    }
                });
            });
        });
    })
}

/// `fn(src, dst)`: copy `bytes` bytes, 16 at a time, then the tail byte by byte.
pub(crate) fn build_copy(
    bytes: usize,
    signature: Signature,
    target: TargetFrontendConfig,
) -> Function {
    define_function(signature, target, |b, p| {
        let (src, dst) = (p[0], p[1]);
        counted_loop(b, bytes / 16, |b, i| {
            let from = scaled_add(b, src, i, 16);
            let to = scaled_add(b, dst, i, 16);
            let v = b.ins().load(types::I8X16, mem(), from, 0);
            b.ins().store(mem(), v, to, 0);
        });
        for k in (bytes / 16 * 16)..bytes {
            let v = b.ins().load(types::I8, mem(), src, k as i32);
            b.ins().store(mem(), v, dst, k as i32);
        }
    })
}

/// `base + index · scale` with an i64 index on a 64-bit target.
fn scaled_add(b: &mut FunctionBuilder, base: Value, index: Value, scale: usize) -> Value {
    let ptr = b.func.dfg.value_type(base);
    let index = if ptr == types::I64 {
        index
    } else {
        b.ins().ireduce(ptr, index)
    };
    let offset = b.ins().imul_imm_u(index, scale as i64);
    b.ins().iadd(base, offset)
}
