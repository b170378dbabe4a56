//! The op set: one enum variant per operation, attributes typed and fully resolved (no
//! `auto_pad`, no shape-valued inputs, no negative axes: the importer settles all of that
//! against static shapes). Input order follows ONNX; the doc comment of each variant lists it.

use crate::dtype::DType;
use crate::pool::ConstId;
use serde::{Deserialize, Serialize};

/// Elementwise activations: standalone ops (`Op::Activation`) and the fused epilogue of
/// Conv / ConvTranspose / Gemm / MatMul.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    Relu,
    /// `min(max(x, min), max)`; ±infinity for an absent bound. f64 so that i64 bounds of
    /// integer Clip stay exact up to 2^53.
    Clip {
        min: f64,
        max: f64,
    },
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    /// `max(0, min(1, alpha·x + beta))`.
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x · max(0, min(1, x/6 + 1/2))`.
    HardSwish,
}

impl Activation {
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Clip { .. } => "clip",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::HardSigmoid { .. } => "hard_sigmoid",
            Activation::HardSwish => "hard_swish",
        }
    }
}

/// Elementwise binary arithmetic with numpy broadcasting.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// Convolution geometry shared by Conv, QConv and ConvInteger. The number of spatial dims
/// (1, 2 or 3) is `kernel.len()`; pads are `[begin_0, begin_1, .., end_0, end_1, ..]` as in
/// ONNX, already resolved from `auto_pad`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub groups: usize,
    /// Fused activation applied to the output (issue: fuse-activation); `None` on import.
    pub act: Option<Activation>,
}

/// ConvTranspose geometry. Weight layout is `[C_in, C_out/groups, k...]` (output channel on
/// axis 1). `output_shape` is resolved into `pads` + `output_padding` at import.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvTransposeAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub output_padding: Vec<usize>,
    pub groups: usize,
    pub act: Option<Activation>,
}

/// General matrix multiply: `alpha · op(A) · op(B) + beta · C`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
    pub act: Option<Activation>,
}

/// MaxPool / AveragePool geometry. Pads as in [`ConvAttrs`]; the output size (which depends
/// on `ceil_mode`) is the output value's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub ceil_mode: bool,
    /// AveragePool only: whether padded positions count in the divisor.
    pub count_include_pad: bool,
    /// MaxPool only (Indices output): 0 = row major, 1 = column major.
    pub storage_order: u8,
}

/// One sliced axis, normalized: `start` is clamped into range, `end` may be -1 for a
/// negative step running to the front. Element `i` of the output along `axis` is
/// input index `start + i·step`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceAxis {
    pub axis: usize,
    pub start: i64,
    pub end: i64,
    pub step: i64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// How an output coordinate maps back to an input coordinate (ONNX
/// `coordinate_transformation_mode`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CoordTransform {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

/// Rounding of the mapped coordinate in nearest mode (ONNX `nearest_mode`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// Resize/Upsample with every input resolved: one scale per axis (`scales.len() == rank`),
/// the crop box for `tf_crop_and_resize` as `roi = [starts.., ends..]` (empty otherwise), and
/// the output shape `sizes` (ONNX derives it from scales or takes it from `sizes`; either way
/// it is fixed at import, and the scales used for coordinate mapping are kept separately
/// because ONNX recomputes them from sizes in some modes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResizeAttrs {
    pub sizes: Vec<usize>,
    pub mode: ResizeMode,
    pub coord: CoordTransform,
    pub nearest: NearestMode,
    pub scales: Vec<f32>,
    pub roi: Vec<f32>,
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    pub extrapolation_value: f32,
    pub antialias: bool,
}

/// Every operation of the IR. Inputs are listed in order; `[x]` marks an optional trailing
/// input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Graph input number `index`. No inputs.
    Input { index: usize },
    /// A constant from the graph's pool. No inputs.
    Const(ConstId),

    /// x, w, [b], [residual]. Weight `[C_out, C_in/groups, k...]`. The residual (fused by
    /// the fuse-residual pass; never produced by import) has the output's exact type and is
    /// added after the bias, before the fused activation: `act(conv(x, w) + b + residual)`.
    /// A residual needs a bias input in front of it (zeros where the model has none).
    Conv(ConvAttrs),
    /// x, w, [b]. Weight `[C_in, C_out/groups, k...]`.
    ConvTranspose(ConvTransposeAttrs),
    /// Inference-mode BatchNormalization: x, scale, bias, mean, var (channel axis 1).
    BatchNorm { epsilon: f32 },
    /// x.
    Activation(Activation),
    /// a, b (numpy broadcasting).
    Binary(BinaryOp),
    /// Variadic elementwise sum with broadcasting: x0, x1, ...
    Sum,
    /// a, b (numpy matmul: batched, 1-D operands promoted).
    MatMul,
    /// a, b, [c] (c broadcast to the output).
    Gemm(GemmAttrs),
    /// x. Outputs: y, [indices i64].
    MaxPool(PoolAttrs),
    /// x.
    AveragePool(PoolAttrs),
    /// x.
    GlobalAveragePool,
    /// x.
    GlobalMaxPool,
    /// Local response normalization across channels: x.
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    /// x0, x1, ...
    Concat { axis: usize },
    /// x. One output per entry of `sizes`.
    Split { axis: usize, sizes: Vec<usize> },
    /// x.
    Slice { axes: Vec<SliceAxis> },
    /// x. The target shape, fully resolved (no 0 or -1).
    Reshape { shape: Vec<usize> },
    /// x. Output is 2-D: `[prod(dims[..axis]), prod(dims[axis..])]`.
    Flatten { axis: usize },
    /// x.
    Transpose { perm: Vec<usize> },
    /// x.
    Squeeze { axes: Vec<usize> },
    /// x. `axes` index the output.
    Unsqueeze { axes: Vec<usize> },
    /// x. `pads = [begin_0.., end_0..]`, negative values crop. `value` is the constant fill.
    Pad {
        mode: PadMode,
        pads: Vec<i64>,
        value: f64,
    },
    /// x.
    Resize(ResizeAttrs),
    /// x. `legacy`: opset < 13 semantics, input coerced to 2-D at `axis`.
    Softmax { axis: usize, legacy: bool },
    /// x.
    ReduceMean { axes: Vec<usize>, keepdims: bool },
    /// x.
    Identity,
    /// x (inference: identity).
    Dropout,
    /// x.
    Cast { to: DType },
    /// data, indices (i64 or i32; negative indices wrap).
    Gather { axis: usize },

    /// x (f32 or i32) → integer; the output type carries the quantization parameters.
    /// Round half to even, saturate.
    Quantize,
    /// x (quantized integer) → f32 using the input type's quantization parameters.
    Dequantize,
    /// Quantized convolution: x (q), w (q, per-tensor or per-axis 0), [bias i32 with scale
    /// s_x·s_w and zero point 0]; the output type carries the output quantization.
    QConv(ConvAttrs),
    /// Quantized matrix multiply: a (q), b (q); output type carries the quantization.
    QMatMul,
    /// x, w, [x_zero_point], [w_zero_point] → i32 (ONNX ConvInteger).
    ConvInteger(ConvAttrs),
    /// a, b, [a_zero_point], [b_zero_point] → i32 (ONNX MatMulInteger).
    MatMulInteger,
    /// x (f32) → y (u8, plain), y_scale (f32 scalar), y_zero_point (u8 scalar): ONNX
    /// DynamicQuantizeLinear, u8 parameters computed from x's own range at run time
    /// (`kiln quantize --dynamic`).
    DynamicQuantize,
}

impl Op {
    /// The op's name in the text format, DOT labels and statistics.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Const(_) => "const",
            Op::Conv(_) => "conv",
            Op::ConvTranspose(_) => "conv_transpose",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Activation(a) => a.name(),
            Op::Binary(b) => b.name(),
            Op::Sum => "sum",
            Op::MatMul => "matmul",
            Op::Gemm(_) => "gemm",
            Op::MaxPool(_) => "max_pool",
            Op::AveragePool(_) => "average_pool",
            Op::GlobalAveragePool => "global_average_pool",
            Op::GlobalMaxPool => "global_max_pool",
            Op::Lrn { .. } => "lrn",
            Op::Concat { .. } => "concat",
            Op::Split { .. } => "split",
            Op::Slice { .. } => "slice",
            Op::Reshape { .. } => "reshape",
            Op::Flatten { .. } => "flatten",
            Op::Transpose { .. } => "transpose",
            Op::Squeeze { .. } => "squeeze",
            Op::Unsqueeze { .. } => "unsqueeze",
            Op::Pad { .. } => "pad",
            Op::Resize(_) => "resize",
            Op::Softmax { .. } => "softmax",
            Op::ReduceMean { .. } => "reduce_mean",
            Op::Identity => "identity",
            Op::Dropout => "dropout",
            Op::Cast { .. } => "cast",
            Op::Gather { .. } => "gather",
            Op::Quantize => "quantize",
            Op::Dequantize => "dequantize",
            Op::QConv(_) => "qconv",
            Op::QMatMul => "qmatmul",
            Op::ConvInteger(_) => "conv_integer",
            Op::MatMulInteger => "matmul_integer",
            Op::DynamicQuantize => "dynamic_quantize",
        }
    }

    /// Ops whose output dtype and quantization are a free choice of whoever builds the node
    /// (the importer or the quantizer), not a function of the inputs: `quantize`, `qconv`,
    /// `qmatmul`. Shape inference gives their shape only; build them with
    /// `Graph::add_node_typed`, and the verifier checks that the output is a quantized integer.
    pub fn has_free_output_type(&self) -> bool {
        matches!(self, Op::Quantize | Op::QConv(_) | Op::QMatMul)
    }

    /// Graph sources: inputs and constants.
    pub fn is_source(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Const(_))
    }

    /// Multiply-accumulate count of one execution given the output shape and weight shape,
    /// for `kiln info` and the extraction cost model. `None` for ops with no MACs.
    pub fn macs(&self, input_shapes: &[&[usize]], output_shape: &[usize]) -> Option<u64> {
        let out: u64 = output_shape.iter().map(|&d| d as u64).product();
        match self {
            Op::Conv(_) | Op::QConv(_) | Op::ConvInteger(_) => {
                // each output element: C_in/groups · prod(kernel) MACs
                let w = input_shapes.get(1)?;
                let per: u64 = w[1..].iter().map(|&d| d as u64).product();
                Some(out * per)
            }
            Op::ConvTranspose(_) => {
                // each input element scatters into C_out/groups · prod(kernel) outputs
                let x = input_shapes.first()?;
                let w = input_shapes.get(1)?;
                let xin: u64 = x.iter().map(|&d| d as u64).product();
                let per: u64 = w[1..].iter().map(|&d| d as u64).product();
                Some(xin * per)
            }
            Op::MatMul | Op::QMatMul | Op::MatMulInteger => {
                let a = input_shapes.first()?;
                let k = if a.is_empty() {
                    1
                } else {
                    a[a.len() - 1] as u64
                };
                Some(out * k)
            }
            Op::Gemm(g) => {
                let a = input_shapes.first()?;
                let k = if g.trans_a { a[0] } else { a[1] } as u64;
                Some(out * k)
            }
            _ => None,
        }
    }
}

/// Every op mnemonic, for `kiln` help texts and the parser's error messages.
pub const OP_MNEMONICS: &[&str] = &[
    "input",
    "const",
    "conv",
    "conv_transpose",
    "batch_norm",
    "relu",
    "clip",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "hard_sigmoid",
    "hard_swish",
    "add",
    "sub",
    "mul",
    "div",
    "sum",
    "matmul",
    "gemm",
    "max_pool",
    "average_pool",
    "global_average_pool",
    "global_max_pool",
    "lrn",
    "concat",
    "split",
    "slice",
    "reshape",
    "flatten",
    "transpose",
    "squeeze",
    "unsqueeze",
    "pad",
    "resize",
    "softmax",
    "reduce_mean",
    "identity",
    "dropout",
    "cast",
    "gather",
    "quantize",
    "dequantize",
    "dynamic_quantize",
    "qconv",
    "qmatmul",
    "conv_integer",
    "matmul_integer",
];
