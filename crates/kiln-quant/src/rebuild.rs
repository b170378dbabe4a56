//! Copying a graph node by node into a new one while replacing some nodes: the mechanics
//! shared by the un-fusing step and Q/DQ insertion. Values are remapped as nodes are copied
//! (in topological order), constants are re-interned so the new pool holds only what the
//! new graph uses, and generated names never collide with existing ones.

use kiln_ir::{ConstValue, Graph, NodeId, Op, Output, Quant, Tensor, TensorType, ValueId};
use std::collections::{HashMap, HashSet};

pub(crate) struct GraphBuilder<'a> {
    pub old: &'a Graph,
    pub g: Graph,
    map: HashMap<ValueId, ValueId>,
    taken: HashSet<String>,
}

impl<'a> GraphBuilder<'a> {
    /// A new graph with `old`'s name and inputs (mapped); nothing else yet.
    pub fn new(old: &'a Graph) -> GraphBuilder<'a> {
        let mut g = Graph::new(old.name.clone());
        let mut map = HashMap::new();
        let mut taken = HashSet::new();
        for id in old.node_ids() {
            let node = old.node(id);
            taken.insert(node.name.clone());
            taken.extend(node.outputs.iter().map(|o| o.name.clone()));
        }
        for &v in old.inputs() {
            let new = g.add_input(old.value_name(v), old.value_type(v).clone());
            map.insert(v, new);
        }
        GraphBuilder { old, g, map, taken }
    }

    /// The new value standing for old value `v` (copied or replaced before).
    pub fn get(&self, v: ValueId) -> ValueId {
        *self
            .map
            .get(&v)
            .expect("nodes are copied in topological order, so inputs are mapped first")
    }

    /// The new value for `v`, if it has been copied or replaced.
    pub fn try_get(&self, v: ValueId) -> Option<ValueId> {
        self.map.get(&v).copied()
    }

    pub fn set(&mut self, old: ValueId, new: ValueId) {
        self.map.insert(old, new);
    }

    /// `base`, or `base_1`, `base_2`, … if that name is taken.
    pub fn fresh(&mut self, base: &str) -> String {
        if self.taken.insert(base.to_string()) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| self.taken.insert(n.clone()))
            .expect("some suffix is free")
    }

    /// Copy node `id` with its inputs mapped; its outputs map to the copies.
    pub fn copy_node(&mut self, id: NodeId) -> Vec<ValueId> {
        let inputs: Vec<ValueId> = self
            .old
            .node(id)
            .inputs()
            .iter()
            .map(|&v| self.get(v))
            .collect();
        self.copy_node_with_inputs(id, &inputs)
    }

    /// Copy node `id` reading `inputs` instead of its own (mapped) ones.
    pub fn copy_node_with_inputs(&mut self, id: NodeId, inputs: &[ValueId]) -> Vec<ValueId> {
        let node = self.old.node(id);
        let outs = match &node.op {
            Op::Input { .. } => vec![self.get(ValueId { node: id, port: 0 })],
            Op::Const(cid) => {
                let value = self
                    .old
                    .consts
                    .get(*cid)
                    .expect("a verified graph's constants are in its pool")
                    .clone();
                let out = &node.outputs[0];
                vec![self.add_const_value(&out.name, value, out.ty.quant.clone())]
            }
            op => {
                self.g
                    .add_node_typed(node.name.clone(), op.clone(), inputs, node.outputs.clone())
            }
        };
        for (port, &v) in outs.iter().enumerate() {
            self.map.insert(
                ValueId {
                    node: id,
                    port: port as u16,
                },
                v,
            );
        }
        outs
    }

    fn add_const_value(&mut self, name: &str, value: ConstValue, quant: Option<Quant>) -> ValueId {
        self.g.add_const_value(name, value, quant)
    }

    /// A new constant named (freshly) after `base`.
    pub fn add_const(&mut self, base: &str, tensor: Tensor, quant: Option<Quant>) -> ValueId {
        let name = self.fresh(base);
        self.g.add_const(name, tensor, quant)
    }

    /// A new single-output node whose node and value are both named (freshly) after `base`.
    pub fn add_node(&mut self, base: &str, op: Op, inputs: &[ValueId], ty: TensorType) -> ValueId {
        let name = self.fresh(base);
        self.g
            .add_node_typed(name.clone(), op, inputs, vec![Output { name, ty }])[0]
    }

    /// A new single-output node with explicit node and value names (already reserved or
    /// known to be free).
    pub fn add_named_node(
        &mut self,
        node_name: &str,
        value_name: &str,
        op: Op,
        inputs: &[ValueId],
        ty: TensorType,
    ) -> ValueId {
        self.taken.insert(node_name.to_string());
        self.taken.insert(value_name.to_string());
        self.g.add_node_typed(
            node_name,
            op,
            inputs,
            vec![Output {
                name: value_name.to_string(),
                ty,
            }],
        )[0]
    }

    pub fn finish(mut self, outputs: Vec<ValueId>) -> Graph {
        self.g.set_outputs(outputs);
        self.g
    }
}
