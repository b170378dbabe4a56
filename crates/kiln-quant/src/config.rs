//! What to quantize and how: the [`QuantizeConfig`] behind `kiln quantize` (calibration
//! method, scheme, `--quantize-ops`, `--skip`, `--fallback-sqnr`, `--fallback-sensitivity`,
//! bias correction) and the op
//! names it accepts.

use crate::calibrate::Progress;
use crate::observer::ObserverKind;
use crate::scheme::QuantScheme;
use kiln_opt::OptOptions;
use std::collections::BTreeSet;

/// The ops kiln can quantize (kiln IR mnemonics), with what quantizing them means:
/// integer compute, data movement of integers, or float arithmetic between quantized
/// boundaries.
pub const QUANTIZABLE_OPS: &[(&str, &str)] = &[
    (
        "conv",
        "qconv: i8 per-channel weights, i32 bias, fused relu/clip",
    ),
    ("gemm", "1×1 qconv: i8 per-column weights, i32 bias"),
    ("matmul", "qmatmul with a constant [K, N] weight"),
    (
        "conv_transpose",
        "i8 weights per axis 1 behind a dequantize; computed in f32",
    ),
    ("add", "quantized residual add, requantized output"),
    ("concat", "inputs requantized to the output's parameters"),
    ("average_pool", "int8 average pool (requantized output)"),
    ("global_average_pool", "int8 global average pool"),
    ("max_pool", "on integers, the input's parameters"),
    ("global_max_pool", "on integers, the input's parameters"),
    ("reshape", "on integers"),
    ("flatten", "on integers"),
    ("transpose", "on integers"),
    ("squeeze", "on integers"),
    ("unsqueeze", "on integers"),
    ("slice", "on integers"),
    ("pad", "on integers, a zero fill becomes the zero point"),
    (
        "resize",
        "nearest: on integers; linear/cubic: requantized output",
    ),
    ("identity", "on integers"),
];

/// ONNX op type → kiln mnemonic, for `--quantize-ops Conv,MatMul` as onnxruntime spells
/// them.
const ONNX_NAMES: &[(&str, &str)] = &[
    ("Conv", "conv"),
    ("Gemm", "gemm"),
    ("MatMul", "matmul"),
    ("ConvTranspose", "conv_transpose"),
    ("Add", "add"),
    ("Sum", "add"),
    ("Concat", "concat"),
    ("AveragePool", "average_pool"),
    ("GlobalAveragePool", "global_average_pool"),
    ("MaxPool", "max_pool"),
    ("GlobalMaxPool", "global_max_pool"),
    ("Reshape", "reshape"),
    ("Flatten", "flatten"),
    ("Transpose", "transpose"),
    ("Squeeze", "squeeze"),
    ("Unsqueeze", "unsqueeze"),
    ("Slice", "slice"),
    ("Pad", "pad"),
    ("Resize", "resize"),
    ("Upsample", "resize"),
    ("Identity", "identity"),
];

/// The kiln mnemonic of a quantizable op named either way (`conv`, `Conv`,
/// `GlobalAveragePool`, `global_average_pool`); `None` if kiln cannot quantize it.
pub fn quantizable_op(name: &str) -> Option<&'static str> {
    let name = name.trim();
    if let Some((m, _)) = QUANTIZABLE_OPS.iter().find(|(m, _)| *m == name) {
        return Some(m);
    }
    ONNX_NAMES
        .iter()
        .find(|(onnx, _)| onnx.eq_ignore_ascii_case(name))
        .map(|(_, m)| *m)
}

/// Samples of the sensitivity analysis by default: enough to rank layers whose effects differ
/// by decibels, few enough that one run per layer stays affordable.
pub const DEFAULT_SENSITIVITY_SAMPLES: usize = 4;

/// How to quantize a model.
#[derive(Clone, Debug)]
pub struct QuantizeConfig {
    /// Calibration method for activation ranges.
    pub method: ObserverKind,
    pub scheme: QuantScheme,
    /// Op kinds to quantize (kiln mnemonics, see [`QUANTIZABLE_OPS`]); `None`: all of them.
    pub quantize_ops: Option<BTreeSet<&'static str>>,
    /// Node names (or names of their output values) kept in float.
    pub skip: Vec<String>,
    /// Keep in float the layers whose quantization drops the SQNR below this (dB): the
    /// report is recomputed after each round, see [`crate::quantize()`].
    pub fallback_sqnr: Option<f64>,
    /// Keep in float the N layers whose quantization alone hurts the graph outputs most
    /// (lowest output SQNR with only that layer quantized), measured on the first
    /// `sensitivity_samples` samples before planning: see [`crate::measure_sensitivity`].
    pub fallback_sensitivity: Option<usize>,
    /// Samples the sensitivity analysis runs (one interpreter run per layer and sample).
    pub sensitivity_samples: usize,
    /// Correct each quantized conv/gemm bias by the mean error its output channel shows on
    /// the samples (empirical bias correction).
    pub bias_correction: bool,
    /// Run `-O1` before quantizing (BatchNorm folded into the weights first: DESIGN §4).
    pub optimize: bool,
    /// Samples used by the accuracy report, the fallback rounds and bias correction (the
    /// first ones of the set); `None`: all.
    pub eval_samples: Option<usize>,
    /// Optimizer limits and checks, for `-O1` and the `quantize` rules.
    pub opt: OptOptions,
    pub progress: Progress,
}

impl Default for QuantizeConfig {
    fn default() -> QuantizeConfig {
        QuantizeConfig {
            method: ObserverKind::MinMax,
            scheme: QuantScheme::default(),
            quantize_ops: None,
            skip: Vec::new(),
            fallback_sqnr: None,
            fallback_sensitivity: None,
            sensitivity_samples: DEFAULT_SENSITIVITY_SAMPLES,
            bias_correction: false,
            optimize: true,
            eval_samples: None,
            opt: OptOptions::default(),
            progress: Progress::Auto,
        }
    }
}

impl QuantizeConfig {
    /// Parse a `--quantize-ops` list (`conv,gemm` or `Conv,Gemm`); an unknown name is an
    /// error naming it and listing the quantizable ops.
    pub fn parse_ops(list: &str) -> Result<BTreeSet<&'static str>, crate::QuantError> {
        list.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                quantizable_op(s).ok_or_else(|| crate::QuantError::UnknownOp {
                    name: s.trim().to_string(),
                    known: QUANTIZABLE_OPS
                        .iter()
                        .map(|(m, _)| *m)
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            })
            .collect()
    }

    /// Whether op kind `mnemonic` is selected.
    pub fn selects(&self, mnemonic: &str) -> bool {
        match &self.quantize_ops {
            Some(set) => set.contains(mnemonic),
            None => QUANTIZABLE_OPS.iter().any(|(m, _)| *m == mnemonic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_lists_accept_kiln_and_onnx_names() {
        let ops = QuantizeConfig::parse_ops("Conv, gemm,GlobalAveragePool,sum").unwrap();
        assert_eq!(
            ops.into_iter().collect::<Vec<_>>(),
            ["add", "conv", "gemm", "global_average_pool"]
        );
        let err = QuantizeConfig::parse_ops("conv,softmax").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("'softmax'") && msg.contains("conv, gemm"),
            "{msg}"
        );
    }

    #[test]
    fn every_quantizable_op_is_an_ir_op_and_every_onnx_name_maps_to_one() {
        for (m, _) in QUANTIZABLE_OPS {
            assert!(kiln_ir::OP_MNEMONICS.contains(m), "{m}");
        }
        for (onnx, m) in ONNX_NAMES {
            assert_eq!(quantizable_op(onnx), Some(*m));
        }
        let cfg = QuantizeConfig {
            quantize_ops: Some(QuantizeConfig::parse_ops("conv").unwrap()),
            ..QuantizeConfig::default()
        };
        assert!(cfg.selects("conv") && !cfg.selects("add"));
        assert!(QuantizeConfig::default().selects("add"));
        assert!(!QuantizeConfig::default().selects("softmax"));
    }
}
