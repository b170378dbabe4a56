//! The graph: nodes (ops) in a petgraph `StableDiGraph`, values as `(node, output port)`,
//! edges mirroring each node's ordered input list so petgraph's algorithms (topological
//! order, users) see the data flow. All mutation goes through methods that keep node inputs
//! and edges in step; the verifier checks that they are.

use crate::error::IrError;
use crate::infer::infer_types;
use crate::op::Op;
use crate::pool::{ConstId, ConstPool, ConstValue};
use crate::tensor::Tensor;
use crate::types::{Quant, TensorType};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;

pub type NodeId = NodeIndex<u32>;

/// Output `port` of `node`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId {
    pub node: NodeId,
    pub port: u16,
}

/// One output of a node: its unique value name and its type.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub name: String,
    pub ty: TensorType,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// The node's name (from ONNX, or generated); used in every error about it.
    pub name: String,
    pub op: Op,
    inputs: Vec<ValueId>,
    pub outputs: Vec<Output>,
}

impl Node {
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }
}

/// Edge payload: which output of the source feeds which input slot of the target.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub src_port: u16,
    pub dst_slot: u16,
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    g: StableDiGraph<Node, Edge>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    pub consts: ConstPool,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            g: StableDiGraph::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            consts: ConstPool::new(),
        }
    }

    /// Add graph input number `self.inputs().len()`.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let name = name.into();
        let index = self.inputs.len();
        let node = self.g.add_node(Node {
            name: name.clone(),
            op: Op::Input { index },
            inputs: vec![],
            outputs: vec![Output { name, ty }],
        });
        let v = ValueId { node, port: 0 };
        self.inputs.push(v);
        v
    }

    /// Add a constant node holding `tensor` (interned in the pool), optionally quantized.
    pub fn add_const(
        &mut self,
        name: impl Into<String>,
        tensor: Tensor,
        quant: Option<Quant>,
    ) -> ValueId {
        self.add_const_value(name, ConstValue::Data(tensor), quant)
    }

    /// Add a constant node for any pool value (generated, opaque, data).
    pub fn add_const_value(
        &mut self,
        name: impl Into<String>,
        value: ConstValue,
        quant: Option<Quant>,
    ) -> ValueId {
        let ty = TensorType {
            dtype: value.dtype(),
            shape: value.shape().to_vec(),
            quant,
        };
        let id = self.consts.intern(value);
        self.add_const_node(name, id, ty)
    }

    /// Add a node referring to an existing pool entry.
    pub fn add_const_node(
        &mut self,
        name: impl Into<String>,
        id: ConstId,
        ty: TensorType,
    ) -> ValueId {
        let name = name.into();
        let node = self.g.add_node(Node {
            name: name.clone(),
            op: Op::Const(id),
            inputs: vec![],
            outputs: vec![Output { name, ty }],
        });
        ValueId { node, port: 0 }
    }

    /// Add a node whose output types come from shape inference. `output_names` fixes how
    /// many outputs the node has (e.g. MaxPool with or without Indices).
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[ValueId],
        output_names: Vec<String>,
    ) -> Result<Vec<ValueId>, IrError> {
        let name = name.into();
        let types = {
            let in_types: Vec<&TensorType> = inputs.iter().map(|&v| self.value_type(v)).collect();
            infer_types(&op, &in_types).map_err(|msg| IrError::Infer {
                node: name.clone(),
                op: op.mnemonic(),
                msg,
            })?
        };
        if output_names.is_empty() || output_names.len() > types.len() {
            return Err(IrError::Infer {
                node: name,
                op: op.mnemonic(),
                msg: format!(
                    "has {} outputs, the op produces {}",
                    output_names.len(),
                    types.len()
                ),
            });
        }
        let outputs = output_names
            .into_iter()
            .zip(types)
            .map(|(name, ty)| Output { name, ty })
            .collect();
        Ok(self.insert_node(name, op, inputs, outputs))
    }

    /// Add a node with explicitly given output types (the text parser, and ops whose output
    /// quantization is a free choice such as `quantize` or `qconv`). The verifier checks the
    /// types against inference.
    pub fn add_node_typed(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[ValueId],
        outputs: Vec<Output>,
    ) -> Vec<ValueId> {
        self.insert_node(name.into(), op, inputs, outputs)
    }

    fn insert_node(
        &mut self,
        name: String,
        op: Op,
        inputs: &[ValueId],
        outputs: Vec<Output>,
    ) -> Vec<ValueId> {
        let n_out = outputs.len();
        let node = self.g.add_node(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            outputs,
        });
        for (slot, v) in inputs.iter().enumerate() {
            self.g.add_edge(
                v.node,
                node,
                Edge {
                    src_port: v.port,
                    dst_slot: slot as u16,
                },
            );
        }
        (0..n_out)
            .map(|port| ValueId {
                node,
                port: port as u16,
            })
            .collect()
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    /// Graph inputs in order.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// Graph outputs in order.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn node_mut_op(&mut self, id: NodeId) -> &mut Op {
        &mut self.g[id].op
    }

    pub fn contains_node(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    pub fn output(&self, v: ValueId) -> &Output {
        &self.g[v.node].outputs[v.port as usize]
    }

    pub fn output_mut(&mut self, v: ValueId) -> &mut Output {
        &mut self.g[v.node].outputs[v.port as usize]
    }

    pub fn value_type(&self, v: ValueId) -> &TensorType {
        &self.output(v).ty
    }

    pub fn value_name(&self, v: ValueId) -> &str {
        &self.output(v).name
    }

    /// Does `v` name an existing node output?
    pub fn value_exists(&self, v: ValueId) -> bool {
        self.g
            .node_weight(v.node)
            .is_some_and(|n| (v.port as usize) < n.outputs.len())
    }

    /// The constant behind a value, if it is produced by a `const` node with data.
    pub fn const_tensor(&self, v: ValueId) -> Option<&Tensor> {
        match self.g.node_weight(v.node)?.op {
            Op::Const(id) => self.consts.get(id)?.tensor(),
            _ => None,
        }
    }

    /// All node ids (in insertion order, which is not necessarily topological).
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Nodes in a deterministic topological order: inputs first (in order), then every other
    /// node as soon as its inputs are available, ties broken by insertion order.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, IrError> {
        let mut indeg: std::collections::HashMap<NodeId, usize> =
            self.g.node_indices().map(|n| (n, 0)).collect();
        for e in self.g.edge_references() {
            *indeg
                .get_mut(&e.target())
                .expect("edge targets an existing node") += 1;
        }
        let mut ready: std::collections::BTreeSet<NodeId> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| n)
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg
                    .get_mut(&e.target())
                    .expect("edge targets an existing node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != indeg.len() {
            let stuck = indeg
                .iter()
                .filter(|(n, _)| !order.contains(n))
                .map(|(&n, _)| n)
                .min()
                .expect("some node is not ordered");
            return Err(IrError::Cycle {
                node: self.g[stuck].name.clone(),
            });
        }
        Ok(order)
    }

    /// Every use of `v`: (consumer node, input slot).
    pub fn users(&self, v: ValueId) -> Vec<(NodeId, usize)> {
        let mut users: Vec<(NodeId, usize)> = self
            .g
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().src_port == v.port)
            .map(|e| (e.target(), e.weight().dst_slot as usize))
            .collect();
        users.sort();
        users
    }

    /// Number of uses of `v`, counting use as a graph output.
    pub fn use_count(&self, v: ValueId) -> usize {
        self.users(v).len() + self.outputs.iter().filter(|&&o| o == v).count()
    }

    /// Point every use of `old` (node inputs and graph outputs) at `new`.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) {
        for (user, slot) in self.users(old) {
            self.set_input(user, slot, new);
        }
        for o in self.outputs.iter_mut() {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Rewire input `slot` of `node` to `v`.
    pub fn set_input(&mut self, node: NodeId, slot: usize, v: ValueId) {
        let old = self.g[node].inputs[slot];
        let edge = self
            .g
            .edges_directed(node, Direction::Incoming)
            .find(|e| e.source() == old.node && e.weight().dst_slot as usize == slot)
            .map(|e| e.id())
            .expect("every node input has its edge");
        self.g.remove_edge(edge);
        self.g.add_edge(
            v.node,
            node,
            Edge {
                src_port: v.port,
                dst_slot: slot as u16,
            },
        );
        self.g[node].inputs[slot] = v;
    }

    /// Remove a node and its edges. Its outputs must no longer be used.
    pub fn remove_node(&mut self, id: NodeId) {
        self.g.remove_node(id);
    }

    /// Remove every node that no graph output depends on (graph inputs are kept).
    pub fn remove_dead_nodes(&mut self) -> usize {
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|v| v.node).collect();
        stack.extend(self.inputs.iter().map(|v| v.node));
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g[n].inputs.iter().map(|v| v.node));
            }
        }
        let dead: Vec<NodeId> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for &n in &dead {
            self.g.remove_node(n);
        }
        dead.len()
    }

    /// The underlying petgraph, for algorithms and the verifier.
    pub fn petgraph(&self) -> &StableDiGraph<Node, Edge> {
        &self.g
    }
}
