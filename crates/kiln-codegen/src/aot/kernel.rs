//! [`AotKernel`]: one op's kernel for an object file — its CLIF functions, packed constants,
//! scratch size and the calls one run makes — built by the same generators as the JIT.

use super::{parts, recording, AotTarget};
use crate::{
    ActivationKernel, BinaryKernel, CodegenError, ConcatKernel, DequantizeKernel, FConvKernel,
    FConvNode, FConvTransposeKernel, FConvTransposeNode, JitOptions, MaxPoolKernel, PoolKernel,
    PoolKind, QConvKernel, QConvNode, QConvTuning, QuantizeKernel, ResizeKernel, SoftmaxKernel,
};
use cranelift_codegen::ir::Function;
use kiln_ir::{Activation, BinaryOp, PoolAttrs, ResizeAttrs, TensorType};

/// One argument of a kernel call, resolved by [`super::ObjectBuilder`] to an address or
/// integer of the generated entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallArg {
    /// The kernel's packed constant blob `k` (read-only data of the object).
    Blob(usize),
    /// The kernel's working memory, at this byte offset.
    Scratch(usize),
    /// Runtime operand `operand` (in the kernel's operand order) at this byte offset.
    Read { operand: usize, offset: usize },
    /// The address of an array of every operand's address (Concat).
    ReadPointers,
    /// The output at this byte offset.
    Write { offset: usize },
    /// A pointer-sized integer.
    Int(u64),
}

/// One call of one of the kernel's functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCall {
    pub function: usize,
    pub args: Vec<CallArg>,
}

/// A kernel taken apart for an object file.
pub struct AotKernel {
    /// The kernel's name (op and shapes), as the JIT names it.
    pub name: String,
    /// `(name, CLIF)` of every function, built for the target; calls refer to them by index.
    pub(crate) functions: Vec<(String, Function)>,
    /// Packed constants (weights, tables), each placed 64-byte aligned.
    pub blobs: Vec<Vec<u8>>,
    /// Bytes of working memory (16-byte aligned) the calls need.
    pub scratch_bytes: usize,
    /// One run: these calls in order (batch items one after the other, single-threaded).
    pub calls: Vec<KernelCall>,
}

impl std::fmt::Debug for AotKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AotKernel")
            .field("name", &self.name)
            .field("functions", &self.functions.len())
            .field("calls", &self.calls.len())
            .field("scratch_bytes", &self.scratch_bytes)
            .finish()
    }
}

impl AotKernel {
    /// An int8 convolution, on the path the JIT would take (general, 1×1 or depthwise; both
    /// paths are CLIF end to end). The inner product follows the target: `sdot`/`usdot`
    /// trees on AArch64 with `+dotprod`/`+i8mm`, `vpdpbusd` on x86 with VNNI, else the
    /// `pmaddwd` tree.
    pub fn qconv(
        node: &QConvNode,
        tuning: &QConvTuning,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        Ok(recording(target, || {
            QConvKernel::compile(node, &JitOptions::default(), tuning)
        })?
        .into_aot())
    }

    /// An f32 convolution; operands `x`, then the residual when `node.residual`.
    pub fn conv_f32(node: &FConvNode, target: &AotTarget) -> Result<AotKernel, CodegenError> {
        let kernel = recording(target, || {
            FConvKernel::compile(node, &JitOptions::default())
        })?;
        Ok(kernel.into_aot(target))
    }

    /// An f32 ConvTranspose (every phase of the stride split).
    pub fn conv_transpose_f32(
        node: &FConvTransposeNode,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        let kernel = recording(target, || {
            FConvTransposeKernel::compile(node, &JitOptions::default())
        })?;
        Ok(kernel.into_aot(target))
    }

    /// Resize (nearest of any dtype; linear and cubic of f32).
    pub fn resize(
        attrs: &ResizeAttrs,
        x_ty: &TensorType,
        out_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        Ok(recording(target, || {
            ResizeKernel::compile(attrs, x_ty, out_ty, &JitOptions::default())
        })?
        .into_aot())
    }

    pub fn quantize(
        x_ty: &TensorType,
        out_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        Ok(recording(target, || {
            QuantizeKernel::compile(x_ty, out_ty, &JitOptions::default())
        })?
        .into_aot())
    }

    pub fn dequantize(
        x_ty: &TensorType,
        out_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        Ok(recording(target, || {
            DequantizeKernel::compile(x_ty, out_ty, &JitOptions::default())
        })?
        .into_aot())
    }

    /// int8 MaxPool (`attrs: None`: GlobalMaxPool).
    pub fn max_pool_int8(
        attrs: Option<&PoolAttrs>,
        x_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        let options = JitOptions::default();
        let kernel = recording(target, || match attrs {
            Some(attrs) => MaxPoolKernel::compile(attrs, x_ty, &options),
            None => MaxPoolKernel::compile_global(x_ty, &options),
        })?;
        kernel.into_aot(target)
    }

    /// f32 Max/AveragePool (`attrs: None`: the global pool).
    pub fn pool_f32(
        kind: PoolKind,
        attrs: Option<&PoolAttrs>,
        x_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        let options = JitOptions::default();
        let kernel = recording(target, || match attrs {
            Some(attrs) => PoolKernel::compile(kind, attrs, x_ty, &options),
            None => PoolKernel::compile_global(kind, x_ty, &options),
        })?;
        kernel.into_aot(target)
    }

    pub fn softmax(
        axis: usize,
        legacy: bool,
        x_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        Ok(recording(target, || {
            SoftmaxKernel::compile(axis, legacy, x_ty, &JitOptions::default())
        })?
        .into_aot())
    }

    pub fn concat(
        axis: usize,
        inputs: &[&TensorType],
        out_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        Ok(recording(target, || {
            ConcatKernel::compile(axis, inputs, out_ty, &JitOptions::default())
        })?
        .into_aot())
    }

    /// An f32 activation (ReLU, Clip, sigmoid, ...).
    pub fn activation(
        act: &Activation,
        x_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        Ok(recording(target, || {
            ActivationKernel::compile(act, x_ty, &JitOptions::default())
        })?
        .into_aot())
    }

    /// f32 add/sub/mul/div with numpy broadcasting; operands `a`, `b`.
    pub fn binary(
        op: BinaryOp,
        a_ty: &TensorType,
        b_ty: &TensorType,
        out_ty: &TensorType,
        target: &AotTarget,
    ) -> Result<AotKernel, CodegenError> {
        Ok(recording(target, || {
            BinaryKernel::compile(op, a_ty, b_ty, out_ty, &JitOptions::default())
        })?
        .into_aot())
    }

    /// A byte copy of `bytes` bytes (shape-only ops, outputs that are inputs or constants).
    pub fn copy(bytes: usize, target: &AotTarget) -> AotKernel {
        parts::copy_kernel(bytes, target)
    }
}
