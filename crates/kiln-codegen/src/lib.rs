//! kiln's code generator: kernel generators that emit Cranelift IR (CLIF) specialized to one
//! op's shapes and quantization, the JIT module that turns them into host machine code, and
//! host ISA feature selection (DESIGN §6).
//!
//! - [`jit`]: [`Jit`], a Cranelift JIT module for the host (opt_level=speed),
//!   [`KernelCode`], a kernel's shareable hold on its finalized code, and [`IsaFeatures`],
//!   what the selected ISA can do;
//! - [`qconv`]: [`QConvKernel`], the int8 convolution (`Op::QConv`) as an implicit GEMM whose
//!   inner product is one `pmaddwd` per 8 MACs, or one `vpdpbusd` per 16 on VNNI hosts, with
//!   a depthwise path vectorized over channels ([`QConvPath`]);
//! - [`qmatmul`]: [`QMatMulKernel`], the int8 matrix multiply (`Op::QMatMul`) on the same
//!   micro-kernel, constant or run-time `b`, batch broadcasting;
//! - [`quantize`]: [`QuantizeKernel`] (f32 → u8/i8) and [`DequantizeKernel`] (u8/i8 → f32),
//!   per tensor or per axis;
//! - [`maxpool`]: [`MaxPoolKernel`], int8 MaxPool (any kernel, strides, dilations, pads,
//!   `ceil_mode`), vectorized over channels;
//! - [`probe`]: the host's clock and peak `pmaddwd`/`vpdpbusd` rates, to report kernels'
//!   efficiency.
//!
//! Every kernel is bit-exact against `kiln-interp` (`eval_op`) and follows one pattern:
//!
//! - `XKernel::compile(node or input/output types, &JitOptions[, &XTuning]) ->
//!   Result<XKernel, CodegenError>` validates the op exactly as the interpreter does
//!   (`CodegenError::InvalidOp`), rejects what it has no code for (`Unsupported`), packs
//!   constants and JIT-compiles; the kernel owns its machine code (its own [`Jit`]).
//! - `run_into(&inputs.., &mut out[, &mut scratch])` runs on raw element slices (`u8`/`i8`
//!   through the sealed [`Int8`] trait, `f32`), checking every length and dtype first
//!   (`CodegenError::BadBuffer`); kernels with working memory give it out by
//!   `new_scratch()`, reusable across calls. `run(&Tensor..) -> Tensor` allocates.
//! - Shapes are fixed at compile time; a batch dimension is looped over inside `run_into`.
//! - Kernels are `Send + Sync` (their code is held by a [`KernelCode`]); QConv and QMatMul
//!   also have `run_into_threads(.., threads)`, which splits a call's channel (column)
//!   tiles over scoped threads with bit-identical results (docs/kernels.md §9).
//!
//! | kernel | compile | run |
//! |---|---|---|
//! | [`QConvKernel`] | `compile(&QConvNode, &JitOptions, &QConvTuning)` | `run_into(x, out, &mut QConvScratch)`, `run_into_threads(.., threads)` |
//! | [`QMatMulKernel`] | `compile(&QMatMulNode, &JitOptions, &QMatMulTuning)` | constant `b`: `run_into(a, out, &mut QMatMulScratch)`; else `run_with_b_into(a, b, out, ..)`; both `_threads(.., threads)` |
//! | [`QuantizeKernel`] | `compile(x_ty, out_ty, &JitOptions)` | `run_into(x: &[f32], out)` |
//! | [`DequantizeKernel`] | `compile(x_ty, out_ty, &JitOptions)` | `run_into(x, out: &mut [f32])` |
//! | [`MaxPoolKernel`] | `compile(&PoolAttrs, x_ty, &JitOptions)` | `run_into(x, out, &mut MaxPoolScratch)` |

pub mod concat;
pub mod error;
pub mod fconv;
pub mod felem;
pub mod fgemm;
pub mod fpool;
pub mod jit;
pub mod maxpool;
pub mod probe;
pub mod qconv;
pub mod qmatmul;
pub mod quantize;

mod clif;
mod fact;
mod parallel;

pub use concat::ConcatKernel;
pub use error::CodegenError;
pub use fconv::{FConvKernel, FConvNode, FConvScratch};
pub use felem::{ActivationKernel, BatchNormKernel, BinaryKernel, SoftmaxKernel};
pub use fgemm::GemmKernel;
pub use fpool::{PoolKernel, PoolKind, PoolScratch};
pub use jit::{IsaFeatures, Jit, JitOptions, KernelCode};
pub use maxpool::{MaxPoolKernel, MaxPoolScratch};
pub use qconv::{InnerProduct, Int8, QConvKernel, QConvNode, QConvPath, QConvScratch, QConvTuning};
pub use qmatmul::{QMatMulKernel, QMatMulNode, QMatMulScratch, QMatMulTuning};
pub use quantize::{DequantizeKernel, QuantizeKernel};
