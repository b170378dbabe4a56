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

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "aot/parts/fpool.rs"]
mod aot_parts;

use crate::clif::{splat_f32, vcast};
use crate::jit::{kernel_identity, JitOptions};
use crate::pool_window::{global_pool_attrs, PoolGeometry, Reduction, WindowKernel};
use crate::qconv::AlignedBytes;
use crate::spatial::SP;
use crate::tensor_io::{f32_operand, f32_result, shape_name};
use crate::CodegenError;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder};
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
    window: WindowKernel,
    kind: PoolKind,
}

kernel_identity!(PoolKernel, window.code);

/// Working memory of a [`PoolKernel`] (the channel-last padded input).
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
        let window = WindowKernel::compile(name, geo, layout, &reduction, &divisors, options)?;
        Ok(PoolKernel { window, kind })
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
        &self.window.geo.out_shape
    }

    pub fn new_scratch(&self) -> PoolScratch {
        PoolScratch {
            bytes: self.window.new_scratch(),
        }
    }

    pub fn run_into(
        &self,
        x: &[f32],
        out: &mut [f32],
        scratch: &mut PoolScratch,
    ) -> Result<(), CodegenError> {
        self.window
            .run_into(x, out, &mut scratch.bytes, self.kind.padding())
    }

    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        let name = self.name();
        let xv = f32_operand(name, x, Some(&self.window.geo.x_shape))?;
        let mut out = vec![0f32; self.output_shape().iter().product()];
        self.run_into(xv, &mut out, &mut self.new_scratch())?;
        f32_result(name, self.output_shape(), out)
    }
}
