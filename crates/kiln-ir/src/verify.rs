//! The verifier, run after every pass in debug builds and under `KILN_VERIFY=1`
//! ([`self_checks_enabled`]): the graph's structure (edges
//! mirror input lists, no cycle, unique value names, graph inputs/outputs), every declared
//! type against inference, and the quantization parameters of integer values.
//!
//! Checks run in a fixed order and stop at the first failure: structure in node insertion
//! order, then acyclicity, then the graph's input/output lists, then each node in
//! topological order (so a node is checked only after every producer of its inputs).

use crate::dtype::DType;
use crate::graph::{Graph, Node, NodeId, ValueId};
use crate::infer::infer_types;
use crate::op::Op;
use crate::tensor::checked_numel;
use crate::types::{Quant, TensorType};
use crate::IrError;
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashMap;

/// Whether kiln's self-checks run by default: Cranelift's verifier on every generated
/// function and [`verify`] after every optimizer pass. On in debug builds, and in any build
/// when the environment variable `KILN_VERIFY` is set to anything but `0` (tools/test.sh
/// sets it: the suite runs in release). Read once per process.
pub fn self_checks_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        cfg!(debug_assertions) || std::env::var_os("KILN_VERIFY").is_some_and(|v| v != "0")
    })
}

/// Check that `g` is well formed; the error names the first offending node (or the graph).
pub fn verify(g: &Graph) -> Result<(), IrError> {
    for id in g.node_ids() {
        check_inputs_and_edges(g, id)?;
    }
    let order = g.topo_order()?;
    check_graph_inputs_and_outputs(g)?;
    let mut defined_by: HashMap<&str, &str> = HashMap::new();
    for id in order {
        let node = g.node(id);
        for out in &node.outputs {
            if let Some(previous) = defined_by.insert(&out.name, &node.name) {
                return Err(node_error(
                    node,
                    format!(
                        "output name '{}' is already defined by node '{previous}'",
                        out.name
                    ),
                ));
            }
        }
        check_node(g, id)?;
    }
    Ok(())
}

fn node_error(node: &Node, msg: String) -> IrError {
    IrError::Verify {
        node: node.name.clone(),
        op: node.op.mnemonic(),
        msg,
    }
}

/// Every input names an existing value, and the node's incoming petgraph edges are exactly
/// one per input slot, from that value's node and port.
fn check_inputs_and_edges(g: &Graph, id: NodeId) -> Result<(), IrError> {
    let node = g.node(id);
    for (slot, v) in node.inputs().iter().enumerate() {
        if !g.value_exists(*v) {
            return Err(node_error(
                node,
                format!(
                    "input {slot} refers to output {} of node #{}, which does not exist",
                    v.port,
                    v.node.index()
                ),
            ));
        }
    }
    // (source node, source port, destination slot) of what the input list says and of what
    // the edges say; they must be equal as multisets.
    let mut expected: Vec<(NodeId, u16, u16)> = node
        .inputs()
        .iter()
        .enumerate()
        .map(|(slot, v)| (v.node, v.port, slot as u16))
        .collect();
    let mut actual: Vec<(NodeId, u16, u16)> = g
        .petgraph()
        .edges_directed(id, Direction::Incoming)
        .map(|e| (e.source(), e.weight().src_port, e.weight().dst_slot))
        .collect();
    expected.sort();
    actual.sort();
    if expected == actual {
        return Ok(());
    }
    let describe = |(src, port, slot): &(NodeId, u16, u16)| {
        format!("slot {slot} ← '{}' port {port}", g.node(*src).name)
    };
    let missing: Vec<String> = expected
        .iter()
        .filter(|e| !actual.contains(e))
        .map(describe)
        .collect();
    let extra: Vec<String> = actual
        .iter()
        .filter(|e| !expected.contains(e))
        .map(describe)
        .collect();
    let msg = if missing.is_empty() && extra.is_empty() {
        format!(
            "has {} incoming edges for {} inputs (duplicate edges)",
            actual.len(),
            expected.len()
        )
    } else {
        format!(
            "edges disagree with the input list: inputs without an edge [{}], edges without an input [{}]",
            missing.join(", "),
            extra.join(", ")
        )
    };
    Err(node_error(node, msg))
}

/// Graph input `i` is output 0 of an `input {index: i}` node; graph outputs exist.
fn check_graph_inputs_and_outputs(g: &Graph) -> Result<(), IrError> {
    for (i, v) in g.inputs().iter().enumerate() {
        let ok = g.value_exists(*v)
            && v.port == 0
            && matches!(g.node(v.node).op, Op::Input { index } if index == i);
        if !ok {
            return Err(IrError::VerifyGraph {
                msg: format!("graph input {i} is not output 0 of an `input` node with index {i}"),
            });
        }
    }
    for (i, v) in g.outputs().iter().enumerate() {
        if !g.value_exists(*v) {
            return Err(IrError::VerifyGraph {
                msg: format!(
                    "graph output {i} refers to output {} of node #{}, which does not exist",
                    v.port,
                    v.node.index()
                ),
            });
        }
    }
    Ok(())
}

/// `q(0.5, 128)` / `q(axis 0: 64 scales)` / `none`, for messages.
fn describe_quant(quant: Option<&Quant>) -> String {
    match quant {
        None => "none".into(),
        Some(Quant::PerTensor { scale, zero_point }) => format!("q({scale}, {zero_point})"),
        Some(Quant::PerAxis { axis, scales, .. }) => {
            format!("q(axis {axis}: {} scales)", scales.len())
        }
    }
}

/// A type on its own is valid: its element count fits, and quantization parameters sit on
/// an integer type that stores quantized values, with positive finite scales, zero points
/// the dtype can hold, and (per axis) one entry per index of an existing axis.
fn check_type(ty: &TensorType) -> Result<(), String> {
    if checked_numel(&ty.shape).is_none() {
        return Err(format!(
            "shape {:?} has more elements than fit in memory",
            ty.shape
        ));
    }
    let Some(quant) = &ty.quant else {
        return Ok(());
    };
    if !ty.dtype.is_quantizable() {
        return Err(format!(
            "{ty} carries quantization parameters; only i8, u8 and i32 values are quantized"
        ));
    }
    let (lo, hi) = ty
        .dtype
        .int_range()
        .expect("quantizable dtypes are integers");
    let (scales, zero_points): (&[f32], &[i32]) = match quant {
        Quant::PerTensor { scale, zero_point } => (
            std::slice::from_ref(scale),
            std::slice::from_ref(zero_point),
        ),
        Quant::PerAxis {
            axis,
            scales,
            zero_points,
        } => {
            let Some(&len) = ty.shape.get(*axis) else {
                return Err(format!(
                    "per-axis quantization axis {axis} is out of range for {ty}"
                ));
            };
            if scales.len() != len || zero_points.len() != len {
                return Err(format!(
                    "per-axis quantization along axis {axis} of {ty} needs {len} scales and zero points, got {} and {}",
                    scales.len(),
                    zero_points.len()
                ));
            }
            (scales, zero_points)
        }
    };
    if let Some(s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(format!(
            "quantization scale {s} of {ty} is not a finite positive number"
        ));
    }
    if let Some(z) = zero_points
        .iter()
        .find(|&&z| (z as i64) < lo || (z as i64) > hi)
    {
        return Err(format!(
            "zero point {z} of {ty} is outside the {} range [{lo}, {hi}]",
            ty.dtype
        ));
    }
    Ok(())
}

fn check_node(g: &Graph, id: NodeId) -> Result<(), IrError> {
    let node = g.node(id);
    let fail = |msg: String| node_error(node, msg);
    if node.outputs.is_empty() {
        return Err(fail("has no outputs".into()));
    }
    for (port, out) in node.outputs.iter().enumerate() {
        check_type(&out.ty).map_err(|m| fail(format!("output {port} ('{}'): {m}", out.name)))?;
    }
    match &node.op {
        Op::Input { index } => check_input_node(g, id, *index).map_err(fail),
        Op::Const(cid) => check_const_node(g, node, *cid).map_err(fail),
        op => {
            let in_types: Vec<&TensorType> =
                node.inputs().iter().map(|&v| g.value_type(v)).collect();
            check_quantized_operands(op, &in_types).map_err(fail)?;
            let inferred = infer_types(op, &in_types).map_err(fail)?;
            if node.outputs.len() > inferred.len() {
                return Err(fail(format!(
                    "declares {} outputs, the op produces {}",
                    node.outputs.len(),
                    inferred.len()
                )));
            }
            for (port, (out, want)) in node.outputs.iter().zip(&inferred).enumerate() {
                let prefix = format!("output {port} ('{}')", out.name);
                if op.has_free_output_type() {
                    check_free_output(op, &out.ty, want)
                        .map_err(|m| fail(format!("{prefix}: {m}")))?;
                } else {
                    check_declared_type(&out.ty, want)
                        .map_err(|m| fail(format!("{prefix}: {m}")))?;
                }
            }
            Ok(())
        }
    }
}

fn check_input_node(g: &Graph, id: NodeId, index: usize) -> Result<(), String> {
    let node = g.node(id);
    if !node.inputs().is_empty() || node.outputs.len() != 1 {
        return Err(format!(
            "an input node has no inputs and one output, this one has {} and {}",
            node.inputs().len(),
            node.outputs.len()
        ));
    }
    if g.inputs().get(index) != Some(&ValueId { node: id, port: 0 }) {
        return Err(format!(
            "is graph input {index}, but the graph's input list ({} inputs) does not list it there",
            g.inputs().len()
        ));
    }
    Ok(())
}

fn check_const_node(g: &Graph, node: &Node, cid: crate::pool::ConstId) -> Result<(), String> {
    if !node.inputs().is_empty() || node.outputs.len() != 1 {
        return Err(format!(
            "a const node has no inputs and one output, this one has {} and {}",
            node.inputs().len(),
            node.outputs.len()
        ));
    }
    let Some(value) = g.consts.get(cid) else {
        return Err(format!(
            "refers to constant @c{}, which is not in the pool",
            cid.0
        ));
    };
    let ty = &node.outputs[0].ty;
    if ty.dtype != value.dtype() || ty.shape != value.shape() {
        return Err(format!(
            "is declared {ty}, but constant @c{} is {}{:?}",
            cid.0,
            value.dtype(),
            value.shape()
        ));
    }
    Ok(())
}

/// Same dtype and shape; the quantization must match when inference derives one (data
/// movement of quantized values), and is free otherwise.
fn check_declared_type(declared: &TensorType, inferred: &TensorType) -> Result<(), String> {
    if !declared.same_layout(inferred) {
        return Err(format!(
            "is declared {declared}, inference gives {inferred}"
        ));
    }
    if let Some(want) = &inferred.quant {
        if !declared.quant.as_ref().is_some_and(|q| q.same_as(want)) {
            return Err(format!(
                "{declared} declares quantization {}, inference carries {} through from the input",
                describe_quant(declared.quant.as_ref()),
                describe_quant(Some(want))
            ));
        }
    }
    Ok(())
}

/// Outputs of `quantize` / `qconv` / `qmatmul`: inferred shape, an integer dtype the op can
/// produce, and quantization parameters (per tensor for the quantized compute ops, whose
/// requantization has one output scale).
fn check_free_output(op: &Op, declared: &TensorType, inferred: &TensorType) -> Result<(), String> {
    if declared.shape != inferred.shape {
        return Err(format!(
            "is declared {declared}, inference gives shape {:?}",
            inferred.shape
        ));
    }
    let allowed: &[DType] = match op {
        Op::Quantize => &[DType::I8, DType::U8, DType::I32],
        _ => &[DType::I8, DType::U8],
    };
    if !allowed.contains(&declared.dtype) {
        let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
        return Err(format!(
            "is declared {declared}, the op produces one of {}",
            names.join(", ")
        ));
    }
    match &declared.quant {
        None => Err(format!("{declared} has no quantization parameters")),
        Some(Quant::PerAxis { .. }) if !matches!(op, Op::Quantize) => Err(format!(
            "{declared} is quantized per axis; this op's output is quantized per tensor"
        )),
        Some(_) => Ok(()),
    }
}

/// The operands of quantized ops carry parameters of the shape the op's arithmetic uses:
/// dequantize any; qconv x per tensor, w per tensor or per output channel (axis 0), the i32
/// bias (if it has parameters) zero point 0 and scale s_x·s_w; qmatmul a per tensor, b per
/// tensor or per column (its last axis).
fn check_quantized_operands(op: &Op, inputs: &[&TensorType]) -> Result<(), String> {
    let require = |slot: usize, name: &str| -> Result<Option<&Quant>, String> {
        match inputs.get(slot) {
            None => Ok(None),
            Some(ty) => match &ty.quant {
                Some(q) => Ok(Some(q)),
                None => Err(format!(
                    "input {slot} ({name}) {ty} must carry quantization parameters"
                )),
            },
        }
    };
    let per_tensor = |slot: usize, name: &str, q: Option<&Quant>| -> Result<(), String> {
        match q {
            Some(Quant::PerAxis { axis, .. }) => Err(format!(
                "input {slot} ({name}) must be quantized per tensor, it is per axis {axis}"
            )),
            _ => Ok(()),
        }
    };
    match op {
        Op::Dequantize => {
            require(0, "x")?;
        }
        Op::QConv(_) => {
            let x = require(0, "x")?;
            let w = require(1, "w")?;
            per_tensor(0, "x", x)?;
            if let Some(Quant::PerAxis { axis, .. }) = w {
                if *axis != 0 {
                    return Err(format!(
                        "input 1 (w) must be quantized per tensor or per output channel (axis 0), it is per axis {axis}"
                    ));
                }
            }
            if let (Some(x), Some(w), Some(b)) = (x, w, inputs.get(2)) {
                if let Some(bq) = &b.quant {
                    check_bias_quant(x, w, bq, b.shape.first().copied().unwrap_or(0))?;
                }
            }
        }
        Op::QMatMul => {
            let a = require(0, "a")?;
            let b = require(1, "b")?;
            per_tensor(0, "a", a)?;
            if let (Some(Quant::PerAxis { axis, .. }), Some(ty)) = (b, inputs.get(1)) {
                if ty.rank() < 2 || *axis != ty.rank() - 1 {
                    return Err(format!(
                        "input 1 (b) {ty} must be quantized per tensor or per column (its last axis), it is per axis {axis}"
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A qconv bias holds `round(b / (s_x·s_w[c]))` with zero point 0. The scale is compared to
/// within 1e-6 relative: any correctly rounded f32 or f64 computation of the product agrees
/// to an ulp or two.
fn check_bias_quant(x: &Quant, w: &Quant, bias: &Quant, channels: usize) -> Result<(), String> {
    let (s_x, _) = x.params_at(0);
    for c in 0..channels {
        let (s_w, _) = quant_params_checked(w, c)?;
        let (s_b, z_b) = quant_params_checked(bias, c)?;
        if z_b != 0 {
            return Err(format!(
                "input 2 (b) has zero point {z_b} for channel {c}; a qconv bias has zero point 0"
            ));
        }
        let want = s_x * s_w;
        if (s_b - want).abs() > 1e-6 * want.abs() {
            return Err(format!(
                "input 2 (b) has scale {s_b} for channel {c}, expected s_x·s_w = {s_x}·{s_w} = {want}"
            ));
        }
    }
    Ok(())
}

/// [`Quant::params_at`] without the panic on a short parameter list.
fn quant_params_checked(q: &Quant, i: usize) -> Result<(f32, i32), String> {
    match q {
        Quant::PerTensor { scale, zero_point } => Ok((*scale, *zero_point)),
        Quant::PerAxis {
            scales,
            zero_points,
            ..
        } => scales
            .get(i)
            .zip(zero_points.get(i))
            .map(|(&s, &z)| (s, z))
            .ok_or_else(|| format!("per-axis parameters have no entry for index {i}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Output;
    use crate::op::{Activation, ConvAttrs, PoolAttrs};
    use crate::pool::ConstId;
    use crate::tensor::{Tensor, TensorData};

    fn output(name: &str, ty: TensorType) -> Vec<Output> {
        vec![Output {
            name: name.into(),
            ty,
        }]
    }

    fn u8_q(shape: &[usize], scale: f32, zero_point: i32) -> TensorType {
        TensorType::new(DType::U8, shape.to_vec()).with_quant(Quant::per_tensor(scale, zero_point))
    }

    fn conv3x3_pad1() -> ConvAttrs {
        ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1; 4],
            dilations: vec![1, 1],
            groups: 1,
            act: None,
        }
    }

    fn max_pool_2x2() -> Op {
        Op::MaxPool(PoolAttrs {
            kernel: vec![2, 2],
            strides: vec![2, 2],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        })
    }

    fn relu() -> Op {
        Op::Activation(Activation::Relu)
    }

    fn expect_node_error(g: &Graph, node: &str, op: &str, needle: &str) {
        match verify(g) {
            Err(IrError::Verify {
                node: n,
                op: o,
                msg,
            }) => {
                assert_eq!((n.as_str(), o), (node, op), "wrong node; message: {msg}");
                assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
            }
            other => panic!("expected a verifier error on node '{node}', got {other:?}"),
        }
    }

    /// x → conv(w) → relu → quantize → max_pool → dequantize. Conv with pads 1 keeps 4×4;
    /// the 2×2 pool halves it; the pool output inherits the quantize output's parameters.
    fn valid_graph() -> Graph {
        let mut g = Graph::new("valid");
        let x = g.add_input("x", TensorType::f32(vec![1, 2, 4, 4]));
        let w = Tensor::from_f32(vec![3, 2, 3, 3], vec![0.1; 54]).expect("54 = 3·2·3·3 values");
        let w = g.add_const("w", w, None);
        let conv = g
            .add_node("conv", Op::Conv(conv3x3_pad1()), &[x, w], vec!["y".into()])
            .expect("valid conv");
        let r = g
            .add_node("relu", relu(), &conv, vec!["r".into()])
            .expect("valid relu");
        let rq = g.add_node_typed(
            "quant",
            Op::Quantize,
            &r,
            output("rq", u8_q(&[1, 3, 4, 4], 0.05, 0)),
        );
        let pooled = g
            .add_node("pool", max_pool_2x2(), &rq, vec!["p".into()])
            .expect("valid pool");
        let out = g
            .add_node("dequant", Op::Dequantize, &pooled, vec!["out".into()])
            .expect("valid dequantize");
        g.set_outputs(out);
        g
    }

    #[test]
    fn a_valid_graph_passes() {
        let g = valid_graph();
        assert_eq!(verify(&g), Ok(()));
        let pool = g.outputs()[0].node;
        let pool_input = g.node(pool).inputs()[0];
        assert_eq!(g.value_type(pool_input), &u8_q(&[1, 3, 2, 2], 0.05, 0));
    }

    #[test]
    fn a_wrong_declared_output_type_names_the_node() {
        let mut g = valid_graph();
        let x = g.inputs()[0];
        let bad = g.add_node_typed(
            "bad_relu",
            relu(),
            &[x],
            output("b", TensorType::f32(vec![1, 2, 4, 5])),
        );
        g.set_outputs(bad);
        expect_node_error(
            &g,
            "bad_relu",
            "relu",
            "output 0 ('b'): is declared f32[1,2,4,5], inference gives f32[1,2,4,4]",
        );
    }

    #[test]
    fn a_dequantize_input_without_quantization_fails() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::new(DType::U8, vec![4]));
        let y = g.add_node_typed(
            "dq",
            Op::Dequantize,
            &[x],
            output("y", TensorType::f32(vec![4])),
        );
        g.set_outputs(y);
        expect_node_error(
            &g,
            "dq",
            "dequantize",
            "input 0 (x) u8[4] must carry quantization parameters",
        );
    }

    #[test]
    fn a_cycle_fails() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::f32(vec![2]));
        let a = g
            .add_node("a", relu(), &[x], vec!["a".into()])
            .expect("valid relu");
        let b = g
            .add_node("b", relu(), &a, vec!["b".into()])
            .expect("valid relu");
        g.set_outputs(b.clone());
        g.set_input(a[0].node, 0, b[0]);
        assert!(
            matches!(verify(&g), Err(IrError::Cycle { .. })),
            "{:?}",
            verify(&g)
        );
    }

    #[test]
    fn the_first_error_in_topological_order_is_reported() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::f32(vec![2]));
        let wrong = || output("w", TensorType::f32(vec![3]));
        // `late` is inserted first but, once rewired to consume `early`, comes after it.
        let late = g.add_node_typed("late", relu(), &[x], wrong());
        let early = g.add_node_typed("early", relu(), &[x], output("e", TensorType::f32(vec![3])));
        g.set_input(late[0].node, 0, early[0]);
        g.set_outputs(late);
        expect_node_error(&g, "early", "relu", "inference gives f32[2]");
    }

    #[test]
    fn free_output_types_need_an_integer_dtype_and_parameters() {
        let build = |ty: TensorType| {
            let mut g = Graph::new("g");
            let x = g.add_input("x", TensorType::f32(vec![2, 3]));
            let y = g.add_node_typed("q", Op::Quantize, &[x], output("y", ty));
            g.set_outputs(y);
            g
        };
        let per_axis = Quant::PerAxis {
            axis: 0,
            scales: vec![0.1, 0.2],
            zero_points: vec![0, 0],
        };
        assert_eq!(
            verify(&build(
                TensorType::new(DType::I8, vec![2, 3]).with_quant(per_axis)
            )),
            Ok(())
        );
        assert_eq!(
            verify(&build(
                TensorType::new(DType::I32, vec![2, 3]).with_quant(Quant::per_tensor(0.1, 0))
            )),
            Ok(())
        );
        expect_node_error(
            &build(TensorType::new(DType::U8, vec![2, 3])),
            "q",
            "quantize",
            "has no quantization parameters",
        );
        expect_node_error(
            &build(TensorType::new(DType::I64, vec![2, 3])),
            "q",
            "quantize",
            "the op produces one of i8, u8, i32",
        );
        expect_node_error(
            &build(u8_q(&[3, 2], 0.1, 0)),
            "q",
            "quantize",
            "inference gives shape [2, 3]",
        );
    }

    #[test]
    fn data_movement_must_keep_the_inferred_quantization() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", u8_q(&[2, 3], 0.5, 10));
        let y = g.add_node_typed(
            "reshape",
            Op::Reshape { shape: vec![6] },
            &[x],
            output("y", u8_q(&[6], 0.25, 10)),
        );
        g.set_outputs(y);
        expect_node_error(
            &g,
            "reshape",
            "reshape",
            "declares quantization q(0.25, 10), inference carries q(0.5, 10)",
        );
    }

    #[test]
    fn a_const_node_must_match_its_pool_entry() {
        let mut g = Graph::new("g");
        let id = g
            .consts
            .intern_tensor(Tensor::from_f32(vec![2], vec![1.0, 2.0]).expect("2 values"));
        let c = g.add_const_node("c", id, TensorType::f32(vec![3]));
        g.set_outputs(vec![c]);
        expect_node_error(
            &g,
            "c",
            "const",
            "is declared f32[3], but constant @c0 is f32[2]",
        );
        let mut g = Graph::new("g");
        let missing = g.add_const_node("m", ConstId(9), TensorType::f32(vec![3]));
        g.set_outputs(vec![missing]);
        expect_node_error(&g, "m", "const", "@c9, which is not in the pool");
    }

    #[test]
    fn value_names_are_unique() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::f32(vec![2]));
        let y = g
            .add_node("r", relu(), &[x], vec!["x".into()])
            .expect("valid relu");
        g.set_outputs(y);
        expect_node_error(
            &g,
            "r",
            "relu",
            "output name 'x' is already defined by node 'x'",
        );
    }

    #[test]
    fn references_to_missing_values_fail() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::f32(vec![2]));
        g.set_outputs(vec![ValueId {
            node: x.node,
            port: 1,
        }]);
        match verify(&g) {
            Err(IrError::VerifyGraph { msg }) => {
                assert!(msg.contains("graph output 0 refers to output 1"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        // A consumer whose producer was removed keeps an input pointing nowhere.
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::f32(vec![2]));
        let a = g
            .add_node("a", relu(), &[x], vec!["a".into()])
            .expect("valid relu");
        let b = g
            .add_node("b", relu(), &a, vec!["b".into()])
            .expect("valid relu");
        g.set_outputs(b);
        g.remove_node(a[0].node);
        expect_node_error(
            &g,
            "b",
            "relu",
            "input 0 refers to output 0 of node #1, which does not exist",
        );
    }

    #[test]
    fn input_nodes_must_be_listed_graph_inputs() {
        let mut g = Graph::new("g");
        let stray = g.add_node_typed(
            "stray",
            Op::Input { index: 3 },
            &[],
            output("s", TensorType::f32(vec![1])),
        );
        g.set_outputs(stray);
        expect_node_error(&g, "stray", "input", "is graph input 3");
    }

    #[test]
    fn quantization_parameters_are_checked_on_every_value() {
        let check = |ty: TensorType, needle: &str| {
            let mut g = Graph::new("g");
            let x = g.add_input("x", ty);
            g.set_outputs(vec![x]);
            expect_node_error(&g, "x", "input", needle);
        };
        let per_axis = |axis, scales: Vec<f32>, zero_points: Vec<i32>| Quant::PerAxis {
            axis,
            scales,
            zero_points,
        };
        let i8t = |shape: &[usize]| TensorType::new(DType::I8, shape.to_vec());
        check(
            i8t(&[2, 3]).with_quant(per_axis(2, vec![1.0; 3], vec![0; 3])),
            "axis 2 is out of range",
        );
        check(
            i8t(&[2, 3]).with_quant(per_axis(1, vec![1.0; 2], vec![0; 2])),
            "needs 3 scales and zero points, got 2 and 2",
        );
        check(
            i8t(&[2]).with_quant(per_axis(0, vec![1.0, f32::NAN], vec![0; 2])),
            "scale NaN",
        );
        check(
            u8_q(&[2], 0.0, 0),
            "scale 0 of u8[2] is not a finite positive number",
        );
        check(
            u8_q(&[2], 1.0, 256),
            "zero point 256 of u8[2] is outside the u8 range [0, 255]",
        );
        check(
            i8t(&[2]).with_quant(Quant::per_tensor(1.0, -129)),
            "outside the i8 range [-128, 127]",
        );
        check(
            TensorType::f32(vec![2]).with_quant(Quant::per_tensor(1.0, 0)),
            "only i8, u8 and i32 values are quantized",
        );
    }

    /// x u8 q(0.5, 128) · w i8 per output channel (scales 0.1, 0.2) + b i32 with scales
    /// s_x·s_w = 0.05, 0.1 → qconv u8 [1,2,3,3].
    fn qconv_graph(bias_quant: Quant, out_ty: TensorType) -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_input("x", u8_q(&[1, 1, 3, 3], 0.5, 128));
        let w_quant = Quant::PerAxis {
            axis: 0,
            scales: vec![0.1, 0.2],
            zero_points: vec![0, 0],
        };
        let w = Tensor::new(vec![2, 1, 3, 3], TensorData::I8(vec![1; 18])).expect("18 values");
        let w = g.add_const("w", w, Some(w_quant));
        let b = Tensor::new(vec![2], TensorData::I32(vec![5, -5])).expect("2 values");
        let b = g.add_const("b", b, Some(bias_quant));
        let y = g.add_node_typed(
            "qconv",
            Op::QConv(conv3x3_pad1()),
            &[x, w, b],
            output("y", out_ty),
        );
        g.set_outputs(y);
        g
    }

    #[test]
    fn qconv_operands_and_output() {
        let bias = |s0: f32, z0: i32| Quant::PerAxis {
            axis: 0,
            scales: vec![s0, 0.5 * 0.2],
            zero_points: vec![z0, 0],
        };
        let out = u8_q(&[1, 2, 3, 3], 0.3, 0);
        assert_eq!(
            verify(&qconv_graph(bias(0.5 * 0.1, 0), out.clone())),
            Ok(())
        );
        expect_node_error(
            &qconv_graph(bias(0.07, 0), out.clone()),
            "qconv",
            "qconv",
            "scale 0.07 for channel 0, expected s_x·s_w",
        );
        expect_node_error(
            &qconv_graph(bias(0.05, 3), out.clone()),
            "qconv",
            "qconv",
            "zero point 3 for channel 0",
        );
        let per_axis_out =
            TensorType::new(DType::U8, vec![1, 2, 3, 3]).with_quant(Quant::PerAxis {
                axis: 1,
                scales: vec![0.3, 0.3],
                zero_points: vec![0, 0],
            });
        expect_node_error(
            &qconv_graph(bias(0.05, 0), per_axis_out),
            "qconv",
            "qconv",
            "quantized per axis",
        );
        let wrong_shape = u8_q(&[1, 2, 2, 2], 0.3, 0);
        expect_node_error(
            &qconv_graph(bias(0.05, 0), wrong_shape),
            "qconv",
            "qconv",
            "inference gives shape [1, 2, 3, 3]",
        );
    }

    #[test]
    fn qmatmul_needs_a_per_tensor_a_and_b_per_tensor_or_per_column() {
        let build = |b_quant: Quant| {
            let mut g = Graph::new("g");
            let a = g.add_input("a", u8_q(&[2, 4], 0.5, 128));
            let b = g.add_input(
                "b",
                TensorType::new(DType::I8, vec![4, 3]).with_quant(b_quant),
            );
            let y = g.add_node_typed(
                "mm",
                Op::QMatMul,
                &[a, b],
                output("y", u8_q(&[2, 3], 1.0, 0)),
            );
            g.set_outputs(y);
            g
        };
        let per_axis = |axis, n| Quant::PerAxis {
            axis,
            scales: vec![0.1; n],
            zero_points: vec![0; n],
        };
        assert_eq!(verify(&build(per_axis(1, 3))), Ok(()));
        assert_eq!(verify(&build(Quant::per_tensor(0.1, 0))), Ok(()));
        expect_node_error(
            &build(per_axis(0, 4)),
            "mm",
            "qmatmul",
            "per column (its last axis), it is per axis 0",
        );
    }

    #[test]
    fn optional_outputs_may_be_omitted_but_not_invented() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::f32(vec![1, 1, 4, 4]));
        let both = g
            .add_node("pool", max_pool_2x2(), &[x], vec!["y".into(), "i".into()])
            .expect("valid pool");
        assert_eq!(
            g.value_type(both[1]),
            &TensorType::new(DType::I64, vec![1, 1, 2, 2])
        );
        g.set_outputs(both);
        assert_eq!(verify(&g), Ok(()));
        let y = TensorType::f32(vec![1, 1, 2, 2]);
        let three = (0..3)
            .map(|i| Output {
                name: format!("o{i}"),
                ty: y.clone(),
            })
            .collect();
        let extra = g.add_node_typed("pool3", max_pool_2x2(), &[x], three);
        g.set_outputs(extra);
        expect_node_error(
            &g,
            "pool3",
            "max_pool",
            "declares 3 outputs, the op produces 2",
        );
    }
}
