//! The e-class analysis: every class carries its sort (a tensor type, a tuple of types for
//! multi-output ops, an attribute set, or `absent`) and, for constant classes, the pool id of
//! its value. Types are computed by `kiln_ir::infer_types` from the children, so every e-node
//! a rule adds is typed the same way the IR types a node. Merging classes of different types,
//! or adding an e-node that cannot be typed, is an internal bug: the analysis records it, the
//! runner stops, and the pass fails with [`crate::OptError::Internal`] instead of picking one.

use crate::lang::{Head, KNode, OpAttrs, Payload, PayloadId, PayloadTable, Slots};
use egg::{Analysis, DidMerge, EGraph, Id};
use kiln_ir::{infer_types, ConstId, ConstPool, ConstValue, Quant, Tensor, TensorType};
use std::collections::HashMap;

pub type KGraph = EGraph<KNode, KilnAnalysis>;

/// What an e-class denotes.
#[derive(Clone, Debug, PartialEq)]
pub enum Sort {
    Tensor(TensorType),
    /// The outputs of a multi-output op, read through `port:N` nodes.
    Tuple(Vec<TensorType>),
    Attrs(PayloadId),
    Absent,
}

#[derive(Clone, Debug)]
pub struct ClassData {
    pub sort: Sort,
    /// Pool id of the class's value when it is a known constant.
    pub constant: Option<ConstId>,
    /// Uses of the original graph values in this class (node inputs and graph outputs,
    /// summed over merged values); `None` for classes the rules created. Rules' `single-use`
    /// reads it: counting e-graph parents instead would see every alternative a rule added
    /// (a BN that absorbed a following mul is a second parent of the conv before it).
    pub original_uses: Option<usize>,
}

/// Counters the analysis and the rule appliers keep for `--stats`.
#[derive(Clone, Debug, Default)]
pub struct AnalysisCounters {
    /// Op classes whose value was computed at compile time (constant folding).
    pub folded_constants: usize,
    /// Rule applications skipped because the replacement's type differed from the matched
    /// value's (an implicit side condition of every rule: equal values have equal types).
    pub type_mismatches: usize,
    /// Rule applications skipped because the replacement could not be typed (e.g. a rule
    /// built a node with incompatible shapes: the rewrite does not apply to that match).
    pub ill_typed: usize,
}

/// Argument of a memoized rule-function call: a class or a literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CallKey {
    Class(Id),
    Literal(String),
}

/// The analysis state: the constant pool (folded constants are interned into it), the
/// attribute/constant payload table, graph input types, and memoized function calls.
pub struct KilnAnalysis {
    pub pool: ConstPool,
    pub payloads: PayloadTable,
    pub input_types: Vec<TensorType>,
    /// Classes of the graph outputs (a graph output is a use that no e-node records).
    pub graph_outputs: Vec<Id>,
    /// Evaluate ops whose inputs are all constant (the `simplify` pass turns this on).
    pub fold_constants: bool,
    /// Results of rule functions by (function, canonical arguments): a rule is re-applied to
    /// the same match every iteration, and weight folds are too costly to recompute.
    pub call_cache: HashMap<(&'static str, Vec<CallKey>), Option<Id>>,
    pub counters: AnalysisCounters,
    /// The first internal inconsistency seen (a merge of differently typed classes, an
    /// untypable e-node): saturation stops and the pass reports it as a bug.
    pub internal_error: Option<String>,
}

impl KilnAnalysis {
    pub fn new(pool: ConstPool, input_types: Vec<TensorType>) -> KilnAnalysis {
        KilnAnalysis {
            pool,
            payloads: PayloadTable::default(),
            input_types,
            graph_outputs: Vec::new(),
            fold_constants: false,
            call_cache: HashMap::new(),
            counters: AnalysisCounters::default(),
            internal_error: None,
        }
    }
}

/// Largest tensor constant folding will materialize (elements): folding is for shape-like
/// and weight-preprocessing subgraphs, not for expanding data.
const MAX_FOLDED_ELEMENTS: usize = 1 << 24;

/// The sort of `node` given its children's classes, or why it cannot be typed.
pub fn node_sort(egraph: &KGraph, node: &KNode) -> Result<Sort, String> {
    let an = &egraph.analysis;
    match node {
        KNode::Input(i) => an
            .input_types
            .get(*i as usize)
            .cloned()
            .map(Sort::Tensor)
            .ok_or_else(|| format!("graph input {i} does not exist")),
        KNode::Const(p) => match an.payloads.get(*p) {
            Payload::Const { id, quant } => {
                let value = an
                    .pool
                    .get(*id)
                    .ok_or_else(|| format!("constant @c{} does not exist", id.0))?;
                Ok(Sort::Tensor(TensorType {
                    dtype: value.dtype(),
                    shape: value.shape().to_vec(),
                    quant: quant.clone(),
                }))
            }
            Payload::Attrs(_) => Err("const leaf refers to an attribute payload".into()),
        },
        KNode::Attrs(p) => match an.payloads.get(*p) {
            Payload::Attrs(_) => Ok(Sort::Attrs(*p)),
            Payload::Const { .. } => Err("attrs leaf refers to a constant payload".into()),
        },
        KNode::Absent => Ok(Sort::Absent),
        KNode::Port(port, [t]) => match &egraph[*t].data.sort {
            Sort::Tuple(types) => types
                .get(*port as usize)
                .cloned()
                .map(Sort::Tensor)
                .ok_or_else(|| format!("port {port} of a {}-output op", types.len())),
            other => Err(format!("port of a non-tuple class ({other:?})")),
        },
        KNode::Op(head, _) => op_node_sort(egraph, *head, node),
    }
}

/// The op (with attributes) of an op e-node, and its tensor inputs' types in order with
/// trailing absent inputs dropped.
pub fn node_op<'a>(
    egraph: &'a KGraph,
    node: &KNode,
) -> Result<(OpAttrs, Vec<Option<&'a TensorType>>), String> {
    let head = node.head().ok_or("not an op node")?;
    let attrs = match node.attrs_child() {
        Some(a) => match &egraph[a].data.sort {
            Sort::Attrs(p) => egraph
                .analysis
                .payloads
                .attrs(*p)
                .cloned()
                .ok_or("attrs class without attributes")?,
            other => {
                return Err(format!(
                    "{} expects attributes as its last child, got {other:?}",
                    head.name()
                ))
            }
        },
        None => OpAttrs::new(head.attrless_op().ok_or("head without attributes")?),
    };
    if Head::of(&attrs.op) != head {
        return Err(format!(
            "{} node carries attributes of {}",
            head.name(),
            attrs.op.mnemonic()
        ));
    }
    let mut inputs = Vec::new();
    for &c in node.tensor_children() {
        match &egraph[c].data.sort {
            Sort::Tensor(t) => inputs.push(Some(t)),
            Sort::Absent => inputs.push(None),
            other => return Err(format!("{} input is not a tensor ({other:?})", head.name())),
        }
    }
    let arity_ok = match head.slots() {
        Slots::Fixed(n) => inputs.len() == n,
        Slots::Optional { max, .. } => inputs.len() == max,
        Slots::Variadic => !inputs.is_empty(),
    };
    if !arity_ok {
        return Err(format!("{} with {} inputs", head.name(), inputs.len()));
    }
    while inputs.last() == Some(&None) {
        inputs.pop();
    }
    Ok((attrs, inputs))
}

fn op_node_sort(egraph: &KGraph, head: Head, node: &KNode) -> Result<Sort, String> {
    let (attrs, inputs) = node_op(egraph, node)?;
    let required = match head.slots() {
        Slots::Optional { required, .. } => required,
        _ => inputs.len(),
    };
    if inputs.len() < required || inputs.iter().take(required).any(Option::is_none) {
        return Err(format!("{} is missing a required input", head.name()));
    }
    // conv's fourth slot is the fused residual: the IR's shape inference types x, w, [b];
    // the residual must have exactly the output's type.
    let (in_types, residual): (Vec<&TensorType>, Option<&TensorType>) =
        if head.name() == "conv" && inputs.len() == 4 {
            let r = inputs[3];
            let mut xs: Vec<Option<&TensorType>> = inputs[..3].to_vec();
            while xs.last() == Some(&None) {
                xs.pop();
            }
            (
                xs.into_iter().map(|t| t.expect("checked above")).collect(),
                r,
            )
        } else {
            if inputs.iter().any(Option::is_none) {
                return Err(format!(
                    "{} has an absent input before a present one",
                    head.name()
                ));
            }
            (
                inputs.iter().map(|t| t.expect("checked above")).collect(),
                None,
            )
        };
    let types = match &attrs.out_types {
        Some(types) => types.clone(),
        None => infer_types(&attrs.op, &in_types)?,
    };
    if types.len() < attrs.outputs || attrs.outputs == 0 {
        return Err(format!(
            "{} has {} outputs, the op produces {}",
            head.name(),
            attrs.outputs,
            types.len()
        ));
    }
    if let Some(r) = residual {
        if r != &types[0] {
            return Err(format!(
                "conv residual {r} differs from the output {}",
                types[0]
            ));
        }
    }
    Ok(if attrs.outputs == 1 {
        Sort::Tensor(types.into_iter().next().expect("one output"))
    } else {
        Sort::Tuple(types.into_iter().take(attrs.outputs).collect())
    })
}

/// Convenience accessors used by the bridge, the extractor and the rule functions.
pub trait KGraphExt {
    fn sort_of(&self, id: Id) -> &Sort;
    fn tensor_type(&self, id: Id) -> Option<&TensorType>;
    fn const_tensor(&self, id: Id) -> Option<&Tensor>;
    fn attrs_of(&self, id: Id) -> Option<&OpAttrs>;
    fn is_absent(&self, id: Id) -> bool;
    /// Add a constant leaf for `tensor` (interned in the pool).
    fn add_const(&mut self, tensor: Tensor, quant: Option<Quant>) -> Id;
    /// Add an attrs leaf.
    fn add_attrs(&mut self, attrs: OpAttrs) -> Id;
}

impl KGraphExt for KGraph {
    fn sort_of(&self, id: Id) -> &Sort {
        &self[id].data.sort
    }

    fn tensor_type(&self, id: Id) -> Option<&TensorType> {
        match &self[id].data.sort {
            Sort::Tensor(t) => Some(t),
            _ => None,
        }
    }

    fn const_tensor(&self, id: Id) -> Option<&Tensor> {
        let c = self[id].data.constant?;
        self.analysis.pool.get(c)?.tensor()
    }

    fn attrs_of(&self, id: Id) -> Option<&OpAttrs> {
        match &self[id].data.sort {
            Sort::Attrs(p) => self.analysis.payloads.attrs(*p),
            _ => None,
        }
    }

    fn is_absent(&self, id: Id) -> bool {
        self[id].data.sort == Sort::Absent
    }

    fn add_const(&mut self, tensor: Tensor, quant: Option<Quant>) -> Id {
        let id = self.analysis.pool.intern(ConstValue::Data(tensor));
        let p = self.analysis.payloads.intern(Payload::Const { id, quant });
        self.add(KNode::Const(p))
    }

    fn add_attrs(&mut self, attrs: OpAttrs) -> Id {
        let p = self.analysis.payloads.intern(Payload::Attrs(attrs));
        self.add(KNode::Attrs(p))
    }
}

/// Fold an op node whose inputs are all constants, if that is enabled and possible.
fn fold_constant(egraph: &mut KGraph, node: &KNode, sort: &Sort) -> Option<ConstId> {
    if !egraph.analysis.fold_constants {
        return None;
    }
    let Sort::Tensor(out_ty) = sort else {
        return None;
    };
    if out_ty.quant.is_some() || out_ty.numel() > MAX_FOLDED_ELEMENTS {
        return None;
    }
    let (attrs, inputs) = node_op(egraph, node).ok()?;
    if attrs.op.has_free_output_type() || attrs.outputs != 1 || inputs.iter().any(Option::is_none) {
        return None;
    }
    let mut tensors = Vec::new();
    let mut types = Vec::new();
    for &c in node.tensor_children() {
        if egraph.is_absent(c) {
            continue;
        }
        let ty = egraph.tensor_type(c)?;
        if ty.quant.is_some() {
            return None;
        }
        types.push(ty);
        tensors.push(egraph.const_tensor(c)?);
    }
    let result = crate::consteval::evaluate(&attrs.op, &tensors, &types, out_ty)?;
    if result.dtype() != out_ty.dtype || result.shape() != out_ty.shape.as_slice() {
        return None;
    }
    let before = egraph.analysis.pool.len();
    let id = egraph.analysis.pool.intern(ConstValue::Data(result));
    if egraph.analysis.pool.len() > before {
        egraph.analysis.counters.folded_constants += 1;
    }
    Some(id)
}

impl Analysis<KNode> for KilnAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut KGraph, enode: &KNode, _id: Id) -> ClassData {
        let sort = match node_sort(egraph, enode) {
            Ok(sort) => sort,
            Err(msg) => {
                // The bridge and the rule applier type every node before adding it, so this
                // is a bug; the class gets a placeholder sort and the pass stops with it.
                egraph.analysis.internal_error.get_or_insert_with(|| {
                    format!("an e-node was added without a valid type ({enode}: {msg})")
                });
                return ClassData {
                    sort: Sort::Absent,
                    constant: None,
                    original_uses: None,
                };
            }
        };
        let constant = match enode {
            KNode::Const(p) => match egraph.analysis.payloads.get(*p) {
                Payload::Const { id, .. } => Some(*id),
                Payload::Attrs(_) => None,
            },
            KNode::Op(..) => fold_constant(egraph, enode, &sort),
            _ => None,
        };
        ClassData {
            sort,
            constant,
            original_uses: None,
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        if a.sort != b.sort {
            // Every rule application is type-checked before its union, so two values of
            // different types became equal through a bug. Keep `a` so the e-graph stays
            // consistent until the runner stops, and report instead of picking one.
            self.internal_error.get_or_insert_with(|| {
                format!(
                    "e-classes of different types were merged ({} and {})",
                    sort_text(&a.sort),
                    sort_text(&b.sort)
                )
            });
            return DidMerge(false, true);
        }
        // Use counts add up. Parents' data never depends on them, so a change here needs no
        // propagation (it is not reported as a change).
        a.original_uses = match (a.original_uses, b.original_uses) {
            (Some(x), Some(y)) => Some(x + y),
            (x, y) => x.or(y),
        };
        // Two constants for one class: both denote the same value (a folded weight and a
        // constant-folded expression may differ in the last bit); keep the first.
        match (a.constant, b.constant) {
            (None, Some(c)) => {
                a.constant = Some(c);
                DidMerge(true, false)
            }
            (Some(_), None) => DidMerge(false, true),
            (Some(x), Some(y)) => DidMerge(false, x != y),
            (None, None) => DidMerge(false, false),
        }
    }

    fn modify(egraph: &mut KGraph, id: Id) {
        ensure_const_leaf(egraph, id);
    }
}

fn sort_text(sort: &Sort) -> String {
    match sort {
        Sort::Tensor(t) => t.to_string(),
        Sort::Tuple(ts) => format!(
            "({})",
            ts.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Sort::Attrs(p) => format!("attributes #{}", p.0),
        Sort::Absent => "absent".into(),
    }
}

/// Give a class that is known to be constant a const leaf, so that extraction can pick the
/// constant instead of computing it. egg calls `modify` after merges only, so whoever adds an
/// op node (the bridge, the rule applier) calls this too.
pub fn ensure_const_leaf(egraph: &mut KGraph, id: Id) {
    let data = &egraph[id].data;
    let (Some(c), Sort::Tensor(ty)) = (data.constant, &data.sort) else {
        return;
    };
    let quant = ty.quant.clone();
    let p = egraph
        .analysis
        .payloads
        .intern(Payload::Const { id: c, quant });
    let leaf = egraph.add(KNode::Const(p));
    egraph.union(id, leaf);
}

/// Add an e-node (typed beforehand by [`node_sort`]) and its const leaf if it folded.
pub fn add_node(egraph: &mut KGraph, node: KNode) -> Id {
    let id = egraph.add(node);
    ensure_const_leaf(egraph, id);
    egraph.find(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egraph_with_inputs(types: Vec<TensorType>) -> KGraph {
        EGraph::new(KilnAnalysis::new(ConstPool::new(), types))
    }

    #[test]
    fn merging_classes_of_different_types_is_reported_not_picked() {
        let mut eg = egraph_with_inputs(vec![TensorType::f32(vec![2]), TensorType::f32(vec![3])]);
        let a = eg.add(KNode::Input(0));
        let b = eg.add(KNode::Input(1));
        assert!(eg.analysis.internal_error.is_none());
        eg.union(a, b);
        eg.rebuild();
        let err = eg
            .analysis
            .internal_error
            .clone()
            .expect("the conflict is recorded");
        assert!(err.contains("f32[2]") && err.contains("f32[3]"), "{err}");
    }

    #[test]
    fn merging_classes_of_one_type_adds_their_original_uses() {
        let t = TensorType::f32(vec![2]);
        let mut eg = egraph_with_inputs(vec![t.clone(), t]);
        let a = eg.add(KNode::Input(0));
        let b = eg.add(KNode::Input(1));
        eg[a].data.original_uses = Some(1);
        eg[b].data.original_uses = Some(2);
        eg.union(a, b);
        eg.rebuild();
        assert!(eg.analysis.internal_error.is_none());
        assert_eq!(eg[a].data.original_uses, Some(3));
    }

    #[test]
    fn an_untypable_e_node_is_reported() {
        let mut eg = egraph_with_inputs(vec![]);
        eg.add(KNode::Input(4));
        let err = eg.analysis.internal_error.clone().expect("recorded");
        assert!(err.contains("graph input 4 does not exist"), "{err}");
    }
}
