//! The int8 convolution kernel (`Op::QConv`, ONNX QLinearConv with a fused clamp): compile a
//! node into a [`QConvKernel`] specialized to its shapes, strides, pads, dilations, groups,
//! quantization and activation, with its weights packed, and run it on input buffers.
//! Results equal `kiln-interp`'s bit for bit (see docs/kernels.md for the arithmetic).

// AOT: `into_aot` of this kernel (crate::aot).
#[path = "../aot/parts/qconv.rs"]
mod aot_parts;

mod depthwise;
pub(crate) mod emit;
pub(crate) mod layout;
pub(crate) mod plan;

use crate::felem_chain::{ChainNode, Program};
use crate::jit::{kernel_identity, Jit, JitOptions, KernelCode};
use crate::parallel::for_each_part;
use crate::CodegenError;
use depthwise::DwLayout;
use kiln_ir::{ConvAttrs, DType, Tensor, TensorData, TensorType};
pub use layout::InnerProduct;
use layout::Layout;
use plan::QConvPlan;

/// Micro-kernel shape: `rows` output pixels × `col_vectors` I32X4 vectors of output channels.
/// The default (4 × 2: 8 accumulators, 2 weight registers, 1 broadcast) leaves x64's 16 xmm
/// registers room; both are clamped to the problem (fewer pixels or channels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QConvTuning {
    pub rows: usize,
    pub col_vectors: usize,
    /// Use a byte dot product where the ISA has one (`vpdpbusd`: AVX-VNNI, or AVX512-VNNI
    /// with VL; AArch64 `sdot`/`usdot`: dotprod, i8mm; [`InnerProduct::select`]) and the
    /// centered weights fit i8; `false` forces the `pmaddwd` inner product (for tests and
    /// comparisons).
    pub allow_vnni: bool,
    /// Use the depthwise kernel (vectorized over channels, taps side by side in the inner
    /// product) when `groups == C_in == C_out`; `false` forces the general micro-kernel
    /// (for tests and comparisons).
    pub allow_depthwise: bool,
}

impl Default for QConvTuning {
    fn default() -> Self {
        QConvTuning {
            rows: 4,
            col_vectors: 2,
            allow_vnni: true,
            allow_depthwise: true,
        }
    }
}

/// A 16-byte aligned byte buffer without `unsafe`: a `Vec<u8>` with 15 spare bytes, used
/// from the first 16-byte boundary (the heap block never moves: the Vec is never resized).
#[derive(Debug)]
pub(crate) struct AlignedBytes {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBytes {
    pub(crate) fn zeroed(len: usize) -> AlignedBytes {
        let buf = vec![0u8; len + 15];
        let start = buf.as_ptr().align_offset(16);
        AlignedBytes { buf, start, len }
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(bytes.len());
        a.as_mut_slice().copy_from_slice(bytes);
        a
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Working memory of a [`QConvKernel`] (the widened, padded input), reusable across calls
/// and across kernels: a kernel uses its first [`QConvKernel::scratch_bytes`] bytes and
/// writes every one of them it reads before reading it, so one scratch as large as the
/// largest kernel's can serve a whole model (kernels that run one after another then work
/// in the same, cache-warm memory).
#[derive(Debug)]
pub struct QConvScratch {
    bytes: AlignedBytes,
}

impl QConvScratch {
    /// A zeroed scratch of `bytes` bytes.
    pub fn zeroed(bytes: usize) -> QConvScratch {
        QConvScratch {
            bytes: AlignedBytes::zeroed(bytes),
        }
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len
    }

    /// Whether it has no bytes (a model without int8 convolutions).
    pub fn is_empty(&self) -> bool {
        self.bytes.len == 0
    }
}

/// Integer element types a kernel reads and writes.
pub trait Int8: bytemuck::Pod + sealed::Sealed {
    const DTYPE: DType;
    /// The element's bits.
    fn bits(self) -> u8;
}
impl Int8 for u8 {
    const DTYPE: DType = DType::U8;
    fn bits(self) -> u8 {
        self
    }
}
impl Int8 for i8 {
    const DTYPE: DType = DType::I8;
    fn bits(self) -> u8 {
        self as u8
    }
}
mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// The compiled widening step of one batch item over the parts `first..end` (input rows
/// of the general path, channels of the depthwise path): `(x, scratch, first, end)`.
type WidenFn = unsafe extern "C" fn(*const u8, *mut u8, usize, usize);
/// The compiled convolution of one batch item over the parts `first..end` (channel tiles
/// of the general path, channels of the depthwise path): `(packed constants, scratch,
/// out, first, end, fused operands)`; the last is the array of a fused epilogue's operand
/// pointers (read only by a kernel compiled with one, [`QConvEpilogue`]).
type RangeComputeFn =
    unsafe extern "C" fn(*const u8, *const u8, *mut u8, usize, usize, *const *const u8);

/// A QConv node's operands as the kernel generator needs them: `x_ty` the input type (u8/i8
/// quantized per tensor), `w` the constant weights `[C_out, C_in/groups, k..]` with type
/// `w_ty` (per tensor or per output channel), `bias` the optional constant i32 bias with its
/// type, `out_ty` the output type (u8/i8 per tensor).
#[derive(Clone, Copy, Debug)]
pub struct QConvNode<'a> {
    pub attrs: &'a ConvAttrs,
    pub x_ty: &'a TensorType,
    pub w: &'a Tensor,
    pub w_ty: &'a TensorType,
    pub bias: Option<(&'a Tensor, &'a TensorType)>,
    pub out_ty: &'a TensorType,
}

/// An elementwise chain fused into a QConv's epilogue, run on each requantized output
/// element before it is stored: the residual add with its own requantization
/// (`quantize(relu(dequantize(y) + dequantize(r)))`), dequantizing straight to f32
/// (`dequantize(y)`), or any chain [`crate::ElementwiseChainKernel`] takes whose operands
/// all have the output's elements in the output's order. `operands[conv_operand]` is the
/// convolution's own output (its type must be the node's `out_ty`); the kernel's output is
/// the chain's last node's (u8, i8 or f32). The results are those of the conv and the chain
/// run one after the other, bit for bit: the chain runs the fused-chain kernel's
/// instructions lane for lane.
#[derive(Clone, Copy, Debug)]
pub struct QConvEpilogue<'a> {
    pub operands: &'a [TensorType],
    pub conv_operand: usize,
    pub nodes: &'a [ChainNode],
}

/// What a kernel compiled with a [`QConvEpilogue`] reads and writes beyond the plain conv.
#[derive(Debug)]
struct FusedIo {
    /// The chain's operand types (the conv's own at `conv_operand`).
    operands: Vec<TensorType>,
    conv_operand: usize,
    out_ty: TensorType,
}

/// Check a fused epilogue against its conv: a valid chain whose conv operand has the conv's
/// output type and whose every operand and output has the conv output's elements in its
/// order; the conv must take the general path.
fn check_epilogue(
    node: &QConvNode,
    epilogue: &QConvEpilogue,
    depthwise: bool,
) -> Result<FusedIo, CodegenError> {
    const OP: &str = "qconv_epilogue";
    let unsupported = |reason: String| CodegenError::Unsupported { op: OP, reason };
    let out_ty = crate::felem_chain::validate(epilogue.operands, epilogue.nodes)?;
    match epilogue.operands.get(epilogue.conv_operand) {
        Some(ty) if ty == node.out_ty => {}
        other => {
            return Err(CodegenError::InvalidOp {
                op: OP,
                reason: format!(
                    "chain operand {} is {}, the conv's output is {}",
                    epilogue.conv_operand,
                    other.map_or("missing".to_string(), |t| t.to_string()),
                    node.out_ty
                ),
            })
        }
    }
    let trimmed = kiln_ir::infer::trimmed_shape;
    let conv_elements = trimmed(&node.out_ty.shape);
    if let Some(t) = epilogue
        .operands
        .iter()
        .chain([&out_ty])
        .find(|t| trimmed(&t.shape) != conv_elements)
    {
        return Err(unsupported(format!(
            "{t} is not laid out as the conv's output {} (a fused epilogue does not broadcast)",
            node.out_ty
        )));
    }
    if depthwise {
        return Err(unsupported(
            "the depthwise path has no fused epilogue".to_string(),
        ));
    }
    Ok(FusedIo {
        operands: epilogue.operands.to_vec(),
        conv_operand: epilogue.conv_operand,
        out_ty,
    })
}

/// Which kernel a [`QConvKernel`] was built as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QConvPath {
    /// The implicit-GEMM micro-kernel over one group's output channels (any conv).
    General,
    /// One channel per group (`groups == C_in == C_out`): vectorized over channels, with
    /// adjacent kernel taps as the inner product's pairs or quads (docs/kernels.md).
    Depthwise,
}

/// The path-specific parts of a compiled kernel.
enum Path {
    /// The general micro-kernel, with its JIT-compiled widening step; its compute function
    /// takes a range of channel tiles, so threads can split it.
    General {
        layout: Layout,
        widen: WidenFn,
        compute: RangeComputeFn,
    },
    /// The depthwise kernel, with its JIT-compiled widening step (the padded input); its
    /// compute function takes a range of channels.
    Depthwise {
        layout: DwLayout,
        widen: WidenFn,
        compute: RangeComputeFn,
    },
}

/// A compiled QConv. Owns its machine code, packed constants and the JIT that holds them.
pub struct QConvKernel {
    plan: QConvPlan,
    path: Path,
    /// The fused epilogue's operands and output, when compiled with one.
    fused: Option<FusedIo>,
    packed: AlignedBytes,
    /// Declared last: dropped after everything else; the path's functions point into it.
    code: KernelCode,
}

kernel_identity!(QConvKernel, code);

impl QConvKernel {
    /// Compile a QConv node for the host.
    pub fn compile(
        node: &QConvNode,
        options: &JitOptions,
        tuning: &QConvTuning,
    ) -> Result<QConvKernel, CodegenError> {
        QConvKernel::compile_fused(node, None, options, tuning)
    }

    /// Compile a QConv node for the host with an elementwise chain fused into its epilogue
    /// ([`QConvEpilogue`]; `None`: as [`QConvKernel::compile`]). Only the general path
    /// takes a chain: a conv that would take the depthwise path (unless `tuning` forbids
    /// it) is [`CodegenError::Unsupported`], as are chain operands that broadcast.
    pub fn compile_fused(
        node: &QConvNode,
        epilogue: Option<&QConvEpilogue>,
        options: &JitOptions,
        tuning: &QConvTuning,
    ) -> Result<QConvKernel, CodegenError> {
        let plan = QConvPlan::new(
            node.attrs,
            node.x_ty,
            node.w,
            node.w_ty,
            node.bias,
            node.out_ty,
        )?;
        let mut jit = Jit::host(options)?;
        // the byte dot products multiply by s8: activations get the signedness the
        // instruction reads (shifted by ±128), the centered weights must already be s8
        let weights_fit_i8 = plan.weights.iter().all(|&w| (-128..=127).contains(&w));
        let inner = if tuning.allow_vnni && weights_fit_i8 {
            InnerProduct::select(jit.features(), plan.x_dtype)
        } else {
            InnerProduct::Pmaddwd
        };
        let name = format!(
            "qconv_{}x{}_k{:?}_s{:?}_g{}",
            plan.c_in, plan.c_out, plan.kernel, plan.stride, plan.groups
        )
        .replace([' ', '[', ']', ','], "");
        let depthwise = tuning.allow_depthwise && plan.cin_g == 1 && plan.cout_g == 1;
        let fused = match epilogue {
            Some(epilogue) => Some(check_epilogue(node, epilogue, depthwise)?),
            None => None,
        };
        let fusion = fused.as_ref().map(|io| emit::Fusion {
            program: Program::for_lanes(
                &io.operands,
                epilogue.expect("checked above").nodes,
                jit.features().is_x86_64(),
            ),
            conv_operand: io.conv_operand,
        });
        let name = match &fused {
            Some(_) => format!(
                "{name}_{}",
                epilogue
                    .expect("checked above")
                    .nodes
                    .iter()
                    .map(|n| n.op.name())
                    .collect::<Vec<_>>()
                    .join("_")
            ),
            None => name,
        };
        let (path, packed) = if depthwise {
            let layout = DwLayout::new(&plan, tuning, inner)?;
            let packed = AlignedBytes::from_bytes(&layout.pack(&plan));
            let widen_fn = depthwise::build_widen_function(
                &plan,
                &layout,
                jit.pointer_signature(4),
                jit.target_config(),
            );
            // SAFETY: the function has four pointer-sized parameters and no results —
            // `WidenFn` (the last two are integers of pointer size); `jit` is owned by the
            // kernel alongside it.
            let widen: WidenFn = unsafe { jit.compile_as(&format!("{name}_widen"), widen_fn)? };
            let compute_fn = depthwise::build_compute_function(
                &plan,
                &layout,
                jit.pointer_signature(6),
                jit.target_config(),
            );
            // SAFETY: the function has six pointer-sized parameters and no results —
            // `RangeComputeFn` (the fourth and fifth are integers of pointer size); `jit` is
            // owned by the kernel alongside it.
            let compute: RangeComputeFn = unsafe { jit.compile_as(&name, compute_fn)? };
            (
                Path::Depthwise {
                    layout,
                    widen,
                    compute,
                },
                packed,
            )
        } else {
            let layout = Layout::new(&plan, tuning, inner)?;
            let packed = AlignedBytes::from_bytes(&layout.pack(&plan));
            let widen_fn = emit::build_widen_function(
                &plan,
                &layout,
                jit.pointer_signature(4),
                jit.target_config(),
            );
            // SAFETY: the function has four pointer-sized parameters and no results —
            // `WidenFn` (the last two are integers of pointer size); `jit` is owned by the
            // kernel alongside it.
            let widen: WidenFn = unsafe { jit.compile_as(&format!("{name}_widen"), widen_fn)? };
            // three pointers, two pointer-sized tile indices, the fused operands' pointers
            let compute_fn = emit::build_compute_function(
                &plan,
                &layout,
                fusion.as_ref(),
                jit.pointer_signature(6),
                jit.target_config(),
            );
            // SAFETY: the function has six pointer-sized parameters and no results —
            // `RangeComputeFn` (the fourth and fifth are integers of pointer size); `jit` is
            // owned by the kernel alongside it.
            let compute: RangeComputeFn = unsafe { jit.compile_as(&name, compute_fn)? };
            (
                Path::General {
                    layout,
                    widen,
                    compute,
                },
                packed,
            )
        };
        Ok(QConvKernel {
            plan,
            path,
            fused,
            packed,
            code: KernelCode::new(jit, name),
        })
    }

    /// The listing of the widening step, when compiled with `capture_disassembly`.
    pub fn widen_disassembly(&self) -> Option<&str> {
        self.code.disassembly(&format!("{}_widen", self.name()))
    }

    /// The output's shape: the conv's, or its fused epilogue's (the same elements).
    pub fn output_shape(&self) -> &[usize] {
        match &self.fused {
            Some(io) => &io.out_ty.shape,
            None => &self.plan.out_shape,
        }
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.plan.x_shape
    }

    /// Multiply-accumulates of one run (padding taps included, as the op's definition).
    pub fn macs(&self) -> u64 {
        self.plan.macs()
    }

    /// The inner product the micro-kernel was built from.
    pub fn inner_product(&self) -> InnerProduct {
        match &self.path {
            Path::General { layout, .. } => layout.inner,
            Path::Depthwise { layout, .. } => layout.inner,
        }
    }

    /// The kernel this node was built as.
    pub fn path(&self) -> QConvPath {
        match self.path {
            Path::General { .. } => QConvPath::General,
            Path::Depthwise { .. } => QConvPath::Depthwise,
        }
    }

    /// The micro-kernel actually used: `(output pixels, output channels)` per tile (the
    /// depthwise path's tiles are pixels of one channel).
    pub fn tile(&self) -> (usize, usize) {
        match &self.path {
            Path::General { layout, .. } => (layout.mr, 4 * layout.nr),
            Path::Depthwise { layout, .. } => (layout.tile_pixels(), 1),
        }
    }

    /// The scratch bytes a run uses.
    pub fn scratch_bytes(&self) -> usize {
        match &self.path {
            Path::General { layout, .. } => layout.scratch_bytes,
            Path::Depthwise { layout, .. } => layout.scratch_bytes,
        }
    }

    pub fn new_scratch(&self) -> QConvScratch {
        QConvScratch {
            bytes: AlignedBytes::zeroed(self.scratch_bytes()),
        }
    }

    /// Run on raw elements: `x` of the input shape, `out` of the output shape, both in the
    /// dtypes the kernel was compiled for.
    pub fn run_into<X: Int8, Y: Int8>(
        &self,
        x: &[X],
        out: &mut [Y],
        scratch: &mut QConvScratch,
    ) -> Result<(), CodegenError> {
        self.run_into_threads(x, out, scratch, 1)
    }

    /// How many parts [`QConvKernel::run_into_threads`] can split a batch item into: the
    /// general path's channel tiles (all groups); the depthwise path's channels.
    pub fn parallel_parts(&self) -> usize {
        match &self.path {
            Path::General { layout, .. } => self.plan.groups * layout.tiles_per_group,
            Path::Depthwise { .. } => self.plan.c_out,
        }
    }

    /// [`QConvKernel::run_into`] on up to `threads` threads (the calling one included): per
    /// batch item the threads first widen the input (claiming input rows, on the depthwise
    /// path channels, one at a time from a shared counter), then claim the channel tiles
    /// (the depthwise path: channels) the same way.
    /// Every output element is computed by the same instructions whatever the split, so the
    /// result is bit-identical for every thread count.
    pub fn run_into_threads<X: Int8, Y: Int8>(
        &self,
        x: &[X],
        out: &mut [Y],
        scratch: &mut QConvScratch,
        threads: usize,
    ) -> Result<(), CodegenError> {
        if X::DTYPE != self.plan.x_dtype || Y::DTYPE != self.plan.out_dtype || self.fused.is_some()
        {
            return Err(self.bad_buffer(format!(
                "buffers are {} → {}, the kernel takes {} → {}{}",
                X::DTYPE,
                Y::DTYPE,
                self.plan.x_dtype,
                self.plan.out_dtype,
                if self.fused.is_some() {
                    " and a fused epilogue (run_fused_into_threads)"
                } else {
                    ""
                }
            )));
        }
        self.run_bytes(
            bytemuck::cast_slice(x),
            &[],
            bytemuck::cast_slice_mut(out),
            scratch,
            threads,
        )
    }

    /// Run a kernel compiled with a [`QConvEpilogue`] on up to `threads` threads, as
    /// [`QConvKernel::run_into_threads`]: `x` the input's bytes, `operands` the bytes of the
    /// chain's operands other than the conv's own (in the chain's order), `out` the chain's
    /// output's (native-endian elements of their dtypes).
    pub fn run_fused_into_threads(
        &self,
        x: &[u8],
        operands: &[&[u8]],
        out: &mut [u8],
        scratch: &mut QConvScratch,
        threads: usize,
    ) -> Result<(), CodegenError> {
        if self.fused.is_none() {
            return Err(self.bad_buffer("the kernel has no fused epilogue".to_string()));
        }
        self.run_bytes(x, operands, out, scratch, threads)
    }

    /// The output's type: the conv's, or the fused epilogue's.
    pub fn out_dtype(&self) -> DType {
        match &self.fused {
            Some(io) => io.out_ty.dtype,
            None => self.plan.out_dtype,
        }
    }

    fn bad_buffer(&self, what: String) -> CodegenError {
        CodegenError::BadBuffer {
            kernel: self.name().to_string(),
            what,
        }
    }

    /// Both run entry points after their dtype checks: check every size, then per batch
    /// item widen and compute.
    fn run_bytes(
        &self,
        x: &[u8],
        operands: &[&[u8]],
        out: &mut [u8],
        scratch: &mut QConvScratch,
        threads: usize,
    ) -> Result<(), CodegenError> {
        let bad = |what: String| self.bad_buffer(what);
        let x_len = self.plan.x_shape.iter().product::<usize>();
        let out_len = match &self.fused {
            Some(io) => io.out_ty.byte_size(),
            None => self.plan.out_shape.iter().product::<usize>(),
        };
        if x.len() != x_len || out.len() != out_len {
            return Err(bad(format!(
                "input has {} bytes (expected {x_len}), output {} (expected {out_len})",
                x.len(),
                out.len()
            )));
        }
        // the fused operands other than the conv's own, with their sizes
        let expected: Vec<usize> = match &self.fused {
            Some(io) => io
                .operands
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != io.conv_operand)
                .map(|(_, t)| t.byte_size())
                .collect(),
            None => Vec::new(),
        };
        let lens: Vec<usize> = operands.iter().map(|o| o.len()).collect();
        if lens != expected {
            return Err(bad(format!(
                "fused operands of {lens:?} bytes, expected {expected:?}"
            )));
        }
        if scratch.bytes.len < self.scratch_bytes() {
            return Err(bad(format!(
                "scratch of {} bytes, at least {} needed (use new_scratch)",
                scratch.bytes.len,
                self.scratch_bytes()
            )));
        }
        let packed = self.packed.as_slice();
        let scratch = &mut scratch.bytes.as_mut_slice()[..self.scratch_bytes()];
        let batch = self.plan.batch.max(1);
        let (x_image, out_image) = (x_len / batch, out_len / batch);
        for n in 0..self.plan.batch {
            let x_n = &x[n * x_image..(n + 1) * x_image];
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            // the chain's operand pointers for this image, a null for the conv's own
            let mut rest = operands.iter();
            let pointers: Vec<*const u8> = match &self.fused {
                Some(io) => (0..io.operands.len())
                    .map(|k| match k == io.conv_operand {
                        true => std::ptr::null(),
                        false => {
                            let o = rest.next().expect("sizes checked above");
                            let image = o.len() / batch;
                            o[n * image..(n + 1) * image].as_ptr()
                        }
                    })
                    .collect(),
                None => Vec::new(),
            };
            let (Path::General { widen, compute, .. } | Path::Depthwise { widen, compute, .. }) =
                &self.path;
            self.widen_parts_of(*widen, x_n, scratch, threads);
            self.run_parts(*compute, packed, scratch, out_n, &pointers, threads);
        }
        Ok(())
    }

    /// How many parts the widening step of a batch item splits into: the general path's
    /// input rows (`D·H`), the depthwise path's channels.
    fn widen_parts(&self) -> usize {
        match &self.path {
            Path::General { .. } => self.plan.input[0] * self.plan.input[1],
            Path::Depthwise { .. } => self.plan.c_in,
        }
    }

    /// Widen one batch item (`x_n`: one image) into the scratch on up to `threads` threads:
    /// each part writes only its own scratch bytes, and the parts together write every byte
    /// the compute function reads.
    fn widen_parts_of(&self, widen: WidenFn, x_n: &[u8], scratch: &mut [u8], threads: usize) {
        debug_assert_eq!(scratch.len(), self.scratch_bytes());
        // addresses, not pointers, cross to the threads (pointers are not Send)
        let (x_at, scratch_at) = (x_n.as_ptr() as usize, scratch.as_mut_ptr() as usize);
        let run_range = |first: usize, end: usize| {
            // SAFETY: the entry is valid while `self.code` lives (`self` is borrowed for the
            // whole call). It reads one image of `x_n` (shared read-only; the caller checked
            // its size) and writes the scratch bytes of the parts `first..end` (`end <=
            // widen_parts`) of the 16-byte-aligned `scratch_bytes` at `scratch_at`:
            // `for_each_part` hands every part out once, and the parts' bytes are disjoint
            // (the widen functions' contract), so no byte is written by two threads, and
            // `scratch` stays exclusively borrowed until they finish. u8 and i8 have the
            // same size and alignment.
            unsafe { widen(x_at as *const u8, scratch_at as *mut u8, first, end) }
        };
        for_each_part(self.widen_parts(), threads, run_range);
    }

    /// Call `compute` on the parts (channel tiles, or channels on the depthwise path) of
    /// one batch item, on up to `threads` threads: each part writes only its own output
    /// channels, so any split gives the same bytes.
    fn run_parts(
        &self,
        compute: RangeComputeFn,
        packed: &[u8],
        scratch: &[u8],
        out_n: &mut [u8],
        operands: &[*const u8],
        threads: usize,
    ) {
        let parts = self.parallel_parts();
        // addresses, not pointers, cross to the threads (pointers are not Send)
        let (packed_at, scratch_at) = (packed.as_ptr() as usize, scratch.as_ptr() as usize);
        let out_at = out_n.as_mut_ptr() as usize;
        let operands_at = operands.as_ptr() as usize;
        let run_range = |first: usize, end: usize| {
            // SAFETY: the entry is valid while `self.code` lives (`self` is borrowed for
            // the whole call). `compute` reads the scratch (`scratch_bytes`, 16-byte
            // aligned, not written until every part has returned) and the packed blob it
            // was compiled against (16-byte aligned), both shared read-only, and writes
            // only the output channels of the parts `first..end` (`end <= parts`) of the
            // one image at `out_at`: `for_each_part` hands every part out once, so no byte
            // is written by two threads, and `out_n` stays exclusively borrowed (unused
            // otherwise) until they finish. A fused epilogue reads one image of each of its
            // operands through `operands` (alive until the threads finish; the caller
            // checked every size, and the elements it reads are the output's own); a
            // kernel without one does not read it.
            unsafe {
                compute(
                    packed_at as *const u8,
                    scratch_at as *const u8,
                    out_at as *mut u8,
                    first,
                    end,
                    operands_at as *const *const u8,
                )
            }
        };
        for_each_part(parts, threads, run_range);
    }

    /// Run only the widening step of the first batch item (`x`: one image) into `scratch`:
    /// for benchmarks that split a kernel's time between widening and compute.
    pub fn widen_into<X: Int8>(
        &self,
        x: &[X],
        scratch: &mut QConvScratch,
    ) -> Result<(), CodegenError> {
        let image = self.plan.x_shape.iter().product::<usize>() / self.plan.batch.max(1);
        if X::DTYPE != self.plan.x_dtype
            || x.len() != image
            || scratch.bytes.len < self.scratch_bytes()
        {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "widen_into takes one {} image of {image} elements and a scratch of at \
                     least {} bytes",
                    self.plan.x_dtype,
                    self.scratch_bytes()
                ),
            });
        }
        let (Path::General { widen, .. } | Path::Depthwise { widen, .. }) = &self.path;
        let scratch = &mut scratch.bytes.as_mut_slice()[..self.scratch_bytes()];
        self.widen_parts_of(*widen, bytemuck::cast_slice(x), scratch, 1);
        Ok(())
    }

    /// Run a kernel compiled with a [`QConvEpilogue`] on tensors: `x` and the chain's
    /// operands other than the conv's own (allocates output and scratch).
    pub fn run_fused(&self, x: &Tensor, operands: &[&Tensor]) -> Result<Tensor, CodegenError> {
        let Some(io) = &self.fused else {
            return Err(self.bad_buffer("the kernel has no fused epilogue".to_string()));
        };
        if x.shape() != self.plan.x_shape.as_slice() || x.dtype() != self.plan.x_dtype {
            return Err(self.bad_buffer(format!(
                "input {} {:?}, expected {} {:?}",
                x.dtype(),
                x.shape(),
                self.plan.x_dtype,
                self.plan.x_shape
            )));
        }
        let expected = io
            .operands
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != io.conv_operand)
            .map(|(_, t)| t);
        if operands.len() != io.operands.len() - 1 {
            return Err(self.bad_buffer(format!(
                "{} fused operands, expected {}",
                operands.len(),
                io.operands.len() - 1
            )));
        }
        for (t, ty) in operands.iter().zip(expected) {
            if t.shape() != ty.shape.as_slice() || t.dtype() != ty.dtype {
                return Err(self.bad_buffer(format!(
                    "fused operand {} {:?}, expected {ty}",
                    t.dtype(),
                    t.shape()
                )));
            }
        }
        let bytes: Vec<Vec<u8>> = operands.iter().map(|t| t.to_le_bytes()).collect();
        let views: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let mut out = vec![0u8; io.out_ty.byte_size()];
        let mut scratch = self.new_scratch();
        self.run_fused_into_threads(&x.to_le_bytes(), &views, &mut out, &mut scratch, 1)?;
        Tensor::new(
            io.out_ty.shape.clone(),
            crate::tensor_data_from_le_bytes(io.out_ty.dtype, &out),
        )
        .map_err(|e| self.bad_buffer(e.to_string()))
    }

    /// Run on a tensor, returning the output tensor (allocates output and scratch).
    pub fn run(&self, x: &Tensor) -> Result<Tensor, CodegenError> {
        if x.shape() != self.plan.x_shape.as_slice() {
            return Err(CodegenError::BadBuffer {
                kernel: self.name().to_string(),
                what: format!(
                    "input shape {:?}, expected {:?}",
                    x.shape(),
                    self.plan.x_shape
                ),
            });
        }
        let mut scratch = self.new_scratch();
        let n: usize = self.plan.out_shape.iter().product();
        let data = match (x.data(), self.plan.out_dtype) {
            (TensorData::U8(v), DType::U8) => {
                let mut out = vec![0u8; n];
                self.run_into(v, &mut out, &mut scratch)?;
                TensorData::U8(out)
            }
            (TensorData::U8(v), _) => {
                let mut out = vec![0i8; n];
                self.run_into(v, &mut out, &mut scratch)?;
                TensorData::I8(out)
            }
            (TensorData::I8(v), DType::U8) => {
                let mut out = vec![0u8; n];
                self.run_into(v, &mut out, &mut scratch)?;
                TensorData::U8(out)
            }
            (TensorData::I8(v), _) => {
                let mut out = vec![0i8; n];
                self.run_into(v, &mut out, &mut scratch)?;
                TensorData::I8(out)
            }
            _ => {
                return Err(CodegenError::BadBuffer {
                    kernel: self.name().to_string(),
                    what: format!("input is {}, expected {}", x.dtype(), self.plan.x_dtype),
                })
            }
        };
        Tensor::new(self.plan.out_shape.clone(), data).map_err(|e| CodegenError::BadBuffer {
            kernel: self.name().to_string(),
            what: e.to_string(),
        })
    }
}

/// Compile `node` with the byte dot product allowed and with `pmaddwd` forced, check each
/// takes `path`, and compare its output on `x` with the interpreter's (`what` names the
/// case in a failure): the unit tests' check of a kernel against the reference semantics.
#[cfg(test)]
pub(crate) fn assert_matches_interpreter(
    node: &QConvNode,
    x: &Tensor,
    path: QConvPath,
    options: &JitOptions,
    what: &str,
) {
    let (inputs, types): (Vec<&Tensor>, Vec<&TensorType>) = [(x, node.x_ty), (node.w, node.w_ty)]
        .into_iter()
        .chain(node.bias)
        .unzip();
    let want = kiln_interp::eval_op(
        &kiln_ir::Op::QConv(node.attrs.clone()),
        &inputs,
        &types,
        std::slice::from_ref(node.out_ty),
    )
    .expect("a valid conv");
    for allow_vnni in [true, false] {
        let tuning = QConvTuning {
            allow_vnni,
            ..QConvTuning::default()
        };
        let kernel = QConvKernel::compile(node, options, &tuning).expect("compiles");
        assert_eq!(kernel.path(), path, "{what} vnni {allow_vnni}");
        let got = kernel.run(x).expect("runs");
        assert_eq!(got, want[0], "{what} vnni {allow_vnni}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Activation, Quant};

    /// A 3×3 conv with 64 input and output channels: the shape of the benchmark.
    fn conv_64(options: &JitOptions, tuning: &QConvTuning) -> QConvKernel {
        let (c, hw) = (64, 6);
        let w = Tensor::new(vec![c, c, 3, 3], TensorData::I8(vec![1; c * c * 9])).unwrap();
        let x_ty =
            TensorType::new(DType::U8, vec![1, c, hw, hw]).with_quant(Quant::per_tensor(0.02, 128));
        let w_ty =
            TensorType::new(DType::I8, vec![c, c, 3, 3]).with_quant(Quant::per_tensor(0.01, 0));
        let y_ty =
            TensorType::new(DType::U8, vec![1, c, hw, hw]).with_quant(Quant::per_tensor(0.05, 0));
        let attrs = ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            groups: 1,
            act: Some(Activation::Relu),
        };
        let node = QConvNode {
            attrs: &attrs,
            x_ty: &x_ty,
            w: &w,
            w_ty: &w_ty,
            bias: None,
            out_ty: &y_ty,
        };
        QConvKernel::compile(&node, options, tuning).unwrap()
    }

    /// The k-loop bodies of a listing: blocks containing `instruction`.
    fn k_loops<'a>(listing: &'a str, instruction: &str) -> Vec<&'a str> {
        listing
            .split("\nblock")
            .filter(|b| b.contains(instruction))
            .collect()
    }

    /// The instruction selection the design relies on (DESIGN §6): the k-loop body is
    /// `pmaddwd` + `paddd` with every accumulator in a register. 32 channel pairs per tap
    /// run as a loop of two k-steps per iteration: 2 · (4 pixels × 2 vectors) `pmaddwd`s.
    #[test]
    fn inner_loop_is_pmaddwd_on_registers() {
        let tuning = QConvTuning {
            allow_vnni: false,
            ..QConvTuning::default()
        };
        let kernel = conv_64(
            &JitOptions {
                capture_disassembly: true,
                verify: Some(true),
            },
            &tuning,
        );
        assert_eq!(kernel.inner_product(), InnerProduct::Pmaddwd);
        if !cfg!(target_arch = "x86_64") {
            return;
        }
        let listing = kernel.disassembly().expect("captured");
        let k_loops = k_loops(listing, "pmaddwd");
        // one k-loop per tap of the full channel tiles
        assert_eq!(k_loops.len(), 9, "{listing}");
        for body in k_loops {
            assert_eq!(body.matches("pmaddwd").count(), 16, "{body}");
            assert_eq!(body.matches("paddd").count(), 16, "{body}");
            // no spill or reload of an accumulator
            assert!(!body.contains("rsp"), "{body}");
        }
    }

    /// With VNNI, the same layer's k-loop is `vpdpbusd` alone: 16 channel quads per tap,
    /// two per iteration, 2 · 8 `vpdpbusd`s accumulating in place (no `paddd`, no
    /// widening), every accumulator in a register.
    #[test]
    fn inner_loop_is_vpdpbusd_on_registers_with_vnni() {
        let kernel = conv_64(
            &JitOptions {
                capture_disassembly: true,
                verify: Some(true),
            },
            &QConvTuning::default(),
        );
        let host = Jit::host(&JitOptions::default()).expect("host is supported");
        if !host.features().has_xmm_vnni() {
            assert_eq!(kernel.inner_product(), InnerProduct::Pmaddwd);
            return;
        }
        assert_eq!(kernel.inner_product(), InnerProduct::Vpdpbusd);
        let listing = kernel.disassembly().expect("captured");
        let k_loops = k_loops(listing, "vpdpbusd");
        assert_eq!(k_loops.len(), 9, "{listing}");
        for body in k_loops {
            assert_eq!(body.matches("vpdpbusd").count(), 16, "{body}");
            for absent in ["paddd", "pmovsx", "pmovzx", "pmaddwd", "pmull", "rsp"] {
                assert!(!body.contains(absent), "{absent} in {body}");
            }
        }
    }

    /// Rows of at least 16 pixels, which the property tests (inputs of at most 9) never
    /// draw: the vector widening of whole channel quads (16 pixels at a time, with the
    /// ±128 shift for i8 activations, a scalar remainder, a partial last quad), the
    /// unpadded widening (no padding fill), and whole 4-pixel tiles stored as 32-bit words
    /// next to a last partial tile; checked against the interpreter with and without VNNI.
    #[test]
    fn wide_rows_match_the_interpreter() {
        let mut lcg = crate::testing::Lcg::new(0x9E37_79B9_7F4A_7C15);
        let mut next = move || lcg.next_u32();
        // (C_in, C_out, groups, height, width, kernel, stride, pad, i8 activations)
        let shapes = [
            (8, 12, 2, 3, 37, 1, 1, 0, false),
            (24, 28, 4, 5, 19, 1, 1, 0, true),
            (3, 10, 1, 9, 33, 3, 2, 1, false),
            (7, 9, 1, 4, 16, 3, 1, 1, true),
            (12, 20, 1, 2, 48, 1, 2, 0, false),
        ];
        for (c_in, c_out, groups, h, w, k, s, pad, x_signed) in shapes {
            let cin_g = c_in / groups;
            let x_dtype = if x_signed { DType::I8 } else { DType::U8 };
            let x_data = (0..c_in * h * w).map(|_| next() as u8);
            let x = Tensor::new(
                vec![1, c_in, h, w],
                if x_signed {
                    TensorData::I8(x_data.map(|v| v as i8).collect())
                } else {
                    TensorData::U8(x_data.collect())
                },
            )
            .unwrap();
            let w_shape = vec![c_out, cin_g, k, k];
            let w_len = c_out * cin_g * k * k;
            let wt = Tensor::new(
                w_shape.clone(),
                TensorData::I8((0..w_len).map(|_| next() as i8).collect()),
            )
            .unwrap();
            let b = Tensor::new(
                vec![c_out],
                TensorData::I32((0..c_out).map(|_| (next() % 4000) as i32 - 2000).collect()),
            )
            .unwrap();
            let (oh, ow) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1);
            let x_ty = TensorType::new(x_dtype, vec![1, c_in, h, w])
                .with_quant(Quant::per_tensor(0.03, if x_signed { -5 } else { 120 }));
            let w_ty = TensorType::new(DType::I8, w_shape).with_quant(Quant::PerAxis {
                axis: 0,
                scales: (0..c_out).map(|i| 0.002 + 0.0003 * i as f32).collect(),
                zero_points: vec![0; c_out],
            });
            let b_ty = TensorType::new(DType::I32, vec![c_out]);
            let y_ty = TensorType::new(DType::U8, vec![1, c_out, oh, ow])
                .with_quant(Quant::per_tensor(0.04, 7));
            let attrs = ConvAttrs {
                kernel: vec![k, k],
                strides: vec![s, s],
                pads: vec![pad; 4],
                dilations: vec![1, 1],
                groups,
                act: Some(Activation::Relu),
            };
            let node = QConvNode {
                attrs: &attrs,
                x_ty: &x_ty,
                w: &wt,
                w_ty: &w_ty,
                bias: Some((&b, &b_ty)),
                out_ty: &y_ty,
            };
            assert_matches_interpreter(
                &node,
                &x,
                QConvPath::General,
                &JitOptions::default(),
                &format!("{c_in}→{c_out} g{groups} {h}×{w} k{k} s{s} p{pad}"),
            );
        }
    }

    /// A u8 (or i8, by `dtype`) tensor of `shape` with bytes from `next`.
    fn random_int8(next: &mut impl FnMut() -> u32, shape: &[usize], dtype: DType) -> Tensor {
        let bytes = (0..shape.iter().product()).map(|_| next() as u8);
        let data = match dtype {
            DType::I8 => TensorData::I8(bytes.map(|b| b as i8).collect()),
            _ => TensorData::U8(bytes.collect()),
        };
        Tensor::new(shape.to_vec(), data).unwrap()
    }

    /// A kernel compiled with a fused epilogue equals the plain conv followed by the
    /// fused-chain kernel, bit for bit: residual adds with their own requantization (u8 and
    /// i8, the residual of either type, with ReLU), an f32 residual, and dequantization
    /// straight to f32; over whole and partial 4-pixel tiles, partial channel tiles,
    /// groups, a 1-D conv, batch 2, the per-element store (`rows: 3`) and 1–3 threads.
    #[test]
    fn fused_epilogues_equal_the_conv_then_the_chain() {
        use crate::felem_chain::{ChainArg, ChainOp};
        use crate::ElementwiseChainKernel;
        let mut lcg = crate::testing::Lcg::new(0x5DEE_CE66_D1CE_4E5B);
        let mut next = move || lcg.next_u32();
        let q = |dtype: DType, shape: &[usize], scale: f32, zp: i32| {
            TensorType::new(dtype, shape.to_vec()).with_quant(Quant::per_tensor(scale, zp))
        };
        // (batch, C_in, C_out, groups, spatial, kernel, stride, pad, conv out i8, rows)
        type Shape = (usize, usize, usize, usize, &'static [usize]);
        type Window = (usize, usize, usize, bool, usize);
        let shapes: [(Shape, Window); 6] = [
            ((1, 16, 24, 1, &[7, 9]), (1, 1, 0, false, 4)),
            ((2, 8, 13, 1, &[5, 6]), (3, 1, 1, true, 4)),
            ((1, 12, 20, 4, &[6, 7]), (1, 1, 0, false, 4)),
            ((1, 6, 9, 1, &[4, 5]), (3, 2, 1, false, 3)),
            ((1, 5, 7, 1, &[23]), (3, 1, 1, true, 4)),
            ((2, 4, 32, 1, &[8, 8]), (1, 1, 0, true, 4)),
        ];
        for ((batch, c_in, c_out, groups, spatial), (k, s, pad, y_signed, rows)) in shapes {
            let dims = spatial.len();
            let cin_g = c_in / groups;
            let x_shape: Vec<usize> = [batch, c_in].iter().chain(spatial).copied().collect();
            let out_spatial: Vec<usize> =
                spatial.iter().map(|&d| (d + 2 * pad - k) / s + 1).collect();
            let y_shape: Vec<usize> = [batch, c_out].iter().chain(&out_spatial).copied().collect();
            let elements: usize = y_shape.iter().product();
            let x = random_int8(&mut next, &x_shape, DType::U8);
            let w_shape: Vec<usize> = [c_out, cin_g].into_iter().chain(vec![k; dims]).collect();
            let w = random_int8(&mut next, &w_shape, DType::I8);
            let x_ty = q(DType::U8, &x_shape, 0.03, 118);
            let w_ty = TensorType::new(DType::I8, w_shape).with_quant(Quant::per_tensor(0.004, 0));
            let y_dtype = if y_signed { DType::I8 } else { DType::U8 };
            let y_ty = q(y_dtype, &y_shape, 0.05, if y_signed { -3 } else { 9 });
            let attrs = ConvAttrs {
                kernel: vec![k; dims],
                strides: vec![s; dims],
                pads: vec![pad; 2 * dims],
                dilations: vec![1; dims],
                groups,
                act: None,
            };
            let node = QConvNode {
                attrs: &attrs,
                x_ty: &x_ty,
                w: &w,
                w_ty: &w_ty,
                bias: None,
                out_ty: &y_ty,
            };
            let tuning = QConvTuning {
                rows,
                ..QConvTuning::default()
            };
            let options = JitOptions::default();
            let plain = QConvKernel::compile(&node, &options, &tuning).unwrap();
            let y = plain.run(&x).unwrap();
            let f32_ty = TensorType::new(DType::F32, y_shape.clone());
            let node = |op, args: &[ChainArg], out_ty: &TensorType| ChainNode {
                op,
                args: args.to_vec(),
                out_ty: out_ty.clone(),
            };
            let (o0, o1) = (ChainArg::Operand(0), ChainArg::Operand(1));
            let (n0, n1, n2, n3) = (
                ChainArg::Node(0),
                ChainArg::Node(1),
                ChainArg::Node(2),
                ChainArg::Node(3),
            );
            // (what, chain operands, chain, operand values)
            type Case = (&'static str, Vec<TensorType>, Vec<ChainNode>, Vec<Tensor>);
            let mut cases: Vec<Case> = Vec::new();
            for (r_dtype, out_dtype) in [(DType::U8, DType::U8), (DType::I8, DType::I8)] {
                let r_ty = q(
                    r_dtype,
                    &y_shape,
                    0.07,
                    if r_dtype == DType::I8 { 5 } else { 130 },
                );
                let out_ty = q(
                    out_dtype,
                    &y_shape,
                    0.09,
                    if out_dtype == DType::I8 { -7 } else { 3 },
                );
                let chain = vec![
                    node(ChainOp::Dequantize, &[o0], &f32_ty),
                    node(ChainOp::Dequantize, &[o1], &f32_ty),
                    node(ChainOp::Binary(kiln_ir::BinaryOp::Add), &[n0, n1], &f32_ty),
                    node(ChainOp::Activation(Activation::Relu), &[n2], &f32_ty),
                    node(ChainOp::Quantize, &[n3], &out_ty),
                ];
                let r = random_int8(&mut next, &y_shape, r_dtype);
                cases.push((
                    "residual",
                    vec![y_ty.clone(), r_ty],
                    chain,
                    vec![y.clone(), r],
                ));
            }
            let dequantize = vec![node(ChainOp::Dequantize, &[o0], &f32_ty)];
            cases.push((
                "dequantize",
                vec![y_ty.clone()],
                dequantize,
                vec![y.clone()],
            ));
            // an f32 residual, the conv's value second
            let r = Tensor::new(
                y_shape.clone(),
                TensorData::F32((0..elements).map(|_| next() as f32 / 2e9 - 0.5).collect()),
            )
            .unwrap();
            let f32_add = vec![
                node(ChainOp::Dequantize, &[o1], &f32_ty),
                node(ChainOp::Binary(kiln_ir::BinaryOp::Sub), &[o0, n0], &f32_ty),
            ];
            cases.push((
                "f32 residual",
                vec![f32_ty.clone(), y_ty.clone()],
                f32_add,
                vec![r, y.clone()],
            ));
            for (what, operands, chain, inputs) in cases {
                let conv_operand = operands.iter().position(|t| *t == y_ty).unwrap();
                let chain_kernel =
                    ElementwiseChainKernel::compile(&operands, &chain, &options).unwrap();
                let refs: Vec<&Tensor> = inputs.iter().collect();
                let want = chain_kernel.run(&refs).unwrap();
                let epilogue = QConvEpilogue {
                    operands: &operands,
                    conv_operand,
                    nodes: &chain,
                };
                let node = QConvNode {
                    attrs: &attrs,
                    x_ty: &x_ty,
                    w: &w,
                    w_ty: &w_ty,
                    bias: None,
                    out_ty: &y_ty,
                };
                let fused =
                    QConvKernel::compile_fused(&node, Some(&epilogue), &options, &tuning).unwrap();
                let rest: Vec<&Tensor> = refs
                    .iter()
                    .enumerate()
                    .filter(|&(k, _)| k != conv_operand)
                    .map(|(_, t)| *t)
                    .collect();
                let case =
                    format!("{what}: {x_shape:?} → {y_shape:?} g{groups} k{k} s{s} rows {rows}");
                let got = fused.run_fused(&x, &rest).unwrap();
                assert_eq!(got.to_le_bytes(), want.to_le_bytes(), "{case}");
                assert_eq!(got.shape(), want.shape(), "{case}");
                for threads in [2, 3] {
                    let bytes: Vec<Vec<u8>> = rest.iter().map(|t| t.to_le_bytes()).collect();
                    let views: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
                    let mut out = vec![0u8; want.to_le_bytes().len()];
                    let mut scratch = fused.new_scratch();
                    fused
                        .run_fused_into_threads(
                            &x.to_le_bytes(),
                            &views,
                            &mut out,
                            &mut scratch,
                            threads,
                        )
                        .unwrap();
                    assert_eq!(out, want.to_le_bytes(), "{case}, {threads} threads");
                }
            }
        }
    }

    /// Epilogues the kernel cannot fuse are errors (the caller then runs the chain on its
    /// own): a depthwise conv, a broadcast operand, a conv operand of another type.
    #[test]
    fn unfusable_epilogues_are_errors() {
        use crate::felem_chain::{ChainArg, ChainOp};
        let c = 8;
        let shape = vec![1, c, 5, 5];
        let x_ty =
            TensorType::new(DType::U8, shape.clone()).with_quant(Quant::per_tensor(0.02, 128));
        let y_ty = TensorType::new(DType::U8, shape.clone()).with_quant(Quant::per_tensor(0.05, 0));
        let f32_ty = TensorType::new(DType::F32, shape.clone());
        let conv = |groups: usize, w: &Tensor, w_ty: &TensorType, epilogue: &QConvEpilogue| {
            let attrs = ConvAttrs {
                kernel: vec![3, 3],
                strides: vec![1, 1],
                pads: vec![1; 4],
                dilations: vec![1, 1],
                groups,
                act: None,
            };
            let node = QConvNode {
                attrs: &attrs,
                x_ty: &x_ty,
                w,
                w_ty,
                bias: None,
                out_ty: &y_ty,
            };
            QConvKernel::compile_fused(
                &node,
                Some(epilogue),
                &JitOptions::default(),
                &QConvTuning::default(),
            )
            .map(|_| ())
        };
        let dequantize = [ChainNode {
            op: ChainOp::Dequantize,
            args: vec![ChainArg::Operand(0)],
            out_ty: f32_ty.clone(),
        }];
        let operands = [y_ty.clone()];
        let epilogue = QConvEpilogue {
            operands: &operands,
            conv_operand: 0,
            nodes: &dequantize,
        };
        let dw = Tensor::new(vec![c, 1, 3, 3], TensorData::I8(vec![1; c * 9])).unwrap();
        let dw_ty =
            TensorType::new(DType::I8, vec![c, 1, 3, 3]).with_quant(Quant::per_tensor(0.01, 0));
        let full = Tensor::new(vec![c, c, 3, 3], TensorData::I8(vec![1; c * c * 9])).unwrap();
        let full_ty =
            TensorType::new(DType::I8, vec![c, c, 3, 3]).with_quant(Quant::per_tensor(0.01, 0));
        assert!(conv(1, &full, &full_ty, &epilogue).is_ok());
        let err = conv(c, &dw, &dw_ty, &epilogue).unwrap_err();
        assert!(err.to_string().contains("depthwise"), "{err}");
        // a per-channel f32 operand broadcasts
        let bias_ty = TensorType::new(DType::F32, vec![1, c, 1, 1]);
        let add = [
            ChainNode {
                op: ChainOp::Dequantize,
                args: vec![ChainArg::Operand(0)],
                out_ty: f32_ty.clone(),
            },
            ChainNode {
                op: ChainOp::Binary(kiln_ir::BinaryOp::Add),
                args: vec![ChainArg::Node(0), ChainArg::Operand(1)],
                out_ty: f32_ty.clone(),
            },
        ];
        let operands = [y_ty.clone(), bias_ty];
        let epilogue = QConvEpilogue {
            operands: &operands,
            conv_operand: 0,
            nodes: &add,
        };
        let err = conv(1, &full, &full_ty, &epilogue).unwrap_err();
        assert!(err.to_string().contains("broadcast"), "{err}");
        let other = [y_ty.clone().with_quant(Quant::per_tensor(0.5, 0))];
        let epilogue = QConvEpilogue {
            operands: &other,
            conv_operand: 0,
            nodes: &dequantize,
        };
        let err = conv(1, &full, &full_ty, &epilogue).unwrap_err();
        assert!(err.to_string().contains("conv's output"), "{err}");
    }

    #[test]
    fn rejects_wrong_buffers() {
        let kernel = conv_64(&JitOptions::default(), &QConvTuning::default());
        let mut scratch = kernel.new_scratch();
        let x = vec![0u8; 64 * 36];
        let mut out = vec![0u8; 64 * 36];
        assert!(kernel.run_into(&x, &mut out, &mut scratch).is_ok());
        assert!(kernel.run_into(&x[1..], &mut out, &mut scratch).is_err());
        let mut out_i8 = vec![0i8; 64 * 36];
        assert!(kernel.run_into(&x, &mut out_i8, &mut scratch).is_err());
        let x_i8 = vec![0i8; 64 * 36];
        assert!(kernel.run_into(&x_i8, &mut out, &mut scratch).is_err());
        let wrong = Tensor::new(vec![1, 64, 6, 5], TensorData::U8(vec![0; 64 * 30])).unwrap();
        assert!(kernel.run(&wrong).is_err());
    }
}
