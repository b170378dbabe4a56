//! kiln's code generator: kernel generators that emit Cranelift IR (CLIF) specialized to one
//! op's shapes and quantization, the JIT module that turns them into host machine code, and
//! host ISA feature selection (DESIGN §6).
//!
//! - [`jit`]: [`Jit`], a Cranelift JIT module for the host (opt_level=speed), and
//!   [`IsaFeatures`], what the selected ISA can do;
//! - [`qconv`]: [`QConvKernel`], the int8 convolution (`Op::QConv`) as an implicit GEMM whose
//!   inner product is one `pmaddwd` per 8 MACs, or one `vpdpbusd` per 16 on VNNI hosts,
//!   bit-exact against `kiln-interp`;
//! - [`probe`]: the host's clock and peak `pmaddwd`/`vpdpbusd` rates, to report kernels'
//!   efficiency.

pub mod error;
pub mod jit;
pub mod probe;
pub mod qconv;

mod clif;

pub use error::CodegenError;
pub use jit::{IsaFeatures, Jit, JitOptions};
pub use qconv::{InnerProduct, Int8, QConvKernel, QConvNode, QConvScratch, QConvTuning};
