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
    /// Shape inference rejected the op built for a node. The message is the IR's without
    /// its own node prefix (the ONNX node already names it), so `error` is not exposed as
    /// a `source()` either: a cause chain would repeat it.
    #[error("{node}: {}", ir_detail(error))]
    Ir { node: Box<NodeRef>, error: IrError },
    /// The imported graph failed the IR verifier (an importer bug or an inconsistent model).
    #[error("imported graph is invalid: {0}")]
    Verify(#[source] IrError),
    /// Importing would need more memory than [`crate::ImportOptions::max_memory`] allows:
    /// raised before the allocation, from the declared shapes.
    #[error("{}", memory_limit_message(what, *bytes, *used, *limit))]
    MemoryLimit {
        /// The tensor, with its type (`graph input 'x' (f32[1048576,1048576])`).
        what: String,
        /// Its size.
        bytes: u64,
        /// What the import had counted before it.
        used: u64,
        /// The limit.
        limit: u64,
    },
}

/// An IR error's message without the IR node prefix that inference errors carry.
fn ir_detail(error: &IrError) -> String {
    match error {
        IrError::Infer { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}

fn memory_limit_message(what: &str, bytes: u64, used: u64, limit: u64) -> String {
    let already = if used == 0 {
        String::new()
    } else {
        format!(" on top of the {} imported before it", human_bytes(used))
    };
    format!(
        "{what} needs {} ({bytes} bytes){already}, over the import memory limit of {}; \
         raise it with --max-memory if the model really is that large",
        human_bytes(bytes),
        human_bytes(limit)
    )
}

/// `1536` → `1.5 KiB`: binary units, one decimal.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(16 << 30), "16.0 GiB");
        assert_eq!(human_bytes(1 << 42), "4.0 TiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
