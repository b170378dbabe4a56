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

pub mod calib;
pub mod calibrate;
pub mod histogram;
pub mod observer;
pub mod scheme;

pub use calib::{input_specs, CalibError, CalibrationSet, InputSpec, Preprocess};
pub use calibrate::{
    calibrate, float_values_to_observe, CalibrateError, Calibration, ObservedValue, Progress,
};
pub use histogram::{AbsHistogram, Histogram, Range};
pub use observer::{ObserveError, ObservedCounts, Observer, ObserverKind, PerChannelMinMax};
pub use scheme::{
    bias_quant, params_from_range, quantize_bias, scale_zero_point, weight_params, ActivationType,
    QuantScheme, QuantizedBias, SchemeError, TensorScheme,
};
