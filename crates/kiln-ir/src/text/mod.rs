//! The `.kir` text format: [`print_graph`] and [`parse_graph`], exact round trip
//! (`print(parse(print(g))) == print(g)`). Every dump and every snapshot-test input uses it;
//! docs/ir.md gives the grammar.
//!
//! [`attrs`] holds the one op ⇄ (mnemonic, attributes) conversion that the printer, the
//! parser, the DOT and the JSON outputs share.

pub mod attrs;
mod lex;
mod parse;
mod print;

pub use parse::parse_graph;
pub use print::print_graph;

use crate::graph::{Graph, NodeId};
use crate::op::Op;
use crate::pool::ConstId;
use crate::types::{Quant, TensorType};
use std::collections::HashMap;

/// Constants with at most this many elements are printed inline, value by value.
pub const INLINE_CONST_LIMIT: usize = 16;

/// Generated constants larger than this (in elements) are refused by the parser, so that a
/// hostile or mistyped shape cannot make it allocate terabytes.
pub const GENERATED_CONST_LIMIT: usize = 1 << 28;

/// Shortest decimal that reads back as the same `f32` (`1.0`, `0.1`, `1e-7`), with `inf`,
/// `-inf` and `nan` spelled the way the lexer reads them.
pub fn fmt_f32(x: f32) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else {
        format!("{x:?}")
    }
}

/// Shortest decimal that reads back as the same `f64`; see [`fmt_f32`].
pub fn fmt_f64(x: f64) -> String {
    if x.is_nan() {
        "nan".to_string()
    } else {
        format!("{x:?}")
    }
}

/// Summary statistics are printed to 4 significant digits. Formatting is idempotent:
/// the f64 nearest to a printed string prints as that same string, which is what makes
/// `summary(..)` constants (parsed back as opaque) print identically.
pub fn fmt_stat(x: f64) -> String {
    let short = fmt_stat_digits(x);
    // Near f64::MAX, rounding to 4 digits can overflow to infinity when read back; such
    // values keep their full shortest form (still idempotent).
    if x.is_finite() && short.parse::<f64>().map_or(true, |y| y.is_infinite()) {
        return fmt_f64(x);
    }
    short
}

fn fmt_stat_digits(x: f64) -> String {
    if !x.is_finite() {
        return fmt_f64(x);
    }
    if x == 0.0 {
        return "0".to_string();
    }
    // `{:.3e}` rounds correctly from the exact binary value and picks the exponent after
    // rounding (9.99996 → 1.000e1), so the digits below are the final ones.
    let sci = format!("{x:.3e}");
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return sci;
    };
    let negative = mantissa.starts_with('-');
    let digits: Vec<char> = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..6).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let (int_part, frac_part): (String, String) = if point <= 0 {
            let zeros = "0".repeat((-point) as usize);
            ("0".to_string(), zeros + &digits.iter().collect::<String>())
        } else {
            let point = point as usize;
            let mut int_part: String = digits.iter().take(point).collect();
            while int_part.len() < point {
                int_part.push('0');
            }
            (int_part, digits.iter().skip(point).collect())
        };
        let frac_part = frac_part.trim_end_matches('0');
        if frac_part.is_empty() {
            format!("{sign}{int_part}")
        } else {
            format!("{sign}{int_part}.{frac_part}")
        }
    } else {
        let mut m: String = digits.iter().take(1).collect();
        let rest: String = digits.iter().skip(1).collect();
        let rest = rest.trim_end_matches('0');
        if !rest.is_empty() {
            m.push('.');
            m.push_str(rest);
        }
        format!("{sign}{m}e{exp}")
    }
}

/// `1.5 KiB`, for the comment after a summarized constant.
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Names made only of these characters print bare (`%conv1.weight`, `%0`); anything else
/// (ONNX names contain `/`, `:` and spaces) prints quoted (`%"/layer1/Conv_output_0"`).
pub(crate) fn is_plain_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// A value, node or graph name as the text spells it after its sigil.
pub fn fmt_name(name: &str) -> String {
    if !name.is_empty() && name.chars().all(is_plain_name_char) {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `f32[1,3,224,224]`, followed by ` q(scale, zp)` or ` q(axis=.., scales=[..], zps=[..])`
/// for quantized values.
pub fn fmt_type(ty: &TensorType) -> String {
    let mut s = ty.to_string();
    if let Some(q) = &ty.quant {
        s.push(' ');
        s.push_str(&fmt_quant(q));
    }
    s
}

/// The quantization suffix of a type.
pub fn fmt_quant(q: &Quant) -> String {
    match q {
        Quant::PerTensor { scale, zero_point } => {
            format!("q({}, {zero_point})", fmt_f32(*scale))
        }
        Quant::PerAxis {
            axis,
            scales,
            zero_points,
        } => {
            let scales: Vec<String> = scales.iter().map(|&s| fmt_f32(s)).collect();
            let zps: Vec<String> = zero_points.iter().map(|z| z.to_string()).collect();
            format!(
                "q(axis={axis}, scales=[{}], zps=[{}])",
                scales.join(", "),
                zps.join(", ")
            )
        }
    }
}

/// Nodes in print order: `g.topo_order()`, or — for a graph with a cycle, which cannot be
/// ordered — insertion order, so that a broken graph can still be dumped and looked at.
pub(crate) fn print_order(g: &Graph) -> (Vec<NodeId>, bool) {
    match g.topo_order() {
        Ok(order) => (order, true),
        Err(_) => (g.node_ids().collect(), false),
    }
}

/// Pool ids renumbered by first use in print order, so that two graphs that differ only in
/// the order their constants were interned print the same `@cN` names.
pub(crate) fn const_numbering(g: &Graph, order: &[NodeId]) -> HashMap<ConstId, usize> {
    let mut numbering = HashMap::new();
    for &n in order {
        if let Op::Const(id) = g.node(n).op {
            let next = numbering.len();
            numbering.entry(id).or_insert(next);
        }
    }
    numbering
}

#[cfg(test)]
mod tests;
