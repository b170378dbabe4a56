//! Data layouts of the QConv kernel, decided at compile time, and the packing of the
//! constant data (weights, bias, multipliers, address tables) into one blob.
//!
//! A *k-step* is one tap times a few input channels: 2 for the `pmaddwd` inner product
//! (i16 operands), 4 for the byte dot products (`vpdpbusd`, `usdot`: u8 activations × s8
//! weights; `sdot`: s8 × s8), see [`InnerProduct`].
//!
//! - **Scratch (the widened, padded input)**: `[D_p][H_p][W_p][groups][steps]` of 16-byte
//!   entries, each one 32-bit word repeated in all four lanes: the i16 pair of input
//!   channels `(2j, 2j+1)` (`pmaddwd`), or the byte quad `(4j .. 4j+3)` (`vpdpbusd`,
//!   `usdot`: u8, i8 activations shifted by +128; `sdot`: i8, u8 activations shifted by
//!   −128). Channels past the end are zero-weight slots. Padding cells hold `zp_x` (plus
//!   the shift), so the kernel never tests bounds. The word is
//!   pre-broadcast because Cranelift folds a `splat(load)` into `vpbroadcastd m32` only
//!   when the splat has a single use, and the micro-kernel uses each broadcast `nr` times:
//!   `movd`+`vpbroadcastd` per k-step cost two vector ALU uops for every `nr` products, a
//!   plain 16-byte load costs none.
//! - **Packed weights**: per (group, tile of `4·nr` output channels), per tap, per k-step:
//!   `nr` 16-byte vectors; vector `r` holds output channel `4r + j` in 32-bit lane `j`:
//!   i16 lanes `2j + h` = `w[4r + j][2·step + h]` (`pmaddwd`), or i8 lanes `4j + h` =
//!   `w[4r + j][4·step + h]` (the byte dot products); centered, zero for channels past the end. One
//!   k-step of the micro-kernel reads `nr · 16` contiguous bytes.
//! - **Bias, multipliers**: per (group, tile), `nr` vectors of 4 lanes (i32, f32).
//! - **Pixel table**: per output pixel (padded to whole tiles by repeating the last), the
//!   byte offset in the scratch of its receptive field's first tap.
//! - **Tap table**: per kernel tap, its byte offset from the first tap (u32).

use super::plan::{QConvPlan, SP};
use super::QConvTuning;
use crate::{CodegenError, IsaFeatures};
use kiln_ir::DType;

/// The instruction the micro-kernel's inner product is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerProduct {
    /// `pmaddwd` + `paddd` on i16 operands: 8 MACs, any x86-64 with SSE4.1 (on AArch64
    /// the same tree becomes `smull`/`smull2`/`addp`).
    Pmaddwd,
    /// `vpdpbusd` (AVX-VNNI or AVX512-VNNI with VL) on u8 × s8 operands: 16 MACs,
    /// accumulating in place. Needs centered weights in `[-128, 127]`.
    Vpdpbusd,
    /// AArch64 `usdot` (FEAT_I8MM) on u8 × s8 operands: `vpdpbusd`'s meaning, layout and
    /// activation shift, as the tree Cranelift's AArch64 backend matches (unsigned operand
    /// first). Needs centered weights in `[-128, 127]`.
    Usdot,
    /// AArch64 `sdot` (FEAT_DotProd) on s8 × s8 operands, the same layout: u8 activations
    /// are shifted by −128 (folded into the bias, exact in i32). Needs centered weights in
    /// `[-128, 127]`.
    Sdot,
}

impl InnerProduct {
    /// Input channels per k-step.
    pub fn channels_per_step(self) -> usize {
        match self {
            InnerProduct::Pmaddwd => 2,
            InnerProduct::Vpdpbusd | InnerProduct::Usdot | InnerProduct::Sdot => 4,
        }
    }

    /// Does it multiply bytes (4 per 32-bit lane), not i16 pairs?
    pub fn on_bytes(self) -> bool {
        self != InnerProduct::Pmaddwd
    }

    /// The byte inner product `features` selects for activations of `x_dtype` when the
    /// centered weights fit i8 (and the tuning allows one): `vpdpbusd` on x86 VNNI; on
    /// AArch64 `sdot` for i8 activations, `usdot` for u8 ones (or for i8 ones without
    /// dotprod), `sdot` with shifted u8 activations when only dotprod is there; else
    /// `pmaddwd`.
    pub fn select(features: &IsaFeatures, x_dtype: DType) -> InnerProduct {
        if features.has_xmm_vnni() {
            InnerProduct::Vpdpbusd
        } else if features.has_i8mm && (x_dtype == DType::U8 || !features.has_dotprod) {
            InnerProduct::Usdot
        } else if features.has_dotprod {
            InnerProduct::Sdot
        } else {
            InnerProduct::Pmaddwd
        }
    }

    /// Added to every activation of `x_dtype` so that it has the signedness the instruction
    /// reads (+128: i8 → u8, −128: u8 → i8; ±128 flips the top bit of a byte); the bias
    /// folds `offset · Σ w` back out.
    pub fn activation_offset(self, x_dtype: DType) -> i32 {
        match (self, x_dtype) {
            (InnerProduct::Vpdpbusd | InnerProduct::Usdot, DType::I8) => 128,
            (InnerProduct::Sdot, DType::U8) => -128,
            _ => 0,
        }
    }
}

/// Bytes of one scratch entry: one k-step's channels (a 32-bit word) broadcast to four lanes.
pub(crate) const STEP_BYTES: usize = 16;

/// k-steps (input channel pairs or quads of one tap) per iteration of the reduction loop.
pub(crate) const STEPS_PER_ITERATION: usize = 2;

#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// Output pixels per micro-kernel tile (accumulator rows).
    pub mr: usize,
    /// I32X4 vectors of output channels per tile (accumulator columns).
    pub nr: usize,
    pub inner: InnerProduct,
    /// Added to every activation before the inner product, see
    /// [`InnerProduct::activation_offset`]. Folded into the bias.
    pub activation_offset: i32,
    /// k-steps per tap and group: `ceil(C_in/groups / channels_per_step)`.
    pub steps: usize,
    /// Byte offset of each kernel tap relative to its pixel's first tap.
    pub tap_offsets: Vec<usize>,
    /// Bytes between horizontally adjacent pixels of the scratch.
    pub pixel_stride: usize,
    pub padded: [usize; SP],
    pub scratch_bytes: usize,
    pub tiles_per_group: usize,
    pub full_tiles: usize,
    /// Valid output channels of the last, partial tile of each group (0: no partial tile).
    pub partial_channels: usize,
    pub pixel_tiles: usize,
    pub tile_weight_bytes: usize,
    pub bias_offset: usize,
    pub multiplier_offset: usize,
    pub pixel_table_offset: usize,
    pub tap_table_offset: usize,
    pub packed_bytes: usize,
}

impl Layout {
    pub fn new(
        plan: &QConvPlan,
        tuning: &QConvTuning,
        inner: InnerProduct,
    ) -> Result<Layout, CodegenError> {
        let too_big = |what: &str| CodegenError::Unsupported {
            op: "qconv",
            reason: format!("{what} exceed(s) the 32-bit offsets of the kernel's tables"),
        };
        let steps = plan.cin_g.div_ceil(inner.channels_per_step());
        let nr = tuning.col_vectors.clamp(1, plan.cout_g.div_ceil(4).max(1));
        let mr = tuning.rows.clamp(1, plan.out_pixels().max(1));
        let padded = plan.padded();
        let pixel_stride = plan.groups * steps * STEP_BYTES;
        let scratch_bytes = (padded.iter().product::<usize>() * pixel_stride).next_multiple_of(64);
        if scratch_bytes > u32::MAX as usize {
            return Err(too_big("the padded input"));
        }
        let row = padded[2] * pixel_stride;
        let plane = padded[1] * row;
        let mut tap_offsets = Vec::with_capacity(plan.taps());
        for kd in 0..plan.kernel[0] {
            for kh in 0..plan.kernel[1] {
                for kw in 0..plan.kernel[2] {
                    tap_offsets.push(
                        kd * plan.dilation[0] * plane
                            + kh * plan.dilation[1] * row
                            + kw * plan.dilation[2] * pixel_stride,
                    );
                }
            }
        }
        let tile_channels = 4 * nr;
        let tiles_per_group = plan.cout_g.div_ceil(tile_channels);
        let tiles = plan.groups * tiles_per_group;
        let tile_weight_bytes = plan.taps() * steps * nr * 16;
        let pixel_tiles = plan.out_pixels().div_ceil(mr);
        let bias_offset = tiles * tile_weight_bytes;
        let multiplier_offset = bias_offset + tiles * nr * 16;
        let pixel_table_offset = multiplier_offset + tiles * nr * 16;
        let tap_table_offset = pixel_table_offset + pixel_tiles * mr * 4;
        let packed_bytes = tap_table_offset + plan.taps() * 4;
        // every offset into the blob is an instruction immediate
        if packed_bytes > i32::MAX as usize {
            return Err(too_big("the packed weights"));
        }
        Ok(Layout {
            mr,
            nr,
            inner,
            activation_offset: inner.activation_offset(plan.x_dtype),
            steps,
            tap_offsets,
            pixel_stride,
            padded,
            scratch_bytes,
            tiles_per_group,
            full_tiles: plan.cout_g / tile_channels,
            partial_channels: plan.cout_g % tile_channels,
            pixel_tiles,
            tile_weight_bytes,
            bias_offset,
            multiplier_offset,
            pixel_table_offset,
            tap_table_offset,
            packed_bytes,
        })
    }

    /// Byte offset in the scratch of padded pixel `(d, h, w)`.
    pub fn scratch_pixel(&self, d: usize, h: usize, w: usize) -> usize {
        ((d * self.padded[1] + h) * self.padded[2] + w) * self.pixel_stride
    }

    /// The folded bias of output channel `co` under this layout's activation offset:
    /// `Σ (x + offset)·w'` overcounts by `offset · Σ w'`, subtracted here (wrapping, like
    /// the plan's own zero-point fold).
    fn bias(&self, plan: &QConvPlan, co: usize) -> i32 {
        let per_out = plan.cin_g * plan.taps();
        let sum = plan.weights[co * per_out..(co + 1) * per_out]
            .iter()
            .fold(0i32, |s, &v| s.wrapping_add(v));
        plan.bias[co].wrapping_sub(self.activation_offset.wrapping_mul(sum))
    }

    /// The constant blob: packed weights, bias, multipliers, pixel and tap tables.
    pub fn pack(&self, plan: &QConvPlan) -> Vec<u8> {
        let mut blob = Vec::with_capacity(self.packed_bytes);
        let taps = plan.taps();
        let tile_channels = 4 * self.nr;
        let channel = |g: usize, t: usize, lane: usize| {
            let local = t * tile_channels + lane;
            (local < plan.cout_g).then_some(g * plan.cout_g + local)
        };
        let per_step = self.inner.channels_per_step();
        // weights: [group][tile][tap][step][r][j][h]
        for g in 0..plan.groups {
            for t in 0..self.tiles_per_group {
                for tap in 0..taps {
                    for step in 0..self.steps {
                        for lane in 0..tile_channels {
                            for h in 0..per_step {
                                let ci = per_step * step + h;
                                let w = match channel(g, t, lane) {
                                    Some(co) if ci < plan.cin_g => {
                                        plan.weights[(co * plan.cin_g + ci) * taps + tap]
                                    }
                                    _ => 0,
                                };
                                match self.inner {
                                    // centered weights lie in [-255, 255]: exact in i16
                                    InnerProduct::Pmaddwd => {
                                        blob.extend_from_slice(&(w as i16).to_le_bytes())
                                    }
                                    // byte products are chosen only when they fit i8
                                    InnerProduct::Vpdpbusd
                                    | InnerProduct::Usdot
                                    | InnerProduct::Sdot => blob.push(w as i8 as u8),
                                }
                            }
                        }
                    }
                }
            }
        }
        debug_assert_eq!(blob.len(), self.bias_offset);
        for g in 0..plan.groups {
            for t in 0..self.tiles_per_group {
                for lane in 0..tile_channels {
                    let b = channel(g, t, lane).map_or(0, |co| self.bias(plan, co));
                    blob.extend_from_slice(&b.to_le_bytes());
                }
            }
        }
        for g in 0..plan.groups {
            for t in 0..self.tiles_per_group {
                for lane in 0..tile_channels {
                    // padding lanes are computed and discarded; 1.0 keeps them finite
                    let m = channel(g, t, lane).map_or(1.0, |co| plan.multipliers[co]);
                    blob.extend_from_slice(&m.to_le_bytes());
                }
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
        for &off in &self.tap_offsets {
            blob.extend_from_slice(&(off as u32).to_le_bytes());
        }
        debug_assert_eq!(blob.len(), self.packed_bytes);
        blob
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aarch64(has_dotprod: bool, has_i8mm: bool) -> IsaFeatures {
        IsaFeatures {
            triple: "aarch64-unknown-linux-gnu".to_string(),
            has_dotprod,
            has_i8mm,
            ..IsaFeatures::default()
        }
    }

    /// The table of docs/aot.md: the instruction per feature set and activation type, and
    /// the shift that gives the activations the signedness it reads.
    #[test]
    fn aarch64_selection_and_activation_shift() {
        use InnerProduct::*;
        let cases = [
            (aarch64(false, false), DType::U8, Pmaddwd, 0),
            (aarch64(false, false), DType::I8, Pmaddwd, 0),
            (aarch64(true, false), DType::U8, Sdot, -128),
            (aarch64(true, false), DType::I8, Sdot, 0),
            (aarch64(false, true), DType::U8, Usdot, 0),
            (aarch64(false, true), DType::I8, Usdot, 128),
            (aarch64(true, true), DType::U8, Usdot, 0),
            (aarch64(true, true), DType::I8, Sdot, 0),
        ];
        for (features, x_dtype, inner, offset) in cases {
            let got = InnerProduct::select(&features, x_dtype);
            assert_eq!(got, inner, "{features:?} {x_dtype:?}");
            assert_eq!(
                got.activation_offset(x_dtype),
                offset,
                "{got:?} {x_dtype:?}"
            );
        }
    }

    #[test]
    fn x86_vnni_selects_vpdpbusd() {
        let features = IsaFeatures {
            triple: "x86_64-unknown-linux-gnu".to_string(),
            has_avx: true,
            has_avx_vnni: true,
            ..IsaFeatures::default()
        };
        assert_eq!(
            InnerProduct::select(&features, DType::U8),
            InnerProduct::Vpdpbusd
        );
        assert_eq!(InnerProduct::Vpdpbusd.activation_offset(DType::I8), 128);
        let plain = IsaFeatures {
            has_avx_vnni: false,
            ..features
        };
        assert_eq!(
            InnerProduct::select(&plain, DType::I8),
            InnerProduct::Pmaddwd
        );
    }
}
