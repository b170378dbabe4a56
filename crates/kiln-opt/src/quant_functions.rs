//! The `quantize` rule set (`passes/quantize.rules`) and the named functions only its rules
//! call: conditions on quantized operands and builders of the integer ops' attributes (their
//! output type is a free choice, carried in the attrs payload). Kept apart from
//! [`crate::functions::FUNCTIONS`] and from the `-O` pass registry: the set runs on graphs in
//! QDQ form that `kiln-quant` produces, not on float models, so it is not a `kiln opt` pass.
//! [`crate::functions::lookup`] finds these functions too, so rule files may use them.

use crate::analysis::{KGraph, KGraphExt};
use crate::error::OptError;
use crate::functions::{Arg, Body, Function, Kind};
use crate::lang::OpAttrs;
use crate::rules::{parse_rule_file, RuleSet};
use egg::Id;
use kiln_ir::{
    Activation, ConvAttrs, DType, GemmAttrs, Op, PadMode, Quant, ResizeMode, Tensor, TensorData,
    TensorType,
};
use std::path::Path;
use std::sync::OnceLock;

/// The rule file, compiled in.
pub const QUANTIZE_RULE_FILE: (&str, &str) = (
    "passes/quantize.rules",
    include_str!("../../../passes/quantize.rules"),
);

/// The built-in `quantize` rule set, parsed once.
pub fn quantize_rule_set() -> &'static RuleSet {
    static SET: OnceLock<RuleSet> = OnceLock::new();
    SET.get_or_init(|| {
        parse_rule_file(QUANTIZE_RULE_FILE.0, QUANTIZE_RULE_FILE.1).unwrap_or_else(|e| {
            panic!("built-in rule file does not parse (a build bug; `cargo test -p kiln-opt` catches it): {e}")
        })
    })
}

/// The `quantize` rule set from `dir/quantize.rules` (for editing rules without rebuilding).
pub fn load_quantize_rule_set(dir: &Path) -> Result<RuleSet, OptError> {
    crate::passes::load_rule_set(dir, "quantize")
}

use Kind::{Attrs, Value};

/// The functions of the `quantize` rule set.
pub static QUANT_FUNCTIONS: &[Function] = &[
    // ---- conditions
    Function {
        name: "qconv-operands",
        params: &[Value, Value, Value],
        doc: "(x, w, b or absent) fit a qconv: x 8-bit per tensor; w a constant 8-bit weight \
              per tensor or per output channel (axis 0); b absent or an i32 constant with \
              zero point 0 and scale s_x·s_w[c]",
        body: Body::Condition(qconv_operands),
    },
    Function {
        name: "qgemm-operands",
        params: &[Value, Value, Value, Attrs],
        doc: "(a, B, C or absent, gemm attrs) fit a 1×1 qconv: alpha 1, beta 1, no transA, a \
              8-bit per tensor [M, K], B a constant 8-bit [K, N] ([N, K] with transB) per \
              tensor or per output column, C absent or an i32 [N] bias of scale s_a·s_B[n]",
        body: Body::Condition(qgemm_operands),
    },
    Function {
        name: "qmatmul-operands",
        params: &[Value, Value],
        doc: "(a, b) fit a qmatmul: a 8-bit per tensor, b a constant 8-bit [K, N] per tensor \
              or per column",
        body: Body::Condition(qmatmul_operands),
    },
    Function {
        name: "eight-bit",
        params: &[Value],
        doc: "the value is an i8 or u8 tensor with quantization parameters",
        body: Body::Condition(eight_bit),
    },
    Function {
        name: "nearest-resize",
        params: &[Attrs],
        doc: "the resize is in nearest mode (it copies elements)",
        body: Body::Condition(nearest_resize),
    },
    // ---- attributes
    Function {
        name: "qconv-attrs",
        params: &[Attrs, Attrs],
        doc: "qconv attrs from (conv attrs, quantize attrs): the conv's geometry and fused \
              relu/clip, the quantize's output type",
        body: Body::Compute {
            returns: Attrs,
            f: qconv_attrs,
        },
    },
    Function {
        name: "gemm-qconv-attrs",
        params: &[Attrs, Attrs],
        doc: "1×1 qconv attrs for a gemm from (gemm attrs, quantize attrs): output type \
              [M, N, 1, 1] with the quantize's parameters, the gemm's fused relu/clip",
        body: Body::Compute {
            returns: Attrs,
            f: gemm_qconv_attrs,
        },
    },
    Function {
        name: "qmatmul-attrs",
        params: &[Attrs],
        doc: "qmatmul attrs with the quantize attrs' output type",
        body: Body::Compute {
            returns: Attrs,
            f: qmatmul_attrs,
        },
    },
    Function {
        name: "with-output-quant",
        params: &[Attrs, Attrs],
        doc: "(qconv or qmatmul attrs, quantize attrs): the same op producing the quantize's \
              output type (a requantization folded into its producer); a qconv clamps at the \
              old type's interval where the new one is wider (a qmatmul then does not fold)",
        body: Body::Compute {
            returns: Attrs,
            f: with_output_quant,
        },
    },
    Function {
        name: "quantize-attrs-like",
        params: &[Attrs, Value],
        doc: "quantize attrs with the given quantize's dtype and parameters for the value's \
              shape",
        body: Body::Compute {
            returns: Attrs,
            f: quantize_attrs_like,
        },
    },
    Function {
        name: "as-image-attrs",
        params: &[Value],
        doc: "reshape attrs appending two unit axes: [M, K] → [M, K, 1, 1]",
        body: Body::Compute {
            returns: Attrs,
            f: as_image_attrs,
        },
    },
    Function {
        name: "reshape-to-output-attrs",
        params: &[Attrs],
        doc: "reshape attrs targeting the shape of the quantize attrs' output",
        body: Body::Compute {
            returns: Attrs,
            f: reshape_to_output_attrs,
        },
    },
    Function {
        name: "quantized-pad-attrs",
        params: &[Attrs, Attrs],
        doc: "(pad attrs, quantize attrs): the pad of the quantized values, its constant fill \
              quantized like every element (0.0 → the zero point)",
        body: Body::Compute {
            returns: Attrs,
            f: quantized_pad_attrs,
        },
    },
    // ---- constants
    Function {
        name: "gemm-weight-as-conv",
        params: &[Value, Attrs],
        doc: "a gemm's quantized constant B as a 1×1 conv weight [N, K, 1, 1] (transposed when \
              transB is 0), its per-column parameters moved to axis 0",
        body: Body::Compute {
            returns: Value,
            f: gemm_weight_as_conv,
        },
    },
];

// ---- argument helpers

fn class(arg: &Arg) -> Id {
    match arg {
        Arg::Class(c) => *c,
        other => unreachable!("argument kinds are checked when the rule file loads: {other:?}"),
    }
}

fn attrs_arg<'a>(eg: &'a KGraph, arg: &Arg) -> Option<&'a OpAttrs> {
    eg.attrs_of(class(arg))
}

/// The output type a `quantize` attrs payload declares.
fn quantize_output(eg: &KGraph, arg: &Arg) -> Option<TensorType> {
    let attrs = attrs_arg(eg, arg)?;
    if attrs.op != Op::Quantize {
        return None;
    }
    attrs.out_types.as_ref()?.first().cloned()
}

fn is_8bit(dtype: DType) -> bool {
    matches!(dtype, DType::I8 | DType::U8)
}

/// Per-tensor parameters of an 8-bit value.
fn per_tensor_8bit(ty: &TensorType) -> Option<(f32, i32)> {
    match (&ty.quant, is_8bit(ty.dtype)) {
        (Some(Quant::PerTensor { scale, zero_point }), true) => Some((*scale, *zero_point)),
        _ => None,
    }
}

/// The scales of a constant 8-bit weight with `channels` output channels along `axis`, one
/// per channel (a per-tensor scale repeated).
fn weight_scales(eg: &KGraph, w: Id, axis: usize, channels: usize) -> Option<Vec<f32>> {
    eg.const_tensor(w)?;
    let ty = eg.tensor_type(w)?;
    if !is_8bit(ty.dtype) {
        return None;
    }
    match ty.quant.as_ref()? {
        Quant::PerTensor { scale, .. } => Some(vec![*scale; channels]),
        Quant::PerAxis {
            axis: a, scales, ..
        } if *a == axis && scales.len() == channels => Some(scales.clone()),
        Quant::PerAxis { .. } => None,
    }
}

/// A qconv/qgemm bias: absent, or an i32 constant `[channels]` whose parameters (if any)
/// have zero point 0 and scale `s_x·s_w[c]` (to 1e-6 relative, as the verifier checks).
fn bias_fits(eg: &KGraph, b: Id, s_x: f32, s_w: &[f32]) -> bool {
    if eg.is_absent(b) {
        return true;
    }
    let (Some(ty), Some(_)) = (eg.tensor_type(b), eg.const_tensor(b)) else {
        return false;
    };
    if ty.dtype != DType::I32 || ty.shape != [s_w.len()] {
        return false;
    }
    let Some(q) = &ty.quant else {
        return true;
    };
    (0..s_w.len()).all(|c| {
        let (s_b, z_b) = match q {
            Quant::PerTensor { scale, zero_point } => (*scale, *zero_point),
            Quant::PerAxis {
                axis: 0,
                scales,
                zero_points,
            } if scales.len() == s_w.len() => (scales[c], zero_points[c]),
            Quant::PerAxis { .. } => return false,
        };
        let want = s_x * s_w[c];
        z_b == 0 && (s_b - want).abs() <= 1e-6 * want.abs()
    })
}

/// Only clamps have an exact integer form on a requantized output.
fn clamp_activation(act: &Option<Activation>) -> bool {
    matches!(
        act,
        None | Some(Activation::Relu) | Some(Activation::Clip { .. })
    )
}

// ---- conditions

fn qconv_operands(eg: &KGraph, args: &[Arg]) -> bool {
    let (x, w, b) = (class(&args[0]), class(&args[1]), class(&args[2]));
    let Some((s_x, _)) = eg.tensor_type(x).and_then(per_tensor_8bit) else {
        return false;
    };
    let Some(channels) = eg.tensor_type(w).and_then(|t| t.shape.first().copied()) else {
        return false;
    };
    let Some(s_w) = weight_scales(eg, w, 0, channels) else {
        return false;
    };
    bias_fits(eg, b, s_x, &s_w)
}

fn qgemm_operands(eg: &KGraph, args: &[Arg]) -> bool {
    let (a, w, b) = (class(&args[0]), class(&args[1]), class(&args[2]));
    let Some(Op::Gemm(g)) = attrs_arg(eg, &args[3]).map(|a| &a.op) else {
        return false;
    };
    if g.alpha != 1.0 || g.trans_a || (g.beta != 1.0 && !eg.is_absent(b)) {
        return false;
    }
    let Some(a_ty) = eg.tensor_type(a) else {
        return false;
    };
    let Some((s_a, _)) = per_tensor_8bit(a_ty) else {
        return false;
    };
    let Some(w_ty) = eg.tensor_type(w) else {
        return false;
    };
    if a_ty.rank() != 2 || w_ty.rank() != 2 {
        return false;
    }
    let out_axis = if g.trans_b { 0 } else { 1 };
    let Some(s_w) = weight_scales(eg, w, out_axis, w_ty.shape[out_axis]) else {
        return false;
    };
    bias_fits(eg, b, s_a, &s_w)
}

fn qmatmul_operands(eg: &KGraph, args: &[Arg]) -> bool {
    let (a, b) = (class(&args[0]), class(&args[1]));
    if eg.tensor_type(a).and_then(per_tensor_8bit).is_none() {
        return false;
    }
    let Some(b_ty) = eg.tensor_type(b) else {
        return false;
    };
    b_ty.rank() == 2 && weight_scales(eg, b, 1, b_ty.shape[1]).is_some()
}

fn eight_bit(eg: &KGraph, args: &[Arg]) -> bool {
    eg.tensor_type(class(&args[0]))
        .is_some_and(|t| is_8bit(t.dtype) && t.quant.is_some())
}

fn nearest_resize(eg: &KGraph, args: &[Arg]) -> bool {
    matches!(attrs_arg(eg, &args[0]).map(|a| &a.op), Some(Op::Resize(r)) if r.mode == ResizeMode::Nearest)
}

// ---- attributes

/// Attrs for a free-output-type op with one declared output.
fn free_output_attrs(eg: &mut KGraph, op: Op, out: TensorType) -> Id {
    eg.add_attrs(OpAttrs {
        op,
        outputs: 1,
        out_types: Some(vec![out]),
    })
}

/// The quantize's output type if it is a per-tensor 8-bit type (what qconv/qmatmul produce).
fn requantized_output(eg: &KGraph, arg: &Arg) -> Option<TensorType> {
    let out = quantize_output(eg, arg)?;
    per_tensor_8bit(&out)?;
    Some(out)
}

fn qconv_attrs(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let Op::Conv(conv) = attrs_arg(eg, &args[0])?.op.clone() else {
        return None;
    };
    if !clamp_activation(&conv.act) {
        return None;
    }
    let out = requantized_output(eg, &args[1])?;
    Some(free_output_attrs(eg, Op::QConv(conv), out))
}

fn gemm_qconv_attrs(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let Op::Gemm(GemmAttrs { act, .. }) = attrs_arg(eg, &args[0])?.op.clone() else {
        return None;
    };
    if !clamp_activation(&act) {
        return None;
    }
    let mut out = requantized_output(eg, &args[1])?;
    if out.rank() != 2 {
        return None;
    }
    out.shape.extend([1, 1]);
    let conv = ConvAttrs {
        kernel: vec![1, 1],
        strides: vec![1, 1],
        pads: vec![0; 4],
        dilations: vec![1, 1],
        groups: 1,
        act,
    };
    Some(free_output_attrs(eg, Op::QConv(conv), out))
}

fn qmatmul_attrs(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let out = requantized_output(eg, &args[0])?;
    Some(free_output_attrs(eg, Op::QMatMul, out))
}

/// The real interval a per-tensor 8-bit type can represent, `[s·(q_min − zp), s·(q_max −
/// zp)]`, in f32 like the interpreter's clamp bounds.
fn representable(ty: &TensorType) -> Option<(f64, f64)> {
    let (scale, zp) = per_tensor_8bit(ty)?;
    let (lo, hi) = ty.dtype.int_range()?;
    Some((
        (scale * (lo - zp as i64) as f32) as f64,
        (scale * (hi - zp as i64) as f32) as f64,
    ))
}

fn with_output_quant(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let attrs = attrs_arg(eg, &args[0])?.clone();
    let old = attrs.out_types.as_ref()?.first()?.clone();
    let out = requantized_output(eg, &args[1])?;
    if out.shape != old.shape {
        return None;
    }
    // The requantization being folded saturated at the old type's interval: where the new
    // one is wider, the fused clamp keeps that saturation (a clip), so the result is the
    // two-step one up to rounding. Bounds the new type saturates at anyway are dropped.
    let (old_lo, old_hi) = representable(&old)?;
    let (new_lo, new_hi) = representable(&out)?;
    let op = match attrs.op {
        Op::QConv(mut conv) => {
            let (lo, hi) = match conv.act {
                None => (old_lo, old_hi),
                Some(Activation::Relu) => (old_lo.max(0.0), old_hi),
                Some(Activation::Clip { min, max }) => (old_lo.max(min), old_hi.min(max)),
                Some(_) => return None,
            };
            let lo = if lo < new_lo { f64::NEG_INFINITY } else { lo };
            let hi = if hi > new_hi { f64::INFINITY } else { hi };
            conv.act = match (lo, hi) {
                (f64::NEG_INFINITY, f64::INFINITY) => None,
                (0.0, f64::INFINITY) => Some(Activation::Relu),
                (min, max) => Some(Activation::Clip { min, max }),
            };
            Op::QConv(conv)
        }
        // qmatmul has no clamp to keep a narrower saturation with.
        Op::QMatMul if old_lo <= new_lo && old_hi >= new_hi => Op::QMatMul,
        _ => return None,
    };
    Some(free_output_attrs(eg, op, out))
}

fn quantize_attrs_like(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let out = quantize_output(eg, &args[0])?;
    if !matches!(out.quant, Some(Quant::PerTensor { .. })) {
        return None;
    }
    let shape = eg.tensor_type(class(&args[1]))?.shape.clone();
    Some(free_output_attrs(
        eg,
        Op::Quantize,
        TensorType { shape, ..out },
    ))
}

fn as_image_attrs(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let mut shape = eg.tensor_type(class(&args[0]))?.shape.clone();
    shape.extend([1, 1]);
    Some(eg.add_attrs(OpAttrs::new(Op::Reshape { shape })))
}

fn reshape_to_output_attrs(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let shape = quantize_output(eg, &args[0])?.shape;
    Some(eg.add_attrs(OpAttrs::new(Op::Reshape { shape })))
}

fn quantized_pad_attrs(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let Op::Pad { mode, pads, value } = attrs_arg(eg, &args[0])?.op.clone() else {
        return None;
    };
    let out = quantize_output(eg, &args[1])?;
    let Some(Quant::PerTensor { scale, zero_point }) = out.quant else {
        return None;
    };
    let value = if mode == PadMode::Constant {
        if value.is_nan() {
            return None;
        }
        // QuantizeLinear's formula, as for every element: sat(round(v / s) + zp), v / s in
        // f32.
        let (lo, hi) = out.dtype.int_range()?;
        ((value as f32 / scale).round_ties_even() as f64 + zero_point as f64)
            .clamp(lo as f64, hi as f64)
    } else {
        value
    };
    Some(eg.add_attrs(OpAttrs::new(Op::Pad { mode, pads, value })))
}

// ---- constants

fn gemm_weight_as_conv(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let w = class(&args[0]);
    let Op::Gemm(g) = attrs_arg(eg, &args[1])?.op.clone() else {
        return None;
    };
    let ty = eg.tensor_type(w)?.clone();
    let tensor = eg.const_tensor(w)?.clone();
    if ty.rank() != 2 || !is_8bit(ty.dtype) {
        return None;
    }
    let (rows, cols) = (ty.shape[0], ty.shape[1]);
    // [N, K] with transB; [K, N] otherwise, transposed so the output channel leads.
    let (n, k) = if g.trans_b {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let index = |o: usize, i: usize| {
        if g.trans_b {
            o * cols + i
        } else {
            i * cols + o
        }
    };
    let data = match tensor.data() {
        TensorData::I8(v) => TensorData::I8(
            (0..n)
                .flat_map(|o| (0..k).map(move |i| (o, i)))
                .map(|(o, i)| v[index(o, i)])
                .collect(),
        ),
        TensorData::U8(v) => TensorData::U8(
            (0..n)
                .flat_map(|o| (0..k).map(move |i| (o, i)))
                .map(|(o, i)| v[index(o, i)])
                .collect(),
        ),
        _ => return None,
    };
    let out_axis = if g.trans_b { 0 } else { 1 };
    let quant = match ty.quant? {
        q @ Quant::PerTensor { .. } => q,
        Quant::PerAxis {
            axis,
            scales,
            zero_points,
        } if axis == out_axis => Quant::PerAxis {
            axis: 0,
            scales,
            zero_points,
        },
        Quant::PerAxis { .. } => return None,
    };
    let t = Tensor::new(vec![n, k, 1, 1], data).ok()?;
    Some(eg.add_const(t, Some(quant)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::FUNCTIONS;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_disjoint_from_the_general_functions_and_ops() {
        let mut seen: HashSet<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
        for f in QUANT_FUNCTIONS {
            assert!(seen.insert(f.name), "duplicate function {}", f.name);
            assert!(!kiln_ir::OP_MNEMONICS.contains(&f.name));
            assert!(!f.doc.is_empty());
        }
    }

    #[test]
    fn the_rule_file_parses_and_only_names_known_functions() {
        let set = quantize_rule_set();
        assert_eq!(set.name, "quantize");
        assert!(!set.constant_folding, "quantized values are never folded");
        assert!(set.rules.len() >= 10);
    }
}
