//! The printer of the `.kir` text format. Output is deterministic: nodes in
//! `Graph::topo_order`, constants renumbered by first use, floats in their shortest
//! round-trip form, no addresses or timestamps.

use super::attrs::{attrs_to_text, op_attrs};
use super::{
    const_numbering, fmt_f32, fmt_f64, fmt_name, fmt_stat, fmt_type, human_bytes, print_order,
    INLINE_CONST_LIMIT,
};
use crate::graph::{Graph, Node, ValueId};
use crate::op::Op;
use crate::pool::{ConstValue, Generator};
use crate::tensor::{Tensor, TensorData, TensorStats};
use std::collections::HashSet;
use std::fmt::Write;

/// The graph in `.kir` text. Never fails: a broken graph (a cycle, a dangling value, a
/// missing constant) still prints, with the problem visible, so it can be looked at; the
/// parser then rejects it.
pub fn print_graph(g: &Graph) -> String {
    let (order, acyclic) = print_order(g);
    let numbering = const_numbering(g, &order);
    let mut out = String::new();
    if !acyclic {
        out.push_str("// this graph has a cycle: nodes are listed in insertion order\n");
    }

    let params: Vec<String> = g
        .inputs()
        .iter()
        .map(|&v| {
            if !g.value_exists(v) {
                return format!("%{}: ?", fmt_name("?dangling"));
            }
            let node = g.node(v.node);
            let output = g.output(v);
            let mut p = format!("%{}: {}", fmt_name(&output.name), fmt_type(&output.ty));
            if node.name != output.name {
                let _ = write!(p, " @{}", fmt_name(&node.name));
            }
            p
        })
        .collect();
    let result_types: Vec<String> = g
        .outputs()
        .iter()
        .map(|&v| {
            if g.value_exists(v) {
                fmt_type(g.value_type(v))
            } else {
                "?".to_string()
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "graph @{}({}) -> ({}) {{",
        fmt_name(&g.name),
        params.join(", "),
        result_types.join(", ")
    );

    let header_inputs: HashSet<ValueId> = g.inputs().iter().copied().collect();
    let mut printed_consts = HashSet::new();
    for &id in &order {
        let node = g.node(id);
        let mut line = String::from("  ");
        let mut comment = None;
        match &node.op {
            Op::Input { .. } if header_inputs.contains(&ValueId { node: id, port: 0 }) => continue,
            _ if node.outputs.is_empty() => {
                // Not a comment: the parser must reject this line rather than drop the node.
                let _ = writeln!(
                    out,
                    "  <node {} ({}) has no outputs>",
                    fmt_name(&node.name),
                    node.op.mnemonic()
                );
                continue;
            }
            Op::Const(cid) => {
                let number = numbering.get(cid).copied().unwrap_or(usize::MAX);
                let out0 = &node.outputs[0];
                let _ = write!(
                    line,
                    "%{} = const @c{number} : {}",
                    fmt_name(&out0.name),
                    fmt_type(&out0.ty)
                );
                if printed_consts.insert(*cid) {
                    match g.consts.get(*cid) {
                        Some(value) => {
                            let (body, note) = const_body(value);
                            line.push_str(" = ");
                            line.push_str(&body);
                            comment = note;
                        }
                        None => comment = Some("missing from the constant pool".to_string()),
                    }
                }
            }
            op => {
                let outs: Vec<String> = node
                    .outputs
                    .iter()
                    .map(|o| format!("%{}", fmt_name(&o.name)))
                    .collect();
                let args: Vec<String> = node
                    .inputs()
                    .iter()
                    .map(|&v| format!("%{}", fmt_name(value_name(g, v))))
                    .collect();
                let _ = write!(
                    line,
                    "{} = {}({})",
                    outs.join(", "),
                    op.mnemonic(),
                    args.join(", ")
                );
                let attrs = op_attrs(op);
                if !attrs.is_empty() {
                    let _ = write!(line, " {{{}}}", attrs_to_text(&attrs));
                }
                let types: Vec<String> = node.outputs.iter().map(|o| fmt_type(&o.ty)).collect();
                let _ = write!(line, " : {}", types.join(", "));
            }
        }
        push_node_name(&mut line, node);
        if let Some(c) = comment {
            let _ = write!(line, "  // {c}");
        }
        out.push_str(&line);
        out.push('\n');
    }

    let results: Vec<String> = g
        .outputs()
        .iter()
        .map(|&v| format!("%{}", fmt_name(value_name(g, v))))
        .collect();
    if results.is_empty() {
        out.push_str("  return\n}\n");
    } else {
        let _ = writeln!(out, "  return {}\n}}", results.join(", "));
    }
    out
}

fn value_name(g: &Graph, v: ValueId) -> &str {
    if g.value_exists(v) {
        g.value_name(v)
    } else {
        "?dangling"
    }
}

/// ` @node_name`, only where the node's name differs from its first output's (ONNX node
/// names usually do; generated names usually don't).
fn push_node_name(line: &mut String, node: &Node) {
    if node.outputs.first().is_some_and(|o| o.name != node.name) {
        let _ = write!(line, " @{}", fmt_name(&node.name));
    }
}

/// The text after `= ` of a constant's first use, and the comment to put after it.
fn const_body(value: &ConstValue) -> (String, Option<String>) {
    match value {
        ConstValue::Data(t) if t.numel() <= INLINE_CONST_LIMIT => (inline_data(t), None),
        ConstValue::Data(t) => (summary(&t.stats()), Some(size_note(t.byte_size() as u128))),
        ConstValue::Generated { generator, tensor } => {
            let note = (tensor.numel() > INLINE_CONST_LIMIT)
                .then(|| size_note(tensor.byte_size() as u128));
            (generator_text(generator), note)
        }
        ConstValue::Opaque {
            dtype,
            shape,
            stats,
        } => {
            let bytes = shape
                .iter()
                .try_fold(dtype.size_bytes() as u128, |acc, &d| {
                    acc.checked_mul(d as u128)
                })
                .unwrap_or(u128::MAX);
            (summary(stats), Some(size_note(bytes)))
        }
    }
}

fn size_note(bytes: u128) -> String {
    human_bytes(bytes)
}

/// `summary(min=.., max=.., mean=.., std=..)`, 4 significant digits (see `fmt_stat`).
fn summary(s: &TensorStats) -> String {
    format!(
        "summary(min={}, max={}, mean={}, std={})",
        fmt_stat(s.min),
        fmt_stat(s.max),
        fmt_stat(s.mean),
        fmt_stat(s.std)
    )
}

/// `[1.0, -2.5, inf]`: every element, row-major, exact.
pub(crate) fn inline_data(t: &Tensor) -> String {
    let items: Vec<String> = match t.data() {
        TensorData::F32(v) => v.iter().map(|&x| fmt_f32(x)).collect(),
        // An f16 is exactly representable as f32, so the f32 shortest form reads back exactly.
        TensorData::F16(v) => v.iter().map(|&x| fmt_f32(x.to_f32())).collect(),
        TensorData::I8(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::U8(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::I64(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
    };
    format!("[{}]", items.join(", "))
}

pub(crate) fn generator_text(g: &Generator) -> String {
    match g {
        Generator::Normal { seed, mean, std } => {
            format!(
                "normal(seed={seed}, mean={}, std={})",
                fmt_f32(*mean),
                fmt_f32(*std)
            )
        }
        Generator::Uniform { seed, low, high } => {
            format!(
                "uniform(seed={seed}, low={}, high={})",
                fmt_f32(*low),
                fmt_f32(*high)
            )
        }
        Generator::Full { value } => format!("full({})", fmt_f64(*value)),
        Generator::Arange { start, step } => {
            format!("arange(start={}, step={})", fmt_f64(*start), fmt_f64(*step))
        }
    }
}
