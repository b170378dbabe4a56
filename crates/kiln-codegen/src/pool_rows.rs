//! The row path of the window pools — int8 MaxPool ([`crate::MaxPoolKernel`]) and f32
//! Max/AveragePool ([`crate::PoolKernel`]) — for 1-D/2-D pools with horizontal stride 1 or
//! 2, no dilation and at most 49 taps (every CNN stem, down-sampling and ShuffleNet-style
//! average pool): vectorized over the output pixels of one row of one channel (16 int8 or
//! 4 f32 lanes), so input and output stay NCHW. The window path instead spreads the input
//! into a channel-last scratch in Rust, one element at a time, which cost ~80 % of its time.
//!
//! One function `(x, scratch, out, divisors)` per batch item, channel by channel through
//! one padded plane:
//! - the scratch — one plane `[E_h][E_w]` (the padded input, extents grown to the last
//!   `ceil_mode` window), then 64 slack bytes and a 16-byte staging vector — is filled
//!   once with the reduction's identity (the window path's padding: the int8 lowest value
//!   or −∞ for max, 0 for average);
//! - per channel, its input rows are copied into the plane's interior in 16-byte vectors
//!   and an element tail (the border keeps the identity: no row writes it), then its output
//!   rows are computed from the plane. The plane (a few KB) stays in L1 from one step to the
//!   next; a scratch of every padded plane (0.8 MB for ResNet's max pool) did not.
//! - *Compute*, per output row, per vector of output pixels starting at `ow0`: the window
//!   path's reduction — the same `init`, the same `combine` over the taps in the same
//!   `(k_h, k_w)` order, the same division by the pixel's divisor (average) — of one
//!   unaligned 16-byte load per tap (stride 1), or two loads and an even-element shuffle
//!   (stride 2); so every lane computes what the window path computes for that pixel, bit
//!   for bit. A row's last vector is moved back to end at the row's end (recomputing a few
//!   pixels); rows narrower than a vector go through the staging vector and an element
//!   copy. Loads of the last vectors reach at most 32 + 24 bytes past a row's last window,
//!   into the next row or the slack (those lanes are never stored).
//! - With int8 ends ([`Int8Ends`], the int8 average pool), each input row is dequantized
//!   into the f32 plane (`(q − zp) → f32 · s`, 16, then 4, then 1 element at a time) and
//!   each vector of results is quantized (the Quantize kernel's operations) and stored as
//!   4 bytes.

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/pool_rows.rs"]
mod aot_parts;

use crate::clif::{counted_loop, mem, vcast, widen_half};
use crate::jit::{Jit, JitOptions, KernelCode};
use crate::pool_window::{PoolGeometry, Reduction};
use crate::qconv::AlignedBytes;
use crate::quantize::{dequantize_lanes, Int8Quant};
use crate::tensor_io::bad_buffer;
use crate::CodegenError;
use cranelift_codegen::ir::{types, ConstantData, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

/// `(x, scratch, out, divisors)` for one batch item (`divisors` is read only by an average
/// pool).
type PoolFn = unsafe extern "C" fn(*const u8, *mut u8, *mut u8, *const u8);

/// Bytes past the last plane that loads may reach.
const SLACK: usize = 64;
/// Most taps the compute unrolls.
const MAX_TAPS: usize = 49;

/// The int8 ends of a row-path average pool that replaces the f32 island
/// `quantize(average_pool(dequantize(x)))`: the widening step dequantizes the input rows
/// into the f32 scratch, the compute quantizes each vector of results before storing it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Int8Ends {
    pub x: Int8Quant,
    pub y: Int8Quant,
    /// `x86_cvtt2dq` for the exact conversion of the quantization (as `QuantizeKernel`).
    pub exact_cvtt: bool,
}

/// A compiled row-path pool.
pub(crate) struct RowPool {
    pub geo: PoolGeometry,
    /// Bytes of a scratch element (the reduction's).
    elem_bytes: usize,
    /// Bytes of an input and of an output element: the scratch's, or 1 with int8 ends.
    io_bytes: usize,
    /// Per output pixel of a plane (row-major), the f32 divisor (average pools; else empty).
    pub divisors: AlignedBytes,
    function: PoolFn,
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

    /// Scratch bytes: one padded plane, the slack, the staging vector.
    pub(crate) fn scratch_bytes(&self) -> usize {
        scratch_bytes(&self.geo, self.elem_bytes)
    }

    /// Compile `reduction` over `geo` (checked by [`RowPool::applies`]); `padding_bits`
    /// (the low `elem_bytes` bytes) pad the input, `divisors` (one per output pixel of a
    /// plane) divide each window when `reduction.divide`; `ends`: int8 input and output
    /// around an f32 reduction ([`Int8Ends`]).
    pub(crate) fn compile(
        name: String,
        geo: PoolGeometry,
        reduction: &Reduction,
        padding_bits: u32,
        divisors: &[f32],
        ends: Option<Int8Ends>,
        options: &JitOptions,
    ) -> Result<RowPool, CodegenError> {
        debug_assert!(ends.is_none() || reduction.elem_bytes == 4);
        debug_assert!(RowPool::applies(&geo));
        debug_assert!(!reduction.divide || divisors.len() == geo.output[1] * geo.output[2]);
        let bytes = scratch_bytes(&geo, reduction.elem_bytes);
        // the staging vector is addressed by an i32 offset
        if bytes > i32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: "pool",
                reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut jit = Jit::host(options)?;
        let func = build_pool(&jit, &geo, bytes, reduction, padding_bits, ends);
        // SAFETY: the function takes four pointer parameters and returns nothing — the
        // `PoolFn` signature; the pool owns `jit` (in `code`), so the code outlives every
        // call through it.
        let function: PoolFn = unsafe { jit.compile_as(&name, func)? };
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
            io_bytes: if ends.is_some() {
                1
            } else {
                reduction.elem_bytes
            },
            divisors: AlignedBytes::from_bytes(&divisors),
            function,
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
        let eb = self.io_bytes;
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
        let eb = self.io_bytes;
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
        // SAFETY: the entry is valid while `self.code` lives (`self` is borrowed). It reads
        // the image's bytes of `x`, writes and reads the `scratch_bytes` bytes of the
        // 16-byte aligned scratch (loads stay inside it: the slack covers the last
        // windows' overreach), reads, for an average pool, the divisors of every output
        // pixel of a plane (4 per vector, at pixel offsets inside the plane), and writes
        // the output image's bytes of `out` (rows narrower than a vector through the
        // staging vector inside the scratch). Sizes asserted above.
        unsafe {
            (self.function)(
                x.as_ptr(),
                scratch.as_mut_slice().as_mut_ptr(),
                out.as_mut_ptr(),
                divisors,
            );
        }
    }
}

/// One padded plane `[E_h][E_w]` of `elem_bytes` elements, [`SLACK`] bytes, a whole
/// number of vectors, then the 16-byte staging vector.
fn scratch_bytes(geo: &PoolGeometry, elem_bytes: usize) -> usize {
    (elem_bytes * geo.extent[1] * geo.extent[2] + SLACK).div_ceil(16) * 16 + 16
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

/// Dequantize the `n` int8 elements at `src` into f32 at `dst`: 16 per step, then 4, then
/// one at a time (lane 0 of the same vector code).
fn dequantize_row(b: &mut FunctionBuilder, x: Int8Quant, src: Value, dst: Value, n: usize) {
    let widen = |b: &mut FunctionBuilder, v: Value, high: bool| widen_half(b, v, x.signed, high);
    counted_loop(b, n / 16, |b, i| {
        let off = b.ins().imul_imm_u(i, 16);
        let from = offset_by(b, src, off);
        let bytes = b.ins().load(types::I8X16, mem().with_readonly(), from, 0);
        let off = b.ins().imul_imm_u(i, 64);
        let to = offset_by(b, dst, off);
        for (h, high) in [false, true].into_iter().enumerate() {
            let halves = widen(b, bytes, high);
            for (q, high) in [false, true].into_iter().enumerate() {
                let q32 = widen(b, halves, high);
                let f = dequantize_lanes(b, q32, x.scale, x.zero_point);
                b.ins().store(mem(), f, to, (16 * (2 * h + q)) as i32);
            }
        }
    });
    let mut k = n / 16 * 16;
    while k + 4 <= n {
        // four elements: one 32-bit load, widened
        let word = b
            .ins()
            .load(types::I32, mem().with_readonly(), src, k as i32);
        let v = b.ins().scalar_to_vector(types::I32X4, word);
        let bytes = vcast(b, types::I8X16, v);
        let halves = widen(b, bytes, false);
        let q32 = widen(b, halves, false);
        let f = dequantize_lanes(b, q32, x.scale, x.zero_point);
        b.ins().store(mem(), f, dst, (4 * k) as i32);
        k += 4;
    }
    for k in k..n {
        let q = if x.signed {
            b.ins()
                .sload8(types::I32, mem().with_readonly(), src, k as i32)
        } else {
            b.ins()
                .uload8(types::I32, mem().with_readonly(), src, k as i32)
        };
        // lane 0 of the vector code: the same operations as the other elements
        let q = b.ins().splat(types::I32X4, q);
        let f = dequantize_lanes(b, q, x.scale, x.zero_point);
        let f = b.ins().extractlane(f, 0);
        b.ins().store(mem(), f, dst, (4 * k) as i32);
    }
}

/// `(x, scratch, out, divisors)`: fill the plane with the padding, then per channel copy
/// (with int8 `ends`: dequantize) its rows into the plane's interior and compute its
/// output rows, a vector of output pixels at a time (with int8 `ends`, quantized to 4
/// bytes each).
fn build_pool(
    jit: &Jit,
    geo: &PoolGeometry,
    scratch_bytes: usize,
    red: &Reduction,
    padding_bits: u32,
    ends: Option<Int8Ends>,
) -> Function {
    let (h_in, w_in) = (geo.input[1], geo.input[2]);
    let (h_out, w_out) = (geo.output[1], geo.output[2]);
    let (k_h, k_w) = (geo.kernel[1], geo.kernel[2]);
    let (s_h, s_w) = (geo.stride[1], geo.stride[2]);
    let e_w = geo.extent[2];
    let (pad_t, pad_l) = (geo.pad_begin[1], geo.pad_begin[2]);
    let eb = red.elem_bytes;
    let lanes = red.lanes;
    let staging = scratch_bytes - 16;
    // input and output element bytes, and the scratch's element type
    let io_eb = if ends.is_some() { 1 } else { eb };
    let elem = if eb == 1 { types::I8 } else { types::I32 };
    let out_elem = if io_eb == 1 { types::I8 } else { types::I32 };
    let row_bytes = io_eb * w_in;
    // a vector of results as stored: itself, or its lanes quantized to one 32-bit word
    let stored = |b: &mut FunctionBuilder, v: Value| match ends {
        Some(ends) => ends.y.quantize_word(b, v, ends.exact_cvtt),
        None => v,
    };
    jit.define_kernel(4, |b, p| {
        let (x, scratch, out, divisors) = (p[0], p[1], p[2], p[3]);
        let lane = b.ins().iconst(elem, i64::from(padding_bits));
        let vector = if eb == 1 { types::I8X16 } else { types::I32X4 };
        let fill = b.ins().splat(vector, lane);
        counted_loop(b, scratch_bytes / 16, |b, i| {
            let off = b.ins().imul_imm_u(i, 16);
            let at = offset_by(b, scratch, off);
            b.ins().store(mem(), fill, at, 0);
        });
        // lane i of a stride-2 vector is element 2·i of the 32 bytes loaded
        let evens: Vec<u8> = (0..16)
            .map(|k| (2 * (k / eb) * eb + k % eb) as u8)
            .collect();
        let evens = b.func.dfg.immediates.push(ConstantData::from(evens));
        // the reduction of the windows starting at `row0` (plane row of the output row's
        // first kernel row) for the `lanes` output pixels from `ow0`, divided by their
        // divisors (at `divisor_row`, the row's first pixel) when averaging; the plane is
        // written by this function, so its loads are ordinary ones
        let window = |b: &mut FunctionBuilder, row0: Value, ow0: Value, divisor_row: Value| {
            let first = b.ins().imul_imm_u(ow0, (s_w * eb) as i64);
            let first = b.ins().iadd(row0, first);
            let mut acc = (red.init)(b);
            for kh in 0..k_h {
                for kw in 0..k_w {
                    let at = (eb * (kh * e_w + kw)) as i32;
                    let v = b.ins().load(types::I8X16, mem(), first, at);
                    let v = if s_w == 2 {
                        let hi = b.ins().load(types::I8X16, mem(), first, at + 16);
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
        counted_loop(b, geo.channels, |b, c| {
            // the channel's input rows into the plane's interior
            let src_plane = b.ins().imul_imm_u(c, (row_bytes * h_in) as i64);
            let src_plane = offset_by(b, x, src_plane);
            counted_loop(b, h_in, |b, h| {
                let src = b.ins().imul_imm_u(h, row_bytes as i64);
                let src = offset_by(b, src_plane, src);
                // plane row h + pad_t, column pad_l
                let dst = b.ins().imul_imm_u(h, (eb * e_w) as i64);
                let dst = b.ins().iadd_imm_u(dst, (eb * (pad_t * e_w + pad_l)) as i64);
                let dst = offset_by(b, scratch, dst);
                if let Some(ends) = ends {
                    dequantize_row(b, ends.x, src, dst, w_in);
                    return;
                }
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
            // the channel's output rows
            let out_plane = b.ins().imul_imm_u(c, (io_eb * w_out * h_out) as i64);
            let out_plane = offset_by(b, out, out_plane);
            counted_loop(b, h_out, |b, oh| {
                let row0 = b.ins().imul_imm_u(oh, (eb * s_h * e_w) as i64);
                let row0 = offset_by(b, scratch, row0);
                let out_row = b.ins().imul_imm_u(oh, (io_eb * w_out) as i64);
                let out_row = offset_by(b, out_plane, out_row);
                let divisor_row = b.ins().imul_imm_u(oh, (4 * w_out) as i64);
                let divisor_row = offset_by(b, divisors, divisor_row);
                if w_out >= lanes {
                    counted_loop(b, w_out / lanes, |b, j| {
                        let ow0 = b.ins().imul_imm_u(j, lanes as i64);
                        let v = window(b, row0, ow0, divisor_row);
                        let v = stored(b, v);
                        let to = b.ins().imul_imm_u(ow0, io_eb as i64);
                        let to = offset_by(b, out_row, to);
                        b.ins().store(mem(), v, to, 0);
                    });
                    if w_out % lanes != 0 {
                        let ow0 = b.ins().iconst(types::I64, (w_out - lanes) as i64);
                        let v = window(b, row0, ow0, divisor_row);
                        let v = stored(b, v);
                        b.ins()
                            .store(mem(), v, out_row, (io_eb * (w_out - lanes)) as i32);
                    }
                } else {
                    // the divisors past the row's end belong to the next row (or are the
                    // table's slack); their lanes are not stored
                    let ow0 = b.ins().iconst(types::I64, 0);
                    let v = window(b, row0, ow0, divisor_row);
                    let v = stored(b, v);
                    b.ins().store(mem(), v, scratch, staging as i32);
                    for k in (0..w_out).map(|k| (k * io_eb) as i32) {
                        let e = b.ins().load(out_elem, mem(), scratch, staging as i32 + k);
                        b.ins().store(mem(), e, out_row, k);
                    }
                }
            });
        });
    })
}
