//! Models and compiled models: [`Model`] is a loaded graph; [`Model::compile`] evaluates the
//! dequantizes of constants, turns every other node into a kiln-codegen kernel (or fails
//! naming every node that has none) and lays out the intermediate values with a
//! [`MemoryPlan`]; [`CompiledModel::run`] checks the inputs and calls the kernels in
//! schedule order over the arena.

use crate::error::{MissingKernel, RuntimeError};
use crate::memory::{MemoryPlan, ARENA_ALIGN};
use kiln_codegen::{
    tensor_data_from_le_bytes, ActivationKernel, BatchNormKernel, BinaryKernel, CastKernel,
    ChainArg, ChainNode, ChainOp, CodegenError, ConcatKernel, DequantizeKernel,
    DynamicQuantizeKernel, ElementwiseChainKernel, FConvKernel, FConvNode, FConvScratch,
    FConvTransposeKernel, FConvTransposeNode, FConvTransposeScratch, GemmKernel, JitOptions,
    LrnKernel, MatMulIntegerKernel, MaxPoolKernel, MaxPoolScratch, MoveKernel, PoolKernel,
    PoolKind, PoolScratch, QConvEpilogue, QConvKernel, QConvNode, QConvScratch, QConvTuning,
    QMatMulKernel, QMatMulNode, QMatMulScratch, QMatMulTuning, QuantizeKernel, ReduceMeanKernel,
    ResizeKernel, ResizeScratch, SoftmaxKernel, SumKernel, SumScratch,
};
use kiln_ir::{
    ConvAttrs, ConvTransposeAttrs, DType, Graph, Node, NodeId, Op, Quant, ResizeMode, Tensor,
    TensorData, TensorType, ValueId,
};
use kiln_onnx::ImportOptions;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

/// How to compile a model.
#[derive(Clone, Debug)]
pub struct Options {
    /// Options of every kernel's JIT (disassembly capture, verifier).
    pub jit: JitOptions,
    /// Micro-kernel shape and inner-product choice of the int8 convolutions.
    pub qconv: QConvTuning,
    /// Micro-kernel shape and inner-product choice of the int8 matrix multiplies.
    pub qmatmul: QMatMulTuning,
    /// Threads a large kernel may be split over (the calling thread included; default: the
    /// host's available parallelism). Results are bit-identical for every count.
    pub threads: usize,
    /// A kernel is split only into parts of at least this many multiply-accumulates
    /// (spawning a thread costs tens of microseconds; smaller kernels run on one).
    pub min_macs_per_thread: u64,
    /// Fuse chains of elementwise nodes (per-tensor Dequantize and Quantize, f32
    /// activations and add/sub/mul/div) whose intermediate values have no other use into
    /// one kernel each ([`ElementwiseChainKernel`]); results are bit-identical either way.
    pub fuse_elementwise: bool,
    /// Fuse an elementwise chain that alone reads an int8 convolution's output into the
    /// conv's epilogue ([`QConvKernel::compile_fused`]: a residual add with its own
    /// requantization, a Dequantize to f32); needs `fuse_elementwise`. Bit-identical
    /// either way.
    pub fuse_conv_epilogues: bool,
    /// Run each `quantize(average_pool(dequantize(x)))` island (and its global form) whose
    /// inner values have no other use as one int8 average pool
    /// ([`PoolKernel::compile_int8_average`]); needs `fuse_elementwise`. Bit-identical
    /// either way.
    pub fuse_int8_pools: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            jit: JitOptions::default(),
            qconv: QConvTuning::default(),
            qmatmul: QMatMulTuning::default(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            min_macs_per_thread: 1 << 20,
            fuse_elementwise: true,
            fuse_conv_epilogues: true,
            fuse_int8_pools: true,
        }
    }
}

impl Options {
    /// The threads to split a kernel of `macs` multiply-accumulates over.
    fn threads_for(&self, macs: u64) -> usize {
        let by_size = macs / self.min_macs_per_thread.max(1);
        self.threads
            .max(1)
            .min(usize::try_from(by_size).unwrap_or(usize::MAX).max(1))
    }
}

/// A loaded model: a graph ready to compile.
#[derive(Clone, Debug)]
pub struct Model {
    graph: Graph,
}

impl Model {
    /// Load a `.onnx` model (dynamic dims must be fixed by the model itself; see
    /// [`Model::load_with`]) or a `.kir` text graph.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, RuntimeError> {
        Model::load_with(path, &ImportOptions::default())
    }

    /// Load with ONNX import options (input shapes for dynamic dims, frozen inputs). The
    /// options do not apply to `.kir` graphs, whose shapes are static by construction.
    pub fn load_with(
        path: impl AsRef<Path>,
        import: &ImportOptions,
    ) -> Result<Model, RuntimeError> {
        let path = path.as_ref();
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let graph = match extension {
            "onnx" => {
                kiln_onnx::import_file(path, import).map_err(|source| RuntimeError::Onnx {
                    path: path.to_path_buf(),
                    source,
                })?
            }
            "kir" => {
                let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                kiln_ir::text::parse_graph(&text)?
            }
            _ => {
                return Err(RuntimeError::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        Ok(Model { graph })
    }

    pub fn from_graph(graph: Graph) -> Model {
        Model { graph }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Compile every node to machine code. Fails with [`RuntimeError::NoKernel`] listing
    /// every node whose op has no kernel (there is no interpreter fallback).
    pub fn compile(&self, options: &Options) -> Result<CompiledModel, RuntimeError> {
        CompiledModel::new(&self.graph, options)
    }
}

/// Does kiln-codegen have a kernel for this node (sources are bound, not run)? MaxPool
/// has one for int8 and f32 inputs, nearest Resize and the data-movement ops for any
/// dtype (Gather with constant indices); the other f32 ops for f32 inputs only (constant
/// operands — weights, Gemm's and MatMul's B — are checked when compiling).
fn has_kernel(graph: &Graph, node: &Node) -> bool {
    let first_input_is = |dtypes: &[DType]| {
        node.inputs()
            .first()
            .is_some_and(|&x| dtypes.contains(&graph.value_type(x).dtype))
    };
    let int8_input = || first_input_is(&[DType::U8, DType::I8]);
    let f32_input = || first_input_is(&[DType::F32]);
    match node.op {
        Op::Input { .. }
        | Op::Const(_)
        | Op::QConv(_)
        | Op::QMatMul
        | Op::Quantize
        | Op::Dequantize => true,
        Op::MaxPool(_) | Op::GlobalMaxPool => int8_input() || f32_input(),
        Op::Resize(ref attrs) => attrs.mode == ResizeMode::Nearest || f32_input(),
        Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::BatchNorm { .. }
        | Op::Activation(_)
        | Op::Binary(_)
        | Op::AveragePool(_)
        | Op::GlobalAveragePool
        | Op::Gemm(_)
        | Op::MatMul
        | Op::Softmax { .. }
        | Op::Lrn { .. }
        | Op::Sum
        | Op::ReduceMean { .. }
        | Op::DynamicQuantize => f32_input(),
        Op::Cast { to } => to != DType::F16 && !first_input_is(&[DType::F16]),
        Op::Concat { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Split { .. }
        | Op::Pad { .. } => true,
        // b and its zero point are packed into the kernel
        Op::MatMulInteger => {
            int8_input()
                && node.inputs().iter().enumerate().all(|(k, &v)| {
                    k % 2 == 0
                        || (graph.node(v.node).op.is_source() && graph.const_tensor(v).is_some())
                })
        }
        // the indices are packed into the kernel's plan
        Op::Gather { .. } => node
            .inputs()
            .get(1)
            .is_some_and(|&i| graph.node(i.node).op.is_source() && graph.const_tensor(i).is_some()),
        ref op => is_shape_only(op),
    }
}

/// Ops whose output holds the input's bytes unchanged (a new shape, or the identity).
pub(crate) fn is_shape_only(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
            | Op::Dropout
    )
}

/// A byte buffer whose start is aligned to [`ARENA_ALIGN`], without `unsafe`: a `Vec<u8>`
/// with spare bytes, used from its first aligned address (the Vec is never resized, so the
/// heap block never moves).
#[derive(Debug)]
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    fn zeroed(len: usize) -> AlignedBuffer {
        let storage = vec![0u8; len + ARENA_ALIGN - 1];
        let start = storage.as_ptr().align_offset(ARENA_ALIGN);
        AlignedBuffer {
            storage,
            start,
            len,
        }
    }

    fn from_bytes(bytes: &[u8]) -> AlignedBuffer {
        let mut buffer = AlignedBuffer::zeroed(bytes.len());
        buffer.as_mut_slice().copy_from_slice(bytes);
        buffer
    }

    fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Where a value's bytes are while the model runs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// Intermediate: bytes of the arena, from the memory plan.
    Arena(Range<usize>),
    /// Graph input `i`: the caller's tensor.
    Input(usize),
    /// A constant the model keeps (one read by a kernel at run time, or a graph output).
    Const(usize),
    /// Graph output buffer `k`, allocated per run and handed to the caller.
    Output(usize),
}

/// View arena bytes as int8 elements of `$dtype` (`u8` unless it is `I8`) and evaluate
/// `$body` with them bound to `$v`: one monomorphized call per dtype.
macro_rules! with_int8 {
    ($dtype:expr, $bytes:expr, |$v:ident| $body:expr) => {
        match $dtype {
            DType::I8 => {
                let $v: &[i8] = bytemuck::cast_slice($bytes);
                $body
            }
            _ => {
                let $v: &[u8] = $bytes;
                $body
            }
        }
    };
}

/// [`with_int8!`] on a mutable view.
macro_rules! with_int8_mut {
    ($dtype:expr, $bytes:expr, |$v:ident| $body:expr) => {
        match $dtype {
            DType::I8 => {
                let $v: &mut [i8] = bytemuck::cast_slice_mut($bytes);
                $body
            }
            _ => {
                let $v: &mut [u8] = $bytes;
                $body
            }
        }
    };
}

/// A compiled kernel with its per-call state; the dtypes are the int8 element types of
/// its operands (`u8` or `i8`), which pick the `run_into` instance. Kernels are boxed: their
/// plans are large and of very different sizes.
enum Kernel {
    /// Split over `threads` threads (channel tiles). Its scratch is the model's shared
    /// one ([`CompiledModel`]'s `qconv_scratch`).
    QConv {
        kernel: Box<QConvKernel>,
        x: DType,
        y: DType,
        threads: usize,
    },
    /// An int8 average pool (a fused `quantize(average_pool(dequantize x))`); reads x.
    Int8Pool {
        kernel: Box<PoolKernel>,
        scratch: PoolScratch,
    },
    /// A QConv with an elementwise chain fused into its epilogue: reads the conv's input,
    /// then the chain's other operands; writes the chain's output. Split as `QConv`.
    FusedQConv {
        kernel: Box<QConvKernel>,
        threads: usize,
    },
    /// `b` is `Some(dtype)` when it is read at run time (the kernel's second operand),
    /// `None` when it is a constant packed into the kernel. Split over `threads` threads
    /// (column tiles).
    QMatMul {
        kernel: Box<QMatMulKernel>,
        scratch: QMatMulScratch,
        a: DType,
        b: Option<DType>,
        y: DType,
        threads: usize,
    },
    Quantize {
        kernel: Box<QuantizeKernel>,
        y: DType,
    },
    Dequantize {
        kernel: Box<DequantizeKernel>,
        x: DType,
    },
    MaxPool {
        kernel: Box<MaxPoolKernel>,
        scratch: MaxPoolScratch,
        x: DType,
    },
    /// f32 Conv; reads x, then the residual when `residual`.
    FConv {
        kernel: Box<FConvKernel>,
        scratch: FConvScratch,
        residual: bool,
    },
    /// f32 ConvTranspose; reads x.
    ConvTranspose {
        kernel: Box<FConvTransposeKernel>,
        scratch: FConvTransposeScratch,
    },
    /// Resize of any dtype (nearest) or f32 (linear, cubic); reads x.
    Resize {
        kernel: Box<ResizeKernel>,
        scratch: ResizeScratch,
    },
    /// f32 activation; reads x.
    Activation(Box<ActivationKernel>),
    /// f32 add/sub/mul/div; reads a, b.
    Binary(Box<BinaryKernel>),
    /// f32 BatchNorm with constant parameters; reads x.
    BatchNorm(Box<BatchNormKernel>),
    /// f32 Max/AveragePool and the global pools; reads x.
    Pool {
        kernel: Box<PoolKernel>,
        scratch: PoolScratch,
    },
    /// f32 Gemm or MatMul with constant B (and C), reads A; or with B computed by the
    /// graph (`has_runtime_b`), reads A and B.
    Gemm(Box<GemmKernel>),
    /// f32 Softmax; reads x.
    Softmax(Box<SoftmaxKernel>),
    /// Concat of any dtype; reads every input.
    Concat(Box<ConcatKernel>),
    /// f32 LRN; reads x.
    Lrn(Box<LrnKernel>),
    /// Transpose, Slice, Pad or Gather (constant indices) of any dtype; reads x.
    Move(Box<MoveKernel>),
    /// Split of any dtype: one kernel per output; reads x, writes every output.
    Split(Vec<MoveKernel>),
    /// f32 Sum; reads every input.
    Sum {
        kernel: Box<SumKernel>,
        scratch: SumScratch,
    },
    /// f32 ReduceMean; reads x.
    ReduceMean(Box<ReduceMeanKernel>),
    /// Cast between f32, i8, u8, i32, i64 and bool; reads x.
    Cast(Box<CastKernel>),
    /// MatMulInteger with a constant b; reads a, then a's zero point when `a_zero_point`.
    MatMulInteger {
        kernel: Box<MatMulIntegerKernel>,
        a_zero_point: bool,
    },
    /// A fused chain of elementwise nodes; reads the chain's operands.
    /// Split over `threads` threads (rows).
    Chain {
        kernel: Box<ElementwiseChainKernel>,
        threads: usize,
    },
    /// DynamicQuantizeLinear; reads x, writes y, the scale and the zero point.
    DynamicQuantize(Box<DynamicQuantizeKernel>),
    /// A shape-only op (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout): the
    /// output has the input's bytes in the same (row-major) order.
    Copy,
}

impl Kernel {
    /// Run on the step's views: `reads` in the kernel's operand order, `writes` its outputs.
    /// Every place is [`ARENA_ALIGN`]-aligned or a tensor's own element buffer, so the f32
    /// views below are aligned and sized in whole elements (values are sized by their type).
    ///
    /// `qconv_scratch` is the scratch every int8 convolution of the model shares (they run
    /// one after another, so it stays warm in cache).
    fn run(
        &mut self,
        reads: &[&[u8]],
        writes: &mut [&mut [u8]],
        qconv_scratch: &mut QConvScratch,
    ) -> Result<(), CodegenError> {
        if let Kernel::Split(parts) = self {
            for (part, out) in parts.iter().zip(writes.iter_mut()) {
                part.run_into(reads[0], out)?;
            }
            return Ok(());
        }
        if let Kernel::DynamicQuantize(kernel) = self {
            let [y, scale, zero_point] = writes else {
                return Err(CodegenError::BadBuffer {
                    kernel: kernel.name().to_string(),
                    what: format!("{} outputs, expected 3", writes.len()),
                });
            };
            let (s, z) = kernel.run_into(bytemuck::cast_slice(reads[0]), y)?;
            if scale.len() != 4 || zero_point.len() != 1 {
                return Err(CodegenError::BadBuffer {
                    kernel: kernel.name().to_string(),
                    what: format!(
                        "{} scale bytes and {} zero point bytes, expected 4 and 1",
                        scale.len(),
                        zero_point.len()
                    ),
                });
            }
            scale.copy_from_slice(&s.to_le_bytes());
            zero_point[0] = z;
            return Ok(());
        }
        let out = &mut *writes[0];
        match self {
            Kernel::QConv {
                kernel,
                x,
                y,
                threads,
            } => with_int8!(*x, reads[0], |x| with_int8_mut!(*y, out, |out| kernel
                .run_into_threads(x, out, qconv_scratch, *threads))),
            Kernel::QMatMul {
                kernel,
                scratch,
                a,
                b,
                y,
                threads,
            } => with_int8!(*a, reads[0], |a| with_int8_mut!(*y, out, |out| match b {
                None => kernel.run_into_threads(a, out, scratch, *threads),
                Some(b_dtype) => with_int8!(*b_dtype, reads[1], |b| kernel
                    .run_with_b_into_threads(a, b, out, scratch, *threads)),
            })),
            Kernel::Quantize { kernel, y } => {
                let x: &[f32] = bytemuck::cast_slice(reads[0]);
                with_int8_mut!(*y, out, |out| kernel.run_into(x, out))
            }
            Kernel::Dequantize { kernel, x } => {
                let out: &mut [f32] = bytemuck::cast_slice_mut(out);
                match x {
                    DType::I32 => kernel.run_into::<i32>(bytemuck::cast_slice(reads[0]), out),
                    _ => with_int8!(*x, reads[0], |x| kernel.run_into(x, out)),
                }
            }
            // input and output share the dtype
            Kernel::MaxPool { kernel, scratch, x } => match x {
                DType::I8 => kernel.run_into::<i8>(
                    bytemuck::cast_slice(reads[0]),
                    bytemuck::cast_slice_mut(out),
                    scratch,
                ),
                _ => kernel.run_into::<u8>(reads[0], out, scratch),
            },
            Kernel::FConv {
                kernel,
                scratch,
                residual,
            } => {
                let r: Option<&[f32]> = residual.then(|| bytemuck::cast_slice(reads[1]));
                kernel.run_into(
                    bytemuck::cast_slice(reads[0]),
                    r,
                    bytemuck::cast_slice_mut(out),
                    scratch,
                )
            }
            Kernel::ConvTranspose { kernel, scratch } => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice_mut(out),
                scratch,
            ),
            Kernel::Resize { kernel, scratch } => kernel.run_into(reads[0], out, scratch),
            Kernel::Activation(kernel) => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::Binary(kernel) => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice(reads[1]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::BatchNorm(kernel) => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::Pool { kernel, scratch } => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice_mut(out),
                scratch,
            ),
            Kernel::Gemm(kernel) if kernel.has_runtime_b() => kernel.run_with_b_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice(reads[1]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::Gemm(kernel) => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::Softmax(kernel) => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::Concat(kernel) => kernel.run_into(reads, out),
            Kernel::Lrn(kernel) => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::Move(kernel) => kernel.run_into(reads[0], out),
            Kernel::Sum { kernel, scratch } => {
                let inputs: Vec<&[f32]> = reads.iter().map(|r| bytemuck::cast_slice(r)).collect();
                kernel.run_into(&inputs, bytemuck::cast_slice_mut(out), scratch)
            }
            Kernel::ReduceMean(kernel) => kernel.run_into(
                bytemuck::cast_slice(reads[0]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::Cast(kernel) => kernel.run_into(reads[0], out),
            Kernel::Chain { kernel, threads } => kernel.run_into_threads(reads, out, *threads),
            Kernel::Int8Pool { kernel, scratch } => kernel.run_int8_into(reads[0], out, scratch),
            Kernel::FusedQConv { kernel, threads } => {
                kernel.run_fused_into_threads(reads[0], &reads[1..], out, qconv_scratch, *threads)
            }
            Kernel::MatMulInteger {
                kernel,
                a_zero_point,
            } => kernel.run_into(
                reads[0],
                a_zero_point.then(|| reads[1]),
                bytemuck::cast_slice_mut(out),
            ),
            Kernel::Split(_) | Kernel::DynamicQuantize(_) => {
                unreachable!("multi-output steps return above")
            }
            Kernel::Copy => {
                if reads[0].len() != out.len() {
                    return Err(CodegenError::BadBuffer {
                        kernel: "copy".into(),
                        what: format!(
                            "{} input bytes for {} output bytes",
                            reads[0].len(),
                            out.len()
                        ),
                    });
                }
                out.copy_from_slice(reads[0]);
                Ok(())
            }
        }
    }
}

/// One call of the schedule.
struct Step {
    node: String,
    op: &'static str,
    kernel: Kernel,
    /// Runtime operands, in the kernel's order (constants folded into the kernel excluded).
    reads: Vec<Place>,
    writes: Vec<Place>,
}

/// A model compiled to machine code: a schedule of kernel calls over one arena. The code
/// of every kernel is freed when the model is dropped (each kernel owns its JIT module).
pub struct CompiledModel {
    name: String,
    inputs: Vec<(String, TensorType)>,
    /// Each graph output's name, type and where its bytes are at the end of a run.
    outputs: Vec<(String, TensorType, Place)>,
    /// Sizes of the per-run output buffers (`Place::Output(k)`).
    output_buffer_bytes: Vec<usize>,
    constants: Vec<(TensorType, AlignedBuffer)>,
    steps: Vec<Step>,
    plan: MemoryPlan,
    arena: AlignedBuffer,
    /// The working memory of every int8 convolution (as large as the largest needs).
    qconv_scratch: QConvScratch,
    /// Per step, the time spent in its kernel over all runs since profiling was turned on
    /// ([`CompiledModel::set_profiling`]); `None` when off.
    profile: Option<Vec<std::time::Duration>>,
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModel")
            .field("name", &self.name)
            .field("kernels", &self.steps.len())
            .field("arena_bytes", &self.plan.peak_bytes)
            .finish()
    }
}

/// Compile-time state: where each value lives.
struct Binder<'g> {
    graph: &'g Graph,
    plan: &'g MemoryPlan,
    /// Graph outputs produced by kernels → output buffer index.
    output_buffers: HashMap<ValueId, usize>,
    constants: Vec<(TensorType, AlignedBuffer)>,
    constant_index: HashMap<ValueId, usize>,
}

impl Binder<'_> {
    fn place(&mut self, value: ValueId) -> Result<Place, RuntimeError> {
        let node = self.graph.node(value.node);
        match node.op {
            Op::Input { index } => Ok(Place::Input(index)),
            Op::Const(_) => {
                if let Some(&k) = self.constant_index.get(&value) {
                    return Ok(Place::Const(k));
                }
                let tensor =
                    self.graph
                        .const_tensor(value)
                        .ok_or_else(|| RuntimeError::Unsupported {
                            node: node.name.clone(),
                            op: "const",
                            reason: "the constant has no data (opaque or generated)".into(),
                        })?;
                let k = self.constants.len();
                self.constants.push((
                    self.graph.value_type(value).clone(),
                    AlignedBuffer::from_bytes(&tensor_bytes(tensor)),
                ));
                self.constant_index.insert(value, k);
                Ok(Place::Const(k))
            }
            _ => {
                if let Some(&k) = self.output_buffers.get(&value) {
                    return Ok(Place::Output(k));
                }
                let slot = self
                    .plan
                    .slot(value)
                    .expect("every intermediate value has an arena slot");
                Ok(Place::Arena(slot.offset..slot.offset + slot.bytes))
            }
        }
    }
}

impl CompiledModel {
    fn new(graph: &Graph, options: &Options) -> Result<CompiledModel, RuntimeError> {
        kiln_ir::verify(graph)?;
        let folded = fold_constant_dequantizes(graph, options)?;
        let graph = folded.as_ref().unwrap_or(graph);
        let missing: Vec<MissingKernel> = graph
            .topo_order()?
            .iter()
            .map(|&n| graph.node(n))
            .filter(|node| !has_kernel(graph, node))
            .map(|node| MissingKernel {
                node: node.name.clone(),
                op: node.op.mnemonic(),
            })
            .collect();
        if !missing.is_empty() {
            return Err(RuntimeError::NoKernel(missing));
        }
        let mut chains = HashMap::new();
        let pooled = if options.fuse_elementwise && options.fuse_int8_pools {
            fuse_int8_pools(graph, options, &mut chains)?
        } else {
            None
        };
        let graph = pooled.as_ref().unwrap_or(graph);
        let mut chain_kernels = HashMap::new();
        let fused = if options.fuse_elementwise {
            fuse_elementwise_chains(graph, options, &mut chain_kernels)?
        } else {
            None
        };
        // the pools' placeholders keep their ids in the chains' copy of the graph
        chains.extend(chain_kernels);
        let graph = fused.as_ref().unwrap_or(graph);
        let schedule = graph.topo_order()?;
        let plan = MemoryPlan::new(graph, &schedule)?;

        let mut output_buffers = HashMap::new();
        let mut output_buffer_bytes = Vec::new();
        for &v in graph.outputs() {
            if !graph.node(v.node).op.is_source() && !output_buffers.contains_key(&v) {
                output_buffers.insert(v, output_buffer_bytes.len());
                output_buffer_bytes.push(graph.value_type(v).byte_size());
            }
        }
        let mut binder = Binder {
            graph,
            plan: &plan,
            output_buffers,
            constants: Vec::new(),
            constant_index: HashMap::new(),
        };
        let mut steps = Vec::new();
        for &node_id in &schedule {
            let output = ValueId {
                node: node_id,
                port: 0,
            };
            if plan.is_alias(output) {
                // a shape-only op whose output shares its input's bytes: nothing to run
                continue;
            }
            if let Some(fused) = chains.remove(&node_id) {
                steps.push(fused_step(graph, node_id, fused, options, &mut binder)?);
            } else if let Some(step) = compile_node(graph, node_id, options, &mut binder)? {
                steps.push(step);
            }
        }
        let mut outputs = Vec::new();
        for &v in graph.outputs() {
            outputs.push((
                graph.value_name(v).to_string(),
                graph.value_type(v).clone(),
                binder.place(v)?,
            ));
        }
        let inputs = graph
            .inputs()
            .iter()
            .map(|&v| (graph.value_name(v).to_string(), graph.value_type(v).clone()))
            .collect();
        let constants = binder.constants;
        let qconv_scratch_bytes = steps
            .iter()
            .filter_map(|step| match &step.kernel {
                Kernel::QConv { kernel, .. } | Kernel::FusedQConv { kernel, .. } => {
                    Some(kernel.scratch_bytes())
                }
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Ok(CompiledModel {
            qconv_scratch: QConvScratch::zeroed(qconv_scratch_bytes),
            name: graph.name.clone(),
            inputs,
            outputs,
            output_buffer_bytes,
            constants,
            steps,
            arena: AlignedBuffer::zeroed(plan.peak_bytes),
            plan,
            profile: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The memory plan: arena size (`peak_bytes`) next to the sum of all intermediates.
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    /// Bytes of the scratch every int8 convolution shares (the widened input of the largest
    /// one), besides the arena.
    pub fn conv_scratch_bytes(&self) -> usize {
        self.qconv_scratch.len()
    }

    /// Graph inputs, in the order `run` takes them: name and expected type.
    pub fn inputs(&self) -> impl Iterator<Item = (&str, &TensorType)> {
        self.inputs.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Graph outputs, in the order `run` returns them.
    pub fn outputs(&self) -> impl Iterator<Item = (&str, &TensorType)> {
        self.outputs.iter().map(|(n, t, _)| (n.as_str(), t))
    }

    /// Turn per-kernel timing on (clearing what was measured) or off. Timing costs two
    /// clock reads per kernel call.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![std::time::Duration::ZERO; self.steps.len()]);
    }

    /// With profiling on: per kernel call, in schedule order, `(node name, op mnemonic,
    /// time summed over the runs since profiling was turned on)`.
    pub fn profile(&self) -> Option<Vec<(&str, &'static str, std::time::Duration)>> {
        let profile = self.profile.as_ref()?;
        Some(
            self.steps
                .iter()
                .zip(profile)
                .map(|(s, &t)| (s.node.as_str(), s.op, t))
                .collect(),
        )
    }

    /// Kernel calls per run, in schedule order: `(node name, op mnemonic)`.
    pub fn schedule(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.steps.iter().map(|s| (s.node.as_str(), s.op))
    }

    /// Run on `inputs` (in graph-input order, each of exactly the declared dtype and shape;
    /// integer inputs are read with the declared quantization). Returns the graph outputs.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        self.check_inputs(inputs)?;
        let input_bytes: Vec<Cow<[u8]>> = inputs.iter().map(tensor_bytes).collect();
        let mut output_buffers: Vec<AlignedBuffer> = self
            .output_buffer_bytes
            .iter()
            .map(|&n| AlignedBuffer::zeroed(n))
            .collect();
        let arena = self.arena.as_mut_slice();
        for (index, step) in self.steps.iter_mut().enumerate() {
            let start = self.profile.as_ref().map(|_| std::time::Instant::now());
            let (reads, mut writes) = step_views(
                arena,
                &mut output_buffers,
                &input_bytes,
                &self.constants,
                &step.reads,
                &step.writes,
            );
            step.kernel
                .run(&reads, &mut writes, &mut self.qconv_scratch)
                .map_err(|source| RuntimeError::Codegen {
                    node: step.node.clone(),
                    op: step.op,
                    source,
                })?;
            if let (Some(start), Some(profile)) = (start, self.profile.as_mut()) {
                profile[index] += start.elapsed();
            }
        }
        // a value listed twice as a graph output is decoded once and cloned
        let mut decoded: Vec<Option<Tensor>> = output_buffers.iter().map(|_| None).collect();
        let mut results = Vec::with_capacity(self.outputs.len());
        for (_, ty, place) in &self.outputs {
            let tensor = match place {
                Place::Input(i) => inputs[*i].clone(),
                Place::Const(k) => tensor_from_bytes(ty, self.constants[*k].1.as_slice()),
                Place::Output(k) => decoded[*k]
                    .get_or_insert_with(|| tensor_from_bytes(ty, output_buffers[*k].as_slice()))
                    .clone(),
                Place::Arena(_) => unreachable!("graph outputs never live in the arena"),
            };
            results.push(tensor);
        }
        Ok(results)
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), RuntimeError> {
        if inputs.len() != self.inputs.len() {
            let names: Vec<String> = self
                .inputs
                .iter()
                .map(|(n, t)| format!("{n}: {t}"))
                .collect();
            return Err(RuntimeError::InputCount {
                expected: self.inputs.len(),
                names: names.join(", "),
                got: inputs.len(),
            });
        }
        for (index, (tensor, (name, ty))) in inputs.iter().zip(&self.inputs).enumerate() {
            if tensor.dtype() != ty.dtype || tensor.shape() != ty.shape.as_slice() {
                return Err(RuntimeError::InputMismatch {
                    index,
                    name: name.clone(),
                    expected: ty.to_string(),
                    got: format!("{}{:?}", tensor.dtype(), tensor.shape()),
                });
            }
        }
        Ok(())
    }
}

/// Evaluate at compile time every Dequantize of a constant that has data, replacing it by
/// the f32 constant (same name and type): the quantizer leaves the weights and biases of
/// ops it keeps in float (ConvTranspose) as dequantized i8 / i32 constants, and f32 kernels
/// pack their weights when compiled. The values come from the Dequantize kernel itself, so
/// they are the interpreter's bits. `None` when there is nothing to fold.
pub(crate) fn fold_constant_dequantizes(
    graph: &Graph,
    options: &Options,
) -> Result<Option<Graph>, RuntimeError> {
    let foldable: Vec<(NodeId, Tensor)> = graph
        .node_ids()
        .filter(|&id| matches!(graph.node(id).op, Op::Dequantize))
        .filter_map(|id| match graph.node(id).inputs() {
            [x] => graph.const_tensor(*x).map(|t| (id, x, t)),
            _ => None,
        })
        .map(|(id, &x, tensor)| {
            let node = graph.node(id);
            let out = ValueId { node: id, port: 0 };
            let codegen = |source| RuntimeError::Codegen {
                node: node.name.clone(),
                op: "dequantize",
                source,
            };
            let kernel =
                DequantizeKernel::compile(graph.value_type(x), graph.value_type(out), &options.jit)
                    .map_err(codegen)?;
            Ok((id, kernel.run(tensor).map_err(codegen)?))
        })
        .collect::<Result<_, RuntimeError>>()?;
    if foldable.is_empty() {
        return Ok(None);
    }
    let mut folded = graph.clone();
    for (id, tensor) in foldable {
        let out = ValueId { node: id, port: 0 };
        let ty = graph.value_type(out);
        let constant = folded.add_const(graph.value_name(out), tensor, ty.quant.clone());
        folded.replace_all_uses(out, constant);
        folded.remove_node(id);
    }
    Ok(Some(folded))
}

/// The op of a node an [`ElementwiseChainKernel`] can take in, or `None`: per-tensor
/// Dequantize (u8/i8 → f32) and Quantize (f32 → u8/i8), f32 activations and f32
/// add/sub/mul/div. The kernel checks the rest when compiled (a chain it rejects runs node
/// by node).
fn chain_op(graph: &Graph, node: &Node) -> Option<ChainOp> {
    if node.outputs.len() != 1 {
        return None;
    }
    let int8_per_tensor = |ty: &TensorType| {
        matches!(ty.dtype, DType::U8 | DType::I8)
            && matches!(ty.quant, Some(Quant::PerTensor { .. }))
    };
    let out_ty = &node.outputs[0].ty;
    let in_tys: Vec<&TensorType> = node.inputs().iter().map(|&v| graph.value_type(v)).collect();
    let all_f32 = || {
        in_tys
            .iter()
            .chain([&out_ty])
            .all(|t| t.dtype == DType::F32)
    };
    match &node.op {
        Op::Dequantize if in_tys.len() == 1 && int8_per_tensor(in_tys[0]) => {
            Some(ChainOp::Dequantize)
        }
        Op::Quantize if in_tys.len() == 1 && in_tys[0].dtype == DType::F32 => {
            int8_per_tensor(out_ty).then_some(ChainOp::Quantize)
        }
        Op::Activation(act) if in_tys.len() == 1 && all_f32() => {
            Some(ChainOp::Activation(act.clone()))
        }
        Op::Binary(op) if in_tys.len() == 2 && all_f32() => Some(ChainOp::Binary(*op)),
        _ => None,
    }
}

use kiln_ir::infer::trimmed_shape as trimmed;

/// Find the `quantize(average_pool(dequantize(x)))` islands (GlobalAveragePool too) whose
/// dequantized and pooled values have no other use (and are no graph outputs), with
/// per-tensor int8 ends, and compile each into one int8 average pool
/// ([`PoolKernel::compile_int8_average`]). Each is replaced, in a copy of the graph, by a
/// placeholder node (named and typed as the quantize, its op the pool's, reading `x`) that
/// `fused` maps to its kernel; an island the kernel does not take (the window path's pools)
/// stays as it is. `None` when nothing fuses.
fn fuse_int8_pools(
    graph: &Graph,
    options: &Options,
    fused: &mut HashMap<NodeId, Fused>,
) -> Result<Option<Graph>, RuntimeError> {
    // the single reader of a value that is no graph output
    let only_user = |v: ValueId| -> Option<NodeId> {
        let users = graph.users(v);
        let &(user, _) = users.first()?;
        (users.iter().all(|&(u, _)| u == user) && !graph.outputs().contains(&v)).then_some(user)
    };
    let mut islands: Vec<(NodeId, ValueId, Vec<NodeId>, PoolKernel)> = Vec::new();
    for id in graph.topo_order()? {
        let dequantize = graph.node(id);
        if !matches!(dequantize.op, Op::Dequantize) || dequantize.inputs().len() != 1 {
            continue;
        }
        let x = dequantize.inputs()[0];
        let dq = ValueId { node: id, port: 0 };
        let Some(pool_id) = only_user(dq) else {
            continue;
        };
        let pool = graph.node(pool_id);
        if pool.inputs().len() != 1 || pool.outputs.len() != 1 {
            continue;
        }
        let pooled = ValueId {
            node: pool_id,
            port: 0,
        };
        let Some(quantize_id) = only_user(pooled) else {
            continue;
        };
        let quantize = graph.node(quantize_id);
        if !matches!(quantize.op, Op::Quantize) || quantize.outputs.len() != 1 {
            continue;
        }
        let (x_ty, out_ty) = (graph.value_type(x), &quantize.outputs[0].ty);
        let kernel = match &pool.op {
            Op::AveragePool(attrs) => {
                PoolKernel::compile_int8_average(attrs, x_ty, out_ty, &options.jit)
            }
            Op::GlobalAveragePool => {
                PoolKernel::compile_int8_global_average(x_ty, out_ty, &options.jit)
            }
            _ => continue,
        };
        // an island the kernel does not take runs node by node
        if let Ok(kernel) = kernel {
            islands.push((quantize_id, x, vec![id, pool_id, quantize_id], kernel));
        }
    }
    if islands.is_empty() {
        return Ok(None);
    }
    let mut collapsed = graph.clone();
    let mut replaced = Vec::with_capacity(islands.len());
    let mut removed = Vec::new();
    for (quantize_id, x, nodes, kernel) in islands {
        let quantize = graph.node(quantize_id);
        let pool = graph.node(nodes[1]);
        let out = collapsed.add_node_typed(
            quantize.name.clone(),
            pool.op.clone(),
            &[x],
            quantize.outputs.clone(),
        )[0];
        let old = ValueId {
            node: quantize_id,
            port: 0,
        };
        replaced.push((old, out));
        removed.extend(nodes);
        fused.insert(out.node, Fused::Pool(Box::new(kernel)));
    }
    // rewired after every placeholder exists: an island may read another island's output
    for (old, new) in replaced {
        collapsed.replace_all_uses(old, new);
    }
    for id in removed {
        collapsed.remove_node(id);
    }
    Ok(Some(collapsed))
}

/// A fused kernel that runs in place of several nodes.
enum Fused {
    /// A chain of elementwise nodes.
    Chain(Box<ElementwiseChainKernel>),
    /// A QConv and the chain that reads its output, in the conv's epilogue; the
    /// placeholder's first `conv_inputs` inputs are the conv's (input, weights, bias).
    Conv {
        kernel: Box<QConvKernel>,
        conv_inputs: usize,
    },
    /// `quantize(average_pool(dequantize x))` as one int8 average pool; reads x.
    Pool(Box<PoolKernel>),
}

/// Find the chains of elementwise nodes to fuse and compile each into one kernel. A chain
/// node's value is kept in registers (the node joins its user's chain) when its only user
/// is one chain node — not a graph output — of the same layout (only a chain's external
/// operands broadcast, so no element is computed twice). A chain (of any length) one of
/// whose operands is the output of a QConv read by nothing else goes into that conv's
/// epilogue ([`QConvKernel::compile_fused`]: the residual add with its requantization, a
/// Dequantize to f32) when the kernel takes it; other chains of two or more nodes whose
/// kernel compiles run as one [`ElementwiseChainKernel`]. Each fusion is replaced, in a
/// copy of the graph, by one node (named and typed as the chain's last node, its op a
/// placeholder: `fused` maps it to its kernel, which the schedule runs in its place)
/// reading the kernel's operands: the memory plan then keeps those live until it runs and
/// gives the inner values no memory. `None` when nothing fuses.
fn fuse_elementwise_chains(
    graph: &Graph,
    options: &Options,
    chains: &mut HashMap<NodeId, Fused>,
) -> Result<Option<Graph>, RuntimeError> {
    let order = graph.topo_order()?;
    let ops: HashMap<NodeId, ChainOp> = order
        .iter()
        .filter_map(|&id| chain_op(graph, graph.node(id)).map(|op| (id, op)))
        .collect();
    // the chain node whose chain each kept-in-registers node joins
    let mut joins: HashMap<NodeId, NodeId> = HashMap::new();
    for &id in &order {
        if !ops.contains_key(&id) {
            continue;
        }
        let value = ValueId { node: id, port: 0 };
        let users = graph.users(value);
        let Some(&(user, _)) = users.first() else {
            continue;
        };
        let out_shape = &graph.value_type(value).shape;
        let user_shape = &graph.node(user).outputs[0].ty.shape;
        if ops.contains_key(&user)
            && users.iter().all(|&(u, _)| u == user)
            && !graph.outputs().contains(&value)
            && trimmed(out_shape) == trimmed(user_shape)
            && out_shape.len() <= user_shape.len()
        {
            joins.insert(id, user);
        }
    }
    // each chain's nodes in schedule order, keyed by its last node (the one that joins none)
    let mut members: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
    for &id in &order {
        if !ops.contains_key(&id) {
            continue;
        }
        let mut last = id;
        while let Some(&next) = joins.get(&last) {
            last = next;
        }
        members.entry(last).or_default().push(id);
    }
    // (chain's last node, placeholder inputs, nodes it replaces)
    let mut fused: Vec<(NodeId, Vec<ValueId>, Vec<NodeId>)> = Vec::new();
    for &last in &order {
        let Some(nodes) = members.get(&last) else {
            continue;
        };
        let position: HashMap<NodeId, usize> =
            nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut operands: Vec<ValueId> = Vec::new();
        let chain: Vec<ChainNode> = nodes
            .iter()
            .map(|&id| {
                let node = graph.node(id);
                let args = node
                    .inputs()
                    .iter()
                    .map(|&v| match position.get(&v.node) {
                        Some(&j) if joins.contains_key(&v.node) => ChainArg::Node(j),
                        _ => ChainArg::Operand(match operands.iter().position(|&o| o == v) {
                            Some(k) => k,
                            None => {
                                operands.push(v);
                                operands.len() - 1
                            }
                        }),
                    })
                    .collect();
                ChainNode {
                    op: ops[&id].clone(),
                    args,
                    out_ty: node.outputs[0].ty.clone(),
                }
            })
            .collect();
        let operand_tys: Vec<TensorType> = operands
            .iter()
            .map(|&v| graph.value_type(v).clone())
            .collect();
        if options.fuse_conv_epilogues {
            if let Some((conv, kernel, conv_operand)) =
                conv_epilogue(graph, options, nodes, &operands, &operand_tys, &chain)
            {
                let conv_node = graph.node(conv);
                let inputs: Vec<ValueId> = conv_node
                    .inputs()
                    .iter()
                    .copied()
                    .chain(
                        operands
                            .iter()
                            .enumerate()
                            .filter(|&(k, _)| k != conv_operand)
                            .map(|(_, &v)| v),
                    )
                    .collect();
                let replaced = nodes.iter().copied().chain([conv]).collect();
                fused.push((last, inputs, replaced));
                let conv_inputs = conv_node.inputs().len();
                chains.insert(
                    last,
                    Fused::Conv {
                        kernel: Box::new(kernel),
                        conv_inputs,
                    },
                );
                continue;
            }
        }
        if nodes.len() < 2 {
            continue;
        }
        // a chain the kernel rejects runs node by node
        if let Ok(kernel) = ElementwiseChainKernel::compile(&operand_tys, &chain, &options.jit) {
            fused.push((last, operands, nodes.clone()));
            chains.insert(last, Fused::Chain(Box::new(kernel)));
        }
    }
    if fused.is_empty() {
        return Ok(None);
    }
    let mut collapsed = graph.clone();
    let mut kernels = HashMap::new();
    let mut replaced = Vec::with_capacity(fused.len());
    for (last, inputs, _) in &fused {
        let node = graph.node(*last);
        let out = collapsed.add_node_typed(
            node.name.clone(),
            node.op.clone(),
            inputs,
            node.outputs.clone(),
        )[0];
        let kernel = chains.remove(last).expect("compiled above");
        kernels.insert(out.node, kernel);
        replaced.push((
            ValueId {
                node: *last,
                port: 0,
            },
            out,
        ));
    }
    // rewired after every placeholder exists: a chain may read another chain's output
    for (old, new) in replaced {
        collapsed.replace_all_uses(old, new);
    }
    for (_, _, nodes) in &fused {
        for &id in nodes {
            collapsed.remove_node(id);
        }
    }
    *chains = kernels;
    Ok(Some(collapsed))
}

/// The QConv whose output is `operands[k]` and is read by the chain `nodes` alone (not a
/// graph output), compiled with the chain in its epilogue; `None` when there is none or its
/// kernel does not take the chain (then the chain runs on its own).
fn conv_epilogue(
    graph: &Graph,
    options: &Options,
    nodes: &[NodeId],
    operands: &[ValueId],
    operand_tys: &[TensorType],
    chain: &[ChainNode],
) -> Option<(NodeId, QConvKernel, usize)> {
    operands.iter().enumerate().find_map(|(k, &v)| {
        let conv = graph.node(v.node);
        let Op::QConv(attrs) = &conv.op else {
            return None;
        };
        let only_chain =
            graph.users(v).iter().all(|(u, _)| nodes.contains(u)) && !graph.outputs().contains(&v);
        if !only_chain {
            return None;
        }
        let node = qconv_node(graph, conv, attrs).ok()?;
        let epilogue = QConvEpilogue {
            operands: operand_tys,
            conv_operand: k,
            nodes: chain,
        };
        QConvKernel::compile_fused(&node, Some(&epilogue), &options.jit, &options.qconv)
            .ok()
            .map(|kernel| (v.node, kernel, k))
    })
}

/// A QConv node's operands for [`QConvKernel`], or why they do not fit (weights and bias
/// must be constants).
pub(crate) fn qconv_node<'g>(
    graph: &'g Graph,
    node: &'g Node,
    attrs: &'g ConvAttrs,
) -> Result<QConvNode<'g>, String> {
    let ins = between(node, 2, 3)?;
    let (x, w) = (ins[0], ins[1]);
    // weights and bias are packed into the kernel at compile time
    let bias = match ins.get(2) {
        Some(&b) => Some((constant_operand(graph, b, "bias")?, graph.value_type(b))),
        None => None,
    };
    Ok(QConvNode {
        attrs,
        x_ty: graph.value_type(x),
        w: constant_operand(graph, w, "weights")?,
        w_ty: graph.value_type(w),
        bias,
        out_ty: &node.outputs[0].ty,
    })
}

/// The step of a fused chain or conv: `node` is its placeholder, whose inputs are the
/// kernel's operands in its order (a fused conv's own inputs first: its weights and bias are
/// packed, only its input is read).
fn fused_step(
    graph: &Graph,
    node_id: NodeId,
    fused: Fused,
    options: &Options,
    binder: &mut Binder,
) -> Result<Step, RuntimeError> {
    let node = graph.node(node_id);
    let (kernel, read_values, op): (Kernel, Vec<ValueId>, &'static str) = match fused {
        Fused::Chain(kernel) => {
            // an element of a chain (a few f32 operations and int8 conversions, ~0.2 ns)
            // costs about as much as 8 int8 multiply-accumulates (~0.025 ns each)
            let threads = options.threads_for(8 * kernel.elements() as u64);
            (
                Kernel::Chain { kernel, threads },
                node.inputs().to_vec(),
                "fused_elementwise",
            )
        }
        Fused::Pool(kernel) => (
            Kernel::Int8Pool {
                scratch: kernel.new_scratch(),
                kernel,
            },
            node.inputs().to_vec(),
            "int8_average_pool",
        ),
        Fused::Conv {
            kernel,
            conv_inputs,
        } => {
            let reads = std::iter::once(node.inputs()[0])
                .chain(node.inputs()[conv_inputs..].iter().copied())
                .collect();
            let threads = options.threads_for(kernel.macs());
            (Kernel::FusedQConv { kernel, threads }, reads, "qconv_fused")
        }
    };
    let mut reads = Vec::with_capacity(read_values.len());
    for v in read_values {
        reads.push(binder.place(v)?);
    }
    let writes = vec![binder.place(ValueId {
        node: node_id,
        port: 0,
    })?];
    Ok(Step {
        node: node.name.clone(),
        op,
        kernel,
        reads,
        writes,
    })
}

/// The node's inputs when there are `N` of them, or why not.
pub(crate) fn exactly<const N: usize>(node: &Node) -> Result<[ValueId; N], String> {
    node.inputs()
        .try_into()
        .map_err(|_| format!("{} inputs, expected {N}", node.inputs().len()))
}

/// The node's inputs when there are `min` to `max` of them, or why not.
pub(crate) fn between(node: &Node, min: usize, max: usize) -> Result<&[ValueId], String> {
    let ins = node.inputs();
    if (min..=max).contains(&ins.len()) {
        Ok(ins)
    } else {
        Err(format!("{} inputs, expected {min} to {max}", ins.len()))
    }
}

/// Compile one node: `None` for sources (inputs and constants are bound, not run).
fn compile_node(
    graph: &Graph,
    node_id: NodeId,
    options: &Options,
    binder: &mut Binder,
) -> Result<Option<Step>, RuntimeError> {
    let node = graph.node(node_id);
    let op = node.op.mnemonic();
    let unsupported = |reason: String| RuntimeError::Unsupported {
        node: node.name.clone(),
        op,
        reason,
    };
    let codegen = |source: CodegenError| RuntimeError::Codegen {
        node: node.name.clone(),
        op,
        source,
    };
    let output = ValueId {
        node: node_id,
        port: 0,
    };
    let ty = |v: ValueId| graph.value_type(v);
    let constant = |v: ValueId, what: &str| constant_operand(graph, v, what).map_err(unsupported);
    let is_const = |v: ValueId| matches!(graph.node(v.node).op, Op::Const(_));
    if node.outputs.len() != 1
        && !matches!(
            node.op,
            Op::Input { .. } | Op::Const(_) | Op::Split { .. } | Op::DynamicQuantize
        )
    {
        return Err(unsupported(format!(
            "{} outputs; kernels other than Split produce one (no MaxPool Indices, no \
             Dropout mask)",
            node.outputs.len()
        )));
    }
    // the kernel and the values it reads at run time, in its operand order
    let (kernel, reads): (Kernel, Vec<ValueId>) = match &node.op {
        Op::Input { .. } | Op::Const(_) => return Ok(None),
        Op::QConv(attrs) => {
            let qconv = qconv_node(graph, node, attrs).map_err(unsupported)?;
            let x = node.inputs()[0];
            let kernel =
                QConvKernel::compile(&qconv, &options.jit, &options.qconv).map_err(codegen)?;
            let kernel = Kernel::QConv {
                threads: options.threads_for(kernel.macs()),
                kernel: Box::new(kernel),
                x: ty(x).dtype,
                y: ty(output).dtype,
            };
            (kernel, vec![x])
        }
        Op::QMatMul => {
            let [a, b] = exactly(node).map_err(unsupported)?;
            // a constant `b` is packed at compile time, anything else is read every run
            let b_constant = match graph.node(b.node).op {
                Op::Const(_) => Some(constant(b, "b")?),
                _ => None,
            };
            let qmatmul = QMatMulNode {
                a_ty: ty(a),
                b_ty: ty(b),
                b: b_constant,
                out_ty: ty(output),
            };
            let kernel = QMatMulKernel::compile(&qmatmul, &options.jit, &options.qmatmul)
                .map_err(codegen)?;
            let kernel = Kernel::QMatMul {
                threads: options.threads_for(kernel.macs()),
                scratch: kernel.new_scratch(),
                kernel: Box::new(kernel),
                a: ty(a).dtype,
                b: b_constant.is_none().then_some(ty(b).dtype),
                y: ty(output).dtype,
            };
            let reads = if b_constant.is_some() {
                vec![a]
            } else {
                vec![a, b]
            };
            (kernel, reads)
        }
        Op::MaxPool(_) | Op::GlobalMaxPool | Op::AveragePool(_) | Op::GlobalAveragePool
            if node
                .inputs()
                .first()
                .is_some_and(|&x| ty(x).dtype == DType::F32) =>
        {
            let [x] = exactly(node).map_err(unsupported)?;
            let jit = &options.jit;
            let kernel = match &node.op {
                Op::MaxPool(attrs) => PoolKernel::compile(PoolKind::Max, attrs, ty(x), jit),
                Op::AveragePool(attrs) => PoolKernel::compile(PoolKind::Average, attrs, ty(x), jit),
                Op::GlobalMaxPool => PoolKernel::compile_global(PoolKind::Max, ty(x), jit),
                _ => PoolKernel::compile_global(PoolKind::Average, ty(x), jit),
            }
            .map_err(codegen)?;
            let kernel = Kernel::Pool {
                scratch: kernel.new_scratch(),
                kernel: Box::new(kernel),
            };
            (kernel, vec![x])
        }
        Op::MaxPool(_) | Op::GlobalMaxPool => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = match &node.op {
                Op::MaxPool(attrs) => MaxPoolKernel::compile(attrs, ty(x), &options.jit),
                _ => MaxPoolKernel::compile_global(ty(x), &options.jit),
            }
            .map_err(codegen)?;
            let kernel = Kernel::MaxPool {
                scratch: kernel.new_scratch(),
                kernel: Box::new(kernel),
                x: ty(x).dtype,
            };
            (kernel, vec![x])
        }
        Op::Gemm(attrs) => {
            let ins = between(node, 2, 3).map_err(unsupported)?;
            let c = match ins.get(2) {
                Some(&c) => Some(constant(c, "C")?),
                None => None,
            };
            let (a, b) = (ins[0], ins[1]);
            if is_const(b) {
                let kernel = GemmKernel::compile_gemm(
                    attrs,
                    ty(a),
                    constant(b, "B")?,
                    c,
                    ty(output),
                    &options.jit,
                )
                .map_err(codegen)?;
                (Kernel::Gemm(Box::new(kernel)), vec![a])
            } else {
                // B computed by the graph: packed on every call
                let kernel = GemmKernel::compile_gemm_runtime_b(
                    attrs,
                    ty(a),
                    ty(b),
                    c,
                    ty(output),
                    &options.jit,
                )
                .map_err(codegen)?;
                (Kernel::Gemm(Box::new(kernel)), vec![a, b])
            }
        }
        Op::MatMul => {
            let [a, b] = exactly(node).map_err(unsupported)?;
            if is_const(b) {
                let kernel =
                    GemmKernel::compile_matmul(ty(a), constant(b, "b")?, ty(output), &options.jit)
                        .map_err(codegen)?;
                (Kernel::Gemm(Box::new(kernel)), vec![a])
            } else {
                let kernel =
                    GemmKernel::compile_matmul_runtime_b(ty(a), ty(b), ty(output), &options.jit)
                        .map_err(codegen)?;
                (Kernel::Gemm(Box::new(kernel)), vec![a, b])
            }
        }
        Op::Concat { axis } => {
            let ins = node.inputs();
            let types: Vec<&TensorType> = ins.iter().map(|&x| ty(x)).collect();
            let kernel =
                ConcatKernel::compile(*axis, &types, ty(output), &options.jit).map_err(codegen)?;
            (Kernel::Concat(Box::new(kernel)), ins.to_vec())
        }
        Op::Softmax { axis, legacy } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel =
                SoftmaxKernel::compile(*axis, *legacy, ty(x), &options.jit).map_err(codegen)?;
            (Kernel::Softmax(Box::new(kernel)), vec![x])
        }
        Op::Quantize => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel =
                QuantizeKernel::compile(ty(x), ty(output), &options.jit).map_err(codegen)?;
            let kernel = Kernel::Quantize {
                kernel: Box::new(kernel),
                y: ty(output).dtype,
            };
            (kernel, vec![x])
        }
        Op::Dequantize => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel =
                DequantizeKernel::compile(ty(x), ty(output), &options.jit).map_err(codegen)?;
            let kernel = Kernel::Dequantize {
                kernel: Box::new(kernel),
                x: ty(x).dtype,
            };
            (kernel, vec![x])
        }
        Op::Conv(attrs) => {
            let (fconv, reads) = fconv_node(graph, node, attrs, output).map_err(unsupported)?;
            let residual = fconv.residual;
            let kernel = FConvKernel::compile(&fconv, &options.jit).map_err(codegen)?;
            let kernel = Kernel::FConv {
                scratch: kernel.new_scratch(),
                kernel: Box::new(kernel),
                residual,
            };
            (kernel, reads)
        }
        Op::ConvTranspose(attrs) => {
            let (node, x) =
                fconv_transpose_node(graph, node, attrs, output).map_err(unsupported)?;
            let kernel = FConvTransposeKernel::compile(&node, &options.jit).map_err(codegen)?;
            let kernel = Kernel::ConvTranspose {
                scratch: kernel.new_scratch(),
                kernel: Box::new(kernel),
            };
            (kernel, vec![x])
        }
        Op::Resize(attrs) => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel =
                ResizeKernel::compile(attrs, ty(x), ty(output), &options.jit).map_err(codegen)?;
            let kernel = Kernel::Resize {
                scratch: kernel.new_scratch(),
                kernel: Box::new(kernel),
            };
            (kernel, vec![x])
        }
        Op::Activation(act) => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = ActivationKernel::compile(act, ty(x), &options.jit).map_err(codegen)?;
            (Kernel::Activation(Box::new(kernel)), vec![x])
        }
        Op::Binary(binary) => {
            let [a, b] = exactly(node).map_err(unsupported)?;
            let kernel = BinaryKernel::compile(*binary, ty(a), ty(b), ty(output), &options.jit)
                .map_err(codegen)?;
            (Kernel::Binary(Box::new(kernel)), vec![a, b])
        }
        Op::BatchNorm { epsilon } => {
            let [x, scale, bias, mean, var] = exactly(node).map_err(unsupported)?;
            let params = [
                constant(scale, "scale")?,
                constant(bias, "bias")?,
                constant(mean, "mean")?,
                constant(var, "var")?,
            ];
            let kernel =
                BatchNormKernel::compile(ty(x), params, *epsilon, &options.jit).map_err(codegen)?;
            (Kernel::BatchNorm(Box::new(kernel)), vec![x])
        }
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = LrnKernel::compile(*size, *alpha, *beta, *bias, ty(x), &options.jit)
                .map_err(codegen)?;
            (Kernel::Lrn(Box::new(kernel)), vec![x])
        }
        Op::Transpose { perm } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = MoveKernel::compile_transpose(perm, ty(x), ty(output), &options.jit)
                .map_err(codegen)?;
            (Kernel::Move(Box::new(kernel)), vec![x])
        }
        Op::Slice { axes } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = MoveKernel::compile_slice(axes, ty(x), ty(output), &options.jit)
                .map_err(codegen)?;
            (Kernel::Move(Box::new(kernel)), vec![x])
        }
        Op::Pad { mode, pads, value } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel =
                MoveKernel::compile_pad(*mode, pads, *value, ty(x), ty(output), &options.jit)
                    .map_err(codegen)?;
            (Kernel::Move(Box::new(kernel)), vec![x])
        }
        Op::Gather { axis } => {
            let [x, indices] = exactly(node).map_err(unsupported)?;
            let indices = constant(indices, "indices")?;
            let kernel =
                MoveKernel::compile_gather(*axis, indices, ty(x), ty(output), &options.jit)
                    .map_err(codegen)?;
            (Kernel::Move(Box::new(kernel)), vec![x])
        }
        Op::Split { axis, sizes } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let out_tys: Vec<&TensorType> = node.outputs.iter().map(|o| &o.ty).collect();
            let kernels = MoveKernel::compile_split(*axis, sizes, ty(x), &out_tys, &options.jit)
                .map_err(codegen)?;
            (Kernel::Split(kernels), vec![x])
        }
        Op::Sum => {
            let ins = node.inputs();
            let types: Vec<&TensorType> = ins.iter().map(|&x| ty(x)).collect();
            let kernel = SumKernel::compile(&types, ty(output), &options.jit).map_err(codegen)?;
            let scratch = kernel.new_scratch();
            (
                Kernel::Sum {
                    kernel: Box::new(kernel),
                    scratch,
                },
                ins.to_vec(),
            )
        }
        Op::ReduceMean { axes, keepdims } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel =
                ReduceMeanKernel::compile(axes, *keepdims, ty(x), ty(output), &options.jit)
                    .map_err(codegen)?;
            (Kernel::ReduceMean(Box::new(kernel)), vec![x])
        }
        Op::Cast { .. } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = CastKernel::compile(ty(x), ty(output), &options.jit).map_err(codegen)?;
            (Kernel::Cast(Box::new(kernel)), vec![x])
        }
        Op::MatMulInteger => {
            let ins = between(node, 2, 4).map_err(unsupported)?;
            let (a, b) = (ins[0], ins[1]);
            let a_zp = ins.get(2).copied();
            let b_zp = match ins.get(3) {
                Some(&z) => Some(constant(z, "b zero point")?),
                None => None,
            };
            let kernel = MatMulIntegerKernel::compile(
                ty(a),
                a_zp.map(ty),
                constant(b, "b")?,
                b_zp,
                ty(output),
                &options.jit,
            )
            .map_err(codegen)?;
            let kernel = Kernel::MatMulInteger {
                kernel: Box::new(kernel),
                a_zero_point: a_zp.is_some(),
            };
            (kernel, std::iter::once(a).chain(a_zp).collect())
        }
        Op::DynamicQuantize => {
            let [x] = exactly(node).map_err(unsupported)?;
            if node.outputs.len() != 3 {
                return Err(unsupported(format!(
                    "{} outputs, expected y, scale and zero point",
                    node.outputs.len()
                )));
            }
            let kernel = DynamicQuantizeKernel::compile(ty(x), &options.jit).map_err(codegen)?;
            (Kernel::DynamicQuantize(Box::new(kernel)), vec![x])
        }
        shape_only if is_shape_only(shape_only) => {
            let [x] = exactly(node).map_err(unsupported)?;
            if ty(x).byte_size() != ty(output).byte_size() {
                return Err(unsupported(format!(
                    "input {} and output {} differ in size",
                    ty(x),
                    ty(output)
                )));
            }
            (Kernel::Copy, vec![x])
        }
        other => {
            return Err(RuntimeError::NoKernel(vec![MissingKernel {
                node: node.name.clone(),
                op: other.mnemonic(),
            }]))
        }
    };
    let mut places = Vec::with_capacity(reads.len());
    for v in reads {
        places.push(binder.place(v)?);
    }
    let mut writes = Vec::with_capacity(node.outputs.len());
    for port in 0..node.outputs.len() {
        writes.push(binder.place(ValueId {
            node: node_id,
            port: u16::try_from(port).expect("a node has fewer than 65536 outputs"),
        })?);
    }
    Ok(Some(Step {
        node: node.name.clone(),
        op,
        kernel,
        reads: places,
        writes,
    }))
}

/// The data of an operand a kernel packs at compile time, or why there is none.
/// An f32 Conv node's kernel description (weights and bias constants, packed at compile
/// time) and the values it reads at run time: `x`, then the residual when it has one.
pub(crate) fn fconv_node<'g>(
    graph: &'g Graph,
    node: &'g Node,
    attrs: &'g ConvAttrs,
    output: ValueId,
) -> Result<(FConvNode<'g>, Vec<ValueId>), String> {
    let ins = between(node, 2, 4)?;
    let bias = match ins.get(2) {
        Some(&b) => Some(constant_operand(graph, b, "bias")?),
        None => None,
    };
    let residual = ins.get(3).copied();
    let fconv = FConvNode {
        attrs,
        x_ty: graph.value_type(ins[0]),
        w: constant_operand(graph, ins[1], "weights")?,
        bias,
        residual: residual.is_some(),
        out_ty: graph.value_type(output),
    };
    Ok((fconv, std::iter::once(ins[0]).chain(residual).collect()))
}

/// An f32 ConvTranspose node's kernel description (weights and bias packed at compile
/// time) and the one value it reads at run time, `x`.
pub(crate) fn fconv_transpose_node<'g>(
    graph: &'g Graph,
    node: &'g Node,
    attrs: &'g ConvTransposeAttrs,
    output: ValueId,
) -> Result<(FConvTransposeNode<'g>, ValueId), String> {
    let ins = between(node, 2, 3)?;
    let bias = match ins.get(2) {
        Some(&b) => Some(constant_operand(graph, b, "bias")?),
        None => None,
    };
    let deconv = FConvTransposeNode {
        attrs,
        x_ty: graph.value_type(ins[0]),
        w: constant_operand(graph, ins[1], "weights")?,
        bias,
        out_ty: graph.value_type(output),
    };
    Ok((deconv, ins[0]))
}

pub(crate) fn constant_operand<'g>(
    graph: &'g Graph,
    v: ValueId,
    what: &str,
) -> Result<&'g Tensor, String> {
    match graph.node(v.node).op {
        Op::Const(_) => graph.const_tensor(v).ok_or_else(|| {
            format!(
                "the {what} '{}' is a constant without data (a summary, as in a printed \
                 .kir dump): nothing to pack",
                graph.value_name(v)
            )
        }),
        _ => Err(format!(
            "the {what} '{}' must be a constant (kernels pack them at compile time)",
            graph.value_name(v)
        )),
    }
}

/// Borrow what one step touches: shared views of the buffers it reads, exclusive views of
/// those it writes. The arena is split around the written ranges (the memory plan never lets
/// a step's reads and writes overlap: they are live at the same step), so every view is a
/// safe, disjoint borrow.
fn step_views<'a>(
    arena: &'a mut [u8],
    output_buffers: &'a mut [AlignedBuffer],
    inputs: &'a [Cow<'a, [u8]>],
    constants: &'a [(TensorType, AlignedBuffer)],
    reads: &[Place],
    writes: &[Place],
) -> (Vec<&'a [u8]>, Vec<&'a mut [u8]>) {
    let mut write_views: Vec<Option<&'a mut [u8]>> = writes.iter().map(|_| None).collect();

    let mut arena_writes: Vec<(usize, Range<usize>)> = writes
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Place::Arena(r) => Some((i, r.clone())),
            _ => None,
        })
        .collect();
    arena_writes.sort_by_key(|(_, r)| r.start);
    let mut arena_segments: Vec<(usize, &'a [u8])> = Vec::new();
    let (mut rest, mut base) = (arena, 0);
    for (i, range) in arena_writes {
        let (before, tail) = rest.split_at_mut(range.start - base);
        let (written, after) = tail.split_at_mut(range.len());
        arena_segments.push((base, before));
        write_views[i] = Some(written);
        (rest, base) = (after, range.end);
    }
    arena_segments.push((base, rest));

    let mut output_views: Vec<Option<&'a [u8]>> = Vec::with_capacity(output_buffers.len());
    for (k, buffer) in output_buffers.iter_mut().enumerate() {
        match writes.iter().position(|p| *p == Place::Output(k)) {
            Some(i) => {
                write_views[i] = Some(buffer.as_mut_slice());
                output_views.push(None);
            }
            None => output_views.push(Some(buffer.as_slice())),
        }
    }

    let read_views = reads
        .iter()
        .map(|place| match place {
            Place::Arena(r) => arena_segments
                .iter()
                .find(|(start, seg)| *start <= r.start && r.end <= start + seg.len())
                .map(|(start, seg)| &seg[r.start - start..r.end - start])
                .expect("the memory plan keeps a step's reads apart from its writes"),
            Place::Input(i) => inputs[*i].as_ref(),
            Place::Const(k) => constants[*k].1.as_slice(),
            Place::Output(k) => output_views[*k].expect("a step never reads what it writes"),
        })
        .collect();
    let write_views = write_views
        .into_iter()
        .map(|w| w.expect("every write is an arena range or an output buffer"))
        .collect();
    (read_views, write_views)
}

/// A tensor's elements as native-endian bytes, borrowed where the element type allows.
pub(crate) fn tensor_bytes(tensor: &Tensor) -> Cow<'_, [u8]> {
    match tensor.data() {
        TensorData::F32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        TensorData::I8(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        TensorData::U8(v) => Cow::Borrowed(v),
        TensorData::I32(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        TensorData::I64(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        // f16 and bool have no byte-cast; kiln only targets little-endian hosts, where
        // little-endian bytes are the native ones
        TensorData::F16(_) | TensorData::Bool(_) => Cow::Owned(tensor.to_le_bytes()),
    }
}

/// Decode the bytes of a value of type `ty` (kiln only targets little-endian hosts, where
/// the native bytes are the little-endian ones).
fn tensor_from_bytes(ty: &TensorType, bytes: &[u8]) -> Tensor {
    Tensor::new(ty.shape.clone(), tensor_data_from_le_bytes(ty.dtype, bytes))
        .expect("buffers are sized from the value's type")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Activation, ConvAttrs, Output, PadMode, PoolAttrs, Quant, SliceAxis};

    /// A small deterministic generator (xorshift64*) for test data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn int(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }
        fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<i64> {
            (0..n).map(|_| self.int(lo, hi)).collect()
        }
    }

    fn int_data(dtype: DType, values: Vec<i64>) -> TensorData {
        match dtype {
            DType::U8 => TensorData::U8(values.into_iter().map(|v| v as u8).collect()),
            DType::I8 => TensorData::I8(values.into_iter().map(|v| v as i8).collect()),
            DType::I32 => TensorData::I32(values.into_iter().map(|v| v as i32).collect()),
            other => panic!("test data of {other}"),
        }
    }

    fn random_tensor(rng: &mut Rng, dtype: DType, shape: Vec<usize>) -> Tensor {
        let (lo, hi) = dtype.int_range().expect("an integer dtype");
        let n = shape.iter().product();
        Tensor::new(shape, int_data(dtype, rng.ints(n, lo, hi))).expect("sized to the shape")
    }

    struct ConvSpec {
        c_out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        w_dtype: DType,
        per_channel: bool,
        bias: bool,
        act: Option<Activation>,
        out: (DType, f32, i32),
    }

    /// Add a QConv on `x` with random weights (and bias) as `spec` says.
    fn add_qconv(g: &mut Graph, rng: &mut Rng, name: &str, x: ValueId, spec: ConvSpec) -> ValueId {
        let x_ty = g.value_type(x).clone();
        let (n, c_in, h, w) = (x_ty.shape[0], x_ty.shape[1], x_ty.shape[2], x_ty.shape[3]);
        let w_shape = vec![spec.c_out, c_in / spec.groups, spec.kernel, spec.kernel];
        let weights = random_tensor(rng, spec.w_dtype, w_shape);
        let w_zp = |rng: &mut Rng| match spec.w_dtype {
            DType::U8 => rng.int(100, 150) as i32,
            _ => 0,
        };
        let w_quant = if spec.per_channel {
            Quant::PerAxis {
                axis: 0,
                scales: (0..spec.c_out).map(|c| 0.002 + 0.001 * c as f32).collect(),
                zero_points: (0..spec.c_out).map(|_| w_zp(rng)).collect(),
            }
        } else {
            Quant::per_tensor(0.004, w_zp(rng))
        };
        let w_value = g.add_const(format!("{name}.w"), weights, Some(w_quant));
        let mut inputs = vec![x, w_value];
        if spec.bias {
            let b = Tensor::new(
                vec![spec.c_out],
                int_data(DType::I32, rng.ints(spec.c_out, -3000, 3000)),
            )
            .expect("sized");
            inputs.push(g.add_const(format!("{name}.b"), b, None));
        }
        let out_hw = |d: usize| (d + 2 * spec.pad - spec.kernel) / spec.stride + 1;
        let (dtype, scale, zp) = spec.out;
        let out_ty = TensorType::new(dtype, vec![n, spec.c_out, out_hw(h), out_hw(w)])
            .with_quant(Quant::per_tensor(scale, zp));
        let attrs = ConvAttrs {
            kernel: vec![spec.kernel; 2],
            strides: vec![spec.stride; 2],
            pads: vec![spec.pad; 4],
            dilations: vec![1, 1],
            groups: spec.groups,
            act: spec.act,
        };
        g.add_node_typed(
            name,
            Op::QConv(attrs),
            &inputs,
            vec![Output {
                name: name.to_string(),
                ty: out_ty,
            }],
        )[0]
    }

    /// x u8 → 3×3 conv 6→12 (i8 per-channel weights, bias, ReLU, u8 out) → depthwise 3×3
    /// stride 2 (u8 per-tensor weights with a zero point, no bias, i8 out) → 1×1 conv 12→5
    /// (i8 per-channel, bias, i8 out). Outputs: the last conv, the first one (also read by
    /// the depthwise: a graph output that is an operand), and x itself.
    fn three_convs(batch: usize) -> Graph {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut g = Graph::new("three_convs");
        let x = g.add_input(
            "x",
            TensorType::new(DType::U8, vec![batch, 6, 9, 9])
                .with_quant(Quant::per_tensor(0.05, 128)),
        );
        let spec =
            |c_out, kernel, stride, pad, groups, w_dtype, per_channel, bias, act, out| ConvSpec {
                c_out,
                kernel,
                stride,
                pad,
                groups,
                w_dtype,
                per_channel,
                bias,
                act,
                out,
            };
        let y1 = add_qconv(
            &mut g,
            &mut rng,
            "conv1",
            x,
            spec(
                12,
                3,
                1,
                1,
                1,
                DType::I8,
                true,
                true,
                Some(Activation::Relu),
                (DType::U8, 0.1, 10),
            ),
        );
        let y2 = add_qconv(
            &mut g,
            &mut rng,
            "depthwise",
            y1,
            spec(
                12,
                3,
                2,
                1,
                12,
                DType::U8,
                false,
                false,
                None,
                (DType::I8, 0.07, -3),
            ),
        );
        let y3 = add_qconv(
            &mut g,
            &mut rng,
            "pointwise",
            y2,
            spec(
                5,
                1,
                1,
                0,
                1,
                DType::I8,
                true,
                true,
                None,
                (DType::I8, 0.2, 4),
            ),
        );
        g.set_outputs(vec![y3, y1, x]);
        kiln_ir::verify(&g).expect("the test graph is well-formed");
        g
    }

    fn random_input(g: &Graph, seed: u64) -> Vec<Tensor> {
        let mut rng = Rng(seed);
        g.inputs()
            .iter()
            .map(|&v| {
                let ty = g.value_type(v);
                random_tensor(&mut rng, ty.dtype, ty.shape.clone())
            })
            .collect()
    }

    fn assert_bitwise_eq(got: &[Tensor], want: &[Tensor]) {
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(a.bitwise_eq(b), "output {i} differs: {a:?} vs {b:?}");
        }
    }

    /// The compiled model equals the reference interpreter bit for bit, over several runs
    /// (the arena and scratch are reused) and with batch 2.
    #[test]
    fn chained_qconvs_match_the_interpreter() {
        for batch in [1, 2] {
            let g = three_convs(batch);
            let mut compiled = Model::from_graph(g.clone())
                .compile(&Options::default())
                .expect("every node is a QConv");
            let names: Vec<_> = compiled.schedule().map(|(n, _)| n).collect();
            assert_eq!(names, ["conv1", "depthwise", "pointwise"]);
            // only the depthwise output is an intermediate (conv1's is a graph output)
            assert_eq!(compiled.plan().slots().len(), 1);
            for seed in [1, 2, 3] {
                let inputs = random_input(&g, seed);
                let want = kiln_interp::run(&g, &inputs).expect("the interpreter runs it");
                let got = compiled.run(&inputs).expect("valid inputs");
                assert_bitwise_eq(&got, &want);
            }
        }
    }

    /// A longer chain where intermediates share arena slots: five convs of 8 channels,
    /// only the last an output, so values 1 and 3 (and 2 and 4) reuse the same bytes.
    #[test]
    fn arena_reuse_keeps_results_exact() {
        let mut rng = Rng(42);
        let mut g = Graph::new("chain");
        let mut v = g.add_input(
            "x",
            TensorType::new(DType::I8, vec![1, 8, 7, 7]).with_quant(Quant::per_tensor(0.03, -5)),
        );
        for i in 0..5 {
            let out = if i % 2 == 0 {
                (DType::U8, 0.05 + 0.01 * i as f32, 100)
            } else {
                (DType::I8, 0.04, 3)
            };
            v = add_qconv(
                &mut g,
                &mut rng,
                &format!("c{i}"),
                v,
                ConvSpec {
                    c_out: 8,
                    kernel: 3,
                    stride: 1,
                    pad: 1,
                    groups: 1,
                    w_dtype: DType::I8,
                    per_channel: i % 2 == 1,
                    bias: true,
                    act: None,
                    out,
                },
            );
        }
        g.set_outputs(vec![v]);
        let mut compiled = Model::from_graph(g.clone())
            .compile(&Options::default())
            .expect("QConvs only");
        let plan = compiled.plan();
        let slots = plan.slots();
        assert_eq!(slots.len(), 4);
        // each value is 8·7·7 = 392 bytes (448 aligned); lifetimes [i+1, i+2] in a chain
        // let every other value share: two slots
        assert_eq!(slots[0].offset, slots[2].offset);
        assert_eq!(slots[1].offset, slots[3].offset);
        assert_eq!(plan.peak_bytes, 2 * 448);
        assert_eq!(plan.sum_bytes, 4 * 392);
        for seed in [7, 8] {
            let inputs = random_input(&g, seed);
            let want = kiln_interp::run(&g, &inputs).expect("interpreter");
            assert_bitwise_eq(&compiled.run(&inputs).expect("valid"), &want);
        }
    }

    #[test]
    fn wrong_inputs_are_errors_naming_the_input() {
        let g = three_convs(1);
        let mut compiled = Model::from_graph(g.clone())
            .compile(&Options::default())
            .expect("QConvs only");
        let err = compiled.run(&[]).expect_err("no inputs");
        assert!(
            matches!(
                err,
                RuntimeError::InputCount {
                    expected: 1,
                    got: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("x: u8[1,6,9,9]"), "{err}");

        let wrong_dtype = Tensor::zeros(DType::I8, vec![1, 6, 9, 9]).expect("valid");
        let err = compiled.run(&[wrong_dtype]).expect_err("i8 instead of u8");
        assert!(matches!(&err, RuntimeError::InputMismatch { index: 0, name, .. } if name == "x"));
        assert!(err.to_string().contains("expected u8[1,6,9,9]"), "{err}");

        let wrong_shape = Tensor::zeros(DType::U8, vec![1, 6, 9, 8]).expect("valid");
        let err = compiled.run(&[wrong_shape]).expect_err("wrong shape");
        assert!(
            matches!(&err, RuntimeError::InputMismatch { index: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("[1, 6, 9, 8]"), "{err}");
        // a valid run still works after the rejected ones
        assert!(compiled.run(&random_input(&g, 5)).is_ok());
    }

    /// `got` within `tolerance · max|want|` of `want`, tensor by tensor.
    fn assert_close(got: &[Tensor], want: &[Tensor], tolerance: f32) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.shape(), w.shape());
            let (TensorData::F32(g), TensorData::F32(w)) = (g.data(), w.data()) else {
                panic!("f32 outputs expected");
            };
            let scale = w.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a - b).abs() <= tolerance * scale,
                    "element {i}: got {a}, want {b} (max |want| {scale})"
                );
            }
        }
    }

    /// The f32 demo model (Conv, BatchNorm, Relu, Add, MaxPool, GlobalAveragePool, Flatten,
    /// Gemm, Softmax) compiles to machine code with no missing kernel and agrees with the
    /// interpreter within 1e-4 of the largest output.
    #[test]
    fn float_demo_model_runs_as_machine_code() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-cli/assets/demo.onnx");
        let model = Model::load(&path).expect("the demo model imports");
        let g = model.graph();
        let mut compiled = model
            .compile(&Options::default())
            .expect("every op of the demo has a kernel");
        let mut rng = Rng(11);
        let inputs: Vec<Tensor> = g
            .inputs()
            .iter()
            .map(|&v| random_f32(&mut rng, g.value_type(v).shape.clone()))
            .collect();
        let want = kiln_interp::run(g, &inputs).expect("the interpreter runs the demo");
        let got = compiled.run(&inputs).expect("the compiled demo runs");
        assert_close(&got, &want, 1e-4);
    }

    /// A `.kir` file loads and runs like the graph it was printed from (two 1×1 convs whose
    /// constants are small enough to print inline); a dump whose weights are summaries is a
    /// compile error naming the node; unknown extensions and missing files name the path.
    #[test]
    fn loads_kir_files() {
        let mut rng = Rng(5);
        let mut g = Graph::new("small");
        let x = g.add_input(
            "x",
            TensorType::new(DType::U8, vec![1, 2, 3, 3]).with_quant(Quant::per_tensor(0.1, 3)),
        );
        let mut v = x;
        for (i, c_out) in [3, 2].into_iter().enumerate() {
            let spec = ConvSpec {
                c_out,
                kernel: 1,
                stride: 1,
                pad: 0,
                groups: 1,
                w_dtype: DType::I8,
                per_channel: i == 0,
                bias: true,
                act: None,
                out: (DType::U8, 0.05, 120),
            };
            v = add_qconv(&mut g, &mut rng, &format!("c{i}"), v, spec);
        }
        g.set_outputs(vec![v]);
        let dir = std::env::temp_dir().join(format!("kiln-runtime-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("small.kir");
        std::fs::write(&path, kiln_ir::text::print_graph(&g)).expect("write");
        let loaded = Model::load(&path).expect("the printed graph parses");
        let inputs = random_input(&g, 11);
        let got = loaded
            .compile(&Options::default())
            .expect("QConvs only")
            .run(&inputs)
            .expect("valid");
        assert_bitwise_eq(&got, &kiln_interp::run(&g, &inputs).expect("interpreter"));

        let summarized = dir.join("summarized.kir");
        std::fs::write(&summarized, kiln_ir::text::print_graph(&three_convs(1))).expect("write");
        let err = Model::load(&summarized)
            .expect("summaries parse")
            .compile(&Options::default())
            .expect_err("no weight data");
        assert!(
            matches!(&err, RuntimeError::Unsupported { node, .. } if node == "conv1"),
            "{err}"
        );
        assert!(err.to_string().contains("without data"), "{err}");

        let err = Model::load(dir.join("model.txt")).expect_err("unknown format");
        assert!(matches!(err, RuntimeError::UnknownFormat { .. }), "{err}");
        let err = Model::load(dir.join("missing.kir")).expect_err("no such file");
        assert!(err.to_string().contains("missing.kir"), "{err}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    /// Graph outputs that are not kernel results are still returned: a constant, an input,
    /// and a kernel result listed twice.
    #[test]
    fn outputs_may_be_constants_inputs_or_repeated() {
        let mut g = three_convs(1);
        let outputs = g.outputs().to_vec();
        let constant = Tensor::new(vec![3], TensorData::I32(vec![7, -8, 9])).expect("sized");
        let c = g.add_const("table", constant.clone(), None);
        g.set_outputs(vec![outputs[0], c, outputs[2], outputs[0]]);
        let inputs = random_input(&g, 21);
        let got = Model::from_graph(g.clone())
            .compile(&Options::default())
            .expect("QConvs only")
            .run(&inputs)
            .expect("valid");
        assert_bitwise_eq(&got, &kiln_interp::run(&g, &inputs).expect("interpreter"));
        assert!(got[1].bitwise_eq(&constant) && got[2].bitwise_eq(&inputs[0]));
    }

    /// QConv weights must be constants: a graph feeding them from an input is rejected at
    /// compile time naming the node.
    #[test]
    fn non_constant_weights_are_rejected() {
        let mut g = Graph::new("dynamic_weights");
        let x = g.add_input(
            "x",
            TensorType::new(DType::U8, vec![1, 2, 4, 4]).with_quant(Quant::per_tensor(0.1, 0)),
        );
        let w = g.add_input(
            "w",
            TensorType::new(DType::I8, vec![2, 2, 1, 1]).with_quant(Quant::per_tensor(0.1, 0)),
        );
        let y = g.add_node_typed(
            "conv",
            Op::QConv(ConvAttrs {
                kernel: vec![1, 1],
                strides: vec![1, 1],
                pads: vec![0; 4],
                dilations: vec![1, 1],
                groups: 1,
                act: None,
            }),
            &[x, w],
            vec![Output {
                name: "y".into(),
                ty: TensorType::new(DType::U8, vec![1, 2, 4, 4])
                    .with_quant(Quant::per_tensor(0.2, 0)),
            }],
        )[0];
        g.set_outputs(vec![y]);
        let err = Model::from_graph(g)
            .compile(&Options::default())
            .expect_err("weights from an input");
        assert!(
            matches!(&err, RuntimeError::Unsupported { node, .. } if node == "conv"),
            "{err}"
        );
    }

    fn random_f32(rng: &mut Rng, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        // multiples of 1/64 in [-4, 4]: many land exactly on quantization ties (scale 1/32)
        let values = (0..n).map(|_| rng.int(-256, 256) as f32 / 64.0).collect();
        Tensor::new(shape, TensorData::F32(values)).expect("sized to the shape")
    }

    fn add_typed(g: &mut Graph, name: &str, op: Op, inputs: &[ValueId], ty: TensorType) -> ValueId {
        g.add_node_typed(
            name,
            op,
            inputs,
            vec![Output {
                name: name.to_string(),
                ty,
            }],
        )[0]
    }

    fn add_inferred(g: &mut Graph, name: &str, op: Op, inputs: &[ValueId]) -> ValueId {
        g.add_node(name, op, inputs, vec![name.to_string()])
            .expect("the test graph's types infer")[0]
    }

    /// f32 x → quantize (u8) → 3×3 conv 5→8 (ReLU) → 2×2 max pool stride 2 → identity →
    /// 3×3 conv 8→6 (i8) → dequantize → reshape to [1, 150]; a second output is the global
    /// max pool of the i8 conv, flattened. Every kernel family and two shape-only copies.
    fn quantized_pipeline() -> Graph {
        let mut rng = Rng(77);
        let mut g = Graph::new("pipeline");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 5, 10, 10]));
        let q_ty = TensorType::new(DType::U8, vec![1, 5, 10, 10])
            .with_quant(Quant::per_tensor(1.0 / 32.0, 128));
        let xq = add_typed(&mut g, "quantize", Op::Quantize, &[x], q_ty);
        let conv_spec = |c_out, w_dtype, per_channel, act, out| ConvSpec {
            c_out,
            kernel: 3,
            stride: 1,
            pad: 1,
            groups: 1,
            w_dtype,
            per_channel,
            bias: true,
            act,
            out,
        };
        let y1 = add_qconv(
            &mut g,
            &mut rng,
            "conv1",
            xq,
            conv_spec(
                8,
                DType::I8,
                true,
                Some(Activation::Relu),
                (DType::U8, 0.05, 7),
            ),
        );
        let pool = PoolAttrs {
            kernel: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        };
        let p = add_inferred(&mut g, "pool", Op::MaxPool(pool), &[y1]);
        let p = add_inferred(&mut g, "identity", Op::Identity, &[p]);
        let y2 = add_qconv(
            &mut g,
            &mut rng,
            "conv2",
            p,
            conv_spec(6, DType::U8, false, None, (DType::I8, 0.08, -2)),
        );
        let f = add_inferred(&mut g, "dequantize", Op::Dequantize, &[y2]);
        let r = add_inferred(
            &mut g,
            "reshape",
            Op::Reshape {
                shape: vec![1, 150],
            },
            &[f],
        );
        let gp = add_inferred(&mut g, "global_pool", Op::GlobalMaxPool, &[y2]);
        let gf = add_inferred(&mut g, "flatten", Op::Flatten { axis: 1 }, &[gp]);
        g.set_outputs(vec![r, gf]);
        kiln_ir::verify(&g).expect("the test graph is well-formed");
        g
    }

    #[test]
    fn quantize_conv_pool_dequantize_pipeline_matches_the_interpreter() {
        let g = quantized_pipeline();
        let mut compiled = Model::from_graph(g.clone())
            .compile(&Options::default())
            .expect("every op has a kernel");
        let ops: Vec<_> = compiled.schedule().map(|(_, op)| op).collect();
        let order = g.topo_order().expect("acyclic");
        // one kernel per node, except the identity between two arena values: its output is
        // an alias of the pool's (the reshape and flatten write graph outputs: copies)
        let alias = |n: NodeId| compiled.plan().is_alias(ValueId { node: n, port: 0 });
        let aliased: Vec<_> = order
            .iter()
            .filter(|&&n| alias(n))
            .map(|&n| g.node(n).name.as_str())
            .collect();
        assert_eq!(aliased, ["identity"]);
        let want_ops: Vec<_> = order
            .iter()
            .filter(|&&n| !alias(n))
            .map(|&n| g.node(n))
            .filter(|n| !n.op.is_source())
            .map(|n| n.op.mnemonic())
            .collect();
        assert_eq!(ops, want_ops);
        for seed in [3, 4, 5] {
            let mut rng = Rng(seed);
            let inputs = vec![random_f32(&mut rng, vec![1, 5, 10, 10])];
            let want = kiln_interp::run(&g, &inputs).expect("the interpreter runs it");
            assert_bitwise_eq(&compiled.run(&inputs).expect("valid inputs"), &want);
        }
    }

    /// QMatMul with a constant `b` (i8 per column, packed at compile time) and with a
    /// run-time `b` (a graph input, u8 with a zero point, batch-broadcast against `a`).
    fn matmuls() -> Graph {
        let mut rng = Rng(99);
        let mut g = Graph::new("matmuls");
        let a = g.add_input(
            "a",
            TensorType::new(DType::U8, vec![2, 7, 13]).with_quant(Quant::per_tensor(0.03, 120)),
        );
        let b_const = random_tensor(&mut rng, DType::I8, vec![13, 9]);
        let b_quant = Quant::PerAxis {
            axis: 1,
            scales: (0..9).map(|i| 0.01 + 0.002 * i as f32).collect(),
            zero_points: vec![0; 9],
        };
        let b1 = g.add_const("b1", b_const, Some(b_quant));
        let b2 = g.add_input(
            "b2",
            TensorType::new(DType::U8, vec![2, 13, 5]).with_quant(Quant::per_tensor(0.02, 131)),
        );
        let y1_ty =
            TensorType::new(DType::I8, vec![2, 7, 9]).with_quant(Quant::per_tensor(0.15, 3));
        let y1 = add_typed(&mut g, "mm_const", Op::QMatMul, &[a, b1], y1_ty);
        let y2_ty =
            TensorType::new(DType::U8, vec![2, 7, 5]).with_quant(Quant::per_tensor(0.2, 100));
        let y2 = add_typed(&mut g, "mm_runtime", Op::QMatMul, &[a, b2], y2_ty);
        g.set_outputs(vec![y1, y2]);
        kiln_ir::verify(&g).expect("well-formed");
        g
    }

    #[test]
    fn qmatmul_constant_and_runtime_b_match_the_interpreter() {
        let g = matmuls();
        let mut compiled = Model::from_graph(g.clone())
            .compile(&Options::default())
            .expect("QMatMuls only");
        for seed in [1, 2] {
            let inputs = random_input(&g, seed);
            let want = kiln_interp::run(&g, &inputs).expect("interpreter");
            assert_bitwise_eq(&compiled.run(&inputs).expect("valid"), &want);
        }
    }

    /// An op without a kernel (a Gather whose indices are computed at run time) is listed
    /// by compile, named by node.
    #[test]
    fn op_without_kernel_is_a_missing_kernel() {
        let mut g = Graph::new("gather");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![4, 3]));
        let i = g.add_input("i", TensorType::new(DType::I64, vec![2]));
        let y = add_inferred(&mut g, "pick", Op::Gather { axis: 0 }, &[x, i]);
        g.set_outputs(vec![y]);
        match Model::from_graph(g).compile(&Options::default()) {
            Err(RuntimeError::NoKernel(missing)) => {
                assert_eq!(
                    missing,
                    [MissingKernel {
                        node: "pick".into(),
                        op: "gather"
                    }]
                );
            }
            other => panic!("expected NoKernel, got {other:?}"),
        }
    }

    /// LRN, Transpose, Split (two outputs, one a graph output, one used further), Pad,
    /// Slice and Gather with constant indices run as machine code and agree with the
    /// interpreter (LRN within 1e-5 of the largest output; the data movement is exact).
    #[test]
    fn lrn_and_data_movement_run_as_machine_code() {
        let mut g = Graph::new("movement");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 6, 3, 5]));
        let lrn = Op::Lrn {
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            bias: 1.0,
        };
        let y = add_inferred(&mut g, "norm", lrn, &[x]);
        let t = add_inferred(
            &mut g,
            "transpose",
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[y],
        );
        let parts = g
            .add_node(
                "split",
                Op::Split {
                    axis: 2,
                    sizes: vec![2, 4],
                },
                &[t],
                vec!["part0".to_string(), "part1".to_string()],
            )
            .expect("the split infers");
        let pads = vec![0, 0, 1, -1, 0, 0, 2, 3];
        let padded = add_inferred(
            &mut g,
            "pad",
            Op::Pad {
                mode: PadMode::Reflect,
                pads,
                value: 0.0,
            },
            &[parts[1]],
        );
        let slice = SliceAxis {
            axis: 3,
            start: 5,
            end: -1,
            step: -2,
        };
        let sliced = add_inferred(&mut g, "slice", Op::Slice { axes: vec![slice] }, &[padded]);
        let indices = g.add_const(
            "indices",
            Tensor::new(vec![2], TensorData::I64(vec![-1, 0])).expect("sized"),
            None,
        );
        let gathered = add_inferred(&mut g, "gather", Op::Gather { axis: 1 }, &[sliced, indices]);
        g.set_outputs(vec![parts[0], gathered]);
        let inputs = vec![random_f32(&mut Rng(5), vec![1, 6, 3, 5])];
        let want = kiln_interp::run(&g, &inputs).expect("the interpreter runs it");
        let mut compiled = Model::from_graph(g)
            .compile(&Options::default())
            .expect("every op has a kernel");
        let got = compiled.run(&inputs).expect("runs");
        assert_close(&got, &want, 1e-5);
    }

    /// Sum (three inputs, broadcast), ReduceMean, DynamicQuantize (three outputs, all graph
    /// outputs), Casts (u8 → i32 → f32, f32 → i8 with out-of-range values) and a dynamic
    /// quantization's matmul_integer with a run-time zero point run as machine code with
    /// the interpreter's bits.
    #[test]
    fn sum_reduce_mean_cast_and_dynamic_quantize_run_as_machine_code() {
        let mut g = Graph::new("reductions");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![2, 3, 4]));
        let column = g.add_input("column", TensorType::new(DType::F32, vec![3, 1]));
        let row = g.add_const(
            "row",
            Tensor::from_f32(vec![4], vec![0.5, -1.25, 3.0, 100.0]).expect("sized"),
            None,
        );
        let sum = add_inferred(&mut g, "sum", Op::Sum, &[x, row, column]);
        let mean = add_inferred(
            &mut g,
            "mean",
            Op::ReduceMean {
                axes: vec![0, 2],
                keepdims: true,
            },
            &[sum],
        );
        let q = g
            .add_node(
                "dq",
                Op::DynamicQuantize,
                &[sum],
                vec!["q".into(), "scale".into(), "zero_point".into()],
            )
            .expect("the dynamic quantize infers");
        let wide = add_inferred(&mut g, "wide", Op::Cast { to: DType::I32 }, &[q[0]]);
        let back = add_inferred(&mut g, "back", Op::Cast { to: DType::F32 }, &[wide]);
        let bytes = add_inferred(&mut g, "bytes", Op::Cast { to: DType::I8 }, &[sum]);
        // the `kiln quantize --dynamic` pattern: matmul_integer of the dynamically quantized
        // activations [6, 4] by constant i8 weights [4, 3], cast, times a_scale · w_scale
        let flat = add_inferred(&mut g, "flat", Op::Reshape { shape: vec![6, 4] }, &[sum]);
        let fq = g
            .add_node(
                "flat_dq",
                Op::DynamicQuantize,
                &[flat],
                vec!["fq".into(), "fq_scale".into(), "fq_zp".into()],
            )
            .expect("the dynamic quantize infers");
        let w = g.add_const(
            "w",
            Tensor::new(
                vec![4, 3],
                TensorData::I8(vec![1, -2, 3, 127, -128, 0, 5, 6, -7, 8, 9, 10]),
            )
            .expect("sized"),
            None,
        );
        let w_scale = g.add_const(
            "w_scale",
            Tensor::from_f32(vec![3], vec![0.01, 0.02, 0.5]).expect("sized"),
            None,
        );
        let acc = add_inferred(&mut g, "acc", Op::MatMulInteger, &[fq[0], w, fq[2]]);
        let acc_f = add_inferred(&mut g, "acc_f", Op::Cast { to: DType::F32 }, &[acc]);
        let scale = add_inferred(
            &mut g,
            "product_scale",
            Op::Binary(kiln_ir::BinaryOp::Mul),
            &[fq[1], w_scale],
        );
        let y = add_inferred(
            &mut g,
            "y",
            Op::Binary(kiln_ir::BinaryOp::Mul),
            &[acc_f, scale],
        );
        g.set_outputs(vec![mean, q[0], q[1], q[2], back, bytes, acc, y]);
        let mut rng = Rng(11);
        let inputs = vec![
            random_f32(&mut rng, vec![2, 3, 4]),
            random_f32(&mut rng, vec![3, 1]),
        ];
        let want = kiln_interp::run(&g, &inputs).expect("the interpreter runs it");
        let mut compiled = Model::from_graph(g)
            .compile(&Options::default())
            .expect("every op has a kernel");
        assert_bitwise_eq(&compiled.run(&inputs).expect("runs"), &want);
    }

    /// MatMul and Gemm whose B is computed by the graph (a transpose of the input, batched;
    /// a graph input) run as machine code within 1e-5 of the interpreter.
    #[test]
    fn matmul_and_gemm_with_runtime_b_run_as_machine_code() {
        let mut g = Graph::new("runtime_b");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![2, 3, 4]));
        let w = g.add_input("w", TensorType::new(DType::F32, vec![5, 4]));
        let xt = add_inferred(
            &mut g,
            "xt",
            Op::Transpose {
                perm: vec![0, 2, 1],
            },
            &[x],
        );
        let gram = add_inferred(&mut g, "gram", Op::MatMul, &[x, xt]);
        let rows = add_inferred(&mut g, "rows", Op::Reshape { shape: vec![6, 4] }, &[x]);
        let attrs = kiln_ir::GemmAttrs {
            alpha: 0.5,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
            act: None,
        };
        let gemm = add_inferred(&mut g, "gemm", Op::Gemm(attrs), &[rows, w]);
        g.set_outputs(vec![gram, gemm]);
        let mut rng = Rng(17);
        let inputs = vec![
            random_f32(&mut rng, vec![2, 3, 4]),
            random_f32(&mut rng, vec![5, 4]),
        ];
        let want = kiln_interp::run(&g, &inputs).expect("the interpreter runs it");
        let mut compiled = Model::from_graph(g)
            .compile(&Options::default())
            .expect("every op has a kernel");
        assert_close(&compiled.run(&inputs).expect("runs"), &want, 1e-5);
    }

    /// Splitting the convolutions and matrix multiplies over 1, 2 or 3 threads (forced on
    /// these small layers) gives the interpreter's bits every time.
    #[test]
    fn threads_give_identical_results() {
        for g in [quantized_pipeline(), three_convs(2), matmuls()] {
            let inputs = if g.name == "pipeline" {
                vec![random_f32(&mut Rng(8), vec![1, 5, 10, 10])]
            } else {
                random_input(&g, 8)
            };
            let want = kiln_interp::run(&g, &inputs).expect("interpreter");
            for threads in [1, 2, 3] {
                let options = Options {
                    threads,
                    min_macs_per_thread: 0,
                    ..Options::default()
                };
                let mut compiled = Model::from_graph(g.clone())
                    .compile(&options)
                    .expect("every op has a kernel");
                assert_bitwise_eq(&compiled.run(&inputs).expect("valid"), &want);
            }
        }
    }

    fn resize_attrs(sizes: Vec<usize>, mode: ResizeMode) -> kiln_ir::ResizeAttrs {
        let scales = vec![1.0, 1.0, 2.0, 2.0];
        kiln_ir::ResizeAttrs {
            sizes,
            mode,
            coord: kiln_ir::CoordTransform::Asymmetric,
            nearest: kiln_ir::NearestMode::Floor,
            scales,
            roi: Vec::new(),
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
        }
    }

    /// The float island `kiln quantize` leaves around a ConvTranspose (PP-OCR's head): x f32
    /// → quantize (u8) → nearest resize ×2 on the integers → dequantize → ConvTranspose 2×2
    /// stride 2 whose weights (i8 per output channel) and bias (i32) are dequantized
    /// constants, ReLU; a second output is a linear resize of x. The constant dequantizes
    /// are folded at compile time (no step), everything else is a kernel, and the outputs
    /// match the interpreter (the integer part bit for bit, the ConvTranspose to rounding).
    fn float_island_with_conv_transpose() -> Graph {
        let mut rng = Rng(31);
        let mut g = Graph::new("island");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 3, 4, 4]));
        let q_ty = TensorType::new(DType::U8, vec![1, 3, 4, 4])
            .with_quant(Quant::per_tensor(1.0 / 32.0, 128));
        let xq = add_typed(&mut g, "quantize", Op::Quantize, &[x], q_ty);
        let up = add_inferred(
            &mut g,
            "upsample",
            Op::Resize(resize_attrs(vec![1, 3, 8, 8], ResizeMode::Nearest)),
            &[xq],
        );
        let up = add_inferred(&mut g, "dequantize", Op::Dequantize, &[up]);
        let w = random_tensor(&mut rng, DType::I8, vec![3, 5, 2, 2]);
        let w_quant = Quant::PerAxis {
            axis: 1,
            scales: (0..5).map(|c| 0.01 + 0.002 * c as f32).collect(),
            zero_points: vec![0; 5],
        };
        let w = g.add_const("w.q", w, Some(w_quant));
        let w = add_inferred(&mut g, "w.dq", Op::Dequantize, &[w]);
        let b =
            Tensor::new(vec![5], int_data(DType::I32, rng.ints(5, -3000, 3000))).expect("sized");
        let b_quant = Quant::PerAxis {
            axis: 0,
            scales: (0..5).map(|c| 0.0003 + 0.0001 * c as f32).collect(),
            zero_points: vec![0; 5],
        };
        let b = g.add_const("b.q", b, Some(b_quant));
        let b = add_inferred(&mut g, "b.dq", Op::Dequantize, &[b]);
        let attrs = kiln_ir::ConvTransposeAttrs {
            kernel: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            output_padding: vec![0, 0],
            groups: 1,
            act: Some(Activation::Relu),
        };
        let y = add_inferred(&mut g, "deconv", Op::ConvTranspose(attrs), &[up, w, b]);
        let smooth = add_inferred(
            &mut g,
            "smooth",
            Op::Resize(resize_attrs(vec![1, 3, 8, 8], ResizeMode::Linear)),
            &[x],
        );
        g.set_outputs(vec![y, smooth]);
        kiln_ir::verify(&g).expect("the test graph is well-formed");
        g
    }

    #[test]
    fn float_island_with_conv_transpose_and_resizes_runs_as_machine_code() {
        let g = float_island_with_conv_transpose();
        let mut compiled = Model::from_graph(g.clone())
            .compile(&Options::default())
            .expect("every op has a kernel");
        // in some topological order
        let mut ops: Vec<_> = compiled.schedule().map(|(_, op)| op).collect();
        ops.sort_unstable();
        assert_eq!(
            ops,
            [
                "conv_transpose",
                "dequantize",
                "quantize",
                "resize",
                "resize"
            ]
        );
        for seed in [1, 2] {
            let inputs = vec![random_f32(&mut Rng(seed), vec![1, 3, 4, 4])];
            let want = kiln_interp::run(&g, &inputs).expect("the interpreter runs it");
            let got = compiled.run(&inputs).expect("valid inputs");
            assert_close(&got, &want, 1e-5);
            // the linear resize repeats the interpreter's f64 arithmetic: exact
            assert!(got[1].bitwise_eq(&want[1]));
        }
    }

    /// The float islands a quantizer leaves between int8 convs, on a 9×9 map (row tails):
    /// `dequantize → hard_swish` whose result has three users (kept in memory), a
    /// squeeze-excite `h · hard_sigmoid(gap(h))` broadcast per channel and quantized, a
    /// residual `relu(dequantize(a) + dequantize(b))` that is also a graph output, and a
    /// `quantize → dequantize → sigmoid` round trip.
    fn quantized_islands() -> Graph {
        let mut rng = Rng(5);
        let mut g = Graph::new("islands");
        let shape = vec![1, 8, 9, 9];
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 4, 9, 9]));
        let x_ty = TensorType::new(DType::U8, vec![1, 4, 9, 9])
            .with_quant(Quant::per_tensor(1.0 / 32.0, 128));
        let xq = add_typed(&mut g, "xq", Op::Quantize, &[x], x_ty);
        let conv = |c_out, out| ConvSpec {
            c_out,
            kernel: 3,
            stride: 1,
            pad: 1,
            groups: 1,
            w_dtype: DType::I8,
            per_channel: true,
            bias: true,
            act: None,
            out,
        };
        let c1 = add_qconv(&mut g, &mut rng, "c1", xq, conv(8, (DType::U8, 0.05, 100)));
        let d1 = add_inferred(&mut g, "d1", Op::Dequantize, &[c1]);
        let h1 = add_inferred(&mut g, "h1", Op::Activation(Activation::HardSwish), &[d1]);
        let u8_ty = |scale, zp| {
            TensorType::new(DType::U8, shape.clone()).with_quant(Quant::per_tensor(scale, zp))
        };
        let q1 = add_typed(&mut g, "q1", Op::Quantize, &[h1], u8_ty(0.04, 10));
        let c2 = add_qconv(&mut g, &mut rng, "c2", q1, conv(8, (DType::I8, 0.06, -3)));
        let gap = add_inferred(&mut g, "gap", Op::GlobalAveragePool, &[h1]);
        let hsig = add_inferred(
            &mut g,
            "hsig",
            Op::Activation(Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            }),
            &[gap],
        );
        let se = add_inferred(
            &mut g,
            "se",
            Op::Binary(kiln_ir::BinaryOp::Mul),
            &[h1, hsig],
        );
        let qse = add_typed(&mut g, "qse", Op::Quantize, &[se], u8_ty(0.03, 20));
        let d2 = add_inferred(&mut g, "d2", Op::Dequantize, &[c2]);
        let d3 = add_inferred(&mut g, "d3", Op::Dequantize, &[qse]);
        let sum = add_inferred(&mut g, "sum", Op::Binary(kiln_ir::BinaryOp::Add), &[d2, d3]);
        let r = add_inferred(&mut g, "r", Op::Activation(Activation::Relu), &[sum]);
        let i8_ty =
            TensorType::new(DType::I8, shape.clone()).with_quant(Quant::per_tensor(0.05, -7));
        let qr = add_typed(&mut g, "qr", Op::Quantize, &[r], i8_ty);
        let dr = add_inferred(&mut g, "dr", Op::Dequantize, &[qr]);
        let s = add_inferred(&mut g, "s", Op::Activation(Activation::Sigmoid), &[dr]);
        g.set_outputs(vec![r, s, c2]);
        kiln_ir::verify(&g).expect("the test graph is well-formed");
        g
    }

    #[test]
    fn fused_elementwise_chains_equal_the_nodes_run_one_by_one() {
        let g = quantized_islands();
        let compile = |fuse_elementwise, fuse_conv_epilogues| {
            Model::from_graph(g.clone())
                .compile(&Options {
                    fuse_elementwise,
                    fuse_conv_epilogues,
                    ..Options::default()
                })
                .expect("every op has a kernel")
        };
        let mut fused = compile(true, true);
        let mut chains_only = compile(true, false);
        let mut unfused = compile(false, false);
        let ops = |m: &CompiledModel| -> Vec<String> {
            m.schedule().map(|(_, op)| op.to_string()).collect()
        };
        let names = |m: &CompiledModel, kind: &str| -> Vec<String> {
            let mut names: Vec<String> = m
                .schedule()
                .filter(|(_, op)| *op == kind)
                .map(|(n, _)| n.to_string())
                .collect();
            names.sort();
            names
        };
        // {d1, h1}, {se, qse, d3, d2, sum, r} (qse's only user is d3: the u8 stays in a
        // register), {qr, dr, s}; alone: xq (its input is a graph input, no chain node),
        // q1 (h1 has three users), hsig (a [1, 8, 1, 1] value read by a [1, 8, 9, 9] mul
        // stays outside its chain)
        assert_eq!(names(&chains_only, "fused_elementwise"), ["h1", "r", "s"]);
        assert!(names(&chains_only, "qconv_fused").is_empty());
        assert_eq!(ops(&unfused).len(), ops(&chains_only).len() + 8);
        assert!(!ops(&unfused).iter().any(|op| op.contains("fused")));
        // with epilogues, {d1, h1} runs inside c1 (its only reader); c2's output is also a
        // graph output, so its chain runs on its own
        assert_eq!(names(&fused, "fused_elementwise"), ["r", "s"]);
        assert_eq!(names(&fused, "qconv_fused"), ["h1"]);
        assert_eq!(ops(&chains_only).len(), ops(&fused).len() + 1);
        for seed in [1, 2, 3] {
            let inputs = vec![random_f32(&mut Rng(seed), vec![1, 4, 9, 9])];
            let got = fused.run(&inputs).expect("valid inputs");
            let want = unfused.run(&inputs).expect("valid inputs");
            assert_bitwise_eq(&got, &want);
            assert_bitwise_eq(&chains_only.run(&inputs).expect("valid inputs"), &want);
            let reference = kiln_interp::run(&g, &inputs).expect("the interpreter runs it");
            // exact but for the polynomial exp of the sigmoid
            assert!(got[0].bitwise_eq(&reference[0]));
            assert!(got[2].bitwise_eq(&reference[2]));
            assert_close(&got[1..2], &reference[1..2], 1e-5);
        }
    }

    /// `quantize(average_pool(dequantize x))` islands — a 3×3 stride-2 pool after a conv,
    /// then a global pool of its result — run as int8 average pools (taking the conv's
    /// dequantize before the conv epilogue could), bit-identical to the nodes one by one
    /// and to the interpreter; an island whose pooled value is also a graph output stays.
    #[test]
    fn int8_average_pool_islands_equal_the_nodes_run_one_by_one() {
        let mut rng = Rng(11);
        let mut g = Graph::new("pools");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 3, 15, 15]));
        let x_ty = TensorType::new(DType::U8, vec![1, 3, 15, 15])
            .with_quant(Quant::per_tensor(1.0 / 64.0, 128));
        let xq = add_typed(&mut g, "xq", Op::Quantize, &[x], x_ty);
        let spec = ConvSpec {
            c_out: 6,
            kernel: 3,
            stride: 1,
            pad: 1,
            groups: 1,
            w_dtype: DType::I8,
            per_channel: true,
            bias: true,
            act: None,
            out: (DType::U8, 0.05, 100),
        };
        let c1 = add_qconv(&mut g, &mut rng, "c1", xq, spec);
        let d1 = add_inferred(&mut g, "d1", Op::Dequantize, &[c1]);
        let attrs = PoolAttrs {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            pads: vec![1; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        };
        let p1 = add_inferred(&mut g, "p1", Op::AveragePool(attrs.clone()), &[d1]);
        let q_ty = |shape: Vec<usize>, dtype, scale, zp| {
            TensorType::new(dtype, shape).with_quant(Quant::per_tensor(scale, zp))
        };
        let q1 = add_typed(
            &mut g,
            "q1",
            Op::Quantize,
            &[p1],
            q_ty(vec![1, 6, 8, 8], DType::I8, 0.025, -4),
        );
        let d2 = add_inferred(&mut g, "d2", Op::Dequantize, &[q1]);
        let p2 = add_inferred(&mut g, "p2", Op::GlobalAveragePool, &[d2]);
        let q2 = add_typed(
            &mut g,
            "q2",
            Op::Quantize,
            &[p2],
            q_ty(vec![1, 6, 1, 1], DType::U8, 0.01, 7),
        );
        // the same pool again, its f32 result also a graph output: not fused
        let d3 = add_inferred(&mut g, "d3", Op::Dequantize, &[q1]);
        let p3 = add_inferred(&mut g, "p3", Op::AveragePool(attrs), &[d3]);
        let q3 = add_typed(
            &mut g,
            "q3",
            Op::Quantize,
            &[p3],
            q_ty(vec![1, 6, 4, 4], DType::U8, 0.02, 0),
        );
        g.set_outputs(vec![q2, q3, p3]);
        kiln_ir::verify(&g).expect("the test graph is well-formed");
        let compile = |fuse_int8_pools| {
            Model::from_graph(g.clone())
                .compile(&Options {
                    fuse_int8_pools,
                    ..Options::default()
                })
                .expect("every op has a kernel")
        };
        let (mut fused, mut unfused) = (compile(true), compile(false));
        let ops = |m: &CompiledModel| -> Vec<String> {
            m.schedule().map(|(_, op)| op.to_string()).collect()
        };
        let pools: Vec<String> = fused
            .schedule()
            .filter(|(_, op)| *op == "int8_average_pool")
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(pools, ["q1", "q2"], "{:?}", ops(&fused));
        assert!(
            ops(&fused).contains(&"qconv".to_string()),
            "{:?}",
            ops(&fused)
        );
        assert!(!ops(&unfused).iter().any(|op| op == "int8_average_pool"));
        for seed in [1, 2, 3] {
            let inputs = vec![random_f32(&mut Rng(seed), vec![1, 3, 15, 15])];
            let got = fused.run(&inputs).expect("valid inputs");
            assert_bitwise_eq(&got, &unfused.run(&inputs).expect("valid inputs"));
            let reference = kiln_interp::run(&g, &inputs).expect("the interpreter runs it");
            assert_bitwise_eq(&got, &reference);
        }
    }

    #[test]
    fn small_kernels_stay_on_one_thread() {
        let options = Options {
            threads: 4,
            min_macs_per_thread: 1000,
            ..Options::default()
        };
        assert_eq!(options.threads_for(999), 1);
        assert_eq!(options.threads_for(2500), 2);
        assert_eq!(options.threads_for(1 << 30), 4);
    }
}
