//! Test helpers: small ONNX models built directly from the prost message types, so unit
//! tests need no Python and no files.

use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_proto::DataType;
use crate::proto::tensor_shape_proto::{dimension, Dimension};
use crate::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::{import_bytes, ImportOptions, OnnxError};
use kiln_ir::{Graph, Node, Op, Tensor, ValueId};
use prost::Message;

/// A dim of a declared input shape.
#[derive(Clone, Debug)]
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

pub fn attr_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Floats as i32),
        floats: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::String as i32),
        s: Some(v.as_bytes().to_vec()),
        ..Default::default()
    }
}

pub fn attr_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

pub fn node(
    op_type: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op_type.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn named(mut n: NodeProto, name: &str) -> NodeProto {
    n.name = Some(name.into());
    n
}

pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: data.to_vec(),
        ..Default::default()
    }
}

pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

/// A tensor stored in `raw_data` (or, with `int32_data`-style element types, typed).
pub fn tensor_raw(name: &str, dtype: DataType, dims: &[i64], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

pub fn tensor_i32_field(name: &str, dtype: DataType, dims: &[i64], data: &[i32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype as i32),
        int32_data: data.to_vec(),
        ..Default::default()
    }
}

pub fn value_info(name: &str, dtype: DataType, dims: Option<&[Dim]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(v) => dimension::Value::DimValue(*v),
                    Dim::Named(p) => dimension::Value::DimParam(p.to_string()),
                }),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype as i32),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model under construction.
pub struct ModelBuilder {
    opset: i64,
    graph: GraphProto,
}

impl ModelBuilder {
    pub fn new(opset: i64) -> ModelBuilder {
        ModelBuilder {
            opset,
            graph: GraphProto {
                name: Some("test".into()),
                ..Default::default()
            },
        }
    }

    /// An f32 input with fixed dims.
    pub fn input(self, name: &str, dims: &[i64]) -> ModelBuilder {
        let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d)).collect();
        self.input_typed(name, DataType::Float, Some(&dims))
    }

    pub fn input_typed(
        mut self,
        name: &str,
        dtype: DataType,
        dims: Option<&[Dim]>,
    ) -> ModelBuilder {
        self.graph.input.push(value_info(name, dtype, dims));
        self
    }

    /// A graph output (its declared type is not used by the importer).
    pub fn output(mut self, name: &str) -> ModelBuilder {
        self.graph
            .output
            .push(value_info(name, DataType::Float, None));
        self
    }

    pub fn init(mut self, t: TensorProto) -> ModelBuilder {
        self.graph.initializer.push(t);
        self
    }

    pub fn node(mut self, n: NodeProto) -> ModelBuilder {
        self.graph.node.push(n);
        self
    }

    pub fn model(&self) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(self.graph.clone()),
            ..Default::default()
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.model().encode_to_vec()
    }

    pub fn import(&self) -> Result<Graph, OnnxError> {
        self.import_with(&ImportOptions::default())
    }

    pub fn import_with(&self, opts: &ImportOptions) -> Result<Graph, OnnxError> {
        import_bytes(&self.bytes(), None, opts)
    }
}

/// The node producing graph output `i`.
pub fn output_node(g: &Graph, i: usize) -> &Node {
    g.node(g.outputs()[i].node)
}

/// The op producing graph output `i`.
pub fn output_op(g: &Graph, i: usize) -> &Op {
    &output_node(g, i).op
}

/// Ops of every non-source node, in topological order.
pub fn compute_ops(g: &Graph) -> Vec<&Op> {
    g.topo_order()
        .expect("imported graphs are acyclic")
        .into_iter()
        .map(|n| &g.node(n).op)
        .filter(|op| !op.is_source())
        .collect()
}

/// The value feeding input `slot` of the node behind graph output `i`.
pub fn output_operand(g: &Graph, i: usize, slot: usize) -> ValueId {
    output_node(g, i).inputs()[slot]
}

/// Run an imported graph on `inputs` with the reference interpreter.
pub fn run(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    kiln_interp::run(g, inputs).expect("the imported graph runs")
}

/// A unique empty directory under the system temp dir (removed by the caller).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kiln-onnx-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir can be created");
    dir
}
