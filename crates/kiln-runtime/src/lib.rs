//! kiln's runtime (DESIGN §7): load a model, compile every node to a JIT kernel, and run it
//! as a schedule of kernel calls over one arena laid out by a static memory plan.
//!
//! ```no_run
//! # fn main() -> Result<(), kiln_runtime::RuntimeError> {
//! let model = kiln_runtime::Model::load("model.kir")?;
//! let mut compiled = model.compile(&kiln_runtime::Options::default())?;
//! # let inputs: Vec<kiln_ir::Tensor> = Vec::new();
//! let outputs = compiled.run(&inputs)?;
//! # Ok(()) }
//! ```
//!
//! Kernels: QConv, QMatMul (constant or run-time `b`), Quantize, Dequantize (u8/i8/i32),
//! int8 MaxPool/GlobalMaxPool; f32 Conv, ConvTranspose, Gemm/MatMul (constant B),
//! activations, add/sub/mul/div, BatchNorm, Softmax, Max/AveragePool and the global pools;
//! Concat and nearest Resize of any dtype, linear/cubic Resize of f32; and copies for the
//! shape-only ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity, Dropout). A Dequantize of
//! a constant is evaluated at compile time (the weights of ops the quantizer leaves in
//! float). QConv and QMatMul split over [`Options::threads`] threads with bit-identical
//! results (docs/kernels.md §9–10).
//!
//! - [`memory`] — [`MemoryPlan`], offsets of intermediate values from liveness (best fit);
//! - [`model`] — [`Model`] (load / from a graph) and [`CompiledModel`] (kernels, arena, run);
//! - [`aot`] — [`aot::compile_object`], the model as a relocatable object for an explicit
//!   target with a C entry point and header (docs/aot.md);
//! - [`error`] — [`RuntimeError`].

pub mod aot;
pub mod error;
pub mod memory;
pub mod model;

pub use error::{MissingKernel, RuntimeError};
pub use memory::{Lifetime, MemoryPlan, Slot, ARENA_ALIGN};
pub use model::{CompiledModel, Model, Options};
