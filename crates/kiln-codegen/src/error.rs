//! Errors of kernel generation and of running a compiled kernel.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CodegenError {
    /// The host (or requested target) cannot run kiln's kernels, e.g. x86-64 without SSE4.1.
    #[error("unsupported target: {0}")]
    UnsupportedTarget(String),
    /// The op's attributes, types or constants are not what the kernel generator accepts
    /// (the same conditions under which the reference interpreter rejects the op).
    #[error("{op}: {reason}")]
    InvalidOp { op: &'static str, reason: String },
    /// The op is valid but this generator has no kernel for it yet.
    #[error("{op}: not supported by the code generator: {reason}")]
    Unsupported { op: &'static str, reason: String },
    /// Cranelift rejected the generated function or could not place it in memory.
    #[error("cranelift failed to compile {function}: {message}")]
    Cranelift { function: String, message: String },
    /// A buffer handed to a compiled kernel has the wrong size or dtype.
    #[error("{kernel}: {what}")]
    BadBuffer { kernel: String, what: String },
}
