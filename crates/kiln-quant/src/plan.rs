//! The quantization plan: which nodes are quantized, in which role, and the parameters of
//! every quantized activation — decided once, in topological order, from the config and
//! the calibrated ranges, before anything is inserted.
//!
//! Roles (what quantizing a node means):
//! - **compute** (conv, gemm, matmul, conv_transpose): the activation input is quantized, the
//!   weight per output channel, the bias to i32; the output is requantized with its
//!   calibrated parameters;
//! - **movement** (max pool, reshape, flatten, transpose, slice, nearest resize, pad, …): the
//!   output is read with the *input's* parameters — moving integers does not change how to
//!   read them (scale propagation). Only when the input is already quantized;
//! - **concat**: every input quantized, the output has its own calibrated parameters and the
//!   inputs are requantized to them — except that a compute or island op whose only user is
//!   the concat produces the concat's parameters directly (the scale propagates backwards,
//!   as onnxruntime's quantizer shares one scale between a concat and its inputs), so the
//!   concat moves integers without requantizing them;
//! - **island** (add, average pools, linear resize): float arithmetic between quantized
//!   inputs and a requantized output — kiln's quantized residual add and int8 average pool;
//! - **island tail**: an activation right after an island op (the relu of a ResNet block's
//!   residual add) joins the island, so the add is not requantized before the relu.
//!
//! Everything else is a float island: its quantized inputs are dequantized explicitly, and
//! its outputs are quantized only where a quantized consumer reads them.

use crate::calibrate::Calibration;
use crate::config::QuantizeConfig;
use crate::scheme::{params_from_range, SchemeError};
use crate::QuantError;
use kiln_ir::{Activation, DType, Graph, Node, NodeId, Op, Quant, ResizeMode, ValueId};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

/// What quantizing a node means (see the module docs).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    Compute,
    Movement,
    Concat,
    Island,
    IslandTail,
}

/// The decision for one node.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Decision {
    Quantized { role: NodeRole },
    Float { reason: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodePlan {
    pub node: String,
    pub op: String,
    pub decision: Decision,
}

/// Parameters of one quantized activation.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationQuant {
    pub dtype: DType,
    /// Always per tensor.
    pub quant: Quant,
}

/// The plan for one prepared float graph.
#[derive(Clone, Debug)]
pub struct QuantPlan {
    /// Every op node (inputs and constants excluded), in topological order.
    pub nodes: Vec<NodePlan>,
    pub(crate) roles: HashMap<NodeId, NodeRole>,
    pub(crate) values: HashMap<ValueId, ActivationQuant>,
}

impl QuantPlan {
    /// The parameters of a quantized value of the planned graph.
    pub fn value(&self, v: ValueId) -> Option<&ActivationQuant> {
        self.values.get(&v)
    }

    pub(crate) fn role(&self, id: NodeId) -> Option<NodeRole> {
        self.roles.get(&id).copied()
    }

    /// Nodes quantized in `role`.
    pub fn count(&self, role: NodeRole) -> usize {
        self.roles.values().filter(|&&r| r == role).count()
    }

    /// Nodes left in float, with why.
    pub fn float_nodes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.nodes.iter().filter_map(|n| match &n.decision {
            Decision::Float { reason } => Some((n.node.as_str(), reason.as_str())),
            Decision::Quantized { .. } => None,
        })
    }
}

fn is_float_activation(g: &Graph, v: ValueId) -> bool {
    g.value_type(v).dtype == DType::F32 && !matches!(g.node(v.node).op, Op::Const(_))
}

/// A constant f32 weight or bias.
fn const_f32(g: &Graph, v: ValueId) -> bool {
    g.const_tensor(v).is_some_and(|t| t.dtype() == DType::F32)
}

fn clamp_only(act: &Option<Activation>) -> bool {
    matches!(
        act,
        None | Some(Activation::Relu) | Some(Activation::Clip { .. })
    )
}

/// The role a selected node would have, or why it cannot be quantized at all.
fn role_of(g: &Graph, node: &Node) -> Result<NodeRole, String> {
    let ins = node.inputs();
    let float_in = |i: usize| ins.get(i).is_some_and(|&v| is_float_activation(g, v));
    let optional_const = |i: usize| ins.get(i).is_none_or(|&v| const_f32(g, v));
    match &node.op {
        Op::Conv(a) => {
            if ins.len() > 3 {
                Err("conv with a residual input (not un-fused)".into())
            } else if !clamp_only(&a.act) {
                Err("conv with a fused activation other than relu/clip".into())
            } else if !float_in(0) || !const_f32(g, ins[1]) || !optional_const(2) {
                Err("conv weight or bias is not an f32 constant".into())
            } else {
                Ok(NodeRole::Compute)
            }
        }
        Op::ConvTranspose(_) => {
            if !float_in(0) || !const_f32(g, ins[1]) || !optional_const(2) {
                Err("conv_transpose weight or bias is not an f32 constant".into())
            } else {
                Ok(NodeRole::Compute)
            }
        }
        Op::Gemm(a) => {
            let out_n = node.outputs[0].ty.shape.get(1).copied().unwrap_or(0);
            let bias_ok = ins.get(2).is_none_or(|&c| {
                const_f32(g, c)
                    && matches!(g.value_type(c).shape.as_slice(), [n] | [1, n] if *n == out_n)
            });
            if a.alpha != 1.0 || a.trans_a || (a.beta != 1.0 && ins.len() > 2) {
                Err("gemm with alpha ≠ 1, beta ≠ 1 or transA".into())
            } else if !clamp_only(&a.act) {
                Err("gemm with a fused activation other than relu/clip".into())
            } else if !float_in(0) || !const_f32(g, ins[1]) || !bias_ok {
                Err("gemm B is not a constant or C is not a constant [N] bias".into())
            } else {
                Ok(NodeRole::Compute)
            }
        }
        Op::MatMul => {
            if float_in(0) && const_f32(g, ins[1]) && g.value_type(ins[1]).rank() == 2 {
                Ok(NodeRole::Compute)
            } else {
                Err("matmul without a constant [K, N] weight".into())
            }
        }
        Op::Binary(kiln_ir::BinaryOp::Add) => {
            let out = &node.outputs[0].ty.shape;
            if (0..2).all(|i| float_in(i) && &g.value_type(ins[i]).shape == out) {
                Ok(NodeRole::Island)
            } else {
                Err("add of a constant or with broadcasting (not a residual add)".into())
            }
        }
        Op::AveragePool(_) | Op::GlobalAveragePool if float_in(0) => Ok(NodeRole::Island),
        Op::Resize(r) if float_in(0) => Ok(if r.mode == ResizeMode::Nearest {
            NodeRole::Movement
        } else {
            NodeRole::Island
        }),
        Op::Concat { .. } => {
            if (0..ins.len()).all(float_in) {
                Ok(NodeRole::Concat)
            } else {
                Err("concat of constants or non-f32 values".into())
            }
        }
        Op::MaxPool(_) if node.outputs.len() > 1 => Err("max_pool with an indices output".into()),
        Op::MaxPool(_)
        | Op::GlobalMaxPool
        | Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Transpose { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Slice { .. }
        | Op::Pad { .. }
        | Op::Identity
            if float_in(0) =>
        {
            Ok(NodeRole::Movement)
        }
        op => Err(format!(
            "{} on these inputs is not quantized",
            op.mnemonic()
        )),
    }
}

/// Plans quantized activations, drawing calibrated parameters on demand.
struct Planner<'a> {
    graph: &'a Graph,
    calibration: &'a Calibration,
    config: &'a QuantizeConfig,
    values: HashMap<ValueId, ActivationQuant>,
}

impl Planner<'_> {
    /// The calibrated parameters of `v` (without recording them).
    fn calibrated(&self, v: ValueId) -> Result<ActivationQuant, QuantError> {
        let name = self.graph.value_name(v);
        let range = self
            .calibration
            .values
            .get(name)
            .and_then(|o| o.range)
            .ok_or_else(|| QuantError::NoRange {
                value: name.to_string(),
            })?;
        let scheme = self.config.scheme.activation();
        let quant =
            params_from_range(range.min, range.max, &scheme).map_err(|source: SchemeError| {
                QuantError::Scheme {
                    value: name.to_string(),
                    source,
                }
            })?;
        Ok(ActivationQuant {
            dtype: scheme.dtype,
            quant,
        })
    }

    /// Parameters for `v`: those planned already, or calibrated ones.
    fn params_for(&self, v: ValueId) -> Result<ActivationQuant, QuantError> {
        match self.values.get(&v) {
            Some(p) => Ok(p.clone()),
            None => self.calibrated(v),
        }
    }

    /// The output parameters of the concat that is `v`'s only user, if that concat will be
    /// quantized: `v` can be produced with them directly.
    fn concat_params(
        &self,
        v: ValueId,
        skipped: &dyn Fn(&Node) -> bool,
    ) -> Option<ActivationQuant> {
        let g = self.graph;
        let [(user, _)] = g.users(v)[..] else {
            return None;
        };
        let u = g.node(user);
        let quantized_concat = matches!(u.op, Op::Concat { .. })
            && g.use_count(v) == 1
            && !skipped(u)
            && self.config.selects("concat")
            && role_of(g, u) == Ok(NodeRole::Concat);
        if !quantized_concat {
            return None;
        }
        self.calibrated(ValueId {
            node: user,
            port: 0,
        })
        .ok()
    }
}

/// Plan the quantization of a prepared float graph. `skip` holds node names (and names of
/// their output values) kept in float.
pub fn plan(
    graph: &Graph,
    calibration: &Calibration,
    config: &QuantizeConfig,
    skip: &BTreeSet<String>,
) -> Result<QuantPlan, QuantError> {
    let mut p = Planner {
        graph,
        calibration,
        config,
        values: HashMap::new(),
    };
    let mut nodes = Vec::new();
    let mut roles = HashMap::new();
    let mut tails: HashSet<NodeId> = HashSet::new();
    let skipped = |node: &Node| {
        skip.contains(&node.name) || node.outputs.iter().any(|o| skip.contains(&o.name))
    };
    for id in graph.topo_order()? {
        let node = graph.node(id);
        if node.op.is_source() {
            continue;
        }
        let out = ValueId { node: id, port: 0 };
        let decision: Result<NodeRole, String> = if tails.contains(&id) {
            Ok(NodeRole::IslandTail)
        } else if skipped(node) {
            Err("skipped".into())
        } else if !config.selects(node.op.mnemonic()) {
            Err("op not selected for quantization".into())
        } else {
            role_of(graph, node)
        };
        // The values this role quantizes, and their parameters; any failure (a value never
        // observed, bad parameters) leaves the node in float with the reason.
        let planned: Result<(NodeRole, Vec<(ValueId, ActivationQuant)>), String> = decision
            .and_then(|role| {
                let ins = node.inputs();
                let mut quantized = Vec::new();
                let need = |v: ValueId| p.params_for(v).map_err(|e| e.to_string());
                // An output read only by a quantized concat takes the concat's parameters.
                let need_out = |v: ValueId| match p.concat_params(v, &skipped) {
                    Some(params) => Ok(params),
                    None => need(v),
                };
                match role {
                    NodeRole::Compute => {
                        quantized.push((ins[0], need(ins[0])?));
                        quantized.push((out, need_out(out)?));
                    }
                    NodeRole::Movement => {
                        let input = p
                            .values
                            .get(&ins[0])
                            .cloned()
                            .ok_or("its input is not quantized")?;
                        quantized.push((out, input));
                    }
                    NodeRole::Concat => {
                        for &v in ins {
                            quantized.push((v, need(v)?));
                        }
                        quantized.push((out, need(out)?));
                    }
                    NodeRole::Island => {
                        for &v in ins {
                            quantized.push((v, need(v)?));
                        }
                        // An activation that is the output's only user joins the island.
                        let users = graph.users(out);
                        let tail = match users.as_slice() {
                            [(user, 0)] if graph.use_count(out) == 1 => {
                                let u = graph.node(*user);
                                (matches!(u.op, Op::Activation(_)) && !skipped(u)).then_some(*user)
                            }
                            _ => None,
                        };
                        match tail {
                            Some(t) => {
                                let t_out = ValueId { node: t, port: 0 };
                                need_out(t_out)?;
                                tails.insert(t);
                            }
                            None => quantized.push((out, need_out(out)?)),
                        }
                    }
                    NodeRole::IslandTail => quantized.push((out, need_out(out)?)),
                }
                Ok((role, quantized))
            });
        let decision = match planned {
            Ok((role, quantized)) => {
                for (v, params) in quantized {
                    p.values.entry(v).or_insert(params);
                }
                roles.insert(id, role);
                Decision::Quantized { role }
            }
            Err(reason) => Decision::Float { reason },
        };
        nodes.push(NodePlan {
            node: node.name.clone(),
            op: node.op.mnemonic().to_string(),
            decision,
        });
    }
    Ok(QuantPlan {
        nodes,
        roles,
        values: p.values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::calibration_of;
    use kiln_ir::text::parse_graph;

    const BLOCK: &str = "graph @b(%x: f32[1,2,4,4]) -> (f32[1,2,1,1], f32[1,8]) {
  %w = const @c0 : f32[2,2,1,1] = normal(seed=1, mean=0.0, std=0.5)
  %c = conv(%x, %w) {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], groups=1, act=relu} : f32[1,2,4,4]
  %p = max_pool(%c) {kernel=[2,2], strides=[2,2], pads=[0,0,0,0], dilations=[1,1], ceil_mode=false, storage_order=0} : f32[1,2,2,2]
  %f = flatten(%p) {axis=1} : f32[1,8]
  %s = add(%c, %x) : f32[1,2,4,4]
  %r = relu(%s) : f32[1,2,4,4]
  %g = global_average_pool(%r) : f32[1,2,1,1]
  %o = softmax(%g) {axis=1} : f32[1,2,1,1]
  return %o, %f
}";

    fn decisions(p: &QuantPlan) -> Vec<String> {
        p.nodes
            .iter()
            .map(|n| match &n.decision {
                Decision::Quantized { role } => format!("{} {role:?}", n.node),
                Decision::Float { .. } => format!("{} float", n.node),
            })
            .collect()
    }

    #[test]
    fn roles_propagation_and_island_tails() {
        let g = parse_graph(BLOCK).unwrap();
        let cal = calibration_of(
            &g,
            &[
                ("x", -1.0, 1.55),
                ("c", 0.0, 5.1),
                ("p", 0.0, 5.1),
                ("f", 0.0, 5.1),
                ("s", -2.0, 6.0),
                ("r", 0.0, 2.55),
                ("g", 0.0, 1.02),
                ("o", 0.0, 1.0),
            ],
        );
        let p = plan(&g, &cal, &QuantizeConfig::default(), &BTreeSet::new()).unwrap();
        assert_eq!(
            decisions(&p),
            [
                "c Compute",
                "p Movement",
                "f Movement",
                "s Island",
                "r IslandTail",
                "g Island",
                "o float"
            ]
        );
        let by_name = |name: &str| {
            let id = g
                .node_ids()
                .find(|&id| g.node(id).outputs[0].name == name)
                .unwrap();
            p.value(ValueId { node: id, port: 0 }).cloned()
        };
        // c in [0, 5.1]: scale 5.1/255 = 0.02, zero point 0; the max pool and the flatten
        // read c's integers with c's parameters (no calibration of their own).
        let c = by_name("c").unwrap();
        assert!((c.quant.params_at(0).0 - 0.02).abs() < 1e-9);
        assert_eq!(by_name("p"), Some(c.clone()));
        assert_eq!(by_name("f"), Some(c));
        // the residual add is not requantized before its relu; the relu's output is, with
        // its own range [0, 2.55]: scale 0.01
        assert_eq!(by_name("s"), None);
        assert!((by_name("r").unwrap().quant.params_at(0).0 - 0.01).abs() < 1e-9);
        // x feeds the conv and the add: quantized once, x in [−1, 1.55]: scale 0.01,
        // zero point 100
        assert_eq!(by_name("x").unwrap().quant.params_at(0).1, 100);
        assert_eq!(by_name("o"), None);
    }

    #[test]
    fn skipped_and_unselected_nodes_stay_float_and_movement_needs_a_quantized_input() {
        let g = parse_graph(BLOCK).unwrap();
        let cal = calibration_of(&g, &[("x", -1.0, 1.0), ("c", 0.0, 1.0), ("g", 0.0, 1.0)]);
        let cfg = QuantizeConfig {
            quantize_ops: Some(
                QuantizeConfig::parse_ops("conv,max_pool,global_average_pool").unwrap(),
            ),
            ..QuantizeConfig::default()
        };
        let skip: BTreeSet<String> = ["c".to_string()].into();
        let p = plan(&g, &cal, &cfg, &skip).unwrap();
        let reasons: Vec<(&str, &str)> = p.float_nodes().collect();
        assert!(reasons.contains(&("c", "skipped")), "{reasons:?}");
        assert!(
            reasons.contains(&("p", "its input is not quantized")),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&("s", "op not selected for quantization")),
            "{reasons:?}"
        );
        // the global average pool is selected; its input r has no calibrated range
        assert!(
            reasons.iter().any(|(n, r)| *n == "g" && r.contains("'r'")),
            "{reasons:?}"
        );
        assert_eq!(p.count(NodeRole::Compute), 0);
    }
}
