//! f32 pooling: MaxPool (values only), AveragePool and their global forms, 1-D to 3-D, any
//! kernel, strides, dilations, pads and `ceil_mode`; vectorized over channels.
//!
//! As the int8 MaxPool, on the shared window reduction (`pool_window.rs`): each batch item
//! is spread into a channel-last scratch (`C_p` = channels rounded up to 4) whose padding
//! is the identity of the reduction: `f32::MIN` for max (an all-padding window yields it,
//! as the interpreter's running max starting at `lowest()`), 0 for average. Per output
//! pixel and block of 4 channels the JIT'd function folds the taps in the interpreter's
//! order (`maxps` with its strict `>`; `addps` in z, y, x order, where the padding's `+ 0`
//! changes nothing), and an average divides by the pixel's divisor from a table (real
//! taps, or taps inside the padded extent with `count_include_pad`; 1 for an all-padding
//! window, whose sum is 0) — the interpreter's arithmetic, so results are bit-identical.
//!
//! A global pool (the window is the whole input: GlobalAveragePool, GlobalMaxPool) skips
//! the scratch: `GlobalPool` reads the NCHW planes directly, 4 channels' F32X4 of 4
//! pixels at a time transposed in registers, so each lane (one channel) still folds its
//! pixels one by one in order from the identity — the same sums, the same bits — with
//! several channel blocks' chains in flight.

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/fpool.rs"]
mod aot_parts;

use crate::clif::{at, counted_loop, mem, splat_f32, vcast};
use crate::jit::{Jit, JitOptions, KernelCode};
use crate::pool_rows::{Int8Ends, RowPool};
use crate::pool_window::{global_pool_attrs, PoolGeometry, Reduction, WindowKernel};
use crate::qconv::AlignedBytes;
use crate::quantize::{dequantize_lanes, Int8Quant};
use crate::spatial::SP;
use crate::tensor_io::{bad_buffer, f32_operand, f32_result, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, ConstantData, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{DType, PoolAttrs, Tensor, TensorType};

/// Which reduction a [`PoolKernel`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

impl PoolKind {
    fn op(self) -> &'static str {
        match self {
            PoolKind::Max => "max_pool",
            PoolKind::Average => "average_pool",
        }
    }

    /// The reduction's identity, which pads the scratch.
    fn padding(self) -> f32 {
        match self {
            PoolKind::Max => f32::MIN,
            PoolKind::Average => 0.0,
        }
    }
}

/// Per output pixel of an average pool: the interpreter's divisor.
fn divisors(geo: &PoolGeometry, count_include_pad: bool) -> Vec<f32> {
    // per dim and output index: (real taps, taps inside the padded extent)
    let counts: [Vec<(usize, usize)>; SP] = std::array::from_fn(|d| {
        (0..geo.output[d])
            .map(|o| {
                let start = (o * geo.stride[d]) as isize - geo.pad_begin[d] as isize;
                let padded_end = (geo.input[d] + geo.pad_end[d]) as isize;
                let (mut real, mut inside) = (0, 0);
                for k in 0..geo.kernel[d] {
                    let i = start + (k * geo.dilation[d]) as isize;
                    inside += usize::from(i < padded_end);
                    real += usize::from(i >= 0 && (i as usize) < geo.input[d]);
                }
                (real, inside)
            })
            .collect()
    });
    let mut divisors = Vec::with_capacity(geo.out_pixels());
    for c0 in &counts[0] {
        for c1 in &counts[1] {
            for c2 in &counts[2] {
                let real = c0.0 * c1.0 * c2.0;
                let divisor = if real == 0 {
                    1
                } else if count_include_pad {
                    c0.1 * c1.1 * c2.1
                } else {
                    real
                };
                divisors.push(divisor as f32);
            }
        }
    }
    divisors
}

/// A compiled f32 MaxPool or AveragePool.
pub struct PoolKernel {
    body: PoolBody,
    kind: PoolKind,
    /// The int8 input and output types of an int8 average pool
    /// ([`PoolKernel::compile_int8_average`]).
    int8_out: Option<(TensorType, TensorType)>,
}

/// How a [`PoolKernel`] reduces.
enum PoolBody {
    /// Over the channel-last padded scratch, window by window.
    Window(WindowKernel),
    /// One window covering the whole input, straight from NCHW.
    Global(GlobalPool),
    /// NCHW rows of 4 output pixels (`pool_rows.rs`): 1-D/2-D, horizontal stride 1 or 2.
    Rows(RowPool),
}

impl PoolKernel {
    fn code(&self) -> &KernelCode {
        match &self.body {
            PoolBody::Window(window) => &window.code,
            PoolBody::Global(global) => &global.code,
            PoolBody::Rows(rows) => &rows.code,
        }
    }

    fn geo(&self) -> &PoolGeometry {
        match &self.body {
            PoolBody::Window(window) => &window.geo,
            PoolBody::Global(global) => &global.geo,
            PoolBody::Rows(rows) => &rows.geo,
        }
    }

    /// The kernel's name: its op and shapes, as its machine code is named.
    pub fn name(&self) -> &str {
        self.code().name()
    }

    /// Cranelift's listing of the kernel's main function, when compiled with
    /// `capture_disassembly`.
    pub fn disassembly(&self) -> Option<&str> {
        self.code().main_disassembly()
    }
}

impl std::fmt::Debug for PoolKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolKernel")
            .field("name", &self.name())
            .finish()
    }
}

/// Working memory of a [`PoolKernel`] (the channel-last padded input; empty for a global
/// pool, which reads its input in place).
#[derive(Debug)]
pub struct PoolScratch {
    bytes: AlignedBytes,
}

impl PoolKernel {
    /// Compile a pool over an f32 input (MaxPool: the values output only).
    pub fn compile(
        kind: PoolKind,
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<PoolKernel, CodegenError> {
        Self::compile_with(kind, attrs, x_ty, options, true, None)
    }

    /// [`Self::compile`] on the window kernel even where the global or the row kernel
    /// applies: the peer those are checked (bit for bit) and benchmarked against.
    pub fn compile_on_window_kernel(
        kind: PoolKind,
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<PoolKernel, CodegenError> {
        Self::compile_with(kind, attrs, x_ty, options, false, None)
    }

    /// An int8 average pool: the f32 island `quantize(average_pool(dequantize(x)))` with
    /// `x_ty` the int8 input's type (u8/i8 per tensor) and `out_ty` the quantize's (u8/i8
    /// per tensor) in one kernel, bit-identical to the three nodes run one by one: the
    /// input is dequantized as the row or global path reads it (the Dequantize kernel's
    /// operations), the f32 pool runs unchanged, each vector of results is quantized as
    /// the Quantize kernel does. Pools the window path would take (3-D, dilated, wide
    /// horizontal strides) are [`CodegenError::Unsupported`].
    pub fn compile_int8_average(
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<PoolKernel, CodegenError> {
        let op = "int8_average_pool";
        let quant = |ty: &TensorType| {
            Int8Quant::of(ty).map_err(|reason| CodegenError::Unsupported {
                op,
                reason: format!("{ty}: {reason} (u8/i8 per tensor only)"),
            })
        };
        let (x, y) = (quant(x_ty)?, quant(out_ty)?);
        // the host JIT's target: `x86_cvtt2dq` there, as `QuantizeKernel` chooses
        let exact_cvtt = cfg!(target_arch = "x86_64");
        let ends = Int8Ends { x, y, exact_cvtt };
        let f32_ty = TensorType::new(DType::F32, x_ty.shape.clone());
        let mut kernel =
            Self::compile_with(PoolKind::Average, attrs, &f32_ty, options, true, Some(ends))?;
        if kernel.output_shape() != out_ty.shape.as_slice() {
            return Err(CodegenError::InvalidOp {
                op,
                reason: format!(
                    "output {out_ty}, the pool gives {:?}",
                    kernel.output_shape()
                ),
            });
        }
        kernel.int8_out = Some((x_ty.clone(), out_ty.clone()));
        Ok(kernel)
    }

    /// [`Self::compile_int8_average`] of a GlobalAveragePool.
    pub fn compile_int8_global_average(
        x_ty: &TensorType,
        out_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<PoolKernel, CodegenError> {
        let attrs = global_pool_attrs("global_average_pool", x_ty)?;
        Self::compile_int8_average(&attrs, x_ty, out_ty, options)
    }

    /// [`Self::compile`]; `global`: use [`GlobalPool`] or [`RowPool`] where they apply;
    /// `ends`: int8 input and output around the f32 pool (those two paths only).
    fn compile_with(
        kind: PoolKind,
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        options: &JitOptions,
        global: bool,
        ends: Option<Int8Ends>,
    ) -> Result<PoolKernel, CodegenError> {
        let op = kind.op();
        let geo = PoolGeometry::new(op, &x_ty.shape, attrs)?;
        if x_ty.dtype != DType::F32 {
            return Err(CodegenError::Unsupported {
                op,
                reason: format!("{} input (f32 only here)", x_ty.dtype),
            });
        }
        let layout = geo.layout(op, 4, 4)?;
        let divisors = match kind {
            PoolKind::Average => divisors(&geo, attrs.count_include_pad),
            PoolKind::Max => Vec::new(),
        };
        let init = move |b: &mut FunctionBuilder| splat_f32(b, kind.padding());
        let combine = move |b: &mut FunctionBuilder, a, v| match kind {
            // strict `>`: NaN never replaces the running max
            PoolKind::Max => {
                let gt = b.ins().fcmp(FloatCC::GreaterThan, v, a);
                let mask = vcast(b, types::F32X4, gt);
                b.ins().bitselect(mask, v, a)
            }
            PoolKind::Average => b.ins().fadd(a, v),
        };
        let reduction = Reduction {
            vector: types::F32X4,
            lanes: 4,
            elem_bytes: 4,
            init: &init,
            combine: &combine,
            divide: kind == PoolKind::Average,
        };
        let name = match ends {
            Some(_) => format!("{op}_int8_{}", shape_name(&geo.out_shape)),
            None => format!("{op}_f32_{}", shape_name(&geo.out_shape)),
        };
        let body = if global && GlobalPool::covers(&geo) {
            PoolBody::Global(GlobalPool::compile(name, geo, &reduction, ends, options)?)
        } else if global && RowPool::applies(&geo) {
            // one depth (`applies`): `divisors` is one output plane's, row-major
            let padding = kind.padding().to_bits();
            PoolBody::Rows(RowPool::compile(
                name, geo, &reduction, padding, &divisors, ends, options,
            )?)
        } else if ends.is_some() {
            return Err(CodegenError::Unsupported {
                op: "int8_average_pool",
                reason: "the window path (pools neither the row path nor the global path \
                         takes: depth or depth padding, dilation, horizontal stride > 2, more \
                         than 49 taps) has no int8 ends"
                    .to_string(),
            });
        } else {
            PoolBody::Window(WindowKernel::compile(
                name, geo, layout, &reduction, &divisors, options,
            )?)
        };
        Ok(PoolKernel {
            body,
            kind,
            int8_out: None,
        })
    }

    /// GlobalAveragePool / GlobalMaxPool: a pool whose window is the whole spatial extent.
    pub fn compile_global(
        kind: PoolKind,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<PoolKernel, CodegenError> {
        let op = match kind {
            PoolKind::Max => "global_max_pool",
            PoolKind::Average => "global_average_pool",
        };
        Self::compile(kind, &global_pool_attrs(op, x_ty)?, x_ty, options)
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.geo().out_shape
    }

    pub fn new_scratch(&self) -> PoolScratch {
        PoolScratch {
            bytes: match &self.body {
                PoolBody::Window(window) => window.new_scratch(),
                PoolBody::Global(_) => AlignedBytes::zeroed(0),
                PoolBody::Rows(rows) => AlignedBytes::zeroed(rows.scratch_bytes()),
            },
        }
    }

    pub fn run_into(
        &self,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut PoolScratch,
    ) -> Result<(), CodegenError> {
        if self.int8_out.is_some() {
            return Err(bad_buffer(
                self.name(),
                "f32 buffers for an int8 pool (run_int8_into)".to_string(),
            ));
        }
        match &self.body {
            PoolBody::Window(window) => {
                window.run_into(x, out, &mut scratch.bytes, self.kind.padding())
            }
            PoolBody::Global(global) => {
                global.run_into(bytemuck::cast_slice(x), bytemuck::cast_slice_mut(out))
            }
            PoolBody::Rows(rows) => rows.run_into(
                bytemuck::cast_slice(x),
                bytemuck::cast_slice_mut(out),
                &mut scratch.bytes,
            ),
        }
    }

    /// Run an int8 average pool ([`PoolKernel::compile_int8_average`]) on the input's
    /// bytes into the output's.
    pub fn run_int8_into(
        &self,
        x: &[u8],
        out: &mut [u8],
        scratch: &mut PoolScratch,
    ) -> Result<(), CodegenError> {
        match (&self.body, &self.int8_out) {
            (PoolBody::Global(global), Some(_)) => global.run_into(x, out),
            (PoolBody::Rows(rows), Some(_)) => rows.run_into(x, out, &mut scratch.bytes),
            _ => Err(bad_buffer(
                self.name(),
                "int8 buffers for an f32 pool (run_into)".to_string(),
            )),
        }
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let name = self.name();
        if let Some((x_ty, out_ty)) = &self.int8_out {
            if x.shape() != x_ty.shape.as_slice() || x.dtype() != x_ty.dtype {
                return Err(bad_buffer(
                    name,
                    format!("input {} {:?}, expected {x_ty}", x.dtype(), x.shape()),
                ));
            }
            let mut out = vec![0u8; out_ty.byte_size()];
            self.run_int8_into(&x.to_le_bytes(), &mut out, &mut self.new_scratch())?;
            return Tensor::new(
                out_ty.shape.clone(),
                crate::tensor_data_from_le_bytes(out_ty.dtype, &out),
            )
            .map_err(|e| bad_buffer(name, e.to_string()));
        }
        let xv = f32_operand(name, x, Some(&self.geo().x_shape))?;
        let mut out = vec![0f32; self.output_shape().iter().product()];
        self.run_into(xv, &mut out, &mut self.new_scratch())?;
        f32_result(name, self.output_shape(), out)
    }
}

/// `(x, out)` for one batch item.
type GlobalFn = unsafe extern "C" fn(*const u8, *mut u8);

/// Channel blocks (of 4) reduced side by side: their running values are independent
/// chains, so more of them hide the latency of each `addps`.
const GLOBAL_BLOCKS: usize = 4;

/// A pool whose one window is the whole input (no padding), reduced from the NCHW input.
pub(crate) struct GlobalPool {
    pub geo: PoolGeometry,
    /// Bytes of an input and of an output element (4, or 1 with int8 ends).
    io_bytes: usize,
    function: GlobalFn,
    /// Declared last: `function` points into it.
    pub code: KernelCode,
}

impl GlobalPool {
    /// Whether `geo`'s only window is the whole input, every tap real.
    fn covers(geo: &PoolGeometry) -> bool {
        geo.output == [1; SP]
            && geo.kernel == geo.input
            && geo.dilation == [1; SP]
            && geo.pad_begin == [0; SP]
            && geo.pad_end == [0; SP]
    }

    fn compile(
        name: String,
        geo: PoolGeometry,
        reduction: &Reduction,
        ends: Option<Int8Ends>,
        options: &JitOptions,
    ) -> Result<GlobalPool, CodegenError> {
        let mut jit = Jit::host(options)?;
        let func = build_global(&jit, &geo, reduction, ends);
        // SAFETY: `build_global` builds two pointer parameters and no results —
        // `GlobalFn`; the kernel owns `jit`, so the code outlives every call.
        let function: GlobalFn = unsafe { jit.compile_as(&name, func)? };
        Ok(GlobalPool {
            geo,
            io_bytes: if ends.is_some() { 1 } else { 4 },
            function,
            code: KernelCode::new(jit, name),
        })
    }

    fn run_into(&self, x: &[u8], out: &mut [u8]) -> Result<(), CodegenError> {
        let (batch, channels) = (self.geo.batch, self.geo.channels);
        let eb = self.io_bytes;
        let x_len: usize = eb * self.geo.x_shape.iter().product::<usize>();
        if x.len() != x_len || out.len() != eb * batch * channels {
            return Err(CodegenError::BadBuffer {
                kernel: self.code.name().to_string(),
                what: format!(
                    "{} → {} bytes; expected {x_len} → {}",
                    x.len(),
                    out.len(),
                    eb * batch * channels
                ),
            });
        }
        let x_image = x_len / batch.max(1);
        let out_image = eb * channels;
        for n in 0..batch {
            let x_n = &x[n * x_image..(n + 1) * x_image];
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            // SAFETY: valid while `self.code` lives. The function reads the `x_image`
            // bytes of `x_n` (channel planes of `pixels` elements, unaligned loads inside
            // them) and writes the `channels` elements of `out_n`; lengths checked above.
            unsafe { (self.function)(x_n.as_ptr(), out_n.as_mut_ptr()) };
        }
        Ok(())
    }
}

/// The byte mask of `shuffle` taking 32-bit lanes `lanes` (0–3 from the first operand,
/// 4–7 from the second).
fn dword_shuffle(b: &mut FunctionBuilder, lanes: [u8; 4]) -> cranelift_codegen::ir::Immediate {
    let bytes: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |i| 4 * l + i))
        .collect();
    b.func.dfg.immediates.push(ConstantData::from(bytes))
}

/// Rows `[r0, r1, r2, r3]` (channel `c`'s 4 pixels each) into columns (pixel `p`'s 4
/// channels each), as `punpck{l,h}dq` then `punpck{l,h}qdq`.
fn transpose4(b: &mut FunctionBuilder, rows: [Value; 4]) -> [Value; 4] {
    let r = rows.map(|v| vcast(b, types::I8X16, v));
    let lo = dword_shuffle(b, [0, 4, 1, 5]);
    let hi = dword_shuffle(b, [2, 6, 3, 7]);
    let lo64 = dword_shuffle(b, [0, 1, 4, 5]);
    let hi64 = dword_shuffle(b, [2, 3, 6, 7]);
    let t0 = b.ins().shuffle(r[0], r[1], lo);
    let t1 = b.ins().shuffle(r[0], r[1], hi);
    let t2 = b.ins().shuffle(r[2], r[3], lo);
    let t3 = b.ins().shuffle(r[2], r[3], hi);
    let cols = [
        b.ins().shuffle(t0, t2, lo64),
        b.ins().shuffle(t0, t2, hi64),
        b.ins().shuffle(t1, t3, lo64),
        b.ins().shuffle(t1, t3, hi64),
    ];
    cols.map(|v| vcast(b, types::F32X4, v))
}

/// `fn(x, out)`: per pass of up to [`GLOBAL_BLOCKS`] blocks of 4 channels, the running
/// values over the pixels in order — 4 at a time by [`transpose4`], then the last
/// `pixels mod 4` one by one — divided by the pixel count when the reduction divides, the
/// valid lanes stored. Lanes past the last channel read the last channel (and are not
/// stored), so every load stays inside `x`.
///
/// With int8 `ends` the input planes are u8/i8, each group of 4 pixels one 32-bit load
/// widened and dequantized (`(q − zp) → f32 · s`, the Dequantize kernel's operations), and
/// each block's 4 results are quantized and stored as bytes.
fn build_global(
    jit: &Jit,
    geo: &PoolGeometry,
    red: &Reduction,
    ends: Option<Int8Ends>,
) -> Function {
    let in_eb = if ends.is_some() { 1 } else { 4 };
    let out_eb = in_eb;
    // 4 consecutive elements of a plane as f32 lanes
    let load4 = move |b: &mut FunctionBuilder, addr: Value, off: i32| match ends {
        None => b.ins().load(types::F32X4, mem().with_readonly(), addr, off),
        Some(ends) => {
            let word = b.ins().load(types::I32, mem().with_readonly(), addr, off);
            let v = b.ins().scalar_to_vector(types::I32X4, word);
            let bytes = vcast(b, types::I8X16, v);
            let q = if ends.x.signed {
                let h = b.ins().swiden_low(bytes);
                b.ins().swiden_low(h)
            } else {
                let h = b.ins().uwiden_low(bytes);
                b.ins().uwiden_low(h)
            };
            dequantize_lanes(b, q, ends.x.scale, ends.x.zero_point)
        }
    };
    // one element of a plane as an f32 scalar
    let load1 = move |b: &mut FunctionBuilder, addr: Value, off: i32| match ends {
        None => b.ins().load(types::F32, mem().with_readonly(), addr, off),
        Some(ends) => {
            let q = if ends.x.signed {
                b.ins().sload8(types::I32, mem().with_readonly(), addr, off)
            } else {
                b.ins().uload8(types::I32, mem().with_readonly(), addr, off)
            };
            let q = b.ins().splat(types::I32X4, q);
            let f = dequantize_lanes(b, q, ends.x.scale, ends.x.zero_point);
            b.ins().extractlane(f, 0)
        }
    };
    jit.define_kernel(2, |b, p| {
        let (x, out) = (p[0], p[1]);
        let channels = geo.channels;
        let pixels: usize = geo.input.iter().product();
        let plane = in_eb * pixels;
        let full_blocks = channels / 4;
        // one pass over `blocks` channel blocks from block `first` on; `tail`: the last
        // pass, whose constant first block is given, clamps lanes past the last channel
        let pass = |b: &mut FunctionBuilder, first: Value, blocks: usize, tail: Option<usize>| {
            let base = b.ins().imul_imm_u(first, (4 * plane) as i64);
            let base = b.ins().iadd(x, base);
            let first_channel = b.ins().imul_imm_u(first, (4 * out_eb) as i64);
            let out_base = b.ins().iadd(out, first_channel);
            // (block, lane) of the pass → its channel's plane, from `base`; stored or not
            let lane_plane = |block: usize, lane: usize| -> (usize, bool) {
                let c = 4 * block + lane;
                match tail {
                    Some(first) => {
                        let last = channels - 1 - 4 * first;
                        (c.min(last) * plane, c <= last)
                    }
                    None => (c * plane, true),
                }
            };
            let accs: Vec<_> = (0..blocks)
                .map(|_| {
                    let v = b.declare_var(types::F32X4);
                    let init = (red.init)(b);
                    b.def_var(v, init);
                    v
                })
                .collect();
            counted_loop(b, pixels / 4, |b, q| {
                let at_q = b.ins().imul_imm_u(q, (4 * in_eb) as i64);
                let at_q = b.ins().iadd(base, at_q);
                for (block, &acc) in accs.iter().enumerate() {
                    let rows = std::array::from_fn(|lane| {
                        let (addr, off) = at(b, at_q, lane_plane(block, lane).0);
                        load4(b, addr, off)
                    });
                    let mut running = b.use_var(acc);
                    for col in transpose4(b, rows) {
                        running = (red.combine)(b, running, col);
                    }
                    b.def_var(acc, running);
                }
            });
            for pixel in pixels / 4 * 4..pixels {
                for (block, &acc) in accs.iter().enumerate() {
                    let mut v = splat_f32(b, 0.0);
                    for lane in 0..4 {
                        let offset = lane_plane(block, lane).0 + in_eb * pixel;
                        let (addr, off) = at(b, base, offset);
                        let s = load1(b, addr, off);
                        v = b.ins().insertlane(v, s, lane as u8);
                    }
                    let running = b.use_var(acc);
                    let next = (red.combine)(b, running, v);
                    b.def_var(acc, next);
                }
            }
            for (block, &acc) in accs.iter().enumerate() {
                let mut result = b.use_var(acc);
                if red.divide {
                    let divisor = splat_f32(b, pixels as f32);
                    result = b.ins().fdiv(result, divisor);
                }
                let word = ends.map(|ends| ends.y.quantize_word(b, result, ends.exact_cvtt));
                for lane in 0..4 {
                    if !lane_plane(block, lane).1 {
                        break;
                    }
                    let offset = (out_eb * (4 * block + lane)) as i32;
                    match word {
                        None => {
                            let v = b.ins().extractlane(result, lane as u8);
                            b.ins().store(mem(), v, out_base, offset);
                        }
                        Some(word) => {
                            let byte = b.ins().ushr_imm_u(word, 8 * lane as i64);
                            b.ins().istore8(mem(), byte, out_base, offset);
                        }
                    }
                }
            }
        };
        counted_loop(b, full_blocks / GLOBAL_BLOCKS, |b, i| {
            let first = b.ins().imul_imm_u(i, GLOBAL_BLOCKS as i64);
            pass(b, first, GLOBAL_BLOCKS, None);
        });
        let done = full_blocks / GLOBAL_BLOCKS * GLOBAL_BLOCKS;
        let rest = channels.div_ceil(4) - done;
        if rest > 0 {
            let first = b.ins().iconst(types::I64, done as i64);
            pass(b, first, rest, Some(done));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool over `spatial` dims with the same `[window, stride, pad]` in each (pads on
    /// both sides), no dilation.
    fn square_pool(
        spatial: usize,
        [window, stride, pad]: [usize; 3],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> PoolAttrs {
        PoolAttrs {
            kernel: vec![window; spatial],
            strides: vec![stride; spatial],
            pads: vec![pad; 2 * spatial],
            dilations: vec![1; spatial],
            ceil_mode,
            count_include_pad,
            storage_order: 0,
        }
    }

    /// The global kernel gives the window kernel's bits (max and average) over 1-D to 3-D
    /// inputs: channel counts with and without a partial block of 4 and with and without
    /// full passes, pixel counts with and without a tail after the groups of 4.
    /// A float of mixed magnitude from an LCG state (mantissa from bits 40.., exponent
    /// −12..11 from bits 20..), so the order of the additions shows in the bits.
    fn mixed_magnitude(state: u64) -> f32 {
        let mantissa = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        mantissa * f32::powi(2.0, ((state >> 20) % 24) as i32 - 12)
    }

    #[test]
    fn global_pool_matches_window_kernel_bitwise() {
        let mut lcg = crate::testing::Lcg::new(0x2545_F491_4F6C_DD1D);
        for shape in [
            vec![2, 5, 3, 3],
            vec![1, 96, 7, 7],
            vec![1, 17, 2, 3],
            vec![1, 3, 1, 1],
            vec![1, 33, 5, 5, 2],
            vec![3, 8, 10],
            vec![1, 20, 4, 4],
        ] {
            let len: usize = shape.iter().product();
            let data: Vec<f32> = (0..len).map(|_| mixed_magnitude(lcg.step())).collect();
            let x_ty = TensorType::new(DType::F32, shape.clone());
            for kind in [PoolKind::Average, PoolKind::Max] {
                let attrs = global_pool_attrs("global_pool", &x_ty).expect("has spatial dims");
                let options = JitOptions::default();
                let run = |global| {
                    let kernel =
                        PoolKernel::compile_with(kind, &attrs, &x_ty, &options, global, None)
                            .expect("compiles");
                    assert_eq!(matches!(kernel.body, PoolBody::Global(_)), global);
                    let mut out = vec![0f32; kernel.output_shape().iter().product()];
                    kernel
                        .run_into(&data, &mut out, &mut kernel.new_scratch())
                        .expect("buffers fit");
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(run(true), run(false), "{kind:?} over {shape:?}");
            }
        }
    }

    /// The row path gives the window kernel's bits: the same reduction in the same tap
    /// order per pixel, the same divisors. Rows wider and narrower than a vector, strides 1
    /// and 2, pads (windows of padding only too), `ceil_mode`, both `count_include_pad`,
    /// NaN and ±∞ among mixed magnitudes (max's strict `>`), 1-D and 2-D.
    #[test]
    fn row_pool_matches_window_kernel_bitwise() {
        let mut lcg = crate::testing::Lcg::new(0x9E37_79B9_7F4A_7C15);
        let cases: [(Vec<usize>, usize, usize, usize, bool); 8] = [
            (vec![1, 3, 9, 28], 3, 2, 1, false),
            (vec![2, 5, 7, 15], 3, 2, 1, true),
            (vec![1, 4, 6, 3], 2, 2, 0, true),
            (vec![1, 2, 8, 17], 3, 1, 1, false),
            (vec![1, 3, 5, 9], 2, 1, 0, false),
            (vec![1, 2, 4, 11], 3, 2, 4, false),
            (vec![2, 3, 23], 3, 2, 1, true),
            (vec![1, 1, 12, 40], 5, 1, 2, false),
        ];
        for (shape, window, stride, pad, ceil_mode) in cases {
            let len: usize = shape.iter().product();
            let data: Vec<f32> = (0..len)
                .map(|i| {
                    let state = lcg.step();
                    match i % 97 {
                        13 => f32::NAN,
                        41 => f32::INFINITY,
                        67 => f32::NEG_INFINITY,
                        _ => mixed_magnitude(state),
                    }
                })
                .collect();
            let spatial = shape.len() - 2;
            let x_ty = TensorType::new(DType::F32, shape.clone());
            for (kind, count_include_pad) in [
                (PoolKind::Average, false),
                (PoolKind::Average, true),
                (PoolKind::Max, false),
            ] {
                let attrs =
                    square_pool(spatial, [window, stride, pad], ceil_mode, count_include_pad);
                let what = format!("{kind:?} {shape:?} k{window} s{stride} p{pad} {attrs:?}");
                let options = JitOptions::default();
                let run = |rows| {
                    let kernel =
                        PoolKernel::compile_with(kind, &attrs, &x_ty, &options, rows, None)
                            .expect("compiles");
                    assert_eq!(matches!(kernel.body, PoolBody::Rows(_)), rows, "{what}");
                    let mut out = vec![0f32; kernel.output_shape().iter().product()];
                    kernel
                        .run_into(&data, &mut out, &mut kernel.new_scratch())
                        .expect("buffers fit");
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(run(true), run(false), "{what}");
            }
        }
    }

    /// The int8 average pool equals the island it replaces — the Dequantize kernel, the
    /// f32 pool, the Quantize kernel — bit for bit: row-path pools (stride 1 and 2, pads,
    /// `ceil_mode`, `count_include_pad`, rows narrower than a vector and rows with a
    /// dequantization tail) and global pools (channel counts with and without a partial
    /// block, pixel counts with and without a tail), u8 and i8 at either end, batch 2.
    #[test]
    fn int8_average_pools_equal_the_island() {
        use crate::{DequantizeKernel, QuantizeKernel};
        use kiln_ir::{Quant, TensorData};
        let mut lcg = crate::testing::Lcg::new(0x1234_5678_9ABC_DEF1);
        let options = JitOptions::default();
        // (shape, window, stride, pad, ceil_mode, count_include_pad); window 0: global
        let cases: [(&[usize], [usize; 3], [bool; 2]); 9] = [
            (&[1, 24, 56, 56], [3, 2, 1], [false, false]),
            (&[2, 5, 9, 19], [3, 1, 1], [false, true]),
            (&[1, 7, 6, 3], [3, 1, 1], [false, false]),
            (&[1, 3, 13, 37], [3, 2, 1], [true, false]),
            (&[1, 4, 11, 18], [2, 2, 0], [false, false]),
            (&[1, 544, 7, 7], [0, 0, 0], [false, false]),
            (&[2, 17, 3, 5], [0, 0, 0], [false, false]),
            (&[1, 6, 4, 4], [0, 0, 0], [false, false]),
            (&[1, 9, 2, 2, 3], [0, 0, 0], [false, false]),
        ];
        for (shape, [window, stride, pad], [ceil_mode, count_include_pad]) in cases {
            for (x_dtype, y_dtype) in [
                (DType::U8, DType::U8),
                (DType::I8, DType::U8),
                (DType::U8, DType::I8),
            ] {
                let len: usize = shape.iter().product();
                let bytes: Vec<u8> = (0..len).map(|_| lcg.next_u32() as u8).collect();
                let x_zp = if x_dtype == DType::I8 { -9 } else { 117 };
                let x_ty = TensorType::new(x_dtype, shape.to_vec())
                    .with_quant(Quant::per_tensor(0.0371, x_zp));
                let x = Tensor::new(
                    shape.to_vec(),
                    match x_dtype {
                        DType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
                        _ => TensorData::U8(bytes),
                    },
                )
                .unwrap();
                let f32_ty = TensorType::new(DType::F32, shape.to_vec());
                let spatial = shape.len() - 2;
                let attrs =
                    square_pool(spatial, [window, stride, pad], ceil_mode, count_include_pad);
                let pool = if window == 0 {
                    PoolKernel::compile_global(PoolKind::Average, &f32_ty, &options)
                } else {
                    PoolKernel::compile(PoolKind::Average, &attrs, &f32_ty, &options)
                }
                .unwrap();
                let out_shape = pool.output_shape().to_vec();
                // a scale that makes ties likely: averages of multiples of 0.0371
                let y_zp = if y_dtype == DType::I8 { 3 } else { 128 };
                let y_ty = TensorType::new(y_dtype, out_shape.clone())
                    .with_quant(Quant::per_tensor(0.0371 / 2.0, y_zp));
                let dequantized = DequantizeKernel::compile(&x_ty, &f32_ty, &options)
                    .unwrap()
                    .run(&x)
                    .unwrap();
                let pooled = pool.run(&dequantized).unwrap();
                let pooled_ty = TensorType::new(DType::F32, out_shape);
                let want = QuantizeKernel::compile(&pooled_ty, &y_ty, &options)
                    .unwrap()
                    .run(&pooled)
                    .unwrap();
                let fused = if window == 0 {
                    PoolKernel::compile_int8_global_average(&x_ty, &y_ty, &options)
                } else {
                    PoolKernel::compile_int8_average(&attrs, &x_ty, &y_ty, &options)
                }
                .unwrap();
                let what = format!("{shape:?} k{window} s{stride} p{pad} {x_dtype}→{y_dtype}");
                assert!(!matches!(fused.body, PoolBody::Window(_)), "{what}");
                let got = fused.run(&x).unwrap();
                assert_eq!(got.to_le_bytes(), want.to_le_bytes(), "{what}");
                assert_eq!(got.shape(), want.shape(), "{what}");
            }
        }
    }

    /// Int8 pools the window path would take are errors (the island then stays as it is).
    #[test]
    fn int8_average_pool_on_the_window_path_is_unsupported() {
        use kiln_ir::Quant;
        let x_ty =
            TensorType::new(DType::U8, vec![1, 4, 8, 8]).with_quant(Quant::per_tensor(0.1, 0));
        let y_ty =
            TensorType::new(DType::U8, vec![1, 4, 3, 3]).with_quant(Quant::per_tensor(0.1, 0));
        let attrs = PoolAttrs {
            kernel: vec![2, 2],
            strides: vec![3, 3],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        };
        let err = PoolKernel::compile_int8_average(&attrs, &x_ty, &y_ty, &JitOptions::default())
            .unwrap_err();
        assert!(err.to_string().contains("window path"), "{err}");
    }
}
