//! The import driver: graph inputs (with dynamic dims fixed), initializers, nodes in
//! topological order, constant folding, graph outputs. Op-specific conversion lives in
//! [`crate::ops`]; this module owns the name → value map and the node-building helpers the
//! converters share.

use crate::attrs::NodeCx;
use crate::budget::{byte_size, fold_work, MemoryBudget, FOLD_WORK_LIMIT};
use crate::error::{NodeRef, OnnxError};
use crate::ops;
use crate::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::proto::{type_proto, GraphProto, ModelProto, TensorProto, ValueInfoProto};
use crate::tensor::{declared_type, dtype_from_onnx, tensor_from_proto};
use crate::ImportOptions;
use kiln_ir::{infer_types, Graph, IrError, Op, Output, Quant, Tensor, TensorType, ValueId};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

/// Oldest and newest ai.onnx opset kiln imports.
pub(crate) const MIN_OPSET: i64 = 7;
pub(crate) const MAX_OPSET: i64 = 28;

/// Name of the default ONNX domain in messages.
const DEFAULT_DOMAIN: &str = "ai.onnx";

pub(crate) struct Importer<'m> {
    pub graph: Graph,
    /// ONNX value name → IR value.
    values: HashMap<String, ValueId>,
    /// ONNX values deliberately not produced (training-only outputs), with the reason, so
    /// that a consumer gets an explanation rather than "not found".
    unavailable: HashMap<String, String>,
    /// Every name in use (ONNX value names and generated ones), so generated names never
    /// collide with a name the model uses later.
    used_value_names: HashSet<String>,
    used_node_names: HashSet<String>,
    /// Copies of a quantized value carrying other quantization parameters (see
    /// [`Importer::quantized_view`]).
    quant_views: HashMap<ValueId, Vec<ValueId>>,
    model_dir: Option<&'m Path>,
    /// Bytes of every tensor declared or created so far ([`ImportOptions::max_memory`]).
    budget: MemoryBudget,
}

/// Import a decoded model.
pub(crate) fn import_model(
    model: &ModelProto,
    model_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph, OnnxError> {
    if model.ir_version.is_none() && model.opset_import.is_empty() && model.graph.is_none() {
        return Err(OnnxError::Model(
            "not an ONNX model: the bytes decode as protobuf but hold no ir_version, \
             opset_import or graph"
                .into(),
        ));
    }
    let opsets = opset_versions(model)?;
    let default_opset = opsets[""];
    let gp = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
    if !gp.sparse_initializer.is_empty() {
        return Err(OnnxError::Model(
            "sparse initializers are not supported".into(),
        ));
    }
    if gp.output.is_empty() {
        return Err(OnnxError::Model(
            "the graph declares no outputs (graph.output is empty)".into(),
        ));
    }
    check_value_names(gp)?;
    let name = match gp.name() {
        "" => "main",
        n => n,
    };
    let mut im = Importer {
        graph: Graph::new(name),
        values: HashMap::new(),
        unavailable: HashMap::new(),
        used_value_names: all_value_names(gp),
        used_node_names: HashSet::new(),
        quant_views: HashMap::new(),
        model_dir,
        budget: MemoryBudget::new(opts.max_memory),
    };
    im.add_inputs_and_initializers(gp, opts)?;

    for index in topological_node_order(gp)? {
        let proto = &gp.node[index];
        let op_type = proto.op_type();
        let (domain, opset) = match proto.domain() {
            "" | DEFAULT_DOMAIN => (DEFAULT_DOMAIN.to_string(), default_opset),
            d => (d.to_string(), opsets.get(d).copied().unwrap_or(0)),
        };
        let cx = NodeCx {
            proto,
            node: NodeRef {
                name: node_name(gp, index),
                op_type: op_type.to_string(),
                domain,
                opset,
            },
        };
        ops::convert(&mut im, &cx)?;
        im.explain_missing_outputs(&cx);
    }

    let mut outputs = Vec::with_capacity(gp.output.len());
    for vi in &gp.output {
        outputs.push(
            im.lookup(vi.name())
                .map_err(|why| OnnxError::Model(format!("graph output '{}' {why}", vi.name())))?,
        );
    }
    im.graph.set_outputs(outputs);
    im.graph.remove_dead_nodes();
    kiln_ir::verify(&im.graph).map_err(OnnxError::Verify)?;
    Ok(im.graph)
}

/// The imported opset version per domain (`""` for ai.onnx), checking the ai.onnx range.
fn opset_versions(model: &ModelProto) -> Result<HashMap<String, i64>, OnnxError> {
    let mut opsets = HashMap::new();
    for o in &model.opset_import {
        let domain = match o.domain() {
            DEFAULT_DOMAIN => "",
            d => d,
        };
        opsets.insert(domain.to_string(), o.version());
    }
    match opsets.get("") {
        None => Err(OnnxError::Model(
            "the model does not import the ai.onnx opset (opset_import has no default domain)".into(),
        )),
        Some(&v) if v < MIN_OPSET => Err(OnnxError::Model(format!(
            "ai.onnx opset {v} is older than {MIN_OPSET}, the oldest kiln imports; convert the model \
             with onnx.version_converter first"
        ))),
        Some(&v) if v > MAX_OPSET => Err(OnnxError::Model(format!(
            "ai.onnx opset {v} is newer than {MAX_OPSET}, the newest kiln knows"
        ))),
        Some(_) => Ok(opsets),
    }
}

/// Every value name the graph mentions.
fn all_value_names(gp: &GraphProto) -> HashSet<String> {
    let mut names: HashSet<String> = HashSet::new();
    names.extend(gp.input.iter().map(|v| v.name().to_string()));
    names.extend(gp.initializer.iter().map(|t| t.name().to_string()));
    for n in &gp.node {
        names.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
    }
    names
}

/// The node's name, or `<op_type>_<index>` when the model leaves it empty.
fn node_name(gp: &GraphProto, index: usize) -> String {
    let node = &gp.node[index];
    match node.name() {
        "" => format!("{}_{index}", node.op_type()),
        n => n.to_string(),
    }
}

/// `'conv1' (Conv)`, for model-level messages about nodes.
fn node_label(gp: &GraphProto, index: usize) -> String {
    format!("'{}' ({})", node_name(gp, index), gp.node[index].op_type())
}

/// ONNX graphs are in SSA form: every value name is defined once, by a graph input, an
/// initializer (which may also be listed as an input, the pre-IR-4 style) or one node
/// output. A second definition would silently shadow the first.
fn check_value_names(gp: &GraphProto) -> Result<(), OnnxError> {
    let mut inputs = HashSet::new();
    for vi in &gp.input {
        if !inputs.insert(vi.name()) {
            return Err(OnnxError::Model(format!(
                "graph input '{}' is declared twice",
                vi.name()
            )));
        }
    }
    let mut initializers = HashSet::new();
    for t in &gp.initializer {
        if !initializers.insert(t.name()) {
            return Err(OnnxError::Model(format!(
                "initializer '{}' is defined twice",
                t.name()
            )));
        }
    }
    let mut producers: HashMap<&str, usize> = HashMap::new();
    for (i, n) in gp.node.iter().enumerate() {
        for out in n.output.iter().filter(|o| !o.is_empty()) {
            let also = if inputs.contains(out.as_str()) {
                Some("a graph input")
            } else if initializers.contains(out.as_str()) {
                Some("an initializer")
            } else {
                None
            };
            if let Some(also) = also {
                return Err(OnnxError::Model(format!(
                    "value '{out}' is produced by node {} but is also {also}; ONNX defines \
                     each value once",
                    node_label(gp, i)
                )));
            }
            if let Some(first) = producers.insert(out, i) {
                return Err(OnnxError::Model(if first == i {
                    format!("node {} lists output '{out}' twice", node_label(gp, i))
                } else {
                    format!(
                        "value '{out}' is produced by both node {} and node {}; ONNX defines \
                         each value once",
                        node_label(gp, first),
                        node_label(gp, i)
                    )
                }));
            }
        }
    }
    Ok(())
}

/// Node indices in a topological order (ONNX requires graphs to be sorted, but not every
/// exporter complies). Ties keep the file order, so sorted graphs import in file order.
/// Output names are unique ([`check_value_names`] ran first).
fn topological_node_order(gp: &GraphProto) -> Result<Vec<usize>, OnnxError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in gp.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.as_str(), i);
        }
    }
    let mut pending = vec![0usize; gp.node.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); gp.node.len()];
    for (i, n) in gp.node.iter().enumerate() {
        for input in n.input.iter().filter(|s| !s.is_empty()) {
            // A node reading its own output is the smallest cycle: counted like any other
            // edge, it never becomes ready.
            if let Some(&p) = producer.get(input.as_str()) {
                pending[i] += 1;
                consumers[p].push(i);
            }
        }
    }
    let mut ready: BTreeSet<usize> = (0..gp.node.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(gp.node.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &c in &consumers[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.insert(c);
            }
        }
    }
    if order.len() == gp.node.len() {
        return Ok(order);
    }
    let cycle = find_cycle(gp, &producer, &pending);
    let mut steps: Vec<String> = cycle.iter().map(|&i| node_label(gp, i)).collect();
    steps.push(format!("'{}'", node_name(gp, cycle[0])));
    Err(OnnxError::Model(format!(
        "the graph has a cycle: {}",
        steps.join(" → ")
    )))
}

/// One cycle among the nodes a topological sort left unfinished (`pending > 0`), in data
/// flow order, starting at its lowest node index. Every unfinished node waits on an
/// unfinished producer, so walking from producer to producer must come back to a node
/// already visited, and the walk from there on is a cycle.
fn find_cycle(gp: &GraphProto, producer: &HashMap<&str, usize>, pending: &[usize]) -> Vec<usize> {
    let mut at = (0..pending.len())
        .find(|&i| pending[i] > 0)
        .expect("the sort left a node unfinished");
    let mut walk: Vec<usize> = Vec::new();
    let mut position: HashMap<usize, usize> = HashMap::new();
    let start = loop {
        if let Some(&k) = position.get(&at) {
            break k;
        }
        position.insert(at, walk.len());
        walk.push(at);
        at = gp.node[at]
            .input
            .iter()
            .filter_map(|name| producer.get(name.as_str()).copied())
            .find(|&p| pending[p] > 0)
            .expect("an unfinished node waits on an unfinished producer");
    };
    // The walk went from consumers to producers: reverse it into data-flow order.
    let mut cycle: Vec<usize> = walk[start..].iter().rev().copied().collect();
    let lowest = (0..cycle.len())
        .min_by_key(|&k| cycle[k])
        .expect("a cycle has a node");
    cycle.rotate_left(lowest);
    cycle
}

/// The static type of a graph input: declared dtype, declared dims with dynamic ones fixed
/// by `--input-shape` or the default dim.
fn input_type(vi: &ValueInfoProto, opts: &ImportOptions) -> Result<TensorType, OnnxError> {
    let name = vi.name();
    let err = |msg: String| OnnxError::Input {
        input: name.to_string(),
        msg,
    };
    let tensor_type = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        Some(_) => {
            return Err(err(
                "is not a tensor (sequence, map, optional and sparse inputs are not supported)"
                    .into(),
            ))
        }
        None => return Err(err("has no type".into())),
    };
    let dtype = dtype_from_onnx(tensor_type.elem_type()).map_err(err)?;
    let hint = |rank: usize| {
        let dims: Vec<String> = (0..rank).map(|i| format!("D{i}")).collect();
        format!("--input-shape {name}={}", dims.join(","))
    };
    // Per dim: its size, or why it is dynamic (its name, or none).
    let declared: Option<Vec<Result<usize, String>>> = match tensor_type.shape.as_ref() {
        None => None,
        Some(s) => Some(
            s.dim
                .iter()
                .enumerate()
                .map(|(i, d)| match &d.value {
                    Some(DimValue::DimValue(v)) => usize::try_from(*v)
                        .map(Ok)
                        .map_err(|_| err(format!("dim {i} is {v}; dims must be non-negative"))),
                    Some(DimValue::DimParam(p)) if !p.is_empty() => Ok(Err(format!("'{p}'"))),
                    _ => Ok(Err("unnamed".to_string())),
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    let shape = match (declared, opts.input_shapes.get(name)) {
        (None, Some(given)) => given.clone(),
        (None, None) => {
            return Err(err(format!(
                "has unknown rank; give its shape with --input-shape {name}=D0,D1,..."
            )))
        }
        (Some(dims), Some(given)) => {
            if dims.len() != given.len() {
                return Err(err(format!(
                    "has rank {}, but --input-shape gives {} dims {given:?}",
                    dims.len(),
                    given.len()
                )));
            }
            for (i, (d, g)) in dims.iter().zip(given).enumerate() {
                if let Ok(fixed) = d {
                    if fixed != g {
                        return Err(err(format!(
                            "dim {i} is fixed to {fixed} by the model, but --input-shape gives {g}"
                        )));
                    }
                }
            }
            given.clone()
        }
        (Some(dims), None) => {
            let rank = dims.len();
            dims.into_iter()
                .enumerate()
                .map(|(i, d)| match (d, opts.default_dim) {
                    (Ok(v), _) => Ok(v),
                    (Err(_), Some(default)) => Ok(default),
                    (Err(what), None) => Err(err(format!(
                        "dim {i} ({what}) is dynamic; fix it with {}",
                        hint(rank)
                    ))),
                })
                .collect::<Result<Vec<usize>, _>>()?
        }
    };
    byte_size(&shape, dtype.size_bytes()).map_err(err)?;
    Ok(TensorType::new(dtype, shape))
}

impl<'m> Importer<'m> {
    fn add_inputs_and_initializers(
        &mut self,
        gp: &GraphProto,
        opts: &ImportOptions,
    ) -> Result<(), OnnxError> {
        let initializer_names: HashSet<&str> = gp.initializer.iter().map(|t| t.name()).collect();
        let input_names: Vec<&str> = gp.input.iter().map(|v| v.name()).collect();
        for key in opts.input_shapes.keys().chain(opts.frozen_inputs.keys()) {
            if !input_names.contains(&key.as_str()) {
                return Err(OnnxError::Input {
                    input: key.clone(),
                    msg: format!(
                        "is not a graph input of the model (inputs: {})",
                        input_names.join(", ")
                    ),
                });
            }
        }
        for vi in &gp.input {
            let name = vi.name();
            if let Some(frozen) = opts.frozen_inputs.get(name) {
                check_frozen_input(vi, frozen)?;
                self.budget.charge(frozen.byte_size() as u64, || {
                    format!("frozen graph input '{name}' ({})", frozen.dtype())
                })?;
                let v = self.graph.add_const(name, frozen.clone(), None);
                self.bind(name, v);
            } else if initializer_names.contains(name) {
                // Old-style models list initializers among the inputs too: they are
                // constants, read below, whose type must fit the declaration.
                continue;
            } else {
                let ty = input_type(vi, opts)?;
                self.budget.charge(ty.byte_size() as u64, || {
                    format!("graph input '{name}' ({ty})")
                })?;
                let v = self.graph.add_input(name, ty);
                self.bind(name, v);
            }
        }
        let declared_inputs: HashMap<&str, &ValueInfoProto> =
            gp.input.iter().map(|vi| (vi.name(), vi)).collect();
        for t in &gp.initializer {
            if opts.frozen_inputs.contains_key(t.name()) {
                continue;
            }
            if let Some(vi) = declared_inputs.get(t.name()) {
                check_initializer_fits_input(vi, &declared_type(t)?)?;
            }
            let tensor = self.read_tensor(t, || format!("initializer '{}'", t.name()))?;
            let v = self.graph.add_const(t.name(), tensor, None);
            self.bind(t.name(), v);
        }
        Ok(())
    }

    /// Decode a tensor proto (an initializer or a Constant's value) after checking its
    /// declared type and counting its size against the memory budget. `what` names it.
    pub fn read_tensor(
        &mut self,
        proto: &TensorProto,
        what: impl FnOnce() -> String,
    ) -> Result<Tensor, OnnxError> {
        let ty = declared_type(proto)?;
        self.budget
            .charge(ty.byte_size() as u64, || format!("{} ({ty})", what()))?;
        tensor_from_proto(proto, self.model_dir)
    }

    /// Count a value of type `ty` the node is about to create (output `name`) against the
    /// memory budget; call it before allocating the value.
    pub fn charge_value(
        &mut self,
        cx: &NodeCx,
        name: &str,
        ty: &TensorType,
    ) -> Result<(), OnnxError> {
        let bytes = byte_size(&ty.shape, ty.dtype.size_bytes())
            .map_err(|msg| cx.err(format!("output '{name}': {msg}")))?;
        self.budget
            .charge(bytes, || format!("{}: output '{name}' ({ty})", cx.node))
    }

    /// Where external data files live (None for models loaded from bytes alone).
    pub fn model_dir(&self) -> Option<&'m Path> {
        self.model_dir
    }

    /// Make `base` unique among node names.
    pub fn unique_node_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while !self.used_node_names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    /// A value name derived from `base` that no model value uses.
    pub fn fresh_value_name(&mut self, base: &str) -> String {
        let mut k = 1;
        loop {
            let name = format!("{base}_{k}");
            if self.used_value_names.insert(name.clone()) {
                return name;
            }
            k += 1;
        }
    }

    pub fn bind(&mut self, name: &str, v: ValueId) {
        self.used_value_names.insert(name.to_string());
        self.values.insert(name.to_string(), v);
    }

    /// Record that `name` is deliberately not produced.
    pub fn mark_unavailable(&mut self, name: &str, reason: String) {
        self.unavailable.insert(name.to_string(), reason);
    }

    /// Outputs a node lists beyond those its op has stay unbound; record why, so that a
    /// consumer's error names the node instead of saying no node produces the value.
    fn explain_missing_outputs(&mut self, cx: &NodeCx) {
        for (i, name) in cx.proto.output.iter().enumerate() {
            if name.is_empty() || self.values.contains_key(name) {
                continue;
            }
            let reason = format!(
                "node '{}' ({}) lists it as output {i}, but {} has no such output",
                cx.node.name, cx.node.op_type, cx.node.op_type
            );
            self.unavailable.entry(name.clone()).or_insert(reason);
        }
    }

    fn lookup(&self, name: &str) -> Result<ValueId, String> {
        if let Some(&v) = self.values.get(name) {
            return Ok(v);
        }
        Err(match self.unavailable.get(name) {
            Some(reason) => format!("is not available: {reason}"),
            None => "is not produced by any node, graph input or initializer".to_string(),
        })
    }

    /// Input `i` of the node, `None` when absent or named "" (an omitted optional input).
    pub fn input(&self, cx: &NodeCx, i: usize) -> Result<Option<ValueId>, OnnxError> {
        match cx.proto.input.get(i).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => self
                .lookup(name)
                .map(Some)
                .map_err(|why| cx.err(format!("input {i} '{name}' {why}"))),
        }
    }

    /// Input `i`, which the op requires.
    pub fn req_input(&self, cx: &NodeCx, i: usize) -> Result<ValueId, OnnxError> {
        self.input(cx, i)?
            .ok_or_else(|| cx.err(format!("required input {i} is missing")))
    }

    /// The number of inputs the node lists (including omitted ones in the middle).
    pub fn input_count(&self, cx: &NodeCx) -> usize {
        cx.proto.input.len()
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.graph.value_type(v)
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        &self.graph.value_type(v).shape
    }

    pub fn const_of(&self, v: ValueId) -> Option<&Tensor> {
        self.graph.const_tensor(v)
    }

    /// The value of input `i`, which must be a constant after folding (shape-like inputs:
    /// kiln specializes everything to static shapes). `None` when the input is omitted.
    pub fn const_input(
        &self,
        cx: &NodeCx,
        i: usize,
        what: &str,
    ) -> Result<Option<Tensor>, OnnxError> {
        let Some(v) = self.input(cx, i)? else {
            return Ok(None);
        };
        let producer = self.graph.node(v.node);
        match self.const_of(v) {
            Some(t) => Ok(Some(t.clone())),
            None if matches!(producer.op, Op::Input { .. }) => Err(cx.err(format!(
                "input {i} '{}' ({what}) must be a constant, but it is a graph input, known \
                 only at run time; kiln needs it known at import (static shapes)",
                cx.proto.input[i],
            ))),
            None => Err(cx.err(format!(
                "input {i} '{}' ({what}) must be a constant, but it is computed at run time by \
                 node '{}' ({}); kiln needs it known at import (static shapes)",
                cx.proto.input[i],
                producer.name,
                producer.op.mnemonic()
            ))),
        }
    }

    /// A constant input as i64 values (integer tensors of any width).
    pub fn const_ints(
        &self,
        cx: &NodeCx,
        i: usize,
        what: &str,
    ) -> Result<Option<Vec<i64>>, OnnxError> {
        match self.const_input(cx, i, what)? {
            None => Ok(None),
            Some(t) => t.to_i64_vec().map(Some).ok_or_else(|| {
                cx.err(format!(
                    "input {i} ({what}) must be an integer tensor, got {}",
                    t.dtype()
                ))
            }),
        }
    }

    /// A constant input as f32 values.
    pub fn const_floats(
        &self,
        cx: &NodeCx,
        i: usize,
        what: &str,
    ) -> Result<Option<Vec<f32>>, OnnxError> {
        Ok(self.const_input(cx, i, what)?.map(|t| t.to_f32_vec()))
    }

    /// Output `i`'s ONNX name, `None` when absent or "".
    pub fn output_name<'c>(&self, cx: &NodeCx<'c>, i: usize) -> Option<&'c str> {
        match cx.proto.output.get(i).map(String::as_str) {
            None | Some("") => None,
            Some(n) => Some(n),
        }
    }

    /// The first output's name, which every op has.
    pub fn main_output(&self, cx: &NodeCx) -> Result<String, OnnxError> {
        self.output_name(cx, 0)
            .map(str::to_string)
            .ok_or_else(|| cx.err("has no output"))
    }

    /// Add a constant value named `name` and bind it.
    pub fn bind_const(&mut self, name: &str, tensor: Tensor, quant: Option<Quant>) -> ValueId {
        let v = self.graph.add_const(name, tensor, quant);
        self.bind(name, v);
        v
    }

    /// Build `op` for the node with outputs named `outputs`, inferring types, and bind the
    /// names. When every input is a constant the op is evaluated by the reference
    /// interpreter and its results become constants instead (this is how shape
    /// computations such as Shape → Gather → Concat → Reshape disappear), unless that would
    /// cost more than [`FOLD_WORK_LIMIT`] element operations: such a node is left to run
    /// time. Dequantize is never folded: it marks where a quantized model's integer
    /// weights are, which the optimizer needs to see.
    pub fn emit(
        &mut self,
        cx: &NodeCx,
        op: Op,
        inputs: &[ValueId],
        outputs: &[String],
    ) -> Result<Vec<ValueId>, OnnxError> {
        if self.foldable(&op, inputs) {
            let in_types: Vec<&TensorType> = inputs.iter().map(|&v| self.ty(v)).collect();
            let types = infer_types(&op, &in_types).map_err(|msg| OnnxError::Ir {
                node: Box::new(cx.node.clone()),
                error: IrError::Infer {
                    node: cx.node.name.clone(),
                    op: op.mnemonic(),
                    msg,
                },
            })?;
            if fold_work(&op, &in_types, &types) <= FOLD_WORK_LIMIT {
                return self.fold(cx, &op, inputs, outputs, types);
            }
        }
        let name = self.node_name_for(cx);
        let ids = self
            .graph
            .add_node(name, op, inputs, outputs.to_vec())
            .map_err(|error| OnnxError::Ir {
                node: Box::new(cx.node.clone()),
                error,
            })?;
        for (name, &v) in outputs.iter().zip(&ids) {
            let ty = self.ty(v).clone();
            self.charge_value(cx, name, &ty)?;
            self.bind(name, v);
        }
        Ok(ids)
    }

    /// Like [`Importer::emit`] for ops whose output types are a free choice (quantize,
    /// qconv, qmatmul): `types` gives them.
    pub fn emit_typed(
        &mut self,
        cx: &NodeCx,
        op: Op,
        inputs: &[ValueId],
        outputs: &[String],
        types: Vec<TensorType>,
    ) -> Result<Vec<ValueId>, OnnxError> {
        if self.foldable(&op, inputs) {
            let in_types: Vec<&TensorType> = inputs.iter().map(|&v| self.ty(v)).collect();
            if fold_work(&op, &in_types, &types) <= FOLD_WORK_LIMIT {
                return self.fold(cx, &op, inputs, outputs, types);
            }
        }
        for (name, ty) in outputs.iter().zip(&types) {
            self.charge_value(cx, name, ty)?;
        }
        let name = self.node_name_for(cx);
        let outs = outputs
            .iter()
            .zip(types)
            .map(|(name, ty)| Output {
                name: name.clone(),
                ty,
            })
            .collect();
        let ids = self.graph.add_node_typed(name, op, inputs, outs);
        for (name, &v) in outputs.iter().zip(&ids) {
            self.bind(name, v);
        }
        Ok(ids)
    }

    /// The output shapes inference gives `op` (for free-output-type ops, whose dtype and
    /// quantization the importer chooses).
    pub fn infer_shapes(
        &self,
        cx: &NodeCx,
        op: &Op,
        inputs: &[ValueId],
    ) -> Result<Vec<Vec<usize>>, OnnxError> {
        let in_types: Vec<&TensorType> = inputs.iter().map(|&v| self.ty(v)).collect();
        infer_types(op, &in_types)
            .map(|types| types.into_iter().map(|t| t.shape).collect())
            .map_err(|msg| OnnxError::Ir {
                node: Box::new(cx.node.clone()),
                error: IrError::Infer {
                    node: cx.node.name.clone(),
                    op: op.mnemonic(),
                    msg,
                },
            })
    }

    /// The IR node name for an IR node built for the ONNX node: its ONNX name, suffixed
    /// where taken (a second IR node for the same ONNX node, or a duplicate ONNX name).
    fn node_name_for(&mut self, cx: &NodeCx) -> String {
        self.unique_node_name(&cx.node.name)
    }

    fn foldable(&self, op: &Op, inputs: &[ValueId]) -> bool {
        !matches!(op, Op::Dequantize)
            && !inputs.is_empty()
            && inputs.iter().all(|&v| self.const_of(v).is_some())
    }

    fn fold(
        &mut self,
        cx: &NodeCx,
        op: &Op,
        inputs: &[ValueId],
        outputs: &[String],
        mut types: Vec<TensorType>,
    ) -> Result<Vec<ValueId>, OnnxError> {
        types.truncate(outputs.len());
        // Folding allocates the results: count them first (a broadcast of two small
        // constants can be enormous).
        for (name, ty) in outputs.iter().zip(&types) {
            self.charge_value(cx, name, ty)?;
        }
        let tensors: Vec<&Tensor> = inputs
            .iter()
            .map(|&v| {
                self.const_of(v)
                    .expect("foldable checked every input is constant")
            })
            .collect();
        let in_types: Vec<&TensorType> = inputs.iter().map(|&v| self.ty(v)).collect();
        let results = kiln_interp::eval_op(op, &tensors, &in_types, &types).map_err(|msg| {
            cx.err(format!(
                "constant folding ({}) failed: {msg}",
                op.mnemonic()
            ))
        })?;
        let mut ids = Vec::with_capacity(results.len());
        for ((name, tensor), ty) in outputs.iter().zip(results).zip(types) {
            ids.push(self.bind_const(name, tensor, ty.quant));
        }
        Ok(ids)
    }

    /// `v` read with quantization parameters `quant`: an integer value feeding a
    /// Dequantize / QLinear* op must carry them in its type. A value without parameters
    /// gets them. A constant already carrying different ones (the same integers
    /// dequantized two ways, e.g. a shared weight) is read through a second constant node
    /// over the same pool entry with the other parameters. A computed value cannot be: the
    /// IR has no op that reinterprets integers under new parameters (an Identity must keep
    /// its input's quantization, and the interpreter refuses Cast of quantized values).
    pub fn quantized_view(
        &mut self,
        cx: &NodeCx,
        v: ValueId,
        quant: Quant,
        what: &str,
    ) -> Result<ValueId, OnnxError> {
        let ty = self.ty(v).clone();
        if !ty.dtype.is_quantizable() {
            return Err(cx.err(format!("{what} must be a u8, i8 or i32 tensor, got {ty}")));
        }
        let existing = match &ty.quant {
            None => {
                self.graph.output_mut(v).ty.quant = Some(quant);
                return Ok(v);
            }
            Some(q) if q.same_as(&quant) => return Ok(v),
            Some(q) => q.clone(),
        };
        if let Some(views) = self.quant_views.get(&v) {
            if let Some(&view) = views
                .iter()
                .find(|&&w| self.ty(w).quant.as_ref().is_some_and(|q| q.same_as(&quant)))
            {
                return Ok(view);
            }
        }
        let Op::Const(id) = self.graph.node(v.node).op else {
            return Err(cx.err(format!(
                "{what} '{}' is already read with quantization {existing:?} elsewhere; reading \
                 the same computed integers with other parameters ({quant:?}) is not supported",
                self.graph.value_name(v)
            )));
        };
        let base = self.graph.value_name(v).to_string();
        let name = self.fresh_value_name(&base);
        let view_ty = TensorType {
            quant: Some(quant),
            ..ty
        };
        let view = self.graph.add_const_node(name, id, view_ty);
        self.quant_views.entry(v).or_default().push(view);
        Ok(view)
    }
}

/// A frozen input's tensor must fit the declared input type.
fn check_frozen_input(vi: &ValueInfoProto, t: &Tensor) -> Result<(), OnnxError> {
    let err = |msg: String| OnnxError::Input {
        input: vi.name().to_string(),
        msg,
    };
    if let Some(type_proto::Value::TensorType(tt)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    {
        let dtype = dtype_from_onnx(tt.elem_type()).map_err(err)?;
        if dtype != t.dtype() {
            return Err(err(format!(
                "is declared {dtype} but the frozen value is {}",
                t.dtype()
            )));
        }
        if let Some(shape) = &tt.shape {
            let ok = shape.dim.len() == t.shape().len()
                && shape
                    .dim
                    .iter()
                    .zip(t.shape())
                    .all(|(d, &n)| match d.value {
                        Some(DimValue::DimValue(v)) if v >= 0 => v as usize == n,
                        _ => true,
                    });
            if !ok {
                return Err(err(format!(
                    "the frozen value's shape {:?} does not fit the declared shape",
                    t.shape()
                )));
            }
        }
    }
    Ok(())
}

/// An initializer that is also listed as a graph input must have the declared type: a
/// mismatch means the model is inconsistent, and the initializer would silently win.
fn check_initializer_fits_input(vi: &ValueInfoProto, init: &TensorType) -> Result<(), OnnxError> {
    let err = |msg: String| OnnxError::Input {
        input: vi.name().to_string(),
        msg,
    };
    let Some(type_proto::Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    // An input declared without an element type is only a name; the initializer types it.
    if tt.elem_type() != 0 {
        let dtype = dtype_from_onnx(tt.elem_type()).map_err(err)?;
        if dtype != init.dtype {
            return Err(err(format!(
                "is declared {dtype}, but its initializer is {init}"
            )));
        }
    }
    if let Some(shape) = &tt.shape {
        let fits = shape.dim.len() == init.shape.len()
            && shape
                .dim
                .iter()
                .zip(&init.shape)
                .all(|(d, &n)| match d.value {
                    Some(DimValue::DimValue(v)) => usize::try_from(v) == Ok(n),
                    _ => true,
                });
        if !fits {
            let dims: Vec<String> = shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(DimValue::DimValue(v)) => v.to_string(),
                    Some(DimValue::DimParam(p)) if !p.is_empty() => p.clone(),
                    _ => "?".to_string(),
                })
                .collect();
            return Err(err(format!(
                "is declared with shape [{}], but its initializer is {init}",
                dims.join(",")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tensor_proto::DataType;
    use crate::proto::OperatorSetIdProto;
    use crate::testutil::*;
    use crate::{import_bytes, import_file, SUPPORTED_OPS};
    use kiln_ir::DType;
    use prost::Message;

    /// x[1,2,4,4] → Conv(w[3,2,3,3], b[3], pads 1) → Relu → y.
    fn conv_relu_model() -> ModelBuilder {
        let w: Vec<f32> = (0..54).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        ModelBuilder::new(13)
            .input("x", &[1, 2, 4, 4])
            .init(tensor_f32("w", &[3, 2, 3, 3], &w))
            .init(tensor_f32("b", &[3], &[0.1, -0.2, 0.3]))
            .node(named(
                node(
                    "Conv",
                    &["x", "w", "b"],
                    &["c"],
                    vec![attr_ints("pads", &[1, 1, 1, 1])],
                ),
                "conv1",
            ))
            .node(node("Relu", &["c"], &["y"], vec![]))
            .output("y")
    }

    #[test]
    fn names_types_and_outputs_follow_the_model() {
        let g = conv_relu_model().import().unwrap();
        assert_eq!(g.name, "test");
        assert_eq!(g.inputs().len(), 1);
        assert_eq!(g.value_name(g.inputs()[0]), "x");
        let relu = output_node(&g, 0);
        // An unnamed node gets <op_type>_<index>.
        assert_eq!(relu.name, "Relu_1");
        assert_eq!(relu.outputs[0].name, "y");
        assert_eq!(relu.outputs[0].ty, TensorType::f32(vec![1, 3, 4, 4]));
        let conv = g.node(relu.inputs()[0].node);
        assert_eq!(conv.name, "conv1");
        assert_eq!(conv.outputs[0].name, "c");
        assert!(matches!(conv.op, Op::Conv(_)));
        assert_eq!(g.value_name(conv.inputs()[1]), "w");
        assert_eq!(
            g.const_tensor(conv.inputs()[1]).unwrap().shape(),
            &[3, 2, 3, 3]
        );
    }

    #[test]
    fn graph_outputs_keep_their_order() {
        let g = ModelBuilder::new(13)
            .input("x", &[2])
            .node(node("Relu", &["x"], &["r"], vec![]))
            .node(node("Sigmoid", &["x"], &["s"], vec![]))
            .output("s")
            .output("r")
            .output("x")
            .import()
            .unwrap();
        let names: Vec<&str> = g.outputs().iter().map(|&v| g.value_name(v)).collect();
        assert_eq!(names, ["s", "r", "x"]);
    }

    #[test]
    fn unsorted_nodes_are_imported_in_dependency_order() {
        let g = ModelBuilder::new(13)
            .input("x", &[2])
            .node(node("Relu", &["s"], &["y"], vec![]))
            .node(node("Sigmoid", &["x"], &["s"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(output_op(&g, 0), &Op::Activation(kiln_ir::Activation::Relu));
    }

    #[test]
    fn a_cycle_is_an_error_that_lists_it() {
        // A consumer of the cycle comes first in the file: the message shows the cycle
        // itself, in data-flow order, not the first node that could not be sorted.
        let err = ModelBuilder::new(13)
            .input("x", &[2])
            .node(named(node("Sigmoid", &["b"], &["y"], vec![]), "after"))
            .node(named(node("Add", &["x", "b"], &["a"], vec![]), "first"))
            .node(named(node("Relu", &["a"], &["b"], vec![]), "second"))
            .output("y")
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: the graph has a cycle: 'first' (Add) → 'second' (Relu) → 'first'"
        );
        // A node reading its own output; unnamed, it gets its generated name.
        let err = ModelBuilder::new(13)
            .input("x", &[2])
            .node(node("Relu", &["x"], &["r"], vec![]))
            .node(node("Add", &["r", "y"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: the graph has a cycle: 'Add_1' (Add) → 'Add_1'"
        );
    }

    #[test]
    fn every_value_is_defined_once() {
        let message = |m: ModelBuilder| m.import().unwrap_err().to_string();
        let relu = |out: &str| named(node("Relu", &["x"], &[out], vec![]), "relu");
        assert_eq!(
            message(
                ModelBuilder::new(13)
                    .input("x", &[2])
                    .node(relu("y"))
                    .node(named(node("Sigmoid", &["x"], &["y"], vec![]), "sig"))
                    .output("y")
            ),
            "model: value 'y' is produced by both node 'relu' (Relu) and node 'sig' (Sigmoid); \
             ONNX defines each value once"
        );
        assert!(message(
            ModelBuilder::new(13)
                .input("x", &[2])
                .node(relu("x"))
                .output("x")
        )
        .contains("value 'x' is produced by node 'relu' (Relu) but is also a graph input"));
        assert!(message(
            ModelBuilder::new(13)
                .input("x", &[2])
                .init(tensor_f32("w", &[1], &[1.0]))
                .node(relu("w"))
                .output("w")
        )
        .contains("value 'w' is produced by node 'relu' (Relu) but is also an initializer"));
        assert_eq!(
            message(
                ModelBuilder::new(13)
                    .input("x", &[2])
                    .node(named(node("Split", &["x"], &["y", "y"], vec![]), "split"))
                    .output("y")
            ),
            "model: node 'split' (Split) lists output 'y' twice"
        );
        assert_eq!(
            message(
                ModelBuilder::new(13)
                    .input("x", &[2])
                    .input("x", &[2])
                    .node(relu("y"))
                    .output("y")
            ),
            "model: graph input 'x' is declared twice"
        );
        assert_eq!(
            message(
                ModelBuilder::new(13)
                    .input("x", &[2])
                    .init(tensor_f32("w", &[1], &[1.0]))
                    .init(tensor_f32("w", &[1], &[2.0]))
                    .node(relu("y"))
                    .output("y")
            ),
            "model: initializer 'w' is defined twice"
        );
    }

    #[test]
    fn an_output_the_op_does_not_have_is_explained() {
        let err = ModelBuilder::new(13)
            .input("x", &[2])
            .node(named(node("Relu", &["x"], &["y", "z"], vec![]), "relu"))
            .output("z")
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: graph output 'z' is not available: node 'relu' (Relu) lists it as output 1, \
             but Relu has no such output"
        );
    }

    #[test]
    fn a_graph_without_outputs_is_an_error() {
        let err = ModelBuilder::new(13)
            .input("x", &[2])
            .node(node("Relu", &["x"], &["y"], vec![]))
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: the graph declares no outputs (graph.output is empty)"
        );
    }

    #[test]
    fn files_that_are_not_onnx_models_say_what_they_are() {
        let message = |bytes: &[u8]| {
            import_bytes(bytes, None, &ImportOptions::default())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message(b""),
            "model: the file is empty (0 bytes), not an ONNX model (a serialized ModelProto)"
        );
        assert!(message(b"\x93NUMPY\x01\x00").contains("this is a .npy array"));
        assert!(message(b"PK\x03\x04\x14\x00").contains("this is a zip archive"));
        assert!(message(b"\x89HDF\r\n\x1a\n").contains("this is an HDF5 file"));
        // Field 10 (unknown to ModelProto, skipped): valid protobuf, but nothing in it.
        assert_eq!(
            message(b"\x50\x01"),
            "model: not an ONNX model: the bytes decode as protobuf but hold no ir_version, \
             opset_import or graph"
        );
    }

    #[test]
    fn input_dims_must_be_non_negative_and_fit_in_memory() {
        let err = ModelBuilder::new(13)
            .input("x", &[2, -3])
            .node(node("Relu", &["x"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "graph input 'x': dim 1 is -3; dims must be non-negative"
        );
        let err = ModelBuilder::new(13)
            .input("x", &[1 << 40, 1 << 40])
            .node(node("Relu", &["x"], &["y"], vec![]))
            .output("y")
            .import_with(&ImportOptions {
                max_memory: None,
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "graph input 'x': shape [1099511627776, 1099511627776] has more elements than fit in \
             memory"
        );
    }

    #[test]
    fn an_initializer_listed_as_input_must_fit_its_declaration() {
        let model = |dtype: DataType, dims: &[Dim]| {
            ModelBuilder::new(13)
                .input("x", &[2])
                .input_typed("b", dtype, Some(dims))
                .init(tensor_f32("b", &[2], &[1.0, 2.0]))
                .node(node("Add", &["x", "b"], &["y"], vec![]))
                .output("y")
                .import()
        };
        model(DataType::Float, &[Dim::Fixed(2)]).unwrap();
        model(DataType::Float, &[Dim::Named("n")]).unwrap();
        assert_eq!(
            model(DataType::Float, &[Dim::Fixed(3)])
                .unwrap_err()
                .to_string(),
            "graph input 'b': is declared with shape [3], but its initializer is f32[2]"
        );
        assert_eq!(
            model(DataType::Int64, &[Dim::Fixed(2)])
                .unwrap_err()
                .to_string(),
            "graph input 'b': is declared i64, but its initializer is f32[2]"
        );
    }

    /// Models declaring a 2^40-element tensor somewhere, each failing on the memory limit.
    #[test]
    fn the_memory_limit_is_checked_before_allocating() {
        let huge = 1i64 << 20; // 2^20 · 2^20 f32 elements: 4 TiB
        let expect_limit = |model: ModelBuilder, what: &str| {
            let err = model.import().unwrap_err();
            assert!(matches!(err, OnnxError::MemoryLimit { .. }), "{err}");
            assert!(err.to_string().starts_with(what), "{err}");
            assert!(
                err.to_string().ends_with(
                    "over the import memory limit of 16.0 GiB; raise it with --max-memory if \
                     the model really is that large"
                ),
                "{err}"
            );
        };
        expect_limit(
            ModelBuilder::new(13)
                .input("x", &[huge, huge])
                .node(node("Relu", &["x"], &["y"], vec![]))
                .output("y"),
            "graph input 'x' (f32[1048576,1048576]) needs 4.0 TiB (4398046511104 bytes),",
        );
        // The data would be 4 TiB too: the limit fires before its length is even checked.
        expect_limit(
            ModelBuilder::new(13)
                .input("x", &[2])
                .init(tensor_raw("w", DataType::Float, &[huge, huge], vec![0; 4]))
                .node(node("Add", &["x", "w"], &["y"], vec![]))
                .output("y"),
            "initializer 'w' (f32[1048576,1048576]) needs 4.0 TiB",
        );
        expect_limit(
            ModelBuilder::new(13)
                .init(tensor_i64("shape", &[2], &[huge, huge]))
                .node(named(
                    node("ConstantOfShape", &["shape"], &["y"], vec![]),
                    "fill",
                ))
                .output("y"),
            "node 'fill' (ConstantOfShape, domain ai.onnx, opset 13): output 'y' \
             (f32[1048576,1048576]) needs 4.0 TiB",
        );
        expect_limit(
            ModelBuilder::new(13)
                .init(tensor_i64("start", &[], &[0]))
                .init(tensor_i64("limit", &[], &[1 << 32]))
                .init(tensor_i64("delta", &[], &[1]))
                .node(named(
                    node("Range", &["start", "limit", "delta"], &["y"], vec![]),
                    "range",
                ))
                .output("y"),
            "node 'range' (Range, domain ai.onnx, opset 13): output 'y' (i64[4294967296]) needs \
             32.0 GiB",
        );
        // Folding a broadcast of two small constants: counted before it is evaluated.
        expect_limit(
            ModelBuilder::new(13)
                .init(tensor_i64("rows", &[2], &[huge, 1]))
                .init(tensor_i64("cols", &[2], &[1, huge]))
                .node(node("ConstantOfShape", &["rows"], &["a"], vec![]))
                .node(node("ConstantOfShape", &["cols"], &["b"], vec![]))
                .node(named(node("Add", &["a", "b"], &["y"], vec![]), "add"))
                .output("y"),
            "node 'add' (Add, domain ai.onnx, opset 13): output 'y' (f32[1048576,1048576]) \
             needs 4.0 TiB",
        );
        // A computed value is allocated only at run time, but counts all the same.
        expect_limit(
            ModelBuilder::new(13)
                .input("x", &[1, 1, 8, 8])
                .init(tensor_f32("scales", &[4], &[1.0, 1.0, 131072.0, 131072.0]))
                .node(named(
                    node("Resize", &["x", "", "scales"], &["y"], vec![]),
                    "resize",
                ))
                .output("y"),
            "node 'resize' (Resize, domain ai.onnx, opset 13): output 'y' \
             (f32[1,1,1048576,1048576]) needs 4.0 TiB",
        );
    }

    #[test]
    fn the_memory_limit_counts_the_whole_model_and_can_be_lifted() {
        // Two 4 KiB initializers and a 4 KiB input: 12 KiB in all.
        let model = ModelBuilder::new(13)
            .input("x", &[1024])
            .init(tensor_raw("a", DataType::Float, &[1024], vec![0; 4096]))
            .init(tensor_raw("b", DataType::Float, &[1024], vec![0; 4096]))
            .node(node("Add", &["x", "a"], &["s"], vec![]))
            .node(node("Add", &["s", "b"], &["y"], vec![]))
            .output("y");
        let with_limit = |limit| {
            model.import_with(&ImportOptions {
                max_memory: limit,
                ..Default::default()
            })
        };
        // Inputs and initializers (12 KiB) plus the two 4 KiB sums: 20 KiB.
        with_limit(Some(20 << 10)).unwrap();
        let err = with_limit(Some((20 << 10) - 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node 'Add_1' (Add, domain ai.onnx, opset 13): output 'y' (f32[1024]) needs 4.0 KiB \
             (4096 bytes) on top of the 16.0 KiB imported before it, over the import memory \
             limit of 20.0 KiB; raise it with --max-memory if the model really is that large"
        );
        let err = with_limit(Some(10 << 10)).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "initializer 'b' (f32[1024]) needs 4.0 KiB (4096 bytes) on top of the 8.0 KiB"
            ),
            "{err}"
        );
        // Without a limit a declared 4 TiB input imports: nothing is allocated for it.
        let huge = ModelBuilder::new(13)
            .input("x", &[1 << 20, 1 << 20])
            .node(node("Relu", &["x"], &["y"], vec![]))
            .output("y")
            .import_with(&ImportOptions {
                max_memory: None,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(huge.value_type(huge.outputs()[0]).numel(), 1 << 40);
        assert_eq!(
            ImportOptions::default().max_memory,
            Some(crate::DEFAULT_MAX_MEMORY)
        );
    }

    #[test]
    fn a_truncated_model_is_an_error_not_a_panic() {
        let bytes = conv_relu_model().bytes();
        let half = import_bytes(&bytes[..bytes.len() / 2], None, &ImportOptions::default());
        assert!(matches!(half, Err(OnnxError::Decode(_))), "{half:?}");
        // Every other prefix must fail cleanly too (or, cut at a field boundary, import).
        for n in 0..bytes.len() {
            let _ = import_bytes(&bytes[..n], None, &ImportOptions::default());
        }
        assert!(import_bytes(&[0xff; 16], None, &ImportOptions::default()).is_err());
    }

    #[test]
    fn unsupported_ops_name_the_node_and_list_what_is_supported() {
        let err = ModelBuilder::new(17)
            .input("x", &[1, 2, 3])
            .node(named(node("LSTM", &["x"], &["y"], vec![]), "lstm_1"))
            .output("y")
            .import()
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("unsupported op 'LSTM' (domain ai.onnx, opset 17) in node 'lstm_1'; supported: Add, AveragePool, BatchNormalization,"),
            "{msg}"
        );
        assert!(msg.ends_with("Unsqueeze, Upsample"), "{msg}");

        let mut model = ModelBuilder::new(13).input("x", &[2]).output("y").model();
        let mut n = named(node("FusedConv", &["x"], &["y"], vec![]), "fc");
        n.domain = Some("com.microsoft".into());
        model.graph.as_mut().unwrap().node.push(n);
        model.opset_import.push(OperatorSetIdProto {
            domain: Some("com.microsoft".into()),
            version: Some(1),
        });
        let err =
            import_bytes(&model.encode_to_vec(), None, &ImportOptions::default()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "unsupported op 'FusedConv' (domain com.microsoft, opset 1) in node 'fc'"
            ),
            "{err}"
        );
    }

    #[test]
    fn every_supported_op_is_dispatched() {
        assert!(
            SUPPORTED_OPS.windows(2).all(|w| w[0] < w[1]),
            "SUPPORTED_OPS is sorted"
        );
        for op in SUPPORTED_OPS {
            // With no inputs every op fails, but never as "unsupported".
            let err = ModelBuilder::new(13)
                .node(node(op, &[], &["y"], vec![]))
                .output("y")
                .import()
                .unwrap_err();
            assert!(
                !matches!(err, OnnxError::UnsupportedOp { .. }),
                "{op}: {err}"
            );
        }
    }

    fn dynamic_model() -> ModelBuilder {
        let dims = [
            Dim::Named("N"),
            Dim::Fixed(3),
            Dim::Named("H"),
            Dim::Named("W"),
        ];
        ModelBuilder::new(13)
            .input_typed("x", DataType::Float, Some(&dims))
            .node(node("Relu", &["x"], &["y"], vec![]))
            .output("y")
    }

    #[test]
    fn dynamic_dims_need_an_input_shape() {
        let err = dynamic_model().import().unwrap_err();
        assert_eq!(
            err.to_string(),
            "graph input 'x': dim 0 ('N') is dynamic; fix it with --input-shape x=D0,D1,D2,D3"
        );
        let mut opts = ImportOptions::default();
        opts.input_shapes.insert("x".into(), vec![1, 3, 32, 48]);
        let g = dynamic_model().import_with(&opts).unwrap();
        assert_eq!(g.value_type(g.inputs()[0]).shape, vec![1, 3, 32, 48]);
        assert_eq!(g.value_type(g.outputs()[0]).shape, vec![1, 3, 32, 48]);

        let default = ImportOptions {
            default_dim: Some(1),
            ..Default::default()
        };
        let g = dynamic_model().import_with(&default).unwrap();
        assert_eq!(g.value_type(g.inputs()[0]).shape, vec![1, 3, 1, 1]);
    }

    #[test]
    fn input_shapes_must_agree_with_the_model() {
        let with = |name: &str, shape: Vec<usize>| {
            let mut opts = ImportOptions::default();
            opts.input_shapes.insert(name.into(), shape);
            dynamic_model().import_with(&opts).unwrap_err().to_string()
        };
        assert_eq!(
            with("x", vec![1, 4, 8, 8]),
            "graph input 'x': dim 1 is fixed to 3 by the model, but --input-shape gives 4"
        );
        assert!(with("x", vec![1, 3, 8]).contains("has rank 4, but --input-shape gives 3 dims"));
        assert!(
            with("img", vec![1]).contains("'img': is not a graph input of the model (inputs: x)")
        );
        let err = ModelBuilder::new(13)
            .input_typed("x", DataType::Float, None)
            .node(node("Relu", &["x"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap_err();
        assert!(err.to_string().contains("unknown rank"), "{err}");
    }

    #[test]
    fn opsets_outside_7_to_28_are_rejected() {
        for (opset, what) in [(6, "older than 7"), (29, "newer than 28")] {
            let err = ModelBuilder::new(opset)
                .input("x", &[2])
                .node(node("Relu", &["x"], &["y"], vec![]))
                .output("y")
                .import()
                .unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
    }

    #[test]
    fn initializers_listed_as_inputs_and_frozen_inputs_are_constants() {
        let model = ModelBuilder::new(13)
            .input("x", &[2])
            .input("bias", &[2])
            .input("scale", &[2])
            .init(tensor_f32("bias", &[2], &[1.0, 2.0]))
            .node(node("Add", &["x", "bias"], &["a"], vec![]))
            .node(node("Mul", &["a", "scale"], &["y"], vec![]))
            .output("y");
        let mut opts = ImportOptions::default();
        opts.frozen_inputs.insert(
            "scale".into(),
            Tensor::from_f32(vec![2], vec![10.0, 100.0]).unwrap(),
        );
        let g = model.import_with(&opts).unwrap();
        assert_eq!(g.inputs().len(), 1);
        let scale = output_operand(&g, 0, 1);
        assert_eq!(
            g.const_tensor(scale).unwrap().as_f32().unwrap(),
            &[10.0, 100.0]
        );
        // (x + [1, 2]) · [10, 100] at x = [0.5, -1]: [15, 100].
        let out = run(&g, &[Tensor::from_f32(vec![2], vec![0.5, -1.0]).unwrap()]);
        assert_eq!(out[0].as_f32().unwrap(), &[15.0, 100.0]);

        opts.frozen_inputs.insert(
            "scale".into(),
            Tensor::from_i64(vec![2], vec![1, 2]).unwrap(),
        );
        let err = model.import_with(&opts).unwrap_err();
        assert!(
            err.to_string()
                .contains("is declared f32 but the frozen value is i64"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_graph_output_or_input_is_an_error() {
        let err = ModelBuilder::new(13)
            .input("x", &[2])
            .node(node("Relu", &["x"], &["y"], vec![]))
            .output("z")
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model: graph output 'z' is not produced by any node, graph input or initializer"
        );
        let err = ModelBuilder::new(13)
            .input("x", &[2])
            .node(named(node("Add", &["x", "nope"], &["y"], vec![]), "add"))
            .output("y")
            .import()
            .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "node 'add' (Add, domain ai.onnx, opset 13): input 1 'nope' is not produced"
            ),
            "{err}"
        );
    }

    #[test]
    fn half_precision_inputs_become_f32() {
        let dims = [Dim::Fixed(2)];
        let g = ModelBuilder::new(13)
            .input_typed("x", DataType::Float16, Some(&dims))
            .node(node("Relu", &["x"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(g.value_type(g.inputs()[0]).dtype, DType::F32);
    }

    #[test]
    fn import_file_resolves_external_data_next_to_the_model() {
        let dir = temp_dir("import-file");
        let bias: Vec<u8> = [0.5f32, -1.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(dir.join("model.bin"), &bias).unwrap();
        let mut b = tensor_raw("b", DataType::Float, &[2], vec![]);
        b.raw_data = None;
        b.data_location = Some(crate::proto::tensor_proto::DataLocation::External as i32);
        b.external_data = vec![crate::proto::StringStringEntryProto {
            key: Some("location".into()),
            value: Some("model.bin".into()),
        }];
        let model = ModelBuilder::new(13)
            .input("x", &[2])
            .init(b)
            .node(node("Add", &["x", "b"], &["y"], vec![]))
            .output("y");
        let path = dir.join("model.onnx");
        std::fs::write(&path, model.bytes()).unwrap();
        let g = import_file(&path, &ImportOptions::default()).unwrap();
        let b = output_operand(&g, 0, 1);
        assert_eq!(g.const_tensor(b).unwrap().as_f32().unwrap(), &[0.5, -1.5]);
        // Loaded from bytes alone, the same model has no directory to read from.
        let err = model.import().unwrap_err();
        assert!(err.to_string().contains("without a directory"), "{err}");
        let err = import_file(&dir.join("absent.onnx"), &ImportOptions::default()).unwrap_err();
        assert!(matches!(err, OnnxError::Io { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
