//! Shape and type inference: the output types of every op from its input types, following
//! ONNX's inference rules on the IR's resolved attributes. `Graph::add_node` and the verifier
//! call it; the `Err` string says what was expected and what was found.
//!
//! Two kiln-specific rules on top of ONNX:
//! - ops with a free output type (`quantize`, `qconv`, `qmatmul`, see
//!   [`Op::has_free_output_type`]) infer only their output *shape*; the dtype is a `u8`
//!   placeholder and the quantization `None`. The verifier checks their declared dtype and
//!   quantization instead.
//! - quantization parameters follow pure data-movement ops (reshape, transpose, slice, gather,
//!   max-pool, ...): a quantized type says how to read its integers, and moving integers around
//!   does not change how to read them. Per-axis parameters move with their axis, or the op is an
//!   error when the axis cannot be followed. Arithmetic on quantized integers yields `None`.

use crate::dtype::DType;
use crate::op::{
    Activation, ConvAttrs, ConvTransposeAttrs, GemmAttrs, Op, PadMode, PoolAttrs, ResizeAttrs,
    ResizeMode, SliceAxis,
};
use crate::tensor::checked_numel;
use crate::types::{Quant, TensorType};

const FLOATS: &[DType] = &[DType::F32, DType::F16];
const NUMERIC: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::I8,
    DType::U8,
    DType::I32,
    DType::I64,
];
/// Storage types of quantized activations and weights (`qconv`, `conv_integer`, ...).
const INT8: &[DType] = &[DType::I8, DType::U8];
/// ONNX MatMul / Gemm / ReduceMean type constraints restricted to kiln's dtypes.
const FLOAT_OR_WIDE_INT: &[DType] = &[DType::F32, DType::F16, DType::I32, DType::I64];
const INDEX_TYPES: &[DType] = &[DType::I32, DType::I64];

/// Output types of `op` applied to values of types `inputs`.
///
/// `Input` and `Const` have no inference (their types come from the graph's input list and
/// the constant pool) and return an error. For `quantize`, `qconv` and `qmatmul` the result
/// is the output shape with a `u8` placeholder dtype and no quantization.
pub fn infer_types(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let outputs = match op {
        Op::Input { index } => {
            return Err(format!(
            "graph input {index} has no type inference: its type is the declared graph input type"
        ))
        }
        Op::Const(id) => {
            return Err(format!(
                "constant @c{} has no type inference: its type is the constant pool entry's",
                id.0
            ))
        }
        Op::Conv(attrs) => infer_conv(attrs, inputs)?,
        Op::ConvTranspose(attrs) => infer_conv_transpose(attrs, inputs)?,
        Op::BatchNorm { .. } => infer_batch_norm(inputs)?,
        Op::Activation(act) => infer_activation(act, inputs)?,
        Op::Binary(_) => infer_binary(inputs)?,
        Op::Sum => infer_sum(inputs)?,
        Op::MatMul => infer_matmul(inputs)?,
        Op::Gemm(attrs) => infer_gemm(attrs, inputs)?,
        Op::MaxPool(attrs) => infer_max_pool(attrs, inputs)?,
        Op::AveragePool(attrs) => infer_average_pool(attrs, inputs)?,
        Op::GlobalAveragePool => infer_global_pool(inputs, FLOATS, false)?,
        Op::GlobalMaxPool => infer_global_pool(
            inputs,
            &[DType::F32, DType::F16, DType::I8, DType::U8],
            true,
        )?,
        Op::Lrn { size, .. } => infer_lrn(*size, inputs)?,
        Op::Concat { axis } => infer_concat(*axis, inputs)?,
        Op::Split { axis, sizes } => infer_split(*axis, sizes, inputs)?,
        Op::Slice { axes } => infer_slice(axes, inputs)?,
        Op::Reshape { shape } => infer_reshape(shape, inputs)?,
        Op::Flatten { axis } => infer_flatten(*axis, inputs)?,
        Op::Transpose { perm } => infer_transpose(perm, inputs)?,
        Op::Squeeze { axes } => infer_squeeze(axes, inputs)?,
        Op::Unsqueeze { axes } => infer_unsqueeze(axes, inputs)?,
        Op::Pad { mode, pads, value } => infer_pad(*mode, pads, *value, inputs)?,
        Op::Resize(attrs) => infer_resize(attrs, inputs)?,
        Op::Softmax { axis, .. } => infer_softmax(*axis, inputs)?,
        Op::ReduceMean { axes, keepdims } => infer_reduce_mean(axes, *keepdims, inputs)?,
        Op::Identity => infer_identity(inputs)?,
        Op::Dropout => infer_dropout(inputs)?,
        Op::Cast { to } => infer_cast(*to, inputs)?,
        Op::Gather { axis } => infer_gather(*axis, inputs)?,
        Op::Quantize => infer_quantize(inputs)?,
        Op::Dequantize => infer_dequantize(inputs)?,
        Op::QConv(attrs) => infer_qconv(attrs, inputs)?,
        Op::QMatMul => infer_qmatmul(inputs)?,
        Op::ConvInteger(attrs) => infer_conv_integer(attrs, inputs)?,
        Op::MatMulInteger => infer_matmul_integer(inputs)?,
        Op::DynamicQuantize => infer_dynamic_quantize(inputs)?,
    };
    for out in &outputs {
        if checked_numel(&out.shape).is_none() {
            return Err(format!(
                "output shape {:?} has more elements than fit in memory",
                out.shape
            ));
        }
    }
    Ok(outputs)
}

// ---------------------------------------------------------------------------------------
// Argument checks shared by every op
// ---------------------------------------------------------------------------------------

/// `names` lists every input, required ones first; optional ones are written `[b]`.
fn check_arity(inputs: &[&TensorType], names: &[&str], required: usize) -> Result<(), String> {
    let n = inputs.len();
    if n >= required && n <= names.len() {
        return Ok(());
    }
    let listed: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if i < required {
                name.to_string()
            } else {
                format!("[{name}]")
            }
        })
        .collect();
    let count = if required == names.len() {
        format!("{required}")
    } else if names.len() == required + 1 {
        format!("{required} or {}", names.len())
    } else {
        format!("{required} to {}", names.len())
    };
    let noun = if names.len() == 1 { "input" } else { "inputs" };
    Err(format!(
        "expects {count} {noun} ({}), got {n}",
        listed.join(", ")
    ))
}

/// "f32 or f16", "f32, f16, i8 or u8".
fn dtype_list(allowed: &[DType]) -> String {
    let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn check_dtype(ty: &TensorType, slot: usize, name: &str, allowed: &[DType]) -> Result<(), String> {
    if allowed.contains(&ty.dtype) {
        Ok(())
    } else {
        Err(format!(
            "input {slot} ({name}) must be {}, got {ty}",
            dtype_list(allowed)
        ))
    }
}

fn check_same_dtype(
    a: &TensorType,
    a_desc: (usize, &str),
    b: &TensorType,
    b_desc: (usize, &str),
) -> Result<(), String> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        Err(format!(
            "input {} ({}) must have the dtype of input {} ({}): {a} vs {b}",
            b_desc.0, b_desc.1, a_desc.0, a_desc.1
        ))
    }
}

fn check_axis(axis: usize, rank: usize, what: &str, ty: &TensorType) -> Result<(), String> {
    if axis < rank {
        Ok(())
    } else {
        Err(format!(
            "{what} {axis} is out of range for rank {rank} input {ty}"
        ))
    }
}

/// Axes must be distinct and below `rank`.
fn check_axes(axes: &[usize], rank: usize, what: &str, ty_desc: &str) -> Result<(), String> {
    for (i, &a) in axes.iter().enumerate() {
        if a >= rank {
            return Err(format!(
                "{what} {a} is out of range for rank {rank} ({ty_desc})"
            ));
        }
        if axes[..i].contains(&a) {
            return Err(format!("{what} {a} is listed twice in {axes:?}"));
        }
    }
    Ok(())
}

fn product(dims: &[usize]) -> Result<usize, String> {
    checked_numel(dims)
        .ok_or_else(|| format!("shape {dims:?} has more elements than fit in memory"))
}

/// Unquantized output of the given dtype and shape.
fn plain(dtype: DType, shape: Vec<usize>) -> TensorType {
    TensorType::new(dtype, shape)
}

/// Which dtypes an elementwise activation accepts (ONNX type constraints restricted to
/// kiln's dtypes: Relu adds signed integers, Clip every numeric type, the rest are float-only).
fn activation_dtypes(act: &Activation) -> &'static [DType] {
    match act {
        Activation::Relu => &[DType::F32, DType::F16, DType::I8, DType::I32, DType::I64],
        Activation::Clip { .. } => NUMERIC,
        Activation::LeakyRelu { .. }
        | Activation::Sigmoid
        | Activation::Tanh
        | Activation::HardSigmoid { .. }
        | Activation::HardSwish => FLOATS,
    }
}

/// A fused activation must accept the dtype of the op's output.
fn check_fused_activation(act: Option<&Activation>, dtype: DType) -> Result<(), String> {
    if let Some(act) = act {
        let allowed = activation_dtypes(act);
        if !allowed.contains(&dtype) {
            return Err(format!(
                "fused activation {} needs a {} output, this op produces {dtype}",
                act.name(),
                dtype_list(allowed)
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Quantization through data movement
// ---------------------------------------------------------------------------------------

/// Quantization of the output of a data-movement op whose output axis for input axis `a` is
/// `new_axis(a)` (`None`: the axis is mixed with others or disappears). Per-tensor
/// parameters pass unchanged. Per-axis parameters with a single entry become per-tensor when
/// their axis cannot be followed: every element then has that one scale, wherever it moves.
fn move_quant(
    quant: Option<&Quant>,
    what: &str,
    new_axis: impl FnOnce(usize) -> Option<usize>,
) -> Result<Option<Quant>, String> {
    match quant {
        None => Ok(None),
        Some(Quant::PerTensor { .. }) => Ok(quant.cloned()),
        Some(Quant::PerAxis {
            axis,
            scales,
            zero_points,
        }) => match new_axis(*axis) {
            Some(a) => Ok(Some(Quant::PerAxis {
                axis: a,
                scales: scales.clone(),
                zero_points: zero_points.clone(),
            })),
            None if scales.len() == 1 && zero_points.len() == 1 => {
                Ok(Some(Quant::per_tensor(scales[0], zero_points[0])))
            }
            None => Err(format!(
                "per-axis quantization along axis {axis} cannot follow {what}"
            )),
        },
    }
}

/// Per-axis parameters restricted to the indices `picked` of their axis (slice, split).
fn pick_quant_entries(quant: &Quant, picked: impl Iterator<Item = usize>) -> Quant {
    match quant {
        Quant::PerTensor { .. } => quant.clone(),
        Quant::PerAxis {
            axis,
            scales,
            zero_points,
        } => {
            let (scales, zero_points) = picked.map(|i| (scales[i], zero_points[i])).unzip();
            Quant::PerAxis {
                axis: *axis,
                scales,
                zero_points,
            }
        }
    }
}

/// Where axis `axis` of `from` lands in `to` when a tensor is reshaped: the output axis with
/// the same size and the same number of elements before it (then every index along it
/// addresses the same slab of elements).
fn reshape_axis(from: &[usize], to: &[usize], axis: usize) -> Option<usize> {
    let before = checked_numel(from.get(..axis)?)?;
    let size = *from.get(axis)?;
    let mut running = 1usize;
    for (j, &d) in to.iter().enumerate() {
        if running == before && d == size {
            return Some(j);
        }
        running = running.checked_mul(d)?;
    }
    None
}

// ---------------------------------------------------------------------------------------
// Convolution and pooling geometry
// ---------------------------------------------------------------------------------------

/// Checks the lengths and ranges of window attributes; returns the number of spatial dims.
fn check_window(
    kernel: &[usize],
    strides: &[usize],
    pads: &[usize],
    dilations: &[usize],
) -> Result<usize, String> {
    let spatial = kernel.len();
    if spatial == 0 {
        return Err("kernel has no spatial dimensions".into());
    }
    if strides.len() != spatial || dilations.len() != spatial || pads.len() != 2 * spatial {
        return Err(format!(
            "a {spatial}-D kernel needs {spatial} strides, {spatial} dilations and {} pads, got strides {strides:?}, dilations {dilations:?}, pads {pads:?}",
            2 * spatial
        ));
    }
    if kernel.contains(&0) {
        return Err(format!("kernel {kernel:?} has a zero-sized dimension"));
    }
    if strides.contains(&0) {
        return Err(format!("strides {strides:?} must all be ≥ 1"));
    }
    if dilations.contains(&0) {
        return Err(format!("dilations {dilations:?} must all be ≥ 1"));
    }
    Ok(spatial)
}

/// `(k − 1)·d + 1`: the extent of a dilated kernel.
fn dilated_extent(kernel: usize, dilation: usize) -> Result<usize, String> {
    (kernel - 1)
        .checked_mul(dilation)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(|| format!("dilated kernel extent ({kernel} − 1)·{dilation} + 1 overflows"))
}

/// Output length of a sliding window along one spatial axis (ONNX Conv / pool formula):
/// `floor((in + pb + pe − ((k−1)·d+1)) / s) + 1`, or with `ceil_mode` the ceiling, minus one
/// when the last window would start past the input and its left pad (ONNX's rule, so that
/// every window reads at least one position inside the padded input).
#[allow(clippy::too_many_arguments)]
fn window_output_len(
    spatial_axis: usize,
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
    ceil_mode: bool,
) -> Result<usize, String> {
    let extent = dilated_extent(kernel, dilation)?;
    let padded = input
        .checked_add(pad_begin)
        .and_then(|v| v.checked_add(pad_end))
        .ok_or_else(|| format!("spatial axis {spatial_axis}: padded size overflows"))?;
    if padded < extent {
        return Err(format!(
            "spatial axis {spatial_axis}: padded input {input} + {pad_begin} + {pad_end} = {padded} is smaller than the dilated kernel extent {extent}"
        ));
    }
    let span = padded - extent;
    let mut out = if ceil_mode {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    if ceil_mode {
        // An overflowing start offset is certainly past the input.
        let last_start = (out - 1).checked_mul(stride);
        if last_start.is_none_or(|s| s >= input + pad_begin) {
            out -= 1;
        }
    }
    if out == 0 {
        return Err(format!(
            "spatial axis {spatial_axis}: output would be empty (input {input}, kernel extent {extent}, stride {stride})"
        ));
    }
    Ok(out)
}

/// Ranks of x and w, groups ≥ 1 and w's kernel dims, shared by conv and conv_transpose.
fn check_conv_operands(
    what: &str,
    spatial: usize,
    kernel: &[usize],
    groups: usize,
    x: &TensorType,
    w: &TensorType,
) -> Result<(), String> {
    if x.rank() != spatial + 2 {
        return Err(format!(
            "input 0 (x) must be rank {} for a {spatial}-D {what}, got {x}",
            spatial + 2
        ));
    }
    if w.rank() != spatial + 2 {
        return Err(format!(
            "input 1 (w) must be rank {} for a {spatial}-D {what}, got {w}",
            spatial + 2
        ));
    }
    if groups == 0 {
        return Err("groups must be ≥ 1, got 0".into());
    }
    if w.shape[2..] != kernel[..] {
        return Err(format!(
            "input 1 (w) {w} has kernel dims {:?}, the kernel attribute says {kernel:?}",
            &w.shape[2..],
        ));
    }
    Ok(())
}

/// `[N, C_out, out...]` of Conv / QConv / ConvInteger, checking x `[N, C_in, in...]` against
/// weight `[C_out, C_in/groups, k...]`.
fn conv_output_shape(
    attrs: &ConvAttrs,
    x: &TensorType,
    w: &TensorType,
) -> Result<Vec<usize>, String> {
    let spatial = check_window(&attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations)?;
    check_conv_operands("conv", spatial, &attrs.kernel, attrs.groups, x, w)?;
    let groups = attrs.groups;
    let c_in = x.shape[1];
    if !c_in.is_multiple_of(groups) {
        return Err(format!(
            "input channels {c_in} of x {x} are not divisible by groups = {groups}"
        ));
    }
    if w.shape[1] != c_in / groups {
        return Err(format!(
            "input 1 (w) {w} must have C_in/groups = {c_in}/{groups} = {} on axis 1, got {}",
            c_in / groups,
            w.shape[1]
        ));
    }
    let c_out = w.shape[0];
    if !c_out.is_multiple_of(groups) {
        return Err(format!(
            "output channels {c_out} of w {w} are not divisible by groups = {groups}"
        ));
    }
    let mut shape = vec![x.shape[0], c_out];
    for i in 0..spatial {
        shape.push(window_output_len(
            i,
            x.shape[i + 2],
            attrs.kernel[i],
            attrs.strides[i],
            attrs.dilations[i],
            attrs.pads[i],
            attrs.pads[spatial + i],
            false,
        )?);
    }
    Ok(shape)
}

/// A 1-D per-output-channel bias `[C_out]`.
fn check_bias(b: &TensorType, slot: usize, c_out: usize) -> Result<(), String> {
    if b.shape != [c_out] {
        return Err(format!(
            "input {slot} (b) must have shape [{c_out}] (one value per output channel), got {b}"
        ));
    }
    Ok(())
}

fn infer_conv(attrs: &ConvAttrs, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x", "w", "b", "residual"], 2)?;
    let (x, w) = (inputs[0], inputs[1]);
    check_dtype(x, 0, "x", FLOATS)?;
    check_same_dtype(x, (0, "x"), w, (1, "w"))?;
    let shape = conv_output_shape(attrs, x, w)?;
    if let Some(b) = inputs.get(2) {
        check_same_dtype(x, (0, "x"), b, (2, "b"))?;
        check_bias(b, 2, shape[1])?;
    }
    // The fused residual (fuse-residual) is added before the activation, elementwise: it
    // must have exactly the output's type, no broadcasting.
    if let Some(r) = inputs.get(3) {
        if r.dtype != x.dtype || r.shape != shape {
            return Err(format!(
                "input 3 (residual) must have the output's type {}{:?}, got {r}",
                x.dtype, shape
            ));
        }
    }
    check_fused_activation(attrs.act.as_ref(), x.dtype)?;
    Ok(vec![plain(x.dtype, shape)])
}

fn infer_conv_transpose(
    attrs: &ConvTransposeAttrs,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x", "w", "b"], 2)?;
    let (x, w) = (inputs[0], inputs[1]);
    check_dtype(x, 0, "x", FLOATS)?;
    check_same_dtype(x, (0, "x"), w, (1, "w"))?;
    let spatial = check_window(&attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations)?;
    if attrs.output_padding.len() != spatial {
        return Err(format!(
            "a {spatial}-D conv_transpose needs {spatial} output_padding values, got {:?}",
            attrs.output_padding
        ));
    }
    check_conv_operands("conv_transpose", spatial, &attrs.kernel, attrs.groups, x, w)?;
    let groups = attrs.groups;
    let c_in = x.shape[1];
    if w.shape[0] != c_in {
        return Err(format!(
            "input 1 (w) {w} must have C_in = {c_in} on axis 0 (layout [C_in, C_out/groups, k...])"
        ));
    }
    if !c_in.is_multiple_of(groups) {
        return Err(format!(
            "input channels {c_in} of x {x} are not divisible by groups = {groups}"
        ));
    }
    let c_out = w.shape[1]
        .checked_mul(groups)
        .ok_or_else(|| format!("C_out = {}·{groups} overflows", w.shape[1]))?;
    let mut shape = vec![x.shape[0], c_out];
    for i in 0..spatial {
        // ONNX: s·(in − 1) + output_padding + ((k − 1)·d + 1) − pb − pe; i128 cannot overflow
        // on usize operands of this size, and a non-positive result is an error.
        let extent = dilated_extent(attrs.kernel[i], attrs.dilations[i])? as i128;
        let input = x.shape[i + 2] as i128;
        let len = attrs.strides[i] as i128 * (input - 1) + attrs.output_padding[i] as i128 + extent
            - attrs.pads[i] as i128
            - attrs.pads[spatial + i] as i128;
        if len < 1 {
            return Err(format!(
                "spatial axis {i}: output length {}·({} − 1) + {} + {extent} − {} − {} = {len} must be ≥ 1",
                attrs.strides[i],
                x.shape[i + 2],
                attrs.output_padding[i],
                attrs.pads[i],
                attrs.pads[spatial + i]
            ));
        }
        shape.push(
            usize::try_from(len)
                .map_err(|_| format!("spatial axis {i}: output length {len} overflows"))?,
        );
    }
    if let Some(b) = inputs.get(2) {
        check_same_dtype(x, (0, "x"), b, (2, "b"))?;
        check_bias(b, 2, c_out)?;
    }
    check_fused_activation(attrs.act.as_ref(), x.dtype)?;
    Ok(vec![plain(x.dtype, shape)])
}

fn check_pool(attrs: &PoolAttrs, x: &TensorType, op: &str) -> Result<Vec<usize>, String> {
    let spatial = check_window(&attrs.kernel, &attrs.strides, &attrs.pads, &attrs.dilations)?;
    if x.rank() != spatial + 2 {
        return Err(format!(
            "input 0 (x) must be rank {} for a {spatial}-D {op}, got {x}",
            spatial + 2
        ));
    }
    if attrs.storage_order > 1 {
        return Err(format!(
            "storage_order must be 0 (row major) or 1 (column major), got {}",
            attrs.storage_order
        ));
    }
    // ONNX's shape inference allows it, but a pad as large as the kernel yields windows that
    // lie entirely in padding (max of nothing, average over zero elements); onnxruntime
    // rejects such models ("Pad should be smaller than kernel"), and so does kiln.
    for i in 0..spatial {
        let (pb, pe) = (attrs.pads[i], attrs.pads[spatial + i]);
        if pb >= attrs.kernel[i] || pe >= attrs.kernel[i] {
            return Err(format!(
                "spatial axis {i}: pads ({pb}, {pe}) must be smaller than the kernel size {}",
                attrs.kernel[i]
            ));
        }
    }
    let mut shape = vec![x.shape[0], x.shape[1]];
    for i in 0..spatial {
        shape.push(window_output_len(
            i,
            x.shape[i + 2],
            attrs.kernel[i],
            attrs.strides[i],
            attrs.dilations[i],
            attrs.pads[i],
            attrs.pads[spatial + i],
            attrs.ceil_mode,
        )?);
    }
    Ok(shape)
}

fn infer_max_pool(attrs: &PoolAttrs, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", &[DType::F32, DType::F16, DType::I8, DType::U8])?;
    let shape = check_pool(attrs, x, "max_pool")?;
    // The max of integers that share one scale is the max of their real values, so
    // batch- and channel-axis parameters survive; spatial-axis ones would mix scales.
    let quant = move_quant(x.quant.as_ref(), "max_pool over spatial axes", |a| {
        (a < 2).then_some(a)
    })?;
    Ok(vec![
        TensorType {
            dtype: x.dtype,
            shape: shape.clone(),
            quant,
        },
        plain(DType::I64, shape),
    ])
}

fn infer_average_pool(
    attrs: &PoolAttrs,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", FLOATS)?;
    let shape = check_pool(attrs, x, "average_pool")?;
    Ok(vec![plain(x.dtype, shape)])
}

fn infer_global_pool(
    inputs: &[&TensorType],
    dtypes: &[DType],
    is_max: bool,
) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", dtypes)?;
    if x.rank() < 2 {
        return Err(format!(
            "input 0 (x) must have rank ≥ 2 ([N, C, ...]), got {x}"
        ));
    }
    let mut shape = x.shape.clone();
    shape[2..].fill(1);
    let quant = if is_max {
        move_quant(x.quant.as_ref(), "global_max_pool over spatial axes", |a| {
            (a < 2).then_some(a)
        })?
    } else {
        None
    };
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape,
        quant,
    }])
}

// ---------------------------------------------------------------------------------------
// Elementwise and normalization
// ---------------------------------------------------------------------------------------

/// `shape` without its leading unit dims: shapes that agree on this hold the same
/// elements in the same order (row-major).
pub fn trimmed_shape(shape: &[usize]) -> &[usize] {
    let lead = shape.iter().take_while(|&&d| d == 1).count();
    &shape[lead..]
}

/// numpy broadcasting: dims aligned from the right, equal or one of them 1; `None` when
/// the shapes do not broadcast. (The kernels that broadcast call this too.)
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, slot) in out.iter_mut().enumerate() {
        // dim `i` counted from the left of the output; missing leading dims are 1
        let da = (i + a.len()).checked_sub(rank).map_or(1, |j| a[j]);
        let db = (i + b.len()).checked_sub(rank).map_or(1, |j| b[j]);
        *slot = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// ONNX unidirectional broadcasting: `from` can be broadcast to exactly `to`.
fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1)
}

fn infer_batch_norm(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    const NAMES: [&str; 5] = ["x", "scale", "bias", "mean", "var"];
    check_arity(inputs, &NAMES, 5)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", FLOATS)?;
    // ONNX: [N, C, D...]; a 1-D input of size N has C = 1.
    let channels = match x.rank() {
        0 => return Err(format!("input 0 (x) must have rank ≥ 1, got {x}")),
        1 => 1,
        _ => x.shape[1],
    };
    for (slot, name) in NAMES.iter().enumerate().skip(1) {
        let p = inputs[slot];
        check_dtype(p, slot, name, FLOATS)?;
        if p.shape != [channels] {
            return Err(format!(
                "input {slot} ({name}) must have shape [{channels}] (one value per channel of x {x}), got {p}"
            ));
        }
    }
    Ok(vec![plain(x.dtype, x.shape.clone())])
}

fn infer_activation(act: &Activation, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", activation_dtypes(act))?;
    // Applied to raw integers, an activation is arithmetic on the stored values, not on the
    // real values they encode: the result is not quantized with x's parameters.
    Ok(vec![plain(x.dtype, x.shape.clone())])
}

fn infer_binary(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["a", "b"], 2)?;
    let (a, b) = (inputs[0], inputs[1]);
    check_dtype(a, 0, "a", NUMERIC)?;
    check_same_dtype(a, (0, "a"), b, (1, "b"))?;
    let shape = broadcast_shapes(&a.shape, &b.shape)
        .ok_or_else(|| format!("shapes of a {a} and b {b} do not broadcast (numpy rules)"))?;
    Ok(vec![plain(a.dtype, shape)])
}

fn infer_sum(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let first = inputs
        .first()
        .ok_or_else(|| "expects at least 1 input (x0, x1, ...), got 0".to_string())?;
    check_dtype(first, 0, "x0", FLOATS)?;
    let mut shape = first.shape.clone();
    for (slot, x) in inputs.iter().enumerate().skip(1) {
        check_same_dtype(first, (0, "x0"), x, (slot, &format!("x{slot}")))?;
        shape = broadcast_shapes(&shape, &x.shape).ok_or_else(|| {
            format!(
                "input {slot} {x} does not broadcast with the preceding inputs' shape {shape:?}"
            )
        })?;
    }
    Ok(vec![plain(first.dtype, shape)])
}

fn infer_lrn(size: usize, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", FLOATS)?;
    if x.rank() < 2 {
        return Err(format!(
            "input 0 (x) must have rank ≥ 2 ([N, C, ...]), got {x}"
        ));
    }
    if size == 0 {
        return Err("size must be ≥ 1, got 0".into());
    }
    Ok(vec![plain(x.dtype, x.shape.clone())])
}

fn infer_softmax(axis: usize, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", FLOATS)?;
    check_axis(axis, x.rank(), "axis", x)?;
    Ok(vec![plain(x.dtype, x.shape.clone())])
}

/// The importer resolves ONNX's empty-axes rules (`noop_with_empty_axes`), so the axes are
/// taken as given: an empty list reduces nothing.
fn infer_reduce_mean(
    axes: &[usize],
    keepdims: bool,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", FLOAT_OR_WIDE_INT)?;
    check_axes(axes, x.rank(), "axis", &x.to_string())?;
    let shape = if keepdims {
        let mut s = x.shape.clone();
        for &a in axes {
            s[a] = 1;
        }
        s
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    Ok(vec![plain(x.dtype, shape)])
}

// ---------------------------------------------------------------------------------------
// Matrix products
// ---------------------------------------------------------------------------------------

/// numpy matmul: a 1-D `a` is a row `[1, K]`, a 1-D `b` a column `[K, 1]` (the promoted
/// dims are removed from the result); leading dims broadcast.
fn matmul_shape(a: &TensorType, b: &TensorType) -> Result<Vec<usize>, String> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err(format!(
            "matmul operands must have rank ≥ 1, got a {a} and b {b}"
        ));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, ka) = if ra == 1 {
        (None, a.shape[0])
    } else {
        (Some(a.shape[ra - 2]), a.shape[ra - 1])
    };
    let (kb, n) = if rb == 1 {
        (b.shape[0], None)
    } else {
        (b.shape[rb - 2], Some(b.shape[rb - 1]))
    };
    if ka != kb {
        return Err(format!(
            "inner dimensions differ: a {a} has K = {ka}, b {b} has K = {kb}"
        ));
    }
    let batch_a = &a.shape[..ra.saturating_sub(2)];
    let batch_b = &b.shape[..rb.saturating_sub(2)];
    let mut shape = broadcast_shapes(batch_a, batch_b).ok_or_else(|| {
        format!("batch dimensions of a {a} and b {b} do not broadcast (numpy rules)")
    })?;
    shape.extend(m);
    shape.extend(n);
    Ok(shape)
}

fn infer_matmul(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["a", "b"], 2)?;
    let (a, b) = (inputs[0], inputs[1]);
    check_dtype(a, 0, "a", FLOAT_OR_WIDE_INT)?;
    check_same_dtype(a, (0, "a"), b, (1, "b"))?;
    Ok(vec![plain(a.dtype, matmul_shape(a, b)?)])
}

fn infer_gemm(attrs: &GemmAttrs, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["a", "b", "c"], 2)?;
    let (a, b) = (inputs[0], inputs[1]);
    check_dtype(a, 0, "a", FLOAT_OR_WIDE_INT)?;
    check_same_dtype(a, (0, "a"), b, (1, "b"))?;
    if a.rank() != 2 {
        return Err(format!("input 0 (a) must be rank 2, got {a}"));
    }
    if b.rank() != 2 {
        return Err(format!("input 1 (b) must be rank 2, got {b}"));
    }
    let (m, ka) = if attrs.trans_a {
        (a.shape[1], a.shape[0])
    } else {
        (a.shape[0], a.shape[1])
    };
    let (kb, n) = if attrs.trans_b {
        (b.shape[1], b.shape[0])
    } else {
        (b.shape[0], b.shape[1])
    };
    if ka != kb {
        return Err(format!(
            "inner dimensions differ: op(a) of {a} (trans_a = {}) has K = {ka}, op(b) of {b} (trans_b = {}) has K = {kb}",
            attrs.trans_a, attrs.trans_b
        ));
    }
    if let Some(c) = inputs.get(2) {
        check_same_dtype(a, (0, "a"), c, (2, "c"))?;
        if !broadcasts_to(&c.shape, &[m, n]) {
            return Err(format!(
                "input 2 (c) {c} does not broadcast to the output [{m},{n}]"
            ));
        }
    }
    check_fused_activation(attrs.act.as_ref(), a.dtype)?;
    Ok(vec![plain(a.dtype, vec![m, n])])
}

// ---------------------------------------------------------------------------------------
// Data movement
// ---------------------------------------------------------------------------------------

fn infer_concat(axis: usize, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    let first = inputs
        .first()
        .ok_or_else(|| "expects at least 1 input (x0, x1, ...), got 0".to_string())?;
    check_axis(axis, first.rank(), "axis", first)?;
    let mut shape = first.shape.clone();
    for (slot, x) in inputs.iter().enumerate().skip(1) {
        check_same_dtype(first, (0, "x0"), x, (slot, &format!("x{slot}")))?;
        let same_other_dims = x.rank() == first.rank()
            && (0..first.rank()).all(|d| d == axis || x.shape[d] == first.shape[d]);
        if !same_other_dims {
            return Err(format!(
                "input {slot} {x} must match input 0 {first} in every dim but axis {axis}"
            ));
        }
        shape[axis] = shape[axis]
            .checked_add(x.shape[axis])
            .ok_or_else(|| format!("concatenated axis {axis} length overflows"))?;
    }
    Ok(vec![TensorType {
        dtype: first.dtype,
        shape,
        quant: concat_quant(axis, inputs),
    }])
}

/// Concatenated integers keep their quantization when every input has the same parameters,
/// or when every input is quantized per-axis along the concatenated axis (then the
/// parameter lists concatenate too). Otherwise no single set of parameters reads the
/// result, and it is left unquantized.
fn concat_quant(axis: usize, inputs: &[&TensorType]) -> Option<Quant> {
    let first = inputs.first()?.quant.as_ref()?;
    if inputs
        .iter()
        .all(|x| x.quant.as_ref().is_some_and(|q| q.same_as(first)))
        && first.axis() != Some(axis)
    {
        return Some(first.clone());
    }
    let mut scales = Vec::new();
    let mut zero_points = Vec::new();
    for x in inputs {
        match &x.quant {
            Some(Quant::PerAxis {
                axis: a,
                scales: s,
                zero_points: z,
            }) if *a == axis => {
                scales.extend_from_slice(s);
                zero_points.extend_from_slice(z);
            }
            _ => return None,
        }
    }
    Some(Quant::PerAxis {
        axis,
        scales,
        zero_points,
    })
}

fn infer_split(
    axis: usize,
    sizes: &[usize],
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_axis(axis, x.rank(), "axis", x)?;
    if sizes.is_empty() {
        return Err("split needs at least one output size".into());
    }
    let total = sizes
        .iter()
        .try_fold(0usize, |acc, &s| acc.checked_add(s))
        .ok_or_else(|| format!("split sizes {sizes:?} overflow"))?;
    if total != x.shape[axis] {
        return Err(format!(
            "split sizes {sizes:?} sum to {total}, axis {axis} of x {x} has {}",
            x.shape[axis]
        ));
    }
    let mut outputs = Vec::with_capacity(sizes.len());
    let mut offset = 0;
    for &size in sizes {
        let mut shape = x.shape.clone();
        shape[axis] = size;
        // Per-axis parameters along the split axis are split with the data.
        let quant = match &x.quant {
            Some(q) if q.axis() == Some(axis) => Some(pick_quant_entries(q, offset..offset + size)),
            other => other.clone(),
        };
        outputs.push(TensorType {
            dtype: x.dtype,
            shape,
            quant,
        });
        offset += size;
    }
    Ok(outputs)
}

/// Length of a normalized slice along one axis: `ceil((end − start)/step)` clamped at 0.
fn slice_len(sa: &SliceAxis) -> i128 {
    let (start, end, step) = (sa.start as i128, sa.end as i128, sa.step as i128);
    let len = if step > 0 {
        (end - start + step - 1) / step
    } else {
        (start - end + (-step) - 1) / (-step)
    };
    len.max(0)
}

fn infer_slice(axes: &[SliceAxis], inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    let mut shape = x.shape.clone();
    let mut quant = x.quant.clone();
    for (i, sa) in axes.iter().enumerate() {
        check_axis(sa.axis, x.rank(), "slice axis", x)?;
        if axes[..i].iter().any(|o| o.axis == sa.axis) {
            return Err(format!("axis {} is sliced twice", sa.axis));
        }
        if sa.step == 0 {
            return Err(format!("slice on axis {}: step must not be 0", sa.axis));
        }
        let dim = x.shape[sa.axis] as i128;
        if sa.start < -1 || sa.start as i128 > dim || sa.end < -1 || sa.end as i128 > dim {
            return Err(format!(
                "slice on axis {}: start {} and end {} must be normalized into [-1, {dim}]",
                sa.axis, sa.start, sa.end
            ));
        }
        let len = slice_len(sa);
        if len > 0 {
            let last = sa.start as i128 + (len - 1) * sa.step as i128;
            let in_range = |idx: i128| (0..dim).contains(&idx);
            if !in_range(sa.start as i128) || !in_range(last) {
                return Err(format!(
                    "slice on axis {}: indices {}..{} step {} read outside [0, {dim})",
                    sa.axis, sa.start, sa.end, sa.step
                ));
            }
        }
        // len ≤ dim + 1 here, so it fits in usize.
        let len = len as usize;
        shape[sa.axis] = len;
        if let Some(q) = &quant {
            if q.axis() == Some(sa.axis) {
                let (start, step) = (sa.start as i128, sa.step as i128);
                // Every picked index was just checked to lie in [0, dim).
                let picked = (0..len as i128).map(|k| (start + k * step) as usize);
                quant = Some(pick_quant_entries(q, picked));
            }
        }
    }
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape,
        quant,
    }])
}

fn infer_reshape(target: &[usize], inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    let (n_in, n_out) = (product(&x.shape)?, product(target)?);
    if n_in != n_out {
        return Err(format!(
            "cannot reshape x {x} ({n_in} elements) to {target:?} ({n_out} elements)"
        ));
    }
    let quant = move_quant(x.quant.as_ref(), &format!("reshape to {target:?}"), |a| {
        reshape_axis(&x.shape, target, a)
    })?;
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape: target.to_vec(),
        quant,
    }])
}

fn infer_flatten(axis: usize, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    // ONNX allows axis == rank: the result is [numel, 1].
    if axis > x.rank() {
        return Err(format!(
            "axis {axis} must be ≤ the rank {} of x {x}",
            x.rank()
        ));
    }
    let shape = vec![product(&x.shape[..axis])?, product(&x.shape[axis..])?];
    let quant = move_quant(x.quant.as_ref(), &format!("flatten at axis {axis}"), |a| {
        reshape_axis(&x.shape, &shape, a)
    })?;
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape,
        quant,
    }])
}

fn infer_transpose(perm: &[usize], inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    let is_permutation = perm.len() == x.rank() && check_axes(perm, x.rank(), "", "").is_ok();
    if !is_permutation {
        return Err(format!(
            "perm {perm:?} is not a permutation of the {} axes of x {x}",
            x.rank()
        ));
    }
    let shape = perm.iter().map(|&p| x.shape[p]).collect();
    let quant = move_quant(x.quant.as_ref(), "transpose", |a| {
        perm.iter().position(|&p| p == a)
    })?;
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape,
        quant,
    }])
}

/// The importer resolves ONNX's "no axes: squeeze every 1" rule, so the axes are taken as
/// given.
fn infer_squeeze(axes: &[usize], inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_axes(axes, x.rank(), "axis", &x.to_string())?;
    if let Some(&a) = axes.iter().find(|&&a| x.shape[a] != 1) {
        return Err(format!(
            "axis {a} of x {x} has size {}, only size-1 axes can be squeezed",
            x.shape[a]
        ));
    }
    let shape = x
        .shape
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, &d)| d)
        .collect();
    let quant = move_quant(x.quant.as_ref(), "squeeze", |a| {
        (!axes.contains(&a)).then(|| a - axes.iter().filter(|&&s| s < a).count())
    })?;
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape,
        quant,
    }])
}

fn infer_unsqueeze(axes: &[usize], inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    let out_rank = x.rank() + axes.len();
    check_axes(
        axes,
        out_rank,
        "axis",
        &format!("the output of unsqueezing {x}"),
    )?;
    let mut input_dims = x.shape.iter();
    // Output axis `i` is a new 1 when listed, otherwise the next input dim; `input_axis_at`
    // records which input axis lands where, for per-axis quantization.
    let mut input_axis_at = Vec::with_capacity(x.rank());
    let shape = (0..out_rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                input_axis_at.push(i);
                *input_dims
                    .next()
                    .expect("out_rank − |axes| = rank input dims remain")
            }
        })
        .collect();
    let quant = move_quant(x.quant.as_ref(), "unsqueeze", |a| {
        input_axis_at.get(a).copied()
    })?;
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape,
        quant,
    }])
}

fn infer_pad(
    mode: PadMode,
    pads: &[i64],
    value: f64,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    let rank = x.rank();
    if pads.len() != 2 * rank {
        return Err(format!(
            "pads must have 2·rank = {} entries for x {x}, got {pads:?}",
            2 * rank
        ));
    }
    let mut shape = Vec::with_capacity(rank);
    for axis in 0..rank {
        let (pb, pe) = (pads[axis], pads[rank + axis]);
        let len = x.shape[axis] as i128 + pb as i128 + pe as i128;
        if len < 0 {
            return Err(format!(
                "axis {axis}: pads ({pb}, {pe}) crop more than the {} elements of x {x}",
                x.shape[axis]
            ));
        }
        // Reflect/edge/wrap copy existing elements: there must be some to copy.
        if mode != PadMode::Constant && x.shape[axis] == 0 && (pb > 0 || pe > 0) {
            return Err(format!(
                "axis {axis} of x {x} is empty: {mode:?} padding has nothing to copy"
            ));
        }
        shape.push(
            usize::try_from(len)
                .map_err(|_| format!("axis {axis}: padded length {len} overflows"))?,
        );
    }
    if mode == PadMode::Constant {
        if let Some((lo, hi)) = x.dtype.int_range() {
            let representable = value.fract() == 0.0 && value >= lo as f64 && value <= hi as f64;
            if !representable {
                return Err(format!(
                    "constant pad value {value} is not representable in {}",
                    x.dtype
                ));
            }
        }
    }
    // Fill values are raw integers read with x's parameters (the importer uses the zero
    // point); per-axis parameters only survive when their axis is not padded.
    let quant = move_quant(x.quant.as_ref(), "padding of the quantized axis", |a| {
        (pads[a] == 0 && pads[rank + a] == 0).then_some(a)
    })?;
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape,
        quant,
    }])
}

fn infer_resize(attrs: &ResizeAttrs, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    let rank = x.rank();
    if attrs.mode == ResizeMode::Nearest {
        check_dtype(x, 0, "x", &DType::ALL)?;
    } else {
        check_dtype(x, 0, "x", NUMERIC)?;
    }
    if attrs.sizes.len() != rank || attrs.scales.len() != rank {
        return Err(format!(
            "sizes {:?} and scales {:?} need one entry per axis of x {x}",
            attrs.sizes, attrs.scales
        ));
    }
    if let Some(s) = attrs.scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(format!(
            "scales {:?}: {s} is not a finite positive number",
            attrs.scales
        ));
    }
    let needs_roi = attrs.coord == crate::op::CoordTransform::TfCropAndResize;
    if (needs_roi || !attrs.roi.is_empty()) && attrs.roi.len() != 2 * rank {
        return Err(format!(
            "roi must have 2·rank = {} entries [starts.., ends..]{}, got {:?}",
            2 * rank,
            if needs_roi {
                " for tf_crop_and_resize"
            } else {
                ""
            },
            attrs.roi
        ));
    }
    // Nearest copies elements; linear and cubic weights sum to 1, so interpolating stored
    // integers interpolates the real values they encode with the same parameters.
    // Per-axis parameters survive only on an axis that is not resized.
    let quant = move_quant(x.quant.as_ref(), "resizing of the quantized axis", |a| {
        (attrs.sizes[a] == x.shape[a]).then_some(a)
    })?;
    Ok(vec![TensorType {
        dtype: x.dtype,
        shape: attrs.sizes.clone(),
        quant,
    }])
}

fn infer_identity(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    Ok(vec![inputs[0].clone()])
}

/// Inference-mode dropout: y = x and a mask of all `true`.
fn infer_dropout(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    Ok(vec![x.clone(), plain(DType::Bool, x.shape.clone())])
}

fn infer_cast(to: DType, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    Ok(vec![plain(to, inputs[0].shape.clone())])
}

fn infer_gather(axis: usize, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["data", "indices"], 2)?;
    let (data, indices) = (inputs[0], inputs[1]);
    check_dtype(indices, 1, "indices", INDEX_TYPES)?;
    check_axis(axis, data.rank(), "axis", data)?;
    let mut shape = data.shape[..axis].to_vec();
    shape.extend_from_slice(&indices.shape);
    shape.extend_from_slice(&data.shape[axis + 1..]);
    let quant = move_quant(
        data.quant.as_ref(),
        "gather along the quantized axis",
        |a| {
            if a < axis {
                Some(a)
            } else if a > axis {
                Some(a - 1 + indices.rank())
            } else {
                None
            }
        },
    )?;
    Ok(vec![TensorType {
        dtype: data.dtype,
        shape,
        quant,
    }])
}

// ---------------------------------------------------------------------------------------
// Quantized ops
// ---------------------------------------------------------------------------------------

fn require_quant(ty: &TensorType, slot: usize, name: &str) -> Result<(), String> {
    if ty.quant.is_none() {
        return Err(format!(
            "input {slot} ({name}) {ty} has no quantization parameters"
        ));
    }
    Ok(())
}

/// Placeholder type of a free-output-type op: the shape, a `u8` dtype, no parameters.
fn free_output(shape: Vec<usize>) -> Vec<TensorType> {
    vec![plain(DType::U8, shape)]
}

fn infer_quantize(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", &[DType::F32, DType::I32])?;
    Ok(free_output(x.shape.clone()))
}

fn infer_dequantize(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    let x = inputs[0];
    check_dtype(x, 0, "x", &[DType::I8, DType::U8, DType::I32])?;
    require_quant(x, 0, "x")?;
    Ok(vec![plain(DType::F32, x.shape.clone())])
}

fn infer_qconv(attrs: &ConvAttrs, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x", "w", "b"], 2)?;
    let (x, w) = (inputs[0], inputs[1]);
    check_dtype(x, 0, "x", INT8)?;
    check_dtype(w, 1, "w", INT8)?;
    require_quant(x, 0, "x")?;
    require_quant(w, 1, "w")?;
    let shape = conv_output_shape(attrs, x, w)?;
    if let Some(b) = inputs.get(2) {
        check_dtype(b, 2, "b", &[DType::I32])?;
        check_bias(b, 2, shape[1])?;
    }
    // The requantized output is clamped in the quantized domain: only ReLU and Clip have an
    // exact integer form.
    if let Some(act) = &attrs.act {
        if !matches!(act, Activation::Relu | Activation::Clip { .. }) {
            return Err(format!(
                "fused activation {} cannot be applied to a quantized output (relu or clip only)",
                act.name()
            ));
        }
    }
    Ok(free_output(shape))
}

fn infer_qmatmul(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["a", "b"], 2)?;
    let (a, b) = (inputs[0], inputs[1]);
    check_dtype(a, 0, "a", INT8)?;
    check_dtype(b, 1, "b", INT8)?;
    require_quant(a, 0, "a")?;
    require_quant(b, 1, "b")?;
    Ok(free_output(matmul_shape(a, b)?))
}

/// A zero point input of ConvInteger / MatMulInteger: the operand's dtype, and a shape among
/// `allowed` (per tensor: one element; per channel/row/column: the listed shapes).
fn check_zero_point(
    zp: &TensorType,
    slot: usize,
    name: &str,
    operand: &TensorType,
    operand_name: &str,
    per_channel_shapes: &[Vec<usize>],
) -> Result<(), String> {
    if zp.dtype != operand.dtype {
        return Err(format!(
            "input {slot} ({name}) must have the dtype of {operand_name} {operand}, got {zp}"
        ));
    }
    let per_tensor = zp.rank() <= 1 && checked_numel(&zp.shape) == Some(1);
    if !per_tensor && !per_channel_shapes.contains(&zp.shape) {
        return Err(format!(
            "input {slot} ({name}) must be a scalar, [1] or one of {per_channel_shapes:?}, got {zp}"
        ));
    }
    Ok(())
}

fn infer_conv_integer(
    attrs: &ConvAttrs,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x", "w", "x_zero_point", "w_zero_point"], 2)?;
    let (x, w) = (inputs[0], inputs[1]);
    check_dtype(x, 0, "x", INT8)?;
    check_dtype(w, 1, "w", INT8)?;
    let shape = conv_output_shape(attrs, x, w)?;
    if let Some(zp) = inputs.get(2) {
        // ONNX: x's zero point is per tensor only.
        check_zero_point(zp, 2, "x_zero_point", x, "x", &[])?;
    }
    if let Some(zp) = inputs.get(3) {
        // ONNX: w's zero point is per tensor or per output channel.
        check_zero_point(zp, 3, "w_zero_point", w, "w", &[vec![shape[1]]])?;
    }
    check_fused_activation(attrs.act.as_ref(), DType::I32)?;
    Ok(vec![plain(DType::I32, shape)])
}

/// DynamicQuantizeLinear: x f32 → y u8 (x's shape, no static parameters), scale f32 [],
/// zero point u8 [].
fn infer_dynamic_quantize(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["x"], 1)?;
    check_dtype(inputs[0], 0, "x", &[DType::F32])?;
    Ok(vec![
        plain(DType::U8, inputs[0].shape.clone()),
        plain(DType::F32, vec![]),
        plain(DType::U8, vec![]),
    ])
}

fn infer_matmul_integer(inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
    check_arity(inputs, &["a", "b", "a_zero_point", "b_zero_point"], 2)?;
    let (a, b) = (inputs[0], inputs[1]);
    check_dtype(a, 0, "a", INT8)?;
    check_dtype(b, 1, "b", INT8)?;
    let shape = matmul_shape(a, b)?;
    if let Some(zp) = inputs.get(2) {
        // ONNX: per tensor, or per row of a: [M] for a 2-D a, [D.., M, 1] for an N-D a.
        let mut per_row = Vec::new();
        if a.rank() == 2 {
            per_row.push(vec![a.shape[0]]);
        }
        if a.rank() >= 2 {
            let mut s = a.shape.clone();
            *s.last_mut().expect("rank ≥ 2") = 1;
            per_row.push(s);
        }
        check_zero_point(zp, 2, "a_zero_point", a, "a", &per_row)?;
    }
    if let Some(zp) = inputs.get(3) {
        // ONNX: per tensor, or per column of b: [N] for a 2-D b, [D.., 1, N] for an N-D b.
        let mut per_column = Vec::new();
        if b.rank() == 2 {
            per_column.push(vec![b.shape[1]]);
        }
        if b.rank() >= 2 {
            let mut s = b.shape.clone();
            let r = s.len();
            s[r - 2] = 1;
            per_column.push(s);
        }
        check_zero_point(zp, 3, "b_zero_point", b, "b", &per_column)?;
    }
    Ok(vec![plain(DType::I32, shape)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{BinaryOp, CoordTransform, NearestMode};
    use crate::pool::ConstId;

    #[test]
    fn broadcast_shapes_follow_numpy() {
        assert_eq!(broadcast_shapes(&[2, 1, 3], &[4, 1]), Some(vec![2, 4, 3]));
        assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
        assert_eq!(broadcast_shapes(&[2, 3], &[4, 3]), None);
    }

    fn t(dtype: DType, shape: &[usize]) -> TensorType {
        TensorType::new(dtype, shape.to_vec())
    }

    fn f32t(shape: &[usize]) -> TensorType {
        t(DType::F32, shape)
    }

    fn infer(op: &Op, inputs: &[TensorType]) -> Result<Vec<TensorType>, String> {
        let refs: Vec<&TensorType> = inputs.iter().collect();
        infer_types(op, &refs)
    }

    /// The single (first) output type of a successful inference.
    fn out(op: &Op, inputs: &[TensorType]) -> TensorType {
        match infer(op, inputs) {
            Ok(mut v) => v.swap_remove(0),
            Err(e) => panic!("{} failed: {e}", op.mnemonic()),
        }
    }

    /// Inference must fail, with a message containing `needle`.
    fn fails(op: &Op, inputs: &[TensorType], needle: &str) {
        match infer(op, inputs) {
            Ok(v) => panic!("{} unexpectedly inferred {v:?}", op.mnemonic()),
            Err(e) => assert!(e.contains(needle), "message {e:?} lacks {needle:?}"),
        }
    }

    fn conv_attrs(
        kernel: &[usize],
        strides: &[usize],
        pads: &[usize],
        dilations: &[usize],
        groups: usize,
    ) -> ConvAttrs {
        ConvAttrs {
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            pads: pads.to_vec(),
            dilations: dilations.to_vec(),
            groups,
            act: None,
        }
    }

    fn conv2d(k: usize, stride: usize, pad: usize, groups: usize) -> ConvAttrs {
        conv_attrs(&[k, k], &[stride, stride], &[pad; 4], &[1, 1], groups)
    }

    fn pool(kernel: &[usize], strides: &[usize], pads: &[usize], ceil_mode: bool) -> PoolAttrs {
        PoolAttrs {
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            pads: pads.to_vec(),
            dilations: vec![1; kernel.len()],
            ceil_mode,
            count_include_pad: false,
            storage_order: 0,
        }
    }

    fn q(scale: f32, zero_point: i32) -> Quant {
        Quant::per_tensor(scale, zero_point)
    }

    fn per_axis(axis: usize, n: usize) -> Quant {
        Quant::PerAxis {
            axis,
            scales: (1..=n).map(|i| i as f32 * 0.5).collect(),
            zero_points: vec![0; n],
        }
    }

    fn qt(dtype: DType, shape: &[usize], quant: Quant) -> TensorType {
        t(dtype, shape).with_quant(quant)
    }

    // The expected shapes of conv, conv_transpose, pools, matmul, gemm and gather below were
    // also confirmed with onnx.shape_inference (onnx 1.23) and, for ceil-mode pooling,
    // onnxruntime 1.31.

    #[test]
    fn conv_output_shapes() {
        // (32 + 1 + 1 − 3)/2 + 1 = 16
        let y = out(
            &Op::Conv(conv2d(3, 2, 1, 1)),
            &[f32t(&[1, 3, 32, 32]), f32t(&[16, 3, 3, 3]), f32t(&[16])],
        );
        assert_eq!(y, f32t(&[1, 16, 16, 16]));
        // dilation 2: extent (3 − 1)·2 + 1 = 5; 10 − 5 + 1 = 6
        let dilated = conv_attrs(&[3, 3], &[1, 1], &[0; 4], &[2, 2], 1);
        assert_eq!(
            out(
                &Op::Conv(dilated),
                &[f32t(&[1, 1, 10, 10]), f32t(&[1, 1, 3, 3])]
            )
            .shape,
            [1, 1, 6, 6]
        );
        // groups 4: w has 8/4 = 2 input channels per group; (5 − 3) + 1 = 3
        assert_eq!(
            out(
                &Op::Conv(conv2d(3, 1, 0, 4)),
                &[f32t(&[1, 8, 5, 5]), f32t(&[8, 2, 3, 3])]
            )
            .shape,
            [1, 8, 3, 3]
        );
        // 1-D, asymmetric pads: (10 + 0 + 2 − 3)/3 + 1 = 4
        let one_d = conv_attrs(&[3], &[3], &[0, 2], &[1], 1);
        assert_eq!(
            out(&Op::Conv(one_d), &[f32t(&[2, 4, 10]), f32t(&[6, 4, 3])]).shape,
            [2, 6, 4]
        );
    }

    #[test]
    fn conv_rejects_bad_operands() {
        let op = Op::Conv(conv2d(3, 1, 0, 1));
        fails(
            &op,
            &[f32t(&[1, 3, 8, 8])],
            "expects 2 to 4 inputs (x, w, [b], [residual]), got 1",
        );
        // The fused residual must match the output [1,4,6,6] exactly (no broadcasting).
        fails(
            &op,
            &[
                f32t(&[1, 3, 8, 8]),
                f32t(&[4, 3, 3, 3]),
                f32t(&[4]),
                f32t(&[1, 4, 1, 1]),
            ],
            "input 3 (residual) must have the output's type",
        );
        fails(
            &op,
            &[f32t(&[1, 3, 8, 8]), f32t(&[64, 3, 3])],
            "input 1 (w) must be rank 4 for a 2-D conv, got f32[64,3,3]",
        );
        fails(
            &op,
            &[t(DType::I8, &[1, 3, 8, 8]), t(DType::I8, &[4, 3, 3, 3])],
            "input 0 (x) must be f32 or f16",
        );
        fails(
            &op,
            &[f32t(&[1, 3, 8, 8]), t(DType::F16, &[4, 3, 3, 3])],
            "must have the dtype of input 0",
        );
        fails(
            &op,
            &[f32t(&[1, 3, 8, 8]), f32t(&[4, 2, 3, 3])],
            "C_in/groups = 3/1 = 3",
        );
        fails(
            &op,
            &[f32t(&[1, 3, 8, 8]), f32t(&[4, 3, 5, 5])],
            "kernel attribute",
        );
        fails(
            &op,
            &[f32t(&[1, 3, 2, 2]), f32t(&[4, 3, 3, 3])],
            "smaller than the dilated kernel extent 3",
        );
        fails(
            &op,
            &[f32t(&[1, 3, 8, 8]), f32t(&[4, 3, 3, 3]), f32t(&[5])],
            "must have shape [4]",
        );
        fails(
            &Op::Conv(conv2d(3, 1, 0, 0)),
            &[f32t(&[1, 3, 8, 8]), f32t(&[4, 3, 3, 3])],
            "groups must be ≥ 1",
        );
        fails(
            &Op::Conv(conv2d(3, 0, 0, 1)),
            &[f32t(&[1, 3, 8, 8]), f32t(&[4, 3, 3, 3])],
            "strides",
        );
        fails(
            &Op::Conv(conv2d(3, 1, 0, 2)),
            &[f32t(&[1, 3, 8, 8]), f32t(&[4, 1, 3, 3])],
            "not divisible by groups",
        );
        let huge_dilation = conv_attrs(&[3, 3], &[1, 1], &[0; 4], &[usize::MAX, 1], 1);
        fails(
            &Op::Conv(huge_dilation),
            &[f32t(&[1, 3, 8, 8]), f32t(&[4, 3, 3, 3])],
            "overflows",
        );
        let mut sigmoid_on_conv = conv2d(3, 1, 0, 1);
        sigmoid_on_conv.act = Some(Activation::Sigmoid);
        assert!(infer(
            &Op::Conv(sigmoid_on_conv),
            &[f32t(&[1, 3, 8, 8]), f32t(&[4, 3, 3, 3])]
        )
        .is_ok());
    }

    #[test]
    fn conv_transpose_output_shapes() {
        let attrs =
            |k: &[usize], s: &[usize], pads: &[usize], d: &[usize], op: &[usize], groups| {
                ConvTransposeAttrs {
                    kernel: k.to_vec(),
                    strides: s.to_vec(),
                    pads: pads.to_vec(),
                    dilations: d.to_vec(),
                    output_padding: op.to_vec(),
                    groups,
                    act: None,
                }
            };
        // 2·(5 − 1) + 1 + 3 − 1 − 1 = 10; C_out = w[1]·groups = 2
        let op = Op::ConvTranspose(attrs(&[3, 3], &[2, 2], &[1; 4], &[1, 1], &[1, 1], 1));
        assert_eq!(
            out(&op, &[f32t(&[1, 4, 5, 5]), f32t(&[4, 2, 3, 3]), f32t(&[2])]),
            f32t(&[1, 2, 10, 10])
        );
        // groups 2: C_out = 3·2 = 6; 1·(3 − 1) + 2 = 4
        let grouped = Op::ConvTranspose(attrs(&[2], &[1], &[0, 0], &[1], &[0], 2));
        assert_eq!(
            out(&grouped, &[f32t(&[1, 4, 3]), f32t(&[4, 3, 2])]).shape,
            [1, 6, 4]
        );
        // dilation 2: 1·(4 − 1) + ((3 − 1)·2 + 1) = 8
        let dilated = Op::ConvTranspose(attrs(&[3], &[1], &[0, 0], &[2], &[0], 1));
        assert_eq!(
            out(&dilated, &[f32t(&[1, 1, 4]), f32t(&[1, 1, 3])]).shape,
            [1, 1, 8]
        );
        // pads crop everything: 1·(1 − 1) + 1 − 1 − 1 = −1
        let cropped = Op::ConvTranspose(attrs(&[1], &[1], &[1, 1], &[1], &[0], 1));
        fails(
            &cropped,
            &[f32t(&[1, 1, 1]), f32t(&[1, 1, 1])],
            "must be ≥ 1",
        );
        fails(
            &grouped,
            &[f32t(&[1, 4, 3]), f32t(&[3, 3, 2])],
            "must have C_in = 4 on axis 0",
        );
        let no_output_padding = Op::ConvTranspose(attrs(&[2], &[1], &[0, 0], &[1], &[], 1));
        fails(
            &no_output_padding,
            &[f32t(&[1, 4, 3]), f32t(&[4, 3, 2])],
            "output_padding",
        );
    }

    #[test]
    fn batch_norm_needs_per_channel_parameters() {
        let op = Op::BatchNorm { epsilon: 1e-5 };
        let c = f32t(&[3]);
        let y = out(
            &op,
            &[
                f32t(&[2, 3, 4, 4]),
                c.clone(),
                c.clone(),
                c.clone(),
                c.clone(),
            ],
        );
        assert_eq!(y, f32t(&[2, 3, 4, 4]));
        // ONNX: a 1-D input of size N has one channel.
        let one = f32t(&[1]);
        assert_eq!(
            out(
                &op,
                &[f32t(&[4]), one.clone(), one.clone(), one.clone(), one]
            )
            .shape,
            [4]
        );
        fails(
            &op,
            &[
                f32t(&[2, 3, 4, 4]),
                c.clone(),
                c.clone(),
                c.clone(),
                f32t(&[4]),
            ],
            "input 4 (var) must have shape [3]",
        );
        fails(
            &op,
            &[f32t(&[2, 3, 4, 4]), c.clone(), c],
            "expects 5 inputs",
        );
    }

    #[test]
    fn activations_follow_onnx_type_constraints() {
        let relu = Op::Activation(Activation::Relu);
        assert_eq!(out(&relu, &[t(DType::I8, &[2, 3])]), t(DType::I8, &[2, 3]));
        fails(
            &relu,
            &[t(DType::U8, &[2])],
            "input 0 (x) must be f32, f16, i8, i32 or i64, got u8[2]",
        );
        let clip = Op::Activation(Activation::Clip { min: 0.0, max: 6.0 });
        // Clipping stored integers is not clipping the real values: no quantization.
        assert_eq!(
            out(&clip, &[qt(DType::U8, &[4], q(0.1, 128))]),
            t(DType::U8, &[4])
        );
        fails(
            &Op::Activation(Activation::Sigmoid),
            &[t(DType::I32, &[2])],
            "must be f32 or f16",
        );
        fails(
            &Op::Activation(Activation::LeakyRelu { alpha: 0.1 }),
            &[t(DType::I8, &[2])],
            "must be f32 or f16",
        );
        let hard = [
            Activation::Tanh,
            Activation::HardSwish,
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ];
        for act in hard {
            assert_eq!(
                out(&Op::Activation(act), &[t(DType::F16, &[5])]),
                t(DType::F16, &[5])
            );
        }
        fails(
            &relu,
            &[f32t(&[1]), f32t(&[1])],
            "expects 1 input (x), got 2",
        );
    }

    #[test]
    fn binary_broadcasts_like_numpy() {
        let add = Op::Binary(BinaryOp::Add);
        // right-aligned: [2,1,4] with [_,3,1] → [2,3,4]
        assert_eq!(
            out(&add, &[f32t(&[2, 1, 4]), f32t(&[3, 1])]),
            f32t(&[2, 3, 4])
        );
        // 1 broadcasts to 0
        assert_eq!(
            out(
                &Op::Binary(BinaryOp::Mul),
                &[t(DType::I32, &[0]), t(DType::I32, &[1])]
            )
            .shape,
            [0]
        );
        // quantized integers in, plain integers out
        let a = qt(DType::U8, &[3], q(0.5, 3));
        assert_eq!(out(&Op::Binary(BinaryOp::Sub), &[a.clone(), a]).quant, None);
        fails(&add, &[f32t(&[2, 3]), f32t(&[4])], "do not broadcast");
        fails(
            &add,
            &[f32t(&[2, 3]), t(DType::I32, &[2, 3])],
            "input 1 (b) must have the dtype of input 0 (a)",
        );
        fails(
            &Op::Binary(BinaryOp::Div),
            &[t(DType::Bool, &[1]), t(DType::Bool, &[1])],
            "must be f32, f16, i8, u8, i32 or i64",
        );
    }

    #[test]
    fn sum_broadcasts_all_inputs() {
        // [3,1], [1,4], [2,1,1] → [2,3,4]
        assert_eq!(
            out(&Op::Sum, &[f32t(&[3, 1]), f32t(&[1, 4]), f32t(&[2, 1, 1])]).shape,
            [2, 3, 4]
        );
        assert_eq!(out(&Op::Sum, &[f32t(&[7])]).shape, [7]);
        fails(&Op::Sum, &[], "at least 1 input");
        fails(&Op::Sum, &[t(DType::I32, &[1])], "must be f32 or f16");
        fails(
            &Op::Sum,
            &[f32t(&[3]), f32t(&[4])],
            "input 1 f32[4] does not broadcast",
        );
    }

    #[test]
    fn matmul_follows_numpy() {
        let mm = |a: &[usize], b: &[usize]| {
            infer(&Op::MatMul, &[f32t(a), f32t(b)]).map(|v| v[0].shape.clone())
        };
        assert_eq!(mm(&[2, 3, 4], &[4, 5]), Ok(vec![2, 3, 5]));
        // batch dims [2,1] and [5] broadcast to [2,5]
        assert_eq!(mm(&[2, 1, 3, 4], &[5, 4, 6]), Ok(vec![2, 5, 3, 6]));
        // 1-D a is a row whose M is dropped; 1-D b a column whose N is dropped
        assert_eq!(mm(&[4], &[3, 4, 5]), Ok(vec![3, 5]));
        assert_eq!(mm(&[2, 3, 4], &[4]), Ok(vec![2, 3]));
        assert_eq!(mm(&[4], &[4]), Ok(vec![]));
        fails(
            &Op::MatMul,
            &[f32t(&[2, 3]), f32t(&[4, 5])],
            "inner dimensions differ: a f32[2,3] has K = 3, b f32[4,5] has K = 4",
        );
        fails(
            &Op::MatMul,
            &[f32t(&[2, 2, 3]), f32t(&[3, 3, 1])],
            "batch dimensions",
        );
        fails(&Op::MatMul, &[f32t(&[]), f32t(&[3])], "rank ≥ 1");
        fails(
            &Op::MatMul,
            &[t(DType::I8, &[2, 2]), t(DType::I8, &[2, 2])],
            "must be f32, f16, i32 or i64",
        );
    }

    #[test]
    fn gemm_transposes_and_broadcasts_c() {
        let gemm = |trans_a, trans_b| {
            Op::Gemm(GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a,
                trans_b,
                act: None,
            })
        };
        // a [4,3]ᵀ is [3,4], b [5,4]ᵀ is [4,5] → [3,5]
        let op = gemm(true, true);
        assert_eq!(
            out(&op, &[f32t(&[4, 3]), f32t(&[5, 4]), f32t(&[5])]).shape,
            [3, 5]
        );
        assert_eq!(
            out(&op, &[f32t(&[4, 3]), f32t(&[5, 4]), f32t(&[3, 1])]).shape,
            [3, 5]
        );
        assert_eq!(
            out(&gemm(false, false), &[f32t(&[3, 4]), f32t(&[4, 5])]).shape,
            [3, 5]
        );
        fails(
            &op,
            &[f32t(&[4, 3]), f32t(&[5, 4]), f32t(&[5, 3])],
            "does not broadcast to the output [3,5]",
        );
        fails(
            &op,
            &[f32t(&[4, 3]), f32t(&[5, 4]), f32t(&[1, 3, 5])],
            "does not broadcast",
        );
        fails(
            &gemm(false, false),
            &[f32t(&[3, 4]), f32t(&[5, 4])],
            "inner dimensions differ",
        );
        fails(
            &op,
            &[f32t(&[4, 3, 1]), f32t(&[5, 4])],
            "input 0 (a) must be rank 2",
        );
    }

    #[test]
    fn max_pool_ceil_mode_drops_windows_starting_in_the_right_pad() {
        let mp = |x: &[usize], attrs: PoolAttrs| infer(&Op::MaxPool(attrs), &[f32t(x)]);
        // floor: (5 − 2)/2 + 1 = 2; ceil: ⌈3/2⌉ + 1 = 3, last window starts at 4 < 5: kept
        assert_eq!(
            mp(&[1, 1, 5, 5], pool(&[2, 2], &[2, 2], &[0; 4], false)).unwrap()[0].shape,
            [1, 1, 2, 2]
        );
        let ceil = mp(&[1, 1, 5, 5], pool(&[2, 2], &[2, 2], &[0; 4], true)).unwrap();
        assert_eq!(
            ceil,
            vec![f32t(&[1, 1, 3, 3]), t(DType::I64, &[1, 1, 3, 3])]
        );
        // ceil: ⌈(5 + 1 − 2)/3⌉ + 1 = 3, but the third window would start at 6 ≥ 5 + 0, so 2.
        // (onnxruntime and onnx's reference evaluator give 2; onnx's C++ shape inference says 3
        // and onnxruntime warns about the mismatch.)
        assert_eq!(
            mp(&[1, 1, 5], pool(&[2], &[3], &[0, 1], true)).unwrap()[0].shape,
            [1, 1, 2]
        );
        // ⌈(6 + 2 − 3)/2⌉ + 1 = 4, last start 6 < 6 + 1: kept
        assert_eq!(
            mp(&[1, 1, 6], pool(&[3], &[2], &[1, 1], true)).unwrap()[0].shape,
            [1, 1, 4]
        );
        let err = mp(&[1, 1, 5, 5], pool(&[2, 2], &[1, 1], &[2, 0, 0, 0], false)).unwrap_err();
        assert!(err.contains("smaller than the kernel size 2"), "{err}");
        let mut column_major = pool(&[2], &[1], &[0, 0], false);
        column_major.storage_order = 2;
        assert!(mp(&[1, 1, 5], column_major)
            .unwrap_err()
            .contains("storage_order"));
        assert!(mp(&[1, 5], pool(&[2], &[1], &[0, 0], false))
            .unwrap_err()
            .contains("must be rank 3"));
    }

    #[test]
    fn max_pool_keeps_channel_quantization_only() {
        let op = Op::MaxPool(pool(&[2, 2], &[2, 2], &[0; 4], false));
        let x = qt(DType::U8, &[1, 2, 4, 4], q(0.1, 128));
        assert_eq!(out(&op, &[x]).quant, Some(q(0.1, 128)));
        let per_channel = qt(DType::I8, &[1, 2, 4, 4], per_axis(1, 2));
        assert_eq!(out(&op, &[per_channel]).quant, Some(per_axis(1, 2)));
        let per_row = qt(DType::I8, &[1, 2, 4, 4], per_axis(2, 4));
        fails(
            &op,
            &[per_row],
            "per-axis quantization along axis 2 cannot follow max_pool",
        );
    }

    #[test]
    fn average_pool_output_shapes() {
        // (7 + 1 + 1 − 3)/2 + 1 = 4
        let op = Op::AveragePool(pool(&[3, 3], &[2, 2], &[1; 4], false));
        assert_eq!(out(&op, &[f32t(&[1, 2, 7, 7])]), f32t(&[1, 2, 4, 4]));
        // dilation 2, kernel 2: extent 3; 7 − 3 + 1 = 5
        let mut dilated = pool(&[2, 2], &[1, 1], &[0; 4], false);
        dilated.dilations = vec![2, 2];
        assert_eq!(
            out(&Op::AveragePool(dilated), &[f32t(&[1, 2, 7, 7])]).shape,
            [1, 2, 5, 5]
        );
        fails(&op, &[t(DType::U8, &[1, 2, 7, 7])], "must be f32 or f16");
    }

    #[test]
    fn global_pools_keep_batch_and_channels() {
        assert_eq!(
            out(&Op::GlobalAveragePool, &[f32t(&[2, 3, 5, 7])]),
            f32t(&[2, 3, 1, 1])
        );
        let x = qt(DType::U8, &[2, 3, 5], q(0.25, 10));
        assert_eq!(
            out(&Op::GlobalMaxPool, std::slice::from_ref(&x)),
            qt(DType::U8, &[2, 3, 1], q(0.25, 10))
        );
        fails(&Op::GlobalAveragePool, &[x], "must be f32 or f16");
        fails(&Op::GlobalMaxPool, &[f32t(&[3])], "rank ≥ 2");
    }

    #[test]
    fn lrn_keeps_the_shape() {
        let lrn = |size| Op::Lrn {
            size,
            alpha: 1e-4,
            beta: 0.75,
            bias: 1.0,
        };
        assert_eq!(out(&lrn(5), &[f32t(&[1, 4, 5, 5])]), f32t(&[1, 4, 5, 5]));
        fails(&lrn(0), &[f32t(&[1, 4, 5, 5])], "size must be ≥ 1");
        fails(&lrn(3), &[f32t(&[4])], "rank ≥ 2");
    }

    #[test]
    fn concat_adds_the_axis_and_merges_quantization() {
        let op = Op::Concat { axis: 1 };
        assert_eq!(
            out(&op, &[f32t(&[2, 3]), f32t(&[2, 5]), f32t(&[2, 0])]),
            f32t(&[2, 8])
        );
        fails(
            &op,
            &[f32t(&[2, 3]), f32t(&[3, 5])],
            "must match input 0 f32[2,3] in every dim but axis 1",
        );
        fails(&op, &[f32t(&[2, 3]), t(DType::I32, &[2, 5])], "dtype");
        fails(
            &Op::Concat { axis: 2 },
            &[f32t(&[2, 3])],
            "axis 2 is out of range",
        );
        fails(&op, &[], "at least 1 input");
        let same = qt(DType::U8, &[2, 3], q(0.5, 1));
        assert_eq!(
            out(&op, &[same.clone(), same.clone()]).quant,
            Some(q(0.5, 1))
        );
        let other = qt(DType::U8, &[2, 3], q(0.25, 1));
        assert_eq!(out(&op, &[same, other]).quant, None);
        // per-axis along the concatenated axis: the parameter lists concatenate
        let a = qt(DType::I8, &[2, 2], per_axis(1, 2));
        let b = qt(DType::I8, &[2, 1], per_axis(1, 1));
        let expected = Quant::PerAxis {
            axis: 1,
            scales: vec![0.5, 1.0, 0.5],
            zero_points: vec![0, 0, 0],
        };
        assert_eq!(out(&op, &[a, b]).quant, Some(expected));
    }

    #[test]
    fn split_produces_one_output_per_size() {
        let op = Op::Split {
            axis: 1,
            sizes: vec![3, 7],
        };
        let outs = infer(&op, &[f32t(&[2, 10])]).unwrap();
        assert_eq!(outs, vec![f32t(&[2, 3]), f32t(&[2, 7])]);
        fails(
            &op,
            &[f32t(&[2, 9])],
            "sum to 10, axis 1 of x f32[2,9] has 9",
        );
        fails(
            &Op::Split {
                axis: 0,
                sizes: vec![],
            },
            &[f32t(&[2])],
            "at least one output",
        );
        // per-axis parameters along the split axis go with their slices
        let x = qt(DType::I8, &[3, 2], per_axis(0, 3));
        let parts = infer(
            &Op::Split {
                axis: 0,
                sizes: vec![1, 2],
            },
            &[x],
        )
        .unwrap();
        let expect = |scales: Vec<f32>| Quant::PerAxis {
            axis: 0,
            zero_points: vec![0; scales.len()],
            scales,
        };
        assert_eq!(parts[0].quant, Some(expect(vec![0.5])));
        assert_eq!(parts[1].quant, Some(expect(vec![1.0, 1.5])));
    }

    #[test]
    fn slice_lengths_with_positive_and_negative_steps() {
        let sa = |axis, start, end, step| SliceAxis {
            axis,
            start,
            end,
            step,
        };
        // numpy x[1:9:3, 7::-2] on a [10,8] array is [3,4]: indices 1,4,7 and 7,5,3,1
        let op = Op::Slice {
            axes: vec![sa(0, 1, 9, 3), sa(1, 7, -1, -2)],
        };
        assert_eq!(out(&op, &[f32t(&[10, 8])]), f32t(&[3, 4]));
        // end before start with a positive step: empty
        assert_eq!(
            out(
                &Op::Slice {
                    axes: vec![sa(0, 5, 2, 1)]
                },
                &[f32t(&[10])]
            )
            .shape,
            [0]
        );
        fails(
            &Op::Slice {
                axes: vec![sa(0, 0, 5, 0)],
            },
            &[f32t(&[10])],
            "step must not be 0",
        );
        fails(
            &Op::Slice {
                axes: vec![sa(0, 0, 11, 1)],
            },
            &[f32t(&[10])],
            "normalized",
        );
        fails(
            &Op::Slice {
                axes: vec![sa(0, 10, -1, -1)],
            },
            &[f32t(&[10])],
            "read outside [0, 10)",
        );
        fails(
            &Op::Slice {
                axes: vec![sa(1, 0, 1, 1)],
            },
            &[f32t(&[10])],
            "out of range",
        );
        fails(
            &Op::Slice {
                axes: vec![sa(0, 0, 1, 1), sa(0, 0, 1, 1)],
            },
            &[f32t(&[10])],
            "sliced twice",
        );
        // per-axis parameters of the picked indices 2, 0 (scales 1.5, 0.5)
        let x = qt(DType::I8, &[3], per_axis(0, 3));
        let y = out(
            &Op::Slice {
                axes: vec![sa(0, 2, -1, -2)],
            },
            &[x],
        );
        let expected = Quant::PerAxis {
            axis: 0,
            scales: vec![1.5, 0.5],
            zero_points: vec![0, 0],
        };
        assert_eq!(y.quant, Some(expected));
    }

    #[test]
    fn reshape_checks_the_element_count_and_moves_channel_quantization() {
        let op = Op::Reshape { shape: vec![6, 4] };
        assert_eq!(out(&op, &[f32t(&[2, 3, 4])]), f32t(&[6, 4]));
        fails(&op, &[f32t(&[2, 3, 5])], "30 elements");
        fails(
            &Op::Reshape {
                shape: vec![usize::MAX, 2],
            },
            &[f32t(&[2])],
            "more elements than fit",
        );
        // [64,3,3,3] per output channel → [64,27]: axis 0 stays axis 0
        let w = qt(DType::I8, &[64, 3, 3, 3], per_axis(0, 64));
        assert_eq!(
            out(
                &Op::Reshape {
                    shape: vec![64, 27]
                },
                &[w]
            )
            .quant,
            Some(per_axis(0, 64))
        );
        // axis 1 (size 3) of [2,3,4] is merged into 6 by [6,4]
        let x = qt(DType::I8, &[2, 3, 4], per_axis(1, 3));
        fails(
            &op,
            &[x],
            "per-axis quantization along axis 1 cannot follow reshape to [6, 4]",
        );
        // a single per-axis entry is a per-tensor parameter
        let single = qt(DType::I8, &[1, 4], per_axis(0, 1));
        assert_eq!(
            out(&Op::Reshape { shape: vec![2, 2] }, &[single]).quant,
            Some(q(0.5, 0))
        );
    }

    #[test]
    fn flatten_splits_at_the_axis() {
        // [2·3, 4·5]
        assert_eq!(
            out(&Op::Flatten { axis: 2 }, &[f32t(&[2, 3, 4, 5])]).shape,
            [6, 20]
        );
        assert_eq!(
            out(&Op::Flatten { axis: 0 }, &[f32t(&[2, 3, 4, 5])]).shape,
            [1, 120]
        );
        assert_eq!(
            out(&Op::Flatten { axis: 4 }, &[f32t(&[2, 3, 4, 5])]).shape,
            [120, 1]
        );
        fails(
            &Op::Flatten { axis: 5 },
            &[f32t(&[2, 3, 4, 5])],
            "must be ≤ the rank 4",
        );
        let x = qt(DType::U8, &[2, 3, 4], q(0.5, 7));
        assert_eq!(out(&Op::Flatten { axis: 1 }, &[x]).quant, Some(q(0.5, 7)));
    }

    #[test]
    fn transpose_permutes_dims_and_quant_axis() {
        let op = Op::Transpose {
            perm: vec![2, 0, 1],
        };
        assert_eq!(out(&op, &[f32t(&[2, 3, 4])]), f32t(&[4, 2, 3]));
        // input axis 0 lands where perm holds 0: output axis 1
        let x = qt(DType::I8, &[2, 3, 4], per_axis(0, 2));
        assert_eq!(out(&op, &[x]).quant, Some(per_axis(1, 2)));
        fails(
            &Op::Transpose {
                perm: vec![0, 0, 1],
            },
            &[f32t(&[2, 3, 4])],
            "not a permutation",
        );
        fails(
            &Op::Transpose { perm: vec![1, 0] },
            &[f32t(&[2, 3, 4])],
            "not a permutation",
        );
    }

    #[test]
    fn squeeze_and_unsqueeze() {
        let squeeze = Op::Squeeze { axes: vec![0, 2] };
        assert_eq!(out(&squeeze, &[f32t(&[1, 3, 1, 4])]), f32t(&[3, 4]));
        fails(
            &squeeze,
            &[f32t(&[1, 3, 2, 4])],
            "axis 2 of x f32[1,3,2,4] has size 2",
        );
        fails(
            &Op::Squeeze { axes: vec![4] },
            &[f32t(&[1, 3, 1, 4])],
            "out of range",
        );
        // axis 3 loses the two squeezed axes before it: axis 1
        let x = qt(DType::I8, &[1, 3, 1, 4], per_axis(3, 4));
        assert_eq!(out(&squeeze, &[x]).quant, Some(per_axis(1, 4)));

        let unsqueeze = Op::Unsqueeze { axes: vec![0, 3] };
        assert_eq!(out(&unsqueeze, &[f32t(&[3, 4])]), f32t(&[1, 3, 4, 1]));
        fails(
            &Op::Unsqueeze { axes: vec![4] },
            &[f32t(&[3, 4])],
            "axis 4 is out of range for rank 3 (the output of unsqueezing f32[3,4])",
        );
        fails(
            &Op::Unsqueeze { axes: vec![1, 1] },
            &[f32t(&[3, 4])],
            "listed twice",
        );
        // input axis 1 is output axis 2
        let x = qt(DType::I8, &[3, 4], per_axis(1, 4));
        assert_eq!(out(&unsqueeze, &[x]).quant, Some(per_axis(2, 4)));
    }

    #[test]
    fn pad_grows_and_crops() {
        let pad = |mode, pads: &[i64], value| Op::Pad {
            mode,
            pads: pads.to_vec(),
            value,
        };
        // [2 + 1 + 2, 3 + 0 − 1]
        assert_eq!(
            out(
                &pad(PadMode::Constant, &[1, 0, 2, -1], 0.0),
                &[f32t(&[2, 3])]
            ),
            f32t(&[5, 2])
        );
        fails(
            &pad(PadMode::Constant, &[0, -2, 0, -2], 0.0),
            &[f32t(&[2, 3])],
            "crop more than the 3 elements",
        );
        fails(
            &pad(PadMode::Constant, &[1, 1], 0.0),
            &[f32t(&[2, 3])],
            "2·rank = 4 entries",
        );
        fails(
            &pad(PadMode::Reflect, &[1, 0], 0.0),
            &[f32t(&[0])],
            "nothing to copy",
        );
        fails(
            &pad(PadMode::Constant, &[1, 0], 300.0),
            &[t(DType::I8, &[2])],
            "not representable in i8",
        );
        let x = qt(DType::U8, &[2, 2], q(0.5, 128));
        assert_eq!(
            out(&pad(PadMode::Constant, &[1, 1, 1, 1], 128.0), &[x]).quant,
            Some(q(0.5, 128))
        );
        let w = qt(DType::I8, &[2, 2], per_axis(0, 2));
        assert_eq!(
            out(
                &pad(PadMode::Edge, &[0, 1, 0, 1], 0.0),
                std::slice::from_ref(&w)
            )
            .quant,
            Some(per_axis(0, 2))
        );
        fails(
            &pad(PadMode::Edge, &[1, 0, 0, 0], 0.0),
            &[w],
            "cannot follow padding",
        );
    }

    fn resize_attrs(sizes: &[usize], scales: &[f32], coord: CoordTransform) -> ResizeAttrs {
        ResizeAttrs {
            sizes: sizes.to_vec(),
            mode: ResizeMode::Nearest,
            coord,
            nearest: NearestMode::RoundPreferFloor,
            scales: scales.to_vec(),
            roi: vec![],
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
        }
    }

    #[test]
    fn resize_takes_the_resolved_sizes() {
        let attrs = resize_attrs(
            &[1, 3, 8, 8],
            &[1.0, 1.0, 2.0, 2.0],
            CoordTransform::Asymmetric,
        );
        assert_eq!(
            out(&Op::Resize(attrs.clone()), &[f32t(&[1, 3, 4, 4])]),
            f32t(&[1, 3, 8, 8])
        );
        let x = qt(DType::U8, &[1, 3, 4, 4], per_axis(1, 3));
        assert_eq!(
            out(&Op::Resize(attrs.clone()), &[x]).quant,
            Some(per_axis(1, 3))
        );
        fails(
            &Op::Resize(attrs.clone()),
            &[f32t(&[1, 3, 4])],
            "one entry per axis",
        );
        let crop = resize_attrs(
            &[1, 3, 8, 8],
            &[1.0, 1.0, 2.0, 2.0],
            CoordTransform::TfCropAndResize,
        );
        fails(
            &Op::Resize(crop),
            &[f32t(&[1, 3, 4, 4])],
            "for tf_crop_and_resize",
        );
        let mut linear = attrs;
        linear.mode = ResizeMode::Linear;
        fails(
            &Op::Resize(linear),
            &[t(DType::Bool, &[1, 3, 4, 4])],
            "input 0 (x) must be",
        );
        let zero_scale = resize_attrs(&[2], &[0.0], CoordTransform::HalfPixel);
        fails(&Op::Resize(zero_scale), &[f32t(&[2])], "finite positive");
    }

    #[test]
    fn softmax_and_reduce_mean() {
        let softmax = |axis| Op::Softmax {
            axis,
            legacy: false,
        };
        assert_eq!(out(&softmax(1), &[f32t(&[2, 5])]), f32t(&[2, 5]));
        fails(
            &softmax(2),
            &[f32t(&[2, 5])],
            "axis 2 is out of range for rank 2",
        );
        fails(&softmax(0), &[t(DType::I32, &[2])], "must be f32 or f16");

        let mean = |axes: &[usize], keepdims| Op::ReduceMean {
            axes: axes.to_vec(),
            keepdims,
        };
        assert_eq!(out(&mean(&[1], true), &[f32t(&[2, 3, 4])]).shape, [2, 1, 4]);
        assert_eq!(out(&mean(&[1], false), &[f32t(&[2, 3, 4])]).shape, [2, 4]);
        assert_eq!(out(&mean(&[0, 2], false), &[f32t(&[2, 3, 4])]).shape, [3]);
        assert_eq!(out(&mean(&[], false), &[f32t(&[2, 3])]).shape, [2, 3]);
        fails(&mean(&[1, 1], true), &[f32t(&[2, 3, 4])], "listed twice");
        fails(&mean(&[3], true), &[f32t(&[2, 3, 4])], "out of range");
    }

    #[test]
    fn identity_dropout_and_cast() {
        let x = qt(DType::I8, &[2, 3], per_axis(0, 2));
        assert_eq!(out(&Op::Identity, std::slice::from_ref(&x)), x);
        let dropout = infer(&Op::Dropout, std::slice::from_ref(&x)).unwrap();
        assert_eq!(dropout, vec![x.clone(), t(DType::Bool, &[2, 3])]);
        assert_eq!(out(&Op::Cast { to: DType::F32 }, &[x]), f32t(&[2, 3]));
        fails(&Op::Identity, &[], "expects 1 input (x), got 0");
    }

    #[test]
    fn gather_replaces_the_axis_with_the_index_shape() {
        let op = Op::Gather { axis: 1 };
        // [5] + [2,3] + [7]
        let y = out(&op, &[f32t(&[5, 6, 7]), t(DType::I64, &[2, 3])]);
        assert_eq!(y, f32t(&[5, 2, 3, 7]));
        // a scalar index removes the axis
        assert_eq!(
            out(
                &Op::Gather { axis: 0 },
                &[f32t(&[5, 6]), t(DType::I32, &[])]
            )
            .shape,
            [6]
        );
        fails(
            &op,
            &[f32t(&[5, 6, 7]), f32t(&[2])],
            "input 1 (indices) must be i32 or i64, got f32[2]",
        );
        fails(
            &Op::Gather { axis: 3 },
            &[f32t(&[5, 6, 7]), t(DType::I64, &[2])],
            "out of range",
        );
        // quant axis 2 moves past the two index dims that replaced axis 1: 2 − 1 + 2 = 3
        let data = qt(DType::I8, &[5, 6, 7], per_axis(2, 7));
        assert_eq!(
            out(&op, &[data, t(DType::I64, &[2, 3])]).quant,
            Some(per_axis(3, 7))
        );
        let data = qt(DType::I8, &[5, 6, 7], per_axis(1, 6));
        fails(&op, &[data, t(DType::I64, &[2])], "cannot follow gather");
    }

    #[test]
    fn quantize_and_dequantize() {
        // free output type: shape only, u8 placeholder, no parameters
        assert_eq!(out(&Op::Quantize, &[f32t(&[1, 3])]), t(DType::U8, &[1, 3]));
        assert_eq!(
            out(&Op::Quantize, &[t(DType::I32, &[4])]),
            t(DType::U8, &[4])
        );
        fails(&Op::Quantize, &[t(DType::I8, &[4])], "must be f32 or i32");
        let x = qt(DType::U8, &[1, 3], q(0.1, 128));
        assert_eq!(out(&Op::Dequantize, &[x]), f32t(&[1, 3]));
        fails(
            &Op::Dequantize,
            &[t(DType::U8, &[1, 3])],
            "has no quantization parameters",
        );
        fails(&Op::Dequantize, &[f32t(&[1, 3])], "must be i8, u8 or i32");
    }

    #[test]
    fn qconv_and_qmatmul_infer_shapes() {
        let x = qt(DType::U8, &[1, 3, 32, 32], q(0.02, 128));
        let w = qt(DType::I8, &[16, 3, 3, 3], per_axis(0, 16));
        let b = t(DType::I32, &[16]);
        // (32 + 1 + 1 − 3)/2 + 1 = 16
        let mut attrs = conv2d(3, 2, 1, 1);
        attrs.act = Some(Activation::Relu);
        let y = out(
            &Op::QConv(attrs.clone()),
            &[x.clone(), w.clone(), b.clone()],
        );
        assert_eq!(y, t(DType::U8, &[1, 16, 16, 16]));
        fails(
            &Op::QConv(attrs.clone()),
            &[t(DType::U8, &[1, 3, 32, 32]), w.clone()],
            "input 0 (x) u8[1,3,32,32] has no quantization",
        );
        fails(
            &Op::QConv(attrs.clone()),
            &[x.clone(), w.clone(), f32t(&[16])],
            "input 2 (b) must be i32",
        );
        fails(
            &Op::QConv(attrs.clone()),
            &[f32t(&[1, 3, 32, 32]), w.clone()],
            "must be i8 or u8",
        );
        attrs.act = Some(Activation::Sigmoid);
        fails(&Op::QConv(attrs), &[x, w, b], "relu or clip only");

        let a = qt(DType::U8, &[2, 4], q(0.1, 0));
        let b = qt(DType::I8, &[4, 3], q(0.1, 0));
        assert_eq!(out(&Op::QMatMul, &[a.clone(), b]), t(DType::U8, &[2, 3]));
        fails(&Op::QMatMul, &[a, t(DType::I8, &[4, 3])], "input 1 (b)");
    }

    #[test]
    fn integer_conv_and_matmul_accumulate_in_i32() {
        let op = Op::ConvInteger(conv2d(3, 1, 0, 1));
        let x = t(DType::U8, &[1, 1, 4, 4]);
        let w = t(DType::U8, &[2, 1, 3, 3]);
        // 4 − 3 + 1 = 2
        assert_eq!(
            out(&op, &[x.clone(), w.clone()]),
            t(DType::I32, &[1, 2, 2, 2])
        );
        let y = out(
            &op,
            &[x.clone(), w.clone(), t(DType::U8, &[]), t(DType::U8, &[2])],
        );
        assert_eq!(y.shape, [1, 2, 2, 2]);
        fails(
            &op,
            &[x.clone(), w.clone(), t(DType::U8, &[2])],
            "input 2 (x_zero_point) must be a scalar",
        );
        fails(
            &op,
            &[x.clone(), w.clone(), t(DType::I8, &[1])],
            "must have the dtype of x",
        );
        fails(&op, &[f32t(&[1, 1, 4, 4]), w], "must be i8 or u8");

        let a = t(DType::U8, &[3, 4]);
        let b = t(DType::I8, &[4, 5]);
        assert_eq!(
            out(&Op::MatMulInteger, &[a.clone(), b.clone()]),
            t(DType::I32, &[3, 5])
        );
        // per-row zero points of a: [M] = [3]; per-column of b: [N] = [5]
        let zps = [a.clone(), b.clone(), t(DType::U8, &[3]), t(DType::I8, &[5])];
        assert_eq!(out(&Op::MatMulInteger, &zps).shape, [3, 5]);
        fails(
            &Op::MatMulInteger,
            &[a, b, t(DType::U8, &[1]), t(DType::I8, &[4])],
            "b_zero_point",
        );
    }

    #[test]
    fn sources_have_no_inference() {
        assert!(infer(&Op::Input { index: 0 }, &[]).is_err());
        assert!(infer(&Op::Const(ConstId(0)), &[]).is_err());
    }

    #[test]
    fn overflowing_shapes_are_errors() {
        let half = usize::MAX / 2 + 1;
        // [2^63, 1] + [1, 4] broadcasts to 2^65 elements
        fails(
            &Op::Binary(BinaryOp::Add),
            &[f32t(&[half, 1]), f32t(&[1, 4])],
            "more elements than fit",
        );
        fails(&Op::Identity, &[f32t(&[half, 4])], "more elements than fit");
        fails(
            &Op::Flatten { axis: 1 },
            &[f32t(&[half, 2, 2])],
            "more elements than fit",
        );
        fails(
            &Op::Concat { axis: 0 },
            &[f32t(&[usize::MAX]), f32t(&[1])],
            "overflows",
        );
    }

    /// Every op, fed nothing or a pile of scalars, returns an error (or, where scalars are
    /// valid operands, a result) instead of panicking.
    #[test]
    fn degenerate_inputs_are_errors_not_panics() {
        let conv = conv2d(3, 1, 0, 1);
        let pool_attrs = pool(&[2], &[1], &[0, 0], false);
        let ops = vec![
            Op::Conv(conv.clone()),
            Op::ConvTranspose(ConvTransposeAttrs {
                kernel: vec![3],
                strides: vec![1],
                pads: vec![0, 0],
                dilations: vec![1],
                output_padding: vec![0],
                groups: 1,
                act: None,
            }),
            Op::BatchNorm { epsilon: 1e-5 },
            Op::Activation(Activation::Relu),
            Op::Binary(BinaryOp::Add),
            Op::MatMul,
            Op::Gemm(GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
                act: None,
            }),
            Op::MaxPool(pool_attrs.clone()),
            Op::AveragePool(pool_attrs),
            Op::GlobalAveragePool,
            Op::GlobalMaxPool,
            Op::Lrn {
                size: 3,
                alpha: 1.0,
                beta: 1.0,
                bias: 1.0,
            },
            Op::Concat { axis: 0 },
            Op::Split {
                axis: 0,
                sizes: vec![1],
            },
            Op::Slice {
                axes: vec![SliceAxis {
                    axis: 0,
                    start: 0,
                    end: 1,
                    step: 1,
                }],
            },
            Op::Reshape { shape: vec![] },
            Op::Flatten { axis: 1 },
            Op::Transpose { perm: vec![0] },
            Op::Squeeze { axes: vec![0] },
            Op::Unsqueeze { axes: vec![] },
            Op::Pad {
                mode: PadMode::Constant,
                pads: vec![],
                value: 0.0,
            },
            Op::Resize(resize_attrs(&[], &[], CoordTransform::HalfPixel)),
            Op::Softmax {
                axis: 0,
                legacy: true,
            },
            Op::ReduceMean {
                axes: vec![0],
                keepdims: true,
            },
            Op::Identity,
            Op::Dropout,
            Op::Cast { to: DType::I64 },
            Op::Gather { axis: 0 },
            Op::Quantize,
            Op::Dequantize,
            Op::QConv(conv.clone()),
            Op::QMatMul,
            Op::ConvInteger(conv),
            Op::MatMulInteger,
        ];
        // Ops for which one f32 scalar is a valid argument list.
        let scalar_ok = [
            "relu",
            "reshape",
            "unsqueeze",
            "pad",
            "resize",
            "identity",
            "dropout",
            "cast",
            "quantize",
        ];
        for op in &ops {
            assert!(
                infer(op, &[]).is_err(),
                "{} accepted no inputs",
                op.mnemonic()
            );
            let one = infer(op, &[f32t(&[])]);
            assert_eq!(
                one.is_ok(),
                scalar_ok.contains(&op.mnemonic()),
                "{}: {one:?}",
                op.mnemonic()
            );
            assert!(
                infer(op, &vec![f32t(&[]); 5]).is_err(),
                "{} accepted five scalars",
                op.mnemonic()
            );
        }
        // Sum is the one variadic op for which scalars are valid.
        assert_eq!(
            out(&Op::Sum, &[f32t(&[]), f32t(&[]), f32t(&[])]).shape,
            Vec::<usize>::new()
        );
    }
}
