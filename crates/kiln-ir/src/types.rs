//! Value types: dtype, static shape and (for quantized integer tensors) quantization
//! parameters. A quantized tensor's type says how to read it; there are no side tables.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Affine quantization parameters: `real = scale · (q − zero_point)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Quant {
    /// One scale and zero point for the whole tensor.
    PerTensor { scale: f32, zero_point: i32 },
    /// One scale and zero point per index along `axis` (e.g. per output channel of a weight).
    PerAxis {
        axis: usize,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
    },
}

impl Quant {
    pub fn per_tensor(scale: f32, zero_point: i32) -> Quant {
        Quant::PerTensor { scale, zero_point }
    }

    /// Scale and zero point that apply at index `i` along the quantization axis (ignored for
    /// per-tensor parameters).
    pub fn params_at(&self, i: usize) -> (f32, i32) {
        match self {
            Quant::PerTensor { scale, zero_point } => (*scale, *zero_point),
            Quant::PerAxis {
                scales,
                zero_points,
                ..
            } => (scales[i], zero_points[i]),
        }
    }

    pub fn axis(&self) -> Option<usize> {
        match self {
            Quant::PerTensor { .. } => None,
            Quant::PerAxis { axis, .. } => Some(*axis),
        }
    }

    /// Bitwise equality of scales (so that `q(dq(x))` cancellation is exact, not approximate).
    pub fn same_as(&self, other: &Quant) -> bool {
        match (self, other) {
            (
                Quant::PerTensor {
                    scale: a,
                    zero_point: za,
                },
                Quant::PerTensor {
                    scale: b,
                    zero_point: zb,
                },
            ) => a.to_bits() == b.to_bits() && za == zb,
            (
                Quant::PerAxis {
                    axis: a,
                    scales: sa,
                    zero_points: za,
                },
                Quant::PerAxis {
                    axis: b,
                    scales: sb,
                    zero_points: zb,
                },
            ) => {
                a == b
                    && za == zb
                    && sa.len() == sb.len()
                    && sa.iter().zip(sb).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        }
    }
}

/// The type of every IR value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub quant: Option<Quant>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> TensorType {
        TensorType {
            dtype,
            shape,
            quant: None,
        }
    }

    pub fn f32(shape: Vec<usize>) -> TensorType {
        TensorType::new(DType::F32, shape)
    }

    pub fn with_quant(mut self, quant: Quant) -> TensorType {
        self.quant = Some(quant);
        self
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Element count; shapes in a verified graph never overflow.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn byte_size(&self) -> usize {
        self.numel() * self.dtype.size_bytes()
    }

    /// Same dtype and shape; quantization parameters ignored.
    pub fn same_layout(&self, other: &TensorType) -> bool {
        self.dtype == other.dtype && self.shape == other.shape
    }
}

/// `f32[1,3,224,224]`; the quantization suffix is printed by the text format.
impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
