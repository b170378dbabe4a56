//! IR → ONNX: [`export`] writes a kiln [`Graph`] as a standard `ModelProto` (ai.onnx opset
//! 17, raised to 18/19 only for ops that need it) that onnxruntime and kiln's importer read.
//!
//! What has no ONNX counterpart is expanded into standard nodes with the same arithmetic:
//! - fused epilogues: `conv(x, w, b, residual) {act}` → Conv → Add → activation node (the
//!   residual is added after the bias, before the activation, as the IR defines); Gemm and
//!   ConvTranspose likewise;
//! - a fused clamp on `qconv` → QLinearConv → integer Clip at the bounds the interpreter
//!   clamps to (ReLU at the zero point, Clip at its quantized bounds);
//! - legacy (opset < 13) Softmax → Flatten → Softmax → Reshape;
//! - quantization parameters, which the IR keeps in value types, → scale / zero-point
//!   initializers of QuantizeLinear, DequantizeLinear, QLinearConv and QLinearMatMul.
//!
//! Values keep their IR names; duplicates and empty names are made unique deterministically
//! (`name_1`, `name_2`, ... in topological order), and the names of generated intermediate
//! values and initializers never collide with an IR name. A graph output that carries
//! quantization parameters is written as plain integers: ONNX types have no room for them.

use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_proto::DataType;
use crate::proto::tensor_shape_proto::{dimension, Dimension};
use crate::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use kiln_ir::{
    Activation, BinaryOp, ConstId, ConstValue, ConvAttrs, CoordTransform, DType, Graph, IrError,
    NearestMode, NodeId, Op, PadMode, PoolAttrs, Quant, ResizeAttrs, ResizeMode, Tensor,
    TensorData, ValueId,
};
use prost::Message;
use std::collections::{HashMap, HashSet};
use thiserror::Error;

/// The ai.onnx opset of exported models, unless an op needs a newer one: Resize with
/// `antialias` (18) or `half_pixel_symmetric` coordinates (19), AveragePool with dilations
/// (19), Pad in `wrap` mode (19). 17 is what most tools write today and has everything else
/// kiln's op set needs (HardSwish is 14, QuantizeLinear's per-axis form 13).
pub const EXPORT_OPSET: i64 = 17;

#[derive(Debug, Error)]
pub enum ExportError {
    /// A constant parsed from a dump that printed only summary statistics.
    #[error(
        "constant '{value}' (@c{id}) has no data (it was read from a dump that prints only a \
         summary of large constants); export the model it was dumped from instead"
    )]
    OpaqueConstant { value: String, id: u32 },
    #[error("constant '{value}' refers to @c{id}, which the graph's constant pool does not have")]
    MissingConstant { value: String, id: u32 },
    /// A node whose op or types have no ONNX form.
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: &'static str,
        msg: String,
    },
    /// The graph is not valid IR (checked by the verifier before export).
    #[error("the graph cannot be exported: {0}")]
    Graph(#[source] IrError),
}

/// Export a graph as serialized ONNX `ModelProto` bytes. The graph is verified first.
pub fn export(graph: &Graph) -> Result<Vec<u8>, ExportError> {
    Ok(export_model(graph)?.encode_to_vec())
}

/// Export a graph as a `ModelProto` message.
pub(crate) fn export_model(graph: &Graph) -> Result<ModelProto, ExportError> {
    kiln_ir::verify(graph).map_err(ExportError::Graph)?;
    let opset = required_opset(graph);
    let mut ex = Exporter::new(graph, opset)?;
    let order = graph.topo_order().map_err(ExportError::Graph)?;
    for id in order {
        ex.emit_node(id)?;
    }
    let graph_proto = ex.finish()?;
    Ok(ModelProto {
        ir_version: Some(ir_version_for(opset)),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("kiln".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph_proto),
        ..Default::default()
    })
}

/// The opset the graph's ops need (see [`EXPORT_OPSET`]).
fn required_opset(graph: &Graph) -> i64 {
    graph
        .node_ids()
        .map(|id| match &graph.node(id).op {
            Op::Resize(r) if r.coord == CoordTransform::HalfPixelSymmetric => 19,
            Op::Resize(r) if r.antialias => 18,
            Op::AveragePool(p) if p.dilations.iter().any(|&d| d != 1) => 19,
            Op::Pad {
                mode: PadMode::Wrap,
                ..
            } => 19,
            _ => EXPORT_OPSET,
        })
        .max()
        .unwrap_or(EXPORT_OPSET)
}

/// The ONNX IR version that introduced `opset` (what the ONNX checker expects with it).
fn ir_version_for(opset: i64) -> i64 {
    match opset {
        ..=17 => 8,
        18 => 8,
        _ => 9,
    }
}

/// The ONNX element type of an IR dtype.
fn onnx_dtype(dtype: DType) -> DataType {
    match dtype {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::I8 => DataType::Int8,
        DType::U8 => DataType::Uint8,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::Bool => DataType::Bool,
    }
}

/// A tensor as an initializer, data in `raw_data` (little-endian, bool as one byte).
fn tensor_proto(name: &str, tensor: &Tensor) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: tensor.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(onnx_dtype(tensor.dtype()) as i32),
        raw_data: Some(tensor.to_le_bytes().into()),
        ..Default::default()
    }
}

/// A `[dim, ...]` tensor type.
fn value_info(name: &str, dtype: DType, shape: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(onnx_dtype(dtype) as i32),
                shape: Some(TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d as i64)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

fn attr_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

/// A scalar of `dtype` holding `v`, converted the way the interpreter reads an f64 bound
/// (Rust `as`: saturating, NaN → 0 for integers), so that `clip` bounds and pad values
/// mean the same after export.
fn scalar_of(dtype: DType, v: f64) -> Tensor {
    let data = match dtype {
        DType::F32 => TensorData::F32(vec![v as f32]),
        DType::F16 => TensorData::F16(vec![half::f16::from_f64(v)]),
        DType::I8 => TensorData::I8(vec![v as i8]),
        DType::U8 => TensorData::U8(vec![v as u8]),
        DType::I32 => TensorData::I32(vec![v as i32]),
        DType::I64 => TensorData::I64(vec![v as i64]),
        DType::Bool => TensorData::Bool(vec![v != 0.0]),
    };
    Tensor::new(vec![], data).expect("one element for a scalar shape")
}

/// Unique names in one ONNX namespace. Every IR name is reserved up front, so a generated
/// name (`base`, else `base_1`, `base_2`, ...) never takes a name an IR value keeps later.
#[derive(Default)]
struct NameTable {
    reserved: HashSet<String>,
    taken: HashSet<String>,
}

impl NameTable {
    fn new<'a>(originals: impl Iterator<Item = &'a str>) -> NameTable {
        NameTable {
            reserved: originals.map(str::to_string).collect(),
            taken: HashSet::new(),
        }
    }

    /// An IR name: itself on first use, a fresh variant for later duplicates (and for "",
    /// which ONNX reads as "no value").
    fn claim(&mut self, original: &str, empty_fallback: &str) -> String {
        if !original.is_empty() && self.taken.insert(original.to_string()) {
            return original.to_string();
        }
        let base = if original.is_empty() {
            empty_fallback
        } else {
            original
        };
        self.fresh(base)
    }

    /// A name derived from `base` that no IR name and no earlier claim uses.
    fn fresh(&mut self, base: &str) -> String {
        if !self.reserved.contains(base) && self.taken.insert(base.to_string()) {
            return base.to_string();
        }
        (1u64..)
            .map(|k| format!("{base}_{k}"))
            .find(|n| !self.reserved.contains(n) && self.taken.insert(n.clone()))
            .expect("some suffix is free")
    }
}

/// Names of a quantized value's scale and zero-point initializers ("" for an omitted zero
/// point), and the axis of per-axis parameters.
#[derive(Clone)]
struct QuantParams {
    scale: String,
    zero_point: String,
    axis: Option<usize>,
}

struct Exporter<'g> {
    g: &'g Graph,
    opset: i64,
    values: NameTable,
    node_names: NameTable,
    /// The ONNX name of every IR value.
    value_name: HashMap<ValueId, String>,
    /// The ONNX name of every IR node (for the node itself, and the base of expansion nodes).
    node_name: HashMap<NodeId, String>,
    /// One initializer per pool entry, however many const nodes read it.
    const_name: HashMap<ConstId, String>,
    written_consts: HashSet<ConstId>,
    /// Keyed by value and whether the zero point is required (see [`Exporter::quant_params`]).
    quant_params: HashMap<(ValueId, bool), QuantParams>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl<'g> Exporter<'g> {
    /// Assign every IR value and node its ONNX name: graph inputs first, then nodes in
    /// topological order.
    fn new(g: &'g Graph, opset: i64) -> Result<Exporter<'g>, ExportError> {
        let order = g.topo_order().map_err(ExportError::Graph)?;
        let all_values: Vec<&str> = order
            .iter()
            .flat_map(|&id| g.node(id).outputs.iter().map(|o| o.name.as_str()))
            .collect();
        let all_nodes: Vec<&str> = order.iter().map(|&id| g.node(id).name.as_str()).collect();
        let mut ex = Exporter {
            g,
            opset,
            values: NameTable::new(all_values.into_iter()),
            node_names: NameTable::new(all_nodes.into_iter()),
            value_name: HashMap::new(),
            node_name: HashMap::new(),
            const_name: HashMap::new(),
            written_consts: HashSet::new(),
            quant_params: HashMap::new(),
            nodes: Vec::new(),
            initializers: Vec::new(),
        };
        for &v in g.inputs() {
            let name = ex.values.claim(g.value_name(v), "input");
            ex.value_name.insert(v, name);
        }
        for &id in &order {
            let node = g.node(id);
            match node.op {
                Op::Input { .. } => continue,
                Op::Const(c) => {
                    let v = ValueId { node: id, port: 0 };
                    let name = match ex.const_name.get(&c) {
                        Some(n) => n.clone(),
                        None => {
                            let n = ex.values.claim(g.value_name(v), "const");
                            ex.const_name.insert(c, n.clone());
                            n
                        }
                    };
                    ex.value_name.insert(v, name);
                    continue;
                }
                _ => {}
            }
            for port in 0..node.outputs.len() {
                let v = ValueId {
                    node: id,
                    port: port as u16,
                };
                let name = ex.values.claim(g.value_name(v), node.op.mnemonic());
                ex.value_name.insert(v, name);
            }
            let name = ex.node_names.claim(&node.name, node.op.mnemonic());
            ex.node_name.insert(id, name);
        }
        Ok(ex)
    }

    fn name_of(&self, v: ValueId) -> String {
        self.value_name
            .get(&v)
            .cloned()
            .expect("every value of a verified graph is named before emission")
    }

    fn push(
        &mut self,
        op_type: &str,
        name: String,
        inputs: Vec<String>,
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        // ONNX marks an omitted optional input with "": trailing ones are dropped.
        let mut inputs = inputs;
        while inputs.last().is_some_and(String::is_empty) {
            inputs.pop();
        }
        self.nodes.push(NodeProto {
            op_type: Some(op_type.into()),
            name: Some(name),
            input: inputs,
            output: outputs,
            attribute,
            ..Default::default()
        });
    }

    /// A new initializer named after `base`.
    fn initializer(&mut self, base: &str, tensor: &Tensor) -> String {
        let name = self.values.fresh(base);
        self.initializers.push(tensor_proto(&name, tensor));
        name
    }

    /// A 1-D i64 initializer (shape operands: axes, pads, starts, sizes, ...).
    fn ints_initializer(&mut self, base: &str, values: &[i64]) -> String {
        let t = Tensor::from_i64(vec![values.len()], values.to_vec())
            .expect("a 1-D tensor of its own length");
        self.initializer(base, &t)
    }

    /// Emit a graph source or op node.
    fn emit_node(&mut self, id: NodeId) -> Result<(), ExportError> {
        let node = self.g.node(id);
        match &node.op {
            Op::Input { .. } => Ok(()),
            Op::Const(c) => self.emit_const(id, *c),
            op => {
                let name = self.node_name[&id].clone();
                let inputs: Vec<String> = node.inputs().iter().map(|&v| self.name_of(v)).collect();
                let outputs: Vec<String> = (0..node.outputs.len())
                    .map(|p| {
                        self.name_of(ValueId {
                            node: id,
                            port: p as u16,
                        })
                    })
                    .collect();
                self.emit_op(id, op, name, inputs, outputs)
            }
        }
    }

    fn emit_const(&mut self, id: NodeId, c: ConstId) -> Result<(), ExportError> {
        let v = ValueId { node: id, port: 0 };
        if !self.written_consts.insert(c) {
            return Ok(()); // another const node over the same pool entry wrote it
        }
        let name = self.name_of(v);
        let tensor = match self.g.consts.get(c) {
            None => {
                return Err(ExportError::MissingConstant {
                    value: self.g.value_name(v).to_string(),
                    id: c.0,
                })
            }
            Some(ConstValue::Opaque { .. }) => {
                return Err(ExportError::OpaqueConstant {
                    value: self.g.value_name(v).to_string(),
                    id: c.0,
                })
            }
            Some(value) => value
                .tensor()
                .expect("data and generated constants hold a tensor"),
        };
        self.initializers.push(tensor_proto(&name, tensor));
        Ok(())
    }

    fn node_error(&self, id: NodeId, msg: impl Into<String>) -> ExportError {
        let node = self.g.node(id);
        ExportError::Node {
            node: node.name.clone(),
            op: node.op.mnemonic(),
            msg: msg.into(),
        }
    }

    fn emit_op(
        &mut self,
        id: NodeId,
        op: &Op,
        name: String,
        ins: Vec<String>,
        outs: Vec<String>,
    ) -> Result<(), ExportError> {
        let node = self.g.node(id);
        let out_dtype = node.outputs[0].ty.dtype;
        match op {
            Op::Input { .. } | Op::Const(_) => unreachable!("sources are handled by emit_node"),
            Op::Conv(a) => {
                let main = ins[..ins.len().min(3)].to_vec();
                let residual = ins.get(3).cloned();
                self.emit_fused(
                    "Conv",
                    &name,
                    main,
                    conv_attrs(a),
                    residual,
                    a.act.as_ref(),
                    out_dtype,
                    &outs[0],
                );
            }
            Op::ConvTranspose(a) => {
                let mut attrs = vec![
                    attr_ints("kernel_shape", &a.kernel),
                    attr_ints("strides", &a.strides),
                    attr_ints("pads", &a.pads),
                    attr_ints("dilations", &a.dilations),
                    attr_ints("output_padding", &a.output_padding),
                ];
                attrs.push(attr_int("group", a.groups as i64));
                self.emit_fused(
                    "ConvTranspose",
                    &name,
                    ins,
                    attrs,
                    None,
                    a.act.as_ref(),
                    out_dtype,
                    &outs[0],
                );
            }
            Op::Gemm(a) => {
                let attrs = vec![
                    attr_float("alpha", a.alpha),
                    attr_float("beta", a.beta),
                    attr_int("transA", a.trans_a as i64),
                    attr_int("transB", a.trans_b as i64),
                ];
                self.emit_fused(
                    "Gemm",
                    &name,
                    ins,
                    attrs,
                    None,
                    a.act.as_ref(),
                    out_dtype,
                    &outs[0],
                );
            }
            Op::BatchNorm { epsilon } => self.push(
                "BatchNormalization",
                name,
                ins,
                outs,
                vec![attr_float("epsilon", *epsilon)],
            ),
            Op::Activation(act) => {
                let x = ins[0].clone();
                self.emit_activation(&name, act, x, outs[0].clone(), out_dtype);
            }
            Op::Binary(b) => {
                let op_type = match b {
                    BinaryOp::Add => "Add",
                    BinaryOp::Sub => "Sub",
                    BinaryOp::Mul => "Mul",
                    BinaryOp::Div => "Div",
                };
                self.push(op_type, name, ins, outs, vec![]);
            }
            Op::Sum => self.push("Sum", name, ins, outs, vec![]),
            Op::MatMul => self.push("MatMul", name, ins, outs, vec![]),
            Op::MaxPool(p) => {
                let mut attrs = pool_attrs(p);
                attrs.push(attr_ints("dilations", &p.dilations));
                attrs.push(attr_int("storage_order", p.storage_order as i64));
                self.push("MaxPool", name, ins, outs, attrs);
            }
            Op::AveragePool(p) => {
                let mut attrs = pool_attrs(p);
                attrs.push(attr_int("count_include_pad", p.count_include_pad as i64));
                if p.dilations.iter().any(|&d| d != 1) {
                    attrs.push(attr_ints("dilations", &p.dilations));
                }
                self.push("AveragePool", name, ins, outs, attrs);
            }
            Op::GlobalAveragePool => self.push("GlobalAveragePool", name, ins, outs, vec![]),
            Op::GlobalMaxPool => self.push("GlobalMaxPool", name, ins, outs, vec![]),
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => self.push(
                "LRN",
                name,
                ins,
                outs,
                vec![
                    attr_int("size", *size as i64),
                    attr_float("alpha", *alpha),
                    attr_float("beta", *beta),
                    attr_float("bias", *bias),
                ],
            ),
            Op::Concat { axis } => self.push(
                "Concat",
                name,
                ins,
                outs,
                vec![attr_int("axis", *axis as i64)],
            ),
            Op::Split { axis, sizes } => {
                let sizes: Vec<i64> = sizes.iter().map(|&s| s as i64).collect();
                let split = self.ints_initializer(&format!("{name}_split"), &sizes);
                self.push(
                    "Split",
                    name,
                    vec![ins[0].clone(), split],
                    outs,
                    vec![attr_int("axis", *axis as i64)],
                );
            }
            Op::Slice { axes } => {
                if axes.is_empty() {
                    self.push("Identity", name, ins, outs, vec![]);
                    return Ok(());
                }
                let starts: Vec<i64> = axes.iter().map(|s| s.start).collect();
                // The IR's end -1 with a negative step means "through index 0"; in ONNX a
                // negative end counts from the back, so that is written as i64::MIN
                // (clamped to "before the front").
                let ends: Vec<i64> = axes
                    .iter()
                    .map(|s| {
                        if s.step < 0 && s.end < 0 {
                            i64::MIN
                        } else {
                            s.end
                        }
                    })
                    .collect();
                let axis_list: Vec<i64> = axes.iter().map(|s| s.axis as i64).collect();
                let steps: Vec<i64> = axes.iter().map(|s| s.step).collect();
                let inputs = vec![
                    ins[0].clone(),
                    self.ints_initializer(&format!("{name}_starts"), &starts),
                    self.ints_initializer(&format!("{name}_ends"), &ends),
                    self.ints_initializer(&format!("{name}_axes"), &axis_list),
                    self.ints_initializer(&format!("{name}_steps"), &steps),
                ];
                self.push("Slice", name, inputs, outs, vec![]);
            }
            Op::Reshape { shape } => {
                let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                let target = self.ints_initializer(&format!("{name}_shape"), &dims);
                // A 0 in an ONNX Reshape target copies the input dim unless allowzero is set.
                let attrs = if shape.contains(&0) {
                    vec![attr_int("allowzero", 1)]
                } else {
                    vec![]
                };
                self.push("Reshape", name, vec![ins[0].clone(), target], outs, attrs);
            }
            Op::Flatten { axis } => self.push(
                "Flatten",
                name,
                ins,
                outs,
                vec![attr_int("axis", *axis as i64)],
            ),
            Op::Transpose { perm } => {
                self.push("Transpose", name, ins, outs, vec![attr_ints("perm", perm)])
            }
            Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
                let op_type = if matches!(op, Op::Squeeze { .. }) {
                    "Squeeze"
                } else {
                    "Unsqueeze"
                };
                // ONNX Squeeze without axes removes every 1-dim: an empty IR list is a copy.
                if axes.is_empty() {
                    self.push("Identity", name, ins, outs, vec![]);
                } else {
                    let a: Vec<i64> = axes.iter().map(|&d| d as i64).collect();
                    let axes = self.ints_initializer(&format!("{name}_axes"), &a);
                    self.push(op_type, name, vec![ins[0].clone(), axes], outs, vec![]);
                }
            }
            Op::Pad { mode, pads, value } => {
                let pads_name = self.ints_initializer(&format!("{name}_pads"), pads);
                let mut inputs = vec![ins[0].clone(), pads_name];
                // Bitwise, so that a -0.0 fill survives.
                if *mode == PadMode::Constant && value.to_bits() != 0f64.to_bits() {
                    let in_dtype = self.g.value_type(node.inputs()[0]).dtype;
                    let v =
                        self.initializer(&format!("{name}_value"), &scalar_of(in_dtype, *value));
                    inputs.push(v);
                }
                let mode = match mode {
                    PadMode::Constant => "constant",
                    PadMode::Reflect => "reflect",
                    PadMode::Edge => "edge",
                    PadMode::Wrap => "wrap",
                };
                self.push("Pad", name, inputs, outs, vec![attr_str("mode", mode)]);
            }
            Op::Resize(r) => {
                let in_shape = self.g.value_type(node.inputs()[0]).shape.clone();
                let inputs = self.resize_inputs(id, &name, ins[0].clone(), r, &in_shape)?;
                self.push("Resize", name, inputs, outs, resize_attrs(r));
            }
            Op::Softmax { axis, legacy } => {
                if !*legacy {
                    self.push(
                        "Softmax",
                        name,
                        ins,
                        outs,
                        vec![attr_int("axis", *axis as i64)],
                    );
                } else {
                    // Opset < 13: normalize over all dims from `axis` on, i.e. over the rows
                    // of the input flattened to 2-D at `axis`.
                    let shape: Vec<i64> =
                        node.outputs[0].ty.shape.iter().map(|&d| d as i64).collect();
                    let flat = self.values.fresh(&format!("{}_flat", outs[0]));
                    let soft = self.values.fresh(&format!("{}_2d", outs[0]));
                    let flatten_name = self.node_names.fresh(&format!("{name}_flatten"));
                    self.push(
                        "Flatten",
                        flatten_name,
                        ins,
                        vec![flat.clone()],
                        vec![attr_int("axis", *axis as i64)],
                    );
                    self.push(
                        "Softmax",
                        name.clone(),
                        vec![flat],
                        vec![soft.clone()],
                        vec![attr_int("axis", 1)],
                    );
                    let target = self.ints_initializer(&format!("{name}_shape"), &shape);
                    let reshape_name = self.node_names.fresh(&format!("{name}_reshape"));
                    self.push("Reshape", reshape_name, vec![soft, target], outs, vec![]);
                }
            }
            Op::ReduceMean { axes, keepdims } => {
                if axes.is_empty() {
                    // Nothing reduced; ONNX would read an empty list as "every axis".
                    self.push("Identity", name, ins, outs, vec![]);
                } else {
                    let keep = attr_int("keepdims", *keepdims as i64);
                    if self.opset >= 18 {
                        let a: Vec<i64> = axes.iter().map(|&d| d as i64).collect();
                        let axes = self.ints_initializer(&format!("{name}_axes"), &a);
                        self.push(
                            "ReduceMean",
                            name,
                            vec![ins[0].clone(), axes],
                            outs,
                            vec![keep],
                        );
                    } else {
                        self.push(
                            "ReduceMean",
                            name,
                            ins,
                            outs,
                            vec![attr_ints("axes", axes), keep],
                        );
                    }
                }
            }
            Op::Identity => self.push("Identity", name, ins, outs, vec![]),
            Op::Dropout => self.push("Dropout", name, ins, outs, vec![]),
            Op::Cast { to } => self.push(
                "Cast",
                name,
                ins,
                outs,
                vec![attr_int("to", onnx_dtype(*to) as i64)],
            ),
            Op::Gather { axis } => self.push(
                "Gather",
                name,
                ins,
                outs,
                vec![attr_int("axis", *axis as i64)],
            ),
            Op::Quantize => {
                let out = ValueId { node: id, port: 0 };
                if !matches!(out_dtype, DType::U8 | DType::I8) {
                    return Err(self.node_error(
                        id,
                        format!("quantizing to {out_dtype} has no ONNX QuantizeLinear form (u8 and i8 only)"),
                    ));
                }
                let q = self.quant_params(id, out, "output", true)?;
                let attrs = q
                    .axis
                    .map(|a| attr_int("axis", a as i64))
                    .into_iter()
                    .collect();
                self.push(
                    "QuantizeLinear",
                    name,
                    vec![ins[0].clone(), q.scale, q.zero_point],
                    outs,
                    attrs,
                );
            }
            Op::Dequantize => {
                let q = self.quant_params(id, node.inputs()[0], "input x", false)?;
                let attrs = q
                    .axis
                    .map(|a| attr_int("axis", a as i64))
                    .into_iter()
                    .collect();
                self.push(
                    "DequantizeLinear",
                    name,
                    vec![ins[0].clone(), q.scale, q.zero_point],
                    outs,
                    attrs,
                );
            }
            Op::QConv(a) => self.emit_qconv(id, a, name, ins, outs)?,
            Op::QMatMul => {
                let qa = self.quant_params(id, node.inputs()[0], "input a", true)?;
                let qb = self.quant_params(id, node.inputs()[1], "input b", true)?;
                let qy = self.quant_params(id, ValueId { node: id, port: 0 }, "output", true)?;
                let inputs = vec![
                    ins[0].clone(),
                    qa.scale,
                    qa.zero_point,
                    ins[1].clone(),
                    qb.scale,
                    qb.zero_point,
                    qy.scale,
                    qy.zero_point,
                ];
                self.push("QLinearMatMul", name, inputs, outs, vec![]);
            }
            Op::ConvInteger(a) => {
                self.emit_fused(
                    "ConvInteger",
                    &name,
                    ins,
                    conv_attrs(a),
                    None,
                    a.act.as_ref(),
                    out_dtype,
                    &outs[0],
                );
            }
            Op::MatMulInteger => self.push("MatMulInteger", name, ins, outs, vec![]),
            Op::DynamicQuantize => self.push("DynamicQuantizeLinear", name, ins, outs, vec![]),
        }
        Ok(())
    }

    /// `op_type` followed by the fused epilogue: `+ residual`, then the activation. The last
    /// node writes `out`; the ones before it write fresh intermediate values.
    #[allow(clippy::too_many_arguments)]
    fn emit_fused(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
        residual: Option<String>,
        act: Option<&Activation>,
        dtype: DType,
        out: &str,
    ) {
        let main_out = if residual.is_some() || act.is_some() {
            self.values
                .fresh(&format!("{out}_{}", op_type.to_ascii_lowercase()))
        } else {
            out.to_string()
        };
        self.push(
            op_type,
            name.to_string(),
            inputs,
            vec![main_out.clone()],
            attrs,
        );
        let mut current = main_out;
        if let Some(r) = residual {
            let sum = if act.is_some() {
                self.values.fresh(&format!("{out}_residual"))
            } else {
                out.to_string()
            };
            let add_name = self.node_names.fresh(&format!("{name}_residual"));
            self.push("Add", add_name, vec![current, r], vec![sum.clone()], vec![]);
            current = sum;
        }
        if let Some(act) = act {
            let act_name = self.node_names.fresh(&format!("{name}_{}", act.name()));
            self.emit_activation(&act_name, act, current, out.to_string(), dtype);
        }
    }

    /// One activation node `name`: `input` → `output` (elements of `dtype`).
    fn emit_activation(
        &mut self,
        name: &str,
        act: &Activation,
        input: String,
        output: String,
        dtype: DType,
    ) {
        let (op_type, inputs, attrs) = match *act {
            Activation::Relu => ("Relu", vec![input], vec![]),
            Activation::Clip { min, max } => {
                // Clip-11+ reads the bounds from optional scalar inputs of x's type; an
                // infinite bound is no bound.
                let mut bound = |v: f64, what: &str| {
                    if v.is_infinite() {
                        String::new()
                    } else {
                        self.initializer(&format!("{name}_{what}"), &scalar_of(dtype, v))
                    }
                };
                let lo = bound(min, "min");
                let hi = bound(max, "max");
                ("Clip", vec![input, lo, hi], vec![])
            }
            Activation::LeakyRelu { alpha } => {
                ("LeakyRelu", vec![input], vec![attr_float("alpha", alpha)])
            }
            Activation::Sigmoid => ("Sigmoid", vec![input], vec![]),
            Activation::Tanh => ("Tanh", vec![input], vec![]),
            Activation::HardSigmoid { alpha, beta } => (
                "HardSigmoid",
                vec![input],
                vec![attr_float("alpha", alpha), attr_float("beta", beta)],
            ),
            Activation::HardSwish => ("HardSwish", vec![input], vec![]),
        };
        self.push(op_type, name.to_string(), inputs, vec![output], attrs);
    }

    /// QLinearConv, then, for a fused ReLU/Clip that is not already implied by saturation,
    /// the clamp the interpreter applies to the requantized integers.
    fn emit_qconv(
        &mut self,
        id: NodeId,
        a: &ConvAttrs,
        name: String,
        ins: Vec<String>,
        outs: Vec<String>,
    ) -> Result<(), ExportError> {
        let node = self.g.node(id);
        let out = ValueId { node: id, port: 0 };
        let out_ty = node.outputs[0].ty.clone();
        let qx = self.quant_params(id, node.inputs()[0], "input x", true)?;
        let qw = self.quant_params(id, node.inputs()[1], "weight w", true)?;
        let qy = self.quant_params(id, out, "output", true)?;
        let mut inputs = vec![
            ins[0].clone(),
            qx.scale,
            qx.zero_point,
            ins[1].clone(),
            qw.scale,
            qw.zero_point,
            qy.scale.clone(),
            qy.zero_point.clone(),
        ];
        // QLinearConv's bias is raw i32 with the implied scale s_x·s_w: exactly how the
        // interpreter adds it to the accumulator, whatever parameters its type carries.
        inputs.extend(ins.get(2).cloned());
        let clamp = match &a.act {
            None => None,
            Some(act) => self.quantized_clamp(id, act, &out_ty)?,
        };
        let Some(bounds) = clamp else {
            self.push("QLinearConv", name, inputs, outs, conv_attrs(a));
            return Ok(());
        };
        // ONNX has no integer clamp for quantized values (and kiln's IR refuses a clip on
        // them), so the clamp is DequantizeLinear → Clip → QuantizeLinear with the output's
        // own parameters. That is exact: for an integer n = q − zp (|n| ≤ 255) and a scale s,
        // round((n·s)/s) = n in f32, dequantization is monotonic, and the f32 bounds are the
        // dequantized integer bounds themselves.
        let y = &outs[0];
        let conv_out = self.values.fresh(&format!("{y}_unclamped"));
        let real = self.values.fresh(&format!("{y}_real"));
        let clamped = self.values.fresh(&format!("{y}_clamped"));
        self.push(
            "QLinearConv",
            name.clone(),
            inputs,
            vec![conv_out.clone()],
            conv_attrs(a),
        );
        let dq_name = self.node_names.fresh(&format!("{name}_clamp_dequantize"));
        self.push(
            "DequantizeLinear",
            dq_name,
            vec![conv_out, qy.scale.clone(), qy.zero_point.clone()],
            vec![real.clone()],
            vec![],
        );
        let clip_name = self.node_names.fresh(&format!("{name}_clamp"));
        self.emit_activation(&clip_name, &bounds, real, clamped.clone(), DType::F32);
        let q_name = self.node_names.fresh(&format!("{name}_clamp_quantize"));
        self.push(
            "QuantizeLinear",
            q_name,
            vec![clamped, qy.scale, qy.zero_point],
            outs,
            vec![],
        );
        Ok(())
    }

    /// The clamp a fused activation of a quantized conv applies after requantization, as
    /// f32 bounds on the dequantized output: ReLU clamps at the output zero point, Clip at
    /// its bounds quantized like any value (`sat(round_half_even(v / s) + zp)`); each
    /// integer bound b becomes `(b − zp)·s` computed as the interpreter dequantizes. A bound
    /// at the type's limit is left open; `None` when both are (saturation already clamps).
    fn quantized_clamp(
        &self,
        id: NodeId,
        act: &Activation,
        out_ty: &kiln_ir::TensorType,
    ) -> Result<Option<Activation>, ExportError> {
        let (lo_t, hi_t) = out_ty.dtype.int_range().ok_or_else(|| {
            self.node_error(id, format!("output {out_ty} is not an integer type"))
        })?;
        let (scale, zp) = match &out_ty.quant {
            Some(Quant::PerTensor { scale, zero_point }) => (*scale, *zero_point as i64),
            _ => return Err(self.node_error(id, "the output must be quantized per tensor")),
        };
        let quantize = |v: f64| -> i64 {
            let q = v as f32 / scale;
            if q.is_nan() {
                return lo_t;
            }
            (q.round_ties_even() as f64 + zp as f64).clamp(lo_t as f64, hi_t as f64) as i64
        };
        let (lo, hi) = match *act {
            Activation::Relu => (zp.max(lo_t), hi_t),
            Activation::Clip { min, max } => (quantize(min), quantize(max)),
            ref other => {
                return Err(self.node_error(
                    id,
                    format!(
                        "fused {} is not a clamp, so it has no exact form after QLinearConv",
                        other.name()
                    ),
                ))
            }
        };
        if lo == lo_t && hi == hi_t {
            return Ok(None);
        }
        let dequantized = |q: i64| ((q - zp) as i32) as f32 * scale;
        let bound = |q: i64, limit: i64, open: f64| {
            if q == limit {
                open
            } else {
                dequantized(q) as f64
            }
        };
        Ok(Some(Activation::Clip {
            min: bound(lo, lo_t, f64::NEG_INFINITY),
            max: bound(hi, hi_t, f64::INFINITY),
        }))
    }

    /// Scale and zero-point initializers for the quantization parameters of `v`'s type
    /// (shared by every node that reads them). `zero_point_required`: QuantizeLinear and the
    /// QLinear ops take the output type from the zero point, so it is always written; for
    /// DequantizeLinear of i32 values (biases) a zero zero point is left out, as ONNX
    /// expects there.
    fn quant_params(
        &mut self,
        id: NodeId,
        v: ValueId,
        what: &str,
        zero_point_required: bool,
    ) -> Result<QuantParams, ExportError> {
        let ty = self.g.value_type(v).clone();
        // Only an i32 zero point may be left out; other values share one set of initializers.
        let zero_point_required = zero_point_required || ty.dtype != DType::I32;
        if let Some(q) = self.quant_params.get(&(v, zero_point_required)) {
            return Ok(q.clone());
        }
        let Some(quant) = &ty.quant else {
            return Err(self.node_error(id, format!("{what} {ty} has no quantization parameters")));
        };
        let base = self.name_of(v);
        let (scales, zero_points, shape, axis) = match quant {
            Quant::PerTensor { scale, zero_point } => {
                (vec![*scale], vec![*zero_point], vec![], None)
            }
            Quant::PerAxis {
                axis,
                scales,
                zero_points,
            } => (
                scales.clone(),
                zero_points.clone(),
                vec![scales.len()],
                Some(*axis),
            ),
        };
        let zp_data = match ty.dtype {
            DType::U8 => TensorData::U8(zero_points.iter().map(|&z| z as u8).collect()),
            DType::I8 => TensorData::I8(zero_points.iter().map(|&z| z as i8).collect()),
            DType::I32 => TensorData::I32(zero_points.clone()),
            d => {
                return Err(self.node_error(
                    id,
                    format!("{what} is a quantized {d} value; ONNX quantizes u8, i8 and i32"),
                ))
            }
        };
        let scale_tensor = Tensor::from_f32(shape.clone(), scales).expect("one scale per entry");
        let scale = self.initializer(&format!("{base}_scale"), &scale_tensor);
        let omit_zero_point = !zero_point_required && zero_points.iter().all(|&z| z == 0);
        let zero_point = if omit_zero_point {
            String::new()
        } else {
            let t = Tensor::new(shape, zp_data).expect("one zero point per scale");
            self.initializer(&format!("{base}_zero_point"), &t)
        };
        let params = QuantParams {
            scale,
            zero_point,
            axis,
        };
        self.quant_params
            .insert((v, zero_point_required), params.clone());
        Ok(params)
    }

    /// Resize's roi / scales / sizes inputs. ONNX derives one from the other (sizes =
    /// floor(in·scale), scales = sizes/in, both in f32, as onnxruntime does); the IR keeps
    /// both, so whichever input reproduces the pair exactly is written.
    fn resize_inputs(
        &mut self,
        id: NodeId,
        name: &str,
        x: String,
        r: &ResizeAttrs,
        in_shape: &[usize],
    ) -> Result<Vec<String>, ExportError> {
        let roi = if r.coord == CoordTransform::TfCropAndResize {
            let t = Tensor::from_f32(vec![r.roi.len()], r.roi.clone()).expect("1-D roi");
            self.initializer(&format!("{name}_roi"), &t)
        } else {
            String::new()
        };
        let sizes_reproduce_scales =
            in_shape
                .iter()
                .zip(&r.sizes)
                .zip(&r.scales)
                .all(|((&input, &size), &scale)| {
                    input > 0 && (size as f32 / input as f32).to_bits() == scale.to_bits()
                });
        let scales_reproduce_sizes =
            in_shape
                .iter()
                .zip(&r.scales)
                .zip(&r.sizes)
                .all(|((&input, &scale), &size)| {
                    (input as f32 * scale).floor().max(0.0) as usize == size
                });
        if sizes_reproduce_scales {
            let sizes: Vec<i64> = r.sizes.iter().map(|&s| s as i64).collect();
            let sizes = self.ints_initializer(&format!("{name}_sizes"), &sizes);
            Ok(vec![x, roi, String::new(), sizes])
        } else if scales_reproduce_sizes {
            let t = Tensor::from_f32(vec![r.scales.len()], r.scales.clone()).expect("1-D scales");
            let scales = self.initializer(&format!("{name}_scales"), &t);
            Ok(vec![x, roi, scales])
        } else {
            Err(self.node_error(
                id,
                format!(
                    "output sizes {:?} and coordinate scales {:?} of input {in_shape:?} are not \
                     related as ONNX Resize relates them (sizes = floor(in·scale) or \
                     scales = sizes/in)",
                    r.sizes, r.scales
                ),
            ))
        }
    }

    /// The graph: inputs, outputs, nodes and initializers.
    fn finish(mut self) -> Result<GraphProto, ExportError> {
        let g = self.g;
        let input = g
            .inputs()
            .iter()
            .map(|&v| {
                let ty = g.value_type(v);
                value_info(&self.name_of(v), ty.dtype, &ty.shape)
            })
            .collect();
        let mut output = Vec::new();
        let mut listed: HashSet<String> = HashSet::new();
        for &v in g.outputs() {
            let ty = g.value_type(v);
            let mut name = self.name_of(v);
            if !listed.insert(name.clone()) {
                // The same value returned twice: ONNX output names are unique, so the second
                // is a copy.
                let copy = self.values.fresh(&format!("{name}_copy"));
                let node_name = self.node_names.fresh(&format!("{name}_copy"));
                self.push(
                    "Identity",
                    node_name,
                    vec![name],
                    vec![copy.clone()],
                    vec![],
                );
                listed.insert(copy.clone());
                name = copy;
            }
            output.push(value_info(&name, ty.dtype, &ty.shape));
        }
        Ok(GraphProto {
            name: Some(g.name.clone()),
            node: self.nodes,
            initializer: self.initializers,
            input,
            output,
            ..Default::default()
        })
    }
}

fn conv_attrs(a: &ConvAttrs) -> Vec<AttributeProto> {
    vec![
        attr_ints("kernel_shape", &a.kernel),
        attr_ints("strides", &a.strides),
        attr_ints("pads", &a.pads),
        attr_ints("dilations", &a.dilations),
        attr_int("group", a.groups as i64),
    ]
}

/// Attributes MaxPool and AveragePool share.
fn pool_attrs(p: &PoolAttrs) -> Vec<AttributeProto> {
    vec![
        attr_ints("kernel_shape", &p.kernel),
        attr_ints("strides", &p.strides),
        attr_ints("pads", &p.pads),
        attr_int("ceil_mode", p.ceil_mode as i64),
    ]
}

fn resize_attrs(r: &ResizeAttrs) -> Vec<AttributeProto> {
    let mode = match r.mode {
        ResizeMode::Nearest => "nearest",
        ResizeMode::Linear => "linear",
        ResizeMode::Cubic => "cubic",
    };
    let coord = match r.coord {
        CoordTransform::HalfPixel => "half_pixel",
        CoordTransform::HalfPixelSymmetric => "half_pixel_symmetric",
        CoordTransform::PytorchHalfPixel => "pytorch_half_pixel",
        CoordTransform::AlignCorners => "align_corners",
        CoordTransform::Asymmetric => "asymmetric",
        CoordTransform::TfCropAndResize => "tf_crop_and_resize",
    };
    let nearest = match r.nearest {
        NearestMode::RoundPreferFloor => "round_prefer_floor",
        NearestMode::RoundPreferCeil => "round_prefer_ceil",
        NearestMode::Floor => "floor",
        NearestMode::Ceil => "ceil",
    };
    let mut attrs = vec![
        attr_str("mode", mode),
        attr_str("coordinate_transformation_mode", coord),
        attr_str("nearest_mode", nearest),
        attr_float("cubic_coeff_a", r.cubic_coeff_a),
        attr_int("exclude_outside", r.exclude_outside as i64),
        attr_float("extrapolation_value", r.extrapolation_value),
    ];
    if r.antialias {
        attrs.push(attr_int("antialias", 1));
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::{export, required_opset, ExportError, Exporter, EXPORT_OPSET};
    use crate::proto::tensor_proto::DataType;
    use crate::proto::tensor_shape_proto::dimension;
    use crate::proto::{type_proto, ModelProto, ValueInfoProto};
    use crate::testutil::*;
    use crate::{import_bytes, import_file, ImportOptions};
    use kiln_ir::{
        Activation, BinaryOp, ConstValue, ConvAttrs, ConvTransposeAttrs, CoordTransform, DType,
        GemmAttrs, Generator, Graph, Op, Output, PadMode, Quant, Tensor, TensorData, TensorStats,
        TensorType,
    };
    use prost::Message;

    fn decode(bytes: &[u8]) -> ModelProto {
        ModelProto::decode(bytes).expect("export writes a valid ModelProto")
    }

    fn reimport(g: &Graph) -> Graph {
        let bytes = export(g).unwrap_or_else(|e| panic!("export: {e}"));
        import_bytes(&bytes, None, &ImportOptions::default())
            .unwrap_or_else(|e| panic!("re-import of the exported model: {e}"))
    }

    /// Seeded inputs for every graph input: normal(0, 1) floats, integers uniform over
    /// their type's range.
    fn seeded_inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
        g.inputs()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ty = g.value_type(v);
                let generator = match ty.dtype.int_range() {
                    Some((lo, hi)) => Generator::Uniform {
                        seed: seed + i as u64,
                        low: lo.max(-1000) as f32,
                        high: hi.min(1000) as f32,
                    },
                    None => Generator::Normal {
                        seed: seed + i as u64,
                        mean: 0.0,
                        std: 1.0,
                    },
                };
                generator.generate(ty.dtype, &ty.shape).unwrap()
            })
            .collect()
    }

    /// The exported-and-reimported graph computes bit-identical outputs (the expansions
    /// perform the same f32 operations in the same order as the fused forms).
    fn assert_round_trip_is_exact(g: &Graph) -> Graph {
        let back = reimport(g);
        let out_names = |g: &Graph| -> Vec<String> {
            g.outputs()
                .iter()
                .map(|&v| g.value_name(v).to_string())
                .collect()
        };
        assert_eq!(
            out_names(&back),
            out_names(g),
            "graph outputs keep their names"
        );
        for seed in [1, 2] {
            let inputs = seeded_inputs(g, seed);
            let want = kiln_interp::run(g, &inputs).unwrap();
            let got = kiln_interp::run(&back, &inputs).unwrap();
            assert_eq!(want.len(), got.len());
            for (k, (w, r)) in want.iter().zip(&got).enumerate() {
                assert!(
                    w.bitwise_eq(r),
                    "output {k} differs after the round trip (seed {seed}):\n{:?}\nvs\n{:?}",
                    &w.to_f64_vec()[..w.numel().min(8)],
                    &r.to_f64_vec()[..r.numel().min(8)]
                );
            }
        }
        back
    }

    fn op_types(m: &ModelProto) -> Vec<&str> {
        m.graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type())
            .collect()
    }

    fn initializer(m: &ModelProto, name: &str) -> Tensor {
        let t = m
            .graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("no initializer {name}"));
        crate::tensor::tensor_from_proto(t, None).unwrap()
    }

    fn normal(seed: u64, std: f32, shape: &[usize]) -> Tensor {
        Generator::Normal {
            seed,
            mean: 0.0,
            std,
        }
        .generate(DType::F32, shape)
        .unwrap()
    }

    fn conv2d(act: Option<Activation>, pads: usize) -> ConvAttrs {
        ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![pads; 4],
            dilations: vec![1, 1],
            groups: 1,
            act,
        }
    }

    const ACTIVATIONS: [Activation; 9] = [
        Activation::Relu,
        Activation::Clip { min: 0.0, max: 6.0 },
        Activation::Clip {
            min: f64::NEG_INFINITY,
            max: 0.5,
        },
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Activation::HardSwish,
        Activation::Clip {
            min: -0.25,
            max: f64::INFINITY,
        },
    ];

    #[test]
    fn the_demo_model_round_trips() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-cli/assets/demo.onnx");
        let g = import_file(&path, &ImportOptions::default()).unwrap();
        let m = decode(&export(&g).unwrap());
        assert_eq!(m.opset_import[0].version(), EXPORT_OPSET);
        assert_eq!(m.ir_version(), 8);
        let back = assert_round_trip_is_exact(&g);
        // Nothing is fused in an imported model: the same ops come back.
        assert_eq!(compute_ops(&back), compute_ops(&g));
        let names = |g: &Graph| -> Vec<String> {
            g.topo_order()
                .unwrap()
                .into_iter()
                .flat_map(|id| {
                    g.node(id)
                        .outputs
                        .iter()
                        .map(|o| o.name.clone())
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(names(&back), names(&g), "every value keeps its name");
    }

    /// conv(x, w, b, residual) {act} for every activation: Conv → Add → activation, the
    /// residual added after the bias and before the activation.
    #[test]
    fn fused_conv_with_residual_expands_to_conv_add_activation() {
        for act in ACTIVATIONS {
            let mut g = Graph::new("fused");
            let x = g.add_input("x", TensorType::f32(vec![1, 2, 5, 5]));
            let r = g.add_input("r", TensorType::f32(vec![1, 3, 5, 5]));
            let w = g.add_const("w", normal(1, 0.3, &[3, 2, 3, 3]), None);
            let b = g.add_const("b", normal(2, 0.3, &[3]), None);
            let y = g
                .add_node(
                    "conv1",
                    Op::Conv(conv2d(Some(act.clone()), 1)),
                    &[x, w, b, r],
                    vec!["y".into()],
                )
                .unwrap()[0];
            g.set_outputs(vec![y]);
            let m = decode(&export(&g).unwrap());
            let act_type = m.graph.as_ref().unwrap().node[2].op_type().to_string();
            assert_eq!(op_types(&m), ["Conv", "Add", act_type.as_str()], "{act:?}");
            let nodes = &m.graph.as_ref().unwrap().node;
            assert_eq!(nodes[1].input, ["y_conv", "r"]);
            assert_eq!(nodes[2].output, ["y"]);
            assert_eq!(nodes[2].name(), format!("conv1_{}", act.name()));
            assert_round_trip_is_exact(&g);
        }
    }

    #[test]
    fn fused_gemm_and_conv_transpose_expand_with_their_activation() {
        for act in ACTIVATIONS {
            let mut g = Graph::new("fused");
            let a = g.add_input("a", TensorType::f32(vec![2, 4]));
            let b = g.add_const("b", normal(3, 0.5, &[3, 4]), None);
            let c = g.add_const("c", normal(4, 0.5, &[3]), None);
            let gemm = GemmAttrs {
                alpha: 0.5,
                beta: 2.0,
                trans_a: false,
                trans_b: true,
                act: Some(act.clone()),
            };
            let y = g
                .add_node("fc", Op::Gemm(gemm), &[a, b, c], vec!["y".into()])
                .unwrap()[0];
            let x = g.add_input("x", TensorType::f32(vec![1, 2, 3, 3]));
            let w = g.add_const("w", normal(5, 0.5, &[2, 3, 2, 2]), None);
            let ct = ConvTransposeAttrs {
                kernel: vec![2, 2],
                strides: vec![2, 2],
                pads: vec![0, 1, 0, 0],
                dilations: vec![1, 1],
                output_padding: vec![1, 0],
                groups: 1,
                act: Some(act.clone()),
            };
            let z = g
                .add_node("up", Op::ConvTranspose(ct), &[x, w], vec!["z".into()])
                .unwrap()[0];
            g.set_outputs(vec![y, z]);
            let m = decode(&export(&g).unwrap());
            let types = op_types(&m);
            assert_eq!(types[0], "Gemm", "{act:?}");
            assert_eq!(types[2], "ConvTranspose", "{act:?}");
            assert_eq!(types.len(), 4);
            assert_round_trip_is_exact(&g);
        }
    }

    /// x (f32) → quantize u8 → qconv (per-channel i8 weight, i32 bias, fused clamp) →
    /// dequantize, next to qmatmul with a per-column b, conv_integer and matmul_integer with
    /// zero points, and a per-axis dequantize of a constant weight.
    fn quantized_graph(act: Option<Activation>, y_zero_point: i32) -> Graph {
        let mut g = Graph::new("quantized");
        let x = g.add_input("x", TensorType::f32(vec![1, 2, 5, 5]));
        let (sx, zx) = (0.02f32, 128);
        let xq_ty =
            TensorType::new(DType::U8, vec![1, 2, 5, 5]).with_quant(Quant::per_tensor(sx, zx));
        let xq = g.add_node_typed(
            "quant_x",
            Op::Quantize,
            &[x],
            vec![Output {
                name: "xq".into(),
                ty: xq_ty,
            }],
        )[0];
        let w_scales = vec![0.01f32, 0.02, 0.005];
        let w_quant = Quant::PerAxis {
            axis: 0,
            scales: w_scales.clone(),
            zero_points: vec![0; 3],
        };
        let w = Generator::Uniform {
            seed: 7,
            low: -127.0,
            high: 127.0,
        }
        .generate(DType::I8, &[3, 2, 3, 3])
        .unwrap();
        let wq = g.add_const("wq", w.clone(), Some(w_quant.clone()));
        let bias = Tensor::new(vec![3], TensorData::I32(vec![300, -2000, 50])).unwrap();
        let b_quant = Quant::PerAxis {
            axis: 0,
            scales: w_scales.iter().map(|s| sx * s).collect(),
            zero_points: vec![0; 3],
        };
        let bq = g.add_const("bq", bias, Some(b_quant));
        let yq_ty = TensorType::new(DType::U8, vec![1, 3, 5, 5])
            .with_quant(Quant::per_tensor(0.05, y_zero_point));
        let yq = g.add_node_typed(
            "qconv1",
            Op::QConv(conv2d(act, 1)),
            &[xq, wq, bq],
            vec![Output {
                name: "yq".into(),
                ty: yq_ty,
            }],
        )[0];
        let y = g
            .add_node("dq_y", Op::Dequantize, &[yq], vec!["y".into()])
            .unwrap()[0];

        // qmatmul: a (u8 per tensor) × b (i8 per column).
        let a = g.add_input("a", TensorType::f32(vec![2, 3]));
        let aq_ty = TensorType::new(DType::U8, vec![2, 3]).with_quant(Quant::per_tensor(0.03, 120));
        let aq = g.add_node_typed(
            "quant_a",
            Op::Quantize,
            &[a],
            vec![Output {
                name: "aq".into(),
                ty: aq_ty,
            }],
        )[0];
        let bm = Generator::Uniform {
            seed: 8,
            low: -127.0,
            high: 127.0,
        }
        .generate(DType::I8, &[3, 4])
        .unwrap();
        let bm_quant = Quant::PerAxis {
            axis: 1,
            scales: vec![0.01, 0.02, 0.03, 0.04],
            zero_points: vec![0, 1, -1, 2],
        };
        let bmq = g.add_const("bmq", bm.clone(), Some(bm_quant));
        let mq_ty = TensorType::new(DType::U8, vec![2, 4]).with_quant(Quant::per_tensor(0.07, 130));
        let mq = g.add_node_typed(
            "qmm",
            Op::QMatMul,
            &[aq, bmq],
            vec![Output {
                name: "mq".into(),
                ty: mq_ty,
            }],
        )[0];
        let m = g
            .add_node("dq_m", Op::Dequantize, &[mq], vec!["m".into()])
            .unwrap()[0];

        // conv_integer / matmul_integer on the same integers, with zero points.
        let w_plain = g.add_const("w_int", w, None);
        let x_zp = g.add_const(
            "x_zp",
            Tensor::new(vec![], TensorData::U8(vec![128])).unwrap(),
            None,
        );
        let w_zp = g.add_const(
            "w_zp",
            Tensor::new(vec![], TensorData::I8(vec![-2])).unwrap(),
            None,
        );
        let ci = g
            .add_node(
                "ci",
                Op::ConvInteger(conv2d(None, 0)),
                &[xq, w_plain, x_zp, w_zp],
                vec!["ci".into()],
            )
            .unwrap()[0];
        let b_plain = g.add_const("b_int", bm, None);
        let a_zp = g.add_const(
            "a_zp",
            Tensor::new(vec![], TensorData::U8(vec![120])).unwrap(),
            None,
        );
        let mi = g
            .add_node(
                "mi",
                Op::MatMulInteger,
                &[aq, b_plain, a_zp],
                vec!["mi".into()],
            )
            .unwrap()[0];
        // The constant weight dequantized per output channel (a QDQ model's weight path).
        let wf = g
            .add_node("dq_w", Op::Dequantize, &[wq], vec!["wf".into()])
            .unwrap()[0];
        // The i32 bias dequantized (zero point 0 is left out for i32 in ONNX).
        let bf = g
            .add_node("dq_b", Op::Dequantize, &[bq], vec!["bf".into()])
            .unwrap()[0];
        g.set_outputs(vec![y, m, ci, mi, wf, bf]);
        kiln_ir::verify(&g).unwrap();
        g
    }

    #[test]
    fn quantized_ops_export_to_qdq_and_qoperator_nodes() {
        let g = quantized_graph(None, 10);
        let m = decode(&export(&g).unwrap());
        assert_eq!(
            op_types(&m),
            [
                "QuantizeLinear",
                "QLinearConv",
                "DequantizeLinear",
                "QuantizeLinear",
                "QLinearMatMul",
                "DequantizeLinear",
                "ConvInteger",
                "MatMulInteger",
                "DequantizeLinear",
                "DequantizeLinear"
            ]
        );
        let nodes = &m.graph.as_ref().unwrap().node;
        let qconv = &nodes[1];
        assert_eq!(
            qconv.input,
            [
                "xq",
                "xq_scale",
                "xq_zero_point",
                "wq",
                "wq_scale",
                "wq_zero_point",
                "yq_scale",
                "yq_zero_point",
                "bq"
            ]
        );
        // Parameters come from the IR types: per tensor as scalars, per axis as 1-D.
        assert_eq!(initializer(&m, "xq_scale").as_f32().unwrap(), &[0.02]);
        assert_eq!(
            initializer(&m, "xq_zero_point").data(),
            &TensorData::U8(vec![128])
        );
        assert!(initializer(&m, "xq_scale").shape().is_empty());
        assert_eq!(
            initializer(&m, "wq_scale").as_f32().unwrap(),
            &[0.01, 0.02, 0.005]
        );
        assert_eq!(
            initializer(&m, "wq_zero_point").data(),
            &TensorData::I8(vec![0, 0, 0])
        );
        assert_eq!(
            initializer(&m, "bmq_zero_point").data(),
            &TensorData::I8(vec![0, 1, -1, 2])
        );
        assert_eq!(
            initializer(&m, "aq_zero_point").data(),
            &TensorData::U8(vec![120])
        );
        // The per-axis dequantize of the weight names its axis; the i32 bias has no zero point.
        let dq_w = nodes.iter().find(|n| n.name() == "dq_w").unwrap();
        assert_eq!(dq_w.attribute[0].name(), "axis");
        assert_eq!(dq_w.attribute[0].i(), 0);
        let dq_b = nodes.iter().find(|n| n.name() == "dq_b").unwrap();
        assert_eq!(dq_b.input.len(), 2, "{:?}", dq_b.input);
        assert_round_trip_is_exact(&g);
    }

    /// A fused ReLU / Clip on qconv clamps the requantized integers: ReLU at the output zero
    /// point (10), Clip(0, 0.6) at round(0 / 0.05) + 10 = 10 and round(0.6 / 0.05) + 10 = 22.
    /// Exported as DequantizeLinear → Clip → QuantizeLinear with the dequantized integer
    /// bounds (10 − 10)·0.05 = 0 and (22 − 10)·0.05; ReLU has no upper bound.
    #[test]
    fn a_fused_clamp_on_qconv_becomes_a_clip_between_dequantize_and_quantize() {
        for (act, lo, hi) in [
            (Activation::Relu, Some(0.0f32), None),
            (
                Activation::Clip { min: 0.0, max: 0.6 },
                Some(0.0),
                Some(12.0f32 * 0.05),
            ),
        ] {
            let g = quantized_graph(Some(act.clone()), 10);
            let m = decode(&export(&g).unwrap());
            let nodes = &m.graph.as_ref().unwrap().node;
            assert_eq!(
                op_types(&m)[1..5],
                ["QLinearConv", "DequantizeLinear", "Clip", "QuantizeLinear"],
                "{act:?}"
            );
            assert_eq!(nodes[1].output, ["yq_unclamped"]);
            assert_eq!(
                nodes[2].input,
                ["yq_unclamped", "yq_scale", "yq_zero_point"]
            );
            assert_eq!(nodes[4].input, ["yq_clamped", "yq_scale", "yq_zero_point"]);
            assert_eq!(nodes[4].output, ["yq"]);
            let clip = &nodes[3];
            let bound = |i: usize| {
                clip.input
                    .get(i)
                    .filter(|n| !n.is_empty())
                    .map(|n| initializer(&m, n).as_f32().unwrap()[0])
            };
            assert_eq!((bound(1), bound(2)), (lo, hi), "{act:?}");
            assert_round_trip_is_exact(&g);
        }
        // With a u8 output zero point of 0, ReLU's clamp is the saturation at 0 itself.
        let g = quantized_graph(Some(Activation::Relu), 0);
        let m = decode(&export(&g).unwrap());
        assert_eq!(op_types(&m)[1..3], ["QLinearConv", "DequantizeLinear"]);
        assert_round_trip_is_exact(&g);
        // Sigmoid is not a clamp: no exact integer form.
        let mut g = quantized_graph(None, 10);
        let qconv = g
            .node_ids()
            .find(|&id| g.node(id).name == "qconv1")
            .unwrap();
        if let Op::QConv(a) = g.node_mut_op(qconv) {
            a.act = Some(Activation::Sigmoid);
        }
        let err = export_model_unverified(&g).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("node 'qconv1' (qconv): fused sigmoid"),
            "{err}"
        );
    }

    /// Export without the verifier, to reach the exporter's own checks.
    fn export_model_unverified(g: &Graph) -> Result<ModelProto, ExportError> {
        let mut ex = Exporter::new(g, required_opset(g))?;
        for id in g.topo_order().map_err(ExportError::Graph)? {
            ex.emit_node(id)?;
        }
        Ok(ModelProto {
            graph: Some(ex.finish()?),
            ..Default::default()
        })
    }

    #[test]
    fn names_are_unique_and_generated_ones_never_take_an_ir_name() {
        let mut g = Graph::new("names");
        let x = g.add_input("x", TensorType::f32(vec![1, 1, 4, 4]));
        let w = g.add_const("w", normal(1, 0.5, &[1, 1, 3, 3]), None);
        let b = g.add_const("b", normal(2, 0.5, &[1]), None);
        // Two nodes called "n", an unnamed value, and an IR value already named "y_conv",
        // which the fused conv's generated intermediate would otherwise take.
        let t1 = g
            .add_node(
                "n",
                Op::Activation(Activation::Relu),
                &[x],
                vec!["t".into()],
            )
            .unwrap()[0];
        let t2 = g
            .add_node(
                "n",
                Op::Activation(Activation::Tanh),
                &[t1],
                vec!["u".into()],
            )
            .unwrap()[0];
        let e = g
            .add_node(
                "",
                Op::Activation(Activation::Sigmoid),
                &[t2],
                vec!["".into()],
            )
            .unwrap()[0];
        let taken = g
            .add_node("m", Op::Identity, &[e], vec!["y_conv".into()])
            .unwrap()[0];
        let y = g
            .add_node(
                "c",
                Op::Conv(conv2d(Some(Activation::Relu), 1)),
                &[taken, w, b],
                vec!["y".into()],
            )
            .unwrap()[0];
        g.set_outputs(vec![y, y]);
        let m = decode(&export(&g).unwrap());
        let gp = m.graph.as_ref().unwrap();
        let outputs: Vec<&str> = gp.node.iter().map(|n| n.output[0].as_str()).collect();
        assert_eq!(
            outputs,
            ["t", "u", "sigmoid", "y_conv", "y_conv_1", "y", "y_copy"]
        );
        let names: Vec<&str> = gp.node.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["n", "n_1", "sigmoid", "m", "c", "c_relu", "y_copy"]);
        let graph_outputs: Vec<&str> = gp.output.iter().map(|o| o.name()).collect();
        assert_eq!(graph_outputs, ["y", "y_copy"]);
        // The value returned twice is one computation, returned twice.
        let back = reimport(&g);
        let inputs = seeded_inputs(&g, 3);
        let want = kiln_interp::run(&g, &inputs).unwrap();
        let got = kiln_interp::run(&back, &inputs).unwrap();
        assert!(want[0].bitwise_eq(&got[0]) && want[1].bitwise_eq(&got[1]));

        // The verifier rejects duplicate value names; the exporter would still write
        // unique ones (first come keeps the name).
        let mut dup = Graph::new("dup");
        let x = dup.add_input("x", TensorType::f32(vec![2]));
        let a = dup
            .add_node(
                "a",
                Op::Activation(Activation::Relu),
                &[x],
                vec!["t".into()],
            )
            .unwrap()[0];
        let b = dup
            .add_node(
                "b",
                Op::Activation(Activation::Tanh),
                &[a],
                vec!["t".into()],
            )
            .unwrap()[0];
        dup.set_outputs(vec![b]);
        let m = export_model_unverified(&dup).unwrap();
        let outputs: Vec<&str> = m
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.output[0].as_str())
            .collect();
        assert_eq!(outputs, ["t", "t_1"]);
    }

    #[test]
    fn opaque_constants_cannot_be_exported() {
        let mut g = Graph::new("opaque");
        let x = g.add_input("x", TensorType::f32(vec![4]));
        let stats = TensorStats {
            min: 0.0,
            max: 1.0,
            mean: 0.5,
            std: 0.1,
        };
        let c = g.add_const_value(
            "weights",
            ConstValue::Opaque {
                dtype: DType::F32,
                shape: vec![4],
                stats,
            },
            None,
        );
        let y = g
            .add_node("add", Op::Binary(BinaryOp::Add), &[x, c], vec!["y".into()])
            .unwrap()[0];
        g.set_outputs(vec![y]);
        let err = export(&g).unwrap_err();
        assert!(
            matches!(err, ExportError::OpaqueConstant { ref value, .. } if value == "weights"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("constant 'weights' (@c0) has no data"),
            "{err}"
        );
    }

    #[test]
    fn generated_constants_are_materialized() {
        let text = "graph @gen(%x: f32[2,3]) -> (f32[2,3]) {\n  %w = const @c0 : f32[2,3] = normal(seed=9, mean=0.0, std=1.0)  // 24 B\n  %y = add(%x, %w) : f32[2,3]\n  return %y\n}\n";
        let g = kiln_ir::text::parse_graph(text).unwrap();
        let m = decode(&export(&g).unwrap());
        let want = Generator::Normal {
            seed: 9,
            mean: 0.0,
            std: 1.0,
        }
        .generate(DType::F32, &[2, 3])
        .unwrap();
        assert!(initializer(&m, "w").bitwise_eq(&want));
        assert_round_trip_is_exact(&g);
    }

    /// Ops the importer produces from ONNX round-trip through export, including those
    /// whose ONNX form needs rewriting (legacy softmax, reversed slices, resize inputs,
    /// ReduceMean's axes).
    /// An opset-11 model with most imported ops (see [`imported_ops_round_trip`]).
    fn imported_ops_graph() -> Graph {
        let model = ModelBuilder::new(11)
            .input("x", &[1, 4, 6, 6])
            .input("v", &[2, 3, 4])
            .init(tensor_f32("s", &[4], &[1.0, 0.5, 2.0, 1.5]))
            .init(tensor_f32("bb", &[4], &[0.1, -0.2, 0.0, 0.3]))
            .init(tensor_f32("mu", &[4], &[0.0, 0.1, -0.1, 0.2]))
            .init(tensor_f32("var", &[4], &[1.0, 2.0, 0.5, 1.5]))
            .init(tensor_i64("starts", &[2], &[-1, 1]))
            .init(tensor_i64("ends", &[2], &[i64::MIN, 5]))
            .init(tensor_i64("axes", &[2], &[3, 2]))
            .init(tensor_i64("steps", &[2], &[-2, 2]))
            .init(tensor_i64("pads", &[8], &[0, 0, 1, 2, 0, 0, 2, 1]))
            .init(tensor_f32("pv", &[], &[-1.5]))
            .init(tensor_i64("shape", &[2], &[4, 6]))
            .init(tensor_i64("idx", &[2], &[3, 0]))
            .node(node(
                "BatchNormalization",
                &["x", "s", "bb", "mu", "var"],
                &["bn"],
                vec![attr_float("epsilon", 1e-3)],
            ))
            .node(node(
                "Slice",
                &["bn", "starts", "ends", "axes", "steps"],
                &["sl"],
                vec![],
            ))
            .node(node("Pad", &["sl", "pads", "pv"], &["pd"], vec![]))
            .node(node(
                "Pad",
                &["bn", "pads"],
                &["pr"],
                vec![attr_str("mode", "reflect")],
            ))
            .node(node(
                "MaxPool",
                &["pr"],
                &["mp", "mpi"],
                vec![
                    attr_ints("kernel_shape", &[2, 2]),
                    attr_ints("strides", &[2, 2]),
                ],
            ))
            .node(node(
                "AveragePool",
                &["bn"],
                &["ap"],
                vec![
                    attr_ints("kernel_shape", &[3, 3]),
                    attr_ints("pads", &[1, 1, 1, 1]),
                    attr_int("count_include_pad", 1),
                    attr_int("ceil_mode", 1),
                    attr_ints("strides", &[2, 2]),
                ],
            ))
            .node(node(
                "LRN",
                &["bn"],
                &["lrn"],
                vec![attr_int("size", 3), attr_float("alpha", 1e-3)],
            ))
            .node(node("GlobalAveragePool", &["lrn"], &["gap"], vec![]))
            .node(node("GlobalMaxPool", &["bn"], &["gmp"], vec![]))
            .node(node("Sum", &["gap", "gmp", "gap"], &["sum"], vec![]))
            .node(node(
                "Squeeze",
                &["sum"],
                &["sq"],
                vec![attr_ints("axes", &[2, 3])],
            ))
            .node(node(
                "Unsqueeze",
                &["sq"],
                &["usq"],
                vec![attr_ints("axes", &[0])],
            ))
            .node(node(
                "Transpose",
                &["usq"],
                &["tr"],
                vec![attr_ints("perm", &[2, 0, 1])],
            ))
            .node(node("Softmax", &["v"], &["smx"], vec![attr_int("axis", 1)]))
            .node(node(
                "Softmax",
                &["v"],
                &["smx2"],
                vec![attr_int("axis", 2)],
            ))
            .node(node(
                "ReduceMean",
                &["v"],
                &["rm"],
                vec![attr_ints("axes", &[1, 2]), attr_int("keepdims", 0)],
            ))
            .node(node(
                "Split",
                &["v"],
                &["sp1", "sp2"],
                vec![attr_int("axis", 2), attr_ints("split", &[1, 3])],
            ))
            .node(node(
                "Concat",
                &["sp2", "sp1"],
                &["cat"],
                vec![attr_int("axis", 2)],
            ))
            .node(node("Reshape", &["cat", "shape"], &["rs"], vec![]))
            .node(node("Flatten", &["v"], &["fl"], vec![attr_int("axis", 2)]))
            .node(node(
                "Gather",
                &["rs", "idx"],
                &["ga"],
                vec![attr_int("axis", 1)],
            ))
            .node(node("Sub", &["ga", "rm"], &["sub"], vec![]))
            .node(node("Div", &["sub", "rm"], &["div"], vec![]))
            .node(node(
                "Cast",
                &["div"],
                &["cast"],
                vec![attr_int("to", DataType::Int32 as i64)],
            ))
            .node(node("Dropout", &["fl"], &["drop"], vec![]))
            .node(node("Identity", &["drop"], &["id"], vec![]))
            .node(node("MatMul", &["id", "rs"], &["mm"], vec![]))
            .output("pd")
            .output("mp")
            .output("mpi")
            .output("ap")
            .output("tr")
            .output("smx")
            .output("smx2")
            .output("cast")
            .output("mm")
            .output("sub");
        model.import().unwrap()
    }

    #[test]
    fn imported_ops_round_trip() {
        let g = imported_ops_graph();
        let ops: Vec<&'static str> = compute_ops(&g).iter().map(|op| op.mnemonic()).collect();
        for expected in [
            "softmax",
            "slice",
            "pad",
            "split",
            "gather",
            "reduce_mean",
            "lrn",
            "cast",
        ] {
            assert!(ops.contains(&expected), "{expected} in {ops:?}");
        }
        assert!(
            compute_ops(&g)
                .iter()
                .any(|op| matches!(op, Op::Softmax { legacy: true, .. })),
            "opset 11 softmax over a middle axis is the legacy form"
        );
        let back = assert_round_trip_is_exact(&g);
        assert!(
            compute_ops(&back)
                .iter()
                .all(|op| !matches!(op, Op::Softmax { legacy: true, .. })),
            "legacy softmax is exported as Flatten → Softmax → Reshape"
        );
    }

    /// opset, input dims, initializers, node inputs, node attributes.
    type ResizeCase = (
        i64,
        &'static [i64],
        Vec<crate::proto::TensorProto>,
        Vec<&'static str>,
        Vec<crate::proto::AttributeProto>,
    );

    /// Resize / Upsample models of several opsets, imported.
    fn resize_graphs() -> Vec<Graph> {
        let cases: Vec<ResizeCase> = vec![
            // sizes given: scales = sizes / in.
            (
                13,
                &[1, 2, 5, 7],
                vec![tensor_i64("sizes", &[4], &[1, 2, 8, 3])],
                vec!["x", "", "", "sizes"],
                vec![attr_str("mode", "linear")],
            ),
            // scales 1.7 on 5: floor(8.5) = 8, and 8/5 ≠ 1.7, so only scales reproduce both.
            (
                13,
                &[1, 2, 5, 7],
                vec![tensor_f32("scales", &[4], &[1.0, 1.0, 1.7, 0.6])],
                vec!["x", "", "scales"],
                vec![attr_str("mode", "cubic"), attr_int("exclude_outside", 1)],
            ),
            (
                13,
                &[1, 1, 4, 4],
                vec![
                    tensor_f32("roi", &[8], &[0.0, 0.0, 0.1, 0.2, 1.0, 1.0, 0.9, 0.7]),
                    tensor_i64("sizes", &[4], &[1, 1, 3, 5]),
                ],
                vec!["x", "roi", "", "sizes"],
                vec![
                    attr_str("coordinate_transformation_mode", "tf_crop_and_resize"),
                    attr_float("extrapolation_value", -3.0),
                    attr_str("mode", "linear"),
                ],
            ),
            (
                19,
                &[1, 1, 4, 6],
                vec![tensor_i64("sizes", &[4], &[1, 1, 7, 3])],
                vec!["x", "", "", "sizes"],
                vec![
                    attr_str("coordinate_transformation_mode", "half_pixel_symmetric"),
                    attr_str("mode", "nearest"),
                    attr_str("nearest_mode", "ceil"),
                ],
            ),
            (
                18,
                &[1, 1, 8, 8],
                vec![tensor_f32("scales", &[4], &[1.0, 1.0, 0.5, 0.25])],
                vec!["x", "", "scales"],
                vec![attr_str("mode", "linear"), attr_int("antialias", 1)],
            ),
            // Upsample (opset 9): asymmetric, nearest rounding down.
            (
                9,
                &[1, 1, 3, 3],
                vec![tensor_f32("scales", &[4], &[1.0, 1.0, 2.0, 3.0])],
                vec!["x", "scales"],
                vec![],
            ),
        ];
        cases
            .into_iter()
            .map(|(opset, dims, inits, inputs, attrs)| {
                let op = if opset < 10 { "Upsample" } else { "Resize" };
                let mut b = ModelBuilder::new(opset).input("x", dims);
                for t in inits {
                    b = b.init(t);
                }
                b.node(node(op, &inputs, &["y"], attrs))
                    .output("y")
                    .import()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn resize_writes_whichever_of_scales_and_sizes_reproduces_both() {
        for g in resize_graphs() {
            let m = decode(&export(&g).unwrap());
            let want_opset = match output_op(&g, 0) {
                Op::Resize(r) if r.coord == CoordTransform::HalfPixelSymmetric => 19,
                Op::Resize(r) if r.antialias => 18,
                _ => EXPORT_OPSET,
            };
            assert_eq!(m.opset_import[0].version(), want_opset);
            let back = assert_round_trip_is_exact(&g);
            assert_eq!(output_op(&back, 0), output_op(&g, 0));
        }
    }

    /// Opset 17 unless an op needs more; ReduceMean then takes its axes as an input (18+).
    #[test]
    fn the_opset_rises_only_for_ops_that_need_it() {
        let build = |pad_mode: PadMode, pool_dilation: usize| {
            let mut g = Graph::new("opsets");
            let x = g.add_input("x", TensorType::f32(vec![1, 2, 6, 6]));
            let p = g
                .add_node(
                    "pad",
                    Op::Pad {
                        mode: pad_mode,
                        pads: vec![0, 0, 1, 2, 0, 0, 2, 1],
                        value: 0.0,
                    },
                    &[x],
                    vec!["p".into()],
                )
                .unwrap()[0];
            let pool = kiln_ir::PoolAttrs {
                kernel: vec![2, 2],
                strides: vec![1, 1],
                pads: vec![0; 4],
                dilations: vec![pool_dilation; 2],
                ceil_mode: false,
                count_include_pad: false,
                storage_order: 0,
            };
            let a = g
                .add_node("pool", Op::AveragePool(pool), &[p], vec!["a".into()])
                .unwrap()[0];
            let m = g
                .add_node(
                    "mean",
                    Op::ReduceMean {
                        axes: vec![1, 3],
                        keepdims: true,
                    },
                    &[a],
                    vec!["m".into()],
                )
                .unwrap()[0];
            g.set_outputs(vec![m]);
            g
        };
        for (mode, dilation, opset, mean_inputs) in [
            (PadMode::Reflect, 1, 17, 1),
            (PadMode::Wrap, 1, 19, 2),
            (PadMode::Edge, 2, 19, 2),
        ] {
            let g = build(mode, dilation);
            let m = decode(&export(&g).unwrap());
            assert_eq!(m.opset_import[0].version(), opset, "{mode:?} {dilation}");
            assert_eq!(m.ir_version(), if opset >= 19 { 9 } else { 8 });
            let mean = &m.graph.as_ref().unwrap().node[2];
            assert_eq!(mean.op_type(), "ReduceMean");
            assert_eq!(mean.input.len(), mean_inputs);
            assert_round_trip_is_exact(&g);
        }
    }

    #[test]
    fn integer_clip_bounds_and_pad_values_take_the_input_type() {
        let mut g = Graph::new("ints");
        let x = g.add_input("x", TensorType::new(DType::I8, vec![6]));
        let c = g
            .add_node(
                "c",
                Op::Activation(Activation::Clip {
                    min: -3.0,
                    max: 100.0,
                }),
                &[x],
                vec!["c".into()],
            )
            .unwrap()[0];
        let p = g
            .add_node(
                "p",
                Op::Pad {
                    mode: PadMode::Constant,
                    pads: vec![1, 2],
                    value: 7.0,
                },
                &[c],
                vec!["p".into()],
            )
            .unwrap()[0];
        g.set_outputs(vec![p]);
        let m = decode(&export(&g).unwrap());
        assert_eq!(initializer(&m, "c_min").data(), &TensorData::I8(vec![-3]));
        assert_eq!(initializer(&m, "c_max").data(), &TensorData::I8(vec![100]));
        assert_eq!(initializer(&m, "p_value").data(), &TensorData::I8(vec![7]));
        assert_round_trip_is_exact(&g);
    }

    #[test]
    fn inputs_and_outputs_are_declared_with_static_types() {
        let mut g = Graph::new("io");
        let x = g.add_input("x", TensorType::new(DType::U8, vec![2, 3]));
        let y = g
            .add_node("cast", Op::Cast { to: DType::F32 }, &[x], vec!["y".into()])
            .unwrap()[0];
        g.set_outputs(vec![y, x]);
        let m = decode(&export(&g).unwrap());
        let gp = m.graph.as_ref().unwrap();
        assert_eq!(gp.name(), "io");
        let declared =
            |vi: &ValueInfoProto| match vi.r#type.as_ref().unwrap().value.as_ref().unwrap() {
                type_proto::Value::TensorType(t) => (
                    t.elem_type(),
                    t.shape
                        .as_ref()
                        .unwrap()
                        .dim
                        .iter()
                        .map(|d| match d.value {
                            Some(dimension::Value::DimValue(v)) => v,
                            _ => -1,
                        })
                        .collect::<Vec<i64>>(),
                ),
                _ => panic!("tensor type expected"),
            };
        assert_eq!(declared(&gp.input[0]), (DataType::Uint8 as i32, vec![2, 3]));
        assert_eq!(
            declared(&gp.output[0]),
            (DataType::Float as i32, vec![2, 3])
        );
        assert_eq!(gp.output[1].name(), "x");
        assert_round_trip_is_exact(&g);
    }
}
