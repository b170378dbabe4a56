//! kiln's ONNX frontend: reads a `ModelProto` (ai.onnx opsets 7–28, f32 models and
//! quantized QDQ / QOperator models) into a verified kiln IR [`Graph`] with static shapes.
//!
//! What import settles, so that no later stage has to:
//! - dynamic input dims are fixed ([`ImportOptions::input_shapes`] / `default_dim`);
//! - attributes are read per opset version (Clip/Split/Slice/Pad/Squeeze/ReduceMean/Resize
//!   moved attributes to inputs over time) and resolved: `auto_pad` and ConvTranspose
//!   `output_shape` become explicit pads, negative axes are normalized, Reshape targets
//!   lose their `0`/`-1`;
//! - shape computations fold: Shape, ConstantOfShape, Range and Constant become constants,
//!   and any node whose inputs are all constants is evaluated by the reference interpreter
//!   (`kiln_interp::eval_op`) and replaced by its result;
//! - quantization parameters (constant scale / zero-point inputs) move into the types of
//!   the integer tensors;
//! - half precision (FLOAT16 initializers, inputs, Cast targets) is computed as f32.
//!
//! Graph inputs that are also initializers are constants (old-style models);
//! [`ImportOptions::frozen_inputs`] binds further inputs to constants.
//!
//! Models are untrusted input: every tensor size is checked against
//! [`ImportOptions::max_memory`] before it is allocated, external data must stay inside the
//! model's directory, folding a node is skipped when it would cost more than about a second,
//! and a malformed model is an [`OnnxError`] naming the node or tensor, never a panic (the
//! corpus in `tests/bad-models/` and `tests/bad_models.rs` hold the importer to that).
//!
//! The way back: [`export`] writes a kiln graph as a standard ONNX model (opset 17, higher
//! only where an op needs it) that onnxruntime runs — fused activations and residuals
//! expanded into ONNX nodes, quantized ops as QuantizeLinear/DequantizeLinear/QLinearConv/...

mod attrs;
mod budget;
mod error;
mod export;
mod geometry;
mod importer;
mod ops;
mod proto;
#[cfg(test)]
mod robustness_tests;
mod tensor;
#[cfg(test)]
mod testutil;

pub use error::{NodeRef, OnnxError};
pub use export::{export, ExportError, EXPORT_OPSET};
pub use ops::SUPPORTED_OPS;

use kiln_ir::{Graph, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// The default of [`ImportOptions::max_memory`]: 16 GiB.
pub const DEFAULT_MAX_MEMORY: u64 = 16 << 30;

/// How to specialize a model while importing it.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Full shapes for graph inputs, fixing their dynamic dims (`--input-shape NAME=D0,D1,...`).
    /// Dims the model fixes must agree.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Graph inputs bound to constants (e.g. quantization scales the conformance runner
    /// feeds as inputs); they are not inputs of the imported graph.
    pub frozen_inputs: HashMap<String, Tensor>,
    /// Size for dynamic dims `input_shapes` does not fix; `None` makes such a dim an error
    /// naming the input and the dim.
    pub default_dim: Option<usize>,
    /// Most bytes the model may need: initializers and constants plus the declared sizes of
    /// graph inputs and every computed value, all at the widths kiln stores them in (f16
    /// counts as f32). Checked from declared shapes before anything is allocated, so a
    /// model claiming absurd shapes fails with [`OnnxError::MemoryLimit`] instead of
    /// exhausting memory. `None`: no limit (sizes must still fit in a `usize`).
    pub max_memory: Option<u64>,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            input_shapes: HashMap::new(),
            frozen_inputs: HashMap::new(),
            default_dim: None,
            max_memory: Some(DEFAULT_MAX_MEMORY),
        }
    }
}

/// Import an `.onnx` file. External data files are resolved relative to its directory.
pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Graph, OnnxError> {
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    reject_other_formats(&bytes)?;
    // decoding from `Bytes` makes every `raw_data` a slice of this one buffer
    let model = proto::ModelProto::decode(bytes::Bytes::from(bytes))?;
    importer::import_model(&model, Some(dir), opts)
}

/// Import a serialized `ModelProto`. `model_dir` is where external data files live; with
/// `None`, a model with external data is an error.
pub fn import_bytes(
    bytes: &[u8],
    model_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph, OnnxError> {
    reject_other_formats(bytes)?;
    let model = proto::ModelProto::decode(bytes)?;
    importer::import_model(&model, model_dir, opts)
}

/// Files users mistake for ONNX models. Protobuf has no magic number and decodes many
/// byte strings, so without this check such a file fails later with a confusing message
/// (or, being empty, decodes as an empty model).
fn reject_other_formats(bytes: &[u8]) -> Result<(), OnnxError> {
    let what = if bytes.is_empty() {
        "the file is empty (0 bytes)"
    } else if bytes.starts_with(b"\x93NUMPY") {
        "this is a .npy array (it starts with \\x93NUMPY)"
    } else if bytes.starts_with(b"PK\x03\x04") {
        "this is a zip archive (a PyTorch checkpoint or a .npz?)"
    } else if bytes.starts_with(b"\x89HDF") {
        "this is an HDF5 file (a Keras model?)"
    } else {
        return Ok(());
    };
    Err(OnnxError::Model(format!(
        "{what}, not an ONNX model (a serialized ModelProto)"
    )))
}

/// Read a serialized `TensorProto` (the `input_N.pb` / `output_N.pb` files of ONNX test
/// data). FLOAT16 data is widened to f32; external data is not allowed.
pub fn read_tensor_proto(bytes: &[u8]) -> Result<Tensor, OnnxError> {
    let t = proto::TensorProto::decode(bytes)?;
    tensor::tensor_from_proto(&t, None)
}
