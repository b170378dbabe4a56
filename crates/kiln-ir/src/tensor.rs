//! Dense tensors: the constant pool's contents and the interpreter's values.

use crate::dtype::DType;
use crate::error::IrError;
use half::f16;
use std::hash::{Hash, Hasher};

/// Element storage, one variant per [`DType`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A buffer of `n` zeros (false for bool).
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
        }
    }
}

/// Number of elements of a shape, or `None` if it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Number of elements of a shape that is known not to overflow (validated on construction).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides (in elements) of a dense tensor of `shape`.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// A dense row-major tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl Tensor {
    /// A tensor from a shape and matching data; errors if the element count differs.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, IrError> {
        let n = checked_numel(&shape).ok_or_else(|| IrError::ShapeOverflow {
            shape: shape.clone(),
        })?;
        if n != data.len() {
            return Err(IrError::DataLength {
                shape,
                expected: n,
                got: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, IrError> {
        let n = checked_numel(&shape).ok_or_else(|| IrError::ShapeOverflow {
            shape: shape.clone(),
        })?;
        Ok(Tensor {
            shape,
            data: TensorData::zeros(dtype, n),
        })
    }

    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, IrError> {
        Tensor::new(shape, TensorData::F32(data))
    }

    pub fn from_i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Tensor, IrError> {
        Tensor::new(shape, TensorData::I64(data))
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor {
            shape: vec![],
            data: TensorData::F32(vec![v]),
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn data(&self) -> &TensorData {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }

    pub fn into_data(self) -> TensorData {
        self.data
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn byte_size(&self) -> usize {
        self.numel() * self.dtype().size_bytes()
    }

    /// Same data under another shape with the same element count.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Tensor, IrError> {
        Tensor::new(shape, self.data)
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorData::I64(v) => Some(v),
            _ => None,
        }
    }

    /// Every element converted to f64 (exact for all supported dtypes except i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
        }
    }

    /// Every element as f32 (f16 widened, integers converted).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|&x| x.to_f32()).collect(),
            _ => self.to_f64_vec().into_iter().map(|x| x as f32).collect(),
        }
    }

    /// Integer elements as i64; `None` for float tensors.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match &self.data {
            TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I64(v) => v.clone(),
            TensorData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::F32(_) | TensorData::F16(_) => return None,
        })
    }

    /// Raw little-endian bytes of the elements (bool as 0/1).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_size());
        match &self.data {
            TensorData::F32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::F16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::I8(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::U8(v) => out.extend_from_slice(v),
            TensorData::I32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::I64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            TensorData::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
        }
        out
    }

    /// A hash of dtype, shape and element bits: equal tensors hash equally (used to
    /// deduplicate the constant pool; `-0.0` and `0.0` differ, NaN payloads are compared
    /// bitwise). The elements are folded word by word (FxHash's step) without copying
    /// them: importing resnet50 hashes 100 MB of weights, and SipHash over a byte copy
    /// was a fifth of the import time. Collisions only cost a [`Tensor::bitwise_eq`].
    pub fn content_hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.dtype().hash(&mut h);
        self.shape.hash(&mut h);
        let seed = h.finish();
        let fold = |words: &mut dyn Iterator<Item = u64>| {
            words.fold(seed, |h, w| {
                (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95)
            })
        };
        match &self.data {
            TensorData::F32(v) => fold(&mut v.iter().map(|x| u64::from(x.to_bits()))),
            TensorData::F16(v) => fold(&mut v.iter().map(|x| u64::from(x.to_bits()))),
            TensorData::I8(v) => fold(&mut v.iter().map(|&x| u64::from(x as u8))),
            TensorData::U8(v) => fold(&mut v.iter().map(|&x| u64::from(x))),
            TensorData::I32(v) => fold(&mut v.iter().map(|&x| u64::from(x as u32))),
            TensorData::I64(v) => fold(&mut v.iter().map(|&x| x as u64)),
            TensorData::Bool(v) => fold(&mut v.iter().map(|&x| u64::from(x))),
        }
    }

    /// Bitwise equality (so NaN constants deduplicate with themselves).
    pub fn bitwise_eq(&self, other: &Tensor) -> bool {
        if self.shape != other.shape {
            return false;
        }
        match (&self.data, &other.data) {
            (TensorData::F32(a), TensorData::F32(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (TensorData::F16(a), TensorData::F16(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            (TensorData::I8(a), TensorData::I8(b)) => a == b,
            (TensorData::U8(a), TensorData::U8(b)) => a == b,
            (TensorData::I32(a), TensorData::I32(b)) => a == b,
            (TensorData::I64(a), TensorData::I64(b)) => a == b,
            (TensorData::Bool(a), TensorData::Bool(b)) => a == b,
            _ => false,
        }
    }

    /// Summary statistics over all elements as f64 (for dumps of large constants).
    pub fn stats(&self) -> TensorStats {
        let v = self.to_f64_vec();
        if v.is_empty() {
            return TensorStats {
                min: 0.0,
                max: 0.0,
                mean: 0.0,
                std: 0.0,
            };
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        TensorStats {
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            mean,
            std: var.sqrt(),
        }
    }
}

/// Summary statistics printed for constants too large to show inline.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct TensorStats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::from_f32(vec![2, 3], vec![0.0; 6]).is_ok());
        assert!(matches!(
            Tensor::from_f32(vec![2, 3], vec![0.0; 5]),
            Err(IrError::DataLength {
                expected: 6,
                got: 5,
                ..
            })
        ));
        assert!(matches!(
            Tensor::zeros(DType::F32, vec![1 << 40, 1 << 40]),
            Err(IrError::ShapeOverflow { .. })
        ));
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides_of(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides_of(&[]), Vec::<usize>::new());
    }

    #[test]
    fn content_hash_separates_shape_and_dtype() {
        let a = Tensor::from_f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_ne!(a.content_hash(), b.content_hash());
        assert_eq!(a.content_hash(), a.clone().content_hash());
    }

    /// Bitwise, not numeric: NaN equals itself, `-0.0` is not `0.0`, equal bytes of
    /// another dtype are not equal; the hash separates what equality separates here.
    #[test]
    fn bitwise_eq_compares_bits_and_dtype() {
        let nan = Tensor::from_f32(vec![2], vec![f32::NAN, 1.0]).unwrap();
        assert!(nan.bitwise_eq(&nan.clone()));
        let zero = Tensor::from_f32(vec![1], vec![0.0]).unwrap();
        let minus_zero = Tensor::from_f32(vec![1], vec![-0.0]).unwrap();
        assert!(!zero.bitwise_eq(&minus_zero));
        assert_ne!(zero.content_hash(), minus_zero.content_hash());
        let as_i8 = Tensor::new(vec![2], TensorData::I8(vec![-1, 2])).unwrap();
        let as_u8 = Tensor::new(vec![2], TensorData::U8(vec![255, 2])).unwrap();
        assert!(!as_i8.bitwise_eq(&as_u8));
        assert_ne!(as_i8.content_hash(), as_u8.content_hash());
        let other_shape = Tensor::new(vec![1, 2], TensorData::I8(vec![-1, 2])).unwrap();
        assert!(!as_i8.bitwise_eq(&other_shape));
    }
}
