//! kiln's quantizer: calibration data, observers, calibration runs and quantization
//! parameters (DESIGN §5; the arithmetic is written down in docs/quantization.md).
//!
//! - [`calib`]: calibration samples from `.npy` directories, `.npz` files, images, or seeded
//!   noise ([`CalibrationSet`]);
//! - [`observer`]: min-max, moving-average min-max, percentile, entropy and MSE observers,
//!   and per-channel min-max for weights ([`ObserverKind`] picks one);
//! - [`histogram`]: the streaming histograms behind the last three, bin-exact with
//!   onnxruntime's `HistogramCollector`;
//! - [`calibrate()`]: run the graph on every sample with the reference interpreter and
//!   observe the chosen values;
//! - [`scheme`]: u8/i8 schemes and `(min, max) → (scale, zero point)` exactly as
//!   onnxruntime's `compute_scale_zp`, per-channel weight and i32 bias parameters.
//!
//! Quantizing a graph ([`quantize()`], the library half of `kiln quantize`):
//!
//! - [`config`]: [`QuantizeConfig`] — method, scheme, ops to quantize, nodes to skip,
//!   `--fallback-sqnr`, bias correction;
//! - [`prepare`]: after `-O1`, un-fuse residual adds and non-clamp activations from the convs
//!   and gemms that will be quantized (a `qconv` has neither);
//! - [`plan`]: per node, quantized (compute / movement / concat / island) or float and why;
//!   per quantized activation, its calibrated (or propagated) parameters;
//! - [`insert`]: the QDQ form (fake quantization, onnxruntime's QDQ format): i8 per-channel
//!   weights, i32 biases, quantize/dequantize pairs;
//! - [`convert`]: the `quantize` rule set (`passes/quantize.rules`) turns it into `qconv`,
//!   `qmatmul` and integer data movement, float islands between explicit boundaries;
//! - [`guards`]: non-finite weights get defined values; the i32 accumulator bound is checked;
//! - [`report`]: per-layer SQNR and cosine against the float graph ([`accuracy_report`]),
//!   as a table or JSON;
//! - [`bias_correction`]: per-channel bias correction measured on the samples;
//! - [`dynamic`]: `--dynamic` — int8 matmul/gemm with activation parameters computed at
//!   run time ([`quantize_dynamic`]), no calibration;
//! - [`sensitivity`]: each layer's end-to-end damage when quantized alone
//!   ([`measure_sensitivity`]), for `--fallback-sensitivity`;
//! - [`pipeline`]: the whole sequence, with sensitivity- and SQNR-driven fallback
//!   ([`QuantizedModel`]).

pub mod bias_correction;
pub mod calib;
pub mod calibrate;
pub mod config;
pub mod convert;
pub mod dynamic;
pub mod guards;
pub mod histogram;
pub mod insert;
pub mod observer;
pub mod pipeline;
pub mod plan;
pub mod prepare;
mod rebuild;
pub mod report;
pub mod scheme;
pub mod sensitivity;
#[cfg(test)]
mod test_util;

pub use bias_correction::measure_bias_corrections;
pub use calib::{input_specs, CalibError, CalibrationSet, InputSpec, Preprocess};
pub use calibrate::{
    calibrate, float_values_to_observe, CalibrateError, Calibration, ObservedValue, Progress,
};
pub use config::{quantizable_op, QuantizeConfig, DEFAULT_SENSITIVITY_SAMPLES, QUANTIZABLE_OPS};
pub use convert::convert_qdq;
pub use dynamic::{quantize_dynamic, DynamicModel};
pub use histogram::{AbsHistogram, Histogram, Range};
pub use insert::{insert_qdq, BiasCorrections, QdqGraph};
pub use observer::{ObserveError, ObservedCounts, Observer, ObserverKind, PerChannelMinMax};
pub use pipeline::{
    quantize, FallbackCriterion, FallbackLayer, QuantizedModel, MAX_FALLBACK_ROUNDS,
};
pub use plan::{plan, ActivationQuant, Decision, NodePlan, NodeRole, QuantPlan};
pub use prepare::unfuse_for_quantization;
pub use report::{accuracy_report, AccuracyReport, LayerAccuracy};
pub use scheme::{
    bias_quant, params_from_range, quantize_bias, scale_zero_point, weight_params, ActivationType,
    QuantScheme, QuantizedBias, SchemeError, TensorScheme,
};
pub use sensitivity::{measure_sensitivity, LayerSensitivity};

use kiln_interp::InterpError;
use kiln_ir::IrError;
use kiln_opt::OptError;
use thiserror::Error;

/// Why quantizing a graph failed; names the node, value or sample involved.
#[derive(Debug, Error)]
pub enum QuantError {
    #[error("optimizing the float graph (-O1) before quantization: {0}")]
    Optimize(#[source] OptError),
    #[error("converting the QDQ graph to integer ops: {0}")]
    Convert(#[source] OptError),
    #[error(transparent)]
    Calibrate(#[from] CalibrateError),
    #[error("calibration method: {0}")]
    Observer(#[from] ObserveError),
    #[error("--quantize-ops: '{name}' is not an op kiln quantizes (quantizable: {known})")]
    UnknownOp { name: String, known: String },
    #[error("--skip: no node or value named '{name}' in the optimized graph{hint}")]
    UnknownSkip { name: String, hint: String },
    #[error("value '{value}' never held a finite number during calibration, so it has no range")]
    NoRange { value: String },
    #[error("value '{value}': {source}")]
    Scheme {
        value: String,
        #[source]
        source: SchemeError,
    },
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: &'static str,
        msg: String,
    },
    #[error("running the {graph} graph on sample {sample}: {source}")]
    Run {
        graph: &'static str,
        sample: usize,
        #[source]
        source: InterpError,
    },
    #[error("sample {sample}: {source}")]
    Data {
        sample: usize,
        #[source]
        source: CalibError,
    },
    #[error("accuracy report: {0}")]
    Report(String),
    #[error("no samples to evaluate")]
    NoSamples,
    #[error("--fallback-sqnr {0}: a finite number of dB was expected")]
    BadThreshold(f64),
    #[error("the graph is malformed: {0}")]
    Graph(#[from] IrError),
    #[error("a quantized graph fails verification (a bug in kiln-quant): {0}")]
    Verify(#[source] IrError),
}
