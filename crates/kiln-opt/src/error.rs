//! Errors of the optimizer: unknown passes, malformed rule files (with file:line:col),
//! graphs the optimizer cannot read, internal inconsistencies (bugs, reported rather than
//! hidden), and passes whose result fails the verifier.

use kiln_ir::IrError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OptError {
    #[error("unknown pass '{name}' (known passes: {known})")]
    UnknownPass { name: String, known: String },
    #[error("unknown pipeline '{name}' (known: {known})")]
    UnknownPipeline { name: String, known: String },
    #[error("{file}:{line}:{col}: {msg}")]
    RuleFile {
        file: String,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("cannot read rule file {path}: {msg}")]
    RuleFileIo { path: String, msg: String },
    #[error("the graph cannot be optimized: {0}")]
    Graph(IrError),
    #[error("node '{node}' ({op}) cannot be typed: {msg}")]
    Untypable {
        node: String,
        op: &'static str,
        msg: String,
    },
    /// An invariant of the optimizer broke (e.g. two values of different types were found
    /// equal): a bug in kiln-opt, reported instead of silently picking one side.
    #[error("internal optimizer error in pass '{pass}': {msg} (this is a bug in kiln-opt; please report it with the model and the pass)")]
    Internal { pass: String, msg: String },
    #[error("pass '{pass}' produced a graph that fails verification: {source}")]
    Verify {
        pass: String,
        #[source]
        source: IrError,
    },
}
