//! JSON output of a graph (`kiln dump --format json`), for tools and notebooks: inputs,
//! outputs, nodes in topological order with their attributes and typed outputs, and the
//! constants described by dtype, shape, origin and statistics (never their data).
//! Deterministic, like the text format; constants are numbered as in the text.

use crate::graph::{Graph, ValueId};
use crate::op::Op;
use crate::pool::{ConstValue, Generator};
use crate::tensor::TensorStats;
use crate::text::attrs::{f32_to_json, f64_to_json, op_attrs};
use crate::text::{const_numbering, print_order};
use crate::types::{Quant, TensorType};
use serde_json::{json, Map, Value};

fn quant_json(q: &Quant) -> Value {
    match q {
        Quant::PerTensor { scale, zero_point } => {
            json!({ "scale": f32_to_json(*scale), "zero_point": zero_point })
        }
        Quant::PerAxis {
            axis,
            scales,
            zero_points,
        } => json!({
            "axis": axis,
            "scales": scales.iter().map(|&s| f32_to_json(s)).collect::<Vec<_>>(),
            "zero_points": zero_points,
        }),
    }
}

/// `{"dtype": "f32", "shape": [1, 3], "quant": {..}}` (`quant` only when quantized).
pub fn type_json(ty: &TensorType) -> Value {
    let mut obj = Map::new();
    obj.insert("dtype".into(), json!(ty.dtype.name()));
    obj.insert("shape".into(), json!(ty.shape));
    if let Some(q) = &ty.quant {
        obj.insert("quant".into(), quant_json(q));
    }
    Value::Object(obj)
}

fn stats_json(s: &TensorStats) -> Value {
    json!({
        "min": f64_to_json(s.min),
        "max": f64_to_json(s.max),
        "mean": f64_to_json(s.mean),
        "std": f64_to_json(s.std),
    })
}

fn generator_json(g: &Generator) -> Value {
    match g {
        Generator::Normal { seed, mean, std } => json!({
            "kind": "normal", "seed": seed, "mean": f32_to_json(*mean), "std": f32_to_json(*std),
        }),
        Generator::Uniform { seed, low, high } => json!({
            "kind": "uniform", "seed": seed, "low": f32_to_json(*low), "high": f32_to_json(*high),
        }),
        Generator::Full { value } => json!({ "kind": "full", "value": f64_to_json(*value) }),
        Generator::Arange { start, step } => json!({
            "kind": "arange", "start": f64_to_json(*start), "step": f64_to_json(*step),
        }),
    }
}

fn const_json(number: usize, value: &ConstValue) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), json!(format!("c{number}")));
    obj.insert("dtype".into(), json!(value.dtype().name()));
    obj.insert("shape".into(), json!(value.shape()));
    let bytes = value
        .shape()
        .iter()
        .try_fold(value.dtype().size_bytes() as u64, |acc, &d| {
            acc.checked_mul(d as u64)
        });
    obj.insert("bytes".into(), json!(bytes));
    let (origin, stats) = match value {
        ConstValue::Data(t) => ("data", t.stats()),
        ConstValue::Generated { generator, tensor } => {
            obj.insert("generator".into(), generator_json(generator));
            ("generated", tensor.stats())
        }
        ConstValue::Opaque { stats, .. } => ("opaque", *stats),
    };
    obj.insert("origin".into(), json!(origin));
    obj.insert("stats".into(), stats_json(&stats));
    Value::Object(obj)
}

fn value_name(g: &Graph, v: ValueId) -> &str {
    if g.value_exists(v) {
        g.value_name(v)
    } else {
        "?dangling"
    }
}

fn named_value(g: &Graph, v: ValueId) -> Value {
    let ty = if g.value_exists(v) {
        type_json(g.value_type(v))
    } else {
        Value::Null
    };
    json!({ "name": value_name(g, v), "type": ty })
}

/// The graph as a JSON value.
pub fn to_json(g: &Graph) -> Value {
    let (order, _) = print_order(g);
    let numbering = const_numbering(g, &order);
    let mut nodes = Vec::new();
    let mut constants: Vec<(usize, Value)> = Vec::new();
    for &id in &order {
        let node = g.node(id);
        let mut obj = Map::new();
        obj.insert("name".into(), json!(node.name));
        obj.insert("op".into(), json!(node.op.mnemonic()));
        match &node.op {
            Op::Input { .. } if g.inputs().iter().any(|v| v.node == id) => continue,
            Op::Const(cid) => {
                let number = numbering.get(cid).copied();
                obj.insert("const".into(), json!(number.map(|k| format!("c{k}"))));
                if let (Some(k), Some(value)) = (number, g.consts.get(*cid)) {
                    if !constants.iter().any(|(n, _)| *n == k) {
                        constants.push((k, const_json(k, value)));
                    }
                }
            }
            op => {
                let attrs: Map<String, Value> = op_attrs(op)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect();
                obj.insert("attrs".into(), Value::Object(attrs));
            }
        }
        let inputs: Vec<&str> = node.inputs().iter().map(|&v| value_name(g, v)).collect();
        obj.insert("inputs".into(), json!(inputs));
        let outputs: Vec<Value> = node
            .outputs
            .iter()
            .map(|o| json!({ "name": o.name, "type": type_json(&o.ty) }))
            .collect();
        obj.insert("outputs".into(), Value::Array(outputs));
        nodes.push(Value::Object(obj));
    }
    constants.sort_by_key(|(k, _)| *k);
    json!({
        "name": g.name,
        "inputs": g.inputs().iter().map(|&v| named_value(g, v)).collect::<Vec<_>>(),
        "outputs": g.outputs().iter().map(|&v| named_value(g, v)).collect::<Vec<_>>(),
        "nodes": nodes,
        "constants": constants.into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
    })
}

/// The graph as pretty-printed JSON text, ending with a newline.
pub fn to_json_string(g: &Graph) -> String {
    let mut s =
        serde_json::to_string_pretty(&to_json(g)).expect("a serde_json::Value always serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse_graph;

    #[test]
    fn describes_values_nodes_and_constants() {
        let g = parse_graph(
            "graph @g(%x: f32[1,4]) -> (u8[1,4] q(0.1, 3)) {
  %w = const @c0 : f32[4,4] = normal(seed=1, mean=0.0, std=0.5)
  %b = const @c1 : f32[4] = [0.1, 0.2, 0.3, 0.4]
  %wq = const @c2 : i8[4,4] q(axis=0, scales=[0.5, 0.25, 0.125, 1.0], zps=[0, 0, 0, 0]) = summary(min=-1, max=2, mean=0.5, std=inf)
  %y = gemm(%x, %w, %b) {trans_b=true, act=clip(min=0.0, max=inf)} : f32[1,4]
  %q = quantize(%y) : u8[1,4] q(0.1, 3)
  return %q
}",
        )
        .unwrap();
        crate::verify(&g).unwrap();
        let v = to_json(&g);
        assert_eq!(v["name"], "g");
        assert_eq!(
            v["inputs"],
            json!([{ "name": "x", "type": { "dtype": "f32", "shape": [1, 4] } }])
        );
        assert_eq!(
            v["outputs"],
            json!([{ "name": "q", "type": { "dtype": "u8", "shape": [1, 4], "quant": { "scale": 0.1, "zero_point": 3 } } }])
        );
        let nodes = v["nodes"].as_array().unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["w", "b", "wq", "y", "q"]);
        assert_eq!(nodes[0]["op"], "const");
        assert_eq!(nodes[0]["const"], "c0");
        assert_eq!(
            nodes[2]["outputs"][0]["type"]["quant"],
            json!({ "axis": 0, "scales": [0.5, 0.25, 0.125, 1.0], "zero_points": [0, 0, 0, 0] })
        );
        assert_eq!(nodes[3]["op"], "gemm");
        assert_eq!(nodes[3]["inputs"], json!(["x", "w", "b"]));
        assert_eq!(
            nodes[3]["attrs"],
            json!({
                "alpha": 1.0, "beta": 1.0, "trans_a": false, "trans_b": true,
                "act": { "name": "clip", "min": 0.0, "max": "inf" },
            })
        );
        let consts = v["constants"].as_array().unwrap();
        assert_eq!(consts.len(), 3);
        assert_eq!(consts[0]["origin"], "generated");
        assert_eq!(
            consts[0]["generator"],
            json!({ "kind": "normal", "seed": 1, "mean": 0.0, "std": 0.5 })
        );
        assert_eq!(consts[0]["bytes"], 64);
        // [0.1, 0.2, 0.3, 0.4] as f32: mean 0.25, population std sqrt(0.0125) = 0.1118.
        assert_eq!(consts[1]["origin"], "data");
        assert!((consts[1]["stats"]["mean"].as_f64().unwrap() - 0.25).abs() < 1e-7);
        assert!((consts[1]["stats"]["std"].as_f64().unwrap() - 0.0125f64.sqrt()).abs() < 1e-7);
        assert_eq!(
            consts[2],
            json!({
                "id": "c2", "dtype": "i8", "shape": [4, 4], "bytes": 16, "origin": "opaque",
                "stats": { "min": -1.0, "max": 2.0, "mean": 0.5, "std": "inf" },
            })
        );
        // f32 attributes and scales keep their shortest decimal form (0.1, not 0.10000000149…).
        assert!(to_json_string(&g).contains("\"scale\": 0.1,"));
        assert_eq!(to_json_string(&g), to_json_string(&g));
    }
}
