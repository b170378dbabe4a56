//! The one conversion between an [`Op`] and its (mnemonic, attributes) form. The printer,
//! the DOT labels and the JSON output read [`op_attrs`]; the parser goes back with
//! [`op_from_attrs`], which also fills in ONNX defaults for attributes a hand-written file
//! leaves out (the printer always writes them).

use super::lex::parse_error;
use super::{fmt_f32, fmt_f64};
use crate::dtype::DType;
use crate::error::IrError;
use crate::op::*;

/// A typed attribute value, as printed.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// `usize`, `u8` and `i64` attributes alike.
    Int(i128),
    F32(f32),
    F64(f64),
    Bool(bool),
    /// An enum value (`half_pixel`, `reflect`), a dtype (`f16`) or a parameterless
    /// activation (`relu`).
    Word(&'static str),
    List(Vec<AttrValue>),
    /// An activation with parameters: `clip(min=0.0, max=6.0)`.
    Call(&'static str, Vec<(&'static str, AttrValue)>),
}

impl AttrValue {
    fn ints<T: Copy + Into<i128>>(v: &[T]) -> AttrValue {
        AttrValue::List(v.iter().map(|&x| AttrValue::Int(x.into())).collect())
    }

    fn usizes(v: &[usize]) -> AttrValue {
        AttrValue::List(v.iter().map(|&x| AttrValue::Int(x as i128)).collect())
    }

    fn usize(x: usize) -> AttrValue {
        AttrValue::Int(x as i128)
    }

    /// The value as the text format writes it. Integer lists are compact (`[3,3]`), like
    /// shapes.
    pub fn to_text(&self) -> String {
        match self {
            AttrValue::Int(i) => i.to_string(),
            AttrValue::F32(x) => fmt_f32(*x),
            AttrValue::F64(x) => fmt_f64(*x),
            AttrValue::Bool(b) => b.to_string(),
            AttrValue::Word(w) => (*w).to_string(),
            AttrValue::List(items) => {
                let items: Vec<String> = items.iter().map(AttrValue::to_text).collect();
                format!("[{}]", items.join(","))
            }
            AttrValue::Call(name, args) => format!("{name}({})", attrs_to_text(args)),
        }
    }

    /// The value as JSON: numbers stay numbers (an `f32` as the shortest decimal that reads
    /// back as it, not its widened `f64` digits), non-finite floats become the strings
    /// `"inf"`, `"-inf"`, `"nan"` (JSON has no such numbers), an activation with
    /// parameters becomes `{"name": .., params..}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            AttrValue::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    Value::from(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    Value::from(v)
                } else {
                    Value::from(i.to_string())
                }
            }
            AttrValue::F32(x) => f32_to_json(*x),
            AttrValue::F64(x) => f64_to_json(*x),
            AttrValue::Bool(b) => Value::from(*b),
            AttrValue::Word(w) => Value::from(*w),
            AttrValue::List(items) => Value::Array(items.iter().map(AttrValue::to_json).collect()),
            AttrValue::Call(name, args) => {
                let mut obj = serde_json::Map::new();
                obj.insert("name".to_string(), Value::from(*name));
                for (k, v) in args {
                    obj.insert((*k).to_string(), v.to_json());
                }
                Value::Object(obj)
            }
        }
    }
}

/// `f32` as a JSON number with its shortest round-trip digits (`0.1`, not
/// `0.10000000149011612`); non-finite values as strings.
pub fn f32_to_json(x: f32) -> serde_json::Value {
    if !x.is_finite() {
        return serde_json::Value::from(fmt_f32(x));
    }
    let shortest: f64 = fmt_f32(x).parse().unwrap_or(x as f64);
    serde_json::Value::from(shortest)
}

/// `f64` as a JSON number; non-finite values as strings.
pub fn f64_to_json(x: f64) -> serde_json::Value {
    if !x.is_finite() {
        return serde_json::Value::from(fmt_f64(x));
    }
    serde_json::Value::from(x)
}

/// `k=v, k=v`: the inside of an attribute block or of an activation's parentheses.
pub fn attrs_to_text(attrs: &[(&'static str, AttrValue)]) -> String {
    let parts: Vec<String> = attrs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.to_text()))
        .collect();
    parts.join(", ")
}

fn activation_value(act: &Activation) -> AttrValue {
    let params = activation_params(act);
    if params.is_empty() {
        AttrValue::Word(act.name())
    } else {
        AttrValue::Call(act.name(), params)
    }
}

fn activation_params(act: &Activation) -> Vec<(&'static str, AttrValue)> {
    match act {
        Activation::Relu | Activation::Sigmoid | Activation::Tanh | Activation::HardSwish => {
            vec![]
        }
        Activation::Clip { min, max } => {
            vec![("min", AttrValue::F64(*min)), ("max", AttrValue::F64(*max))]
        }
        Activation::LeakyRelu { alpha } => vec![("alpha", AttrValue::F32(*alpha))],
        Activation::HardSigmoid { alpha, beta } => {
            vec![
                ("alpha", AttrValue::F32(*alpha)),
                ("beta", AttrValue::F32(*beta)),
            ]
        }
    }
}

fn push_act(attrs: &mut Vec<(&'static str, AttrValue)>, act: &Option<Activation>) {
    if let Some(a) = act {
        attrs.push(("act", activation_value(a)));
    }
}

fn conv_attrs(c: &ConvAttrs) -> Vec<(&'static str, AttrValue)> {
    let mut a = vec![
        ("kernel", AttrValue::usizes(&c.kernel)),
        ("strides", AttrValue::usizes(&c.strides)),
        ("pads", AttrValue::usizes(&c.pads)),
        ("dilations", AttrValue::usizes(&c.dilations)),
        ("groups", AttrValue::usize(c.groups)),
    ];
    push_act(&mut a, &c.act);
    a
}

/// `count_include_pad` means something to average_pool only and `storage_order` to
/// max_pool only; each pool prints its own always and the other one only when it is not
/// the default, so that dumps stay short and every field still round-trips.
fn pool_attrs(p: &PoolAttrs, is_max: bool) -> Vec<(&'static str, AttrValue)> {
    let mut a = vec![
        ("kernel", AttrValue::usizes(&p.kernel)),
        ("strides", AttrValue::usizes(&p.strides)),
        ("pads", AttrValue::usizes(&p.pads)),
        ("dilations", AttrValue::usizes(&p.dilations)),
        ("ceil_mode", AttrValue::Bool(p.ceil_mode)),
    ];
    if !is_max || p.count_include_pad {
        a.push(("count_include_pad", AttrValue::Bool(p.count_include_pad)));
    }
    if is_max || p.storage_order != 0 {
        a.push(("storage_order", AttrValue::Int(p.storage_order.into())));
    }
    a
}

pub fn pad_mode_name(m: PadMode) -> &'static str {
    match m {
        PadMode::Constant => "constant",
        PadMode::Reflect => "reflect",
        PadMode::Edge => "edge",
        PadMode::Wrap => "wrap",
    }
}

pub fn resize_mode_name(m: ResizeMode) -> &'static str {
    match m {
        ResizeMode::Nearest => "nearest",
        ResizeMode::Linear => "linear",
        ResizeMode::Cubic => "cubic",
    }
}

pub fn coord_transform_name(c: CoordTransform) -> &'static str {
    match c {
        CoordTransform::HalfPixel => "half_pixel",
        CoordTransform::HalfPixelSymmetric => "half_pixel_symmetric",
        CoordTransform::PytorchHalfPixel => "pytorch_half_pixel",
        CoordTransform::AlignCorners => "align_corners",
        CoordTransform::Asymmetric => "asymmetric",
        CoordTransform::TfCropAndResize => "tf_crop_and_resize",
    }
}

pub fn nearest_mode_name(n: NearestMode) -> &'static str {
    match n {
        NearestMode::RoundPreferFloor => "round_prefer_floor",
        NearestMode::RoundPreferCeil => "round_prefer_ceil",
        NearestMode::Floor => "floor",
        NearestMode::Ceil => "ceil",
    }
}

const PAD_MODES: [PadMode; 4] = [
    PadMode::Constant,
    PadMode::Reflect,
    PadMode::Edge,
    PadMode::Wrap,
];
const RESIZE_MODES: [ResizeMode; 3] = [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic];
const COORD_TRANSFORMS: [CoordTransform; 6] = [
    CoordTransform::HalfPixel,
    CoordTransform::HalfPixelSymmetric,
    CoordTransform::PytorchHalfPixel,
    CoordTransform::AlignCorners,
    CoordTransform::Asymmetric,
    CoordTransform::TfCropAndResize,
];
const NEAREST_MODES: [NearestMode; 4] = [
    NearestMode::RoundPreferFloor,
    NearestMode::RoundPreferCeil,
    NearestMode::Floor,
    NearestMode::Ceil,
];

/// The attributes of `op` in print order. Every field of every op appears (`act` only when
/// an activation is fused; see [`pool_attrs`] for the two pool-specific flags). `const`
/// and `input` nodes carry their pool id / input index outside the attribute block.
pub fn op_attrs(op: &Op) -> Vec<(&'static str, AttrValue)> {
    use AttrValue as V;
    match op {
        Op::Input { index } => vec![("index", V::usize(*index))],
        Op::Const(_) => vec![],
        Op::Conv(c) | Op::QConv(c) | Op::ConvInteger(c) => conv_attrs(c),
        Op::ConvTranspose(c) => {
            let mut a = vec![
                ("kernel", V::usizes(&c.kernel)),
                ("strides", V::usizes(&c.strides)),
                ("pads", V::usizes(&c.pads)),
                ("dilations", V::usizes(&c.dilations)),
                ("output_padding", V::usizes(&c.output_padding)),
                ("groups", V::usize(c.groups)),
            ];
            push_act(&mut a, &c.act);
            a
        }
        Op::BatchNorm { epsilon } => vec![("epsilon", V::F32(*epsilon))],
        Op::Activation(a) => activation_params(a),
        Op::Binary(_) | Op::Sum | Op::MatMul => vec![],
        Op::Gemm(g) => {
            let mut a = vec![
                ("alpha", V::F32(g.alpha)),
                ("beta", V::F32(g.beta)),
                ("trans_a", V::Bool(g.trans_a)),
                ("trans_b", V::Bool(g.trans_b)),
            ];
            push_act(&mut a, &g.act);
            a
        }
        Op::MaxPool(p) => pool_attrs(p, true),
        Op::AveragePool(p) => pool_attrs(p, false),
        Op::GlobalAveragePool | Op::GlobalMaxPool => vec![],
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => vec![
            ("size", V::usize(*size)),
            ("alpha", V::F32(*alpha)),
            ("beta", V::F32(*beta)),
            ("bias", V::F32(*bias)),
        ],
        Op::Concat { axis } => vec![("axis", V::usize(*axis))],
        Op::Split { axis, sizes } => vec![("axis", V::usize(*axis)), ("sizes", V::usizes(sizes))],
        Op::Slice { axes } => {
            let field =
                |f: fn(&SliceAxis) -> i128| V::List(axes.iter().map(|s| V::Int(f(s))).collect());
            vec![
                ("axes", field(|s| s.axis as i128)),
                ("starts", field(|s| s.start.into())),
                ("ends", field(|s| s.end.into())),
                ("steps", field(|s| s.step.into())),
            ]
        }
        Op::Reshape { shape } => vec![("shape", V::usizes(shape))],
        Op::Flatten { axis } => vec![("axis", V::usize(*axis))],
        Op::Transpose { perm } => vec![("perm", V::usizes(perm))],
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => vec![("axes", V::usizes(axes))],
        Op::Pad { mode, pads, value } => vec![
            ("mode", V::Word(pad_mode_name(*mode))),
            ("pads", V::ints(pads)),
            ("value", V::F64(*value)),
        ],
        Op::Resize(r) => vec![
            ("sizes", V::usizes(&r.sizes)),
            (
                "scales",
                V::List(r.scales.iter().map(|&s| V::F32(s)).collect()),
            ),
            ("mode", V::Word(resize_mode_name(r.mode))),
            ("coord", V::Word(coord_transform_name(r.coord))),
            ("nearest", V::Word(nearest_mode_name(r.nearest))),
            ("cubic_coeff_a", V::F32(r.cubic_coeff_a)),
            ("exclude_outside", V::Bool(r.exclude_outside)),
            ("extrapolation_value", V::F32(r.extrapolation_value)),
            ("antialias", V::Bool(r.antialias)),
            ("roi", V::List(r.roi.iter().map(|&s| V::F32(s)).collect())),
        ],
        Op::Softmax { axis, legacy } => {
            vec![("axis", V::usize(*axis)), ("legacy", V::Bool(*legacy))]
        }
        Op::ReduceMean { axes, keepdims } => {
            vec![("axes", V::usizes(axes)), ("keepdims", V::Bool(*keepdims))]
        }
        Op::Identity | Op::Dropout => vec![],
        Op::Cast { to } => vec![("to", V::Word(to.name()))],
        Op::Gather { axis } => vec![("axis", V::usize(*axis))],
        Op::Quantize | Op::Dequantize | Op::QMatMul | Op::MatMulInteger | Op::DynamicQuantize => {
            vec![]
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing direction.

/// An attribute value as written, before it is checked against what the op expects.
#[derive(Clone, Debug)]
pub(crate) enum RawValue {
    Number(String),
    Word(String),
    List(Vec<Raw>),
    /// `name(k=v, ..)` (an activation with parameters); `name()` is allowed too.
    Call(String, Vec<RawAttr>),
}

#[derive(Clone, Debug)]
pub(crate) struct Raw {
    pub value: RawValue,
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct RawAttr {
    pub name: String,
    pub line: usize,
    pub col: usize,
    pub value: Raw,
}

impl Raw {
    fn err(&self, msg: impl Into<String>) -> IrError {
        parse_error(self.line, self.col, msg)
    }

    fn found(&self) -> String {
        match &self.value {
            RawValue::Number(n) => format!("number {n}"),
            RawValue::Word(w) => format!("'{w}'"),
            RawValue::List(_) => "a list".to_string(),
            RawValue::Call(name, _) => format!("'{name}(..)'"),
        }
    }

    fn number(&self, what: &str) -> Result<&str, IrError> {
        match &self.value {
            RawValue::Number(n) => Ok(n),
            _ => Err(self.err(format!("expected {what}, found {}", self.found()))),
        }
    }

    pub(crate) fn as_int<T: std::str::FromStr>(&self, what: &str) -> Result<T, IrError> {
        let n = self.number(what)?;
        n.parse::<T>()
            .map_err(|_| self.err(format!("expected {what}, found {n}")))
    }

    pub(crate) fn as_usize(&self) -> Result<usize, IrError> {
        self.as_int("a non-negative integer")
    }

    pub(crate) fn as_f32(&self) -> Result<f32, IrError> {
        let n = self.number("a number")?;
        n.parse::<f32>()
            .map_err(|_| self.err(format!("expected a number, found {n}")))
    }

    pub(crate) fn as_f64(&self) -> Result<f64, IrError> {
        let n = self.number("a number")?;
        n.parse::<f64>()
            .map_err(|_| self.err(format!("expected a number, found {n}")))
    }

    fn as_bool(&self) -> Result<bool, IrError> {
        match &self.value {
            RawValue::Word(w) if w == "true" => Ok(true),
            RawValue::Word(w) if w == "false" => Ok(false),
            _ => Err(self.err(format!("expected true or false, found {}", self.found()))),
        }
    }

    pub(crate) fn as_list(&self) -> Result<&[Raw], IrError> {
        match &self.value {
            RawValue::List(items) => Ok(items),
            _ => Err(self.err(format!("expected a list '[..]', found {}", self.found()))),
        }
    }

    fn as_usize_list(&self) -> Result<Vec<usize>, IrError> {
        self.as_list()?.iter().map(Raw::as_usize).collect()
    }

    fn as_i64_list(&self) -> Result<Vec<i64>, IrError> {
        self.as_list()?
            .iter()
            .map(|r| r.as_int::<i64>("an integer"))
            .collect()
    }

    fn as_f32_list(&self) -> Result<Vec<f32>, IrError> {
        self.as_list()?.iter().map(Raw::as_f32).collect()
    }

    /// One of a fixed set of enum words.
    fn as_choice<T: Copy>(&self, choices: &[T], name: fn(T) -> &'static str) -> Result<T, IrError> {
        let names: Vec<&str> = choices.iter().map(|&c| name(c)).collect();
        if let RawValue::Word(w) = &self.value {
            if let Some(&c) = choices.iter().find(|&&c| name(c) == w) {
                return Ok(c);
            }
        }
        Err(self.err(format!(
            "expected one of {}, found {}",
            names.join(", "),
            self.found()
        )))
    }

    fn as_dtype(&self) -> Result<DType, IrError> {
        self.as_choice(&DType::ALL, DType::name)
    }

    fn as_activation(&self) -> Result<Activation, IrError> {
        let (name, args): (&str, &[RawAttr]) = match &self.value {
            RawValue::Word(w) => (w, &[]),
            RawValue::Call(name, args) => (name, args),
            _ => {
                return Err(self.err(format!(
                    "expected an activation ({}), found {}",
                    ACTIVATION_NAMES.join(", "),
                    self.found()
                )))
            }
        };
        let mut reader = AttrReader::new(name, self.line, self.col, args)?;
        let act = activation_from(name, &mut reader)?.ok_or_else(|| {
            self.err(format!(
                "unknown activation '{name}' (expected one of {})",
                ACTIVATION_NAMES.join(", ")
            ))
        })?;
        reader.finish()?;
        Ok(act)
    }
}

const ACTIVATION_NAMES: [&str; 7] = [
    "relu",
    "clip",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "hard_sigmoid",
    "hard_swish",
];

/// Hands out the attributes of one op by name, remembers which names the op knows, and
/// at the end rejects any attribute the op does not have.
struct AttrReader<'a> {
    op: &'a str,
    line: usize,
    col: usize,
    attrs: &'a [RawAttr],
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'a> AttrReader<'a> {
    fn new(op: &'a str, line: usize, col: usize, attrs: &'a [RawAttr]) -> Result<Self, IrError> {
        for (i, a) in attrs.iter().enumerate() {
            if a.name.is_empty() {
                return Err(parse_error(
                    a.line,
                    a.col,
                    format!("{op}: expected 'name=value'"),
                ));
            }
            if let Some(first) = attrs.iter().take(i).find(|b| b.name == a.name) {
                return Err(parse_error(
                    a.line,
                    a.col,
                    format!(
                        "attribute '{}' given twice (first at {}:{})",
                        a.name, first.line, first.col
                    ),
                ));
            }
        }
        Ok(AttrReader {
            op,
            line,
            col,
            attrs,
            used: vec![false; attrs.len()],
            known: Vec::new(),
        })
    }

    fn take(&mut self, name: &'static str) -> Option<&'a Raw> {
        self.known.push(name);
        let i = self.attrs.iter().position(|a| a.name == name)?;
        self.used[i] = true;
        Some(&self.attrs[i].value)
    }

    fn req<T>(
        &mut self,
        name: &'static str,
        conv: impl Fn(&Raw) -> Result<T, IrError>,
    ) -> Result<T, IrError> {
        match self.take(name) {
            Some(raw) => conv(raw),
            None => Err(parse_error(
                self.line,
                self.col,
                format!("{}: missing attribute '{name}'", self.op),
            )),
        }
    }

    fn opt<T>(
        &mut self,
        name: &'static str,
        conv: impl Fn(&Raw) -> Result<T, IrError>,
        default: impl FnOnce() -> T,
    ) -> Result<T, IrError> {
        match self.take(name) {
            Some(raw) => conv(raw),
            None => Ok(default()),
        }
    }

    fn finish(self) -> Result<(), IrError> {
        for (a, used) in self.attrs.iter().zip(&self.used) {
            if !used {
                let known = if self.known.is_empty() {
                    "it has no attributes".to_string()
                } else {
                    format!("expected one of {}", self.known.join(", "))
                };
                return Err(parse_error(
                    a.line,
                    a.col,
                    format!("{} has no attribute '{}' ({known})", self.op, a.name),
                ));
            }
        }
        Ok(())
    }
}

/// The activation called `name`, reading its parameters (with ONNX defaults) from `r`;
/// `None` if `name` is not an activation.
fn activation_from(name: &str, r: &mut AttrReader) -> Result<Option<Activation>, IrError> {
    Ok(Some(match name {
        "relu" => Activation::Relu,
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        "hard_swish" => Activation::HardSwish,
        "clip" => Activation::Clip {
            min: r.opt("min", Raw::as_f64, || f64::NEG_INFINITY)?,
            max: r.opt("max", Raw::as_f64, || f64::INFINITY)?,
        },
        "leaky_relu" => Activation::LeakyRelu {
            alpha: r.opt("alpha", Raw::as_f32, || 0.01)?,
        },
        "hard_sigmoid" => Activation::HardSigmoid {
            alpha: r.opt("alpha", Raw::as_f32, || 0.2)?,
            beta: r.opt("beta", Raw::as_f32, || 0.5)?,
        },
        _ => return Ok(None),
    }))
}

/// Conv geometry; `strides`, `dilations` default to ones and `pads` to zeros of the
/// kernel's rank, `groups` to 1, as in ONNX.
fn read_conv(r: &mut AttrReader) -> Result<ConvAttrs, IrError> {
    let kernel = r.req("kernel", Raw::as_usize_list)?;
    let k = kernel.len();
    Ok(ConvAttrs {
        strides: r.opt("strides", Raw::as_usize_list, || vec![1; k])?,
        pads: r.opt("pads", Raw::as_usize_list, || vec![0; 2 * k])?,
        dilations: r.opt("dilations", Raw::as_usize_list, || vec![1; k])?,
        groups: r.opt("groups", Raw::as_usize, || 1)?,
        act: r.opt("act", |v| v.as_activation().map(Some), || None)?,
        kernel,
    })
}

fn read_pool(r: &mut AttrReader) -> Result<PoolAttrs, IrError> {
    let kernel = r.req("kernel", Raw::as_usize_list)?;
    let k = kernel.len();
    Ok(PoolAttrs {
        strides: r.opt("strides", Raw::as_usize_list, || vec![1; k])?,
        pads: r.opt("pads", Raw::as_usize_list, || vec![0; 2 * k])?,
        dilations: r.opt("dilations", Raw::as_usize_list, || vec![1; k])?,
        ceil_mode: r.opt("ceil_mode", Raw::as_bool, || false)?,
        count_include_pad: r.opt("count_include_pad", Raw::as_bool, || false)?,
        storage_order: r.opt("storage_order", |v| v.as_int::<u8>("0 or 1"), || 0)?,
        kernel,
    })
}

fn read_slice(r: &mut AttrReader) -> Result<Vec<SliceAxis>, IrError> {
    let axes_raw = r.take("axes");
    let axes = match axes_raw {
        Some(raw) => raw.as_usize_list()?,
        None => {
            return Err(parse_error(
                r.line,
                r.col,
                "slice: missing attribute 'axes'",
            ))
        }
    };
    let n = axes.len();
    let mut field = |name: &'static str, default: Option<i64>| -> Result<Vec<i64>, IrError> {
        match r.take(name) {
            Some(raw) => {
                let v = raw.as_i64_list()?;
                if v.len() != n {
                    return Err(raw.err(format!(
                        "slice: '{name}' has {} entries but 'axes' has {n}",
                        v.len()
                    )));
                }
                Ok(v)
            }
            None => match default {
                Some(d) => Ok(vec![d; n]),
                None => Err(parse_error(
                    r.line,
                    r.col,
                    format!("slice: missing attribute '{name}'"),
                )),
            },
        }
    };
    let starts = field("starts", None)?;
    let ends = field("ends", None)?;
    let steps = field("steps", Some(1))?;
    Ok((0..n)
        .map(|i| SliceAxis {
            axis: axes[i],
            start: starts[i],
            end: ends[i],
            step: steps[i],
        })
        .collect())
}

fn read_resize(r: &mut AttrReader) -> Result<ResizeAttrs, IrError> {
    Ok(ResizeAttrs {
        sizes: r.req("sizes", Raw::as_usize_list)?,
        scales: r.req("scales", Raw::as_f32_list)?,
        mode: r.opt(
            "mode",
            |v| v.as_choice(&RESIZE_MODES, resize_mode_name),
            || ResizeMode::Nearest,
        )?,
        coord: r.opt(
            "coord",
            |v| v.as_choice(&COORD_TRANSFORMS, coord_transform_name),
            || CoordTransform::HalfPixel,
        )?,
        nearest: r.opt(
            "nearest",
            |v| v.as_choice(&NEAREST_MODES, nearest_mode_name),
            || NearestMode::RoundPreferFloor,
        )?,
        cubic_coeff_a: r.opt("cubic_coeff_a", Raw::as_f32, || -0.75)?,
        exclude_outside: r.opt("exclude_outside", Raw::as_bool, || false)?,
        extrapolation_value: r.opt("extrapolation_value", Raw::as_f32, || 0.0)?,
        antialias: r.opt("antialias", Raw::as_bool, || false)?,
        roi: r.opt("roi", Raw::as_f32_list, Vec::new)?,
    })
}

/// The op `mnemonic` with `attrs` (as parsed), or an error at the offending attribute.
/// `line`/`col` locate the mnemonic, for errors about missing attributes. `input` and
/// `const` are not built here: the parser handles them (graph header, constant syntax).
pub(crate) fn op_from_attrs(
    mnemonic: &str,
    line: usize,
    col: usize,
    attrs: &[RawAttr],
) -> Result<Op, IrError> {
    let mut r = AttrReader::new(mnemonic, line, col, attrs)?;
    let op = match mnemonic {
        "conv" => Op::Conv(read_conv(&mut r)?),
        "qconv" => Op::QConv(read_conv(&mut r)?),
        "conv_integer" => Op::ConvInteger(read_conv(&mut r)?),
        "conv_transpose" => {
            let kernel = r.req("kernel", Raw::as_usize_list)?;
            let k = kernel.len();
            Op::ConvTranspose(ConvTransposeAttrs {
                strides: r.opt("strides", Raw::as_usize_list, || vec![1; k])?,
                pads: r.opt("pads", Raw::as_usize_list, || vec![0; 2 * k])?,
                dilations: r.opt("dilations", Raw::as_usize_list, || vec![1; k])?,
                output_padding: r.opt("output_padding", Raw::as_usize_list, || vec![0; k])?,
                groups: r.opt("groups", Raw::as_usize, || 1)?,
                act: r.opt("act", |v| v.as_activation().map(Some), || None)?,
                kernel,
            })
        }
        "batch_norm" => Op::BatchNorm {
            epsilon: r.opt("epsilon", Raw::as_f32, || 1e-5)?,
        },
        "add" => Op::Binary(BinaryOp::Add),
        "sub" => Op::Binary(BinaryOp::Sub),
        "mul" => Op::Binary(BinaryOp::Mul),
        "div" => Op::Binary(BinaryOp::Div),
        "sum" => Op::Sum,
        "matmul" => Op::MatMul,
        "gemm" => Op::Gemm(GemmAttrs {
            alpha: r.opt("alpha", Raw::as_f32, || 1.0)?,
            beta: r.opt("beta", Raw::as_f32, || 1.0)?,
            trans_a: r.opt("trans_a", Raw::as_bool, || false)?,
            trans_b: r.opt("trans_b", Raw::as_bool, || false)?,
            act: r.opt("act", |v| v.as_activation().map(Some), || None)?,
        }),
        "max_pool" => Op::MaxPool(read_pool(&mut r)?),
        "average_pool" => Op::AveragePool(read_pool(&mut r)?),
        "global_average_pool" => Op::GlobalAveragePool,
        "global_max_pool" => Op::GlobalMaxPool,
        "lrn" => Op::Lrn {
            size: r.req("size", Raw::as_usize)?,
            alpha: r.opt("alpha", Raw::as_f32, || 1e-4)?,
            beta: r.opt("beta", Raw::as_f32, || 0.75)?,
            bias: r.opt("bias", Raw::as_f32, || 1.0)?,
        },
        "concat" => Op::Concat {
            axis: r.req("axis", Raw::as_usize)?,
        },
        "split" => Op::Split {
            axis: r.req("axis", Raw::as_usize)?,
            sizes: r.req("sizes", Raw::as_usize_list)?,
        },
        "slice" => Op::Slice {
            axes: read_slice(&mut r)?,
        },
        "reshape" => Op::Reshape {
            shape: r.req("shape", Raw::as_usize_list)?,
        },
        "flatten" => Op::Flatten {
            axis: r.opt("axis", Raw::as_usize, || 1)?,
        },
        "transpose" => Op::Transpose {
            perm: r.req("perm", Raw::as_usize_list)?,
        },
        "squeeze" => Op::Squeeze {
            axes: r.req("axes", Raw::as_usize_list)?,
        },
        "unsqueeze" => Op::Unsqueeze {
            axes: r.req("axes", Raw::as_usize_list)?,
        },
        "pad" => Op::Pad {
            mode: r.opt(
                "mode",
                |v| v.as_choice(&PAD_MODES, pad_mode_name),
                || PadMode::Constant,
            )?,
            pads: r.req("pads", Raw::as_i64_list)?,
            value: r.opt("value", Raw::as_f64, || 0.0)?,
        },
        "resize" => Op::Resize(read_resize(&mut r)?),
        "softmax" => Op::Softmax {
            axis: r.req("axis", Raw::as_usize)?,
            legacy: r.opt("legacy", Raw::as_bool, || false)?,
        },
        "reduce_mean" => Op::ReduceMean {
            axes: r.req("axes", Raw::as_usize_list)?,
            keepdims: r.opt("keepdims", Raw::as_bool, || true)?,
        },
        "identity" => Op::Identity,
        "dropout" => Op::Dropout,
        "cast" => Op::Cast {
            to: r.req("to", Raw::as_dtype)?,
        },
        "gather" => Op::Gather {
            axis: r.opt("axis", Raw::as_usize, || 0)?,
        },
        "quantize" => Op::Quantize,
        "dequantize" => Op::Dequantize,
        "qmatmul" => Op::QMatMul,
        "matmul_integer" => Op::MatMulInteger,
        "dynamic_quantize" => Op::DynamicQuantize,
        other => match activation_from(other, &mut r)? {
            Some(act) => Op::Activation(act),
            None => {
                return Err(parse_error(
                    line,
                    col,
                    format!(
                        "unknown op '{other}' (valid ops: {})",
                        OP_MNEMONICS
                            .iter()
                            .filter(|m| !matches!(**m, "input" | "const"))
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        },
    };
    r.finish()?;
    Ok(op)
}
