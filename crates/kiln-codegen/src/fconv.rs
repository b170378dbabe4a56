//! f32 convolution (`Op::Conv`: x, w, optional b and residual, fused activation) as an implicit
//! GEMM with an `MR × NR` register block of F32X4 accumulators: 4 output pixels × 2 vectors
//! of 4 output channels, each k-step (one input channel, one tap) loading the 2 weight
//! vectors once and broadcasting one input value per pixel into `fma`s (or `mulps`+`addps`
//! on hosts without FMA, where Cranelift cannot lower `fma` on vectors).
//!
//! Per batch item the input is copied into a zero-padded `[C_in][D_p][H_p][W_p]` scratch
//! (so padding needs no branches); a pixel table gives each output pixel's first-tap offset
//! in a channel plane and its output index, a k table each (channel, tap) offset. Weights
//! are packed at compile time as `[group][channel tile][k][NR]` F32X4 vectors (zeros past
//! the group's last channel), biases as `[group][tile][NR]` vectors. Groups (depthwise
//! included) are a loop over groups; any strides, dilations, pads, 1-D to 3-D.
//!
//! The reduction order (taps of one input channel, channels in order, one `fma` each)
//! differs from the interpreter's GEMM, so results agree to rounding, not bitwise; the
//! tests bound the difference at 1e-5 of the largest output magnitude.

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/fconv.rs"]
mod aot_parts;

use crate::clif::{at, counted_loop, mem, mem_aligned, scaled};
use crate::fact::activate;
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::plan::{Geometry, SP};
use crate::qconv::AlignedBytes;
use crate::tensor_io::{f32_constant, f32_operand, f32_result, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::{Activation, ConvAttrs, DType, Tensor, TensorType};

const OP: &str = "conv";
/// Output pixels per register block.
const MR: usize = 4;
/// Lanes of an F32X4.
const LANES: usize = 4;

/// A [`build_micro`] function: `(packed, tables, input, residual, out)` for one batch item
/// (the residual is read only when the micro-kernel has one).
pub(crate) type MicroFn =
    unsafe extern "C" fn(*const u8, *const u8, *const u8, *const f32, *mut f32);

/// A Conv node's operands for [`FConvKernel::compile`]: the weights and bias are constants
/// (packed into the kernel); `x` and the residual are read at run time.
#[derive(Clone, Copy, Debug)]
pub struct FConvNode<'a> {
    pub attrs: &'a ConvAttrs,
    pub x_ty: &'a TensorType,
    pub w: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    /// Whether the node has a fourth input, the residual (the output's type).
    pub residual: bool,
    pub out_ty: &'a TensorType,
}

#[derive(Debug)]
struct Plan {
    geo: Geometry,
    cin_g: usize,
    cout_g: usize,
    /// Weight vectors per channel tile (`NR`).
    vectors: usize,
    taps: usize,
    padded: [usize; SP],
    x_shape: Vec<usize>,
    out_shape: Vec<usize>,
    residual: bool,
}

impl Plan {
    fn out_pixels(&self) -> usize {
        self.geo.output.iter().product()
    }
    fn plane(&self) -> usize {
        self.padded.iter().product()
    }
    fn k(&self) -> usize {
        self.cin_g * self.taps
    }
}

/// A compiled f32 Conv.
pub struct FConvKernel {
    plan: Plan,
    /// Weights, then biases.
    packed: AlignedBytes,
    /// Pixel table (`(input offset, output offset)` u32 byte pairs), then the k table (u32).
    tables: AlignedBytes,
    function: MicroFn,
    /// Declared last: `function` points into it.
    code: KernelCode,
}

kernel_identity!(FConvKernel, code);

/// Working memory of an [`FConvKernel`]: one batch item's zero-padded input.
#[derive(Debug)]
pub struct FConvScratch {
    bytes: AlignedBytes,
}

impl FConvKernel {
    pub fn compile(node: &FConvNode, options: &JitOptions) -> Result<FConvKernel, CodegenError> {
        let geo = Geometry::new(OP, &node.x_ty.shape, node.w.shape(), node.attrs)?;
        let out_shape = geo.output_shape();
        let cin_g = geo.c_in / geo.groups;
        let cout_g = geo.c_out / geo.groups;
        let vectors = vectors_for(cout_g);
        let taps = geo.kernel.iter().product();
        let padded = std::array::from_fn(|d| geo.input[d] + geo.pad_begin[d] + geo.pad_end[d]);
        let plan = Plan {
            cin_g,
            cout_g,
            vectors,
            taps,
            padded,
            x_shape: node.x_ty.shape.clone(),
            out_shape,
            residual: node.residual,
            geo,
        };
        let (w, bias) = f32_conv_operands(
            OP,
            [node.x_ty, node.out_ty],
            &plan.out_shape,
            node.w,
            node.bias,
            4 * plan.geo.c_in * plan.plane(),
        )?;
        let k = plan.k();
        let packed = AlignedBytes::from_bytes(&micro_pack(
            &plan.micro(),
            // w[g·cout_g + c][ci][tap], and kk = ci·taps + tap
            |g, c, kk| w[(g * plan.cout_g + c) * k + kk],
            |c| bias.map_or(0.0, |b| b[c]),
        ));
        let tables = AlignedBytes::from_bytes(&tables(&plan));
        let mut jit = Jit::host(options)?;
        let fma = jit.features().has_fma || !jit.features().is_x86_64();
        let func = build_micro(&jit, &plan.micro(), node.attrs.act.as_ref(), fma);
        let name = format!("conv_f32_{}", shape_name(&plan.out_shape));
        // SAFETY: `build_micro` builds five pointer parameters and no results — `MicroFn`;
        // the kernel owns `jit`, so the code outlives every call.
        let function: MicroFn = unsafe { jit.compile_as(&name, func)? };
        Ok(FConvKernel {
            plan,
            packed,
            tables,
            function,
            code: KernelCode::new(jit, name),
        })
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.plan.out_shape
    }

    /// Multiply-accumulates of one call (all batch items).
    pub fn macs(&self) -> u64 {
        (self.plan.geo.batch * self.plan.geo.c_out * self.plan.out_pixels() * self.plan.k()) as u64
    }

    pub fn new_scratch(&self) -> FConvScratch {
        FConvScratch {
            bytes: AlignedBytes::zeroed(self.scratch_bytes()),
        }
    }

    fn scratch_bytes(&self) -> usize {
        (4 * self.plan.geo.c_in * self.plan.plane()).max(16)
    }

    /// Convolve `x` (the input shape) into `out` (the output shape); `residual` (the output
    /// shape) is given exactly when the node has one.
    pub fn run_into(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        out: &mut [f32],
        scratch: &mut FConvScratch,
    ) -> Result<(), CodegenError> {
        let plan = &self.plan;
        let x_len: usize = plan.x_shape.iter().product();
        let out_len: usize = plan.out_shape.iter().product();
        let residual_ok = match residual {
            Some(r) => plan.residual && r.len() == out_len,
            None => !plan.residual,
        };
        if x.len() != x_len
            || out.len() != out_len
            || !residual_ok
            || scratch.bytes.as_slice().len() != self.scratch_bytes()
        {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "x {} → out {} (residual {:?}), scratch {} bytes; expected {x_len} → \
                     {out_len} (residual {}), scratch {}",
                    x.len(),
                    out.len(),
                    residual.map(<[f32]>::len),
                    scratch.bytes.as_slice().len(),
                    if plan.residual { "yes" } else { "no" },
                    self.scratch_bytes()
                ),
            });
        }
        let batch = plan.geo.batch;
        let (x_image, out_image) = (x_len / batch.max(1), out_len / batch.max(1));
        for n in 0..batch {
            fill_zero_padded(
                &x[n * x_image..(n + 1) * x_image],
                &mut scratch.bytes,
                plan.geo.input,
                plan.padded,
                plan.geo.pad_begin,
            );
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            // the function reads no residual when the node has none: any valid pointer
            let residual_n = residual.map_or(out_n.as_ptr(), |r| r[n * out_image..].as_ptr());
            // SAFETY: valid while `self.code` lives. The function reads the packed
            // weights/biases and tables built for this plan, the scratch at plane offsets
            // inside `scratch_bytes` (pixel and k tables are built from the padded extents),
            // `out_image` residual floats (only with a residual, whose length is checked)
            // and writes the `out_image` floats of `out_n`; all lengths are checked above.
            unsafe {
                (self.function)(
                    self.packed.as_slice().as_ptr(),
                    self.tables.as_slice().as_ptr(),
                    scratch.bytes.as_slice().as_ptr(),
                    residual_n,
                    out_n.as_mut_ptr(),
                )
            };
        }
        Ok(())
    }

    /// Run on tensors (allocates output and scratch).
    pub fn run(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor, CodegenError> {
        let plan = &self.plan;
        let xv = f32_operand(self.name(), x, Some(&plan.x_shape))?;
        let r = match residual {
            Some(r) => Some(f32_operand(self.name(), r, Some(&plan.out_shape))?),
            None => None,
        };
        let mut out = vec![0f32; plan.out_shape.iter().product()];
        self.run_into(xv, r, &mut out, &mut self.new_scratch())?;
        f32_result(self.name(), &plan.out_shape, out)
    }
}

/// The operands of an f32 conv-like node `op` (Conv, ConvTranspose) checked as the
/// interpreter checks them — f32 input and output (`[x_ty, out_ty]`), the output of
/// `out_shape`, f32 constant weights, a bias of one value per output channel — and within
/// the kernels' 32-bit offsets (`scratch_bytes` of padded input, one output image); the
/// weights' and the bias' values.
pub(crate) fn f32_conv_operands<'t>(
    op: &'static str,
    [x_ty, out_ty]: [&TensorType; 2],
    out_shape: &[usize],
    w: &'t Tensor,
    bias: Option<&'t Tensor>,
    scratch_bytes: usize,
) -> Result<(&'t [f32], Option<&'t [f32]>), CodegenError> {
    if x_ty.dtype != DType::F32 || out_ty.dtype != DType::F32 {
        return Err(CodegenError::Unsupported {
            op,
            reason: format!("{} input, {} output (f32 only)", x_ty.dtype, out_ty.dtype),
        });
    }
    if out_ty.shape != out_shape {
        return Err(CodegenError::InvalidOp {
            op,
            reason: format!("output type {:?}, the op gives {out_shape:?}", out_ty.shape),
        });
    }
    let c_out = out_shape[1];
    let bias = match bias {
        Some(b) if b.shape() != [c_out] => {
            return Err(CodegenError::InvalidOp {
                op,
                reason: format!("bias shape {:?}, expected [{c_out}]", b.shape()),
            })
        }
        Some(b) => Some(f32_constant(op, b, "the bias")?),
        None => None,
    };
    let out_image_bytes = 4 * out_shape[1..].iter().product::<usize>();
    if scratch_bytes > u32::MAX as usize || out_image_bytes > u32::MAX as usize {
        return Err(CodegenError::Unsupported {
            op,
            reason: "tensors exceed the kernel's 32-bit offsets".to_string(),
        });
    }
    Ok((f32_constant(op, w, "the weight")?, bias))
}

/// Copy one batch item (`[C][D][H][W]` of extents `input`) into a zero-padded scratch
/// `[C][padded]` at offset `pad_begin` in each spatial dim; the border is never written, so
/// it stays zero from the scratch's allocation on.
pub(crate) fn fill_zero_padded(
    x: &[f32],
    scratch: &mut AlignedBytes,
    input: [usize; SP],
    padded: [usize; SP],
    pad_begin: [usize; SP],
) {
    // 16-byte aligned and a whole number of floats long
    let floats: &mut [f32] = bytemuck::cast_slice_mut(scratch.as_mut_slice());
    let [pd, ph, pw] = padded;
    let [d_n, h_n, w_n] = input;
    let [bd, bh, bw] = pad_begin;
    let channels = x.len() / (d_n * h_n * w_n).max(1);
    for c in 0..channels {
        for d in 0..d_n {
            for h in 0..h_n {
                let dst = ((c * pd + d + bd) * ph + h + bh) * pw + bw;
                let src = ((c * d_n + d) * h_n + h) * w_n;
                floats[dst..dst + w_n].copy_from_slice(&x[src..src + w_n]);
            }
        }
    }
}

impl Plan {
    fn micro(&self) -> Micro {
        Micro {
            groups: self.geo.groups,
            group_in_bytes: 4 * self.cin_g * self.plane(),
            cout_g: self.cout_g,
            vectors: self.vectors,
            k: self.k(),
            pixels: self.out_pixels(),
            channel_out_bytes: 4 * self.out_pixels(),
            alpha: 1.0,
            residual: self.residual,
        }
    }
}

/// Pixel entries: the byte offset of each output pixel's first tap in a scratch plane and
/// its byte offset in an output plane; k entries: per (input channel of the group, tap)
/// its byte offset.
fn tables(plan: &Plan) -> Vec<u8> {
    let [_, ph, pw] = plan.padded;
    let (s, dl) = (plan.geo.stride, plan.geo.dilation);
    let [od_n, oh_n, ow_n] = plan.geo.output;
    let mut pixels = Vec::with_capacity(plan.out_pixels());
    for od in 0..od_n {
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                let off = (od * s[0] * ph + oh * s[1]) * pw + ow * s[2];
                pixels.push((4 * off as u32, 4 * pixels.len() as u32));
            }
        }
    }
    let [kd_n, kh_n, kw_n] = plan.geo.kernel;
    let mut ks = Vec::with_capacity(plan.k());
    for ci in 0..plan.cin_g {
        for kd in 0..kd_n {
            for kh in 0..kh_n {
                for kw in 0..kw_n {
                    let off = ci * plan.plane() + (kd * dl[0] * ph + kh * dl[1]) * pw + kw * dl[2];
                    ks.push(4 * off as u32);
                }
            }
        }
    }
    micro_tables(pixels, &ks)
}

/// The shape of an implicit GEMM for [`build_micro`]: `out[c][p] = Σ_k in[p][k] · w[k][c]`
/// per group, where the tables give each pixel `p`'s input and output byte offsets and
/// each `k`'s input byte offset (conv: input channel and tap; Gemm: the column of A).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Micro {
    pub groups: usize,
    /// Bytes between consecutive groups' inputs.
    pub group_in_bytes: usize,
    pub cout_g: usize,
    /// Weight vectors per channel tile (`NR`, 1 or 2).
    pub vectors: usize,
    pub k: usize,
    pub pixels: usize,
    /// Bytes between consecutive output channels in the output (and the residual).
    pub channel_out_bytes: usize,
    /// Multiply the accumulator by this before the bias (Gemm's alpha; 1 elsewhere).
    pub alpha: f32,
    pub residual: bool,
}

impl Micro {
    pub(crate) fn tile_channels(&self) -> usize {
        self.vectors * LANES
    }
    pub(crate) fn tiles(&self) -> usize {
        self.cout_g.div_ceil(self.tile_channels())
    }
    /// Byte offset of the k table in the tables blob.
    fn k_table(&self) -> usize {
        8 * self.pixels.div_ceil(MR) * MR
    }
}

/// `NR` for a group of `cout_g` output channels: two vectors unless one covers it.
pub(crate) fn vectors_for(cout_g: usize) -> usize {
    cout_g.div_ceil(LANES).clamp(1, 2)
}

/// The tables blob of [`build_micro`]: per pixel (padded to whole `MR` blocks by repeating
/// the last one) its `(input, output)` byte offsets, then per k its input byte offset.
pub(crate) fn micro_tables(mut pixels: Vec<(u32, u32)>, k_offsets: &[u32]) -> Vec<u8> {
    let last = *pixels.last().expect("at least one output pixel");
    pixels.resize(pixels.len().next_multiple_of(MR), last);
    pixels
        .iter()
        .flat_map(|&(i, o)| [i, o])
        .chain(k_offsets.iter().copied())
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// The packed blob of [`build_micro`]: weights `[group][tile][k][NR]` of F32X4 from
/// `weight(group, channel in group, k)`, zeros past the group's last channel, then biases
/// `[group][tile][NR]` from `bias(output channel)`.
pub(crate) fn micro_pack(
    micro: &Micro,
    weight: impl Fn(usize, usize, usize) -> f32,
    bias: impl Fn(usize) -> f32,
) -> Vec<u8> {
    let (tc, tiles) = (micro.tile_channels(), micro.tiles());
    let mut floats = Vec::with_capacity(micro.groups * tiles * (micro.k + 1) * tc);
    for g in 0..micro.groups {
        for t in 0..tiles {
            for kk in 0..micro.k {
                for lane in 0..tc {
                    let c = t * tc + lane;
                    floats.push(if c < micro.cout_g {
                        weight(g, c, kk)
                    } else {
                        0.0
                    });
                }
            }
        }
    }
    for g in 0..micro.groups {
        for t in 0..tiles {
            for lane in 0..tc {
                let c = t * tc + lane;
                floats.push(if c < micro.cout_g {
                    bias(g * micro.cout_g + c)
                } else {
                    0.0
                });
            }
        }
    }
    floats.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `fn(packed, tables, input, residual, out)`: per group, channel tile and block of `MR`
/// pixels, the `MR × NR` accumulators over k, then alpha, bias, residual, activation and
/// the stores of the valid channels.
pub(crate) fn build_micro(
    jit: &Jit,
    micro: &Micro,
    act: Option<&Activation>,
    fma: bool,
) -> Function {
    jit.define_kernel(5, |b, p| {
        emit_micro(b, micro, act, fma, [p[0], p[1], p[2], p[3], p[4]]);
    })
}

/// The body of [`build_micro`] over its five parameters.
fn emit_micro(
    b: &mut FunctionBuilder,
    micro: &Micro,
    act: Option<&Activation>,
    fma: bool,
    [packed, tables, scratch, residual, out]: [Value; 5],
) {
    let nr = micro.vectors;
    let tc = micro.tile_channels();
    let tiles = micro.tiles();
    let k = micro.k;
    let blocks = micro.pixels.div_ceil(MR);
    let tile_bytes = k * tc * 4;
    let bias_base = micro.groups * tiles * tile_bytes;
    let k_table = micro.k_table();
    let plane_out = micro.channel_out_bytes;
    let ro = mem_aligned().with_readonly();
    counted_loop(b, micro.groups, |b, g| {
        let group_in = b.ins().imul_imm_u(g, micro.group_in_bytes as i64);
        let group_in = b.ins().iadd(scratch, group_in);
        let full_tiles = if micro.cout_g.is_multiple_of(tc) {
            tiles
        } else {
            tiles - 1
        };
        let emit_tile = |b: &mut FunctionBuilder, t: Value, valid: usize| {
            let gt = b.ins().imul_imm_u(g, tiles as i64);
            let gt = b.ins().iadd(gt, t);
            let weights = scaled(b, packed, gt, tile_bytes);
            let bias = b.ins().imul_imm_u(gt, (tc * 4) as i64);
            let bias = b.ins().iadd(packed, bias);
            // first output channel of the tile: g·cout_g + t·tc
            let c0 = b.ins().imul_imm_u(g, micro.cout_g as i64);
            let ct = b.ins().imul_imm_u(t, tc as i64);
            let c0 = b.ins().iadd(c0, ct);
            let c0 = b.ins().imul_imm_u(c0, plane_out as i64);
            let out_tile = b.ins().iadd(out, c0);
            let res_tile = b.ins().iadd(residual, c0);
            counted_loop(b, blocks, |b, blk| {
                let entries = scaled(b, tables, blk, 8 * MR);
                let mut ins = Vec::with_capacity(MR);
                let mut outs = Vec::with_capacity(MR);
                for px in 0..MR {
                    let i = b.ins().uload32(ro, entries, (8 * px) as i32);
                    ins.push(b.ins().iadd(group_in, i));
                    outs.push(b.ins().uload32(ro, entries, (8 * px + 4) as i32));
                }
                let zero = crate::clif::splat_f32(b, 0.0);
                let acc_vars: Vec<_> = (0..MR * nr)
                    .map(|_| {
                        let v = b.declare_var(types::F32X4);
                        b.def_var(v, zero);
                        v
                    })
                    .collect();
                counted_loop(b, k, |b, kk| {
                    let tap = scaled(b, tables, kk, 4);
                    let tap = b.ins().uload32(ro, tap, k_table as i32);
                    let w_k = scaled(b, weights, kk, tc * 4);
                    let ws: Vec<Value> = (0..nr)
                        .map(|r| b.ins().load(types::F32X4, ro, w_k, (16 * r) as i32))
                        .collect();
                    for (px, &base) in ins.iter().enumerate() {
                        let addr = b.ins().iadd(base, tap);
                        let xv = b.ins().load(types::F32, ro, addr, 0);
                        let xs = b.ins().splat(types::F32X4, xv);
                        for (r, &wv) in ws.iter().enumerate() {
                            let var = acc_vars[px * nr + r];
                            let acc = b.use_var(var);
                            let acc = if fma {
                                b.ins().fma(xs, wv, acc)
                            } else {
                                let prod = b.ins().fmul(xs, wv);
                                b.ins().fadd(acc, prod)
                            };
                            b.def_var(var, acc);
                        }
                    }
                });
                for (px, &out_off) in outs.iter().enumerate() {
                    let out_px = b.ins().iadd(out_tile, out_off);
                    let res_px = b.ins().iadd(res_tile, out_off);
                    for r in 0..nr {
                        let lanes = (valid.saturating_sub(r * LANES)).min(LANES);
                        if lanes == 0 {
                            continue;
                        }
                        let acc = b.use_var(acc_vars[px * nr + r]);
                        let bv = b
                            .ins()
                            .load(types::F32X4, ro, bias, (bias_base + 16 * r) as i32);
                        let acc = if micro.alpha == 1.0 {
                            acc
                        } else {
                            let alpha = crate::clif::splat_f32(b, micro.alpha);
                            b.ins().fmul(acc, alpha)
                        };
                        let mut v = b.ins().fadd(acc, bv);
                        if micro.residual {
                            let mut rv = crate::clif::splat_f32(b, 0.0);
                            for lane in 0..lanes {
                                let (addr, off) = at(b, res_px, (r * LANES + lane) * plane_out);
                                let s = b.ins().load(types::F32, mem().with_readonly(), addr, off);
                                rv = b.ins().insertlane(rv, s, lane as u8);
                            }
                            v = b.ins().fadd(v, rv);
                        }
                        if let Some(act) = act {
                            v = activate(b, act, v);
                        }
                        for lane in 0..lanes {
                            let s = b.ins().extractlane(v, lane as u8);
                            let (addr, off) = at(b, out_px, (r * LANES + lane) * plane_out);
                            b.ins().store(mem(), s, addr, off);
                        }
                    }
                }
            });
        };
        counted_loop(b, full_tiles, |b, t| emit_tile(b, t, tc));
        if full_tiles < tiles {
            let t = b.ins().iconst(types::I64, full_tiles as i64);
            emit_tile(b, t, micro.cout_g - full_tiles * tc);
        }
    });
}
