//! The row path of int8 MaxPool ([`crate::MaxPoolKernel`]) for 1-D/2-D pools with
//! horizontal stride 1 or 2, no dilation and at most 49 taps (every CNN stem and
//! down-sampling pool): vectorized over 16 output pixels of one row of one channel, so
//! input and output stay NCHW. The window path instead spreads the input into a
//! channel-last scratch in Rust, one byte at a time, which cost ~80 % of its time.
//!
//! - *Widen* `(x, scratch)`, per batch item: the scratch `[C][E_h][E_w]` (the padded input,
//!   extents grown to the last `ceil_mode` window; then 64 slack bytes and a 16-byte
//!   staging vector) is filled with the dtype's lowest value (the max's identity, so
//!   padding never wins and a window of padding only gives the lowest value, as in the
//!   interpreter), then each input row is copied in 16-byte vectors and a byte tail.
//! - *Compute* `(scratch, out)`: per channel and output row, per vector of 16 output pixels
//!   starting at `ow0`, the lane-wise max (`pmaxub`/`pmaxsb`, NEON `umax`/`smax`) over the
//!   taps of one unaligned 16-byte load each (stride 1), or two loads and an even-byte
//!   shuffle (stride 2). A row's last vector is moved back to end at the row's end
//!   (recomputing a few pixels, bit-identical); rows narrower than 16 pixels go through the
//!   staging vector and a byte copy. Loads of the last vectors reach at most 32 + 7 bytes
//!   past a row's last window, into the next row or the slack (those lanes are never
//!   stored).

use crate::clif::{counted_loop, mem};
use crate::jit::{Jit, JitOptions, KernelCode};
use crate::pool_window::PoolGeometry;
use crate::qconv::AlignedBytes;
use crate::CodegenError;
use cranelift_codegen::ir::{types, ConstantData, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// `(x, scratch)`.
type WidenFn = unsafe extern "C" fn(*const u8, *mut u8);
/// `(scratch, out)` (the scratch's staging vector is written).
type ComputeFn = unsafe extern "C" fn(*mut u8, *mut u8);

/// Bytes past the last plane that loads may reach.
const SLACK: usize = 64;
/// Most taps the compute unrolls.
const MAX_TAPS: usize = 49;

/// A compiled row-path MaxPool.
pub(crate) struct RowPool {
    pub geo: PoolGeometry,
    widen: WidenFn,
    compute: ComputeFn,
    /// Declared last: the entries point into it.
    pub code: KernelCode,
}

impl RowPool {
    /// Whether the row path takes this pool: no depth (1-D/2-D, or a 3-D pool over one
    /// unpadded plane), dilation 1,
    /// horizontal stride 1 or 2, at most [`MAX_TAPS`] taps.
    pub(crate) fn applies(geo: &PoolGeometry) -> bool {
        // no depth: one input plane, and no depth padding (a depth-padded window could be
        // padding only)
        geo.input[0] == 1
            && geo.kernel[0] == 1
            && geo.output[0] == 1
            && geo.pad_begin[0] == 0
            && geo.extent[0] == 1
            && geo.dilation.iter().all(|&d| d == 1)
            && matches!(geo.stride[2], 1 | 2)
            && geo.kernel[1] * geo.kernel[2] <= MAX_TAPS
            && geo.output[1] > 0
            && geo.output[2] > 0
    }

    /// Scratch bytes: the padded planes, the slack, the staging vector.
    pub(crate) fn scratch_bytes(&self) -> usize {
        scratch_bytes(&self.geo)
    }

    /// Compile for `geo` (checked by [`RowPool::applies`]); `lowest` is the dtype's lowest
    /// value, `signed` picks `smax` over `umax`.
    pub(crate) fn compile(
        name: String,
        geo: PoolGeometry,
        lowest: u8,
        signed: bool,
        options: &JitOptions,
    ) -> Result<RowPool, CodegenError> {
        debug_assert!(RowPool::applies(&geo));
        let bytes = scratch_bytes(&geo);
        if bytes > u32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: "max_pool",
                reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut jit = Jit::host(options)?;
        let widen = build_widen(&jit, &geo, bytes, lowest);
        let compute = build_compute(&jit, &geo, bytes, lowest, signed);
        // SAFETY: both functions take two pointer parameters and return nothing — the
        // `WidenFn`/`ComputeFn` signatures; the pool owns `jit` (in `code`), so the code
        // outlives every call through it.
        let widen: WidenFn = unsafe { jit.compile_as(&format!("{name}_widen"), widen)? };
        // SAFETY: as above.
        let compute: ComputeFn = unsafe { jit.compile_as(&name, compute)? };
        Ok(RowPool {
            geo,
            widen,
            compute,
            code: KernelCode::new(jit, name),
        })
    }

    /// Pool one batch item: `x` is one image (`C·H·W` bytes), `out` one output image.
    pub(crate) fn run_image(&self, x: &[u8], out: &mut [u8], scratch: &mut AlignedBytes) {
        let geo = &self.geo;
        assert!(
            x.len() == geo.channels * geo.input[1] * geo.input[2]
                && out.len() == geo.channels * geo.output[1] * geo.output[2]
                && scratch.as_slice().len() == self.scratch_bytes(),
            "buffers checked by MaxPoolKernel::run_into"
        );
        // SAFETY: the entries are valid while `self.code` lives (`self` is borrowed).
        // Widen reads the `C·H·W` bytes of `x` and writes `scratch_bytes` bytes of the
        // 16-byte aligned scratch; compute reads the scratch (loads stay inside it: the
        // slack covers the last windows' overreach) and writes the `C·H_out·W_out` bytes of
        // `out` (rows narrower than 16 through the staging vector inside the scratch).
        // Sizes are asserted above.
        unsafe {
            (self.widen)(x.as_ptr(), scratch.as_mut_slice().as_mut_ptr());
            (self.compute)(scratch.as_mut_slice().as_mut_ptr(), out.as_mut_ptr());
        }
    }

    /// The two functions, recorded for an object (`aot/parts/maxpool.rs`).
    pub(crate) fn take_recorded(&mut self) -> Vec<(String, Function)> {
        self.code.take_recorded()
    }
}

/// The padded planes `[C][E_h][E_w]`, [`SLACK`] bytes, a whole number of vectors, then the
/// 16-byte staging vector.
fn scratch_bytes(geo: &PoolGeometry) -> usize {
    (geo.channels * geo.extent[1] * geo.extent[2] + SLACK).div_ceil(16) * 16 + 16
}

/// `base + offset` for a pointer-sized `base` and an i64 `offset`.
fn offset_by(b: &mut FunctionBuilder, base: Value, offset: Value) -> Value {
    let ptr = b.func.dfg.value_type(base);
    let offset = if ptr == types::I64 {
        offset
    } else {
        b.ins().ireduce(ptr, offset)
    };
    b.ins().iadd(base, offset)
}

fn build_widen(jit: &Jit, geo: &PoolGeometry, scratch_bytes: usize, lowest: u8) -> Function {
    let (h_in, w_in) = (geo.input[1], geo.input[2]);
    let (e_h, e_w) = (geo.extent[1], geo.extent[2]);
    let (pad_t, pad_l) = (geo.pad_begin[1], geo.pad_begin[2]);
    let channels = geo.channels;
    jit.define_kernel(2, |b, p| {
        let (x, scratch) = (p[0], p[1]);
        let lane = b.ins().iconst(types::I8, i64::from(lowest));
        let fill = b.ins().splat(types::I8X16, lane);
        counted_loop(b, scratch_bytes / 16, |b, i| {
            let off = b.ins().imul_imm_u(i, 16);
            let at = offset_by(b, scratch, off);
            b.ins().store(mem(), fill, at, 0);
        });
        counted_loop(b, channels * h_in, |b, row| {
            // input row (c·H + h), scratch row c·E_h + h + pad_t: with row = c·H + h,
            // c·E_h + h = row + c·(E_h − H)
            let src = b.ins().imul_imm_u(row, w_in as i64);
            let src = offset_by(b, x, src);
            let c = b.ins().udiv_imm_u(row, h_in as i64);
            let grow = b.ins().imul_imm_u(c, (e_h - h_in) as i64);
            let dst_row = b.ins().iadd(row, grow);
            let dst_row = b.ins().iadd_imm_u(dst_row, pad_t as i64);
            let dst = b.ins().imul_imm_u(dst_row, e_w as i64);
            let dst = b.ins().iadd_imm_u(dst, pad_l as i64);
            let dst = offset_by(b, scratch, dst);
            counted_loop(b, w_in / 16, |b, i| {
                let off = b.ins().imul_imm_u(i, 16);
                let from = offset_by(b, src, off);
                let v = b.ins().load(types::I8X16, mem().with_readonly(), from, 0);
                let to = offset_by(b, dst, off);
                b.ins().store(mem(), v, to, 0);
            });
            for k in (w_in / 16 * 16..w_in).map(|k| k as i32) {
                let v = b.ins().load(types::I8, mem().with_readonly(), src, k);
                b.ins().store(mem(), v, dst, k);
            }
        });
    })
}

fn build_compute(
    jit: &Jit,
    geo: &PoolGeometry,
    scratch_bytes: usize,
    lowest: u8,
    signed: bool,
) -> Function {
    let (h_out, w_out) = (geo.output[1], geo.output[2]);
    let (k_h, k_w) = (geo.kernel[1], geo.kernel[2]);
    let (s_h, s_w) = (geo.stride[1], geo.stride[2]);
    let e_w = geo.extent[2];
    let plane = geo.extent[1] * e_w;
    let channels = geo.channels;
    let staging = scratch_bytes - 16;
    jit.define_kernel(2, |b, p| {
        let (scratch, out) = (p[0], p[1]);
        let evens = b.func.dfg.immediates.push(ConstantData::from(
            (0..16).map(|k| 2 * k).collect::<Vec<u8>>(),
        ));
        let lane = b.ins().iconst(types::I8, i64::from(lowest));
        let identity = b.ins().splat(types::I8X16, lane);
        // the max of the window starting at `row0` (scratch row of the output row's first
        // kernel row) for the 16 output pixels from `ow0`
        let window_max = |b: &mut FunctionBuilder, row0: Value, ow0: Value| {
            let first = b.ins().imul_imm_u(ow0, s_w as i64);
            let first = b.ins().iadd(row0, first);
            let mut acc = identity;
            for kh in 0..k_h {
                for kw in 0..k_w {
                    let at = (kh * e_w + kw) as i32;
                    let v = b.ins().load(types::I8X16, mem().with_readonly(), first, at);
                    let v = if s_w == 2 {
                        let hi = b
                            .ins()
                            .load(types::I8X16, mem().with_readonly(), first, at + 16);
                        b.ins().shuffle(v, hi, evens)
                    } else {
                        v
                    };
                    acc = if signed {
                        b.ins().smax(acc, v)
                    } else {
                        b.ins().umax(acc, v)
                    };
                }
            }
            acc
        };
        counted_loop(b, channels * h_out, |b, orow| {
            // output row (c·H_out + oh): scratch row c·E_h + oh·s_h
            let c = b.ins().udiv_imm_u(orow, h_out as i64);
            let oh = b.ins().urem_imm_u(orow, h_out as i64);
            let plane_at = b.ins().imul_imm_u(c, plane as i64);
            let row_at = b.ins().imul_imm_u(oh, (s_h * e_w) as i64);
            let row0 = b.ins().iadd(plane_at, row_at);
            let row0 = offset_by(b, scratch, row0);
            let out_row = b.ins().imul_imm_u(orow, w_out as i64);
            let out_row = offset_by(b, out, out_row);
            if w_out >= 16 {
                counted_loop(b, w_out / 16, |b, j| {
                    let ow0 = b.ins().imul_imm_u(j, 16);
                    let v = window_max(b, row0, ow0);
                    let to = offset_by(b, out_row, ow0);
                    b.ins().store(mem(), v, to, 0);
                });
                if w_out % 16 != 0 {
                    let ow0 = b.ins().iconst(types::I64, (w_out - 16) as i64);
                    let v = window_max(b, row0, ow0);
                    b.ins().store(mem(), v, out_row, (w_out - 16) as i32);
                }
            } else {
                let ow0 = b.ins().iconst(types::I64, 0);
                let v = window_max(b, row0, ow0);
                b.ins().store(mem(), v, scratch, staging as i32);
                for k in 0..w_out as i32 {
                    let byte = b.ins().load(types::I8, mem(), scratch, staging as i32 + k);
                    b.ins().store(mem(), byte, out_row, k);
                }
            }
        });
    })
}
