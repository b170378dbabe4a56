//! Randomized robustness test: thousands of one-node models with attribute and constant
//! values drawn from the extremes ONNX's int64 fields allow (0, negatives, 2^31, 2^62,
//! i64::MIN/MAX), with the data input either a graph input or a folded constant, must each
//! import or fail with an error — never panic, never hang. Deterministic (a fixed seed).

use crate::proto::{AttributeProto, TensorProto};
use crate::testutil::*;
use crate::ImportOptions;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// splitmix64: a tiny deterministic generator (no dependency for one test).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Mostly small values, sometimes an extreme one.
    fn int(&mut self) -> i64 {
        const EXTREMES: [i64; 8] = [
            0,
            -1,
            1 << 31,
            1 << 62,
            -(1 << 62),
            i64::MAX,
            i64::MIN,
            (1 << 31) - 1,
        ];
        if self.below(4) == 0 {
            self.pick(&EXTREMES)
        } else {
            self.below(7) as i64 - 2
        }
    }

    fn ints(&mut self, n: usize) -> Vec<i64> {
        (0..n).map(|_| self.int()).collect()
    }

    fn float(&mut self) -> f32 {
        self.pick(&[0.5, 1.0, 2.0, 0.0, -1.0, 1e6, f32::NAN, f32::INFINITY, 1e-6])
    }
}

/// One random single-node model around op `op` over data input `x`.
fn random_model(rng: &mut Rng, op: &str) -> ModelBuilder {
    let rank = rng.pick(&[3usize, 4, 4, 5]);
    let spatial = rank - 2;
    let channels = rng.pick(&[1i64, 2, 3]);
    let mut x_shape = vec![1, channels];
    x_shape.extend((0..spatial).map(|_| rng.pick(&[1i64, 2, 3, 5])));
    let opset = rng.pick(&[9, 11, 13, 17, 19]);
    let mut m = ModelBuilder::new(opset);
    // Half the time x is a constant, so the node is folded by the interpreter.
    if rng.below(2) == 0 {
        m = m
            .init(tensor_i64("x_shape", &[rank as i64], &x_shape))
            .node(node("ConstantOfShape", &["x_shape"], &["x"], vec![]));
    } else {
        m = m.input("x", &x_shape);
    }
    let window_attrs = |rng: &mut Rng, attrs: &mut Vec<AttributeProto>| {
        let auto_pad = rng.pick(&["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]);
        attrs.push(attr_str("auto_pad", auto_pad));
        for name in ["strides", "dilations"] {
            if rng.below(2) == 0 {
                attrs.push(attr_ints(name, &rng.ints(spatial)));
            }
        }
        if rng.below(2) == 0 {
            attrs.push(attr_ints("pads", &rng.ints(2 * spatial)));
        }
    };
    let mut attrs = Vec::new();
    let mut inputs = vec!["x"];
    let mut inits: Vec<TensorProto> = Vec::new();
    match op {
        "Conv" | "ConvTranspose" => {
            let mut w = vec![channels, rng.pick(&[1, 2])];
            w.extend((0..spatial).map(|_| rng.pick(&[1i64, 2, 3])));
            let n: i64 = w.iter().product();
            inits.push(tensor_f32("w", &w, &vec![0.5; n as usize]));
            inputs.push("w");
            window_attrs(rng, &mut attrs);
            if rng.below(3) == 0 {
                attrs.push(attr_int("group", rng.int()));
            }
            if op == "ConvTranspose" && rng.below(2) == 0 {
                attrs.push(attr_ints("output_shape", &rng.ints(spatial)));
            }
        }
        "MaxPool" | "AveragePool" => {
            window_attrs(rng, &mut attrs);
            attrs.push(attr_ints("kernel_shape", &rng.ints(spatial)));
            attrs.push(attr_int("ceil_mode", rng.pick(&[0, 1])));
        }
        "Slice" => {
            let n = 1 + rng.below(rank);
            for name in ["starts", "ends", "axes", "steps"] {
                inits.push(tensor_i64(name, &[n as i64], &rng.ints(n)));
                inputs.push(name);
            }
        }
        "Pad" => {
            inits.push(tensor_i64("pads", &[2 * rank as i64], &rng.ints(2 * rank)));
            inputs.push("pads");
            attrs.push(attr_str("mode", rng.pick(&["constant", "reflect", "edge"])));
        }
        "Reshape" | "Split" | "Gather" | "Squeeze" | "Unsqueeze" => {
            let n = rng.below(4);
            inits.push(tensor_i64("k", &[n as i64], &rng.ints(n)));
            inputs.push("k");
            if rng.below(2) == 0 {
                attrs.push(attr_int("axis", rng.int()));
            }
        }
        "Resize" => {
            let scales: Vec<f32> = (0..rank).map(|_| rng.float()).collect();
            inits.push(tensor_f32("scales", &[rank as i64], &scales));
            inputs.extend(["", "scales"]);
            attrs.push(attr_str("mode", rng.pick(&["nearest", "linear", "cubic"])));
        }
        "ConstantOfShape" => {
            let n = 1 + rng.below(3);
            inits.push(tensor_i64("shape", &[n as i64], &rng.ints(n)));
            inputs = vec!["shape"];
        }
        "Range" => {
            for name in ["start", "limit", "delta"] {
                inits.push(tensor_i64(name, &[], &[rng.int()]));
            }
            inputs = vec!["start", "limit", "delta"];
        }
        "LRN" => attrs.push(attr_int("size", rng.int())),
        "Transpose" => attrs.push(attr_ints("perm", &rng.ints(rank))),
        "Flatten" | "Softmax" | "Concat" => {
            attrs.push(attr_int("axis", rng.int()));
            if op == "Concat" {
                inputs.push("x");
            }
        }
        other => panic!("no generator for {other}"),
    }
    for t in inits {
        m = m.init(t);
    }
    m.node(named(node(op, &inputs, &["y"], attrs), "n"))
        .output("y")
}

#[test]
fn random_extreme_attributes_never_panic() {
    const OPS: &[&str] = &[
        "Conv",
        "ConvTranspose",
        "MaxPool",
        "AveragePool",
        "Slice",
        "Pad",
        "Reshape",
        "Split",
        "Gather",
        "Squeeze",
        "Unsqueeze",
        "Resize",
        "ConstantOfShape",
        "Range",
        "LRN",
        "Transpose",
        "Flatten",
        "Softmax",
        "Concat",
    ];
    // A small limit keeps any accepted allocation small.
    let opts = ImportOptions {
        max_memory: Some(64 << 20),
        ..ImportOptions::default()
    };
    let mut rng = Rng(0x6B69_6C6E);
    let mut panics = Vec::new();
    let mut imported = 0;
    for i in 0..3000 {
        let op = OPS[i % OPS.len()];
        let model = random_model(&mut rng, op);
        match catch_unwind(AssertUnwindSafe(|| model.import_with(&opts))) {
            Ok(Ok(_)) => imported += 1,
            Ok(Err(_)) => {}
            Err(_) => panics.push(format!("{op} #{i}: {:?}", model.model().graph)),
        }
    }
    assert!(
        panics.is_empty(),
        "{} panics:\n{}",
        panics.len(),
        panics.join("\n")
    );
    // The generator also makes valid models: the test is not all early rejections.
    assert!(imported > 300, "only {imported} of 3000 models imported");
}
