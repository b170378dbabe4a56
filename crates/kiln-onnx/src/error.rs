//! Errors of the ONNX frontend. Each names what it is about (the node with its op type,
//! domain and opset; the tensor; the graph input) and what was expected instead.

use kiln_ir::IrError;
use std::path::PathBuf;
use thiserror::Error;

/// Where in the model a node error happened: enough to find the node in Netron.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRef {
    /// The ONNX node name (or the generated `<op_type>_<index>` when the model leaves it empty).
    pub name: String,
    pub op_type: String,
    /// `ai.onnx` for the default domain.
    pub domain: String,
    /// The opset version the model imports for `domain`.
    pub opset: i64,
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node '{}' ({}, domain {}, opset {})",
            self.name, self.op_type, self.domain, self.opset
        )
    }
}

#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("cannot read '{}': {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a valid ONNX protobuf (truncated or corrupt file?): {0}")]
    Decode(#[from] prost::DecodeError),
    /// A problem with the model as a whole (opsets, missing graph, graph outputs).
    #[error("model: {0}")]
    Model(String),
    /// A graph input whose type cannot be used (dynamic dims, unsupported dtype, ...).
    #[error("graph input '{input}': {msg}")]
    Input { input: String, msg: String },
    /// An initializer, Constant value or test-data tensor that cannot be read.
    #[error("tensor '{tensor}': {msg}")]
    Tensor { tensor: String, msg: String },
    #[error("unsupported op '{}' (domain {}, opset {}) in node '{}'; supported: {supported}", node.op_type, node.domain, node.opset, node.name)]
    UnsupportedOp {
        node: Box<NodeRef>,
        supported: String,
    },
    /// A node whose attributes or inputs do not fit what kiln imports.
    #[error("{node}: {msg}")]
    Node { node: Box<NodeRef>, msg: String },
    /// Shape inference rejected the op built for a node.
    #[error("{node}: {source}")]
    Ir {
        node: Box<NodeRef>,
        #[source]
        source: IrError,
    },
    /// The imported graph failed the IR verifier (an importer bug or an inconsistent model).
    #[error("imported graph is invalid: {0}")]
    Verify(#[source] IrError),
}
