//! kiln-quant against onnxruntime's quantization tools (1.31.1), run through
//! `ort_reference.py` with the Python in `KILN_PYTHON` (tools/test.sh sets it): scale/zero
//! point formulas, streaming histograms bin for bin, and every calibration method's range on
//! the same samples. Without `KILN_PYTHON` the tests print why they skip (and fail on CI).

use kiln_ir::npy::write_npy_file;
use kiln_ir::{Activation, DType, Graph, Op, Output, Tensor, TensorType};
use kiln_quant::calib::SplitMix64;
use kiln_quant::histogram::{AbsHistogram, Histogram};
use kiln_quant::{
    calibrate, float_values_to_observe, input_specs, CalibrationSet, ObserverKind, Progress,
    TensorScheme,
};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python with onnxruntime, or `None` (after saying why) when the tests should skip.
fn python() -> Option<PathBuf> {
    match std::env::var_os("KILN_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "KILN_PYTHON must be set on CI (tools/test.sh points it at a venv with onnxruntime)"
            );
            // written to stderr directly: libtest captures eprintln! of passing tests
            let _ = writeln!(
                std::io::stderr(),
                "skipping: KILN_PYTHON is not set (tools/test.sh sets it to a venv with \
                 onnx 1.23.2, onnxruntime 1.31.1, numpy)"
            );
            None
        }
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("kiln-quant-ort-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run the reference script on `request`, return its JSON answer.
fn reference(python: &Path, dir: &Path, request: &Value) -> Value {
    let req_path = dir.join("request.json");
    std::fs::write(&req_path, request.to_string()).expect("request written");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ort_reference.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(&req_path)
        .output()
        .expect("KILN_PYTHON runs");
    assert!(
        out.status.success(),
        "ort_reference.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

fn f32_of(v: &Value) -> f32 {
    v.as_f64().expect("a number") as f32
}

#[test]
fn scale_and_zero_point_match_compute_scale_zp() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("scale-zp");
    let mut rng = SplitMix64::new(2024);
    // ranges of every sign and magnitude, degenerate and tiny ones included
    let mut ranges: Vec<(f32, f32)> = vec![
        (0.0, 0.0),
        (5.0, 5.0),
        (-3.0, -3.0),
        (0.0, 1e-39),
        (-1e-38, 1e-38),
        (-1.0, 1.0),
        (-0.5, 0.5),
        (-126.5, 128.5),
        (-f32::MAX / 2.0, f32::MAX / 2.0),
    ];
    for _ in 0..400 {
        let mag = 10f64.powf(rng.next_f64() * 12.0 - 8.0) as f32;
        let a = (rng.next_f64() as f32 - 0.3) * mag;
        let b = (rng.next_f64() as f32 - 0.7) * mag;
        ranges.push((a.min(b), a.max(b)));
    }
    let mut schemes = Vec::new();
    for dtype in [DType::U8, DType::I8] {
        for symmetric in [false, true] {
            for narrow_range in [false, true] {
                for reduce_range in [false, true] {
                    for min_real_range in [None, Some(0.01f32)] {
                        schemes.push(TensorScheme {
                            dtype,
                            symmetric,
                            narrow_range,
                            reduce_range,
                            min_real_range,
                        });
                    }
                }
            }
        }
    }
    let mut cases = Vec::new();
    let mut expected_inputs = Vec::new();
    for s in &schemes {
        // onnxruntime's symmetric int8 is always narrow; u8 has no narrow variant
        if s.dtype == DType::U8 && s.narrow_range
            || s.dtype == DType::I8 && !s.symmetric && s.narrow_range
        {
            continue;
        }
        for &(lo, hi) in &ranges {
            cases.push(json!({
                "rmin": lo, "rmax": hi,
                "dtype": if s.dtype == DType::U8 { "u8" } else { "i8" },
                "symmetric": s.symmetric, "narrow": s.narrow_range,
                "reduce_range": s.reduce_range, "min_real_range": s.min_real_range,
            }));
            expected_inputs.push((*s, lo, hi));
        }
    }
    let answer = reference(&py, &dir.0, &json!({"mode": "scale_zp", "cases": cases}));
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), expected_inputs.len());
    for ((scheme, lo, hi), r) in expected_inputs.iter().zip(results) {
        let (qmin, qmax) = scheme.int_range().unwrap();
        assert_eq!(
            (qmin as i64, qmax as i64),
            (r["qmin"].as_i64().unwrap(), r["qmax"].as_i64().unwrap()),
            "integer range of {scheme:?}"
        );
        let (scale, zp) = kiln_quant::scale_zero_point(*lo, *hi, scheme).unwrap();
        assert_eq!(
            (scale.to_bits(), zp as i64),
            (
                f32_of(&r["scale"]).to_bits(),
                r["zero_point"].as_i64().unwrap()
            ),
            "[{lo:e}, {hi:e}] with {scheme:?}: kiln ({scale:e}, {zp}), onnxruntime {r}"
        );
    }
    eprintln!(
        "{} scale/zero-point cases identical to onnxruntime",
        results.len()
    );
}

const N: usize = 3000;

/// Six samples of 3000 values: normal with scales that shrink and grow (exercising the
/// histograms' growth and non-growth paths), a few outliers, and an exact 0 in each (where
/// onnxruntime's |x| histogram starts at min |x| and kiln's at 0, a 0 makes them identical).
fn samples() -> Vec<Tensor> {
    let mut rng = SplitMix64::new(77);
    [1.0f32, 0.5, 2.0, 1.5, 4.0, 3.0]
        .iter()
        .map(|&scale| {
            let mut v: Vec<f32> = (0..N).map(|_| rng.next_normal() * scale).collect();
            v[0] = 0.0;
            v[1] = 4.0 * scale;
            v[2] = -3.5 * scale;
            Tensor::from_f32(vec![1, N], v).unwrap()
        })
        .collect()
}

/// `y = relu(x)` over f32[1, N], as the script builds it in ONNX.
fn relu_graph() -> Graph {
    let mut g = Graph::new("relu");
    let x = g.add_input("x", TensorType::f32(vec![1, N]));
    let y = g.add_node_typed(
        "relu",
        Op::Activation(Activation::Relu),
        &[x],
        vec![Output {
            name: "y".into(),
            ty: TensorType::f32(vec![1, N]),
        }],
    )[0];
    g.set_outputs(vec![y]);
    g
}

/// The values of `name` ("x" or "y") in one sample.
fn values_of(sample: &Tensor, name: &str) -> Vec<f32> {
    let x = sample.as_f32().unwrap();
    match name {
        "x" => x.to_vec(),
        _ => x.iter().map(|v| v.max(0.0)).collect(),
    }
}

fn assert_histogram(
    name: &str,
    what: &str,
    counts: &[u64],
    edges: &[f32],
    min_max: Option<(f32, f32)>,
    ort: &Value,
) {
    let ort_counts: Vec<u64> = ort["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    let ort_edges: Vec<u32> = ort["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| f32_of(e).to_bits())
        .collect();
    assert_eq!(counts.len(), ort_counts.len(), "{what} '{name}': bin count");
    assert_eq!(counts, ort_counts.as_slice(), "{what} '{name}': counts");
    let edges: Vec<u32> = edges.iter().map(|e| e.to_bits()).collect();
    assert_eq!(edges, ort_edges, "{what} '{name}': edges");
    assert_eq!(
        min_max,
        Some((f32_of(&ort["min"]), f32_of(&ort["max"]))),
        "{what} '{name}': min/max"
    );
}

fn range_of(v: &Value) -> (f32, f32) {
    (f32_of(&v[0]), f32_of(&v[1]))
}

#[test]
fn calibration_methods_match_onnxruntime_calibrators() {
    let Some(py) = python() else { return };
    let dir = TempDir::new("calibrate");
    let samples = samples();
    for (i, s) in samples.iter().enumerate() {
        write_npy_file(dir.0.join(format!("sample_{i:02}.npy")), s).unwrap();
    }
    let averaging_constant = 0.1f32;
    let percentiles = [99.9f64, 99.99];
    let ort = reference(
        &py,
        &dir.0,
        &json!({
            "mode": "calibrate", "dir": dir.0, "shape": [1, N],
            "averaging_constant": averaging_constant, "percentiles": percentiles,
        }),
    );

    // kiln's full pipeline: the same .npy directory, the interpreter, one observer per value
    let graph = relu_graph();
    let set = CalibrationSet::open(&dir.0, &input_specs(&graph), None).unwrap();
    assert_eq!(set.len(), samples.len());
    let values = float_values_to_observe(&graph).unwrap();
    let activation = kiln_quant::QuantScheme::default().activation();
    let run = |kind: ObserverKind| {
        calibrate(
            &graph,
            &values,
            set.iter(),
            &mut |_| kind.build(&activation).unwrap(),
            Progress::Hidden,
        )
        .unwrap()
    };
    let kiln_range = |cal: &kiln_quant::Calibration, name: &str| {
        let r = cal.values[name].range.unwrap();
        (r.min, r.max)
    };

    // min-max and moving average: identical f32 values
    let cal = run(ObserverKind::MinMax);
    let cal_ma = run(ObserverKind::MovingAverageMinMax { averaging_constant });
    for name in ["x", "y"] {
        assert_eq!(
            kiln_range(&cal, name),
            range_of(&ort["minmax"][name]),
            "minmax '{name}'"
        );
        assert_eq!(
            kiln_range(&cal_ma, name),
            range_of(&ort["moving_average"][name]),
            "moving average '{name}'"
        );
    }

    // the signed histogram, streamed sample by sample, equals onnxruntime's bin for bin
    let mut signed = [Histogram::new(2048, 1 << 20), Histogram::new(2048, 1 << 20)];
    for s in &samples {
        signed[0].add(&values_of(s, "x"));
        signed[1].add(&values_of(s, "y"));
    }
    for (h, name) in signed.iter().zip(["x", "y"]) {
        assert_histogram(
            name,
            "entropy histogram",
            h.counts(),
            h.edges(),
            h.min_max(),
            &ort["entropy"]["histograms"][name],
        );
    }

    // entropy: every KL divergence agrees (onnxruntime computes them in f32), and the chosen
    // range is onnxruntime's or, on a near tie, a candidate with the same divergence
    let cal_entropy = run(ObserverKind::Entropy {
        bins: 2048,
        quantized_bins: 128,
    });
    for (h, name) in signed.iter().zip(["x", "y"]) {
        let candidates = h.entropy_candidates(128);
        let ort_kl = ort["entropy"]["kl"][name].as_array().unwrap();
        let n = h.counts().len();
        let mut by_len = std::collections::HashMap::new();
        for (i, (r, kl)) in candidates.iter().enumerate() {
            let i = i + 64;
            by_len.insert((2 * i + 1).min(n - (n / 2 - i)), (*r, *kl));
        }
        let mut worst = 0.0f64;
        for entry in ort_kl {
            let len = entry[0].as_u64().unwrap() as usize;
            let ort_value = entry[1].as_f64().unwrap();
            let (_, kl) = by_len[&len];
            let diff = (kl - ort_value).abs() / ort_value.abs().max(1e-3);
            worst = worst.max(diff);
            assert!(
                diff < 1e-3,
                "'{name}' candidate of {len} bins: KL kiln {kl}, onnxruntime {ort_value}"
            );
        }
        assert_eq!(
            ort_kl.len(),
            candidates.len(),
            "'{name}': every candidate had a finite KL"
        );
        let kiln = kiln_range(&cal_entropy, name);
        let theirs = range_of(&ort["entropy"]["ranges"][name]);
        if kiln != theirs {
            // near tie: onnxruntime's KL at kiln's choice equals its minimum within f32 noise
            let kl_at = |r: (f32, f32)| {
                ort_kl
                    .iter()
                    .zip(&candidates)
                    .find(|(_, (c, _))| {
                        (
                            c.min.max(h.min_max().unwrap().0),
                            c.max.min(h.min_max().unwrap().1),
                        ) == r
                    })
                    .map(|(e, _)| e[1].as_f64().unwrap())
                    .expect("the range is a candidate")
            };
            let (a, b) = (kl_at(kiln), kl_at(theirs));
            assert!(
                (a - b).abs() <= 1e-4 * b.abs(),
                "'{name}': entropy range {kiln:?} (KL {a}) vs onnxruntime {theirs:?} (KL {b})"
            );
            eprintln!("entropy '{name}': near tie, kiln {kiln:?} vs onnxruntime {theirs:?}");
        }
        eprintln!(
            "entropy '{name}': {} KL values within {worst:.1e} relative of onnxruntime's",
            ort_kl.len()
        );
    }

    // percentile, symmetric (|x| histogram) and not: histograms and ranges identical
    for case in ort["percentile"].as_array().unwrap() {
        let p = case["percentile"].as_f64().unwrap();
        let symmetric = case["symmetric"].as_bool().unwrap();
        let cal = run(ObserverKind::Percentile {
            percentile: p,
            symmetric: Some(symmetric),
            bins: 2048,
        });
        for name in ["x", "y"] {
            let what = format!("percentile {p} symmetric={symmetric}");
            if symmetric {
                let mut h = AbsHistogram::new(2048, 1 << 20);
                samples.iter().for_each(|s| h.add(&values_of(s, name)));
                assert_histogram(
                    name,
                    &what,
                    h.counts(),
                    h.edges(),
                    h.min_max(),
                    &case["histograms"][name],
                );
            } else {
                let mut h = Histogram::new(2048, 1 << 20);
                samples.iter().for_each(|s| h.add(&values_of(s, name)));
                assert_histogram(
                    name,
                    &what,
                    h.counts(),
                    h.edges(),
                    h.min_max(),
                    &case["histograms"][name],
                );
            }
            assert_eq!(
                kiln_range(&cal, name),
                range_of(&case["ranges"][name]),
                "{what} '{name}'"
            );
        }
    }

    // distribution: the histogram's outer edges, and its mean/std
    for (h, name) in signed.iter().zip(["x", "y"]) {
        let d = &ort["distribution"][name];
        let r = h.distribution_range().unwrap();
        assert_eq!(
            (r.min, r.max),
            range_of(&d["range"]),
            "distribution '{name}'"
        );
        let (avg, std) = h.mean_std().unwrap();
        for (k, o) in [(avg, f32_of(&d["avg"])), (std, f32_of(&d["std"]))] {
            assert!(
                (k - o).abs() <= 2.0 * f32::EPSILON * o.abs(),
                "distribution '{name}': {k} vs {o}"
            );
        }
    }
}
