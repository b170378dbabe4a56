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
//! The way back: [`export`] writes a kiln graph as a standard ONNX model (opset 17, higher
//! only where an op needs it) that onnxruntime runs — fused activations and residuals
//! expanded into ONNX nodes, quantized ops as QuantizeLinear/DequantizeLinear/QLinearConv/...

mod attrs;
mod error;
mod export;
mod geometry;
mod importer;
mod ops;
mod proto;
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

/// How to specialize a model while importing it.
#[derive(Clone, Debug, Default)]
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
    import_bytes(&bytes, Some(dir), opts)
}

/// Import a serialized `ModelProto`. `model_dir` is where external data files live; with
/// `None`, a model with external data is an error.
pub fn import_bytes(
    bytes: &[u8],
    model_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph, OnnxError> {
    let model = proto::ModelProto::decode(bytes)?;
    importer::import_model(&model, model_dir, opts)
}

/// Read a serialized `TensorProto` (the `input_N.pb` / `output_N.pb` files of ONNX test
/// data). FLOAT16 data is widened to f32; external data is not allowed.
pub fn read_tensor_proto(bytes: &[u8]) -> Result<Tensor, OnnxError> {
    let t = proto::TensorProto::decode(bytes)?;
    tensor::tensor_from_proto(&t, None)
}
