//! The named Rust functions rule files refer to: side conditions (`single-use`, `rank`, …)
//! and functions that build new classes — folded constants (`bn-scale`,
//! `scale-out-channels`, …) and attribute sets (`set-activation`, `merge-pad`, …). A function
//! that cannot compute its result (wrong dtype, non-constant input, shapes that do not fit)
//! returns `None`, and the rule does not apply to that match.

use crate::analysis::{KGraph, KGraphExt};
use crate::fold::{self, ChannelLayout};
use crate::lang::OpAttrs;
use egg::Id;
use kiln_ir::{Activation, ConvAttrs, GemmAttrs, Op, PadMode, Tensor};
use std::collections::HashSet;

/// A resolved argument.
#[derive(Clone, Debug)]
pub enum Arg {
    Class(Id),
    Number(f64),
    Symbol(String),
}

/// What a parameter accepts (checked when a rule file is loaded).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A tensor (or `absent`) class: a variable bound in a tensor slot, a pattern, a call.
    Value,
    /// An attribute class: a variable bound in an attrs slot, or a call returning one.
    Attrs,
    /// A number literal (`3`, `0.5`, `1/6`, `inf`).
    Number,
    /// An activation: a bare name (`relu`, `sigmoid`, `tanh`, `hard_swish`) or the attrs of
    /// an activation op (`clip`, `leaky_relu`, `hard_sigmoid`).
    Activation,
}

pub type ConditionFn = fn(&KGraph, &[Arg]) -> bool;
pub type ComputeFn = fn(&mut KGraph, &[Arg]) -> Option<Id>;

pub enum Body {
    Condition(ConditionFn),
    Compute { returns: Kind, f: ComputeFn },
}

pub struct Function {
    pub name: &'static str,
    pub params: &'static [Kind],
    pub doc: &'static str,
    pub body: Body,
}

impl Function {
    pub fn is_condition(&self) -> bool {
        matches!(self.body, Body::Condition(_))
    }
}

/// A function by name: the general ones, then those of the `quantize` rule set
/// ([`crate::quant_functions::QUANT_FUNCTIONS`]).
pub fn lookup(name: &str) -> Option<&'static Function> {
    FUNCTIONS
        .iter()
        .chain(crate::quant_functions::QUANT_FUNCTIONS)
        .find(|f| f.name == name)
}

use Kind::{Activation as Act, Attrs, Number, Value};

/// Every function a rule file may call.
pub static FUNCTIONS: &[Function] = &[
    // ---- conditions
    Function {
        name: "single-use",
        params: &[Value],
        doc: "the value has exactly one user and is not a graph output (counted in the original graph for its values)",
        body: Body::Condition(single_use),
    },
    Function {
        name: "no-activation",
        params: &[Attrs],
        doc: "the conv/conv_transpose/gemm has no fused activation",
        body: Body::Condition(no_activation),
    },
    Function {
        name: "rank",
        params: &[Value, Number],
        doc: "the value's rank equals the number",
        body: Body::Condition(rank_is),
    },
    Function {
        name: "is-const",
        params: &[Value],
        doc: "the value is a constant with known data",
        body: Body::Condition(is_const),
    },
    Function {
        name: "const-all-equal",
        params: &[Value, Number],
        doc: "the value is an f32 constant whose every element equals the number (relative 1e-6)",
        body: Body::Condition(const_all_equal),
    },
    Function {
        name: "clip-range",
        params: &[Attrs, Number, Number],
        doc: "the clip's bounds are exactly (min, max)",
        body: Body::Condition(clip_range),
    },
    Function {
        name: "hard-sigmoid-params",
        params: &[Attrs, Number, Number],
        doc: "the hard_sigmoid's alpha and beta equal the numbers (relative 1e-6: exporters round 1/6 to f32)",
        body: Body::Condition(hard_sigmoid_params),
    },
    Function {
        name: "identity-perm",
        params: &[Attrs],
        doc: "the transpose permutation is the identity",
        body: Body::Condition(identity_perm),
    },
    Function {
        name: "same-type",
        params: &[Value, Value],
        doc: "the two values have the same type (dtype, shape, quantization)",
        body: Body::Condition(same_type),
    },
    Function {
        name: "no-padding",
        params: &[Attrs],
        doc: "the conv has all pads zero",
        body: Body::Condition(no_padding),
    },
    // ---- constants
    Function {
        name: "bn-scale",
        params: &[Value, Value, Attrs],
        doc: "s = γ / sqrt(σ² + ε) from (γ, σ², batch_norm attrs), per channel",
        body: Body::Compute {
            returns: Value,
            f: bn_scale,
        },
    },
    Function {
        name: "bn-fold-bias",
        params: &[Value, Value, Value, Value],
        doc: "b' = (b − μ)·s + β from (b or absent, β, μ, s), per channel",
        body: Body::Compute {
            returns: Value,
            f: bn_fold_bias,
        },
    },
    Function {
        name: "scale-out-channels",
        params: &[Value, Value, Attrs],
        doc: "W·s along the output channels of the op whose attrs are given: conv axis 0, \
              conv_transpose axis 1 per group, gemm axis 1 (axis 0 with transB)",
        body: Body::Compute {
            returns: Value,
            f: scale_out_channels,
        },
    },
    Function {
        name: "scale-last-axis",
        params: &[Value, Value],
        doc: "W·s along W's last axis (matmul weights [K, N])",
        body: Body::Compute {
            returns: Value,
            f: scale_last_axis,
        },
    },
    Function {
        name: "gemm-fold-bn-bias",
        params: &[Value, Attrs, Value, Value, Value],
        doc: "C' = s·(beta·C − μ) + β from (C or absent, gemm attrs, β, μ, s); use with gemm-with-beta-one",
        body: Body::Compute {
            returns: Value,
            f: gemm_fold_bn_bias,
        },
    },
    Function {
        name: "channel-vector",
        params: &[Value, Value],
        doc: "the constant as a [C] vector, if it broadcasts against the second value along axis 1 only",
        body: Body::Compute {
            returns: Value,
            f: channel_vector,
        },
    },
    Function {
        name: "channel-broadcast",
        params: &[Value, Value],
        doc: "a [C] vector reshaped to [C, 1, ..] so that it broadcasts along axis 1 of the second value",
        body: Body::Compute {
            returns: Value,
            f: channel_broadcast,
        },
    },
    Function {
        name: "scale-bias",
        params: &[Value, Value],
        doc: "b·s per channel (absent stays absent)",
        body: Body::Compute {
            returns: Value,
            f: scale_bias,
        },
    },
    Function {
        name: "add-bias",
        params: &[Value, Value],
        doc: "b + t per channel (absent b counts as zeros)",
        body: Body::Compute {
            returns: Value,
            f: add_bias,
        },
    },
    Function {
        name: "reciprocal",
        params: &[Value],
        doc: "1/c elementwise, for an f32 constant without zeros",
        body: Body::Compute {
            returns: Value,
            f: reciprocal,
        },
    },
    Function {
        name: "negate",
        params: &[Value],
        doc: "−c elementwise, for an f32 constant",
        body: Body::Compute {
            returns: Value,
            f: negate,
        },
    },
    Function {
        name: "scale-in-channels",
        params: &[Value, Value, Attrs],
        doc: "conv weight scaled along its input channels (per group) by a [C_in] vector",
        body: Body::Compute {
            returns: Value,
            f: scale_in_channels,
        },
    },
    Function {
        name: "bias-plus-shift",
        params: &[Value, Value, Value, Attrs],
        doc: "b'[o] = b[o] + Σ W[o,i,k]·t[i] from (b or absent, W, t [C_in], conv attrs): a per-input-channel shift through an unpadded conv",
        body: Body::Compute {
            returns: Value,
            f: bias_plus_shift,
        },
    },
    // ---- attributes
    Function {
        name: "set-activation",
        params: &[Attrs, Act],
        doc: "conv/conv_transpose/gemm attrs with the fused activation set (fails if one is set)",
        body: Body::Compute {
            returns: Attrs,
            f: set_activation,
        },
    },
    Function {
        name: "gemm-attrs",
        params: &[],
        doc: "plain gemm attrs: alpha = beta = 1, no transposes, no activation",
        body: Body::Compute {
            returns: Attrs,
            f: gemm_attrs,
        },
    },
    Function {
        name: "gemm-with-beta-one",
        params: &[Attrs],
        doc: "the gemm attrs with beta = 1",
        body: Body::Compute {
            returns: Attrs,
            f: gemm_with_beta_one,
        },
    },
    Function {
        name: "compose-perm",
        params: &[Attrs, Attrs],
        doc: "transpose attrs for transpose(transpose(x, p1), p2)",
        body: Body::Compute {
            returns: Attrs,
            f: compose_perm,
        },
    },
    Function {
        name: "reshape-attrs-of",
        params: &[Value],
        doc: "reshape attrs whose target is the given value's shape",
        body: Body::Compute {
            returns: Attrs,
            f: reshape_attrs_of,
        },
    },
    Function {
        name: "merge-pad",
        params: &[Attrs, Attrs],
        doc: "conv attrs with a zero-valued constant pad of the spatial axes added to its pads",
        body: Body::Compute {
            returns: Attrs,
            f: merge_pad,
        },
    },
    Function {
        name: "hard-sigmoid-attrs",
        params: &[Number, Number],
        doc: "hard_sigmoid attrs with (alpha, beta)",
        body: Body::Compute {
            returns: Attrs,
            f: hard_sigmoid_attrs,
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

fn number(arg: &Arg) -> f64 {
    match arg {
        Arg::Number(x) => *x,
        other => unreachable!("argument kinds are checked when the rule file loads: {other:?}"),
    }
}

fn op_of(eg: &KGraph, arg: &Arg) -> Option<Op> {
    eg.attrs_of(class(arg)).map(|a| a.op.clone())
}

/// An f32 constant's values as f64.
fn const_vector(eg: &KGraph, arg: &Arg) -> Option<Vec<f64>> {
    fold::vector(eg.const_tensor(class(arg))?)
}

/// A constant without quantization (folds never touch quantized data).
fn plain_const(eg: &KGraph, arg: &Arg) -> Option<Tensor> {
    let c = class(arg);
    if eg.tensor_type(c)?.quant.is_some() {
        return None;
    }
    Some(eg.const_tensor(c)?.clone())
}

fn new_vector(eg: &mut KGraph, values: &[f64]) -> Option<Id> {
    let t = fold::to_tensor(vec![values.len()], values)?;
    Some(eg.add_const(t, None))
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-6 * a.abs().max(b.abs())
}

fn activation_of(op: &Op) -> Option<&Option<Activation>> {
    match op {
        Op::Conv(a) => Some(&a.act),
        Op::ConvTranspose(a) => Some(&a.act),
        Op::Gemm(a) => Some(&a.act),
        _ => None,
    }
}

// ---- conditions

fn single_use(eg: &KGraph, args: &[Arg]) -> bool {
    let c = eg.find(class(&args[0]));
    if let Some(n) = eg[c].data.original_uses {
        return n == 1;
    }
    // A class the rules created: its distinct consumers so far.
    if eg.analysis.graph_outputs.iter().any(|&o| eg.find(o) == c) {
        return false;
    }
    let parents: HashSet<Id> = eg[c].parents().map(|p| eg.find(p)).collect();
    parents.len() == 1
}

fn no_activation(eg: &KGraph, args: &[Arg]) -> bool {
    op_of(eg, &args[0])
        .as_ref()
        .and_then(activation_of)
        .is_some_and(Option::is_none)
}

fn rank_is(eg: &KGraph, args: &[Arg]) -> bool {
    eg.tensor_type(class(&args[0]))
        .is_some_and(|t| t.rank() as f64 == number(&args[1]))
}

fn is_const(eg: &KGraph, args: &[Arg]) -> bool {
    eg.const_tensor(class(&args[0])).is_some()
}

fn const_all_equal(eg: &KGraph, args: &[Arg]) -> bool {
    let want = number(&args[1]);
    eg.const_tensor(class(&args[0]))
        .and_then(fold::f32_data)
        .is_some_and(|d| !d.is_empty() && d.iter().all(|&x| close(x as f64, want)))
}

fn clip_range(eg: &KGraph, args: &[Arg]) -> bool {
    matches!(op_of(eg, &args[0]), Some(Op::Activation(Activation::Clip { min, max }))
        if min == number(&args[1]) && max == number(&args[2]))
}

fn hard_sigmoid_params(eg: &KGraph, args: &[Arg]) -> bool {
    matches!(op_of(eg, &args[0]), Some(Op::Activation(Activation::HardSigmoid { alpha, beta }))
        if close(alpha as f64, number(&args[1])) && close(beta as f64, number(&args[2])))
}

fn identity_perm(eg: &KGraph, args: &[Arg]) -> bool {
    matches!(op_of(eg, &args[0]), Some(Op::Transpose { perm }) if perm.iter().enumerate().all(|(i, &p)| i == p))
}

fn same_type(eg: &KGraph, args: &[Arg]) -> bool {
    let (a, b) = (
        eg.tensor_type(class(&args[0])),
        eg.tensor_type(class(&args[1])),
    );
    a.is_some() && a == b
}

fn no_padding(eg: &KGraph, args: &[Arg]) -> bool {
    matches!(op_of(eg, &args[0]), Some(Op::Conv(ConvAttrs { pads, .. })) if pads.iter().all(|&p| p == 0))
}

// ---- constants

fn bn_scale(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let gamma = const_vector(eg, &args[0])?;
    let var = const_vector(eg, &args[1])?;
    let Some(Op::BatchNorm { epsilon }) = op_of(eg, &args[2]) else {
        return None;
    };
    let s = fold::bn_scale(&gamma, &var, epsilon)?;
    new_vector(eg, &s)
}

fn bn_fold_bias(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let bias = if eg.is_absent(class(&args[0])) {
        None
    } else {
        Some(const_vector(eg, &args[0])?)
    };
    let beta = const_vector(eg, &args[1])?;
    let mean = const_vector(eg, &args[2])?;
    let s = const_vector(eg, &args[3])?;
    let b = fold::bn_bias(bias.as_deref(), &beta, &mean, &s)?;
    new_vector(eg, &b)
}

fn scale_out_channels(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let w = plain_const(eg, &args[0])?;
    let s = const_vector(eg, &args[1])?;
    let layout = match op_of(eg, &args[2])? {
        Op::Conv(_) => ChannelLayout::Axis(0),
        Op::ConvTranspose(a) => ChannelLayout::Grouped1 { groups: a.groups },
        Op::Gemm(a) => ChannelLayout::Axis(if a.trans_b { 0 } else { 1 }),
        _ => return None,
    };
    let scaled = fold::scale_channels(&w, &s, layout)?;
    Some(eg.add_const(scaled, None))
}

fn scale_last_axis(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let w = plain_const(eg, &args[0])?;
    let s = const_vector(eg, &args[1])?;
    let axis = w.shape().len().checked_sub(1)?;
    let scaled = fold::scale_channels(&w, &s, ChannelLayout::Axis(axis))?;
    Some(eg.add_const(scaled, None))
}

fn gemm_fold_bn_bias(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let Some(Op::Gemm(g)) = op_of(eg, &args[1]) else {
        return None;
    };
    let beta = const_vector(eg, &args[2])?;
    let mean = const_vector(eg, &args[3])?;
    let s = const_vector(eg, &args[4])?;
    let n = s.len();
    if beta.len() != n || mean.len() != n {
        return None;
    }
    if eg.is_absent(class(&args[0])) {
        let values: Vec<f64> = (0..n).map(|j| beta[j] - mean[j] * s[j]).collect();
        return new_vector(eg, &values);
    }
    let c = plain_const(eg, &args[0])?;
    let data = fold::f32_data(&c)?;
    // C broadcasts to [M, N]: as a (rows × cols) matrix it is [1|M, 1|N] after padding
    // its shape to rank 2.
    let (rows, cols) = match c.shape() {
        [] => (1, 1),
        [n1] => (1, *n1),
        [m1, n1] => (*m1, *n1),
        _ => return None,
    };
    if cols != 1 && cols != n {
        return None;
    }
    let mut out = Vec::with_capacity(rows * n);
    for r in 0..rows {
        for j in 0..n {
            let cv = data[r * cols + if cols == 1 { 0 } else { j }] as f64;
            out.push(s[j] * (g.beta as f64 * cv - mean[j]) + beta[j]);
        }
    }
    let shape = if c.shape().len() == 2 {
        vec![rows, n]
    } else {
        vec![n]
    };
    let t = fold::to_tensor(shape, &out)?;
    Some(eg.add_const(t, None))
}

fn channel_vector(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let c = plain_const(eg, &args[0])?;
    let y = eg.tensor_type(class(&args[1]))?.shape.clone();
    let v = fold::channel_vector(&c, &y)?;
    new_vector(eg, &v)
}

fn channel_broadcast(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let v = plain_const(eg, &args[0])?;
    let rank = eg.tensor_type(class(&args[1]))?.rank();
    if v.shape().len() != 1 || rank < 2 {
        return None;
    }
    let mut shape = vec![v.shape()[0]];
    shape.resize(rank - 1, 1);
    let t = v.reshaped(shape).ok()?;
    Some(eg.add_const(t, None))
}

fn scale_bias(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let b = class(&args[0]);
    if eg.is_absent(b) {
        return Some(b);
    }
    let bias = const_vector(eg, &args[0])?;
    let s = const_vector(eg, &args[1])?;
    if bias.len() != s.len() {
        return None;
    }
    let v: Vec<f64> = bias.iter().zip(&s).map(|(b, s)| b * s).collect();
    new_vector(eg, &v)
}

fn add_bias(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let t = const_vector(eg, &args[1])?;
    let bias = if eg.is_absent(class(&args[0])) {
        vec![0.0; t.len()]
    } else {
        const_vector(eg, &args[0])?
    };
    if bias.len() != t.len() {
        return None;
    }
    let v: Vec<f64> = bias.iter().zip(&t).map(|(b, t)| b + t).collect();
    new_vector(eg, &v)
}

fn map_const(eg: &mut KGraph, arg: &Arg, f: impl Fn(f64) -> Option<f64>) -> Option<Id> {
    let c = plain_const(eg, arg)?;
    let v: Option<Vec<f64>> = fold::f32_data(&c)?.iter().map(|&x| f(x as f64)).collect();
    let t = fold::to_tensor(c.shape().to_vec(), &v?)?;
    Some(eg.add_const(t, None))
}

fn reciprocal(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    map_const(eg, &args[0], |x| (x != 0.0).then(|| 1.0 / x))
}

fn negate(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    map_const(eg, &args[0], |x| Some(-x))
}

fn scale_in_channels(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let w = plain_const(eg, &args[0])?;
    let s = const_vector(eg, &args[1])?;
    let Some(Op::Conv(a)) = op_of(eg, &args[2]) else {
        return None;
    };
    let scaled = fold::scale_conv_input_channels(&w, &s, a.groups)?;
    Some(eg.add_const(scaled, None))
}

fn bias_plus_shift(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let bias = if eg.is_absent(class(&args[0])) {
        None
    } else {
        Some(const_vector(eg, &args[0])?)
    };
    let w = plain_const(eg, &args[1])?;
    let t = const_vector(eg, &args[2])?;
    let Some(Op::Conv(a)) = op_of(eg, &args[3]) else {
        return None;
    };
    let b = fold::conv_bias_of_input_shift(&w, bias.as_deref(), &t, a.groups)?;
    new_vector(eg, &b)
}

// ---- attributes

fn activation_arg(eg: &KGraph, arg: &Arg) -> Option<Activation> {
    match arg {
        Arg::Symbol(s) => match s.as_str() {
            "relu" => Some(Activation::Relu),
            "sigmoid" => Some(Activation::Sigmoid),
            "tanh" => Some(Activation::Tanh),
            "hard_swish" => Some(Activation::HardSwish),
            _ => None,
        },
        Arg::Class(c) => match &eg.attrs_of(*c)?.op {
            Op::Activation(a) => Some(a.clone()),
            _ => None,
        },
        Arg::Number(_) => None,
    }
}

fn set_activation(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let act = match activation_arg(eg, &args[1])? {
        // clip(0, +inf) is relu; one spelling makes the two fusions the same e-node.
        Activation::Clip { min, max } if min == 0.0 && max == f64::INFINITY => Activation::Relu,
        act => act,
    };
    let attrs = eg.attrs_of(class(&args[0]))?.clone();
    let op = match attrs.op {
        Op::Conv(mut a) if a.act.is_none() => {
            a.act = Some(act);
            Op::Conv(a)
        }
        Op::ConvTranspose(mut a) if a.act.is_none() => {
            a.act = Some(act);
            Op::ConvTranspose(a)
        }
        Op::Gemm(mut a) if a.act.is_none() => {
            a.act = Some(act);
            Op::Gemm(a)
        }
        _ => return None,
    };
    Some(eg.add_attrs(OpAttrs { op, ..attrs }))
}

fn plain_gemm() -> GemmAttrs {
    GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: false,
        act: None,
    }
}

fn gemm_attrs(eg: &mut KGraph, _args: &[Arg]) -> Option<Id> {
    Some(eg.add_attrs(OpAttrs::new(Op::Gemm(plain_gemm()))))
}

fn gemm_with_beta_one(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let Some(Op::Gemm(mut g)) = op_of(eg, &args[0]) else {
        return None;
    };
    g.beta = 1.0;
    Some(eg.add_attrs(OpAttrs::new(Op::Gemm(g))))
}

fn compose_perm(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let (Some(Op::Transpose { perm: p1 }), Some(Op::Transpose { perm: p2 })) =
        (op_of(eg, &args[0]), op_of(eg, &args[1]))
    else {
        return None;
    };
    if p1.len() != p2.len() {
        return None;
    }
    // y = transpose(x, p1): y.dim[i] = x.dim[p1[i]]; z = transpose(y, p2): z.dim[i] =
    // y.dim[p2[i]] = x.dim[p1[p2[i]]].
    let perm = p2
        .iter()
        .map(|&i| p1.get(i).copied())
        .collect::<Option<Vec<_>>>()?;
    Some(eg.add_attrs(OpAttrs::new(Op::Transpose { perm })))
}

fn reshape_attrs_of(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let shape = eg.tensor_type(class(&args[0]))?.shape.clone();
    Some(eg.add_attrs(OpAttrs::new(Op::Reshape { shape })))
}

fn merge_pad(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let (Some(Op::Conv(mut conv)), Some(Op::Pad { mode, pads, value })) =
        (op_of(eg, &args[0]), op_of(eg, &args[1]))
    else {
        return None;
    };
    // Only a zero-valued constant pad equals the conv's own zero padding, and the conv pads
    // spatial axes only: batch and channel pads must be zero.
    let rank = pads.len() / 2;
    let k = conv.kernel.len();
    if mode != PadMode::Constant || value != 0.0 || rank != k + 2 || pads.iter().any(|&p| p < 0) {
        return None;
    }
    if pads[0] != 0 || pads[1] != 0 || pads[rank] != 0 || pads[rank + 1] != 0 {
        return None;
    }
    for i in 0..k {
        conv.pads[i] += pads[2 + i] as usize;
        conv.pads[k + i] += pads[rank + 2 + i] as usize;
    }
    Some(eg.add_attrs(OpAttrs::new(Op::Conv(conv))))
}

fn hard_sigmoid_attrs(eg: &mut KGraph, args: &[Arg]) -> Option<Id> {
    let op = Op::Activation(Activation::HardSigmoid {
        alpha: number(&args[0]) as f32,
        beta: number(&args[1]) as f32,
    });
    Some(eg.add_attrs(OpAttrs::new(op)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn function_names_are_unique_and_disjoint_from_op_mnemonics() {
        let mut seen = HashSet::new();
        for f in FUNCTIONS {
            assert!(seen.insert(f.name), "duplicate function {}", f.name);
            assert!(
                !kiln_ir::OP_MNEMONICS.contains(&f.name),
                "{} is also an op",
                f.name
            );
            assert!(!f.doc.is_empty());
        }
    }
}
