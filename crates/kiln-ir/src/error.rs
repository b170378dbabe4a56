//! Errors of the IR crate: construction, shape inference, verification and parsing. Each
//! names the node (or text position) it is about.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum IrError {
    #[error("shape {shape:?} has more elements than fit in memory")]
    ShapeOverflow { shape: Vec<usize> },
    #[error("tensor of shape {shape:?} needs {expected} elements, got {got}")]
    DataLength {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("node '{node}' ({op}): {msg}")]
    Infer {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("verifier: node '{node}' ({op}): {msg}")]
    Verify {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("verifier: graph: {msg}")]
    VerifyGraph { msg: String },
    #[error("graph has a cycle through node '{node}'")]
    Cycle { node: String },
    #[error("constant @c{id} does not exist")]
    MissingConst { id: u32 },
    #[error("constant @c{id} has no data (it was parsed from a dump that printed only a summary)")]
    OpaqueConst { id: u32 },
    #[error("{line}:{col}: {msg}")]
    Parse {
        line: usize,
        col: usize,
        msg: String,
    },
}
