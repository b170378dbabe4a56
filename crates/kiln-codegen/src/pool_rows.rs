//! The row path of the window pools — int8 MaxPool ([`crate::MaxPoolKernel`]) and f32
//! Max/AveragePool ([`crate::PoolKernel`]) — for 1-D/2-D pools with horizontal stride 1 or
//! 2, no dilation and at most 49 taps (every CNN stem, down-sampling and ShuffleNet-style
//! average pool): vectorized over the output pixels of one row of one channel (16 int8 or
//! 4 f32 lanes), so input and output stay NCHW. The window path instead spreads the input
//! into a channel-last scratch in Rust, one element at a time, which cost ~80 % of its time.
//!
//! - *Widen* `(x, scratch)`, per batch item: the scratch `[C][E_h][E_w]` (the padded input,
//!   extents grown to the last `ceil_mode` window; then 64 slack bytes and a 16-byte
//!   staging vector) is filled with the reduction's identity (the window path's padding:
//!   the int8 lowest value or −∞ for max, 0 for average), then each input row is copied in
//!   16-byte vectors and an element tail.
//! - *Compute* `(scratch, out, divisors)`: per channel and output row, per vector of output
//!   pixels starting at `ow0`, the window path's reduction — the same `init`, the same
//!   `combine` over the taps in the same `(k_h, k_w)` order, the same division by the
//!   pixel's divisor (average) — of one unaligned 16-byte load per tap (stride 1), or two
//!   loads and an even-element shuffle (stride 2); so every lane computes what the window
//!   path computes for that pixel, bit for bit. A row's last vector is moved back to end at
//!   the row's end (recomputing a few pixels); rows narrower than a vector go through the
//!   staging vector and an element copy. Loads of the last vectors reach at most 32 + 24
//!   bytes past a row's last window, into the next row or the slack (those lanes are never
//!   stored).

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/pool_rows.rs"]
mod aot_parts;

use crate::clif::{counted_loop, mem, vcast};
use crate::jit::{Jit, JitOptions, KernelCode};
use crate::pool_window::{PoolGeometry, Reduction};
use crate::qconv::AlignedBytes;
use crate::tensor_io::bad_buffer;
use crate::CodegenError;
use cranelift_codegen::ir::{types, ConstantData, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// `(x, scratch)`.
type WidenFn = unsafe extern "C" fn(*const u8, *mut u8);
/// `(scratch, out, divisors)` (the scratch's staging vector is written; `divisors` is read
/// only by an average pool).
type ComputeFn = unsafe extern "C" fn(*mut u8, *mut u8, *const u8);

/// Bytes past the last plane that loads may reach.
const SLACK: usize = 64;
/// Most taps the compute unrolls.
const MAX_TAPS: usize = 49;

/// A compiled row-path pool.
pub(crate) struct RowPool {
    pub geo: PoolGeometry,
    elem_bytes: usize,
    /// Per output pixel of a plane (row-major), the f32 divisor (average pools; else empty).
    pub divisors: AlignedBytes,
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
        scratch_bytes(&self.geo, self.elem_bytes)
    }

    /// Compile `reduction` over `geo` (checked by [`RowPool::applies`]); `padding_bits`
    /// (the low `elem_bytes` bytes) pad the input, `divisors` (one per output pixel of a
    /// plane) divide each window when `reduction.divide`.
    pub(crate) fn compile(
        name: String,
        geo: PoolGeometry,
        reduction: &Reduction,
        padding_bits: u32,
        divisors: &[f32],
        options: &JitOptions,
    ) -> Result<RowPool, CodegenError> {
        debug_assert!(RowPool::applies(&geo));
        debug_assert!(!reduction.divide || divisors.len() == geo.output[1] * geo.output[2]);
        let bytes = scratch_bytes(&geo, reduction.elem_bytes);
        if bytes > u32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: "max_pool",
                reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut jit = Jit::host(options)?;
        let widen = build_widen(&jit, &geo, bytes, reduction.elem_bytes, padding_bits);
        let compute = build_compute(&jit, &geo, bytes, reduction);
        // SAFETY: both functions take two pointer parameters and return nothing — the
        // `WidenFn`/`ComputeFn` signatures; the pool owns `jit` (in `code`), so the code
        // outlives every call through it.
        let widen: WidenFn = unsafe { jit.compile_as(&format!("{name}_widen"), widen)? };
        // SAFETY: as above.
        let compute: ComputeFn = unsafe { jit.compile_as(&name, compute)? };
        // a vector of divisors past the last pixel (narrow rows) reads the 4 padding ones
        let divisors: Vec<u8> = if reduction.divide {
            divisors
                .iter()
                .chain(&[1.0; 4])
                .flat_map(|d| d.to_le_bytes())
                .collect()
        } else {
            Vec::new()
        };
        Ok(RowPool {
            geo,
            elem_bytes: reduction.elem_bytes,
            divisors: AlignedBytes::from_bytes(&divisors),
            widen,
            compute,
            code: KernelCode::new(jit, name),
        })
    }

    /// Pool `x` (the input shape, elements as bytes) into `out` (the output shape), batch
    /// item by batch item; wrong buffer sizes are an error naming the kernel.
    pub(crate) fn run_into(
        &self,
        x: &[u8],
        out: &mut [u8],
        scratch: &mut AlignedBytes,
    ) -> Result<(), CodegenError> {
        let geo = &self.geo;
        let eb = self.elem_bytes;
        let x_len = eb * geo.x_shape.iter().product::<usize>();
        let out_len = eb * geo.out_shape.iter().product::<usize>();
        if x.len() != x_len
            || out.len() != out_len
            || scratch.as_slice().len() != self.scratch_bytes()
        {
            return Err(bad_buffer(
                self.code.name(),
                format!(
                    "x {} → out {} bytes, scratch {}; expected {x_len} → {out_len}, scratch {}",
                    x.len(),
                    out.len(),
                    scratch.as_slice().len(),
                    self.scratch_bytes()
                ),
            ));
        }
        let batch = geo.batch.max(1);
        let (x_image, out_image) = (x_len / batch, out_len / batch);
        for n in 0..geo.batch {
            self.run_image(
                &x[n * x_image..(n + 1) * x_image],
                &mut out[n * out_image..(n + 1) * out_image],
                scratch,
            );
        }
        Ok(())
    }

    /// One batch item: `x` is one image (`C·H·W` elements as bytes), `out` one
    /// output image.
    fn run_image(&self, x: &[u8], out: &mut [u8], scratch: &mut AlignedBytes) {
        let geo = &self.geo;
        let eb = self.elem_bytes;
        assert!(
            x.len() == eb * geo.channels * geo.input[1] * geo.input[2]
                && out.len() == eb * geo.channels * geo.output[1] * geo.output[2]
                && scratch.as_slice().len() == self.scratch_bytes(),
            "buffers checked by run_into"
        );
        // the divisors' address, or any valid one when there are none (never read)
        let divisors = if self.divisors.as_slice().is_empty() {
            x.as_ptr()
        } else {
            self.divisors.as_slice().as_ptr()
        };
        // SAFETY: the entries are valid while `self.code` lives (`self` is borrowed).
        // Widen reads the image's bytes of `x` and writes `scratch_bytes` bytes of the
        // 16-byte aligned scratch; compute reads the scratch (loads stay inside it: the
        // slack covers the last windows' overreach) and, for an average pool, the divisors
        // of every output pixel of a plane (4 per vector, at pixel offsets inside the
        // plane), and writes the output image's bytes of `out` (rows narrower than a
        // vector through the staging vector inside the scratch). Sizes asserted above.
        unsafe {
            (self.widen)(x.as_ptr(), scratch.as_mut_slice().as_mut_ptr());
            (self.compute)(
                scratch.as_mut_slice().as_mut_ptr(),
                out.as_mut_ptr(),
                divisors,
            );
        }
    }
}

/// The padded planes `[C][E_h][E_w]` of `elem_bytes` elements, [`SLACK`] bytes, a whole
/// number of vectors, then the 16-byte staging vector.
fn scratch_bytes(geo: &PoolGeometry, elem_bytes: usize) -> usize {
    (elem_bytes * geo.channels * geo.extent[1] * geo.extent[2] + SLACK).div_ceil(16) * 16 + 16
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

fn build_widen(
    jit: &Jit,
    geo: &PoolGeometry,
    scratch_bytes: usize,
    eb: usize,
    padding_bits: u32,
) -> Function {
    let (h_in, w_in) = (geo.input[1], geo.input[2]);
    let (e_h, e_w) = (geo.extent[1], geo.extent[2]);
    let (pad_t, pad_l) = (geo.pad_begin[1], geo.pad_begin[2]);
    let channels = geo.channels;
    let elem = if eb == 1 { types::I8 } else { types::I32 };
    let row_bytes = eb * w_in;
    jit.define_kernel(2, |b, p| {
        let (x, scratch) = (p[0], p[1]);
        let lane = b.ins().iconst(elem, i64::from(padding_bits));
        let vector = if eb == 1 { types::I8X16 } else { types::I32X4 };
        let fill = b.ins().splat(vector, lane);
        counted_loop(b, scratch_bytes / 16, |b, i| {
            let off = b.ins().imul_imm_u(i, 16);
            let at = offset_by(b, scratch, off);
            b.ins().store(mem(), fill, at, 0);
        });
        counted_loop(b, channels * h_in, |b, row| {
            // input row (c·H + h), scratch row c·E_h + h + pad_t: with row = c·H + h,
            // c·E_h + h = row + c·(E_h − H)
            let src = b.ins().imul_imm_u(row, row_bytes as i64);
            let src = offset_by(b, x, src);
            let c = b.ins().udiv_imm_u(row, h_in as i64);
            let grow = b.ins().imul_imm_u(c, (e_h - h_in) as i64);
            let dst_row = b.ins().iadd(row, grow);
            let dst_row = b.ins().iadd_imm_u(dst_row, pad_t as i64);
            let dst = b.ins().imul_imm_u(dst_row, (eb * e_w) as i64);
            let dst = b.ins().iadd_imm_u(dst, (eb * pad_l) as i64);
            let dst = offset_by(b, scratch, dst);
            counted_loop(b, row_bytes / 16, |b, i| {
                let off = b.ins().imul_imm_u(i, 16);
                let from = offset_by(b, src, off);
                let v = b.ins().load(types::I8X16, mem().with_readonly(), from, 0);
                let to = offset_by(b, dst, off);
                b.ins().store(mem(), v, to, 0);
            });
            for k in (row_bytes / 16 * 16..row_bytes)
                .step_by(eb)
                .map(|k| k as i32)
            {
                let v = b.ins().load(elem, mem().with_readonly(), src, k);
                b.ins().store(mem(), v, dst, k);
            }
        });
    })
}

fn build_compute(jit: &Jit, geo: &PoolGeometry, scratch_bytes: usize, red: &Reduction) -> Function {
    let (h_out, w_out) = (geo.output[1], geo.output[2]);
    let (k_h, k_w) = (geo.kernel[1], geo.kernel[2]);
    let (s_h, s_w) = (geo.stride[1], geo.stride[2]);
    let eb = red.elem_bytes;
    let lanes = red.lanes;
    let e_w = geo.extent[2];
    let plane = geo.extent[1] * e_w;
    let channels = geo.channels;
    let staging = scratch_bytes - 16;
    let elem = if eb == 1 { types::I8 } else { types::I32 };
    jit.define_kernel(3, |b, p| {
        let (scratch, out, divisors) = (p[0], p[1], p[2]);
        // lane i of a stride-2 vector is element 2·i of the 32 bytes loaded
        let evens: Vec<u8> = (0..16)
            .map(|k| (2 * (k / eb) * eb + k % eb) as u8)
            .collect();
        let evens = b.func.dfg.immediates.push(ConstantData::from(evens));
        // the reduction of the windows starting at `row0` (scratch row of the output
        // row's first kernel row) for the `lanes` output pixels from `ow0`, divided by
        // their divisors (at `divisor_row`, the row's first pixel) when averaging
        let window = |b: &mut FunctionBuilder, row0: Value, ow0: Value, divisor_row: Value| {
            let first = b.ins().imul_imm_u(ow0, (s_w * eb) as i64);
            let first = b.ins().iadd(row0, first);
            let mut acc = (red.init)(b);
            for kh in 0..k_h {
                for kw in 0..k_w {
                    let at = (eb * (kh * e_w + kw)) as i32;
                    let v = b.ins().load(types::I8X16, mem().with_readonly(), first, at);
                    let v = if s_w == 2 {
                        let hi = b
                            .ins()
                            .load(types::I8X16, mem().with_readonly(), first, at + 16);
                        b.ins().shuffle(v, hi, evens)
                    } else {
                        v
                    };
                    let v = vcast(b, red.vector, v);
                    acc = (red.combine)(b, acc, v);
                }
            }
            if red.divide {
                let at = b.ins().imul_imm_u(ow0, 4);
                let at = b.ins().iadd(divisor_row, at);
                let d = b.ins().load(types::F32X4, mem().with_readonly(), at, 0);
                acc = b.ins().fdiv(acc, d);
            }
            acc
        };
        counted_loop(b, channels * h_out, |b, orow| {
            // output row (c·H_out + oh): scratch row c·E_h + oh·s_h
            let c = b.ins().udiv_imm_u(orow, h_out as i64);
            let oh = b.ins().urem_imm_u(orow, h_out as i64);
            let plane_at = b.ins().imul_imm_u(c, (eb * plane) as i64);
            let row_at = b.ins().imul_imm_u(oh, (eb * s_h * e_w) as i64);
            let row0 = b.ins().iadd(plane_at, row_at);
            let row0 = offset_by(b, scratch, row0);
            let out_row = b.ins().imul_imm_u(orow, (eb * w_out) as i64);
            let out_row = offset_by(b, out, out_row);
            let divisor_row = b.ins().imul_imm_u(oh, (4 * w_out) as i64);
            let divisor_row = offset_by(b, divisors, divisor_row);
            if w_out >= lanes {
                counted_loop(b, w_out / lanes, |b, j| {
                    let ow0 = b.ins().imul_imm_u(j, lanes as i64);
                    let v = window(b, row0, ow0, divisor_row);
                    let to = b.ins().imul_imm_u(ow0, eb as i64);
                    let to = offset_by(b, out_row, to);
                    b.ins().store(mem(), v, to, 0);
                });
                if w_out % lanes != 0 {
                    let ow0 = b.ins().iconst(types::I64, (w_out - lanes) as i64);
                    let v = window(b, row0, ow0, divisor_row);
                    b.ins()
                        .store(mem(), v, out_row, (eb * (w_out - lanes)) as i32);
                }
            } else {
                // the divisors past the row's end belong to the next row (or are the
                // table's slack); their lanes are not stored
                let ow0 = b.ins().iconst(types::I64, 0);
                let v = window(b, row0, ow0, divisor_row);
                b.ins().store(mem(), v, scratch, staging as i32);
                for k in (0..w_out).map(|k| (k * eb) as i32) {
                    let e = b.ins().load(elem, mem(), scratch, staging as i32 + k);
                    b.ins().store(mem(), e, out_row, k);
                }
            }
        });
    })
}
