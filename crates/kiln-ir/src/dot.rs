//! Graphviz DOT output of a graph (`kiln dump --format dot`): one box per op with its
//! attributes and output types, constants folded into their consumers' labels, edges
//! labelled with short value names. Deterministic, like the text format.

use crate::graph::{Graph, NodeId, ValueId};
use crate::op::Op;
use crate::text::attrs::op_attrs;
use crate::text::{const_numbering, fmt_type, print_order};
use crate::types::{Quant, TensorType};
use std::collections::HashMap;
use std::fmt::Write;

/// Value names up to this many characters label their edge; longer ones (ONNX's
/// `/layer1/conv/Conv_output_0`) would only clutter the picture.
const EDGE_LABEL_MAX: usize = 20;

/// Attribute lines of a node's label wrap after about this many characters.
const LABEL_WIDTH: usize = 44;

/// Escape text for a double-quoted DOT string (`\n` in the result is a DOT line break only
/// where this module adds it, never from a name).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\\\n"),
            '\r' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `k=v` parts joined by spaces, wrapped into lines of about `LABEL_WIDTH` characters.
fn wrap(parts: &[String]) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for part in parts {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + part.chars().count() <= LABEL_WIDTH => {
                line.push(' ');
                line.push_str(part);
            }
            _ => lines.push(part.clone()),
        }
    }
    lines
}

/// A type as the text format writes it, except that per-axis quantization is abbreviated
/// to its axis and channel count (64 scales do not fit in a box).
fn label_type(ty: &TensorType) -> String {
    match &ty.quant {
        Some(Quant::PerAxis { axis, scales, .. }) => {
            format!("{ty} q(axis={axis}, {} scales)", scales.len())
        }
        _ => fmt_type(ty),
    }
}

/// The graph as a Graphviz digraph.
pub fn to_dot(g: &Graph) -> String {
    let (order, _) = print_order(g);
    let numbering = const_numbering(g, &order);
    let index: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let outputs: Vec<ValueId> = g.outputs().to_vec();
    let is_folded_const =
        |n: NodeId| matches!(g.node(n).op, Op::Const(_)) && !outputs.iter().any(|v| v.node == n);
    let const_ref = |n: NodeId| -> String {
        let node = g.node(n);
        let number = match node.op {
            Op::Const(id) => numbering
                .get(&id)
                .map_or("?".to_string(), |k| k.to_string()),
            _ => "?".to_string(),
        };
        let ty = node
            .outputs
            .first()
            .map(|o| label_type(&o.ty))
            .unwrap_or_default();
        format!("@c{number} {ty}")
    };

    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&g.name));
    out.push_str("  rankdir=TB;\n");
    out.push_str("  node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=9];\n");

    let mut edges = String::new();
    for (i, &id) in order.iter().enumerate() {
        if is_folded_const(id) {
            continue;
        }
        let node = g.node(id);
        let mut lines: Vec<String> = Vec::new();
        let shape = match &node.op {
            Op::Input { .. } => {
                for o in &node.outputs {
                    lines.push(format!("%{}", o.name));
                    lines.push(label_type(&o.ty));
                }
                "ellipse"
            }
            Op::Const(_) => {
                for o in &node.outputs {
                    lines.push(format!("%{}", o.name));
                }
                lines.push(const_ref(id));
                "note"
            }
            op => {
                lines.push(op.mnemonic().to_string());
                let attrs: Vec<String> = op_attrs(op)
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.to_text()))
                    .collect();
                lines.extend(wrap(&attrs));
                for &v in node.inputs() {
                    if g.value_exists(v) && is_folded_const(v.node) {
                        lines.push(format!("%{} = {}", g.value_name(v), const_ref(v.node)));
                    }
                }
                for o in &node.outputs {
                    lines.push(format!("→ {}", label_type(&o.ty)));
                }
                "box"
            }
        };
        let label: Vec<String> = lines.iter().map(|l| escape(l)).collect();
        let _ = writeln!(
            out,
            "  n{i} [shape={shape}, label=\"{}\", tooltip=\"{}\"];",
            label.join("\\n"),
            escape(&node.name)
        );
        for &v in node.inputs() {
            if !g.value_exists(v) || is_folded_const(v.node) {
                continue;
            }
            let Some(src) = index.get(&v.node) else {
                continue;
            };
            let name = g.value_name(v);
            if name.chars().count() <= EDGE_LABEL_MAX {
                let _ = writeln!(edges, "  n{src} -> n{i} [label=\"{}\"];", escape(name));
            } else {
                let _ = writeln!(edges, "  n{src} -> n{i};");
            }
        }
    }
    for (k, &v) in outputs.iter().enumerate() {
        if !g.value_exists(v) {
            continue;
        }
        let _ = writeln!(
            out,
            "  r{k} [shape=ellipse, label=\"return %{}\\n{}\"];",
            escape(g.value_name(v)),
            escape(&label_type(g.value_type(v)))
        );
        if let Some(src) = index.get(&v.node) {
            let _ = writeln!(edges, "  n{src} -> r{k};");
        }
    }
    out.push_str(&edges);
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::parse_graph;

    fn sample() -> Graph {
        parse_graph(
            r#"graph @"demo \"net\""(%x: f32[1,2,4,4]) -> (f32[1,2,4,4], u8[1,2,4,4] q(0.1, 3)) {
  %w = const @c0 : f32[2,2,1,1] = full(0.5)
  %"/very/long/onnx/value/name_0" = conv(%x, %w) {kernel=[1,1], act=relu} : f32[1,2,4,4] @"/conv"
  %y = add(%"/very/long/onnx/value/name_0", %x) : f32[1,2,4,4]
  %q = quantize(%y) : u8[1,2,4,4] q(0.1, 3)
  return %y, %q
}"#,
        )
        .expect("valid sample")
    }

    #[test]
    fn sample_is_a_valid_graph() {
        crate::verify(&sample()).unwrap();
    }

    #[test]
    fn ops_constants_and_edges() {
        let dot = to_dot(&sample());
        let expected = r#"digraph "demo \"net\"" {
  rankdir=TB;
  node [shape=box, style=rounded, fontname="Helvetica", fontsize=10];
  edge [fontname="Helvetica", fontsize=9];
  n0 [shape=ellipse, label="%x\nf32[1,2,4,4]", tooltip="x"];
  n2 [shape=box, label="conv\nkernel=[1,1] strides=[1,1] pads=[0,0,0,0]\ndilations=[1,1] groups=1 act=relu\n%w = @c0 f32[2,2,1,1]\n→ f32[1,2,4,4]", tooltip="/conv"];
  n3 [shape=box, label="add\n→ f32[1,2,4,4]", tooltip="y"];
  n4 [shape=box, label="quantize\n→ u8[1,2,4,4] q(0.1, 3)", tooltip="q"];
  r0 [shape=ellipse, label="return %y\nf32[1,2,4,4]"];
  r1 [shape=ellipse, label="return %q\nu8[1,2,4,4] q(0.1, 3)"];
  n0 -> n2 [label="x"];
  n2 -> n3;
  n0 -> n3 [label="x"];
  n3 -> n4 [label="y"];
  n3 -> r0;
  n4 -> r1;
}
"#;
        assert_eq!(dot, expected);
    }

    #[test]
    fn per_axis_quantization_is_abbreviated() {
        let g = parse_graph(
            "graph @g() -> (f32[3,1]) {
  %w = const @c0 : i8[3,1] q(axis=0, scales=[0.5, 0.25, 0.125], zps=[0, 0, 0]) = [1, 2, 3]
  %y = dequantize(%w) : f32[3,1]
  return %y
}",
        )
        .unwrap();
        let dot = to_dot(&g);
        assert!(
            dot.contains(
                "label=\"dequantize\\n%w = @c0 i8[3,1] q(axis=0, 3 scales)\\n→ f32[3,1]\""
            ),
            "{dot}"
        );
    }

    #[test]
    fn output_is_deterministic() {
        assert_eq!(to_dot(&sample()), to_dot(&sample()));
    }
}
