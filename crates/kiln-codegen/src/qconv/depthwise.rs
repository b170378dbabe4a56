//! The depthwise path of QConv (one input and one output channel per group: `groups == C_in
//! == C_out`), vectorized over channels instead of over one group's output channels, where
//! the general micro-kernel would use one lane in four and one weight per pair or quad.
//!
//! **Taps side by side.** `pmaddwd` sums lane pairs and `vpdpbusd` lane quads; in a
//! depthwise conv those cannot be input channels (there is one per output channel), so they
//! are *horizontally adjacent kernel taps* of the same channel. The scratch entry of padded
//! pixel `p` and channel `c` is one 32-bit word holding `t` consecutive taps' activations
//! `x[p], x[p + dil_w], …, x[p + (t−1)·dil_w]` (`t = 2` i16 values for `pmaddwd`, `t = 4`
//! u8 values for `vpdpbusd`; i8 activations shifted by +128 there, as in the general path),
//! and the packed weight lane of channel `c` holds the `t` matching taps of `w'[c]`. One
//! inner product then adds `t` taps of 4 channels; a kernel row of `k_w` taps takes
//! `ceil(k_w / t)` *steps*, the taps past `k_w` having zero weights (so whatever
//! activation they meet — the padding value past the row's end — adds nothing).
//!
//! - **Scratch**: `[D_p][H_p][W_p][C_p]` words, `C_p` = channels rounded up to the tile
//!   (`4·nr`); padding cells and extra channels hold the padding word (`zp_x` in every
//!   element). Built by [`DwLayout::widen`] in Rust, one scratch row at a time (it stays in
//!   L1 while every channel's input row is spread into it).
//! - **Packed constants**: weights `[tile][kernel row][step][r < nr]` of 16-byte vectors
//!   (lane `j` of vector `r` is channel `4r + j` of the tile, its `t` taps), then per tile
//!   the folded bias (i32) and multipliers (f32) in `nr` vectors each (the layout the shared
//!   epilogue reads), a pixel table (scratch offset of each output pixel's first tap, padded
//!   to whole tiles by repeating the last pixel) and a kernel-row table (offset of each
//!   `(k_d, k_h)` row from the first tap).
//! - **Compute**: for each tile of `mr` output pixels, for each tile of `4·nr` channels:
//!   `mr × nr` I32X4 accumulators over the kernel rows (a loop) and their steps (unrolled):
//!   per step `nr` weight loads, `mr·nr` activation loads and inner products; then the
//!   shared requantizing epilogue. Pixel tiles outside, channel tiles inside: the receptive
//!   field of a pixel tile (all channels) stays in L1 while the channel tiles sweep it.

use super::emit::{epilogue, ro, tile_pixel_outputs, TileConsts};
use super::layout::InnerProduct;
use super::plan::{QConvPlan, SP};
use super::{Int8, QConvTuning};
use crate::clif::{
    at, counted_loop, define_function, mem_aligned, pmaddwd_accumulate, scaled, sdot_accumulate,
    splat_i32, usdot_accumulate, vpdpbusd_accumulate, Accumulate,
};
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, Signature, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_ir::DType;

#[derive(Clone, Debug)]
pub(crate) struct DwLayout {
    pub mr: usize,
    pub nr: usize,
    pub inner: InnerProduct,
    /// Added to every activation before the inner product (see [`InnerProduct::activation_offset`]).
    pub activation_offset: i32,
    /// Kernel taps per word: 2 (`pmaddwd`) or 4 (`vpdpbusd`).
    pub taps_per_step: usize,
    /// Steps per kernel row: `ceil(k_w / taps_per_step)`.
    pub steps: usize,
    /// Channels rounded up to whole tiles.
    pub channels_padded: usize,
    /// Bytes between horizontally adjacent pixels of the scratch.
    pub pixel_stride: usize,
    pub padded: [usize; SP],
    pub scratch_bytes: usize,
    pub full_tiles: usize,
    /// Valid channels of the last, partial tile (0: none).
    pub partial_channels: usize,
    pub pixel_tiles: usize,
    /// Byte offset of each kernel row `(k_d, k_h)` from its pixel's first tap.
    pub row_offsets: Vec<usize>,
    /// Byte offset between consecutive steps of a row: `taps_per_step · dil_w` pixels.
    pub step_offset: usize,
    pub tile_weight_bytes: usize,
    pub bias_offset: usize,
    pub multiplier_offset: usize,
    pub pixel_table_offset: usize,
    pub row_table_offset: usize,
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
            reason: format!("{what} exceed(s) the 32-bit offsets of the kernel's tables"),
        };
        let channels = plan.c_out;
        let taps_per_step = inner.channels_per_step();
        let steps = plan.kernel[2].div_ceil(taps_per_step);
        let nr = tuning.col_vectors.clamp(1, channels.div_ceil(4).max(1));
        let mr = tuning.rows.clamp(1, plan.out_pixels().max(1));
        let tile_channels = 4 * nr;
        let channels_padded = channels.next_multiple_of(tile_channels);
        let tiles = channels_padded / tile_channels;
        let pixel_stride = channels_padded * 4;
        let padded = plan.padded();
        let scratch_bytes = (padded.iter().product::<usize>() * pixel_stride).next_multiple_of(64);
        if scratch_bytes > u32::MAX as usize {
            return Err(too_big("the padded input"));
        }
        let row = padded[2] * pixel_stride;
        let plane = padded[1] * row;
        let mut row_offsets = Vec::with_capacity(plan.kernel[0] * plan.kernel[1]);
        for kd in 0..plan.kernel[0] {
            for kh in 0..plan.kernel[1] {
                row_offsets.push(kd * plan.dilation[0] * plane + kh * plan.dilation[1] * row);
            }
        }
        let step_offset = taps_per_step * plan.dilation[2] * pixel_stride;
        let tile_weight_bytes = row_offsets.len() * steps * nr * 16;
        let pixel_tiles = plan.out_pixels().div_ceil(mr);
        let bias_offset = tiles * tile_weight_bytes;
        let multiplier_offset = bias_offset + tiles * nr * 16;
        let pixel_table_offset = multiplier_offset + tiles * nr * 16;
        let row_table_offset = pixel_table_offset + pixel_tiles * mr * 4;
        let packed_bytes = row_table_offset + row_offsets.len() * 4;
        if packed_bytes > i32::MAX as usize {
            return Err(too_big("the packed weights"));
        }
        Ok(DwLayout {
            mr,
            nr,
            inner,
            activation_offset: inner.activation_offset(plan.x_dtype),
            taps_per_step,
            steps,
            channels_padded,
            pixel_stride,
            padded,
            scratch_bytes,
            full_tiles: channels / tile_channels,
            partial_channels: channels % tile_channels,
            pixel_tiles,
            row_offsets,
            step_offset,
            tile_weight_bytes,
            bias_offset,
            multiplier_offset,
            pixel_table_offset,
            row_table_offset,
            packed_bytes,
        })
    }

    fn tiles(&self) -> usize {
        self.channels_padded / (4 * self.nr)
    }

    /// Bits of one activation inside a word.
    fn element_bits(&self) -> usize {
        32 / self.taps_per_step
    }

    /// The bits of activation `v` as one element of a word: i16 (`pmaddwd`) or a byte
    /// shifted by the activation offset (the byte dot products: the signedness the
    /// instruction reads).
    fn element(&self, v: i32) -> u32 {
        match self.inner {
            InnerProduct::Pmaddwd => v as i16 as u16 as u32,
            InnerProduct::Vpdpbusd | InnerProduct::Usdot | InnerProduct::Sdot => {
                (v + self.activation_offset) as u8 as u32
            }
        }
    }

    /// The word of a padding cell: `zp_x` in every element.
    fn padding_word(&self, plan: &QConvPlan) -> u32 {
        let e = self.element(plan.x_zero_point);
        (0..self.taps_per_step).fold(0, |w, k| w | (e << (self.element_bits() * k)))
    }

    /// Byte offset in the scratch of padded pixel `(d, h, w)`.
    fn scratch_pixel(&self, d: usize, h: usize, w: usize) -> usize {
        ((d * self.padded[1] + h) * self.padded[2] + w) * self.pixel_stride
    }

    /// Fill the scratch from one batch item `x` (`[C][D][H][W]`): every word of every
    /// padded pixel and channel, padding cells and extra channels with the padding word.
    ///
    /// Per input row, every channel's values are first encoded (a 256-entry table from the
    /// raw byte to its element bits) and transposed into `row_elements`, `[W_p + extra][C]`
    /// (padding columns keep the padding element); each pixel's words are then a lane-wise
    /// combination of `t` contiguous slices of it (`t` taps `dil_w` pixels apart), which
    /// the compiler vectorizes, written contiguously.
    pub fn widen<X: Int8>(&self, plan: &QConvPlan, x: &[X], scratch: &mut [u8]) {
        let [d_p, h_p, w_p] = self.padded;
        let [d_n, h_n, w_n] = plan.input;
        let channels = plan.c_in;
        let pad_word = self.padding_word(plan).to_le_bytes();
        let pad_element = self.element(plan.x_zero_point);
        let signed = plan.x_dtype == DType::I8;
        let encode: Vec<u32> = (0..=255u8)
            .map(|raw| self.element(if signed { raw as i8 as i32 } else { raw as i32 }))
            .collect();
        let dil = plan.dilation[2];
        let tps = self.taps_per_step;
        let columns = w_p + (tps - 1) * dil;
        let mut row_elements = vec![pad_element; columns * channels];
        let row_bytes = w_p * self.pixel_stride;
        let mut words = vec![0u32; channels];
        for pd in 0..d_p {
            for ph in 0..h_p {
                let start = self.scratch_pixel(pd, ph, 0);
                let row = &mut scratch[start..start + row_bytes];
                let (id, ih) = (
                    pd.wrapping_sub(plan.pad_begin[0]),
                    ph.wrapping_sub(plan.pad_begin[1]),
                );
                if id >= d_n || ih >= h_n {
                    for word in row.chunks_exact_mut(4) {
                        word.copy_from_slice(&pad_word);
                    }
                    continue;
                }
                for c in 0..channels {
                    let src = ((c * d_n + id) * h_n + ih) * w_n;
                    for (iw, v) in x[src..src + w_n].iter().enumerate() {
                        row_elements[(plan.pad_begin[2] + iw) * channels + c] =
                            encode[v.bits() as usize];
                    }
                }
                let column = |pw: usize| &row_elements[pw * channels..(pw + 1) * channels];
                for (pw, pixel) in row.chunks_exact_mut(self.pixel_stride).enumerate() {
                    if tps == 2 {
                        let (e0, e1) = (column(pw), column(pw + dil));
                        for ((w, &a), &b) in words.iter_mut().zip(e0).zip(e1) {
                            *w = a | (b << 16);
                        }
                    } else {
                        let (e0, e1) = (column(pw), column(pw + dil));
                        let (e2, e3) = (column(pw + 2 * dil), column(pw + 3 * dil));
                        for ((((w, &a), &b), &c), &d) in
                            words.iter_mut().zip(e0).zip(e1).zip(e2).zip(e3)
                        {
                            *w = a | (b << 8) | (c << 16) | (d << 24);
                        }
                    }
                    let (real, extra) = pixel.split_at_mut(4 * channels);
                    for (bytes, w) in real.chunks_exact_mut(4).zip(&words) {
                        bytes.copy_from_slice(&w.to_le_bytes());
                    }
                    for bytes in extra.chunks_exact_mut(4) {
                        bytes.copy_from_slice(&pad_word);
                    }
                }
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

    /// The constant blob: packed weights, bias, multipliers, pixel and row tables.
    pub fn pack(&self, plan: &QConvPlan) -> Vec<u8> {
        let mut blob = Vec::with_capacity(self.packed_bytes);
        let tile_channels = 4 * self.nr;
        let [_, k_h, k_w] = plan.kernel;
        let taps = plan.taps();
        let channel = |t: usize, lane: usize| {
            let c = t * tile_channels + lane;
            (c < plan.c_out).then_some(c)
        };
        for t in 0..self.tiles() {
            for row in 0..self.row_offsets.len() {
                let (kd, kh) = (row / k_h, row % k_h);
                for step in 0..self.steps {
                    for lane in 0..tile_channels {
                        for k in 0..self.taps_per_step {
                            let kw = step * self.taps_per_step + k;
                            let w = match channel(t, lane) {
                                Some(c) if kw < k_w => {
                                    plan.weights[c * taps + (kd * k_h + kh) * k_w + kw]
                                }
                                _ => 0,
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
        }
        debug_assert_eq!(blob.len(), self.bias_offset);
        for t in 0..self.tiles() {
            for lane in 0..tile_channels {
                let b = channel(t, lane).map_or(0, |c| self.bias(plan, c));
                blob.extend_from_slice(&b.to_le_bytes());
            }
        }
        for t in 0..self.tiles() {
            for lane in 0..tile_channels {
                let m = channel(t, lane).map_or(1.0, |c| plan.multipliers[c]);
                blob.extend_from_slice(&m.to_le_bytes());
            }
        }
        let pixels = plan.out_pixels();
        for p in 0..self.pixel_tiles * self.mr {
            let p = p.min(pixels - 1);
            let ow = p % plan.output[2];
            let oh = (p / plan.output[2]) % plan.output[1];
            let od = p / (plan.output[2] * plan.output[1]);
            let off = self.scratch_pixel(
                od * plan.stride[0],
                oh * plan.stride[1],
                ow * plan.stride[2],
            );
            blob.extend_from_slice(&(off as u32).to_le_bytes());
        }
        for &off in &self.row_offsets {
            blob.extend_from_slice(&(off as u32).to_le_bytes());
        }
        debug_assert_eq!(blob.len(), self.packed_bytes);
        blob
    }
}

/// `extern "C" fn(packed, scratch, out)` for one batch item (see the module doc).
pub(crate) fn build_compute_function(
    plan: &QConvPlan,
    layout: &DwLayout,
    signature: Signature,
    target: TargetFrontendConfig,
    exact_cvtt: bool,
) -> Function {
    define_function(signature, target, |b, p| {
        let (packed, scratch, out) = (p[0], p[1], p[2]);
        let (mr, nr) = (layout.mr, layout.nr);
        let pixels = plan.out_pixels();
        let accs: Vec<Vec<Variable>> = (0..mr)
            .map(|_| (0..nr).map(|_| b.declare_var(types::I32X4)).collect())
            .collect();
        counted_loop(b, layout.pixel_tiles, |b, pt| {
            let table = scaled(b, packed, pt, mr * 4);
            let bases: Vec<Value> = (0..mr)
                .map(|m| {
                    let off =
                        b.ins()
                            .uload32(ro(), table, (layout.pixel_table_offset + 4 * m) as i32);
                    b.ins().iadd(scratch, off)
                })
                .collect();
            let pixel_out = tile_pixel_outputs(b, pt, mr, pixels, out);
            let sweep = Sweep {
                plan,
                layout,
                packed,
                accs: &accs,
                bases: &bases,
                pixel_out: &pixel_out,
                exact_cvtt,
            };
            counted_loop(b, layout.full_tiles, |b, t| sweep.tile(b, t, 4 * nr));
            if layout.partial_channels > 0 {
                let t = b.ins().iconst(types::I64, layout.full_tiles as i64);
                sweep.tile(b, t, layout.partial_channels);
            }
        });
    })
}

/// One pixel tile's values, shared by its channel tiles.
struct Sweep<'a> {
    plan: &'a QConvPlan,
    layout: &'a DwLayout,
    packed: Value,
    accs: &'a [Vec<Variable>],
    /// Scratch address of each pixel's first tap (channel 0).
    bases: &'a [Value],
    /// Output address of each pixel in channel 0.
    pixel_out: &'a [Value],
    exact_cvtt: bool,
}

impl Sweep<'_> {
    /// Channel tile `t` (an i64 value) of the pixel tile: `channels` valid channels.
    fn tile(&self, b: &mut FunctionBuilder, t: Value, channels: usize) {
        let layout = self.layout;
        let nr = layout.nr;
        let tile_bytes = nr * 16;
        let weights = scaled(b, self.packed, t, layout.tile_weight_bytes);
        let consts = scaled(b, self.packed, t, tile_bytes);
        let bases: Vec<Value> = self
            .bases
            .iter()
            .map(|&base| scaled(b, base, t, tile_bytes))
            .collect();
        let zero = splat_i32(b, 0);
        for row in self.accs {
            for &acc in row {
                b.def_var(acc, zero);
            }
        }
        let (vector, accumulate): (_, Accumulate) = match layout.inner {
            InnerProduct::Pmaddwd => (types::I16X8, pmaddwd_accumulate),
            InnerProduct::Vpdpbusd => (types::I8X16, vpdpbusd_accumulate),
            InnerProduct::Usdot => (types::I8X16, usdot_accumulate),
            InnerProduct::Sdot => (types::I8X16, sdot_accumulate),
        };
        let row_weight_bytes = layout.steps * tile_bytes;
        counted_loop(b, layout.row_offsets.len(), |b, row| {
            let table = scaled(b, self.packed, row, 4);
            let row_offset = b
                .ins()
                .uload32(mem_aligned(), table, layout.row_table_offset as i32);
            let moved: Vec<Value> = bases
                .iter()
                .map(|&base| b.ins().iadd(base, row_offset))
                .collect();
            let wrow = scaled(b, weights, row, row_weight_bytes);
            for step in 0..layout.steps {
                for r in 0..nr {
                    let w = b
                        .ins()
                        .load(vector, ro(), wrow, ((step * nr + r) * 16) as i32);
                    for (m, &base) in moved.iter().enumerate() {
                        let (addr, off) = at(b, base, step * layout.step_offset + 16 * r);
                        let a = b.ins().load(vector, ro(), addr, off);
                        let acc = b.use_var(self.accs[m][r]);
                        let acc = accumulate(b, acc, a, w);
                        b.def_var(self.accs[m][r], acc);
                    }
                }
            }
        });
        let pixels = self.plan.out_pixels();
        let pixel_out: Vec<Value> = self
            .pixel_out
            .iter()
            .map(|&p| scaled(b, p, t, 4 * nr * pixels))
            .collect();
        let tile_consts = TileConsts {
            nr,
            bias_offset: layout.bias_offset,
            multiplier_offset: layout.multiplier_offset,
            channel_stride: pixels,
        };
        epilogue(
            b,
            &self.plan.requant(),
            &tile_consts,
            self.accs,
            consts,
            &pixel_out,
            channels,
            self.exact_cvtt,
        );
    }
}
