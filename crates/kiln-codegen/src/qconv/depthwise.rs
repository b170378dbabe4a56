//! The depthwise path of QConv (one input and one output channel per group: `groups == C_in
//! == C_out`), vectorized over *output pixels of one channel*: lane `j` of an I32X4
//! accumulator is pixel `ow + j` of an output row, so input and output stay in their NCHW
//! planes (no transpose) and a tile of 16 pixels is stored as one 16-byte vector.
//!
//! **Taps side by side.** `pmaddwd` sums lane pairs and `vpdpbusd` (`usdot`, `sdot`) lane
//! quads; here those are *horizontally adjacent kernel taps* of the lane's pixel. The
//! 32-bit lane of pixel `ow` holds `t` activations `x[ow·s_w], x[ow·s_w + dil_w], …`
//! (`t = 2` i16 values for `pmaddwd`, `t = 4` bytes for the byte dot products, i8 shifted
//! by +128 for `vpdpbusd` as in the general path), gathered from the padded input row by
//! one byte shuffle (`pshufb`) of one unaligned 16-byte load (two loads and a two-source
//! shuffle when stride and dilation spread the four pixels over more than 16 bytes; single
//! byte loads beyond 32). The weight vector holds the `t` matching taps of the channel in
//! all four lanes. A kernel row of `k_w` taps takes `ceil(k_w / t)` *steps*, the taps past
//! `k_w` having zero weights (so whatever activation they meet adds nothing).
//!
//! - **Scratch**: the padded input, `[C][D_p][H_p][W_p]` elements (bytes, already shifted
//!   for the byte dot products; i16 for `pmaddwd`), padding cells holding `zp_x`, and a
//!   tail of slack bytes that the loads of the last row may reach (read only by lanes
//!   that are never stored). Filled by a JIT-compiled *widen* function
//!   ([`build_widen_function`]): per input row a copy in 16-byte vectors and exact-size
//!   pieces (a top-bit flip for shifted bytes, `uload8x8`/`sload8x8` for i16), the padding
//!   as runs of stores — one element per input byte, not a word per tap.
//! - **Packed constants**, per channel: weights `[k_d][k_h][step]` 16-byte vectors (the
//!   `t` taps repeated in four lanes), then the folded bias (i32) and the multiplier (f32)
//!   each splatted to a vector.
//! - **Compute** (`extern "C" fn(packed, scratch, out, first, end)`, the channels
//!   `first..end`, so threads can split a batch item by channel): per channel, output depth
//!   and tile of `R` output rows × `V` vectors of 4 pixels (`R = ceil(rows / 2)`, `V =
//!   2 · col_vectors` of [`QConvTuning`], clamped to the output; default 2 × 4), `R·V`
//!   accumulators starting at the bias, over the kernel rows and steps, then the
//!   requantizing epilogue (`emit::epilogue`'s arithmetic per pixel vector) and 16-byte
//!   stores. A row's last, partial tile has as many vectors as it needs and is moved back
//!   to end at the row's end (recomputing up to 3 pixels); a plane's last row tile has the
//!   remaining rows. Only a row narrower than a vector stores byte pieces. With 3×3 and a
//!   byte dot product the kernel rows are unrolled, and since activation loads are pure
//!   (`readonly`, `can_move`) and every shuffle uses one mask, the `R` output rows share
//!   the loads and shuffles of the input rows they have in common; longer kernels loop
//!   over their rows ([`UNROLLED_ROW_STEPS`]).

use super::emit::{ro, Requant};
use super::layout::InnerProduct;
use super::plan::{QConvPlan, SP};
use super::QConvTuning;
use crate::clif::{
    at, counted_loop, define_function, fmax_to_bound, fmin_to_bound, mem, mem_aligned,
    pmaddwd_accumulate, range_loop, scaled, sdot_accumulate, splat_f32, splat_i32,
    usdot_accumulate, vcast, vpdpbusd_accumulate, Accumulate,
};
use crate::CodegenError;
use cranelift_codegen::ir::{
    types, ConstantData, Function, Immediate, InstBuilder, MemFlagsData, Signature, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_ir::DType;

/// Kernel rows × steps up to which a tile's kernel rows are unrolled, so that the tile's
/// output rows share the loads and shuffles of the input rows they have in common (3×3
/// with a byte dot product: 3). Beyond it a loop over the kernel rows runs faster: the
/// shared values of a longer unrolled sequence stay live across whole accumulator
/// chains (Cranelift computes one chain after another) and spill (measured on 5×5 and on
/// `pmaddwd`'s 3×3, where the loop is as fast or up to twice as fast).
const UNROLLED_ROW_STEPS: usize = 4;

#[derive(Clone, Debug)]
pub(crate) struct DwLayout {
    pub inner: InnerProduct,
    /// Added to every activation before the inner product (see [`InnerProduct::activation_offset`]).
    pub activation_offset: i32,
    /// Kernel taps per 32-bit lane: 2 (`pmaddwd`) or 4 (byte dot products).
    pub taps_per_step: usize,
    /// Steps per kernel row: `ceil(k_w / taps_per_step)`.
    pub steps: usize,
    /// Bytes per scratch element: 2 (i16, `pmaddwd`) or 1.
    pub element_bytes: usize,
    /// i8 activations (sign-extended to i16 elements).
    pub signed_input: bool,
    pub padded: [usize; SP],
    /// Scratch bytes of one channel's padded input.
    pub channel_bytes: usize,
    pub scratch_bytes: usize,
    /// Output rows per tile.
    pub out_rows: usize,
    /// I32X4 vectors (4 pixels each) per output row of a tile.
    pub vectors: usize,
    /// Packed bytes per channel: weight vectors, bias, multiplier.
    pub channel_packed_bytes: usize,
    pub packed_bytes: usize,
}

impl DwLayout {
    pub fn new(
        plan: &QConvPlan,
        tuning: &QConvTuning,
        inner: InnerProduct,
    ) -> Result<DwLayout, CodegenError> {
        let too_big = |what: &str| CodegenError::Unsupported {
            op: "qconv",
            reason: format!("{what} exceed(s) the 32-bit offsets of the kernel"),
        };
        let taps_per_step = inner.channels_per_step();
        let element_bytes = if inner.on_bytes() { 1 } else { 2 };
        let steps = plan.kernel[2].div_ceil(taps_per_step);
        let [_, out_h, out_w] = plan.output;
        let vectors = (2 * tuning.col_vectors).clamp(1, out_w.div_ceil(4).max(1));
        let out_rows = tuning.rows.div_ceil(2).clamp(1, out_h.max(1));
        let padded = plan.padded();
        let channel_bytes = padded.iter().product::<usize>() * element_bytes;
        // the loads of the last row may reach past its end: the lanes of pixels past a
        // narrow row (`4·V·s_w` elements), the zero-weight taps of the last step, and the
        // 32-byte window of a shuffled load
        let slack = element_bytes
            * (4 * vectors * plan.stride[2] + steps * taps_per_step * plan.dilation[2])
            + 64;
        let scratch_bytes = (plan.c_in * channel_bytes + slack).next_multiple_of(64);
        if scratch_bytes > u32::MAX as usize {
            return Err(too_big("the padded input"));
        }
        let rows = plan.kernel[0] * plan.kernel[1];
        let channel_packed_bytes = (rows * steps + 2) * 16;
        let packed_bytes = plan.c_out * channel_packed_bytes;
        if packed_bytes > i32::MAX as usize {
            return Err(too_big("the packed weights"));
        }
        Ok(DwLayout {
            inner,
            activation_offset: inner.activation_offset(plan.x_dtype),
            taps_per_step,
            steps,
            element_bytes,
            signed_input: plan.x_dtype == DType::I8,
            padded,
            channel_bytes,
            scratch_bytes,
            out_rows,
            vectors,
            channel_packed_bytes,
            packed_bytes,
        })
    }

    /// Output pixels per tile.
    pub fn tile_pixels(&self) -> usize {
        4 * self.out_rows * self.vectors
    }

    /// The scratch element of activation `v`, in its low `8 · element_bytes` bits: i16
    /// (`pmaddwd`) or a byte shifted by the activation offset (the byte dot products: the
    /// signedness the instruction reads).
    fn element(&self, v: i32) -> u32 {
        match self.inner {
            InnerProduct::Pmaddwd => v as i16 as u16 as u32,
            InnerProduct::Vpdpbusd | InnerProduct::Usdot | InnerProduct::Sdot => {
                (v + self.activation_offset) as u8 as u32
            }
        }
    }

    /// The folded bias of channel `c` under the activation offset (as `Layout::bias`).
    fn bias(&self, plan: &QConvPlan, c: usize) -> i32 {
        let per_out = plan.taps();
        let sum = plan.weights[c * per_out..(c + 1) * per_out]
            .iter()
            .fold(0i32, |s, &v| s.wrapping_add(v));
        plan.bias[c].wrapping_sub(self.activation_offset.wrapping_mul(sum))
    }

    /// The constant blob: per channel its weight vectors, bias and multiplier.
    pub fn pack(&self, plan: &QConvPlan) -> Vec<u8> {
        let mut blob = Vec::with_capacity(self.packed_bytes);
        let [k_d, k_h, k_w] = plan.kernel;
        let taps = plan.taps();
        for c in 0..plan.c_out {
            for row in 0..k_d * k_h {
                for step in 0..self.steps {
                    for _lane in 0..4 {
                        for k in 0..self.taps_per_step {
                            let kw = step * self.taps_per_step + k;
                            let w = if kw < k_w {
                                plan.weights[c * taps + row * k_w + kw]
                            } else {
                                0
                            };
                            match self.inner {
                                InnerProduct::Pmaddwd => {
                                    blob.extend_from_slice(&(w as i16).to_le_bytes())
                                }
                                InnerProduct::Vpdpbusd
                                | InnerProduct::Usdot
                                | InnerProduct::Sdot => blob.push(w as i8 as u8),
                            }
                        }
                    }
                }
            }
            let bias = self.bias(plan, c).to_le_bytes();
            let multiplier = plan.multipliers[c].to_le_bytes();
            for _ in 0..4 {
                blob.extend_from_slice(&bias);
            }
            for _ in 0..4 {
                blob.extend_from_slice(&multiplier);
            }
        }
        debug_assert_eq!(blob.len(), self.packed_bytes);
        blob
    }
}

/// `extern "C" fn(x, scratch, first, end)` for one batch item: fill the scratch with the
/// padded input of channels `first..end` (see the module doc; disjoint ranges write
/// disjoint bytes, so threads can split them): per channel, the padding planes and rows as one run
/// of padding elements each, and per input row the left padding, the row's elements
/// (bytes flipped by the activation offset, or widened to i16) and the right padding, in
/// 16-byte vectors and exact-size pieces (nothing past the input is read). The slack past
/// the last channel is not written.
pub(crate) fn build_widen_function(
    plan: &QConvPlan,
    layout: &DwLayout,
    signature: Signature,
    target: TargetFrontendConfig,
) -> Function {
    define_function(signature, target, |b, p| {
        let (x, scratch, first, end) = (p[0], p[1], p[2], p[3]);
        let [_, h_p, w_p] = layout.padded;
        let [d_n, h_n, w_n] = plan.input;
        let e = layout.element_bytes;
        let (row, plane) = (w_p * e, h_p * w_p * e);
        let pad = layout.element(plan.x_zero_point);
        let pad = if e == 1 {
            let byte = b.ins().iconst(types::I8, pad as i64);
            b.ins().splat(types::I8X16, byte)
        } else {
            let half = b.ins().iconst(types::I16, pad as i64);
            let v = b.ins().splat(types::I16X8, half);
            vcast(b, types::I8X16, v)
        };
        let [pad_d, pad_h, pad_w] = plan.pad_begin;
        let bottom_rows = h_p - pad_h - h_n;
        let back_planes = layout.padded[0] - pad_d - d_n;
        range_loop(b, first, end, |b, c| {
            let src_c = scaled(b, x, c, plan.in_pixels());
            let dst_c = scaled(b, scratch, c, layout.channel_bytes);
            fill(b, pad, dst_c, 0, pad_d * plane);
            counted_loop(b, d_n, |b, id| {
                let src_d = scaled(b, src_c, id, h_n * w_n);
                let dst_d = scaled(b, dst_c, id, plane);
                let dst_d = b.ins().iadd_imm_u(dst_d, (pad_d * plane) as i64);
                fill(b, pad, dst_d, 0, pad_h * row);
                counted_loop(b, h_n, |b, ih| {
                    let src = scaled(b, src_d, ih, w_n);
                    let dst = scaled(b, dst_d, ih, row);
                    let dst = b.ins().iadd_imm_u(dst, (pad_h * row) as i64);
                    fill(b, pad, dst, 0, pad_w * e);
                    copy_elements(b, layout, src, dst, pad_w * e, w_n);
                    fill(b, pad, dst, (pad_w + w_n) * e, row - (pad_w + w_n) * e);
                });
                fill(b, pad, dst_d, (pad_h + h_n) * row, bottom_rows * row);
            });
            fill(b, pad, dst_c, (pad_d + d_n) * plane, back_planes * plane);
        });
    })
}

/// Store `len` bytes of the repeating padding vector `pad` at `dst + offset`: 16-byte
/// vectors, then pieces (the padding element's size divides every piece).
fn fill(b: &mut FunctionBuilder, pad: Value, dst: Value, offset: usize, len: usize) {
    let dst = if offset > 0 {
        b.ins().iadd_imm_u(dst, offset as i64)
    } else {
        dst
    };
    counted_loop(b, len / 16, |b, i| {
        let at = scaled(b, dst, i, 16);
        b.ins().store(mem(), pad, at, 0);
    });
    store_bytes(b, pad, dst, len / 16 * 16, len % 16);
}

/// Copy `count` input elements from `src` to `dst + offset` as scratch elements: bytes
/// (their top bit flipped when the activation offset is ±128) or i16.
fn copy_elements(
    b: &mut FunctionBuilder,
    layout: &DwLayout,
    src: Value,
    dst: Value,
    offset: usize,
    count: usize,
) {
    let dst = b.ins().iadd_imm_u(dst, offset as i64);
    let flip = layout.activation_offset != 0;
    if layout.element_bytes == 1 {
        // ±128 flips the top bit of a byte (the offset is 0 or ±128)
        let flips = if flip {
            let top = b.ins().iconst(types::I8, 0x80);
            Some(b.ins().splat(types::I8X16, top))
        } else {
            None
        };
        counted_loop(b, count / 16, |b, i| {
            let from = scaled(b, src, i, 16);
            let to = scaled(b, dst, i, 16);
            let v = b.ins().load(types::I8X16, mem(), from, 0);
            let v = match flips {
                Some(f) => b.ins().bxor(v, f),
                None => v,
            };
            b.ins().store(mem(), v, to, 0);
        });
        let mut done = count / 16 * 16;
        for (size, ty) in [
            (8, types::I64),
            (4, types::I32),
            (2, types::I16),
            (1, types::I8),
        ] {
            if count - done >= size {
                let v = b.ins().load(ty, mem(), src, done as i32);
                let v = if flip {
                    b.ins()
                        .bxor_imm_u(v, (0x8080_8080_8080_8080u64 >> (64 - 8 * size)) as i64)
                } else {
                    v
                };
                b.ins().store(mem(), v, dst, done as i32);
                done += size;
            }
        }
    } else {
        // `pmaddwd` reads activations as they are (offset 0): i8 sign-, u8 zero-extended
        let signed = layout.signed_input;
        counted_loop(b, count / 8, |b, i| {
            let from = scaled(b, src, i, 8);
            let to = scaled(b, dst, i, 16);
            let v = if signed {
                b.ins().sload8x8(mem(), from, 0)
            } else {
                b.ins().uload8x8(mem(), from, 0)
            };
            b.ins().store(mem(), v, to, 0);
        });
        for k in count / 8 * 8..count {
            let v = if signed {
                b.ins().sload8(types::I32, mem(), src, k as i32)
            } else {
                b.ins().uload8(types::I32, mem(), src, k as i32)
            };
            b.ins().istore16(mem(), v, dst, (2 * k) as i32);
        }
    }
}

/// Byte `i` of one step's activation vector, as a byte offset in the scratch row from
/// the first tap of the vector's first pixel: lane `i / 4` is the pixel (`stride` elements
/// apart), `i % 4` the byte of its taps (`dilation` elements apart) of `element_bytes`.
fn gather_indices(element_bytes: usize, stride: usize, dilation: usize) -> [usize; 16] {
    std::array::from_fn(|i| {
        let (lane, within) = (i / 4, i % 4);
        let (tap, byte) = (within / element_bytes, within % element_bytes);
        element_bytes * (lane * stride + tap * dilation) + byte
    })
}

/// Loads of the scratch (not written during a compute call, in bounds, possibly
/// unaligned): pure for Cranelift, so identical loads of a tile merge and invariant ones
/// leave loops (see `emit::ro`).
fn scratch_load() -> MemFlagsData {
    mem().with_readonly().with_can_move()
}

/// Loads of weight vectors: aligned and read-only, but not movable, so they stay next
/// to their uses inside the tile instead of being hoisted out of the pixel loops (where
/// a 5×5 kernel's ten vectors would hold registers the accumulators need, and spill).
fn weight_load() -> MemFlagsData {
    mem_aligned().with_readonly()
}

/// How one step's activation vector is gathered from the scratch (see the module doc).
#[derive(Clone, Copy)]
enum Gather {
    /// The 16 bytes at the address, as they are (`pmaddwd` at stride 2, dilation 1).
    Load,
    /// One 16-byte load and a byte shuffle (indices < 16).
    Shuffle1([u8; 16]),
    /// Two 16-byte loads and a two-source shuffle (indices < 32).
    Shuffle2([u8; 16]),
    /// Sixteen byte loads (indices beyond 32: large strides or dilations).
    Bytes([usize; 16]),
}

impl Gather {
    fn new(indices: [usize; 16]) -> Gather {
        let max = indices.iter().copied().max().unwrap_or(0);
        let bytes = indices.map(|i| i as u8);
        if indices.iter().enumerate().all(|(k, &i)| k == i) {
            Gather::Load
        } else if max < 16 {
            Gather::Shuffle1(bytes)
        } else if max < 32 {
            Gather::Shuffle2(bytes)
        } else {
            Gather::Bytes(indices)
        }
    }

    /// The I8X16 activation vector of the pixels whose first tap is at `base + offset`;
    /// `mask` the shuffle's immediate (shuffling gathers).
    fn emit(
        self,
        b: &mut FunctionBuilder,
        mask: Option<Immediate>,
        base: Value,
        offset: usize,
    ) -> Value {
        let load = |b: &mut FunctionBuilder, extra: usize| {
            let (addr, off) = at(b, base, offset + extra);
            b.ins().load(types::I8X16, scratch_load(), addr, off)
        };
        let mask = || mask.expect("a shuffling gather has its mask");
        match self {
            Gather::Load => load(b, 0),
            Gather::Shuffle1(_) => {
                let v = load(b, 0);
                // both operands the same vector: one `pshufb` on x64
                b.ins().shuffle(v, v, mask())
            }
            Gather::Shuffle2(_) => {
                let (lo, hi) = (load(b, 0), load(b, 16));
                b.ins().shuffle(lo, hi, mask())
            }
            Gather::Bytes(indices) => {
                let mut v = b.ins().iconst(types::I8, 0);
                v = b.ins().splat(types::I8X16, v);
                for (lane, &i) in indices.iter().enumerate() {
                    let (addr, off) = at(b, base, offset + i);
                    let byte = b.ins().load(types::I8, scratch_load(), addr, off);
                    v = b.ins().insertlane(v, byte, lane as u8);
                }
                v
            }
        }
    }
}

/// `extern "C" fn(packed, scratch, out, first, end)` for one batch item: the output
/// channels `first..end` (see the module doc).
pub(crate) fn build_compute_function(
    plan: &QConvPlan,
    layout: &DwLayout,
    signature: Signature,
    target: TargetFrontendConfig,
) -> Function {
    define_function(signature, target, |b, p| {
        let (packed, scratch, out, first, end) = (p[0], p[1], p[2], p[3], p[4]);
        let [_, h_p, w_p] = layout.padded;
        let [out_d, out_h, out_w] = plan.output;
        let e = layout.element_bytes;
        let (rows, vectors) = (layout.out_rows, layout.vectors);
        let tile_w = 4 * vectors;
        let gather = Gather::new(gather_indices(e, plan.stride[2], plan.dilation[2]));
        // one immediate for every shuffle, so that equal shuffles of a tile are one value
        let mask = match gather {
            Gather::Shuffle1(mask) | Gather::Shuffle2(mask) => Some(
                b.func
                    .dfg
                    .immediates
                    .push(ConstantData::from(mask.as_slice())),
            ),
            Gather::Load | Gather::Bytes(_) => None,
        };
        let tile = Tile {
            plan,
            layout,
            gather,
            mask,
            accs: (0..rows * vectors)
                .map(|_| b.declare_var(types::I32X4))
                .collect(),
        };
        // whole tiles, then the rest of a row in one tile of as many vectors as it needs,
        // moved back to end at the row's end (a row narrower than that: its pixels only)
        let full_cols = out_w / tile_w;
        let rest = out_w % tile_w;
        let tail_vectors = rest.div_ceil(4);
        let tail_start = out_w.saturating_sub(4 * tail_vectors);
        let tail_stored = (4 * tail_vectors).min(out_w);
        let (full_rows, rest_rows) = (out_h / rows, out_h % rows);
        range_loop(b, first, end, |b, c| {
            let consts = scaled(b, packed, c, layout.channel_packed_bytes);
            let src_c = scaled(b, scratch, c, layout.channel_bytes);
            let out_c = scaled(b, out, c, plan.out_pixels());
            counted_loop(b, out_d, |b, od| {
                let src_d = scaled(b, src_c, od, plan.stride[0] * h_p * w_p * e);
                let out_d = scaled(b, out_c, od, out_h * out_w);
                let row_tile = |b: &mut FunctionBuilder, oh: Value, rows: usize| {
                    let src_h = scaled(b, src_d, oh, plan.stride[1] * w_p * e);
                    let out_row = scaled(b, out_d, oh, out_w);
                    counted_loop(b, full_cols, |b, ct| {
                        let ow = b.ins().imul_imm_u(ct, tile_w as i64);
                        let src = scaled(b, src_h, ow, plan.stride[2] * e);
                        let dst = b.ins().iadd(out_row, ow);
                        tile.emit(b, src, consts, dst, rows, vectors, tile_w);
                    });
                    if tail_vectors > 0 {
                        let (src, off) = at(b, src_h, tail_start * plan.stride[2] * e);
                        let src = b.ins().iadd_imm_u(src, off as i64);
                        let dst = b.ins().iadd_imm_u(out_row, tail_start as i64);
                        tile.emit(b, src, consts, dst, rows, tail_vectors, tail_stored);
                    }
                };
                counted_loop(b, full_rows, |b, rt| {
                    let oh = b.ins().imul_imm_u(rt, rows as i64);
                    row_tile(b, oh, rows);
                });
                if rest_rows > 0 {
                    let oh = b.ins().iconst(types::I64, (out_h - rest_rows) as i64);
                    row_tile(b, oh, rest_rows);
                }
            });
        });
    })
}

/// A tile's code generator: up to `R` output rows × `V` vectors of 4 pixels.
struct Tile<'a> {
    plan: &'a QConvPlan,
    layout: &'a DwLayout,
    gather: Gather,
    /// The shuffle's mask (shuffling gathers).
    mask: Option<Immediate>,
    /// Accumulator of row `r`, vector `v` at `r · V + v`.
    accs: Vec<Variable>,
}

impl Tile<'_> {
    /// The tile of `rows` output rows × `vectors` vectors whose first input element (row
    /// 0, pixel 0, tap 0) is at `src`: its channel's constants at `consts`, its first output
    /// pixel at `dst`, `stored` pixels of each row stored.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        b: &mut FunctionBuilder,
        src: Value,
        consts: Value,
        dst: Value,
        rows: usize,
        vectors: usize,
        stored: usize,
    ) {
        let (plan, layout) = (self.plan, self.layout);
        let [_, h_p, w_p] = layout.padded;
        let [k_d, k_h, _] = plan.kernel;
        let e = layout.element_bytes;
        let steps = layout.steps;
        let weights_bytes = k_d * k_h * steps * 16;
        // the accumulators start at the folded bias
        let bias = b
            .ins()
            .load(types::I32X4, ro(), consts, weights_bytes as i32);
        let accs = self.accs_of(rows, vectors);
        for &acc in accs.iter().flatten() {
            b.def_var(acc, bias);
        }
        let row_bytes = w_p * e;
        let row_weights = steps * 16;
        counted_loop(b, k_d, |b, kd| {
            let src_kd = scaled(b, src, kd, plan.dilation[0] * h_p * row_bytes);
            let w_kd = scaled(b, consts, kd, k_h * row_weights);
            if k_h * steps <= UNROLLED_ROW_STEPS {
                for kh in 0..k_h {
                    let offset = kh * plan.dilation[1] * row_bytes;
                    self.kernel_row(b, &accs, src_kd, offset, w_kd, kh);
                }
            } else {
                counted_loop(b, k_h, |b, kh| {
                    let src_kh = scaled(b, src_kd, kh, plan.dilation[1] * row_bytes);
                    let w_kh = scaled(b, w_kd, kh, row_weights);
                    self.kernel_row(b, &accs, src_kh, 0, w_kh, 0);
                });
            }
        });
        self.epilogue(b, &accs, consts, weights_bytes, dst, stored);
    }

    /// The accumulators of a tile of `rows` × `vectors`, by row.
    fn accs_of(&self, rows: usize, vectors: usize) -> Vec<Vec<Variable>> {
        (0..rows)
            .map(|r| {
                let first = r * self.layout.vectors;
                self.accs[first..first + vectors].to_vec()
            })
            .collect()
    }

    /// Kernel row `kh` (its weights at `weights + kh · steps · 16`, its first input row at
    /// `src + offset` for the tile's output row 0) into every accumulator.
    fn kernel_row(
        &self,
        b: &mut FunctionBuilder,
        accs: &[Vec<Variable>],
        src: Value,
        offset: usize,
        weights: Value,
        kh: usize,
    ) {
        let (plan, layout) = (self.plan, self.layout);
        let e = layout.element_bytes;
        let row_bytes = layout.padded[2] * e;
        let (vector, accumulate): (_, Accumulate) = match layout.inner {
            InnerProduct::Pmaddwd => (types::I16X8, pmaddwd_accumulate),
            InnerProduct::Vpdpbusd => (types::I8X16, vpdpbusd_accumulate),
            InnerProduct::Usdot => (types::I8X16, usdot_accumulate),
            InnerProduct::Sdot => (types::I8X16, sdot_accumulate),
        };
        for step in 0..layout.steps {
            let w = b.ins().load(
                vector,
                weight_load(),
                weights,
                ((kh * layout.steps + step) * 16) as i32,
            );
            for (r, row) in accs.iter().enumerate() {
                for (v, &acc) in row.iter().enumerate() {
                    let at = offset
                        + r * plan.stride[1] * row_bytes
                        + e * (4 * v * plan.stride[2]
                            + step * layout.taps_per_step * plan.dilation[2]);
                    let a = self.gather.emit(b, self.mask, src, at);
                    let a = vcast(b, vector, a);
                    let sum = b.use_var(acc);
                    let sum = accumulate(b, sum, a, w);
                    b.def_var(acc, sum);
                }
            }
        }
    }

    /// Requantize the accumulators (the bias already in) and store each output row's
    /// `stored` pixels: 16-byte vectors, byte pieces for a row narrower than the tile.
    ///
    /// The arithmetic is `emit::epilogue`'s with its two clamps merged: `· multiplier`,
    /// clamp to `[act_lo − zp, act_hi − zp]` in f32, round half to even, `+ zp`. Equal to
    /// clamping to `[q_min − zp, q_max − zp]`, rounding, adding `zp` and clamping to
    /// `[act_lo, act_hi]`: the activation bounds are integers inside the output range and
    /// rounding is monotonic, so it commutes with a clamp to integer bounds (a NaN gives
    /// the low bound either way); the result is in range, so the narrowing is exact. The
    /// rounding and `+ zp` are one f32 addition and one integer subtraction (below).
    fn epilogue(
        &self,
        b: &mut FunctionBuilder,
        accs: &[Vec<Variable>],
        consts: Value,
        weights_bytes: usize,
        dst: Value,
        stored: usize,
    ) {
        let requant: Requant = self.plan.requant();
        let mult = b
            .ins()
            .load(types::F32X4, ro(), consts, (weights_bytes + 16) as i32);
        let (act_lo, act_hi) = requant.act_bounds;
        let zero_point = requant.zero_point;
        // integers of at most 9 bits: exact in f32
        let lo_f = splat_f32(b, (act_lo - zero_point) as f32);
        let hi_f = splat_f32(b, (act_hi - zero_point) as f32);
        // round half to even and add zp: `f + 1.5·2^23` in f32 is the integer `2^23 + 2^22 +
        // round(f)` (|f| ≤ 255: the sum lies in [2^23, 2^24), where the spacing is 1, and
        // IEEE addition rounds ties to even, the parity of the even `1.5·2^23 + n` being
        // n's), so its bits minus `bits(1.5·2^23) − zp` are `round(f) + zp`
        const MAGIC: f32 = 12_582_912.0;
        let magic = splat_f32(b, MAGIC);
        let unbias = splat_i32(b, (MAGIC.to_bits() as i32).wrapping_sub(zero_point));
        let out_w = self.plan.output[2];
        for (r, row) in accs.iter().enumerate() {
            let q: Vec<Value> = row
                .iter()
                .map(|&acc| {
                    let acc = b.use_var(acc);
                    let f = b.ins().fcvt_from_sint(types::F32X4, acc);
                    let f = b.ins().fmul(f, mult);
                    let f = fmax_to_bound(b, f, lo_f);
                    let f = fmin_to_bound(b, f, hi_f);
                    let f = b.ins().fadd(f, magic);
                    let i = vcast(b, types::I32X4, f);
                    b.ins().isub(i, unbias)
                })
                .collect();
            // four I32X4 → two I16X8 → 16 bytes: pixels 16·chunk .. 16·chunk + 15
            for (chunk, quad) in q.chunks(4).enumerate() {
                let pick = |k: usize| quad[k.min(quad.len() - 1)];
                let low = b.ins().snarrow(pick(0), pick(1));
                let high = b.ins().snarrow(pick(2), pick(3));
                let bytes = if requant.signed_out {
                    b.ins().snarrow(low, high)
                } else {
                    b.ins().unarrow(low, high)
                };
                let first = 16 * chunk;
                let count = stored.saturating_sub(first).min(16);
                store_bytes(b, bytes, dst, r * out_w + first, count);
            }
        }
    }
}

/// Store the first `count` (≤ 16) bytes of `bytes` at `dst + offset`: one vector store,
/// else pieces of 8, 4, 2 and 1 bytes.
fn store_bytes(b: &mut FunctionBuilder, bytes: Value, dst: Value, offset: usize, count: usize) {
    if count == 16 {
        let (addr, off) = at(b, dst, offset);
        b.ins().store(mem(), bytes, addr, off);
        return;
    }
    let mut done = 0;
    for (size, ty) in [
        (8, types::I64X2),
        (4, types::I32X4),
        (2, types::I16X8),
        (1, types::I8X16),
    ] {
        if count - done >= size {
            let lanes = vcast(b, ty, bytes);
            let piece = b.ins().extractlane(lanes, (done / size) as u8);
            let (addr, off) = at(b, dst, offset + done);
            b.ins().store(mem(), piece, addr, off);
            done += size;
        }
    }
    debug_assert_eq!(done, count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qconv::assert_matches_interpreter;
    use crate::{JitOptions, QConvNode, QConvPath};
    use kiln_ir::{Activation, ConvAttrs, Quant, Tensor, TensorData, TensorType};

    /// The gather of each inner product's window: 4 pixels × `t` taps fit one load at
    /// small strides; `pmaddwd` at stride 2 reads the elements in place.
    #[test]
    fn gather_follows_the_window() {
        // bytes: pixel j, tap k at j·s + k·d
        assert!(matches!(
            Gather::new(gather_indices(1, 1, 1)),
            Gather::Shuffle1(_)
        ));
        assert!(matches!(
            Gather::new(gather_indices(1, 3, 2)),
            Gather::Shuffle1(_)
        ));
        assert!(matches!(
            Gather::new(gather_indices(1, 5, 4)),
            Gather::Shuffle2(_)
        ));
        assert!(matches!(
            Gather::new(gather_indices(1, 9, 2)),
            Gather::Bytes(_)
        ));
        // i16 pairs: pixel j, tap k at 2·(j·s + k·d)
        assert!(matches!(Gather::new(gather_indices(2, 2, 1)), Gather::Load));
        assert!(matches!(
            Gather::new(gather_indices(2, 1, 1)),
            Gather::Shuffle1(_)
        ));
        assert!(matches!(
            Gather::new(gather_indices(2, 3, 2)),
            Gather::Shuffle2(_)
        ));
        assert!(matches!(
            Gather::new(gather_indices(2, 5, 3)),
            Gather::Bytes(_)
        ));
        let Gather::Shuffle1(mask) = Gather::new(gather_indices(1, 2, 1)) else {
            unreachable!("checked above: stride 2 bytes fit one load")
        };
        assert_eq!(mask, [0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9]);
    }

    /// Depthwise convs beyond the random tests' strides (1–3), dilations (1–2) and kernels
    /// (the byte-load gather, the loop over kernel rows), with both inner products and
    /// narrow and wide rows, bit-exact against the interpreter.
    #[test]
    fn large_strides_dilations_and_kernels_match_the_interpreter() {
        // (channels, input size, kernel, stride, dilation, pad)
        let shapes = [
            (5, 40, 3, 9, 2, 1),
            (3, 61, 3, 5, 6, 6),
            (6, 23, 13, 1, 1, 6),
            (2, 30, 7, 2, 1, 3),
            (9, 7, 3, 1, 1, 1),
        ];
        let mut lcg = crate::testing::Lcg::new(0x9E37_79B9_7F4A_7C15);
        let mut next = move || lcg.next_u32();
        for (c, size, k, s, d, pad) in shapes {
            for signed in [false, true] {
                let out = (size + 2 * pad - d * (k - 1) - 1) / s + 1;
                let (x_dtype, x_zp) = if signed {
                    (DType::I8, -3)
                } else {
                    (DType::U8, 131)
                };
                let data = (0..c * size * size).map(|_| next() as u8);
                let x = if signed {
                    TensorData::I8(data.map(|v| v as i8).collect())
                } else {
                    TensorData::U8(data.collect())
                };
                let x = Tensor::new(vec![1, c, size, size], x).expect("sizes match");
                let w = Tensor::new(
                    vec![c, 1, k, k],
                    TensorData::I8((0..c * k * k).map(|_| next() as i8).collect()),
                )
                .expect("sizes match");
                let b = Tensor::new(
                    vec![c],
                    TensorData::I32((0..c).map(|_| (next() % 4000) as i32 - 2000).collect()),
                )
                .expect("sizes match");
                let x_ty = TensorType::new(x_dtype, vec![1, c, size, size])
                    .with_quant(Quant::per_tensor(0.02, x_zp));
                let w_ty = TensorType::new(DType::I8, vec![c, 1, k, k])
                    .with_quant(Quant::per_tensor(0.01, 0));
                let b_ty = TensorType::new(DType::I32, vec![c]);
                let y_ty = TensorType::new(DType::U8, vec![1, c, out, out])
                    .with_quant(Quant::per_tensor(0.07, 10));
                let attrs = ConvAttrs {
                    kernel: vec![k, k],
                    strides: vec![s, s],
                    pads: vec![pad; 4],
                    dilations: vec![d, d],
                    groups: c,
                    act: Some(Activation::Relu),
                };
                let node = QConvNode {
                    attrs: &attrs,
                    x_ty: &x_ty,
                    w: &w,
                    w_ty: &w_ty,
                    bias: Some((&b, &b_ty)),
                    out_ty: &y_ty,
                };
                let options = JitOptions {
                    capture_disassembly: false,
                    verify: Some(true),
                };
                assert_matches_interpreter(
                    &node,
                    &x,
                    QConvPath::Depthwise,
                    &options,
                    &format!("c {c} size {size} k {k} s {s} d {d} signed {signed}"),
                );
            }
        }
    }
}
