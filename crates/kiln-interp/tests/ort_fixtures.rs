//! Replays tests/ort_fixtures.json — single-op cases whose expected outputs were computed by
//! onnxruntime (see tests/gen_ort_fixtures.py, which records the onnxruntime version) —
//! through `kiln_interp::eval_op`. Integer outputs must match exactly; float outputs within
//! each case's tolerance (relative to max(1, |expected|)).

use kiln_ir::{DType, Op, Tensor, TensorData, TensorType};
use serde_json::Value;

fn tensor(v: &Value) -> Tensor {
    let dtype =
        DType::from_name(&v["dtype"].as_str().expect("dtype").to_lowercase()).expect("known dtype");
    let shape: Vec<usize> = serde_json::from_value(v["shape"].clone()).expect("shape");
    let data = v["data"].as_array().expect("data");
    let ints = || data.iter().map(|x| x.as_i64().expect("integer"));
    let data = match dtype {
        DType::F32 => TensorData::F32(
            data.iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect(),
        ),
        DType::I8 => TensorData::I8(ints().map(|x| x as i8).collect()),
        DType::U8 => TensorData::U8(ints().map(|x| x as u8).collect()),
        DType::I32 => TensorData::I32(ints().map(|x| x as i32).collect()),
        DType::I64 => TensorData::I64(ints().collect()),
        DType::Bool => TensorData::Bool(data.iter().map(|x| x.as_bool().expect("bool")).collect()),
        DType::F16 => unreachable!("fixtures hold no f16"),
    };
    Tensor::new(shape, data).expect("consistent fixture")
}

/// Why `got` differs from `want`, if it does.
fn mismatch(got: &Tensor, want: &Tensor, tol: f64) -> Option<String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Some(format!(
            "got {} {:?}, want {} {:?}",
            got.dtype(),
            got.shape(),
            want.dtype(),
            want.shape()
        ));
    }
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let exact = want.dtype() != DType::F32;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if exact {
            a == b
        } else {
            (a - b).abs() <= tol * b.abs().max(1.0)
        };
        if !ok {
            return Some(format!("element {i}: got {a}, want {b} (tol {tol})"));
        }
    }
    None
}

#[test]
fn interpreter_matches_onnxruntime_on_recorded_cases() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/ort_fixtures.json"
    ))
    .expect("fixture file exists");
    let fixtures: Value = serde_json::from_str(&text).expect("valid JSON");
    let cases = fixtures["cases"].as_array().expect("cases");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let op: Op = serde_json::from_value(case["op"].clone())
            .unwrap_or_else(|e| panic!("{name}: op: {e}"));
        let inputs: Vec<Tensor> = case["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(tensor)
            .collect();
        let input_types: Vec<TensorType> = serde_json::from_value(case["input_types"].clone())
            .unwrap_or_else(|e| panic!("{name}: types: {e}"));
        let output_types: Vec<TensorType> = serde_json::from_value(case["output_types"].clone())
            .unwrap_or_else(|e| panic!("{name}: types: {e}"));
        let expected: Vec<Tensor> = case["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(tensor)
            .collect();
        let tol = case["tol"].as_f64().expect("tol");
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let type_refs: Vec<&TensorType> = input_types.iter().collect();
        match kiln_interp::eval_op(&op, &refs, &type_refs, &output_types) {
            Err(e) => failures.push(format!("{name}: error: {e}")),
            Ok(got) => {
                for (k, (g, w)) in got.iter().zip(&expected).enumerate() {
                    if let Some(why) = mismatch(g, w, tol) {
                        failures.push(format!("{name} output {k}: {why}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from onnxruntime {}:\n{}",
        failures.len(),
        cases.len(),
        fixtures["onnxruntime"],
        failures.join("\n")
    );
}
