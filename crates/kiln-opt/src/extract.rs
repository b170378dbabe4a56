//! Extraction: choose one e-node per class so that the selected graph is cheapest under a cost
//! model of MACs + bytes moved + kernel launches, counting shared work once.
//!
//! A tree cost (what egg's `Extractor` minimizes) charges a node once per path to it, so it
//! duplicates shared subgraphs and, on DenseNet-style graphs where every layer feeds every
//! later one, grows exponentially. Instead the extractor starts from the original graph's
//! nodes (a valid, acyclic selection), gives classes the rules created their tree-cheapest
//! node, then improves the selection one class at a time against the exact DAG cost (each
//! selected class counted once). The DAG cost is kept incrementally with reference counts,
//! so trying a switch costs only the classes it brings in or drops, and a switch that would
//! close a cycle is rejected before it is tried.

use crate::analysis::{node_op, KGraph, KGraphExt, Sort};
use crate::bridge::BridgeMeta;
use crate::lang::KNode;
use egg::{Id, Language};
use std::collections::{HashMap, VecDeque};

/// Fixed cost of launching one kernel, in the same unit as one MAC or one byte moved: small
/// elementwise kernels are dominated by it, so fusing them away pays even when no bytes are
/// saved.
pub const KERNEL_COST: f64 = 10_000.0;
/// Ops that are (or lower to) views: no kernel, no data movement. Not free, so that removing
/// them is still preferred.
const VIEW_COST: f64 = 1.0;
/// Tree costs of DenseNet-like graphs grow exponentially with depth; capping them keeps the
/// comparison finite (the tree cost only picks starting nodes for new classes).
const TREE_COST_CAP: f64 = 1e300;
/// A switch is taken when it lowers the DAG cost by more than this: the smallest real saving
/// is a view (1.0) or a variadic `sum` becoming an `add` (1.0), far above rounding error of
/// the few terms a delta sums.
const MIN_IMPROVEMENT: f64 = 1e-3;
/// Improvement sweeps over the selection; each accepted switch is a rewrite the rules found,
/// and in practice a second sweep finds nothing new.
const MAX_SWEEPS: usize = 16;

fn is_view(mnemonic: &str) -> bool {
    matches!(
        mnemonic,
        "reshape" | "flatten" | "squeeze" | "unsqueeze" | "identity" | "dropout"
    )
}

/// The cost of computing e-node `node` of class `class` once.
pub fn node_cost(egraph: &KGraph, class: Id, node: &KNode) -> f64 {
    let KNode::Op(head, _) = node else {
        return 0.0; // inputs, constants, attributes, ports: nothing to compute
    };
    if is_view(head.name()) {
        return VIEW_COST;
    }
    let Ok((attrs, inputs)) = node_op(egraph, node) else {
        return f64::INFINITY;
    };
    let out_types: Vec<&kiln_ir::TensorType> = match egraph.sort_of(class) {
        Sort::Tensor(t) => vec![t],
        Sort::Tuple(ts) => ts.iter().collect(),
        _ => return f64::INFINITY,
    };
    let bytes_in: usize = inputs.iter().flatten().map(|t| t.byte_size()).sum();
    let bytes_out: usize = out_types.iter().map(|t| t.byte_size()).sum();
    let shapes: Vec<&[usize]> = inputs
        .iter()
        .map(|t| t.map_or(&[][..], |t| t.shape.as_slice()))
        .collect();
    let macs = attrs.op.macs(&shapes, &out_types[0].shape).unwrap_or(0);
    // A two-input `sum` is the same kernel as `add`; the canonical binary form wins the tie.
    let variadic_penalty = if head.name() == "sum" { 1.0 } else { 0.0 };
    KERNEL_COST + (bytes_in + bytes_out) as f64 + macs as f64 + variadic_penalty
}

/// Result of extraction.
#[derive(Debug)]
pub struct Selection {
    /// One e-node (children canonical) per class reachable from the outputs.
    pub choice: HashMap<Id, KNode>,
    /// DAG cost of the original graph and of the selection.
    pub cost_before: f64,
    pub cost_after: f64,
}

/// One e-node as the extractor sees it: children as dense class indices (duplicates kept, so
/// that reference counts stay symmetric) and its cost.
struct Candidate {
    node: KNode,
    children: Vec<usize>,
    cost: f64,
}

/// The e-graph in dense form, with the current selection and its reference counts.
struct State {
    ids: Vec<Id>,
    candidates: Vec<Vec<Candidate>>,
    /// Selected candidate per class (`None`: no finite, well-founded node known).
    choice: Vec<Option<usize>>,
    /// Selected parents (and graph outputs) referring to each class; a class is in the
    /// selected graph exactly when its count is positive.
    refs: Vec<u32>,
    /// Position in a children-first order of the selected graph (valid for live classes).
    rank: Vec<usize>,
    roots: Vec<usize>,
    /// Scratch stamps for the cycle check.
    visit_stamp: Vec<u32>,
    stamp: u32,
}

impl State {
    fn new(egraph: &KGraph) -> State {
        let ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let candidates = ids
            .iter()
            .map(|&id| {
                egraph[id]
                    .nodes
                    .iter()
                    .map(|n| {
                        let node = n.clone().map_children(|c| egraph.find(c));
                        Candidate {
                            children: node.children().iter().map(|c| index[c]).collect(),
                            cost: node_cost(egraph, id, &node),
                            node,
                        }
                    })
                    .collect()
            })
            .collect();
        let n = ids.len();
        State {
            ids,
            candidates,
            choice: vec![None; n],
            refs: vec![0; n],
            rank: vec![0; n],
            roots: Vec::new(),
            visit_stamp: vec![0; n],
            stamp: 0,
        }
    }

    fn selected(&self, class: usize) -> &Candidate {
        &self.candidates[class][self.choice[class].expect("live classes have a choice")]
    }

    /// The tree-cheapest candidate of every class (egg's classic fixpoint, driven by a
    /// worklist of the nodes whose children just got cheaper).
    fn tree_choices(&mut self) {
        let n = self.ids.len();
        let mut users: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
        for (c, cands) in self.candidates.iter().enumerate() {
            for (i, cand) in cands.iter().enumerate() {
                for &child in &cand.children {
                    users[child].push((c, i));
                }
            }
        }
        let mut best = vec![f64::INFINITY; n];
        let mut queue: VecDeque<(usize, usize)> = VecDeque::new();
        let mut queued: Vec<Vec<bool>> = self
            .candidates
            .iter()
            .map(|c| vec![false; c.len()])
            .collect();
        for (c, cands) in self.candidates.iter().enumerate() {
            for (i, cand) in cands.iter().enumerate() {
                if cand.children.is_empty() {
                    queue.push_back((c, i));
                    queued[c][i] = true;
                }
            }
        }
        while let Some((c, i)) = queue.pop_front() {
            queued[c][i] = false;
            let cand = &self.candidates[c][i];
            if !cand.cost.is_finite() {
                continue;
            }
            let mut total = cand.cost;
            for &child in &cand.children {
                total += best[child];
            }
            if !total.is_finite() && cand.children.iter().any(|&ch| !best[ch].is_finite()) {
                continue;
            }
            let total = total.min(TREE_COST_CAP);
            if total < best[c] {
                best[c] = total;
                self.choice[c] = Some(i);
                for &(p, j) in &users[c] {
                    if !queued[p][j] {
                        queued[p][j] = true;
                        queue.push_back((p, j));
                    }
                }
            }
        }
    }

    /// Count one more reference to `class`; a class entering the selection counts its
    /// children in turn. Returns the cost added.
    fn acquire(&mut self, class: usize) -> f64 {
        let mut added = 0.0;
        let mut stack = vec![class];
        while let Some(c) = stack.pop() {
            self.refs[c] += 1;
            if self.refs[c] == 1 {
                let cand = self.selected(c);
                added += cand.cost;
                stack.extend(cand.children.iter().copied());
            }
        }
        added
    }

    /// Drop one reference to `class`; a class leaving the selection releases its children.
    /// Returns the cost removed.
    fn release(&mut self, class: usize) -> f64 {
        let mut removed = 0.0;
        let mut stack = vec![class];
        while let Some(c) = stack.pop() {
            self.refs[c] -= 1;
            if self.refs[c] == 0 {
                let cand = self.selected(c);
                removed += cand.cost;
                stack.extend(cand.children.iter().copied());
            }
        }
        removed
    }

    fn is_live(&self, class: usize) -> bool {
        self.refs[class] > 0
    }

    /// Exact DAG cost of the current selection.
    fn total(&self) -> f64 {
        (0..self.ids.len())
            .filter(|&c| self.is_live(c))
            .map(|c| self.selected(c).cost)
            .sum()
    }

    /// Number the live classes children-first (a post-order from the roots).
    fn compute_ranks(&mut self) -> Vec<usize> {
        let n = self.ids.len();
        let mut state = vec![0u8; n]; // 0 new, 1 open, 2 done
        let mut order = Vec::new();
        for &root in &self.roots {
            if state[root] != 0 {
                continue;
            }
            state[root] = 1;
            let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
            while let Some(&mut (c, ref mut next)) = stack.last_mut() {
                let children = &self.selected(c).children;
                if *next < children.len() {
                    let child = children[*next];
                    *next += 1;
                    if state[child] == 0 {
                        state[child] = 1;
                        stack.push((child, 0));
                    }
                } else {
                    state[c] = 2;
                    self.rank[c] = order.len();
                    order.push(c);
                    stack.pop();
                }
            }
        }
        order
    }

    /// Whether selecting `candidate` for `class` would make `class` its own descendant.
    fn would_cycle(&mut self, class: usize, candidate: usize) -> bool {
        self.stamp += 1;
        let stamp = self.stamp;
        let mut stack: Vec<usize> = self.candidates[class][candidate].children.clone();
        while let Some(c) = stack.pop() {
            if c == class {
                return true;
            }
            if self.visit_stamp[c] == stamp {
                continue;
            }
            self.visit_stamp[c] = stamp;
            // A live class numbered before `class` has only descendants numbered before
            // itself, so `class` is not among them.
            if self.is_live(c) && self.rank[c] < self.rank[class] {
                continue;
            }
            stack.extend(self.selected(c).children.iter().copied());
        }
        false
    }

    /// Whether every class the candidate would bring in has a choice.
    fn well_founded(&self, class: usize, candidate: usize) -> bool {
        let cand = &self.candidates[class][candidate];
        cand.cost.is_finite() && cand.children.iter().all(|&c| self.choice[c].is_some())
    }

    /// Try `candidate` for live `class`: keep it if the DAG cost drops, else undo.
    fn try_switch(&mut self, class: usize, candidate: usize) -> bool {
        let old = self.choice[class].expect("live classes have a choice");
        let old_cost = self.candidates[class][old].cost;
        let new_cost = self.candidates[class][candidate].cost;
        // Acquire the new children before releasing the old ones, so a child both share
        // never leaves the selection.
        let new_children = self.candidates[class][candidate].children.clone();
        let old_children = self.candidates[class][old].children.clone();
        let mut delta = new_cost - old_cost;
        for &c in &new_children {
            delta += self.acquire(c);
        }
        for &c in &old_children {
            delta -= self.release(c);
        }
        self.choice[class] = Some(candidate);
        if delta < -MIN_IMPROVEMENT {
            return true;
        }
        self.choice[class] = Some(old);
        for &c in &old_children {
            self.acquire(c);
        }
        for &c in &new_children {
            self.release(c);
        }
        false
    }
}

/// Choose the cheapest selection found from the original graph by single-class switches.
pub fn extract(egraph: &KGraph, meta: &BridgeMeta) -> Selection {
    let mut st = State::new(egraph);
    let index: HashMap<Id, usize> = st.ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();

    // Classes the rules created, and leaves (attributes, `absent`), start from their
    // tree-cheapest node; every original class then starts from its earliest original node.
    // Along a seed edge the original position strictly decreases and a seed never points at
    // a class the rules created, so the starting selection is acyclic — and it is the
    // original graph.
    st.tree_choices();
    let mut seeded = vec![false; st.ids.len()];
    for (class, node, _) in &meta.seeds {
        let c = index[&egraph.find(*class)];
        if seeded[c] {
            continue;
        }
        seeded[c] = true;
        let node = node.clone().map_children(|ch| egraph.find(ch));
        let i = st.candidates[c]
            .iter()
            .position(|cand| cand.node == node)
            .expect("every original node is an e-node of its class");
        st.choice[c] = Some(i);
    }
    st.roots = meta
        .outputs
        .iter()
        .map(|(c, _)| index[&egraph.find(*c)])
        .collect();
    for root in st.roots.clone() {
        st.acquire(root);
    }
    let cost_before = st.total();

    for _sweep in 0..MAX_SWEEPS {
        let mut improved = false;
        // Bottom-up, so that a fused producer is in place before its consumers are tried.
        let order = st.compute_ranks();
        for class in order {
            if !st.is_live(class) || st.candidates[class].len() < 2 {
                continue;
            }
            for candidate in 0..st.candidates[class].len() {
                if !st.is_live(class)
                    || st.choice[class] == Some(candidate)
                    || !st.well_founded(class, candidate)
                    || st.would_cycle(class, candidate)
                {
                    continue;
                }
                if st.try_switch(class, candidate) {
                    improved = true;
                    st.compute_ranks();
                }
            }
        }
        if !improved {
            break;
        }
    }
    let cost_after = st.total();
    let choice = (0..st.ids.len())
        .filter(|&c| st.is_live(c))
        .map(|c| (st.ids[c], st.selected(c).node.clone()))
        .collect();
    Selection {
        choice,
        cost_before,
        cost_after,
    }
}
