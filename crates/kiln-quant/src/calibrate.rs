//! A calibration run: execute the graph with the reference interpreter on every sample,
//! feed the chosen values to one observer each, and report the range per value name.
//!
//! Memory stays bounded whatever the number of samples: the interpreter frees each
//! intermediate after its last use, observers keep only bounded statistics, and one sample
//! is loaded at a time.

use crate::calib::CalibError;
use crate::observer::{ObserveError, ObservedCounts, Observer, Range};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_interp::{run_observed, InterpError};
use kiln_ir::{DType, Graph, Op, Tensor, ValueId};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use thiserror::Error;

/// Why a calibration run failed; names the sample and the value.
#[derive(Debug, Error)]
pub enum CalibrateError {
    #[error("calibration sample {sample}: {source}")]
    Data { sample: usize, source: CalibError },
    #[error("calibration sample {sample}: {source}")]
    Run { sample: usize, source: InterpError },
    #[error("calibration sample {sample}: value '{value}': {source}")]
    Observe {
        sample: usize,
        value: String,
        source: ObserveError,
    },
    #[error("value '{value}' is {dtype}: only f32 values can be calibrated")]
    NotFloat { value: String, dtype: DType },
    #[error("value {value:?} is not in the graph")]
    UnknownValue { value: ValueId },
    #[error("no calibration samples")]
    NoSamples,
}

/// Whether to draw a progress bar.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Progress {
    /// A bar on stderr when stderr is a terminal.
    #[default]
    Auto,
    Hidden,
}

/// What calibration found for one value.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedValue {
    pub value: ValueId,
    /// `None` when the value never held a finite number.
    pub range: Option<Range>,
    pub counts: ObservedCounts,
    pub method: &'static str,
}

/// The result of a calibration run.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// Samples run.
    pub samples: usize,
    /// Per value name.
    pub values: BTreeMap<String, ObservedValue>,
}

impl Calibration {
    /// One line per value that deserves a warning: non-finite values seen, or no range.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in &self.values {
            if v.counts.non_finite > 0 {
                out.push(format!(
                    "'{name}': {} of {} values were NaN or infinite and were ignored",
                    v.counts.non_finite,
                    v.counts.non_finite + v.counts.finite
                ));
            }
            if v.range.is_none() {
                out.push(format!(
                    "'{name}': no finite value was observed, so it has no range"
                ));
            }
        }
        out
    }
}

/// Every f32 value a graph computes or takes as input (constants excluded: weights are
/// quantized from their data), in topological order — the default set to observe.
pub fn float_values_to_observe(graph: &Graph) -> Result<Vec<ValueId>, kiln_ir::IrError> {
    let mut out = Vec::new();
    for id in graph.topo_order()? {
        let node = graph.node(id);
        if matches!(node.op, Op::Const(_)) {
            continue;
        }
        for (port, o) in node.outputs.iter().enumerate() {
            if o.ty.dtype == DType::F32 {
                out.push(ValueId {
                    node: id,
                    port: port as u16,
                });
            }
        }
    }
    Ok(out)
}

/// Run `graph` on every sample and observe `values`, each with its own observer from
/// `make_observer(value)`. Samples come in graph-input order; the progress bar's length is
/// the iterator's exact size when it has one.
pub fn calibrate<I>(
    graph: &Graph,
    values: &[ValueId],
    samples: I,
    make_observer: &mut dyn FnMut(ValueId) -> Box<dyn Observer>,
    progress: Progress,
) -> Result<Calibration, CalibrateError>
where
    I: IntoIterator<Item = Result<Vec<Tensor>, CalibError>>,
{
    let mut observers: HashMap<ValueId, Box<dyn Observer>> = HashMap::new();
    for &v in values {
        if !graph.value_exists(v) {
            return Err(CalibrateError::UnknownValue { value: v });
        }
        let dtype = graph.value_type(v).dtype;
        if !dtype.is_float() {
            return Err(CalibrateError::NotFloat {
                value: graph.value_name(v).to_string(),
                dtype,
            });
        }
        observers.entry(v).or_insert_with(|| make_observer(v));
    }
    let samples = samples.into_iter();
    let bar = progress_bar(samples.size_hint(), progress, observers.len());
    let mut count = 0;
    for (index, sample) in samples.enumerate() {
        let sample = sample.map_err(|source| CalibrateError::Data {
            sample: index,
            source,
        })?;
        let mut failure: Option<(ValueId, ObserveError)> = None;
        run_observed(graph, &sample, &mut |v, t| {
            if failure.is_some() {
                return;
            }
            if let Some(o) = observers.get_mut(&v) {
                if let Err(e) = o.observe(t) {
                    failure = Some((v, e));
                }
            }
        })
        .map_err(|source| CalibrateError::Run {
            sample: index,
            source,
        })?;
        if let Some((v, source)) = failure {
            return Err(CalibrateError::Observe {
                sample: index,
                value: graph.value_name(v).to_string(),
                source,
            });
        }
        count += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if count == 0 {
        return Err(CalibrateError::NoSamples);
    }
    let values = observers
        .into_iter()
        .map(|(v, o)| {
            (
                graph.value_name(v).to_string(),
                ObservedValue {
                    value: v,
                    range: o.range(),
                    counts: o.counts(),
                    method: o.method(),
                },
            )
        })
        .collect();
    Ok(Calibration {
        samples: count,
        values,
    })
}

fn progress_bar(
    size_hint: (usize, Option<usize>),
    progress: Progress,
    values: usize,
) -> ProgressBar {
    let visible = progress == Progress::Auto && std::io::stderr().is_terminal();
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let len = match size_hint {
        (lo, Some(hi)) if lo == hi => Some(lo as u64),
        _ => None,
    };
    let bar = ProgressBar::with_draw_target(len, target);
    let template = if len.is_some() {
        "calibrating {msg} {wide_bar} {pos}/{len} samples [{elapsed_precise} < {eta_precise}]"
    } else {
        "calibrating {msg} {spinner} {pos} samples [{elapsed_precise}]"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message(format!("{values} values"));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::{input_specs, CalibrationSet};
    use crate::observer::{MinMax, ObserverKind};
    use crate::scheme::QuantScheme;
    use kiln_ir::{Activation, Output, TensorType};

    /// `y = relu(x)` over f32[1, 8]
    fn relu_graph() -> (Graph, ValueId, ValueId) {
        let mut g = Graph::new("relu");
        let x = g.add_input("x", TensorType::f32(vec![1, 8]));
        let y = g.add_node_typed(
            "relu",
            Op::Activation(Activation::Relu),
            &[x],
            vec![Output {
                name: "y".into(),
                ty: TensorType::f32(vec![1, 8]),
            }],
        )[0];
        g.set_outputs(vec![y]);
        (g, x, y)
    }

    #[test]
    fn min_max_over_random_samples_matches_a_direct_computation() {
        let (g, x, y) = relu_graph();
        let set = CalibrationSet::random(&input_specs(&g), 5, 7).unwrap();
        let values = float_values_to_observe(&g).unwrap();
        assert_eq!(values, vec![x, y]);
        let cal = calibrate(
            &g,
            &values,
            set.iter(),
            &mut |_| Box::new(MinMax::new()),
            Progress::Hidden,
        )
        .unwrap();
        assert_eq!(cal.samples, 5);
        // direct: min/max over the samples themselves; relu's range is [max(min,0), max]
        let all: Vec<f32> = set
            .iter()
            .flat_map(|s| s.unwrap()[0].as_f32().unwrap().to_vec())
            .collect();
        let lo = all.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = all.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(cal.values["x"].range, Some(Range { min: lo, max: hi }));
        assert_eq!(cal.values["y"].range, Some(Range { min: 0.0, max: hi }));
        assert_eq!(cal.values["x"].counts.finite, 40);
        assert!(cal.warnings().is_empty());
    }

    #[test]
    fn every_method_runs_and_non_finite_values_are_reported() {
        let (g, _, _) = relu_graph();
        let mut samples: Vec<Result<Vec<Tensor>, CalibError>> = Vec::new();
        for s in 0..3 {
            let mut v: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) * (s + 1) as f32).collect();
            v[0] = f32::NAN;
            samples.push(Ok(vec![Tensor::from_f32(vec![1, 8], v).unwrap()]));
        }
        let scheme = QuantScheme::default().activation();
        for method in ["minmax", "moving-average", "percentile", "entropy", "mse"] {
            let kind: ObserverKind = method.parse().unwrap();
            let values = float_values_to_observe(&g).unwrap();
            let cal = calibrate(
                &g,
                &values,
                samples.iter().map(|s| Ok(s.as_ref().unwrap().clone())),
                &mut |_| kind.build(&scheme).unwrap(),
                Progress::Hidden,
            )
            .unwrap();
            let x = &cal.values["x"];
            assert_eq!(x.method, method);
            assert_eq!(x.counts.non_finite, 3, "{method}");
            assert!(x.range.is_some());
            let warnings = cal.warnings();
            assert!(
                warnings.iter().any(|w| w.contains("'x': 3 of 24")),
                "{warnings:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_sample_and_value() {
        let (g, x, _) = relu_graph();
        let wrong = Tensor::from_f32(vec![1, 3], vec![0.0; 3]).unwrap();
        let err = calibrate(
            &g,
            &[x],
            vec![Ok(vec![wrong])],
            &mut |_| Box::new(MinMax::new()),
            Progress::Hidden,
        )
        .unwrap_err();
        assert!(
            matches!(err, CalibrateError::Run { sample: 0, .. }),
            "{err}"
        );
        let err = calibrate(
            &g,
            &[x],
            Vec::new(),
            &mut |_| Box::new(MinMax::new()),
            Progress::Hidden,
        )
        .unwrap_err();
        assert!(matches!(err, CalibrateError::NoSamples));
        // an integer value cannot be calibrated
        let mut g2 = Graph::new("ints");
        let ids = g2.add_input("ids", TensorType::new(DType::I64, vec![2]));
        g2.set_outputs(vec![ids]);
        let err = calibrate(
            &g2,
            &[ids],
            Vec::new(),
            &mut |_| Box::new(MinMax::new()),
            Progress::Hidden,
        )
        .unwrap_err();
        assert!(err.to_string().contains("'ids' is i64"), "{err}");
    }
}
