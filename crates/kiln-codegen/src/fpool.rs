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
use crate::pool_rows::RowPool;
use crate::pool_window::{global_pool_attrs, PoolGeometry, Reduction, WindowKernel};
use crate::qconv::AlignedBytes;
use crate::spatial::SP;
use crate::tensor_io::{f32_operand, f32_result, shape_name};
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
        Self::compile_with(kind, attrs, x_ty, options, true)
    }

    /// [`Self::compile`] on the window kernel even where the global or the row kernel
    /// applies: the peer those are checked (bit for bit) and benchmarked against.
    pub fn compile_on_window_kernel(
        kind: PoolKind,
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<PoolKernel, CodegenError> {
        Self::compile_with(kind, attrs, x_ty, options, false)
    }

    /// [`Self::compile`]; `global`: use [`GlobalPool`] or [`RowPool`] where they apply.
    fn compile_with(
        kind: PoolKind,
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        options: &JitOptions,
        global: bool,
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
        let name = format!("{op}_f32_{}", shape_name(&geo.out_shape));
        let body = if global && GlobalPool::covers(&geo) {
            PoolBody::Global(GlobalPool::compile(name, geo, &reduction, options)?)
        } else if global && RowPool::applies(&geo) {
            // one depth (`applies`): `divisors` is one output plane's, row-major
            let padding = kind.padding().to_bits();
            PoolBody::Rows(RowPool::compile(
                name, geo, &reduction, padding, &divisors, options,
            )?)
        } else {
            PoolBody::Window(WindowKernel::compile(
                name, geo, layout, &reduction, &divisors, options,
            )?)
        };
        Ok(PoolKernel { body, kind })
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
        match &self.body {
            PoolBody::Window(window) => {
                window.run_into(x, out, &mut scratch.bytes, self.kind.padding())
            }
            PoolBody::Global(global) => global.run_into(x, out),
            PoolBody::Rows(rows) => rows.run_into(
                bytemuck::cast_slice(x),
                bytemuck::cast_slice_mut(out),
                &mut scratch.bytes,
            ),
        }
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let name = self.name();
        let xv = f32_operand(name, x, Some(&self.geo().x_shape))?;
        let mut out = vec![0f32; self.output_shape().iter().product()];
        self.run_into(xv, &mut out, &mut self.new_scratch())?;
        f32_result(name, self.output_shape(), out)
    }
}

/// `(x, out)` for one batch item.
type GlobalFn = unsafe extern "C" fn(*const f32, *mut f32);

/// Channel blocks (of 4) reduced side by side: their running values are independent
/// chains, so more of them hide the latency of each `addps`.
const GLOBAL_BLOCKS: usize = 4;

/// A pool whose one window is the whole input (no padding), reduced from the NCHW input.
pub(crate) struct GlobalPool {
    pub geo: PoolGeometry,
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
        options: &JitOptions,
    ) -> Result<GlobalPool, CodegenError> {
        let mut jit = Jit::host(options)?;
        let func = build_global(&jit, &geo, reduction);
        // SAFETY: `build_global` builds two pointer parameters and no results —
        // `GlobalFn`; the kernel owns `jit`, so the code outlives every call.
        let function: GlobalFn = unsafe { jit.compile_as(&name, func)? };
        Ok(GlobalPool {
            geo,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    fn run_into(&self, x: &[f32], out: &mut [f32]) -> Result<(), CodegenError> {
        let (batch, channels) = (self.geo.batch, self.geo.channels);
        let x_len: usize = self.geo.x_shape.iter().product();
        if x.len() != x_len || out.len() != batch * channels {
            return Err(CodegenError::BadBuffer {
                kernel: self.code.name().to_string(),
                what: format!(
                    "{} → {} floats; expected {x_len} → {}",
                    x.len(),
                    out.len(),
                    batch * channels
                ),
            });
        }
        let x_image = x_len / batch.max(1);
        for n in 0..batch {
            let x_n = &x[n * x_image..(n + 1) * x_image];
            let out_n = &mut out[n * channels..(n + 1) * channels];
            // SAFETY: valid while `self.code` lives. The function reads the `x_image`
            // floats of `x_n` (channel planes of `pixels` floats, unaligned loads inside
            // them) and writes the `channels` floats of `out_n`; lengths checked above.
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
fn build_global(jit: &Jit, geo: &PoolGeometry, red: &Reduction) -> Function {
    jit.define_kernel(2, |b, p| {
        let (x, out) = (p[0], p[1]);
        let channels = geo.channels;
        let pixels: usize = geo.input.iter().product();
        let plane = 4 * pixels;
        let full_blocks = channels / 4;
        // one pass over `blocks` channel blocks from block `first` on; `tail`: the last
        // pass, whose constant first block is given, clamps lanes past the last channel
        let pass = |b: &mut FunctionBuilder, first: Value, blocks: usize, tail: Option<usize>| {
            let base = b.ins().imul_imm_u(first, (4 * plane) as i64);
            let base = b.ins().iadd(x, base);
            let first_channel = b.ins().imul_imm_u(first, 16);
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
                let at_q = b.ins().imul_imm_u(q, 16);
                let at_q = b.ins().iadd(base, at_q);
                for (block, &acc) in accs.iter().enumerate() {
                    let rows = std::array::from_fn(|lane| {
                        let (addr, off) = at(b, at_q, lane_plane(block, lane).0);
                        b.ins().load(types::F32X4, mem().with_readonly(), addr, off)
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
                        let offset = lane_plane(block, lane).0 + 4 * pixel;
                        let (addr, off) = at(b, base, offset);
                        let s = b.ins().load(types::F32, mem().with_readonly(), addr, off);
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
                for lane in 0..4 {
                    if !lane_plane(block, lane).1 {
                        break;
                    }
                    let v = b.ins().extractlane(result, lane as u8);
                    b.ins()
                        .store(mem(), v, out_base, (4 * (4 * block + lane)) as i32);
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
                    let kernel = PoolKernel::compile_with(kind, &attrs, &x_ty, &options, global)
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
                let attrs = PoolAttrs {
                    kernel: vec![window; spatial],
                    strides: vec![stride; spatial],
                    pads: vec![pad; 2 * spatial],
                    dilations: vec![1; spatial],
                    ceil_mode,
                    count_include_pad,
                    storage_order: 0,
                };
                let what = format!("{kind:?} {shape:?} k{window} s{stride} p{pad} {attrs:?}");
                let options = JitOptions::default();
                let run = |rows| {
                    let kernel = PoolKernel::compile_with(kind, &attrs, &x_ty, &options, rows)
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
}
