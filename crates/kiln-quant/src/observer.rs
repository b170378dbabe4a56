//! Observers: streaming statistics of the values one tensor takes over the calibration set,
//! reduced to the real range its quantization parameters are computed from (DESIGN §5).
//!
//! Five methods, as in PyTorch / onnxruntime / TensorRT: [`MinMax`],
//! [`MovingAverageMinMax`], percentile ([`PercentileObserver`]), entropy
//! ([`EntropyObserver`], KL divergence over a histogram) and [`MseObserver`] (a clip range
//! search minimizing the quantization error); [`PerChannelMinMax`] for weights. Every
//! observer keeps a bounded state whatever the number of samples, skips non-finite values
//! and counts them so that the caller can warn.

pub use crate::histogram::Range;
use crate::histogram::{finite_min_max, AbsHistogram, Histogram, DEFAULT_BINS, DEFAULT_MAX_BINS};
use crate::scheme::TensorScheme;
use kiln_ir::{DType, Tensor, TensorData};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Why a tensor could not be observed, or an observer could not be configured.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ObserveError {
    #[error("only floating-point tensors can be observed, got {dtype}")]
    NotFloat { dtype: DType },
    #[error("per-channel axis {axis} is out of range for shape {shape:?}")]
    BadAxis { axis: usize, shape: Vec<usize> },
    #[error("tensor has {got} channels along axis {axis}, earlier tensors had {expected}")]
    ChannelCount {
        axis: usize,
        expected: usize,
        got: usize,
    },
    #[error("unknown calibration method '{0}' (minmax, moving-average[=C], percentile[=P], entropy, mse)")]
    UnknownMethod(String),
    #[error("calibration method '{method}': {reason}")]
    BadParameter { method: String, reason: String },
}

/// How many values an observer has seen.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedCounts {
    /// Tensors passed to `observe`.
    pub tensors: u64,
    /// Finite values used.
    pub finite: u64,
    /// NaN and ±infinity values skipped (worth a warning: the model produced them on the
    /// calibration data).
    pub non_finite: u64,
}

/// A streaming statistic of one tensor's values.
pub trait Observer: Send {
    /// Feed the tensor's values for one calibration sample. Non-finite values are skipped
    /// and counted.
    fn observe(&mut self, tensor: &Tensor) -> Result<(), ObserveError>;
    /// The range chosen from everything observed; `None` while no finite value was seen.
    fn range(&self) -> Option<Range>;
    fn counts(&self) -> ObservedCounts;
    /// The method's name, as [`ObserverKind`] parses it.
    fn method(&self) -> &'static str;
}

/// The elements of a floating-point tensor as f32 (f16 widened).
pub(crate) fn float_values(tensor: &Tensor) -> Result<Cow<'_, [f32]>, ObserveError> {
    match tensor.data() {
        TensorData::F32(v) => Ok(Cow::Borrowed(v)),
        TensorData::F16(v) => Ok(Cow::Owned(v.iter().map(|x| x.to_f32()).collect())),
        _ => Err(ObserveError::NotFloat {
            dtype: tensor.dtype(),
        }),
    }
}

/// The global minimum and maximum (onnxruntime's `MinMaxCalibrater`, PyTorch's
/// `MinMaxObserver`).
#[derive(Clone, Debug, Default)]
pub struct MinMax {
    range: Option<Range>,
    counts: ObservedCounts,
}

impl MinMax {
    pub fn new() -> MinMax {
        MinMax::default()
    }
}

impl Observer for MinMax {
    fn observe(&mut self, tensor: &Tensor) -> Result<(), ObserveError> {
        let values = float_values(tensor)?;
        let (batch, non_finite) = finite_min_max(&values);
        self.counts.tensors += 1;
        self.counts.non_finite += non_finite;
        self.counts.finite += values.len() as u64 - non_finite;
        if let Some((lo, hi)) = batch {
            self.range = Some(match self.range {
                None => Range { min: lo, max: hi },
                Some(r) => Range {
                    min: r.min.min(lo),
                    max: r.max.max(hi),
                },
            });
        }
        Ok(())
    }

    fn range(&self) -> Option<Range> {
        self.range
    }

    fn counts(&self) -> ObservedCounts {
        self.counts
    }

    fn method(&self) -> &'static str {
        "minmax"
    }
}

/// An exponential moving average of each sample's min and max (PyTorch's
/// `MovingAverageMinMaxObserver`; onnxruntime's `MinMaxCalibrater(moving_average=True)` fed one
/// sample per `collect_data` call): the first sample sets the range, each later one moves it
/// by `c·(new − old)`, in f32.
#[derive(Clone, Debug)]
pub struct MovingAverageMinMax {
    averaging_constant: f32,
    range: Option<Range>,
    counts: ObservedCounts,
}

impl MovingAverageMinMax {
    /// `averaging_constant` in `[0, 1]` (PyTorch and onnxruntime default to 0.01).
    pub fn new(averaging_constant: f32) -> Result<MovingAverageMinMax, ObserveError> {
        if !(0.0..=1.0).contains(&averaging_constant) {
            return Err(ObserveError::BadParameter {
                method: "moving-average".into(),
                reason: format!("averaging constant {averaging_constant} is not in [0, 1]"),
            });
        }
        Ok(MovingAverageMinMax {
            averaging_constant,
            range: None,
            counts: ObservedCounts::default(),
        })
    }
}

impl Observer for MovingAverageMinMax {
    fn observe(&mut self, tensor: &Tensor) -> Result<(), ObserveError> {
        let values = float_values(tensor)?;
        let (batch, non_finite) = finite_min_max(&values);
        self.counts.tensors += 1;
        self.counts.non_finite += non_finite;
        self.counts.finite += values.len() as u64 - non_finite;
        if let Some((lo, hi)) = batch {
            let c = self.averaging_constant;
            self.range = Some(match self.range {
                None => Range { min: lo, max: hi },
                Some(r) => Range {
                    min: r.min + c * (lo - r.min),
                    max: r.max + c * (hi - r.max),
                },
            });
        }
        Ok(())
    }

    fn range(&self) -> Option<Range> {
        self.range
    }

    fn counts(&self) -> ObservedCounts {
        self.counts
    }

    fn method(&self) -> &'static str {
        "moving-average"
    }
}

/// The histogram an observer keeps.
#[derive(Clone, Debug)]
enum Store {
    Signed(Histogram),
    Absolute(AbsHistogram),
}

/// Add one tensor to a histogram store and count it.
fn observe_into(store: &mut Store, tensors: &mut u64, tensor: &Tensor) -> Result<(), ObserveError> {
    let values = float_values(tensor)?;
    *tensors += 1;
    match store {
        Store::Signed(h) => h.add(&values),
        Store::Absolute(h) => h.add(&values),
    }
    Ok(())
}

fn store_counts(store: &Store, tensors: u64) -> ObservedCounts {
    let (finite, non_finite) = match store {
        Store::Signed(h) => (h.finite_count(), h.non_finite_count()),
        Store::Absolute(h) => (h.finite_count(), h.non_finite_count()),
    };
    ObservedCounts {
        tensors,
        finite,
        non_finite,
    }
}

/// onnxruntime's percentile method: the range holding `percentile` percent of the values —
/// symmetric (`±` a percentile of |x|, from a histogram of |x|) or cutting `(100 − p)/2`
/// percent off each end of a signed histogram.
#[derive(Clone, Debug)]
pub struct PercentileObserver {
    percentile: f64,
    store: Store,
    tensors: u64,
}

impl PercentileObserver {
    pub fn new(
        percentile: f64,
        symmetric: bool,
        bins: usize,
    ) -> Result<PercentileObserver, ObserveError> {
        if !(0.0..=100.0).contains(&percentile) {
            return Err(ObserveError::BadParameter {
                method: "percentile".into(),
                reason: format!("percentile {percentile} is not in [0, 100]"),
            });
        }
        check_bins("percentile", bins, 1)?;
        let max_bins = DEFAULT_MAX_BINS.max(8 * bins);
        Ok(PercentileObserver {
            percentile,
            store: if symmetric {
                Store::Absolute(AbsHistogram::new(bins, max_bins))
            } else {
                Store::Signed(Histogram::new(bins, max_bins))
            },
            tensors: 0,
        })
    }
}

impl Observer for PercentileObserver {
    fn observe(&mut self, tensor: &Tensor) -> Result<(), ObserveError> {
        observe_into(&mut self.store, &mut self.tensors, tensor)
    }

    fn range(&self) -> Option<Range> {
        match &self.store {
            Store::Signed(h) => h.percentile_range(self.percentile),
            Store::Absolute(h) => h.percentile_range(self.percentile),
        }
    }

    fn counts(&self) -> ObservedCounts {
        store_counts(&self.store, self.tensors)
    }

    fn method(&self) -> &'static str {
        "percentile"
    }
}

fn check_bins(method: &str, bins: usize, at_least: usize) -> Result<(), ObserveError> {
    if bins < at_least || bins > (1 << 24) {
        return Err(ObserveError::BadParameter {
            method: method.into(),
            reason: format!("{bins} histogram bins (expected {at_least} to 2^24)"),
        });
    }
    Ok(())
}

/// The entropy (KL divergence) method; see [`Histogram::entropy_range`].
#[derive(Clone, Debug)]
pub struct EntropyObserver {
    quantized_bins: usize,
    hist: Histogram,
    tensors: u64,
}

impl EntropyObserver {
    /// `bins` (even) histogram bins searched for the threshold, in groups of
    /// `quantized_bins` (128 for 8 bits, as TensorRT).
    pub fn new(bins: usize, quantized_bins: usize) -> Result<EntropyObserver, ObserveError> {
        check_bins("entropy", bins, 2)?;
        if quantized_bins < 2 || quantized_bins > bins {
            return Err(ObserveError::BadParameter {
                method: "entropy".into(),
                reason: format!("{quantized_bins} quantized bins for {bins} histogram bins"),
            });
        }
        Ok(EntropyObserver {
            quantized_bins,
            hist: Histogram::new(bins, DEFAULT_MAX_BINS.max(8 * bins)),
            tensors: 0,
        })
    }

    pub fn histogram(&self) -> &Histogram {
        &self.hist
    }
}

impl Observer for EntropyObserver {
    fn observe(&mut self, tensor: &Tensor) -> Result<(), ObserveError> {
        let values = float_values(tensor)?;
        self.tensors += 1;
        self.hist.add(&values);
        Ok(())
    }

    fn range(&self) -> Option<Range> {
        self.hist.entropy_range(self.quantized_bins)
    }

    fn counts(&self) -> ObservedCounts {
        ObservedCounts {
            tensors: self.tensors,
            finite: self.hist.finite_count(),
            non_finite: self.hist.non_finite_count(),
        }
    }

    fn method(&self) -> &'static str {
        "entropy"
    }
}

/// The MSE method: the histogram clip range with the least expected quantization error
/// under the tensor's scheme; see [`Histogram::mse_range`].
#[derive(Clone, Debug)]
pub struct MseObserver {
    scheme: TensorScheme,
    hist: Histogram,
    tensors: u64,
}

impl MseObserver {
    pub fn new(bins: usize, scheme: TensorScheme) -> Result<MseObserver, ObserveError> {
        check_bins("mse", bins, 2)?;
        scheme.int_range().map_err(|e| ObserveError::BadParameter {
            method: "mse".into(),
            reason: e.to_string(),
        })?;
        Ok(MseObserver {
            scheme,
            hist: Histogram::new(bins, DEFAULT_MAX_BINS.max(8 * bins)),
            tensors: 0,
        })
    }

    pub fn histogram(&self) -> &Histogram {
        &self.hist
    }
}

impl Observer for MseObserver {
    fn observe(&mut self, tensor: &Tensor) -> Result<(), ObserveError> {
        let values = float_values(tensor)?;
        self.tensors += 1;
        self.hist.add(&values);
        Ok(())
    }

    fn range(&self) -> Option<Range> {
        // the scheme's integer range was checked in `new`, so the search cannot fail
        self.hist.mse_range(&self.scheme).ok().flatten()
    }

    fn counts(&self) -> ObservedCounts {
        ObservedCounts {
            tensors: self.tensors,
            finite: self.hist.finite_count(),
            non_finite: self.hist.non_finite_count(),
        }
    }

    fn method(&self) -> &'static str {
        "mse"
    }
}

/// Min-max per index along `axis` (per output channel of a weight).
#[derive(Clone, Debug)]
pub struct PerChannelMinMax {
    axis: usize,
    ranges: Vec<Option<Range>>,
    counts: ObservedCounts,
}

impl PerChannelMinMax {
    pub fn new(axis: usize) -> PerChannelMinMax {
        PerChannelMinMax {
            axis,
            ranges: Vec::new(),
            counts: ObservedCounts::default(),
        }
    }

    /// Merge the per-channel extremes of one tensor (every tensor must have the same number
    /// of channels).
    pub fn observe(&mut self, tensor: &Tensor) -> Result<(), ObserveError> {
        let shape = tensor.shape();
        let Some(&channels) = shape.get(self.axis) else {
            return Err(ObserveError::BadAxis {
                axis: self.axis,
                shape: shape.to_vec(),
            });
        };
        if self.counts.tensors > 0 && channels != self.ranges.len() {
            return Err(ObserveError::ChannelCount {
                axis: self.axis,
                expected: self.ranges.len(),
                got: channels,
            });
        }
        let values = float_values(tensor)?;
        if self.ranges.is_empty() {
            self.ranges = vec![None; channels];
        }
        let inner: usize = shape[self.axis + 1..].iter().product();
        self.counts.tensors += 1;
        if inner == 0 || channels == 0 {
            return Ok(());
        }
        for (block, chunk) in values.chunks(inner).enumerate() {
            let c = block % channels;
            let (batch, non_finite) = finite_min_max(chunk);
            self.counts.non_finite += non_finite;
            self.counts.finite += chunk.len() as u64 - non_finite;
            if let Some((lo, hi)) = batch {
                self.ranges[c] = Some(match self.ranges[c] {
                    None => Range { min: lo, max: hi },
                    Some(r) => Range {
                        min: r.min.min(lo),
                        max: r.max.max(hi),
                    },
                });
            }
        }
        Ok(())
    }

    /// One range per channel; `None` for a channel with no finite value.
    pub fn ranges(&self) -> &[Option<Range>] {
        &self.ranges
    }

    pub fn counts(&self) -> ObservedCounts {
        self.counts
    }
}

/// A calibration method and its parameters: what the user picks, turned into one fresh
/// observer per tensor by [`ObserverKind::build`].
#[derive(Clone, Debug, PartialEq)]
pub enum ObserverKind {
    MinMax,
    MovingAverageMinMax {
        averaging_constant: f32,
    },
    /// `symmetric: None` follows the activation scheme (|x| histogram for symmetric
    /// schemes, a signed one otherwise); onnxruntime's own default is symmetric.
    Percentile {
        percentile: f64,
        symmetric: Option<bool>,
        bins: usize,
    },
    Entropy {
        bins: usize,
        quantized_bins: usize,
    },
    Mse {
        bins: usize,
    },
}

impl ObserverKind {
    /// A fresh observer for one tensor quantized with `scheme`.
    pub fn build(&self, scheme: &TensorScheme) -> Result<Box<dyn Observer>, ObserveError> {
        Ok(match self {
            ObserverKind::MinMax => Box::new(MinMax::new()),
            ObserverKind::MovingAverageMinMax { averaging_constant } => {
                Box::new(MovingAverageMinMax::new(*averaging_constant)?)
            }
            ObserverKind::Percentile {
                percentile,
                symmetric,
                bins,
            } => Box::new(PercentileObserver::new(
                *percentile,
                symmetric.unwrap_or(scheme.symmetric),
                *bins,
            )?),
            ObserverKind::Entropy {
                bins,
                quantized_bins,
            } => Box::new(EntropyObserver::new(*bins, *quantized_bins)?),
            ObserverKind::Mse { bins } => Box::new(MseObserver::new(*bins, *scheme)?),
        })
    }
}

/// `minmax`, `moving-average[=C]` (C defaults to 0.01), `percentile[=P]` (P defaults to
/// 99.999), `entropy` (2048 bins, 128 quantized bins), `mse` (2048 bins).
impl FromStr for ObserverKind {
    type Err = ObserveError;

    fn from_str(s: &str) -> Result<ObserverKind, ObserveError> {
        let (name, param) = match s.split_once('=') {
            Some((n, p)) => (n.trim(), Some(p.trim())),
            None => (s.trim(), None),
        };
        let number = |method: &str, p: &str| -> Result<f64, ObserveError> {
            p.parse::<f64>().map_err(|_| ObserveError::BadParameter {
                method: method.into(),
                reason: format!("'{p}' is not a number"),
            })
        };
        let no_param = |method: &str| -> Result<(), ObserveError> {
            match param {
                None => Ok(()),
                Some(p) => Err(ObserveError::BadParameter {
                    method: method.into(),
                    reason: format!("takes no parameter, got '{p}'"),
                }),
            }
        };
        let kind = match name {
            "minmax" => {
                no_param(name)?;
                ObserverKind::MinMax
            }
            "moving-average" => {
                let c = param.map(|p| number(name, p)).transpose()?.unwrap_or(0.01);
                MovingAverageMinMax::new(c as f32)?;
                ObserverKind::MovingAverageMinMax {
                    averaging_constant: c as f32,
                }
            }
            "percentile" => {
                let p = param
                    .map(|p| number(name, p))
                    .transpose()?
                    .unwrap_or(99.999);
                PercentileObserver::new(p, false, DEFAULT_BINS)?;
                ObserverKind::Percentile {
                    percentile: p,
                    symmetric: None,
                    bins: DEFAULT_BINS,
                }
            }
            "entropy" => {
                no_param(name)?;
                ObserverKind::Entropy {
                    bins: DEFAULT_BINS,
                    quantized_bins: 128,
                }
            }
            "mse" => {
                no_param(name)?;
                ObserverKind::Mse { bins: DEFAULT_BINS }
            }
            _ => return Err(ObserveError::UnknownMethod(s.to_string())),
        };
        Ok(kind)
    }
}

impl fmt::Display for ObserverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObserverKind::MinMax => f.write_str("minmax"),
            ObserverKind::MovingAverageMinMax { averaging_constant } => {
                write!(f, "moving-average={averaging_constant}")
            }
            ObserverKind::Percentile { percentile, .. } => write!(f, "percentile={percentile}"),
            ObserverKind::Entropy { .. } => f.write_str("entropy"),
            ObserverKind::Mse { .. } => f.write_str("mse"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::QuantScheme;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn min_max_skips_non_finite_values() {
        let mut o = MinMax::new();
        o.observe(&t(&[1.0, f32::NAN, -2.0])).unwrap();
        o.observe(&t(&[f32::INFINITY, 3.0])).unwrap();
        assert_eq!(
            o.range(),
            Some(Range {
                min: -2.0,
                max: 3.0
            })
        );
        assert_eq!(
            o.counts(),
            ObservedCounts {
                tensors: 2,
                finite: 3,
                non_finite: 2
            }
        );
        let mut empty = MinMax::new();
        empty.observe(&t(&[f32::NAN])).unwrap();
        assert_eq!(empty.range(), None);
        let ints = Tensor::from_i64(vec![1], vec![3]).unwrap();
        assert!(matches!(
            o.observe(&ints),
            Err(ObserveError::NotFloat { dtype: DType::I64 })
        ));
    }

    #[test]
    fn moving_average_hand_derived() {
        // c = 0.5: [0, 4] then batch [-2, 2]: min 0 + 0.5·(-2 − 0) = -1, max 4 + 0.5·(2 − 4) = 3
        let mut o = MovingAverageMinMax::new(0.5).unwrap();
        o.observe(&t(&[0.0, 4.0])).unwrap();
        o.observe(&t(&[-2.0, f32::NAN, 2.0])).unwrap();
        assert_eq!(
            o.range(),
            Some(Range {
                min: -1.0,
                max: 3.0
            })
        );
        // an all-NaN sample does not move the average
        o.observe(&t(&[f32::NAN])).unwrap();
        assert_eq!(
            o.range(),
            Some(Range {
                min: -1.0,
                max: 3.0
            })
        );
        assert_eq!(o.counts().non_finite, 2);
        assert!(MovingAverageMinMax::new(1.5).is_err());
    }

    #[test]
    fn per_channel_min_max_along_an_axis() {
        // [2, 2, 2] along axis 1: channel 0 = {1, 2, 5, 6}, channel 1 = {3, 4, 7, NaN}
        let w = Tensor::from_f32(
            vec![2, 2, 2],
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, f32::NAN],
        )
        .unwrap();
        let mut o = PerChannelMinMax::new(1);
        o.observe(&w).unwrap();
        assert_eq!(
            o.ranges(),
            &[
                Some(Range { min: 1.0, max: 6.0 }),
                Some(Range { min: 3.0, max: 7.0 })
            ]
        );
        assert_eq!(o.counts().non_finite, 1);
        assert!(PerChannelMinMax::new(3).observe(&w).is_err());
        let other = Tensor::from_f32(vec![1, 3], vec![0.0; 3]).unwrap();
        assert!(matches!(
            o.observe(&other),
            Err(ObserveError::ChannelCount { .. })
        ));
    }

    #[test]
    fn kinds_parse_and_build() {
        let scheme = QuantScheme::default().activation();
        for (text, method) in [
            ("minmax", "minmax"),
            ("moving-average", "moving-average"),
            ("moving-average=0.1", "moving-average"),
            ("percentile", "percentile"),
            ("percentile=99.9", "percentile"),
            ("entropy", "entropy"),
            ("mse", "mse"),
        ] {
            let kind: ObserverKind = text.parse().unwrap();
            assert_eq!(kind.build(&scheme).unwrap().method(), method);
            let again: ObserverKind = kind.to_string().parse().unwrap();
            assert_eq!(again, kind);
        }
        for bad in [
            "max",
            "percentile=101",
            "percentile=x",
            "entropy=3",
            "moving-average=2",
        ] {
            assert!(bad.parse::<ObserverKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_method_gives_a_range_within_the_observed_one() {
        let scheme = QuantScheme::default().activation();
        let mut rng = crate::calib::SplitMix64::new(3);
        let samples: Vec<Tensor> = (0..4)
            .map(|_| t(&(0..2000).map(|_| rng.next_normal()).collect::<Vec<_>>()))
            .collect();
        for text in [
            "minmax",
            "moving-average",
            "percentile=99",
            "entropy",
            "mse",
        ] {
            let kind: ObserverKind = text.parse().unwrap();
            let mut o = kind.build(&scheme).unwrap();
            assert_eq!(o.range(), None);
            let mut global = MinMax::new();
            for s in &samples {
                o.observe(s).unwrap();
                global.observe(s).unwrap();
            }
            let r = o.range().unwrap();
            let g = global.range().unwrap();
            assert!(
                r.min >= g.min && r.max <= g.max && r.min < r.max,
                "{text}: {r:?}"
            );
            assert_eq!(o.counts().finite, 8000);
        }
    }
}
