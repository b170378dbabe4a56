//! f32 transposed convolution (`Op::ConvTranspose`: x, w, optional b, fused activation), 1-D to
//! 3-D, any strides, dilations, pads, output padding and groups, per output phase on a
//! row kernel vectorized over output pixels or the f32 conv's micro-kernel
//! (`fconv::build_micro`).
//!
//! A transposed conv scatters `x[i] · w[k]` to `o = i·s + k·dl − pad`. Gathered per
//! output instead, `o` receives from the taps `k` with `(o + pad − k·dl) ≡ 0 (mod s)`,
//! input `i = (o + pad − k·dl) / s` — which taps depends only on the output's *phase*
//! `r = (o + pad) mod s`. So the outputs are split by phase (per spatial dim; `Π s` phases)
//! and each phase is an ordinary implicit GEMM: its pixels gather from a zero-padded copy
//! of the input with a k table of (input channel, valid tap) offsets, and its weights
//! (`w[ci][c][k]` for its taps, `[C_in, C_out/groups, k..]` layout) are packed at compile
//! time. No multiply touches an inserted zero (the zero-insertion formulation spends
//! `Π s` times the MACs), and a phase without taps (stride above the dilated kernel) is
//! bias and activation only. The padded copy's border is sized so every phase's reads
//! stay inside it: `i` runs from `m − c_max` to `m − c_min`, `m = ⌊(o + pad)/s⌋`,
//! `c = (k·dl − r)/s`.
//!
//! A phase whose rows (outputs along the last spatial dim) hold at least 4 pixels runs on
//! `RowPhase`, vectorized over output pixels (4 per F32X4; few output channels, as the
//! 1-channel head of a detector, waste no lane); a shorter one on the micro-kernel, which
//! blocks 4 pixels × 4 or 8 output channels. Both sum input channel by input channel,
//! taps in order, one `fma` each (`fmul` + `fadd` without FMA), from 0, then add the bias
//! and apply the activation, so they give the same bits (a test compares them); the
//! interpreter's GEMM + col2im adds in another order, so results agree with it to
//! rounding (the tests bound it at 1e-5 of the largest output).

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/fconv_transpose.rs"]
mod aot_parts;

use crate::clif::{at, counted_loop, mem, mem_aligned, scaled, splat_f32};
use crate::fact::activate;
use crate::fconv::{
    build_micro, f32_conv_operands, fill_zero_padded, micro_pack, micro_tables, vectors_for, Micro,
    MicroFn,
};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::spatial::{check_window, widen, SP};
use crate::tensor_io::{bad_buffer, f32_operand, f32_result, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::{types, Function, InstBuilder, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use kiln_ir::{Activation, ConvTransposeAttrs, Tensor, TensorType};

const OP: &str = "conv_transpose";

/// A ConvTranspose node's operands for [`FConvTransposeKernel::compile`]: the weights and
/// bias are constants (packed into the kernel); `x` is read at run time.
#[derive(Clone, Copy, Debug)]
pub struct FConvTransposeNode<'a> {
    pub attrs: &'a ConvTransposeAttrs,
    pub x_ty: &'a TensorType,
    /// `[C_in, C_out/groups, k..]`.
    pub w: &'a Tensor,
    pub bias: Option<&'a Tensor>,
    pub out_ty: &'a TensorType,
}

/// One spatial dim of the problem, split by phase.
#[derive(Clone, Debug)]
struct AxisPhases {
    /// Per phase `r`: the valid taps `k` with their input back-offsets `c = (k·dl − r)/s`.
    taps: Vec<Vec<(usize, usize)>>,
    /// Per phase: the output indices `o` with `(o + pad) mod s = r`, each with `m`.
    outputs: Vec<Vec<(usize, usize)>>,
    /// Zeros before and after the input in the padded copy.
    pad_before: usize,
    pad_after: usize,
}

impl AxisPhases {
    fn new(
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        pad: usize,
    ) -> AxisPhases {
        let taps: Vec<Vec<(usize, usize)>> = (0..stride)
            .map(|r| {
                (0..kernel)
                    .filter(|&k| (k * dilation) % stride == r)
                    .map(|k| (k, (k * dilation - r) / stride))
                    .collect()
            })
            .collect();
        let mut outputs = vec![Vec::new(); stride];
        let (mut pad_before, mut pad_after) = (0, 0);
        for o in 0..output {
            let (m, r) = ((o + pad) / stride, (o + pad) % stride);
            outputs[r].push((o, m));
            for &(_, c) in &taps[r] {
                // input index m − c, possibly outside [0, input)
                pad_before = pad_before.max(c.saturating_sub(m));
                pad_after = pad_after.max((m + 1).saturating_sub(c + input));
            }
        }
        AxisPhases {
            taps,
            outputs,
            pad_before,
            pad_after,
        }
    }

    /// The largest back-offset of phase `r` (0 without taps).
    fn c_max(&self, r: usize) -> usize {
        self.taps[r].iter().map(|&(_, c)| c).max().unwrap_or(0)
    }
}

/// The validated problem.
#[derive(Debug)]
struct Plan {
    batch: usize,
    c_in: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    input: [usize; SP],
    output: [usize; SP],
    kernel: [usize; SP],
    axes: [AxisPhases; SP],
    padded: [usize; SP],
    pad_begin: [usize; SP],
    x_shape: Vec<usize>,
    out_shape: Vec<usize>,
}

impl Plan {
    /// The interpreter's checks (`conv::conv_transpose`).
    fn new(attrs: &ConvTransposeAttrs, x: &[usize], w: &[usize]) -> Result<Plan, CodegenError> {
        let invalid = |reason: String| CodegenError::InvalidOp { op: OP, reason };
        check_window(
            OP,
            &attrs.kernel,
            &attrs.strides,
            &attrs.pads,
            &attrs.dilations,
        )?;
        let nsp = attrs.kernel.len();
        if attrs.output_padding.len() != nsp {
            return Err(invalid(format!(
                "output_padding {:?} for {nsp} spatial dims",
                attrs.output_padding
            )));
        }
        if x.len() != nsp + 2 || w.len() != nsp + 2 || w[2..] != attrs.kernel[..] {
            return Err(invalid(format!(
                "input {x:?} and weight {w:?} do not fit a {nsp}-D transposed conv with \
                 kernel {:?}",
                attrs.kernel
            )));
        }
        let groups = attrs.groups;
        if groups == 0 || x[1] != w[0] || !w[0].is_multiple_of(groups) {
            return Err(invalid(format!(
                "input channels {} and weight {w:?} do not fit groups={groups}",
                x[1]
            )));
        }
        let mut out = vec![0; nsp];
        for d in 0..nsp {
            let full = attrs.strides[d] * (x[2 + d].max(1) - 1)
                + attrs.output_padding[d]
                + attrs.dilations[d] * (attrs.kernel[d].max(1) - 1)
                + 1;
            let cut = attrs.pads[d] + attrs.pads[nsp + d];
            out[d] = full
                .checked_sub(cut)
                .filter(|&s| s > 0 && x[2 + d] > 0 && attrs.kernel[d] > 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "pads {:?} leave no output for input {x:?}",
                        attrs.pads
                    ))
                })?;
        }
        let input = widen(&x[2..], 1);
        let output = widen(&out, 1);
        let kernel = widen(&attrs.kernel, 1);
        let stride = widen(&attrs.strides, 1);
        let dilation = widen(&attrs.dilations, 1);
        let pad = widen(&attrs.pads[..nsp], 0);
        let axes: [AxisPhases; SP] = std::array::from_fn(|d| {
            AxisPhases::new(
                input[d],
                output[d],
                kernel[d],
                stride[d],
                dilation[d],
                pad[d],
            )
        });
        let padded = std::array::from_fn(|d| axes[d].pad_before + input[d] + axes[d].pad_after);
        let pad_begin = std::array::from_fn(|d| axes[d].pad_before);
        let mut out_shape = vec![x[0], w[1] * groups];
        out_shape.extend_from_slice(&out);
        Ok(Plan {
            batch: x[0],
            c_in: x[1],
            groups,
            cin_g: x[1] / groups,
            cout_g: w[1],
            input,
            output,
            kernel,
            axes,
            padded,
            pad_begin,
            x_shape: x.to_vec(),
            out_shape,
        })
    }

    fn plane(&self) -> usize {
        self.padded.iter().product()
    }

    fn out_pixels(&self) -> usize {
        self.output.iter().product()
    }

    fn scratch_bytes(&self) -> usize {
        (4 * self.c_in * self.plane()).max(16)
    }

    /// Every phase with outputs: `(r0, r1, r2)`.
    fn phases(&self) -> Vec<[usize; SP]> {
        let mut phases = Vec::new();
        for (r0, o0) in self.axes[0].outputs.iter().enumerate() {
            for (r1, o1) in self.axes[1].outputs.iter().enumerate() {
                for (r2, o2) in self.axes[2].outputs.iter().enumerate() {
                    if !o0.is_empty() && !o1.is_empty() && !o2.is_empty() {
                        phases.push([r0, r1, r2]);
                    }
                }
            }
        }
        phases
    }
}

/// One phase, compiled.
struct Phase {
    packed: AlignedBytes,
    tables: AlignedBytes,
    macs: u64,
    function: MicroFn,
}

/// A compiled f32 ConvTranspose.
pub struct FConvTransposeKernel {
    plan: Plan,
    phases: Vec<Phase>,
    /// Declared last: the phases' functions point into it.
    code: KernelCode,
}

kernel_identity!(FConvTransposeKernel, code);

/// Working memory of an [`FConvTransposeKernel`]: one batch item's zero-padded input.
#[derive(Debug)]
pub struct FConvTransposeScratch {
    bytes: AlignedBytes,
}

impl FConvTransposeKernel {
    pub fn compile(
        node: &FConvTransposeNode,
        options: &JitOptions,
    ) -> Result<FConvTransposeKernel, CodegenError> {
        Self::compile_with(node, options, PhaseKernels::RowsWherePossible)
    }

    /// [`Self::compile`] with every phase on the micro-kernel: the peer that the row
    /// kernel is checked (bit for bit) and benchmarked against.
    pub fn compile_on_micro_kernel(
        node: &FConvTransposeNode,
        options: &JitOptions,
    ) -> Result<FConvTransposeKernel, CodegenError> {
        Self::compile_with(node, options, PhaseKernels::MicroOnly)
    }

    /// [`Self::compile`] with a choice of phase kernels.
    fn compile_with(
        node: &FConvTransposeNode,
        options: &JitOptions,
        kernels: PhaseKernels,
    ) -> Result<FConvTransposeKernel, CodegenError> {
        let plan = Plan::new(node.attrs, &node.x_ty.shape, node.w.shape())?;
        let (w, bias) = f32_conv_operands(
            OP,
            [node.x_ty, node.out_ty],
            &plan.out_shape,
            node.w,
            node.bias,
            plan.scratch_bytes(),
        )?;
        let c_out = plan.cout_g * plan.groups;
        let name = format!("conv_transpose_f32_{}", shape_name(&plan.out_shape));
        let mut jit = Jit::host(options)?;
        let fma = jit.features().has_fma || !jit.features().is_x86_64();
        let act = node.attrs.act.as_ref();
        let k_taps: usize = plan.kernel.iter().product();
        // kk = ci·taps + t; w[(g·cin_g + ci)][c][tap]
        let weight = |taps: &[[usize; SP]], g: usize, c: usize, kk: usize| {
            let (ci, t) = (kk / taps.len(), taps[kk % taps.len()]);
            let tap = (t[0] * plan.kernel[1] + t[1]) * plan.kernel[2] + t[2];
            w[((g * plan.cin_g + ci) * plan.cout_g + c) * k_taps + tap]
        };
        let bias_of = |c: usize| bias.map_or(0.0, |b| b[c]);
        // phases on the row kernel, merged where they read alike; the rest on the micro-kernel
        let mut row_kernels: Vec<RowPhase> = Vec::new();
        let mut micro_phases = Vec::new();
        for phase in plan.phases() {
            match (kernels, RowPhase::new(&plan, phase)) {
                (PhaseKernels::RowsWherePossible, Some(rows)) => {
                    if !row_kernels.iter_mut().any(|r| r.absorb(&rows)) {
                        row_kernels.push(rows);
                    }
                }
                _ => micro_phases.push(phase),
            }
        }
        let mut built = Vec::new();
        for rows in &row_kernels {
            let member_taps: Vec<Vec<[usize; SP]>> = rows
                .members
                .iter()
                .map(|&(phase, _)| phase_taps(&plan, phase))
                .collect();
            let packed = rows.pack(|m, g, c, kk| weight(&member_taps[m], g, c, kk), bias_of);
            let macs = rows.members.len() * rows.rows.len() * rows.row_len * rows.k();
            built.push((packed, rows.tables(), rows.build(&jit, act, fma), macs));
        }
        for &phase in &micro_phases {
            let taps = phase_taps(&plan, phase);
            let (micro, tables) = phase_tables(&plan, phase);
            let packed = micro_pack(&micro, |g, c, kk| weight(&taps, g, c, kk), bias_of);
            let macs = micro.pixels * micro.k;
            built.push((packed, tables, build_micro(&jit, &micro, act, fma), macs));
        }
        let mut phases = Vec::with_capacity(built.len());
        for (index, (packed, tables, func, macs)) in built.into_iter().enumerate() {
            // SAFETY: `build_micro` and `RowPhase::build` build five pointer parameters
            // and no results — `MicroFn`; the kernel owns `jit`, so the code outlives
            // every call.
            let function: MicroFn = unsafe { jit.compile_as(&phase_name(&name, index), func)? };
            phases.push(Phase {
                packed: AlignedBytes::from_bytes(&packed),
                tables: AlignedBytes::from_bytes(&tables),
                macs: (plan.batch * c_out * macs) as u64,
                function,
            });
        }
        Ok(FConvTransposeKernel {
            plan,
            phases,
            code: KernelCode::new(jit, name),
        })
    }

    /// The listing of phase `index`'s function (phase 0 is the main one), when compiled
    /// with `capture_disassembly`.
    pub fn phase_disassembly(&self, index: usize) -> Option<&str> {
        self.code.disassembly(&phase_name(self.name(), index))
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.plan.out_shape
    }

    /// Multiply-accumulates of one call (all batch items; taps that read padding count).
    pub fn macs(&self) -> u64 {
        self.phases.iter().map(|p| p.macs).sum()
    }

    pub fn new_scratch(&self) -> FConvTransposeScratch {
        FConvTransposeScratch {
            bytes: AlignedBytes::zeroed(self.plan.scratch_bytes()),
        }
    }

    /// Transpose-convolve `x` (the input shape) into `out` (the output shape).
    pub fn run_into(
        &self,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut FConvTransposeScratch,
    ) -> Result<(), CodegenError> {
        let plan = &self.plan;
        let x_len: usize = plan.x_shape.iter().product();
        let out_len: usize = plan.out_shape.iter().product();
        if x.len() != x_len
            || out.len() != out_len
            || scratch.bytes.as_slice().len() != plan.scratch_bytes()
        {
            return Err(bad_buffer(
                self.name(),
                format!(
                    "x {} → out {}, scratch {} bytes; expected {x_len} → {out_len}, scratch {}",
                    x.len(),
                    out.len(),
                    scratch.bytes.as_slice().len(),
                    plan.scratch_bytes()
                ),
            ));
        }
        let (x_image, out_image) = (x_len / plan.batch.max(1), out_len / plan.batch.max(1));
        // without padding (kernel ≤ stride, no pads) the padded copy is the input itself
        let unpadded = plan.padded == plan.input;
        for n in 0..plan.batch {
            let x_n = &x[n * x_image..(n + 1) * x_image];
            let input: *const u8 = if unpadded {
                x_n.as_ptr().cast()
            } else {
                fill_zero_padded(
                    x_n,
                    &mut scratch.bytes,
                    plan.input,
                    plan.padded,
                    plan.pad_begin,
                );
                scratch.bytes.as_slice().as_ptr()
            };
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            for phase in &self.phases {
                // SAFETY: valid while `self.code` lives. The function reads its phase's
                // packed weights and tables, the padded input at offsets below
                // `4 · c_in · plane` (the padded extents cover every tap of every phase:
                // `AxisPhases::new`) — the scratch (`scratch_bytes`), or `x_n` itself when
                // the padded extents are the input's (then `4 · c_in · plane` is its
                // length in bytes), 4-byte aligned either way, with no 16-byte aligned
                // access — no residual (none was compiled), and writes its phases' pixels
                // of the `out_image` floats of `out_n`; all lengths are checked above.
                unsafe {
                    (phase.function)(
                        phase.packed.as_slice().as_ptr(),
                        phase.tables.as_slice().as_ptr(),
                        input,
                        out_n.as_ptr(),
                        out_n.as_mut_ptr(),
                    )
                };
            }
        }
        Ok(())
    }

    /// Run on a tensor (allocates output and scratch).
    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let xv = f32_operand(self.name(), x, Some(&self.plan.x_shape))?;
        let mut out = vec![0f32; self.plan.out_shape.iter().product()];
        self.run_into(xv, &mut out, &mut self.new_scratch())?;
        f32_result(self.name(), &self.plan.out_shape, out)
    }
}

/// Phase 0's function is named like the kernel (its main function), phase `i` after it.
fn phase_name(kernel: &str, index: usize) -> String {
    match index {
        0 => kernel.to_string(),
        _ => format!("{kernel}_phase{index}"),
    }
}

/// The taps of a phase: per spatial dim its valid kernel indices, all combinations in
/// row-major order.
fn phase_taps(plan: &Plan, phase: [usize; SP]) -> Vec<[usize; SP]> {
    let [t0, t1, t2] = std::array::from_fn(|d| &plan.axes[d].taps[phase[d]]);
    let mut taps = Vec::with_capacity(t0.len() * t1.len() * t2.len());
    for &(k0, _) in t0 {
        for &(k1, _) in t1 {
            for &(k2, _) in t2 {
                taps.push([k0, k1, k2]);
            }
        }
    }
    taps
}

/// A phase's implicit GEMM and its tables: each of its output pixels reads the padded
/// input from `m − c_max` on (in every dim), each (input channel, tap) adds
/// `c_max − c` along each dim.
fn phase_tables(plan: &Plan, phase: [usize; SP]) -> (Micro, Vec<u8>) {
    let [_, ph, pw] = plan.padded;
    let strides = [ph * pw, pw, 1];
    let c_max: [usize; SP] = std::array::from_fn(|d| plan.axes[d].c_max(phase[d]));
    let [o0, o1, o2] = std::array::from_fn(|d| &plan.axes[d].outputs[phase[d]]);
    let [_, oh_n, ow_n] = plan.output;
    let mut pixels = Vec::with_capacity(o0.len() * o1.len() * o2.len());
    let start = |d: usize, m: usize| (m + plan.axes[d].pad_before - c_max[d]) * strides[d];
    for &(od, md) in o0 {
        for &(oh, mh) in o1 {
            for &(ow, mw) in o2 {
                let input = start(0, md) + start(1, mh) + start(2, mw);
                let output = (od * oh_n + oh) * ow_n + ow;
                pixels.push((4 * input as u32, 4 * output as u32));
            }
        }
    }
    let back: [Vec<usize>; SP] = std::array::from_fn(|d| {
        plan.axes[d].taps[phase[d]]
            .iter()
            .map(|&(_, c)| (c_max[d] - c) * strides[d])
            .collect()
    });
    let mut ks = Vec::new();
    for ci in 0..plan.cin_g {
        for b0 in &back[0] {
            for b1 in &back[1] {
                for b2 in &back[2] {
                    ks.push(4 * (ci * plan.plane() + b0 + b1 + b2) as u32);
                }
            }
        }
    }
    let micro = Micro {
        groups: plan.groups,
        group_in_bytes: 4 * plan.cin_g * plan.plane(),
        cout_g: plan.cout_g,
        vectors: vectors_for(plan.cout_g),
        k: ks.len(),
        pixels: pixels.len(),
        channel_out_bytes: 4 * plan.out_pixels(),
        alpha: 1.0,
        residual: false,
    };
    (micro, micro_tables(pixels, &ks))
}

/// Which kernel computes each phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PhaseKernels {
    /// [`RowPhase`] where the phase's rows hold a vector of pixels, else `build_micro`.
    RowsWherePossible,
    /// `build_micro` for every phase (the reference for the row kernel's bits).
    MicroOnly,
}

/// F32X4 lanes: output pixels per vector in [`RowPhase`].
const LANES: usize = 4;

/// The most k-steps (16 KiB of a channel block's weights) for which [`RowPhase`] takes
/// phases of 8 or more output channels per group.
const MAX_K_WIDE: usize = 256;

/// Phases computed row by row, vectorized over output pixels: along the last spatial dim a
/// phase's consecutive outputs read consecutive inputs (`m` steps by 1), so one F32X4
/// load gives a k-step's (input channel, tap) input for 4 output pixels and one broadcast
/// weight vector (packed splatted) multiplies it — no lane is wasted however few the
/// output channels. Phases whose rows read the same inputs with the same k-steps (the
/// common `kernel = stride` upsampling: every phase reads input `m`) are *members* of one
/// kernel, as if each added `C_out` channels ("virtual channels", each with its output
/// offset), so they share each input load and read the input once. A register block is
/// `pixel_vectors` × `channels` accumulators; each accumulates its k-steps in the
/// micro-kernel's order with the same `fma` (or `fmul` + `fadd`) from 0, then adds the
/// bias and applies the activation as it does, so the results are the micro-kernel's
/// bits. A row's last block starts `4·pixel_vectors` before the row's end, recomputing
/// (and rewriting, identically) outputs of the block before it.
#[derive(Debug)]
struct RowPhase {
    groups: usize,
    group_in_bytes: usize,
    cin_g: usize,
    cout_g: usize,
    /// Per tap (phase order): its byte offset from a pixel's first-tap input in a plane.
    tap_bytes: Vec<usize>,
    plane_bytes: usize,
    /// Per row: the byte offsets of its first pixel's first-tap input and of its output
    /// (the members' lowest).
    rows: Vec<(u32, u32)>,
    row_len: usize,
    /// Bytes between consecutive outputs of a row (4 · stride).
    out_step: usize,
    channel_out_bytes: usize,
    /// The phases computed together, each with its outputs' byte offset from the rows'.
    members: Vec<([usize; SP], usize)>,
}

impl RowPhase {
    /// `None` where the phase's rows are shorter than a vector, or where it has many
    /// output channels and k-steps (the micro-kernel's case).
    fn new(plan: &Plan, phase: [usize; SP]) -> Option<RowPhase> {
        let [o0, o1, o2] = std::array::from_fn(|d| &plan.axes[d].outputs[phase[d]]);
        let row_len = o2.len();
        // From 8 output channels on, the micro-kernel's 4 × 8 block wastes no lane either;
        // the row kernel's splatted weights take 4 times the room, so it is kept to where
        // a channel block's weights (64 bytes per k-step) stay well inside L1, as measured
        // (docs/kernels.md §8).
        let k = plan.cin_g
            * (0..SP)
                .map(|d| plan.axes[d].taps[phase[d]].len())
                .product::<usize>();
        if row_len < LANES || (plan.cout_g >= 8 && k > MAX_K_WIDE) {
            return None;
        }
        let [_, ph, pw] = plan.padded;
        let strides = [ph * pw, pw, 1];
        let c_max: [usize; SP] = std::array::from_fn(|d| plan.axes[d].c_max(phase[d]));
        let start = |d: usize, m: usize| (m + plan.axes[d].pad_before - c_max[d]) * strides[d];
        let [_, oh_n, ow_n] = plan.output;
        let (ow0, mw0) = o2[0];
        let mut rows = Vec::with_capacity(o0.len() * o1.len());
        for &(od, md) in o0 {
            for &(oh, mh) in o1 {
                let input = start(0, md) + start(1, mh) + start(2, mw0);
                let output = (od * oh_n + oh) * ow_n + ow0;
                rows.push((4 * input as u32, 4 * output as u32));
            }
        }
        let back: [Vec<usize>; SP] = std::array::from_fn(|d| {
            plan.axes[d].taps[phase[d]]
                .iter()
                .map(|&(_, c)| (c_max[d] - c) * strides[d])
                .collect()
        });
        let mut tap_bytes = Vec::new();
        for b0 in &back[0] {
            for b1 in &back[1] {
                for b2 in &back[2] {
                    tap_bytes.push(4 * (b0 + b1 + b2));
                }
            }
        }
        Some(RowPhase {
            groups: plan.groups,
            group_in_bytes: 4 * plan.cin_g * plan.plane(),
            cin_g: plan.cin_g,
            cout_g: plan.cout_g,
            tap_bytes,
            plane_bytes: 4 * plan.plane(),
            rows,
            row_len,
            out_step: 4 * (o2[1].0 - o2[0].0),
            channel_out_bytes: 4 * plan.out_pixels(),
            members: vec![(phase, 0)],
        })
    }

    /// Take `other` (one phase) as a member when its rows read the same inputs with the
    /// same k-steps and write at a constant offset from these rows' outputs.
    fn absorb(&mut self, other: &RowPhase) -> bool {
        if other.rows.len() != self.rows.len()
            || other.row_len != self.row_len
            || other.out_step != self.out_step
            || other.tap_bytes != self.tap_bytes
            || other.rows.iter().zip(&self.rows).any(|(o, s)| o.0 != s.0)
        {
            return false;
        }
        let delta = |o: &(u32, u32), s: &(u32, u32)| i64::from(o.1) - i64::from(s.1);
        let first = delta(&other.rows[0], &self.rows[0]);
        if other
            .rows
            .iter()
            .zip(&self.rows)
            .any(|(o, s)| delta(o, s) != first)
        {
            return false;
        }
        if first >= 0 {
            self.members.push((other.members[0].0, first as usize));
        } else {
            // the new member writes first: the rows' outputs move to it
            let shift = first.unsigned_abs() as usize;
            for row in &mut self.rows {
                row.1 -= shift as u32;
            }
            for member in &mut self.members {
                member.1 += shift;
            }
            self.members.push((other.members[0].0, 0));
        }
        true
    }

    fn k(&self) -> usize {
        self.cin_g * self.tap_bytes.len()
    }

    /// Output channels of all members: `member · cout_g + channel`.
    fn virtual_channels(&self) -> usize {
        self.members.len() * self.cout_g
    }

    /// The register block: `(channels, pixel_vectors)`, accumulators plus one k-step's
    /// pixel vectors and weights within 16 registers.
    fn block(&self) -> (usize, usize) {
        let (channels, pixel_vectors) = match self.virtual_channels() {
            1 => (1, 4),
            2 => (2, 3),
            3 => (3, 3),
            _ => (4, 2),
        };
        (channels, pixel_vectors.min(self.row_len / LANES))
    }

    fn channel_blocks(&self) -> usize {
        self.virtual_channels().div_ceil(self.block().0)
    }

    /// Bytes of one channel block's weights: `[k][channels]` F32X4 splats.
    fn block_bytes(&self) -> usize {
        16 * self.k() * self.block().0
    }

    /// Weights `[group][channel block][k][channels]` as F32X4 splats of
    /// `weight(member, group, channel in group, k)` (zeros past the last virtual channel),
    /// then biases `[group][virtual channel]` as splats of `bias(output channel)`.
    fn pack(
        &self,
        weight: impl Fn(usize, usize, usize, usize) -> f32,
        bias: impl Fn(usize) -> f32,
    ) -> Vec<u8> {
        let channels = self.block().0;
        let mut floats = Vec::new();
        for g in 0..self.groups {
            for cb in 0..self.channel_blocks() {
                for kk in 0..self.k() {
                    for lane in 0..channels {
                        let v = cb * channels + lane;
                        let value = if v < self.virtual_channels() {
                            weight(v / self.cout_g, g, v % self.cout_g, kk)
                        } else {
                            0.0
                        };
                        floats.extend([value; LANES]);
                    }
                }
            }
        }
        for g in 0..self.groups {
            for v in 0..self.virtual_channels() {
                floats.extend([bias(g * self.cout_g + v % self.cout_g); LANES]);
            }
        }
        floats.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The tables blob: `(input, output)` u32 byte offsets per row; the k table (per
    /// k-step its input byte offset from a pixel's first tap); per virtual channel its
    /// output byte offset from a row's output in its group.
    fn tables(&self) -> Vec<u8> {
        let k_steps = (0..self.cin_g).flat_map(|ci| {
            self.tap_bytes
                .iter()
                .map(move |&tap| (ci * self.plane_bytes + tap) as u32)
        });
        let outputs = self.members.iter().flat_map(|&(_, delta)| {
            (0..self.cout_g).map(move |c| (delta + c * self.channel_out_bytes) as u32)
        });
        self.rows
            .iter()
            .flat_map(|&(i, o)| [i, o])
            .chain(k_steps)
            .chain(outputs)
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    /// Byte offset of the k table in the tables blob.
    fn k_table(&self) -> usize {
        8 * self.rows.len()
    }

    /// Byte offset of the virtual channels' output offsets in the tables blob.
    fn output_table(&self) -> usize {
        self.k_table() + 4 * self.k()
    }

    /// `fn(packed, tables, input, _, out)` (the micro-kernel's signature; no residual):
    /// per group, row, block of pixels along the row and block of virtual channels, the
    /// accumulators over k, then bias, activation and the stores.
    fn build(&self, jit: &Jit, act: Option<&Activation>, fma: bool) -> Function {
        jit.define_kernel(5, |b, p| {
            let (packed, table, scratch, out) = (p[0], p[1], p[2], p[4]);
            let ro = mem_aligned().with_readonly();
            let weights_bytes = self.channel_blocks() * self.block_bytes();
            let bias_base = self.groups * weights_bytes;
            counted_loop(b, self.groups, |b, g| {
                let group = Group {
                    table,
                    input: scaled(b, scratch, g, self.group_in_bytes),
                    out: scaled(b, out, g, self.cout_g * self.channel_out_bytes),
                    weights: scaled(b, packed, g, weights_bytes),
                    bias: {
                        let bias = scaled(b, packed, g, 16 * self.virtual_channels());
                        b.ins().iadd_imm_u(bias, bias_base as i64)
                    },
                };
                counted_loop(b, self.rows.len(), |b, row| {
                    let entry = scaled(b, table, row, 8);
                    let i = b.ins().uload32(ro, entry, 0);
                    let o = b.ins().uload32(ro, entry, 4);
                    let row = Ends {
                        input: b.ins().iadd(group.input, i),
                        out: b.ins().iadd(group.out, o),
                    };
                    self.emit_channel_blocks(b, &group, &row, act, fma);
                });
            });
        })
    }

    /// Every channel block of one row (`row`: its first pixel's input and output), each
    /// over the row's pixel blocks: a block's weights stay in L1 across the row, and the
    /// row's inputs across the channel blocks.
    fn emit_channel_blocks(
        &self,
        b: &mut FunctionBuilder,
        group: &Group,
        row: &Ends,
        act: Option<&Activation>,
        fma: bool,
    ) {
        let block_pixels = LANES * self.block().1;
        let channel_block = |b: &mut FunctionBuilder, cb: Value, channels: usize| {
            let pixel_block = |b: &mut FunctionBuilder, start: Value| {
                let at_in = b.ins().imul_imm_u(start, 4);
                let at_out = b.ins().imul_imm_u(start, self.out_step as i64);
                let ends = Ends {
                    input: b.ins().iadd(row.input, at_in),
                    out: b.ins().iadd(row.out, at_out),
                };
                self.emit_channel_block(b, group, &ends, cb, channels, act, fma);
            };
            counted_loop(b, self.row_len / block_pixels, |b, blk| {
                let start = b.ins().imul_imm_u(blk, block_pixels as i64);
                pixel_block(b, start);
            });
            if !self.row_len.is_multiple_of(block_pixels) {
                let start = b
                    .ins()
                    .iconst(types::I64, (self.row_len - block_pixels) as i64);
                pixel_block(b, start);
            }
        };
        let channels = self.block().0;
        let full = self.virtual_channels() / channels;
        counted_loop(b, full, |b, cb| channel_block(b, cb, channels));
        let rest = self.virtual_channels() % channels;
        if rest > 0 {
            let cb = b.ins().iconst(types::I64, full as i64);
            channel_block(b, cb, rest);
        }
    }

    /// The `pixel_vectors × channels` block of channel block `cb` (its first `channels`).
    #[allow(clippy::too_many_arguments)]
    fn emit_channel_block(
        &self,
        b: &mut FunctionBuilder,
        group: &Group,
        ends: &Ends,
        cb: Value,
        channels: usize,
        act: Option<&Activation>,
        fma: bool,
    ) {
        let ro = mem_aligned().with_readonly();
        // the scratch at a pixel: 4-byte aligned only
        let input_flags = mem().with_readonly();
        let (block_channels, pv) = self.block();
        let table = group.table;
        let weights = scaled(b, group.weights, cb, self.block_bytes());
        let zero = splat_f32(b, 0.0);
        let accs: Vec<Variable> = (0..pv * channels)
            .map(|_| {
                let v = b.declare_var(types::F32X4);
                b.def_var(v, zero);
                v
            })
            .collect();
        // `count` k-steps from table entry `entries` and weight vectors `weights` on.
        // One k-step's loads are in flight at a time (or two, where the registers allow):
        // Cranelift schedules these read-only loads at the top of their block, so a longer
        // unrolled body would load ahead of its `fma`s and spill.
        let steps = |b: &mut FunctionBuilder, entries: Value, weights: Value, count: usize| {
            for step in 0..count {
                let off = b
                    .ins()
                    .uload32(ro, entries, (self.k_table() + 4 * step) as i32);
                let input = b.ins().iadd(ends.input, off);
                let xs: Vec<Value> = (0..pv)
                    .map(|v| {
                        b.ins()
                            .load(types::F32X4, input_flags, input, (16 * v) as i32)
                    })
                    .collect();
                for c in 0..channels {
                    let w_off = 16 * (step * block_channels + c);
                    let (addr, off) = at(b, weights, w_off);
                    let wv = b.ins().load(types::F32X4, ro, addr, off);
                    for (v, &xv) in xs.iter().enumerate() {
                        let var = accs[v * channels + c];
                        let acc = b.use_var(var);
                        let acc = if fma {
                            b.ins().fma(xv, wv, acc)
                        } else {
                            let prod = b.ins().fmul(xv, wv);
                            b.ins().fadd(acc, prod)
                        };
                        b.def_var(var, acc);
                    }
                }
            }
        };
        let live = |unroll: usize| pv * channels + unroll * (pv + channels);
        let unroll = if live(2) <= 15 { 2 } else { 1 };
        let k = self.k();
        let step_weights = 16 * block_channels;
        counted_loop(b, k / unroll, |b, it| {
            let entries = scaled(b, table, it, 4 * unroll);
            let w = scaled(b, weights, it, unroll * step_weights);
            steps(b, entries, w, unroll);
        });
        let done = k / unroll * unroll;
        if done < k {
            let entries = b.ins().iadd_imm_u(table, (4 * done) as i64);
            let w = b.ins().iadd_imm_u(weights, (done * step_weights) as i64);
            steps(b, entries, w, k - done);
        }
        let first_channel = b.ins().imul_imm_u(cb, block_channels as i64);
        let bias = scaled(b, group.bias, first_channel, 16);
        let outputs = scaled(b, table, first_channel, 4);
        for c in 0..channels {
            let bv = b.ins().load(types::F32X4, ro, bias, (16 * c) as i32);
            let offset = b
                .ins()
                .uload32(ro, outputs, (self.output_table() + 4 * c) as i32);
            let out = b.ins().iadd(ends.out, offset);
            for v in 0..pv {
                let acc = b.use_var(accs[v * channels + c]);
                let mut value = b.ins().fadd(acc, bv);
                if let Some(act) = act {
                    value = activate(b, act, value);
                }
                let first = LANES * v * self.out_step;
                if self.out_step == 4 {
                    b.ins().store(mem(), value, out, first as i32);
                } else {
                    for lane in 0..LANES {
                        let s = b.ins().extractlane(value, lane as u8);
                        let (addr, off) = at(b, out, first + lane * self.out_step);
                        b.ins().store(mem(), s, addr, off);
                    }
                }
            }
        }
    }
}

/// A group's bases in [`RowPhase::build`]: the tables, its input channels, output
/// channels, weights and biases.
struct Group {
    /// The tables blob (the k table is read per k-step).
    table: Value,
    input: Value,
    out: Value,
    weights: Value,
    bias: Value,
}

/// A pixel block's first-tap input and first output in [`RowPhase::build`].
struct Ends {
    input: Value,
    out: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kernel 3, stride 2, dilation 1, pad 1 over 4 inputs: 7 outputs; phase 0 (odd `o`)
    /// gathers taps 0 and 2 from inputs m and m − 1, phase 1 (even `o`) tap 1 from input m.
    #[test]
    fn phases_split_taps_by_output_parity() {
        let a = AxisPhases::new(4, 7, 3, 2, 1, 1);
        assert_eq!(a.taps, [vec![(0, 0), (2, 1)], vec![(1, 0)]]);
        assert_eq!(a.outputs[0], [(1, 1), (3, 2), (5, 3)]);
        assert_eq!(a.outputs[1], [(0, 0), (2, 1), (4, 2), (6, 3)]);
        // o = 1 reads inputs 1 and 0, o = 5 reads 3 and 2: no padding needed
        assert_eq!((a.pad_before, a.pad_after), (0, 0));
        // with pad 0 and output padding the last output o = 8 reads input 4 = one past
        let b = AxisPhases::new(4, 10, 3, 2, 1, 0);
        assert_eq!((b.pad_before, b.pad_after), (1, 1));
    }

    /// Deterministic pseudo-random floats in [-2, 2) (an LCG).
    fn floats(len: usize, seed: u64) -> Vec<f32> {
        let mut lcg = crate::testing::Lcg::new(seed);
        (0..len).map(|_| lcg.unit_f32() * 4.0 - 2.0).collect()
    }

    /// The row kernel gives the micro-kernel's bits (same k order, same `fma`, same bias
    /// and activation), over 1-D to 3-D problems with strides, dilations, pads, output
    /// padding, groups, 1 to 24 output channels per group (full and partial register
    /// blocks, merged phases) and rows of 4 to 23 pixels (full and overlapping last
    /// pixel blocks).
    #[test]
    fn row_kernel_matches_micro_kernel_bitwise() {
        use kiln_ir::DType;
        struct Case {
            x: Vec<usize>,
            cout_g: usize,
            kernel: Vec<usize>,
            strides: Vec<usize>,
            dilations: Vec<usize>,
            pads: Vec<usize>,
            output_padding: Vec<usize>,
            groups: usize,
            act: Option<Activation>,
        }
        let case = |x: &[usize], cout_g, kernel: &[usize], strides: &[usize], groups| Case {
            x: x.to_vec(),
            cout_g,
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            dilations: vec![1; kernel.len()],
            pads: vec![0; 2 * kernel.len()],
            output_padding: vec![0; kernel.len()],
            groups,
            act: None,
        };
        let mut cases = vec![
            case(&[1, 24, 6, 40], 1, &[2, 2], &[2, 2], 1),
            case(&[1, 5, 5, 9], 7, &[2, 2], &[2, 2], 1),
            case(&[2, 3, 7], 6, &[3], &[2], 1),
            case(&[1, 6, 4, 5], 3, &[3, 3], &[1, 1], 2),
            case(&[1, 4, 3, 11], 1, &[2, 3], &[1, 3], 4),
            case(&[1, 2, 2, 3, 6], 7, &[2, 2, 3], &[2, 1, 2], 1),
            case(&[1, 9, 3, 23], 2, &[1, 1], &[1, 1], 1),
            case(&[1, 17, 2, 12], 5, &[4, 4], &[2, 2], 1),
            case(&[1, 6, 3, 8], 24, &[2, 2], &[2, 2], 1),
            case(&[2, 3, 9], 13, &[3], &[2], 1),
            // dilation 2 puts both taps in phase 0: phase 1 is bias and activation only
            case(&[1, 2, 6], 1, &[2], &[2], 1),
        ];
        cases[0].act = Some(Activation::Sigmoid);
        cases[1].act = Some(Activation::Relu);
        cases[2].pads = vec![1, 2];
        cases[2].output_padding = vec![1];
        cases[3].dilations = vec![2, 2];
        cases[3].pads = vec![1, 0, 2, 1];
        cases[3].act = Some(Activation::LeakyRelu { alpha: 0.1 });
        cases[4].act = Some(Activation::Tanh);
        cases[5].output_padding = vec![1, 0, 1];
        cases[7].pads = vec![1, 1, 1, 1];
        cases[7].act = Some(Activation::Clip {
            min: -1.0,
            max: 1.5,
        });
        for (index, case) in cases.into_iter().enumerate() {
            let nsp = case.kernel.len();
            let attrs = ConvTransposeAttrs {
                kernel: case.kernel.clone(),
                strides: case.strides,
                pads: case.pads,
                dilations: case.dilations,
                output_padding: case.output_padding,
                groups: case.groups,
                act: case.act,
            };
            let c_in = case.x[1];
            let mut w_shape = vec![c_in, case.cout_g];
            w_shape.extend_from_slice(&case.kernel);
            let plan = Plan::new(&attrs, &case.x, &w_shape).expect("valid case");
            let w_len = w_shape.iter().product();
            let w = Tensor::new(w_shape, kiln_ir::TensorData::F32(floats(w_len, 7)))
                .expect("shape fits");
            let c_out = case.cout_g * case.groups;
            let bias = Tensor::new(vec![c_out], kiln_ir::TensorData::F32(floats(c_out, 11)))
                .expect("shape fits");
            let x_ty = TensorType::new(DType::F32, case.x.clone());
            let out_ty = TensorType::new(DType::F32, plan.out_shape.clone());
            let node = FConvTransposeNode {
                attrs: &attrs,
                x_ty: &x_ty,
                w: &w,
                bias: Some(&bias),
                out_ty: &out_ty,
            };
            assert!(
                plan.phases()
                    .into_iter()
                    .any(|phase| RowPhase::new(&plan, phase).is_some()),
                "case {index} exercises the row kernel"
            );
            assert_eq!(nsp + 2, case.x.len());
            let x = floats(case.x.iter().product(), 3);
            let run = |kernels| {
                let kernel =
                    FConvTransposeKernel::compile_with(&node, &JitOptions::default(), kernels)
                        .expect("compiles");
                let mut out = vec![0f32; plan.out_shape.iter().product()];
                kernel
                    .run_into(&x, &mut out, &mut kernel.new_scratch())
                    .expect("buffers fit");
                out
            };
            let rows = run(PhaseKernels::RowsWherePossible);
            let micro = run(PhaseKernels::MicroOnly);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&rows), bits(&micro), "case {index}");
        }
    }
}
