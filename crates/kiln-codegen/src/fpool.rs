//! f32 pooling: MaxPool (values only), AveragePool and their global forms, 1-D to 3-D, any
//! kernel, strides, dilations, pads and `ceil_mode`; vectorized over channels.
//!
//! As the int8 MaxPool (`maxpool.rs`), each batch item is spread into a channel-last
//! scratch `[D_e][H_e][W_e][C_p]` (`C_p` = channels rounded up to 4; extents covering every
//! window) whose padding is the identity of the reduction: `f32::MIN` for max (an
//! all-padding window yields it, as the interpreter's running max starting at
//! `lowest()`), 0 for average. Per output pixel and block of 4 channels the JIT'd function
//! folds the taps in the interpreter's order (`maxps` with its strict `>`; `addps` in
//! z, y, x order, where the padding's `+ 0` changes nothing), and an average divides by the
//! pixel's divisor from a table (real taps, or taps inside the padded extent with
//! `count_include_pad`; 1 for an all-padding window, whose sum is 0) — the interpreter's
//! arithmetic, so results are bit-identical.

use crate::clif::{at, counted_loop, mem, mem_aligned, scaled, vcast};
use crate::jit::{Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, Function, InstBuilder, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use kiln_ir::{DType, PoolAttrs, Tensor, TensorData, TensorType};

const SP: usize = 3;
const LANES: usize = 4;

/// `(tables, scratch, out)` for one batch item.
type PoolFn = unsafe extern "C" fn(*const u8, *const u8, *mut f32);

/// Which reduction a [`PoolKernel`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Average,
}

fn widen(v: &[usize], fill: usize) -> [usize; SP] {
    let mut out = [fill; SP];
    out[SP - v.len()..].copy_from_slice(v);
    out
}

#[derive(Debug)]
struct Plan {
    kind: PoolKind,
    batch: usize,
    channels: usize,
    channels_padded: usize,
    input: [usize; SP],
    pad_begin: [usize; SP],
    extent: [usize; SP],
    x_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// Per output pixel: byte offset of its first tap in the scratch.
    pixel_offsets: Vec<u32>,
    tap_offsets: Vec<u32>,
    /// Per output pixel (average only).
    divisors: Vec<f32>,
}

impl Plan {
    /// The interpreter's `PoolGeometry`, with its checks.
    fn new(kind: PoolKind, x_ty: &TensorType, attrs: &PoolAttrs) -> Result<Plan, CodegenError> {
        let op = match kind {
            PoolKind::Max => "max_pool",
            PoolKind::Average => "average_pool",
        };
        let invalid = |reason: String| CodegenError::InvalidOp { op, reason };
        let x = &x_ty.shape;
        let nsp = attrs.kernel.len();
        if !(1..=SP).contains(&nsp) || x.len() != nsp + 2 {
            return Err(invalid(format!(
                "input {x:?} with kernel {:?}: 1 to 3 spatial dims",
                attrs.kernel
            )));
        }
        if attrs.strides.len() != nsp || attrs.dilations.len() != nsp || attrs.pads.len() != 2 * nsp
        {
            return Err(invalid(format!(
                "attribute lengths do not fit {nsp} spatial dims: {attrs:?}"
            )));
        }
        if attrs.kernel.contains(&0) || attrs.strides.contains(&0) || attrs.dilations.contains(&0) {
            return Err(invalid(
                "kernel, strides and dilations must be positive".to_string(),
            ));
        }
        if x_ty.dtype != DType::F32 {
            return Err(CodegenError::Unsupported {
                op,
                reason: format!("{} input (f32 only here)", x_ty.dtype),
            });
        }
        let mut out = vec![0; nsp];
        let mut extent = vec![0; nsp];
        for d in 0..nsp {
            let (pb, pe) = (attrs.pads[d], attrs.pads[nsp + d]);
            let span = attrs.dilations[d] * (attrs.kernel[d] - 1) + 1;
            let padded = x[2 + d] + pb + pe;
            if padded < span {
                return Err(invalid(format!(
                    "kernel {:?} does not fit the padded input {x:?}",
                    attrs.kernel
                )));
            }
            let s = attrs.strides[d];
            let mut o = if attrs.ceil_mode {
                (padded - span).div_ceil(s) + 1
            } else {
                (padded - span) / s + 1
            };
            // the last window must start inside the input or its leading padding
            if attrs.ceil_mode && (o - 1) * s >= x[2 + d] + pb {
                o -= 1;
            }
            out[d] = o;
            extent[d] = padded.max((o - 1) * s + span);
        }
        let input = widen(&x[2..], 1);
        let output = widen(&out, 1);
        let kernel = widen(&attrs.kernel, 1);
        let stride = widen(&attrs.strides, 1);
        let dilation = widen(&attrs.dilations, 1);
        let pad_begin = widen(&attrs.pads[..nsp], 0);
        let pad_end = widen(&attrs.pads[nsp..], 0);
        let extent = widen(&extent, 1);
        let channels = x[1];
        let channels_padded = channels.next_multiple_of(LANES).max(LANES);
        let pixel = 4 * channels_padded;
        let row = extent[2] * pixel;
        let plane = extent[1] * row;
        if extent[0] * plane > u32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op,
                reason: "the scratch exceeds the kernel's 32-bit offsets".to_string(),
            });
        }
        // per dim and output index: (real taps, taps inside the padded extent)
        let counts: [Vec<(usize, usize)>; SP] = std::array::from_fn(|d| {
            (0..output[d])
                .map(|o| {
                    let start = (o * stride[d]) as isize - pad_begin[d] as isize;
                    let padded_end = (input[d] + pad_end[d]) as isize;
                    let (mut real, mut inside) = (0, 0);
                    for k in 0..kernel[d] {
                        let i = start + (k * dilation[d]) as isize;
                        inside += usize::from(i < padded_end);
                        real += usize::from(i >= 0 && (i as usize) < input[d]);
                    }
                    (real, inside)
                })
                .collect()
        });
        let mut pixel_offsets = Vec::new();
        let mut divisors = Vec::new();
        for od in 0..output[0] {
            for oh in 0..output[1] {
                for ow in 0..output[2] {
                    let off =
                        od * stride[0] * plane + oh * stride[1] * row + ow * stride[2] * pixel;
                    pixel_offsets.push(off as u32);
                    let (c0, c1, c2) = (counts[0][od], counts[1][oh], counts[2][ow]);
                    let real = c0.0 * c1.0 * c2.0;
                    let divisor = if real == 0 {
                        1
                    } else if attrs.count_include_pad {
                        c0.1 * c1.1 * c2.1
                    } else {
                        real
                    };
                    divisors.push(divisor as f32);
                }
            }
        }
        let mut tap_offsets = Vec::new();
        for kd in 0..kernel[0] {
            for kh in 0..kernel[1] {
                for kw in 0..kernel[2] {
                    let off = kd * dilation[0] * plane
                        + kh * dilation[1] * row
                        + kw * dilation[2] * pixel;
                    tap_offsets.push(off as u32);
                }
            }
        }
        let mut out_shape = x[..2].to_vec();
        out_shape.extend_from_slice(&out);
        Ok(Plan {
            kind,
            batch: x[0],
            channels,
            channels_padded,
            input,
            pad_begin,
            extent,
            x_shape: x.clone(),
            out_shape,
            pixel_offsets,
            tap_offsets,
            divisors,
        })
    }

    fn scratch_floats(&self) -> usize {
        self.extent.iter().product::<usize>() * self.channels_padded
    }

    fn padding(&self) -> f32 {
        match self.kind {
            PoolKind::Max => f32::MIN,
            PoolKind::Average => 0.0,
        }
    }

    /// Spread one batch item into the channel-last scratch, the rest the padding value.
    fn fill_scratch(&self, x: &[f32], scratch: &mut [f32]) {
        scratch.fill(self.padding());
        let [d_n, h_n, w_n] = self.input;
        let cp = self.channels_padded;
        let row_floats = self.extent[2] * cp;
        for d in 0..d_n {
            for h in 0..h_n {
                let row = ((d + self.pad_begin[0]) * self.extent[1] + h + self.pad_begin[1])
                    * row_floats
                    + self.pad_begin[2] * cp;
                let row = &mut scratch[row..row + w_n * cp];
                for c in 0..self.channels {
                    let src = ((c * d_n + d) * h_n + h) * w_n;
                    for (pixel, &v) in row.chunks_exact_mut(cp).zip(&x[src..src + w_n]) {
                        pixel[c] = v;
                    }
                }
            }
        }
    }
}

/// A compiled f32 MaxPool or AveragePool.
pub struct PoolKernel {
    name: String,
    plan: Plan,
    /// Pixel offsets (u32), tap offsets (u32), divisors (f32).
    tables: AlignedBytes,
    function: PoolFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

impl std::fmt::Debug for PoolKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolKernel")
            .field("name", &self.name)
            .field("out", &self.plan.out_shape)
            .finish()
    }
}

/// Working memory of a [`PoolKernel`] (the channel-last padded input).
#[derive(Debug)]
pub struct PoolScratch {
    floats: Vec<f32>,
}

impl PoolKernel {
    /// Compile a pool over an f32 input (MaxPool: the values output only).
    pub fn compile(
        kind: PoolKind,
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<PoolKernel, CodegenError> {
        let plan = Plan::new(kind, x_ty, attrs)?;
        let mut blob = Vec::new();
        for &o in plan.pixel_offsets.iter().chain(&plan.tap_offsets) {
            blob.extend_from_slice(&o.to_le_bytes());
        }
        for &d in &plan.divisors {
            blob.extend_from_slice(&d.to_le_bytes());
        }
        let mut jit = Jit::host(options)?;
        let func = build_function(&jit, &plan);
        let name = format!(
            "{}_f32_{}",
            match kind {
                PoolKind::Max => "max_pool",
                PoolKind::Average => "average_pool",
            },
            plan.out_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        );
        let code = jit.compile(&name, func)?;
        // SAFETY: `code` is the entry of the function just compiled from three pointer
        // parameters, no results, the target's C calling convention — `PoolFn`; it stays
        // valid while `jit` lives, which the kernel owns.
        let function = unsafe { std::mem::transmute::<*const u8, PoolFn>(code) };
        Ok(PoolKernel {
            name,
            plan,
            tables: AlignedBytes::from_bytes(&blob),
            function,
            code: KernelCode::new(jit),
        })
    }

    /// GlobalAveragePool / GlobalMaxPool: a pool whose window is the whole spatial extent.
    pub fn compile_global(
        kind: PoolKind,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<PoolKernel, CodegenError> {
        if x_ty.shape.len() < 3 {
            return Err(CodegenError::InvalidOp {
                op: "global_pool",
                reason: format!("input {x_ty} has no spatial dims"),
            });
        }
        let spatial = x_ty.shape[2..].to_vec();
        let attrs = PoolAttrs {
            strides: vec![1; spatial.len()],
            pads: vec![0; 2 * spatial.len()],
            dilations: vec![1; spatial.len()],
            kernel: spatial,
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        };
        Self::compile(kind, &attrs, x_ty, options)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn disassembly(&self) -> Option<&str> {
        self.code.disassembly(&self.name)
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.plan.out_shape
    }

    pub fn new_scratch(&self) -> PoolScratch {
        PoolScratch {
            floats: vec![0.0; self.plan.scratch_floats()],
        }
    }

    pub fn run_into(
        &self,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut PoolScratch,
    ) -> Result<(), CodegenError> {
        let plan = &self.plan;
        let x_len: usize = plan.x_shape.iter().product();
        let out_len: usize = plan.out_shape.iter().product();
        if x.len() != x_len || out.len() != out_len || scratch.floats.len() != plan.scratch_floats()
        {
            return Err(CodegenError::BadBuffer {
                kernel: self.name.clone(),
                what: format!(
                    "{} → {} elements, scratch {}; expected {x_len} → {out_len}, scratch {}",
                    x.len(),
                    out.len(),
                    scratch.floats.len(),
                    plan.scratch_floats()
                ),
            });
        }
        let batch = plan.batch;
        let (x_image, out_image) = (x_len / batch.max(1), out_len / batch.max(1));
        for n in 0..batch {
            plan.fill_scratch(&x[n * x_image..(n + 1) * x_image], &mut scratch.floats);
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            // SAFETY: valid while `self.code` lives. The function reads the tables (as
            // packed here), 16-byte loads of the scratch at a pixel offset + tap offset + a
            // multiple of 16 below `4 · channels_padded` — inside the scratch by
            // construction of the extents — and writes the `out_image` floats of `out_n`.
            // Lengths are checked above.
            unsafe {
                (self.function)(
                    self.tables.as_slice().as_ptr(),
                    scratch.floats.as_ptr().cast::<u8>(),
                    out_n.as_mut_ptr(),
                )
            };
        }
        Ok(())
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let bad = |what: String| CodegenError::BadBuffer {
            kernel: self.name.clone(),
            what,
        };
        let TensorData::F32(xv) = x.data() else {
            return Err(bad(format!("input is {}, expected f32", x.dtype())));
        };
        let mut out = vec![0f32; self.plan.out_shape.iter().product()];
        self.run_into(xv, &mut out, &mut self.new_scratch())?;
        Tensor::new(self.plan.out_shape.clone(), TensorData::F32(out))
            .map_err(|e| bad(e.to_string()))
    }
}

/// `fn(tables, scratch, out)`: per output pixel, per block of 4 channels, the reduction
/// over the taps; average divides by the pixel's divisor; valid channels stored into their
/// NCHW planes.
fn build_function(jit: &Jit, plan: &Plan) -> Function {
    let mut func = Function::with_name_signature(UserFuncName::default(), jit.pointer_signature(3));
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (tables, scratch, out) = (p[0], p[1], p[2]);
    let pixels = plan.pixel_offsets.len();
    let tap_table = 4 * pixels;
    let divisor_table = tap_table + 4 * plan.tap_offsets.len();
    let acc = b.declare_var(types::F32X4);
    let blocks = plan.channels_padded / LANES;
    // the scratch is a Vec<f32>: 4-byte aligned only
    let ro = mem().with_readonly();
    let table_ro = mem_aligned().with_readonly();
    counted_loop(&mut b, pixels, |b, px| {
        let entry = scaled(b, tables, px, 4);
        let off = b.ins().uload32(table_ro, entry, 0);
        let base = b.ins().iadd(scratch, off);
        let pixel_out = scaled(b, out, px, 4);
        let divisor = match plan.kind {
            PoolKind::Average => {
                let d = b
                    .ins()
                    .load(types::F32, table_ro, entry, divisor_table as i32);
                Some(b.ins().splat(types::F32X4, d))
            }
            PoolKind::Max => None,
        };
        for block in 0..blocks {
            let init = crate::clif::splat_f32(b, plan.padding());
            b.def_var(acc, init);
            counted_loop(b, plan.tap_offsets.len(), |b, t| {
                let entry = scaled(b, tables, t, 4);
                let tap = b.ins().uload32(table_ro, entry, tap_table as i32);
                let addr = b.ins().iadd(base, tap);
                let v = b
                    .ins()
                    .load(types::F32X4, ro, addr, (block * LANES * 4) as i32);
                let a = b.use_var(acc);
                let next = match plan.kind {
                    // strict `>`: NaN never replaces the running max
                    PoolKind::Max => {
                        let gt = b.ins().fcmp(FloatCC::GreaterThan, v, a);
                        let mask = vcast(b, types::F32X4, gt);
                        b.ins().bitselect(mask, v, a)
                    }
                    PoolKind::Average => b.ins().fadd(a, v),
                };
                b.def_var(acc, next);
            });
            let mut result = b.use_var(acc);
            if let Some(d) = divisor {
                result = b.ins().fdiv(result, d);
            }
            for lane in 0..LANES {
                let c = block * LANES + lane;
                if c >= plan.channels {
                    break;
                }
                let v = b.ins().extractlane(result, lane as u8);
                let (addr, off) = at(b, pixel_out, 4 * c * pixels);
                b.ins().store(mem(), v, addr, off);
            }
        }
    });
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(jit.target_config());
    func
}
