//! Shape and data-movement ops whose shape-valued inputs become static attributes
//! (Reshape, Squeeze, Unsqueeze, Slice, Split, Pad) and the ops that only ever produce
//! constants at import (Constant, ConstantOfShape, Shape, Range).

use super::emit_main;
use crate::attrs::NodeCx;
use crate::error::OnnxError;
use crate::geometry::{even_split, reshape_target, slice_bounds, MAX_WINDOW_EXTENT};
use crate::importer::Importer;
use crate::tensor::{declared_type, tensor_from_proto};
use half::f16;
use kiln_ir::tensor::checked_numel;
use kiln_ir::{DType, Op, PadMode, SliceAxis, Tensor, TensorData, TensorType};

pub(crate) fn reshape(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let shape = im
        .const_ints(cx, 1, "shape")?
        .ok_or_else(|| cx.err("required input 1 (shape) is missing"))?;
    let allowzero = cx.opset() >= 14 && cx.bool("allowzero", false)?;
    let target = reshape_target(im.shape(x), &shape, allowzero).map_err(|m| cx.err(m))?;
    emit_main(im, cx, Op::Reshape { shape: target }, &[x])
}

/// Axes of Squeeze/Unsqueeze: an attribute before opset 13, an input from 13 on.
fn squeeze_axes(im: &Importer, cx: &NodeCx) -> Result<Option<Vec<i64>>, OnnxError> {
    if cx.opset() >= 13 {
        im.const_ints(cx, 1, "axes")
    } else {
        cx.ints_opt("axes")
    }
}

pub(crate) fn squeeze(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let shape = im.shape(x).to_vec();
    let axes = match squeeze_axes(im, cx)? {
        // No axes: every dim of size 1.
        None => (0..shape.len()).filter(|&a| shape[a] == 1).collect(),
        Some(a) => {
            let axes = cx.axes("axes", &a, shape.len())?;
            if let Some(&bad) = axes.iter().find(|&&a| shape[a] != 1) {
                return Err(cx.err(format!(
                    "cannot squeeze axis {bad} of shape {shape:?}: its size is not 1"
                )));
            }
            axes
        }
    };
    emit_main(im, cx, Op::Squeeze { axes }, &[x])
}

pub(crate) fn unsqueeze(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let axes = squeeze_axes(im, cx)?.ok_or_else(|| cx.err("axes are required"))?;
    // Axes index the output, whose rank is the input's plus one per axis.
    let out_rank = im.shape(x).len() + axes.len();
    let axes = cx.axes("axes", &axes, out_rank)?;
    emit_main(im, cx, Op::Unsqueeze { axes }, &[x])
}

/// Slice: starts/ends/axes are attributes before opset 10; from 10 on they are inputs,
/// with steps. Bounds are normalized and clamped here; axes the slice leaves whole are
/// dropped.
pub(crate) fn slice(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let shape = im.shape(x).to_vec();
    let (starts, ends, axes, steps) = if cx.opset() < 10 {
        let starts = cx
            .ints_opt("starts")?
            .ok_or_else(|| cx.err("attribute 'starts' is required"))?;
        let ends = cx
            .ints_opt("ends")?
            .ok_or_else(|| cx.err("attribute 'ends' is required"))?;
        (starts, ends, cx.ints_opt("axes")?, None)
    } else {
        let starts = im
            .const_ints(cx, 1, "starts")?
            .ok_or_else(|| cx.err("required input 1 (starts) is missing"))?;
        let ends = im
            .const_ints(cx, 2, "ends")?
            .ok_or_else(|| cx.err("required input 2 (ends) is missing"))?;
        (
            starts,
            ends,
            im.const_ints(cx, 3, "axes")?,
            im.const_ints(cx, 4, "steps")?,
        )
    };
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(cx.err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} must have the same length"
        )));
    }
    let normalized = cx.axes("axes", &axes, shape.len())?;
    let mut sliced = Vec::with_capacity(n);
    for i in 0..n {
        let axis = cx.axis("axes", axes[i], shape.len())?;
        let (start, end, step) =
            slice_bounds(shape[axis], starts[i], ends[i], steps[i]).map_err(|m| cx.err(m))?;
        if !(start == 0 && end == shape[axis] as i64 && step == 1) {
            sliced.push(SliceAxis {
                axis,
                start,
                end,
                step,
            });
        }
    }
    debug_assert_eq!(normalized.len(), n);
    sliced.sort_by_key(|s| s.axis);
    emit_main(im, cx, Op::Slice { axes: sliced }, &[x])
}

/// Split: sizes from the `split` attribute (< 13) or input (13+), else `num_outputs`
/// (18+) or the number of outputs, as equal chunks with a smaller last one.
pub(crate) fn split(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let shape = im.shape(x).to_vec();
    let axis = cx.axis("axis", cx.int("axis", 0)?, shape.len())?;
    let dim = shape[axis];
    let n_out = cx.proto.output.len();
    let explicit = if cx.opset() >= 13 {
        im.const_ints(cx, 1, "split")?
    } else {
        cx.ints_opt("split")?
    };
    let sizes = match explicit {
        Some(s) if !s.is_empty() => {
            let sizes = cx.to_usizes("split", &s)?;
            if sizes.len() != n_out || sizes.iter().sum::<usize>() != dim {
                return Err(cx.err(format!(
                    "split {s:?} must have one entry per output ({n_out}) summing to dim {axis} of {shape:?}"
                )));
            }
            sizes
        }
        _ => {
            let parts = match cx.int_opt("num_outputs")? {
                Some(k) if cx.opset() >= 18 => {
                    let k = cx.to_usize("num_outputs", k)?;
                    if k != n_out {
                        return Err(cx.err(format!(
                            "num_outputs {k} differs from the {n_out} outputs listed"
                        )));
                    }
                    k
                }
                _ => n_out,
            };
            even_split(dim, parts).map_err(|m| cx.err(m))?
        }
    };
    // Every part is an output of the IR node, named even when the model drops it.
    let mut outputs = Vec::with_capacity(n_out);
    for i in 0..n_out {
        outputs.push(match im.output_name(cx, i) {
            Some(name) => name.to_string(),
            None => im.fresh_value_name(&format!("{}_unused", cx.node.name)),
        });
    }
    im.emit(cx, Op::Split { axis, sizes }, &[x], &outputs)?;
    Ok(())
}

/// Pad: `pads`/`value` attributes before opset 11; from 11 on `pads` and `constant_value`
/// inputs, plus `axes` from 18. Pads are expanded to every axis.
pub(crate) fn pad(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let x = im.req_input(cx, 0)?;
    let rank = im.shape(x).len();
    let mode = match cx.string("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => {
            return Err(cx.err(format!(
                "mode '{other}' is not one of constant, reflect, edge, wrap"
            )))
        }
    };
    let (pads, value, axes) = if cx.opset() < 11 {
        let pads = cx
            .ints_opt("pads")?
            .ok_or_else(|| cx.err("attribute 'pads' is required"))?;
        (pads, cx.float("value", 0.0)? as f64, None)
    } else {
        let pads = im
            .const_ints(cx, 1, "pads")?
            .ok_or_else(|| cx.err("required input 1 (pads) is missing"))?;
        let value = match im.const_input(cx, 2, "constant_value")? {
            None => 0.0,
            Some(t) if t.numel() == 1 => t.to_f64_vec()[0],
            Some(t) if t.numel() == 0 => 0.0,
            Some(t) => {
                return Err(cx.err(format!(
                    "constant_value must be a scalar, got shape {:?}",
                    t.shape()
                )))
            }
        };
        let axes = if cx.opset() >= 18 {
            im.const_ints(cx, 3, "axes")?
        } else {
            None
        };
        (pads, value, axes)
    };
    let full = match axes {
        None => {
            if pads.len() != 2 * rank {
                return Err(cx.err(format!(
                    "pads {pads:?} must have {} entries for rank {rank}",
                    2 * rank
                )));
            }
            pads
        }
        Some(axes) => {
            let k = axes.len();
            if pads.len() != 2 * k {
                return Err(cx.err(format!(
                    "pads {pads:?} must have {} entries for axes {axes:?}",
                    2 * k
                )));
            }
            cx.axes("axes", &axes, rank)?; // rejects repeated axes
            let mut full = vec![0i64; 2 * rank];
            for (j, &a) in axes.iter().enumerate() {
                let a = cx.axis("axes", a, rank)?;
                full[a] = pads[j];
                full[rank + a] = pads[k + j];
            }
            full
        }
    };
    // Negative pads crop (onnxruntime's extension; the ONNX reference rejects them): no
    // more than the axis holds. Positive ones are bounded like window extents, so that the
    // index arithmetic of later stages cannot overflow.
    let shape = im.shape(x);
    for axis in 0..rank {
        let (begin, end) = (full[axis], full[rank + axis]);
        let crop = begin.min(0).unsigned_abs() as u128 + end.min(0).unsigned_abs() as u128;
        if crop > shape[axis] as u128 {
            return Err(cx.err(format!(
                "axis {axis}: pads ({begin}, {end}) crop {crop} elements, but the axis has {}",
                shape[axis]
            )));
        }
        if let Some(&big) = [begin, end].iter().find(|&&p| p > MAX_WINDOW_EXTENT as i64) {
            return Err(cx.err(format!(
                "axis {axis}: pad {big} exceeds {MAX_WINDOW_EXTENT}, the largest kiln supports"
            )));
        }
    }
    emit_main(
        im,
        cx,
        Op::Pad {
            mode,
            pads: full,
            value,
        },
        &[x],
    )
}

/// Constant: exactly one of the value attributes.
pub(crate) fn constant(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let out = im.main_output(cx)?;
    let present: Vec<&str> = [
        "value",
        "value_float",
        "value_floats",
        "value_int",
        "value_ints",
        "value_string",
        "value_strings",
        "sparse_value",
    ]
    .into_iter()
    .filter(|a| cx.has_attr(a))
    .collect();
    if present.len() != 1 {
        return Err(cx.err(format!(
            "must have exactly one value attribute, has {present:?}"
        )));
    }
    let tensor = match present[0] {
        "value" => {
            let t = cx.tensor_opt("value")?.expect("presence checked above");
            // Counted by read_tensor before decoding; the other forms are small copies of
            // attribute lists already in memory, counted below.
            let tensor =
                im.read_tensor(t, || format!("{}: value tensor '{}'", cx.node, t.name()))?;
            im.bind_const(&out, tensor, None);
            return Ok(());
        }
        "value_float" => Tensor::scalar_f32(cx.float("value_float", 0.0)?),
        "value_floats" => {
            let v = cx
                .floats_opt("value_floats")?
                .expect("presence checked above");
            Tensor::from_f32(vec![v.len()], v).map_err(|e| cx.err(e.to_string()))?
        }
        "value_int" => {
            let v = cx.int("value_int", 0)?;
            Tensor::from_i64(vec![], vec![v]).map_err(|e| cx.err(e.to_string()))?
        }
        "value_ints" => {
            let v = cx.ints_opt("value_ints")?.expect("presence checked above");
            Tensor::from_i64(vec![v.len()], v).map_err(|e| cx.err(e.to_string()))?
        }
        other => {
            return Err(cx.err(format!(
                "{other} constants are not supported (no string or sparse tensors in kiln)"
            )))
        }
    };
    im.charge_value(
        cx,
        &out,
        &TensorType::new(tensor.dtype(), tensor.shape().to_vec()),
    )?;
    im.bind_const(&out, tensor, None);
    Ok(())
}

/// A tensor of `shape` with every element equal to the single element of `value`.
fn filled(value: &Tensor, shape: Vec<usize>) -> Result<Tensor, String> {
    let n = checked_numel(&shape).ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let data = match value.data() {
        TensorData::F32(v) => TensorData::F32(vec![v[0]; n]),
        TensorData::F16(v) => TensorData::F32(vec![f16::to_f32(v[0]); n]),
        TensorData::I8(v) => TensorData::I8(vec![v[0]; n]),
        TensorData::U8(v) => TensorData::U8(vec![v[0]; n]),
        TensorData::I32(v) => TensorData::I32(vec![v[0]; n]),
        TensorData::I64(v) => TensorData::I64(vec![v[0]; n]),
        TensorData::Bool(v) => TensorData::Bool(vec![v[0]; n]),
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// ConstantOfShape: a constant fill (f32 zero by default).
pub(crate) fn constant_of_shape(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let out = im.main_output(cx)?;
    let shape = im
        .const_ints(cx, 0, "shape")?
        .ok_or_else(|| cx.err("required input 0 (shape) is missing"))?;
    let shape = cx.to_usizes("shape", &shape)?;
    let value = match cx.tensor_opt("value")? {
        None => Tensor::scalar_f32(0.0),
        Some(t) => {
            let declared = declared_type(t)?;
            if checked_numel(&declared.shape) != Some(1) {
                return Err(cx.err(format!(
                    "value must have one element, has shape {:?}",
                    declared.shape
                )));
            }
            tensor_from_proto(t, im.model_dir())?
        }
    };
    // The fill is the allocation a tiny model can ask to be enormous: count it first.
    im.charge_value(cx, &out, &TensorType::new(value.dtype(), shape.clone()))?;
    let t = filled(&value, shape).map_err(|m| cx.err(m))?;
    im.bind_const(&out, t, None);
    Ok(())
}

/// Shape: shapes are static, so always a constant; `start`/`end` (15+) clamp like slices.
pub(crate) fn shape(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let out = im.main_output(cx)?;
    let x = im.req_input(cx, 0)?;
    let dims: Vec<i64> = im.shape(x).iter().map(|&d| d as i64).collect();
    let rank = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let (start, end) = if cx.opset() >= 15 {
        (clamp(cx.int("start", 0)?), clamp(cx.int("end", rank)?))
    } else {
        (0, rank as usize)
    };
    let part = if start < end {
        dims[start..end].to_vec()
    } else {
        vec![]
    };
    let t = Tensor::from_i64(vec![part.len()], part).map_err(|e| cx.err(e.to_string()))?;
    im.charge_value(cx, &out, &TensorType::new(DType::I64, t.shape().to_vec()))?;
    im.bind_const(&out, t, None);
    Ok(())
}

/// Range: `start + i·delta` for `i < max(ceil((limit − start) / delta), 0)`, folded.
pub(crate) fn range(im: &mut Importer, cx: &NodeCx) -> Result<(), OnnxError> {
    let out = im.main_output(cx)?;
    let mut scalars = Vec::with_capacity(3);
    for (i, what) in ["start", "limit", "delta"].into_iter().enumerate() {
        let t = im
            .const_input(cx, i, what)?
            .ok_or_else(|| cx.err(format!("required input {i} ({what}) is missing")))?;
        if t.numel() != 1 {
            return Err(cx.err(format!(
                "{what} must be a scalar, got shape {:?}",
                t.shape()
            )));
        }
        scalars.push(t);
    }
    let dtype = scalars[0].dtype();
    if scalars.iter().any(|t| t.dtype() != dtype) {
        return Err(cx.err("start, limit and delta must have the same type"));
    }
    let t = match dtype {
        DType::F32 => {
            let v: Vec<f32> = scalars.iter().map(|t| t.to_f32_vec()[0]).collect();
            let (start, limit, delta) = (v[0], v[1], v[2]);
            if delta == 0.0 {
                return Err(cx.err("delta is 0"));
            }
            let n = ((limit - start) / delta).ceil().max(0.0);
            if !n.is_finite() || n > (1u64 << 32) as f32 {
                return Err(cx.err(format!("range({start}, {limit}, {delta}) is too long")));
            }
            im.charge_value(cx, &out, &TensorType::new(dtype, vec![n as usize]))?;
            let data: Vec<f32> = (0..n as usize).map(|i| start + i as f32 * delta).collect();
            Tensor::from_f32(vec![data.len()], data)
        }
        DType::I32 | DType::I64 => {
            let v: Vec<i128> = scalars
                .iter()
                .map(|t| t.to_i64_vec().expect("integer tensor")[0] as i128)
                .collect();
            let (start, limit, delta) = (v[0], v[1], v[2]);
            if delta == 0 {
                return Err(cx.err("delta is 0"));
            }
            let span = limit - start;
            // ceil(span / delta) for either sign of delta.
            let n =
                (span / delta + i128::from(span % delta != 0 && (span > 0) == (delta > 0))).max(0);
            if n > 1 << 32 {
                return Err(cx.err(format!("range({start}, {limit}, {delta}) is too long")));
            }
            im.charge_value(cx, &out, &TensorType::new(dtype, vec![n as usize]))?;
            let values = (0..n).map(|i| start + i * delta);
            let len = n as usize;
            if dtype == DType::I32 {
                Tensor::new(
                    vec![len],
                    TensorData::I32(values.map(|v| v as i32).collect()),
                )
            } else {
                Tensor::new(
                    vec![len],
                    TensorData::I64(values.map(|v| v as i64).collect()),
                )
            }
        }
        other => return Err(cx.err(format!("Range of {other} is not supported (f32, i32, i64)"))),
    }
    .map_err(|e| cx.err(e.to_string()))?;
    im.bind_const(&out, t, None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::proto::tensor_proto::DataType;
    use crate::proto::AttributeProto;
    use crate::testutil::*;
    use kiln_ir::{DType, Graph, Op, PadMode, SliceAxis, Tensor, TensorData};

    fn one_node(
        opset: i64,
        dims: &[i64],
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
        inits: Vec<crate::proto::TensorProto>,
    ) -> Graph {
        let mut m = ModelBuilder::new(opset).input("x", dims);
        for t in inits {
            m = m.init(t);
        }
        m = m.node(named(node(op, inputs, outputs, attrs), "n"));
        for o in outputs {
            m = m.output(o);
        }
        m.import().unwrap()
    }

    #[test]
    fn shape_computations_fold_into_a_static_reshape() {
        // The PyTorch flatten idiom: y = x.reshape(x.shape[0], -1).
        let g = ModelBuilder::new(13)
            .input("x", &[2, 3, 4])
            .init(tensor_i64("zero", &[], &[0]))
            .init(tensor_i64("minus_one", &[1], &[-1]))
            .init(tensor_i64("axes", &[1], &[0]))
            .node(node("Shape", &["x"], &["shape"], vec![]))
            .node(node("Gather", &["shape", "zero"], &["batch"], vec![]))
            .node(node("Unsqueeze", &["batch", "axes"], &["batch1"], vec![]))
            .node(node(
                "Concat",
                &["batch1", "minus_one"],
                &["target"],
                vec![attr_int("axis", 0)],
            ))
            .node(node("Reshape", &["x", "target"], &["y"], vec![]))
            .output("y")
            .import()
            .unwrap();
        assert_eq!(compute_ops(&g), vec![&Op::Reshape { shape: vec![2, 12] }]);
        // Only x and the reshape survive dead-node removal.
        assert_eq!(g.node_count(), 2);
        let x = Tensor::from_f32(vec![2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap();
        let y = run(&g, std::slice::from_ref(&x)).remove(0);
        assert_eq!(y.shape(), &[2, 12]);
        assert_eq!(y.as_f32(), x.as_f32());
    }

    #[test]
    fn a_shape_input_computed_at_run_time_is_an_error() {
        let err = ModelBuilder::new(13)
            .input("x", &[2, 3])
            .input_typed("s", DataType::Int64, Some(&[Dim::Fixed(1)]))
            .node(named(node("Reshape", &["x", "s"], &["y"], vec![]), "r"))
            .output("y")
            .import()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node 'r' (Reshape, domain ai.onnx, opset 13): input 1 's' (shape) must be a constant, but it is \
             a graph input, known only at run time; kiln needs it known at import (static shapes)"
        );
        let err = ModelBuilder::new(13)
            .input("x", &[2, 3])
            .input_typed("s", DataType::Int64, Some(&[Dim::Fixed(1)]))
            .node(named(node("Identity", &["s"], &["t"], vec![]), "copy"))
            .node(named(node("Reshape", &["x", "t"], &["y"], vec![]), "r"))
            .output("y")
            .import()
            .unwrap_err();
        assert!(
            err.to_string().ends_with(
                "input 1 't' (shape) must be a constant, but it is computed at run time by node \
                 'copy' (identity); kiln needs it known at import (static shapes)"
            ),
            "{err}"
        );
    }

    #[test]
    fn reshape_resolves_zero_and_minus_one() {
        let g = one_node(
            13,
            &[2, 3, 4],
            "Reshape",
            &["x", "s"],
            &["y"],
            vec![],
            vec![tensor_i64("s", &[3], &[0, -1, 2])],
        );
        assert_eq!(
            output_op(&g, 0),
            &Op::Reshape {
                shape: vec![2, 6, 2]
            }
        );
        // allowzero (14+) makes 0 a literal size: only possible with an empty input.
        let g = one_node(
            14,
            &[0, 3],
            "Reshape",
            &["x", "s"],
            &["y"],
            vec![attr_int("allowzero", 1)],
            vec![tensor_i64("s", &[2], &[3, 0])],
        );
        assert_eq!(output_op(&g, 0), &Op::Reshape { shape: vec![3, 0] });
    }

    #[test]
    fn split_sizes_from_attribute_input_num_outputs_or_output_count() {
        let sizes = |g: &Graph| match output_op(g, 0) {
            Op::Split { axis, sizes } => (*axis, sizes.clone()),
            other => panic!("split expected, got {other:?}"),
        };
        let g = one_node(
            11,
            &[2, 7],
            "Split",
            &["x"],
            &["a", "b"],
            vec![attr_int("axis", -1), attr_ints("split", &[3, 4])],
            vec![],
        );
        assert_eq!(sizes(&g), (1, vec![3, 4]));
        let g = one_node(
            13,
            &[2, 7],
            "Split",
            &["x", "s"],
            &["a", "b"],
            vec![attr_int("axis", 1)],
            vec![tensor_i64("s", &[2], &[5, 2])],
        );
        assert_eq!(sizes(&g), (1, vec![5, 2]));
        // ceil(7 / 3) = 3: chunks 3, 3 and the remaining 1.
        let g = one_node(
            18,
            &[2, 7],
            "Split",
            &["x"],
            &["a", "b", "c"],
            vec![attr_int("axis", 1), attr_int("num_outputs", 3)],
            vec![],
        );
        assert_eq!(sizes(&g), (1, vec![3, 3, 1]));
        let g = one_node(13, &[6], "Split", &["x"], &["a", "b", "c"], vec![], vec![]);
        assert_eq!(sizes(&g), (0, vec![2, 2, 2]));
        assert_eq!(g.value_type(g.outputs()[2]).shape, vec![2]);
    }

    #[test]
    fn slice_attribute_and_input_forms_normalize_alike() {
        let want = Op::Slice {
            axes: vec![SliceAxis {
                axis: 1,
                start: 1,
                end: 4,
                step: 1,
            }],
        };
        let old = one_node(
            9,
            &[2, 4],
            "Slice",
            &["x"],
            &["y"],
            vec![
                attr_ints("starts", &[0, 1]),
                attr_ints("ends", &[1000, 1000]),
            ],
            vec![],
        );
        // Axis 0 is taken whole (0..2): dropped.
        assert_eq!(output_op(&old, 0), &want);
        let new = one_node(
            13,
            &[2, 4],
            "Slice",
            &["x", "st", "en", "ax"],
            &["y"],
            vec![],
            vec![
                tensor_i64("st", &[1], &[-3]),
                tensor_i64("en", &[1], &[i64::MAX]),
                tensor_i64("ax", &[1], &[-1]),
            ],
        );
        assert_eq!(output_op(&new, 0), &want);
        // Reverse the last axis: start at 3, run to -1 (before the front).
        let rev = one_node(
            13,
            &[2, 4],
            "Slice",
            &["x", "st", "en", "ax", "sp"],
            &["y"],
            vec![],
            vec![
                tensor_i64("st", &[1], &[-1]),
                tensor_i64("en", &[1], &[i64::MIN]),
                tensor_i64("ax", &[1], &[1]),
                tensor_i64("sp", &[1], &[-1]),
            ],
        );
        assert_eq!(
            output_op(&rev, 0),
            &Op::Slice {
                axes: vec![SliceAxis {
                    axis: 1,
                    start: 3,
                    end: -1,
                    step: -1
                }]
            }
        );
        let x = Tensor::from_f32(vec![2, 4], (0..8).map(|v| v as f32).collect()).unwrap();
        assert_eq!(
            run(&rev, &[x])[0].as_f32().unwrap(),
            &[3.0, 2.0, 1.0, 0.0, 7.0, 6.0, 5.0, 4.0]
        );
    }

    #[test]
    fn squeeze_and_unsqueeze_axes_move_from_attribute_to_input_at_opset_13() {
        let g = one_node(
            11,
            &[1, 3, 1],
            "Squeeze",
            &["x"],
            &["y"],
            vec![attr_ints("axes", &[-1])],
            vec![],
        );
        assert_eq!(output_op(&g, 0), &Op::Squeeze { axes: vec![2] });
        let g = one_node(
            13,
            &[1, 3, 1],
            "Squeeze",
            &["x", "a"],
            &["y"],
            vec![],
            vec![tensor_i64("a", &[1], &[0])],
        );
        assert_eq!(output_op(&g, 0), &Op::Squeeze { axes: vec![0] });
        let g = one_node(13, &[1, 3, 1], "Squeeze", &["x"], &["y"], vec![], vec![]);
        assert_eq!(output_op(&g, 0), &Op::Squeeze { axes: vec![0, 2] });
        // Unsqueeze axes index the output (rank 2 + 2 = 4): -1 is 3.
        let g = one_node(
            11,
            &[2, 3],
            "Unsqueeze",
            &["x"],
            &["y"],
            vec![attr_ints("axes", &[-1, 0])],
            vec![],
        );
        assert_eq!(output_op(&g, 0), &Op::Unsqueeze { axes: vec![0, 3] });
        assert_eq!(g.value_type(g.outputs()[0]).shape, vec![1, 2, 3, 1]);
        let g = one_node(
            13,
            &[2, 3],
            "Unsqueeze",
            &["x", "a"],
            &["y"],
            vec![],
            vec![tensor_i64("a", &[2], &[-1, 0])],
        );
        assert_eq!(output_op(&g, 0), &Op::Unsqueeze { axes: vec![0, 3] });
    }

    #[test]
    fn pad_attribute_input_and_axes_forms() {
        let want = Op::Pad {
            mode: PadMode::Constant,
            pads: vec![0, 1, 0, 2],
            value: 1.5,
        };
        let old = one_node(
            10,
            &[2, 3],
            "Pad",
            &["x"],
            &["y"],
            vec![attr_ints("pads", &[0, 1, 0, 2]), attr_float("value", 1.5)],
            vec![],
        );
        assert_eq!(output_op(&old, 0), &want);
        let new = one_node(
            11,
            &[2, 3],
            "Pad",
            &["x", "p", "v"],
            &["y"],
            vec![],
            vec![
                tensor_i64("p", &[4], &[0, 1, 0, 2]),
                tensor_f32("v", &[], &[1.5]),
            ],
        );
        assert_eq!(output_op(&new, 0), &want);
        let axes = one_node(
            18,
            &[2, 3],
            "Pad",
            &["x", "p", "v", "a"],
            &["y"],
            vec![],
            vec![
                tensor_i64("p", &[2], &[1, 2]),
                tensor_f32("v", &[], &[1.5]),
                tensor_i64("a", &[1], &[-1]),
            ],
        );
        assert_eq!(output_op(&axes, 0), &want);
        let reflect = one_node(
            11,
            &[2, 3],
            "Pad",
            &["x", "p"],
            &["y"],
            vec![attr_str("mode", "reflect")],
            vec![tensor_i64("p", &[4], &[0, 1, 0, 1])],
        );
        assert!(
            matches!(output_op(&reflect, 0), Op::Pad { mode: PadMode::Reflect, value, .. } if *value == 0.0)
        );
    }

    #[test]
    fn constant_producers_become_constants() {
        let g = ModelBuilder::new(13)
            .node(node(
                "Constant",
                &[],
                &["f"],
                vec![attr_floats("value_floats", &[1.0, 2.0])],
            ))
            .node(node(
                "Constant",
                &[],
                &["i"],
                vec![attr_int("value_int", 7)],
            ))
            .node(node(
                "Constant",
                &[],
                &["t"],
                vec![attr_tensor("value", tensor_i64("", &[2], &[3, 4]))],
            ))
            .node(node(
                "ConstantOfShape",
                &["t"],
                &["fill"],
                vec![attr_tensor(
                    "value",
                    tensor_raw("", DataType::Int32, &[1], 9i32.to_le_bytes().to_vec()),
                )],
            ))
            .node(node("ConstantOfShape", &["t"], &["zeros"], vec![]))
            .output("f")
            .output("i")
            .output("fill")
            .output("zeros")
            .import()
            .unwrap();
        let c = |i: usize| g.const_tensor(g.outputs()[i]).expect("a constant output");
        assert_eq!(c(0).as_f32().unwrap(), &[1.0, 2.0]);
        assert_eq!((c(1).shape(), c(1).as_i64().unwrap()), (&[][..], &[7][..]));
        assert_eq!(c(2).shape(), &[3, 4]);
        assert_eq!(c(2).data(), &TensorData::I32(vec![9; 12]));
        assert_eq!(c(3).data(), &TensorData::F32(vec![0.0; 12]));
        let err = ModelBuilder::new(13)
            .node(named(
                node(
                    "Constant",
                    &[],
                    &["s"],
                    vec![attr_str("value_string", "hi")],
                ),
                "k",
            ))
            .output("s")
            .import()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("value_string constants are not supported"),
            "{err}"
        );
    }

    #[test]
    fn shape_with_start_and_end() {
        let g = one_node(
            15,
            &[2, 3, 4, 5],
            "Shape",
            &["x"],
            &["s"],
            vec![attr_int("start", 1), attr_int("end", -1)],
            vec![],
        );
        assert_eq!(
            g.const_tensor(g.outputs()[0]).unwrap().as_i64().unwrap(),
            &[3, 4]
        );
        // Before opset 15 start/end do not exist: the whole shape.
        let g = one_node(
            13,
            &[2, 3],
            "Shape",
            &["x"],
            &["s"],
            vec![attr_int("start", 1)],
            vec![],
        );
        assert_eq!(
            g.const_tensor(g.outputs()[0]).unwrap().as_i64().unwrap(),
            &[2, 3]
        );
    }

    #[test]
    fn range_folds_for_integers_and_floats() {
        let range = |inits: Vec<crate::proto::TensorProto>| {
            let mut m = ModelBuilder::new(13);
            for t in inits {
                m = m.init(t);
            }
            let g = m
                .node(node("Range", &["a", "b", "c"], &["r"], vec![]))
                .output("r")
                .import()
                .unwrap();
            g.const_tensor(g.outputs()[0]).unwrap().clone()
        };
        // ceil((1 - 10) / -3) = 3 elements: 10, 7, 4.
        let r = range(vec![
            tensor_i64("a", &[], &[10]),
            tensor_i64("b", &[], &[1]),
            tensor_i64("c", &[], &[-3]),
        ]);
        assert_eq!(r.as_i64().unwrap(), &[10, 7, 4]);
        // ceil((2 - 0) / 0.5) = 4 elements.
        let r = range(vec![
            tensor_f32("a", &[], &[0.0]),
            tensor_f32("b", &[], &[2.0]),
            tensor_f32("c", &[], &[0.5]),
        ]);
        assert_eq!(r.as_f32().unwrap(), &[0.0, 0.5, 1.0, 1.5]);
        assert_eq!(r.dtype(), DType::F32);
        // An empty range.
        let r = range(vec![
            tensor_i64("a", &[], &[5]),
            tensor_i64("b", &[], &[1]),
            tensor_i64("c", &[], &[1]),
        ]);
        assert_eq!(r.shape(), &[0]);
    }
}
