//! Small helpers of the kernels' tensor-level side: names built from shapes, the
//! `BadBuffer` error, f32 constants read at compile time, f32 operands / results of the
//! allocating `run` entry points, and tensor data from the little-endian bytes that
//! byte-moving kernels (Concat, Resize) and the runtime's buffers hold.

use crate::CodegenError;
use kiln_ir::{DType, Tensor, TensorData};

/// `1x64x56x56`: the shape part of a kernel's name.
pub(crate) fn shape_name(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// A buffer handed to kernel `kernel` is not what it was compiled for.
pub(crate) fn bad_buffer(kernel: &str, what: String) -> CodegenError {
    CodegenError::BadBuffer {
        kernel: kernel.to_string(),
        what,
    }
}

/// An elementwise-shaped call: `x` and `out` must both hold `len` elements.
pub(crate) fn check_same_len(
    kernel: &str,
    x: usize,
    out: usize,
    len: usize,
) -> Result<(), CodegenError> {
    if x == len && out == len {
        return Ok(());
    }
    Err(bad_buffer(
        kernel,
        format!("{x} → {out} elements; expected {len} → {len}"),
    ))
}

/// The values of a constant operand (`what`: "the weight", "C", …) of an f32 `op`.
pub(crate) fn f32_constant<'t>(
    op: &'static str,
    t: &'t Tensor,
    what: &str,
) -> Result<&'t [f32], CodegenError> {
    match t.data() {
        TensorData::F32(v) => Ok(v),
        _ => Err(CodegenError::Unsupported {
            op,
            reason: format!("{what} is {}, expected f32", t.dtype()),
        }),
    }
}

/// The elements of an f32 tensor handed to `kernel`, which must have `shape` when given.
pub(crate) fn f32_operand<'t>(
    kernel: &str,
    t: &'t Tensor,
    shape: Option<&[usize]>,
) -> Result<&'t [f32], CodegenError> {
    let TensorData::F32(v) = t.data() else {
        return Err(bad_buffer(
            kernel,
            format!("a {} tensor, expected f32", t.dtype()),
        ));
    };
    match shape {
        Some(s) if s != t.shape() => Err(bad_buffer(
            kernel,
            format!("a tensor of shape {:?}, expected {s:?}", t.shape()),
        )),
        _ => Ok(v),
    }
}

/// Wrap `kernel`'s f32 result as a tensor of `shape`.
pub(crate) fn f32_result(
    kernel: &str,
    shape: &[usize],
    data: Vec<f32>,
) -> Result<Tensor, CodegenError> {
    Tensor::new(shape.to_vec(), TensorData::F32(data))
        .map_err(|e| bad_buffer(kernel, e.to_string()))
}

/// Elements of `dtype` from their little-endian bytes (a whole number of elements; bools
/// are one byte, non-zero for true).
pub fn tensor_data_from_le_bytes(dtype: DType, bytes: &[u8]) -> TensorData {
    fn words<const N: usize, T>(bytes: &[u8], decode: fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| decode(c.try_into().expect("chunks_exact yields N bytes")))
            .collect()
    }
    match dtype {
        DType::F32 => TensorData::F32(words(bytes, f32::from_le_bytes)),
        DType::F16 => TensorData::F16(words(bytes, half::f16::from_le_bytes)),
        DType::I8 => TensorData::I8(words(bytes, i8::from_le_bytes)),
        DType::U8 => TensorData::U8(bytes.to_vec()),
        DType::I32 => TensorData::I32(words(bytes, i32::from_le_bytes)),
        DType::I64 => TensorData::I64(words(bytes, i64::from_le_bytes)),
        DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_operand_checks() {
        assert_eq!(shape_name(&[1, 64, 7]), "1x64x7");
        assert_eq!(shape_name(&[]), "");
        let t = Tensor::new(vec![2], TensorData::F32(vec![1.0, 2.0])).expect("sized");
        assert_eq!(
            f32_operand("k", &t, Some(&[2])).expect("f32 [2]"),
            [1.0, 2.0]
        );
        assert!(f32_operand("k", &t, Some(&[1, 2])).is_err());
        let i = Tensor::new(vec![1], TensorData::I8(vec![3])).expect("sized");
        assert!(f32_operand("k", &i, None).is_err());
        assert!(matches!(
            f32_constant("conv", &i, "the weight"),
            Err(CodegenError::Unsupported { op: "conv", .. })
        ));
        assert!(f32_result("k", &[3], vec![0.0; 2]).is_err());
        // every dtype round-trips through `Tensor::to_le_bytes`
        for data in [
            TensorData::F32(vec![1.5, -0.0]),
            TensorData::F16(vec![half::f16::from_f32(0.25)]),
            TensorData::I8(vec![-3, 4]),
            TensorData::U8(vec![200]),
            TensorData::I32(vec![i32::MIN]),
            TensorData::I64(vec![-7]),
            TensorData::Bool(vec![true, false]),
        ] {
            let t = Tensor::new(vec![data.len()], data.clone()).expect("sized");
            assert_eq!(tensor_data_from_le_bytes(t.dtype(), &t.to_le_bytes()), data);
        }
    }
}
