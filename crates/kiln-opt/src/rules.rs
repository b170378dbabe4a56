//! Rule files: one rule set per file under `passes/`, as s-expressions. The syntax
//! (documented with examples in docs/passes.md):
//!
//! ```text
//! ; comment to end of line
//! (pass fold-bn "one-line description" [constant-folding])
//! (rule NAME  LHS  =>  RHS  [(if CONDITION ...)] ...)
//! ```
//!
//! LHS is a pattern over op mnemonics: `(batch_norm (conv ?x ?w ?b absent ?conv) ?g ?beta
//! ?mean ?var ?bn)` — every slot spelled out, `absent` for a missing optional input, the
//! attrs leaf last for ops that have attributes. RHS builds ops from bound variables and calls
//! named Rust functions (`(bn-scale ?g ?var ?bn)`) that compute new constants or attribute
//! sets. Conditions are named Rust predicates; their arguments may be variables, patterns
//! (looked up, never added) and number literals. Every rule also carries one implicit
//! condition: the replacement must have the matched value's type.

use crate::analysis::{add_node, node_sort, CallKey, KGraph, KilnAnalysis};
use crate::error::OptError;
use crate::functions::{self, Arg, Body, Function, Kind};
use crate::lang::{Head, KNode, Slots};
use crate::sexp::{self, Pos, Sexp};
use egg::{Applier, ENodeOrVar, Id, Pattern, PatternAst, RecExpr, Rewrite, Subst, Symbol, Var};
use std::collections::HashMap;
use std::sync::Arc;

/// A parsed rule file.
#[derive(Clone)]
pub struct RuleSet {
    pub name: String,
    pub description: String,
    /// The file the rules came from (for error messages and `kiln passes`).
    pub file: String,
    /// Whether the pass evaluates ops whose inputs are all constant.
    pub constant_folding: bool,
    pub rules: Vec<Rule>,
}

#[derive(Clone)]
pub struct Rule {
    pub name: String,
    pub line: usize,
    pub lhs: Pattern<KNode>,
    pub rhs: Arc<RuleRhs>,
}

/// What a rule builds and when it applies.
pub struct RuleRhs {
    pub term: Term,
    pub conditions: Vec<Call>,
}

/// A right-hand side term.
#[derive(Clone, Debug)]
pub enum Term {
    Var(Var),
    Absent,
    Op(Head, Vec<Term>),
    Call(Call),
}

#[derive(Clone)]
pub struct Call {
    pub func: &'static Function,
    pub args: Vec<CallArg>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({} {:?})", self.func.name, self.args)
    }
}

#[derive(Clone, Debug)]
pub enum CallArg {
    Term(Term),
    Number(f64),
    Symbol(String),
}

impl RuleSet {
    /// egg rewrites for the runner.
    pub fn rewrites(&self) -> Vec<Rewrite<KNode, KilnAnalysis>> {
        self.rules
            .iter()
            .map(|r| {
                Rewrite::new(
                    r.name.as_str(),
                    r.lhs.clone(),
                    RuleApplier {
                        rhs: Arc::clone(&r.rhs),
                    },
                )
                .expect("variables were checked when the rule file was parsed")
            })
            .collect()
    }
}

/// Parse a rule file. `file` names it in errors (`passes/fold-bn.rules:12:3: ...`).
pub fn parse_rule_file(file: &str, text: &str) -> Result<RuleSet, OptError> {
    let err = |pos: Pos, msg: String| OptError::RuleFile {
        file: file.to_string(),
        line: pos.line,
        col: pos.col,
        msg,
    };
    let forms = sexp::parse_all(text).map_err(|e| err(e.pos, e.msg))?;
    let mut header: Option<(String, String, bool)> = None;
    let mut rules: Vec<Rule> = Vec::new();
    for form in &forms {
        let Sexp::List(items, pos) = form else {
            return Err(err(
                form.pos(),
                format!("expected (pass ...) or (rule ...), found {form}"),
            ));
        };
        match items.first().and_then(Sexp::as_atom) {
            Some("pass") => {
                if header.is_some() {
                    return Err(err(*pos, "a rule file declares one pass".into()));
                }
                if !rules.is_empty() {
                    return Err(err(*pos, "(pass ...) comes before the rules".into()));
                }
                let name = items.get(1).and_then(Sexp::as_atom).ok_or_else(|| {
                    err(
                        *pos,
                        "expected (pass NAME \"description\" [constant-folding])".into(),
                    )
                })?;
                let Some(Sexp::Str(description, _)) = items.get(2) else {
                    return Err(err(
                        *pos,
                        "the pass needs a one-line description string".into(),
                    ));
                };
                let mut constant_folding = false;
                for opt in &items[3..] {
                    match opt.as_atom() {
                        Some("constant-folding") => constant_folding = true,
                        _ => {
                            return Err(err(
                                opt.pos(),
                                format!("unknown pass option {opt} (known: constant-folding)"),
                            ))
                        }
                    }
                }
                header = Some((name.to_string(), description.clone(), constant_folding));
            }
            Some("rule") => {
                if header.is_none() {
                    return Err(err(
                        *pos,
                        "the file must start with (pass NAME \"description\")".into(),
                    ));
                }
                let rule = parse_rule(items, *pos).map_err(|(p, m)| err(p, m))?;
                if rules.iter().any(|r| r.name == rule.name) {
                    return Err(err(*pos, format!("rule {} is defined twice", rule.name)));
                }
                rules.push(rule);
            }
            _ => {
                return Err(err(
                    *pos,
                    format!("expected (pass ...) or (rule ...), found {form}"),
                ))
            }
        }
    }
    let (name, description, constant_folding) = header.ok_or_else(|| {
        err(
            Pos { line: 1, col: 1 },
            "the file must start with (pass NAME \"description\")".into(),
        )
    })?;
    Ok(RuleSet {
        name,
        description,
        file: file.to_string(),
        constant_folding,
        rules,
    })
}

type ParseResult<T> = Result<T, (Pos, String)>;

fn parse_rule(items: &[Sexp], pos: Pos) -> ParseResult<Rule> {
    const SHAPE: &str = "expected (rule NAME LHS => RHS (if CONDITION ...) ...)";
    let name = items
        .get(1)
        .and_then(Sexp::as_atom)
        .ok_or((pos, SHAPE.to_string()))?;
    let lhs = items.get(2).ok_or((pos, SHAPE.to_string()))?;
    match items.get(3) {
        Some(Sexp::Atom(a, _)) if a == "=>" => {}
        Some(other) => {
            return Err((
                other.pos(),
                format!("expected => after the left-hand side, found {other}"),
            ))
        }
        None => return Err((pos, SHAPE.to_string())),
    }
    let rhs = items.get(4).ok_or((pos, SHAPE.to_string()))?;

    let mut vars: HashMap<String, Kind> = HashMap::new();
    let mut ast: PatternAst<KNode> = RecExpr::default();
    match lhs {
        Sexp::List(..) => {}
        other => {
            return Err((
                other.pos(),
                "the left-hand side must be an op pattern, not a variable".into(),
            ))
        }
    }
    parse_pattern(lhs, Kind::Value, &mut vars, &mut ast)?;
    let term = parse_term(rhs, Kind::Value, &vars)?;

    let mut conditions = Vec::new();
    for clause in &items[5..] {
        let Sexp::List(parts, cpos) = clause else {
            return Err((
                clause.pos(),
                format!("expected (if CONDITION ...), found {clause}"),
            ));
        };
        if parts.first().and_then(Sexp::as_atom) != Some("if") || parts.len() < 2 {
            return Err((
                *cpos,
                format!("expected (if CONDITION ...), found {clause}"),
            ));
        }
        for cond in &parts[1..] {
            let call = parse_call(cond, &vars, true)?;
            conditions.push(call);
        }
    }
    Ok(Rule {
        name: name.to_string(),
        line: pos.line,
        lhs: Pattern::new(ast),
        rhs: Arc::new(RuleRhs { term, conditions }),
    })
}

fn parse_var(name: &str, pos: Pos) -> ParseResult<Var> {
    name.parse::<Var>()
        .map_err(|e| (pos, format!("bad variable {name}: {e}")))
}

/// Check an op list's arity; returns the head.
fn op_arity(head_name: &str, n_args: usize, pos: Pos) -> ParseResult<Head> {
    let head = Head::from_name(head_name)
        .ok_or_else(|| (pos, format!("unknown op or function {head_name}")))?;
    if head_name == "input" || head_name == "const" {
        return Err((
            pos,
            format!("{head_name} cannot appear in a rule: match it with a variable"),
        ));
    }
    let attrs = usize::from(head.has_attrs());
    let ok = match head.slots() {
        Slots::Fixed(n) => n_args == n + attrs,
        Slots::Optional { max, .. } => n_args == max + attrs,
        Slots::Variadic => n_args > attrs,
    };
    if !ok {
        let expected = match head.slots() {
            Slots::Fixed(n) => format!("{n} inputs"),
            Slots::Optional { max, .. } => {
                format!("{max} inputs (absent for a missing optional one)")
            }
            Slots::Variadic => "one or more inputs".into(),
        };
        let attrs_note = if attrs == 1 { " then its attrs" } else { "" };
        return Err((
            pos,
            format!("{head_name} takes {expected}{attrs_note}, found {n_args} arguments"),
        ));
    }
    Ok(head)
}

/// The kind of child `i` of an op with `n` children.
fn child_kind(head: Head, i: usize, n: usize) -> Kind {
    if head.has_attrs() && i == n - 1 {
        Kind::Attrs
    } else {
        Kind::Value
    }
}

fn parse_pattern(
    s: &Sexp,
    kind: Kind,
    vars: &mut HashMap<String, Kind>,
    ast: &mut PatternAst<KNode>,
) -> ParseResult<Id> {
    match s {
        Sexp::Atom(a, pos) if a.starts_with('?') => {
            let var = parse_var(a, *pos)?;
            match vars.get(a) {
                Some(&k) if k != kind => {
                    return Err((
                        *pos,
                        format!("{a} is used both as a value and as attributes"),
                    ));
                }
                _ => {
                    vars.insert(a.clone(), kind);
                }
            }
            Ok(ast.add(ENodeOrVar::Var(var)))
        }
        Sexp::Atom(a, pos) if a == "absent" => {
            if kind != Kind::Value {
                return Err((
                    *pos,
                    "absent stands for a missing input, not for attributes".into(),
                ));
            }
            Ok(ast.add(ENodeOrVar::ENode(KNode::Absent)))
        }
        Sexp::List(items, pos) => {
            if kind != Kind::Value {
                return Err((*pos, "attributes are matched with a variable".into()));
            }
            let head_name = items
                .first()
                .and_then(Sexp::as_atom)
                .ok_or((*pos, "expected (op ...)".to_string()))?;
            let head = op_arity(head_name, items.len() - 1, *pos)?;
            let n = items.len() - 1;
            let mut children = Vec::new();
            for (i, item) in items[1..].iter().enumerate() {
                children.push(parse_pattern(item, child_kind(head, i, n), vars, ast)?);
            }
            Ok(ast.add(ENodeOrVar::ENode(KNode::op(head, children))))
        }
        other => Err((
            other.pos(),
            format!("expected a variable, absent or (op ...), found {other}"),
        )),
    }
}

fn parse_term(s: &Sexp, kind: Kind, vars: &HashMap<String, Kind>) -> ParseResult<Term> {
    match s {
        Sexp::Atom(a, pos) if a.starts_with('?') => match vars.get(a) {
            None => Err((*pos, format!("{a} is not bound by the left-hand side"))),
            Some(&k) if k != kind => {
                Err((*pos, format!("{a} is bound to {k:?}, used as {kind:?}")))
            }
            Some(_) => Ok(Term::Var(parse_var(a, *pos)?)),
        },
        Sexp::Atom(a, pos) if a == "absent" => {
            if kind != Kind::Value {
                return Err((
                    *pos,
                    "absent stands for a missing input, not for attributes".into(),
                ));
            }
            Ok(Term::Absent)
        }
        Sexp::List(items, pos) => {
            let head_name = items
                .first()
                .and_then(Sexp::as_atom)
                .ok_or((*pos, "expected (op ...) or (function ...)".to_string()))?;
            if let Some(func) = functions::lookup(head_name) {
                let call = parse_call(s, vars, false)?;
                let Body::Compute { returns, .. } = func.body else {
                    return Err((
                        *pos,
                        format!("{head_name} is a condition; use it in (if ...)"),
                    ));
                };
                if returns != kind {
                    return Err((
                        *pos,
                        format!("{head_name} returns {returns:?}, {kind:?} expected here"),
                    ));
                }
                return Ok(Term::Call(call));
            }
            if kind != Kind::Value {
                return Err((*pos, "attributes come from a variable or a function".into()));
            }
            let head = op_arity(head_name, items.len() - 1, *pos)?;
            let n = items.len() - 1;
            let children = items[1..]
                .iter()
                .enumerate()
                .map(|(i, item)| parse_term(item, child_kind(head, i, n), vars))
                .collect::<ParseResult<Vec<_>>>()?;
            Ok(Term::Op(head, children))
        }
        other => Err((
            other.pos(),
            format!("expected a variable, absent, (op ...) or (function ...), found {other}"),
        )),
    }
}

/// Parse a number literal: decimal, `a/b`, `inf`, `-inf`.
fn parse_number(a: &str) -> Option<f64> {
    match a {
        "inf" => return Some(f64::INFINITY),
        "-inf" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    if let Some((n, d)) = a.split_once('/') {
        return Some(n.parse::<f64>().ok()? / d.parse::<f64>().ok()?);
    }
    a.parse::<f64>().ok()
}

fn parse_call(s: &Sexp, vars: &HashMap<String, Kind>, condition: bool) -> ParseResult<Call> {
    let Sexp::List(items, pos) = s else {
        return Err((s.pos(), format!("expected (function ...), found {s}")));
    };
    let name = items
        .first()
        .and_then(Sexp::as_atom)
        .ok_or((*pos, "expected (function ...)".to_string()))?;
    let func = functions::lookup(name).ok_or_else(|| {
        let known: Vec<&str> = functions::FUNCTIONS
            .iter()
            .filter(|f| f.is_condition() == condition)
            .map(|f| f.name)
            .collect();
        (
            *pos,
            format!(
                "unknown {} {name} (known: {})",
                if condition { "condition" } else { "function" },
                known.join(", ")
            ),
        )
    })?;
    if func.is_condition() != condition {
        let msg = if condition {
            format!("{name} computes a value; conditions are predicates")
        } else {
            format!("{name} is a condition; use it in (if ...)")
        };
        return Err((*pos, msg));
    }
    let args = &items[1..];
    if args.len() != func.params.len() {
        return Err((
            *pos,
            format!(
                "{name} takes {} arguments, found {}",
                func.params.len(),
                args.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for (arg, &kind) in args.iter().zip(func.params) {
        let parsed = match (kind, arg) {
            (Kind::Number, Sexp::Atom(a, apos)) => CallArg::Number(
                parse_number(a).ok_or((*apos, format!("expected a number, found {a}")))?,
            ),
            (Kind::Number, other) => {
                return Err((other.pos(), format!("expected a number, found {other}")))
            }
            (Kind::Activation, Sexp::Atom(a, apos)) if !a.starts_with('?') => match a.as_str() {
                "relu" | "sigmoid" | "tanh" | "hard_swish" => CallArg::Symbol(a.clone()),
                _ => {
                    return Err((
                        *apos,
                        format!(
                        "{a} is not an attribute-free activation (relu, sigmoid, tanh, hard_swish)"
                    ),
                    ))
                }
            },
            (Kind::Activation, other) => CallArg::Term(parse_term(other, Kind::Attrs, vars)?),
            (Kind::Value | Kind::Attrs, other) => CallArg::Term(parse_term(other, kind, vars)?),
        };
        out.push(parsed);
    }
    Ok(Call { func, args: out })
}

/// Applies a rule's right-hand side to a match: checks the conditions, builds the term,
/// checks that its type is the matched value's, and unions.
pub struct RuleApplier {
    rhs: Arc<RuleRhs>,
}

/// Build (or, in lookup mode, find) a term's class.
fn instantiate(eg: &mut KGraph, term: &Term, subst: &Subst, lookup_only: bool) -> Option<Id> {
    match term {
        Term::Var(v) => subst.get(*v).copied(),
        Term::Absent => {
            if lookup_only {
                eg.lookup(KNode::Absent)
            } else {
                Some(eg.add(KNode::Absent))
            }
        }
        Term::Op(head, children) => {
            let ids = children
                .iter()
                .map(|c| instantiate(eg, c, subst, lookup_only))
                .collect::<Option<Vec<Id>>>()?;
            let node = KNode::op(*head, ids);
            if lookup_only {
                return eg.lookup(node);
            }
            if let Some(existing) = eg.lookup(node.clone()) {
                return Some(existing);
            }
            match node_sort(eg, &node) {
                Ok(_) => Some(add_node(eg, node)),
                Err(_) => {
                    eg.analysis.counters.ill_typed += 1;
                    None
                }
            }
        }
        Term::Call(call) => {
            let args = resolve_args(eg, call, subst, lookup_only)?;
            let Body::Compute { f, .. } = call.func.body else {
                unreachable!("terms call compute functions (checked by the parser)")
            };
            let key = (
                call.func.name,
                args.iter()
                    .map(|a| match a {
                        Arg::Class(c) => CallKey::Class(eg.find(*c)),
                        Arg::Number(x) => CallKey::Literal(x.to_string()),
                        Arg::Symbol(s) => CallKey::Literal(s.clone()),
                    })
                    .collect(),
            );
            if let Some(cached) = eg.analysis.call_cache.get(&key) {
                return cached.map(|c| eg.find(c));
            }
            let result = f(eg, &args);
            eg.analysis.call_cache.insert(key, result);
            result
        }
    }
}

fn resolve_args(
    eg: &mut KGraph,
    call: &Call,
    subst: &Subst,
    lookup_only: bool,
) -> Option<Vec<Arg>> {
    call.args
        .iter()
        .map(|a| {
            Some(match a {
                CallArg::Term(t) => Arg::Class(instantiate(eg, t, subst, lookup_only)?),
                CallArg::Number(x) => Arg::Number(*x),
                CallArg::Symbol(s) => Arg::Symbol(s.clone()),
            })
        })
        .collect()
}

impl Applier<KNode, KilnAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        eg: &mut KGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<KNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        for cond in &self.rhs.conditions {
            // Condition arguments are looked up, never added: a condition must not grow the
            // e-graph.
            let Some(args) = resolve_args(eg, cond, subst, true) else {
                return vec![];
            };
            let Body::Condition(check) = cond.func.body else {
                unreachable!("conditions are predicates (checked by the parser)")
            };
            if !check(eg, &args) {
                return vec![];
            }
        }
        let Some(result) = instantiate(eg, &self.rhs.term, subst, false) else {
            return vec![];
        };
        if eg[result].data.sort != eg[eclass].data.sort {
            eg.analysis.counters.type_mismatches += 1;
            return vec![];
        }
        if eg.union(eclass, result) {
            vec![eg.find(eclass)]
        } else {
            vec![]
        }
    }

    fn vars(&self) -> Vec<Var> {
        fn collect(t: &Term, out: &mut Vec<Var>) {
            match t {
                Term::Var(v) => out.push(*v),
                Term::Absent => {}
                Term::Op(_, ch) => ch.iter().for_each(|c| collect(c, out)),
                Term::Call(call) => call.args.iter().for_each(|a| {
                    if let CallArg::Term(t) = a {
                        collect(t, out)
                    }
                }),
            }
        }
        let mut out = Vec::new();
        collect(&self.rhs.term, &mut out);
        for c in &self.rhs.conditions {
            collect(&Term::Call(c.clone()), &mut out);
        }
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        match parse_rule_file("passes/test.rules", text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected an error for:\n{text}"),
        }
    }

    #[test]
    fn a_well_formed_file_parses() {
        let set = parse_rule_file(
            "t.rules",
            "; a comment\n(pass demo \"demo rules\" constant-folding)\n\
             (rule drop-identity (identity ?x) => ?x)\n\
             (rule fold (batch_norm (conv ?x ?w ?b absent ?c) ?g ?beta ?m ?v ?bn)\n  => (conv ?x (scale-out-channels ?w (bn-scale ?g ?v ?bn) ?c)\n           (bn-fold-bias ?b ?beta ?m (bn-scale ?g ?v ?bn)) absent ?c)\n  (if (single-use (conv ?x ?w ?b absent ?c)) (no-activation ?c)))\n",
        )
        .unwrap();
        assert_eq!(set.name, "demo");
        assert!(set.constant_folding);
        assert_eq!(set.rules.len(), 2);
        assert_eq!(set.rules[1].line, 4);
        assert_eq!(set.rules[1].rhs.conditions.len(), 2);
        assert_eq!(set.rewrites().len(), 2);
    }

    #[test]
    fn malformed_files_report_file_line_and_column() {
        let header = "(pass t \"test\")\n";
        let cases = [
            ("(rule r (identity ?x) => ?y)", "2:26", "?y is not bound"),
            (
                "(rule r (identity ?x ?y) => ?x)",
                "2:9",
                "identity takes 1 inputs",
            ),
            (
                "(rule r (frobnicate ?x) => ?x)",
                "2:9",
                "unknown op or function frobnicate",
            ),
            (
                "(rule r (relu ?x) => (relu ?x) (if (bogus ?x)))",
                "2:36",
                "unknown condition bogus",
            ),
            ("(rule r (relu ?x) ?x)", "2:19", "expected =>"),
            ("(rule r (relu ?x) => (relu ?x)", "2:1", "never closed"),
            (
                "(rule r (conv ?x ?w ?b ?r ?a) => (conv ?x ?w ?b ?r (bn-scale ?x ?x ?a)))",
                "2:52",
                "returns Value",
            ),
            (
                "(rule r (clip ?x ?a) => ?x (if (clip-range ?a zero 6)))",
                "2:47",
                "expected a number",
            ),
            (
                "(rule r (conv ?x ?w ?b ?r ?a) => (conv ?a ?w ?b ?r ?a))",
                "2:40",
                "?a is bound to Attrs",
            ),
        ];
        for (rule, at, msg) in cases {
            let e = error_of(&format!("{header}{rule}\n"));
            assert!(
                e.starts_with(&format!("passes/test.rules:{at}: ")),
                "{rule}\n → {e}"
            );
            assert!(e.contains(msg), "{rule}\n → {e}");
        }
        assert!(error_of("(rule r (relu ?x) => ?x)").contains("must start with (pass"));
        assert!(error_of("").contains("must start with (pass"));
    }
}
