//! IR ⇄ e-graph: a [`Graph`] becomes an e-graph (one class per value, attributes as leaves),
//! and a selection of one e-node per class becomes a [`Graph`] again, keeping the names of
//! the values and nodes that survive so that dumps stay readable and diffs stay small.

use crate::analysis::{add_node, node_op, node_sort, KGraph, KGraphExt, KilnAnalysis, Sort};
use crate::error::OptError;
use crate::lang::{Head, KNode, OpAttrs, Payload, Slots};
use egg::{EGraph, Id, Language};
use kiln_ir::{Graph, Op, Output, Tensor, TensorType, ValueId};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

/// A value of the original graph and the class it started in.
#[derive(Clone, Debug)]
pub struct Origin {
    pub class: Id,
    pub value_name: String,
    pub node_name: String,
    /// Position of the producing node in the original topological order.
    pub order: usize,
}

/// What the way back needs to know about the original graph.
#[derive(Clone, Debug)]
pub struct BridgeMeta {
    pub graph_name: String,
    pub inputs: Vec<(String, TensorType)>,
    /// Graph outputs: class and value name.
    pub outputs: Vec<(Id, String)>,
    /// Every original value (single-output nodes and ports of multi-output nodes).
    pub origins: Vec<Origin>,
    /// The e-node each original node became, with its class and node name, in topological
    /// order: the extractor's starting selection.
    pub seeds: Vec<(Id, KNode, String)>,
    /// Original multi-output nodes: tuple class, node name, output value names.
    pub tuple_nodes: Vec<(Id, String, Vec<String>)>,
}

/// Translate `graph` into an e-graph. Fails (without panicking) on graphs the IR itself
/// would reject: a cycle, or a node whose types cannot be inferred.
pub fn graph_to_egraph(
    graph: &Graph,
    fold_constants: bool,
) -> Result<(KGraph, BridgeMeta), OptError> {
    let input_types: Vec<TensorType> = graph
        .inputs()
        .iter()
        .map(|&v| graph.value_type(v).clone())
        .collect();
    let mut analysis = KilnAnalysis::new(graph.consts.clone(), input_types.clone());
    analysis.fold_constants = fold_constants;
    let mut egraph: KGraph = EGraph::new(analysis);
    let order = graph.topo_order().map_err(OptError::Graph)?;
    let mut class_of: HashMap<ValueId, Id> = HashMap::new();
    let mut meta = BridgeMeta {
        graph_name: graph.name.clone(),
        inputs: graph
            .inputs()
            .iter()
            .map(|&v| (graph.value_name(v).to_string(), graph.value_type(v).clone()))
            .collect(),
        outputs: Vec::new(),
        origins: Vec::new(),
        seeds: Vec::new(),
        tuple_nodes: Vec::new(),
    };
    for (position, &nid) in order.iter().enumerate() {
        let node = graph.node(nid);
        let untypable = |msg: String| OptError::Untypable {
            node: node.name.clone(),
            op: node.op.mnemonic(),
            msg,
        };
        let enode = match &node.op {
            Op::Input { index } => KNode::Input(*index as u32),
            Op::Const(id) => {
                let quant = node.outputs[0].ty.quant.clone();
                let p = egraph
                    .analysis
                    .payloads
                    .intern(Payload::Const { id: *id, quant });
                KNode::Const(p)
            }
            op => {
                let head = Head::of(op);
                let mut children: Vec<Id> = node.inputs().iter().map(|v| class_of[v]).collect();
                let slots = match head.slots() {
                    Slots::Fixed(n) => n,
                    Slots::Optional { max, .. } => max,
                    Slots::Variadic => children.len(),
                };
                if children.len() > slots {
                    return Err(untypable(format!(
                        "{} inputs, at most {slots} expected",
                        children.len()
                    )));
                }
                if children.len() < slots {
                    let absent = egraph.add(KNode::Absent);
                    children.resize(slots, absent);
                }
                if head.has_attrs() {
                    let attrs = OpAttrs {
                        op: op.clone(),
                        outputs: node.outputs.len(),
                        out_types: op
                            .has_free_output_type()
                            .then(|| node.outputs.iter().map(|o| o.ty.clone()).collect()),
                    };
                    children.push(egraph.add_attrs(attrs));
                } else if node.outputs.len() != 1 {
                    return Err(untypable(format!(
                        "{} outputs, the op has one",
                        node.outputs.len()
                    )));
                }
                KNode::op(head, children)
            }
        };
        node_sort(&egraph, &enode).map_err(untypable)?;
        let class = add_node(&mut egraph, enode.clone());
        meta.seeds.push((class, enode, node.name.clone()));
        if node.outputs.len() == 1 {
            class_of.insert(ValueId { node: nid, port: 0 }, class);
        } else {
            meta.tuple_nodes.push((
                class,
                node.name.clone(),
                node.outputs.iter().map(|o| o.name.clone()).collect(),
            ));
            for port in 0..node.outputs.len() {
                let pnode = KNode::Port(port as u16, [class]);
                let pclass = add_node(&mut egraph, pnode.clone());
                meta.seeds.push((pclass, pnode, node.name.clone()));
                class_of.insert(
                    ValueId {
                        node: nid,
                        port: port as u16,
                    },
                    pclass,
                );
            }
        }
        for (port, out) in node.outputs.iter().enumerate() {
            let v = ValueId {
                node: nid,
                port: port as u16,
            };
            meta.origins.push(Origin {
                class: class_of[&v],
                value_name: out.name.clone(),
                node_name: node.name.clone(),
                order: position,
            });
            let data = &mut egraph[class_of[&v]].data;
            *data.original_uses.get_or_insert(0) += graph.use_count(v);
        }
    }
    meta.outputs = graph
        .outputs()
        .iter()
        .map(|v| (class_of[v], graph.value_name(*v).to_string()))
        .collect();
    egraph.analysis.graph_outputs = meta.outputs.iter().map(|(c, _)| *c).collect();
    egraph.rebuild();
    Ok((egraph, meta))
}

/// Input roles used to name values the rules created (`conv1.w` for a folded weight).
fn input_role(head: Head, slot: usize) -> String {
    let roles: &[&str] = match head.name() {
        "conv" => &["x", "w", "b", "residual"],
        "conv_transpose" | "qconv" => &["x", "w", "b"],
        // ONNX calls them A, B, C; B is the weight and C the bias, named as for conv.
        "gemm" => &["x", "w", "b"],
        "batch_norm" => &["x", "scale", "bias", "mean", "var"],
        "add" | "sub" | "mul" | "div" | "matmul" => &["a", "b"],
        _ => &[],
    };
    roles
        .get(slot)
        .map(|r| r.to_string())
        .unwrap_or_else(|| format!("in{slot}"))
}

/// Build the graph that `choice` (one e-node per reachable class, canonical children)
/// selects.
pub fn selection_to_graph(
    egraph: &KGraph,
    meta: &BridgeMeta,
    choice: &HashMap<Id, KNode>,
) -> Graph {
    let find = |id: Id| egraph.find(id);
    // Names of original values by class: the earliest original value of a class names it,
    // except that graph outputs keep their own names.
    let mut class_names: HashMap<Id, (String, String)> = HashMap::new();
    let mut origins: Vec<&Origin> = meta.origins.iter().collect();
    origins.sort_by_key(|o| o.order);
    for o in &origins {
        class_names
            .entry(find(o.class))
            .or_insert_with(|| (o.value_name.clone(), o.node_name.clone()));
    }
    let mut output_named: HashSet<Id> = HashSet::new();
    for (class, name) in &meta.outputs {
        let c = find(*class);
        if output_named.insert(c) {
            let node_name = origins
                .iter()
                .find(|o| &o.value_name == name)
                .map(|o| o.node_name.clone())
                .unwrap_or_else(|| name.clone());
            class_names.insert(c, (name.clone(), node_name));
        }
    }
    let tuple_names: HashMap<Id, (String, Vec<String>)> = meta
        .tuple_nodes
        .iter()
        .map(|(c, n, outs)| (find(*c), (n.clone(), outs.clone())))
        .collect();

    // Names already taken: every original name, so a generated one never shadows one.
    let mut taken: HashSet<String> = origins
        .iter()
        .flat_map(|o| [o.value_name.clone(), o.node_name.clone()])
        .collect();
    taken.extend(meta.inputs.iter().map(|(n, _)| n.clone()));
    let fresh = |base: &str, taken: &mut HashSet<String>| -> String {
        if taken.insert(base.to_string()) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| taken.insert(n.clone()))
            .expect("some suffix is free")
    };

    // Depth-first from the outputs: pre-order assigns name hints to new classes (from the
    // first consumer), post-order is a topological order to build in.
    let mut hint: HashMap<Id, String> = HashMap::new();
    let mut hint_parent: HashMap<Id, Id> = HashMap::new();
    let mut post: Vec<Id> = Vec::new();
    let mut state: HashMap<Id, bool> = HashMap::new(); // false: open, true: done
    for (root, name) in &meta.outputs {
        let root = find(*root);
        hint.entry(root).or_insert_with(|| name.clone());
        let mut stack: Vec<(Id, usize)> = vec![(root, 0)];
        if state.contains_key(&root) {
            continue;
        }
        state.insert(root, false);
        while let Some((c, next)) = stack.pop() {
            let node = &choice[&c];
            let children = node.children();
            if next < children.len() {
                stack.push((c, next + 1));
                let child = find(children[next]);
                if let Entry::Vacant(slot) = state.entry(child) {
                    slot.insert(false);
                    let parent_name = class_names
                        .get(&c)
                        .map(|(v, _)| v.clone())
                        .or_else(|| hint.get(&c).cloned())
                        .unwrap_or_default();
                    let role = match node {
                        KNode::Op(h, _) => input_role(*h, next),
                        _ => format!("out{next}"),
                    };
                    hint.entry(child)
                        .or_insert_with(|| format!("{parent_name}.{role}"));
                    hint_parent.entry(child).or_insert(c);
                    stack.push((child, 0));
                }
            } else {
                state.insert(c, true);
                post.push(c);
            }
        }
    }

    let order = build_order(egraph, meta, choice, &post, &hint_parent);

    // A class whose selected op differs from the op it started with was fused or folded:
    // name its node after the original node of that op kind it absorbed (a conv that took
    // in its BatchNorm and Relu keeps the conv's node name), found among the original
    // operands that the selection no longer computes.
    let mut seed_of: HashMap<Id, (&KNode, &str)> = HashMap::new();
    for (class, node, name) in &meta.seeds {
        seed_of.entry(find(*class)).or_insert((node, name.as_str()));
    }
    let mut used_node_names: HashSet<String> = HashSet::new();
    let absorbed_name = |c: Id, head: Head, used: &mut HashSet<String>| -> Option<String> {
        let (seed, _) = seed_of.get(&c)?;
        if seed.head() == Some(head) {
            return None;
        }
        let mut frontier: Vec<Id> = seed.children().iter().map(|&i| find(i)).collect();
        for _depth in 0..3 {
            let mut next = Vec::new();
            for k in frontier {
                if choice.contains_key(&k) {
                    continue; // still computed by the selection: not absorbed
                }
                if let Some((kseed, kname)) = seed_of.get(&k) {
                    if kseed.head() == Some(head) && !used.contains(*kname) {
                        return Some(kname.to_string());
                    }
                    next.extend(kseed.children().iter().map(|&i| find(i)));
                }
            }
            frontier = next;
        }
        None
    };

    let mut g = Graph::new(meta.graph_name.clone());
    let mut value_of: HashMap<Id, ValueId> = HashMap::new();
    let mut input_values = Vec::new();
    for (i, (name, ty)) in meta.inputs.iter().enumerate() {
        let v = g.add_input(name.clone(), ty.clone());
        input_values.push(v);
        if let Some(&c) = egraph.lookup(KNode::Input(i as u32)).as_ref() {
            value_of.entry(c).or_insert(v);
        }
    }
    for &c in &order {
        if value_of.contains_key(&c) {
            continue;
        }
        let node = &choice[&c];
        // Leaves that are not values (attributes, `absent`) take no name; graph inputs keep
        // theirs.
        if matches!(node, KNode::Attrs(_) | KNode::Absent | KNode::Input(_)) {
            if let KNode::Input(i) = node {
                value_of.insert(c, input_values[*i as usize]);
            }
            continue;
        }
        let (value_name, node_name) = match class_names.get(&c) {
            Some((v, n)) => (v.clone(), n.clone()),
            None => {
                let base = hint.get(&c).cloned().unwrap_or_else(|| "v".into());
                let v = fresh(&base, &mut taken);
                (v.clone(), v)
            }
        };
        match node {
            KNode::Input(_) | KNode::Attrs(_) | KNode::Absent => unreachable!("handled above"),
            KNode::Const(p) => {
                let Payload::Const { id, quant } = egraph.analysis.payloads.get(*p) else {
                    unreachable!("const leaves hold const payloads (checked on add)")
                };
                let value = egraph
                    .analysis
                    .pool
                    .get(*id)
                    .expect("const leaves refer to pool entries (checked on add)")
                    .clone();
                // A const node is named after its value (as the importer names them).
                let v = g.add_const_value(value_name, value, quant.clone());
                value_of.insert(c, v);
            }
            KNode::Port(port, [t]) => {
                let t = value_of[&find(*t)];
                let v = ValueId {
                    node: t.node,
                    port: *port,
                };
                if class_names.contains_key(&c) {
                    g.output_mut(v).name = value_name;
                }
                value_of.insert(c, v);
            }
            KNode::Op(head, _) => {
                let (attrs, _) =
                    node_op(egraph, node).expect("selected nodes were typed when added");
                let mut inputs: Vec<ValueId> = Vec::new();
                let tensor_children: Vec<Id> =
                    node.tensor_children().iter().map(|&i| find(i)).collect();
                let last_present = tensor_children
                    .iter()
                    .rposition(|&i| !egraph.is_absent(i))
                    .map_or(0, |p| p + 1);
                for (slot, &child) in tensor_children[..last_present].iter().enumerate() {
                    if egraph.is_absent(child) {
                        // Only conv's bias can be absent before a present residual: an IR
                        // node has no holes, so the bias becomes explicit zeros.
                        let out = egraph.tensor_type(c).expect("a conv class is a tensor");
                        let zeros = Tensor::zeros(out.dtype, vec![out.shape[1]])
                            .expect("a channel count fits in memory");
                        let name = fresh(
                            &format!("{value_name}.{}", input_role(*head, slot)),
                            &mut taken,
                        );
                        inputs.push(g.add_const(name, zeros, None));
                    } else {
                        inputs.push(value_of[&child]);
                    }
                }
                let (node_name, outputs): (String, Vec<Output>) = match egraph.sort_of(c) {
                    Sort::Tensor(ty) => (
                        node_name,
                        vec![Output {
                            name: value_name.clone(),
                            ty: ty.clone(),
                        }],
                    ),
                    Sort::Tuple(types) => {
                        let (tuple_node, names) =
                            tuple_names.get(&c).cloned().unwrap_or_else(|| {
                                let names = (0..types.len())
                                    .map(|i| fresh(&format!("{value_name}.out{i}"), &mut taken))
                                    .collect();
                                (node_name, names)
                            });
                        let outputs = types
                            .iter()
                            .zip(names)
                            .map(|(ty, name)| Output {
                                name,
                                ty: ty.clone(),
                            })
                            .collect();
                        (tuple_node, outputs)
                    }
                    other => unreachable!("op classes are tensors or tuples, not {other:?}"),
                };
                let node_name = absorbed_name(c, *head, &mut used_node_names).unwrap_or(node_name);
                let node_name = if used_node_names.contains(&node_name) {
                    fresh(&node_name, &mut taken)
                } else {
                    node_name
                };
                used_node_names.insert(node_name.clone());
                let values = g.add_node_typed(node_name, attrs.op, &inputs, outputs);
                value_of.insert(c, values[0]);
            }
        }
    }
    // Graph outputs keep their names: an output whose class was built under another name
    // (two differently named outputs that turned out equal, or an output equal to a graph
    // input) goes through an identity node carrying its name.
    let mut outputs = Vec::new();
    for (class, name) in &meta.outputs {
        let v = value_of[&find(*class)];
        if g.value_name(v) == name {
            outputs.push(v);
        } else {
            let ty = g.value_type(v).clone();
            let out = g.add_node_typed(
                name.clone(),
                Op::Identity,
                &[v],
                vec![Output {
                    name: name.clone(),
                    ty,
                }],
            );
            outputs.push(out[0]);
        }
    }
    g.set_outputs(outputs);
    g
}

/// The order to build the selected classes in: topological, and otherwise the original
/// graph's order (so an unchanged graph prints unchanged); a class the rules created goes
/// just before the consumer that first reached it.
fn build_order(
    egraph: &KGraph,
    meta: &BridgeMeta,
    choice: &HashMap<Id, KNode>,
    post: &[Id],
    discovered_by: &HashMap<Id, Id>,
) -> Vec<Id> {
    let find = |id: Id| egraph.find(id);
    let mut position: HashMap<Id, usize> = HashMap::new();
    for (i, (class, _, _)) in meta.seeds.iter().enumerate() {
        position.entry(find(*class)).or_insert(i);
    }
    // Post-order index: a new class's operands come in slot order (a folded conv's weight
    // before its bias).
    let discovery: HashMap<Id, usize> = post.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    // key: (original position, or the discovering consumer's; new before original; DFS order)
    let mut keys: HashMap<Id, (usize, u8, usize)> = HashMap::new();
    fn key_of(
        c: Id,
        position: &HashMap<Id, usize>,
        discovered_by: &HashMap<Id, Id>,
        discovery: &HashMap<Id, usize>,
        keys: &mut HashMap<Id, (usize, u8, usize)>,
    ) -> (usize, u8, usize) {
        if let Some(&k) = keys.get(&c) {
            return k;
        }
        // Walk up the discovery chain to the nearest original class (iteratively: chains
        // of new classes can be long).
        let mut chain = vec![c];
        let mut pos = usize::MAX;
        let mut cur = c;
        while let Some(&parent) = discovered_by.get(&cur) {
            if let Some(&p) = position.get(&parent) {
                pos = p;
                break;
            }
            if let Some(&(p, _, _)) = keys.get(&parent) {
                pos = p;
                break;
            }
            chain.push(parent);
            cur = parent;
        }
        for &k in &chain {
            let key = match position.get(&k) {
                Some(&p) => (p, 1, discovery[&k]),
                None => (pos, 0, discovery[&k]),
            };
            keys.insert(k, key);
        }
        keys[&c]
    }
    let mut indegree: HashMap<Id, usize> = HashMap::new();
    let mut users: HashMap<Id, Vec<Id>> = HashMap::new();
    for &c in post {
        let mut children: Vec<Id> = choice[&c].children().iter().map(|&i| find(i)).collect();
        children.sort();
        children.dedup();
        indegree.insert(c, children.len());
        for ch in children {
            users.entry(ch).or_default().push(c);
        }
    }
    let mut ready = std::collections::BTreeSet::new();
    for &c in post {
        if indegree[&c] == 0 {
            ready.insert((
                key_of(c, &position, discovered_by, &discovery, &mut keys),
                c,
            ));
        }
    }
    let mut order = Vec::with_capacity(post.len());
    while let Some((_, c)) = ready.pop_first() {
        order.push(c);
        for &u in users.get(&c).map(Vec::as_slice).unwrap_or(&[]) {
            let d = indegree.get_mut(&u).expect("users are selected classes");
            *d -= 1;
            if *d == 0 {
                ready.insert((
                    key_of(u, &position, discovered_by, &discovery, &mut keys),
                    u,
                ));
            }
        }
    }
    debug_assert_eq!(order.len(), post.len(), "the selection is acyclic");
    order
}
