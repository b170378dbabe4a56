//! Ahead-of-time compilation of a whole model (docs/aot.md): the schedule and memory plan of
//! [`crate::CompiledModel`], every node's kernel built for an explicit target by
//! `kiln_codegen::aot`, emitted as one relocatable object with the C entry points
//! `NAME_scratch_size` / `NAME_run`, and the C header that documents them.

use crate::error::{MissingKernel, RuntimeError};
use crate::memory::MemoryPlan;
use crate::model::{
    exactly, fconv_node, fconv_transpose_node, fold_constant_dequantizes, is_shape_only,
    qconv_node, tensor_bytes, Options,
};
use kiln_codegen::aot::{AotKernel, AotTarget, Location, ObjectBuilder, ObjectStats};
use kiln_codegen::{CodegenError, PoolKind, QConvTuning};
use kiln_ir::{DType, Graph, NodeId, Op, Quant, TensorType, ValueId};
use std::collections::HashMap;

/// How to compile a model to an object.
#[derive(Clone, Debug)]
pub struct AotOptions {
    pub target: AotTarget,
    /// Prefix of the exported symbols and the header's macros (a C identifier).
    pub name: String,
    /// Micro-kernel shape, inner-product choice and depthwise path of the int8
    /// convolutions (as the JIT takes them).
    pub qconv: QConvTuning,
}

/// A compiled object and its header.
#[derive(Debug)]
pub struct AotObject {
    /// The ELF relocatable object.
    pub object: Vec<u8>,
    /// The C header declaring the entry points and documenting every buffer.
    pub header: String,
    pub stats: ObjectStats,
    pub inputs: Vec<(String, TensorType)>,
    pub outputs: Vec<(String, TensorType)>,
    /// Kernel calls of one run, in order: `(node, op)`.
    pub schedule: Vec<(String, &'static str)>,
}

/// Compile `graph` for `options.target`. Fails listing every node without an AOT kernel.
pub fn compile_object(graph: &Graph, options: &AotOptions) -> Result<AotObject, RuntimeError> {
    kiln_ir::verify(graph)?;
    let folded = fold_constant_dequantizes(graph, &Options::default())?;
    let graph = folded.as_ref().unwrap_or(graph);
    let schedule = graph.topo_order()?;
    let plan = MemoryPlan::new(graph, &schedule)?;
    let codegen = |node: NodeId, source: CodegenError| RuntimeError::Codegen {
        node: graph.node(node).name.clone(),
        op: graph.node(node).op.mnemonic(),
        source,
    };
    let mut object = ObjectBuilder::new(&options.target, &options.name).map_err(|e| {
        RuntimeError::Unsupported {
            node: options.name.clone(),
            op: "aot",
            reason: e.to_string(),
        }
    })?;

    // where each value lives: graph outputs made by a kernel are written straight into the
    // caller's buffer (the first output position listing them)
    let mut output_of: HashMap<ValueId, usize> = HashMap::new();
    for (k, &v) in graph.outputs().iter().enumerate() {
        if !graph.node(v.node).op.is_source() {
            output_of.entry(v).or_insert(k);
        }
    }
    let mut constants: HashMap<ValueId, usize> = HashMap::new();
    let mut place = |object: &mut ObjectBuilder, v: ValueId| -> Result<Location, RuntimeError> {
        let node = graph.node(v.node);
        match node.op {
            Op::Input { index } => Ok(Location::Input(index)),
            Op::Const(_) => {
                if let Some(&k) = constants.get(&v) {
                    return Ok(Location::Const(k));
                }
                let tensor = graph
                    .const_tensor(v)
                    .ok_or_else(|| RuntimeError::Unsupported {
                        node: node.name.clone(),
                        op: "const",
                        reason: "the constant has no data (opaque or generated)".into(),
                    })?;
                let k = object
                    .add_constant(&tensor_bytes(tensor))
                    .map_err(|e| codegen(v.node, e))?;
                constants.insert(v, k);
                Ok(Location::Const(k))
            }
            _ => match output_of.get(&v) {
                Some(&k) => Ok(Location::Output(k)),
                None => {
                    let slot = plan
                        .slot(v)
                        .expect("every intermediate value has an arena slot");
                    Ok(Location::Arena(slot.offset))
                }
            },
        }
    };

    let mut missing = Vec::new();
    let mut steps = Vec::new();
    for &node_id in &schedule {
        let node = graph.node(node_id);
        let output = ValueId {
            node: node_id,
            port: 0,
        };
        // a shape-only op whose output shares its input's bytes has nothing to run
        if matches!(node.op, Op::Input { .. } | Op::Const(_)) || plan.is_alias(output) {
            continue;
        }
        match aot_kernel(graph, node_id, options) {
            Ok(Some((kernel, reads))) => {
                let mut read_places = Vec::with_capacity(reads.len());
                for v in reads {
                    read_places.push(place(&mut object, v)?);
                }
                let write = place(
                    &mut object,
                    ValueId {
                        node: node_id,
                        port: 0,
                    },
                )?;
                steps.push((node.name.clone(), node.op.mnemonic()));
                object
                    .add_step(kernel, read_places, write)
                    .map_err(|e| codegen(node_id, e))?;
            }
            Ok(None) => missing.push(MissingKernel {
                node: node.name.clone(),
                op: node.op.mnemonic(),
            }),
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        return Err(RuntimeError::NoKernel(missing));
    }
    // outputs not written by a kernel above: inputs, constants, values listed twice
    for (k, &v) in graph.outputs().iter().enumerate() {
        let from = place(&mut object, v)?;
        if from != Location::Output(k) {
            let bytes = graph.value_type(v).byte_size();
            steps.push((graph.value_name(v).to_string(), "copy"));
            object
                .add_step(
                    AotKernel::copy(bytes, &options.target),
                    vec![from],
                    Location::Output(k),
                )
                .map_err(|e| codegen(v.node, e))?;
        }
    }
    let (bytes, stats) = object
        .finish(plan.peak_bytes)
        .map_err(|e| RuntimeError::Unsupported {
            node: options.name.clone(),
            op: "aot",
            reason: e.to_string(),
        })?;
    let inputs: Vec<(String, TensorType)> = graph
        .inputs()
        .iter()
        .map(|&v| (graph.value_name(v).to_string(), graph.value_type(v).clone()))
        .collect();
    let outputs: Vec<(String, TensorType)> = graph
        .outputs()
        .iter()
        .map(|&v| (graph.value_name(v).to_string(), graph.value_type(v).clone()))
        .collect();
    if let Some((name, ty)) = inputs
        .iter()
        .chain(&outputs)
        .find(|(_, t)| t.shape.len() > 8)
    {
        return Err(RuntimeError::Unsupported {
            node: name.clone(),
            op: "aot",
            reason: format!("{ty} has rank > 8, more than the header's kiln_tensor_info holds"),
        });
    }
    let header = header(&options.name, &options.target, &inputs, &outputs, &stats);
    Ok(AotObject {
        object: bytes,
        header,
        stats,
        inputs,
        outputs,
        schedule: steps,
    })
}

/// The kernel of one node and the values it reads at run time (its operand order), or
/// `None` when there is no AOT kernel for it.
fn aot_kernel(
    graph: &Graph,
    node_id: NodeId,
    options: &AotOptions,
) -> Result<Option<(AotKernel, Vec<ValueId>)>, RuntimeError> {
    let node = graph.node(node_id);
    let op = node.op.mnemonic();
    let target = &options.target;
    let unsupported = |reason: String| RuntimeError::Unsupported {
        node: node.name.clone(),
        op,
        reason,
    };
    let codegen = |source: CodegenError| RuntimeError::Codegen {
        node: node.name.clone(),
        op,
        source,
    };
    let output = ValueId {
        node: node_id,
        port: 0,
    };
    let ty = |v: ValueId| graph.value_type(v);
    if node.outputs.len() != 1 {
        return Err(unsupported(format!(
            "{} outputs; kernels produce one (no MaxPool Indices, no Dropout mask)",
            node.outputs.len()
        )));
    }
    let is_f32 = |v: ValueId| ty(v).dtype == DType::F32;
    let first_is_f32 = node.inputs().first().is_some_and(|&x| is_f32(x));
    let result = match &node.op {
        Op::QConv(attrs) => {
            let qconv = qconv_node(graph, node, attrs).map_err(unsupported)?;
            let kernel = AotKernel::qconv(&qconv, &options.qconv, target).map_err(codegen)?;
            (kernel, vec![node.inputs()[0]])
        }
        Op::Conv(attrs) if first_is_f32 => {
            let (fconv, reads) = fconv_node(graph, node, attrs, output).map_err(unsupported)?;
            (AotKernel::conv_f32(&fconv, target).map_err(codegen)?, reads)
        }
        Op::ConvTranspose(attrs) if first_is_f32 => {
            let (deconv, x) =
                fconv_transpose_node(graph, node, attrs, output).map_err(unsupported)?;
            let kernel = AotKernel::conv_transpose_f32(&deconv, target).map_err(codegen)?;
            (kernel, vec![x])
        }
        Op::Resize(attrs) => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = AotKernel::resize(attrs, ty(x), ty(output), target).map_err(codegen)?;
            (kernel, vec![x])
        }
        Op::Quantize => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = AotKernel::quantize(ty(x), ty(output), target).map_err(codegen)?;
            (kernel, vec![x])
        }
        Op::Dequantize => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = AotKernel::dequantize(ty(x), ty(output), target).map_err(codegen)?;
            (kernel, vec![x])
        }
        Op::MaxPool(_) | Op::GlobalMaxPool | Op::AveragePool(_) | Op::GlobalAveragePool => {
            let [x] = exactly(node).map_err(unsupported)?;
            let attrs = match &node.op {
                Op::MaxPool(a) | Op::AveragePool(a) => Some(a),
                _ => None,
            };
            let max = matches!(node.op, Op::MaxPool(_) | Op::GlobalMaxPool);
            let kernel = if is_f32(x) {
                let kind = if max {
                    PoolKind::Max
                } else {
                    PoolKind::Average
                };
                AotKernel::pool_f32(kind, attrs, ty(x), target)
            } else if max {
                AotKernel::max_pool_int8(attrs, ty(x), target)
            } else {
                return Ok(None);
            }
            .map_err(codegen)?;
            (kernel, vec![x])
        }
        Op::Softmax { axis, legacy } => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = AotKernel::softmax(*axis, *legacy, ty(x), target).map_err(codegen)?;
            (kernel, vec![x])
        }
        Op::Concat { axis } => {
            let ins = node.inputs();
            let types: Vec<&TensorType> = ins.iter().map(|&x| ty(x)).collect();
            let kernel = AotKernel::concat(*axis, &types, ty(output), target).map_err(codegen)?;
            (kernel, ins.to_vec())
        }
        Op::Activation(act) if first_is_f32 => {
            let [x] = exactly(node).map_err(unsupported)?;
            let kernel = AotKernel::activation(act, ty(x), target).map_err(codegen)?;
            (kernel, vec![x])
        }
        Op::Binary(binary) if first_is_f32 => {
            let [a, b] = exactly(node).map_err(unsupported)?;
            let kernel =
                AotKernel::binary(*binary, ty(a), ty(b), ty(output), target).map_err(codegen)?;
            (kernel, vec![a, b])
        }
        shape_only if is_shape_only(shape_only) => {
            let [x] = exactly(node).map_err(unsupported)?;
            if ty(x).byte_size() != ty(output).byte_size() {
                return Err(unsupported(format!(
                    "input {} and output {} differ in size",
                    ty(x),
                    ty(output)
                )));
            }
            (AotKernel::copy(ty(x).byte_size(), target), vec![x])
        }
        _ => return Ok(None),
    };
    Ok(Some(result))
}

/// A value's type for the header's comments.
fn describe(ty: &TensorType) -> String {
    let quant = match &ty.quant {
        Some(Quant::PerTensor { scale, zero_point }) => {
            format!(", scale {scale:e}, zero point {zero_point}")
        }
        Some(Quant::PerAxis { axis, .. }) => format!(", quantized per axis {axis}"),
        None => String::new(),
    };
    format!(
        "{} {:?}, {} bytes{quant}",
        ty.dtype,
        ty.shape,
        ty.byte_size()
    )
}

/// numpy's dtype string of a kiln dtype (little-endian, as the buffers are).
fn numpy_descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    }
}

/// The header: entry points, buffer sizes as macros, every input and output documented.
fn header(
    name: &str,
    target: &AotTarget,
    inputs: &[(String, TensorType)],
    outputs: &[(String, TensorType)],
    stats: &ObjectStats,
) -> String {
    let upper = name.to_uppercase();
    let guard = format!("{upper}_H");
    let mut h = String::new();
    h.push_str(&format!(
        "/* {name}.h: the C interface of {name}.o, compiled by kiln {} for {}.\n",
        env!("CARGO_PKG_VERSION"),
        target.triple()
    ));
    for line in [
        " *",
        " * Buffers are row-major, little-endian, of exactly the sizes below; inputs and",
        " * outputs need no particular alignment. The scratch must be 64-byte aligned and",
        " * NAME_scratch_size() bytes; it holds every intermediate value, so one scratch per",
        " * concurrent call. The object needs nothing at run time (no libc, no allocation).",
        " */",
    ] {
        h.push_str(&line.replace("NAME", name));
        h.push('\n');
    }
    h.push_str(&format!(
        "#ifndef {guard}\n#define {guard}\n\n#include <stddef.h>\n\n"
    ));
    h.push_str("#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    h.push_str(&format!("#define {upper}_NUM_INPUTS {}\n", inputs.len()));
    h.push_str(&format!("#define {upper}_NUM_OUTPUTS {}\n", outputs.len()));
    h.push_str(&format!("#define {upper}_SCRATCH_ALIGN 64\n"));
    h.push_str(&format!(
        "#define {upper}_SCRATCH_SIZE {}\n\n",
        stats.scratch_bytes
    ));
    for (kind, list) in [("INPUT", inputs), ("OUTPUT", outputs)] {
        for (i, (value, ty)) in list.iter().enumerate() {
            h.push_str(&format!(
                "/* {} {i} \"{}\": {} */\n",
                kind.to_lowercase(),
                value.replace("*/", "* /"),
                describe(ty)
            ));
            h.push_str(&format!(
                "#define {upper}_{kind}_{i}_BYTES {}\n",
                ty.byte_size()
            ));
            h.push_str(&format!(
                "#define {upper}_{kind}_{i}_DTYPE \"{}\"\n",
                ty.dtype
            ));
            let dims: Vec<String> = ty.shape.iter().map(|d| d.to_string()).collect();
            h.push_str(&format!(
                "#define {upper}_{kind}_{i}_RANK {}\n",
                ty.shape.len()
            ));
            h.push_str(&format!(
                "#define {upper}_{kind}_{i}_SHAPE {{{}}}\n\n",
                dims.join(", ")
            ));
        }
    }
    h.push_str(
        "#ifndef KILN_TENSOR_INFO\n#define KILN_TENSOR_INFO\n\
         /* One buffer of the C interface: its graph name, numpy dtype string (\"<f4\",\n\
          * \"|u1\", \"|i1\", ...), rank, dimensions and size in bytes. */\n\
         typedef struct kiln_tensor_info {\n\
         \x20   const char *name;\n\
         \x20   const char *descr;\n\
         \x20   size_t rank;\n\
         \x20   size_t shape[8];\n\
         \x20   size_t bytes;\n\
         } kiln_tensor_info;\n#endif\n\n",
    );
    for (kind, list) in [("inputs", inputs), ("outputs", outputs)] {
        h.push_str(&format!(
            "static const kiln_tensor_info {name}_{kind}[{}] = {{\n",
            list.len().max(1)
        ));
        for (value, ty) in list {
            let dims: Vec<String> = ty.shape.iter().map(|d| d.to_string()).collect();
            h.push_str(&format!(
                "    {{\"{}\", \"{}\", {}, {{{}}}, {}}},\n",
                value.escape_default(),
                numpy_descr(ty.dtype),
                ty.shape.len(),
                dims.join(", "),
                ty.byte_size()
            ));
        }
        h.push_str("};\n\n");
    }
    h.push_str(&format!(
        "/* Bytes of scratch {name}_run needs ({upper}_SCRATCH_SIZE). */\n\
         size_t {name}_scratch_size(void);\n\n\
         /* Run the model: inputs[i] points to input i, outputs[k] to output k's buffer,\n\
          * scratch to {name}_scratch_size() bytes aligned to 64. Returns 0 on success. */\n\
         int {name}_run(const void *const *inputs, void *const *outputs, void *scratch);\n\n"
    ));
    h.push_str("#ifdef __cplusplus\n}\n#endif\n\n");
    h.push_str(&format!("#endif /* {guard} */\n"));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An op without an object kernel is a compile error listing every such node with its
    /// op, in schedule order — never a silently missing step.
    #[test]
    fn nodes_without_an_object_kernel_are_all_named() {
        let text = "graph @no_kernels(%x: f32[1,8,4,4]) -> (f32[1,8,4,4], f32[1,8,4,4]) {
  %norm = lrn(%x) {size=3, alpha=0.0001, beta=0.75, bias=1.0} : f32[1,8,4,4]
  %w = const @c0 : f32[4,4] = normal(seed=1, mean=0.0, std=0.5)
  %mm = matmul(%norm, %w) : f32[1,8,4,4]
  %act = relu(%x) : f32[1,8,4,4]
  return %mm, %act
}
";
        let graph = kiln_ir::text::parse_graph(text).expect("valid IR text");
        for triple in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
            let options = AotOptions {
                target: AotTarget::new(triple, &[]).expect("a supported target"),
                name: "model".to_string(),
                qconv: QConvTuning::default(),
            };
            let err = compile_object(&graph, &options).expect_err("lrn and matmul have no kernel");
            let RuntimeError::NoKernel(missing) = &err else {
                panic!("{triple}: expected NoKernel, got {err}");
            };
            let named: Vec<(&str, &str)> =
                missing.iter().map(|m| (m.node.as_str(), m.op)).collect();
            assert_eq!(named, [("norm", "lrn"), ("mm", "matmul")], "{triple}");
            assert_eq!(
                err.to_string(),
                "no kernel for 2 node(s): 'norm' (lrn), 'mm' (matmul)",
                "{triple}"
            );
        }
    }
}
