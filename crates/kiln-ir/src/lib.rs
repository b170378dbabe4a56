//! kiln's typed tensor IR: the graph every pass rewrites, the importer produces and the
//! interpreter and code generator execute.
//!
//! - [`DType`], [`Tensor`], [`TensorType`] with [`Quant`] parameters;
//! - [`Op`]: the op set with typed, fully resolved attributes;
//! - [`Graph`]: nodes in a petgraph graph, values as `(node, port)`, a deduplicating
//!   [`ConstPool`];
//! - [`infer_types`]: shape/type inference, and [`verify`]: the verifier run after every pass.

pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod op;
pub mod pool;
pub mod tensor;
pub mod types;

pub use dtype::DType;
pub use error::IrError;
pub use graph::{Edge, Graph, Node, NodeId, Output, ValueId};
pub use infer::infer_types;
pub use op::*;
pub use pool::{ConstId, ConstPool, ConstValue, Generator};
pub use tensor::{Tensor, TensorData, TensorStats};
pub use types::{Quant, TensorType};
