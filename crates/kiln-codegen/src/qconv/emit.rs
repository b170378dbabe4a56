//! CLIF for one QConv, as two functions run per batch item: *widen* fills the scratch with
//! `zp_x` (the padding) and widens the input into it (i16 channel pairs or u8 channel
//! quads, [`Layout`]); *compute* then, for each group and tile of `4·nr` output channels,
//! sweeps the output pixels `mr` at a time through the micro-kernel: `mr × nr` I32X4
//! accumulators, and per k-step (tap, input channel pair or quad) `nr` weight vector loads,
//! `mr` loads of (pre-broadcast) activation words and `mr·nr` `pmaddwd`s or byte dot products
//! (`vpdpbusd`, `usdot`, `sdot`).
//! The epilogue adds the folded bias, requantizes in f32 exactly as the interpreter does,
//! and stores bytes into the NCHW output.

use super::layout::{InnerProduct, Layout, STEPS_PER_ITERATION, STEP_BYTES};
use super::plan::QConvPlan;
use crate::clif::{
    at, counted_loop, define_function, fmax_to_bound, fmin_to_bound, mem, mem_aligned,
    pmaddwd_accumulate, range_loop, scaled, sdot_accumulate, splat_f32, splat_i32,
    usdot_accumulate, vcast, vpdpbusd_accumulate, widen_half, Accumulate,
};
use crate::felem_chain::{emit_in_place_run, load_run, store_run, Program};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    types, ConstantData, Function, InstBuilder, MemFlagsData, Signature, Value,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_ir::DType;

/// `extern "C" fn(x, scratch, first, end)` for one batch item: widen the input rows
/// `first..end` (numbered across depth planes, `d · H + h`) into the scratch and fill the
/// padding that follows each of them (row 0 also the padding before it). Disjoint row
/// ranges write disjoint scratch bytes, so threads can split the rows; the whole range
/// `0..D·H` fills every slot the compute function reads.
pub(crate) fn build_widen_function(
    plan: &QConvPlan,
    layout: &Layout,
    signature: Signature,
    target: TargetFrontendConfig,
) -> Function {
    define_function(signature, target, |b, p| {
        let (x, scratch, first, end) = (p[0], p[1], p[2], p[3]);
        let [_, h_n, w_n] = plan.input;
        let [pb_d, pb_h, pb_w] = plan.pad_begin;
        let plane_stride = layout.scratch_pixel(1, 0, 0);
        let row_stride = layout.scratch_pixel(0, 1, 0);
        let origin = layout.scratch_pixel(pb_d, pb_h, pb_w);
        // without padding the widening below writes every slot the kernel reads (a group's
        // last, partial k-step included: its missing channels get the padding value)
        let padded = plan.pad_begin.iter().chain(&plan.pad_end).any(|&p| p > 0);
        let pattern = padded.then(|| padding_pattern(b, plan, layout));
        range_loop(b, first, end, |b, r| {
            // the row's first pixel in the scratch: (pb_d + d, pb_h + h, pb_w)
            let row_base = if plan.input[0] == 1 {
                scaled(b, scratch, r, row_stride)
            } else {
                let d = b.ins().udiv_imm_u(r, h_n as i64);
                let d_rows = b.ins().imul_imm_u(d, h_n as i64);
                let h = b.ins().isub(r, d_rows);
                let plane_base = scaled(b, scratch, d, plane_stride);
                scaled(b, plane_base, h, row_stride)
            };
            let row_base = b.ins().iadd_imm_u(row_base, origin as i64);
            let src_row = scaled(b, x, r, w_n);
            widen_row(b, plan, layout, src_row, row_base);
            if let Some(pattern) = pattern {
                fill_row_padding(b, plan, layout, pattern, scratch, r, row_base);
            }
        });
    })
}

/// `extern "C" fn(packed, scratch, out, first, end, operands)` for one batch item: the
/// channel tiles `first..end` (numbered across groups, `g · tiles_per_group + t`), each
/// over every pixel tile through the micro-kernel. The scratch is not written while this
/// runs, so its loads are `readonly` (pure for Cranelift): that lets a broadcast's load
/// fold into `vbroadcastss` and loop-invariant loads leave loops. With a `fusion`, the
/// requantized values go through its chain ([`Fusion`]), whose other operands' pointers
/// `operands` holds (one per chain operand, in the chain's order; the conv's own is not
/// read); without, `operands` is not read.
pub(crate) fn build_compute_function(
    plan: &QConvPlan,
    layout: &Layout,
    fusion: Option<&Fusion>,
    signature: Signature,
    target: TargetFrontendConfig,
) -> Function {
    define_function(signature, target, |b, p| {
        let fused = fusion.map(|fusion| FusedStore::new(b, fusion, p[2], p[5]));
        // an int8 chain output runs in place after each tile ([`FusedStore::in_place_tile`]);
        // otherwise every value goes through the chain as it is stored, and the tile
        // addresses below are element indices (from 0), which `FusedStore` scales to each
        // operand's and the output's element size
        let in_place = fused.as_ref().is_some_and(FusedStore::in_place);
        let per_element = fused.as_ref().filter(|_| !in_place);
        let out = match per_element {
            Some(_) => b.ins().iconst(types::I64, 0),
            None => p[2],
        };
        let bufs = Buffers {
            packed: p[0],
            scratch: p[1],
            out,
        };
        let sweep = |b: &mut FunctionBuilder, g: Value, t: Value, channels: usize| {
            micro_kernel_sweep(b, plan, layout, bufs, per_element, g, t, channels);
            if let Some(f) = fused.as_ref().filter(|_| in_place) {
                f.in_place_tile(b, plan, layout, g, t, channels);
            }
        };
        // the tiles `first..end` of all groups, numbered `g · tiles_per_group + t`: a call
        // writes only their output channels, so disjoint ranges can run on separate threads
        let (first, end) = (p[3], p[4]);
        let tiles_per_group = layout.tiles_per_group as i64;
        range_loop(b, first, end, |b, tile| {
            let g = b.ins().udiv_imm_u(tile, tiles_per_group);
            let group_start = b.ins().imul_imm_u(g, tiles_per_group);
            let t = b.ins().isub(tile, group_start);
            if layout.partial_channels == 0 {
                sweep(b, g, t, 4 * layout.nr);
                return;
            }
            // the last tile of a group stores only its valid channels
            let (full, partial, merge) = (b.create_block(), b.create_block(), b.create_block());
            let is_partial = b
                .ins()
                .icmp_imm_u(IntCC::Equal, t, layout.full_tiles as i64);
            b.ins().brif(is_partial, partial, &[], full, &[]);
            b.switch_to_block(full);
            sweep(b, g, t, 4 * layout.nr);
            b.ins().jump(merge, &[]);
            b.switch_to_block(partial);
            sweep(b, g, t, layout.partial_channels);
            b.ins().jump(merge, &[]);
            b.switch_to_block(merge);
        });
    })
}

/// The byte addresses `out + p_m` of pixel tile `pt`'s `mr` pixels in an int8 output
/// plane, `p_m = min(pt·mr + m, pixels − 1)`: the last tile repeats the last pixel (its
/// extra stores rewrite the same bytes).
pub(crate) fn tile_pixel_outputs(
    b: &mut FunctionBuilder,
    pt: Value,
    mr: usize,
    pixels: usize,
    out: Value,
) -> Vec<Value> {
    let first = b.ins().imul_imm_u(pt, mr as i64);
    let last = b.ins().iconst(types::I64, (pixels - 1) as i64);
    (0..mr)
        .map(|m| {
            let p = b.ins().iadd_imm_u(first, m as i64);
            let p = b.ins().umin(p, last);
            b.ins().iadd(out, p)
        })
        .collect()
}

/// An elementwise chain fused after the requantization (`QConvEpilogue`): its operand
/// `conv_operand` is the conv's requantized output (in range, as I32X4 lanes), the others
/// are read at the output element's own index; its value is stored instead of the conv's
/// bytes. The chain's instructions are the fused-chain kernel's, lane for lane.
pub(crate) struct Fusion<'a> {
    pub program: Program<'a>,
    pub conv_operand: usize,
}

/// A [`Fusion`] inside a compute function: the operand pointers (loaded from the
/// `operands` array on entry; `None` for the conv's own) and the real output pointer.
struct FusedStore<'a> {
    fusion: &'a Fusion<'a>,
    operands: Vec<Option<Value>>,
    out: Value,
}

impl<'a> FusedStore<'a> {
    fn new(
        b: &mut FunctionBuilder,
        fusion: &'a Fusion<'a>,
        out: Value,
        operands: Value,
    ) -> FusedStore<'a> {
        let operands = (0..fusion.program.operands.len())
            .map(|k| {
                (k != fusion.conv_operand).then(|| {
                    b.ins().load(
                        types::I64,
                        mem_aligned().with_readonly(),
                        operands,
                        (8 * k) as i32,
                    )
                })
            })
            .collect();
        FusedStore {
            fusion,
            operands,
            out,
        }
    }

    /// Whether the chain's output has the conv's element size (u8/i8), so that it can run
    /// in place of the conv's bytes.
    fn in_place(&self) -> bool {
        self.fusion.program.out_dtype().size_bytes() == 1
    }

    /// After the sweep of tile `t` of group `g` stored the conv's bytes of its `channels`
    /// channels (one contiguous run of `channels · pixels` output elements, NCHW), run the
    /// chain over that run in place: 16 elements per step, as the fused-chain kernel, on
    /// bytes the tile has just written (still in cache).
    fn in_place_tile(
        &self,
        b: &mut FunctionBuilder,
        plan: &QConvPlan,
        layout: &Layout,
        g: Value,
        t: Value,
        channels: usize,
    ) {
        let pixels = plan.out_pixels();
        let group_first = b.ins().imul_imm_u(g, plan.cout_g as i64);
        let tile_first = b.ins().imul_imm_u(t, 4 * layout.nr as i64);
        let channel = b.ins().iadd(group_first, tile_first);
        let first = b.ins().imul_imm_u(channel, pixels as i64);
        let (bases, out) = self.bases(b, first);
        let bases: Vec<Value> = bases.into_iter().map(|base| base.unwrap_or(out)).collect();
        let program = &self.fusion.program;
        emit_in_place_run(
            b,
            program,
            self.fusion.conv_operand,
            &bases,
            out,
            channels * pixels,
        );
    }

    /// Per operand, its address of element `index` (`None` for the conv's own), and the
    /// output's.
    fn bases(&self, b: &mut FunctionBuilder, index: Value) -> (Vec<Option<Value>>, Value) {
        let program = &self.fusion.program;
        let bases = self
            .operands
            .iter()
            .zip(&program.operand_dtypes)
            .map(|(ptr, dtype)| ptr.map(|ptr| scaled(b, ptr, index, dtype.size_bytes())))
            .collect();
        (
            bases,
            scaled(b, self.out, index, program.out_dtype().size_bytes()),
        )
    }

    /// Evaluate the chain on `lanes` (1 or 4) consecutive elements, `offset` elements after
    /// the `bases`, whose conv values are `conv` (I32X4), and store them.
    fn eval_store(
        &self,
        b: &mut FunctionBuilder,
        (bases, out): &(Vec<Option<Value>>, Value),
        offset: usize,
        conv: Value,
        lanes: usize,
    ) {
        let program = &self.fusion.program;
        let values: Vec<Value> = bases
            .iter()
            .zip(&program.operand_dtypes)
            .map(|(base, &dtype)| match base {
                None => conv,
                Some(base) => {
                    let (ptr, off) = at(b, *base, offset * dtype.size_bytes());
                    load_run(b, dtype, ptr, off, lanes)[0]
                }
            })
            .collect();
        let v = program.eval(b, &values);
        let out_dtype = program.out_dtype();
        let (ptr, off) = at(b, *out, offset * out_dtype.size_bytes());
        store_run(b, out_dtype, &[v], ptr, off, lanes);
    }
}

/// The compute function's arguments, as entry block parameters.
#[derive(Clone, Copy)]
struct Buffers {
    packed: Value,
    scratch: Value,
    out: Value,
}

/// Loads of data that is not written during a compute call (packed constants, the
/// scratch), through addresses that are in bounds wherever their operands exist. Cranelift
/// then treats them as pure (`readonly` + `notrap` + `can_move`): they are scheduled next
/// to their uses instead of staying in program order ahead of all arithmetic — which would
/// hold every k-step's operands live at once and spill accumulators — and invariant ones
/// leave loops.
pub(crate) fn ro() -> MemFlagsData {
    let mut flags = mem_aligned().with_readonly();
    flags.set_can_move();
    flags
}

/// The padding value as a vector of scratch words: the i16 pair `(zp_x, zp_x)`
/// (`pmaddwd`) or four bytes `zp_x + offset` (byte dot products): padding reads the input
/// zero point.
fn padding_pattern(b: &mut FunctionBuilder, plan: &QConvPlan, layout: &Layout) -> Value {
    let word = match layout.inner {
        InnerProduct::Pmaddwd => {
            let zp16 = plan.x_zero_point as i16 as u16 as u32;
            zp16 | (zp16 << 16)
        }
        InnerProduct::Vpdpbusd | InnerProduct::Usdot | InnerProduct::Sdot => {
            // zp_x + offset is one byte of the signedness the instruction reads
            let byte = (plan.x_zero_point + layout.activation_offset) as u8 as u32;
            byte * 0x0101_0101
        }
    };
    splat_i32(b, word as i32)
}

/// Store the padding `pattern` over `bytes` (a multiple of 16) from `base + offset`:
/// whole 64-byte blocks in a loop, the rest straight-line.
fn fill_bytes(b: &mut FunctionBuilder, pattern: Value, base: Value, offset: usize, bytes: usize) {
    let start = b.ins().iadd_imm_u(base, offset as i64);
    counted_loop(b, bytes / 64, |b, i| {
        let block = scaled(b, start, i, 64);
        for k in 0..4i32 {
            b.ins().store(mem_aligned(), pattern, block, 16 * k);
        }
    });
    for k in 0..(bytes % 64) / STEP_BYTES {
        let off = ((bytes / 64) * 64 + k * STEP_BYTES) as i32;
        b.ins().store(mem_aligned(), pattern, start, off);
    }
}

/// The scratch words around input row `r` (an i64 value; `row_base` its first pixel in
/// the scratch) that no input pixel fills, as row `r`'s share of the padding: the gap from
/// the row's end to the next row's start (right then left padding; after a plane's last
/// row also the bottom padding and the next plane's top; after the last row everything to
/// the end of the pixels), and for row 0 everything before it. The input's pixels are left
/// alone: the widening writes each of them whole (every group and k-step, a partial last
/// step's missing channels included).
fn fill_row_padding(
    b: &mut FunctionBuilder,
    plan: &QConvPlan,
    layout: &Layout,
    pattern: Value,
    scratch: Value,
    r: Value,
    row_base: Value,
) {
    let [d_n, h_n, w_n] = plan.input;
    let [pb_d, pb_h, pb_w] = plan.pad_begin;
    let span_start = |d: usize, h: usize| layout.scratch_pixel(pb_d + d, pb_h + h, pb_w);
    let span_end = |d: usize, h: usize| layout.scratch_pixel(pb_d + d, pb_h + h, pb_w + w_n);
    let pixels_end = layout.padded.iter().product::<usize>() * layout.pixel_stride;
    let rows = d_n * h_n;
    let row_bytes = w_n * layout.pixel_stride;
    // within a plane: right padding of row h, left padding of row h + 1
    let row_gap = span_start(0, 1) - span_end(0, 0);
    // the last row of a plane to the first of the next
    let plane_gap = span_start(1, 0) - span_end(0, h_n - 1);
    let tail = pixels_end - span_end(d_n - 1, h_n - 1);
    let if_then = |b: &mut FunctionBuilder,
                   cond: Value,
                   then: &mut dyn FnMut(&mut FunctionBuilder),
                   otherwise: &mut dyn FnMut(&mut FunctionBuilder)| {
        let (yes, no, merge) = (b.create_block(), b.create_block(), b.create_block());
        b.ins().brif(cond, yes, &[], no, &[]);
        b.switch_to_block(yes);
        then(b);
        b.ins().jump(merge, &[]);
        b.switch_to_block(no);
        otherwise(b);
        b.ins().jump(merge, &[]);
        b.switch_to_block(merge);
    };
    let head = span_start(0, 0);
    if head > 0 {
        let is_first = b.ins().icmp_imm_u(IntCC::Equal, r, 0);
        if_then(
            b,
            is_first,
            &mut |b| fill_bytes(b, pattern, scratch, 0, head),
            &mut |_| {},
        );
    }
    // the gap after the row: which one depends on where the row is
    let h = b.ins().urem_imm_u(r, h_n as i64);
    let in_plane = b.ins().icmp_imm_u(IntCC::NotEqual, h, (h_n - 1) as i64);
    let is_last = b.ins().icmp_imm_u(IntCC::Equal, r, (rows - 1) as i64);
    if_then(
        b,
        in_plane,
        &mut |b| fill_bytes(b, pattern, row_base, row_bytes, row_gap),
        &mut |b| {
            if_then(
                b,
                is_last,
                &mut |b| fill_bytes(b, pattern, row_base, row_bytes, tail),
                &mut |b| fill_bytes(b, pattern, row_base, row_bytes, plane_gap),
            )
        },
    );
}

/// Widen one input row (`src_row`: its first pixel in channel plane 0) into the scratch
/// (`dst_row`: the row's first pixel): per pixel and k-step `j`, the word of input channels
/// `(c·j .. c·j + c)` (`c` = channels per step) repeated four times; a group's last step
/// fills missing channels with the padding value, which meets zero weights.
fn widen_row(
    b: &mut FunctionBuilder,
    plan: &QConvPlan,
    layout: &Layout,
    src_row: Value,
    dst_row: Value,
) {
    let plane = plan.in_pixels();
    let per_step = layout.inner.channels_per_step();
    counted_loop(b, plan.groups, |b, g| {
        let src_g = scaled(b, src_row, g, plan.cin_g * plane);
        let dst_g = scaled(b, dst_row, g, layout.steps * STEP_BYTES);
        counted_loop(b, plan.cin_g / per_step, |b, j| {
            let src = scaled(b, src_g, j, per_step * plane);
            let dst = scaled(b, dst_g, j, STEP_BYTES);
            widen_step_row(b, plan, layout, src, per_step, dst);
        });
        let rest = plan.cin_g % per_step;
        if rest > 0 {
            let full = plan.cin_g / per_step;
            let src = b.ins().iadd_imm_u(src_g, (full * per_step * plane) as i64);
            let dst = b.ins().iadd_imm_u(dst_g, (full * STEP_BYTES) as i64);
            widen_step_row(b, plan, layout, src, rest, dst);
        }
    });
}

/// One k-step of one row: `present` channel planes' row from `src_row` (one plane apart;
/// the rest the padding value) into the scratch slots of the row's pixels from `dst_row`.
fn widen_step_row(
    b: &mut FunctionBuilder,
    plan: &QConvPlan,
    layout: &Layout,
    src_row: Value,
    present: usize,
    dst_row: Value,
) {
    let w_n = plan.input[2];
    let plane = plan.in_pixels();
    let signed = plan.x_dtype == DType::I8;
    let shifted = layout.activation_offset != 0;
    let inner = layout.inner;
    let per_step = inner.channels_per_step();
    // the value of channel `k` of the step, placed in its bits of the 32-bit word
    let channel = |b: &mut FunctionBuilder, at_src: Value, w: usize, k: usize| match inner {
        InnerProduct::Pmaddwd => {
            let v = if k >= present {
                b.ins().iconst(types::I32, plan.x_zero_point as i64)
            } else if signed {
                b.ins()
                    .sload8(types::I32, mem(), at_src, (k * plane + w) as i32)
            } else {
                b.ins()
                    .uload8(types::I32, mem(), at_src, (k * plane + w) as i32)
            };
            let v = b.ins().band_imm_u(v, 0xffff);
            b.ins().ishl_imm_u(v, 16 * k as i64)
        }
        InnerProduct::Vpdpbusd | InnerProduct::Usdot | InnerProduct::Sdot => {
            let v = if k >= present {
                let byte = (plan.x_zero_point + layout.activation_offset) as u8;
                b.ins().iconst(types::I32, byte as i64)
            } else {
                let raw = b
                    .ins()
                    .uload8(types::I32, mem(), at_src, (k * plane + w) as i32);
                if shifted {
                    // the offset is ±128: i8 bits ^ 0x80 = (x + 128) as u8, u8 bits ^ 0x80
                    // = (x − 128) as i8
                    b.ins().bxor_imm_u(raw, 0x80)
                } else {
                    raw
                }
            };
            b.ins().ishl_imm_u(v, 8 * k as i64)
        }
    };
    let copy = |b: &mut FunctionBuilder, src: Value, dst: Value, w: usize| {
        let mut word = channel(b, src, w, 0);
        for k in 1..per_step {
            let part = channel(b, src, w, k);
            word = b.ins().bor(word, part);
        }
        let v = b.ins().splat(types::I32X4, word);
        let (addr, off) = at(b, dst, w * layout.pixel_stride);
        b.ins().store(mem_aligned(), v, addr, off);
    };
    // whole quads of bytes: sixteen pixels per iteration as vectors
    let vector_chunks = if inner.on_bytes() && present == per_step {
        w_n / QUAD_CHUNK
    } else {
        0
    };
    counted_loop(b, vector_chunks, |b, i| {
        let src_i = scaled(b, src_row, i, QUAD_CHUNK);
        let dst_i = scaled(b, dst_row, i, QUAD_CHUNK * layout.pixel_stride);
        widen_quad_chunk(b, layout, src_i, plane, dst_i, 0);
    });
    // the rest: four pixels per iteration, then straight-line
    const STEP: usize = 4;
    let start = vector_chunks * QUAD_CHUNK;
    let src_s = b.ins().iadd_imm_u(src_row, start as i64);
    let dst_s = b
        .ins()
        .iadd_imm_u(dst_row, (start * layout.pixel_stride) as i64);
    counted_loop(b, (w_n - start) / STEP, |b, i| {
        let src_i = scaled(b, src_s, i, STEP);
        let dst_i = scaled(b, dst_s, i, STEP * layout.pixel_stride);
        for k in 0..STEP {
            copy(b, src_i, dst_i, k);
        }
    });
    for w in start + (w_n - start) / STEP * STEP..w_n {
        copy(b, src_row, dst_row, w);
    }
}

/// Pixels of one row a [`widen_quad_chunk`] call widens.
const QUAD_CHUNK: usize = 16;

/// Sixteen consecutive pixels of one k-step of four present channels (the byte inner
/// products), as vectors: a 16-byte load per channel plane (shifted by the activation
/// offset: `^ 0x80`), a byte then 16-bit interleave into the pixels' channel quads (the
/// scalar path's words: channel `k` in byte `k`), and per pixel its quad broadcast to the
/// four lanes and stored to its scratch entry at `dst + origin + p · pixel_stride`.
fn widen_quad_chunk(
    b: &mut FunctionBuilder,
    layout: &Layout,
    src: Value,
    plane: usize,
    dst: Value,
    origin: usize,
) {
    let shuffle = |b: &mut FunctionBuilder, x: Value, y: Value, lanes: [u8; 16]| {
        let mask = b.func.dfg.immediates.push(ConstantData::from(&lanes[..]));
        b.ins().shuffle(x, y, mask)
    };
    let flip = (layout.activation_offset != 0).then(|| {
        let v = b.ins().iconst(types::I8, 0x80);
        b.ins().splat(types::I8X16, v)
    });
    let planes: Vec<Value> = (0..4)
        .map(|k| {
            let v = b.ins().load(types::I8X16, mem(), src, (k * plane) as i32);
            // the offset is ±128: the byte ^ 0x80, as in the scalar path
            flip.map_or(v, |f| b.ins().bxor(v, f))
        })
        .collect();
    // bytes of pixels 8h .. 8h + 7 of channels (2c, 2c + 1), interleaved
    let pairs = |b: &mut FunctionBuilder, c: usize, h: u8| {
        let lanes = std::array::from_fn(|i| 8 * h + (i as u8 / 2) + 16 * (i as u8 % 2));
        shuffle(b, planes[2 * c], planes[2 * c + 1], lanes)
    };
    for h in 0..2u8 {
        let (low, high) = (pairs(b, 0, h), pairs(b, 1, h));
        for half in 0..2u8 {
            // pixels 8h + 4·half .. + 3: channel pair (0, 1) from `low`, (2, 3) from `high`
            let lanes = std::array::from_fn(|i| {
                let (pixel, byte) = (4 * half + i as u8 / 4, i as u8 % 4);
                2 * pixel + byte % 2 + 16 * (byte / 2)
            });
            let quads = shuffle(b, low, high, lanes);
            for lane in 0..4u8 {
                let broadcast = shuffle(
                    b,
                    quads,
                    quads,
                    std::array::from_fn(|i| 4 * lane + i as u8 % 4),
                );
                let pixel = (8 * h + 4 * half + lane) as usize;
                let (addr, off) = at(b, dst, origin + pixel * layout.pixel_stride);
                b.ins().store(mem_aligned(), broadcast, addr, off);
            }
        }
    }
}

/// All output pixels of tile `t` (an i64 value) of group `g`: `channels` valid output
/// channels (`4·nr` except in a group's last, partial tile).
#[allow(clippy::too_many_arguments)]
fn micro_kernel_sweep(
    b: &mut FunctionBuilder,
    plan: &QConvPlan,
    layout: &Layout,
    bufs: Buffers,
    fused: Option<&FusedStore>,
    g: Value,
    t: Value,
    channels: usize,
) {
    let (mr, nr) = (layout.mr, layout.nr);
    let tile_channels = 4 * nr;
    let pixels = plan.out_pixels();
    let tile_in_group = b.ins().imul_imm_u(g, layout.tiles_per_group as i64);
    let tile = b.ins().iadd(tile_in_group, t);
    let weights = scaled(b, bufs.packed, tile, layout.tile_weight_bytes);
    let consts = scaled(b, bufs.packed, tile, nr * 16);
    let group_scratch = scaled(b, bufs.scratch, g, layout.steps * STEP_BYTES);
    let group_out = scaled(b, bufs.out, g, plan.cout_g * pixels);
    let tile_out = scaled(b, group_out, t, tile_channels * pixels);

    let accs: Vec<Vec<Variable>> = (0..mr)
        .map(|_| (0..nr).map(|_| b.declare_var(types::I32X4)).collect())
        .collect();
    let tile_consts = TileConsts {
        nr,
        bias_offset: layout.bias_offset,
        multiplier_offset: layout.multiplier_offset,
        channel_stride: pixels,
    };
    let requant = plan.requant();
    // one pixel tile: its reduction, then the epilogue; `quads`: its `mr = 4` pixels are
    // consecutive (a whole tile), so each channel's four output bytes are one 32-bit store
    let pixel_tile = |b: &mut FunctionBuilder, pt: Value, quads: bool| {
        let table = scaled(b, bufs.packed, pt, mr * 4);
        let bases: Vec<Value> = (0..mr)
            .map(|m| {
                let off = b
                    .ins()
                    .uload32(ro(), table, (layout.pixel_table_offset + 4 * m) as i32);
                b.ins().iadd(group_scratch, off)
            })
            .collect();
        // the accumulators start at the folded bias: no addition in the epilogue
        for row in &accs {
            for (r, &acc) in row.iter().enumerate() {
                let offset = (layout.bias_offset + 16 * r) as i32;
                let bias = b.ins().load(types::I32X4, ro(), consts, offset);
                b.def_var(acc, bias);
            }
        }
        reduction(b, layout, &accs, &bases, weights, bufs.packed);
        let pixel_out = tile_pixel_outputs(b, pt, mr, pixels, tile_out);
        let q = requantize(b, &requant, &tile_consts, &accs, consts);
        match (fused, quads) {
            (None, true) => store_pixel_quads(b, &requant, &q, pixel_out[0], pixels, channels),
            (None, false) => store_pixel_bytes(b, &requant, &q, &pixel_out, pixels, channels),
            (Some(f), true) => {
                let bases = f.bases(b, pixel_out[0]);
                for_channel_quads(b, &requant, &q, channels, |b, base, gathered| {
                    // channel base + j's four pixels, as I32X4 (exact: in range)
                    let widen = |b: &mut FunctionBuilder, v: Value, high: bool| {
                        widen_half(b, v, requant.signed_out, high)
                    };
                    for (half_index, high) in [false, true].into_iter().enumerate() {
                        let half = widen(b, gathered, high);
                        for (j, high) in [false, true].into_iter().enumerate() {
                            let channel = base + 2 * half_index + j;
                            if channel >= channels.min(4 * nr) {
                                return;
                            }
                            let conv = widen(b, half, high);
                            f.eval_store(b, &bases, channel * pixels, conv, QUAD_PIXELS);
                        }
                    }
                });
            }
            (Some(f), false) => {
                for (row, &pixel) in q.iter().zip(&pixel_out) {
                    let bases = f.bases(b, pixel);
                    for channel in 0..channels.min(4 * nr) {
                        let lane = b.ins().extractlane(row[channel / 4], (channel % 4) as u8);
                        let conv = b.ins().splat(types::I32X4, lane);
                        f.eval_store(b, &bases, channel * pixels, conv, 1);
                    }
                }
            }
        }
    };
    if mr == QUAD_PIXELS {
        let whole = pixels / mr;
        counted_loop(b, whole, |b, pt| pixel_tile(b, pt, true));
        if whole < layout.pixel_tiles {
            let pt = b.ins().iconst(types::I64, whole as i64);
            pixel_tile(b, pt, false);
        }
    } else {
        counted_loop(b, layout.pixel_tiles, |b, pt| pixel_tile(b, pt, false));
    }
}

/// Pixels per tile for which the epilogue stores each channel's bytes as one 32-bit word.
const QUAD_PIXELS: usize = 4;

/// Requantize a tile's accumulators (which started at the folded bias): per pixel (row),
/// `nr` I32X4 vectors of output values, each inside the output range. The arithmetic is
/// [`epilogue`]'s with its two clamps merged (as the depthwise kernel does): `· multiplier`,
/// clamp to
/// `[max(q_min, act_lo) − zp, min(q_max, act_hi) − zp]` in f32, round half to even, `+ zp`.
/// That equals clamping to `[q_min − zp, q_max − zp]`, rounding, adding `zp` and clamping
/// to `[act_lo, act_hi]`: the bounds are integers and rounding is monotonic, so it
/// commutes with a clamp to integer bounds (a NaN gives the low bound either way). The
/// rounding and `+ zp` are one f32 addition and one integer subtraction: `f + 1.5·2^23`
/// is the integer `1.5·2^23 + round(f)` (|f| ≤ 255: the sum lies in [2^23, 2^24), where
/// the spacing is 1, and IEEE addition rounds ties to even, the parity of the even
/// `1.5·2^23 + n` being n's), so its bits minus `bits(1.5·2^23) − zp` are `round(f) + zp`.
fn requantize(
    b: &mut FunctionBuilder,
    plan: &Requant,
    layout: &TileConsts,
    accs: &[Vec<Variable>],
    consts: Value,
) -> Vec<Vec<Value>> {
    let nr = layout.nr;
    let mult: Vec<Value> = (0..nr)
        .map(|r| {
            let offset = (layout.multiplier_offset + 16 * r) as i32;
            b.ins().load(types::F32X4, ro(), consts, offset)
        })
        .collect();
    let zero_point = plan.zero_point;
    // the act bounds lie inside the output range, the requant bounds are its ends minus zp:
    // integers of at most 9 bits, exact in f32
    let lo = (plan.act_bounds.0 - zero_point) as f32;
    let hi = (plan.act_bounds.1 - zero_point) as f32;
    let lo_f = splat_f32(b, lo.max(plan.requant_bounds.0));
    let hi_f = splat_f32(b, hi.min(plan.requant_bounds.1));
    const MAGIC: f32 = 12_582_912.0;
    let magic = splat_f32(b, MAGIC);
    let unbias = splat_i32(b, (MAGIC.to_bits() as i32).wrapping_sub(zero_point));
    accs.iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(r, &acc)| {
                    let acc = b.use_var(acc);
                    let f = b.ins().fcvt_from_sint(types::F32X4, acc);
                    let f = b.ins().fmul(f, mult[r]);
                    let f = fmax_to_bound(b, f, lo_f);
                    let f = fmin_to_bound(b, f, hi_f);
                    let f = b.ins().fadd(f, magic);
                    let i = vcast(b, types::I32X4, f);
                    b.ins().isub(i, unbias)
                })
                .collect()
        })
        .collect()
}

/// Narrow two I16X8 vectors to the output's bytes (exact: the values are in range).
fn narrow_bytes(b: &mut FunctionBuilder, plan: &Requant, low: Value, high: Value) -> Value {
    if plan.signed_out {
        b.ins().snarrow(low, high)
    } else {
        b.ins().unarrow(low, high)
    }
}

/// Store the `channels` valid output channels of each pixel of a tile, one byte at a time
/// at `pixel_out[m] + channel · channel_stride` (any tile: the last pixel may repeat).
fn store_pixel_bytes(
    b: &mut FunctionBuilder,
    plan: &Requant,
    q: &[Vec<Value>],
    pixel_out: &[Value],
    channel_stride: usize,
    channels: usize,
) {
    for (m, row) in q.iter().enumerate() {
        // two I32X4 → one I16X8 → bytes; lane k of the bytes is channel 8·chunk + k
        for (chunk, pair) in row.chunks(2).enumerate() {
            let halves = b.ins().snarrow(pair[0], *pair.get(1).unwrap_or(&pair[0]));
            let bytes = narrow_bytes(b, plan, halves, halves);
            for k in 0..8 {
                let channel = 8 * chunk + k;
                if channel >= channels.min(4 * row.len()) {
                    break;
                }
                let byte = b.ins().extractlane(bytes, k as u8);
                let (addr, off) = at(b, pixel_out[m], channel * channel_stride);
                b.ins().store(mem(), byte, addr, off);
            }
        }
    }
}

/// Store a tile of four consecutive pixels (starting at output byte `out`): per valid
/// channel its four pixels' bytes, gathered by a byte shuffle, as one 32-bit store at
/// `out + channel · channel_stride` — a quarter of the stores of [`store_pixel_bytes`].
fn store_pixel_quads(
    b: &mut FunctionBuilder,
    plan: &Requant,
    q: &[Vec<Value>],
    out: Value,
    channel_stride: usize,
    channels: usize,
) {
    let limit = channels.min(4 * q[0].len());
    for_channel_quads(b, plan, q, channels, |b, base, gathered| {
        let words = vcast(b, types::I32X4, gathered);
        for j in 0..4 {
            let channel = base + j;
            if channel >= limit {
                break;
            }
            let word = b.ins().extractlane(words, j as u8);
            let (addr, off) = at(b, out, channel * channel_stride);
            b.ins().store(mem(), word, addr, off);
        }
    });
}

/// Narrow a tile of four consecutive pixels to bytes and regroup them by channel: for each
/// group of four channels `base..base + 4` that holds a valid one, `emit(b, base,
/// gathered)` with byte `4·j + m` of `gathered` (I8X16) pixel m's value of channel `base +
/// j` (lanes of channels past the valid ones hold copies; the caller skips them).
fn for_channel_quads(
    b: &mut FunctionBuilder,
    plan: &Requant,
    q: &[Vec<Value>],
    channels: usize,
    mut emit: impl FnMut(&mut FunctionBuilder, usize, Value),
) {
    debug_assert_eq!(q.len(), QUAD_PIXELS);
    let nr = q[0].len();
    for chunk in 0..nr.div_ceil(2) {
        // per pixel m, its channels 8·chunk .. 8·chunk + 7 as I16X8
        let halves: Vec<Value> = q
            .iter()
            .map(|row| {
                let low = row[2 * chunk];
                let high = *row.get(2 * chunk + 1).unwrap_or(&low);
                b.ins().snarrow(low, high)
            })
            .collect();
        // lanes 0..7: pixel 0 (2), lanes 8..15: pixel 1 (3), channel k of the chunk in lane k
        let first = narrow_bytes(b, plan, halves[0], halves[1]);
        let second = narrow_bytes(b, plan, halves[2], halves[3]);
        for half in 0..2 {
            let base = 8 * chunk + 4 * half;
            if base >= channels.min(4 * nr) {
                break;
            }
            // 32-bit lane j: channel base + j of pixels 0, 1, 2, 3
            let mut mask = [0u8; 16];
            for j in 0..4 {
                let k = (4 * half + j) as u8;
                mask[4 * j..4 * j + 4].copy_from_slice(&[k, 8 + k, 16 + k, 24 + k]);
            }
            let mask = b.func.dfg.immediates.push(ConstantData::from(&mask[..]));
            let gathered = b.ins().shuffle(first, second, mask);
            emit(b, base, gathered);
        }
    }
}

/// The whole reduction of one pixel tile: every (tap, input channels) k-step, each `nr`
/// weight vectors times `mr` activation words, through the layout's inner product.
///
/// The k-steps always run inside a loop of at most two per iteration. Straight-line code
/// over many k-steps would let Cranelift's elaborator compute one accumulator's whole chain
/// before the next, keeping all shared activation and weight vectors live at once (and
/// hoist the tile's weights out of the pixel loop): both spill. A short loop body keeps
/// the operands of one or two k-steps live, which fits the 16 xmm registers.
fn reduction(
    b: &mut FunctionBuilder,
    layout: &Layout,
    accs: &[Vec<Variable>],
    bases: &[Value],
    weights: Value,
    packed: Value,
) {
    let nr = layout.nr;
    let step_weights = nr * 16;
    let tap_weights = layout.steps * step_weights;
    let (vector, accumulate): (_, Accumulate) = match layout.inner {
        InnerProduct::Pmaddwd => (types::I16X8, pmaddwd_accumulate),
        InnerProduct::Vpdpbusd => (types::I8X16, vpdpbusd_accumulate),
        InnerProduct::Usdot => (types::I8X16, usdot_accumulate),
        InnerProduct::Sdot => (types::I8X16, sdot_accumulate),
    };
    let step =
        |b: &mut FunctionBuilder, bases: &[Value], wbase: Value, a_off: usize, w_off: usize| {
            let w: Vec<Value> = (0..nr)
                .map(|r| b.ins().load(vector, ro(), wbase, (w_off + 16 * r) as i32))
                .collect();
            for (m, &base) in bases.iter().enumerate() {
                let (addr, off) = at(b, base, a_off);
                // the activation word, already broadcast to all four lanes in the scratch
                let a = b.ins().load(vector, ro(), addr, off);
                for (r, &wv) in w.iter().enumerate() {
                    let acc = b.use_var(accs[m][r]);
                    let acc = accumulate(b, acc, a, wv);
                    b.def_var(accs[m][r], acc);
                }
            }
        };
    if layout.steps > STEPS_PER_ITERATION {
        // taps unrolled; per tap a loop over its k-steps, two per iteration, and an odd
        // count's last one
        for (tap, &tap_offset) in layout.tap_offsets.iter().enumerate() {
            let tap_w = tap * tap_weights;
            counted_loop(b, layout.steps / STEPS_PER_ITERATION, |b, i| {
                let moved: Vec<Value> = bases
                    .iter()
                    .map(|&base| scaled(b, base, i, STEPS_PER_ITERATION * STEP_BYTES))
                    .collect();
                let wbase = scaled(b, weights, i, STEPS_PER_ITERATION * step_weights);
                for u in 0..STEPS_PER_ITERATION {
                    step(
                        b,
                        &moved,
                        wbase,
                        tap_offset + STEP_BYTES * u,
                        tap_w + u * step_weights,
                    );
                }
            });
            if layout.steps % STEPS_PER_ITERATION == 1 {
                // an odd count's last k-step after the loop
                let last = layout.steps - 1;
                step(
                    b,
                    bases,
                    weights,
                    tap_offset + STEP_BYTES * last,
                    tap_w + last * step_weights,
                );
            }
        }
    } else {
        // one or two k-steps: a loop over the taps, offsets from the tap table
        counted_loop(b, layout.tap_offsets.len(), |b, t| {
            let table = scaled(b, packed, t, 4);
            let tap_offset = b
                .ins()
                .uload32(mem_aligned(), table, layout.tap_table_offset as i32);
            let moved: Vec<Value> = bases
                .iter()
                .map(|&base| b.ins().iadd(base, tap_offset))
                .collect();
            let wbase = scaled(b, weights, t, tap_weights);
            for k in 0..layout.steps {
                step(b, &moved, wbase, STEP_BYTES * k, k * step_weights);
            }
        });
    }
}

/// Where a tile's constants lie in the packed blob (relative to the tile's `nr · 16`-byte
/// slot): `nr` i32 bias vectors at `bias_offset`, `nr` f32 multiplier vectors at
/// `multiplier_offset`. Shared by the general and the depthwise kernels.
pub(crate) struct TileConsts {
    pub nr: usize,
    pub bias_offset: usize,
    pub multiplier_offset: usize,
    /// Output elements between consecutive channels (columns) of one pixel (row): the
    /// pixel count for NCHW convolutions, 1 for row-major matrices.
    pub channel_stride: usize,
}

/// The requantization of an i32 accumulator (plus bias) to the output type: multiply,
/// clamp to `requant_bounds` (`q_min − zp`, `q_max − zp` as f32), round half to even, add
/// `zero_point`, clamp to `act_bounds` (the output range, narrowed by a fused ReLU/Clip).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Requant {
    pub requant_bounds: (f32, f32),
    pub zero_point: i32,
    pub act_bounds: (i32, i32),
    pub signed_out: bool,
}

impl QConvPlan {
    pub fn requant(&self) -> Requant {
        Requant {
            requant_bounds: self.requant_bounds,
            zero_point: self.out_zero_point,
            act_bounds: self.act_bounds,
            signed_out: self.out_dtype == DType::I8,
        }
    }
}

/// Requantize the accumulators and store the `channels` valid output channels of each of
/// the `mr` pixels: `acc + bias` → f32 → `· multiplier` → clamp to `[q_min − zp, q_max − zp]`
/// → round half to even → i32 → `+ zp` → activation clamp → narrow (exact: in range).
#[allow(clippy::too_many_arguments)]
pub(crate) fn epilogue(
    b: &mut FunctionBuilder,
    plan: &Requant,
    layout: &TileConsts,
    accs: &[Vec<Variable>],
    consts: Value,
    pixel_out: &[Value],
    channels: usize,
    exact_cvtt: bool,
) {
    let nr = layout.nr;
    let bias: Vec<Value> = (0..nr)
        .map(|r| {
            b.ins().load(
                types::I32X4,
                ro(),
                consts,
                (layout.bias_offset + 16 * r) as i32,
            )
        })
        .collect();
    let mult: Vec<Value> = (0..nr)
        .map(|r| {
            b.ins().load(
                types::F32X4,
                ro(),
                consts,
                (layout.multiplier_offset + 16 * r) as i32,
            )
        })
        .collect();
    let lo_f = splat_f32(b, plan.requant_bounds.0);
    let hi_f = splat_f32(b, plan.requant_bounds.1);
    let zp = splat_i32(b, plan.zero_point);
    let act_lo = splat_i32(b, plan.act_bounds.0);
    let act_hi = splat_i32(b, plan.act_bounds.1);
    let signed_out = plan.signed_out;
    for (m, row) in accs.iter().enumerate() {
        let q: Vec<Value> = row
            .iter()
            .enumerate()
            .map(|(r, &acc)| {
                let acc = b.use_var(acc);
                let v = b.ins().iadd(acc, bias[r]);
                let f = b.ins().fcvt_from_sint(types::F32X4, v);
                let f = b.ins().fmul(f, mult[r]);
                let f = fmax_to_bound(b, f, lo_f);
                let f = fmin_to_bound(b, f, hi_f);
                let f = b.ins().nearest(f);
                let i = if exact_cvtt {
                    b.ins().x86_cvtt2dq(types::I32X4, f)
                } else {
                    b.ins().fcvt_to_sint_sat(types::I32X4, f)
                };
                let i = b.ins().iadd(i, zp);
                let i = b.ins().smax(i, act_lo);
                b.ins().smin(i, act_hi)
            })
            .collect();
        // two I32X4 → one I16X8 → bytes; lane k of the bytes is channel 8·chunk + k
        for (chunk, pair) in q.chunks(2).enumerate() {
            let halves = b.ins().snarrow(pair[0], *pair.get(1).unwrap_or(&pair[0]));
            let bytes = if signed_out {
                b.ins().snarrow(halves, halves)
            } else {
                b.ins().unarrow(halves, halves)
            };
            for k in 0..8 {
                let channel = 8 * chunk + k;
                if channel >= channels.min(4 * nr) {
                    break;
                }
                let byte = b.ins().extractlane(bytes, k as u8);
                let (addr, off) = at(b, pixel_out[m], channel * layout.channel_stride);
                b.ins().store(mem(), byte, addr, off);
            }
        }
    }
}
