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
/// out, first, end)`.
type RangeComputeFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8, usize, usize);

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
                jit.pointer_signature(5),
                jit.target_config(),
            );
            // SAFETY: the function has five pointer-sized parameters and no results —
            // `RangeComputeFn` (the last two are integers of pointer size); `jit` is owned
            // by the kernel alongside it.
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
            // three pointers and two pointer-sized tile indices
            let compute_fn = emit::build_compute_function(
                &plan,
                &layout,
                jit.pointer_signature(5),
                jit.target_config(),
            );
            // SAFETY: the function has five pointer-sized parameters and no results —
            // `RangeComputeFn` (the last two are integers of pointer size); `jit` is owned by
            // the kernel alongside it.
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
            packed,
            code: KernelCode::new(jit, name),
        })
    }

    /// The listing of the widening step, when compiled with `capture_disassembly`.
    pub fn widen_disassembly(&self) -> Option<&str> {
        self.code.disassembly(&format!("{}_widen", self.name()))
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.plan.out_shape
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
        let bad = |what: String| CodegenError::BadBuffer {
            kernel: self.name().to_string(),
            what,
        };
        if X::DTYPE != self.plan.x_dtype || Y::DTYPE != self.plan.out_dtype {
            return Err(bad(format!(
                "buffers are {} → {}, the kernel takes {} → {}",
                X::DTYPE,
                Y::DTYPE,
                self.plan.x_dtype,
                self.plan.out_dtype
            )));
        }
        let (x_len, out_len) = (
            self.plan.x_shape.iter().product::<usize>(),
            self.plan.out_shape.iter().product::<usize>(),
        );
        if x.len() != x_len || out.len() != out_len {
            return Err(bad(format!(
                "input has {} elements (expected {x_len}), output {} (expected {out_len})",
                x.len(),
                out.len()
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
        let batch = self.plan.batch;
        let (x_image, out_image) = (x_len / batch.max(1), out_len / batch.max(1));
        for n in 0..batch {
            let x_n = &x[n * x_image..(n + 1) * x_image];
            let out_n = &mut out[n * out_image..(n + 1) * out_image];
            let (Path::General { widen, compute, .. } | Path::Depthwise { widen, compute, .. }) =
                &self.path;
            self.widen_parts_of(*widen, x_n, scratch, threads);
            self.run_parts(*compute, packed, scratch, out_n, threads);
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
    fn widen_parts_of<X: Int8>(
        &self,
        widen: WidenFn,
        x_n: &[X],
        scratch: &mut [u8],
        threads: usize,
    ) {
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
    fn run_parts<Y: Int8>(
        &self,
        compute: RangeComputeFn,
        packed: &[u8],
        scratch: &[u8],
        out_n: &mut [Y],
        threads: usize,
    ) {
        let parts = self.parallel_parts();
        // addresses, not pointers, cross to the threads (pointers are not Send)
        let (packed_at, scratch_at) = (packed.as_ptr() as usize, scratch.as_ptr() as usize);
        let out_at = out_n.as_mut_ptr() as usize;
        let run_range = |first: usize, end: usize| {
            // SAFETY: the entry is valid while `self.code` lives (`self` is borrowed for
            // the whole call). `compute` reads the scratch (`scratch_bytes`, 16-byte
            // aligned, not written until every part has returned) and the packed blob it
            // was compiled against (16-byte aligned), both shared read-only, and writes
            // only the output channels of the parts `first..end` (`end <= parts`) of the
            // one image at `out_at`: `for_each_part` hands every part out once, so no byte
            // is written by two threads, and `out_n` stays exclusively borrowed (unused
            // otherwise) until they finish. The caller checked every size; u8 and i8 have
            // the same size and alignment.
            unsafe {
                compute(
                    packed_at as *const u8,
                    scratch_at as *const u8,
                    out_at as *mut u8,
                    first,
                    end,
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
        self.widen_parts_of(*widen, x, scratch, 1);
        Ok(())
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
