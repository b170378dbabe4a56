//! kiln's code generator: kernel generators that emit Cranelift IR (CLIF) specialized to one
//! op's shapes and quantization, the JIT module that turns them into host machine code, and
//! host ISA feature selection (DESIGN §6).
//!
//! - [`jit`]: [`Jit`], a Cranelift JIT module for the host (opt_level=speed),
//!   [`KernelCode`], a kernel's shareable hold on its finalized code (and its name), and
//!   [`IsaFeatures`], what the selected ISA can do;
//! - int8: [`qconv`] ([`QConvKernel`], `Op::QConv` as an implicit GEMM whose inner product
//!   is one `pmaddwd` per 8 MACs, or one `vpdpbusd` per 16 on VNNI hosts, with a depthwise
//!   path vectorized over channels, [`QConvPath`]); [`qmatmul`] ([`QMatMulKernel`], the same
//!   micro-kernel, constant or run-time `b`, batch broadcasting); [`quantize`]
//!   ([`QuantizeKernel`] f32 → u8/i8 and [`DequantizeKernel`] u8/i8/i32 → f32, per tensor or
//!   per axis); [`maxpool`] ([`MaxPoolKernel`], int8 MaxPool / GlobalMaxPool);
//! - f32: [`fconv`] ([`FConvKernel`], Conv with fused bias, residual and activation, an
//!   `MR × NR` F32X4 micro-kernel); [`fconv_transpose`] ([`FConvTransposeKernel`],
//!   ConvTranspose as one implicit GEMM per output phase on that micro-kernel); [`fgemm`]
//!   ([`GemmKernel`], Gemm / MatMul with a constant or run-time B, same micro-kernel); [`felem`]
//!   ([`ActivationKernel`], [`BinaryKernel`] with broadcasting, [`BatchNormKernel`],
//!   [`SoftmaxKernel`]); [`felem_chain`] ([`ElementwiseChainKernel`], a fused float island);
//!   [`fpool`] ([`PoolKernel`], Max/AveragePool and global pools);
//!   [`flrn`] ([`LrnKernel`], LRN across channels); [`freduce`] ([`SumKernel`], n-ary
//!   broadcasting Sum as a chain of adds; [`ReduceMeanKernel`], ReduceMean over any axes);
//! - conversions: [`cast`] ([`CastKernel`], Cast between f32, i8, u8, i32, i64 and bool);
//!   [`dynamic_quantize`] ([`DynamicQuantizeKernel`], DynamicQuantizeLinear: u8 parameters
//!   from the input's range at run time); [`imatmul`] ([`MatMulIntegerKernel`],
//!   MatMulInteger with a constant `b` and a run-time zero point of `a`, i32 out);
//! - any dtype: [`concat`](mod@concat) ([`ConcatKernel`], a byte copy); [`resize`] ([`ResizeKernel`]:
//!   nearest as a gather of any dtype, linear / cubic on f32 in the interpreter's f64
//!   arithmetic); [`movement`] ([`MoveKernel`]: Transpose, Slice, Split, Pad, Gather with
//!   constant indices, as one gather by a per-axis offset plan);
//! - [`aot`]: ahead-of-time compilation of the same kernels for an explicit target
//!   (x86-64, AArch64 with `+dotprod`/`+i8mm`) into a relocatable object with a C entry point;
//! - [`probe`]: the host's clock and peak `pmaddwd`/`vpdpbusd` rates, to report kernels'
//!   efficiency.
//!
//! Integer kernels (and the f32 elementwise ops, pools, resizes and copies whose arithmetic
//! is the interpreter's, op for op) are bit-exact against `kiln-interp` (`eval_op`); the
//! f32 reductions that sum in another order (Conv, ConvTranspose, Gemm, Softmax, and the
//! polynomial `exp` of sigmoid and tanh) agree within 1e-5 of the largest output. Every
//! kernel follows one pattern:
//!
//! - `XKernel::compile(node or input/output types, &JitOptions[, &XTuning]) ->
//!   Result<XKernel, CodegenError>` validates the op exactly as the interpreter does
//!   (`CodegenError::InvalidOp`), rejects what it has no code for (`Unsupported`), packs
//!   constants and JIT-compiles; the kernel owns its machine code (its own [`Jit`]).
//! - `run_into(&inputs.., &mut out[, &mut scratch])` runs on raw element slices (`u8`/`i8`
//!   through the sealed [`Int8`] trait, `f32`, bytes for the dtype-agnostic kernels),
//!   checking every length and dtype first (`CodegenError::BadBuffer`); kernels with
//!   working memory give it out by `new_scratch()`, reusable across calls.
//!   `run(&Tensor..) -> Tensor` allocates.
//! - `name()` (the op and output shape) and `disassembly()` (the main function's listing,
//!   with `capture_disassembly`).
//! - Shapes are fixed at compile time; a batch dimension is looped over inside `run_into`.
//! - Kernels are `Send + Sync` (their code is held by a [`KernelCode`]); QConv and QMatMul
//!   also have `run_into_threads(.., threads)`, which splits a call's channel (column)
//!   tiles over scoped threads with bit-identical results (docs/kernels.md §9).
//!
//! | kernel | op | compile | run |
//! |---|---|---|---|
//! | [`QConvKernel`] | `qconv` | `compile(&QConvNode, &JitOptions, &QConvTuning)` | `run_into(x, out, &mut QConvScratch)`, `run_into_threads(.., threads)` |
//! | [`QMatMulKernel`] | `qmatmul` | `compile(&QMatMulNode, &JitOptions, &QMatMulTuning)` | constant `b`: `run_into(a, out, &mut QMatMulScratch)`; else `run_with_b_into(a, b, out, ..)`; both `_threads(.., threads)` |
//! | [`QuantizeKernel`] | `quantize` | `compile(x_ty, out_ty, &JitOptions)` | `run_into(x: &[f32], out)` |
//! | [`DequantizeKernel`] | `dequantize` | `compile(x_ty, out_ty, &JitOptions)` | `run_into(x: &[u8 / i8 / i32], out: &mut [f32])` |
//! | [`MaxPoolKernel`] | `max_pool`, `global_max_pool` (int8) | `compile(&PoolAttrs, x_ty, &JitOptions)`, `compile_global(x_ty, ..)` | `run_into(x, out, &mut MaxPoolScratch)` |
//! | [`FConvKernel`] | `conv` | `compile(&FConvNode, &JitOptions)` | `run_into(x, residual, out, &mut FConvScratch)` |
//! | [`FConvTransposeKernel`] | `conv_transpose` | `compile(&FConvTransposeNode, &JitOptions)` | `run_into(x, out, &mut FConvTransposeScratch)` |
//! | [`GemmKernel`] | `gemm`, `matmul` | constant B: `compile_gemm(&GemmAttrs, a_ty, b, c, out_ty, ..)`, `compile_matmul(a_ty, b, out_ty, ..)`; run-time B: `compile_gemm_runtime_b(.., b_ty, ..)`, `compile_matmul_runtime_b(a_ty, b_ty, out_ty, ..)` | `run_into(a, out)`; run-time B: `run_with_b_into(a, b, out)` |
//! | [`ActivationKernel`] | `relu`, `clip`, `leaky_relu`, `sigmoid`, `tanh`, `hard_sigmoid`, `hard_swish` | `compile(&Activation, x_ty, ..)` | `run_into(x, out)` |
//! | [`BinaryKernel`] | `add`, `sub`, `mul`, `div` | `compile(BinaryOp, a_ty, b_ty, out_ty, ..)` | `run_into(a, b, out)` |
//! | [`BatchNormKernel`] | `batch_norm` (constant parameters) | `compile(x_ty, [scale, bias, mean, var], epsilon, ..)` | `run_into(x, out)` |
//! | [`SoftmaxKernel`] | `softmax` | `compile(axis, legacy, x_ty, ..)` | `run_into(x, out)` |
//! | [`PoolKernel`] | `max_pool`, `average_pool`, global pools (f32) | `compile(PoolKind, &PoolAttrs, x_ty, ..)`, `compile_global(PoolKind, x_ty, ..)` | `run_into(x, out, &mut PoolScratch)` |
//! | [`ConcatKernel`] | `concat` | `compile(axis, &[x_ty..], out_ty, ..)` | `run_into(&[bytes..], out)` |
//! | [`LrnKernel`] | `lrn` | `compile(size, alpha, beta, bias, x_ty, ..)` | `run_into(x, out)` |
//! | [`MoveKernel`] | `transpose`, `slice`, `split`, `pad`, `gather` (constant indices) | `compile_transpose(perm, x_ty, out_ty, ..)`, `compile_slice`, `compile_split` (one kernel per output), `compile_pad`, `compile_gather` | `run_into(x: &[u8], out)` (bytes of any dtype) |
//! | [`SumKernel`] | `sum` (f32) | `compile(&[x_ty..], out_ty, ..)` | `run_into(&[x..], out, &mut SumScratch)` |
//! | [`ReduceMeanKernel`] | `reduce_mean` (f32) | `compile(axes, keepdims, x_ty, out_ty, ..)` | `run_into(x, out)` |
//! | [`CastKernel`] | `cast` (no f16) | `compile(x_ty, out_ty, ..)` | `run_into(x: &[u8], out)` (bytes of both dtypes) |
//! | [`DynamicQuantizeKernel`] | `dynamic_quantize` | `compile(x_ty, ..)` | `run_into(x, y: &mut [u8]) -> (scale, zero_point)` |
//! | [`MatMulIntegerKernel`] | `matmul_integer` (constant b) | `compile(a_ty, a_zp_ty, b, b_zp, out_ty, ..)` | `run_into(a: &[u8], a_zp: Option<&[u8]>, out: &mut [i32])` |
//! | [`ElementwiseChainKernel`] | a fused chain of per-tensor `dequantize`/`quantize`, f32 activations and `add`/`sub`/`mul`/`div` (the runtime's `fused_elementwise` step) | `compile(&[operand types], &[ChainNode], ..)` (the last node is the output) | `run_into(&[&[u8]], out: &mut [u8])` (bytes of u8/i8/f32) |
//! | [`ResizeKernel`] | `resize` | `compile(&ResizeAttrs, x_ty, out_ty, ..)` | `run_into(x: &[u8], out, &mut ResizeScratch)` (bytes of any dtype) |

pub mod aot;
pub mod cast;
pub mod concat;
pub mod dynamic_quantize;
pub mod error;
pub mod fconv;
pub mod fconv_transpose;
pub mod felem;
pub mod felem_chain;
pub mod fgemm;
pub mod flrn;
pub mod fpool;
pub mod freduce;
pub mod imatmul;
pub mod jit;
pub mod maxpool;
pub mod movement;
pub mod probe;
pub mod qconv;
pub mod qmatmul;
pub mod quantize;
pub mod resize;
#[doc(hidden)]
pub mod testing;

mod clif;
mod fact;
mod parallel;
mod pool_rows;
mod pool_window;
mod spatial;
mod tensor_io;

pub use cast::CastKernel;
pub use concat::ConcatKernel;
pub use dynamic_quantize::DynamicQuantizeKernel;
pub use error::CodegenError;
pub use fconv::{FConvKernel, FConvNode, FConvScratch};
pub use fconv_transpose::{FConvTransposeKernel, FConvTransposeNode, FConvTransposeScratch};
pub use felem::{ActivationKernel, BatchNormKernel, BinaryKernel, SoftmaxKernel};
pub use felem_chain::{ChainArg, ChainNode, ChainOp, ElementwiseChainKernel};
pub use fgemm::GemmKernel;
pub use flrn::LrnKernel;
pub use fpool::{PoolKernel, PoolKind, PoolScratch};
pub use freduce::{ReduceMeanKernel, SumKernel, SumScratch};
pub use imatmul::MatMulIntegerKernel;
pub use jit::{IsaFeatures, Jit, JitOptions, KernelCode};
pub use maxpool::{MaxPoolKernel, MaxPoolScratch};
pub use movement::MoveKernel;
pub use qconv::{
    InnerProduct, Int8, QConvEpilogue, QConvKernel, QConvNode, QConvPath, QConvScratch, QConvTuning,
};
pub use qmatmul::{QMatMulKernel, QMatMulNode, QMatMulScratch, QMatMulTuning};
pub use quantize::{DequantizeKernel, QuantizeKernel, QuantizedInt};
pub use resize::{ResizeKernel, ResizeScratch};
pub use tensor_io::tensor_data_from_le_bytes;
