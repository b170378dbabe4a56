//! kiln's typed tensor IR: the graph every pass rewrites, the importer produces and the
//! interpreter and code generator execute.
//!
//! - [`DType`], [`Tensor`], [`TensorType`] with [`Quant`] parameters;
//! - [`Op`]: the op set with typed, fully resolved attributes;
//! - [`Graph`]: nodes in a petgraph graph, values as `(node, port)`, a deduplicating
//!   [`ConstPool`];
//! - [`infer_types`]: shape/type inference, and [`verify()`]: the verifier run after every pass;
//! - [`text`]: the `.kir` text format (printer + parser), [`dot`] and [`json`] dumps;
//! - [`npy`]: `.npy`/`.npz` tensor files.

pub mod dot;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod json;
pub mod npy;
pub mod op;
pub mod pool;
pub mod resize_math;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;
pub mod window;

pub use dtype::DType;
pub use error::IrError;
pub use graph::{Edge, Graph, Node, NodeId, Output, ValueId};
pub use infer::infer_types;
pub use op::*;
pub use pool::{ConstId, ConstPool, ConstValue, Generator};
pub use tensor::{Tensor, TensorData, TensorStats};
pub use types::{Quant, TensorType};
pub use verify::{self_checks_enabled, verify};
