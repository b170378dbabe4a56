//! The accuracy report: run the float graph and the quantized graph on the same samples and
//! compare every value the two share, layer by layer — signal-to-quantization-noise ratio
//! and cosine similarity, as PyTorch's numeric suite and onnxruntime's `qdq_loss_debug`
//! report them — worst layers first, as a table or JSON.
//!
//! Values are matched by name: float value `v` is read in the quantized graph as `v.q` (its
//! integers, dequantized with their own parameters: exactly what the quantized graph
//! means) or, where it stayed float, as `v`. Memory stays bounded by one sample: the
//! quantized run keeps only the compared values (mostly 8-bit), and each is released as
//! soon as the float run has produced its counterpart.

use crate::calib::CalibError;
use crate::QuantError;
use kiln_interp::run_observed;
use kiln_ir::{DType, Graph, Op, Tensor, TensorType, ValueId};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;

/// Error statistics of one value over all samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerAccuracy {
    /// The value's name in the float graph.
    pub value: String,
    /// The node producing it (or the graph input's name) and its op.
    pub node: String,
    pub op: String,
    /// Whether the quantized graph holds it as integers (`v.q`) rather than as f32.
    pub quantized: bool,
    /// `10·log10(Σ x² / Σ (x − x̂)²)` over every element of every sample; `None` when the
    /// two agree exactly (infinite SQNR).
    pub sqnr_db: Option<f64>,
    /// `Σ x·x̂ / (‖x‖·‖x̂‖)`; 1 when both are all zeros.
    pub cosine: f64,
    pub max_abs_error: f64,
    /// Elements compared per sample.
    pub elements: usize,
}

impl LayerAccuracy {
    /// SQNR with exact agreement as +∞ (for sorting and thresholds).
    pub fn sqnr(&self) -> f64 {
        self.sqnr_db.unwrap_or(f64::INFINITY)
    }
}

/// Per-layer accuracy of a quantized graph against its float reference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccuracyReport {
    pub samples: usize,
    /// Every compared value, lowest SQNR first.
    pub layers: Vec<LayerAccuracy>,
    /// The graph outputs, in output order.
    pub outputs: Vec<LayerAccuracy>,
}

impl AccuracyReport {
    /// The entry of float value `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerAccuracy> {
        self.layers.iter().find(|l| l.value == name)
    }

    /// The report as pretty-printed JSON (`--report-json`). A `null` SQNR means the values
    /// agree exactly.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report holds only plain data")
    }

    /// A text table, worst layers first; `limit` rows at most (the outputs are always
    /// listed, first).
    pub fn table(&self, limit: Option<usize>) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "accuracy vs float over {} sample{} (SQNR in dB, higher is better)",
            self.samples,
            if self.samples == 1 { "" } else { "s" }
        );
        let header = |s: &mut String, title: &str| {
            let _ = writeln!(
                s,
                "{title:<40} {:<20} {:>4} {:>9} {:>10} {:>11}",
                "op", "int8", "SQNR", "cosine", "max |err|"
            );
        };
        let row = |s: &mut String, l: &LayerAccuracy| {
            let sqnr = l
                .sqnr_db
                .map_or_else(|| "exact".to_string(), |d| format!("{d:.2}"));
            let _ = writeln!(
                s,
                "{:<40} {:<20} {:>4} {:>9} {:>10.6} {:>11.4e}",
                truncate(&l.value, 40),
                truncate(&l.op, 20),
                if l.quantized { "yes" } else { "no" },
                sqnr,
                l.cosine,
                l.max_abs_error
            );
        };
        header(&mut s, "output");
        for l in &self.outputs {
            row(&mut s, l);
        }
        s.push('\n');
        header(&mut s, "value (worst first)");
        let n = limit.unwrap_or(self.layers.len()).min(self.layers.len());
        for l in &self.layers[..n] {
            row(&mut s, l);
        }
        if n < self.layers.len() {
            let _ = writeln!(s, "… {} more", self.layers.len() - n);
        }
        s
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Running sums for one value.
#[derive(Clone, Debug, Default)]
struct Sums {
    xx: f64,
    yy: f64,
    xy: f64,
    ee: f64,
    max_abs: f64,
    elements: usize,
}

impl Sums {
    fn add(&mut self, x: &[f32], y: &[f32]) {
        for (&a, &b) in x.iter().zip(y) {
            let (a, b) = (a as f64, b as f64);
            self.xx += a * a;
            self.yy += b * b;
            self.xy += a * b;
            let e = a - b;
            self.ee += e * e;
            if e.abs() > self.max_abs || e.is_nan() {
                self.max_abs = e.abs();
            }
        }
        self.elements = x.len();
    }

    fn sqnr_db(&self) -> Option<f64> {
        if self.ee == 0.0 {
            None
        } else {
            Some(10.0 * (self.xx / self.ee).log10())
        }
    }

    fn cosine(&self) -> f64 {
        let norms = (self.xx * self.yy).sqrt();
        if norms == 0.0 {
            if self.xx == self.yy {
                1.0
            } else {
                0.0
            }
        } else {
            self.xy / norms
        }
    }
}

/// A float value and where the quantized graph holds it.
#[derive(Clone, Debug)]
pub(crate) struct Pair {
    pub float: ValueId,
    pub quant: ValueId,
    pub quantized: bool,
}

/// Match the float graph's inputs and op outputs (f32, not constants) with values of the
/// quantized graph: `NAME.q` holding integers of the same shape, else `NAME` in f32.
pub(crate) fn pair_values(float: &Graph, quant: &Graph) -> Result<Vec<Pair>, QuantError> {
    let mut by_name: HashMap<&str, ValueId> = HashMap::new();
    for id in quant.node_ids() {
        for (port, o) in quant.node(id).outputs.iter().enumerate() {
            by_name.insert(
                o.name.as_str(),
                ValueId {
                    node: id,
                    port: port as u16,
                },
            );
        }
    }
    let mut pairs = Vec::new();
    for id in float.topo_order()? {
        let node = float.node(id);
        if matches!(node.op, Op::Const(_)) {
            continue;
        }
        for (port, o) in node.outputs.iter().enumerate() {
            if o.ty.dtype != DType::F32 {
                continue;
            }
            let float_v = ValueId {
                node: id,
                port: port as u16,
            };
            let integer = by_name
                .get(format!("{}.q", o.name).as_str())
                .copied()
                .filter(|&v| {
                    let t = quant.value_type(v);
                    t.quant.is_some() && t.dtype.is_integer() && t.shape == o.ty.shape
                });
            let plain = by_name
                .get(o.name.as_str())
                .copied()
                .filter(|&v| quant.value_type(v).same_layout(&o.ty));
            if let Some(q) = integer {
                pairs.push(Pair {
                    float: float_v,
                    quant: q,
                    quantized: true,
                });
            } else if let Some(q) = plain {
                pairs.push(Pair {
                    float: float_v,
                    quant: q,
                    quantized: false,
                });
            }
        }
    }
    Ok(pairs)
}

/// A quantized graph's value as real numbers: integers dequantized with their type's
/// parameters (the interpreter's dequantize), f32 as it is.
pub(crate) fn real_values(t: &Tensor, ty: &TensorType) -> Result<Vec<f32>, String> {
    if ty.quant.is_some() && t.dtype().is_integer() {
        let out_ty = TensorType::f32(t.shape().to_vec());
        let mut r = kiln_interp::eval_op(&Op::Dequantize, &[t], &[ty], &[out_ty])?;
        Ok(r.remove(0).to_f32_vec())
    } else {
        Ok(t.to_f32_vec())
    }
}

/// `compare(pair index, float values, quantized values as reals)`.
pub(crate) type CompareValues<'a> = dyn FnMut(usize, &[f32], &[f32]) + 'a;

/// Run both graphs on one sample and call `compare(pair index, float values, quantized
/// values as reals)` for every pair. Returns both graphs' outputs.
pub(crate) fn compare_sample(
    float: &Graph,
    quant: &Graph,
    pairs: &[Pair],
    sample_index: usize,
    sample: &[Tensor],
    compare: &mut CompareValues<'_>,
) -> Result<(Vec<Tensor>, Vec<Tensor>), QuantError> {
    let by_quant: HashMap<ValueId, usize> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.quant, i))
        .collect();
    let by_float: HashMap<ValueId, usize> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.float, i))
        .collect();
    let mut held: HashMap<usize, Tensor> = HashMap::new();
    let quant_out = run_observed(quant, sample, &mut |v, t| {
        if let Some(&i) = by_quant.get(&v) {
            held.insert(i, t.clone());
        }
    })
    .map_err(|source| QuantError::Run {
        graph: "quantized",
        sample: sample_index,
        source,
    })?;
    let mut failure: Option<String> = None;
    let float_out = run_observed(float, sample, &mut |v, t| {
        let Some(&i) = by_float.get(&v) else { return };
        let Some(q) = held.remove(&i) else { return };
        match real_values(&q, quant.value_type(pairs[i].quant)) {
            Ok(y) => compare(i, &t.to_f32_vec(), &y),
            Err(e) => {
                failure.get_or_insert(format!("value '{}': {e}", quant.value_name(pairs[i].quant)));
            }
        }
    })
    .map_err(|source| QuantError::Run {
        graph: "float",
        sample: sample_index,
        source,
    })?;
    if let Some(msg) = failure {
        return Err(QuantError::Report(msg));
    }
    Ok((float_out, quant_out))
}

/// Compare `quant` with its float reference `float` on `samples` (graph-input order), value
/// by value.
pub fn accuracy_report<I>(
    float: &Graph,
    quant: &Graph,
    samples: I,
) -> Result<AccuracyReport, QuantError>
where
    I: IntoIterator<Item = Result<Vec<Tensor>, CalibError>>,
{
    let pairs = pair_values(float, quant)?;
    let mut sums = vec![Sums::default(); pairs.len()];
    let mut output_sums = vec![Sums::default(); float.outputs().len()];
    let mut count = 0;
    for (index, sample) in samples.into_iter().enumerate() {
        let sample = sample.map_err(|source| QuantError::Data {
            sample: index,
            source,
        })?;
        let (f, q) = compare_sample(float, quant, &pairs, index, &sample, &mut |i, x, y| {
            sums[i].add(x, y)
        })?;
        for ((s, a), b) in output_sums.iter_mut().zip(&f).zip(&q) {
            s.add(&a.to_f32_vec(), &b.to_f32_vec());
        }
        count += 1;
    }
    if count == 0 {
        return Err(QuantError::NoSamples);
    }
    let describe = |v: ValueId, quantized: bool, s: &Sums| {
        let node = float.node(v.node);
        LayerAccuracy {
            value: float.value_name(v).to_string(),
            node: node.name.clone(),
            op: node.op.mnemonic().to_string(),
            quantized,
            sqnr_db: s.sqnr_db(),
            cosine: s.cosine(),
            max_abs_error: s.max_abs,
            elements: s.elements,
        }
    };
    let mut layers: Vec<LayerAccuracy> = pairs
        .iter()
        .zip(&sums)
        .map(|(p, s)| describe(p.float, p.quantized, s))
        .collect();
    layers.sort_by(|a, b| {
        a.sqnr()
            .total_cmp(&b.sqnr())
            .then(a.cosine.total_cmp(&b.cosine))
    });
    let outputs = float
        .outputs()
        .iter()
        .zip(&output_sums)
        .map(|(&v, s)| {
            let quantized = pairs.iter().any(|p| p.float == v && p.quantized);
            describe(v, quantized, s)
        })
        .collect();
    Ok(AccuracyReport {
        samples: count,
        layers,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::text::parse_graph;

    /// y = relu(x) with x quantized u8 (0.1, 128) on the way: x = 0.26 reads back as
    /// round(2.6) = 3 steps = 0.3 (error 0.04), x = −1 as −1 exactly.
    const FLOAT: &str = "graph @f(%x: f32[2]) -> (f32[2]) {
  %y = relu(%x) : f32[2]
  return %y
}";
    const QUANT: &str = "graph @f(%x: f32[2]) -> (f32[2]) {
  %x.q = quantize(%x) : u8[2] q(0.1, 128)
  %x.dq = dequantize(%x.q) : f32[2]
  %y = relu(%x.dq) : f32[2]
  return %y
}";

    #[test]
    fn values_pair_by_name_and_the_report_is_worst_first() {
        let float = parse_graph(FLOAT).unwrap();
        let quant = parse_graph(QUANT).unwrap();
        let x = Tensor::from_f32(vec![2], vec![0.26, -1.0]).unwrap();
        let report = accuracy_report(&float, &quant, [Ok(vec![x])]).unwrap();
        assert_eq!(report.samples, 1);
        // x is read as its integers (x.q), y as the float value of the same name. Both
        // differ by 0.04 in the first element: x: Σx² = 0.0676 + 1, Σe² = 0.0016 →
        // 10·log10(1.0676 / 0.0016) = 28.243 dB; y = [0.26, 0] vs [0.3, 0]:
        // 10·log10(0.0676 / 0.0016) = 16.258 dB, so y comes first.
        let names: Vec<(&str, bool)> = report
            .layers
            .iter()
            .map(|l| (l.value.as_str(), l.quantized))
            .collect();
        assert_eq!(names, [("y", false), ("x", true)]);
        let want_y = 10.0 * (0.0676f64 / 0.0016).log10();
        let want_x = 10.0 * (1.0676f64 / 0.0016).log10();
        // f32 inputs: 0.26 and 0.3 are not exact, so agreement to 1e-4 dB
        assert!(
            (report.layers[0].sqnr() - want_y).abs() < 1e-4,
            "{report:?}"
        );
        assert!(
            (report.layers[1].sqnr() - want_x).abs() < 1e-4,
            "{report:?}"
        );
        assert_eq!(report.outputs[0].value, "y");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["layers"][1]["value"], "x");
        assert_eq!(json["layers"][1]["quantized"], true);
        let table = report.table(Some(1));
        assert!(table.contains("… 1 more"), "{table}");
        // a graph against itself agrees exactly: no SQNR (infinite), cosine 1, JSON null
        let same = accuracy_report(
            &float,
            &float,
            [Ok(vec![Tensor::from_f32(vec![2], vec![0.5, 1.0]).unwrap()])],
        )
        .unwrap();
        assert!(same
            .layers
            .iter()
            .all(|l| l.sqnr_db.is_none() && l.cosine == 1.0));
        assert!(same.to_json().contains("\"sqnr_db\": null"));
        assert!(same.table(None).contains("exact"));
    }

    #[test]
    fn sums_give_sqnr_and_cosine_by_hand() {
        // x = [3, 4], x̂ = [3, 3]: Σx² = 25, Σe² = 1 → 10·log10(25) = 13.979 dB;
        // cosine = (9 + 12) / (5 · sqrt(18)) = 21 / 21.2132 = 0.98995
        let mut s = Sums::default();
        s.add(&[3.0, 4.0], &[3.0, 3.0]);
        assert!((s.sqnr_db().unwrap() - 13.979400086720377).abs() < 1e-12);
        assert!((s.cosine() - 21.0 / (5.0 * 18f64.sqrt())).abs() < 1e-12);
        assert_eq!(s.max_abs, 1.0);
        let mut exact = Sums::default();
        exact.add(&[1.0, 2.0], &[1.0, 2.0]);
        assert_eq!(exact.sqnr_db(), None);
        assert_eq!(exact.cosine(), 1.0);
        let mut zeros = Sums::default();
        zeros.add(&[0.0], &[0.0]);
        assert_eq!(zeros.cosine(), 1.0);
    }
}
