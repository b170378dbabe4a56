//! Errors of loading, compiling and running a model: each names the file, node, op or input
//! concerned and what was expected.

use kiln_codegen::CodegenError;
use std::path::PathBuf;
use thiserror::Error;

/// A node whose op kiln-codegen has no kernel for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingKernel {
    pub node: String,
    pub op: &'static str,
}

impl std::fmt::Display for MissingKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}' ({})", self.node, self.op)
    }
}

fn list_missing(missing: &[MissingKernel]) -> String {
    let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
    names.join(", ")
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unknown model format (expected a .onnx or .kir file)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: {source}")]
    Onnx {
        path: PathBuf,
        source: kiln_onnx::OnnxError,
    },
    #[error(transparent)]
    Ir(#[from] kiln_ir::IrError),
    /// Compiling found nodes without a kernel; all of them are listed, in schedule order.
    /// There is no interpreter fallback: a compiled model runs machine code only.
    #[error("no kernel for {} node(s): {}", .0.len(), list_missing(.0))]
    NoKernel(Vec<MissingKernel>),
    /// The node has a kernel family, but this instance cannot be compiled as built (e.g. a
    /// QConv whose weights are not a constant).
    #[error("node '{node}' ({op}): {reason}")]
    Unsupported {
        node: String,
        op: &'static str,
        reason: String,
    },
    /// The code generator rejected the node or a kernel call failed.
    #[error("node '{node}' ({op}): {source}")]
    Codegen {
        node: String,
        op: &'static str,
        source: CodegenError,
    },
    #[error("expected {expected} input(s) ({names}), got {got}")]
    InputCount {
        expected: usize,
        names: String,
        got: usize,
    },
    #[error("input {index} '{name}': expected {expected}, got {got}")]
    InputMismatch {
        index: usize,
        name: String,
        expected: String,
        got: String,
    },
    /// The schedule handed to the memory planner is not a topological order of the graph.
    #[error("invalid schedule: {0}")]
    BadSchedule(String),
}
