//! f32 transposed convolution (`Op::ConvTranspose`: x, w, optional b, fused activation), 1-D to
//! 3-D, any strides, dilations, pads, output padding and groups, on the f32 conv's
//! micro-kernel (`fconv::build_micro`).
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
//! The sum runs input channel by input channel, taps in order, one `fma` each; the
//! interpreter's GEMM + col2im adds in another order, so results agree to rounding
//! (the tests bound it at 1e-5 of the largest output).

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/fconv_transpose.rs"]
mod aot_parts;

use crate::fconv::{
    build_micro, f32_conv_operands, fill_zero_padded, micro_pack, micro_tables, vectors_for, Micro,
    MicroFn,
};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::qconv::AlignedBytes;
use crate::spatial::{check_window, widen, SP};
use crate::tensor_io::{bad_buffer, f32_operand, f32_result, shape_name};
use crate::CodegenError;
use kiln_ir::{ConvTransposeAttrs, Tensor, TensorType};

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
        let mut phases = Vec::new();
        for (index, phase) in plan.phases().into_iter().enumerate() {
            let (micro, tables) = phase_tables(&plan, phase);
            let taps: Vec<[usize; SP]> = phase_taps(&plan, phase);
            let k_taps: usize = plan.kernel.iter().product();
            let packed = micro_pack(
                &micro,
                // kk = ci·taps + t; w[(g·cin_g + ci)][c][tap]
                |g, c, kk| {
                    let (ci, t) = (kk / taps.len(), taps[kk % taps.len()]);
                    let tap = (t[0] * plan.kernel[1] + t[1]) * plan.kernel[2] + t[2];
                    w[((g * plan.cin_g + ci) * plan.cout_g + c) * k_taps + tap]
                },
                |c| bias.map_or(0.0, |b| b[c]),
            );
            let func = build_micro(&jit, &micro, node.attrs.act.as_ref(), fma);
            // SAFETY: `build_micro` builds five pointer parameters and no results —
            // `MicroFn`; the kernel owns `jit`, so the code outlives every call.
            let function: MicroFn = unsafe { jit.compile_as(&phase_name(&name, index), func)? };
            phases.push(Phase {
                packed: AlignedBytes::from_bytes(&packed),
                tables: AlignedBytes::from_bytes(&tables),
                macs: (plan.batch * c_out * micro.pixels * micro.k) as u64,
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
        for n in 0..plan.batch {
            fill_zero_padded(
                &x[n * x_image..(n + 1) * x_image],
                &mut scratch.bytes,
                plan.input,
                plan.padded,
                plan.pad_begin,
            );
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            for phase in &self.phases {
                // SAFETY: valid while `self.code` lives. The function reads its phase's
                // packed weights and tables, the scratch at offsets inside `scratch_bytes`
                // (the padded extents cover every tap of every phase: `AxisPhases::new`),
                // no residual (none was compiled), and writes its phase's pixels of the
                // `out_image` floats of `out_n`; all lengths are checked above.
                unsafe {
                    (phase.function)(
                        phase.packed.as_slice().as_ptr(),
                        phase.tables.as_slice().as_ptr(),
                        scratch.bytes.as_slice().as_ptr(),
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
}
