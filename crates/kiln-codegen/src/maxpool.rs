//! int8 MaxPool (`Op::MaxPool` on u8/i8 tensors, without the Indices output), any kernel,
//! strides, dilations, pads and `ceil_mode`, 1-D to 3-D; bit-exact with `kiln-interp`.
//!
//! The max of int8 values is exact whatever the order, and the type's lowest value is its
//! identity, so padding is simply the lowest value: a window's padding never wins, and a
//! window of padding only yields the lowest value, as the interpreter (and onnxruntime)
//! starts its running max there. The input is spread per batch item into a channel-last
//! scratch `[D_e][H_e][W_e][C_p]` (`C_p` = channels rounded up to 16, the extents covering
//! every window, `ceil_mode` ones included) filled with the lowest value; the kernel then
//! takes, per output pixel and block of 16 channels, the lane-wise max (`pmaxub`/`pmaxsb`)
//! of one 16-byte load per tap (a loop over a tap-offset table), and stores the valid
//! channels into the NCHW output.

use crate::clif::{at, counted_loop, mem, mem_aligned, scaled};
use crate::jit::{Jit, JitOptions, KernelCode};
use crate::qconv::{AlignedBytes, Int8};
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, UserFuncName, Value};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use kiln_ir::{DType, PoolAttrs, Tensor, TensorData, TensorType};

const OP: &str = "max_pool";
const SP: usize = 3;
/// Channels per vector.
const LANES: usize = 16;

/// `(packed tables, scratch, out)` for one batch item.
type PoolFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8);

fn widen(v: &[usize], fill: usize) -> [usize; SP] {
    let mut out = [fill; SP];
    out[SP - v.len()..].copy_from_slice(v);
    out
}

#[derive(Clone, Debug)]
struct Plan {
    batch: usize,
    channels: usize,
    input: [usize; SP],
    output: [usize; SP],
    pad_begin: [usize; SP],
    /// Scratch extents: the padded input, grown to the last `ceil_mode` window.
    extent: [usize; SP],
    channels_padded: usize,
    dtype: DType,
    x_shape: Vec<usize>,
    out_shape: Vec<usize>,
    /// Byte offset in the scratch of each output pixel's first tap.
    pixel_offsets: Vec<u32>,
    /// Byte offset of each tap from the first.
    tap_offsets: Vec<u32>,
    scratch_bytes: usize,
}

impl Plan {
    /// The interpreter's `PoolGeometry`, with the same checks.
    fn new(x_ty: &TensorType, attrs: &PoolAttrs) -> Result<Plan, CodegenError> {
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
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
        if attrs.storage_order > 1 {
            return Err(invalid(format!(
                "storage_order {} (0 or 1)",
                attrs.storage_order
            )));
        }
        if !matches!(x_ty.dtype, DType::U8 | DType::I8) {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: format!("{} input (u8 or i8 only)", x_ty.dtype),
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
        let extent = widen(&extent, 1);
        let channels = x[1];
        let channels_padded = channels.next_multiple_of(LANES).max(LANES);
        let pixel = channels_padded;
        let row = extent[2] * pixel;
        let plane = extent[1] * row;
        let scratch_bytes = extent[0] * plane;
        if scratch_bytes > u32::MAX as usize {
            return Err(CodegenError::Unsupported {
                op: OP,
                reason: "the scratch exceeds the kernel's 32-bit offsets".to_string(),
            });
        }
        let mut pixel_offsets = Vec::with_capacity(output.iter().product());
        for od in 0..output[0] {
            for oh in 0..output[1] {
                for ow in 0..output[2] {
                    let off =
                        od * stride[0] * plane + oh * stride[1] * row + ow * stride[2] * pixel;
                    pixel_offsets.push(off as u32);
                }
            }
        }
        let mut tap_offsets = Vec::with_capacity(kernel.iter().product());
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
            batch: x[0],
            channels,
            input,
            output,
            pad_begin: widen(&attrs.pads[..nsp], 0),
            extent,
            channels_padded,
            dtype: x_ty.dtype,
            x_shape: x.clone(),
            out_shape,
            pixel_offsets,
            tap_offsets,
            scratch_bytes,
        })
    }

    fn lowest(&self) -> u8 {
        match self.dtype {
            DType::I8 => i8::MIN as u8,
            _ => u8::MIN,
        }
    }

    fn out_pixels(&self) -> usize {
        self.output.iter().product()
    }

    /// Spread one batch item (`[C][D][H][W]`) into the channel-last scratch, every other
    /// byte the lowest value. Row by row: a scratch row (`W_e · C_p` bytes) stays in L1
    /// while every channel's input row is spread into it.
    fn fill_scratch<X: Int8>(&self, x: &[X], scratch: &mut [u8]) {
        scratch.fill(self.lowest());
        let [d_n, h_n, w_n] = self.input;
        let cp = self.channels_padded;
        let row_bytes = self.extent[2] * cp;
        for d in 0..d_n {
            for h in 0..h_n {
                let row = ((d + self.pad_begin[0]) * self.extent[1] + h + self.pad_begin[1])
                    * row_bytes
                    + self.pad_begin[2] * cp;
                let row = &mut scratch[row..row + w_n * cp];
                for c in 0..self.channels {
                    let src = ((c * d_n + d) * h_n + h) * w_n;
                    for (pixel, v) in row.chunks_exact_mut(cp).zip(&x[src..src + w_n]) {
                        pixel[c] = v.bits();
                    }
                }
            }
        }
    }
}

/// A compiled int8 MaxPool.
pub struct MaxPoolKernel {
    name: String,
    plan: Plan,
    /// Pixel table, then tap table (u32 each).
    tables: AlignedBytes,
    function: PoolFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

impl std::fmt::Debug for MaxPoolKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaxPoolKernel")
            .field("name", &self.name)
            .field("x", &self.plan.x_shape)
            .field("out", &self.plan.out_shape)
            .finish()
    }
}

/// Working memory of a [`MaxPoolKernel`] (the channel-last padded input).
#[derive(Debug)]
pub struct MaxPoolScratch {
    bytes: AlignedBytes,
}

impl MaxPoolKernel {
    /// Compile a MaxPool node with a u8/i8 input `x_ty` (its only output: the values; the
    /// output dtype and quantization are the input's).
    pub fn compile(
        attrs: &PoolAttrs,
        x_ty: &TensorType,
        options: &JitOptions,
    ) -> Result<MaxPoolKernel, CodegenError> {
        let plan = Plan::new(x_ty, attrs)?;
        let mut jit = Jit::host(options)?;
        let mut blob = Vec::new();
        for &o in plan.pixel_offsets.iter().chain(&plan.tap_offsets) {
            blob.extend_from_slice(&o.to_le_bytes());
        }
        let tables = AlignedBytes::from_bytes(&blob);
        let func = build_function(&jit, &plan);
        let name = format!(
            "max_pool_{}",
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
        Ok(MaxPoolKernel {
            name,
            plan,
            tables,
            function,
            code: KernelCode::new(jit),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn disassembly(&self) -> Option<&str> {
        self.code.disassembly(&self.name)
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.plan.x_shape
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.plan.out_shape
    }

    pub fn new_scratch(&self) -> MaxPoolScratch {
        MaxPoolScratch {
            bytes: AlignedBytes::zeroed(self.plan.scratch_bytes.max(16)),
        }
    }

    /// Pool `x` (the input shape and dtype) into `out` (the output shape, same dtype).
    pub fn run_into<X: Int8>(
        &self,
        x: &[X],
        out: &mut [X],
        scratch: &mut MaxPoolScratch,
    ) -> Result<(), CodegenError> {
        let plan = &self.plan;
        let (x_len, out_len) = (
            plan.x_shape.iter().product::<usize>(),
            plan.out_shape.iter().product::<usize>(),
        );
        if X::DTYPE != plan.dtype
            || x.len() != x_len
            || out.len() != out_len
            || scratch.bytes.as_slice().len() != plan.scratch_bytes.max(16)
        {
            return Err(CodegenError::BadBuffer {
                kernel: self.name.clone(),
                what: format!(
                    "{} {} → {}, scratch {} bytes; expected {x_len} {} → {out_len}, scratch {}",
                    x.len(),
                    X::DTYPE,
                    out.len(),
                    scratch.bytes.as_slice().len(),
                    plan.dtype,
                    plan.scratch_bytes.max(16)
                ),
            });
        }
        let batch = plan.batch;
        let (x_image, out_image) = (x_len / batch.max(1), out_len / batch.max(1));
        for n in 0..batch {
            let x_n = &x[n * x_image..(n + 1) * x_image];
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            let scratch = scratch.bytes.as_mut_slice();
            plan.fill_scratch(x_n, scratch);
            // SAFETY: valid while `self.code` lives. The function reads the tables
            // (pixel and tap offsets, as packed here), 16-byte loads of the scratch at a
            // pixel offset + tap offset + a multiple of 16 below `channels_padded` — all
            // inside `scratch_bytes` by construction of the extents — and writes the
            // `out_image` bytes of `out_n`. Lengths are checked above; i8 and u8 share
            // size and alignment.
            unsafe {
                (self.function)(
                    self.tables.as_slice().as_ptr(),
                    scratch.as_ptr(),
                    out_n.as_mut_ptr().cast::<u8>(),
                )
            };
        }
        Ok(())
    }

    /// Pool a tensor (allocates output and scratch).
    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let bad = |what: String| CodegenError::BadBuffer {
            kernel: self.name.clone(),
            what,
        };
        if x.shape() != self.plan.x_shape.as_slice() {
            return Err(bad(format!(
                "input shape {:?}, expected {:?}",
                x.shape(),
                self.plan.x_shape
            )));
        }
        let mut scratch = self.new_scratch();
        let n: usize = self.plan.out_shape.iter().product();
        let data = match x.data() {
            TensorData::U8(v) => {
                let mut out = vec![0u8; n];
                self.run_into(v, &mut out, &mut scratch)?;
                TensorData::U8(out)
            }
            TensorData::I8(v) => {
                let mut out = vec![0i8; n];
                self.run_into(v, &mut out, &mut scratch)?;
                TensorData::I8(out)
            }
            _ => return Err(bad(format!("input is {}, expected u8 or i8", x.dtype()))),
        };
        Tensor::new(self.plan.out_shape.clone(), data).map_err(|e| bad(e.to_string()))
    }
}

/// `fn(tables, scratch, out)`: per output pixel, per block of 16 channels, the max over the
/// taps; the valid channels stored one byte each into their NCHW planes.
fn build_function(jit: &Jit, plan: &Plan) -> Function {
    let mut func = Function::with_name_signature(UserFuncName::default(), jit.pointer_signature(3));
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let p = b.block_params(entry).to_vec();
    let (tables, scratch, out) = (p[0], p[1], p[2]);
    let pixels = plan.out_pixels();
    let tap_table = 4 * pixels;
    let signed = plan.dtype == DType::I8;
    let acc: Variable = b.declare_var(types::I8X16);
    let blocks = plan.channels_padded / LANES;
    counted_loop(&mut b, pixels, |b, px| {
        let entry = scaled(b, tables, px, 4);
        let off = b.ins().uload32(mem_aligned().with_readonly(), entry, 0);
        let base = b.ins().iadd(scratch, off);
        let pixel_out = b.ins().iadd(out, px);
        for block in 0..blocks {
            let lowest = b.ins().iconst(types::I8, plan.lowest() as i64);
            let init = b.ins().splat(types::I8X16, lowest);
            b.def_var(acc, init);
            counted_loop(b, plan.tap_offsets.len(), |b, t| {
                let entry = scaled(b, tables, t, 4);
                let tap = b
                    .ins()
                    .uload32(mem_aligned().with_readonly(), entry, tap_table as i32);
                let addr = b.ins().iadd(base, tap);
                let v = b.ins().load(
                    types::I8X16,
                    mem_aligned().with_readonly(),
                    addr,
                    (block * LANES) as i32,
                );
                let a = b.use_var(acc);
                let m: Value = if signed {
                    b.ins().smax(a, v)
                } else {
                    b.ins().umax(a, v)
                };
                b.def_var(acc, m);
            });
            let result = b.use_var(acc);
            for lane in 0..LANES {
                let c = block * LANES + lane;
                if c >= plan.channels {
                    break;
                }
                let byte = b.ins().extractlane(result, lane as u8);
                let (addr, off) = at(b, pixel_out, c * pixels);
                b.ins().store(mem(), byte, addr, off);
            }
        }
    });
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(jit.target_config());
    func
}
