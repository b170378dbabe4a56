//! The parser of the `.kir` text format: recursive descent over the token list, building
//! the graph with `Graph::add_input`, the constant pool and `Graph::add_node_typed` (the
//! types come from the text; the verifier checks them). Errors carry line:column and say
//! what was expected; no input makes it panic.

use super::attrs::{op_from_attrs, Raw, RawAttr, RawValue};
use super::lex::{parse_error, tokenize, Tok, Token};
use super::{fmt_type, GENERATED_CONST_LIMIT};
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, Output, ValueId};
use crate::pool::{ConstId, ConstValue, Generator};
use crate::tensor::{checked_numel, Tensor, TensorData, TensorStats};
use crate::types::{Quant, TensorType};
use std::collections::HashMap;

/// Parse a graph from `.kir` text.
pub fn parse_graph(src: &str) -> Result<Graph, IrError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        graph: Graph::new(""),
        values: HashMap::new(),
        consts: HashMap::new(),
        nesting: 0,
    };
    p.graph_def()?;
    Ok(p.graph)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    graph: Graph,
    /// Value name → value and the line:col of its definition.
    values: HashMap<String, (ValueId, usize, usize)>,
    /// Constant number in the text (`@c3` → 3) → pool id and the line of its value.
    consts: HashMap<u64, (ConstId, usize)>,
    /// Depth of `[..]` / `name(..)` nesting in the attribute value being read.
    nesting: usize,
}

/// Attribute values nest at most this deep (real ones nest 2 deep: `act=clip(min=..)`), so
/// that `[[[[..` cannot exhaust the stack.
const MAX_NESTING: usize = 8;

/// A parsed type and where it started.
struct TypeAt {
    ty: TensorType,
    line: usize,
    col: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof, and `bump` never moves past it.
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.pos.min(last)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn error_here(&self, msg: impl Into<String>) -> IrError {
        let t = self.peek();
        parse_error(t.line, t.col, msg)
    }

    fn expected(&self, what: &str) -> IrError {
        let found = self.peek().tok.describe();
        self.error_here(format!("expected {what}, found {found}"))
    }

    fn at_punct(&self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn at_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(x) if x == w)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.at_punct(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<Token, IrError> {
        if self.at_punct(c) {
            Ok(self.bump())
        } else {
            Err(self.expected(&format!("'{c}'")))
        }
    }

    fn expect_word(&mut self, w: &str) -> Result<Token, IrError> {
        if self.at_word(w) {
            Ok(self.bump())
        } else {
            Err(self.expected(&format!("'{w}'")))
        }
    }

    /// `graph @name(params) -> (types) { stmts return values }`
    fn graph_def(&mut self) -> Result<(), IrError> {
        self.expect_word("graph")?;
        let Tok::At(name) = &self.peek().tok else {
            return Err(self.expected("the graph name '@name'"));
        };
        self.graph.name = name.clone();
        self.bump();
        self.expect_punct('(')?;
        if !self.at_punct(')') {
            loop {
                self.param()?;
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        self.expect_punct(')')?;
        if self.peek().tok != Tok::Arrow {
            return Err(self.expected("'->' and the result types"));
        }
        self.bump();
        self.expect_punct('(')?;
        let mut result_types = Vec::new();
        if !self.at_punct(')') {
            loop {
                result_types.push(self.ty()?);
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        self.expect_punct(')')?;
        self.expect_punct('{')?;
        while !self.at_word("return") {
            if self.peek().tok == Tok::Eof {
                return Err(self.expected("a statement or 'return'"));
            }
            self.statement()?;
        }
        let ret = self.bump();
        let mut results = Vec::new();
        if let Tok::Value(_) = self.peek().tok {
            loop {
                results.push(self.value_use()?);
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        self.expect_punct('}')?;
        if self.peek().tok != Tok::Eof {
            return Err(self.expected("end of input after the graph's closing '}'"));
        }
        if results.len() != result_types.len() {
            return Err(parse_error(
                ret.line,
                ret.col,
                format!(
                    "the graph header declares {} result(s) but 'return' gives {}",
                    result_types.len(),
                    results.len()
                ),
            ));
        }
        for (i, (&v, declared)) in results.iter().zip(&result_types).enumerate() {
            let actual = fmt_type(self.graph.value_type(v));
            let declared_text = fmt_type(&declared.ty);
            if actual != declared_text {
                return Err(parse_error(
                    declared.line,
                    declared.col,
                    format!(
                        "result {i} is declared {declared_text} but %{} returned there is {actual}",
                        super::fmt_name(self.graph.value_name(v))
                    ),
                ));
            }
        }
        self.graph.set_outputs(results);
        Ok(())
    }

    /// `%name: type [@node_name]` in the graph header.
    fn param(&mut self) -> Result<(), IrError> {
        let (name, line, col) = self.value_def()?;
        self.expect_punct(':')?;
        let ty = self.ty()?.ty;
        let node_name = self.node_name()?.unwrap_or_else(|| name.clone());
        let v = self.graph.add_input(node_name, ty);
        self.graph.output_mut(v).name = name.clone();
        self.values.insert(name, (v, line, col));
        Ok(())
    }

    /// A value being defined: `%name`, which must be new.
    fn value_def(&mut self) -> Result<(String, usize, usize), IrError> {
        let t = self.peek().clone();
        let Tok::Value(name) = t.tok else {
            return Err(self.expected("a value name '%name'"));
        };
        if let Some(&(_, line, col)) = self.values.get(&name) {
            return Err(self.error_here(format!(
                "value %{} is already defined (at {line}:{col})",
                super::fmt_name(&name)
            )));
        }
        self.bump();
        Ok((name, t.line, t.col))
    }

    /// A value being used: `%name`, which must already be defined.
    fn value_use(&mut self) -> Result<ValueId, IrError> {
        let Tok::Value(name) = &self.peek().tok else {
            return Err(self.expected("a value name '%name'"));
        };
        match self.values.get(name) {
            Some(&(v, _, _)) => {
                self.bump();
                Ok(v)
            }
            None => Err(self.error_here(format!(
                "undefined value %{} (values must be defined before they are used)",
                super::fmt_name(name)
            ))),
        }
    }

    /// Optional trailing `@node_name`.
    fn node_name(&mut self) -> Result<Option<String>, IrError> {
        if let Tok::At(name) = &self.peek().tok {
            let name = name.clone();
            self.bump();
            return Ok(Some(name));
        }
        Ok(None)
    }

    /// `%a, %b = op(..) {..} : T, T [@name]` or `%w = const @cN : T [= body] [@name]`.
    fn statement(&mut self) -> Result<(), IrError> {
        let mut outs = vec![self.value_def()?];
        while self.eat_punct(',') {
            let (name, line, col) = self.value_def()?;
            if outs.iter().any(|o| o.0 == name) {
                return Err(parse_error(
                    line,
                    col,
                    format!(
                        "value %{} is defined twice in one statement",
                        super::fmt_name(&name)
                    ),
                ));
            }
            outs.push((name, line, col));
        }
        self.expect_punct('=')?;
        let op_tok = self.peek().clone();
        let Tok::Word(mnemonic) = op_tok.tok else {
            return Err(self.expected("an op name or 'const'"));
        };
        self.bump();
        match mnemonic.as_str() {
            "const" => self.const_statement(outs, op_tok.line, op_tok.col),
            "input" => Err(parse_error(
                op_tok.line,
                op_tok.col,
                "graph inputs are declared in the graph header, not with 'input'",
            )),
            _ => self.op_statement(outs, &mnemonic, op_tok.line, op_tok.col),
        }
    }

    fn op_statement(
        &mut self,
        outs: Vec<(String, usize, usize)>,
        mnemonic: &str,
        line: usize,
        col: usize,
    ) -> Result<(), IrError> {
        self.expect_punct('(')?;
        let mut inputs = Vec::new();
        if !self.at_punct(')') {
            loop {
                inputs.push(self.value_use()?);
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        self.expect_punct(')')?;
        let attrs = if self.at_punct('{') {
            self.bump();
            self.attr_list('}')?
        } else {
            Vec::new()
        };
        let op = op_from_attrs(mnemonic, line, col, &attrs)?;
        let colon = self.expect_punct(':')?;
        let mut types = vec![self.ty()?.ty];
        while self.eat_punct(',') {
            types.push(self.ty()?.ty);
        }
        if types.len() != outs.len() {
            return Err(parse_error(
                colon.line,
                colon.col,
                format!(
                    "{} value(s) defined but {} type(s) given",
                    outs.len(),
                    types.len()
                ),
            ));
        }
        let node_name = self.node_name()?.unwrap_or_else(|| outs[0].0.clone());
        let outputs = outs
            .iter()
            .zip(types)
            .map(|((name, _, _), ty)| Output {
                name: name.clone(),
                ty,
            })
            .collect();
        let ids = self.graph.add_node_typed(node_name, op, &inputs, outputs);
        for ((name, l, c), v) in outs.into_iter().zip(ids) {
            self.values.insert(name, (v, l, c));
        }
        Ok(())
    }

    fn const_statement(
        &mut self,
        outs: Vec<(String, usize, usize)>,
        line: usize,
        col: usize,
    ) -> Result<(), IrError> {
        let Some((name, name_line, name_col)) = outs.first().cloned() else {
            return Err(parse_error(line, col, "a constant defines one value"));
        };
        if outs.len() != 1 {
            return Err(parse_error(
                line,
                col,
                "a constant defines exactly one value",
            ));
        }
        let ref_tok = self.peek().clone();
        let number = match &ref_tok.tok {
            Tok::At(r) => r
                .strip_prefix('c')
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                .and_then(|n| n.parse::<u64>().ok()),
            _ => None,
        };
        let Some(number) = number else {
            return Err(self.expected("a constant reference like '@c0'"));
        };
        self.bump();
        self.expect_punct(':')?;
        let TypeAt {
            ty,
            line: ty_line,
            col: ty_col,
        } = self.ty()?;
        let id = if self.eat_punct('=') {
            if let Some(&(_, first)) = self.consts.get(&number) {
                return Err(parse_error(
                    ref_tok.line,
                    ref_tok.col,
                    format!("constant @c{number} already has a value (given on line {first})"),
                ));
            }
            let value = self.const_body(&ty)?;
            let id = self.graph.consts.intern(value);
            self.consts.insert(number, (id, ref_tok.line));
            id
        } else {
            let Some(&(id, _)) = self.consts.get(&number) else {
                return Err(parse_error(
                    ref_tok.line,
                    ref_tok.col,
                    format!(
                        "constant @c{number} has no value: its first use must give one \
                         ('= [..]', a generator such as 'normal(..)', or 'summary(..)')"
                    ),
                ));
            };
            let pooled = self
                .graph
                .consts
                .get(id)
                .map(|c| (c.dtype(), c.shape().to_vec()));
            if pooled.as_ref() != Some(&(ty.dtype, ty.shape.clone())) {
                let was = pooled
                    .map(|(d, s)| TensorType::new(d, s).to_string())
                    .unwrap_or_default();
                return Err(parse_error(
                    ty_line,
                    ty_col,
                    format!("constant @c{number} is {was}, not {ty}"),
                ));
            }
            id
        };
        let node_name = self.node_name()?.unwrap_or_else(|| name.clone());
        let v = self.graph.add_const_node(node_name, id, ty);
        self.graph.output_mut(v).name = name.clone();
        self.values.insert(name, (v, name_line, name_col));
        Ok(())
    }

    /// The value of a constant of type `ty`: `[..]`, `summary(..)` or a generator.
    fn const_body(&mut self, ty: &TensorType) -> Result<ConstValue, IrError> {
        let t = self.peek().clone();
        if self.at_punct('[') {
            return self.inline_data(ty).map(ConstValue::Data);
        }
        let Tok::Word(kind) = &t.tok else {
            return Err(self.expected(
                "constant data '[..]', 'summary(..)' or a generator (normal, uniform, full, arange)",
            ));
        };
        let kind = kind.clone();
        self.bump();
        self.expect_punct('(')?;
        let args = self.attr_list(')')?;
        let mut args = Args::new(&kind, t.line, t.col, args)?;
        let value = match kind.as_str() {
            "summary" => {
                let stats = TensorStats {
                    min: args.req("min")?.as_f64()?,
                    max: args.req("max")?.as_f64()?,
                    mean: args.req("mean")?.as_f64()?,
                    std: args.req("std")?.as_f64()?,
                };
                args.finish()?;
                return Ok(ConstValue::Opaque {
                    dtype: ty.dtype,
                    shape: ty.shape.clone(),
                    stats,
                });
            }
            "normal" => Generator::Normal {
                seed: args.req("seed")?.as_int("a seed (0 ≤ seed < 2^64)")?,
                mean: args.req("mean")?.as_f32()?,
                std: args.req("std")?.as_f32()?,
            },
            "uniform" => Generator::Uniform {
                seed: args.req("seed")?.as_int("a seed (0 ≤ seed < 2^64)")?,
                low: args.req("low")?.as_f32()?,
                high: args.req("high")?.as_f32()?,
            },
            "full" => Generator::Full {
                value: args.positional()?.as_f64()?,
            },
            "arange" => Generator::Arange {
                start: args.req("start")?.as_f64()?,
                step: args.req("step")?.as_f64()?,
            },
            other => {
                return Err(parse_error(
                    t.line,
                    t.col,
                    format!(
                        "unknown constant form '{other}' (expected '[..]', summary, normal, \
                         uniform, full or arange)"
                    ),
                ))
            }
        };
        args.finish()?;
        let n = checked_numel(&ty.shape).unwrap_or(usize::MAX);
        if n > GENERATED_CONST_LIMIT {
            return Err(parse_error(
                t.line,
                t.col,
                format!("generated constant {ty} has more than {GENERATED_CONST_LIMIT} elements"),
            ));
        }
        let tensor = value
            .generate(ty.dtype, &ty.shape)
            .map_err(|e| parse_error(t.line, t.col, e.to_string()))?;
        Ok(ConstValue::Generated {
            generator: value,
            tensor,
        })
    }

    /// `[v, v, ..]` with exactly `numel(ty)` elements of `ty.dtype`, row-major.
    fn inline_data(&mut self, ty: &TensorType) -> Result<Tensor, IrError> {
        let open = self.expect_punct('[')?;
        let mut items: Vec<Raw> = Vec::new();
        if !self.at_punct(']') {
            loop {
                items.push(self.attr_value()?);
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        self.expect_punct(']')?;
        let n = checked_numel(&ty.shape).unwrap_or(usize::MAX);
        if items.len() != n {
            return Err(parse_error(
                open.line,
                open.col,
                format!(
                    "a constant of type {ty} needs {n} values, found {}",
                    items.len()
                ),
            ));
        }
        fn ints<T: std::str::FromStr>(items: &[Raw], dtype: DType) -> Result<Vec<T>, IrError> {
            let what = format!("a {dtype} value");
            items.iter().map(|r| r.as_int::<T>(&what)).collect()
        }
        let data = match ty.dtype {
            DType::F32 => TensorData::F32(items.iter().map(Raw::as_f32).collect::<Result<_, _>>()?),
            DType::F16 => TensorData::F16(
                items
                    .iter()
                    .map(|r| r.as_f64().map(half::f16::from_f64))
                    .collect::<Result<_, _>>()?,
            ),
            DType::I8 => TensorData::I8(ints(&items, ty.dtype)?),
            DType::U8 => TensorData::U8(ints(&items, ty.dtype)?),
            DType::I32 => TensorData::I32(ints(&items, ty.dtype)?),
            DType::I64 => TensorData::I64(ints(&items, ty.dtype)?),
            DType::Bool => TensorData::Bool(
                items
                    .iter()
                    .map(|r| match &r.value {
                        RawValue::Word(w) if w == "true" => Ok(true),
                        RawValue::Word(w) if w == "false" => Ok(false),
                        _ => Err(parse_error(r.line, r.col, "expected true or false")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Tensor::new(ty.shape.clone(), data)
            .map_err(|e| parse_error(open.line, open.col, e.to_string()))
    }

    /// `dtype[d0,d1,..]` with an optional quantization suffix `q(..)`.
    fn ty(&mut self) -> Result<TypeAt, IrError> {
        let t = self.peek().clone();
        let dtype = match &t.tok {
            Tok::Word(w) => DType::from_name(w),
            _ => None,
        };
        let Some(dtype) = dtype else {
            let names: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
            return Err(self.expected(&format!(
                "a type such as f32[1,3] (dtypes: {})",
                names.join(", ")
            )));
        };
        self.bump();
        self.expect_punct('[')?;
        let mut shape = Vec::new();
        if !self.at_punct(']') {
            loop {
                shape.push(self.usize_token("a dimension")?);
                if !self.eat_punct(',') {
                    break;
                }
            }
        }
        self.expect_punct(']')?;
        let fits = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.size_bytes()))
            .is_some();
        if !fits {
            return Err(parse_error(
                t.line,
                t.col,
                format!("shape {shape:?} has more elements than fit in memory"),
            ));
        }
        let mut ty = TensorType::new(dtype, shape);
        if self.at_word("q") {
            ty.quant = Some(self.quant()?);
        }
        Ok(TypeAt {
            ty,
            line: t.line,
            col: t.col,
        })
    }

    fn usize_token(&mut self, what: &str) -> Result<usize, IrError> {
        let raw = self.number_raw(what)?;
        raw.as_int(&format!("{what} (a non-negative integer)"))
    }

    fn number_raw(&mut self, what: &str) -> Result<Raw, IrError> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Number(n) => {
                self.bump();
                Ok(Raw {
                    value: RawValue::Number(n),
                    line: t.line,
                    col: t.col,
                })
            }
            _ => Err(self.expected(what)),
        }
    }

    /// `q(scale, zero_point)` or `q(axis=A, scales=[..], zps=[..])`.
    fn quant(&mut self) -> Result<Quant, IrError> {
        let q = self.expect_word("q")?;
        self.expect_punct('(')?;
        if let Tok::Number(_) = self.peek().tok {
            let scale = self.number_raw("a scale")?.as_f32()?;
            self.expect_punct(',')?;
            let zero_point = self
                .number_raw("a zero point")?
                .as_int::<i32>("a zero point (32-bit integer)")?;
            self.expect_punct(')')?;
            return Ok(Quant::PerTensor { scale, zero_point });
        }
        let args = self.attr_list(')')?;
        let mut args = Args::new("q", q.line, q.col, args)?;
        let axis = args.req("axis")?.as_usize()?;
        let scales_raw = args.req("scales")?;
        let scales = scales_raw
            .as_list()?
            .iter()
            .map(Raw::as_f32)
            .collect::<Result<Vec<_>, _>>()?;
        let zps_raw = args.req("zps")?;
        let zero_points = zps_raw
            .as_list()?
            .iter()
            .map(|r| r.as_int::<i32>("a zero point (32-bit integer)"))
            .collect::<Result<Vec<_>, _>>()?;
        args.finish()?;
        if scales.len() != zero_points.len() {
            return Err(parse_error(
                zps_raw.line,
                zps_raw.col,
                format!(
                    "per-axis quantization has {} scales but {} zero points",
                    scales.len(),
                    zero_points.len()
                ),
            ));
        }
        Ok(Quant::PerAxis {
            axis,
            scales,
            zero_points,
        })
    }

    /// `name=value, ...` up to and including `close`; a positional value (no `name=`) gets
    /// the empty name (used by `full(1.0)`).
    fn attr_list(&mut self, close: char) -> Result<Vec<RawAttr>, IrError> {
        let mut attrs = Vec::new();
        while !self.at_punct(close) {
            let t = self.peek().clone();
            let is_named = matches!(&t.tok, Tok::Word(_))
                && self
                    .tokens
                    .get(self.pos + 1)
                    .is_some_and(|n| n.tok == Tok::Punct('='));
            let name = if is_named {
                let Tok::Word(w) = t.tok else {
                    return Err(self.expected("an attribute name"));
                };
                self.bump();
                self.bump();
                w
            } else {
                String::new()
            };
            let value = self.attr_value()?;
            attrs.push(RawAttr {
                name,
                line: t.line,
                col: t.col,
                value,
            });
            if !self.eat_punct(',') {
                break;
            }
        }
        if !self.eat_punct(close) {
            return Err(self.expected(&format!("',' or '{close}'")));
        }
        Ok(attrs)
    }

    /// A number, a word, `word(args)` or a list `[..]`.
    fn attr_value(&mut self) -> Result<Raw, IrError> {
        if self.nesting >= MAX_NESTING {
            return Err(self.error_here(format!("values nested more than {MAX_NESTING} deep")));
        }
        self.nesting += 1;
        let value = self.attr_value_inner();
        self.nesting -= 1;
        value
    }

    fn attr_value_inner(&mut self) -> Result<Raw, IrError> {
        let t = self.peek().clone();
        let value = match t.tok {
            Tok::Number(n) => {
                self.bump();
                RawValue::Number(n)
            }
            Tok::Word(w) => {
                self.bump();
                if self.eat_punct('(') {
                    RawValue::Call(w, self.attr_list(')')?)
                } else {
                    RawValue::Word(w)
                }
            }
            Tok::Punct('[') => {
                self.bump();
                let mut items = Vec::new();
                if !self.at_punct(']') {
                    loop {
                        items.push(self.attr_value()?);
                        if !self.eat_punct(',') {
                            break;
                        }
                    }
                }
                self.expect_punct(']')?;
                RawValue::List(items)
            }
            _ => return Err(self.expected("a value (number, name, or list '[..]')")),
        };
        Ok(Raw {
            value,
            line: t.line,
            col: t.col,
        })
    }
}

/// The arguments of `summary(..)`, a generator or `q(..)`: each named once, all required,
/// none unknown.
struct Args {
    what: String,
    line: usize,
    col: usize,
    args: Vec<Option<RawAttr>>,
    known: Vec<&'static str>,
}

impl Args {
    fn new(what: &str, line: usize, col: usize, args: Vec<RawAttr>) -> Result<Args, IrError> {
        for (i, a) in args.iter().enumerate() {
            if args.iter().take(i).any(|b| b.name == a.name) {
                let shown = if a.name.is_empty() {
                    "positional value"
                } else {
                    &a.name
                };
                return Err(parse_error(
                    a.line,
                    a.col,
                    format!("{what}: '{shown}' given twice"),
                ));
            }
        }
        Ok(Args {
            what: what.to_string(),
            line,
            col,
            args: args.into_iter().map(Some).collect(),
            known: Vec::new(),
        })
    }

    fn req(&mut self, name: &'static str) -> Result<Raw, IrError> {
        self.known.push(name);
        let found = self
            .args
            .iter_mut()
            .find(|a| a.as_ref().is_some_and(|a| a.name == name))
            .and_then(Option::take);
        match found {
            Some(a) => Ok(a.value),
            None => Err(parse_error(
                self.line,
                self.col,
                format!("{}: missing '{name}'", self.what),
            )),
        }
    }

    /// The one unnamed argument: `full(1.0)`.
    fn positional(&mut self) -> Result<Raw, IrError> {
        let found = self
            .args
            .iter_mut()
            .find(|a| a.as_ref().is_some_and(|a| a.name.is_empty()))
            .and_then(Option::take);
        found.map(|a| a.value).ok_or_else(|| {
            parse_error(
                self.line,
                self.col,
                format!("{}: expected a value, as in {}(1.0)", self.what, self.what),
            )
        })
    }

    fn finish(self) -> Result<(), IrError> {
        if let Some(a) = self.args.into_iter().flatten().next() {
            let expected = if self.known.is_empty() {
                "one value".to_string()
            } else {
                self.known.join(", ")
            };
            let shown = if a.name.is_empty() {
                "an unnamed value".to_string()
            } else {
                format!("'{}'", a.name)
            };
            return Err(parse_error(
                a.line,
                a.col,
                format!("{}: unexpected {shown} (expected {expected})", self.what),
            ));
        }
        Ok(())
    }
}
